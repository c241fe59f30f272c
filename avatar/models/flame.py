"""FLAME (licence-gated: users supply the file; it is never downloaded here).

Reads the 2020 ``generic_model.pkl`` and 2023 ``flame2023.pkl`` layouts (keys
``v_template (V, 3)``, ``shapedirs (V, 3, 400)`` = 300 identity + 100 expression,
``posedirs (V, 3, 36)``, ``J_regressor (5, V)`` sparse or dense, ``weights (V, 5)``,
``kintree_table (2, 5)``, ``f (F, 3)``; chumpy-backed arrays allowed) through the
restricted unpickler, or the same keys in an ``.npz``. Units are metres.

Joints: 0 root (global rotation), 1 neck, 2 jaw, 3 left eye, 4 right eye; pose
correctives and skinning through :func:`smplx.lbs.lbs`. The expressions are unnamed PCA
components: they are called ``expr000``, ``expr001``...

Tracking profile (:func:`tracking_profile`): the whole mesh is rendered for the landmark
calibration; gaze and jaw are joints (not tracked as expressions); the expression
coefficients are signed (:data:`EXPRESSION_BOUNDS`); with a masks file that has
``left_eyeball``/``right_eyeball`` (as ``FLAME_masks.pkl``) the iris centres go to the
eyeballs' front poles and the lid landmarks onto the ``face`` part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatar.models.engine import BlendshapeModel, ModelData, ModelOutput, Skeleton
from avatar.models.profile import TrackingProfile
from avatar.models.restricted_pickle import dense, load_arrays

JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
SHAPE_SPACE_DIM = 300
# Range the trackers keep FLAME's expression coefficients in (PCA units, signed).
EXPRESSION_BOUNDS = (-3.0, 3.0)
EYEBALL_MASKS = ("right_eyeball", "left_eyeball")  # (subject's right, left), FLAME_masks.pkl names
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
# Key pairs of known landmark-embedding files, preferred first (68 landmarks before 51).
LANDMARK_KEYS = (
    ("full_lmk_faces_idx", "full_lmk_bary_coords"),
    ("lmk_faces_idx", "lmk_bary_coords"),
    ("lmk_face_idx", "lmk_b_coords"),
    ("static_lmk_faces_idx", "static_lmk_bary_coords"),
)


@dataclass
class FLAMEConfig:
    """Options of ``avatar.models.load("flame", ...)``.

    Attributes:
        model_path: the FLAME model file (``generic_model.pkl``, ``flame2023.pkl`` or an ``.npz``
            with the same keys). Required.
        landmark_path: optional landmark embedding (``.npy``/``.npz``/``.pkl`` with
            ``lmk_faces_idx`` + ``lmk_bary_coords`` or the other pairs of :data:`LANDMARK_KEYS`).
        uv_path: optional texture coordinates: an ``.npz`` with ``vt`` and ``ft`` (FLAME's
            texture space file) or an ``.obj`` with the model's topology.
        masks_path: optional vertex masks (e.g. ``FLAME_masks.pkl``: name -> vertex indices).
        mediapipe_embedding_path: optional 478-point MediaPipe landmark embedding of this mesh
            (``.npz`` with ``faces`` + ``bary``, as ``avatar.tracking.embedding`` caches them, or
            ``lmk_face_idx`` + ``lmk_b_coords``); None: calibrated by rendering the model.
        num_shape: identity coefficients used (<= 300).
        num_expression: expression coefficients used (<= 100).
        dtype: buffer dtype.
    """

    model_path: str = "???"
    landmark_path: str | None = None
    uv_path: str | None = None
    masks_path: str | None = None
    mediapipe_embedding_path: str | None = None
    num_shape: int = 300
    num_expression: int = 100
    dtype: str = "float32"

    def build(self) -> "FLAME":
        return load_flame(self)


def _require(data: dict, keys, path: Path) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise KeyError(f"{path}: missing keys {missing} (found {sorted(data)}); is this a FLAME model file?")


def read_landmark_embedding(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(faces (L,), bary (L, 3))`` from a landmark embedding file (see :data:`LANDMARK_KEYS`)."""
    path = Path(path)
    data = load_arrays(path)
    for f_key, b_key in LANDMARK_KEYS:
        if f_key in data and b_key in data:
            faces = np.asarray(data[f_key], dtype=np.int64).reshape(-1)
            bary = np.asarray(data[b_key], dtype=np.float32).reshape(-1, 3)
            if len(faces) != len(bary):
                raise ValueError(f"{path}: {f_key} has {len(faces)} entries but {b_key} {len(bary)}")
            return faces, bary
    raise KeyError(f"{path}: no landmark embedding keys (expected one of {LANDMARK_KEYS}); found {sorted(data)}")


def read_uvs(path: str | Path, num_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uvs (T, 2), uv_faces (F, 3))`` from an ``.npz`` with ``vt``/``ft`` or an ``.obj``."""
    path = Path(path)
    if path.suffix.lower() == ".obj":
        from avatar.models.obj import parse_obj

        mesh = parse_obj(path.read_bytes())
        uvs, uv_faces = mesh.uvs, mesh.uv_faces
        if uv_faces is None:
            raise ValueError(f"{path}: the OBJ has no texture coordinates on its faces")
    else:
        data = load_arrays(path)
        _require(data, ("vt", "ft"), path)
        uvs, uv_faces = data["vt"], data["ft"]
    uv_faces = np.asarray(uv_faces, dtype=np.int64)
    if uv_faces.shape != (num_faces, 3):
        raise ValueError(f"{path}: uv faces are {uv_faces.shape}, the model has ({num_faces}, 3) triangles")
    return np.asarray(uvs, dtype=np.float32)[:, :2], uv_faces


def read_vertex_masks(path: str | Path, num_vertices: int) -> dict[str, np.ndarray]:
    """name -> ``(V,)`` bool mask from a file mapping region names to vertex indices."""
    parts = {}
    for name, ids in load_arrays(path).items():
        mask = np.zeros(num_vertices, dtype=bool)
        mask[np.asarray(ids, dtype=np.int64).reshape(-1)] = True
        parts[str(name)] = mask
    return parts


def flame_data(config: FLAMEConfig) -> ModelData:
    """Read a FLAME model file (and optional extras) into a :class:`ModelData`."""
    path = Path(config.model_path).expanduser()
    if config.model_path in (None, "", "???") or not path.is_file():
        raise FileNotFoundError(
            f"FLAME model file not found: {config.model_path!r}. FLAME is licence-gated: register at "
            "https://flame.is.tue.mpg.de, download it yourself and pass model_path=.../generic_model.pkl"
        )
    data = load_arrays(path)
    _require(data, REQUIRED_KEYS, path)
    shapedirs = dense(data["shapedirs"])
    V = shapedirs.shape[0]
    n_id = min(SHAPE_SPACE_DIM, shapedirs.shape[-1])
    n_expr_total = shapedirs.shape[-1] - n_id
    if not (0 <= config.num_shape <= n_id and 0 <= config.num_expression <= n_expr_total):
        raise ValueError(
            f"{path} has {n_id} shape and {n_expr_total} expression components; asked for "
            f"num_shape={config.num_shape}, num_expression={config.num_expression}"
        )
    posedirs = dense(data["posedirs"])
    posedirs = posedirs.reshape(-1, posedirs.shape[-1]).T  # (V, 3, P) -> (P, V*3), smplx layout
    faces = dense(data["f"], np.int64)
    lmk_faces = lmk_bary = None
    if config.landmark_path:
        lmk_faces, lmk_bary = read_landmark_embedding(config.landmark_path)
    uvs = uv_faces = None
    if config.uv_path:
        uvs, uv_faces = read_uvs(config.uv_path, len(faces))
    parts = {"head": np.ones(V, dtype=bool)}
    if config.masks_path:
        parts.update(read_vertex_masks(config.masks_path, V))
    skeleton = Skeleton(
        parents=dense(data["kintree_table"], np.int64)[0],
        joint_regressor=dense(data["J_regressor"]),
        weights=dense(data["weights"]),
        posedirs=posedirs,
        joint_names=JOINT_NAMES,
    )
    return ModelData(
        name="flame",
        expression_names=tuple(f"expr{i:03d}" for i in range(config.num_expression)),
        tracking_profile=tracking_profile(tuple(parts), config.mediapipe_embedding_path),
        template=dense(data["v_template"]),
        shapedirs=shapedirs[..., : config.num_shape],
        exprdirs=shapedirs[..., n_id : n_id + config.num_expression],
        faces=faces,
        uvs=uvs,
        uv_faces=uv_faces,
        parts=parts,
        lmk_faces=lmk_faces,
        lmk_bary=lmk_bary,
        skeleton=skeleton,
    )


def tracking_profile(part_names: tuple[str, ...], embedding_path: str | None = None) -> TrackingProfile:
    """FLAME's :class:`TrackingProfile` for a model with these parts (see the module doc)."""
    eyeballs = EYEBALL_MASKS if set(EYEBALL_MASKS) <= set(part_names) else None
    return TrackingProfile(
        calibration_parts=("head",),
        eyeball_parts=eyeballs,
        eye_joints=("right_eye", "left_eye"),
        lid_part="face" if eyeballs and "face" in part_names else None,
        face_part="face" if "face" in part_names else "head",
        gaze=None,
        jaw_joint="jaw",
        expression_bounds=EXPRESSION_BOUNDS,
        embedding_path=str(Path(embedding_path).expanduser()) if embedding_path else None,
    )


class FLAME(BlendshapeModel):
    """FLAME on the blendshape engine, with the joints also addressable by name."""

    def forward(
        self,
        shape: Tensor | None = None,  # [B, S'<=S]
        expression: Tensor | None = None,  # [B, E'<=E]
        rotation: Tensor | None = None,  # [B, 3] axis-angle of the root
        neck: Tensor | None = None,  # [B, 3]
        jaw: Tensor | None = None,  # [B, 3]
        eyes: Tensor | None = None,  # [B, 6] left then right eye
        translation: Tensor | None = None,  # [B, 3] metres
        pose: Tensor | None = None,  # [B, 4, 3] or [B, 12]: neck, jaw, left eye, right eye
    ) -> ModelOutput:
        """Like :meth:`BlendshapeModel.forward`; give the joints either as ``pose`` or by name."""
        named = [neck, jaw, eyes]
        if any(x is not None for x in named):
            if pose is not None:
                raise ValueError("give FLAME's joints either as pose or as neck/jaw/eyes, not both")
            given = [x for x in named + [shape, expression, rotation, translation] if x is not None]
            B = max(x.shape[0] for x in given)
            ref = self.template
            parts = [x if x is not None else ref.new_zeros(B, n) for x, n in zip(named, (3, 3, 6))]
            pose = torch.cat([p.expand(B, -1) for p in parts], dim=1)
        return super().forward(shape, expression, rotation, pose, translation)


def load_flame(config: FLAMEConfig | None = None, **options) -> FLAME:
    """FLAME from the user's model file (see :class:`FLAMEConfig`)."""
    config = config or FLAMEConfig(**options)
    return FLAME(flame_data(config), dtype=getattr(torch, config.dtype))

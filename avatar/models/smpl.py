"""SMPL and SMPL-X through the ``smplx`` package, from user-supplied (licence-gated) files.

``smplx`` itself reads ``.pkl`` files with plain ``pickle.load`` (and ``.npz`` with
``allow_pickle=True``). Here the user's file is always read by
:func:`avatar.models.restricted_pickle.load_arrays` first and only plain numeric arrays
reach ``smplx``: SMPL takes them as a ``data_struct``; SMPL-X has no such argument, so
they go through a temporary ``.npz`` that we wrote ourselves.

The wrapper exposes the interface of every :class:`~avatar.models.engine.ParametricModel`;
``forward(shape, expression, rotation, pose, translation, **extra)`` with ``pose`` the
body pose ``(B, 3*NUM_BODY_JOINTS)`` and ``extra`` SMPL-X's ``jaw_pose``, ``leye_pose``,
``reye_pose``, ``left_hand_pose``, ``right_hand_pose``. Units are metres.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import smplx
import torch
from smplx.utils import Struct
from torch import Tensor

from avatar.models.engine import ModelOutput, ParametricModel, infer_batch_size
from avatar.models.restricted_pickle import dense, load_arrays

SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
SMPLX_KEYS = SMPL_KEYS + ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr",
                          "lmk_faces_idx", "lmk_bary_coords")
_INT_KEYS = {"f", "ft", "kintree_table", "lmk_faces_idx", "dynamic_lmk_faces_idx"}
# Why SMPL/SMPL-X have no face-tracking profile (the error of avatar.models.profile.require_profile).
NO_FACE_PROFILE = {
    "smpl": "a face: SMPL is a body model without expression blendshapes or face landmarks; "
            "track a head with model=ict or model=flame",
    "smplx": "named eyeball and face parts and a calibrated MediaPipe face embedding: SMPL-X is a body model "
             "whose face is tracked with the body; track a head with model=ict or model=flame",
}
_HINT = ("SMPL and SMPL-X are licence-gated: download them yourself (SMPL: smpl.is.tue.mpg.de, SMPL-X: "
         "smpl-x.is.tue.mpg.de) and pass model_options.model_path=..., or put SMPL_NEUTRAL.pkl / SMPLX_NEUTRAL.npz in "
         "$AVATAR_ASSETS; the open alternative needs no registration: model=anny (pip install anny)")
# Files looked for in $AVATAR_ASSETS and the user cache when no model_path is given.
DEFAULT_FILES = {"smpl": ("SMPL_NEUTRAL.pkl", "SMPL_NEUTRAL.npz", "smpl/SMPL_NEUTRAL.pkl", "smpl/SMPL_NEUTRAL.npz"),
                 "smplx": ("SMPLX_NEUTRAL.npz", "SMPLX_NEUTRAL.pkl", "smplx/SMPLX_NEUTRAL.npz", "smplx/SMPLX_NEUTRAL.pkl")}


@dataclass
class SMPLConfig:
    """Options of ``avatar.models.load("smpl" | "smplx", ...)``.

    Attributes:
        model_path: the model file (``.pkl`` or ``.npz``). Required.
        num_shape: shape coefficients (betas).
        num_expression: SMPL-X expression coefficients.
        use_pca, num_pca_comps, flat_hand_mean: SMPL-X hand pose options of ``smplx``.
        segmentation_path: optional JSON part segmentation (name -> vertex indices).
        dtype: buffer dtype.
    """

    model_path: str = "???"
    num_shape: int = 10
    num_expression: int = 10
    use_pca: bool = True
    num_pca_comps: int = 6
    flat_hand_mean: bool = False
    segmentation_path: str | None = None
    dtype: str = "float32"
    kind: str = "smpl"

    def build(self) -> "SMPLFamilyModel":
        return load_smpl(self)


def read_model_arrays(path: str | Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The numeric arrays of an SMPL/SMPL-X file, read without running pickled code.

    Chumpy arrays and sparse matrices become dense ndarrays; entries that are not
    numeric arrays (names, dicts) are dropped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {str(path)!r}. {_HINT}")
    out = {}
    for key, value in load_arrays(path).items():
        try:
            array = dense(value, np.int64 if key in _INT_KEYS else np.float32)
        except (TypeError, ValueError):
            continue
        out[key] = array
    missing = [k for k in required if k not in out]
    if missing:
        raise KeyError(f"{path}: missing keys {missing} (found {sorted(out)})")
    return out


def _build_smplx_module(kind: str, arrays: dict, config: SMPLConfig) -> torch.nn.Module:
    dtype = getattr(torch, config.dtype)
    common = dict(
        batch_size=1, dtype=dtype, num_betas=config.num_shape, create_betas=False,
        create_global_orient=False, create_body_pose=False, create_transl=False,
    )
    if kind == "smpl":
        return smplx.SMPL(model_path="", data_struct=Struct(**arrays), **common)
    with tempfile.TemporaryDirectory() as tmp:  # our own file: only numeric arrays inside
        npz = Path(tmp) / "model.npz"
        np.savez(npz, **arrays)
        return smplx.SMPLX(
            model_path=str(npz), ext="npz", num_expression_coeffs=config.num_expression,
            use_pca=config.use_pca, num_pca_comps=config.num_pca_comps,
            flat_hand_mean=config.flat_hand_mean, create_expression=False, create_jaw_pose=False,
            create_leye_pose=False, create_reye_pose=False, create_left_hand_pose=False,
            create_right_hand_pose=False, **common,
        )


class SMPLFamilyModel(ParametricModel):
    """SMPL or SMPL-X (``smplx`` module inside) with the common model interface."""

    def __init__(self, kind: str, arrays: dict[str, np.ndarray], config: SMPLConfig) -> None:
        super().__init__()
        self.name = kind
        self.tracking_profile = None
        self.tracking_profile_lacks = NO_FACE_PROFILE[kind]
        self.body = _build_smplx_module(kind, arrays, config)
        V = self.body.v_template.shape[0]
        self._disable_out_of_range_extra_joints(V)
        dtype = getattr(torch, config.dtype)
        parts = {"body": np.ones(V, dtype=bool)}
        if config.segmentation_path:
            parts.update(_read_segmentation(config.segmentation_path, V))
        uvs, uv_faces = arrays.get("vt"), arrays.get("ft")
        self._register_common(
            arrays["f"], uvs, uv_faces, parts, arrays.get("lmk_faces_idx"), arrays.get("lmk_bary_coords"), dtype
        )
        self.num_shape = self.body.num_betas
        self.num_expression = self.body.num_expression_coeffs
        self.joint_names = tuple(f"joint{i}" for i in range(self.body.J_regressor.shape[0]))

    def _disable_out_of_range_extra_joints(self, num_vertices: int) -> None:
        """``smplx`` appends joints at fixed vertex ids of the official topology; on a mesh
        without those vertices (e.g. a small test model) there are none to append."""
        selector = self.body.vertex_joint_selector
        if selector.extra_joints_idxs.numel() and int(selector.extra_joints_idxs.max()) >= num_vertices:
            selector.extra_joints_idxs = selector.extra_joints_idxs[:0]

    @property
    def num_vertices(self) -> int:
        return self.body.v_template.shape[0]

    def as_body_model(self):
        """This model under the body-model contract (:class:`avatar.models.body.BodyModel`)."""
        return _as_body_model(self)

    def forward(
        self,
        shape: Tensor | None = None,  # [B, num_shape]
        expression: Tensor | None = None,  # [B, num_expression] (SMPL-X)
        rotation: Tensor | None = None,  # [B, 3] axis-angle
        pose: Tensor | None = None,  # [B, 3*NUM_BODY_JOINTS] body pose, axis-angles
        translation: Tensor | None = None,  # [B, 3] metres
        **extra: Tensor,  # SMPL-X: jaw_pose, leye_pose, reye_pose [B, 3]; left/right_hand_pose
    ) -> ModelOutput:
        """Posed vertices, joints (``smplx``'s, with its extra joints) and landmarks."""
        if expression is not None and self.name == "smpl":
            raise ValueError("SMPL has no expressions")
        B = infer_batch_size(shape, expression, rotation, pose, translation, *extra.values())
        ref = self.body.v_template

        def fill(x: Tensor | None, n: int) -> Tensor:
            return ref.new_zeros(B, n) if x is None else x.expand(B, -1)

        body = self.body
        kwargs = dict(
            betas=fill(shape, self.num_shape),
            global_orient=fill(rotation, 3),
            body_pose=fill(pose, 3 * body.NUM_BODY_JOINTS),
            transl=fill(translation, 3),
        )
        if self.name == "smplx":
            hand = body.num_pca_comps if body.use_pca else 3 * body.NUM_HAND_JOINTS
            kwargs.update(
                expression=fill(expression, self.num_expression),
                jaw_pose=fill(extra.pop("jaw_pose", None), 3),
                leye_pose=fill(extra.pop("leye_pose", None), 3),
                reye_pose=fill(extra.pop("reye_pose", None), 3),
                left_hand_pose=fill(extra.pop("left_hand_pose", None), hand),
                right_hand_pose=fill(extra.pop("right_hand_pose", None), hand),
            )
        if extra:
            raise TypeError(f"{self.name} got unexpected inputs {sorted(extra)}")
        out = body(**kwargs)
        landmarks = self.landmarks(out.vertices) if self.lmk_faces.numel() else None
        return ModelOutput(vertices=out.vertices, landmarks=landmarks, joints=out.joints)


def _read_segmentation(path: str | Path, num_vertices: int) -> dict[str, np.ndarray]:
    parts = {}
    for name, ids in json.loads(Path(path).read_text()).items():
        mask = np.zeros(num_vertices, dtype=bool)
        mask[np.asarray(ids, dtype=np.int64)] = True
        parts[name] = mask
    return parts


def load_smpl(config: SMPLConfig | None = None, **options) -> SMPLFamilyModel:
    """SMPL (``kind="smpl"``) or SMPL-X (``kind="smplx"``) from the user's file."""
    config = config or SMPLConfig(**options)
    if config.kind not in ("smpl", "smplx"):
        raise ValueError(f"kind must be 'smpl' or 'smplx', got {config.kind!r}")
    path = config.model_path
    if path in (None, "", "???"):  # no path: the usual file names in $AVATAR_ASSETS and the user cache
        from avatar.models.assets import find_asset  # noqa: PLC0415

        path = find_asset(f"the {config.kind.upper()} model file", DEFAULT_FILES[config.kind], None, _HINT)
    # smplx takes posedirs as (V, 3, P), as in the files, and reshapes it itself.
    arrays = read_model_arrays(path, SMPLX_KEYS if config.kind == "smplx" else SMPL_KEYS)
    return SMPLFamilyModel(config.kind, arrays, config)


# ---------------------------------------------------------------------------------------
# The body-model contract (avatar.models.body) for SMPL / SMPL-X

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
SMPLX_EXTRA_JOINTS = ("jaw", "left_eye_smplhf", "right_eye_smplhf")
_HAND_JOINTS = tuple(f"{f}{k}" for f in ("index", "middle", "pinky", "ring", "thumb") for k in (1, 2, 3))
# Pose landmark -> (smplx vertex-id key, joint to regress it from when the mesh lacks that vertex).
_SMPL_LANDMARKS = {
    "nose": ("nose", "head"), "left_eye_inner": ("leye", "head"), "left_eye": ("leye", "head"),
    "left_eye_outer": ("leye", "head"), "right_eye_inner": ("reye", "head"), "right_eye": ("reye", "head"),
    "right_eye_outer": ("reye", "head"), "left_ear": ("lear", "head"), "right_ear": ("rear", "head"),
    "mouth_left": ("nose", "head"), "mouth_right": ("nose", "head"),
    "left_shoulder": (None, "left_shoulder"), "right_shoulder": (None, "right_shoulder"),
    "left_elbow": (None, "left_elbow"), "right_elbow": (None, "right_elbow"),
    "left_wrist": (None, "left_wrist"), "right_wrist": (None, "right_wrist"),
    "left_pinky": ("lpinky", "left_wrist"), "right_pinky": ("rpinky", "right_wrist"),
    "left_index": ("lindex", "left_wrist"), "right_index": ("rindex", "right_wrist"),
    "left_thumb": ("lthumb", "left_wrist"), "right_thumb": ("rthumb", "right_wrist"),
    "left_hip": (None, "left_hip"), "right_hip": (None, "right_hip"), "left_knee": (None, "left_knee"),
    "right_knee": (None, "right_knee"), "left_ankle": (None, "left_ankle"), "right_ankle": (None, "right_ankle"),
    "left_heel": ("LHeel", "left_ankle"), "right_heel": ("RHeel", "right_ankle"),
    "left_foot_index": ("LBigToe", "left_foot"), "right_foot_index": ("RBigToe", "right_foot"),
}
SMPL_TRACKED_JOINTS = tuple((n, 2.6 if ("knee" in n or "elbow" in n or "shoulder" in n or "hip" in n) else 0.8)
                            for n in SMPL_JOINT_NAMES[1:22])


def smpl_landmark_regressor(kind: str, J_regressor: np.ndarray, joint_names) -> np.ndarray:
    """``(33, V)`` pose landmarks of SMPL/SMPL-X: ``smplx``'s vertex picks for the face, finger
    tips, heels and toes (official topology), the joint regressor's rows for the limbs (and for
    a picked vertex the mesh lacks, e.g. a small test model)."""
    from smplx.vertex_ids import vertex_ids

    from avatar.geometry.skeleton import POSE_LANDMARK_NAMES

    ids = vertex_ids["smplx" if kind == "smplx" else "smplh"]
    V = J_regressor.shape[1]
    reg = np.zeros((len(POSE_LANDMARK_NAMES), V))
    for row, name in enumerate(POSE_LANDMARK_NAMES):
        key, joint = _SMPL_LANDMARKS[name]
        if key is not None and ids[key] < V:
            reg[row, ids[key]] = 1.0
        else:
            reg[row] = J_regressor[joint_names.index(joint)]
    return reg


def _as_body_data(model: "SMPLFamilyModel"):
    from avatar.models.body import BodyData, BodyTrackingProfile

    body = model.body
    f64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    template, shapedirs = f64(body.v_template), f64(body.shapedirs)
    J_regressor = f64(body.J_regressor)
    J = J_regressor.shape[0]
    parents = body.parents.cpu().numpy().astype(np.int64)
    parents[0] = -1
    names = SMPL_JOINT_NAMES if model.name == "smpl" else (
        SMPL_JOINT_NAMES[:22] + SMPLX_EXTRA_JOINTS
        + tuple(f"left_{h}" for h in _HAND_JOINTS) + tuple(f"right_{h}" for h in _HAND_JOINTS))
    names = names if len(names) == J else tuple(f"joint{i}" for i in range(J))
    posedirs = f64(body.posedirs)  # [(J-1)*9, V*3]
    has_smpl_names = names[:22] == SMPL_JOINT_NAMES[:22]
    landmarks = (smpl_landmark_regressor(model.name, J_regressor, names) if has_smpl_names
                 else np.tile(J_regressor[:1], (33, 1)))
    profile = BodyTrackingProfile(
        tracked_joints=tuple(n for n, _ in SMPL_TRACKED_JOINTS) if has_smpl_names else names[1:],
        joint_limits=SMPL_TRACKED_JOINTS if has_smpl_names else (), shape_bounds=(-3.0, 3.0))
    K = shapedirs.shape[-1]
    uvs = model.uvs.detach().cpu().numpy() if model.uvs is not None else None
    uv_faces = model.uv_faces.cpu().numpy() if model.uv_faces is not None else None
    return BodyData(
        name=model.name, template=template, shapedirs=shapedirs, joint_template=J_regressor @ template,
        joint_shapedirs=np.einsum("jv,vdk->jdk", J_regressor, shapedirs), faces=model.faces.cpu().numpy(),
        parents=parents, joint_names=names, weights=f64(body.lbs_weights), landmark_regressor=landmarks,
        shape_names=tuple(f"beta{i}" for i in range(K)), default_shape=np.zeros(K), tracking_profile=profile,
        uvs=uvs, uv_faces=uv_faces, posedirs=posedirs,
        parts={n: p.vertices.cpu().numpy() for n, p in model.parts.items()},
    )


def _as_body_model(self: "SMPLFamilyModel"):
    """This SMPL/SMPL-X model under the body-model contract (:class:`avatar.models.body.BodyModel`):
    the same template, shape space, skinning and pose correctives; joints are the kinematic tree's
    (``smplx``'s extra joints are not included); SMPL-X's expressions and hand PCA are not used."""
    from avatar.models.body import BodyModel

    return BodyModel(_as_body_data(self), dtype=self.body.v_template.dtype)


"""Anny, the open body model (PyPI ``anny``: Apache-2.0 code, CC0 MakeHuman data, no
registration), as a :class:`avatar.models.body.BodyModel`.

What is taken from ``anny.Anny`` once, at load: the template mesh, texture coordinates,
phenotype blendshapes (compacted by ``anny``), bone heads and their blendshapes (our joints),
sparse skinning weights (densified) and the bone tree. Shapes are Anny's phenotype
(gender, age, muscle, weight, height, proportions, each in [0, 1], 0.5 the average); the
phenotype -> blendshape-coefficient map is ``anny``'s own function (:class:`AnnyPhenotypeMap`).
Skinning and kinematics are ours (:mod:`avatar.geometry.skeleton`, plain torch), so no
``warp`` kernel runs after the load.

Anny's Blender frame (Z up, facing -Y) is turned into the contract's (Y up, facing +Z).

Pose landmarks (33, MediaPipe order) as vertex combinations:

- nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles, heels: Anny's own COCO
  keypoint regressor (``anny/data/keypoints/coco.pth``); foot index: its big-toe keypoint;
- inner/outer eye corners: the front-most skin vertex 14 mm inside/outside each eye keypoint;
  mouth corners: the front-most vertex 24 mm beside and 45 mm below the nose keypoint
  (a typical adult face at the average phenotype);
- pinky, index, thumb: the knuckle joints (``finger5-1``, ``finger2-1``, ``finger1-3``)
  as inverse-distance weights of their 8 nearest vertices.

These are approximate (not calibrated by rendering against MediaPipe) to a centimetre or so.

Load time: the first ``anny.Anny()`` on a machine builds its model data and compiles
``warp`` kernels (about a minute on one CPU core); ``anny`` caches the result in
``~/.cache/anny``, and later loads take ~3 s (importing ``anny`` and ``warp``, ~2 s, most of it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from avatar.models.body import (
    BodyData,
    BodyModel,
    BodyTrackingProfile,
    dominant_joint_parts,
)

INSTALL_HINT = "Anny is the open body model: install it with `pip install anny` (Apache-2.0, no registration)."

# Blender (Z up, facing -Y) -> contract (Y up, facing +Z): (x, y, z) -> (x, z, -y).
BLENDER_TO_BODY = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# Joints body tracking fits (SMPL's body joints, on Anny's bones) and their angle limits (radians).
ANNY_TRACKED_JOINTS: tuple[tuple[str, float], ...] = (
    ("spine05", 0.7), ("spine03", 0.6), ("spine01", 0.6), ("neck01", 0.7), ("head", 0.8),
    ("clavicle.L", 0.5), ("clavicle.R", 0.5), ("upperarm01.L", 2.8), ("upperarm01.R", 2.8),
    ("lowerarm01.L", 2.6), ("lowerarm01.R", 2.6), ("wrist.L", 1.4), ("wrist.R", 1.4),
    ("upperleg01.L", 2.4), ("upperleg01.R", 2.4), ("lowerleg01.L", 2.6), ("lowerleg01.R", 2.6),
    ("foot.L", 1.0), ("foot.R", 1.0),
)

_COCO_TO_POSE = {
    "nose": "nose", "left_eye": "left_eye", "right_eye": "right_eye", "left_ear": "left_ear",
    "right_ear": "right_ear", "left_shoulder": "left_shoulder", "right_shoulder": "right_shoulder",
    "left_elbow": "left_elbow", "right_elbow": "right_elbow", "left_wrist": "left_wrist",
    "right_wrist": "right_wrist", "left_hip": "left_hip", "right_hip": "right_hip", "left_knee": "left_knee",
    "right_knee": "right_knee", "left_ankle": "left_ankle", "right_ankle": "right_ankle",
    "left_heel": "left_heel", "right_heel": "right_heel", "left_big_toe": "left_foot_index",
    "right_big_toe": "right_foot_index",
}
_KNUCKLES = {"pinky": "finger5-1", "index": "finger2-1", "thumb": "finger1-3"}
_PART_GROUPS = {
    "head": ("neck02", "neck03", "head", "eye.L", "eye.R"),
    "hands": tuple(f"{b}.{s}" for s in "LR" for b in (
        "wrist", *(f"finger{i}-{k}" for i in range(1, 6) for k in range(1, 4)), *(f"metacarpal{i}" for i in range(1, 5)))),
    "feet": tuple(f"{b}.{s}" for s in "LR" for b in (
        "foot", *(f"toe{i}-{k}" for i in range(1, 6) for k in range(1, 4)))),
}


@dataclass
class AnnyConfig:
    """Options of the Anny body model (``avatar.models.load_body("anny", **options)``)."""

    dtype: str = "float32"  # torch dtype of the buffers
    rig: str = "anny"  # anny rig preset
    topology: str = "anny"  # anny mesh topology preset
    skinning: str = "lbs"  # "lbs": linear blend skinning; "dqs": dual quaternions (no collapse at bent or twisted joints)

    def build(self) -> BodyModel:
        return load_anny(self)


class AnnyPhenotypeMap(nn.Module):
    """Anny's phenotype ``(B, 6)`` -> blendshape coefficients ``(B, K)`` (``anny``'s map)."""

    def __init__(self, model, dtype: torch.dtype) -> None:
        super().__init__()
        self.labels = list(model.phenotype_labels)
        self.extrapolate = bool(model.extrapolate_phenotypes)
        self.register_buffer("mask", model.stacked_phenotype_blend_shapes_mask.to(dtype), persistent=False)
        proj = model.phenotype_blendshape_projection
        self.register_buffer("projection", None if proj is None else proj.to(dtype), persistent=False)
        self.anchor_names = list(dict(model.anchors.named_buffers()))
        for name, value in model.anchors.named_buffers():
            self.register_buffer(f"anchor_{name}", value.to(dtype), persistent=False)

    def forward(self, phenotype: Tensor) -> Tensor:
        from anny.models.phenotype import phenotype_blendshape_weights

        anchors = {n: getattr(self, f"anchor_{n}") for n in self.anchor_names}
        w = phenotype_blendshape_weights(phenotype, self.labels, anchors, self.mask, extrapolate=self.extrapolate)
        return w if self.projection is None else w @ self.projection


def _import_anny():
    try:
        import anny
    except ImportError as exc:
        from avatar.models.assets import AssetNotFoundError

        raise AssetNotFoundError("the Anny body model (Python package `anny`)", [], INSTALL_HINT) from exc
    return anny


def _front_vertex(verts: np.ndarray, target: np.ndarray, radius: float) -> int:
    """The front-most (largest z) vertex within ``radius`` of ``target`` in the x-y plane."""
    d = np.linalg.norm(verts[:, :2] - target[:2], axis=1)
    near = np.flatnonzero(d < radius)
    if near.size == 0:
        near = np.argsort(d)[:1]
    return int(near[np.argmax(verts[near, 2])])


def _near_weights(verts: np.ndarray, target: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(verts - target, axis=1)
    ids = np.argsort(d)[:k]
    w = 1.0 / np.maximum(d[ids], 1e-4)
    return ids, w / w.sum()


def anny_landmark_regressor(model, verts: np.ndarray, joints: np.ndarray, joint_names) -> np.ndarray:
    """``(33, V)`` pose-landmark regressor on Anny's mesh (see the module doc); ``verts`` and
    ``joints`` are the rest mesh and skeleton in the contract's frame."""
    from anny.paths import get_anny_root_dir

    from avatar.geometry.skeleton import POSE_LANDMARK_NAMES

    coco = torch.load(get_anny_root_dir() / "data" / "keypoints" / "coco.pth", weights_only=True)
    base = model.base_mesh_vertex_indices.cpu().numpy()
    reg = np.zeros((len(POSE_LANDMARK_NAMES), len(verts)))
    row = {n: i for i, n in enumerate(POSE_LANDMARK_NAMES)}
    for coco_name, pose_name in _COCO_TO_POSE.items():
        w = coco[coco_name].double().numpy()[base]
        reg[row[pose_name]] = w / w.sum()
    kp = reg @ verts
    for side, sign in (("left", 1.0), ("right", -1.0)):
        eye = kp[row[f"{side}_eye"]]
        for corner, dx in (("inner", -0.014), ("outer", 0.014)):
            reg[row[f"{side}_eye_{corner}"], _front_vertex(verts, eye + [sign * dx, 0, 0], 0.006)] = 1.0
        reg[row[f"mouth_{side}"], _front_vertex(verts, kp[row["nose"]] + [sign * 0.024, -0.045, 0], 0.006)] = 1.0
        for name, bone in _KNUCKLES.items():
            ids, w = _near_weights(verts, joints[joint_names.index(f"{bone}.{side[0].upper()}")])
            reg[row[f"{side}_{name}"], ids] = w
    return reg


def load_anny(config: AnnyConfig | None = None, **options) -> BodyModel:
    """The Anny body model (see the module doc); ``options`` are :class:`AnnyConfig`'s fields."""
    config = config or AnnyConfig(**options)
    anny = _import_anny()
    dtype = getattr(torch, config.dtype)
    start = time.perf_counter()
    model = anny.Anny(rig=config.rig, topology=config.topology, skinning_method="lbs").to(torch.float64)
    rest = model()  # default phenotype, rest pose
    C = torch.as_tensor(BLENDER_TO_BODY, dtype=torch.float64)

    def turn(x: Tensor) -> np.ndarray:  # [..., 3] Blender -> contract frame
        return (x.detach() @ C.T).numpy()

    shapedirs = turn(model.blendshapes).transpose(1, 2, 0)  # [K, V, 3] -> [V, 3, K]
    joint_shapedirs = turn(model.bone_heads_blendshapes).transpose(1, 2, 0)
    template, joint_template = turn(model.template_vertices), turn(model.template_bone_heads)
    names = tuple(model.bone_labels)
    J, V = len(names), len(template)
    weights = np.zeros((V, J))
    np.add.at(weights, (np.arange(V)[:, None].repeat(model.vertex_bone_indices.shape[1], 1),
                        model.vertex_bone_indices.cpu().numpy()), model.vertex_bone_weights.cpu().numpy())
    weights /= weights.sum(1, keepdims=True)
    verts, joints = turn(rest["rest_vertices"][0]), turn(rest["rest_bone_heads"][0])
    profile = BodyTrackingProfile(tracked_joints=tuple(n for n, _ in ANNY_TRACKED_JOINTS),
                                  joint_limits=ANNY_TRACKED_JOINTS, shape_bounds=(0.0, 1.0))
    data = BodyData(
        name="anny", template=template, shapedirs=shapedirs, joint_template=joint_template,
        joint_shapedirs=joint_shapedirs, faces=model.faces.cpu().numpy(), parents=np.asarray(model.bone_parents),
        joint_names=names, weights=weights,
        landmark_regressor=anny_landmark_regressor(model, verts, joints, names),
        shape_names=tuple(model.phenotype_labels), default_shape=np.full(len(model.phenotype_labels), 0.5),
        tracking_profile=profile, uvs=model.texture_coordinates.cpu().numpy(),
        uv_faces=model.face_texture_coordinate_indices.cpu().numpy(),
        parts={"body": np.ones(V, bool), **dominant_joint_parts(weights, names, _PART_GROUPS)},
        shape_map=AnnyPhenotypeMap(model, dtype),
    )
    body = BodyModel(data, dtype=dtype, skinning=config.skinning)
    body.load_seconds = time.perf_counter() - start
    return body


__all__ = ["ANNY_TRACKED_JOINTS", "AnnyConfig", "AnnyPhenotypeMap", "BLENDER_TO_BODY", "INSTALL_HINT", "load_anny"]

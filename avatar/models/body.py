"""The body-model contract: one interface for Anny, SMPL and SMPL-X.

Front door::

    body = avatar.models.load_body("anny")                         # open default (pip install anny)
    body = avatar.models.load_body("smpl", model_path=".../SMPL_NEUTRAL.pkl")
    out = body(shape=s, pose=p, rotation=r, translation=t)        # all optional, rest by default
    out.vertices (B, V, 3); out.joints (B, J, 3); out.landmarks (B, 33, 3); out.transforms (B, J, 4, 4)

Every body model is a :class:`BodyModel` built from a :class:`BodyData` and exposes:

- ``template (V, 3)``: rest vertices at the default shape; ``faces (F, 3)``;
  ``uvs (T, 2)`` / ``uv_faces (F, 3)`` (always present: a model without texture coordinates
  gets one atlas cell per triangle, :func:`triangle_atlas_uvs`);
- ``joint_names`` (J), ``parents (J,)`` (``-1`` for the root, joint 0; parents before
  children), ``lbs_weights (V, J)`` (rows sum to 1);
- ``shape_names`` (S) with ``default_shape (S,)`` and ``tracking_profile.shape_bounds``:
  Anny's phenotype (gender, age, muscle, weight, height, proportions in [0, 1], 0.5 the
  average) or SMPL's betas (0 the mean);
- ``landmark_regressor (33, V)``: the 33 MediaPipe Pose landmarks
  (:data:`avatar.geometry.skeleton.POSE_LANDMARK_NAMES`) as vertex combinations
  (rows sum to 1), so they follow shape and pose;
- ``tracking_profile``: a :class:`BodyTrackingProfile` (which joints body tracking fits, their
  angle limits, the shape range);
- ``forward(shape, pose, rotation, translation) -> BodyOutput``, torch, batched and
  differentiable; device and dtype follow the model's buffers (move it with ``.to``).

Coordinates and units, the same for every body model: metres; the rest pose stands upright
with +Y up, the subject facing +Z, its left side toward +X (SMPL's frame; Anny's Z-up
Blender frame is turned into it at load). Pose conventions are those of
:mod:`avatar.geometry.skeleton`: ``pose[:, j]`` is joint ``j``'s rotation relative to its
parent in the rest pose's axes (zero pose = the model's rest pose: Anny's is an A-pose,
SMPL's a T-pose); ``rotation`` turns the whole body about the root joint's rest position,
after the root's own pose, then ``translation`` is added::

    posed = R(rotation) @ (LBS(rest(shape), pose) - root_rest) + root_rest + translation

``skinning="dqs"`` (Anny's model option ``skinning``, e.g. ``model_options.skinning=dqs`` for
``avatar train``) blends the joints' motions as dual quaternions instead of matrices
(:func:`avatar.geometry.skeleton.dual_quaternion_skinning`); the global turn is rigid either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from avatar.geometry.skeleton import (
    POSE_LANDMARK_NAMES,
    as_rotation_matrices,
    dual_quaternion_skinning,
    forward_kinematics,
    kinematic_levels,
    linear_blend_skinning,
)
from avatar.models.engine import ParametricModel

SKINNING = {"lbs": linear_blend_skinning, "dqs": dual_quaternion_skinning}  # BodyModel(skinning=...)


@dataclass(frozen=True)
class BodyTrackingProfile:
    """What body tracking needs to know about a body model.

    Attributes:
        tracked_joints: joints whose rotations body tracking fits (the root's is the global
            rotation, so it is not listed); the others stay at rest.
        joint_limits: ``(name, max_angle)`` pairs: a simple pose prior, the largest rotation
            (radians) a tracked joint takes from rest.
        shape_bounds: ``(low, high)`` range of the shape parameters.
        landmark_names: the landmarks of ``landmark_regressor``, in order.
    """

    tracked_joints: tuple[str, ...]
    joint_limits: tuple[tuple[str, float], ...] = ()
    shape_bounds: tuple[float, float] = (0.0, 1.0)
    landmark_names: tuple[str, ...] = POSE_LANDMARK_NAMES

    def max_angle(self, joint: str, default: float = np.pi) -> float:
        return dict(self.joint_limits).get(joint, default)


@dataclass
class BodyOutput:
    """What a body model's forward returns (metres, the model's dtype and device).

    Attributes:
        vertices: ``(B, V, 3)`` posed vertices.
        joints: ``(B, J, 3)`` posed joint positions.
        landmarks: ``(B, 33, 3)`` MediaPipe Pose landmarks on ``vertices``.
        transforms: ``(B, J, 4, 4)`` skinning transforms (posed world <- rest), global
            rotation and translation included: ``vertices = LBS(rest_vertices, transforms)``.
        rest_vertices: ``(B, V, 3)`` the shaped mesh at rest (zero pose, no global motion),
            pose correctives excluded.
        rest_joints: ``(B, J, 3)`` the shaped skeleton at rest.
    """

    vertices: Tensor
    joints: Tensor
    landmarks: Tensor
    transforms: Tensor
    rest_vertices: Tensor
    rest_joints: Tensor


@dataclass
class BodyData:
    """Everything a body asset provides, as numpy arrays in the contract's frame (metres).

    ``shape_map`` turns shape parameters ``(B, S)`` into blend coefficients ``(B, K)``
    (a torch module; None: the identity, ``K == S``, as SMPL's betas).
    """

    name: str
    template: np.ndarray  # [V, 3]
    shapedirs: np.ndarray  # [V, 3, K]
    joint_template: np.ndarray  # [J, 3]
    joint_shapedirs: np.ndarray  # [J, 3, K]
    faces: np.ndarray  # [F, 3]
    parents: np.ndarray  # [J]
    joint_names: tuple[str, ...]
    weights: np.ndarray  # [V, J]
    landmark_regressor: np.ndarray  # [33, V]
    shape_names: tuple[str, ...]
    default_shape: np.ndarray  # [S]
    tracking_profile: BodyTrackingProfile
    uvs: np.ndarray | None = None  # [T, 2]
    uv_faces: np.ndarray | None = None  # [F, 3]
    posedirs: np.ndarray | None = None  # [(J-1)*9, V*3]
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    shape_map: nn.Module | None = None


def triangle_atlas_uvs(num_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates for a mesh without any: every triangle gets its own half of a
    cell in a square grid (two triangles per cell, a small margin so cells never bleed).

    Returns ``uvs (3F, 2)`` in ``[0, 1]`` and ``uv_faces (F, 3)``."""
    cells = int(np.ceil(np.sqrt((num_faces + 1) // 2)))
    f = np.arange(num_faces)
    cell, upper = f // 2, f % 2
    u0, v0 = (cell % cells) / cells, (cell // cells) / cells
    size, pad = 1.0 / cells, 0.08 / cells
    lo, hi = pad, size - pad
    lower_tri = np.array([[lo, lo], [hi, lo], [lo, hi]])
    upper_tri = np.array([[hi, lo + 2 * pad], [hi, hi], [lo + 2 * pad, hi]])
    corners = np.where(upper[:, None, None] == 1, upper_tri, lower_tri)  # [F, 3, 2]
    uvs = corners + np.stack((u0, v0), -1)[:, None, :]
    return uvs.reshape(-1, 2).astype(np.float32), np.arange(3 * num_faces).reshape(num_faces, 3)


def dominant_joint_parts(weights: np.ndarray, joint_names, groups: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    """Vertex masks of named regions: a vertex belongs to a group when its heaviest joint does."""
    dominant = np.asarray(weights).argmax(axis=1)
    parts = {}
    for name, members in groups.items():
        ids = [joint_names.index(j) for j in members if j in joint_names]
        parts[name] = np.isin(dominant, ids)
    return parts


class BodyModel(ParametricModel):
    """A skinned body (see the module doc for the contract and its conventions).

    Buffers: ``template (V, 3)``, ``shapedirs (V, 3, K)``, ``joint_template (J, 3)``,
    ``joint_shapedirs (J, 3, K)``, ``parents (J,)``, ``lbs_weights (V, J)``,
    ``landmark_regressor (33, V)``, ``default_shape (S,)``, ``posedirs`` (or None),
    ``faces``, ``uvs``, ``uv_faces``.
    """

    is_body = True

    def __init__(self, data: BodyData, dtype: torch.dtype = torch.float32, skinning: str = "lbs") -> None:
        super().__init__()
        if skinning not in SKINNING:
            raise ValueError(f"model option skinning={skinning!r}: expected one of {', '.join(SKINNING)} "
                             "(lbs: linear blend skinning; dqs: dual-quaternion skinning)")
        self.skinning = skinning
        self.name = data.name
        V, J = data.template.shape[0], len(data.parents)
        K = data.shapedirs.shape[-1]
        assert data.template.shape == (V, 3) and data.shapedirs.shape == (V, 3, K), "template (V, 3), shapedirs (V, 3, K)"
        assert data.joint_template.shape == (J, 3) and data.joint_shapedirs.shape == (J, 3, K), (
            f"joint_template ({J}, 3) and joint_shapedirs ({J}, 3, {K}) expected, got "
            f"{data.joint_template.shape} and {data.joint_shapedirs.shape}")
        assert data.weights.shape == (V, J), f"weights must be ({V}, {J}), got {data.weights.shape}"
        assert data.landmark_regressor.shape == (len(POSE_LANDMARK_NAMES), V), "landmark_regressor must be (33, V)"
        assert len(data.joint_names) == J and len(data.shape_names) == len(data.default_shape)
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), dtype=dtype)  # noqa: E731
        self.register_buffer("template", as_t(data.template), persistent=False)
        self.register_buffer("shapedirs", as_t(data.shapedirs), persistent=False)
        self.register_buffer("joint_template", as_t(data.joint_template), persistent=False)
        self.register_buffer("joint_shapedirs", as_t(data.joint_shapedirs), persistent=False)
        parents = torch.as_tensor(np.asarray(data.parents, np.int64))
        self.register_buffer("parents", parents, persistent=False)
        self.register_buffer("lbs_weights", as_t(data.weights), persistent=False)
        self.register_buffer("landmark_regressor", as_t(data.landmark_regressor), persistent=False)
        self.register_buffer("default_shape", as_t(data.default_shape), persistent=False)
        self.register_buffer("posedirs", None if data.posedirs is None else as_t(data.posedirs), persistent=False)
        uvs, uv_faces = data.uvs, data.uv_faces
        if uvs is None or uv_faces is None:
            uvs, uv_faces = triangle_atlas_uvs(len(data.faces))
        self._register_common(data.faces, uvs, uv_faces, data.parts or {"body": np.ones(V, bool)}, None, None, dtype)
        self.joint_names = tuple(data.joint_names)
        self.shape_names = tuple(data.shape_names)
        self.body_profile = data.tracking_profile
        self.tracking_profile = None  # no face-tracking profile: see require_profile
        self.tracking_profile_lacks = "a face (it is a body model: track it with its body_profile)"
        self.shape_map = data.shape_map
        self._levels = kinematic_levels(data.parents)
        # Sparse skinning when few joints move each vertex (Anny: 9 of 104): K joints per vertex.
        k = int((np.asarray(data.weights) > 0).sum(1).max())
        self.sparse_skinning = k <= J // 4
        top = torch.topk(self.lbs_weights, k, dim=1) if self.sparse_skinning else None
        self.register_buffer("skin_joints", None if top is None else top.indices, persistent=False)
        self.register_buffer("skin_weights", None if top is None else top.values, persistent=False)

    # -- contract -------------------------------------------------------------------------

    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_shape(self) -> int:
        return len(self.shape_names)

    @property
    def landmark_names(self) -> tuple[str, ...]:
        return POSE_LANDMARK_NAMES

    def joint_index(self, names) -> list[int]:
        """Indices of joints by name; a :class:`KeyError` names the unknown ones."""
        missing = [n for n in names if n not in self.joint_names]
        if missing:
            raise KeyError(f"body model '{self.name}' has no joints {missing}")
        return [self.joint_names.index(n) for n in names]

    def rest(self, shape: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Shaped rest mesh ``(B, V, 3)`` and skeleton ``(B, J, 3)`` (B = 1 without ``shape``)."""
        if shape is None:
            shape = self.default_shape[None]
        self._check(shape, "shape")
        if shape.ndim != 2 or shape.shape[1] != self.num_shape:
            raise ValueError(f"shape must be (B, {self.num_shape}) ({', '.join(self.shape_names)}), got {tuple(shape.shape)}")
        coeffs = shape if self.shape_map is None else self.shape_map(shape)
        verts = self.template + torch.einsum("bk,vdk->bvd", coeffs, self.shapedirs)
        joints = self.joint_template + torch.einsum("bk,jdk->bjd", coeffs, self.joint_shapedirs)
        return verts, joints

    def forward(
        self,
        shape: Tensor | None = None,  # [B, S]
        pose: Tensor | None = None,  # [B, J, 3] axis-angles or [B, J, 3, 3]
        rotation: Tensor | None = None,  # [B, 3] axis-angle or [B, 3, 3]
        translation: Tensor | None = None,  # [B, 3] metres
    ) -> BodyOutput:
        """Posed body; every input optional (default shape, rest pose, no global motion);
        batch size from whichever are given (size 1 broadcasts)."""
        rest_verts, rest_joints = self.rest(shape)
        vertices, joints, transforms = self.skin(rest_verts, rest_joints, pose, rotation, translation)
        B = vertices.shape[0]
        landmarks = torch.einsum("lv,bvd->bld", self.landmark_regressor, vertices)
        return BodyOutput(vertices, joints, landmarks, transforms, rest_verts.expand(B, -1, -1),
                          rest_joints.expand(B, -1, -1))

    def skin(
        self,
        rest_vertices: Tensor,  # [B or 1, V, 3] from rest()
        rest_joints: Tensor,  # [B or 1, J, 3] from rest()
        pose: Tensor | None = None,  # [B, J, 3] or [B, J, 3, 3]
        rotation: Tensor | None = None,  # [B, 3] or [B, 3, 3]
        translation: Tensor | None = None,  # [B, 3]
        vertex_ids: Tensor | None = None,  # [V'] skin only these vertices
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Pose a shaped rest body (:meth:`rest`, which a caller posing one subject many times
        computes once): ``(vertices [B, V or V', 3], joints [B, J, 3], transforms [B, J, 4, 4])``.
        ``vertex_ids``: skin only those vertices (``rest_vertices`` still the whole mesh)."""
        for x, what in ((pose, "pose"), (rotation, "rotation"), (translation, "translation")):
            if x is not None:
                self._check(x, what)
        sizes = {t.shape[0] for t in (rest_vertices, pose, rotation, translation) if t is not None} - {1}
        if len(sizes) > 1:
            raise ValueError(f"inputs disagree on the batch size: {sorted(sizes)} (size 1 broadcasts)")
        B, J = (sizes.pop() if sizes else 1), self.num_joints
        eye = torch.eye(3, dtype=self.template.dtype, device=self.template.device)
        rots = eye.expand(B, J, 3, 3) if pose is None else as_rotation_matrices(pose)
        if rots.shape[1:] != (J, 3, 3):
            raise ValueError(f"pose must be (B, {J}, 3) or (B, {J}, 3, 3), got {tuple(pose.shape)}")
        rots = rots.expand(B, J, 3, 3)
        if rotation is not None:
            glob = as_rotation_matrices(rotation).expand(B, 3, 3)
            rots = torch.cat((glob[:, None] @ rots[:, :1], rots[:, 1:]), dim=1)
        joints, transforms = forward_kinematics(rest_joints.expand(B, -1, -1), self.parents, rots, self._levels)
        shaped = rest_vertices
        if self.posedirs is not None and pose is not None:
            feature = (rots[:, 1:] - eye).reshape(B, -1)
            shaped = shaped + (feature @ self.posedirs).reshape(B, -1, 3)
        if translation is not None:
            t = translation.expand(B, 3)
            joints = joints + t[:, None]
            transforms = transforms.clone()
            transforms[:, :, :3, 3] = transforms[:, :, :3, 3] + t[:, None]
        weights, joint_ids = (self.skin_weights, self.skin_joints) if self.sparse_skinning else (self.lbs_weights, None)
        if vertex_ids is not None:
            shaped, weights = shaped[:, vertex_ids], weights[vertex_ids]
            joint_ids = None if joint_ids is None else joint_ids[vertex_ids]
        vertices, _ = SKINNING[self.skinning](shaped.expand(B, -1, -1), weights, transforms, joint_ids)
        return vertices, joints, transforms

    def _check(self, x: Tensor, what: str) -> None:
        ref = self.template
        if x.dtype != ref.dtype or x.device != ref.device:
            raise ValueError(f"{what} is {x.dtype} on {x.device} but the body model is {ref.dtype} on {ref.device}: "
                             "move the model with .to(...) or convert the input")

    def landmarks(self, vertices: Tensor) -> Tensor:
        """The 33 pose landmarks ``(B, 33, 3)`` on posed ``vertices (B, V, 3)``."""
        return torch.einsum("lv,bvd->bld", self.landmark_regressor, vertices)

    def zero_pose(self, batch: int = 1) -> Tensor:
        """Rest pose ``(batch, J, 3)`` axis-angles on the model's device and dtype."""
        return self.template.new_zeros(batch, self.num_joints, 3)


__all__ = [
    "BodyData", "BodyModel", "BodyOutput", "BodyTrackingProfile", "dominant_joint_parts", "triangle_atlas_uvs",
]

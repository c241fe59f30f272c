"""The parametric-model engine: linear blendshapes, then optional linear blend skinning.

    v_shaped = template + shapedirs · shape + exprdirs · expression
    vertices = LBS(v_shaped + posedirs · pose_feature, joints(v_shaped), pose)   (with a skeleton)
    vertices = R(rotation) · v_shaped + translation                               (without one)

The math lives in stateless tensor functions (reusing :mod:`smplx.lbs`); the module
classes only hold buffers and call them. Every asset loader (ICT-FaceKit, FLAME, ...)
produces a :class:`ModelData` of numpy arrays and :class:`BlendshapeModel` is built from it.

Conventions: vertices in metres, ``(B, V, 3)``; a global rotation is an axis-angle
``(B, 3)`` (radians); joint rotations are axis-angles ``(B, J-1, 3)`` in the order of
the kinematic tree (joint 0, the root, takes the global rotation). Device and dtype
follow the module's buffers; inputs must already be on that device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from smplx.lbs import blend_shapes, lbs
from torch import Tensor, nn

from avatar.geometry.mesh import interpolate_barycentric, triangle_frames
from avatar.geometry.rotations import axis_angle_to_matrix
from avatar.models.profile import TrackingProfile


@dataclass
class ModelOutput:
    """What a parametric model's forward returns.

    Attributes:
        vertices: ``(B, V, 3)`` posed vertices in metres.
        landmarks: ``(B, L, 3)`` the landmark embedding on ``vertices``, or None without one.
        joints: ``(B, J, 3)`` posed joint positions, or None without a skeleton.
    """

    vertices: Tensor
    landmarks: Tensor | None = None
    joints: Tensor | None = None


@dataclass
class Part:
    """A named region of a model: boolean ``vertices (V,)`` and ``faces (F,)`` masks."""

    vertices: Tensor
    faces: Tensor


@dataclass
class Skeleton:
    """Joint tree and skinning data (numpy), in the layout of :func:`smplx.lbs.lbs`.

    Attributes:
        parents: ``(J,)`` int parent of each joint, ``-1`` for the root (joint 0).
        joint_regressor: ``(J, V)`` joint positions as vertex combinations (dense).
        weights: ``(V, J)`` skinning weights.
        posedirs: ``((J-1)*9, V*3)`` pose-corrective blendshapes, or None.
        joint_names: ``J`` names.
    """

    parents: np.ndarray
    joint_regressor: np.ndarray
    weights: np.ndarray
    posedirs: np.ndarray | None = None
    joint_names: tuple[str, ...] = ()


@dataclass
class ModelData:
    """Everything a model asset provides, as numpy arrays (lengths in metres).

    Attributes:
        name: model name ("ict", "flame", ...).
        template: ``(V, 3)`` neutral mesh.
        shapedirs: ``(V, 3, S)`` identity blendshapes.
        exprdirs: ``(V, 3, E)`` expression blendshapes.
        faces: ``(F, 3)`` triangles, counter-clockwise seen from outside.
        uvs: ``(T, 2)`` texture coordinates or None; ``uv_faces`` ``(F, 3)`` indexes them.
        parts: name -> ``(V,)`` bool vertex mask (face masks are derived: >= 2 corners inside).
        lmk_faces, lmk_bary: ``(L,)`` triangle and ``(L, 3)`` barycentric weights per landmark.
        expression_names: names of the ``E`` expressions, or empty when unnamed.
        skeleton: joint tree for skinning, or None for a rigid-only model.
        tracking_profile: what face tracking needs from the model
            (:class:`avatar.models.profile.TrackingProfile`), or None when it cannot be face-tracked;
            ``tracking_profile_lacks`` then says what it lacks.
    """

    name: str
    template: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    lmk_faces: np.ndarray | None = None
    lmk_bary: np.ndarray | None = None
    expression_names: tuple[str, ...] = ()
    skeleton: Skeleton | None = None
    tracking_profile: TrackingProfile | None = None
    tracking_profile_lacks: str | None = None


# ---------------------------------------------------------------------------------------
# Stateless functions


def blend(template: Tensor, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """``template + dirs · coeffs``: ``(B, V, 3)``.

    Args:
        template: ``(V, 3)`` or ``(B, V, 3)``.
        dirs: ``(V, 3, K)`` blendshape basis.
        coeffs: ``(B, k)`` with ``k <= K``: the first ``k`` blendshapes are used.
    """
    k = coeffs.shape[-1]
    assert coeffs.ndim == 2 and k <= dirs.shape[-1], (
        f"coefficients must be (B, k<={dirs.shape[-1]}), got {tuple(coeffs.shape)}"
    )
    return template + blend_shapes(coeffs, dirs[..., :k])


def rigid_transform(points: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
    """``R(rotation) @ p + translation`` for points ``(B, N, 3)``, axis-angle ``(B, 3)``,
    translation ``(B, 3)``; rotation about the origin."""
    rot = axis_angle_to_matrix(rotation)  # [B, 3, 3]
    return points @ rot.transpose(-1, -2) + translation[:, None, :]


def evaluate_landmarks(vertices: Tensor, faces: Tensor, lmk_faces: Tensor, lmk_bary: Tensor) -> Tensor:
    """Landmarks ``(B, L, 3)`` of an embedding ``(lmk_faces (L,), lmk_bary (L, 3))`` on
    posed ``vertices (B, V, 3)``."""
    return interpolate_barycentric(vertices, faces, lmk_faces, lmk_bary)


def vertex_landmark_embedding(faces: np.ndarray, vertex_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embedding ``(lmk_faces (L,), lmk_bary (L, 3))`` that reproduces given vertices exactly:
    for each vertex, the first triangle that uses it and a one-hot barycentric weight."""
    vertex_ids = np.asarray(vertex_ids, dtype=np.int64)
    first = np.full(int(faces.max()) + 1, -1, dtype=np.int64)
    flat = faces.reshape(-1)
    # reversed assignment keeps the first occurrence
    first[flat[::-1]] = (np.arange(flat.size)[::-1])
    missing = vertex_ids[(vertex_ids >= first.size) | (first[np.minimum(vertex_ids, first.size - 1)] < 0)]
    if missing.size:
        raise ValueError(f"landmark vertices {missing.tolist()} are not used by any face")
    slot = first[vertex_ids]
    bary = np.zeros((vertex_ids.size, 3), dtype=np.float32)
    bary[np.arange(vertex_ids.size), slot % 3] = 1.0
    return slot // 3, bary


# ---------------------------------------------------------------------------------------
# Modules


class ParametricModel(nn.Module):
    """What every parametric model exposes, whatever its engine.

    Buffers: ``faces (F, 3)`` long, ``uvs (T, 2)`` and ``uv_faces (F, 3)`` (UV seams allowed:
    uv indices differ from vertex indices; absent -> None), ``lmk_faces (L,)``,
    ``lmk_bary (L, 3)``, part masks. Subclasses implement ``forward``.

    ``tracking_profile``: what face tracking needs (:class:`~avatar.models.profile.TrackingProfile`),
    set by the loader; None with ``tracking_profile_lacks`` saying why (see
    :func:`avatar.models.profile.require_profile`).
    """

    name: str = "model"
    expression_names: tuple[str, ...] = ()
    joint_names: tuple[str, ...] = ()
    tracking_profile: TrackingProfile | None = None
    tracking_profile_lacks: str | None = None

    def _register_common(
        self,
        faces: np.ndarray,
        uvs: np.ndarray | None,
        uv_faces: np.ndarray | None,
        parts: dict[str, np.ndarray],
        lmk_faces: np.ndarray | None,
        lmk_bary: np.ndarray | None,
        dtype: torch.dtype,
    ) -> None:
        faces_t = torch.as_tensor(np.asarray(faces, dtype=np.int64))
        self.register_buffer("faces", faces_t, persistent=False)
        has_uv = uvs is not None and uv_faces is not None
        self.register_buffer("uvs", torch.as_tensor(uvs, dtype=dtype) if has_uv else None, persistent=False)
        self.register_buffer(
            "uv_faces", torch.as_tensor(np.asarray(uv_faces, np.int64)) if has_uv else None, persistent=False
        )
        self.part_names = tuple(parts)
        vmask = np.stack([np.asarray(m, dtype=bool) for m in parts.values()]) if parts else np.zeros((0, 0), bool)
        # A face belongs to a part when at least two of its corners do: disjoint vertex
        # parts then give (almost) disjoint face parts, seam faces included.
        fmask = vmask[:, faces].sum(axis=-1) >= 2 if parts else np.zeros((0, len(faces)), bool)
        self.register_buffer("part_vertex_masks", torch.as_tensor(vmask), persistent=False)
        self.register_buffer("part_face_masks", torch.as_tensor(fmask), persistent=False)
        if lmk_faces is None:
            lmk_faces, lmk_bary = np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
        self.register_buffer("lmk_faces", torch.as_tensor(np.asarray(lmk_faces, np.int64)), persistent=False)
        self.register_buffer("lmk_bary", torch.as_tensor(lmk_bary, dtype=dtype), persistent=False)

    @property
    def parts(self) -> dict[str, Part]:
        """Named regions: name -> :class:`Part` with ``(V,)`` vertex and ``(F,)`` face masks
        (a face belongs to a part when at least two of its three corners do)."""
        return {
            n: Part(self.part_vertex_masks[i], self.part_face_masks[i]) for i, n in enumerate(self.part_names)
        }

    @property
    def num_vertices(self) -> int:
        raise NotImplementedError

    def landmarks(self, vertices: Tensor) -> Tensor:
        """The landmark embedding ``(B, L, 3)`` evaluated on posed ``vertices (B, V, 3)``."""
        return evaluate_landmarks(vertices, self.faces, self.lmk_faces, self.lmk_bary)

    def triangle_frames(self, vertices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-triangle frames of posed ``vertices (B, V, 3)``: origin ``(B, F, 3)``,
        rotation ``(B, F, 3, 3)``, scale ``(B, F)``; see :func:`avatar.geometry.mesh.triangle_frames`."""
        return triangle_frames(vertices, self.faces)


def infer_batch_size(*tensors: Tensor | None) -> int:
    sizes = {t.shape[0] for t in tensors if t is not None}
    sizes.discard(1)
    if len(sizes) > 1:
        raise ValueError(f"inputs disagree on the batch size: {sorted(sizes)} (size 1 broadcasts)")
    return sizes.pop() if sizes else 1


class BlendshapeModel(ParametricModel):
    """Linear blendshapes + optional skinning, built from a :class:`ModelData`.

    ``forward(shape, expression, rotation, pose, translation)``: all optional, zeros by
    default, batch size from whichever are given (size 1 broadcasts).

    Buffers: ``template (V, 3)``, ``blenddirs (V, 3, S+E)`` (identity then expression
    blendshapes, one tensor so skinning needs no concatenation per call) and, with a
    skeleton, ``posedirs``, ``joint_regressor``, ``parents``, ``lbs_weights``.
    """

    def __init__(self, data: ModelData, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.name = data.name
        V = data.template.shape[0]
        assert data.template.shape == (V, 3), f"template must be (V, 3), got {data.template.shape}"
        assert data.shapedirs.shape[:2] == (V, 3) and data.exprdirs.shape[:2] == (V, 3), (
            f"blendshapes must be (V={V}, 3, K), got {data.shapedirs.shape} and {data.exprdirs.shape}"
        )
        self.num_shape = data.shapedirs.shape[-1]
        self.num_expression = data.exprdirs.shape[-1]
        self.expression_names = tuple(data.expression_names)
        self.tracking_profile = data.tracking_profile
        self.tracking_profile_lacks = data.tracking_profile_lacks
        self.register_buffer("template", torch.as_tensor(data.template, dtype=dtype))
        dirs = np.concatenate((data.shapedirs, data.exprdirs), axis=-1)
        self.register_buffer("blenddirs", torch.as_tensor(dirs, dtype=dtype))
        self._register_common(
            data.faces, data.uvs, data.uv_faces, data.parts, data.lmk_faces, data.lmk_bary, dtype
        )
        self.has_skeleton = data.skeleton is not None
        if data.skeleton is not None:
            self._register_skeleton(data.skeleton, V, dtype)

    def _register_skeleton(self, sk: Skeleton, V: int, dtype: torch.dtype) -> None:
        J = len(sk.parents)
        assert sk.joint_regressor.shape == (J, V) and sk.weights.shape == (V, J), (
            f"skeleton of {J} joints needs joint_regressor ({J}, {V}) and weights ({V}, {J}), "
            f"got {sk.joint_regressor.shape} and {sk.weights.shape}"
        )
        parents = torch.as_tensor(np.asarray(sk.parents, np.int64))
        parents[0] = -1
        self.register_buffer("parents", parents)
        self.register_buffer("joint_regressor", torch.as_tensor(sk.joint_regressor, dtype=dtype))
        self.register_buffer("lbs_weights", torch.as_tensor(sk.weights, dtype=dtype))
        posedirs = sk.posedirs if sk.posedirs is not None else np.zeros(((J - 1) * 9, V * 3))
        assert posedirs.shape == ((J - 1) * 9, V * 3), f"posedirs must be ({(J - 1) * 9}, {V * 3})"
        self.register_buffer("posedirs", torch.as_tensor(posedirs, dtype=dtype))
        self.joint_names = tuple(sk.joint_names) or tuple(f"joint{i}" for i in range(J))

    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names) if self.has_skeleton else 0

    @property
    def shapedirs(self) -> Tensor:
        """``(V, 3, S)`` identity blendshapes (a view of ``blenddirs``)."""
        return self.blenddirs[..., : self.num_shape]

    @property
    def exprdirs(self) -> Tensor:
        """``(V, 3, E)`` expression blendshapes (a view of ``blenddirs``)."""
        return self.blenddirs[..., self.num_shape :]

    def _coeffs(self, x: Tensor | None, n: int, batch: int, what: str) -> Tensor:
        ref = self.template
        if x is None:
            return ref.new_zeros(batch, n)
        if x.dtype != ref.dtype or x.device != ref.device:
            raise ValueError(
                f"{what} is {x.dtype} on {x.device} but the model is {ref.dtype} on {ref.device}: "
                "move the model with .to(...) or convert the input"
            )
        if x.ndim != 2 or x.shape[1] > n:
            raise ValueError(f"{what} must be (B, k<={n}), got {tuple(x.shape)}")
        if x.shape[1] < n:
            x = torch.cat((x, x.new_zeros(x.shape[0], n - x.shape[1])), dim=1)
        return x.expand(batch, n)

    def forward(
        self,
        shape: Tensor | None = None,  # [B, S'<=S]
        expression: Tensor | None = None,  # [B, E'<=E]
        rotation: Tensor | None = None,  # [B, 3] axis-angle
        pose: Tensor | None = None,  # [B, J-1, 3] or [B, (J-1)*3] axis-angles (skeleton only)
        translation: Tensor | None = None,  # [B, 3] metres
    ) -> ModelOutput:
        """Posed vertices, landmarks and joints; see the module doc for the conventions.

        Without a skeleton the global ``rotation`` turns the mesh about the model's origin;
        with one it is the root joint's rotation (about the root joint).
        """
        if pose is not None and not self.has_skeleton:
            raise ValueError(f"model '{self.name}' has no skeleton: use rotation/translation, not pose")
        B = infer_batch_size(shape, expression, rotation, pose, translation)
        coeffs = torch.cat(
            (
                self._coeffs(shape, self.num_shape, B, "shape"),
                self._coeffs(expression, self.num_expression, B, "expression"),
            ),
            dim=1,
        )
        rotation = self._coeffs(rotation, 3, B, "rotation")
        translation = self._coeffs(translation, 3, B, "translation")
        joints = None
        if self.has_skeleton:
            n_pose = 3 * (self.num_joints - 1)
            pose = self._coeffs(None if pose is None else pose.reshape(pose.shape[0], -1), n_pose, B, "pose")
            full_pose = torch.cat((rotation, pose), dim=1)
            vertices, joints = lbs(
                coeffs, full_pose, self.template, self.blenddirs, self.posedirs,
                self.joint_regressor, self.parents, self.lbs_weights,
            )
            vertices = vertices + translation[:, None]
            joints = joints + translation[:, None]
        else:
            vertices = rigid_transform(blend(self.template, self.blenddirs, coeffs), rotation, translation)
        landmarks = self.landmarks(vertices) if self.lmk_faces.numel() else None
        return ModelOutput(vertices=vertices, landmarks=landmarks, joints=joints)

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, vertices={self.num_vertices}, faces={self.faces.shape[0]}, "
            f"shape={self.num_shape}, expression={self.num_expression}, joints={self.num_joints}, "
            f"landmarks={self.lmk_faces.shape[0]}"
        )

"""Skinned body Gaussians: Gaussians on a body model's triangles, moved by its skinning.

The body model (:class:`avatar.models.body.BodyModel`) poses its mesh by linear blend skinning
every frame; each Gaussian is bound to one triangle of that mesh (``binding``) and keeps its
position, rotation and log-scale in the triangle's local frame, as :class:`MeshGaussians` does
for heads, so it follows the skinned surface: the rigid part of its bones' blended transform,
and the stretch of its triangle where bones meet. Initialisation is a uniform grid on the
body's UV layout (Anny's texture coordinates; an atlas of triangles for models without any).

Optional pose-dependent offsets (``deform``, ``avatar=body_dynamic``): an MLP of each Gaussian's
canonical position and the frame's local rotations of the tracked joints (``R - I`` flattened,
the SMPL pose feature) adds offsets to position, rotation and scale, for cloth folds and
muscles that skinning alone does not move (UV Gaussians, Animatable Gaussians). Its last layer
starts at zero: training begins from the plain skinned avatar.

View-dependent colour: ``sh_frame: head`` evaluates SH directions in the body's frame (its
global rotation), so colours turn with the body as it turns.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..geometry.rotations import axis_angle_to_matrix
from .base import FrameState, WorldGaussians
from .config import MeshGaussiansConfig
from .mesh_gaussians import MeshGaussians, refuse_stretch

# Metres mapped to 1 before the positional encoding of the pose MLP (a body is ~1.7 m).
BODY_POSITION_SCALE = 0.5


def pose_feature(pose: Tensor, joints: Tensor) -> Tensor:
    """``[B, 9 J']``: ``R - I`` of the local rotations ``pose [B, J, 3]`` (axis-angle) of ``joints [J']``."""
    R = axis_angle_to_matrix(pose[:, joints])
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return (R - eye).flatten(1)


class SkinnedGaussians(MeshGaussians):
    """Body Gaussians (module doc): a :class:`MeshGaussians` whose frames come from a skinned
    body and whose optional deformer is conditioned on joint rotations.

    ``pose_joints [J']``: the joints whose rotations condition the deformer (the body's tracked
    joints), None without a deformer.
    """

    kind = "skinned_gaussians"
    seeds_from_frames = True  # initialise() takes the training frames: the range of their joint rotations

    def __init__(self, faces: Tensor, binding: Tensor, params: dict[str, Tensor], sh_degree: int,
                 canonical_vertices: Tensor | None = None, deformer=None, sh_frame: str = "head",
                 pose_joints: Tensor | None = None, pose_range: Tensor | None = None):
        super().__init__(faces, binding, params, sh_degree, canonical_vertices=canonical_vertices,
                         deformer=deformer, sh_frame=sh_frame)
        if deformer is not None and pose_joints is None:
            raise ValueError("a pose deformer needs pose_joints (the joints whose rotations condition it)")
        self.register_buffer("pose_joints", None if pose_joints is None else pose_joints.long().clone())
        # [2, 9 J'] low and high of the deformer's condition over the training frames: a pose beyond
        # them is read at the nearest trained one (None: not clamped, as in files written before)
        self.register_buffer("pose_range", None if pose_range is None else pose_range.clone())

    @classmethod
    def initialise(cls, model, cfg: MeshGaussiansConfig, vertices: Tensor | None = None,
                   n_condition: int | None = None, frames=None) -> "SkinnedGaussians":
        """One Gaussian per UV grid point of the body (``model``: a body model); with
        ``cfg.deform`` a pose MLP conditioned on the body's tracked joints.

        ``vertices``: the mesh the local frames are measured on (default: the body at rest).
        ``n_condition`` is not used: the condition's size follows from the tracked joints.
        ``frames`` (the training :class:`~avatar.train.data.FrameSet`): with a deformer, the range
        of its training frames' joint rotations bounds the deformer's condition (:meth:`forward`)."""
        refuse_stretch(cfg, cls.kind)
        if not getattr(model, "is_body", False):
            raise ValueError(f"skinned_gaussians needs a body model (anny, smpl, smplx); got {model.name!r}: "
                             "train heads with avatar=mesh_gaussians")
        plain = MeshGaussians.from_uv_grid(model, _without_deform(cfg, model), vertices)
        deformer = joints = None
        canonical = None
        if cfg.deform:
            from .deform import ExpressionDeformer  # noqa: PLC0415

            if cfg.deform_model != "mlp":
                raise ValueError(f"train.gaussians.deform_model={cfg.deform_model!r}: the body's pose offsets are an MLP "
                                 "only (deform_model=mlp)")

            joints = torch.as_tensor(model.joint_index(model.body_profile.tracked_joints))
            deformer = ExpressionDeformer(9 * len(joints), cfg.deform_hidden, cfg.deform_layers, cfg.deform_frequencies,
                                          position_scale=BODY_POSITION_SCALE).to(plain.faces.device)
            with torch.no_grad():
                canonical = (model().rest_vertices[0] if vertices is None else vertices).detach()
        pose_range = None
        if deformer is not None and frames is not None and frames.pose is not None and len(frames.train):
            train = torch.as_tensor(frames.train, device=frames.pose.device)
            feature = pose_feature(frames.pose[train], joints.to(frames.pose.device))
            pose_range = torch.stack((feature.amin(0), feature.amax(0))).to(plain.faces.device)
        return cls(plain.faces, plain.binding, {k: v.detach() for k, v in plain.params.items()}, plain.sh_degree,
                   canonical_vertices=canonical, deformer=deformer, sh_frame=cfg.sh_frame,
                   pose_joints=None if joints is None else joints.to(plain.faces.device), pose_range=pose_range)

    def _like(self, faces: Tensor, binding: Tensor, params: dict[str, Tensor],
              canonical: Tensor | None) -> "SkinnedGaussians":
        return SkinnedGaussians(faces, binding, params, self.sh_degree, canonical_vertices=canonical,
                                deformer=self.deformer, sh_frame=self.sh_frame, pose_joints=self.pose_joints,
                                pose_range=self.pose_range)

    def subset(self, index: Tensor) -> "SkinnedGaussians":
        """A new avatar with the Gaussians ``index`` (indices or a bool mask); the deformer shared."""
        return self._like(self.faces, self.binding[index], {k: v.detach()[index] for k, v in self.params.items()},
                          self.canonical_vertices)

    def compact(self) -> tuple[Tensor, "SkinnedGaussians"]:
        """The vertices of the triangles the Gaussians sit on ``[V']`` and the avatar re-bound to them."""
        vidx, sub = super().compact()
        return vidx, self._like(sub.faces, sub.binding, {k: v.detach() for k, v in sub.params.items()},
                                sub.canonical_vertices)

    def state(self) -> dict:
        out = super().state()
        if self.pose_joints is not None:
            out["pose_joints"] = self.pose_joints.detach().cpu().clone()
        if self.pose_range is not None:
            out["pose_range"] = self.pose_range.detach().cpu().clone()
        return out

    @classmethod
    def from_state(cls, state: dict, device=None) -> "SkinnedGaussians":
        plain = MeshGaussians.from_state(state, device)
        joints, pose_range = state.get("pose_joints"), state.get("pose_range")
        return cls(plain.faces, plain.binding, {k: v.detach() for k, v in plain.params.items()}, plain.sh_degree,
                   canonical_vertices=plain.canonical_vertices, deformer=plain.deformer, sh_frame=plain.sh_frame,
                   pose_joints=None if joints is None else joints.to(device),
                   pose_range=None if pose_range is None else pose_range.to(device))

    def forward(self, state: FrameState) -> WorldGaussians:
        """World Gaussians on the skinned mesh ``state.vertices [B, V, 3]``; ``state.rotation``: the
        body's global rotation (``sh_frame: head``); ``state.pose [B, J, 3]``: its local joint
        rotations (needed with a deformer; None: the rest pose). A pose beyond the training frames'
        range (``pose_range``) conditions the deformer as the nearest trained one: the offsets an MLP
        extrapolates to a squat it never saw scatter the Gaussians (dark specks over the shirt and
        face in a novel motion driving an avatar trained on a turnaround in an A-pose)."""
        if not isinstance(state, FrameState):
            raise TypeError(f"SkinnedGaussians takes a FrameState, got {type(state).__name__}")
        condition = None
        if self.deformer is not None:
            if state.pose is None:
                condition = state.vertices.new_zeros(state.vertices.shape[0], self.deformer.n_condition)
            else:
                condition = pose_feature(state.pose.to(state.vertices.dtype), self.pose_joints)
                if self.pose_range is not None:
                    condition = torch.maximum(torch.minimum(condition, self.pose_range[1]), self.pose_range[0])
        return super().forward(FrameState(state.vertices, condition, state.rotation))


def _without_deform(cfg: MeshGaussiansConfig, model) -> MeshGaussiansConfig:
    """The config for the plain UV-grid initialisation: no deformer, and only the listed parts the
    body has (``conf/avatar/body.yaml`` names Anny's; the whole body when none is there)."""
    import dataclasses  # noqa: PLC0415

    parts = None if cfg.parts is None else tuple(p for p in cfg.parts if p in model.parts) or None
    return dataclasses.replace(cfg, deform=False, parts=parts)


__all__ = ["BODY_POSITION_SCALE", "SkinnedGaussians", "pose_feature"]

"""Skeletons: forward kinematics and linear blend skinning (pure tensor functions).

Conventions (the body-model contract, :mod:`avatar.models.body`):

- a skeleton is ``parents (J,)`` (``-1`` for the root, every parent listed before its
  children) and rest joint positions ``(B, J, 3)`` in metres;
- joint rotations are *local*, each relative to its parent, and expressed in the axes of
  the rest pose's world frame (as SMPL's): with all rotations the identity the skeleton
  stays at rest; ``rotations[:, j]`` turns joint ``j``'s subtree about joint ``j``;
- rotations are matrices ``(..., 3, 3)`` acting on column vectors or axis-angles
  ``(..., 3)`` (radians), see :mod:`avatar.geometry.rotations`;
- a skinning transform ``(B, J, 4, 4)`` maps a rest-pose point rigidly attached to joint
  ``j`` to its posed position (world <- rest).

Device and dtype follow the inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avatar.geometry.rotations import axis_angle_to_matrix

# MediaPipe Pose's 33 landmarks, in its order ("left" is the subject's left).
POSE_LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)


def as_rotation_matrices(rotations: Tensor) -> Tensor:
    """``(..., 3, 3)`` matrices from axis-angles ``(..., 3)`` or matrices ``(..., 3, 3)``."""
    if rotations.shape[-2:] == (3, 3):
        return rotations
    if rotations.shape[-1] != 3:
        raise ValueError(f"rotations must be axis-angles (..., 3) or matrices (..., 3, 3), got {tuple(rotations.shape)}")
    return axis_angle_to_matrix(rotations)


def kinematic_levels(parents: Tensor | list[int]) -> list[Tensor]:
    """Joint indices grouped by depth in the tree (level 0: the roots), so forward
    kinematics runs one batched product per level instead of one per joint."""
    parents = [int(p) for p in (parents.tolist() if isinstance(parents, Tensor) else parents)]
    depth: list[int] = []
    for j, p in enumerate(parents):
        if p >= j:
            raise ValueError(f"joint {j}'s parent {p} is not listed before it")
        depth.append(0 if p < 0 else depth[p] + 1)
    return [torch.tensor([j for j, d in enumerate(depth) if d == level]) for level in range(max(depth) + 1)]


def forward_kinematics(
    rest_joints: Tensor,  # [B, J, 3]
    parents: Tensor,  # [J] long, -1 for roots
    rotations: Tensor,  # [B, J, 3, 3] local rotations (rest world axes)
    levels: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Posed joints and skinning transforms of a skeleton.

    Each joint's world rotation is its parent's times its own local rotation; its posed
    position is its parent's posed position plus the rest bone vector turned by the parent's
    world rotation. Roots turn about their own rest position.

    Args:
        rest_joints: ``(B, J, 3)`` rest positions.
        parents: ``(J,)`` parent indices, parents before children.
        rotations: ``(B, J, 3, 3)`` local rotations.
        levels: :func:`kinematic_levels` of ``parents`` (computed when None).

    Returns:
        posed joints ``(B, J, 3)`` and skinning transforms ``(B, J, 4, 4)`` (world <- rest).
    """
    B, J = rest_joints.shape[:2]
    assert rest_joints.shape == (B, J, 3), f"rest_joints must be (B, J, 3), got {tuple(rest_joints.shape)}"
    assert rotations.shape == (B, J, 3, 3), f"rotations must be ({B}, {J}, 3, 3), got {tuple(rotations.shape)}"
    levels = levels if levels is not None else kinematic_levels(parents)
    parents = parents.to(rest_joints.device)
    world_rot = rotations.new_empty(B, J, 3, 3)
    posed = rest_joints.new_empty(B, J, 3)
    for depth, idx in enumerate(levels):
        idx = idx.to(rest_joints.device)
        if depth == 0:
            world_rot = world_rot.index_copy(1, idx, rotations[:, idx])
            posed = posed.index_copy(1, idx, rest_joints[:, idx])
            continue
        par = parents[idx]
        parent_rot = world_rot[:, par]
        bone = (rest_joints[:, idx] - rest_joints[:, par])[..., None]
        world_rot = world_rot.index_copy(1, idx, parent_rot @ rotations[:, idx])
        posed = posed.index_copy(1, idx, posed[:, par] + (parent_rot @ bone)[..., 0])
    translation = posed - (world_rot @ rest_joints[..., None])[..., 0]
    top = torch.cat((world_rot, translation[..., None]), dim=-1)
    bottom = top.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(B, J, 1, 4)
    return posed, torch.cat((top, bottom), dim=-2)


def linear_blend_skinning(
    rest_points: Tensor,  # [B, N, 3]
    weights: Tensor,  # [N, J] (or [B, N, J]); with joint_ids: [N, K]
    transforms: Tensor,  # [B, J, 4, 4]
    joint_ids: Tensor | None = None,  # [N, K] long: sparse weights, each point's K joints
) -> tuple[Tensor, Tensor]:
    """Points moved by the weighted blend of their joints' transforms (dense weights, or sparse:
    each point's ``K`` joints ``joint_ids`` and their ``weights``).

    Returns the posed points ``(B, N, 3)`` and the blended transforms ``(B, N, 3, 4)``
    (rotation-and-scale part first), e.g. to turn a Gaussian's orientation with its point.
    """
    B, J = transforms.shape[:2]
    assert transforms.shape == (B, J, 4, 4), f"transforms must be (B, J, 4, 4), got {tuple(transforms.shape)}"
    N = rest_points.shape[-2]
    flat = transforms[:, :, :3, :].reshape(B, J, 12)
    if joint_ids is not None:  # sparse: weights [N, K] of the joints joint_ids [N, K]
        assert weights.shape == joint_ids.shape, f"sparse weights {tuple(weights.shape)} and joint_ids {tuple(joint_ids.shape)}"
        blended = (flat[:, joint_ids] * weights[..., None]).sum(-2).reshape(B, N, 3, 4)
    else:
        assert weights.shape[-1] == J, f"weights must be (N, {J}), got {tuple(weights.shape)}"
        blended = torch.matmul(weights, flat).reshape(B, N, 3, 4)
    posed = (blended[..., :3] @ rest_points[..., None])[..., 0] + blended[..., 3]
    return posed, blended


def dual_quaternion_skinning(
    rest_points: Tensor,  # [B, N, 3]
    weights: Tensor,  # [N, J] (or [B, N, J]); with joint_ids: [N, K]
    transforms: Tensor,  # [B, J, 4, 4], rigid
    joint_ids: Tensor | None = None,  # [N, K] long: sparse weights, each point's K joints
) -> tuple[Tensor, Tensor]:
    """Points moved by the blend of their joints' rigid transforms as unit dual quaternions
    (Kavan et al. 2007): what linear blending does to the rotations (averaging matrices, which
    shrinks a point between two joints turned far apart: the collapsed elbow, the candy-wrapper
    twist) does not happen, since the blend is normalised back to a rigid motion.

    Same arguments and returns as :func:`linear_blend_skinning`; the blended transforms are
    rigid. Each joint's quaternion is taken on the side of the point's first (sparse) or
    heaviest (dense) joint's, so that ``q`` and ``-q``, one rotation, do not cancel."""
    from .rotations import matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix  # noqa: PLC0415

    B, J = transforms.shape[:2]
    assert transforms.shape == (B, J, 4, 4), f"transforms must be (B, J, 4, 4), got {tuple(transforms.shape)}"
    N = rest_points.shape[-2]
    real = matrix_to_quaternion(transforms[:, :, :3, :3])  # [B, J, 4]
    t = transforms[:, :, :3, 3]
    dual = 0.5 * quaternion_multiply(torch.cat((torch.zeros_like(t[..., :1]), t), -1), real)  # [B, J, 4]
    both = torch.cat((real, dual), -1)  # [B, J, 8]
    if joint_ids is not None:
        assert weights.shape == joint_ids.shape, f"sparse weights {tuple(weights.shape)} and joint_ids {tuple(joint_ids.shape)}"
        q = both[:, joint_ids]  # [B, N, K, 8]
        sign = torch.where((q[..., :4] * q[..., :1, :4]).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(q.dtype)
        blend = (q * (weights[..., None] * sign)).sum(-2)  # [B, N, 8]
    else:
        assert weights.shape[-1] == J, f"weights must be (N, {J}), got {tuple(weights.shape)}"
        w = weights.expand(B, N, J) if weights.dim() == 2 else weights
        ref = real.gather(1, w.argmax(-1)[..., None].expand(B, N, 4))  # [B, N, 4]: the heaviest joint's
        sign = torch.where(torch.einsum("bnc,bjc->bnj", ref, real) < 0, -1.0, 1.0).to(w.dtype)
        blend = torch.einsum("bnj,bjc->bnc", w * sign, both)
    norm = blend[..., :4].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    qr, qd = blend[..., :4] / norm, blend[..., 4:] / norm
    conj = qr * qr.new_tensor([1.0, -1.0, -1.0, -1.0])
    translation = 2 * quaternion_multiply(qd, conj)[..., 1:]  # [B, N, 3]
    R = quaternion_to_matrix(qr)  # [B, N, 3, 3]
    posed = (R @ rest_points[..., None].expand(B, N, 3, 1))[..., 0] + translation
    return posed, torch.cat((R, translation[..., None]), -1)


__all__ = [
    "POSE_LANDMARK_NAMES", "as_rotation_matrices", "dual_quaternion_skinning", "forward_kinematics",
    "kinematic_levels", "linear_blend_skinning",
]

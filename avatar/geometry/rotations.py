"""Rotation conversions.

Conventions: quaternions have the real part first, ``(w, x, y, z)``, as tensors of
shape ``(..., 4)``; they need not be normalised on input. Rotation matrices act on
column vectors, ``x' = R @ x``, as tensors of shape ``(..., 3, 3)``. Axis-angle
vectors are ``(..., 3)``: direction is the axis, norm the angle in radians.
Device and dtype follow the inputs. The head-turn helpers at the end (:func:`turn_angles`) take and
give numpy arrays.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def normalize_quaternion(quats: Tensor, eps: float = 1e-12) -> Tensor:
    """Unit quaternions ``(..., 4)`` from arbitrary non-zero ones (real part first)."""
    return quats / quats.norm(dim=-1, keepdim=True).clamp_min(eps)


def quaternion_to_matrix(quats: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` from quaternions ``(..., 4)`` (w, x, y, z).

    The quaternion is normalised first, so any non-zero scaling gives the same matrix.
    """
    w, x, y, z = normalize_quaternion(quats).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = (
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    )
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def axis_angle_to_matrix(axis_angle: Tensor, eps: float = 1e-8) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` from axis-angle vectors ``(..., 3)`` (Rodrigues).

    Differentiable at zero: a small-angle Taylor form is used below ``eps``.
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < eps
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    # sin(t)/t and (1-cos(t))/t^2 with their Taylor expansions near zero.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), -1).reshape(axis_angle.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + a[..., None] * skew + b[..., None] * (skew @ skew)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of quaternions ``(..., 4)`` (w, x, y, z): rotate by b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        dim=-1,
    )


def matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """Unit quaternions ``(..., 4)`` (w, x, y, z, with w >= 0) from rotation matrices ``(..., 3, 3)``.

    Uses the largest of the four candidate denominators per matrix, so it is stable for
    every rotation, and differentiable almost everywhere.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 q_i^2 for i = w, x, y, z
    sq = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1
    ).clamp_min(1e-12)
    root = sq.sqrt()  # 2 |q_i|
    # Each row: the quaternion (times 2 |q_i|) computed from the i-th candidate.
    cands = torch.stack(
        (
            torch.stack((sq[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]), -1),
            torch.stack((m[..., 2, 1] - m[..., 1, 2], sq[..., 1], m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]), -1),
            torch.stack((m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], sq[..., 2], m[..., 2, 1] + m[..., 1, 2]), -1),
            torch.stack((m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], sq[..., 3]), -1),
        ),
        dim=-2,
    ) / (2 * root[..., None])
    best = sq.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = normalize_quaternion(q)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_axis_angle(matrix: Tensor) -> Tensor:
    """Axis-angle vectors ``(..., 3)`` (angle in [0, pi]) from rotation matrices ``(..., 3, 3)``."""
    q = matrix_to_quaternion(matrix)  # w >= 0
    sin_half = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    # angle / sin(angle / 2), with its limit 2 at zero.
    scale = torch.where(sin_half > 1e-8, angle / sin_half.clamp_min(1e-12), torch.full_like(angle, 2.0))
    return q[..., 1:] * scale


def yaw_pitch_matrix(yaw: Tensor, pitch: Tensor) -> Tensor:
    """``R = Ry(yaw) Rx(pitch)`` ``(..., 3, 3)`` for angles ``(...)`` (radians): how an eye turns,
    sideways about +y, then up or down about +x (+pitch down for +y up, +z forward)."""
    zero = torch.zeros_like(yaw)
    return axis_angle_to_matrix(torch.stack((zero, yaw, zero), -1)) @ axis_angle_to_matrix(torch.stack((pitch, zero, zero), -1))


def euler_to_axis_angle(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """Axis-angle ``(..., 3)`` of ``R = Ry(yaw) Rx(pitch) Rz(roll)`` (radians; +y up, +z toward the viewer).

    The head-pose convention of ARKit / Live Link Face exports and of the synthetic captures.
    """
    zero = torch.zeros_like(yaw)
    ry = axis_angle_to_matrix(torch.stack((zero, yaw, zero), -1))
    rx = axis_angle_to_matrix(torch.stack((pitch, zero, zero), -1))
    rz = axis_angle_to_matrix(torch.stack((zero, zero, roll), -1))
    return matrix_to_axis_angle(ry @ rx @ rz)


def turn_angles(R: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    """``[..., 3]`` (yaw, pitch, roll), radians, of the head rotations ``R [..., 3, 3]`` from
    ``R_ref [3, 3]``, about the camera's axes (OpenCV: yaw about y, pitch about x, roll about z):
    ``R R_ref^T = Ry(yaw) Rx(pitch) Rz(roll)``."""
    D = np.asarray(R, np.float64) @ np.asarray(R_ref, np.float64).T
    pitch = np.arcsin(np.clip(-D[..., 1, 2], -1.0, 1.0))
    return np.stack((np.arctan2(D[..., 0, 2], D[..., 2, 2]), pitch, np.arctan2(D[..., 1, 0], D[..., 1, 1])), -1)


def from_turn_angles(angles: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    """The rotation ``[3, 3]`` whose :func:`turn_angles` from ``R_ref`` are ``angles [3]``."""
    yaw, pitch, roll = torch.as_tensor(np.asarray(angles, np.float64))
    D = axis_angle_to_matrix(euler_to_axis_angle(yaw, pitch, roll)).numpy()  # Ry(yaw) Rx(pitch) Rz(roll)
    return D @ np.asarray(R_ref, np.float64)


def axis_angle_turns(rotation: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """:func:`turn_angles` ``[F, 3]`` of axis-angle head rotations ``rotation [F, 3]`` (or ``[3]``)
    from the axis-angle ``reference [3]``."""
    to_matrix = lambda a: axis_angle_to_matrix(torch.as_tensor(np.asarray(a, np.float64).reshape(-1, 3))).numpy()  # noqa: E731
    return turn_angles(to_matrix(rotation), to_matrix(reference)[0])


def training_turn_range(rotation: np.ndarray, reference: np.ndarray, percentiles=(1.0, 99.0)) -> np.ndarray:
    """``[2, 2]`` radians: the (low, high) percentiles of the yaw (row 0) and pitch (row 1) of the
    head rotations ``rotation [F, 3]`` (axis-angle) from ``reference [3]``: the turns an avatar
    trained on those frames has seen (``retarget.turn_margin_deg``)."""
    angles = axis_angle_turns(rotation, reference)
    return np.stack([np.percentile(angles[:, k], percentiles) for k in (0, 1)]).astype(np.float64)

"""Rotation conversions.

Conventions: quaternions have the real part first, ``(w, x, y, z)``, as tensors of
shape ``(..., 4)``; they need not be normalised on input. Rotation matrices act on
column vectors, ``x' = R @ x``, as tensors of shape ``(..., 3, 3)``. Axis-angle
vectors are ``(..., 3)``: direction is the axis, norm the angle in radians.
Device and dtype follow the inputs.
"""

from __future__ import annotations

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

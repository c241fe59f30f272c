"""Rotation conversions against each other and against smplx's Rodrigues."""

from __future__ import annotations

import torch

from avatar.geometry import (
    axis_angle_to_matrix,
    matrix_to_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
)


def _random_quats(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_quaternion_to_matrix_is_a_rotation_and_scale_free():
    q = _random_quats(64)
    r = quaternion_to_matrix(q)
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.det(r), torch.ones(64, dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(3.7 * q), r)


def test_matrix_to_quaternion_inverts_for_all_branches():
    q = _random_quats(512, seed=1)
    # Include rotations near 180 degrees (w ~ 0) where the naive formula fails.
    q[:8, 0] = 1e-9
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    back = matrix_to_quaternion(quaternion_to_matrix(q))
    torch.testing.assert_close(quaternion_to_matrix(back), quaternion_to_matrix(q))
    torch.testing.assert_close(back[8:], q[8:])


def test_multiply_composes_rotations():
    a, b = _random_quats(32, 2), _random_quats(32, 3)
    torch.testing.assert_close(
        quaternion_to_matrix(quaternion_multiply(a, b)), quaternion_to_matrix(a) @ quaternion_to_matrix(b)
    )


def test_axis_angle_matches_smplx_and_is_smooth_at_zero():
    from smplx.lbs import batch_rodrigues

    aa = torch.randn(16, 3, dtype=torch.float64)
    torch.testing.assert_close(axis_angle_to_matrix(aa), batch_rodrigues(aa), atol=1e-7, rtol=0)
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_matrix_to_axis_angle_inverts_and_euler_composes_yxz():
    from avatar.geometry import euler_to_axis_angle, matrix_to_axis_angle

    aa = torch.randn(64, 3, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(64, 1, dtype=torch.float64) * 3.0  # angles below pi
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(aa)), aa)
    torch.testing.assert_close(matrix_to_axis_angle(torch.eye(3, dtype=torch.float64)), torch.zeros(3, dtype=torch.float64))
    yaw, pitch, roll = (torch.rand(8, dtype=torch.float64) - 0.5 for _ in range(3))
    z = torch.zeros_like(yaw)
    expected = (axis_angle_to_matrix(torch.stack((z, yaw, z), -1)) @ axis_angle_to_matrix(torch.stack((pitch, z, z), -1))
                @ axis_angle_to_matrix(torch.stack((z, z, roll), -1)))
    torch.testing.assert_close(axis_angle_to_matrix(euler_to_axis_angle(yaw, pitch, roll)), expected)

"""Pinhole cameras in the OpenCV convention (x right, y down, z forward), metres.

``viewmat`` is the 4x4 world-to-camera transform; ``K`` the 3x3 intrinsics in pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def intrinsics(fx: float, fy: float, cx: float, cy: float, *, device=None, dtype=torch.float32) -> Tensor:
    """``[3, 3]`` pinhole intrinsics in pixels."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], device=device, dtype=dtype)


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float, *, device=None, dtype=torch.float32) -> Tensor:
    """``[3, 3]`` intrinsics with square pixels, centred principal point, horizontal field of view in degrees."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return intrinsics(f, f, width / 2, height / 2, device=device, dtype=dtype)


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """World-to-camera ``[..., 4, 4]`` for cameras at ``eye [..., 3]`` looking at ``target [..., 3]``.

    ``up [..., 3]`` is the world direction that should appear up in the image (the camera's -y).
    """
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up.expand_as(forward)), dim=-1)
    down = torch.linalg.cross(forward, right)
    rot = torch.stack((right, down, forward), dim=-2)  # rows: camera axes in world coordinates
    viewmat = torch.zeros(eye.shape[:-1] + (4, 4), device=eye.device, dtype=eye.dtype)
    viewmat[..., :3, :3] = rot
    viewmat[..., :3, 3] = -(rot @ eye[..., None])[..., 0]
    viewmat[..., 3, 3] = 1.0
    return viewmat


def orbit_viewmats(
    n: int, radius: float, height: float = 0.0, target=(0.0, 0.0, 0.0), *, sweep_deg: float | None = None,
    device=None, dtype=torch.float32,
) -> Tensor:
    """``[n, 4, 4]`` cameras on a circle around ``target`` in the world's x-z plane (+y up), starting on +z.

    ``sweep_deg``: None goes once around; a number swings the camera smoothly from the front to
    ``+sweep_deg / 2``, over to ``-sweep_deg / 2`` and back (one sine period over the ``n`` frames),
    for subjects seen only from the front half."""
    if sweep_deg is None:
        angles = torch.arange(n, device=device, dtype=dtype) * (2 * math.pi / n)
    else:
        phase = torch.arange(n, device=device, dtype=dtype) * (2 * math.pi / n)
        angles = math.radians(sweep_deg / 2) * torch.sin(phase)
    centre = torch.tensor(target, device=device, dtype=dtype)
    eye = centre + torch.stack(
        (radius * torch.sin(angles), torch.full_like(angles, height), radius * torch.cos(angles)), -1
    )
    up = torch.tensor([0.0, 1.0, 0.0], device=device, dtype=dtype)
    return look_at(eye, centre.expand_as(eye), up)

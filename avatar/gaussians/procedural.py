"""A procedural Gaussian head: an embedded scene that needs no assets or downloads.

Used by ``avatar demo`` before a trained avatar exists, and handy for checking a
renderer or a viewer. World frame: +y up, +z towards the viewer, metres, head centre
at the origin (the same frame as the ICT-FaceKit assets after unit conversion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..render.sh import num_sh_bases

_SH_C0 = 0.28209479177387814  # colour = SH_C0 * dc + 0.5 for degree 0

SKIN = (0.86, 0.66, 0.54)
HAIR = (0.22, 0.14, 0.09)
LIPS = (0.72, 0.33, 0.33)
SCLERA = (0.95, 0.95, 0.93)
IRIS = (0.20, 0.32, 0.45)


@dataclass
class GaussianScene:
    """Gaussian parameters in the layout ``avatar.render.rasterization`` takes."""

    means: Tensor  # [N, 3] metres
    quats: Tensor  # [N, 4] (w, x, y, z)
    scales: Tensor  # [N, 3] metres
    opacities: Tensor  # [N] 0..1
    sh: Tensor  # [N, K, 3] SH coefficients, K = (sh_degree + 1)^2

    def __len__(self) -> int:
        return self.means.shape[0]


def _fibonacci_sphere(n: int, generator: torch.Generator, dtype) -> Tensor:
    i = torch.arange(n, dtype=dtype) + 0.5
    y = 1.0 - 2.0 * i / n
    r = (1.0 - y * y).clamp_min(0).sqrt()
    phi = i * math.pi * (3.0 - math.sqrt(5.0)) + torch.rand(1, generator=generator, dtype=dtype) * 2 * math.pi
    return torch.stack((r * torch.cos(phi), y, r * torch.sin(phi)), -1)


def _blob(points: Tensor, centre, radius: float) -> Tensor:
    """Smooth 0..1 weight of points near ``centre`` (Gaussian falloff)."""
    d2 = ((points - points.new_tensor(centre)) ** 2).sum(-1)
    return torch.exp(-0.5 * d2 / radius**2)


def procedural_head(
    n_gaussians: int = 20000,
    sh_degree: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> GaussianScene:
    """A stylised head and neck of ``n_gaussians`` isotropic Gaussians with baked shading.

    Skin, hair, eyes, lips and a nose bump on an ellipsoid (about 15 x 20 x 18 cm); colours
    are stored as SH of ``sh_degree`` with only the DC term set, so any degree renders the same.
    """
    if n_gaussians < 100:
        raise ValueError(f"n_gaussians must be at least 100, got {n_gaussians}")
    gen = torch.Generator().manual_seed(seed)
    head_area, neck_area = 4 * math.pi * 0.085**2, 2 * math.pi * 0.048 * 0.13  # m^2, roughly
    n_neck = round(n_gaussians * neck_area / (head_area + neck_area))
    n_head = n_gaussians - n_neck

    # Head: an ellipsoid surface with a nose bump.
    dirs = _fibonacci_sphere(n_head, gen, dtype)
    radii = torch.tensor([0.075, 0.10, 0.09], dtype=dtype)
    head = dirs * radii
    normals = torch.nn.functional.normalize(dirs / radii, dim=-1)
    nose = _blob(head, (0.0, -0.005, 0.09), 0.018)
    head = head + normals * (0.016 * nose)[:, None]

    # Neck: a cylinder below the head.
    t = torch.rand(n_neck, generator=gen, dtype=dtype)
    ang = torch.rand(n_neck, generator=gen, dtype=dtype) * 2 * math.pi
    neck = torch.stack((0.048 * torch.cos(ang), -0.07 - 0.13 * t, 0.048 * torch.sin(ang) - 0.01), -1)
    neck_normals = torch.stack((torch.cos(ang), torch.zeros_like(ang), torch.sin(ang)), -1)

    means = torch.cat((head, neck))
    normals = torch.cat((normals, neck_normals))
    colour = torch.tensor(SKIN, dtype=dtype).expand(len(means), 3).clone()

    def paint(weight: Tensor, rgb) -> None:
        w = weight.clamp(0, 1)[:, None]
        colour.mul_(1 - w).add_(w * torch.tensor(rgb, dtype=dtype))

    y, z = means[:, 1], means[:, 2]
    is_head = torch.arange(len(means)) < n_head
    hair = is_head & ((y > 0.035 + 0.04 * (z / 0.09).clamp_min(0)) | (z < -0.02))
    paint(hair.to(dtype), HAIR)
    for side in (-1.0, 1.0):
        eye = (side * 0.032, 0.022, 0.082)
        paint(((_blob(means, eye, 0.011) > 0.5) & is_head).to(dtype), SCLERA)
        paint(((_blob(means, eye, 0.0055) > 0.5) & is_head).to(dtype), IRIS)
        brow = (side * 0.032, 0.045, 0.08)
        paint(((_blob(means * means.new_tensor([0.5, 2.0, 1.0]), tuple(c * s for c, s in zip(brow, (0.5, 2.0, 1.0))), 0.009) > 0.5) & is_head).to(dtype), HAIR)
    mouth = _blob(means * means.new_tensor([0.45, 1.8, 1.0]), (0.0, -0.05 * 1.8, 0.08), 0.008)
    paint(((mouth > 0.45) & is_head).to(dtype), LIPS)

    # Baked key + fill light so the shape reads in any view.
    key = torch.nn.functional.normalize(torch.tensor([0.5, 0.6, 0.7], dtype=dtype), dim=0)
    shade = 0.35 + 0.65 * (normals @ key).clamp_min(0)
    colour = (colour * shade[:, None]).clamp(0, 1)

    k = num_sh_bases(sh_degree)
    sh = torch.zeros(len(means), k, 3, dtype=dtype)
    sh[:, 0] = (colour - 0.5) / _SH_C0

    spacing = math.sqrt(head_area / n_head)  # mean distance between neighbours, metres
    scales = torch.full((len(means), 3), 0.75 * spacing, dtype=dtype)
    scales[n_head:] *= 1.3  # the neck's points are random, not evenly spread
    quats = torch.zeros(len(means), 4, dtype=dtype)
    quats[:, 0] = 1.0
    opacities = torch.full((len(means),), 0.95, dtype=dtype)
    return GaussianScene(
        means.to(device), quats.to(device), scales.to(device), opacities.to(device), sh.to(device)
    )

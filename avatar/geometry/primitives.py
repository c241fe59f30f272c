"""Simple meshes for tests, benchmarks and placeholders."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def uv_ellipsoid(n_lat: int, n_lon: int, radii=(1.0, 1.0, 1.0), dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Closed UV ellipsoid with outward-facing triangles: vertices ``[V, 3]``, faces ``[F, 3]`` long.

    ``n_lat`` latitude bands (poles on +-y) by ``n_lon`` longitudes; ``radii`` along x, y, z.
    """
    theta = torch.arange(1, n_lat, dtype=torch.float64) * math.pi / n_lat
    phi = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.cos(), t.sin() * p.sin()], -1).reshape(-1, 3)
    verts = torch.cat([ring.new_tensor([[0, 1, 0]]), ring, ring.new_tensor([[0, -1, 0]])])
    r, c = torch.meshgrid(torch.arange(n_lat - 2), torch.arange(n_lon), indexing="ij")
    a, b = 1 + r * n_lon + c, 1 + r * n_lon + (c + 1) % n_lon
    quads = torch.stack([torch.stack([a, b, b + n_lon], -1), torch.stack([a, b + n_lon, a + n_lon], -1)], -2)
    c = torch.arange(n_lon)
    top = torch.stack([torch.zeros_like(c), 1 + (c + 1) % n_lon, 1 + c], -1)
    last = verts.shape[0] - 1
    bottom = torch.stack([torch.full_like(c, last), last - n_lon + c, last - n_lon + (c + 1) % n_lon], -1)
    verts = verts * torch.tensor(radii, dtype=torch.float64)
    return verts.to(dtype), torch.cat([top, quads.reshape(-1, 3), bottom])

"""The compiled CPU z-buffer of the mesh rasterizer against its torch code: the same keys.

(``tests/test_mesh_raster.py`` runs the rasterizer's behaviour tests on both paths.)
"""

from __future__ import annotations

import pytest
import torch

from avatar.geometry.primitives import uv_ellipsoid
from avatar.render import cpu_kernels
from avatar.render.mesh_raster import KEY_EMPTY, setup_triangles, zbuffer


def pinhole(f: float, width: int, height: int) -> torch.Tensor:
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_zbuffer_keys_equal_torch_keys(dtype):
    """The compiled z-buffer gives the torch code's keys bit for bit: a sphere and a soup of
    random triangles (big and tiny, crossing each other) in three images seen from three
    places, triangles dropped at the near plane, culling on and off."""
    if not cpu_kernels.mesh_zbuffer_available():
        pytest.skip("numba is not installed or AVATAR_NO_NUMBA is set")
    g = torch.Generator().manual_seed(3)
    verts, faces = uv_ellipsoid(24, 48, (0.3, 0.3, 0.3))
    verts, faces = torch.as_tensor(verts, dtype=dtype), torch.as_tensor(faces)
    soup = torch.rand(300, 3, 3, generator=g, dtype=dtype) * torch.tensor([1.2, 1.2, 1.4], dtype=dtype) - 0.6
    soup[..., 2] += 0.5
    n = verts.shape[0]
    all_verts = torch.cat([verts, soup.reshape(-1, 3)])
    all_faces = torch.cat([faces, torch.arange(900).reshape(300, 3) + n])
    B, W, H = 3, 61, 47
    shift = torch.tensor([[0.0, 0.0, 1.2], [0.1, -0.05, 1.0], [-0.2, 0.1, 2.0]], dtype=dtype)
    cam = all_verts[None] + shift[:, None]
    K = pinhole(50.0, W, H).to(dtype)
    z = cam[..., 2]
    xy = torch.einsum("ij,bvj->bvi", K[:2], cam) / z[..., None]
    F_ = all_faces.shape[0]
    tri_xy = xy[:, all_faces.reshape(-1)].reshape(B, F_, 3, 2)
    tri_z = z[:, all_faces.reshape(-1)].reshape(B, F_, 3)
    for cull in (False, True):
        setup = setup_triangles(tri_xy, tri_z, W, H, 0.9, cull)  # near plane 0.9: some triangles dropped
        assert 0 < setup.index.numel() < B * F_
        ref = zbuffer(setup, B * H * W, W, H, 1 << 12, compiled=False)
        got = zbuffer(setup, B * H * W, W, H, 1 << 12, compiled=True)
        assert (ref != KEY_EMPTY).sum() > 0.15 * B * H * W
        assert torch.equal(got, ref)

"""Internals of the torch rasterization backend: segmenting, chunking and tiles change speed, not results.

The brute-force comparison lives in test_rasterize.py; here the backend is compared with
itself under settings that force many depth segments, many chunks and other tile sizes,
on scenes dense enough that pixels saturate (T <= 1e-4) part-way through a tile's list.
"""

from __future__ import annotations

import pytest
import torch

from avatar.render import rasterization
from avatar.render import torch_backend


def _dense_scene(n: int, width: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([0.5, 0.5, 0.3], dtype=dtype)
    means[:, 2] += 2.0
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.02 + 0.06 * torch.rand(n, 3, generator=g, dtype=dtype)
    opacities = 0.2 + 0.79 * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype)[None]
    f = 1.2 * width
    Ks = torch.tensor([[f, 0.0, width / 2], [0.0, f, width / 2], [0.0, 0.0, 1.0]], dtype=dtype)[None]
    return means, quats, scales, opacities, colors, viewmats, Ks


def _render_with(monkeypatch, scene, width, tile_size, segment, max_elements):
    defaults = list(torch_backend.rasterize_to_pixels.__defaults__)
    defaults[-2:] = [segment, max_elements]
    monkeypatch.setattr(torch_backend.rasterize_to_pixels, "__defaults__", tuple(defaults))
    params = [t.clone().requires_grad_(True) for t in scene[:5]]
    out, alpha, meta = rasterization(*params, *scene[5:], width, width, tile_size=tile_size, backend="torch")
    meta["means2d"].retain_grad()
    w = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    ((out * w).sum() + (alpha * alpha).sum()).backward()
    return out.detach(), alpha.detach(), [p.grad for p in params] + [meta["means2d"].grad]


def test_scene_saturates_pixels():
    """The dense scene really stops pixels early, so the early-stop path is exercised."""
    scene = _dense_scene(1500, 32, seed=0)
    _, alpha, _ = rasterization(*scene, 32, 32, backend="torch")
    assert (alpha > 0.999).float().mean() > 0.3


@pytest.mark.parametrize(
    "tile_size,segment,max_elements",
    [(16, 1, 1 << 20), (8, 3, 1 << 20), (8, 16, 64 * 16), (4, 5, 16 * 5 * 3), (16, 1000, 1 << 24)],
)
def test_segments_chunks_and_tiles_do_not_change_results(monkeypatch, tile_size, segment, max_elements):
    scene = _dense_scene(1500, 32, seed=1)
    ref = _render_with(monkeypatch, scene, 32, 16, 64, 1 << 20)
    got = _render_with(monkeypatch, scene, 32, tile_size, segment, max_elements)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-12)
    for g_got, g_ref in zip(got[2], ref[2]):
        torch.testing.assert_close(g_got, g_ref, rtol=1e-9, atol=1e-10)


def test_dense_scene_gradients_match_autograd_reference(monkeypatch):
    """Closed-form backward over many segments vs autograd through the dense reference, saturating scene."""
    from avatar.render.reference import rasterize_dense

    scene = _dense_scene(700, 16, seed=2)
    out, alpha, grads = _render_with(monkeypatch, scene, 16, 4, 4, 1 << 12)
    assert (alpha > 0.999).float().mean() > 0.2
    ref_params = [t.clone().requires_grad_(True) for t in scene[:5]]
    ref_out, ref_alpha = rasterize_dense(*ref_params, *scene[5:], 16, 16)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-12)
    w = torch.linspace(0.5, 1.5, ref_out.numel(), dtype=ref_out.dtype).reshape(ref_out.shape)
    ((ref_out * w).sum() + (ref_alpha * ref_alpha).sum()).backward()
    for got, p in zip(grads, ref_params):
        torch.testing.assert_close(got, p.grad, rtol=1e-7, atol=1e-9)

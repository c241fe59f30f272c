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


# --- The compiled forward-only compositor (numba) --------------------------------------------

needs_numba = pytest.mark.skipif(not __import__("avatar.render.cpu_kernels", fromlist=["x"]).available(),
                                 reason="numba is not installed")


@needs_numba
def test_compiled_compositor_is_taken_only_when_no_gradient_is_wanted(monkeypatch):
    calls = []
    real = torch_backend.cpu_kernels.composite_tiles
    monkeypatch.setattr(torch_backend.cpu_kernels, "composite_tiles", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(torch_backend.cpu_kernels, "available", lambda: True)
    scene = _dense_scene(50, 16, seed=3)
    with torch.no_grad():
        rasterization(*scene, 16, 16, backend="torch")
    assert calls == [1]
    rasterization(*scene, 16, 16, backend="torch")  # no input requires grad: no graph to keep
    assert calls == [1, 1]
    params = [t.clone().requires_grad_(True) for t in scene[:5]]
    out, _, _ = rasterization(*params, *scene[5:], 16, 16, backend="torch")
    assert calls == [1, 1] and out.requires_grad


@needs_numba
@pytest.mark.parametrize("tile_size", [4, 8, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_compositor_matches_torch_on_saturating_scene(monkeypatch, tile_size, dtype):
    """Dense scene (pixels stop early), image not a multiple of the tile, two cameras."""
    scene = list(_dense_scene(1500, 30, seed=4, dtype=dtype))
    shift = torch.eye(4, dtype=dtype)
    shift[0, 3] = 0.1
    scene[5] = torch.cat((scene[5], shift[None]))
    scene[6] = scene[6].expand(2, 3, 3)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]], dtype=dtype)
    with torch.no_grad():
        got = rasterization(*scene, 30, 27, tile_size=tile_size, backgrounds=bg, render_mode="RGB+ED")
    monkeypatch.setattr(torch_backend, "compiled_forward", lambda *a, **k: False)
    with torch.no_grad():
        ref = rasterization(*scene, 30, 27, tile_size=tile_size, backgrounds=bg, render_mode="RGB+ED")
    assert (ref[1] > 0.999).float().mean() > 0.2
    atol = 1e-12 if dtype == torch.float64 else 2e-5
    for g, r in zip(got[:2], ref[:2]):
        assert g.dtype == dtype and g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-5 if dtype == torch.float32 else 0, atol=atol)


@needs_numba
@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_compiled_compositor_matches_torch_for_any_number_of_channels(monkeypatch, channels):
    """Three channels take the kernel's unrolled path, the others its loop over channels."""
    means, quats, scales, opacities, _, viewmats, Ks = _dense_scene(600, 24, seed=6)
    colors = torch.rand(600, channels, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    scene = (means, quats, scales, opacities, colors, viewmats, Ks)
    bg = torch.linspace(0.1, 0.9, channels, dtype=torch.float64)[None]
    with torch.no_grad():
        got = rasterization(*scene, 24, 21, backgrounds=bg)
    monkeypatch.setattr(torch_backend, "compiled_forward", lambda *a, **k: False)
    with torch.no_grad():
        ref = rasterization(*scene, 24, 21, backgrounds=bg)
    assert got[0].shape == (1, 21, 24, channels)
    for g, r in zip(got[:2], ref[:2]):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("tile_size", [8, 16])
def test_compiled_compositor_matches_torch_on_thin_faint_gaussians(monkeypatch, tile_size):
    """Needles at every angle and opacities on both sides of the 1/255 cut-off: the compiled
    compositor visits only the pixels in the box around each Gaussian's cut-off ellipse, and
    must still find every pixel the full per-tile test finds."""
    g = torch.Generator().manual_seed(7)
    n, width = 400, 40
    means, quats, _, _, colors, viewmats, Ks = _dense_scene(n, width, seed=5)
    scales = torch.stack((0.004 + 0.002 * torch.rand(n, generator=g, dtype=torch.float64),
                          0.05 + 0.15 * torch.rand(n, generator=g, dtype=torch.float64),
                          0.004 + 0.002 * torch.rand(n, generator=g, dtype=torch.float64)), -1)
    opacities = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-7.0, -0.5, generator=g))  # 0.001 .. 0.6
    scene = (means, quats, scales, opacities, colors, viewmats, Ks)
    with torch.no_grad():
        got = rasterization(*scene, width, width, tile_size=tile_size, eps2d=0.05)
    monkeypatch.setattr(torch_backend, "compiled_forward", lambda *a, **k: False)
    with torch.no_grad():
        ref = rasterization(*scene, width, width, tile_size=tile_size, eps2d=0.05)
    assert (ref[1] > 0.01).float().mean() > 0.3  # the needles cover the picture
    for a, b in zip(got[:2], ref[:2]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@needs_numba
def test_default_tile_size_follows_the_compositor():
    """Forward-only CPU renders (the compiled compositor) take 16-pixel tiles, renders that keep
    a graph the torch compositor's 8."""
    scene = _dense_scene(50, 16, seed=3)
    with torch.no_grad():
        assert rasterization(*scene, 16, 16, backend="torch")[2]["tile_size"] == 16
    params = [t.clone().requires_grad_(True) for t in scene[:5]]
    assert rasterization(*params, *scene[5:], 16, 16, backend="torch")[2]["tile_size"] == torch_backend.DEFAULT_TILE_SIZE


def _vector_flags(monkeypatch) -> list:
    """Record the compiled compositor's ``vector`` argument (its SIMD row loop) on every launch."""
    from avatar.render import cpu_kernels  # noqa: PLC0415

    composite, bin_tiles = cpu_kernels._kernels()
    flags = []

    def spy(*args):
        flags.append(bool(args[12]))
        return composite(*args)

    monkeypatch.setattr(cpu_kernels, "_kernels", lambda: (spy, bin_tiles))
    return flags


def _thin_faint_scene(n: int, width: int, seed: int, dtype=torch.float64):
    """Needles at every angle, opacities on both sides of the 1/255 cut-off."""
    g = torch.Generator().manual_seed(seed + 2)
    means, quats, _, _, colors, viewmats, Ks = _dense_scene(n, width, seed=seed, dtype=dtype)
    scales = torch.stack((0.004 + 0.002 * torch.rand(n, generator=g, dtype=dtype),
                          0.05 + 0.15 * torch.rand(n, generator=g, dtype=dtype),
                          0.004 + 0.002 * torch.rand(n, generator=g, dtype=dtype)), -1)
    opacities = torch.exp(torch.empty(n, dtype=dtype).uniform_(-7.0, -0.5, generator=g))
    return means, quats, scales, opacities, colors, viewmats, Ks


@needs_numba
@pytest.mark.parametrize("tile_size", [4, 8, 16])
@pytest.mark.parametrize("scene_kind", ["dense", "thin_faint"])
def test_vector_compositor_matches_exact_kernel(monkeypatch, tile_size, scene_kind):
    """Three float32 channels take the SIMD row loop (exp as a polynomial); it agrees with the
    pixel-by-pixel loop (libm's exp) to float32 rounding, on saturating scenes and on needles near the cut-off,
    with two cameras and an image that is not a multiple of the tile."""
    from avatar.render import cpu_kernels  # noqa: PLC0415

    make = _dense_scene if scene_kind == "dense" else _thin_faint_scene
    scene = list(make(1200, 33, seed=11, dtype=torch.float32))
    shift = torch.eye(4)
    shift[0, 3] = 0.1
    scene[5] = torch.cat((scene[5], shift[None]))
    scene[6] = scene[6].expand(2, 3, 3)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    used = _vector_flags(monkeypatch)
    with torch.no_grad():
        got = rasterization(*scene, 33, 30, tile_size=tile_size, backgrounds=bg, eps2d=0.05)
    assert used == [True], "the float32 colour render did not take the SIMD loop"
    real = cpu_kernels.composite_tiles
    monkeypatch.setattr(cpu_kernels, "composite_tiles", lambda *a, **k: real(*a, **k, vector=False))
    with torch.no_grad():
        ref = rasterization(*scene, 33, 30, tile_size=tile_size, backgrounds=bg, eps2d=0.05)
    assert used == [True, False]
    assert (ref[1] > 0.01).float().mean() > 0.3  # the scene covers the picture
    for a, b in zip(got[:2], ref[:2]):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=2e-6)


@needs_numba
@pytest.mark.parametrize("dtype, channels", [(torch.float64, 3), (torch.float32, 4), (torch.float32, 1)])
def test_exact_kernel_for_float64_and_other_channel_counts(monkeypatch, dtype, channels):
    means, quats, scales, opacities, _, viewmats, Ks = _dense_scene(200, 16, seed=2, dtype=dtype)
    colors = torch.rand(200, channels, generator=torch.Generator().manual_seed(1), dtype=dtype)
    used = _vector_flags(monkeypatch)
    with torch.no_grad():
        out, _, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, 16, 16,
                                  backgrounds=torch.zeros(1, channels, dtype=dtype))
    assert out.shape == (1, 16, 16, channels) and out.dtype == dtype
    assert used == [False], "the SIMD loop was taken"


@needs_numba
def test_compiled_compositor_from_two_threads_at_once():
    """Live renders from its own thread while other threads may render too: results stay exact."""
    import threading

    scene = _dense_scene(800, 24, seed=5, dtype=torch.float32)
    with torch.no_grad():
        ref = rasterization(*scene, 24, 24)[0]
    results, errors = [], []

    def work():
        try:
            with torch.no_grad():
                for _ in range(5):
                    results.append(rasterization(*scene, 24, 24)[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 15
    assert all(torch.equal(r, ref) for r in results)


@needs_numba
@pytest.mark.parametrize("tile_size", [4, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_tile_lists_equal_torch_lists(monkeypatch, tile_size, dtype):
    """The compiled lists are exactly the torch lists: same tiles, same depth order (two identical
    cameras: every depth ties with one in the other camera)."""
    scene = list(_dense_scene(700, 40, seed=6, dtype=dtype))
    scene[5] = torch.cat((scene[5], scene[5]))
    scene[6] = scene[6].expand(2, 3, 3)
    proj = torch_backend.project_gaussians(*scene[:4], scene[5], scene[6], 40, 37)
    tiles_x, tiles_y = -(-40 // tile_size), -(-37 // tile_size)
    args = (proj["means2d"], proj["radii"], proj["depths"], tile_size, tiles_x, tiles_y)
    calls = []
    real = torch_backend.cpu_kernels.tile_lists
    monkeypatch.setattr(torch_backend.cpu_kernels, "tile_lists", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = torch_backend._tile_lists(*args)
    assert calls == [1]
    monkeypatch.setattr(torch_backend.cpu_kernels, "available", lambda: False)
    ref = torch_backend._tile_lists(*args)
    assert got[0].numel() > 700
    for g, r in zip(got, ref):
        assert torch.equal(g, r)


@needs_numba
def test_compiled_render_keeps_torch_thread_count():
    """numba's first parallel launch must not raise torch's thread count (they share one OpenMP
    runtime): a process told one thread keeps one. Run in a fresh process, where that launch is
    the first."""
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from avatar.render.rasterization import rasterization\n"
        "g = torch.Generator().manual_seed(0)\n"
        "n = 300\n"
        "means = torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, 1.0])\n"
        "quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)\n"
        "K = torch.tensor([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])[None]\n"
        "torch.set_num_threads(1)\n"
        "with torch.no_grad():\n"
        "    rasterization(means, quats, torch.full((n, 3), 0.02), torch.rand(n, generator=g),\n"
        "                  torch.rand(n, 3, generator=g), torch.eye(4)[None], K, 64, 64)\n"
        "from avatar.render import torch_backend\n"
        "assert torch_backend.cpu_kernels.available()\n"
        "print(torch.get_num_threads())\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    env.pop("AVATAR_NO_NUMBA", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_covars", [False, True])
@pytest.mark.parametrize("antialiased", [False, True])
def test_compiled_projection_matches_torch(monkeypatch, dtype, with_covars, antialiased):
    """Forward-only CPU projection runs as one compiled loop: the torch code's results (culled
    entries, boxes and all), to float rounding."""
    calls = []
    real = torch_backend.cpu_kernels.project_gaussians
    monkeypatch.setattr(torch_backend.cpu_kernels, "project_gaussians", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = torch.Generator().manual_seed(7)
    n = 3000
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.5 + torch.tensor([0.0, 0.0, 1.0], dtype=dtype)
    means[:40, 2] = -1.0  # behind the camera
    means[40:60, :2] = 40.0  # far off the image
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.05
    opacities = torch.rand(n, generator=g, dtype=dtype)
    opacities[60:80] = 0.001  # under the alpha threshold
    a = torch.randn(n, 3, 3, generator=g, dtype=dtype) * 0.02
    covars = a @ a.transpose(-1, -2) if with_covars else None
    viewmats = torch.eye(4, dtype=dtype)[None].repeat(2, 1, 1)
    viewmats[1, :3, 3] = torch.tensor([0.1, 0.0, 0.2], dtype=dtype)
    Ks = torch.tensor([[200.0, 0, 64], [0, 220.0, 60], [0, 0, 1]], dtype=dtype)[None].repeat(2, 1, 1)
    args = (quats, scales, opacities, viewmats, Ks, 128, 120)
    kwargs = {"antialiased": antialiased, "covars": covars}
    ref = torch_backend.project_gaussians(means.clone().requires_grad_(True), *args, **kwargs)  # torch ops
    with torch.no_grad():
        got = torch_backend.project_gaussians(means, *args, **kwargs)  # compiled
    assert calls == [1]
    assert torch.equal(got["radii"], ref["radii"])
    assert int((got["radii"] > 0).any(-1).sum()) < 2 * n  # some were culled
    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for key in ("means2d", "depths"):
        torch.testing.assert_close(got[key], ref[key].detach(), rtol=0, atol=0)
    valid = got["radii"].gt(0).any(-1)
    for key in ("conics", "opacities", "compensations"):
        # thin Gaussians' determinants cancel: compare where they are drawn, relative to the values
        torch.testing.assert_close(got[key][valid], ref[key].detach()[valid], **tol)


@needs_numba
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_sh_colours_match_torch(monkeypatch, degree, dtype):
    from avatar.geometry.rotations import axis_angle_to_matrix
    from avatar.render.sh import sh_colors

    calls = []
    real = torch_backend.cpu_kernels.sh_colors
    monkeypatch.setattr(torch_backend.cpu_kernels, "sh_colors", lambda *a, **k: calls.append(1) or real(*a, **k))

    g = torch.Generator().manual_seed(8)
    coeffs = torch.randn(500, 16, 3, generator=g, dtype=dtype)
    means = torch.randn(500, 3, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype)[None].repeat(2, 1, 1)
    viewmats[0, :3, 3] = torch.tensor([0.1, 0.2, 2.0], dtype=dtype)
    viewmats[1, :3, :3] = axis_angle_to_matrix(torch.tensor([0.1, 0.4, -0.2], dtype=dtype))
    frame = axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.1], dtype=dtype))
    for f in (None, frame):
        ref = sh_colors(degree, coeffs.clone().requires_grad_(True), means, viewmats, f).detach()  # torch ops
        with torch.no_grad():
            got = sh_colors(degree, coeffs, means, viewmats, f)  # compiled
        assert got.shape == (2, 500, 3) and got.dtype == dtype
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12 if dtype == torch.float64 else 5e-6)
    assert len(calls) == 2  # the no-grad calls only

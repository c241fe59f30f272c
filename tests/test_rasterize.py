"""Independent tests for ``avatar.render.rasterization`` (3D Gaussian splatting).

The brute-force reference of the gsplat 1.5.3 EWA "classic" (and "antialiased")
rules lives in ``rasterize_reference.py`` beside this file, written from the
contract in DESIGN.md, not from the implementation.

The reference is first checked against hand-computed single-Gaussian values,
then the implementation (``backend="torch"``, and ``"auto"`` on CPU; forward-only renders
with both CPU compositors, compiled and torch) is checked against it on random and edge-case scenes, for several cameras, channel counts,
SH degrees, render modes, gradients, dtypes/devices and bad inputs.  Tests that
need CUDA (``backend="gsplat"`` parity, CUDA device) are marked ``cuda`` and
skip without it.

Conventions: viewmats are world-to-camera [C,4,4] (OpenCV: x right, y down,
z forward); quats are (w, x, y, z); pixel (row i, col j) has centre
(j + 0.5, i + 0.5).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from rasterize_reference import *  # noqa: F403 (reference, scene builders, tolerances)
from rasterize_reference import _rasterization  # noqa: F401


@pytest.fixture(params=["compiled", "torch"])
def compositor(request, monkeypatch):
    """The tests of forward-only renders run with both CPU compositors: the compiled one
    (numba, ``avatar.render.cpu_kernels``) and the torch one used when gradients are wanted.
    (Reference self-checks, gradient tests, which always take the torch one, and argument
    checks do not depend on it.)"""
    from avatar.render import cpu_kernels, torch_backend

    if request.param == "compiled" and not cpu_kernels.available():
        pytest.skip("numba is not installed")
    if request.param == "torch":
        monkeypatch.setattr(torch_backend, "compiled_forward", lambda *a, **k: False)
    return request.param


# ---------------------------------------------------------------------------
# Reference self-checks (hand-computed values; no implementation needed)
# ---------------------------------------------------------------------------


def test_reference_single_isotropic_gaussian_by_hand():
    W, H = 16, 12
    # principal point on a pixel centre, so the Gaussian centre is pixel (6, 8)
    K = intrinsics(W, H, fx=20.0, fy=20.0, cx=8.5, cy=6.5)
    vm = torch.eye(4, dtype=F64)[None]
    z, s, o = 2.0, 0.1, 0.7
    means, quats, scales = gaussian_at((8.5, 6.5), z, K, scale=s)
    col = torch.tensor([[0.2, 0.5, 0.9]], dtype=F64)
    bg = torch.tensor([[0.1, 0.1, 0.1]], dtype=F64)
    img, alp, meta = ref_rasterization(means, quats, scales, torch.tensor([o], dtype=F64),
                                       col, vm, K[None], W, H, backgrounds=bg)
    var = (20.0 * s / z) ** 2 + 0.3
    assert abs(float(alp[0, 6, 8, 0]) - o) < 1e-15
    assert torch.allclose(img[0, 6, 8], o * col[0] + (1 - o) * bg[0], atol=1e-15)
    a1 = o * math.exp(-0.5 / var)  # one pixel to the right
    assert abs(float(alp[0, 6, 9, 0]) - a1) < 1e-15
    a11 = o * math.exp(-1.0 / var)  # diagonal neighbour
    assert abs(float(alp[0, 7, 9, 0]) - a11) < 1e-15
    r = math.ceil(min(3.33, math.sqrt(2 * math.log(255 * o))) * math.sqrt(var))
    assert meta["radii"][0, 0].tolist() == [r, r]
    assert torch.allclose(meta["conics"][0, 0], torch.tensor([1 / var, 0.0, 1 / var], dtype=F64))
    assert torch.allclose(meta["means2d"][0, 0], torch.tensor([8.5, 6.5], dtype=F64))
    # symmetric about the centre pixel (rows 1..11, cols 1..15 mirror around 6, 8)
    a = alp[0, 1:12, 1:16, 0]
    assert torch.allclose(a, a.flip(0), atol=1e-15)
    assert torch.allclose(a, a.flip(1), atol=1e-15)


def test_reference_stop_rule_and_clamp_by_hand():
    W, H = 8, 8
    K = intrinsics(W, H, fx=10.0, fy=10.0, cx=4.5, cy=4.5)
    vm = torch.eye(4, dtype=F64)[None]
    g1 = gaussian_at((4.5, 4.5), 2.0, K, scale=1.0)
    g2 = gaussian_at((4.5, 4.5), 3.0, K, scale=1.0)
    means, quats, scales = cat_scenes(g1, g2)
    cols = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    bg = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    # 0.995 then 0.995: T 1 -> 0.005 -> 2.5e-5 <= 1e-4, so the second is not added
    img, alp, _ = ref_rasterization(means, quats, scales, torch.tensor([0.995, 0.995], dtype=F64),
                                    cols, vm, K[None], W, H, backgrounds=bg)
    assert torch.allclose(img[0, 4, 4], torch.tensor([0.995, 0.0, 0.005], dtype=F64), atol=1e-15)
    assert abs(float(alp[0, 4, 4, 0]) - 0.995) < 1e-15
    # opacity 1 is clamped to 0.999 per Gaussian
    img, alp, _ = ref_rasterization(means[:1], quats[:1], scales[:1], torch.tensor([1.0], dtype=F64),
                                    cols[:1], vm, K[None], W, H, backgrounds=bg)
    assert abs(float(alp[0, 4, 4, 0]) - 0.999) < 1e-15


def test_reference_sh_degree0_and_axes_by_hand():
    dirs = torch.eye(3, dtype=F64)  # +x, +y, +z
    coeffs = torch.zeros(3, 4, 3, dtype=F64)
    coeffs[:, 0] = 1.0
    coeffs[:, 1:4] = 1.0
    out = ref_sh(1, dirs, coeffs)
    # +x -> C0 - C1 ; +y -> C0 - C1 ; +z -> C0 + C1
    expect = torch.tensor([SH_C0 - SH_C1, SH_C0 - SH_C1, SH_C0 + SH_C1], dtype=F64)
    assert torch.allclose(out[:, 0], expect, atol=1e-15)


# ---------------------------------------------------------------------------
# Forward: random scenes vs reference
# ---------------------------------------------------------------------------

IMAGE_CASES = [
    # (width, height, cx, cy): square/non-square, centred or not, W % 16 != 0
    (16, 12, None, None),
    (32, 24, None, None),
    (23, 17, 9.3, 10.1),   # W not a multiple of 16, off-centre principal point
    (40, 13, 25.0, 4.0),   # very wide, strongly off-centre
]


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("n,seed", [(1, 0), (2, 1), (7, 2), (30, 3), (200, 4)])
@pytest.mark.parametrize("image", IMAGE_CASES, ids=lambda c: f"{c[0]}x{c[1]}")
def test_random_scene_matches_reference(n, seed, image):
    W, H, cx, cy = image
    K = intrinsics(W, H, cx=cx, cy=cy)
    gen = torch.Generator().manual_seed(1000 + seed)
    vm = random_viewmat(gen)
    means, quats, scales, opac, cols = random_scene(n, W, H, K, vm, seed)
    bg = torch.tensor([[0.3, 0.6, 0.1]], dtype=F64)
    assert_matches_reference((means, quats, scales, opac, cols, vm[None], K[None], W, H),
                             dict(backgrounds=bg))


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("seed", [5, 6])
def test_antialiased_matches_reference(seed):
    W, H = 24, 20
    K = intrinsics(W, H)
    vm = random_viewmat(torch.Generator().manual_seed(seed))
    scene = random_scene(60, W, H, K, vm, seed, scale_range=(0.003, 0.3))
    assert_matches_reference((*scene, vm[None], K[None], W, H),
                             dict(rasterize_mode="antialiased"))


@pytest.mark.usefixtures("compositor")
def test_eps2d_and_radius_clip_match_reference():
    W, H = 24, 20
    K = intrinsics(W, H)
    vm = random_viewmat(torch.Generator().manual_seed(7))
    scene = random_scene(80, W, H, K, vm, 7, scale_range=(0.003, 0.3))
    _, _, got_m, _, _, ref_m = assert_matches_reference(
        (*scene, vm[None], K[None], W, H), dict(eps2d=0.1, radius_clip=2.0))
    culled = (ref_m["radii"] == 0).all(-1).sum()
    assert culled > 0  # radius_clip really culled something in this scene


# ---------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------

def _edge_setup(W=20, H=14):
    K = intrinsics(W, H, cx=9.0, cy=8.0)
    vm = random_viewmat(torch.Generator().manual_seed(11), max_angle=0.1)
    base = random_scene(12, W, H, K, vm, 11, opacity_range=(0.2, 0.8))
    return W, H, K, vm, base


def _render_and_compare(scene, vm, K, W, H, **kw):
    return assert_matches_reference((*scene, vm[None], K[None], W, H), kw)


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("z", [-1.0, -0.005, 0.0, 0.005])
def test_behind_camera_or_before_near_plane_is_culled(z):
    W, H, K, vm, base = _edge_setup()
    # a large bright Gaussian right at/behind the camera; must not affect the image
    p = torch.tensor([[0.1, -0.05, z]], dtype=F64)
    extra = (cam_to_world(p, vm), torch.tensor([[1.0, 0, 0, 0]], dtype=F64),
             torch.full((1, 3), 0.3, dtype=F64), torch.tensor([0.9], dtype=F64),
             torch.tensor([[5.0, 5.0, 5.0]], dtype=F64))
    scene = cat_scenes(base, extra)
    got_c, got_a, got_m, *_ = _render_and_compare(scene, vm, K, W, H)
    assert got_m["radii"][0, -1].tolist() == [0, 0]
    base_c, base_a, _ = render(*base, vm[None], K[None], W, H)
    assert max_abs(got_c, base_c) <= ATOL64 and max_abs(got_a, base_a) <= ATOL64


@pytest.mark.usefixtures("compositor")
def test_far_plane_culls():
    W, H, K, vm, base = _edge_setup()
    _, _, got_m, *_ = _render_and_compare(base, vm, K, W, H, far_plane=3.5)
    depths = (base[0] @ vm[:3, :3].T + vm[:3, 3])[:, 2]
    assert (got_m["radii"][0][depths > 3.5] == 0).all()


@pytest.mark.usefixtures("compositor")
def test_off_screen_gaussians():
    W, H, K, vm, base = _edge_setup()
    far_left = gaussian_at((-30.0, 7.0), 3.0, K, vm, scale=0.02)       # culled
    far_below = gaussian_at((10.0, H + 40.0), 3.0, K, vm, scale=0.02)  # culled
    # centre outside the image but footprint reaching in: tests the Jacobian clamp
    # (x/z is beyond the 1.3 * tan_fov limit, so tx is clamped)
    big_outside = gaussian_at((-1.0 * W, 5.0), 2.0, K, vm, scales=(1.5, 0.4, 0.3))
    edge = gaussian_at((W + 1.0, -1.0), 2.5, K, vm, scale=0.1)           # straddles a corner
    extra_n = 4
    extra = cat_scenes(far_left, far_below, big_outside, edge)
    extra = (*extra, torch.full((extra_n,), 0.8, dtype=F64),
             torch.rand(extra_n, 3, generator=torch.Generator().manual_seed(3), dtype=F64))
    scene = cat_scenes(base, extra)
    got_c, got_a, got_m, ref_c, ref_a, ref_m = _render_and_compare(scene, vm, K, W, H)
    radii = got_m["radii"][0]
    assert radii[-4].tolist() == [0, 0] and radii[-3].tolist() == [0, 0]
    assert (radii[-2] > 0).all() and (radii[-1] > 0).all()


@pytest.mark.usefixtures("compositor")
def test_very_large_gaussian_covers_image():
    W, H, K, vm, base = _edge_setup()
    huge = gaussian_at((10.0, 7.0), 2.0, K, vm, scale=5.0)
    extra = (*huge, torch.tensor([0.6], dtype=F64), torch.tensor([[0.9, 0.1, 0.4]], dtype=F64))
    scene = cat_scenes(base, extra)
    got_c, got_a, *_ = _render_and_compare(scene, vm, K, W, H)
    assert float(got_a.min()) > 0.5  # every pixel sees it


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_sub_pixel_gaussians(mode):
    W, H, K, vm, _ = _edge_setup()
    gen = torch.Generator().manual_seed(4)
    parts = [gaussian_at((float(u), float(v)), 2.0 + i * 0.1, K, vm, scale=1e-4)
             for i, (u, v) in enumerate(torch.rand(6, 2, generator=gen, dtype=F64) * torch.tensor([W, H]))]
    means, quats, scales = cat_scenes(*parts)
    opac = torch.linspace(0.3, 1.0, 6, dtype=F64)
    cols = torch.rand(6, 3, generator=gen, dtype=F64)
    _, got_a, got_m, *_ = _render_and_compare((means, quats, scales, opac, cols), vm, K, W, H,
                                              rasterize_mode=mode)
    if mode == "classic":
        # the 0.3 px^2 blur keeps them visible: radius ceil(extend * sqrt(0.3)) <= 2
        assert (got_m["radii"] > 0).all() and (got_m["radii"] <= 2).all()
        assert float(got_a.max()) > 0.1
    else:
        # compensation ~ 0 removes them
        assert (got_m["radii"] == 0).all()
        assert float(got_a.max()) == 0.0


@pytest.mark.usefixtures("compositor")
def test_zero_opacity_and_threshold():
    W, H = 16, 12
    K = intrinsics(W, H, fx=20.0, fy=20.0, cx=8.5, cy=6.5)
    vm = torch.eye(4, dtype=F64)
    g = gaussian_at((8.5, 6.5), 2.0, K, vm, scale=0.1)
    means, quats, scales = cat_scenes(g, g, g)
    means = means + torch.tensor([[0, 0, 0], [0, 0, 0.5], [0, 0, 1.0]], dtype=F64)
    o_below = ALPHA_THRESHOLD * (1 - 1e-6)
    o_above = ALPHA_THRESHOLD * (1 + 1e-3)
    cols = torch.eye(3, dtype=F64)
    for opac, visible in (([0.0, o_below, 0.0], False), ([o_above, 0.0, 0.0], True)):
        opac = torch.tensor(opac, dtype=F64)
        got_c, got_a, got_m, *_ = _render_and_compare((means, quats, scales, opac, cols),
                                                      vm, K, W, H)
        if not visible:
            assert (got_m["radii"] == 0).all()
            assert float(got_a.abs().max()) == 0.0
        else:
            # just above 1/255: kept; only the centre pixel reaches alpha >= 1/255
            assert (got_m["radii"][0, 0] > 0).all()
            assert abs(float(got_a[0, 6, 8, 0]) - o_above) < 1e-12
            assert int((got_a > 0).sum()) == 1


@pytest.mark.usefixtures("compositor")
def test_opaque_stack_stops_early():
    W, H = 16, 12
    K = intrinsics(W, H, fx=20.0, fy=20.0, cx=8.5, cy=6.5)
    vm = torch.eye(4, dtype=F64)
    n = 10
    parts = [gaussian_at((8.5, 6.5), 1.0 + 0.3 * i, K, vm, scale=0.8) for i in range(n)]
    means, quats, scales = cat_scenes(*parts)
    # shuffle so depth order != index order
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    means, quats, scales = means[perm], quats[perm], scales[perm]
    opac = torch.full((n,), 0.995, dtype=F64)
    opac[perm == 0] = 1.0  # nearest one: clamped to 0.999
    cols = torch.rand(n, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    bg = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    got_c, got_a, *_ = _render_and_compare((means, quats, scales, opac, cols), vm, K, W, H,
                                           backgrounds=bg)
    nearest = int((perm == 0).nonzero())
    # centre pixel: T = 0.001 after the nearest; the next gives 5e-6 <= 1e-4 -> stop
    expect = 0.999 * cols[nearest] + 0.001 * bg[0]
    assert torch.allclose(got_c[0, 6, 8], expect, atol=1e-12), (got_c[0, 6, 8], expect)
    assert abs(float(got_a[0, 6, 8, 0]) - 0.999) < 1e-12


# ---------------------------------------------------------------------------
# Cameras, channels, backgrounds, SH, depth
# ---------------------------------------------------------------------------

def _three_cameras(W, H, seed=21):
    gen = torch.Generator().manual_seed(seed)
    vms = torch.stack([random_viewmat(gen) for _ in range(3)])
    Ks = torch.stack([intrinsics(W, H), intrinsics(W, H, fx=0.7 * W, cx=0.4 * W),
                      intrinsics(W, H, fy=1.2 * W, cy=0.6 * H)])
    return vms, Ks


@pytest.mark.usefixtures("compositor")
def test_three_cameras_equal_single_camera_renders():
    W, H = 20, 16
    vms, Ks = _three_cameras(W, H)
    scene = random_scene(50, W, H, Ks[0], vms[0], 22, spread=0.4)
    bgs = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7], [0.0, 1.0, 0.0]], dtype=F64)
    got_c, got_a, got_m, *_ = assert_matches_reference((*scene, vms, Ks, W, H),
                                                       dict(backgrounds=bgs))
    assert got_c.shape == (3, H, W, 3) and got_a.shape == (3, H, W, 1)
    for cam in range(3):
        c1, a1, m1 = render(*scene, vms[cam:cam + 1], Ks[cam:cam + 1], W, H,
                            backgrounds=bgs[cam:cam + 1])
        assert max_abs(got_c[cam], c1[0]) <= 1e-12
        assert max_abs(got_a[cam], a1[0]) <= 1e-12
        assert torch.equal(got_m["radii"][cam], m1["radii"][0])
    # the per-camera backgrounds were really used per camera
    empty = got_a[..., 0] == 0
    for cam in range(3):
        if empty[cam].any():
            assert torch.allclose(got_c[cam][empty[cam]], bgs[cam].expand(int(empty[cam].sum()), 3))


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("D", [1, 3, 5])
@pytest.mark.parametrize("per_camera", [False, True], ids=["colors[N,D]", "colors[C,N,D]"])
def test_channels_and_per_camera_colors(D, per_camera):
    W, H = 18, 14
    vms, Ks = _three_cameras(W, H, seed=31)
    means, quats, scales, opac, cols = random_scene(40, W, H, Ks[0], vms[0], 32, D=D, spread=0.4)
    if per_camera:
        cols = torch.rand(3, 40, D, generator=torch.Generator().manual_seed(33), dtype=F64)
    bgs = torch.rand(3, D, generator=torch.Generator().manual_seed(34), dtype=F64)
    got_c, *_ = assert_matches_reference((means, quats, scales, opac, cols, vms, Ks, W, H),
                                         dict(backgrounds=bgs))
    assert got_c.shape == (3, H, W, D)


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("sh_degree,K_coeffs", [(0, 1), (1, 4), (2, 9), (3, 16), (1, 16)])
@pytest.mark.parametrize("per_camera", [False, True], ids=["sh[N,K,3]", "sh[C,N,K,3]"])
def test_spherical_harmonics_colors(sh_degree, K_coeffs, per_camera):
    W, H = 16, 12
    vms, Ks = _three_cameras(W, H, seed=41)
    vms, Ks = vms[:2], Ks[:2]
    n = 25
    means, quats, scales, opac, _ = random_scene(n, W, H, Ks[0], vms[0], 42, spread=0.4)
    gen = torch.Generator().manual_seed(43)
    shape = (2, n, K_coeffs, 3) if per_camera else (n, K_coeffs, 3)
    sh = torch.randn(shape, generator=gen, dtype=F64) * 0.5
    got_c, *_ = assert_matches_reference((means, quats, scales, opac, sh, vms, Ks, W, H),
                                         dict(sh_degree=sh_degree))
    assert got_c.shape == (2, H, W, 3)
    if sh_degree == 1 and K_coeffs == 16:
        # coefficients beyond the requested degree are ignored
        sh2 = sh.clone()
        sh2[..., 4:, :] = 7.0
        c2, _, _ = render(means, quats, scales, opac, sh2, vms, Ks, W, H, sh_degree=1)
        assert max_abs(got_c, c2) <= 1e-12


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("with_bg", [False, True])
def test_rgb_plus_expected_depth(with_bg):
    W, H = 20, 14
    vms, Ks = _three_cameras(W, H, seed=51)
    scene = random_scene(40, W, H, Ks[0], vms[0], 52, spread=0.4)
    bgs = torch.full((3, 3), 0.5, dtype=F64) if with_bg else None
    got_c, got_a, *_ = assert_matches_reference((*scene, vms, Ks, W, H),
                                                dict(render_mode="RGB+ED", backgrounds=bgs))
    assert got_c.shape == (3, H, W, 4) and got_a.shape == (3, H, W, 1)
    rgb, _, _ = render(*scene, vms, Ks, W, H, backgrounds=bgs)
    assert max_abs(got_c[..., :3], rgb) <= 1e-12


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("mode", ["D", "ED", "RGB+D"])
def test_other_depth_modes(mode):
    """Beyond the contract's RGB and RGB+ED (DESIGN.md): accumulated depth, expected depth
    alone and RGB with accumulated depth, compared with the reference."""
    W, H = 16, 12
    vms, Ks = _three_cameras(W, H, seed=61)
    scene = random_scene(30, W, H, Ks[0], vms[0], 62, spread=0.4)
    bgs = torch.full((3, 3), 0.5, dtype=F64)
    assert_matches_reference((*scene, vms, Ks, W, H), dict(render_mode=mode, backgrounds=bgs))


@pytest.mark.usefixtures("compositor")
def test_no_gaussians_renders_background():
    W, H = 17, 9
    vms, Ks = _three_cameras(W, H)
    z3, z4 = torch.zeros(0, 3, dtype=F64), torch.zeros(0, 4, dtype=F64)
    bgs = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]], dtype=F64)
    c, a, meta = render(z3, z4, z3, torch.zeros(0, dtype=F64), z3, vms, Ks, W, H, backgrounds=bgs)
    assert c.shape == (3, H, W, 3) and a.shape == (3, H, W, 1)
    assert torch.equal(c, bgs[:, None, None, :].expand(3, H, W, 3))
    assert torch.equal(a, torch.zeros_like(a))


def test_no_gaussians_meta_has_empty_tensors():
    """meta keeps its contract for N=0: [C,0,2] / [C,0] / [C,0,3] tensors."""
    W, H = 17, 9
    vms, Ks = _three_cameras(W, H)
    z3, z4 = torch.zeros(0, 3, dtype=F64), torch.zeros(0, 4, dtype=F64)
    _, _, meta = render(z3, z4, z3, torch.zeros(0, dtype=F64), z3, vms, Ks, W, H)
    shapes = {k: tuple(meta[k].shape) if k in meta else None
              for k in ("means2d", "radii", "depths", "conics")}
    assert shapes == {"means2d": (3, 0, 2), "radii": (3, 0, 2), "depths": (3, 0),
                      "conics": (3, 0, 3)}, f"meta for N=0: {shapes}"


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------

def _threshold_margin(scene, vm, K, W, H):
    """Smallest distance of any finite-difference-sensitive quantity to a
    discontinuity: |alpha - 1/255|, |o exp(-sigma) - 0.999|, |next_T - 1e-4|,
    and the Jacobian clamp (x/z against its limits)."""
    means, quats, scales, opac, _ = scene
    proj = ref_project(means, quats, scales, opac, vm, K, W, H)
    rows = torch.arange(H, dtype=F64) + 0.5
    cols = torch.arange(W, dtype=F64) + 0.5
    py, px = torch.meshgrid(rows, cols, indexing="ij")
    margin = math.inf
    T = torch.ones(H, W, dtype=F64)
    for g in sorted(range(means.shape[0]), key=lambda i: float(proj["depths"][i])):
        if not proj["visible"][g]:
            return 0.0  # want every Gaussian visible
        dx, dy = proj["means2d"][g, 0] - px, proj["means2d"][g, 1] - py
        a, b, c = proj["conics"][g]
        raw = opac[g] * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
        margin = min(margin, float((raw - ALPHA_THRESHOLD).abs().min() / ALPHA_THRESHOLD),
                     float((raw - ALPHA_MAX).abs().min()))
        alpha = torch.where(raw >= ALPHA_THRESHOLD, raw.clamp(max=ALPHA_MAX), torch.zeros_like(raw))
        T = T * (1 - alpha)
        margin = min(margin, float((T - T_STOP).abs().min() / T_STOP))
    x, y, z = (means @ vm[:3, :3].T + vm[:3, 3]).unbind(-1)
    lim_x = min(float(K[0, 2]), W - float(K[0, 2])) / float(K[0, 0])
    lim_y = min(float(K[1, 2]), H - float(K[1, 2])) / float(K[1, 1])
    if float((x / z).abs().max()) > lim_x or float((y / z).abs().max()) > lim_y:
        return 0.0
    return margin


def _smooth_scene(n, W, H, K, vm, seed0):
    """First seed from seed0 whose scene keeps every quantity >= 2% away from a
    discontinuity, so that central differences with h=1e-6 are valid."""
    for seed in range(seed0, seed0 + 200):
        scene = random_scene(n, W, H, K, vm, seed, z_range=(2.0, 4.0), spread=-0.2,
                             scale_range=(0.08, 0.3), opacity_range=(0.3, 0.85))
        if _threshold_margin(scene, vm, K, W, H) > 0.02:
            return scene
    raise AssertionError("no smooth scene found")


def _loss_weights(C, H, W, D, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(C, H, W, D, generator=gen, dtype=F64),
            torch.randn(C, H, W, 1, generator=gen, dtype=F64))


GRAD_NAMES = ("means", "quats", "scales", "opacities", "colors")


def _grads(fn, scene, vms, Ks, W, H, wc, wa, **kw):
    leaves = [t.clone().requires_grad_(True) for t in scene]
    c, a, meta = fn(*leaves, vms, Ks, W, H, **kw)
    meta["means2d"].retain_grad()
    loss = (c * wc).sum() + (a * wa).sum()
    loss.backward()
    return [t.grad for t in leaves], meta["means2d"].grad, loss.item()


@pytest.mark.parametrize("n,seed0,rasterize_mode,render_mode", [
    (1, 100, "classic", "RGB"),
    (3, 300, "classic", "RGB"),
    (4, 400, "classic", "RGB"),
    (3, 300, "antialiased", "RGB+ED"),
])
def test_gradients_match_reference_autograd(n, seed0, rasterize_mode, render_mode):
    W, H = 8, 8
    vms, Ks = _three_cameras(W, H, seed=71)
    vms, Ks = vms[:2], Ks[:2]
    Ks[1] = Ks[0]
    vms[1] = vms[0].clone()
    vms[1, :3, 3] += torch.tensor([0.05, -0.03, 0.0], dtype=F64)
    scene = _smooth_scene(n, W, H, Ks[0], vms[0], seed0)
    wc, wa = _loss_weights(2, H, W, 3 if render_mode == "RGB" else 4)
    bgs = torch.tensor([[0.2, 0.4, 0.6], [0.5, 0.5, 0.5]], dtype=F64)
    kw = dict(backgrounds=bgs, rasterize_mode=rasterize_mode, render_mode=render_mode)
    got, got_m2d, got_loss = _grads(render, scene, vms, Ks, W, H, wc, wa, **kw)
    ref, ref_m2d, ref_loss = _grads(ref_rasterization, scene, vms, Ks, W, H, wc, wa, **kw)
    assert abs(got_loss - ref_loss) <= 1e-9 * max(1.0, abs(ref_loss))
    for name, g, r in zip(GRAD_NAMES, got, ref):
        assert g is not None, f"no gradient for {name}"
        err = float((g - r).abs().max())
        scale = max(1e-3, float(r.abs().max()))
        assert err <= GRAD_RTOL64 * scale, f"d loss/d {name}: max err {err:.3e} (|ref| {scale:.3e})"
    assert got_m2d is not None and got_m2d.shape == (2, n, 2)
    assert float(got_m2d.abs().max()) > 0, "meta['means2d'] gets no gradient"
    err = float((got_m2d - ref_m2d).abs().max())
    assert err <= GRAD_RTOL64 * max(1e-3, float(ref_m2d.abs().max())), \
        f"d loss/d means2d: max err {err:.3e}"


@pytest.mark.parametrize("n,seed0", [(2, 500), (4, 600)])
def test_gradients_central_differences(n, seed0):
    """Implementation gradients against its own central differences (h = 1e-6)."""
    W, H = 8, 8
    K = intrinsics(W, H, cx=3.7, cy=4.2)
    vm = random_viewmat(torch.Generator().manual_seed(seed0), max_angle=0.2)
    scene = _smooth_scene(n, W, H, K, vm, seed0)
    wc, wa = _loss_weights(1, H, W, 3, seed=1)

    def loss_of(*params):
        c, a, _ = render(*params, vm[None], K[None], W, H)
        return float((c * wc).sum() + (a * wa).sum())

    got, _, _ = _grads(render, scene, vm[None], K[None], W, H, wc, wa)
    h = 1e-6
    for idx, (name, g) in enumerate(zip(GRAD_NAMES, got)):
        fd = torch.zeros_like(scene[idx])
        for j in range(scene[idx].numel()):
            plus = [t.clone() for t in scene]
            minus = [t.clone() for t in scene]
            plus[idx].view(-1)[j] += h
            minus[idx].view(-1)[j] -= h
            fd.view(-1)[j] = (loss_of(*plus) - loss_of(*minus)) / (2 * h)
        err = float((g - fd).abs().max())
        # central-difference truncation ~h^2 * f''' and roundoff ~1e-16 / h
        assert err <= 1e-5 * max(1.0, float(fd.abs().max())), \
            f"d loss/d {name}: autograd {g.flatten().tolist()} vs FD {fd.flatten().tolist()}"


def test_gradcheck_tiny_scene():
    W, H = 6, 6
    K = intrinsics(W, H)
    vm = random_viewmat(torch.Generator().manual_seed(800), max_angle=0.2)
    scene = _smooth_scene(2, W, H, K, vm, 800)
    inputs = tuple(t.clone().requires_grad_(True) for t in scene)

    def fn(*params):
        c, a, _ = render(*params, vm[None], K[None], W, H)
        return c, a

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_sh_gradient_matches_reference():
    W, H = 8, 8
    K = intrinsics(W, H)
    vm = random_viewmat(torch.Generator().manual_seed(900), max_angle=0.2)
    means, quats, scales, opac, _ = _smooth_scene(3, W, H, K, vm, 900)
    sh = (torch.randn(3, 16, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.2)
    sh[:, 0] = 1.0  # keep colours away from the clamp at 0
    scene = (means, quats, scales, opac, sh)
    wc, wa = _loss_weights(1, H, W, 3, seed=2)
    got, _, _ = _grads(render, scene, vm[None], K[None], W, H, wc, wa, sh_degree=3)
    ref, _, _ = _grads(ref_rasterization, scene, vm[None], K[None], W, H, wc, wa, sh_degree=3)
    for name, g, r in zip(("means", "quats", "scales", "opacities", "sh"), got, ref):
        err = float((g - r).abs().max())
        assert err <= GRAD_RTOL64 * max(1e-3, float(r.abs().max())), f"d loss/d {name}: {err:.3e}"


# ---------------------------------------------------------------------------
# Devices, dtypes, backends
# ---------------------------------------------------------------------------

def _small_scene(dtype=F64, device="cpu", n=40, W=16, H=12):
    K = intrinsics(W, H)
    vm = random_viewmat(torch.Generator().manual_seed(1234))
    scene = random_scene(n, W, H, K, vm, 1234)
    to = dict(dtype=dtype, device=device)
    return tuple(t.to(**to) for t in scene), vm[None].to(**to), K[None].to(**to), W, H


def _check_device_dtype(outputs, dtype, device):
    c, a, meta = outputs
    for name, t in (("colors", c), ("alphas", a), ("means2d", meta["means2d"]),
                    ("depths", meta["depths"]), ("conics", meta["conics"])):
        assert t.device.type == torch.device(device).type, (name, t.device)
        assert t.dtype == dtype, (name, t.dtype)
    assert meta["radii"].device.type == torch.device(device).type


@pytest.mark.usefixtures("compositor")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_follow_input_dtype_cpu(dtype):
    scene, vms, Ks, W, H = _small_scene(dtype)
    out = render(*scene, vms, Ks, W, H)
    _check_device_dtype(out, dtype, "cpu")
    ref_c, ref_a, _ = ref_rasterization(*(t.double() for t in scene), vms.double(), Ks.double(), W, H)
    dc, da = (out[0].double() - ref_c).abs(), (out[1].double() - ref_a).abs()
    tol_max, tol_mean = (ATOL64, ATOL64) if dtype == F64 else (ATOL32_MAX, ATOL32_MEAN)
    assert float(dc.max()) <= tol_max and float(da.max()) <= tol_max
    assert float(dc.mean()) <= tol_mean and float(da.mean()) <= tol_mean


def test_auto_backend_on_cpu_uses_torch():
    scene, vms, Ks, W, H = _small_scene()
    c_auto, a_auto, m_auto = _rasterization()(*scene, vms, Ks, W, H, backend="auto")
    c_t, a_t, _ = render(*scene, vms, Ks, W, H)
    # CPU inputs: the torch backend, whether or not the machine has CUDA (gsplat needs CUDA tensors).
    assert m_auto.get("backend") == "torch", f"meta['backend'] = {m_auto.get('backend')!r}"
    assert torch.equal(c_auto, c_t) and torch.equal(a_auto, a_t)


def test_meta_names_the_compositor_used(compositor):
    scene, vms, Ks, W, H = _small_scene()
    with torch.no_grad():
        _, _, meta = render(*scene, vms, Ks, W, H)
    assert meta["compositor"] == compositor
    params = [t.clone().requires_grad_(True) for t in scene]
    _, _, meta = render(*params, vms, Ks, W, H)
    assert meta["compositor"] == "torch"  # gradients wanted: always the differentiable one


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_follow_input_device_cuda(dtype):
    scene, vms, Ks, W, H = _small_scene(dtype, "cuda")
    out = render(*scene, vms, Ks, W, H)
    _check_device_dtype(out, dtype, "cuda")
    ref_c, ref_a, _ = ref_rasterization(*(t.double().cpu() for t in scene),
                                        vms.double().cpu(), Ks.double().cpu(), W, H)
    tol = ATOL64 if dtype == F64 else ATOL32_MAX
    assert max_abs(out[0].double().cpu(), ref_c) <= tol
    assert max_abs(out[1].double().cpu(), ref_a) <= tol


@pytest.mark.cuda
@requires_cuda
def test_gsplat_backend_parity_with_torch():
    W = H = 64
    K = intrinsics(W, H)
    vm = random_viewmat(torch.Generator().manual_seed(77))
    scene = random_scene(300, W, H, K, vm, 77)
    dev = dict(device="cuda", dtype=torch.float32)
    scene = tuple(t.to(**dev) for t in scene)
    vms, Ks = vm[None].to(**dev), K[None].to(**dev)
    wc = torch.randn(1, H, W, 3, generator=torch.Generator().manual_seed(0)).to(**dev)
    outs, grads = {}, {}
    for backend in ("gsplat", "torch"):
        leaves = [t.clone().requires_grad_(True) for t in scene]
        c, a, meta = render(*leaves, vms, Ks, W, H, backend=backend)
        meta["means2d"].retain_grad()
        ((c * wc).sum() + a.sum()).backward()
        outs[backend] = (c.detach(), a.detach(), meta["radii"])
        grads[backend] = [t.grad for t in leaves] + [meta["means2d"].grad]
    dc = max_abs(outs["gsplat"][0], outs["torch"][0])
    da = max_abs(outs["gsplat"][1], outs["torch"][1])
    report = {"colors": dc, "alphas": da}
    for name, g, t in zip(GRAD_NAMES + ("means2d",), grads["gsplat"], grads["torch"]):
        report[f"grad_{name}_rel"] = float((g - t).norm() / t.norm().clamp_min(1e-12))
    # float32 on both sides: a radius may land on the other side of an integer
    # (ceil) in rare cases, which only moves the box edge where alpha < 1/255
    dr = (outs["gsplat"][2].long() - outs["torch"][2].long()).abs()
    report["radii_mismatches"] = int((dr > 0).sum())
    # the same scene given as covariances (gsplat's ``covars``), sheared: the two backends agree
    from avatar.geometry.rotations import quaternion_to_matrix  # noqa: PLC0415

    means, quats, scales = scene[:3]
    shear = torch.eye(3, device="cuda") + torch.tensor([[0, 0.5, 0], [0, 0, 0], [0.2, 0, 0]], device="cuda")
    cov = shear @ (quaternion_to_matrix(quats / quats.norm(dim=-1, keepdim=True)) * scales[:, None, :])
    cov = cov @ cov.transpose(-1, -2)
    cg = render(*scene, vms, Ks, W, H, backend="gsplat", covars=cov)[0]
    ct = render(*scene, vms, Ks, W, H, backend="torch", covars=cov)[0]
    report["covars_colors"] = max_abs(cg, ct)
    print("gsplat vs torch:", report)
    assert report["covars_colors"] <= 1e-3, report
    assert dc <= 1e-3 and da <= 1e-3, report
    assert int(dr.max()) <= 1 and report["radii_mismatches"] <= 3, report
    for key, rel in report.items():
        if key.startswith("grad_"):
            assert rel <= 5e-2, report


@pytest.mark.usefixtures("compositor")
def test_covariances_instead_of_quats_and_scales():
    """``covars``: the covariances quats x scales make render the same image; a sheared one (not a
    rotated box of the given scales) renders as the reference does its eigendecomposition, and
    gradients reach the covariances."""
    from avatar.gaussians.base import covariance_shapes  # noqa: PLC0415
    from avatar.render.torch_backend import covariances  # noqa: PLC0415

    W, H = 24, 20
    K = intrinsics(W, H)
    vm = random_viewmat(torch.Generator().manual_seed(3))
    means, quats, scales, opac, cols = random_scene(40, W, H, K, vm, 3)
    plain = render(means, quats, scales, opac, cols, vm[None], K[None], W, H)
    cov = covariances(quats, scales)
    given = render(means, quats, scales, opac, cols, vm[None], K[None], W, H, covars=cov)
    assert max_abs(given[0], plain[0]) <= ATOL64 and max_abs(given[1], plain[1]) <= ATOL64
    shear = torch.eye(3, dtype=cov.dtype) + torch.tensor([[0, 0.8, 0], [0, 0, 0], [0.3, 0, 0]], dtype=cov.dtype)
    sheared = (shear @ cov @ shear.T).requires_grad_(True)
    c, a, _ = render(means, quats, scales, opac, cols, vm[None], K[None], W, H, covars=sheared)
    q2, s2 = covariance_shapes(sheared.detach(), quats)
    ref_c, ref_a = ref_rasterization(means, q2, s2, opac, cols, vm[None], K[None], W, H)[:2]
    assert max_abs(c.detach(), ref_c) <= 1e-6 and max_abs(a.detach(), ref_a) <= 1e-6
    assert max_abs(c.detach(), plain[0]) > 1e-2  # the shear shows
    c.sum().backward()
    assert sheared.grad is not None and sheared.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="covars"):
        render(means, quats, scales, opac, cols, vm[None], K[None], W, H, covars=cov[:, :2])


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

def _valid_inputs(n=7, C=1, W=12, H=10):
    K = intrinsics(W, H)
    vm = torch.eye(4, dtype=F64)
    means, quats, scales, opac, cols = random_scene(n, W, H, K, vm, 5)
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=cols,
                viewmats=vm[None].expand(C, 4, 4).clone(), Ks=K[None].expand(C, 3, 3).clone(),
                width=W, height=H)


def _shape_pattern(shape):
    # accepts "(5, 3)", "[5, 3]", "torch.Size([5, 3])", "5x3", ...
    return r"\D{1,4}".join(str(int(d)) for d in shape)


BAD_SHAPES = [
    ("means", lambda a: a["means"][:, :2]),
    ("quats", lambda a: a["quats"][:, :3]),
    ("scales", lambda a: a["scales"][:5]),
    ("opacities", lambda a: a["opacities"][:5]),
    ("quats", lambda a: a["quats"][:5]),
    ("colors", lambda a: a["colors"][:5]),
    ("colors", lambda a: a["colors"][None].expand(2, 7, 3)),  # C=2 colours for one camera
    ("Ks", lambda a: torch.zeros(1, 3, 4, dtype=F64)),
    ("Ks", lambda a: torch.zeros(1, 2, 2, dtype=F64)),
    ("viewmats", lambda a: torch.zeros(1, 3, 4, dtype=F64)),
]


@pytest.mark.parametrize("arg,make", BAD_SHAPES,
                         ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD_SHAPES)])
def test_bad_shapes_raise_value_error(arg, make):
    kw = _valid_inputs()
    kw[arg] = make(kw)
    with pytest.raises(ValueError) as info:
        render(**kw)
    msg = str(info.value)
    assert arg in msg, f"message does not name {arg!r}: {msg!r}"
    assert re.search(_shape_pattern(kw[arg].shape), msg), \
        f"message does not give the shape {tuple(kw[arg].shape)}: {msg!r}"


def test_camera_count_mismatch_raises_value_error():
    kw = _valid_inputs(C=2)
    kw["Ks"] = kw["Ks"][:1]
    with pytest.raises(ValueError, match=r"Ks|viewmats"):
        render(**kw)


def test_sh_with_too_few_coefficients_raises_value_error():
    kw = _valid_inputs()
    kw["colors"] = torch.zeros(7, 9, 3, dtype=F64)
    with pytest.raises(ValueError, match="colors"):
        render(**kw, sh_degree=3)


def test_background_with_wrong_channels_raises_value_error():
    kw = _valid_inputs()
    with pytest.raises(ValueError, match="backgrounds"):
        render(**kw, backgrounds=torch.zeros(1, 4, dtype=F64))


@pytest.mark.parametrize("arg", ["means", "quats", "scales", "opacities", "colors",
                                 "viewmats", "Ks"])
def test_nan_input_raises_value_error(arg):
    kw = _valid_inputs()
    kw[arg] = kw[arg].clone()
    kw[arg].view(-1)[1] = float("nan")
    with pytest.raises(ValueError, match=arg):
        render(**kw)

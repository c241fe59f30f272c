"""Brute-force reference of gsplat 1.5.3's EWA rasterization rules, for the tests.

Written from the contract in DESIGN.md, not from ``avatar.render``: projection is
vectorised over Gaussians, compositing loops over Gaussians in depth order and is
vectorised over pixels (every pixel x every Gaussian, no tiles, no bounding boxes),
all in float64 torch so that it is also differentiable and gives reference gradients.
Also scene builders and comparison helpers shared by ``test_rasterize.py``.

Conventions: viewmats are world-to-camera [C,4,4] (OpenCV: x right, y down,
z forward); quats are (w, x, y, z); pixel (row i, col j) has centre
(j + 0.5, i + 0.5).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

ALPHA_THRESHOLD = 1.0 / 255.0
ALPHA_MAX = 0.999
T_STOP = 1e-4

# float64 tolerance against the reference.  Both sides compute the same
# closed-form quantities in float64 (roundoff ~1e-15 relative per op; the worst
# conditioning is the 2x2 conic of a long thin Gaussian, cond <~ 1e5 here), so
# honest differences stay below ~1e-11.  A wrong rule shows up far above
# 1e-8: the smallest contribution a Gaussian can make to a pixel is
# alpha * T * c >= (1/255) * 1e-4 * c ~ 4e-7 * c, so 1e-8 still catches an
# off-by-one in the stop rule or the 1/255 skip.
ATOL64 = 1e-8
# float32 runs are compared loosely: a pixel whose alpha sits within float32
# roundoff of 1/255 may be kept by one side and skipped by the other, a jump of
# up to ~1/255 * |c|; the mean difference must stay at float32 roundoff.
ATOL32_MAX = 1e-2
ATOL32_MEAN = 1e-4
# Reference gradients (autograd through the float64 reference) vs the
# implementation's gradients: same math, float64, so a tight relative bound.
GRAD_RTOL64 = 1e-6

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)


def _rasterization():
    """The function under test, imported lazily so the reference self-tests run
    even while ``avatar.render`` is missing (then the other tests fail)."""
    from avatar.render import rasterization

    return rasterization


def render(*args, **kwargs):
    kwargs.setdefault("backend", "torch")
    return _rasterization()(*args, **kwargs)


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


def ref_quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) quaternions [N,4], any norm -> rotation matrices [N,3,3]."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def ref_project(means, quats, scales, opacities, viewmat, K, width, height,
                near_plane=0.01, far_plane=1e10, radius_clip=0.0, eps2d=0.3,
                antialiased=False):
    """EWA projection of N Gaussians into one camera.

    Returns a dict with means2d [N,2], conics [N,3] (inv00, inv01, inv11),
    depths [N], radii [N,2] (int64, 0 = culled), opac [N] (opacity used for
    compositing, x compensation when antialiased), visible [N] bool.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ R.T + t  # [N,3] camera space
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]

    rot = ref_quat_to_rotmat(quats)
    cov3 = rot @ torch.diag_embed(scales * scales) @ rot.transpose(-1, -2)
    cov_c = R @ cov3 @ R.T  # [N,3,3]

    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    J = torch.stack([
        torch.stack([fx / z, zero, -fx * tx / (z * z)], dim=-1),
        torch.stack([zero, fy / z, -fy * ty / (z * z)], dim=-1),
    ], dim=-2)  # [N,2,3]
    cov2 = J @ cov_c @ J.transpose(-1, -2)  # [N,2,2]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    det_orig = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] * cov2[:, 1, 0]
    cov2 = cov2 + eps2d * torch.eye(2, dtype=cov2.dtype, device=cov2.device)
    det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] * cov2[:, 1, 0]
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack(
        [cov2[:, 1, 1] / safe_det, -cov2[:, 0, 1] / safe_det, cov2[:, 0, 0] / safe_det],
        dim=-1,
    )
    opac = opacities
    if antialiased:
        comp = torch.sqrt(torch.clamp(det_orig / safe_det, min=0.0))
        opac = opac * comp

    n = means.shape[0]
    radii = torch.zeros(n, 2, dtype=torch.int64)
    # the footprint is not differentiable: plain floats from detached tensors
    z, det, opac_d = z.detach(), det.detach(), opac.detach()
    cov2_d, means2d_d = cov2.detach(), means2d.detach()
    for g in range(n):
        zg = float(z[g])
        if not (near_plane <= zg <= far_plane):
            continue
        if float(det[g]) <= 0.0:
            continue
        o = float(opac_d[g])
        if o < ALPHA_THRESHOLD:
            continue
        extend = min(3.33, math.sqrt(2.0 * math.log(o * 255.0)))
        rx = math.ceil(extend * math.sqrt(float(cov2_d[g, 0, 0])))
        ry = math.ceil(extend * math.sqrt(float(cov2_d[g, 1, 1])))
        if rx <= radius_clip and ry <= radius_clip:
            continue
        mx, my = float(means2d_d[g, 0]), float(means2d_d[g, 1])
        if mx + rx <= 0 or mx - rx >= width or my + ry <= 0 or my - ry >= height:
            continue
        radii[g, 0], radii[g, 1] = rx, ry
    visible = (radii > 0).all(dim=-1)
    return dict(means2d=means2d, conics=conics, depths=p[:, 2], radii=radii,
                opac=opac, visible=visible, cov2d=cov2)


def ref_composite(means2d, conics, opac, colors, depths, visible, width, height,
                  background=None):
    """Front-to-back alpha compositing, every pixel x every visible Gaussian.

    colors [N,D]; returns (image [H,W,D], alpha [H,W,1]).
    """
    dtype, device = means2d.dtype, means2d.device
    D = colors.shape[-1]
    rows = torch.arange(height, dtype=dtype, device=device) + 0.5
    cols = torch.arange(width, dtype=dtype, device=device) + 0.5
    py, px = torch.meshgrid(rows, cols, indexing="ij")  # [H,W]
    T = torch.ones(height, width, dtype=dtype, device=device)
    out = torch.zeros(height, width, D, dtype=dtype, device=device)
    done = torch.zeros(height, width, dtype=torch.bool, device=device)
    ids = [int(i) for i in torch.nonzero(visible).flatten()]
    ids.sort(key=lambda i: float(depths[i].detach()))
    for g in ids:
        dx = means2d[g, 0] - px
        dy = means2d[g, 1] - py
        a, b, c = conics[g]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opac[g] * torch.exp(-sigma), max=ALPHA_MAX)
        used = (~done) & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        next_T = T * (1 - alpha)
        stop = used & (next_T <= T_STOP)
        done = done | stop
        add = used & ~stop
        w = torch.where(add, alpha * T, torch.zeros_like(T))
        out = out + w[..., None] * colors[g]
        T = torch.where(add, next_T, T)
    if background is not None:
        out = out + T[..., None] * background
    return out, (1 - T)[..., None]


def ref_sh(degree: int, dirs: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Real SH (3DGS sign convention) at unit directions dirs [N,3] with
    coefficients [N,K,3] -> [N,3] (before the +0.5 / clamp)."""
    x, y, z = dirs[:, 0:1], dirs[:, 1:2], dirs[:, 2:3]
    sh = coeffs
    out = SH_C0 * sh[:, 0]
    if degree >= 1:
        out = out - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out = (out
               + SH_C2[0] * x * y * sh[:, 4]
               + SH_C2[1] * y * z * sh[:, 5]
               + SH_C2[2] * (2 * zz - xx - yy) * sh[:, 6]
               + SH_C2[3] * x * z * sh[:, 7]
               + SH_C2[4] * (xx - yy) * sh[:, 8])
    if degree >= 3:
        out = (out
               + SH_C3[0] * y * (3 * xx - yy) * sh[:, 9]
               + SH_C3[1] * x * y * z * sh[:, 10]
               + SH_C3[2] * y * (4 * zz - xx - yy) * sh[:, 11]
               + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12]
               + SH_C3[4] * x * (4 * zz - xx - yy) * sh[:, 13]
               + SH_C3[5] * z * (xx - yy) * sh[:, 14]
               + SH_C3[6] * x * (xx - 3 * yy) * sh[:, 15])
    return out


def ref_rasterization(means, quats, scales, opacities, colors, viewmats, Ks,
                      width, height, near_plane=0.01, far_plane=1e10,
                      radius_clip=0.0, eps2d=0.3, sh_degree=None, backgrounds=None,
                      render_mode="RGB", rasterize_mode="classic"):
    """Reference with the same signature and outputs as the function under test."""
    C = viewmats.shape[0]
    projs = [ref_project(means, quats, scales, opacities, viewmats[cam], Ks[cam], width,
                         height, near_plane, far_plane, radius_clip, eps2d,
                         antialiased=(rasterize_mode == "antialiased")) for cam in range(C)]
    meta = {k: torch.stack([p[k] for p in projs])
            for k in ("means2d", "conics", "depths", "radii", "opac")}
    imgs, alps = [], []
    for cam, proj in enumerate(projs):
        cols = colors[cam] if colors.dim() == (4 if sh_degree is not None else 3) else colors
        if sh_degree is not None:
            R, t = viewmats[cam, :3, :3], viewmats[cam, :3, 3]
            campos = -R.T @ t
            dirs = means - campos
            dirs = dirs / dirs.norm(dim=-1, keepdim=True)
            cols = torch.clamp_min(ref_sh(sh_degree, dirs, cols) + 0.5, 0.0)
        bg = backgrounds[cam] if backgrounds is not None else None
        if render_mode in ("D", "ED"):
            cols = proj["depths"][:, None]
            bg = None
        elif render_mode in ("RGB+D", "RGB+ED"):
            cols = torch.cat([cols, proj["depths"][:, None]], dim=-1)
            if bg is not None:
                bg = torch.cat([bg, bg.new_zeros(1)])
        # meta["means2d"][cam] (not proj["means2d"]) so that its .grad is the
        # gradient of the image w.r.t. the projected centres
        img, alp = ref_composite(meta["means2d"][cam], proj["conics"], proj["opac"], cols,
                                 proj["depths"], proj["visible"], width, height, bg)
        if render_mode in ("ED", "RGB+ED"):
            img = torch.cat([img[..., :-1], img[..., -1:] / alp.clamp(min=1e-10)], dim=-1)
        imgs.append(img)
        alps.append(alp)
    return torch.stack(imgs), torch.stack(alps), meta


# ---------------------------------------------------------------------------
# Scene helpers
# ---------------------------------------------------------------------------

F64 = torch.float64


def intrinsics(width, height, fx=None, fy=None, cx=None, cy=None, dtype=F64):
    fx = 0.9 * width if fx is None else fx
    fy = 0.95 * width if fy is None else fy
    cx = 0.5 * width if cx is None else cx
    cy = 0.5 * height if cy is None else cy
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    theta = axis_angle.norm()
    if float(theta) < 1e-12:
        return torch.eye(3, dtype=axis_angle.dtype)
    k = axis_angle / theta
    Kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]],
                      dtype=axis_angle.dtype)
    return torch.eye(3, dtype=axis_angle.dtype) + torch.sin(theta) * Kx + (1 - torch.cos(theta)) * Kx @ Kx


def random_viewmat(gen: torch.Generator, max_angle=0.3, max_shift=0.5) -> torch.Tensor:
    aa = (torch.rand(3, generator=gen, dtype=F64) * 2 - 1) * max_angle
    vm = torch.eye(4, dtype=F64)
    vm[:3, :3] = rodrigues(aa)
    vm[:3, 3] = (torch.rand(3, generator=gen, dtype=F64) * 2 - 1) * max_shift
    return vm


def cam_to_world(p_cam: torch.Tensor, viewmat: torch.Tensor) -> torch.Tensor:
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    return (p_cam - t) @ R  # R^T (p - t), row-vector form


def random_scene(n, width, height, K, viewmat, seed, D=3, z_range=(1.5, 6.0),
                 spread=0.15, scale_range=(0.01, 0.5), opacity_range=(0.05, 1.0)):
    """N random Gaussians placed in (and a little around) the camera frustum."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=gen, dtype=F64) * (1 + 2 * spread) - spread
    v = torch.rand(n, generator=gen, dtype=F64) * (1 + 2 * spread) - spread
    z = z_range[0] + torch.rand(n, generator=gen, dtype=F64) * (z_range[1] - z_range[0])
    x = (u * width - K[0, 2]) / K[0, 0] * z
    y = (v * height - K[1, 2]) / K[1, 1] * z
    means = cam_to_world(torch.stack([x, y, z], dim=-1), viewmat)
    quats = torch.randn(n, 4, generator=gen, dtype=F64) * 0.7  # not normalised
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    scales = torch.exp(lo + torch.rand(n, 3, generator=gen, dtype=F64) * (hi - lo))
    opacities = opacity_range[0] + torch.rand(n, generator=gen, dtype=F64) * (
        opacity_range[1] - opacity_range[0])
    colors = torch.rand(n, D, generator=gen, dtype=F64)
    return means, quats, scales, opacities, colors


def gaussian_at(pixel_xy, z, K, viewmat=None, scale=0.05, quat=(1.0, 0.0, 0.0, 0.0),
                scales=None):
    """One Gaussian whose centre projects to pixel coordinates pixel_xy at depth z."""
    viewmat = torch.eye(4, dtype=F64) if viewmat is None else viewmat
    x = (pixel_xy[0] - K[0, 2]) / K[0, 0] * z
    y = (pixel_xy[1] - K[1, 2]) / K[1, 1] * z
    mean = cam_to_world(torch.tensor([[x, y, z]], dtype=F64), viewmat)
    s = torch.tensor([scales if scales is not None else (scale, scale, scale)], dtype=F64)
    return mean, torch.tensor([quat], dtype=F64), s


def cat_scenes(*scenes):
    return tuple(torch.cat(parts, dim=0) for parts in zip(*scenes))


def max_abs(a, b):
    return float((a - b).abs().max()) if a.numel() else 0.0


def assert_matches_reference(args, kwargs, atol=ATOL64, check_meta=True):
    """Render with the implementation and the reference and compare everything."""
    got_c, got_a, got_m = render(*args, **kwargs)
    kw = {k: v for k, v in kwargs.items() if k != "backend"}
    ref_c, ref_a, ref_m = ref_rasterization(*args, **kw)
    assert got_c.shape == ref_c.shape, (got_c.shape, ref_c.shape)
    assert got_a.shape == ref_a.shape, (got_a.shape, ref_a.shape)
    dc, da = max_abs(got_c, ref_c), max_abs(got_a, ref_a)
    assert dc <= atol, f"colors differ from reference by {dc:.3e} (atol {atol:.0e})"
    assert da <= atol, f"alphas differ from reference by {da:.3e} (atol {atol:.0e})"
    if check_meta:
        radii = got_m["radii"]
        assert not radii.is_floating_point(), radii.dtype
        assert radii.shape == ref_m["radii"].shape, radii.shape
        bad = (radii.long() != ref_m["radii"]).nonzero()
        assert bad.numel() == 0, (
            f"radii differ at (cam, gaussian, axis) {bad[:5].tolist()}: "
            f"got {radii.long()[tuple(bad[:5].T)].tolist()} "
            f"expected {ref_m['radii'][tuple(bad[:5].T)].tolist()}")
        vis = (ref_m["radii"] > 0).all(-1)
        for key in ("means2d", "depths", "conics"):
            g = got_m[key].detach()
            assert g.shape[:2] == ref_m[key].shape[:2], (key, g.shape)
            d = max_abs(g[vis], ref_m[key].detach()[vis])
            scale = max(1.0, float(ref_m[key].detach()[vis].abs().max())) if vis.any() else 1.0
            assert d <= 1e-9 * scale, f"meta[{key!r}] differs by {d:.3e}"
    return got_c, got_a, got_m, ref_c, ref_a, ref_m

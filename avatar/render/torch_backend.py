"""Pure-PyTorch Gaussian rasterizer following gsplat 1.5's EWA "classic"/"antialiased" rules.

Two stages, both differentiable through autograd:

* :func:`project_gaussians` -- world Gaussians to 2D means, conics, depths and
  opacity-aware radii per camera (gsplat's ``fully_fused_projection``, non-packed).
* :func:`rasterize_to_pixels` -- front-to-back alpha compositing on a tile grid.

The compositing is vectorised per chunk of tiles: each tile's depth-sorted list of
Gaussians is padded to the longest list in the chunk, and every pixel of the tile is
evaluated against every Gaussian of its list with one matmul (the exponent is a quadratic
in tile-local pixel coordinates). Chunks are grouped by list length so padding stays
small, and their size bounds the memory. The backward pass is written out (closed form,
weights recomputed per chunk), so no autograd graph of size pixels x Gaussians is kept.

The tile grid only selects candidates: outside its opacity-aware box a Gaussian's alpha
is below 1/255 and is skipped anyway, so ``tile_size`` changes speed, not results.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..geometry.rotations import quaternion_to_matrix
from . import cpu_kernels

ALPHA_THRESHOLD = 1.0 / 255.0  # alphas below this are skipped
ALPHA_MAX = 0.999  # alphas are clamped here (gsplat's kernels)
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before its transmittance falls to this
EXTEND_MAX = 3.33  # box half-size in standard deviations, before the opacity-aware bound
DEFAULT_TILE_SIZE = 8  # fastest on CPU for avatar-sized splats (see benchmarks/rasterize.py)


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances ``[N,3,3]`` = R diag(s^2) R^T from quats ``[N,4]`` (w,x,y,z) and scales ``[N,3]``."""
    m = quaternion_to_matrix(quats) * scales[..., None, :]  # R S
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    antialiased: bool = False,
    covars: Tensor | None = None,  # [N, 3, 3]
) -> dict[str, Tensor]:
    """Project Gaussians into each camera (pinhole, OpenCV convention). ``covars``: world
    covariances ``[N, 3, 3]`` to use instead of ``quats`` and ``scales`` (as gsplat's).

    Returns a dict of ``[C, N, ...]`` tensors: ``means2d [C,N,2]`` (pixels),
    ``conics [C,N,3]`` (inverse 2D covariance as a, b, c), ``depths [C,N]`` (camera z,
    metres), ``radii [C,N,2]`` int32 box half-sizes in pixels (0 where culled),
    ``opacities [C,N]`` (times the antialiasing compensation when ``antialiased``) and
    ``compensations [C,N]``. Culled entries hold finite placeholder values.

    Forward-only on a CPU (:func:`compiled_forward`) the same runs as one compiled loop
    (:func:`.cpu_kernels.project_gaussians`): some forty batched tensor ops on a few thousand
    Gaussians cost more in overhead than in arithmetic.
    """
    if compiled_forward(means.device, means, quats, scales, opacities, viewmats, Ks,
                        *(() if covars is None else (covars,))):
        return cpu_kernels.project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane,
                                             far_plane, radius_clip, eps2d, antialiased, covars, ALPHA_THRESHOLD,
                                             EXTEND_MAX)
    rot = viewmats[:, :3, :3]  # [C, 3, 3]
    trans = viewmats[:, :3, 3]  # [C, 3]
    p_cam = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]  # [C, N, 3]
    cov = covariances(quats, scales) if covars is None else covars
    cov_cam = rot[:, None] @ cov[None] @ rot[:, None].transpose(-1, -2)  # [C,N,3,3]

    x, y, z = p_cam.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries finite
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # Clamp the point used by the Jacobian to a little outside the view frustum.
    lim_x_pos = (width - cx) / fx + 0.15 * width / fx
    lim_x_neg = cx / fx + 0.15 * width / fx
    lim_y_pos = (height - cy) / fy + 0.15 * height / fy
    lim_y_neg = cy / fy + 0.15 * height / fy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(z)
    jac = torch.stack(
        (fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz), dim=-1
    ).reshape(z.shape + (2, 3))
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2)  # [C, N, 2, 2]
    means2d = torch.stack((fx * x * rz + cx, fy * y * rz + cy), dim=-1)

    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    valid = in_depth & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    compensation = (det_orig / det).clamp_min(0.0).sqrt()
    conics = torch.stack((c / det, -b / det, a / det), dim=-1)

    opac = opacities[None, :].expand_as(z)
    if antialiased:
        opac = opac * compensation
    with torch.no_grad():
        valid = valid & (opac >= ALPHA_THRESHOLD)
        extend = (2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).sqrt().clamp_max(EXTEND_MAX)
        rx = torch.ceil(extend * a.clamp_min(0).sqrt())
        ry = torch.ceil(extend * c.clamp_min(0).sqrt())
        mx, my = means2d[..., 0], means2d[..., 1]
        on_image = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = valid & ((rx > radius_clip) | (ry > radius_clip)) & on_image
        radii = torch.where(valid[..., None], torch.stack((rx, ry), -1), torch.zeros_like(means2d))
    return {
        "means2d": means2d,
        "conics": conics,
        "depths": p_cam[..., 2],
        "radii": radii.to(torch.int32),
        "opacities": opac,
        "compensations": compensation,
    }


# Exponent s = sigma - log(opacity) of a Gaussian at a pixel is a quadratic in the pixel's
# tile-local coordinates (u, v): s = f(u, v) . g with features f = (u^2/2, uv, v^2/2, u, v, 1)
# and per-Gaussian coefficients g. One matmul then evaluates every (pixel, Gaussian) pair.
# alpha = exp(-s) is clamped at 0.999 (s >= -ln(0.999)) and skipped below 1/255.
_S_CLAMP = -math.log(ALPHA_MAX)
_S_PAD = 1e4  # exponent of padding slots: never drawn


def pixel_features(tile_size: int, device, dtype) -> Tensor:
    """``[P, 6]`` features of a tile's pixel centres relative to the tile centre (row-major)."""
    c = torch.arange(tile_size, device=device, dtype=dtype) + 0.5 - tile_size / 2
    v, u = torch.meshgrid(c, c, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack((0.5 * u * u, u * v, 0.5 * v * v, u, v, torch.ones_like(u)), -1)


def exponent_coefficients(means2d: Tensor, conics: Tensor, opacities: Tensor, centres: Tensor) -> Tensor:
    """``[..., 6]`` coefficients g with ``f . g = sigma - log(opacity)`` for tile-local features.

    ``means2d [..., 2]`` and ``centres [..., 2]`` are in pixels; ``conics [..., 3]`` = (a, b, c).
    """
    a, b, c = conics.unbind(-1)
    mx, my = (means2d - centres).unbind(-1)
    const = 0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my - torch.log(opacities.clamp_min(1e-30))
    return torch.stack((a, b, c, -(a * mx + b * my), -(b * mx + c * my), const), -1)


@functools.lru_cache(maxsize=None)
def _below_threshold(dtype: torch.dtype) -> float:
    """The largest ``dtype`` value below 1/255: ``threshold(x, it, 0)`` keeps exactly x >= 1/255."""
    t = torch.tensor(ALPHA_THRESHOLD, dtype=dtype)
    return float(torch.nextafter(t, torch.zeros_like(t)))


def _alphas(features: Tensor, coeffs: Tensor, need_clamped: bool = False) -> tuple[Tensor, Tensor | None]:
    """Alphas ``[T, P, L]`` (0 below 1/255, at most 0.999), and optionally where they were clamped."""
    neg_s = torch.matmul(features, coeffs.neg().transpose(-1, -2))  # -s, [T, P, L]
    clamped = neg_s > -_S_CLAMP if need_clamped else None
    # exp() is slow for inputs far below -87 (underflow and denormals): stop at -80 and
    # zero everything below 1/255 afterwards.
    alpha = neg_s.clamp_(-80.0, -_S_CLAMP).exp_()
    return torch.nn.functional.threshold(alpha, _below_threshold(alpha.dtype), 0.0, inplace=True), clamped


def _weights(features: Tensor, coeffs: Tensor, trans_in: Tensor, need_clamped: bool = False):
    """Blend weights of one depth segment of each tile's list.

    Args:
        features: ``[P, 6]``; coeffs: ``[T, S, 6]`` (segment of each tile's list, nearest first);
        trans_in: ``[T, P]`` transmittance entering the segment (0 for pixels already stopped).

    Returns ``(weights, alpha, one_minus, trans_after, clamped)``, all ``[T, P, S]``:
    ``trans_after`` is the transmittance after each Gaussian, set to 0 from the Gaussian
    at which the pixel stops on. A pixel stops before the Gaussian that would take its
    transmittance to <= 1e-4 (exclusive); the transmittance only falls, so the kept
    Gaussians form a prefix. Weights are w_i = T_i alpha_i = T_{i+1} alpha_i / (1 - alpha_i).
    """
    alpha, clamped = _alphas(features, coeffs, need_clamped)
    one_minus = 1.0 - alpha
    trans_after = torch.cumprod(one_minus, dim=-1).mul_(trans_in[..., None])
    torch.nn.functional.threshold(trans_after, TRANSMITTANCE_MIN, 0.0, inplace=True)
    weights = alpha / one_minus
    weights.mul_(trans_after)
    return weights, alpha, one_minus, trans_after, clamped


def _segment_slots(offsets: Tensor, counts: Tensor, tiles: Tensor, start: int, segment: int):
    """Pair indices ``[T, S]`` of slots ``start .. start+S-1`` of ``tiles``' lists, and the padding mask."""
    slot = torch.arange(start, start + segment, device=offsets.device)
    pad = slot >= counts[tiles, None]
    idx = (offsets[tiles, None] + slot).masked_fill_(pad, 0)
    return idx, pad


class _CompositeTiles(torch.autograd.Function):
    """Front-to-back compositing of depth-sorted per-tile Gaussian lists, with early stop.

    forward(features [P, 6], pair_coeffs [M, 6], pair_colors [M, D], offsets [A], counts [A],
    segment, max_elements) -> (colors [A, P, D], alphas [A, P]) for the A tiles whose lists
    are ``pair_*[offsets[a] : offsets[a] + counts[a]]``; background not included.

    Lists are walked in segments of ``segment`` Gaussians for all tiles at once (at most
    ``max_elements`` pixel-Gaussian pairs per step); a tile leaves once its list ends or all
    its pixels stopped, so work follows what is visible. The backward pass recomputes each
    segment's weights (nothing of size pixels x Gaussians is kept) and walks the segments
    in reverse with the closed form of the compositing gradient: with
    v_i = dL/dcolor . c_i + dL/dalpha and R_i the sum of w_j v_j over the kept Gaussians
    behind i, dL/dalpha_i = T_i v_i - R_i / (1 - alpha_i).
    """

    @staticmethod
    def forward(ctx, features, pair_coeffs, pair_colors, offsets, counts, segment, max_elements):
        A, P, D = counts.numel(), features.shape[0], pair_colors.shape[-1]
        colors = pair_colors.new_zeros(A, P, D)
        alphas = pair_colors.new_zeros(A, P)
        trans = pair_colors.new_ones(A, P)
        pad_row = pair_coeffs.new_tensor([0, 0, 0, 0, 0, _S_PAD])
        steps = []  # (tiles, start, trans_in) for the backward pass
        alive, start = torch.arange(A, device=counts.device), 0
        tiles_per_step = max(1, max_elements // (P * segment))
        while alive.numel() > 0:
            for tiles in alive.split(tiles_per_step):
                idx, pad = _segment_slots(offsets, counts, tiles, start, segment)
                coeffs = torch.where(pad[..., None], pad_row, pair_coeffs[idx])
                trans_in = trans[tiles]
                weights, _, _, trans_after, _ = _weights(features, coeffs, trans_in)
                colors.index_add_(0, tiles, torch.bmm(weights, pair_colors[idx]))
                alphas.index_add_(0, tiles, weights.sum(-1))
                trans[tiles] = trans_after[..., -1]
                steps.append((tiles, start, trans_in))
            start += segment
            alive = alive[(counts[alive] > start) & (trans[alive] > 0).any(-1)]
        ctx.steps = steps
        ctx.segment = segment
        ctx.save_for_backward(features, pair_coeffs, pair_colors, offsets, counts)
        return colors, alphas

    @staticmethod
    def backward(ctx, grad_colors_out, grad_alphas_out):
        features, pair_coeffs, pair_colors, offsets, counts = ctx.saved_tensors
        grad_coeffs = torch.zeros_like(pair_coeffs)
        grad_colors = torch.zeros_like(pair_colors)
        behind_carry = grad_alphas_out.new_zeros(grad_alphas_out.shape)  # sum of w v over later segments
        pad_row = pair_coeffs.new_tensor([0, 0, 0, 0, 0, _S_PAD])
        for tiles, start, trans_in in reversed(ctx.steps):
            idx, pad = _segment_slots(offsets, counts, tiles, start, ctx.segment)
            coeffs = torch.where(pad[..., None], pad_row, pair_coeffs[idx])
            cols = pair_colors[idx]
            weights, alpha, one_minus, trans_after, clamped = _weights(features, coeffs, trans_in, True)
            g_col = grad_colors_out[tiles]
            v = torch.bmm(g_col, cols.transpose(-1, -2)).add_(grad_alphas_out[tiles, :, None])  # [T, P, S]
            grad_cols = torch.bmm(weights.transpose(-1, -2), g_col)  # [T, S, D]
            wv = weights.mul_(v)
            wv_sum = wv.sum(-1)
            behind = torch.cumsum(wv, dim=-1).neg_().add_((wv_sum + behind_carry[tiles])[..., None])
            trans_before = trans_after.div_(one_minus)  # T_i where kept, else 0
            grad_alpha = trans_before.mul_(v).sub_(behind.div_(one_minus))
            grad_s = grad_alpha.mul_(alpha).neg_().masked_fill_(clamped, 0.0)  # d alpha / d s = -alpha
            keep = ~pad
            grad_coeffs[idx[keep]] = torch.matmul(grad_s.transpose(-1, -2), features)[keep]
            grad_colors[idx[keep]] = grad_cols[keep]
            behind_carry.index_add_(0, tiles, wv_sum)
        return None, grad_coeffs, grad_colors, None, None, None, None


def _tile_lists(means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tiles_x: int, tiles_y: int):
    """Depth-sorted Gaussian lists per tile.

    Returns ``(flat_ids, tile_counts, tile_offsets)``: ``flat_ids`` indexes ``[C*N]`` and
    is ordered by (camera, tile, depth); tile ``t`` of camera ``c`` owns
    ``flat_ids[offsets[k]:offsets[k] + counts[k]]`` with ``k = c * tiles_y * tiles_x + t``.
    """
    C, N = depths.shape
    device = means2d.device
    n_tiles = tiles_x * tiles_y
    if cpu_kernels.available() and device.type == "cpu" and means2d.dtype in (torch.float32, torch.float64):
        return cpu_kernels.tile_lists(means2d, radii, depths, tile_size, tiles_x, tiles_y)  # the same, compiled
    visible = (radii > 0).all(-1).reshape(-1)
    flat = visible.nonzero().squeeze(-1)
    flat = flat[torch.argsort(depths.reshape(-1)[flat], stable=True)]
    m = means2d.detach().reshape(-1, 2)[flat]
    r = radii.reshape(-1, 2)[flat].to(m.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile_size).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile_size).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile_size).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile_size).clamp(0, tiles_y).long()
    if cpu_kernels.available() and device.type == "cpu":  # the same lists, binned by a compiled loop
        cam = torch.div(flat, N, rounding_mode="floor")
        return cpu_kernels.bin_tiles(flat, cam, x0, x1, y0, y1, tiles_x, n_tiles, C * n_tiles)
    span_x = x1 - x0
    counts = span_x * (y1 - y0)
    owner = torch.repeat_interleave(torch.arange(flat.numel(), device=device), counts)
    local = torch.arange(owner.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[owner]
    tx = x0[owner] + local % span_x[owner]
    ty = y0[owner] + torch.div(local, span_x[owner], rounding_mode="floor")
    tile = torch.div(flat[owner], N, rounding_mode="floor") * n_tiles + ty * tiles_x + tx
    tile, order = torch.sort(tile, stable=True)  # stable: keeps depth order within a tile
    flat_ids = flat[owner[order]]
    tile_counts = torch.bincount(tile, minlength=C * n_tiles)
    tile_offsets = torch.cumsum(tile_counts, 0) - tile_counts
    return flat_ids, tile_counts, tile_offsets


def compiled_forward(device: torch.device, *tensors: Tensor) -> bool:
    """Whether a render can take the compiled forward-only compositor (:mod:`.cpu_kernels`).

    Yes on a CPU when no gradient is wanted from it (under ``torch.no_grad()`` or inputs
    without ``requires_grad``) and numba is there; the result is the same up to float rounding.
    """
    if device.type != "cpu" or not cpu_kernels.available():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def rasterize_to_pixels(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    colors: Tensor,  # [C, N, D]
    opacities: Tensor,  # [C, N]
    radii: Tensor,  # [C, N, 2]
    depths: Tensor,  # [C, N]
    width: int,
    height: int,
    tile_size: int = DEFAULT_TILE_SIZE,
    backgrounds: Tensor | None = None,  # [C, D]
    segment: int = 32,
    max_chunk_elements: int = 1 << 19,
) -> tuple[Tensor, Tensor]:
    """Alpha-composite projected Gaussians into ``[C, H, W, D]`` colours and ``[C, H, W, 1]`` alphas.

    Each tile's depth-sorted list is walked ``segment`` Gaussians at a time, and a tile stops
    once all its pixels are saturated. ``max_chunk_elements`` bounds the (pixel, Gaussian)
    pairs evaluated at once, and with it the working memory of the forward and backward
    passes (about 8 floats per pair). Forward-only renders on a CPU take the compiled
    compositor of :mod:`.cpu_kernels` when numba is installed (same rules, much faster).
    """
    C, N, D = colors.shape
    device, dtype = means2d.device, means2d.dtype
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles = tiles_x * tiles_y
    P = tile_size * tile_size
    if backgrounds is None:
        backgrounds = torch.zeros(C, D, device=device, dtype=dtype)

    flat_ids, tile_counts, tile_offsets = _tile_lists(means2d, radii, depths, tile_size, tiles_x, tiles_y)
    if compiled_forward(device, means2d, conics, colors, opacities, backgrounds):
        return cpu_kernels.composite_tiles(
            flat_ids, tile_offsets, tile_counts, means2d, conics, colors, opacities, backgrounds,
            width, height, tile_size, tiles_x, ALPHA_THRESHOLD, ALPHA_MAX, TRANSMITTANCE_MIN,
        )
    active = tile_counts.nonzero().squeeze(-1)  # [A] tiles with a non-empty list

    # Per (tile, Gaussian) pair: the exponent's coefficients in the tile's frame, and the colour.
    pair_tile = torch.repeat_interleave(torch.arange(C * n_tiles, device=device), tile_counts)
    local = pair_tile % n_tiles
    centres = torch.stack((local % tiles_x, torch.div(local, tiles_x, rounding_mode="floor")), -1)
    centres = (centres.to(dtype) + 0.5) * tile_size  # [M, 2]
    pair_coeffs = exponent_coefficients(
        means2d.reshape(-1, 2)[flat_ids], conics.reshape(-1, 3)[flat_ids], opacities.reshape(-1)[flat_ids], centres
    )
    pair_colors = colors.reshape(-1, D)[flat_ids]
    rgb, alpha = _CompositeTiles.apply(
        pixel_features(tile_size, device, dtype), pair_coeffs, pair_colors,
        tile_offsets[active], tile_counts[active], segment, max_chunk_elements,
    )

    bg = backgrounds.repeat_interleave(n_tiles, dim=0)  # [C*n_tiles, D]
    img = bg[:, None, :].expand(C * n_tiles, P, D)
    acc = torch.zeros(C * n_tiles, P, device=device, dtype=dtype)
    if active.numel() > 0:
        rgb = rgb + (1.0 - alpha)[..., None] * bg[active][:, None, :]
        img = img.index_copy(0, active, rgb)
        acc = acc.index_copy(0, active, alpha)

    def untile(x: Tensor) -> Tensor:
        k = x.shape[-1]
        x = x.reshape(C, tiles_y, tiles_x, tile_size, tile_size, k).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(C, tiles_y * tile_size, tiles_x * tile_size, k)[:, :height, :width]

    return untile(img), untile(acc[..., None])

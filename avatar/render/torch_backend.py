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

import math

import torch
from torch import Tensor

from ..geometry.rotations import quaternion_to_matrix

ALPHA_THRESHOLD = 1.0 / 255.0  # alphas below this are skipped
ALPHA_MAX = 0.999  # alphas are clamped here (gsplat's kernels)
TRANSMITTANCE_MIN = 1e-4  # a pixel stops before its transmittance falls to this
EXTEND_MAX = 3.33  # box half-size in standard deviations, before the opacity-aware bound


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
) -> dict[str, Tensor]:
    """Project Gaussians into each camera (pinhole, OpenCV convention).

    Returns a dict of ``[C, N, ...]`` tensors: ``means2d [C,N,2]`` (pixels),
    ``conics [C,N,3]`` (inverse 2D covariance as a, b, c), ``depths [C,N]`` (camera z,
    metres), ``radii [C,N,2]`` int32 box half-sizes in pixels (0 where culled),
    ``opacities [C,N]`` (times the antialiasing compensation when ``antialiased``) and
    ``compensations [C,N]``. Culled entries hold finite placeholder values.
    """
    rot = viewmats[:, :3, :3]  # [C, 3, 3]
    trans = viewmats[:, :3, 3]  # [C, 3]
    p_cam = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]  # [C, N, 3]
    cov_cam = rot[:, None] @ covariances(quats, scales)[None] @ rot[:, None].transpose(-1, -2)  # [C,N,3,3]

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
# alpha = exp(-s) >= 1/255  <=>  s <= ln(255);  alpha <= 0.999  <=>  s >= -ln(0.999).
_S_SKIP = math.log(1.0 / ALPHA_THRESHOLD)
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


def _alphas(features: Tensor, coeffs: Tensor) -> tuple[Tensor, Tensor]:
    """Alphas ``[T, P, L]`` (0 where skipped, at most 0.999) and the mask where they were clamped."""
    neg_s = torch.matmul(features, coeffs.neg().transpose(-1, -2))  # -s, [T, P, L]
    # Skipped pairs get exp(-1000) = 0 exactly; clamping before exp also avoids denormals.
    torch.nn.functional.threshold(neg_s, -_S_SKIP, -1000.0, inplace=True)
    clamped = neg_s > -_S_CLAMP
    return neg_s.clamp_(max=-_S_CLAMP).exp_(), clamped


def _blend(alpha: Tensor) -> tuple[Tensor, Tensor]:
    """``(1 - alpha, kept transmittance T_i(1 - alpha_i))``; the latter is 0 once a pixel stopped.

    A pixel stops before the Gaussian that would take its transmittance to <= 1e-4
    (exclusive); the transmittance only falls, so the kept Gaussians form a prefix.
    """
    one_minus = 1.0 - alpha
    trans_after = torch.cumprod(one_minus, dim=-1)
    return one_minus, torch.nn.functional.threshold(trans_after, TRANSMITTANCE_MIN, 0.0, inplace=True)


class _CompositeTiles(torch.autograd.Function):
    """Front-to-back compositing of padded, depth-sorted per-tile Gaussian lists.

    forward(features [P, 6], coeffs [T, L, 6], colors [T, L, D]) -> (colors [T, P, D],
    alphas [T, P]), background not included. Blend weights are
    w_i = T_i alpha_i = T_{i+1} alpha_i / (1 - alpha_i). The backward pass recomputes them
    (nothing of size T x P x L is kept between passes) and uses the closed form of the
    compositing gradient: with v_i = dL/dcolor . c_i + dL/dalpha and R_i the sum of
    w_j v_j over the kept Gaussians behind i, dL/dalpha_i = T_i v_i - R_i / (1 - alpha_i).
    """

    @staticmethod
    def forward(ctx, features, coeffs, colors):
        alpha, _ = _alphas(features, coeffs)
        one_minus, trans_after = _blend(alpha)
        weights = alpha.div_(one_minus).mul_(trans_after)
        ctx.save_for_backward(features, coeffs, colors)
        return torch.bmm(weights, colors), weights.sum(-1)

    @staticmethod
    def backward(ctx, grad_colors_out, grad_alphas_out):
        features, coeffs, colors = ctx.saved_tensors
        alpha, clamped = _alphas(features, coeffs)
        one_minus, trans_after = _blend(alpha)
        trans = trans_after.div_(one_minus)  # T_i where kept, else 0
        weights = trans * alpha
        grad_colors = torch.bmm(weights.transpose(-1, -2), grad_colors_out)
        v = torch.bmm(grad_colors_out, colors.transpose(-1, -2)).add_(grad_alphas_out[..., None])  # [T,P,L]
        wv = weights.mul_(v)
        behind = torch.cumsum(wv, dim=-1).neg_().add_(wv.sum(-1, keepdim=True))
        grad_alpha = trans.mul_(v).sub_(behind.div_(one_minus))
        grad_s = grad_alpha.mul_(alpha).neg_().masked_fill_(clamped, 0.0)  # d alpha / d s = -alpha
        grad_coeffs = torch.matmul(grad_s.transpose(-1, -2), features)
        return None, grad_coeffs, grad_colors


def _tile_lists(means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tiles_x: int, tiles_y: int):
    """Depth-sorted Gaussian lists per tile.

    Returns ``(flat_ids, tile_counts, tile_offsets)``: ``flat_ids`` indexes ``[C*N]`` and
    is ordered by (camera, tile, depth); tile ``t`` of camera ``c`` owns
    ``flat_ids[offsets[k]:offsets[k] + counts[k]]`` with ``k = c * tiles_y * tiles_x + t``.
    """
    C, N = depths.shape
    device = means2d.device
    n_tiles = tiles_x * tiles_y
    visible = (radii > 0).all(-1).reshape(-1)
    flat = visible.nonzero().squeeze(-1)
    flat = flat[torch.argsort(depths.reshape(-1)[flat], stable=True)]
    m = means2d.detach().reshape(-1, 2)[flat]
    r = radii.reshape(-1, 2)[flat].to(m.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile_size).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile_size).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile_size).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile_size).clamp(0, tiles_y).long()
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


def _chunks(counts: list[int], pixels_per_tile: int, max_elements: int):
    """Group tiles (sorted by list length) so that tiles * longest list * pixels <= budget."""
    start = 0
    while start < len(counts):
        end = start + 1
        while end < len(counts) and (end + 1 - start) * counts[end] * pixels_per_tile <= max_elements:
            end += 1
        yield start, end
        start = end


def rasterize_to_pixels(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    colors: Tensor,  # [C, N, D]
    opacities: Tensor,  # [C, N]
    radii: Tensor,  # [C, N, 2]
    depths: Tensor,  # [C, N]
    width: int,
    height: int,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,  # [C, D]
    max_chunk_elements: int = 1 << 21,
) -> tuple[Tensor, Tensor]:
    """Alpha-composite projected Gaussians into ``[C, H, W, D]`` colours and ``[C, H, W, 1]`` alphas.

    ``max_chunk_elements`` bounds the (pixel, Gaussian) pairs evaluated at once, and with
    it the memory of the forward and the backward pass (about 10 floats per pair).
    """
    C, N, D = colors.shape
    device, dtype = means2d.device, means2d.dtype
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles = tiles_x * tiles_y
    P = tile_size * tile_size
    if backgrounds is None:
        backgrounds = torch.zeros(C, D, device=device, dtype=dtype)

    flat_ids, tile_counts, tile_offsets = _tile_lists(means2d, radii, depths, tile_size, tiles_x, tiles_y)
    active = tile_counts.nonzero().squeeze(-1)
    active = active[torch.argsort(tile_counts[active], stable=True)]
    counts_sorted = tile_counts[active].tolist()

    flat_means, flat_conics = means2d.reshape(-1, 2), conics.reshape(-1, 3)
    flat_colors, flat_opac = colors.reshape(-1, D), opacities.reshape(-1)
    features = pixel_features(tile_size, device, dtype)

    out_colors, out_alphas = [], []
    for start, end in _chunks(counts_sorted, P, max_chunk_elements):
        tiles = active[start:end]
        length = counts_sorted[end - 1]
        slot = torch.arange(length, device=device)
        pad = slot >= tile_counts[tiles, None]
        g = flat_ids[(tile_offsets[tiles, None] + slot).clamp_max(flat_ids.numel() - 1)]  # [T, L]
        local = tiles % n_tiles
        centres = torch.stack((local % tiles_x, torch.div(local, tiles_x, rounding_mode="floor")), -1)
        centres = (centres.to(dtype) + 0.5) * tile_size  # [T, 2]
        coeffs = exponent_coefficients(flat_means[g], flat_conics[g], flat_opac[g], centres[:, None, :])
        coeffs = torch.where(pad[..., None], coeffs.new_tensor([0, 0, 0, 0, 0, _S_PAD]), coeffs)
        rgb, alpha = _CompositeTiles.apply(features, coeffs, flat_colors[g])
        out_colors.append(rgb)
        out_alphas.append(alpha)

    bg = backgrounds.repeat_interleave(n_tiles, dim=0)  # [C*n_tiles, D]
    img = bg[:, None, :].expand(C * n_tiles, P, D)
    acc = torch.zeros(C * n_tiles, P, device=device, dtype=dtype)
    if out_colors:
        rgb = torch.cat(out_colors)
        alpha = torch.cat(out_alphas)
        rgb = rgb + (1.0 - alpha)[..., None] * bg[active][:, None, :]
        img = img.index_copy(0, active, rgb)
        acc = acc.index_copy(0, active, alpha)

    def untile(x: Tensor) -> Tensor:
        k = x.shape[-1]
        x = x.reshape(C, tiles_y, tiles_x, tile_size, tile_size, k).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(C, tiles_y * tile_size, tiles_x * tile_size, k)[:, :height, :width]

    return untile(img), untile(acc[..., None])

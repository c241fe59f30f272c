"""Compiled CPU compositing for renders that need no gradient (live, ``avatar render``, previews).

The torch backend composites a tile's whole depth segment with a few large tensor ops
and writes its backward pass out; that is what training needs, but for a forward-only
render on a CPU most of the time goes into padding, indexing and per-op overhead. Here the
same front-to-back rules run as one compiled loop per tile (numba, parallel over tiles):
per pixel, walk the tile's depth-sorted list, skip alphas below 1/255, clamp at 0.999 and
stop before the transmittance would reach 1e-4 -- gsplat's ``rasterize_to_pixels_fwd``
rules, the same as :func:`avatar.render.torch_backend.rasterize_to_pixels`, so results
agree to float rounding (tested).

numba is an optional dependency: without it (or with ``AVATAR_NO_NUMBA=1``) the torch
path is used. The first call compiles the kernel (a few seconds; cached on disk when the
package folder is writable).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

_LOCK = threading.Lock()  # numba's default threading layer does not take concurrent launches


@functools.lru_cache(maxsize=None)
def _kernel():
    """The compiled kernel, or None when numba is missing or disabled."""
    if os.environ.get("AVATAR_NO_NUMBA", "") not in ("", "0"):
        return None
    try:
        import numba  # noqa: PLC0415
    except ImportError:
        log.info("numba is not installed: forward-only CPU renders use the torch compositor (slower)")
        return None

    @numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
    def composite(pairs, offsets, counts, tiles, u, v, consts, backgrounds, tile_size, tiles_x, width, height,
                  out, out_alpha):
        # pairs [M, 6 + D]: per (tile, Gaussian) pair in (tile, depth) order, the mean relative to
        # the tile's corner, conic a, b, c, opacity and colour; u, v [P]: the tile's pixel centres.
        # Gaussians outer, the tile's pixels inner. Generic in the float type (float32 or 64).
        alpha_min, alpha_max, trans_min = consts[0], consts[1], consts[2]
        half, zero, one, s_margin = consts[3], consts[4], consts[5], consts[6]
        n_tiles_cam = tiles_x * ((height + tile_size - 1) // tile_size)
        D = pairs.shape[1] - 6
        P = u.shape[0]
        for j in numba.prange(tiles.shape[0]):
            k = tiles[j]
            cam = k // n_tiles_cam
            t = k - cam * n_tiles_cam
            ty = t // tiles_x
            tx = t - ty * tiles_x
            trans = np.ones_like(u)
            live = np.ones(P, np.bool_)
            acc = np.zeros((D, P), dtype=u.dtype)
            w = np.zeros_like(u)
            for i in range(offsets[k], offsets[k] + counts[k]):
                mx, my = pairs[i, 0], pairs[i, 1]
                ca, cb, cc, op = pairs[i, 2], pairs[i, 3], pairs[i, 4], pairs[i, 5]
                s_max = np.log(op / alpha_min) + s_margin  # beyond this sigma, alpha < 1/255
                n_live = 0
                for p in range(P):
                    dx = mx - u[p]
                    dy = my - v[p]
                    sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    alpha = zero
                    if sigma >= zero and sigma <= s_max:  # else alpha < 1/255: exp() skipped
                        alpha = min(alpha_max, op * np.exp(-sigma))
                        if alpha < alpha_min:
                            alpha = zero
                    nt = trans[p] * (one - alpha)
                    ok = live[p] and nt > trans_min
                    w[p] = alpha * trans[p] if ok else zero
                    trans[p] = nt if ok else trans[p]
                    live[p] = ok
                    n_live += ok
                for d in range(D):
                    c = pairs[i, 6 + d]
                    for p in range(P):
                        acc[d, p] += w[p] * c
                if n_live == 0:
                    break
            for p in range(P):
                py = ty * tile_size + p // tile_size
                px = tx * tile_size + p % tile_size
                if py < height and px < width:
                    for d in range(D):
                        out[cam, py, px, d] = acc[d, p] + trans[p] * backgrounds[cam, d]
                    out_alpha[cam, py, px] = one - trans[p]

    return composite


def available() -> bool:
    """Whether the compiled compositor can be used (numba importable and not disabled)."""
    return _kernel() is not None


def composite_tiles(
    flat_ids: Tensor, tile_offsets: Tensor, tile_counts: Tensor,
    means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, backgrounds: Tensor,
    width: int, height: int, tile_size: int, tiles_x: int, alpha_min: float, alpha_max: float, trans_min: float,
) -> tuple[Tensor, Tensor]:
    """Composite the per-tile lists of :func:`torch_backend._tile_lists` (CPU tensors, no autograd).

    ``means2d [C, N, 2]``, ``conics [C, N, 3]``, ``colors [C, N, D]``, ``opacities [C, N]``,
    ``backgrounds [C, D]``. Returns ``(colors [C, H, W, D], alphas [C, H, W, 1])``.
    """
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("the compiled compositor needs numba: pip install numba")
    import numba  # noqa: PLC0415

    C, N, D = colors.shape
    n_tiles_cam = tiles_x * math.ceil(height / tile_size)
    dtype = torch.float64 if colors.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        per_gaussian = torch.cat((means2d, conics, opacities[..., None], colors), -1).reshape(C * N, 6 + D)
        pairs = per_gaussian.to(dtype)[flat_ids]
        # Means relative to the corner of the pair's tile, so the kernel needs no int -> float mixing.
        pair_tile = torch.repeat_interleave(torch.arange(tile_counts.numel()), tile_counts) % n_tiles_cam
        corner = torch.stack((pair_tile % tiles_x, torch.div(pair_tile, tiles_x, rounding_mode="floor")), -1)
        pairs[:, :2] -= corner.to(dtype) * tile_size
        pairs = pairs.contiguous().numpy()
        bg = backgrounds.to(dtype).contiguous().numpy()
        centre = torch.arange(tile_size * tile_size, dtype=dtype)
        u = (centre % tile_size + 0.5).numpy()
        v = (torch.div(centre, tile_size, rounding_mode="floor") + 0.5).numpy()
    consts = np.array([alpha_min, alpha_max, trans_min, 0.5, 0.0, 1.0, 1e-3], dtype=u.dtype)
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    active = tile_counts.nonzero().squeeze(-1)
    # prange hands each thread one contiguous block of tiles, and the busy tiles cluster in
    # the image's middle: deal the tiles out round-robin instead, so the blocks cost alike.
    deal = torch.arange(active.numel())
    active = active[torch.argsort(deal % threads * active.numel() + deal)].contiguous().numpy()
    out = np.empty((C, height, width, D), dtype=u.dtype)
    out_alpha = np.empty((C, height, width), dtype=u.dtype)
    # Tiles without a list get the background (the kernel only visits tiles with one).
    out[...] = bg[:, None, None, :]
    out_alpha[...] = 0.0
    with _LOCK:
        numba.set_num_threads(threads)
        kernel(
            pairs, tile_offsets.contiguous().numpy(), tile_counts.contiguous().numpy(), active, u, v, consts, bg,
            tile_size, tiles_x, width, height, out, out_alpha,
        )
    return torch.from_numpy(out).to(colors.dtype), torch.from_numpy(out_alpha)[..., None].to(colors.dtype)

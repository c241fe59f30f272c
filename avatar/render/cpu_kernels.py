"""Compiled CPU kernels for renders that need no gradient (live, ``avatar render``, previews).

The torch backend composites a tile's whole depth segment with a few large tensor ops
and writes its backward pass out; that is what training needs, but for a forward-only
render on a CPU most of the time goes into padding, indexing and per-op overhead. Here the
same front-to-back rules run as one compiled loop per tile (numba, parallel over tiles):
the tile's depth-sorted Gaussians one after the other, each against the tile's pixels that
are still open and lie in the box around its cut-off ellipse (the others would take alpha 0);
alphas below 1/255 skipped, clamped at 0.999, a pixel closed before its transmittance would
reach 1e-4 -- gsplat's ``rasterize_to_pixels_fwd`` rules, the same
as :func:`avatar.render.torch_backend.rasterize_to_pixels`, so results agree to float
rounding (tested). Colour renders in float32 take each row of a Gaussian's box as one SIMD
loop over the tile's width, with exp() as a polynomial (within 3e-7 of the pixel-by-pixel
loop's images; tested). A second kernel bins Gaussians into per-tile lists by a counting sort
(the same lists as the torch code's sort; used for training too).

The project depends on numba, but the code runs without it (or with ``AVATAR_NO_NUMBA=1``):
then the torch code is used. The first call compiles the kernels (a few seconds; cached
on disk when the package folder is writable).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

# exp(-u)'s Taylor coefficients 1/2!, ..., 1/7! (the compositor's SIMD loop, see composite()).
_EXP_TAYLOR = tuple(1 / math.factorial(n) for n in range(2, 8))

_LOCK = threading.Lock()  # numba's default threading layer does not take concurrent launches


@contextlib.contextmanager
def _launch(threads: int):
    """Around a parallel kernel: numba set to ``threads``, one launch at a time, and torch's
    thread count as it was. numba's OpenMP layer shares torch's OpenMP runtime, and its first
    launch sets the calling thread's OpenMP count to ``NUMBA_NUM_THREADS`` (all cores), which
    torch then takes for its own: a process told one thread (``OMP_NUM_THREADS=1``,
    ``torch.set_num_threads(1)``) ran two from its first compiled render on, and two such
    trainings side by side on 2 cores spun on each other's barriers, several times slower."""
    import numba  # noqa: PLC0415

    torch_threads = torch.get_num_threads()
    with _LOCK:
        numba.set_num_threads(threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)


@functools.lru_cache(maxsize=None)
def _kernels():
    """The compiled kernels ``(composite, bin_tiles)``, or None when numba is missing or disabled."""
    if os.environ.get("AVATAR_NO_NUMBA", "") not in ("", "0"):
        return None
    try:
        import numba  # noqa: PLC0415
    except ImportError:
        log.info("numba is not installed: forward-only CPU renders use the torch compositor (slower)")
        return None

    # Fast-math without "no NaN / no inf": a zero opacity gives log(0) = -inf below.
    fast = {"nsz", "arcp", "contract", "afn", "reassoc"}

    @numba.njit(parallel=True, cache=True, nogil=True, fastmath=fast)
    def composite(gaussians, ids, offsets, counts, tiles, corners, consts, backgrounds, tile_size, tiles_x,
                  width, height, vector, out, out_alpha):
        # gaussians [C*N, 9 + D]: mean x, y, conic a, b, c, opacity, the cut-off s_max (beyond
        # sigma = s_max alpha < 1/255; not > 0: the Gaussian reaches no pixel), the half-widths of
        # the box round the ellipse sigma <= s_max, colour. ids: the tiles' lists in (tile,
        # depth) order; corners [tiles, 2]: each tile's top-left corner. Gaussians outer, the
        # rows of their box inner; a pixel's colour is accumulated where it takes its alpha.
        # Generic in the float type (float32 or 64).
        #
        # vector (three channels only): each row's tile_size pixels side by side as one SIMD loop,
        # every test a select instead of a branch (the pixels outside the box's columns or the
        # cut-off, under alpha_min or already closed take weight 0 and keep their transmittance),
        # and exp() inline: numba's LLVM has no vector exp (no SVML) and one libm call per pixel
        # keeps the loop scalar. exp(-sigma) for sigma in [0, s_max], s_max <= log(255) + 1e-3 <
        # 5.6 (masked lanes clamped): exp(-u)^16, u = sigma / 16 <= 0.35, from its Taylor series
        # to u^7 (truncation 5e-9, relative), squared four times (float32 rounding: a few 1e-6).
        # Otherwise each pixel of the box in turn, with libm's exp.
        alpha_min, alpha_max, trans_min = consts[0], consts[1], consts[2]
        half, zero, one = consts[3], consts[4], consts[5]
        sixteenth = consts[6]
        q2, q3, q4, q5, q6, q7 = consts[7], consts[8], consts[9], consts[10], consts[11], consts[12]
        n_tiles_cam = tiles_x * ((height + tile_size - 1) // tile_size)
        D = gaussians.shape[1] - 9
        simd = vector and D == 3
        P = tile_size * tile_size
        last = tile_size - 1
        lanes = np.uint64(tile_size)  # unsigned: no wrap-around of negative indices, so LLVM vectorises
        for j in numba.prange(tiles.shape[0]):
            k = tiles[j]
            cam = k // n_tiles_cam
            t = k - cam * n_tiles_cam
            ty = t // tiles_x
            tx = t - ty * tiles_x
            # Transmittance per pixel; a closed pixel (it would fall to trans_min) keeps it negated.
            trans = np.ones(P, dtype=gaussians.dtype)
            acc = np.zeros(D * P, dtype=gaussians.dtype)  # channel-major: channel d of pixel p at d * P + p
            n_live = P
            for i in range(offsets[k], offsets[k] + counts[k]):
                g = ids[i]
                s_max = gaussians[g, 6]
                if not s_max > zero:
                    continue
                mx, my = gaussians[g, 0] - corners[t, 0], gaussians[g, 1] - corners[t, 1]
                c0 = max(0, int(np.ceil(mx - gaussians[g, 7] - half)))
                c1 = min(last, int(np.floor(mx + gaussians[g, 7] - half)))
                r0 = max(0, int(np.ceil(my - gaussians[g, 8] - half)))
                r1 = min(last, int(np.floor(my + gaussians[g, 8] - half)))
                if c0 > c1 or r0 > r1:
                    continue
                ca, cb, cc, op = gaussians[g, 2], gaussians[g, 3], gaussians[g, 4], gaussians[g, 5]
                col0 = gaussians[g, 9]
                col1 = gaussians[g, 10] if D > 1 else zero
                col2 = gaussians[g, 11] if D > 2 else zero
                for row in range(r0, r1 + 1):
                    dy = my - (row + half)
                    row_c = half * cc * dy * dy  # sigma = d^T M d / 2, M = [[a, b], [b, c]]
                    row_b = cb * dy
                    first = row * tile_size
                    if simd:
                        tr = trans[first:first + tile_size]
                        rr = acc[first:first + tile_size]
                        gg = acc[P + first:P + first + tile_size]
                        bb = acc[2 * P + first:2 * P + first + tile_size]
                        closed = 0
                        for lane in range(lanes):
                            col = np.int64(lane)
                            T = tr[lane]
                            dx = mx - (col + half)
                            sigma = half * ca * dx * dx + row_b * dx + row_c
                            u = min(max(sigma, zero), s_max) * sixteenth
                            e = one - u * (one - u * (q2 - u * (q3 - u * (q4 - u * (q5 - u * (q6 - u * q7))))))
                            e = e * e
                            e = e * e
                            e = e * e
                            e = e * e
                            alpha = min(alpha_max, op * e)
                            hit = (col >= c0) & (col <= c1) & (sigma >= zero) & (sigma <= s_max) & (alpha >= alpha_min)
                            hit = hit & (T > zero)
                            nt = T * (one - alpha)
                            open_ = nt > trans_min
                            take = hit & open_
                            w = alpha * T if take else zero
                            rr[lane] += w * col0
                            gg[lane] += w * col1
                            bb[lane] += w * col2
                            tr[lane] = nt if take else (-T if hit else T)
                            closed += hit & (not open_)
                        n_live -= closed
                        continue
                    for col in range(c0, c1 + 1):
                        p = first + col
                        T = trans[p]
                        if not T > zero:  # closed
                            continue
                        dx = mx - (col + half)
                        sigma = half * ca * dx * dx + row_b * dx + row_c
                        if sigma >= zero and sigma <= s_max:  # else alpha < 1/255: exp() skipped
                            alpha = min(alpha_max, op * np.exp(-sigma))
                            if alpha >= alpha_min:
                                nt = T * (one - alpha)
                                if nt > trans_min:
                                    w = alpha * T
                                    if D == 3:
                                        acc[p] += w * col0
                                        acc[P + p] += w * col1
                                        acc[2 * P + p] += w * col2
                                    else:
                                        for d in range(D):
                                            acc[d * P + p] += w * gaussians[g, 9 + d]
                                    trans[p] = nt
                                else:  # the pixel is done: it takes nothing more, this one included
                                    trans[p] = -T
                                    n_live -= 1
                if n_live == 0:
                    break
            for p in range(P):
                py = ty * tile_size + p // tile_size
                px = tx * tile_size + p % tile_size
                if py < height and px < width:
                    T = abs(trans[p])
                    for d in range(D):
                        out[cam, py, px, d] = acc[d * P + p] + T * backgrounds[cam, d]
                    out_alpha[cam, py, px] = one - T

    @numba.njit(cache=True, nogil=True)
    def bin_tiles(flat, cam, x0, x1, y0, y1, tiles_x, n_tiles, total_tiles):
        # Counting sort of (tile, Gaussian) pairs by tile; Gaussians arrive depth-sorted, so
        # each tile's list comes out depth-sorted too.
        counts = np.zeros(total_tiles, np.int64)
        for i in range(flat.shape[0]):
            base = cam[i] * n_tiles
            for ty in range(y0[i], y1[i]):
                for tx in range(x0[i], x1[i]):
                    counts[base + ty * tiles_x + tx] += 1
        offsets = np.empty(total_tiles, np.int64)
        total = 0
        for k in range(total_tiles):
            offsets[k] = total
            total += counts[k]
        ids = np.empty(total, np.int64)
        fill = offsets.copy()
        for i in range(flat.shape[0]):
            base = cam[i] * n_tiles
            for ty in range(y0[i], y1[i]):
                for tx in range(x0[i], x1[i]):
                    k = base + ty * tiles_x + tx
                    ids[fill[k]] = flat[i]
                    fill[k] += 1
        return ids, counts, offsets

    return composite, bin_tiles


def available() -> bool:
    """Whether the compiled compositor can be used (numba importable and not disabled)."""
    return _kernels() is not None


@functools.lru_cache(maxsize=16)
def _tile_corners(tile_size: int, tiles_x: int, n_tiles: int, dtype: np.dtype) -> np.ndarray:
    """Each tile's top-left corner ``[n_tiles, 2]`` in pixels (read-only)."""
    tile = np.arange(n_tiles)
    corners = np.stack((tile % tiles_x, tile // tiles_x), -1).astype(dtype) * tile_size
    corners.setflags(write=False)
    return corners


def _require():
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("the compiled CPU kernels need numba (pip install numba) and AVATAR_NO_NUMBA unset")
    return kernels


def _compiled(factory):
    """The kernel ``factory()`` compiles (one of the lru-cached ``_*_kernel``), or a clear error
    when numba is missing or disabled (callers check :func:`available` first)."""
    _require()
    return factory()


def bin_tiles(flat: Tensor, cam: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor,
              tiles_x: int, n_tiles: int, total_tiles: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-tile lists ``(flat_ids, tile_counts, tile_offsets)`` of depth-sorted Gaussians ``flat``
    (camera ``cam``) covering tiles ``[x0, x1) x [y0, y1)``, as :func:`torch_backend._tile_lists`."""
    kernel = _require()[1]
    as_np = lambda t: t.to(torch.int64).contiguous().numpy()  # noqa: E731
    ids, counts, offsets = kernel(as_np(flat), as_np(cam), as_np(x0), as_np(x1), as_np(y0), as_np(y1),
                                  tiles_x, n_tiles, total_tiles)
    return torch.from_numpy(ids), torch.from_numpy(counts), torch.from_numpy(offsets)


def composite_tiles(
    flat_ids: Tensor, tile_offsets: Tensor, tile_counts: Tensor,
    means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, backgrounds: Tensor,
    width: int, height: int, tile_size: int, tiles_x: int, alpha_min: float, alpha_max: float, trans_min: float,
    vector: bool = True,
) -> tuple[Tensor, Tensor]:
    """Composite the per-tile lists of :func:`torch_backend._tile_lists` (CPU tensors, no autograd).

    ``means2d [C, N, 2]``, ``conics [C, N, 3]``, ``colors [C, N, D]``, ``opacities [C, N]``,
    ``backgrounds [C, D]``. Returns ``(colors [C, H, W, D], alphas [C, H, W, 1])``. ``vector``: three
    float32 channels are composited a tile row at a time in SIMD lanes (exp as a polynomial, within a
    few 1e-6 relative; images within 3e-7 of the other loop's); False: pixel by pixel with libm's
    exp, as float64 and other channel counts always are.
    """
    import numba  # noqa: PLC0415

    C, N, D = colors.shape
    n_tiles_cam = tiles_x * math.ceil(height / tile_size)
    dtype = torch.float64 if colors.dtype == torch.float64 else torch.float32
    # Per Gaussian, once (not per tile): the cut-off sigma beyond which alpha < 1/255, and the
    # half-widths of the box round that ellipse (see _pack_kernel), packed with the rest.
    as_np = lambda t: t.detach().to(dtype).contiguous().numpy()  # noqa: E731
    np_dtype = np.dtype(np.float64 if dtype == torch.float64 else np.float32)
    gaussians = np.empty((C * N, 9 + D), np_dtype)
    _pack_kernel()(as_np(means2d).reshape(C * N, 2), as_np(conics).reshape(C * N, 3), as_np(opacities).reshape(C * N),
                   as_np(colors).reshape(C * N, D), np.array([alpha_min, 1e-3, 2.0, 1.001, 0.0, max(width, height)],
                                                             np_dtype), gaussians)
    with torch.no_grad():
        bg = backgrounds.to(dtype).contiguous().numpy()
    corners = _tile_corners(tile_size, tiles_x, n_tiles_cam, np_dtype)
    consts = np.array((alpha_min, alpha_max, trans_min, 0.5, 0.0, 1.0, 1 / 16) + _EXP_TAYLOR, dtype=np_dtype)
    # Three float32 channels (colour renders: live, avatar render, previews): the SIMD row loop (its
    # exp a polynomial, see the kernel); float64 and other channel counts: pixel by pixel, exact.
    kernel = _require()[0]
    vector = bool(vector and D == 3 and np_dtype == np.float32)
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    active = tile_counts.nonzero().squeeze(-1)
    # prange hands each thread one contiguous block of tiles, and the busy tiles cluster in
    # the image's middle: deal the tiles out round-robin instead, so the blocks cost alike.
    deal = torch.arange(active.numel())
    active = active[torch.argsort(deal % threads * active.numel() + deal)].contiguous().numpy()
    out = np.empty((C, height, width, D), dtype=np_dtype)
    out_alpha = np.empty((C, height, width), dtype=np_dtype)
    # Tiles without a list get the background (the kernel only visits tiles with one).
    out[...] = bg[:, None, None, :]
    out_alpha[...] = 0.0
    with _launch(threads):
        kernel(
            gaussians, flat_ids.contiguous().numpy(), tile_offsets.contiguous().numpy(),
            tile_counts.contiguous().numpy(), active, corners, consts, bg, tile_size, tiles_x, width, height,
            vector, out, out_alpha,
        )
    return torch.from_numpy(out).to(colors.dtype), torch.from_numpy(out_alpha)[..., None].to(colors.dtype)


@functools.lru_cache(maxsize=None)
def _mesh_kernel():
    """The compiled mesh z-buffer, or None when numba is missing or disabled."""
    if _kernels() is None:
        return None
    import numba  # noqa: PLC0415

    # No fast-math: the keys must be bit-identical to the torch code's (same float ops, same order).
    @numba.njit(parallel=True, cache=True, nogil=True)
    def mesh_zbuffer(index, x0, y0, bw, bh, pix_offset, start, gdelta, owns, inv_z, image_first, cx, cy, one,
                     width, keys):
        # Triangles of image b are image_first[b] .. image_first[b + 1] - 1 (setups are sorted by
        # image); images in parallel, each image's triangles one after the other.
        for b in numba.prange(image_first.shape[0] - 1):
            for t in range(image_first[b], image_first[b + 1]):
                ax0, ay0, ax1, ay1 = start[t, 0, 0], start[t, 0, 1], start[t, 1, 0], start[t, 1, 1]
                ax2, ay2 = start[t, 2, 0], start[t, 2, 1]
                gx0, gy0, gx1, gy1 = gdelta[t, 0, 0], gdelta[t, 0, 1], gdelta[t, 1, 0], gdelta[t, 1, 1]
                gx2, gy2 = gdelta[t, 2, 0], gdelta[t, 2, 1]
                w0, w1, w2 = inv_z[t, 0], inv_z[t, 1], inv_z[t, 2]
                for y in range(y0[t], y0[t] + bh[t]):
                    py = cy[y]
                    r0, r1, r2 = gx0 * (py - ay0), gx1 * (py - ay1), gx2 * (py - ay2)
                    row_depth = w0 * r0 + w1 * r1 + w2 * r2
                    for x in range(x0[t], x0[t] + bw[t]):
                        px = cx[x]
                        c0, c1, c2 = gy0 * (px - ax0), gy1 * (px - ax1), gy2 * (px - ax2)
                        e0, e1, e2 = r0 - c0, r1 - c1, r2 - c2
                        if e0 < 0 or e1 < 0 or e2 < 0:
                            continue
                        if e0 == 0 and not owns[t, 0] or e1 == 0 and not owns[t, 1] or e2 == 0 and not owns[t, 2]:
                            continue  # on an edge the triangle does not own (top-left rule)
                        depth = one[0] / (row_depth - (w0 * c0 + w1 * c1 + w2 * c2))
                        bits = np.int64(np.float32(depth).view(np.int32))
                        key = (bits << 32) | index[t]
                        pixel = pix_offset[t] + y * width + x
                        if key < keys[pixel]:
                            keys[pixel] = key

    return mesh_zbuffer


def mesh_zbuffer_available() -> bool:
    """Whether the compiled mesh z-buffer can be used (numba importable and not disabled)."""
    return _mesh_kernel() is not None


def mesh_zbuffer(setup, num_pixels: int, width: int, height: int, key_empty: int) -> Tensor:
    """:func:`avatar.render.mesh_raster.zbuffer` as one compiled loop (CPU setups; same keys, bit for bit)."""
    kernel = _mesh_kernel()
    if kernel is None:
        raise RuntimeError("the compiled mesh z-buffer needs numba (pip install numba) and AVATAR_NO_NUMBA unset")
    import numba  # noqa: PLC0415

    keys = np.full(num_pixels, key_empty, dtype=np.int64)
    if setup.index.numel() == 0:
        return torch.from_numpy(keys)
    as_np = lambda t: t.contiguous().numpy()  # noqa: E731
    dtype = as_np(setup.start).dtype
    pix_offset = as_np(setup.pix_offset)
    images = num_pixels // (width * height)
    image_first = np.searchsorted(pix_offset, np.arange(images + 1, dtype=np.int64) * (width * height))
    cx, cy = (np.arange(width) + 0.5).astype(dtype), (np.arange(height) + 0.5).astype(dtype)
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    with _launch(threads):
        kernel(as_np(setup.index), as_np(setup.x0), as_np(setup.y0), as_np(setup.bw), as_np(setup.bh), pix_offset,
               as_np(setup.start), as_np(setup.gdelta), as_np(setup.owns), as_np(setup.inv_z), image_first, cx, cy,
               np.ones(1, dtype), width, keys)
    return torch.from_numpy(keys)


@functools.lru_cache(maxsize=None)
def _project_kernel():
    """The compiled projection (forward only)."""
    import numba  # noqa: PLC0415

    # No fast-math: the same float ops as the torch code, so results agree to rounding.
    @numba.njit(cache=True, nogil=True)
    def project(means, quats, scales, covars, opacities, viewmats, Ks, consts, width, height, antialiased,
                means2d, conics, depths, radii, opac_out, comp_out):
        # One Gaussian after the other (12k of them take well under a millisecond): no parallel
        # region, so nothing waits on the other cores. Generic in the float type.
        near, far, radius_clip, eps2d = consts[0], consts[1], consts[2], consts[3]
        thr, extend_max, zero, one = consts[4], consts[5], consts[6], consts[7]
        two, margin, tiny = consts[8], consts[9], consts[10]
        use_cov = covars.shape[0] == means.shape[0]
        for cam in range(viewmats.shape[0]):
            v00, v01, v02, v03 = viewmats[cam, 0, 0], viewmats[cam, 0, 1], viewmats[cam, 0, 2], viewmats[cam, 0, 3]
            v10, v11, v12, v13 = viewmats[cam, 1, 0], viewmats[cam, 1, 1], viewmats[cam, 1, 2], viewmats[cam, 1, 3]
            v20, v21, v22, v23 = viewmats[cam, 2, 0], viewmats[cam, 2, 1], viewmats[cam, 2, 2], viewmats[cam, 2, 3]
            fx, fy, cx, cy = Ks[cam, 0, 0], Ks[cam, 1, 1], Ks[cam, 0, 2], Ks[cam, 1, 2]
            lim_x_pos = (width - cx) / fx + margin * width / fx
            lim_x_neg = cx / fx + margin * width / fx
            lim_y_pos = (height - cy) / fy + margin * height / fy
            lim_y_neg = cy / fy + margin * height / fy
            for n in range(means.shape[0]):
                mx, my, mz = means[n, 0], means[n, 1], means[n, 2]
                x = v00 * mx + v01 * my + v02 * mz + v03
                y = v10 * mx + v11 * my + v12 * mz + v13
                z0 = v20 * mx + v21 * my + v22 * mz + v23
                if use_cov:
                    s00, s01, s02 = covars[n, 0, 0], covars[n, 0, 1], covars[n, 0, 2]
                    s10, s11, s12 = covars[n, 1, 0], covars[n, 1, 1], covars[n, 1, 2]
                    s20, s21, s22 = covars[n, 2, 0], covars[n, 2, 1], covars[n, 2, 2]
                else:
                    qw, qx, qy, qz = quats[n, 0], quats[n, 1], quats[n, 2], quats[n, 3]
                    norm = max(np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), tiny)
                    qw, qx, qy, qz = qw / norm, qx / norm, qy / norm, qz / norm
                    xx, yy, zz = qx * qx, qy * qy, qz * qz
                    xy, xz, yz = qx * qy, qx * qz, qy * qz
                    wx, wy, wz = qw * qx, qw * qy, qw * qz
                    sx, sy, sz = scales[n, 0], scales[n, 1], scales[n, 2]
                    # M = R S (columns scaled), Sigma = M M^T
                    m00, m01, m02 = (one - two * (yy + zz)) * sx, two * (xy - wz) * sy, two * (xz + wy) * sz
                    m10, m11, m12 = two * (xy + wz) * sx, (one - two * (xx + zz)) * sy, two * (yz - wx) * sz
                    m20, m21, m22 = two * (xz - wy) * sx, two * (yz + wx) * sy, (one - two * (xx + yy)) * sz
                    s00 = m00 * m00 + m01 * m01 + m02 * m02
                    s01 = m00 * m10 + m01 * m11 + m02 * m12
                    s02 = m00 * m20 + m01 * m21 + m02 * m22
                    s11 = m10 * m10 + m11 * m11 + m12 * m12
                    s12 = m10 * m20 + m11 * m21 + m12 * m22
                    s22 = m20 * m20 + m21 * m21 + m22 * m22
                    s10, s20, s21 = s01, s02, s12
                # W = V Sigma (rows of V times Sigma), then cov_cam = W V^T
                w00 = v00 * s00 + v01 * s10 + v02 * s20
                w01 = v00 * s01 + v01 * s11 + v02 * s21
                w02 = v00 * s02 + v01 * s12 + v02 * s22
                w10 = v10 * s00 + v11 * s10 + v12 * s20
                w11 = v10 * s01 + v11 * s11 + v12 * s21
                w12 = v10 * s02 + v11 * s12 + v12 * s22
                w20 = v20 * s00 + v21 * s10 + v22 * s20
                w21 = v20 * s01 + v21 * s11 + v22 * s21
                w22 = v20 * s02 + v21 * s12 + v22 * s22
                c00 = w00 * v00 + w01 * v01 + w02 * v02
                c01 = w00 * v10 + w01 * v11 + w02 * v12
                c02 = w00 * v20 + w01 * v21 + w02 * v22
                c11 = w10 * v10 + w11 * v11 + w12 * v12
                c12 = w10 * v20 + w11 * v21 + w12 * v22
                c20 = w20 * v00 + w21 * v01 + w22 * v02
                c21 = w20 * v10 + w21 * v11 + w22 * v12
                c22 = w20 * v20 + w21 * v21 + w22 * v22
                in_depth = z0 >= near and z0 <= far
                z = z0 if in_depth else one
                rz = one / z
                tx = z * min(lim_x_pos, max(-lim_x_neg, x * rz))
                ty = z * min(lim_y_pos, max(-lim_y_neg, y * rz))
                j00, j02 = fx * rz, -fx * tx * rz * rz
                j11, j12 = fy * rz, -fy * ty * rz * rz
                # cov2d = J cov_cam J^T, J = [[j00, 0, j02], [0, j11, j12]]
                a = j00 * (j00 * c00 + j02 * c20) + j02 * (j00 * c02 + j02 * c22)
                b = j00 * (j11 * c01 + j12 * c02) + j02 * (j11 * c21 + j12 * c22)
                c = j11 * (j11 * c11 + j12 * c21) + j12 * (j11 * c12 + j12 * c22)
                u = fx * x * rz + cx
                w = fy * y * rz + cy
                det_orig = a * c - b * b
                a, c = a + eps2d, c + eps2d
                det = a * c - b * b
                valid = in_depth and det > zero
                if not valid:
                    det = one
                comp = np.sqrt(max(det_orig / det, zero))
                op = opacities[n] * comp if antialiased else opacities[n]
                means2d[cam, n, 0], means2d[cam, n, 1] = u, w
                conics[cam, n, 0], conics[cam, n, 1], conics[cam, n, 2] = c / det, -b / det, a / det
                depths[cam, n] = z0
                opac_out[cam, n], comp_out[cam, n] = op, comp
                valid = valid and op >= thr
                extend = min(np.sqrt(two * np.log(max(op, thr) / thr)), extend_max)
                rx = np.ceil(extend * np.sqrt(max(a, zero)))
                ry = np.ceil(extend * np.sqrt(max(c, zero)))
                on_image = u + rx > zero and u - rx < width and w + ry > zero and w - ry < height
                valid = valid and (rx > radius_clip or ry > radius_clip) and on_image
                radii[cam, n, 0] = int(rx) if valid else 0
                radii[cam, n, 1] = int(ry) if valid else 0

    return project



def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor, Ks: Tensor,
                      width: int, height: int, near_plane: float, far_plane: float, radius_clip: float, eps2d: float,
                      antialiased: bool, covars: Tensor | None, alpha_threshold: float,
                      extend_max: float) -> dict[str, Tensor]:
    """:func:`avatar.render.torch_backend.project_gaussians` as one compiled loop (forward only,
    CPU; the same dict, equal to float rounding)."""
    kernel = _compiled(_project_kernel)
    dtype = torch.promote_types(means.dtype, viewmats.dtype)
    as_np = lambda t: t.detach().to(dtype).contiguous().numpy()  # noqa: E731
    C, N = viewmats.shape[0], means.shape[0]
    np_dtype = np.dtype(np.float64 if dtype == torch.float64 else np.float32)
    consts = np.array([near_plane, far_plane, radius_clip, eps2d, alpha_threshold, extend_max, 0.0, 1.0, 2.0, 0.15,
                       1e-12], dtype=np_dtype)
    means2d = np.empty((C, N, 2), np_dtype)
    conics = np.empty((C, N, 3), np_dtype)
    depths = np.empty((C, N), np_dtype)
    radii = np.empty((C, N, 2), np.int32)
    opac = np.empty((C, N), np_dtype)
    comp = np.empty((C, N), np_dtype)
    cov = as_np(covars) if covars is not None else np.empty((0, 3, 3), np_dtype)
    kernel(as_np(means), as_np(quats), as_np(scales), cov, as_np(opacities), as_np(viewmats), as_np(Ks), consts,
           width, height, bool(antialiased), means2d, conics, depths, radii, opac, comp)
    t = torch.from_numpy
    return {"means2d": t(means2d), "conics": t(conics), "depths": t(depths), "radii": t(radii), "opacities": t(opac),
            "compensations": t(comp)}


@functools.lru_cache(maxsize=None)
def _sh_kernel():
    """The compiled SH shading (forward only)."""
    import numba  # noqa: PLC0415

    @numba.njit(cache=True, nogil=True)
    def shade(coeffs, means, campos, frame, degree, c, out):
        # c: C0, C1, C2[0..4], C3[0..6], then 0, 0.5, 1e-12, 2, 3, 4 (in the dtype).
        zero, half, tiny, two, three, four = c[14], c[15], c[16], c[17], c[18], c[19]
        D = coeffs.shape[2]
        basis = np.empty(16, dtype=coeffs.dtype)
        for cam in range(campos.shape[0]):
            for n in range(means.shape[0]):
                wx = means[n, 0] - campos[cam, 0]
                wy = means[n, 1] - campos[cam, 1]
                wz = means[n, 2] - campos[cam, 2]
                # frame^T d: the direction in the frame's axes
                x = frame[0, 0] * wx + frame[1, 0] * wy + frame[2, 0] * wz
                y = frame[0, 1] * wx + frame[1, 1] * wy + frame[2, 1] * wz
                z = frame[0, 2] * wx + frame[1, 2] * wy + frame[2, 2] * wz
                norm = max(np.sqrt(x * x + y * y + z * z), tiny)
                x, y, z = x / norm, y / norm, z / norm
                basis[0] = c[0]
                if degree >= 1:
                    basis[1], basis[2], basis[3] = -c[1] * y, c[1] * z, -c[1] * x
                if degree >= 2:
                    xx, yy, zz = x * x, y * y, z * z
                    basis[4] = c[2] * x * y
                    basis[5] = c[3] * y * z
                    basis[6] = c[4] * (two * zz - xx - yy)
                    basis[7] = c[5] * x * z
                    basis[8] = c[6] * (xx - yy)
                if degree >= 3:
                    basis[9] = c[7] * y * (three * xx - yy)
                    basis[10] = c[8] * x * y * z
                    basis[11] = c[9] * y * (four * zz - xx - yy)
                    basis[12] = c[10] * z * (two * zz - three * xx - three * yy)
                    basis[13] = c[11] * x * (four * zz - xx - yy)
                    basis[14] = c[12] * z * (xx - yy)
                    basis[15] = c[13] * x * (xx - three * yy)
                K = (degree + 1) * (degree + 1)
                for d in range(D):
                    s = zero
                    for k in range(K):
                        s += basis[k] * coeffs[n, k, d]
                    out[cam, n, d] = max(s + half, zero)

    return shade



def sh_colors(degree: int, coeffs: Tensor, means: Tensor, campos: Tensor, frame: Tensor | None,
              basis_constants: tuple[float, ...]) -> Tensor:
    """:func:`avatar.render.sh.sh_colors` for ``coeffs [N, K, D]`` shared by the cameras at
    ``campos [C, 3]``, as one compiled loop (forward only, CPU): ``[C, N, D]``.
    ``basis_constants``: the 14 normalisation factors of the basis (degree 0, 1, 2's five, 3's seven)."""
    kernel = _compiled(_sh_kernel)
    dtype = coeffs.dtype
    np_dtype = np.dtype(np.float64 if dtype == torch.float64 else np.float32)
    as_np = lambda t: t.detach().to(dtype).contiguous().numpy()  # noqa: E731
    consts = np.array([*basis_constants, 0.0, 0.5, 1e-12, 2.0, 3.0, 4.0], dtype=np_dtype)
    frame = torch.eye(3, dtype=dtype) if frame is None else frame
    out = np.empty((campos.shape[0], means.shape[0], coeffs.shape[2]), np_dtype)
    kernel(as_np(coeffs), as_np(means), as_np(campos), as_np(frame), int(degree), consts, out)
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=None)
def _pack_kernel():
    """The compiled packing of the compositor's per-Gaussian rows (see :func:`composite_tiles`)."""
    import numba  # noqa: PLC0415

    @numba.njit(cache=True, nogil=True)
    def pack(means2d, conics, opacities, colors, c, out):
        # Row: mean x, y, conic a, b, c, opacity, the cut-off s_max = log(opacity / alpha_min) +
        # 1e-3 (beyond sigma = s_max alpha < 1/255), the half-widths of the box round the ellipse
        # sigma <= s_max, sqrt(2 s_max (M^-1)_xx) and sqrt(2 s_max (M^-1)_yy), widened a little so
        # that rounding never drops a pixel the compositor's own test would keep (a degenerate
        # conic gets no box: the whole image), colour.
        alpha_min, pad, two, widen, zero, unbounded = c[0], c[1], c[2], c[3], c[4], c[5]
        D = colors.shape[1]
        for g in range(means2d.shape[0]):
            a, b, cc, op = conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            s_max = np.log(op / alpha_min) + pad
            det = a * cc - b * b
            out[g, 0], out[g, 1] = means2d[g, 0], means2d[g, 1]
            out[g, 2], out[g, 3], out[g, 4], out[g, 5], out[g, 6] = a, b, cc, op, s_max
            if det > zero:
                s = max(s_max, zero) * two / det
                out[g, 7] = np.sqrt(max(s * cc, zero)) * widen + pad
                out[g, 8] = np.sqrt(max(s * a, zero)) * widen + pad
            else:
                out[g, 7], out[g, 8] = unbounded, unbounded
            for d in range(D):
                out[g, 9 + d] = colors[g, d]

    return pack


@functools.lru_cache(maxsize=None)
def _ranges_kernel():
    """The compiled front half of :func:`tile_lists`."""
    import numba  # noqa: PLC0415

    @numba.njit(cache=True, nogil=True)
    def ranges(means2d, radii, depths, tile, n_per_cam, tiles_x, tiles_y):
        # The Gaussians with a box (both half-sizes > 0), front to back (stable: ties keep their
        # order), and the tiles [x0, x1) x [y0, y1) their boxes touch; float ops in the dtype of
        # the means, as the torch code's.
        n = 0
        for g in range(radii.shape[0]):
            if radii[g, 0] > 0 and radii[g, 1] > 0:
                n += 1
        flat = np.empty(n, np.int64)
        n = 0
        for g in range(radii.shape[0]):
            if radii[g, 0] > 0 and radii[g, 1] > 0:
                flat[n] = g
                n += 1
        flat = flat[np.argsort(depths[flat], kind="mergesort")]
        cam = np.empty(n, np.int64)
        x0 = np.empty(n, np.int64)
        x1 = np.empty(n, np.int64)
        y0 = np.empty(n, np.int64)
        y1 = np.empty(n, np.int64)
        for i in range(n):
            g = flat[i]
            cam[i] = g // n_per_cam
            mx, my = means2d[g, 0], means2d[g, 1]
            rx, ry = means2d.dtype.type(radii[g, 0]), means2d.dtype.type(radii[g, 1])
            x0[i] = min(max(int(np.floor((mx - rx) / tile[0])), 0), tiles_x)
            x1[i] = min(max(int(np.ceil((mx + rx) / tile[0])), 0), tiles_x)
            y0[i] = min(max(int(np.floor((my - ry) / tile[0])), 0), tiles_y)
            y1[i] = min(max(int(np.ceil((my + ry) / tile[0])), 0), tiles_y)
        return flat, cam, x0, x1, y0, y1

    return ranges


def tile_lists(means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tiles_x: int,
               tiles_y: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`avatar.render.torch_backend._tile_lists` as two compiled loops (the same lists)."""
    C, N = depths.shape
    m = means2d.detach().reshape(-1, 2).contiguous().numpy()
    flat, cam, x0, x1, y0, y1 = _ranges_kernel()(
        m, radii.reshape(-1, 2).contiguous().numpy(), depths.detach().reshape(-1).contiguous().numpy(),
        np.array([tile_size], m.dtype), N, tiles_x, tiles_y)
    ids, counts, offsets = _require()[1](flat, cam, x0, x1, y0, y1, tiles_x, tiles_x * tiles_y, C * tiles_x * tiles_y)
    return torch.from_numpy(ids), torch.from_numpy(counts), torch.from_numpy(offsets)


@functools.lru_cache(maxsize=None)
def _place_kernel():
    """The compiled placing of frame-bound Gaussians (see :func:`place_gaussians`)."""
    import numba  # noqa: PLC0415

    @numba.njit(cache=True, nogil=True)
    def place(o, r, k, xyz, quat, log_scale, c, means, quats, scales):
        # c: 0, 1, 2, 1e-12 in the dtype. The frame's quaternion as geometry.rotations.
        # matrix_to_quaternion (the largest of the four candidates, w >= 0), times the local one.
        zero, one, two, tiny = c[0], c[1], c[2], c[3]
        sq = np.empty(4, dtype=o.dtype)
        q = np.empty(4, dtype=o.dtype)
        for g in range(o.shape[0]):
            kg = k[g]
            for a in range(3):
                scales[g, a] = np.exp(log_scale[g, a]) * kg
                means[g, a] = o[g, a] + kg * (r[g, a, 0] * xyz[g, 0] + r[g, a, 1] * xyz[g, 1] + r[g, a, 2] * xyz[g, 2])
            m00, m01, m02 = r[g, 0, 0], r[g, 0, 1], r[g, 0, 2]
            m10, m11, m12 = r[g, 1, 0], r[g, 1, 1], r[g, 1, 2]
            m20, m21, m22 = r[g, 2, 0], r[g, 2, 1], r[g, 2, 2]
            sq[0] = max(one + m00 + m11 + m22, tiny)
            sq[1] = max(one + m00 - m11 - m22, tiny)
            sq[2] = max(one - m00 + m11 - m22, tiny)
            sq[3] = max(one - m00 - m11 + m22, tiny)
            best = 0
            for i in range(1, 4):
                if sq[i] > sq[best]:
                    best = i
            den = two * np.sqrt(sq[best])
            if best == 0:
                q[0], q[1], q[2], q[3] = sq[0], m21 - m12, m02 - m20, m10 - m01
            elif best == 1:
                q[0], q[1], q[2], q[3] = m21 - m12, sq[1], m10 + m01, m02 + m20
            elif best == 2:
                q[0], q[1], q[2], q[3] = m02 - m20, m10 + m01, sq[2], m21 + m12
            else:
                q[0], q[1], q[2], q[3] = m10 - m01, m02 + m20, m21 + m12, sq[3]
            for i in range(4):
                q[i] = q[i] / den
            norm = max(np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]), tiny)
            aw, ax, ay, az = q[0] / norm, q[1] / norm, q[2] / norm, q[3] / norm
            if aw < zero:
                aw, ax, ay, az = -aw, -ax, -ay, -az
            bw, bx, by, bz = quat[g, 0], quat[g, 1], quat[g, 2], quat[g, 3]
            norm = max(np.sqrt(bw * bw + bx * bx + by * by + bz * bz), tiny)
            bw, bx, by, bz = bw / norm, bx / norm, by / norm, bz / norm
            quats[g, 0] = aw * bw - ax * bx - ay * by - az * bz
            quats[g, 1] = aw * bx + ax * bw + ay * bz - az * by
            quats[g, 2] = aw * by - ax * bz + ay * bw + az * bx
            quats[g, 3] = aw * bz + ax * by - ay * bx + az * bw

    return place



def place_gaussians(o: Tensor, r: Tensor, k: Tensor, xyz: Tensor, quat: Tensor,
                    log_scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gaussians in their frames (origins ``o [N, 3]``, rotations ``r [N, 3, 3]``, scales ``k [N]``)
    from their local position ``xyz [N, 3]``, quaternion ``quat [N, 4]`` and ``log_scale [N, 3]``:
    world ``(means, quats, scales)`` as :meth:`avatar.gaussians.mesh_gaussians.MeshGaussians.on_frames`
    computes them with tensor ops, in one compiled loop (forward only, CPU)."""
    dtype = o.dtype
    np_dtype = np.dtype(np.float64 if dtype == torch.float64 else np.float32)
    as_np = lambda t: t.detach().to(dtype).contiguous().numpy()  # noqa: E731
    n = o.shape[0]
    means, quats, scales = np.empty((n, 3), np_dtype), np.empty((n, 4), np_dtype), np.empty((n, 3), np_dtype)
    _compiled(_place_kernel)(as_np(o), as_np(r), as_np(k), as_np(xyz), as_np(quat), as_np(log_scale),
                    np.array([0.0, 1.0, 2.0, 1e-12], np_dtype), means, quats, scales)
    return torch.from_numpy(means), torch.from_numpy(quats), torch.from_numpy(scales)

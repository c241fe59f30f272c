"""Core of the PyTorch mesh rasterizer: triangle setup, coverage, z-buffer, barycentrics.

On a CPU the z-buffer runs as a compiled loop when numba is there (same keys, bit for bit).

Everything here works on triangles already projected to pixels. Conventions:

- pixel ``(i, j)`` (row, column) has its centre at ``(x, y) = (j + 0.5, i + 0.5)`` in the
  pixel frame of the intrinsics ``K`` (x right, y down);
- a pixel centre is covered by a triangle when it is strictly inside, or exactly on an
  edge that is a *top* or *left* edge of that triangle (the usual top-left rule, with y
  down: a left edge has the interior on its +x side, a top edge is horizontal with the
  interior below it). Edge functions of an edge shared by two triangles are evaluated
  from one canonical ordering of its end points, so they are exact negatives of each
  other: shared edges and vertices leave no holes and no pixel is covered twice;
- the z-buffer keeps, per pixel, the smallest camera depth; exact depth ties go to the
  lowest triangle index. It is resolved with one ``scatter_reduce(amin)`` on an int64 key
  ``(float32 depth bits << 32) | triangle``, which is order independent: chunking never
  changes the result.

Coverage and the z-buffer are discrete and run without autograd; the barycentrics and
depth of each pixel's winning triangle are then recomputed from the (differentiable)
projected vertices, so they carry gradients to vertex positions and cameras.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from . import cpu_kernels

KEY_EMPTY = torch.iinfo(torch.int64).max
_TRIANGLE_BITS = 32


@dataclass
class TriangleSetup:
    """Per-triangle raster data of the triangles that may cover a pixel (``T`` of them)."""

    index: Tensor  # [T] int64, flat triangle index b * F + f
    x0: Tensor  # [T] int64, first pixel column of the bounding box (clipped to the image)
    y0: Tensor  # [T] int64, first pixel row
    bw: Tensor  # [T] int64, bounding-box width in pixels (>= 1)
    bh: Tensor  # [T] int64, bounding-box height in pixels (>= 1)
    pix_offset: Tensor  # [T] int64, flat index b * H * W of the triangle's image
    start: Tensor  # [T, 3, 2] canonical start point a of each edge
    gdelta: Tensor  # [T, 3, 2] (gdx, gdy): E_n(p) = gdx (py - ay) - gdy (px - ax), >= 0 inside
    owns: Tensor  # [T, 3] bool, the edge is a top or left edge (covers pixels exactly on it)
    inv_z: Tensor  # [T, 3] 1 / (camera depth * |twice the pixel area|) of the vertices


def setup_triangles(
    tri_xy: Tensor,  # [B, F, 3, 2] pixel coordinates of the triangle vertices
    tri_z: Tensor,  # [B, F, 3] camera depth of the vertices
    width: int,
    height: int,
    near_plane: float,
    cull_backfaces: bool,
) -> TriangleSetup:
    """Drop triangles that cannot cover a pixel and precompute their edge functions.

    Dropped: any vertex at depth ``<= near_plane`` (no clipping), zero or non-finite
    area, a pixel bounding box outside the image, and back faces when
    ``cull_backfaces`` (front faces wind clockwise in the y-down image, i.e. their
    right-handed normal points toward the camera).
    """
    B, F = tri_xy.shape[:2]
    xy = tri_xy.reshape(B * F, 3, 2)
    z = tri_z.reshape(B * F, 3)
    p0, p1, p2 = xy.unbind(1)
    area2 = _cross(p1 - p0, p2 - p0)  # > 0: counter-clockwise on screen with y down
    keep = (z > near_plane).all(1) & torch.isfinite(area2) & (area2 != 0)
    if cull_backfaces:
        keep &= area2 < 0
    lo = xy.amin(1).clamp(-2.0, max(width, height) + 2.0)
    hi = xy.amax(1).clamp(-2.0, max(width, height) + 2.0)
    # Pixel centres c = k + 0.5 with lo <= c <= hi, clipped to the image.
    first = torch.ceil(lo - 0.5).long().clamp_min(0)
    last = torch.floor(hi - 0.5).long()
    last = torch.minimum(last, torch.tensor([width - 1, height - 1], device=last.device))
    size = last - first + 1
    keep &= (size > 0).all(1)

    index = keep.nonzero().squeeze(1)
    xy, z, area2 = xy.index_select(0, index), z.index_select(0, index), area2.index_select(0, index)
    first, size = first.index_select(0, index), size.index_select(0, index)

    # Edge i is opposite vertex i and runs from vertex i+1 to vertex i+2.
    a = xy.roll(-1, dims=1)  # [T, 3, 2]
    b = xy.roll(-2, dims=1)
    # Canonical end-point order (lexicographic on x, then y), so that both triangles of
    # a shared edge evaluate bit-identical edge functions, up to an exact sign flip.
    swap = (a[..., 0] > b[..., 0]) | ((a[..., 0] == b[..., 0]) & (a[..., 1] > b[..., 1]))
    start = torch.where(swap[..., None], b, a)
    delta = torch.where(swap[..., None], a - b, b - a)
    sign = torch.where(swap, -1.0, 1.0).to(xy.dtype) * area2.sign()[:, None]
    gdelta = delta * sign[..., None]  # E_n = area-normalised edge function, >= 0 inside
    gdx, gdy = gdelta.unbind(-1)
    # The gradient of E_n is (-gdy, gdx): interior on the +x side (left edge) or, for a
    # horizontal edge, below it (top edge).
    owns = (gdy < 0) | ((gdy == 0) & (gdx > 0))

    batch = torch.div(index, F, rounding_mode="floor")
    return TriangleSetup(
        index=index,
        x0=first[:, 0],
        y0=first[:, 1],
        bw=size[:, 0],
        bh=size[:, 1],
        pix_offset=batch * (height * width),
        start=start,
        gdelta=gdelta,
        owns=owns,
        inv_z=1.0 / (z * area2.abs()[:, None]),
    )


def zbuffer(setup: TriangleSetup, num_pixels: int, width: int, height: int, max_candidates: int,
            compiled: bool | None = None) -> Tensor:
    """Nearest covering triangle per pixel as an int64 key ``[num_pixels]``.

    ``key >> 32`` holds the float32 bits of the depth and ``key & 0xffffffff`` the flat
    triangle index; ``KEY_EMPTY`` marks background.

    On a CPU with numba (``compiled=None``: when both hold) the keys come from one compiled
    loop over the triangles' boxes (:func:`avatar.render.cpu_kernels.mesh_zbuffer`): the same
    float operations in the same order, so the same keys bit for bit, 7-8 times faster on one thread.
    The torch code below runs everywhere else:

    Bounding boxes larger than ``max_candidates`` pixels are cut into bands of rows.
    Boxes are binned by size onto a ladder of padded sizes (exact up to 8 pixels, then
    at most 25% larger per side); each bin is evaluated in chunks of about
    ``max_candidates`` (triangle, pixel) pairs, so memory stays bounded. Edge functions
    are separable over a box, ``E = A[row] - B[col]``: one full-size operation per edge.
    """
    device = setup.index.device
    if compiled is None:
        compiled = device.type == "cpu" and cpu_kernels.mesh_zbuffer_available()
    if compiled:
        if device.type != "cpu":
            raise ValueError(f"zbuffer(compiled=True) runs on CPU tensors; these are on {device} (pass compiled=None)")
        return cpu_kernels.mesh_zbuffer(setup, num_pixels, width, height, KEY_EMPTY)
    keys = torch.full((num_pixels,), KEY_EMPTY, dtype=torch.int64, device=device)
    if setup.index.numel() == 0:
        return keys
    bands = _row_bands(setup, max_candidates)
    ladder = torch.tensor(_size_ladder(max(width, height)), device=device)
    size_w = torch.searchsorted(ladder, bands.bw.contiguous())
    size_h = torch.searchsorted(ladder, bands.bh.contiguous())
    bins = size_w * len(ladder) + size_h
    order = torch.argsort(bins, stable=True)
    labels, counts = torch.unique_consecutive(bins[order], return_counts=True)
    bands = _take(bands, order)  # contiguous per bin
    first = 0
    for label, count in zip(labels.tolist(), counts.tolist()):
        box_w = min(int(ladder[label // len(ladder)]), width)
        box_h = min(int(ladder[label % len(ladder)]), height)
        step = max(1, max_candidates // (box_w * box_h))
        for t0 in range(first, first + count, step):
            chunk = _take(bands, slice(t0, min(t0 + step, first + count)))
            _zbuffer_boxes(chunk, box_w, box_h, keys, width, height)
        first += count
    return keys


def _take(setup: TriangleSetup, index: Tensor | slice) -> TriangleSetup:
    """The entries ``index`` (an index tensor or a slice) of every field."""
    if isinstance(index, slice):
        return TriangleSetup(**{f.name: getattr(setup, f.name)[index] for f in fields(TriangleSetup)})
    return TriangleSetup(
        **{f.name: getattr(setup, f.name).index_select(0, index) for f in fields(TriangleSetup)}
    )


def _row_bands(setup: TriangleSetup, max_candidates: int) -> TriangleSetup:
    """Cut bounding boxes into bands of at most ``max_candidates`` pixels (at least a row).

    Each band is an entry of the returned setup, a copy of its triangle's with its own
    ``y0`` and ``bh``.
    """
    rows = torch.clamp_min(max_candidates // setup.bw, 1)
    count = torch.div(setup.bh + rows - 1, rows, rounding_mode="floor")
    if bool((count == 1).all()):
        return setup
    tri = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)
    band = torch.arange(tri.numel(), device=tri.device) - (torch.cumsum(count, 0) - count)[tri]
    offset = band * rows[tri]
    bands = _take(setup, tri)
    bands.y0 = bands.y0 + offset
    bands.bh = torch.minimum(rows[tri], bands.bh - offset)
    return bands


def _zbuffer_boxes(
    setup: TriangleSetup, box_w: int, box_h: int, keys: Tensor, width: int, height: int
) -> None:
    """Evaluate all of ``setup`` on ``box_h x box_w`` pixel boxes and z-test into ``keys``.

    Triangles run along the last (contiguous) axis, so elementwise kernels get long
    inner loops even for 1-pixel boxes.
    """
    dtype, device = setup.start.dtype, keys.device
    # Shift each box to stay inside the image: padding then only adds image pixels
    # outside the triangle's bounding box (or band), which at worst are tested twice.
    x0 = torch.clamp_max(setup.x0, width - box_w)
    y0 = torch.clamp_max(setup.y0, height - box_h)
    px = x0.to(dtype) + (torch.arange(box_w, device=device, dtype=dtype) + 0.5)[:, None]  # [box_w, n]
    py = y0.to(dtype) + (torch.arange(box_h, device=device, dtype=dtype) + 0.5)[:, None]  # [box_h, n]
    ax, ay = setup.start.permute(2, 1, 0).contiguous()[:, :, None]  # [3, 1, n] each
    gdx, gdy = setup.gdelta.permute(2, 1, 0).contiguous()[:, :, None]
    rows = gdx * (py - ay)  # [3, box_h, n]
    cols = gdy * (px - ax)  # [3, box_w, n]
    E = rows[:, :, None] - cols[:, None]  # [3, box_h, box_w, n]
    emin = torch.minimum(torch.minimum(E[0], E[1]), E[2]).view(-1)
    sel = (emin >= 0).nonzero().squeeze(1)
    n = setup.index.numel()
    on_edge = (emin.index_select(0, sel) == 0).nonzero().squeeze(1)
    if on_edge.numel():  # rare: the top-left rule decides
        flat = sel[on_edge]
        E_at = E.view(3, -1)[:, flat].T  # [k, 3]
        ok = ((E_at > 0) | ((E_at == 0) & setup.owns[flat % n])).all(1)
        keep = torch.ones_like(sel, dtype=torch.bool)
        keep[on_edge] = ok
        sel = sel[keep]
    # 1/z is affine on screen, sum_i E_i / (2 area z_i): separable like E.
    wz = setup.inv_z.T.contiguous()[:, None]  # [3, 1, n]
    inv_depth = (wz * rows).sum(0)[:, None] - (wz * cols).sum(0)[None]  # [box_h, box_w, n]
    depth = 1.0 / inv_depth.view(-1).index_select(0, sel)
    cell = torch.div(sel, n, rounding_mode="floor")
    t = sel - cell * n
    grid = torch.arange(box_h, device=device)[:, None] * width + torch.arange(box_w, device=device)
    pixel = (setup.pix_offset + y0 * width + x0).index_select(0, t) + grid.view(-1).index_select(0, cell)
    key = (depth.float().view(torch.int32).long() << _TRIANGLE_BITS) | setup.index.index_select(0, t)
    keys.scatter_reduce_(0, pixel, key, reduce="amin")


def _size_ladder(limit: int) -> list[int]:
    """Padded box sides: 1..8, then steps of a quarter octave (10, 12, 14, 16, 20, ...)."""
    sizes, octave = list(range(1, 9)), 8
    while sizes[-1] < limit:
        sizes += [octave * 5 // 4, octave * 3 // 2, octave * 7 // 4, octave * 2]
        octave *= 2
    return sizes


def decode_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Covered flat pixel indices ``[P]`` and their flat triangle indices ``[P]``."""
    pixels = (keys != KEY_EMPTY).nonzero().squeeze(1)
    triangles = keys.index_select(0, pixels) & ((1 << _TRIANGLE_BITS) - 1)
    return pixels, triangles


def perspective_barycentrics(
    tri_xy: Tensor,  # [P, 3, 2] pixel coordinates of each pixel's triangle
    tri_z: Tensor,  # [P, 3] camera depth of its vertices
    pixel_xy: Tensor,  # [P, 2] pixel centres
) -> tuple[Tensor, Tensor]:
    """Perspective-correct barycentrics ``[P, 3]`` and camera depth ``[P]`` (differentiable).

    Screen-space barycentrics ``l_i`` are affine on screen; the 3D ones are
    ``b_i = (l_i / z_i) / sum_k (l_k / z_k)`` and the depth ``1 / sum_k (l_k / z_k)``.
    """
    p0, p1, p2 = tri_xy.unbind(1)
    area2 = _cross(p1 - p0, p2 - p0)
    l0 = _cross(p2 - p1, pixel_xy - p1)
    l1 = _cross(p0 - p2, pixel_xy - p2)
    l2 = _cross(p1 - p0, pixel_xy - p0)
    lam = torch.stack([l0, l1, l2], dim=1) / area2[:, None]
    w = lam / tri_z
    inv_depth = w.sum(1)
    return w / inv_depth[:, None], 1.0 / inv_depth


def _cross(u: Tensor, v: Tensor) -> Tensor:
    """2D cross product ``u_x v_y - u_y v_x`` over the last dimension."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

"""A small mesh rasterizer in PyTorch: coverage, depth, barycentrics, attribute interpolation.

Used for synthetic captures, masks, landmark-embedding calibration and tracking overlays.
It runs anywhere torch runs (CPU first); device and dtype follow the inputs. On a CPU the
z-buffer (which triangle is nearest at each pixel) runs as a compiled loop when numba is
installed, with the same result bit for bit (:func:`avatar.render.mesh_raster.zbuffer`).

Camera: OpenCV convention (x right, y down, z forward), metres. ``viewmats`` are
world-to-camera 4x4 matrices acting on column vectors, ``K`` intrinsics in pixels; pixel
``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``, so a principal point of
``(W / 2, H / 2)`` is the image centre.

Near plane: no clipping. A triangle with any vertex at camera depth ``<= near_plane`` is
dropped whole.

Coverage follows the top-left rule (see :mod:`avatar.render.mesh_raster`): meshes are
watertight (no holes, no double coverage along shared edges), and the nearest triangle
wins per pixel. The depth test compares float32 depths (also for float64 inputs); exact
ties go to the lowest face index.

Gradients: the choice of triangle per pixel is discrete; ``bary`` and ``depth`` of the
chosen triangle are differentiable w.r.t. vertices, ``viewmats`` and ``K``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .mesh_raster import decode_keys, perspective_barycentrics, setup_triangles, zbuffer

__all__ = [
    "MeshRaster",
    "rasterize_mesh",
    "interpolate",
]

DEFAULT_MAX_CANDIDATES = 1 << 20


@dataclass
class MeshRaster:
    """Per-pixel result of :func:`rasterize_mesh` for ``B`` images of ``H x W`` pixels.

    Attributes:
        triangle_id: ``[B, H, W]`` int64 face index into ``faces``; ``-1`` for background.
        bary: ``[B, H, W, 3]`` perspective-correct barycentrics of the face's vertices
            ``faces[triangle_id]`` (sum to 1); zeros for background.
        depth: ``[B, H, W]`` camera z (metres, along the optical axis, not the ray length);
            ``0`` for background.
        mask: ``[B, H, W]`` bool, ``True`` where a triangle covers the pixel centre.
    """

    triangle_id: Tensor
    bary: Tensor
    depth: Tensor
    mask: Tensor


def rasterize_mesh(
    vertices: Tensor,  # [B, V, 3] or [V, 3], world (with viewmats) or camera space
    faces: Tensor,  # [F, 3] int vertex indices
    K: Tensor,  # [B, 3, 3] or [3, 3] intrinsics in pixels
    width: int,
    height: int,
    viewmats: Tensor | None = None,  # [B, 4, 4] or [4, 4] world-to-camera; None: camera space
    near_plane: float = 0.01,
    cull_backfaces: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> MeshRaster:
    """Rasterize triangle meshes with a z-buffer.

    Any of ``vertices``, ``K`` and ``viewmats`` may be unbatched (shared); the batch size
    ``B`` is the largest of theirs (a batch of 1 broadcasts too).

    Args:
        vertices: vertex positions in metres, in world space when ``viewmats`` is given,
            else already in camera space.
        faces: triangles as vertex indices; the front side is the one from which the
            vertices appear counter-clockwise (right-hand rule normal).
        K: pinhole intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
        width, height: image size in pixels.
        viewmats: world-to-camera transforms (OpenCV camera).
        near_plane: triangles with any vertex at camera depth ``<= near_plane`` are
            dropped (no clipping).
        cull_backfaces: drop triangles whose front side faces away from the camera.
        max_candidates: memory budget, in (triangle, pixel) pairs evaluated at once
            (about 30 bytes each). Results do not depend on it.

    Returns:
        :class:`MeshRaster`. The computation runs in float32, or float64 for float64
        inputs; outputs have the dtype and device of ``vertices``.
    """
    verts_cam, B = _camera_vertices(vertices, K, viewmats)
    Ks = _batch(K, B, (3, 3), "K").to(verts_cam)
    faces = _check_faces(faces, verts_cam.shape[1]).to(verts_cam.device)
    device, dtype = verts_cam.device, verts_cam.dtype
    H, W, F = int(height), int(width), faces.shape[0]

    # Project: [B, V, 3] -> pixel xy [B, V, 2], depth z [B, V].
    z = verts_cam[..., 2]
    safe_z = torch.where(z > near_plane, z, torch.ones_like(z))  # dropped triangles only
    xy = torch.einsum("bij,bvj->bvi", Ks[:, :2, :], verts_cam) / safe_z[..., None]
    tri_xy = xy.index_select(1, faces.view(-1)).view(B, F, 3, 2)
    tri_z = z.index_select(1, faces.view(-1)).view(B, F, 3)

    compute = torch.float64 if dtype == torch.float64 else torch.float32
    with torch.no_grad():
        setup = setup_triangles(
            tri_xy.detach().to(compute), tri_z.detach().to(compute), W, H, near_plane, cull_backfaces
        )
        keys = zbuffer(setup, B * H * W, W, H, max_candidates)
        pixels, triangles = decode_keys(keys)

    # Differentiable barycentrics and depth of the winning triangle at each covered pixel.
    col = pixels % W
    row = torch.div(pixels, W, rounding_mode="floor") % H
    pixel_xy = torch.stack([col, row], dim=1).to(compute) + 0.5
    bary_p, depth_p = perspective_barycentrics(
        tri_xy.reshape(B * F, 3, 2).index_select(0, triangles).to(compute),
        tri_z.reshape(B * F, 3).index_select(0, triangles).to(compute),
        pixel_xy,
    )
    bary_p, depth_p = bary_p.to(dtype), depth_p.to(dtype)

    triangle_id = torch.full((B * H * W,), -1, dtype=torch.int64, device=device)
    triangle_id[pixels] = triangles % max(F, 1)
    bary = torch.zeros(B * H * W, 3, dtype=dtype, device=device).index_put((pixels,), bary_p)
    depth = torch.zeros(B * H * W, dtype=dtype, device=device).index_put((pixels,), depth_p)
    return MeshRaster(
        triangle_id=triangle_id.view(B, H, W),
        bary=bary.view(B, H, W, 3),
        depth=depth.view(B, H, W),
        mask=(triangle_id >= 0).view(B, H, W),
    )


def interpolate(
    attr: Tensor,  # [B, V, C] or [V, C]
    faces: Tensor,  # [F, 3] indices into attr (faces, or uv_faces for UVs)
    raster: MeshRaster,
) -> Tensor:
    """Interpolate per-vertex attributes with the barycentrics: ``[B, H, W, C]``.

    ``faces`` must have the same rows as the faces that were rasterized but may index a
    different vertex array, e.g. ``uv_faces`` into ``uvs [T, 2]`` across UV seams.
    Background pixels get zeros. Differentiable w.r.t. ``attr`` and ``raster.bary``.
    """
    B, H, W = raster.triangle_id.shape
    if attr.dim() not in (2, 3):
        raise ValueError(f"attr must be [V, C] or [B, V, C], got shape {tuple(attr.shape)}")
    tid = raster.triangle_id.reshape(-1)
    pixels = (tid >= 0).nonzero().squeeze(1)
    corners = faces.long().to(tid.device).index_select(0, tid.index_select(0, pixels))  # [P, 3]
    if attr.dim() == 3 and attr.shape[0] not in (1, B):
        raise ValueError(f"attr has batch {attr.shape[0]}, the raster has {B}")
    if attr.dim() == 3 and attr.shape[0] == B > 1:
        V = attr.shape[1]
        corners = corners + (torch.div(pixels, H * W, rounding_mode="floor") * V)[:, None]
    flat_attr = attr.reshape(-1, attr.shape[-1])  # [B * V or V, C]
    v0, v1, v2 = (flat_attr.index_select(0, corners[:, k]) for k in range(3))  # [P, C] each
    b0, b1, b2 = raster.bary.reshape(B * H * W, 3).index_select(0, pixels).to(flat_attr.dtype).unbind(1)
    values = b0[:, None] * v0 + b1[:, None] * v1 + b2[:, None] * v2
    out = torch.zeros(B * H * W, attr.shape[-1], dtype=values.dtype, device=values.device)
    return out.index_put((pixels,), values).view(B, H, W, -1)


def _camera_vertices(vertices: Tensor, K: Tensor, viewmats: Tensor | None) -> tuple[Tensor, int]:
    if vertices.dim() not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [V, 3] or [B, V, 3], got {tuple(vertices.shape)}")
    if not vertices.is_floating_point():
        raise TypeError(f"vertices must be floating point, got {vertices.dtype}")
    sizes = [t.shape[0] for t, n in ((vertices, 3), (K, 3), (viewmats, 3)) if t is not None and t.dim() == n]
    B = max(sizes, default=1)
    verts = _batch(vertices, B, (vertices.shape[-2], 3), "vertices")
    if viewmats is not None:
        vm = _batch(viewmats, B, (4, 4), "viewmats").to(verts.dtype)
        verts = verts @ vm[:, :3, :3].transpose(1, 2) + vm[:, None, :3, 3]
    return verts, B


def _batch(t: Tensor, B: int, shape: tuple[int, int], name: str) -> Tensor:
    """``t`` ``[*shape]`` or ``[B or 1, *shape]`` as ``[B, *shape]``."""
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or tuple(t.shape[1:]) != tuple(shape) or t.shape[0] not in (1, B):
        raise ValueError(
            f"{name} must be {list(shape)} or [B, *{list(shape)}] with B={B}, got {tuple(t.shape)}"
        )
    return t.expand(B, *shape)


def _check_faces(faces: Tensor, V: int) -> Tensor:
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3] vertex indices, got {tuple(faces.shape)}")
    if faces.is_floating_point():
        raise TypeError(f"faces must be an integer tensor, got {faces.dtype}")
    faces = faces.long()
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= V):
        raise ValueError(f"faces index vertices in [{int(faces.min())}, {int(faces.max())}], but V={V}")
    return faces

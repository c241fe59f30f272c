"""Shading helpers over :func:`avatar.render.mesh.rasterize_mesh`: normals, textures, Lambert.

Conventions: colours in 0..1, channels last. UVs follow OBJ: ``u`` to the right and ``v``
up, both in 0..1 over the whole texture, so ``v = 1`` is the *top* row of the texture
image (row 0) and ``v = 0`` its bottom edge; texel ``(r, c)`` of an ``Ht x Wt`` texture
has its centre at ``u = (c + 0.5) / Wt``, ``v = 1 - (r + 0.5) / Ht``. Lighting is in
camera space (OpenCV: x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .mesh import DEFAULT_MAX_CANDIDATES, MeshRaster, _camera_vertices, interpolate, rasterize_mesh

__all__ = [
    "MeshRender",
    "face_normals",
    "vertex_normals",
    "sample_texture",
    "lambert_shade",
    "render_mesh",
]

HEADLIGHT = (0.0, 0.0, -1.0)  # toward the camera: light from the viewer


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit face normals ``[..., F, 3]`` (right-hand rule) of vertices ``[..., V, 3]``."""
    return F.normalize(_face_cross(vertices, faces.long()), dim=-1)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals ``[..., V, 3]`` of vertices ``[..., V, 3]``.

    Each face adds its unnormalised cross product (twice its area times its unit normal)
    to its three vertices. Vertices on no face get a zero normal.
    """
    faces = faces.long()
    cross = _face_cross(vertices, faces)  # [..., F, 3]
    lead = vertices.shape[:-2]
    # Flat (vertex, component) slots of each face corner: [F * 3 corners * 3 components].
    slots = (faces[:, :, None] * 3 + torch.arange(3, device=faces.device)).reshape(-1)
    values = cross.unsqueeze(-2).expand(*cross.shape[:-1], 3, 3).reshape(*lead, -1)
    normals = vertices.new_zeros(*lead, vertices.shape[-2] * 3)
    normals = normals.scatter_add(-1, slots.expand(*lead, -1), values)
    return F.normalize(normals.view(vertices.shape), dim=-1)


def sample_texture(
    texture: Tensor,  # [Ht, Wt, C] or [B, Ht, Wt, C] (B may be 1)
    uv: Tensor,  # [B, H, W, 2], OBJ convention (u right, v up)
    wrap: str = "clamp",
) -> Tensor:
    """Bilinear texture lookup ``[B, H, W, C]`` (differentiable w.r.t. texture and uv).

    ``wrap="clamp"`` repeats the border texels outside 0..1; ``"repeat"`` wraps the UVs
    into 0..1 first (filtering does not blend across the wrap line).
    """
    if uv.dim() != 4 or uv.shape[-1] != 2:
        raise ValueError(f"uv must be [B, H, W, 2], got {tuple(uv.shape)}")
    if texture.dim() == 3:
        texture = texture[None]
    if texture.dim() != 4 or texture.shape[0] not in (1, uv.shape[0]):
        raise ValueError(
            f"texture must be [Ht, Wt, C] or [B, Ht, Wt, C] with B={uv.shape[0]}, got {tuple(texture.shape)}"
        )
    if not texture.is_floating_point():
        raise TypeError(f"texture must be floating point (0..1), got {texture.dtype}")
    if wrap == "repeat":
        uv = uv - torch.floor(uv)
    elif wrap != "clamp":
        raise ValueError(f"wrap must be 'clamp' or 'repeat', got {wrap!r}")
    uv = uv.to(texture.dtype)
    grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], dim=-1)
    image = texture.permute(0, 3, 1, 2).expand(uv.shape[0], -1, -1, -1)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def lambert_shade(
    normals: Tensor,  # [..., 3] unit normals
    light_dir: Tensor | tuple = HEADLIGHT,  # [3] or broadcastable [..., 3], toward the light
    ambient: float = 0.3,
) -> Tensor:
    """Lambert shading factor ``[..., 1]`` = ``ambient + (1 - ambient) * max(0, n . l)``.

    ``light_dir`` points from the surface toward the light (normalised here); the
    default is a headlight, ``(0, 0, -1)`` in the OpenCV camera.
    """
    light = torch.as_tensor(light_dir, dtype=normals.dtype, device=normals.device)
    light = F.normalize(light, dim=-1)
    cosine = (normals * light).sum(-1, keepdim=True).clamp_min(0.0)
    return ambient + (1.0 - ambient) * cosine


@dataclass
class MeshRender:
    """Output of :func:`render_mesh`: ``image [B, H, W, 3]`` in 0..1 with the background
    colour where ``mask [B, H, W]`` is False, ``depth [B, H, W]`` (camera z, 0 for
    background) and the full :class:`MeshRaster`."""

    image: Tensor
    mask: Tensor
    depth: Tensor
    raster: MeshRaster


def render_mesh(
    vertices: Tensor,  # [B, V, 3] or [V, 3]
    faces: Tensor,  # [F, 3]
    K: Tensor,  # [B, 3, 3] or [3, 3]
    width: int,
    height: int,
    viewmats: Tensor | None = None,  # [B, 4, 4] or [4, 4] world-to-camera
    *,
    colors: Tensor | tuple | None = None,  # [3] flat, [V, 3] or [B, V, 3] per vertex
    texture: Tensor | None = None,  # [Ht, Wt, 3] or [B, Ht, Wt, 3], 0..1
    uvs: Tensor | None = None,  # [T, 2] OBJ texture coordinates
    uv_faces: Tensor | None = None,  # [F, 3] indices into uvs (default: faces)
    texture_wrap: str = "clamp",  # "clamp" | "repeat" (e.g. multi-tile UVs beyond 0..1)
    shading: str = "smooth",  # "smooth" (vertex normals) | "flat" (face normals) | "none"
    light_dir: Tensor | tuple = HEADLIGHT,
    ambient: float = 0.3,
    background: Tensor | tuple | float = 0.0,  # [3], [B, 3] or a grey level
    near_plane: float = 0.01,
    cull_backfaces: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> MeshRender:
    """Render a mesh as an RGB image: flat, per-vertex or UV-textured albedo, Lambert-shaded.

    The albedo is the texture when given (sampled at ``uvs``/``uv_faces``, which may
    differ from ``faces`` at UV seams), else ``colors``, else light grey. Normals and
    ``light_dir`` are in camera space. See :func:`rasterize_mesh` for cameras and
    :func:`sample_texture` for the UV convention.
    """
    raster = rasterize_mesh(
        vertices, faces, K, width, height, viewmats,
        near_plane=near_plane, cull_backfaces=cull_backfaces, max_candidates=max_candidates,
    )
    verts_cam, B = _camera_vertices(vertices, K, viewmats)
    dtype, device = verts_cam.dtype, verts_cam.device
    faces = faces.long().to(device)

    if texture is not None:
        if uvs is None:
            raise ValueError(
                "render_mesh: a texture needs uvs [T, 2] (and uv_faces when they differ from faces)"
            )
        uv = interpolate(uvs.to(dtype), faces if uv_faces is None else uv_faces, raster)
        albedo = sample_texture(texture.to(dtype), uv, wrap=texture_wrap)
    else:
        colors = torch.as_tensor((0.8, 0.8, 0.8) if colors is None else colors, dtype=dtype, device=device)
        if colors.dim() == 1:
            albedo = colors.expand(B, height, width, colors.shape[0])
        else:
            albedo = interpolate(colors, faces, raster)

    if shading == "smooth":
        normals = F.normalize(interpolate(vertex_normals(verts_cam, faces), faces, raster), dim=-1)
    elif shading == "flat":
        fn = face_normals(verts_cam, faces)  # [B, F, 3]
        tid = raster.triangle_id.clamp_min(0).reshape(B, -1, 1).expand(-1, -1, 3)
        normals = fn.gather(1, tid).reshape(B, height, width, 3)
    elif shading != "none":
        raise ValueError(f"shading must be 'smooth', 'flat' or 'none', got {shading!r}")
    color = albedo if shading == "none" else albedo * lambert_shade(normals, light_dir, ambient)

    bg = torch.as_tensor(background, dtype=dtype, device=device)
    bg = bg.reshape(-1, 1, 1, bg.shape[-1]) if bg.dim() else bg
    image = torch.where(raster.mask[..., None], color.clamp(0.0, 1.0), bg)
    return MeshRender(image=image, mask=raster.mask, depth=raster.depth, raster=raster)


def _face_cross(vertices: Tensor, faces: Tensor) -> Tensor:
    v0, v1, v2 = (vertices.index_select(-2, faces[:, k]) for k in range(3))
    return torch.cross(v1 - v0, v2 - v0, dim=-1)

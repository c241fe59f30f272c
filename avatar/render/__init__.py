"""Rendering: Gaussian rasterization (pure torch and gsplat CUDA backends) and a small mesh rasterizer.

Public entry points: :func:`rasterization` (the gsplat 1.5 signature; see DESIGN.md) and
:func:`rasterize_mesh` / :func:`render_mesh` (z-buffered triangles, barycentrics, shading).
"""

from .mesh import MeshRaster, interpolate, rasterize_mesh
from .mesh_shade import MeshRender, face_normals, lambert_shade, render_mesh, sample_texture, vertex_normals
from .rasterization import gsplat_status, rasterization, resolve_backend
from .sh import eval_sh, num_sh_bases, sh_colors

__all__ = [
    "MeshRaster", "MeshRender", "eval_sh", "face_normals", "gsplat_status", "interpolate", "lambert_shade",
    "num_sh_bases", "rasterization", "rasterize_mesh", "render_mesh", "resolve_backend", "sample_texture", "sh_colors",
    "vertex_normals",
]

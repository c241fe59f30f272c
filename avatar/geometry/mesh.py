"""Triangle-mesh operations: normals, per-triangle local frames, barycentric points.

Conventions: ``vertices`` are ``(..., V, 3)`` float tensors, ``faces`` are ``(F, 3)``
long tensors of vertex indices, counter-clockwise seen from the side the normal
points to (right-hand rule: ``n ∝ (v1 - v0) × (v2 - v0)``). Any leading batch
dimensions of ``vertices`` are carried through. Device and dtype follow the inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def face_vertices(vertices: Tensor, faces: Tensor) -> Tensor:
    """Corner positions ``(..., F, 3, 3)`` (corner, xyz) of every triangle.

    Args:
        vertices: ``(..., V, 3)``.
        faces: ``(F, 3)`` long.
    """
    assert vertices.shape[-1] == 3, f"vertices must be (..., V, 3), got {tuple(vertices.shape)}"
    assert faces.ndim == 2 and faces.shape[-1] == 3, f"faces must be (F, 3), got {tuple(faces.shape)}"
    return vertices[..., faces, :]


def face_normals(vertices: Tensor, faces: Tensor, normalize: bool = True, eps: float = 1e-12) -> Tensor:
    """Triangle normals ``(..., F, 3)``; unit length unless ``normalize=False``.

    Without normalisation the length is twice the triangle's area.
    """
    tri = face_vertices(vertices, faces)
    n = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(eps) if normalize else n


def face_areas(vertices: Tensor, faces: Tensor) -> Tensor:
    """Triangle areas ``(..., F)`` in squared units of ``vertices``."""
    return 0.5 * face_normals(vertices, faces, normalize=False).norm(dim=-1)


def vertex_normals(vertices: Tensor, faces: Tensor, eps: float = 1e-12) -> Tensor:
    """Unit vertex normals ``(..., V, 3)``: area-weighted mean of the incident face normals."""
    fn = face_normals(vertices, faces, normalize=False)  # [..., F, 3], length = 2 * area
    vn = torch.zeros_like(vertices)
    for corner in range(3):
        vn = vn.index_add(-2, faces[:, corner], fn)
    return vn / vn.norm(dim=-1, keepdim=True).clamp_min(eps)


def triangle_frames(vertices: Tensor, faces: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """Local frame of every triangle, for binding points (e.g. Gaussians) to a mesh.

    The frame of triangle ``(v0, v1, v2)``:

    - origin: the centroid ``(v0 + v1 + v2) / 3``;
    - rotation: columns ``(t, b, n)`` with ``t`` the unit edge ``v0 -> v1``, ``n`` the unit
      normal (right-hand rule) and ``b = n × t`` (in the triangle's plane, toward ``v2``),
      so that ``t × b = n`` and ``det = +1``;
    - scale: the mean of the three edge lengths (same units as ``vertices``).

    A point with local coordinates ``p`` (scaled units) sits at
    ``origin + scale * rotation @ p`` in the mesh's space; this is the frame of
    GaussianAvatars' mesh binding up to the choice of in-plane axis and scale.

    Args:
        vertices: ``(..., V, 3)``.
        faces: ``(F, 3)`` long.

    Returns:
        origin ``(..., F, 3)``, rotation ``(..., F, 3, 3)``, scale ``(..., F)``.
    """
    tri = face_vertices(vertices, faces)
    v0, v1, v2 = tri.unbind(-2)
    e01, e12, e20 = v1 - v0, v2 - v1, v0 - v2
    t = e01 / e01.norm(dim=-1, keepdim=True).clamp_min(eps)
    n = torch.cross(e01, v2 - v0, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = torch.cross(n, t, dim=-1)
    rotation = torch.stack((t, b, n), dim=-1)
    scale = (e01.norm(dim=-1) + e12.norm(dim=-1) + e20.norm(dim=-1)) / 3
    return tri.mean(dim=-2), rotation, scale


def interpolate_barycentric(values: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
    """Per-vertex ``values`` ``(..., V, C)`` at barycentric points: ``(..., P, C)``.

    Args:
        values: ``(..., V, C)``, e.g. vertex positions.
        faces: ``(F, 3)`` long.
        face_idx: ``(P,)`` long, the triangle of each point.
        bary: ``(P, 3)`` barycentric weights of the triangle's corners (rows sum to 1).
    """
    assert face_idx.ndim == 1 and bary.shape == face_idx.shape + (3,), (
        f"face_idx must be (P,) and bary (P, 3), got {tuple(face_idx.shape)} and {tuple(bary.shape)}"
    )
    corners = values[..., faces[face_idx], :]  # [..., P, 3, C]
    return (corners * bary.to(values.dtype)[..., None]).sum(dim=-2)


def sample_barycentric(
    n: int, faces: Tensor, weights: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random points on a mesh as ``(face_idx (n,), bary (n, 3))``, uniform within each triangle.

    Triangles are drawn with probability proportional to ``weights`` ``(F,)`` (e.g.
    :func:`face_areas` for a uniform density over the surface), or uniformly when None.
    ``bary`` has the dtype of ``weights`` (float32 when None) and the device of ``faces``.
    """
    device = faces.device
    dtype = weights.dtype if weights is not None else torch.float32
    probs = weights if weights is not None else torch.ones(faces.shape[0], device=device, dtype=dtype)
    face_idx = torch.multinomial(probs, n, replacement=True, generator=generator)
    u, v = torch.rand(2, n, device=device, dtype=dtype, generator=generator)
    flip = u + v > 1  # fold the unit square onto the triangle
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    return face_idx, torch.stack((1 - u - v, u, v), dim=-1)

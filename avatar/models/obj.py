"""Fast Wavefront OBJ parsing with numpy (one pass over the text, no per-number Python loop).

Only what parametric-model assets need: ``v`` positions, ``vt`` texture coordinates,
polygonal ``f`` records (``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn`` corners, 1-based or
negative indices) and ``usemtl`` groups. Polygons are fan-triangulated, which keeps the
OBJ's winding (counter-clockwise = front) on every triangle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ObjMesh:
    """A polygon mesh read from an OBJ file; indices are 0-based.

    Attributes:
        vertices: ``(V, 3)`` float64 positions, in the file's units.
        uvs: ``(T, 2)`` float64 texture coordinates (``(0, 2)`` if none).
        faces: ``(F, 3)`` int64 triangle vertex indices (fan-triangulated polygons).
        uv_faces: ``(F, 3)`` int64 triangle uv indices, or None when the file has no ``vt`` corners.
        polygon: ``(F,)`` int64 source polygon of every triangle.
        material: ``(F,)`` int64 index into ``materials`` (-1 before any ``usemtl``).
        materials: material names in order of first use.
    """

    vertices: np.ndarray
    uvs: np.ndarray
    faces: np.ndarray
    uv_faces: np.ndarray | None
    polygon: np.ndarray
    material: np.ndarray
    materials: list[str]


def _records(lines: list[bytes], tag: bytes) -> list[bytes]:
    n = len(tag)
    return [line[n:] for line in lines if line[:n] == tag]


def _floats(records: list[bytes], width: int, what: str) -> np.ndarray:
    if not records:
        return np.zeros((0, width))
    values = np.array(b" ".join(records).split(), dtype=np.float64)
    if values.size != width * len(records):
        # Rare extra columns (e.g. vertex colours "v x y z r g b"): slow path, per record.
        values = np.array([r.split()[:width] for r in records], dtype=np.float64)
    if values.size != width * len(records):
        raise ValueError(f"OBJ {what} records must have {width} numbers each")
    return values.reshape(len(records), width)


def parse_obj_vertices(text: bytes) -> np.ndarray:
    """Only the ``v`` positions ``(V, 3)`` float64 of an OBJ file's bytes (the fast path
    for blendshape targets that share the base mesh's topology).

    When the ``v`` records form one contiguous block (as exporters write them) the block
    is parsed in one numpy call; otherwise records are gathered line by line.
    """
    start = 0 if text.startswith(b"v ") else text.find(b"\nv ") + 1
    last = text.rfind(b"\nv ")
    if start > 0 or text.startswith(b"v "):
        end = text.find(b"\n", max(last, start) + 1)
        block = text[start : len(text) if end < 0 else end].rstrip(b"\r")
        lines = block.count(b"\n") + 1
        if block.count(b"\nv ") + 1 == lines:  # every line of the block is a "v" record
            values = np.array(block.replace(b"v ", b" ").split(), dtype=np.float64)
            if values.size == 3 * lines:
                return values.reshape(lines, 3)
    return _floats(_records(text.split(b"\n"), b"v "), 3, "v")


def _corner_indices(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertex and uv indices (1-based/negative as written) of ``v/vt/vn`` corner tokens."""
    parts = np.char.partition(tokens, b"/")
    v = parts[:, 0].astype(np.int64)
    rest = parts[:, 2]
    if not (np.char.str_len(rest) > 0).any():
        return v, None
    vt = np.char.partition(rest, b"/")[:, 0]
    if (np.char.str_len(vt) == 0).any():
        return v, None  # "v//vn" or mixed: no texture corners
    return v, vt.astype(np.int64)


def _resolve(index: np.ndarray, count: int, what: str) -> np.ndarray:
    out = np.where(index < 0, index + count, index - 1)
    if out.size and (out.min() < 0 or out.max() >= count):
        raise ValueError(f"OBJ face references {what} index outside 1..{count}")
    return out


def fan_triangulate(sizes: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles ``(T, 3)`` and source polygon ``(T,)`` from polygons as flat corner lists.

    Polygon ``p`` with corners ``c0..c{k-1}`` becomes ``(c0, ci, ci+1)`` for ``i = 1..k-2``,
    keeping the polygon's winding.

    Args:
        sizes: ``(P,)`` corner count per polygon (>= 3).
        corners: ``(sum(sizes), ...)`` per-corner values, polygon after polygon.
    """
    if (sizes < 3).any():
        raise ValueError("OBJ polygons need at least 3 corners")
    start = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    n_tri = sizes - 2
    polygon = np.repeat(np.arange(sizes.size), n_tri)
    # i = 1..k-2 within each polygon
    first_tri = np.concatenate(([0], np.cumsum(n_tri)[:-1]))
    i = np.arange(polygon.size) - np.repeat(first_tri, n_tri) + 1
    base = start[polygon]
    tri = np.stack((corners[base], corners[base + i], corners[base + i + 1]), axis=1)
    return tri, polygon


def parse_obj(text: bytes) -> ObjMesh:
    """Parse an OBJ file's bytes (see module doc for what is read)."""
    lines = text.split(b"\n")
    vertices = _floats(_records(lines, b"v "), 3, "v")
    uv_records = [r.split()[:2] for r in _records(lines, b"vt ")]
    uvs = np.array(uv_records, dtype=np.float64).reshape(-1, 2)

    materials: list[str] = []
    face_tokens: list[bytes] = []
    sizes: list[int] = []
    face_material: list[int] = []
    current = -1
    for line in lines:
        if line[:2] == b"f ":
            tokens = line[2:].split()
            face_tokens.extend(tokens)
            sizes.append(len(tokens))
            face_material.append(current)
        elif line[:7] == b"usemtl ":
            name = line[7:].strip().decode()
            if name not in materials:
                materials.append(name)
            current = materials.index(name)
    if not sizes:
        raise ValueError("OBJ has no faces")
    size_arr = np.array(sizes, dtype=np.int64)
    v_idx, vt_idx = _corner_indices(np.array(face_tokens))
    v_idx = _resolve(v_idx, len(vertices), "vertex")
    faces, polygon = fan_triangulate(size_arr, v_idx)
    uv_faces = None
    if vt_idx is not None:
        uv_faces, _ = fan_triangulate(size_arr, _resolve(vt_idx, len(uvs), "texture coordinate"))
    material = np.array(face_material, dtype=np.int64)[polygon]
    return ObjMesh(vertices, uvs, faces, uv_faces, polygon, material, materials)

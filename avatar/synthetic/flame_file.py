"""A small head in FLAME's file format, made from ICT-FaceKit (FLAME itself is licence-gated).

Tests and demos need a FLAME model whose renders MediaPipe takes for a face, and the real
one cannot be fetched. :func:`write_flame_like` builds one from the ICT model and writes it
with the released files' keys and layouts, so that ``avatar.models.load("flame",
model_path=..., masks_path=...)`` reads it exactly as it reads ``generic_model.pkl``:

- ``v_template (V, 3)``, ``f (F, 3)`` uint32: ICT's face, head-and-neck and eyeball parts,
  decimated by vertex clustering (:func:`cluster_vertices`: each cell of a grid keeps the
  vertex nearest its cells' mean, so every vertex is an ICT vertex and ICT's blendshapes
  carry over exactly), about 6,000 vertices (FLAME has 5,023);
- ``shapedirs (V, 3, 300 + E)``: ICT's first ``num_shape`` identity modes, zero columns up
  to FLAME's 300 identity components, then ``E`` expression components, each a sum of ICT
  blendshapes (:data:`EXPRESSION_SHAPES`: jaw open, smile, blink, brows up, pucker, funnel);
- five joints as FLAME's (root, neck, jaw, left eye, right eye; ``kintree_table`` with the
  released files' root marker): a sparse ``J_regressor`` averaging vertices (the eyeballs for
  the eyes, rings around the neck for root and neck, points beside the jaw hinge for the
  jaw, the hinge fitted to ICT's ``jawOpen``), ``weights`` that put the eyeballs on the eyes,
  the region ``jawOpen`` moves on the jaw, the lower neck on the root and the rest on the
  neck joint; ``posedirs (V, 3, 36)`` zeros;
- a masks file in ``FLAME_masks.pkl``'s layout (name -> vertex indices): ``face``,
  ``left_eyeball``, ``right_eyeball``, ``neck``;
- a 68-landmark embedding in ``landmark_embedding.npy``'s layout (``full_lmk_faces_idx
  [1, 68]``, ``full_lmk_bary_coords [1, 68, 3]``): ICT's iBUG-68 landmarks at the closest
  points of the decimated surface;
- texture coordinates as FLAME's texture-space ``.npz`` (``vt [T, 2]``, ``ft [F, 3]``):
  ICT's, each corner taking its vertex's UV in its source triangle's chart (:func:`carry_uvs`).

The model and masks are plain pickles of numpy arrays and a scipy sparse matrix (protocol 2,
as the released files), the landmarks a ``.npy`` holding a dict; all are written atomically
and cached by a key of the ICT mesh and the options.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from avatar.io.atomic import atomic_write
from avatar.models.assets import atomic_savez
from avatar.models.flame import JOINT_NAMES, SHAPE_SPACE_DIM

FORMAT = 1
ROOT_PARENT = np.uint32(4294967295)  # how the released files mark the root's parent
# Expression components, each the sum of these ICT blendshapes.
EXPRESSION_SHAPES: tuple[tuple[str, ...], ...] = (
    ("jawOpen",),
    ("mouthSmile_L", "mouthSmile_R"),
    ("eyeBlink_L", "eyeBlink_R"),
    ("browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R"),
    ("mouthPucker",),
    ("mouthFunnel",),
)
PARTS = ("face", "head_and_neck", "eyeball_left", "eyeball_right")  # the ICT parts kept


@dataclass(frozen=True)
class FlameLikeConfig:
    """Options of :func:`write_flame_like` (lengths in metres).

    Attributes:
        num_shape: ICT identity modes copied into the first identity columns (<= 100).
        expressions: the expression components (sums of ICT blendshapes).
        face_cell, head_cell, eyeball_cell: decimation grid of the face, head-and-neck and
            eyeball parts.
    """

    num_shape: int = 10
    expressions: tuple[tuple[str, ...], ...] = EXPRESSION_SHAPES
    face_cell: float = 0.0045
    head_cell: float = 0.007
    eyeball_cell: float = 0.004


@dataclass(frozen=True)
class FlameLikeFiles:
    """What :func:`write_flame_like` wrote, and the options that load all of it."""

    model_path: Path
    masks_path: Path
    landmarks_path: Path
    uv_path: Path
    num_shape: int
    num_expression: int

    def options(self, masks: bool = False, landmarks: bool = False) -> dict:
        """Keyword options of ``avatar.models.load("flame", ...)`` for this file and its texture
        coordinates (and, when asked, its masks and landmark embedding)."""
        out = {"model_path": str(self.model_path), "uv_path": str(self.uv_path), "num_shape": self.num_shape,
               "num_expression": self.num_expression}
        if masks:
            out["masks_path"] = str(self.masks_path)
        if landmarks:
            out["landmark_path"] = str(self.landmarks_path)
        return out


def cluster_vertices(vertices: np.ndarray, mask: np.ndarray, cell: float) -> np.ndarray:
    """``[V]`` vertex map that merges the ``mask``-ed vertices per cubic cell of side ``cell``
    into the one nearest the cell's mean (others map to themselves)."""
    ids = np.flatnonzero(mask)
    _, cluster = np.unique(np.floor(vertices[ids] / cell).astype(np.int64), axis=0, return_inverse=True)
    cluster = cluster.reshape(-1)
    n = int(cluster.max()) + 1
    mean = np.zeros((n, 3))
    np.add.at(mean, cluster, vertices[ids])
    mean /= np.bincount(cluster, minlength=n)[:, None]
    order = np.lexsort((((vertices[ids] - mean[cluster]) ** 2).sum(1), cluster))  # by cell, nearest first
    first = np.ones(len(order), bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    keeper = np.empty(n, np.int64)
    keeper[cluster[order][first]] = ids[order][first]
    out = np.arange(len(vertices))
    out[ids] = keeper[cluster]
    return out


def decimate(vertices: np.ndarray, faces: np.ndarray, cells: dict[str, tuple[np.ndarray, float]]):
    """Vertex clustering per part: ``(kept vertex ids [V'], faces [F', 3] into them, the source
    triangle of each [F'])``; triangles that collapse or repeat another are dropped, the others
    keep their winding."""
    merged = np.arange(len(vertices))
    keep = np.zeros(len(vertices), bool)
    for mask, cell in cells.values():
        merged[mask] = cluster_vertices(vertices, mask, cell)[mask]
        keep |= mask
    source = np.flatnonzero(keep[faces].all(1))
    tri = merged[faces[source]]
    ok = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
    tri, source = tri[ok], source[ok]
    _, first = np.unique(np.sort(tri, 1), axis=0, return_index=True)
    first = np.sort(first)
    tri, source = tri[first], source[first]
    used = np.unique(tri)
    index = np.full(len(vertices), -1, np.int64)
    index[used] = np.arange(len(used))
    return used, index[tri], source


def carry_uvs(faces: np.ndarray, uvs: np.ndarray, uv_faces: np.ndarray, kept_faces: np.ndarray,
              source: np.ndarray, max_jump: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates of a decimated mesh: ``(vt [T', 2], ft [F', 3])``.

    ``kept_faces [F', 3]`` are original vertex ids, triangle ``i`` made from original triangle
    ``source[i]``. Each corner takes, among the UVs its vertex has in the original (several
    along seams), the one nearest the UV the source triangle had at that corner, so a
    triangle stays in its source's chart; when even that one is more than ``max_jump`` away
    (the merged vertex lies across a seam), the source corner's own UV.
    """
    pairs = np.unique(np.stack((faces.reshape(-1), uv_faces.reshape(-1)), 1), axis=0)  # (vertex, uv), by vertex
    start = np.searchsorted(pairs[:, 0], kept_faces)  # [F', 3] first candidate of each corner
    count = np.searchsorted(pairs[:, 0], kept_faces, side="right") - start
    if (count == 0).any():
        raise ValueError("a kept vertex has no texture coordinate")
    wanted = uvs[uv_faces[source]]  # [F', 3, 2]
    best, best_d = pairs[start, 1], np.full(kept_faces.shape, np.inf)
    for j in range(int(count.max())):
        cand = pairs[np.minimum(start + j, len(pairs) - 1), 1]
        d = np.where(j < count, ((uvs[cand] - wanted) ** 2).sum(-1), np.inf)
        best, best_d = np.where(d < best_d, cand, best), np.minimum(d, best_d)
    best = np.where(best_d > max_jump**2, uv_faces[source], best)
    used, ft = np.unique(best, return_inverse=True)
    return uvs[used], ft.reshape(kept_faces.shape)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def rigid_fit(points: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rotation ``R [3, 3]`` and translation ``t [3]`` with ``R p + t ~ moved`` (Kabsch)."""
    pc, qc = points.mean(0), moved.mean(0)
    u, _, vt = np.linalg.svd((points - pc).T @ (moved - qc))
    R = vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
    return R, qc - R @ pc


def jaw_motion(ict) -> tuple[np.ndarray, np.ndarray]:
    """ICT's ``jawOpen`` as a rigid motion: the lower teeth move rigidly (about 25 degrees about
    the x axis, residual under 0.1 mm). Returns ``(R [3, 3], hinge [3])``: a point on the axis."""
    if "teeth" not in ict.parts:
        raise ValueError("the ICT model lacks its 'teeth' part (the jaw's motion is read from it): "
                         "load its default parts")
    names = list(ict.expression_names)
    v = ict.template.double().numpy()
    d = ict.exprdirs[..., names.index("jawOpen")].double().numpy()
    moved = np.linalg.norm(d, axis=1) * ict.parts["teeth"].vertices.numpy()
    lower = moved > 0.5 * moved.max()  # the lower teeth
    R, t = rigid_fit(v[lower], v[lower] + d[lower])
    hinge = np.linalg.lstsq(np.eye(3) - R, t, rcond=None)[0]  # R (p - c) + c: t = (I - R) c
    return R, hinge


def _ring(vertices: np.ndarray, candidates: np.ndarray, y: float, half: float = 0.008) -> np.ndarray:
    """Ids of ``candidates`` within ``half`` of height ``y`` (a ring around the neck)."""
    sel = candidates[np.abs(vertices[candidates, 1] - y) < half]
    if not len(sel):
        raise ValueError(f"no vertex near height {y:.3f} m to regress a joint from")
    return sel


def flame_like_arrays(ict, config: FlameLikeConfig | None = None) -> tuple[dict, dict, dict, dict]:
    """The FLAME-format arrays, masks, 68-landmark embedding and texture coordinates (see the
    module doc) from an ICT model (its default parts: face, head and neck, eyeballs, teeth needed)."""
    config = config or FlameLikeConfig()
    missing = [p for p in PARTS if p not in ict.parts]
    if missing:
        raise ValueError(f"the ICT model lacks the parts {missing}: load it with its default parts")
    if not 0 <= config.num_shape <= ict.num_shape:
        raise ValueError(f"num_shape must be in 0..{ict.num_shape}, got {config.num_shape}")
    with torch.no_grad():
        template = ict.template.double().numpy()
        shapedirs = ict.shapedirs.double().numpy()
        exprdirs = ict.exprdirs.double().numpy()
    masks = {n: ict.parts[n].vertices.numpy() for n in PARTS}
    cells = {"face": (masks["face"], config.face_cell), "head_and_neck": (masks["head_and_neck"], config.head_cell),
             "eyeball_left": (masks["eyeball_left"], config.eyeball_cell),
             "eyeball_right": (masks["eyeball_right"], config.eyeball_cell)}
    used, faces, source = decimate(template, ict.faces.numpy(), cells)
    vt, ft = carry_uvs(ict.faces.numpy(), ict.uvs.numpy(), ict.uv_faces.numpy(), used[faces], source)
    v = template[used]
    V = len(used)
    names = list(ict.expression_names)
    expression = np.stack([sum(exprdirs[used][..., names.index(n)] for n in group) for group in config.expressions], -1)
    dirs = np.zeros((V, 3, SHAPE_SPACE_DIM + expression.shape[-1]))
    dirs[..., : config.num_shape] = shapedirs[used][..., : config.num_shape]
    dirs[..., SHAPE_SPACE_DIM:] = expression
    part = {n: np.flatnonzero(m[used]) for n, m in masks.items()}
    skin = np.concatenate((part["face"], part["head_and_neck"]))

    # Joints: 0 root, 1 neck, 2 jaw, 3 left eye, 4 right eye (FLAME's order).
    R_jaw, hinge = jaw_motion(ict)
    bottom = v[part["head_and_neck"], 1].min()
    neck_y = 0.5 * (bottom + hinge[1])
    behind_chin = skin[v[skin, 2] < hinge[2] + 0.04]
    near_hinge = skin[(np.abs(v[skin, 1] - hinge[1]) < 0.01) & (np.abs(v[skin, 2] - hinge[2]) < 0.015)]
    groups = [_ring(v, skin, bottom + 0.01), _ring(v, behind_chin, neck_y),
              near_hinge if len(near_hinge) else _ring(v, behind_chin, hinge[1]),
              part["eyeball_left"], part["eyeball_right"]]
    regressor = np.zeros((len(JOINT_NAMES), V))
    for j, ids in enumerate(groups):
        regressor[j, ids] = 1.0 / len(ids)

    # Skinning: the eyes rigid on their joints; each vertex on the jaw by the share of the rigid
    # jaw motion its jawOpen displacement follows; the lower neck on the root, the rest on the neck.
    jaw_open = exprdirs[used][..., names.index("jawOpen")]
    rigid = (v - hinge) @ R_jaw.T + hinge - v
    w_jaw = np.clip((jaw_open * rigid).sum(1) / np.maximum((rigid * rigid).sum(1), 1e-12), 0.0, 1.0)
    w_root = _smoothstep((neck_y - v[:, 1]) / max(neck_y - bottom, 1e-6))
    weights = np.zeros((V, len(JOINT_NAMES)))
    weights[:, 0] = w_root
    weights[:, 1] = (1 - w_root) * (1 - w_jaw)
    weights[:, 2] = (1 - w_root) * w_jaw
    for j, eye in ((3, "eyeball_left"), (4, "eyeball_right")):
        weights[part[eye]] = 0.0
        weights[part[eye], j] = 1.0

    arrays = {
        "v_template": v,
        "f": faces.astype(np.uint32),
        "shapedirs": dirs.astype(np.float32),
        "posedirs": np.zeros((V, 3, (len(JOINT_NAMES) - 1) * 9)),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": weights,
        "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], np.arange(len(JOINT_NAMES))], dtype=np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    flame_masks = {"face": part["face"], "neck": part["head_and_neck"], "left_eyeball": part["eyeball_left"],
                   "right_eyeball": part["eyeball_right"]}
    return arrays, flame_masks, landmark_embedding(ict, v, faces), {"vt": vt, "ft": ft}


def landmark_embedding(ict, vertices: np.ndarray, faces: np.ndarray) -> dict:
    """ICT's 68 landmarks on its neutral mesh, at the closest points of ``vertices``/``faces``,
    in ``landmark_embedding.npy``'s keys."""
    from avatar.tracking.embedding import closest_surface_points  # noqa: PLC0415

    with torch.no_grad():
        points = ict.landmarks(ict.template[None])[0].double()
    tri, bary = closest_surface_points(points, torch.as_tensor(vertices), torch.as_tensor(faces))
    return {"full_lmk_faces_idx": tri.numpy().astype(np.int64)[None],
            "full_lmk_bary_coords": bary.numpy().astype(np.float64)[None]}


def _key(ict, config: FlameLikeConfig) -> str:
    h = hashlib.sha256(f"{FORMAT}:{sorted(asdict(config).items())}".encode())
    h.update(np.ascontiguousarray(ict.template.float().numpy()).tobytes())
    h.update(np.ascontiguousarray(ict.faces.numpy()).tobytes())
    return h.hexdigest()[:12]


def _atomic_write(path: Path, obj, npy: bool = False) -> None:
    """Pickle ``obj`` (protocol 2), or ``np.save`` it as an object array when ``npy``, atomically."""
    if npy:
        atomic_write(path, lambda f: np.save(f, obj, allow_pickle=True))
    else:
        atomic_write(path, lambda f: pickle.dump(obj, f, protocol=2))


def write_flame_like(out_dir: str | os.PathLike, ict=None, config: FlameLikeConfig | None = None) -> FlameLikeFiles:
    """Write (or find, when already written with the same ICT mesh and options) the FLAME-format
    model, masks and landmark files in ``out_dir``. ``ict``: the ICT model (default: ``avatar.models.load("ict")``)."""
    config = config or FlameLikeConfig()
    if ict is None:
        import avatar.models  # noqa: PLC0415

        ict = avatar.models.load("ict")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = _key(ict, config)
    stem = out / f"flame_like-{key}"
    files = FlameLikeFiles(Path(f"{stem}.pkl"), Path(f"{stem}_masks.pkl"), Path(f"{stem}_landmarks.npy"),
                           Path(f"{stem}_uv.npz"), config.num_shape, len(config.expressions))
    if not all(p.is_file() for p in (files.model_path, files.masks_path, files.landmarks_path, files.uv_path)):
        arrays, masks, landmarks, uv = flame_like_arrays(ict, config)
        _atomic_write(files.masks_path, masks)
        _atomic_write(files.landmarks_path, landmarks, npy=True)
        atomic_savez(files.uv_path, **uv)
        _atomic_write(files.model_path, arrays)  # last: its presence means all are there
    return files


__all__ = ["EXPRESSION_SHAPES", "FlameLikeConfig", "FlameLikeFiles", "cluster_vertices", "decimate",
           "carry_uvs", "flame_like_arrays", "jaw_motion", "landmark_embedding", "rigid_fit", "write_flame_like"]

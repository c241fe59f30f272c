"""ICT-FaceKit (ICT Face Model Light, MIT licence): converter from the raw OBJ archive
and loader of the converted cache.

The raw model (folder ``FaceXModel/`` of github.com/ICT-VGL/ICT-FaceKit) is a neutral
mesh ``generic_neutral_mesh.obj`` plus 100 identity meshes ``identityNNN.obj`` and 53
expression meshes (``jawOpen.obj``, ...), all with the same topology: a blendshape is
``file - neutral``. Units are centimetres, +y up, +z toward the viewer; 26,719 vertices,
mostly quads, UVs with seams.

Conversion (once, a few seconds): OBJ text parsed with numpy, quads fan-triangulated
(winding kept: counter-clockwise from outside, normals point outward), centimetres ->
metres, the chosen parts kept and re-indexed, identity and expression deltas stored as
float16 (template float32) in an uncompressed ``.npz`` in the cache folder.

ICT has no skeleton: jaw and eyes move through expression blendshapes; the model takes a
global rotation (about the origin, which lies inside the head) and translation.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import tarfile
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from avatar.models.assets import AssetNotFoundError, atomic_savez, find_asset, fingerprint, user_cache_dir
from avatar.models.engine import BlendshapeModel, ModelData, vertex_landmark_embedding
from avatar.models.obj import parse_obj, parse_obj_vertices
from avatar.models.profile import ARKIT_ANTAGONISTS, ARKIT_GAZE, TrackingProfile

log = logging.getLogger(__name__)

CM_TO_M = 0.01
NUM_VERTICES = 26_719
NUM_IDENTITIES = 100
CACHE_FORMAT = 1

# Vertex ranges (inclusive) of the 17 parts, from the upstream README; they match the
# OBJ's material groups and connected components.
PART_RANGES: dict[str, tuple[int, int]] = {
    "face": (0, 9408),
    "head_and_neck": (9409, 11247),
    "mouth_socket": (11248, 13293),
    "eye_socket_left": (13294, 13677),
    "eye_socket_right": (13678, 14061),
    "gums_and_tongue": (14062, 17038),
    "teeth": (17039, 21450),
    "eyeball_left": (21451, 23020),
    "eyeball_right": (23021, 24590),
    "lacrimal_fluid_left": (24591, 24794),
    "lacrimal_fluid_right": (24795, 24998),
    "eye_blend_left": (24999, 25022),
    "eye_blend_right": (25023, 25046),
    "eye_occlusion_left": (25047, 25198),
    "eye_occlusion_right": (25199, 25350),
    "eyelashes_left": (25351, 26034),
    "eyelashes_right": (26035, 26718),
}
# Names that select both sides at once.
PART_GROUPS: dict[str, tuple[str, ...]] = {
    group: (f"{side_name}_left", f"{side_name}_right")
    for group, side_name in {
        "eye_sockets": "eye_socket",
        "eyeballs": "eyeball",
        "lacrimal_fluid": "lacrimal_fluid",
        "eye_blend": "eye_blend",
        "eye_occlusion": "eye_occlusion",
        "eyelashes": "eyelashes",
    }.items()
}
# Default: the surfaces a head avatar shows; drops eyelashes, lacrimal fluid, eye blend and
# eye occlusion (thin transparent shells for offline rendering).
DEFAULT_PARTS: tuple[str, ...] = (
    "face", "head_and_neck", "mouth_socket", "eye_sockets", "gums_and_tongue", "teeth", "eyeballs",
)

# The 68 Multi-PIE landmarks (iBUG order: jaw line 0-16, brows, nose, eyes, mouth) as
# vertex indices, from the upstream README (also ``idx_to_landmark_verts`` in vertex_indices.json).
LANDMARK_VERTICES: tuple[int, ...] = (
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147,
    4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695,
    2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
)

# The 53 expressions in a fixed order: the order of "expressions" in the model's
# vertex_indices.json (alphabetical, left before right). ARKit-style names; ICT splits
# browInnerUp into _L/_R and has no tongueOut.
EXPRESSION_NAMES: tuple[str, ...] = (
    "browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
    "cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "eyeBlink_L", "eyeBlink_R",
    "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R",
    "eyeLookUp_L", "eyeLookUp_R", "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimple_L", "mouthDimple_R",
    "mouthFrown_L", "mouthFrown_R", "mouthFunnel", "mouthLeft", "mouthLowerDown_L", "mouthLowerDown_R",
    "mouthPress_L", "mouthPress_R", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmile_L", "mouthSmile_R", "mouthStretch_L",
    "mouthStretch_R", "mouthUpperUp_L", "mouthUpperUp_R", "noseSneer_L", "noseSneer_R",
)

# What face tracking needs from ICT: its face, head and eyeballs rendered for the landmark
# calibration, eyeballs that stay still (gaze is the ARKit eyeLook* shapes, which only move
# the lids), the jaw as a blendshape, activations in 0..1.
TRACKING_PROFILE = TrackingProfile(
    calibration_parts=("face", "head_and_neck", "eyeballs"),
    eyeball_parts=("eyeball_right", "eyeball_left"),
    lid_part="face",
    gaze=ARKIT_GAZE,
    jaw_blendshape="jawOpen",
    antagonists=ARKIT_ANTAGONISTS,
    blinks=("eyeBlink_R", "eyeBlink_L"),
    expression_bounds=(0.0, 1.0),
)

# Where the raw model may be, relative to each lookup root (see avatar.models.assets).
SOURCE_NAMES = (
    "FaceXModel.tar.xz", "FaceXModel", "ICT-FaceKit.tar.gz",
    "ict-facekit/FaceXModel.tar.xz", "ict-facekit/FaceXModel", "ict-facekit/ICT-FaceKit.tar.gz",
)
FETCH_HINT = (
    "Get ICT-FaceKit (MIT licence) with `python data_tools/fetch_ict.py` (downloads it into the user "
    "cache), or set AVATAR_ASSETS to a folder holding FaceXModel.tar.xz or an extracted FaceXModel/, "
    "or pass asset_path=... to avatar.models.load('ict', ...)."
)


@dataclass
class ICTConfig:
    """Options of ``avatar.models.load("ict", ...)``.

    Attributes:
        asset_path: the raw archive / ``FaceXModel`` folder, or a folder containing one;
            None to search ``AVATAR_ASSETS`` and the user cache.
        cache_dir: where converted files go (default: the user cache's ``ict/``).
        parts: parts to keep (names of :data:`PART_RANGES` or :data:`PART_GROUPS`).
        num_shape: identity modes to use (<= 100).
        dtype: buffer dtype ("float32" or "float64").
    """

    asset_path: str | None = None
    cache_dir: str | None = None
    parts: tuple[str, ...] = DEFAULT_PARTS
    num_shape: int = NUM_IDENTITIES
    dtype: str = "float32"

    def build(self) -> BlendshapeModel:
        return load_ict(self)


def expand_parts(parts: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Part names with groups expanded, in the model's vertex order; unknown names raise."""
    names: set[str] = set()
    for p in parts:
        if p in PART_GROUPS:
            names.update(PART_GROUPS[p])
        elif p in PART_RANGES:
            names.add(p)
        else:
            known = sorted(PART_RANGES) + sorted(PART_GROUPS)
            raise ValueError(f"unknown ICT part '{p}'; known parts: {', '.join(known)}")
    return tuple(n for n in PART_RANGES if n in names)


# ---------------------------------------------------------------------------------------
# Reading the raw model


def iter_model_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """``(file name, bytes)`` of the ``FaceXModel`` OBJ/JSON files in a tar archive (any
    compression, read as a stream: no extraction) or a folder."""
    if source.is_dir():
        for p in sorted(source.iterdir()):
            if p.suffix in (".obj", ".json"):
                yield p.name, p.read_bytes()
        return
    with tarfile.open(source, "r|*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) >= 2 and parts[-2] == "FaceXModel":
                if parts[-1].endswith((".obj", ".json")):
                    yield parts[-1], tar.extractfile(member).read()


def _check_not_lfs(name: str, data: bytes) -> None:
    if data.startswith(b"version https://git-lfs"):
        raise ValueError(f"{name} is a Git LFS pointer, not the mesh: download the files themselves")


def _parse_pool(workers: int | None):
    workers = os.cpu_count() or 1 if workers is None else workers
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    # fork: the workers only run numpy on bytes; no re-import of the package per worker.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def read_raw_model(source: Path, workers: int | None = None) -> dict:
    """Parse the raw model: neutral mesh (cm), identity and expression targets (cm).

    The archive is decompressed in this process while ``workers`` processes (default: one
    per core; 0 or 1: none) parse the OBJ text.
    """
    neutral = None
    targets: dict[str, object] = {}
    pool = _parse_pool(workers)
    try:
        pending: deque[Future] = deque()
        for name, data in iter_model_files(source):
            _check_not_lfs(name, data)
            stem = name[: -len(".obj")]
            if name == "generic_neutral_mesh.obj":
                neutral = parse_obj(data)
            elif name.endswith(".obj") and (stem in EXPRESSION_NAMES or re.fullmatch(r"identity\d{3}", stem)):
                if pool is None:
                    targets[stem] = parse_obj_vertices(data)
                    continue
                targets[stem] = future = pool.submit(parse_obj_vertices, data)
                pending.append(future)
                while len(pending) > 8:  # bound the bytes waiting in the queue
                    pending.popleft().result()
        targets = {k: v.result() if isinstance(v, Future) else v for k, v in targets.items()}
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if neutral is None:
        raise ValueError(f"{source}: no FaceXModel/generic_neutral_mesh.obj inside")
    identities = [f"identity{i:03d}" for i in range(NUM_IDENTITIES)]
    missing = [n for n in identities + list(EXPRESSION_NAMES) if n not in targets]
    if missing:
        raise ValueError(f"{source}: missing ICT meshes {missing[:5]}{'...' if len(missing) > 5 else ''}")
    for n, v in targets.items():
        if v.shape != neutral.vertices.shape:
            raise ValueError(f"{source}: {n}.obj has {len(v)} vertices, the neutral mesh {len(neutral.vertices)}")
    return {
        "neutral": neutral,
        "identities": np.stack([targets[n] for n in identities], axis=-1),
        "expressions": np.stack([targets[n] for n in EXPRESSION_NAMES], axis=-1),
    }


def _outward_fraction(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Fraction of triangles whose normal points away from the vertices' centre."""
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return float(((n * (tri.mean(1) - vertices.mean(0))).sum(-1) > 0).mean())


def convert(
    source: Path, parts: tuple[str, ...] = DEFAULT_PARTS, workers: int | None = None
) -> dict[str, np.ndarray]:
    """Raw model -> the arrays of the cache file (metres; kept parts only, re-indexed)."""
    raw = read_raw_model(source, workers)
    mesh = raw["neutral"]
    if len(mesh.vertices) != NUM_VERTICES:
        raise ValueError(f"{source}: expected {NUM_VERTICES} vertices, found {len(mesh.vertices)}")
    parts = expand_parts(parts)
    vmask_all = {n: _range_mask(n) for n in parts}
    keep = np.any(np.stack(list(vmask_all.values())), axis=0)
    new_index = np.full(NUM_VERTICES, -1, dtype=np.int64)
    new_index[keep] = np.arange(keep.sum())
    face_keep = keep[mesh.faces].all(axis=1)
    faces = new_index[mesh.faces[face_keep]]
    # Outward normals on the face part (counter-clockwise OBJ winding).
    face_tris = mesh.faces[keep[mesh.faces].all(1) & (mesh.faces < PART_RANGES["face"][1] + 1).all(1)]
    if len(face_tris) and _outward_fraction(mesh.vertices, face_tris) < 0.5:
        raise ValueError(f"{source}: face normals point inward; unexpected winding")
    uv_faces = mesh.uv_faces[face_keep]
    uv_used = np.unique(uv_faces)
    uv_index = np.full(len(mesh.uvs), -1, dtype=np.int64)
    uv_index[uv_used] = np.arange(uv_used.size)
    lmk = np.asarray(LANDMARK_VERTICES)
    if (~keep[lmk]).any():
        raise ValueError("the ICT landmarks lie on the 'face' part: keep it")
    neutral = mesh.vertices
    return {
        "format": np.int64(CACHE_FORMAT),
        "template": (neutral[keep] * CM_TO_M).astype(np.float32),
        "shapedirs": ((raw["identities"][keep] - neutral[keep, :, None]) * CM_TO_M).astype(np.float16),
        "exprdirs": ((raw["expressions"][keep] - neutral[keep, :, None]) * CM_TO_M).astype(np.float16),
        "faces": faces.astype(np.int32),
        "uvs": mesh.uvs[uv_used].astype(np.float32),
        "uv_faces": uv_index[uv_faces].astype(np.int32),
        "part_names": np.array(parts),
        "part_masks": np.stack([vmask_all[n][keep] for n in parts]),
        "landmark_vertices": new_index[lmk],
        "source_vertices": np.nonzero(keep)[0],
        "source_num_vertices": np.int64(len(mesh.vertices)),
        "expression_names": np.array(EXPRESSION_NAMES),
    }


def _range_mask(part: str) -> np.ndarray:
    first, last = PART_RANGES[part]
    mask = np.zeros(NUM_VERTICES, dtype=bool)
    mask[first : last + 1] = True
    return mask


# ---------------------------------------------------------------------------------------
# Cache and loader


def find_source(asset_path: str | None = None) -> Path:
    """The raw model (see the lookup order in :mod:`avatar.models.assets`)."""
    return find_asset("ICT-FaceKit model (FaceXModel)", SOURCE_NAMES, asset_path, FETCH_HINT)


def cache_path(source: Path, parts: tuple[str, ...], cache_dir: str | Path | None = None) -> Path:
    """Where the conversion of ``source`` with ``parts`` is cached (keyed by both)."""
    import hashlib

    folder = Path(cache_dir).expanduser() if cache_dir else user_cache_dir() / "ict"
    parts_key = hashlib.sha256(",".join(expand_parts(parts)).encode()).hexdigest()[:8]
    return folder / f"ict-v{CACHE_FORMAT}-{fingerprint(source)}-{parts_key}.npz"


def converted(asset_path: str | None = None, parts=DEFAULT_PARTS, cache_dir=None) -> dict[str, np.ndarray]:
    """The converted model's arrays: read from the cache, converting first if needed."""
    source = find_source(asset_path)
    path = cache_path(source, tuple(parts), cache_dir)
    if not path.exists():
        t0 = time.perf_counter()
        atomic_savez(path, **convert(source, tuple(parts)))
        log.info("converted ICT-FaceKit %s -> %s in %.1f s", source, path, time.perf_counter() - t0)
    with np.load(path, allow_pickle=False) as f:
        return dict(f)


def model_data(arrays: dict[str, np.ndarray], num_shape: int = NUM_IDENTITIES) -> ModelData:
    """A :class:`ModelData` from converted arrays, with the first ``num_shape`` identity modes."""
    if not 0 <= num_shape <= arrays["shapedirs"].shape[-1]:
        raise ValueError(f"num_shape must be in 0..{arrays['shapedirs'].shape[-1]}, got {num_shape}")
    faces = arrays["faces"].astype(np.int64)
    lmk_faces, lmk_bary = vertex_landmark_embedding(faces, arrays["landmark_vertices"])
    return ModelData(
        name="ict",
        template=arrays["template"],
        shapedirs=arrays["shapedirs"][..., :num_shape],
        exprdirs=arrays["exprdirs"],
        faces=faces,
        uvs=arrays["uvs"],
        uv_faces=arrays["uv_faces"].astype(np.int64),
        parts=dict(zip(arrays["part_names"].tolist(), arrays["part_masks"])),
        lmk_faces=lmk_faces,
        lmk_bary=lmk_bary,
        expression_names=tuple(arrays["expression_names"].tolist()),
        tracking_profile=TRACKING_PROFILE,
    )


def load_ict(config: ICTConfig | None = None, **options) -> BlendshapeModel:
    """The ICT-FaceKit model as a :class:`BlendshapeModel` (see :class:`ICTConfig`).

    Raises:
        AssetNotFoundError: the raw model is nowhere; the message lists where it looked.
    """
    config = config or ICTConfig(**options)
    arrays = converted(config.asset_path, tuple(config.parts), config.cache_dir)
    return BlendshapeModel(model_data(arrays, config.num_shape), dtype=getattr(torch, config.dtype))


__all__ = [
    "AssetNotFoundError", "DEFAULT_PARTS", "EXPRESSION_NAMES", "ICTConfig", "LANDMARK_VERTICES",
    "PART_GROUPS", "PART_RANGES", "TRACKING_PROFILE", "convert", "converted", "find_source", "load_ict", "model_data",
]

"""ICT-FaceKit: OBJ parsing, asset lookup, the fetch script's pure parts, and (slow) the
conversion of the real archive."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import avatar.models as models
from avatar.models import ict
from avatar.models.assets import AssetNotFoundError
from avatar.models.obj import fan_triangulate, parse_obj, parse_obj_vertices

SHARED_ICT = Path(__file__).resolve().parents[2] / "shared" / "assets" / "ict-facekit"
REPO_ROOT = Path(__file__).resolve().parents[1]


def ict_source() -> Path | None:
    """The raw archive: ``$AVATAR_ASSETS`` first, else the shared copy beside the repo."""
    roots = [Path(os.environ["AVATAR_ASSETS"])] if os.environ.get("AVATAR_ASSETS") else []
    roots.append(SHARED_ICT)
    for root in roots:
        for name in ict.SOURCE_NAMES:
            if (root / name).exists():
                return root / name
    return None


# ---- OBJ parsing -------------------------------------------------------------------------

QUAD_OBJ = b"""# a unit quad split by a seam, plus a triangle with negative indices
mtllib x.mtl
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 2 0 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vt 0.5 0.5
usemtl A
f 1/1 2/2 3/3 4/4
usemtl B
f -4/5 5/2 -3/3
"""


def test_parse_obj_triangulates_with_seams_and_winding():
    mesh = parse_obj(QUAD_OBJ)
    assert mesh.vertices.shape == (5, 3) and mesh.uvs.shape == (5, 2)
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    np.testing.assert_array_equal(mesh.uv_faces, [[0, 1, 2], [0, 2, 3], [4, 1, 2]])
    np.testing.assert_array_equal(mesh.polygon, [0, 0, 1])
    assert mesh.materials == ["A", "B"] and mesh.material.tolist() == [0, 0, 1]
    tri = mesh.vertices[mesh.faces[:2]]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (normals[:, 2] > 0).all()  # counter-clockwise quad -> +z triangles


def test_parse_obj_vertices_fast_path_matches_general_parser():
    np.testing.assert_array_equal(parse_obj_vertices(QUAD_OBJ), parse_obj(QUAD_OBJ).vertices)
    interleaved = b"v 1 2 3\nvt 0 0\nv 4 5 6\r\n"
    np.testing.assert_array_equal(parse_obj_vertices(interleaved), [[1, 2, 3], [4, 5, 6]])


def test_fan_triangulate_pentagon():
    tri, poly = fan_triangulate(np.array([5, 3]), np.arange(8))
    np.testing.assert_array_equal(tri, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [5, 6, 7]])
    np.testing.assert_array_equal(poly, [0, 0, 0, 1])


# ---- constants and parts -------------------------------------------------------------------


def test_part_ranges_tile_the_model():
    ranges = sorted(ict.PART_RANGES.values())
    assert ranges[0][0] == 0 and ranges[-1][1] == ict.NUM_VERTICES - 1 and len(ranges) == 17
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
    assert ict.expand_parts(["eyeballs", "face"]) == ("face", "eyeball_left", "eyeball_right")
    with pytest.raises(ValueError, match="unknown ICT part 'ears'"):
        ict.expand_parts(["ears"])


def test_constants_match_vertex_indices_json():
    path = SHARED_ICT / "vertex_indices.json"
    if not path.exists():
        pytest.skip(f"no {path}")
    meta = json.loads(path.read_text())
    assert list(ict.LANDMARK_VERTICES) == meta["idx_to_landmark_verts"]
    assert list(ict.EXPRESSION_NAMES) == meta["expressions"]
    assert len(ict.EXPRESSION_NAMES) == 53 and len(ict.LANDMARK_VERTICES) == 68


# ---- asset lookup --------------------------------------------------------------------------


def test_not_found_error_lists_every_place(tmp_path, monkeypatch):
    env_dir, cache_home = tmp_path / "assets", tmp_path / "xdg"
    env_dir.mkdir()
    monkeypatch.setenv("AVATAR_ASSETS", str(env_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    explicit = tmp_path / "mine"
    with pytest.raises(AssetNotFoundError) as err:
        models.load("ict", asset_path=str(explicit))
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    for root in (explicit, env_dir, cache_home / "avatar"):
        assert str(root / "FaceXModel.tar.xz") in msg and str(root / "FaceXModel") in msg
    assert "python data_tools/fetch_ict.py" in msg and "AVATAR_ASSETS" in msg
    assert err.value.searched[0].parent == explicit


def test_lookup_order_prefers_explicit_then_env(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "FaceXModel").mkdir(parents=True)
    monkeypatch.setenv("AVATAR_ASSETS", str(b))
    assert ict.find_source(str(a)) == a / "FaceXModel"
    assert ict.find_source() == b / "FaceXModel"
    archive = tmp_path / "elsewhere.tar.xz"
    archive.write_bytes(b"")
    assert ict.find_source(str(archive)) == archive


# ---- fetch script (no network: fake opener and file:// URLs) --------------------------------


def load_fetch_module():
    spec = importlib.util.spec_from_file_location("fetch_ict", REPO_ROOT / "data_tools" / "fetch_ict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, status: int):
        super().__init__(body)
        self.status = status
        self.headers = {"Content-Length": str(len(body))}

    def getcode(self):
        return self.status


def range_server(payload: bytes, honour_range: bool = True):
    seen = []

    def opener(request: urllib.request.Request):
        header = request.get_header("Range")
        seen.append(header)
        if header and honour_range:
            start = int(header.split("=")[1].rstrip("-"))
            return FakeResponse(payload[start:], 206)
        return FakeResponse(payload, 200)

    return opener, seen


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_part_file(tmp_path, honour_range):
    fetch = load_fetch_module()
    payload = os.urandom(3 * fetch.CHUNK + 123)
    dest = tmp_path / "ICT-FaceKit.tar.gz"
    dest.with_name(dest.name + ".part").write_bytes(payload[:1000])
    opener, seen = range_server(payload, honour_range)
    fetch.download("https://example.invalid/x.tar.gz", dest, opener=opener)
    assert seen == ["bytes=1000-"]
    assert dest.read_bytes() == payload and not dest.with_name(dest.name + ".part").exists()


def test_download_file_url_and_checksum(tmp_path):
    fetch = load_fetch_module()
    src = tmp_path / "src.tar.gz"
    src.write_bytes(b"not really an archive")
    url = src.as_uri()
    dest_root = tmp_path / "cache"
    assert fetch.main(["--url", url, "--dest", str(dest_root), "--no-convert"]) == 0
    archive = dest_root / "ict-facekit" / fetch.ARCHIVE_NAME
    assert archive.read_bytes() == src.read_bytes()
    assert fetch.sha256_of(archive) == hashlib.sha256(src.read_bytes()).hexdigest()
    assert fetch.main(["--url", url, "--dest", str(dest_root), "--no-convert", "--sha256", "0" * 64]) == 1
    assert not archive.exists() and archive.with_name(archive.name + ".bad").exists()


# ---- the real archive (slow) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def ict_converted(tmp_path_factory):
    source = ict_source()
    if source is None:
        pytest.skip(f"ICT-FaceKit archive not found in $AVATAR_ASSETS or {SHARED_ICT}")
    cache = tmp_path_factory.mktemp("ict-cache")
    t0 = time.perf_counter()
    model = models.load("ict", asset_path=str(source), cache_dir=str(cache))
    return source, cache, model, time.perf_counter() - t0


@pytest.mark.slow
def test_ict_real_archive(ict_converted):
    source, cache, model, convert_seconds = ict_converted
    (cache_file,) = cache.glob("ict-*.npz")
    with np.load(cache_file) as f:
        assert int(f["source_num_vertices"]) == 26_719
        assert f["shapedirs"].dtype == np.float16 and f["template"].dtype == np.float32
    kept = ict.expand_parts(ict.DEFAULT_PARTS)
    assert model.num_vertices == sum(ict.PART_RANGES[p][1] - ict.PART_RANGES[p][0] + 1 for p in kept)
    assert set(model.parts) == set(kept)
    assert model.num_shape == 100 and model.num_expression == 53
    assert model.expression_names == ict.EXPRESSION_NAMES
    assert model.uvs.shape[0] > model.num_vertices * 0.9 and int(model.uv_faces.max()) < model.uvs.shape[0]
    assert not torch.equal(model.uv_faces, model.faces)  # seams: uv indices differ

    rest = model()
    assert rest.landmarks.shape == (1, 68, 3) and rest.joints is None
    head = rest.vertices[0][model.parts["face"].vertices | model.parts["head_and_neck"].vertices]
    width = (head[:, 0].max() - head[:, 0].min()).item()
    assert 0.2 < width < 0.3, f"head width {width:.3f} m: not metres?"

    # normals point outward on the face (most face triangles look away from the head's centre)
    origin, rot, _ = model.triangle_frames(rest.vertices)
    face = model.parts["face"].faces
    outward = ((origin[0] - rest.vertices[0].mean(0)) * rot[0, :, :, 2]).sum(-1)
    assert (outward[face] > 0).float().mean() > 0.75

    jaw = torch.zeros(1, 53)
    jaw[0, model.expression_names.index("jawOpen")] = 1.0
    chin_drop = (rest.landmarks[0, 8] - model(expression=jaw).landmarks[0, 8])[1].item()
    assert chin_drop > 0.01, f"jawOpen should lower the chin (landmark 8); moved {chin_drop:.4f} m"

    t0 = time.perf_counter()
    again = models.load("ict", asset_path=str(source), cache_dir=str(cache))
    cached_seconds = time.perf_counter() - t0
    assert len(list(cache.glob("ict-*.npz"))) == 1 and not list(cache.glob("*.tmp"))
    torch.testing.assert_close(again.template, model.template)
    assert cached_seconds < 2.0 and cached_seconds < convert_seconds / 3
    print(f"ICT conversion {convert_seconds:.1f} s, cached load {cached_seconds:.2f} s")

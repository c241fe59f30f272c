"""FLAME, SMPL and SMPL-X loaders and the restricted unpickler, on tiny synthetic files
with the real files' keys and layouts (the real ones are licence-gated)."""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

import avatar.models as models
from avatar.models.restricted_pickle import RestrictedUnpicklingError, load_arrays, restricted_load

V = 30  # a 5 x 6 vertex grid


def grid_faces(rows: int = 6, cols: int = 5) -> np.ndarray:
    faces = []
    for r in range(rows - 1):
        for c in range(cols - 1):
            a, b, d, e = r * cols + c, r * cols + c + 1, (r + 1) * cols + c, (r + 1) * cols + c + 1
            faces += [(a, b, e), (a, e, d)]
    return np.array(faces, dtype=np.uint32)


def skinning_arrays(rng, J: int, n_shape: int, parents: list[int]) -> dict:
    xs, ys = np.meshgrid(np.linspace(-0.1, 0.1, 5), np.linspace(-0.1, 0.1, 6))
    template = np.stack((xs.ravel(), ys.ravel(), 0.01 * rng.normal(size=V)), -1)
    weights = rng.random((V, J))
    weights /= weights.sum(1, keepdims=True)
    regressor = rng.random((J, V)) * (rng.random((J, V)) < 0.3)
    regressor[:, 0] += 1e-3
    regressor /= regressor.sum(1, keepdims=True)
    root_parent = np.uint32(4294967295)  # how the released files mark the root
    return {
        "v_template": template,
        "shapedirs": rng.normal(size=(V, 3, n_shape)) * 1e-3,
        "posedirs": rng.normal(size=(V, 3, (J - 1) * 9)) * 1e-3,
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": weights,
        "kintree_table": np.array([[root_parent] + parents[1:], list(range(J))], dtype=np.uint32),
        "f": grid_faces(),
    }


@pytest.fixture
def fake_chumpy(monkeypatch):
    """A stand-in ``chumpy.ch.Ch`` importable while pickling, so files reference it as the
    released FLAME/SMPL pickles do (chumpy is not installed)."""
    ch_module = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": self._dirty_vars, "_itr": None}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_module.Ch = Ch
    package = types.ModuleType("chumpy")
    package.ch = ch_module
    monkeypatch.setitem(sys.modules, "chumpy", package)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_module)
    return Ch


@pytest.fixture
def flame_pkl(tmp_path, fake_chumpy):
    rng = np.random.default_rng(0)
    data = skinning_arrays(rng, J=5, n_shape=400, parents=[-1, 0, 1, 1, 1])
    data["shapedirs"] = fake_chumpy(data["shapedirs"])  # chumpy-backed, like generic_model.pkl
    data["v_template"] = fake_chumpy(data["v_template"])
    data["bs_style"] = "lbs"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path


@pytest.fixture
def flame_landmarks(tmp_path):
    path = tmp_path / "landmark_embedding.npy"
    emb = {"full_lmk_faces_idx": np.array([[0, 7, 20]]), "full_lmk_bary_coords": np.full((1, 3, 3), 1 / 3)}
    np.save(path, emb, allow_pickle=True)  # an object array: read back through the restricted unpickler
    return path


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_restricted_load_rejects_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(RestrictedUnpicklingError) as err:
        restricted_load(path)
    msg = str(err.value)
    assert f"{os.system.__module__}.system" in msg and str(path) in msg
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load")])
def test_restricted_load_rejects_other_globals(tmp_path, target):
    module, name = target
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00.")
    with pytest.raises(RestrictedUnpicklingError, match=f"{module}.{name}"):
        restricted_load(path)


def test_restricted_load_reads_flame_layout(flame_pkl):
    data = load_arrays(flame_pkl)
    assert data["shapedirs"].shape == (V, 3, 400) and isinstance(data["shapedirs"], np.ndarray)
    assert scipy.sparse.issparse(data["J_regressor"])
    assert data["bs_style"] == "lbs"


def test_restricted_npy_with_pickled_dict(flame_landmarks):
    emb = load_arrays(flame_landmarks)
    assert emb["full_lmk_faces_idx"].shape == (1, 3)


def test_flame_loads_and_poses(flame_pkl, flame_landmarks):
    model = models.load(
        "flame", model_path=str(flame_pkl), landmark_path=str(flame_landmarks), num_shape=20, num_expression=10
    )
    assert model.num_shape == 20 and model.num_expression == 10 and model.num_joints == 5
    assert model.faces.shape == (len(grid_faces()), 3) and model.faces.dtype == torch.long
    rest = model()
    torch.testing.assert_close(rest.vertices[0], model.template)
    assert rest.joints.shape == (1, 5, 3) and rest.landmarks.shape == (1, 3, 3)
    jaw = model(jaw=torch.tensor([[0.3, 0.0, 0.0]]), expression=torch.ones(1, 10))
    assert (jaw.vertices - rest.vertices).abs().max() > 1e-4
    same = model(pose=torch.tensor([[0.0, 0, 0, 0.3, 0, 0, 0, 0, 0, 0, 0, 0]]), expression=torch.ones(1, 10))
    torch.testing.assert_close(jaw.vertices, same.vertices)
    # expression block starts at column 300 of shapedirs
    raw = load_arrays(flame_pkl)["shapedirs"]
    torch.testing.assert_close(model.exprdirs, torch.as_tensor(raw[..., 300:310], dtype=torch.float32))
    origin, rot, scale = model.triangle_frames(jaw.vertices)
    assert rot.shape == (1, model.faces.shape[0], 3, 3)


def test_flame_missing_file_and_bad_counts(flame_pkl, tmp_path):
    with pytest.raises(FileNotFoundError, match="licence-gated"):
        models.load("flame", model_path=str(tmp_path / "nope.pkl"))
    with pytest.raises(ValueError, match="num_expression=101"):
        models.load("flame", model_path=str(flame_pkl), num_expression=101)


def test_flame_tracking_profile(flame_pkl, tmp_path):
    from avatar.models.profile import require_profile

    model = models.load("flame", model_path=str(flame_pkl), num_shape=20, num_expression=10)
    assert model.expression_names == tuple(f"expr{i:03d}" for i in range(10))
    profile = require_profile(model)
    assert profile.calibration_parts == ("head",) and profile.eyeball_parts is None and profile.lid_part is None
    assert profile.eye_joints == ("right_eye", "left_eye") and profile.jaw_joint == "jaw"
    assert profile.gaze is None and profile.jaw_blendshape is None and profile.antagonists == ()
    assert profile.signed_expressions and profile.face_part == "head"
    # A masks file with the eyeballs (FLAME_masks.pkl's names): iris and lid parts, photometric face part.
    masks = tmp_path / "FLAME_masks.pkl"
    masks.write_bytes(pickle.dumps({"face": np.arange(10, 30), "left_eyeball": np.array([0, 1, 5]),
                                    "right_eyeball": np.array([3, 4, 9])}, protocol=2))
    embedding = tmp_path / "mediapipe.npz"
    with_masks = models.load("flame", model_path=str(flame_pkl), masks_path=str(masks),
                             mediapipe_embedding_path=str(embedding))
    profile = require_profile(with_masks)
    assert profile.eyeball_parts == ("right_eyeball", "left_eyeball") and profile.lid_part == "face"
    assert profile.face_part == "face" and profile.embedding_path == str(embedding)


def test_profile_names_what_a_model_lacks(flame_pkl):
    from avatar.models.profile import TrackingProfile, TrackingProfileError, require_profile

    model = models.load("flame", model_path=str(flame_pkl), num_shape=20, num_expression=10)
    model.tracking_profile = TrackingProfile(calibration_parts=("head",), eyeball_parts=("eyeball_right", "eyeball_left"))
    with pytest.raises(TrackingProfileError, match=r"model 'flame' lacks the eyeball parts .*'eyeballs'"):
        require_profile(model)
    model.tracking_profile = TrackingProfile(calibration_parts=("head",), eye_joints=("right_eye", "left_eye"),
                                             blinks=("eyeBlink_R", "eyeBlink_L"))
    with pytest.raises(TrackingProfileError, match=r"lacks the blendshapes \['eyeBlink_L', 'eyeBlink_R'\]"):
        require_profile(model)
    with pytest.raises(ValueError, match="low < high"):
        TrackingProfile(calibration_parts=("head",), expression_bounds=(1.0, 0.0))


SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def test_smpl_from_chumpy_pickle(tmp_path, fake_chumpy):
    rng = np.random.default_rng(1)
    data = skinning_arrays(rng, J=24, n_shape=10, parents=SMPL_PARENTS)
    data["v_template"] = fake_chumpy(data["v_template"])
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    model = models.load("smpl", model_path=str(path))
    rest = model()
    assert rest.vertices.shape == (1, V, 3)
    torch.testing.assert_close(rest.vertices[0], torch.as_tensor(data["v_template"].x, dtype=torch.float32))
    posed = model(shape=torch.randn(2, 10), pose=0.3 * torch.randn(2, 69), translation=torch.ones(2, 3))
    assert posed.vertices.shape == (2, V, 3) and posed.joints.shape[:2] == (2, 24)
    assert model.uvs is None and model.landmarks(posed.vertices).shape == (2, 0, 3)
    _assert_no_face_tracking(model, "smpl")


def _assert_no_face_tracking(model, name: str) -> None:
    """A body model has no face-tracking profile; the error says so and what it lacks, and the
    landmark model refuses it the same way."""
    from avatar.models.profile import TrackingProfileError, require_profile
    from avatar.tracking.landmark_model import LandmarkModel

    assert model.tracking_profile is None
    with pytest.raises(TrackingProfileError, match=f"^model '{name}' has no face-tracking profile: it lacks ") as err:
        require_profile(model)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    with pytest.raises(TrackingProfileError, match="has no face-tracking profile"):
        LandmarkModel.from_model(model, None)


def smplx_arrays(rng) -> dict:
    parents = SMPL_PARENTS[:22] + [15, 15, 15] + [20] * 15 + [21] * 15  # body, jaw+eyes, hands (flat)
    data = skinning_arrays(rng, J=55, n_shape=20, parents=parents)
    data.update(
        hands_componentsl=np.eye(45), hands_componentsr=np.eye(45),
        hands_meanl=np.zeros(45), hands_meanr=np.zeros(45),
        lmk_faces_idx=np.array([1, 4, 9, 16]), lmk_bary_coords=np.full((4, 3), 1 / 3),
        vt=rng.random((40, 2)), ft=np.minimum(grid_faces().astype(np.int64) + 3, 39),
    )
    return data


@pytest.mark.parametrize("ext", ["npz", "pkl"])
def test_smplx_loads_and_poses(tmp_path, ext):
    data = smplx_arrays(np.random.default_rng(2))
    path = tmp_path / f"SMPLX_NEUTRAL.{ext}"
    if ext == "npz":
        np.savez(path, **{k: v.toarray() if scipy.sparse.issparse(v) else v for k, v in data.items()})
    else:
        path.write_bytes(pickle.dumps(data, protocol=2))
    model = models.load("smplx", model_path=str(path))
    assert model.num_shape == 10 and model.num_expression == 10
    assert model.uvs.shape == (40, 2) and model.uv_faces.shape == model.faces.shape
    rest = model()
    torch.testing.assert_close(rest.vertices[0], torch.as_tensor(data["v_template"], dtype=torch.float32))
    assert rest.landmarks.shape == (1, 4, 3)
    out = model(
        expression=torch.ones(3, 10), jaw_pose=0.2 * torch.ones(3, 3), left_hand_pose=torch.ones(3, 6),
        rotation=torch.tensor([[0.0, 1.0, 0.0]]),
    )
    assert out.vertices.shape == (3, V, 3) and (out.vertices - rest.vertices).abs().max() > 1e-3
    with pytest.raises(TypeError, match="unexpected"):
        model(hand=torch.zeros(1, 3))
    _assert_no_face_tracking(model, "smplx")


def test_load_rejects_unknown_model():
    with pytest.raises(ValueError, match="available: ict, flame, smpl, smplx"):
        models.load("mano")

"""Synthetic ground-truth captures: the scripted performance, the texture atlas, and (with
the ICT assets) a small generated capture checked against real MediaPipe and its own ground truth."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.synthetic import capture as synthetic
from avatar.synthetic import texture as synthetic_texture
from avatar.io.capture import Capture
from avatar.models import ict

SHARED_ICT = Path(__file__).resolve().parents[2] / "shared" / "assets" / "ict-facekit"
TEST_FRAMES = 24
TEST_RESOLUTION = 224
TEST_TILE = 256


def ict_assets() -> str | None:
    """Folder holding the raw ICT model: ``$AVATAR_ASSETS`` first, else the shared copy."""
    roots = [Path(os.environ["AVATAR_ASSETS"])] if os.environ.get("AVATAR_ASSETS") else []
    roots.append(SHARED_ICT)
    for root in roots:
        if any((root / name).exists() for name in ict.SOURCE_NAMES):
            return str(root)
    return None


needs_ict = pytest.mark.skipif(
    ict_assets() is None,
    reason=f"ICT-FaceKit assets not found (set AVATAR_ASSETS or put them in {SHARED_ICT})",
)


# ---- the scripted performance (no assets) -------------------------------------------------


@pytest.mark.parametrize("n_frames", [TEST_FRAMES, 120])
def test_sequence_covers_the_listed_motions(n_frames):
    names = ict.EXPRESSION_NAMES
    perf = synthetic.scripted_sequence(n_frames, names)
    col = {n: perf.expression[:, names.index(n)] for n in names}
    assert perf.expression.shape == (n_frames, len(names))
    assert perf.rotation.shape == perf.translation.shape == perf.euler_deg.shape == (n_frames, 3)
    yaw, pitch, roll = perf.euler_deg.T
    assert np.abs(yaw).max() >= 25 and yaw.min() <= -25 and yaw.max() >= 25
    assert np.abs(pitch).max() >= 12
    assert 0 < np.abs(perf.translation).max() <= 0.03
    assert col["jawOpen"].max() >= 0.6
    assert min(col["eyeBlink_L"].max(), col["eyeBlink_R"].max()) >= 0.8
    assert min(col["mouthSmile_L"].max(), col["mouthSmile_R"].max()) >= 0.6
    assert col["browInnerUp_L"].max() >= 0.6
    combined = (col["jawOpen"] > 0.3) & (col["mouthSmile_L"] > 0.3)
    assert combined.any(), "no frame combines an open jaw and a smile"
    assert ((np.abs(yaw) > 10) & (col["jawOpen"] > 0.3)).any(), "no expression while the head is turned"
    assert perf.expression.min() >= 0 and perf.expression.max() <= 1


def test_sequence_is_smooth_and_rotations_match_the_angles():
    from scipy.spatial.transform import Rotation

    perf = synthetic.scripted_sequence(120, ict.EXPRESSION_NAMES)
    assert np.abs(np.diff(perf.euler_deg, axis=0)).max() < 2.5  # degrees per frame at 25 fps
    assert np.abs(np.diff(perf.translation, axis=0)).max() < 0.002
    non_blink = [i for i, n in enumerate(ict.EXPRESSION_NAMES) if not n.startswith("eyeBlink")]
    assert np.abs(np.diff(perf.expression[:, non_blink], axis=0)).max() < 0.25
    euler = Rotation.from_rotvec(perf.rotation.astype(np.float64)).as_euler("YXZ", degrees=True)
    np.testing.assert_allclose(euler, perf.euler_deg, atol=1e-3)


def test_sequence_names_a_missing_expression():
    with pytest.raises(ValueError, match="jawOpen"):
        synthetic.scripted_sequence(10, ("eyeBlink_L", "eyeBlink_R"))


# ---- with the ICT model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    if ict_assets() is None:
        pytest.skip(f"ICT-FaceKit assets not found (set AVATAR_ASSETS or put them in {SHARED_ICT})")
    import avatar.models

    return avatar.models.load("ict", asset_path=ict_assets())


@pytest.fixture(scope="module")
def texture_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("texture-cache")


@pytest.fixture(scope="module")
def capture(model, texture_cache, tmp_path_factory) -> synthetic.SyntheticCapture:
    config = synthetic.SyntheticConfig(
        n_frames=TEST_FRAMES, resolution=TEST_RESOLUTION, seed=3, texture_size=TEST_TILE,
        cache_dir=str(texture_cache),
    )
    return synthetic.make_synthetic_capture(tmp_path_factory.mktemp("synthetic"), config, model, progress=False)


@needs_ict
def test_atlas_uvs_give_each_tile_its_own_square(model):
    uvs, uv_faces = synthetic_texture.atlas_uvs(model)
    F = model.faces.shape[0]
    assert uvs.shape == (F * 3, 2) and uv_faces.shape == (F, 3)
    assert uvs.min() >= 0 and uvs.max() <= 1
    tile_of_corner = torch.floor(uvs[:, 0] * synthetic_texture.N_TILES).clamp_max(synthetic_texture.N_TILES - 1)
    tiles = tile_of_corner.reshape(F, 3)
    assert (tiles == tiles[:, :1]).all(), "a triangle straddles two atlas tiles"
    face_tile = synthetic_texture.face_tiles(model)
    for name, tile in synthetic_texture.EYEBALL_TILES.items():
        assert (face_tile[model.parts[name].faces] == tile).all()
    assert (face_tile[model.parts["face"].faces] <= 1).all()
    assert sorted(torch.unique(face_tile).tolist()) == list(range(synthetic_texture.N_TILES))


@needs_ict
def test_photo_fit_matches_the_portrait_landmarks(model):
    from skimage import data as skdata

    from avatar.landmarks import FaceMeshDetector

    photo = skdata.astronaut()
    with FaceMeshDetector(video=False, max_faces=1) as detector:
        (face,) = detector.detect(photo)
    K, viewmat = synthetic_texture.photo_camera(photo.shape[1], photo.shape[0])
    points = face.landmarks[[mp for _, mp in synthetic_texture.FIT_CORRESPONDENCES], :2]
    rigid = synthetic_texture.fit_photo(model, points, K, viewmat, num_shape=0, expressions=())
    full = synthetic_texture.fit_photo(model, points, K, viewmat)
    # Measured: 4.2 px rigid, 1.7 px with 10 identity modes and jaw/smile, on a ~90 px wide face.
    assert rigid.rms < 6.0 and full.rms < 3.0 and full.rms < rigid.rms
    assert abs(full.rotation[1]) < 0.2, "the portrait is nearly frontal"
    smile = full.expression[model.expression_names.index("mouthSmile_L")]
    assert smile > 0.3, "the astronaut smiles"


@needs_ict
def test_capture_folder_opens_and_valid_frames_cover_the_detections(capture):
    cap = Capture(capture.root)
    assert cap.n_frames == TEST_FRAMES
    assert cap.meta.source == "synthetic:3" and cap.meta.fps == 25
    assert (cap.meta.width, cap.meta.height) == (TEST_RESOLUTION, TEST_RESOLUTION)
    present = cap.landmarks.face_present
    np.testing.assert_array_equal(cap.valid_frames(), np.flatnonzero(present))
    assert set(cap.meta.flagged) == set(np.flatnonzero(~present).tolist())
    frame, mask = cap.load_frame(0), cap.load_mask(0)
    assert frame.shape == (TEST_RESOLUTION, TEST_RESOLUTION, 3) and mask.shape == frame.shape[:2]
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    assert 0.15 < mask.mean() < 0.6, "the head should fill a good part of the frame"
    report = json.loads((capture.root / synthetic.REPORT_FILE).read_text())
    assert report["frames"] == TEST_FRAMES and report["mediapipe_detected"] == int(present.sum())
    gt = synthetic.load_ground_truth(capture.root)
    assert str(gt["model"]) == "ict" and "face" in gt["parts"].tolist()
    assert gt["shape"].shape == (100,) and 0 < np.abs(gt["shape"]).max() <= 1.0
    assert gt["expression"].shape == (TEST_FRAMES, 53) and gt["expression_names"].tolist() == list(ict.EXPRESSION_NAMES)
    assert gt["rotation"].shape == gt["translation"].shape == (TEST_FRAMES, 3)
    assert gt["K"].shape == (3, 3) and gt["viewmat"].shape == (4, 4)
    assert int(gt["width"]) == int(gt["height"]) == TEST_RESOLUTION and gt["valid"].all()


@needs_ict
def test_ground_truth_round_trips_to_the_saved_masks(capture, model):
    from avatar.render import rasterize_mesh

    gt = synthetic.load_ground_truth(capture.root)
    cap = Capture(capture.root)
    frames = [0, TEST_FRAMES // 4, TEST_FRAMES // 2, TEST_FRAMES - 1]
    with torch.no_grad():
        verts = model(
            shape=torch.as_tensor(gt["shape"])[None],
            expression=torch.as_tensor(gt["expression"][frames]),
            rotation=torch.as_tensor(gt["rotation"][frames]),
            translation=torch.as_tensor(gt["translation"][frames]),
        ).vertices
        raster = rasterize_mesh(verts, model.faces, torch.as_tensor(gt["K"]), TEST_RESOLUTION, TEST_RESOLUTION,
                                torch.as_tensor(gt["viewmat"]))
    for k, i in enumerate(frames):
        saved = cap.load_mask(i) > 0.5
        mismatch = (raster.mask[k].numpy() != saved).mean()
        assert mismatch <= 1e-3, f"frame {i}: {mismatch:.2%} of the pixels differ from the saved mask"
    # The projected ground-truth landmarks sit near MediaPipe's on the same frames.
    present = cap.landmarks.face_present
    nose_mp, nose_gt = cap.landmarks.face[present, 1, :2], gt["landmarks68"][present, 30]
    assert np.median(np.linalg.norm(nose_mp - nose_gt, axis=1)) < 0.04 * TEST_RESOLUTION


@needs_ict
@pytest.mark.slow
def test_real_mediapipe_finds_the_face_in_the_frames(capture):
    # Measured: 100% at 224 px (24 frames) and at 512 px (120 frames).
    assert capture.detection_rate >= 0.95, capture.report


@needs_ict
def test_texture_cache_is_reused(capture, model, texture_cache, monkeypatch):
    assert capture.report["texture_from_cache"] is False  # the capture built it
    files = list(texture_cache.glob("*.png"))
    assert len(files) == 1 and not list(texture_cache.glob(".*"))  # no partial file left

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached texture was rebuilt")

    monkeypatch.setattr(synthetic_texture, "build_texture", no_rebuild)
    again = synthetic_texture.load_or_build_texture(model, texture_cache, TEST_TILE)
    assert again.from_cache and again.path == files[0]
    assert again.atlas.shape == (TEST_TILE, TEST_TILE * synthetic_texture.N_TILES, 3)
    # The face tile holds the photo: many distinct colours, not a flat fill.
    face_tile = again.atlas[:, :TEST_TILE].reshape(-1, 3)
    assert len(np.unique(face_tile // 8, axis=0)) > 200  # measured: ~480 at 256 texels per tile


@needs_ict
def test_supersampling_averages_the_samples_of_each_pixel(model):
    """supersample=2 is the 2x render averaged over 2x2 blocks: partial coverage on the silhouette."""
    perf = synthetic.scripted_sequence(2, model.expression_names)
    shape = synthetic.random_identity(model.num_shape, 0.5, 0)
    flat = dict(n_frames=2, seed=0, batch_size=2, texture="flat")
    (_, fine_img, fine_mask), = synthetic.render_frames(model, synthetic.SyntheticConfig(resolution=96, **flat), shape,
                                                        perf, None)
    (_, img, mask), = synthetic.render_frames(model, synthetic.SyntheticConfig(resolution=48, supersample=2, **flat),
                                              shape, perf, None)
    assert img.shape == (2, 48, 48, 3) and mask.shape == (2, 48, 48)
    assert np.allclose(mask, fine_mask.reshape(2, 48, 2, 48, 2).mean(axis=(2, 4)))
    assert ((mask > 0) & (mask < 1)).any()  # the silhouette's pixels are partly covered
    box = fine_img.astype(np.float32).reshape(2, 48, 2, 48, 2, 3).mean(axis=(2, 4))
    assert np.abs(img.astype(np.float32) - box).max() <= 1.0  # the mean up to rounding


@needs_ict
def test_gaze_turns_the_eyeballs_as_the_trackers_model_the_irises(model):
    """ICT's eyeLook* shapes leave the eyeballs still; gaze=True turns them by the angles the
    trackers read, so the eyeball's front pole lands where the landmark model puts the iris."""
    from avatar.tracking.embedding import load_embedding
    from avatar.tracking.landmark_model import IRIS_LEFT, IRIS_RIGHT, LandmarkModel

    names = list(model.expression_names)
    e = torch.zeros(2, len(names))
    e[1, names.index("eyeLookOut_L")] = 1.0  # the left eye looks to the subject's left
    e[1, names.index("eyeLookIn_R")] = 1.0  # and so does the right
    with torch.no_grad():
        verts = model(expression=e).vertices
    turned = synthetic.turned_eyes(model, verts, e)
    assert torch.equal(turned[0], verts[0])  # no gaze: nothing turns
    eyes = torch.zeros(verts.shape[1], dtype=torch.bool)
    for part in ("eyeball_right", "eyeball_left"):
        eyes[model.parts[part].vertices] = True
    assert torch.equal(turned[1][~eyes], verts[1][~eyes])  # only the eyeballs turn
    lm = LandmarkModel.from_model(model, load_embedding(model))
    iris = lm.points(torch.zeros(lm.num_shape), e)[:, [IRIS_RIGHT, IRIS_LEFT]]  # [2, 2, 3]
    for k, part in enumerate(("eyeball_right", "eyeball_left")):
        idx = model.parts[part].vertices
        front = verts[0, idx][:, 2].argmax()  # the eyeball's front pole
        moved = turned[1, idx][front] - verts[0, idx][front]
        assert moved[0] > 0.004  # millimetres towards the subject's left (+x)
        assert torch.allclose(moved, (iris[1, k] - iris[0, k]).to(moved), atol=5e-4)


def test_training_reads_each_frames_gaze_off_its_irises(model):
    """train.turn_eyes: the eyeball turn that puts each eyeball's front pole on the frame's iris
    centres at the tracked pose and camera, both eyes' mean, less the training frames' median."""
    from types import SimpleNamespace

    from avatar.models.engine import rigid_transform
    from avatar.models.eyes import eyeball_geometry, turn_eyeballs
    from avatar.tracking.gaze import IRIS_CENTRES
    from avatar.train.data import frame_gaze, posed_with_gaze

    F = 9
    parts = ("eyeball_right", "eyeball_left")
    yaw = torch.linspace(-0.4, 0.4, F, dtype=torch.float64) + 0.05  # the subject usually looks 0.05 rad off
    pitch = 0.15 * torch.sin(torch.arange(F, dtype=torch.float64))
    true = torch.stack((yaw, pitch), -1)[:, None].expand(F, 2, 2)
    step = torch.arange(F, dtype=torch.float64)
    rotation = torch.stack((0.1 * torch.cos(step), 0.3 * torch.sin(step), torch.zeros(F, dtype=torch.float64)), -1)
    translation = torch.tensor([0.01, -0.02, -0.5], dtype=torch.float64).expand(F, 3)
    viewmat = np.diag([1.0, -1.0, -1.0, 1.0])  # the camera at the origin looking down -z
    K = np.array([[600.0, 0, 256], [0, 600.0, 256], [0, 0, 1]])
    shape = np.zeros(model.num_shape, np.float32)
    with torch.no_grad():
        rest = model.to(torch.float64)(shape=torch.as_tensor(shape, dtype=torch.float64)[None]).vertices
    model.to(torch.float32)
    turned = turn_eyeballs(model, parts, rest.expand(F, -1, -1), true)
    centres, poles = eyeball_geometry(model, parts, rest[0])
    world = rigid_transform(turned, rotation, translation)
    cam = world @ torch.as_tensor(viewmat[:3, :3]).T
    px = cam @ torch.as_tensor(K).T
    px = px[..., :2] / px[..., 2:]
    face = np.zeros((F, 478, 3), np.float32)
    for k, part in enumerate(parts):  # each front pole, turned, is where MediaPipe finds the iris
        ids = np.flatnonzero(model.parts[part].vertices.numpy())
        front = ids[int(torch.argmax(rest[0, ids, 2]))]
        face[:, IRIS_CENTRES[k], :2] = px[:, front].numpy()
    capture = SimpleNamespace(landmarks=SimpleNamespace(face=face), meta=SimpleNamespace(width=512, height=512))
    tracking = SimpleNamespace(shape=shape, rotation=rotation.numpy(), translation=translation.numpy(), viewmat=viewmat,
                               width=512, height=512, intrinsics=lambda idx: np.broadcast_to(K, (len(idx), 3, 3)))
    train = np.arange(7)
    gaze, found = frame_gaze(capture, tracking, model, np.arange(F), train)
    assert found == parts and gaze.shape == (F, 2, 2)
    expected = (true - true[:7].median(0).values).numpy()
    np.testing.assert_allclose(gaze, expected, atol=np.radians(0.2))
    # Posed with those turns, the eyeballs are where they were drawn from (less the median look).
    e = torch.zeros(F, len(model.expression_names))
    verts = posed_with_gaze(model, parts, torch.as_tensor(shape), e, rotation.float(), translation.float(),
                            torch.as_tensor(expected + true[:7].median(0).values.numpy()).float())
    torch.testing.assert_close(verts, world.float(), atol=1e-5, rtol=0)
    plain = posed_with_gaze(model, parts, torch.as_tensor(shape), e, rotation.float(), translation.float(),
                            torch.zeros(F, 2, 2))
    with torch.no_grad():
        direct = model(shape=torch.as_tensor(shape)[None].expand(F, -1), expression=e, rotation=rotation.float(),
                       translation=translation.float()).vertices
    torch.testing.assert_close(plain, direct, atol=1e-6, rtol=0)


def test_gaze_script_adds_eye_movements_only_when_asked():
    names = ("jawOpen", "mouthSmile_L", "mouthSmile_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L",
             "browOuterUp_R", "eyeBlink_L", "eyeBlink_R", "eyeLookOut_L", "eyeLookIn_R", "eyeLookIn_L",
             "eyeLookOut_R", "eyeLookUp_L", "eyeLookUp_R", "eyeLookDown_L", "eyeLookDown_R")
    still = synthetic.scripted_sequence(100, names)
    moving = synthetic.scripted_sequence(100, names, events=synthetic.EXPRESSION_EVENTS + synthetic.GAZE_EVENTS)
    gaze = [names.index(n) for n in names if n.startswith("eyeLook")]
    assert np.all(still.expression[:, gaze] == 0)
    assert np.all(moving.expression[:, gaze].max(axis=0) > 0.5)
    others = [i for i in range(len(names)) if i not in gaze]
    assert np.array_equal(still.expression[:, others], moving.expression[:, others])

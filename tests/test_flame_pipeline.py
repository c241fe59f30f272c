"""FLAME end to end, on a synthetic head in FLAME's file format built from ICT-FaceKit (the real
FLAME is licence-gated): the file and its tracking profile, the landmark model's pose convention
and both fitters on exact landmarks (fast), then a capture rendered with the model and the
commands ``avatar track``, ``train``, ``render`` and ``live`` with ``model=flame`` (slow).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import avatar.models as models
from avatar.synthetic.flame_file import EXPRESSION_SHAPES, write_flame_like

# ---- the FLAME-format model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ict(ict_assets):
    return models.load("ict", asset_path=str(ict_assets))


@pytest.fixture(scope="module")
def flame_files(ict, tmp_path_factory):
    return write_flame_like(tmp_path_factory.mktemp("flame"), ict)


@pytest.fixture(scope="module")
def flame(flame_files):
    return models.load("flame", **flame_files.options(masks=True, landmarks=True))


def test_flame_like_file_has_flames_layout_and_reads_as_flame(flame_files, flame, ict):
    import scipy.sparse

    from avatar.models.restricted_pickle import load_arrays

    raw = load_arrays(flame_files.model_path)  # the restricted unpickler: numpy and scipy.sparse only
    V = raw["v_template"].shape[0]
    assert 4000 < V < 8000, V  # FLAME has 5,023
    E = len(EXPRESSION_SHAPES)
    assert raw["shapedirs"].shape == (V, 3, 300 + E) and not raw["shapedirs"][..., 10:300].any()
    assert raw["posedirs"].shape == (V, 3, 36) and raw["weights"].shape == (V, 5)
    assert scipy.sparse.issparse(raw["J_regressor"]) and raw["J_regressor"].shape == (5, V)
    assert raw["kintree_table"].dtype == np.uint32 and raw["kintree_table"][0, 0] == 4294967295
    np.testing.assert_allclose(raw["weights"].sum(1), 1.0, atol=1e-9)
    # Every vertex is an ICT vertex, so ICT's blendshapes carry over exactly.
    ict_rows = {row.tobytes() for row in ict.template.numpy()}
    assert all(row.tobytes() in ict_rows for row in raw["v_template"].astype(np.float32))

    assert flame.num_shape == 10 and flame.num_expression == E and flame.num_joints == 5
    assert set(flame.part_names) >= {"face", "left_eyeball", "right_eyeball"}
    rest = flame()
    with torch.no_grad():  # the 68 landmarks: ICT's, on the decimated surface
        gap = (rest.landmarks[0] - ict.landmarks(ict.template[None])[0]).norm(dim=-1)
    assert rest.landmarks.shape == (1, 68, 3) and float(gap.max()) < 0.003, gap.max()
    with torch.no_grad():
        jaw = flame(jaw=torch.tensor([[0.4, 0.0, 0.0]]))
        expr = flame(expression=torch.eye(E)[:1])  # the jawOpen component
        eyes = flame(eyes=torch.tensor([[0.0, 0.3, 0.0, 0.0, 0.3, 0.0]]))
    moved = (jaw.vertices - rest.vertices).norm(dim=-1)[0]
    chin = rest.vertices[0, :, 1] < rest.joints[0, 2, 1] - 0.05  # well below the jaw joint
    assert float(moved[chin].max()) > 0.02, "turning the jaw joint opens the mouth"
    assert float(moved[flame.parts["left_eyeball"].vertices].max()) < 1e-6
    assert float((expr.vertices - rest.vertices).norm(dim=-1).max()) > 0.02
    turned = (eyes.vertices - rest.vertices).norm(dim=-1)[0] > 1e-6
    eyeballs = flame.parts["left_eyeball"].vertices | flame.parts["right_eyeball"].vertices
    assert turned.any() and not turned[~eyeballs].any(), "the eye joints turn the eyeballs only"


def test_flame_profile_and_landmark_model(flame):
    from avatar.models.profile import require_profile
    from avatar.tracking.landmark_model import LandmarkModel, gaze_angles

    profile = require_profile(flame)
    assert profile.gaze is None and profile.eye_joints == ("right_eye", "left_eye")
    assert profile.eyeball_parts == ("right_eyeball", "left_eyeball") and profile.lid_part == "face"
    lm = LandmarkModel.from_model(flame, random_embedding(flame))
    assert lm.gaze is None and lm.signed_expressions and lm.antagonists == ()
    assert lm.root_template is not None and lm.root_exprdirs.shape == (3, flame.num_expression)
    # Eye centres: the eyeballs' (right first: the subject's right is -x).
    assert lm.eye_template[0, 0] < 0 < lm.eye_template[1, 0]
    yaw, pitch = gaze_angles(lm, torch.ones(2, flame.num_expression))
    assert not yaw.any() and not pitch.any()


def random_embedding(model, seed: int = 0):
    """478 points on the face part (the fitters only need an embedding, not MediaPipe's)."""
    from avatar.tracking.embedding import FACE_OVAL, N_LANDMARKS, LandmarkEmbedding

    g = torch.Generator().manual_seed(seed)
    faces = model.parts["face"].faces.nonzero().squeeze(1)
    tri = faces[torch.randint(len(faces), (N_LANDMARKS,), generator=g)]
    bary = torch.rand(N_LANDMARKS, 3, generator=g) + 0.1
    contour = torch.zeros(N_LANDMARKS, dtype=torch.bool)
    contour[list(FACE_OVAL)] = True
    return LandmarkEmbedding(tri, bary / bary.sum(1, keepdim=True), contour)


def performance(F: int, E: int, seed: int = 0):
    """Signed expressions (PCA components) and head poses, smooth over ``F`` frames."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, F)
    speed = 0.5 * (1 + torch.arange(E) / E)  # at most one cycle per clip: smooth at any frame count
    expression = 0.6 * torch.sin(2 * math.pi * (t[:, None] * speed + torch.rand(E, generator=g)))
    rotation = torch.stack((0.15 * torch.sin(2 * math.pi * t), 0.4 * torch.sin(2 * math.pi * t + 1), 0.05 * t), -1)
    translation = torch.stack((0.01 * torch.sin(5 * t), 0.01 * torch.cos(4 * t), -0.6 + 0.03 * t), -1)
    shape = 0.5 * torch.randn(10, generator=g)
    return shape, expression, rotation, translation


def test_tracked_pose_is_the_models_own(flame):
    """The fitters place ``R p + t`` (rotation about the model origin); FLAME turns about its root
    joint. model_translation makes the model's forward put the landmarks where the fitters did."""
    from avatar.tracking.landmark_model import LandmarkModel, model_translation

    emb = random_embedding(flame)
    lm = LandmarkModel.from_model(flame, emb)
    shape, expression, rotation, translation = performance(5, flame.num_expression)
    tracked = lm.points(shape, expression) @ _matrices(rotation).transpose(1, 2) + translation[:, None]
    with torch.no_grad():
        t_model = model_translation(lm, shape, expression, rotation, translation)
        posed = flame(shape=shape[None], expression=expression, rotation=rotation, translation=t_model).vertices
    torch.testing.assert_close(emb.points(posed, flame.faces), tracked, atol=2e-6, rtol=0)
    assert float((t_model - translation).norm(dim=-1).max()) > 0.01, "the root joint is off the origin"


def _matrices(rotation):
    from avatar.geometry.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(rotation)


def test_fitters_recover_signed_flame_expressions(flame):
    from avatar.tracking.fit import FitConfig, fit_sequence, reported_landmarks
    from avatar.tracking.landmark_model import (
        IRIS_LEFT, IRIS_RIGHT, LandmarkModel, project, to_camera, view_directions,
    )
    from avatar.tracking.online import FrameTracker

    lm = LandmarkModel.from_model(flame, random_embedding(flame))
    assert not reported_landmarks(lm)[[IRIS_RIGHT, IRIS_LEFT]].any(), "no gaze: iris centres unused"
    F, W, focal = 10, 256, 400.0
    shape, expression, rotation, translation = performance(F, flame.num_expression)
    with torch.no_grad():
        target = project(to_camera(lm.points(shape, expression, view_directions(rotation, translation)), rotation,
                                   translation), torch.tensor(focal), torch.tensor([W / 2, W / 2]))
    result = fit_sequence(lm, target, torch.ones(F, dtype=torch.bool), W, W,
                          FitConfig(focal=focal, rigid_iterations=40, full_iterations=150, w_landmark_offset=0.0))
    assert (result.expression < 0).any(), "signed coefficients are not clamped at 0"
    assert float((result.expression - expression).abs().median()) < 0.12  # measured: 0.066
    tracker = FrameTracker(lm.to(torch.device("cpu"), torch.float64), shape.double(), focal, W, W)
    out = [tracker(target[i].double()) for i in range(F)]
    online = torch.stack([o[0] for o in out]).float()
    assert float((online - expression).abs().median()) < 0.08  # measured: 0.020
    # The per-frame fitter returns the model's own translation: the model's forward lands on the truth.
    from avatar.tracking.landmark_model import model_translation

    truth_t = model_translation(lm, shape, expression, rotation, translation)
    t_online = torch.stack([o[2] for o in out]).float()
    assert float((t_online - truth_t).norm(dim=-1).max()) < 0.002  # measured: 0.4 mm (2.5 cm without the conversion)


# ---- the pipeline: capture, track, train, render, live (slow) --------------------------------


@pytest.fixture(scope="module")
def embedding_file(flame, tmp_path_factory):
    """The FLAME model's MediaPipe embedding, calibrated by rendering it (7 of the 13 views, for
    time), as a user's embedding file (every later command reads it:
    model_options.mediapipe_embedding_path)."""
    from avatar.tracking.embedding import CALIBRATION_VIEWS, calibrate

    emb, report = calibrate(flame, views=CALIBRATION_VIEWS[:7])
    assert all(report["detected"]), report
    path = tmp_path_factory.mktemp("embedding") / "flame_mediapipe478.npz"
    np.savez(path, faces=emb.faces.numpy(), bary=emb.bary.numpy(), contour=emb.contour.numpy(),
             view_offsets=emb.view_offsets.numpy())
    return path, emb, report


@pytest.fixture(scope="module")
def model_overrides(flame_files, embedding_file):
    options = {**flame_files.options(landmarks=True), "mediapipe_embedding_path": str(embedding_file[0])}
    return [f"+model_options.{k}={v}" for k, v in options.items()]


@pytest.fixture(scope="module")
def capture(flame, tmp_path_factory):
    from avatar.synthetic.capture import SyntheticConfig, make_synthetic_capture

    return make_synthetic_capture(tmp_path_factory.mktemp("capture") / "cap",
                                  SyntheticConfig(n_frames=16, resolution=160, seed=1), flame, progress=False)


@pytest.mark.slow
def test_embedding_calibrates_on_flame_renders(flame, flame_files, embedding_file):
    from avatar.tracking.embedding import load_embedding, part_faces

    path, emb, report = embedding_file
    assert report["spread_mm_median"] < 6.0, report  # measured: 3.1 mm
    assert bool(torch.isin(emb.faces, part_faces(flame)).all())
    for idx, part in ((468, "right_eyeball"), (473, "left_eyeball")):  # iris centres on the eyeballs' poles
        assert flame.parts[part].faces[emb.faces[idx]]
    # A user's embedding file is read, not calibrated (nothing is written to the cache).
    user = models.load("flame", **flame_files.options(), mediapipe_embedding_path=str(path))
    again = load_embedding(user, cache_dir=path.parent / "no-cache")
    assert torch.equal(again.faces, emb.faces) and not (path.parent / "no-cache").exists()


@pytest.mark.slow
def test_synthetic_capture_renders_flame(capture, flame):
    from avatar.synthetic.capture import load_ground_truth

    assert capture.detection_rate >= 0.9, capture.report  # measured: 100% at 160 px, flat skin colour
    gt = load_ground_truth(capture.root)
    assert str(gt["model"]) == "flame" and gt["expression"].shape == (16, flame.num_expression)
    assert (gt["expression"] < 0).any(), "the component script is signed"
    assert gt["landmarks68"].shape == (16, 68, 2)  # the model's 68-landmark embedding, projected


@pytest.mark.slow
def test_track_command_with_flame(capture, model_overrides, flame):
    from avatar import cli
    from avatar.synthetic.capture import load_ground_truth
    from avatar.io.tracking import load_tracking

    assert cli.main(["track", f"capture={capture.root}", "model=flame", *model_overrides,
                     "track.fit.rigid_iterations=80", "track.fit.full_iterations=200",
                     "track.photometric.iterations=20", "track.overlay_stride=8", "track.progress=false"]) == 0
    report = json.loads((capture.root / "tracking_report.json").read_text())
    assert report["model"] == "flame" and report["valid_frames"] >= 14
    assert report["reprojection"]["median_px"] < 3.0, report["reprojection"]  # 160 px frames
    assert (capture.root / "tracking_overlay.mp4").is_file()
    seq = load_tracking(capture.root, model="flame")
    gt = load_ground_truth(capture.root)
    assert seq.expression_names == flame.expression_names
    jaw = np.corrcoef(seq.expression[:, 0], gt["expression"][:, 0])[0, 1]
    assert jaw > 0.6, jaw  # the jaw-open component follows the truth
    # The model's forward with the tracked values lands on the rendered head (model's own pose convention).
    err = _vertex_pixel_error(flame, seq, gt)
    assert np.median(err) < 6.0, err  # pixels at 160 px


def _vertex_pixel_error(model, seq, gt) -> np.ndarray:
    def pixels(params, K, viewmat):
        with torch.no_grad():
            p = {k: torch.tensor(np.array(params[k], np.float32)) for k in ("shape", "expression", "rotation",
                                                                            "translation")}
            v = model(shape=p["shape"][None], expression=p["expression"], rotation=p["rotation"],
                      translation=p["translation"]).vertices
        K, viewmat = torch.tensor(np.array(K, np.float32)), torch.tensor(np.array(viewmat, np.float32))
        cam = v @ viewmat[:3, :3].T + viewmat[:3, 3]
        p = cam @ (K.transpose(-1, -2) if K.dim() == 3 else K.T)
        return p[..., :2] / p[..., 2:]

    tracked = {k: getattr(seq, k) for k in ("shape", "expression", "rotation", "translation")}
    a = pixels(gt, gt["K"], gt["viewmat"])
    b = pixels(tracked, seq.intrinsics(), seq.viewmat)
    return (a - b).norm(dim=-1).median(dim=1).values.numpy()


def test_track_command_refuses_a_body_model(tmp_path, capsys):
    """A model without a face-tracking profile: exit 1 and one line saying what it lacks."""
    from test_models_flame_smpl import smplx_arrays

    from avatar import cli

    data = smplx_arrays(np.random.default_rng(0))
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(path, **{k: v.toarray() if hasattr(v, "toarray") else v for k, v in data.items()})
    status = cli.main(["track", f"capture={tmp_path}", "model=smplx", f"+model_options.model_path={path}"])
    err = capsys.readouterr().err
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"avatar track: model 'smplx' has no face-tracking profile: it lacks "
                     f"{models.smpl.NO_FACE_PROFILE['smplx']}"], err


def _write_video(path: Path, frames, fps: float = 10.0) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.slow
def test_train_render_live_with_flame(capture, model_overrides, tmp_path, monkeypatch):
    """Needs the track test's tracking.npz (same module, runs first) and an avatar file that
    records the model's options (render and live load FLAME with them)."""
    from avatar import cli
    from avatar.io.capture import Capture
    from avatar.io.video_reader import open_source

    if not (capture.root / "tracking.npz").is_file():
        pytest.skip("the capture was not tracked (test_track_command_with_flame failed)")
    run = tmp_path / "run"
    assert cli.main(["train", f"capture={capture.root}", f"out={run}", *model_overrides, "train.iterations=30",
                     "train.resolution=64", "train.gaussians.uv_resolution=48", "train.preview_every=1000",
                     "train.checkpoint_every=1000", "device=cpu", "renderer=torch"]) == 0
    assert (run / "avatar.pt").is_file()
    cap = Capture(capture.root)
    video = _write_video(tmp_path / "driver.mp4", [cap.load_frame(i) for i in range(cap.n_frames)])
    out = tmp_path / "render" / "driven.mp4"
    assert cli.main(["render", f"run={run}", f"drive={video}", f"out={out}", "max_frames=6", "renderer=torch",
                     "device=cpu"]) == 0
    assert len(list(open_source(out).frames())) == 6
    report = json.loads((out.parent / "render_report.json").read_text())
    # The driver video was tracked frame by frame with the avatar's FLAME (its 10 identity coefficients).
    assert report["frames"] == 6 and report["driver_tracking"]["per_frame_fit"]
    monkeypatch.chdir(tmp_path)  # live's Hydra folder goes under ./outputs
    rec, live_report = tmp_path / "live.mp4", tmp_path / "live_report.json"
    assert cli.main(["live", f"run={run}", f"source={video}", "display=false", f"out={rec}", "max_frames=6",
                     f"report={live_report}", "renderer=torch", "device=cpu"]) == 0
    live = json.loads(live_report.read_text())
    assert live["frames_captured"] == 6 and live["frames_without_face"] == 0 and live["frames_shown"] >= 1

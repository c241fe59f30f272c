"""Photometric refinement of the tracking (``track.photometric``) on a rendered capture.

The capture: the ICT head with a smooth colour pattern painted on its vertices, rendered
with the mesh rasterizer at known poses. The tracking handed to the refinement has the
true identity and expressions but head rotations off by 1-3 degrees, varying over the
frames with zero mean, the kind of error landmarks leave. With the landmark anchor switched
off, only the colours can bring the poses back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_ICT = Path(__file__).resolve().parents[2] / "shared" / "assets" / "ict-facekit"
RES = 128
FOCAL = 150.0
N_FRAMES = 8


@pytest.fixture(scope="module")
def model():
    root = Path(os.environ["AVATAR_ASSETS"]) if os.environ.get("AVATAR_ASSETS") else SHARED_ICT
    if not root.is_dir():
        pytest.skip(f"ICT-FaceKit assets not found in $AVATAR_ASSETS or {SHARED_ICT}")
    import avatar.models

    return avatar.models.load("ict", asset_path=str(root))


@pytest.fixture(scope="module")
def embedding(model, tmp_path_factory):
    from avatar.landmarks.embedding import load_embedding

    return load_embedding(model, cache_dir=tmp_path_factory.mktemp("emb"))


@pytest.fixture(scope="module")
def lm(model, embedding):
    from avatar.tracking.landmark_model import LandmarkModel

    return LandmarkModel.from_model(model, embedding)


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from avatar.geometry.rotations import axis_angle_to_matrix

    Ra, Rb = axis_angle_to_matrix(torch.as_tensor(a)), axis_angle_to_matrix(torch.as_tensor(b))
    cos = (((Ra.transpose(1, 2) @ Rb).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cos)).numpy()


@pytest.fixture(scope="module")
def rendered(model, lm, tmp_path_factory):
    """(capture folder, true TrackedSequence, landmark targets [F, 478, 2])."""
    from avatar.data.capture import CaptureMeta, CaptureWriter, Landmarks
    from avatar.render import interpolate, rasterize_mesh
    from avatar.tracking.landmark_model import project, to_camera, tracking_viewmat, view_directions
    from avatar.tracking.sequence import TrackedSequence

    t = torch.linspace(0, 1, N_FRAMES)
    rotation = torch.stack((0.15 * torch.sin(2 * math.pi * t), 0.4 * torch.sin(math.pi * t) - 0.2, 0.05 * t), -1)
    translation = torch.stack((0.005 * torch.sin(3 * t), 0 * t, -0.5 + 0 * t), -1)
    shape = torch.zeros(model.shapedirs.shape[-1])
    expression = torch.zeros(N_FRAMES, model.exprdirs.shape[-1])
    with torch.no_grad():
        verts = model(shape=shape[None].expand(N_FRAMES, -1), expression=expression, rotation=rotation,
                      translation=translation).vertices
        p = model.template  # a pattern fixed on the surface: stripes of a few centimetres
        colours = torch.stack([0.5 + 0.3 * torch.sin(p @ torch.tensor(d) * 180.0) for d in
                               ((1.0, 0.3, 0.0), (0.0, 1.0, 0.4), (0.5, -0.4, 1.0))], -1)
        K = torch.tensor([[FOCAL, 0, RES / 2], [0, FOCAL, RES / 2], [0, 0, 1.0]])
        viewmat = tracking_viewmat()
        r = rasterize_mesh(verts, model.faces, K[None].expand(N_FRAMES, -1, -1), RES, RES,
                           viewmats=viewmat[None].expand(N_FRAMES, -1, -1))
        image = interpolate(colours, model.faces, r) + 0.3 * (~r.mask)[..., None]
        px = project(to_camera(lm.points(shape, expression, view_directions(rotation, translation)), rotation,
                               translation), torch.tensor(FOCAL), torch.tensor([RES / 2, RES / 2]))
    root = tmp_path_factory.mktemp("photometric") / "capture"
    writer = CaptureWriter(root, frame_format="png")
    for i in range(N_FRAMES):
        writer.write_frame(i, (image[i].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
        writer.write_mask(i, r.mask[i].numpy().astype(np.uint8) * 255)
    face = np.concatenate([px.numpy(), np.zeros((N_FRAMES, 478, 1))], -1).astype(np.float32)
    writer.finish(CaptureMeta(source="rendered", fps=25, width=RES, height=RES, n_frames=N_FRAMES),
                  Landmarks(face, np.ones(N_FRAMES, bool)))
    truth = TrackedSequence(
        model="ict", shape=shape.numpy(), expression=expression.numpy(), expression_names=tuple(model.expression_names),
        rotation=rotation.numpy(), translation=translation.numpy(), K=K.numpy(), viewmat=viewmat.numpy(),
        width=RES, height=RES, valid=np.ones(N_FRAMES, bool))
    return root, truth, px


def test_colours_bring_perturbed_poses_back(model, lm, rendered):
    from avatar.data.capture import Capture
    from avatar.tracking.photometric import PhotometricConfig, refine_photometric

    root, truth, targets = rendered
    t = np.linspace(0, 1, N_FRAMES)
    # Zero mean over the frames: colours fix poses relative to each other; the mean pose is the landmarks'.
    off = np.stack((0.04 * np.cos(2 * np.pi * t), 0.03 * np.sin(2 * np.pi * t), 0.02 * np.cos(2 * np.pi * t)), -1)
    start = dataclasses.replace(truth, rotation=(truth.rotation + off).astype(np.float32))
    before = rotation_error_deg(start.rotation, truth.rotation)
    cfg = PhotometricConfig(iterations=150, landmark_weight=0.0)
    refined, report = refine_photometric(Capture(root), start, model, lm, targets, torch.ones(N_FRAMES, dtype=torch.bool),
                                         cfg)
    after = rotation_error_deg(refined.rotation, truth.rotation)
    assert np.median(before) > 2.0
    assert np.median(after) < 0.35 * np.median(before), (before, after)  # measured: 2.2 -> 0.3 degrees
    assert report["colour_loss"]["last"] < report["colour_loss"]["first"]
    assert report["iterations"] == 150 and report["resolution"] == [cfg.resolution, cfg.resolution]
    json.dumps(report)  # goes into tracking_report.json
    # Only the pose moves.
    assert np.array_equal(refined.expression, start.expression) and np.array_equal(refined.shape, start.shape)


def test_true_poses_stay_put(model, lm, rendered):
    from avatar.data.capture import Capture
    from avatar.tracking.photometric import PhotometricConfig, refine_photometric

    root, truth, targets = rendered
    refined, _ = refine_photometric(Capture(root), truth, model, lm, targets, torch.ones(N_FRAMES, dtype=torch.bool),
                                    PhotometricConfig(iterations=60))
    assert np.median(rotation_error_deg(refined.rotation, truth.rotation)) < 0.5


def test_bad_settings_give_clear_errors(model, lm, rendered):
    from avatar.data.capture import Capture
    from avatar.tracking.photometric import PhotometricConfig, refine_photometric

    root, truth, targets = rendered
    valid = torch.ones(N_FRAMES, dtype=torch.bool)
    with pytest.raises(ValueError, match="iterations must be > 0"):
        refine_photometric(Capture(root), truth, model, lm, targets, valid, PhotometricConfig(iterations=0))
    no_face = dataclasses.replace(truth, translation=truth.translation + np.array([0, 0, 5.0], np.float32))
    with pytest.raises(ValueError, match="no face vertex is visible"):  # the head behind the camera
        refine_photometric(Capture(root), no_face, model, lm, targets, valid, PhotometricConfig(iterations=5))


def test_track_app_runs_the_stage_from_the_config(embedding, rendered, tmp_path, monkeypatch):
    """``avatar track ... track.photometric.iterations=N``: the stage runs after the landmark fit
    and is reported; the overlay draws the refined poses."""
    from omegaconf import OmegaConf

    from avatar.apps import track as app
    from avatar.tracking.sequence import load_tracking

    root, truth, _ = rendered
    monkeypatch.setattr("avatar.landmarks.embedding.load_embedding", lambda model, **kw: embedding)
    out = tmp_path / "tracked"
    cfg = OmegaConf.create({
        "capture": str(root), "out": str(out), "model": "ict",
        "track": {"device": "cpu", "dtype": "float32", "overlay": True, "overlay_stride": 4, "progress": False,
                  "fit": {"rigid_iterations": 60, "full_iterations": 120},
                  "photometric": {"iterations": 20, "blur": [1.0, 0.5]}}})
    assert app.main(cfg) == 0
    report = json.loads((out / "tracking_report.json").read_text())
    p = report["photometric"]
    assert p["iterations"] == 20 and p["reprojection_after"]["median_px"] < 2.0
    assert load_tracking(out, model="ict").n_frames == N_FRAMES
    assert (out / "tracking_overlay.mp4").stat().st_size > 0
    # Off by request: no stage, no report entry.
    cfg.track.photometric.iterations = 0
    assert app.main(cfg) == 0
    assert json.loads((out / "tracking_report.json").read_text())["photometric"] is None



@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_blur_matches_scipy_gaussian_filter(sigma):
    """The band-matrix blur is a Gaussian with taps to 3 sigma and replicated borders:
    scipy's ``gaussian_filter`` (mode "nearest", same radius) on each image plane."""
    from scipy.ndimage import gaussian_filter

    from avatar.tracking.photometric import _blur

    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 19, 26))
    got = _blur(torch.as_tensor(images), sigma).numpy()
    radius = math.ceil(3 * sigma)
    want = np.stack([[gaussian_filter(plane, sigma, mode="nearest", radius=radius) for plane in im] for im in images])
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.abs(got - images).max() > 0.05  # it does blur

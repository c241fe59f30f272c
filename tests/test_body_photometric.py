"""Photometric refinement of a body tracking's global pose (avatar.tracking.body_photometric), on
synthetic captures, whose true poses are known: Anny's (textured, the colours pin the pose) and
the toy body's (a few hundred vertices: the stage's bookkeeping)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from avatar.models.toy_body import toy_body


@pytest.fixture(scope="module")
def body():
    return toy_body()


@pytest.fixture(scope="module")
def truth_capture(body, tmp_path_factory):
    from avatar.synthetic.body_capture import BodySyntheticConfig, make_body_capture

    root = tmp_path_factory.mktemp("body_ph") / "cap"
    make_body_capture(root, BodySyntheticConfig(n_frames=8, resolution=128, supersample=1), body=body, progress=False)
    return root


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    R = axis_angle_to_matrix(torch.as_tensor(a, dtype=torch.float64)).transpose(-1, -2) @ axis_angle_to_matrix(
        torch.as_tensor(b, dtype=torch.float64))
    return np.degrees(matrix_to_axis_angle(R).norm(dim=-1).numpy())


def _perturbed(seq, degrees: float, seed: int = 0):
    """``seq`` with each frame turned about the vertical by a zero-mean random angle."""
    import dataclasses

    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-degrees, degrees, seq.n_frames)
    yaw -= yaw.mean()
    turn = torch.zeros(seq.n_frames, 3, dtype=torch.float64)
    turn[:, 1] = torch.as_tensor(np.radians(yaw))
    R = axis_angle_to_matrix(turn) @ axis_angle_to_matrix(torch.as_tensor(seq.rotation, dtype=torch.float64))
    return dataclasses.replace(seq, rotation=matrix_to_axis_angle(R).numpy().astype(np.float32))


@pytest.mark.slow
def test_the_colours_bring_turned_frames_back_to_the_true_pose(tmp_path):
    """Anny's synthetic capture, each frame's turn put off by up to 6 degrees (zero mean): the
    colour term alone (no landmark anchor) brings the frames back toward the truth."""
    pytest.importorskip("anny")
    from avatar import models
    from avatar.io.capture import Capture
    from avatar.synthetic.body_capture import BodySyntheticConfig, load_body_ground_truth, make_body_capture
    from avatar.tracking.body_photometric import BodyPhotometricConfig, refine_body_photometric

    body = models.load("anny")
    make_body_capture(tmp_path / "cap", BodySyntheticConfig(n_frames=12, resolution=128, supersample=1),
                      body=body, progress=False)
    capture = Capture(tmp_path / "cap")
    truth = load_body_ground_truth(capture.root)
    start = _perturbed(truth, 6.0)
    target = torch.as_tensor(np.nan_to_num(capture.landmarks.pose.astype(np.float32)))
    cfg = BodyPhotometricConfig(iterations=100, vertices=2000, landmark_weight=0.0, silhouette_weight=0.0)
    out, report = refine_body_photometric(capture, body, start, target, torch.ones(truth.n_frames, dtype=torch.bool), cfg)
    before = _angle_deg(start.rotation, truth.rotation)
    after = _angle_deg(out.rotation, truth.rotation)
    assert before.mean() > 2.0
    assert after.mean() < 0.5 * before.mean(), (before, after)
    assert report["iterations"] == 100 and report["colour_loss"]["last"] < report["colour_loss"]["first"]
    # shape, joints and cameras are the landmark fit's
    np.testing.assert_array_equal(out.pose, start.pose)
    np.testing.assert_array_equal(out.shape, start.shape)
    np.testing.assert_array_equal(out.K, start.K)


def test_frames_without_data_keep_their_pose_and_a_bad_setting_is_refused(body, truth_capture):
    from avatar.io.capture import Capture
    from avatar.io.tracking import load_tracking
    from avatar.tracking.body_photometric import BodyPhotometricConfig, refine_body_photometric

    capture = Capture(truth_capture)
    truth = load_tracking(truth_capture / "tracking.npz", model="toy_body")
    start = _perturbed(truth, 6.0, seed=1)
    target = torch.as_tensor(np.nan_to_num(capture.landmarks.pose.astype(np.float32)))
    valid = torch.ones(truth.n_frames, dtype=torch.bool)
    valid[3] = False
    cfg = BodyPhotometricConfig(iterations=10, resolution=64, vertices=200)
    out, _ = refine_body_photometric(capture, body, start, target, valid, cfg)
    np.testing.assert_allclose(out.rotation[3], start.rotation[3], atol=1e-6)
    np.testing.assert_allclose(out.translation[3], start.translation[3], atol=1e-6)
    assert not np.allclose(out.rotation[0], start.rotation[0], atol=1e-6)
    with pytest.raises(ValueError, match="iterations"):
        refine_body_photometric(capture, body, start, target, valid, BodyPhotometricConfig(iterations=0))


def test_the_person_mask_holds_the_outline(body, truth_capture):
    """Frames shifted sideways (zero mean): the silhouette anchor alone brings them back."""
    import dataclasses

    from avatar.io.capture import Capture
    from avatar.io.tracking import load_tracking
    from avatar.tracking.body_photometric import BodyPhotometricConfig, refine_body_photometric

    capture = Capture(truth_capture)
    truth = load_tracking(truth_capture / "tracking.npz", model="toy_body")
    shift = np.zeros((truth.n_frames, 3), np.float32)
    shift[:, 0] = np.random.default_rng(2).uniform(-0.05, 0.05, truth.n_frames)
    shift -= shift.mean(0)
    start = dataclasses.replace(truth, translation=truth.translation + shift)
    target = torch.as_tensor(np.nan_to_num(capture.landmarks.pose.astype(np.float32)))
    valid = torch.ones(truth.n_frames, dtype=torch.bool)
    errors = {}
    for weight in (0.0, 1.0):
        cfg = BodyPhotometricConfig(iterations=60, vertices=400, landmark_weight=0.0, silhouette_weight=weight,
                                    lr_translation=0.003)
        out, _ = refine_body_photometric(capture, body, start, target, valid, cfg)
        errors[weight] = np.abs(out.translation - truth.translation)[:, 0].mean()
    assert errors[1.0] < 0.5 * np.abs(shift[:, 0]).mean() and errors[1.0] < errors[0.0], errors

"""The synthetic body capture (avatar.synthetic.body_capture) and the body tracking file
(avatar.io.tracking.BodyTrackedSequence), on the toy body model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.io.capture import Capture
from avatar.io.tracking import BodyTrackedSequence, TrackingError, load_tracking
from avatar.synthetic.body_capture import (
    BodySyntheticConfig,
    body_performance,
    load_body_ground_truth,
    make_body_capture,
    project,
)
from avatar.models.toy_body import toy_body


@pytest.fixture(scope="module")
def body():
    return toy_body()


@pytest.fixture(scope="module")
def capture(tmp_path_factory, body):
    root = tmp_path_factory.mktemp("body") / "cap"
    make_body_capture(root, BodySyntheticConfig(n_frames=6, resolution=48, supersample=1), body=body, progress=False)
    return root


def test_capture_is_a_body_capture_with_every_frame_valid(capture):
    cap = Capture(capture)
    assert cap.is_body and cap.n_frames == 6 and list(cap.valid_frames()) == list(range(6))
    assert cap.landmarks.pose.shape == (6, 33, 4) and not cap.landmarks.face_present.any()
    mask = cap.load_mask(0)
    assert 0.03 < mask.mean() < 0.6  # a person, not an empty or full frame


def test_truth_reprojects_onto_the_landmarks_and_the_mask(capture, body):
    truth = load_body_ground_truth(capture)
    tracking = load_tracking(capture, model="toy_body")
    assert isinstance(tracking, BodyTrackedSequence)
    np.testing.assert_allclose(tracking.pose, truth.pose)
    cap = Capture(capture)
    out = body(shape=torch.as_tensor(truth.shape)[None], pose=torch.as_tensor(truth.pose),
               rotation=torch.as_tensor(truth.rotation), translation=torch.as_tensor(truth.translation))
    px, _ = project(out.landmarks, torch.as_tensor(truth.K), torch.as_tensor(truth.viewmat))
    np.testing.assert_allclose(px.numpy(), cap.landmarks.pose[..., :2], atol=1e-3)
    # every landmark of a frame lands inside (or next to) the person's silhouette
    for i in range(6):
        m = cap.load_mask(i) > 0.5
        xy = np.clip(px[i].numpy().round().astype(int), 0, 47)
        grown = np.zeros_like(m)
        for dy in (-2, -1, 0, 1, 2):
            for dx in (-2, -1, 0, 1, 2):
                grown |= np.roll(np.roll(m, dy, 0), dx, 1)
        assert grown[xy[:, 1], xy[:, 0]].mean() > 0.9


def test_performance_walks_turns_and_raises_arms(body):
    perf = body_performance(body.joint_names, 40)
    yaw = perf.rotation[:, 1]
    assert yaw[0] == 0 and abs(yaw[-1] - 2 * np.pi) < 1e-5 and np.all(np.diff(yaw) > 0)
    hip = perf.pose[:, body.joint_names.index("left_hip"), 0]
    assert hip.max() > 0.3 and hip.min() < -0.3  # swings both ways
    arm = perf.pose[:, body.joint_names.index("left_shoulder"), 2]
    assert arm[20] > 1.0 and abs(arm[0]) < 1e-6  # raised in the middle only


def test_body_tracking_file_round_trip_and_errors(tmp_path):
    F, J = 3, 4
    seq = BodyTrackedSequence(model="anny", shape=np.full(2, 0.5), shape_names=("a", "b"), pose=np.zeros((F, J, 3)),
                              joint_names=tuple("abcd"), rotation=np.zeros((F, 3)), translation=np.zeros((F, 3)),
                              K=np.eye(3), viewmat=np.eye(4), width=8, height=8, valid=np.ones(F, bool),
                              mask_iou=np.full(F, 0.9))
    seq.save(tmp_path / "tracking.npz")
    back = load_tracking(tmp_path)
    assert isinstance(back, BodyTrackedSequence) and back.joint_names == tuple("abcd") and back.mask_iou.shape == (F,)
    with pytest.raises(TrackingError, match="config says ict"):
        load_tracking(tmp_path, model="ict")
    with pytest.raises(TrackingError, match=r"'pose' must be \[F, J, 3\]"):
        BodyTrackedSequence(model="anny", shape=np.zeros(2), shape_names=("a", "b"), pose=np.zeros((F, J)),
                            joint_names=tuple("abcd"), rotation=np.zeros((F, 3)), translation=np.zeros((F, 3)),
                            K=np.eye(3), viewmat=np.eye(4), width=8, height=8, valid=np.ones(F, bool))

"""``avatar preprocess preprocess.subject=body``: person crops, pose landmarks, masks, flags, bad inputs.

The helpers are tested on synthetic masks and landmarks; the pipeline runs MediaPipe for real
on a few frames of the full-body turnaround video (``AVATAR_TEST_DATA``; skipped when absent),
cut, doubled or emptied to make the bad inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_video_reader import write_test_video

from avatar.io.capture import Capture
from avatar.landmarks.pose import N_POSE_LANDMARKS, POSE_LANDMARK_NAMES
from avatar.preprocess import PreprocessConfig, PreprocessError, preprocess
from avatar.preprocess_body import body_box, person_regions, points_outside, preprocess_body

NAME = {n: i for i, n in enumerate(POSE_LANDMARK_NAMES)}
FAST = dict(subject="body", resolution=256, progress=False)


def _standing(x: float = 50.0, top: float = 20.0, height: float = 60.0, visibility: float = 1.0) -> np.ndarray:
    """``[33, 4]`` landmarks of a stick person centred at ``x``, nose at ``top``, ankles ``height`` below."""
    lm = np.zeros((N_POSE_LANDMARKS, 4), np.float32)
    lm[:, 0], lm[:, 1], lm[:, 3] = x, top + height / 2, visibility
    for name, (dx, dy) in {"nose": (0, 0), "left_shoulder": (8, 0.2), "right_shoulder": (-8, 0.2),
                           "left_hip": (5, 0.55), "right_hip": (-5, 0.55), "left_ankle": (5, 1.0),
                           "right_ankle": (-5, 1.0)}.items():
        lm[NAME[name], :2] = x + dx, top + dy * height
    return lm


def test_person_regions_finds_the_person_other_people_and_edges():
    mask = np.zeros((100, 120), np.float32)
    mask[15:85, 40:61] = 1.0  # the person, around the landmarks
    lm = _standing()
    box, n, edges = person_regions(mask, lm)
    np.testing.assert_array_equal(box, [40, 15, 61, 85])
    assert n == 1 and edges == []
    mask[30:80, 90:100] = 1.0  # someone else, a third of the person's size
    mask[2:4, 2:4] = 1.0  # a speck: nobody
    assert person_regions(mask, lm)[1] == 2
    mask[60:, 40:61] = 1.0  # the person runs out at the bottom
    assert person_regions(mask, lm)[2] == ["bottom"]
    assert person_regions(np.zeros_like(mask), lm) == (None, 1, [])
    hidden = lm.copy()
    hidden[:, 3] = 0.1  # no visible landmark: no region
    assert person_regions(mask, hidden)[0] is None


def test_points_outside_and_body_box():
    lm = _standing()
    assert points_outside(lm, 120, 100) == []
    assert points_outside(lm, 120, 70) == ["left_ankle", "right_ankle"]  # y = 80 is below a 70-px frame
    lm2 = lm.copy()
    lm2[NAME["left_shoulder"], 0] = -3.0
    assert points_outside(lm2, 120, 100) == ["left_shoulder"]
    box = body_box(lm, None)
    np.testing.assert_allclose(box, [42, 20, 58, 80])
    np.testing.assert_allclose(body_box(lm, np.array([40.0, 10.0, 61.0, 85.0])), [40, 10, 61, 85])  # head top, feet
    far = body_box(lm, np.array([0.0, 0.0, 400.0, 400.0]))  # a merged background blob: held to half a box side
    np.testing.assert_allclose(far, [12, 0, 88, 110])  # the region reaches y=0 only


def test_head_preprocess_refuses_a_body_config(tmp_path):
    with pytest.raises(ValueError, match="preprocess_body"):
        preprocess(tmp_path / "v.mp4", tmp_path / "cap", PreprocessConfig(**FAST))
    with pytest.raises(ValueError, match="subject"):
        PreprocessConfig(subject="dog")
    with pytest.raises(ValueError, match="body_mask"):
        PreprocessConfig(body_mask="chroma")


# --- the pipeline on real frames ---------------------------------------------------------------

def _turnaround(n: int, every: int) -> list[np.ndarray]:
    import av

    root = Path(os.environ.get("AVATAR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
    path = root / "body_turnaround_512.mp4"
    if not path.is_file():
        pytest.skip(f"real test video {path} is absent (set AVATAR_TEST_DATA to the folder holding it)")
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][: n * every: every]


def _green(image: np.ndarray) -> np.ndarray:
    """The green screen of the turnaround video: [H, W] bool."""
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(int)
    return (np.abs(hsv[..., 0] - 60) < 20) & (hsv[..., 1] > 80) & (hsv[..., 2] > 50)


def test_real_body_capture(tmp_path):
    frames = _turnaround(6, 11)  # front, sides and back
    video = write_test_video(tmp_path / "body.mp4", frames, fps=30)
    report = preprocess_body(video, tmp_path / "cap", PreprocessConfig(**FAST))
    cap = Capture(tmp_path / "cap")
    lm = cap.landmarks
    assert cap.subject == "body" and cap.n_frames == 6 and (cap.meta.width, cap.meta.height) == (256, 256)
    assert lm.pose_present.all() and not lm.face_present.any() and cap.valid_frames().tolist() == list(range(6))
    assert report["flagged"] == {} and report["person"]["found"] == 6 and report["pose"]["missing"] == 0
    pose = lm.pose[..., :2]
    assert (pose > 0).all() and (pose < 256).all()  # the whole body is in the crop
    ankles = pose[:, [NAME["left_ankle"], NAME["right_ankle"]], 1].mean(1)
    assert ((ankles - pose[:, NAME["nose"], 1]) > 0.5 * 256).all()  # a standing body fills most of the crop
    for i in (0, 3):  # the mask against the green screen, cut the same way
        truth = ~_green(cap.load_frame(i))
        truth[cap.load_frame(i).sum(-1) < 30] = False  # black padding outside the source frame
        mask = cap.load_mask(i) > 0.5
        assert (mask & truth).sum() / (mask | truth).sum() > 0.85


def test_real_bad_bodies_are_flagged_or_refused(tmp_path):
    import cv2

    frames = _turnaround(3, 20)
    cut = [np.ascontiguousarray(f[:330]) for f in frames]  # knees down out of the frame
    video = write_test_video(tmp_path / "cut.mp4", cut, fps=30)
    report = preprocess_body(video, tmp_path / "cut", PreprocessConfig(**FAST))
    assert set(report["flagged"]) == {"0", "1", "2"}
    assert all("body partly out of frame" in r and "ankle" in r and "bottom edge" in r
               for r in report["flagged"].values()), report["flagged"]
    assert Capture(tmp_path / "cut").valid_frames().size == 0 and any("film the whole body" in n for n in report["notes"])
    assert list(report["flagged_by_kind"]) == ["body partly out of frame"]  # one kind, its details kept together

    small = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in frames]
    two = [np.concatenate((s, s[:, ::-1]), axis=1)[:, 64:-64] for s in small]  # two people side by side
    video = write_test_video(tmp_path / "two.mp4", two, fps=30)
    report = preprocess_body(video, tmp_path / "two", PreprocessConfig(**FAST))
    assert report["flagged_by_kind"]["2 people"]["count"] >= 2, report["flagged"]

    empty = [np.full_like(f, (57, 106, 60)) for f in small]  # the green screen alone
    video = write_test_video(tmp_path / "empty.mp4", empty, fps=30)
    with pytest.raises(PreprocessError, match="no person found in any of the 3 frames"):
        preprocess_body(video, tmp_path / "empty", PreprocessConfig(**FAST))
    assert not (tmp_path / "empty").exists()

"""MediaPipe pose landmarks (avatar.landmarks.pose) and ``preprocess.pose``.

The detector runs for real: on the public-domain astronaut portrait that scikit-image ships
and, where ``AVATAR_TEST_DATA`` holds it, on frames of the full-body turnaround video.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from avatar.landmarks.pose import (
    N_POSE_LANDMARKS, POSE_LANDMARK_NAMES, PoseDetector, detect_poses, fill_pose_gaps, mask_support,
)

skimage_data = pytest.importorskip("skimage.data")
NAME = {n: i for i, n in enumerate(POSE_LANDMARK_NAMES)}


def _real(name: str) -> Path:
    root = Path(os.environ.get("AVATAR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
    if not (root / name).is_file():
        pytest.skip(f"real test video {root / name} is absent (set AVATAR_TEST_DATA to the folder holding it)")
    return root / name


def _frames(path: Path, n: int, every: int = 1) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][: n * every: every]
    return frames


def test_astronaut_pose_in_pixels_with_mask():
    img = skimage_data.astronaut()  # 512x512: head and shoulders, facing the camera
    with PoseDetector(video=False, segmentation=True) as det:
        pose = det.detect(img)
        assert pose is not None and pose.landmarks.shape == (N_POSE_LANDMARKS, 4) and pose.landmarks.dtype == np.float32
        lm = pose.landmarks
        nose, ls, rs = lm[NAME["nose"]], lm[NAME["left_shoulder"]], lm[NAME["right_shoulder"]]
        assert 150 < nose[0] < 320 and 40 < nose[1] < 260 and nose[3] > 0.9  # on the face, as the face mesh finds it
        assert ls[0] > nose[0] > rs[0]  # her left is the image's right
        assert ls[1] > nose[1] + 50 and rs[1] > nose[1] + 50  # shoulders below the face
        assert pose.mask.shape == img.shape[:2] and pose.mask[int(nose[1]), int(nose[0])] > 0.5
        assert pose.mask[5, 5] < 0.5 and mask_support(lm, pose.mask) > 0.8
        assert pose.world.shape == (N_POSE_LANDMARKS, 3)
        x0, y0, x1, y1 = pose.box()
        assert x0 <= rs[0] < ls[0] <= x1 and y0 <= nose[1] < ls[1] <= y1
        assert det.detect(np.zeros((64, 64, 3), np.uint8)) is None
        with pytest.raises(ValueError, match="uint8"):
            det.detect(img.astype(np.float32))


def test_mask_support_counts_visible_landmarks_on_the_mask():
    lm = np.zeros((N_POSE_LANDMARKS, 4), np.float32)
    lm[:, :2] = [10.5, 20.5]
    lm[:, 3] = 1.0
    mask = np.zeros((40, 30), np.float32)
    assert mask_support(lm, mask) == 0.0
    mask[20, 10] = 1.0
    assert mask_support(lm, mask) == 1.0
    lm[:10, :2] = [100.0, 5.0]  # outside the image: counted as off the mask
    assert mask_support(lm, mask) == pytest.approx(23 / 33)
    lm[:10, 3] = 0.1  # not visible: not counted
    assert mask_support(lm, mask) == 1.0
    lm[:, 3] = 0.0
    assert mask_support(lm, mask) == 0.0


def test_fill_pose_gaps_bridges_short_gaps_only():
    T = 14
    lm = np.zeros((T, N_POSE_LANDMARKS, 4), np.float32)
    lm[:, :, 0] = np.arange(T)[:, None] * 2.0  # x moves 2 px per frame
    lm[:, :, 3] = 1.0
    valid = np.ones(T, bool)
    valid[[0, 3, 4, 8, 9, 10, 13]] = False  # ends, a 2-frame gap and a 3-frame gap
    junk = np.where(valid[:, None, None], lm, 99.0)
    filled, bridged = fill_pose_gaps(junk, valid, max_gap=2)
    assert bridged.tolist() == [i in (3, 4) for i in range(T)]
    np.testing.assert_allclose(filled[3:5], lm[3:5], atol=1e-5)  # linear between frames 2 and 5
    np.testing.assert_array_equal(filled[~(valid | bridged)], 99.0)  # the ends and the long gap stay
    np.testing.assert_array_equal(junk[valid], filled[valid])
    _, bridged3 = fill_pose_gaps(junk, valid, max_gap=3)
    assert bridged3[8:11].all() and not bridged3[[0, 13]].any()
    assert not fill_pose_gaps(junk, valid, max_gap=0)[1].any()
    empty, none = fill_pose_gaps(np.zeros((0, N_POSE_LANDMARKS, 4)), np.zeros(0, bool), 5)
    assert empty.shape == (0, N_POSE_LANDMARKS, 4) and none.shape == (0,)
    with pytest.raises(ValueError, match="valid flags"):
        fill_pose_gaps(lm, valid[:3], 2)


def test_detect_poses_flags_and_fills_a_frame_without_a_person():
    img = skimage_data.astronaut()[::2, ::2]
    blank = np.full_like(img, 120)
    track = detect_poses([img, blank, img, blank, blank], video=False, segmentation=True, max_gap=1)
    assert track.landmarks.shape == (5, N_POSE_LANDMARKS, 4) and track.masks.shape == (5, 256, 256)
    assert track.valid.tolist() == [True, False, True, False, False]
    assert track.filled.tolist() == [False, True, False, False, False]  # the 2-frame tail is not bridged
    np.testing.assert_allclose(track.landmarks[1], track.landmarks[0], atol=1e-3)  # same image either side
    assert track.present.tolist() == [True, True, True, False, False]
    assert (track.masks[3] == 0).all()


def test_body_turnaround_frames():
    """Real full-body frames (8 of the 65, 512x512): every joint where a standing person has it."""
    frames = _frames(_real("body_turnaround_512.mp4"), 8, every=8)
    track = detect_poses(frames, video=True)
    assert track.valid.all()
    lm = track.landmarks
    y = {k: lm[:, NAME[f"left_{k}"], 1] for k in ("shoulder", "hip", "knee", "ankle")}
    assert (lm[:, NAME["nose"], 1] < y["shoulder"]).all()
    assert (y["shoulder"] < y["hip"]).all() and (y["hip"] < y["knee"]).all() and (y["knee"] < y["ankle"]).all()
    height = y["ankle"] - lm[:, NAME["nose"], 1]
    assert (height > 0.5 * 512).all() and (lm[..., :2] > 0).all() and (lm[..., :2] < 512).all()


def test_preprocess_pose_fills_the_capture_slot(tmp_path):
    from test_video_reader import astronaut_scene, write_test_video

    from avatar.io.capture import Capture
    from avatar.preprocess import PreprocessConfig, preprocess

    frames = [astronaut_scene(480, 360, [(0.4 + 0.04 * i, 0.5, 0.8)]) for i in range(6)]
    frames[2] = astronaut_scene(480, 360, [], seed=1)  # nobody: no face, no pose
    video = write_test_video(tmp_path / "v.mp4", frames)
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(resolution=256, progress=False, pose=True))
    lm = Capture(tmp_path / "cap").landmarks
    assert lm.pose.shape == (6, N_POSE_LANDMARKS, 4) and lm.pose_present.all()
    assert report["pose"]["detected"] == 5 and report["pose"]["interpolated"] == 1
    assert report["pose"]["interpolated_frames"] == "2" and report["pose"]["missing"] == 0
    np.testing.assert_allclose(lm.pose[2], 0.5 * (lm.pose[1] + lm.pose[3]), atol=1e-3)
    nose = lm.pose[[0, 1, 3, 4, 5], NAME["nose"], :2]
    face_nose = lm.face[[0, 1, 3, 4, 5], 1, :2]  # face mesh point 1: the nose tip
    assert np.abs(nose - face_nose).max() < 20  # same pixels as the face landmarks
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(resolution=256, progress=False, pose=True,
                                                                   pose_max_gap=0, overwrite=True))
    lm = Capture(tmp_path / "cap").landmarks
    assert lm.pose_present.tolist() == [True, True, False, True, True, True]
    assert report["pose"]["missing_frames"] == "2" and any("no pose landmarks" in n for n in report["notes"])
    preprocess(video, tmp_path / "cap", PreprocessConfig(resolution=256, progress=False, overwrite=True))
    assert Capture(tmp_path / "cap").landmarks.pose is None  # off by default

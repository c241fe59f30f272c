"""``avatar preprocess``: crops, landmarks, masks, flags, reports and bad inputs.

Synthetic inputs are generated in tmp_path from the public-domain astronaut portrait that
scikit-image ships (pasted on a background and moved). The slow tests run the real videos
of the shared data folder (``AVATAR_TEST_DATA``) and skip when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_video_reader import astronaut_scene, write_test_video

from avatar.io.capture import Capture, CaptureError
from avatar.preprocess import REPORT_NAME, PreprocessConfig, PreprocessError, frame_ranges, preprocess
from avatar.geometry.crop import crop_image, crop_transform, smooth_track, transform_landmarks

pytest.importorskip("skimage.data")

FAST = dict(resolution=256, progress=False)
W, H = 480, 360


def _moving(n: int, scale: float = 0.8) -> list[np.ndarray]:
    """The astronaut's head moving left to right over a static background."""
    return [astronaut_scene(W, H, [(0.4 + 0.2 * i / max(n - 1, 1), 0.5, scale)]) for i in range(n)]


def _centres(boxes) -> np.ndarray:
    boxes = np.asarray(boxes)
    return 0.5 * (boxes[:, :2] + boxes[:, 2:])


# --- library pieces ------------------------------------------------------------------------

def test_smooth_track_is_zero_phase_and_fills_gaps():
    t = np.arange(50) / 25.0
    line = np.stack([100 + 40 * t, 7.0 + 0 * t], axis=1)  # steady motion, constant size
    valid = np.ones(50, bool)
    np.testing.assert_allclose(smooth_track(t, line, valid, 0.3), line, atol=1e-6)  # no lag, ends too
    noisy = line + np.random.default_rng(0).normal(0, 2.0, line.shape)
    smooth = smooth_track(t, noisy, valid, 0.3)
    assert np.median(np.abs(np.diff(smooth[:, 0]) - 40 / 25)) < 0.2 * np.median(np.abs(np.diff(noisy[:, 0])))
    valid[20:26] = False  # gap: interpolated from both sides, whatever the rows held
    gappy = np.where(valid[:, None], line, 1e6)
    np.testing.assert_allclose(smooth_track(t, gappy, valid, 0.3), line, atol=1e-6)
    valid[:] = False
    valid[10] = True  # before the first / after the last valid row: held
    np.testing.assert_allclose(smooth_track(t, gappy, valid, 0.3), np.tile(line[10], (50, 1)))
    np.testing.assert_allclose(smooth_track(t, noisy, np.ones(50, bool), 0.0), noisy)


def test_crop_maps_points_like_the_landmark_transform():
    for size, box in [(300, [50.0, 20.0, 150.0, 120.0]), (1200, [100.0, 50.0, 1100.0, 1050.0])]:
        img = np.zeros((size, size, 3), np.uint8)
        img[60:63, 100:103] = 255  # a 3x3 dot centred on (101.5, 61.5) in continuous pixels
        crop, A = crop_image(img, np.array(box), 200)
        np.testing.assert_allclose(A, crop_transform(np.array(box), 200))
        want = transform_landmarks(np.array([[[101.5, 61.5, 1.0]]], np.float32), A)[0, 0]
        weights = crop[..., 0].astype(float)
        ys, xs = np.mgrid[:200, :200] + 0.5  # pixel centres in continuous coordinates
        got = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
        np.testing.assert_allclose(got, want[:2], atol=0.3)
        assert want[2] == pytest.approx(A[0, 0])


def test_frame_ranges():
    assert frame_ranges([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"
    assert frame_ranges([]) == ""


# --- the pipeline on synthetic videos ---------------------------------------------------------

def test_follow_crop_writes_a_complete_capture(tmp_path):
    n = 16
    video = write_test_video(tmp_path / "moving.mp4", _moving(n))
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))
    cap = Capture(tmp_path / "cap")
    assert cap.n_frames == n and report["frames_in"] == report["frames_out"] == n
    assert cap.meta.width == cap.meta.height == 256 and cap.meta.fps == 25.0
    assert cap.load_frame(0).shape == (256, 256, 3) and cap.load_mask(0).shape == (256, 256)
    lm = cap.landmarks
    assert lm.face_present.all() and not cap.meta.flagged and report["faces"]["fraction"] == 1.0
    assert (lm.face[..., :2] > 0).all() and (lm.face[..., :2] < 256).all()
    # The crop follows the head: centres move with it, the face stays mid-crop.
    centres = _centres(cap.meta.crop_boxes)
    head_x = W * (0.4 + 0.2 * np.arange(n) / (n - 1))
    assert np.abs(centres[:, 0] - head_x).max() < 12 and np.all(np.diff(centres[:, 0]) > 0)
    face_centre = 0.5 * (lm.face[..., :2].min(1) + lm.face[..., :2].max(1))
    assert np.abs(face_centre[:, 0] - 128).max() < 10
    # The mask covers the head, not the corners of the background.
    mask = cap.load_mask(n // 2)
    assert mask[128, 128] > 0.5 and mask[:20, :20].mean() < 0.5
    assert np.allclose(cap.meta.timestamps, np.arange(n) / 25.0, atol=1e-3)
    on_disk = json.loads((tmp_path / "cap" / REPORT_NAME).read_text())
    assert set(on_disk["seconds"]) >= {"decode", "detect", "segment", "write", "total"}
    assert on_disk["source"]["rotation"] == 0 and on_disk["source"]["fps"] == 25.0


def test_fixed_and_full_crops(tmp_path):
    import av

    n = 10
    video = write_test_video(tmp_path / "moving.mp4", _moving(n))
    preprocess(video, tmp_path / "fixed", PreprocessConfig(crop="fixed", preview=True, **FAST))
    with av.open(str(tmp_path / "fixed" / "preprocess_preview.mp4")) as preview:
        assert sum(1 for _ in preview.decode(video=0)) == n
    cap = Capture(tmp_path / "fixed")
    boxes = np.array(cap.meta.crop_boxes)
    assert np.all(boxes == boxes[0]) and cap.landmarks.face_present.all()
    face = cap.landmarks.face[..., :2]
    assert (face > 0).all() and (face < 256).all()  # every face of the track inside the one crop
    preprocess(video, tmp_path / "full", PreprocessConfig(crop="full", **FAST))
    boxes = np.array(Capture(tmp_path / "full").meta.crop_boxes)
    np.testing.assert_allclose(boxes, np.tile([0, -60, 480, 420], (n, 1)))  # the frame, padded square


def test_fps_and_max_frames(tmp_path):
    video = write_test_video(tmp_path / "moving.mp4", _moving(20))
    preprocess(video, tmp_path / "cap", PreprocessConfig(max_frames=8, frame_format="png", **FAST))
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(fps=10, max_frames=6, **FAST))
    cap = Capture(tmp_path / "cap")
    assert cap.n_frames == 6 and cap.meta.fps == 10
    assert np.all(np.diff(cap.meta.timestamps) >= 0.08 - 1e-6)
    assert cap.meta.extra["source_indices"] == [0, 3, 5, 8, 10, 13]
    assert report["dropped"]["fps_subsampling"] == 8 and report["dropped"]["stopped_at_max_frames"]
    # The longer png run before left no stale file behind.
    assert sorted(p.name for p in (tmp_path / "cap" / "frames").iterdir()) == [f"{i:06d}.jpg" for i in range(6)]
    assert len(list((tmp_path / "cap" / "masks").iterdir())) == 6


def test_no_face_anywhere_is_an_error_and_writes_nothing(tmp_path):
    frames = [astronaut_scene(W, H, seed=i, noise=True) for i in range(6)]
    video = write_test_video(tmp_path / "noise.mp4", frames)
    with pytest.raises(PreprocessError, match=r"no face found in any of the 6 frames of .*noise\.mp4"):
        preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))
    assert not (tmp_path / "cap").exists()


def test_two_people_keep_the_largest_and_flag(tmp_path):
    frames = [astronaut_scene(600, 400, [(0.27, 0.5, 1.2), (0.73, 0.5, 1.0)])] * 6
    video = write_test_video(tmp_path / "two.mp4", frames)
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))
    cap = Capture(tmp_path / "cap")
    assert cap.meta.flagged == {i: "2 faces (kept the largest)" for i in range(6)}
    assert report["flagged_by_kind"] == {"2 faces": {"count": 6, "frames": "0-5"}}
    assert len(report["notes"]) == 1 and "6 of 6 frames (0-5) show 2 faces: the largest face" in report["notes"][0]
    assert np.abs(_centres(cap.meta.crop_boxes)[:, 0] - 0.27 * 600).max() < 30  # on the larger face (left)
    assert cap.landmarks.face_present.all() and len(cap.valid_frames()) == 0


def test_second_face_in_one_frame_does_not_steal_the_crop(tmp_path):
    frames = [astronaut_scene(600, 400, [(0.27, 0.5, 0.8)]) for _ in range(8)]
    frames[4] = astronaut_scene(600, 400, [(0.27, 0.5, 0.8), (0.73, 0.5, 1.1)])  # a larger face shows up
    video = write_test_video(tmp_path / "visitor.mp4", frames)
    preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))
    cap = Capture(tmp_path / "cap")
    assert cap.meta.flagged == {4: "2 faces (kept the one continuing the track)"}
    x = _centres(cap.meta.crop_boxes)[:, 0]
    assert np.abs(x - x[0]).max() < 3


def test_small_face_flagged(tmp_path):
    video = write_test_video(tmp_path / "small.mp4", _moving(5, scale=0.6))  # face ~65 px
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(min_face_size=100, **FAST))
    flagged = Capture(tmp_path / "cap").meta.flagged
    assert sorted(flagged) == list(range(5))
    assert all(r.startswith("face too small (") and r.endswith(" px < 100 px)") for r in flagged.values())
    assert 50 < report["faces"]["median_size_src_px"] < 80


def test_tiny_face_found_and_flagged(tmp_path):
    video = write_test_video(tmp_path / "tiny.mp4", _moving(4, scale=0.3))  # face ~30 px: below the mesh's detector
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))
    cap = Capture(tmp_path / "cap")
    assert cap.landmarks.face_present.all()
    assert all(r.startswith("face too small (") and r.endswith(" px < 64 px)") for r in cap.meta.flagged.values())
    assert sorted(cap.meta.flagged) == list(range(4)) and report["faces"]["median_size_src_px"] < 45
    with pytest.raises(PreprocessError, match=r"no face found in any of the 4 frames of .*tiny\.mp4"):
        preprocess(video, tmp_path / "cap2", PreprocessConfig(small_faces=False, **FAST))


def test_face_lost_mid_video(tmp_path):
    frames = _moving(16)
    for i in range(6, 10):
        frames[i] = astronaut_scene(W, H, seed=i, noise=True)
    video = write_test_video(tmp_path / "lost.mp4", frames)
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))
    cap = Capture(tmp_path / "cap")
    assert cap.meta.flagged == {i: "no face" for i in range(6, 10)}
    assert report["flagged_by_kind"] == {"no face": {"count": 4, "frames": "6-9"}}
    present = cap.landmarks.face_present
    assert not present[6:10].any() and present[:6].all() and present[10:].all()
    assert cap.valid_frames().tolist() == [*range(6), *range(10, 16)]
    x = _centres(cap.meta.crop_boxes)[:, 0]  # the crop glides across the gap
    assert np.all(np.isfinite(x)) and np.all(np.diff(x) > 0)


def test_rotated_phone_video(tmp_path):
    upright = [astronaut_scene(272, 480, [(0.5, 0.45 - 0.01 * i, 0.8)]) for i in range(6)]
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]  # landscape on disk
    video = write_test_video(tmp_path / "phone.mp4", stored, rotation=90)
    report = preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))
    cap = Capture(tmp_path / "cap")
    assert cap.meta.rotation == 90 and report["source"]["rotation"] == 90
    assert (cap.meta.extra["source_width"], cap.meta.extra["source_height"]) == (272, 480)
    assert cap.landmarks.face_present.all() and not cap.meta.flagged
    face = cap.landmarks.face
    assert np.all(face[:, 10, 1] < face[:, 1, 1]) and np.all(face[:, 1, 1] < face[:, 152, 1])  # forehead, nose, chin
    reference = write_test_video(tmp_path / "upright.mp4", upright)
    preprocess(reference, tmp_path / "ref", PreprocessConfig(**FAST))
    np.testing.assert_allclose(cap.meta.crop_boxes, Capture(tmp_path / "ref").meta.crop_boxes, atol=3)


def test_image_folder_input(tmp_path):
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(_moving(5)):
        cv2.imwrite(str(folder / f"{i:04d}.png"), img[..., ::-1])
    report = preprocess(folder, tmp_path / "cap", PreprocessConfig(image_fps=10, **FAST))
    cap = Capture(tmp_path / "cap")
    assert cap.n_frames == 5 and cap.landmarks.face_present.all() and report["source"]["kind"] == "images"
    np.testing.assert_allclose(cap.meta.timestamps, np.arange(5) / 10)


def test_interrupted_run_leaves_no_trusted_capture(tmp_path, monkeypatch):
    from avatar.landmarks import segmentation

    video = write_test_video(tmp_path / "moving.mp4", _moving(6))
    preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))  # a finished capture ...
    original, calls = segmentation.SelfieSegmenter.segment, []

    def segment_then_die(self, rgb):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, rgb)

    monkeypatch.setattr(segmentation.SelfieSegmenter, "segment", segment_then_die)
    with pytest.raises(KeyboardInterrupt):  # ... rewritten and interrupted at frame 2
        preprocess(video, tmp_path / "cap", PreprocessConfig(**FAST))
    with pytest.raises(CaptureError, match="no meta.json"):
        Capture(tmp_path / "cap")


# --- the app: bad inputs give one line naming the file, exit status 1 ------------------------

def _app_cfg(**overrides):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("preprocess", overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_app_bad_inputs(tmp_path, capsys):
    from avatar.apps.preprocess import main

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "readme.mp4"
    text.write_text("not a video\n" * 50)
    good = write_test_video(tmp_path / "good.mp4", [astronaut_scene(64, 48, seed=i, noise=True) for i in range(30)])
    truncated = tmp_path / "half.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = write_test_video(tmp_path / "noise.mp4", [astronaut_scene(W, H, noise=True)] * 3)
    for path, why in [(empty, "empty"), (text, "cannot open"), (truncated, "truncated"),
                      (noise, "no face found"), (tmp_path / "nowhere.mp4", "does not exist")]:
        out = tmp_path / f"cap_{path.stem}"
        assert main(_app_cfg(input=path, out=out, **{"preprocess.progress": False})) == 1
        err = capsys.readouterr().err
        assert err.startswith("avatar preprocess: ") and str(path) in err and why in err, err
        assert not (out / "meta.json").exists()
    assert main(_app_cfg(input=noise, out=tmp_path / "x", **{"preprocess.crop": "wobbly"})) == 2
    assert "preprocess.crop must be one of" in capsys.readouterr().err
    assert main(_app_cfg(input=noise, out=tmp_path / "x", **{"preprocess.max_frames": 0})) == 2
    assert "preprocess.max_frames must be >= 1, got 0" in capsys.readouterr().err
    assert main(_app_cfg(input=noise, out=tmp_path / "x", **{"+preprocess.colour": 1})) == 2
    assert "unknown preprocess option(s) ['colour']" in capsys.readouterr().err


def test_app_writes_capture(tmp_path, caplog):
    import logging

    from avatar.apps.preprocess import main

    video = write_test_video(tmp_path / "moving.mp4", _moving(4))
    cfg = _app_cfg(input=video, out=tmp_path / "cap", **{"preprocess.resolution": 256, "preprocess.progress": False})
    with caplog.at_level(logging.INFO, logger="avatar.apps.preprocess"):
        assert main(cfg) == 0
    assert "4 frames (256x256)" in caplog.text
    assert Capture(tmp_path / "cap").n_frames == 4


def test_cli_subcommand(tmp_path):
    from avatar.cli import SUBCOMMANDS

    if SUBCOMMANDS["preprocess"].target is None:
        pytest.skip("`avatar preprocess` is not registered in avatar/cli.py yet")
    video = write_test_video(tmp_path / "moving.mp4", _moving(4))
    run = subprocess.run(
        [sys.executable, "-m", "avatar", "preprocess", f"input={video}", f"out={tmp_path / 'cap'}",
         "preprocess.resolution=256", "preprocess.progress=false"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert Capture(tmp_path / "cap").n_frames == 4
    bad = subprocess.run([sys.executable, "-m", "avatar", "preprocess", f"input={tmp_path / 'no.mp4'}",
                          f"out={tmp_path / 'cap2'}"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "no.mp4 does not exist" in bad.stderr


# --- real videos -------------------------------------------------------------------------------

def _real(name: str) -> Path:
    root = Path(os.environ.get("AVATAR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
    path = root / name
    if not path.is_file():
        pytest.skip(f"real test video {path} is absent (set AVATAR_TEST_DATA to the folder holding it)")
    return path


@pytest.mark.slow
def test_real_talking_head(tmp_path):
    """All 400 frames (about 20 s here); the report's timings are the preprocess budget's figures."""
    report = preprocess(_real("head_talking_512.mp4"), tmp_path / "cap", PreprocessConfig(progress=False))
    cap = Capture(tmp_path / "cap")
    lm = cap.landmarks
    assert cap.n_frames == 400 and lm.face_present.mean() >= 0.95
    face = lm.face[lm.face_present][..., :2]
    assert (face >= 0).all() and (face < 512).all()
    steps = np.linalg.norm(np.diff(_centres(cap.meta.crop_boxes), axis=0), axis=1)
    assert np.median(steps) < 1.0 and steps.max() < 3.0, steps  # steady crop; the head turns a little
    assert report["crop"]["center_step_src_px"]["median"] < 1.0
    assert set(report["seconds_per_frame"]) >= {"decode", "detect", "segment", "write", "total"}


@pytest.mark.slow
def test_real_portrait_selfie_and_its_rotated_copy(tmp_path):
    """The portrait selfie is stored upright; a copy stored landscape with rotation
    metadata (as phones write it) must give the same capture."""
    import av

    source = _real("selfie_upperbody_720x1280.mp4")
    with av.open(str(source)) as container:
        upright = [f.to_ndarray(format="rgb24") for _, f in zip(range(12), container.decode(video=0))]
    rotated = write_test_video(tmp_path / "rotated.mp4", [np.ascontiguousarray(np.rot90(f, 1)) for f in upright],
                               fps=30, rotation=-90)
    cfg = PreprocessConfig(max_frames=12, progress=False)
    preprocess(source, tmp_path / "cap", cfg)
    report = preprocess(rotated, tmp_path / "rot", cfg)
    cap, rot = Capture(tmp_path / "cap"), Capture(tmp_path / "rot")
    assert rot.meta.rotation == 270 and report["source"]["width"] == 720 and report["source"]["height"] == 1280
    for c in (cap, rot):
        assert c.meta.width == c.meta.height == 512 and c.load_frame(0).shape == (512, 512, 3)
        assert c.landmarks.face_present.all() and not c.meta.flagged
    np.testing.assert_allclose(rot.meta.crop_boxes, cap.meta.crop_boxes, atol=4)
    np.testing.assert_allclose(rot.landmarks.face[..., :2], cap.landmarks.face[..., :2], atol=6)

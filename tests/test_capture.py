"""The capture folder format: round trip, completeness, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar.io.capture import Capture, CaptureError, CaptureMeta, CaptureWriter, Landmarks


def _write(root, n=3, flagged=None):
    w = CaptureWriter(root)
    rng = np.random.default_rng(0)
    for i in range(n):
        w.write_frame(i, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        w.write_mask(i, np.full((16, 16), 0.5, np.float32))
    present = np.ones(n, bool)
    present[-1] = False
    lm = Landmarks(face=rng.random((n, 478, 3)).astype(np.float32), face_present=present)
    meta = CaptureMeta(source="x.mp4", fps=25.0, width=16, height=16, n_frames=n, flagged=flagged or {})
    return w.finish(meta, lm)


def test_round_trip_and_valid_frames(tmp_path):
    _write(tmp_path / "cap", n=4, flagged={1: "two faces"})
    cap = Capture(tmp_path / "cap")
    assert cap.n_frames == 4 and cap.meta.flagged == {1: "two faces"}
    assert cap.load_frame(0).shape == (16, 16, 3) and cap.load_frame(0).dtype == np.uint8
    assert abs(float(cap.load_mask(2).mean()) - 0.5) < 0.01
    assert cap.landmarks.face.shape == (4, 478, 3)
    assert cap.valid_frames().tolist() == [0, 2]  # 1 flagged, 3 without a face


def test_incomplete_folder_is_not_trusted(tmp_path):
    w = CaptureWriter(tmp_path / "cap")
    w.write_frame(0, np.zeros((8, 8, 3), np.uint8))  # interrupted before finish()
    with pytest.raises(CaptureError, match="no meta.json.*avatar preprocess"):
        Capture(tmp_path / "cap")


def test_missing_folder_and_missing_landmarks(tmp_path):
    with pytest.raises(CaptureError, match="does not exist"):
        Capture(tmp_path / "nope")
    root = _write(tmp_path / "cap")
    (root / "landmarks.npz").unlink()
    with pytest.raises(CaptureError, match="no landmarks.npz"):
        Capture(root).landmarks


def test_bad_meta_and_corrupt_frame(tmp_path):
    root = _write(tmp_path / "cap")
    (root / "frames" / "000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CaptureError, match="000001.jpg"):
        Capture(root).load_frame(1)
    (root / "meta.json").write_text(json.dumps({"source": "x"}))
    with pytest.raises(CaptureError, match="lacks key"):
        Capture(root)


def test_rewriting_a_capture_invalidates_it_until_finished(tmp_path):
    root = _write(tmp_path / "cap")
    CaptureWriter(root)  # a new run starts over the old folder
    with pytest.raises(CaptureError, match="no meta.json"):
        Capture(root)

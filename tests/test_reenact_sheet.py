"""data_tools/reenact_sheet.py: the driver's moments, the face crop and the sheet's layout."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sheet():
    spec = importlib.util.spec_from_file_location("reenact_sheet", REPO_ROOT / "data_tools" / "reenact_sheet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _measures(n=100):
    rng = np.random.default_rng(0)
    m = {k: 0.3 + 0.001 * rng.standard_normal(n) for k in ("eye", "jaw", "mouth_width", "brow")}
    m["yaw"] = 0.1 * rng.standard_normal(n)
    m["jaw"][20] += 0.5       # jaw open
    m["mouth_width"][21] += 0.5  # too close to 20: the next best wide mouth is taken
    m["mouth_width"][60] += 0.2
    m["eye"][40] -= 0.2       # eyes shut
    m["brow"][80] += 0.1      # brows up
    m["yaw"][95] = 30.0       # turned
    m["eye"][5] = np.nan      # no face there
    return m


def test_moments_are_the_driver_extremes_and_apart(sheet):
    picked = dict(sheet.pick_moments(_measures()))
    assert list(picked) == list(sheet.MOMENTS)
    assert picked["jaw open"] == 20 and picked["wide mouth"] == 60
    assert picked["eyes shut"] == 40 and picked["brows up"] == 80 and picked["turned"] == 95
    rest = picked["rest"]
    assert rest not in (5, 20, 21, 40, 60, 80, 95)
    frames = sorted(picked.values())
    assert min(np.diff(frames)) >= 8


def test_no_face_no_moments(sheet):
    m = _measures()
    m["eye"][:] = np.nan
    assert sheet.pick_moments(m) == []


def test_face_crop_is_square_and_padded(sheet):
    frame = np.zeros((100, 80, 3), np.uint8)
    points = np.array([[0.0, 10.0], [30.0, 50.0]])  # at the left edge: the crop leaves the frame
    crop = sheet.face_crop(frame, points, scale=2.0)
    assert crop.shape == (80, 80, 3)
    assert (crop[:, :5] == 255).all() and (crop[40, 40] == 0).all()


def test_sheet_layout(sheet):
    tiles = [np.full((50, 40, 3), v, np.uint8) for v in (0, 128)]
    image = sheet.compose([("driver", tiles), ("run", tiles)], ["rest (1)", "jaw open (9)"], 64)
    assert image.shape == (22 + 2 * 64, 120 + 2 * 64, 3)
    assert (image[22 + 10, 120 + 10] == 0).all() and (image[22 + 64 + 10, 120 + 64 + 10] == 128).all()

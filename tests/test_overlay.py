"""Overlays and previews read at every frame size: dots sized from the frame, small frames enlarged,
every frame of a short capture, orbits that stay in front."""

from __future__ import annotations

import math

import numpy as np
import pytest


def _dot_diameter(image: np.ndarray) -> int:
    """Width in pixels of the (single) drawn dot: columns with any non-zero pixel."""
    return int((image.max(axis=(0, 2)) > 60).sum())


@pytest.mark.parametrize("size", [128, 256, 512, 1080, 2160])
def test_marker_size_scales_with_the_frame(size):
    from avatar.landmarks.draw import draw_points, enlarge, preview_scale

    scale = preview_scale(size, size)
    image = enlarge(np.zeros((size, size, 3), np.uint8), scale)
    assert min(image.shape[:2]) >= 384  # small frames are enlarged before drawing
    draw_points(image, np.array([[size / 2, size / 2]]) * scale, (0, 255, 0))
    d = _dot_diameter(image)
    side = min(image.shape[:2])
    # Visible (more than a 1-pixel dot) and small next to the frame: 0.5% to 2% of its side.
    assert d >= 3 and 0.005 * side <= d <= 0.02 * side, (size, side, d)


def test_larger_frames_get_larger_markers():
    from avatar.landmarks.draw import draw_points

    diameters = []
    for size in (400, 1080, 2160):
        image = np.zeros((size, size, 3), np.uint8)
        diameters.append(_dot_diameter(draw_points(image, np.array([[size / 2, size / 3]]), (255, 255, 255))))
    assert diameters[0] < diameters[1] < diameters[2]
    assert diameters[2] > 2 * diameters[0]  # 5.4 times the frame: not a fixed size plus a pixel


def test_preprocess_preview_enlarges_small_crops_and_sizes_its_dots():
    from avatar.preprocess import preview_image

    for size in (128, 1024):
        crop = np.full((size, size, 3), 200, np.uint8)
        mask = np.zeros((size, size), np.float32)  # dimmed everywhere: dots stand out in green
        image = preview_image(crop, mask, np.array([[size / 2, size / 2, 0.0]]))
        assert min(image.shape[:2]) >= 384
        green = (image[..., 1].astype(int) - image[..., 0]) > 100
        d = int(green.any(axis=0).sum())
        assert 0.005 * image.shape[1] <= d <= 0.02 * image.shape[1], (size, d)


def test_overlay_draws_every_frame_of_short_captures():
    from avatar.tracking.overlay import EVERY_FRAME_UP_TO, auto_stride

    assert auto_stride(48, None) == 1 and auto_stride(EVERY_FRAME_UP_TO, None) == 1
    long = 4 * EVERY_FRAME_UP_TO + 7
    assert len(range(0, long, auto_stride(long, None))) <= EVERY_FRAME_UP_TO
    assert auto_stride(48, 4) == 4  # a stride asked for is kept


def test_orbit_sweep_stays_in_front():
    from avatar.geometry.cameras import orbit_viewmats

    def yaws(viewmats):  # camera position's angle about +y from +z, degrees
        eye = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:])[..., 0]
        return np.degrees(np.arctan2(eye[:, 0].numpy(), eye[:, 2].numpy()))

    swing = yaws(orbit_viewmats(40, radius=0.5, sweep_deg=70))
    assert np.abs(swing).max() == pytest.approx(35, abs=0.5) and swing.min() < -30
    full = yaws(orbit_viewmats(40, radius=0.5))
    assert np.abs(full).max() > 170  # the default still goes all the way round
    assert math.isclose(float(swing[0]), 0.0, abs_tol=1e-4)

"""Drawing landmarks and outlines on previews and overlays at sizes that read at any frame size.

A preview of a 128-pixel capture is first enlarged to at least :data:`MIN_PREVIEW_SIZE`
pixels (:func:`preview_scale`); markers and lines are then sized from the (enlarged) frame
(:func:`marker_radius`, :func:`line_thickness`): about 0.4% of its shorter side, so a
landmark is a visible dot at 384 pixels and a small one, not a blob, at 1080p or 4K.
Sub-pixel positions are kept (anti-aliased, fixed-point drawing).
"""

from __future__ import annotations

import math

import numpy as np

MIN_PREVIEW_SIZE = 384  # previews of smaller frames are enlarged to at least this shorter side, pixels
MARKER_FRACTION = 1 / 250  # marker radius as a fraction of the frame's shorter side
_SHIFT = 4  # fixed-point bits for sub-pixel drawing (cv2's shift)


def preview_scale(height: int, width: int, minimum: int = MIN_PREVIEW_SIZE) -> int:
    """The whole factor that brings a ``height x width`` frame's shorter side to at least ``minimum``."""
    return max(1, math.ceil(minimum / max(1, min(height, width))))


def marker_radius(height: int, width: int) -> int:
    """Radius in pixels of a landmark dot on a ``height x width`` image (at least 1)."""
    return max(1, round(min(height, width) * MARKER_FRACTION))


def line_thickness(height: int, width: int) -> int:
    """Thickness in pixels of outlines on a ``height x width`` image (at least 1)."""
    return max(1, round(min(height, width) * MARKER_FRACTION * 0.75))


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """``image`` ``scale`` times larger each way (bicubic); itself when ``scale`` is 1."""
    if scale == 1:
        return image
    import cv2  # noqa: PLC0415

    h, w = image.shape[:2]
    return cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


def draw_points(image: np.ndarray, points: np.ndarray, color: tuple[int, int, int],
                radius: int | None = None) -> np.ndarray:
    """Draw ``points [N, 2+]`` (pixels of ``image``) as filled dots in place; returns ``image``.

    ``radius``: default :func:`marker_radius` of the image. Non-finite points are skipped."""
    import cv2  # noqa: PLC0415

    h, w = image.shape[:2]
    r = marker_radius(h, w) if radius is None else radius
    xy = np.asarray(points, np.float64)[:, :2]
    xy = xy[np.isfinite(xy).all(axis=1)]
    for x, y in np.round(xy * (1 << _SHIFT)).astype(np.int64):
        cv2.circle(image, (int(x), int(y)), r << _SHIFT, color, -1, cv2.LINE_AA, _SHIFT)
    return image


def draw_outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """Draw the outline of the boolean ``mask [H, W]`` on ``image`` in place; returns ``image``."""
    import cv2  # noqa: PLC0415

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    h, w = image.shape[:2]
    cv2.drawContours(image, contours, -1, color, line_thickness(h, w), cv2.LINE_AA)
    return image


def draw_label(image: np.ndarray, text: str, color: tuple[int, int, int] = (255, 255, 0)) -> np.ndarray:
    """Write ``text`` in the top-left corner of ``image`` in place, sized from the image; returns it."""
    import cv2  # noqa: PLC0415

    h, w = image.shape[:2]
    scale = min(h, w) / 640
    thickness = max(1, round(2 * scale))
    cv2.putText(image, text, (round(12 * scale) + 2, round(30 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, color,
                thickness, cv2.LINE_AA)
    return image

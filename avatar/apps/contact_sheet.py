"""A contact sheet: rows of labelled image cells in one PNG (the demo's ``summary.png``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write

LABEL_WIDTH = 190  # pixels of the label column at a cell height of 160
BACKGROUND = (222, 222, 222)  # light grey: the white backgrounds of renders stand apart
INK = (30, 30, 30)


def video_frames(path: str | os.PathLike, count: int) -> list[np.ndarray]:
    """``count`` frames ``[H, W, 3]`` uint8 RGB spread evenly over the video at ``path`` (all when shorter)."""
    from ..io.video_reader import open_source  # noqa: PLC0415

    frames = [f.image for f in open_source(path).frames()]
    if len(frames) <= count:
        return frames
    return [frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, count)]


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    import cv2  # noqa: PLC0415

    h, w = image.shape[:2]
    width = max(1, int(round(w * height / h)))
    interpolation = cv2.INTER_AREA if h > height else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(image[..., :3]), (width, height), interpolation=interpolation)


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float, bold: bool = False) -> None:
    import cv2  # noqa: PLC0415

    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, INK, 2 if bold else 1, cv2.LINE_AA)


def contact_sheet(rows: list[tuple[str, str, list[np.ndarray]]], cell: int = 160, gap: int = 4,
                  title: str | None = None) -> np.ndarray:
    """``[H, W, 3]`` uint8: one row per ``(label, note, images)``, the images scaled to ``cell``
    pixels high side by side after the label (``note``: a smaller second line under it)."""
    label_w = int(LABEL_WIDTH * cell / 160)
    scaled = [[_fit(im, cell) for im in images] for _, _, images in rows]
    width = label_w + max((sum(im.shape[1] + gap for im in row) for row in scaled), default=0) + gap
    top = int(0.25 * cell) if title else 0
    canvas = np.full((top + len(rows) * (cell + gap) + gap, width, 3), BACKGROUND, np.uint8)
    scale = cell / 320
    if title:
        _text(canvas, title, gap + 4, int(top * 0.7), 1.2 * scale, bold=True)
    for r, ((label, note, _), row) in enumerate(zip(rows, scaled)):
        y = top + gap + r * (cell + gap)
        _text(canvas, label, gap + 4, y + int(0.22 * cell), 1.3 * scale, bold=True)
        for k, line in enumerate(note.split("\n") if note else []):
            _text(canvas, line, gap + 4, y + int((0.22 + (k + 1) * 0.15) * cell), 0.9 * scale)
        x = label_w
        for im in row:
            canvas[y : y + cell, x : x + im.shape[1]] = im
            x += im.shape[1] + gap
    return canvas


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write the RGB ``image`` as a PNG through :func:`avatar.io.atomic.atomic_write`."""
    import cv2  # noqa: PLC0415

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write(Path(path), buf.tobytes())
    return Path(path)

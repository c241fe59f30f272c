"""``tracking_overlay.mp4``: the fitted mesh drawn over the capture's frames.

Each frame shows the fitted mesh (face and scalp parts; for a model without them, the parts
its tracking profile renders for calibration) shaded in a blue tint over the image with its
outline, the detected MediaPipe landmarks (green) and the fitted model's landmarks (red),
so a user sees at once whether tracking worked. Frames without data are marked. Small
captures are enlarged to at least :data:`avatar.landmarks.draw.MIN_PREVIEW_SIZE` pixels
first, and the dots and lines are sized from the frame (:mod:`avatar.landmarks.draw`), so
the overlay reads at 128 pixels as at 4K.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avatar.io.video import VideoWriter
from avatar.tracking.embedding import part_faces
from avatar.landmarks.draw import draw_label, draw_outline, draw_points, enlarge, preview_scale
from ..models.profile import require_profile
from ..render import render_mesh
from avatar.io.tracking import TrackedSequence

OVERLAY_PARTS = ("face", "head_and_neck")
MESH_TINT = np.array([0.55, 0.75, 1.0], np.float32)  # RGB multiplier of the shaded mesh (light blue)
MESH_OUTLINE = (90, 170, 255)
DETECTED_COLOR = (0, 255, 0)
FITTED_COLOR = (255, 40, 40)
EVERY_FRAME_UP_TO = 300  # overlay_stride=None: every frame of captures this short, else about this many frames


def auto_stride(n_frames: int, stride: int | None) -> int:
    """``stride`` when given, else 1 for captures of up to :data:`EVERY_FRAME_UP_TO` frames and
    the smallest stride that keeps the overlay near that many frames for longer ones."""
    if stride is not None:
        return max(1, int(stride))
    return max(1, -(-n_frames // EVERY_FRAME_UP_TO))


def overlay_parts(model) -> tuple[str, ...]:
    """The parts drawn: those of :data:`OVERLAY_PARTS` the model has, else its tracking profile's
    ``calibration_parts``."""
    return tuple(p for p in OVERLAY_PARTS if p in model.parts) or require_profile(model).calibration_parts


def overlay_frame(image: np.ndarray, vertices: torch.Tensor, faces: torch.Tensor, seq: TrackedSequence,
                  detected: np.ndarray | None, fitted: np.ndarray | None, alpha: float = 0.5,
                  valid: bool = True, index: int = 0) -> np.ndarray:
    """One overlay image uint8 from ``image [H, W, 3]`` and posed world ``vertices [V, 3]`` of frame ``index``:
    ``[s H, s W, 3]`` with ``s`` = :func:`avatar.landmarks.draw.preview_scale` (1 from 384 pixels up)."""
    H, W = image.shape[:2]
    scale = preview_scale(H, W)
    K = torch.as_tensor(np.array(seq.intrinsics(index)), dtype=vertices.dtype)
    vm = torch.as_tensor(seq.viewmat, dtype=vertices.dtype)
    with torch.no_grad():  # at the capture's size (cheap), enlarged with the image
        out = render_mesh(vertices, faces, K, seq.width, seq.height, vm, shading="flat")
    shaded = enlarge(out.image[0].cpu().numpy() * 255.0 * MESH_TINT, scale)
    mask = enlarge(out.mask[0].cpu().numpy().astype(np.float32), scale) > 0.5
    big = enlarge(np.asarray(image, np.float32), scale)
    blend = np.where(mask[..., None], (1 - alpha) * big + alpha * shaded, big).clip(0, 255).astype(np.uint8)
    blend = draw_outline(np.ascontiguousarray(blend), mask, MESH_OUTLINE)
    for pts, color in ((detected, DETECTED_COLOR), (fitted, FITTED_COLOR)):
        if pts is not None:
            draw_points(blend, np.asarray(pts, np.float64)[:, :2] * scale, color)
    if not valid:
        draw_label(blend, "no landmarks (interpolated)")
    return blend


def write_overlay(path: str | os.PathLike, model, seq: TrackedSequence, load_frame: Callable[[int], np.ndarray],
                  fps: float, detected: np.ndarray | None = None, fitted: np.ndarray | None = None,
                  stride: int | None = None, progress: bool = False) -> Path:
    """Write the overlay video of every ``stride``-th frame (None: :func:`auto_stride`); returns its path.

    ``detected`` / ``fitted``: optional ``[F, L, 2+]`` landmarks in pixels to draw.
    """
    faces = model.faces[part_faces(model, overlay_parts(model))]
    stride = auto_stride(seq.n_frames, stride)
    frames = range(0, seq.n_frames, stride)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        frames = tqdm(frames, desc="overlay", unit="frame")
    dt = model.template.dtype
    shape = torch.as_tensor(seq.shape, dtype=dt)[None]
    with VideoWriter(path, fps=max(1.0, fps / stride)) as writer:
        for i in frames:
            with torch.no_grad():
                verts = model(shape=shape, expression=torch.as_tensor(seq.expression[i : i + 1], dtype=dt),
                              rotation=torch.as_tensor(seq.rotation[i : i + 1], dtype=dt),
                              translation=torch.as_tensor(seq.translation[i : i + 1], dtype=dt)).vertices[0]
            writer.write(overlay_frame(
                load_frame(i).astype(np.float32), verts, faces, seq,
                None if detected is None or not seq.valid[i] else detected[i],
                None if fitted is None else fitted[i], valid=bool(seq.valid[i]), index=i,
            ))
    return Path(path)

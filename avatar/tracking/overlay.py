"""``tracking_overlay.mp4``: the fitted mesh drawn over the capture's frames.

Each frame shows the flat-shaded fitted mesh (face and scalp parts; for a model without
them, the parts its tracking profile renders for calibration) blended over the
image, the detected MediaPipe landmarks (green) and the fitted model's landmarks (red),
so a user sees at once whether tracking worked. Frames without data are marked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avatar.io.video import VideoWriter
from avatar.tracking.embedding import part_faces
from ..models.profile import require_profile
from ..render import render_mesh
from avatar.io.tracking import TrackedSequence

OVERLAY_PARTS = ("face", "head_and_neck")


def overlay_parts(model) -> tuple[str, ...]:
    """The parts drawn: those of :data:`OVERLAY_PARTS` the model has, else its tracking profile's
    ``calibration_parts``."""
    return tuple(p for p in OVERLAY_PARTS if p in model.parts) or require_profile(model).calibration_parts


def overlay_frame(image: np.ndarray, vertices: torch.Tensor, faces: torch.Tensor, seq: TrackedSequence,
                  detected: np.ndarray | None, fitted: np.ndarray | None, alpha: float = 0.5,
                  valid: bool = True, index: int = 0) -> np.ndarray:
    """One overlay image ``[H, W, 3]`` uint8 from ``image`` and posed world ``vertices [V, 3]`` of frame ``index``."""
    import cv2  # noqa: PLC0415

    K = torch.as_tensor(np.array(seq.intrinsics(index)), dtype=vertices.dtype)
    vm = torch.as_tensor(seq.viewmat, dtype=vertices.dtype)
    with torch.no_grad():
        out = render_mesh(vertices, faces, K, seq.width, seq.height, vm, shading="flat")
    shaded = out.image[0].cpu().numpy() * 255.0
    mask = out.mask[0].cpu().numpy()[..., None]
    blend = np.where(mask, (1 - alpha) * image + alpha * shaded, image).clip(0, 255).astype(np.uint8)
    blend = np.ascontiguousarray(blend)
    for pts, color in ((detected, (0, 255, 0)), (fitted, (255, 40, 40))):
        if pts is not None:
            for x, y in pts[:, :2]:
                cv2.circle(blend, (int(round(x)), int(round(y))), 1, color, -1)
    if not valid:
        cv2.putText(blend, "no landmarks (interpolated)", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)
    return blend


def write_overlay(path: str | os.PathLike, model, seq: TrackedSequence, load_frame: Callable[[int], np.ndarray],
                  fps: float, detected: np.ndarray | None = None, fitted: np.ndarray | None = None,
                  stride: int = 1, progress: bool = False) -> Path:
    """Write the overlay video of every ``stride``-th frame; returns its path.

    ``detected`` / ``fitted``: optional ``[F, L, 2+]`` landmarks in pixels to draw.
    """
    faces = model.faces[part_faces(model, overlay_parts(model))]
    frames = range(0, seq.n_frames, max(1, stride))
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        frames = tqdm(frames, desc="overlay", unit="frame")
    dt = model.template.dtype
    shape = torch.as_tensor(seq.shape, dtype=dt)[None]
    with VideoWriter(path, fps=max(1.0, fps / max(1, stride))) as writer:
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

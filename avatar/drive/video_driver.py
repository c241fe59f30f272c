"""Driving from a video: MediaPipe landmarks and the per-frame fitter, frame by frame.

The driver's identity is not estimated (mean ICT shape); only expression and head pose
are kept, which is what retargeting onto the avatar uses. A frame without a face holds the
previous frame's values instead of snapping (and is marked invalid).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .sources import DriveError, DriveSequence


def from_video(path: str | os.PathLike, model=None, embedding=None, max_frames: int | None = None,
               keep_frames: bool = False, fov_deg: float = 40.0, progress: bool = True) -> DriveSequence:
    """Track ``path`` on the fly; ``model``/``embedding`` default to ICT and its calibrated embedding."""
    from ..data.video_reader import VideoReadError, open_source  # noqa: PLC0415
    from ..landmarks import FaceMeshDetector  # noqa: PLC0415
    from ..landmarks.embedding import load_embedding  # noqa: PLC0415
    from ..tracking.landmark_model import LandmarkModel  # noqa: PLC0415
    from ..tracking.online import FrameTracker  # noqa: PLC0415

    if model is None:
        from .. import models  # noqa: PLC0415

        model = models.load("ict")
    embedding = embedding or load_embedding(model)
    lm = LandmarkModel.from_model(model, embedding).to(torch.device("cpu"), torch.float64)
    try:
        source = open_source(path)
    except VideoReadError as exc:
        raise DriveError(str(exc)) from exc
    w, h = source.info.width, source.info.height
    focal = 0.5 * w / math.tan(math.radians(fov_deg) / 2)
    tracker = FrameTracker(lm, torch.zeros(lm.num_shape, dtype=torch.float64), focal, w, h)
    expr, rot, trans, valid, frames = [], [], [], [], []
    frame_iter = source.frames(max_frames=max_frames)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        frame_iter = tqdm(frame_iter, desc="track driver", unit="frame")
    with FaceMeshDetector(video=True, max_faces=1) as detector:
        for frame in frame_iter:
            faces = detector.detect(frame.image)
            if faces:
                e, r, t = tracker(torch.as_tensor(faces[0].landmarks[:, :2], dtype=torch.float64))
                expr.append(e.numpy()), rot.append(r.numpy()), trans.append(t.numpy())
            elif expr:  # hold the last pose
                expr.append(expr[-1]), rot.append(rot[-1]), trans.append(trans[-1])
            else:
                expr.append(None), rot.append(None), trans.append(None)
            valid.append(bool(faces))
            if keep_frames:
                frames.append(frame.image)
    if not any(valid):
        raise DriveError(f"no face found in any frame of {path}; the driving video must show a face")
    first = valid.index(True)  # frames before the first face take its values
    for i in range(first):
        expr[i], rot[i], trans[i] = expr[first], rot[first], trans[first]
    seq = DriveSequence(np.stack(expr).astype(np.float32), np.stack(rot).astype(np.float32),
                        np.stack(trans).astype(np.float32), float(source.info.fps or 25.0), str(Path(path)),
                        valid=np.array(valid))
    if keep_frames:
        seq.frames = frames  # type: ignore[attr-defined]
    missing = len(valid) - sum(valid)
    if missing:
        seq.notes.append(f"{missing} driver frame(s) without a face held the previous pose")
    return seq

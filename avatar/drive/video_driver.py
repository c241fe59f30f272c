"""Driving from a video: MediaPipe landmarks, the driver's identity, then the per-frame fitter.

Two passes over the clip:
1. MediaPipe face mesh on every frame (the largest face when there are several: noted);
2. the driver's identity (face shape, focal length, landmark offsets) fitted by the batched
   fitter on a sample of its usable frames (:func:`avatar.tracking.identity.estimate_identity`),
   then the per-frame fitter (:class:`avatar.tracking.online.FrameTracker`) solves expression
   and head pose frame by frame with it, re-initialising on implausible states.

A frame without a face holds the previous frame's values instead of snapping (and is marked
invalid); frames before the first face take its values.

The driver is tracked with the avatar's own model when the caller passes it (``model=``, a
loaded model or a name with ``model_options``), so that the driver's expressions are in the
avatar's space (a FLAME avatar is driven by FLAME expressions); ICT otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .sequence import DriveError, DriveSequence


def detect_landmarks(path: str | os.PathLike, max_frames: int | None = None, keep_frames: bool = False,
                     progress: bool = True, pose: list | None = None):
    """``(landmarks [F, 478, 3] pixels (NaN without a face; MediaPipe's depth scaled like x), frames or None,
    fps, (width, height), notes)``. ``pose``: a list that receives each frame's pose landmarks
    (``[33, 4]``, None where no body was found; :mod:`avatar.landmarks.pose`)."""
    from contextlib import nullcontext  # noqa: PLC0415

    from avatar.io.video_reader import VideoReadError, open_source  # noqa: PLC0415

    from ..landmarks import FaceMeshDetector  # noqa: PLC0415

    try:
        source = open_source(path)
    except VideoReadError as exc:
        raise DriveError(str(exc)) from exc
    points, frames, several = [], [], []
    size = (source.info.width, source.info.height)
    frame_iter = source.frames(max_frames=max_frames)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        frame_iter = tqdm(frame_iter, desc="driver landmarks", unit="frame")
    from ..landmarks.pose import PoseDetector  # noqa: PLC0415

    with FaceMeshDetector(video=True, max_faces=2) as detector, \
            (PoseDetector(video=True) if pose is not None else nullcontext()) as poser:
        for i, frame in enumerate(frame_iter):
            size = (frame.image.shape[1], frame.image.shape[0])  # as decoded (rotation applied)
            if poser is not None:
                found = poser.detect(frame.image)
                pose.append(None if found is None else found.landmarks)
            faces = detector.detect(frame.image)  # largest first
            points.append(faces[0].landmarks if faces else np.full((478, 3), np.nan, np.float32))
            if len(faces) > 1:
                several.append(i)
            if keep_frames:
                frames.append(frame.image)
    notes = []
    if several:
        notes.append(f"{len(several)} driver frame(s) show more than one face (first: frame {several[0]}); "
                     "the largest face drives the avatar")
    return np.stack(points) if points else np.zeros((0, 478, 3), np.float32), (frames if keep_frames else None), \
        float(source.info.fps or 25.0), size, notes


def from_video(path: str | os.PathLike, model=None, embedding=None, max_frames: int | None = None,
               keep_frames: bool = False, progress: bool = True, identity: bool = True,
               model_options: dict | None = None, pose: bool = False) -> DriveSequence:
    """Track ``path`` with ``model``: the avatar's model (loaded, or a name for
    ``avatar.models.load`` with ``model_options``); default ICT. ``embedding`` defaults to the
    model's calibrated MediaPipe embedding. ``pose=True`` also detects the driver's body (MediaPipe
    pose) in every frame (:attr:`DriveSequence.pose`), for avatars with a torso.

    ``identity=False`` tracks with the mean face and a 40-degree field of view instead of the
    driver's estimated identity (for comparison). A model that cannot be face-tracked is a
    :class:`DriveError` saying what it lacks (before the video is read)."""
    lm = landmark_model(model, embedding, model_options)
    poses: list | None = [] if pose else None
    points, frames, fps, size, notes = detect_landmarks(path, max_frames, keep_frames, progress, poses)
    seq = track_landmarks(points[..., :2], size, fps, str(Path(path)), lm, identity)
    seq.notes[:0] = notes
    if poses is not None:
        seq.pose_present = np.array([p is not None for p in poses], bool)
        seq.pose = np.stack([p if p is not None else np.zeros((33, 4), np.float32) for p in poses]).astype(np.float32)
        seq.frame_size = size
    if keep_frames:
        seq.frames = frames  # type: ignore[attr-defined]
    return seq


def landmark_model(model=None, embedding=None, model_options: dict | None = None):
    """The float64 CPU :class:`LandmarkModel` the per-frame fitter runs on: ``model`` loaded, or
    a model name loaded with ``model_options`` (default: ICT)."""
    from avatar.tracking.embedding import load_embedding  # noqa: PLC0415

    from ..models.profile import TrackingProfileError  # noqa: PLC0415
    from ..tracking.landmark_model import LandmarkModel  # noqa: PLC0415

    if model is None or isinstance(model, str):
        from .. import models  # noqa: PLC0415

        model = models.load(model or "ict", **(model_options or {}))
    try:
        embedding = embedding or load_embedding(model)
        return LandmarkModel.from_model(model, embedding).to(torch.device("cpu"), torch.float64)
    except TrackingProfileError as exc:
        raise DriveError(f"cannot track the driver video: {exc}") from exc


def track_landmarks(points: np.ndarray, size: tuple[int, int], fps: float, source: str, lm,
                    identity: bool = True) -> DriveSequence:
    """A :class:`DriveSequence` from per-frame landmarks ``points [F, 478, 2]`` (NaN: no face) of
    an image ``size = (width, height)``: the driver's identity first, then frame by frame."""
    from ..tracking.identity import estimate_identity  # noqa: PLC0415
    from ..tracking.online import FrameTracker  # noqa: PLC0415

    w, h = size
    valid = np.isfinite(points).all(axis=(1, 2))
    if not valid.any():
        raise DriveError(f"no face found in any frame of {source}; the driving video must show a face")
    info: dict = {"per_frame_fit": True}
    notes: list[str] = []
    if identity:
        ident = estimate_identity(lm, points, valid, w, h)
        tracker = FrameTracker(lm, ident.shape, ident.focal, w, h, landmark_offset=ident.landmark_offset)
        info["identity"] = ident.summary()
        notes += ident.notes
    else:
        tracker = FrameTracker.mean_face(lm, w, h)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only wait on each other
    try:
        expr, rot, trans, gaze = _track_frames(tracker, points, valid)
    finally:
        torch.set_num_threads(threads)
    if not valid.any():
        raise DriveError(f"no frame of {source} could be tracked: the faces found fit no plausible head pose")
    info.update(reinitialisations=tracker.reinitialisations, rejected_frames=tracker.rejected)
    if tracker.reinitialisations:
        notes.append(f"the per-frame fit was re-initialised {tracker.reinitialisations} time(s) after an implausible "
                     f"state" + (f"; {tracker.rejected} frame(s) kept the previous pose" if tracker.rejected else ""))
    missing = len(valid) - int(valid.sum())
    if missing:
        notes.append(f"{missing} driver frame(s) without a face held the previous pose")
    if gaze is not None:  # shut lids hide the irises: the gaze there is its neighbours'
        from ..tracking.gaze import hold_through_blinks, lids_open  # noqa: PLC0415

        gaze = hold_through_blinks(gaze, valid & lids_open(points))
    return DriveSequence(expr, rot, trans, fps, source, valid=valid, notes=notes, info=info, gaze=gaze)


def _track_frames(tracker, points: np.ndarray, valid: np.ndarray):
    """Per-frame fits ``(expression [F, E], rotation [F, 3], translation [F, 3], gaze [F, 2, 2] | None)``
    (gaze: :meth:`FrameTracker.read_gaze`, None for a model without one); frames without a
    face (or whose fit is implausible: ``valid`` is cleared there) hold the previous frame's values,
    and frames before the first face take its values."""
    from ..tracking.online import ImplausibleFrame  # noqa: PLC0415

    out: list = []
    for i in range(len(points)):
        result = None
        if valid[i]:
            try:
                result = tuple(x.numpy() for x in tracker(torch.as_tensor(points[i], dtype=torch.float64)))
                gaze = getattr(tracker, "gaze", None)
                result += (np.zeros((2, 2)) if gaze is None else gaze.numpy(),)
            except ImplausibleFrame:
                valid[i] = False
        out.append(result if result is not None else (out[-1] if out else None))
    if not valid.any():
        return None, None, None, None
    first = int(np.flatnonzero(valid)[0])
    out[:first] = [out[first]] * first
    expr, rot, trans, gaze = (np.stack(x).astype(np.float32) for x in zip(*out))
    return expr, rot, trans, (gaze if getattr(tracker, "gaze", None) is not None else None)

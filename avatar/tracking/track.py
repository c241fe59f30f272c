"""Track a capture folder: landmarks.npz -> tracking.npz, tracking_report.json, tracking_overlay.mp4."""

from __future__ import annotations

import dataclasses

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avatar.io.capture import Capture, CaptureError, flags_by_kind, frame_ranges
from avatar.io.reports import write_json
from .body_track import BodyTrackConfig
from .fit import FitConfig, FitResult, fit_sequence, reported_landmarks, reprojection_errors
from .landmark_model import LandmarkModel, model_translation, project, to_camera, tracking_viewmat, view_directions
from .photometric import PhotometricConfig, refine_photometric, sequence_landmarks
from avatar.io.tracking import TRACKING_FILE, TrackedSequence

log = logging.getLogger(__name__)

REPORT_FILE = "tracking_report.json"
OVERLAY_FILE = "tracking_overlay.mp4"


@dataclass
class TrackConfig:
    """Options of ``avatar track`` (the ``track:`` block of conf/track.yaml)."""

    fit: FitConfig = field(default_factory=FitConfig)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    body: BodyTrackConfig = field(default_factory=BodyTrackConfig)  # a body capture (preprocess.subject=body) with a body model (model=anny)
    overlay: bool = True
    overlay_stride: int | None = None  # draw every n-th frame in the overlay video; None: every frame up to 300, else ~300
    device: str = "cpu"
    dtype: str = "float32"


def capture_targets(capture: Capture) -> tuple[np.ndarray, np.ndarray]:
    """Pixel landmarks ``[F, 478, 2]`` and the valid mask ``[F]`` (face present, not flagged, finite)."""
    lmk = capture.landmarks  # raises CaptureError when landmarks.npz is missing or malformed
    valid = np.zeros(capture.n_frames, dtype=bool)
    valid[capture.valid_frames()] = True
    xy = lmk.face[..., :2].astype(np.float32)
    bad = valid & ~np.isfinite(xy).all(axis=(1, 2))
    if bad.any():
        log.warning("%d frame(s) marked present have non-finite landmarks; skipping them: %s",
                    int(bad.sum()), np.flatnonzero(bad)[:10].tolist())
        valid &= ~bad
    if not valid.any():
        raise CaptureError(f"{capture.root}: no frame can be tracked: {_why_none(capture)}")
    return np.nan_to_num(xy), valid


def _why_none(capture: Capture) -> str:
    """Why no frame of ``capture`` is usable, and what would help (not always preprocess again)."""
    kinds = flags_by_kind(capture.meta.flagged)
    faceless = [int(i) for i in np.flatnonzero(~capture.landmarks.face_present) if int(i) not in capture.meta.flagged]
    parts = ([f"{len(faceless)} without a face ({frame_ranges(faceless)})"] if faceless else []) + [
        f"{len(v)} flagged '{k}' ({frame_ranges(v)})" for k, v in kinds.items()]
    told = f"of its {capture.n_frames} frames, {', '.join(parts)}"
    if any(k.endswith(" faces") for k in kinds):
        return (f"{told}. Preprocess kept the largest face but frames with another person in view are not "
                "trained on: record the subject alone (or cut the others out of the video), then preprocess it")
    if "face too small" in kinds:
        return f"{told}: film closer (or lower preprocess.min_face_size and re-run avatar preprocess)"
    return f"{told}: check that the video shows a face, lit and roughly frontal, then re-run avatar preprocess"


def error_summary(err: torch.Tensor) -> dict:
    e = err.flatten().cpu().numpy()
    return {"median_px": round(float(np.median(e)), 3), "p95_px": round(float(np.percentile(e, 95)), 3)}


def track_capture(capture_dir: str | os.PathLike, model, embedding, cfg: TrackConfig,
                  out: str | os.PathLike | None = None, progress: bool = False) -> dict:
    """Fit ``model`` to the capture's landmarks and write the tracking files into ``out``
    (default: the capture folder). Returns the report."""
    capture = Capture(capture_dir)
    out = Path(out or capture.root)
    out.mkdir(parents=True, exist_ok=True)
    W, H = capture.meta.width, capture.meta.height
    xy, valid = capture_targets(capture)
    xy_capture = xy
    # Crops that follow the head are one source camera seen through a moving window: fit in
    # the upright source's pixels, then give every frame its own intrinsics for its crop.
    crops = capture.crop_transforms()
    if crops is not None:
        scale, origin, (W, H) = crops
        xy = (xy / scale[:, None, None] + origin[:, None, :]).astype(np.float32)
    device, dtype = torch.device(cfg.device), getattr(torch, cfg.dtype)
    lm = LandmarkModel.from_model(model, embedding).to(device, dtype)
    target = torch.as_tensor(xy, device=device, dtype=dtype)
    valid_t = torch.as_tensor(valid, device=device)
    t0 = time.perf_counter()
    result = fit_sequence(lm, target, valid_t, W, H, cfg.fit, progress=progress)
    fit_seconds = time.perf_counter() - t0

    seq = sequence_from_fit(result, lm, W, H, valid)
    to_capture_px = torch.ones(capture.n_frames, 1, device=device, dtype=dtype)
    if crops is not None:
        seq = crop_sequence(seq, *crops[:2], capture.meta.width, capture.meta.height)
        to_capture_px = torch.as_tensor(scale, device=device, dtype=dtype)[:, None]
    photometric = refined_px = None
    if cfg.photometric.iterations > 0:
        target_capture = torch.as_tensor(xy_capture, device=device, dtype=dtype)
        seq, photometric = refine_photometric(capture, seq, model, lm, target_capture, valid_t, cfg.photometric,
                                              progress=progress)
        refined_px = sequence_landmarks(lm, seq)  # the capture's pixels
        refined_err = (refined_px - target_capture).norm(dim=-1)[valid_t][:, reported_landmarks(lm).to(device)]
        photometric["reprojection_after"] = error_summary(refined_err)
    seq = dataclasses.replace(model_pose(seq, lm), capture_id=capture.meta.capture_id)
    seq, shoulders = with_shoulders(seq, capture)
    seq.save(out / TRACKING_FILE)
    err = (reprojection_errors(lm, result, target, W, H) * to_capture_px)[valid_t]
    err_contour = (reprojection_errors(lm, result, target, W, H, contour=True) * to_capture_px)[valid_t]
    report = {
        "command": "track",
        "capture": str(capture.root),
        "model": model.name,
        "frames": capture.n_frames,
        "valid_frames": int(valid.sum()),
        "invalid_frames_interpolated": np.flatnonzero(~valid).tolist(),
        "width": capture.meta.width, "height": capture.meta.height,
        "fitted_in": "source pixels through per-frame crops" if crops is not None else "capture pixels",
        "focal_px": round(result.focal, 2),
        "reprojection": error_summary(err),
        "reprojection_with_contour": error_summary(err_contour),
        "fit_seconds": round(fit_seconds, 3),
        "stages": {k: v for k, v in result.stats.items() if isinstance(v, dict)},
        "photometric": photometric,
        "device": str(device),
        "outputs": {"tracking": str(out / TRACKING_FILE)},
    }
    if shoulders is not None:
        report["shoulders"] = shoulders
    if cfg.overlay:
        from .overlay import write_overlay  # noqa: PLC0415

        t1 = time.perf_counter()
        if refined_px is not None:  # the refined poses' landmarks, already in the capture's pixels
            fitted = refined_px.cpu().numpy()
        else:
            fitted = fitted_landmarks(lm, result, W, H).cpu().numpy()
            if crops is not None:  # back into the crops' pixels
                fitted = (fitted - origin[:, None, :]) * scale[:, None, None]
        if crops is not None:
            xy = (xy - origin[:, None, :]) * scale[:, None, None]
        model_cpu = model.to("cpu")
        write_overlay(out / OVERLAY_FILE, model_cpu, seq, capture.load_frame, capture.meta.fps,
                      detected=xy, fitted=fitted, stride=cfg.overlay_stride, progress=progress)
        report["overlay_seconds"] = round(time.perf_counter() - t1, 3)
        report["outputs"]["overlay"] = str(out / OVERLAY_FILE)
    write_json(out / REPORT_FILE, report)
    return report


def with_shoulders(seq: TrackedSequence, capture: Capture) -> tuple[TrackedSequence, dict | None]:
    """``seq`` with the shoulder state (:mod:`avatar.tracking.shoulders`) when the capture has pose
    landmarks (``preprocess.pose=true``), and the report's ``shoulders`` block (None without pose)."""
    from .shoulders import shoulder_report, shoulder_state  # noqa: PLC0415

    marks = capture.landmarks
    if marks.pose is None:
        return seq, None
    state = shoulder_state(marks.pose, marks.pose_present, seq.intrinsics(), seq.viewmat, seq.translation,
                           capture.meta.width, capture.meta.height)
    report = shoulder_report(state, seq.n_frames)
    if state is None:
        return seq, report
    return dataclasses.replace(seq, shoulders=state.shoulders, torso_rotation=state.torso_rotation, neck=state.neck,
                               torso_measured=state.measured), report


def fitted_landmarks(lm: LandmarkModel, result: FitResult, width: int, height: int) -> torch.Tensor:
    """Projected model landmarks ``[F, 478, 2]`` of a fit, pixels."""
    with torch.no_grad():
        view = view_directions(result.rotation, result.translation)
        cam = to_camera(lm.points(result.shape, result.expression, view), result.rotation, result.translation)
        return project(cam, torch.tensor(result.focal, dtype=cam.dtype, device=cam.device),
                       cam.new_tensor([width / 2, height / 2]))


def crop_sequence(seq: TrackedSequence, scale: np.ndarray, origin: np.ndarray, width: int,
                  height: int) -> TrackedSequence:
    """The same fit seen through per-frame crops: ``K_i = A_i K`` with ``A_i`` the crop's scale and shift."""
    A = np.zeros((len(scale), 3, 3))
    A[:, 0, 0] = A[:, 1, 1] = scale
    A[:, :2, 2] = -origin * scale[:, None]
    A[:, 2, 2] = 1.0
    K = (A @ seq.K.astype(np.float64)).astype(np.float32)
    return dataclasses.replace(seq, K=K, width=width, height=height)


def model_pose(seq: TrackedSequence, lm: LandmarkModel) -> TrackedSequence:
    """``seq`` (the fitters' poses: rotation about the model origin) with the translations the
    model itself takes (:func:`.landmark_model.model_translation`; unchanged without a skeleton)."""
    if lm.root_template is None:
        return seq
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=lm.template.dtype, device=lm.template.device)  # noqa: E731
    with torch.no_grad():
        translation = model_translation(lm, t(seq.shape), t(seq.expression), t(seq.rotation), t(seq.translation))
    return dataclasses.replace(seq, translation=translation.cpu().numpy().astype(np.float32))


def sequence_from_fit(result: FitResult, lm: LandmarkModel, width: int, height: int,
                      valid: np.ndarray) -> TrackedSequence:
    K = np.array([[result.focal, 0, width / 2], [0, result.focal, height / 2], [0, 0, 1]], dtype=np.float32)
    return TrackedSequence(
        model=lm.model_name, shape=result.shape.cpu().numpy(), expression=result.expression.cpu().numpy(),
        expression_names=lm.expression_names, rotation=result.rotation.cpu().numpy(),
        translation=result.translation.cpu().numpy(), K=K, viewmat=tracking_viewmat().numpy(),
        width=width, height=height, valid=np.asarray(valid, bool),
    )

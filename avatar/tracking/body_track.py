"""Track a body capture: pose landmarks + person masks -> body ``tracking.npz``, report, overlay.

``avatar track capture=DIR model=anny`` on a capture made with ``preprocess.subject=body``
(or a synthetic body capture) lands here (:func:`track_body_capture`):

1. targets: the capture's pose landmarks (``landmarks.npz`` ``pose``, ``pose_present``;
   flagged frames left out), mapped back into the source video's pixels through each
   frame's crop (a crop that follows the person is a fixed camera seen through a moving
   window), and the silhouette targets of its masks (:mod:`.silhouette`);
2. the batched coarse-to-fine fit (:func:`.body_fit.fit_body_sequence`), written at once;
3. the global pose refined so that the body's colours agree across frames
   (:mod:`.body_photometric`, ``track.body.photometric``; ``iterations=0`` leaves it out);
4. outputs: ``tracking.npz`` as a :class:`avatar.io.tracking.BodyTrackedSequence` (per-frame
   intrinsics of the crops, the tracking camera ``diag(1, -1, -1, 1)``, per-frame landmark
   error and mask IoU), written first, then ``tracking_report.json`` (reprojection error in
   capture pixels, mask IoU of the fitted mesh against the person mask, frames flagged
   with a poor fit) and ``tracking_overlay.mp4`` (the mesh over the frames, MediaPipe's
   landmarks in green, the fitted ones in red).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from avatar.io.capture import Capture, CaptureError, flags_by_kind, frame_ranges
from avatar.io.reports import write_json
from avatar.io.tracking import TRACKING_FILE, BodyTrackedSequence
from .body_fit import CAMERA_FLIP, BodyFitConfig, BodyFitResult, fit_body_sequence, project, to_camera
from .body_photometric import BodyPhotometricConfig, refine_body_photometric
from .silhouette import mask_iou, silhouette_targets

log = logging.getLogger(__name__)

REPORT_FILE = "tracking_report.json"
OVERLAY_FILE = "tracking_overlay.mp4"
POOR_IOU = 0.7  # frames whose fitted silhouette overlaps the mask less than this are flagged
POOR_ERROR = 0.05  # frames whose median landmark error exceeds this fraction of the frame are flagged
REPORT_VISIBILITY = 0.5
CUT_FLAG = "body partly out of frame"  # the preprocess flag whose frames are still tracked  # landmarks at least this visible count in the reported error


@dataclass
class BodyTrackConfig:
    """Options of body tracking (``track.body`` of conf/track.yaml)."""

    fit: BodyFitConfig = field(default_factory=BodyFitConfig)
    # the global pose refined so that the body's colours agree across frames (iterations=0: off)
    photometric: BodyPhotometricConfig = field(default_factory=BodyPhotometricConfig)
    silhouette: bool = True  # fit the person masks too (the limbs stage); false: landmarks only
    silhouette_size: int = 128  # side of the downscaled masks whose distance transforms the fit reads, pixels
    outline_points: int = 160  # points taken along each mask's outline for the cover term
    iou_size: int = 256  # masks compared (report, per-frame flags) at most this many pixels wide
    batch: int = 16  # frames posed at once for the report and the overlay


def body_targets(capture: Capture) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """``(landmarks [F, 33, 4] in source px, valid [F], scale [F], origin [F, 2], (W, H))`` of a body capture.

    ``valid``: pose present, finite, not flagged (except for a body partly out of frame). Without recorded crops the capture's
    pixels are the source's (``scale`` 1, ``origin`` 0)."""
    lm = capture.landmarks
    if lm.pose is None:
        raise CaptureError(f"{capture.root} has no pose landmarks: preprocess the video with preprocess.subject=body "
                           "(avatar preprocess input=VIDEO out=DIR preprocess.subject=body)")
    # Frames flagged for a body partly out of frame keep their landmarks (the points out of view
    # have a low visibility); other flags (nobody, several people) leave the frame out.
    valid = lm.pose_present.copy() if lm.pose_present is not None else np.zeros(capture.n_frames, bool)
    for kind, frames in flags_by_kind(capture.meta.flagged).items():
        if kind != CUT_FLAG:
            valid[[i for i in frames if 0 <= i < capture.n_frames]] = False
    pose = lm.pose.astype(np.float64)
    valid &= np.isfinite(pose).all(axis=(1, 2))
    if not valid.any():
        kinds = flags_by_kind(capture.meta.flagged)
        told = ", ".join(f"{len(v)} flagged '{k}' ({frame_ranges(v)})" for k, v in kinds.items()) or "none has a pose"
        raise CaptureError(f"{capture.root}: no frame can be tracked: of its {capture.n_frames} frames, {told}; "
                           "film one person, whole body in view, and preprocess again")
    crops = capture.crop_transforms()
    if crops is None:
        scale, origin, size = np.ones(capture.n_frames), np.zeros((capture.n_frames, 2)), (capture.meta.width,
                                                                                           capture.meta.height)
    else:
        scale, origin, size = crops
    src = np.nan_to_num(pose).copy()
    src[..., :2] = src[..., :2] / scale[:, None, None] + origin[:, None]
    return src.astype(np.float32), valid, scale, origin, size


def capture_intrinsics(focal: float, size: tuple[int, int], scale: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Per-frame ``K [F, 3, 3]`` in capture pixels of a source camera (``focal``, centred principal
    point) seen through the crops: ``K_i = A_i K``."""
    W, H = size
    K = np.zeros((len(scale), 3, 3), np.float32)
    K[:, 0, 0] = K[:, 1, 1] = focal * scale
    K[:, 0, 2] = (W / 2 - origin[:, 0]) * scale
    K[:, 1, 2] = (H / 2 - origin[:, 1]) * scale
    K[:, 2, 2] = 1.0
    return K


def sequence_from_fit(body, result: BodyFitResult, capture: Capture, valid: np.ndarray, scale: np.ndarray,
                      origin: np.ndarray) -> BodyTrackedSequence:
    """The fit as a body tracking file (capture pixels, the tracking camera)."""
    return BodyTrackedSequence(
        model=body.name, shape=result.shape.cpu().numpy(), shape_names=tuple(body.shape_names),
        pose=result.pose.cpu().numpy(), joint_names=tuple(body.joint_names), rotation=result.rotation.cpu().numpy(),
        translation=result.translation.cpu().numpy(),
        K=capture_intrinsics(result.focal, (result.width, result.height), scale, origin),
        viewmat=np.diag(CAMERA_FLIP + (1.0,)).astype(np.float32), width=capture.meta.width,
        height=capture.meta.height, valid=valid, capture_id=capture.meta.capture_id,
        focal_fitted=True,
    )


def posed_batches(body, seq: BodyTrackedSequence, batch: int):
    """Yield ``(first frame, BodyOutput)`` over the sequence, ``batch`` frames at a time (no grad)."""
    dt, dev = body.template.dtype, body.template.device
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dt, device=dev)  # noqa: E731
    shape = t(seq.shape)[None]
    for start in range(0, seq.n_frames, batch):
        sl = slice(start, start + batch)
        with torch.no_grad():
            yield start, body(shape=shape, pose=t(seq.pose[sl]), rotation=t(seq.rotation[sl]),
                              translation=t(seq.translation[sl]))


def evaluate(body, seq: BodyTrackedSequence, capture: Capture, target_capture: np.ndarray, cfg: BodyTrackConfig,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: median landmark error (capture px, visible landmarks), mask IoU (fitted mesh
    against the capture's mask, compared at most ``iou_size`` pixels wide) and the fitted
    landmarks ``[F, 33, 2]`` in capture pixels."""
    from avatar.render.mesh import rasterize_mesh  # noqa: PLC0415

    F = seq.n_frames
    size = min(capture.meta.width, cfg.iou_size)
    down = size / capture.meta.width
    K_all = torch.as_tensor(seq.intrinsics(), dtype=torch.float32)
    vm = torch.as_tensor(seq.viewmat, dtype=torch.float32)
    faces = body.faces.cpu()
    err, iou, fitted = np.full(F, np.nan), np.full(F, np.nan), np.zeros((F, 33, 2), np.float32)
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=F, desc="track: report (mask IoU)", unit="frame")
    for start, out in posed_batches(body, seq, cfg.batch):
        n = out.vertices.shape[0]
        K = K_all[start:start + n]
        cam = to_camera(out.landmarks.float().cpu())
        px = project(cam, K[:, 0, 0, None, None], K[:, :2, 2][:, None])
        fitted[start:start + n] = px.numpy()
        Kd = K.clone()
        Kd[:, :2] *= down
        raster = rasterize_mesh(out.vertices.float().cpu(), faces, Kd, size, size, vm)
        for k in range(n):
            i = start + k
            mask = capture.load_mask(i)
            if down != 1:
                import cv2  # noqa: PLC0415

                mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
            iou[i] = mask_iou(raster.mask[k].numpy(), mask > 0.5)
            vis = target_capture[i, :, 3] >= REPORT_VISIBILITY
            if vis.any():
                err[i] = float(np.median(np.linalg.norm(fitted[i] - target_capture[i, :, :2], axis=-1)[vis]))
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    return err, iou, fitted


def poor_frames(err: np.ndarray, iou: np.ndarray, valid: np.ndarray, width: int) -> dict[int, str]:
    """Frames whose fit looks wrong: mask IoU below :data:`POOR_IOU` or landmark error above
    :data:`POOR_ERROR` of the frame width (index -> reason)."""
    flags = {}
    for i in range(len(err)):
        reasons = []
        if np.isfinite(iou[i]) and iou[i] < POOR_IOU:
            reasons.append(f"mask IoU {iou[i]:.2f} < {POOR_IOU}")
        if valid[i] and np.isfinite(err[i]) and err[i] > POOR_ERROR * width:
            reasons.append(f"landmark error {err[i]:.1f} px > {POOR_ERROR * width:.0f} px")
        if reasons:
            flags[i] = "; ".join(reasons)
    return flags


def _summary(x: np.ndarray, digits: int = 3) -> dict:
    x = x[np.isfinite(x)]
    if not x.size:
        return {"median": None, "p95": None, "min": None, "max": None}
    return {"median": round(float(np.median(x)), digits), "p95": round(float(np.percentile(x, 95)), digits),
            "min": round(float(x.min()), digits), "max": round(float(x.max()), digits)}


def track_body_capture(capture_dir: str | os.PathLike, body, cfg: BodyTrackConfig | None = None,
                       out: str | os.PathLike | None = None, device: str = "cpu", dtype: str = "float32",
                       overlay: bool = True, overlay_stride: int | None = None, progress: bool = False) -> dict:
    """Fit ``body`` (a :class:`~avatar.models.body.BodyModel`) to a body capture and write the
    tracking files into ``out`` (default: the capture folder). Returns the report."""
    cfg = cfg or BodyTrackConfig()
    t_start = time.perf_counter()
    capture = Capture(capture_dir)
    out = Path(out or capture.root)
    out.mkdir(parents=True, exist_ok=True)
    target, valid, scale, origin, size = body_targets(capture)
    dev, dt = torch.device(device), getattr(torch, dtype)
    body = body.to(dev, dt)
    t = lambda a: torch.as_tensor(np.asarray(a), device=dev, dtype=dt)  # noqa: E731
    silhouette = None
    if cfg.silhouette:
        masks = [capture.load_mask(i) for i in range(capture.n_frames)]
        silhouette = silhouette_targets(masks, scale, origin, cfg.silhouette_size, cfg.outline_points, dev, dt)
    t0 = time.perf_counter()
    result = fit_body_sequence(body, t(target), torch.as_tensor(valid, device=dev), size[0], size[1], t(scale),
                               silhouette, cfg.fit, progress=progress)
    fit_seconds = time.perf_counter() - t0
    seq = sequence_from_fit(body, result, capture, valid, scale, origin)
    seq.save(out / TRACKING_FILE)  # first: what was computed is kept whatever follows
    target_capture = capture.landmarks.pose.astype(np.float32)
    photometric = None
    if cfg.photometric.iterations > 0:
        seq, photometric = refine_body_photometric(capture, body, seq, t(np.nan_to_num(target_capture)),
                                                   torch.as_tensor(valid), cfg.photometric, progress=progress)
        seq.save(out / TRACKING_FILE)

    t1 = time.perf_counter()
    err, iou, fitted = evaluate(body, seq, capture, target_capture, cfg, progress)
    seq.landmark_error_px, seq.mask_iou = err.astype(np.float32), iou.astype(np.float32)
    seq.save(out / TRACKING_FILE)
    flags = poor_frames(err, iou, valid, capture.meta.width)
    vis = target_capture[..., 3] >= REPORT_VISIBILITY
    all_err = np.linalg.norm(fitted - target_capture[..., :2], axis=-1)[valid[:, None] & vis]
    report = {
        "command": "track", "subject": "body", "capture": str(capture.root), "model": body.name,
        "frames": capture.n_frames, "valid_frames": int(valid.sum()),
        "invalid_frames_interpolated": frame_ranges(np.flatnonzero(~valid)),
        "width": capture.meta.width, "height": capture.meta.height,
        "fitted_in": "source pixels through per-frame crops" if capture.crop_transforms() is not None
                     else "capture pixels",
        "focal_px_source": round(result.focal, 2),
        "shape": {n: round(float(v), 4) for n, v in zip(body.shape_names, result.shape.cpu().numpy())},
        "reprojection_px": {**_summary(all_err), "per_frame_median": _summary(err)},
        "mask_iou": {**_summary(iou, 4), "compared_at_px": min(capture.meta.width, cfg.iou_size)},
        "poor_frames": {str(i): r for i, r in sorted(flags.items())},
        "preprocess_flags": {str(i): r for i, r in sorted(capture.meta.flagged.items())},
        "fit_seconds": round(fit_seconds, 3), "report_seconds": round(time.perf_counter() - t1, 3),
        "stages": {k: v for k, v in result.stats.items() if isinstance(v, dict)},
        "photometric": photometric,
        "device": str(dev), "config": asdict(cfg),
        "outputs": {"tracking": str(out / TRACKING_FILE)},
    }
    if flags:
        log.warning("%s: %d of %d frames fit poorly (%s); see %s", capture.root, len(flags), capture.n_frames,
                    frame_ranges(sorted(flags)), REPORT_FILE)
    if overlay:
        t2 = time.perf_counter()
        write_body_overlay(out / OVERLAY_FILE, body, seq, capture, target_capture, fitted, overlay_stride, progress)
        report["overlay_seconds"] = round(time.perf_counter() - t2, 3)
        report["outputs"]["overlay"] = str(out / OVERLAY_FILE)
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    write_json(out / REPORT_FILE, report)
    return report


def write_body_overlay(path: Path, body, seq: BodyTrackedSequence, capture: Capture, detected: np.ndarray,
                       fitted: np.ndarray, stride: int | None = None, progress: bool = False) -> Path:
    """``tracking_overlay.mp4``: the fitted body over every ``stride``-th frame (see :mod:`.overlay`)."""
    from avatar.io.video import VideoWriter  # noqa: PLC0415

    from .overlay import auto_stride, overlay_frame  # noqa: PLC0415

    stride = auto_stride(seq.n_frames, stride)
    faces = body.faces.cpu()
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=seq.n_frames, desc="overlay", unit="frame")
    with VideoWriter(path, fps=max(1.0, capture.meta.fps / stride)) as writer:
        for start, out in posed_batches(body, seq, 16):
            for k in range(out.vertices.shape[0]):
                i = start + k
                if i % stride == 0:
                    writer.write(overlay_frame(capture.load_frame(i).astype(np.float32), out.vertices[k].float().cpu(),
                                               faces, seq, detected[i] if seq.valid[i] else None, fitted[i],
                                               valid=bool(seq.valid[i]), index=i))
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return path

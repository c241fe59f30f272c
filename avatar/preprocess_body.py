"""Video (or image folder) -> capture folder of a full body (``preprocess.subject=body``).

Two streaming passes over the source, as for heads (:mod:`avatar.preprocess`):

1. **Find the person** (:func:`find_bodies`): MediaPipe pose (``pose_landmark_full``,
   tracking mode) and selfie segmentation on every full frame, downscaled so its long side
   is at most ``detect_size``. The person's box is the box of their visible landmarks grown
   to their connected region of the person mask (head top, feet, clothes). Other large
   regions of the mask are other people (the frame is flagged); visible body points
   outside the frame, or the person's mask running into a frame edge, mean the body is
   partly out of frame (flagged, the points and edges named).
2. **Crop and write** (:func:`write_body_crops`): a square box per frame centred on the
   person's box, ``body_crop_scale`` times its longer side, smoothed over time
   (:func:`avatar.geometry.crop.crop_boxes`, modes follow | fixed | full), cut and resized to
   ``resolution``; pose landmarks are detected again on the crop (tracking mode, in its
   pixels), where that misses the first pass's are mapped in; the person mask is the pose
   model's segmentation (``body_mask=pose``) or the selfie model's on the crop.

The capture's ``landmarks.npz`` holds ``pose [F, 33, 4]`` and ``pose_present [F]`` (runs
of up to ``pose_max_gap`` frames without a pose between two detections interpolated);
``face`` is all zeros with ``face_present`` false (no face landmarks for bodies), and
``meta.extra["subject"]`` is ``"body"``. Flags (``meta.flagged``): "no person", "N people
(kept the one tracked)", "body partly out of frame (points, edges)". A source in which no
frame shows a person is an error, raised before anything is written.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.geometry.crop import crop_boxes, crop_image
from avatar.io.capture import N_FACE_LANDMARKS, CaptureMeta, CaptureWriter, Landmarks, flags_by_kind, frame_ranges
from avatar.io.reports import write_json
from avatar.io.video import VideoWriter
from avatar.io.video_reader import open_source
from avatar.landmarks.pose import (
    MIN_MASK_SUPPORT, N_POSE_LANDMARKS, POSE_LANDMARK_NAMES, PoseDetector, fill_pose_gaps, mask_support,
)
from avatar.landmarks.segmentation import SelfieSegmenter
from avatar.preprocess import (
    PREVIEW_NAME, REPORT_NAME, BoxTrack, PreprocessConfig, PreprocessError, Timer, _downscaled, _expected_frames, _median,
    _progress, capture_report, flag_notes, preview_image, refuse_other_capture, remove_stale_files,
)

log = logging.getLogger(__name__)

# Body points that must lie inside the frame for the whole body to be in view.
FRAME_POINTS = ("nose", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
_FRAME_POINT_IDS = np.array([POSE_LANDMARK_NAMES.index(n) for n in FRAME_POINTS])
MIN_VISIBILITY = 0.5  # landmarks at least this visible make the person's box
OTHER_PERSON_AREA = 0.2  # a mask region at least this fraction of the person's area (and apart from them) is another person
EDGE_RUN = 0.02  # the person's mask over at least this fraction of a frame edge: the body runs out of the frame there


@dataclass
class BodyTrack(BoxTrack):
    """First-pass result, one row per kept frame; boxes and landmarks in source pixels."""

    indices: np.ndarray  # [F] int, frame index in the source
    times: np.ndarray  # [F] float, seconds
    boxes: np.ndarray  # [F, 4] float, the person's box x0, y0, x1, y1 (NaN: nobody)
    landmarks: np.ndarray  # [F, 33, 4] float32 pose landmarks (zeros: nobody)
    n_people: np.ndarray  # [F] int, people seen (0: nobody)
    outside: list  # [F] list of str: body points outside the frame and frame edges the mask runs into
    frame_size: tuple[int, int]  # (width, height) of the upright source frames

    @property
    def present(self) -> np.ndarray:
        return self.n_people > 0


def person_regions(mask: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray | None, int, list[str]]:
    """The person's region in a frame's person ``mask [H, W]`` (0..1) given their pose ``landmarks [33, 4]``.

    Returns ``(box, n_people, edges)``: the box ``[x0, y0, x1, y1]`` of the mask regions the
    visible landmarks fall on (None when they fall on none), the number of people (1 + other
    regions at least :data:`OTHER_PERSON_AREA` of the person's area), and the frame edges
    ("top", "bottom", "left", "right") the person's regions run into.
    """
    import cv2  # noqa: PLC0415

    h, w = mask.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0.5).astype(np.uint8), connectivity=8)
    seen = landmarks[landmarks[:, 3] >= MIN_VISIBILITY, :2]
    x, y = seen.astype(int).T
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    own = set(labels[y[inside], x[inside]].tolist()) - {0}
    if not own:
        return None, 1, []
    ids = sorted(own)
    area = stats[ids, cv2.CC_STAT_AREA].sum()
    others = [k for k in range(1, n) if k not in own and stats[k, cv2.CC_STAT_AREA] >= OTHER_PERSON_AREA * area]
    region = np.isin(labels, ids)
    ys, xs = np.nonzero(region)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
    run = {"top": region[0].sum() / w, "bottom": region[-1].sum() / w,
           "left": region[:, 0].sum() / h, "right": region[:, -1].sum() / h}
    edges = [edge for edge, fraction in run.items() if fraction >= EDGE_RUN]
    return box, 1 + len(others), edges


def points_outside(landmarks: np.ndarray, width: int, height: int) -> list[str]:
    """Names of the :data:`FRAME_POINTS` of ``landmarks [33, 4]`` (pixels) outside the ``width x height`` frame."""
    xy = landmarks[_FRAME_POINT_IDS, :2]
    out = (xy[:, 0] < 0) | (xy[:, 0] >= width) | (xy[:, 1] < 0) | (xy[:, 1] >= height)
    return [FRAME_POINTS[i] for i in np.flatnonzero(out)]


def body_box(landmarks: np.ndarray, region_box: np.ndarray | None) -> np.ndarray:
    """The person's box: their visible landmarks' box, grown to their mask region's box where
    that stays within half the landmark box's longer side of it (a merged background blob
    does not blow the box up)."""
    seen = landmarks[landmarks[:, 3] >= MIN_VISIBILITY] if (landmarks[:, 3] >= MIN_VISIBILITY).any() else landmarks
    box = np.concatenate((seen[:, :2].min(0), seen[:, :2].max(0))).astype(float)
    if region_box is None:
        return box
    reach = 0.5 * np.max(box[2:] - box[:2])
    limit = np.concatenate((box[:2] - reach, box[2:] + reach))
    grown = np.concatenate((np.minimum(box[:2], region_box[:2]), np.maximum(box[2:], region_box[2:])))
    return np.concatenate((np.maximum(grown[:2], limit[:2]), np.minimum(grown[2:], limit[2:])))


def find_bodies(source, cfg: PreprocessConfig, timer: Timer) -> BodyTrack:
    """First pass: the person of every kept frame, on the downscaled full frame."""
    w, h = source.info.width, source.info.height
    rows = {"indices": [], "times": [], "boxes": [], "landmarks": [], "n_people": [], "outside": []}
    frames = timer.timed_frames(source.frames(cfg.max_frames, cfg.fps))
    model = "landscape" if w > 1.3 * h else "general"
    with PoseDetector(video=True) as poser, SelfieSegmenter(model) as segmenter:
        for frame in _progress(frames, _expected_frames(source.info, cfg), "preprocess: find the person", cfg.progress):
            small = _downscaled(frame.image, cfg.detect_size)
            sx, sy = w / small.shape[1], h / small.shape[0]
            with timer("detect"):
                pose = poser.detect(small)
            with timer("segment"):
                mask = segmenter.segment(small)
            if pose is not None and mask_support(pose.landmarks, mask) < MIN_MASK_SUPPORT:
                pose = None  # a pose MediaPipe kept tracking after the person left
            rows["indices"].append(frame.index)
            rows["times"].append(frame.time)
            if pose is None:
                rows["boxes"].append(np.full(4, np.nan))
                rows["landmarks"].append(np.zeros((N_POSE_LANDMARKS, 4), np.float32))
                rows["n_people"].append(0)
                rows["outside"].append([])
                continue
            region, n_people, edges = person_regions(mask, pose.landmarks)
            scale = np.array([sx, sy, sx, sy])
            rows["boxes"].append(body_box(pose.landmarks, region) * scale)
            rows["landmarks"].append(pose.landmarks * np.array([sx, sy, sx, 1.0], np.float32))
            rows["n_people"].append(n_people)
            rows["outside"].append(points_outside(pose.landmarks, small.shape[1], small.shape[0]) + edges)
    if not rows["indices"]:
        raise PreprocessError(f"{source.path} yielded no frame to preprocess")
    return BodyTrack(np.array(rows["indices"]), np.array(rows["times"], float), np.array(rows["boxes"], float),
                     np.array(rows["landmarks"], np.float32), np.array(rows["n_people"]), rows["outside"], (w, h))


def map_pose(landmarks: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``[..., 33, 4]`` source-pixel pose landmarks in the pixels of the crop of the 2x3 affine ``A``
    (z scaled like x, visibility kept)."""
    out = np.array(landmarks, np.float32, copy=True)
    out[..., :2] = landmarks[..., :2] @ A[:, :2].T + A[:, 2]
    out[..., 2] = landmarks[..., 2] * A[0, 0]
    return out


@dataclass
class BodyCrops:
    """Second-pass result per output frame, landmarks in crop pixels."""

    pose: np.ndarray  # [F, 33, 4] float32
    found_on_crop: np.ndarray  # [F] bool
    from_full_frame: np.ndarray  # [F] bool: first-pass landmarks mapped into the crop

    @property
    def found(self) -> np.ndarray:
        return self.found_on_crop | self.from_full_frame


def write_body_crops(source, track: BodyTrack, boxes: np.ndarray, writer: CaptureWriter, cfg: PreprocessConfig,
                     timer: Timer, preview: VideoWriter | None = None) -> BodyCrops:
    """Second pass: crop, detect the pose on the crop, segment, write frame and mask (and preview)."""
    F = len(track.times)
    res = BodyCrops(np.zeros((F, N_POSE_LANDMARKS, 4), np.float32), np.zeros(F, bool), np.zeros(F, bool))
    pose_mask = cfg.body_mask == "pose"
    n = 0
    frames = timer.timed_frames(source.frames(cfg.max_frames, cfg.fps))
    with PoseDetector(video=True, segmentation=pose_mask) as poser, \
            SelfieSegmenter("general" if pose_mask else cfg.body_mask) as segmenter:
        for i, frame in enumerate(_progress(frames, F, "preprocess: crop, pose, mask, write", cfg.progress)):
            if i >= F or frame.index != track.indices[i]:
                raise PreprocessError(f"{source.path} decoded differently on the second pass (frame {frame.index}); "
                                      "the file may be damaged: re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")
            with timer("crop"):
                crop, A = crop_image(frame.image, boxes[i], cfg.resolution)
            with timer("detect"):
                pose = poser.detect(crop)
            mask = pose.mask if pose is not None and pose_mask else None
            if mask is None:
                with timer("segment"):
                    mask = segmenter.segment(crop)
            if pose is not None and mask_support(pose.landmarks, mask) >= MIN_MASK_SUPPORT:
                res.pose[i], res.found_on_crop[i] = pose.landmarks, True
            elif track.present[i]:
                res.pose[i], res.from_full_frame[i] = map_pose(track.landmarks[i], A), True
            with timer("write"):
                writer.write_frame(i, crop)
                writer.write_mask(i, mask)
                if preview is not None:
                    preview.write(preview_image(crop, mask, res.pose[i] if res.found[i] else None))
            n += 1
    if n != F:
        raise PreprocessError(f"{source.path}: the second pass decoded {n} frames, the first {F}; "
                              "the file may be damaged: re-encode it")
    return res


def flag_body_frames(track: BodyTrack, crops: BodyCrops) -> dict[int, str]:
    """Reason per flagged output frame: no person, several people, body partly out of frame."""
    flagged = {}
    for i in range(len(track.times)):
        reasons = []
        if not crops.found[i]:
            reasons.append("no person")
        if track.n_people[i] > 1:
            reasons.append(f"{track.n_people[i]} people (kept the one tracked)")
        if track.outside[i]:
            points = [p for p in track.outside[i] if p in FRAME_POINTS]
            edges = [e for e in track.outside[i] if e not in FRAME_POINTS]
            what = ", ".join(points + [f"{e} edge" for e in edges])  # no "; ": it separates the reasons
            reasons.append(f"body partly out of frame ({what})")
        if reasons:
            flagged[i] = "; ".join(reasons)
    return flagged


def body_flag_notes(flagged: dict[int, str], n: int) -> list[str]:
    """What the flags mean for the later stages, one line per kind (the report's ``notes``)."""
    return flag_notes(flagged, n, _body_flag_meaning)


def _body_flag_meaning(kind: str) -> str | None:
    if kind.endswith(" people"):
        return (f"show {kind}: the person tracked was kept and the frames are flagged, so track and train skip them; "
                "film the subject alone to use them")
    if kind == "no person":
        return "show nobody: track interpolates them, train skips them"
    if kind == "body partly out of frame":
        return ("cut the body (the flags name the points and edges): train skips them; film the whole body, head to "
                "feet, with some room around it")
    return None


def _no_person_error(path, n: int) -> PreprocessError:
    return PreprocessError(f"no person found in any of the {n} frames of {path}: a body capture "
                           "(preprocess.subject=body) needs one person, upright and mostly in view")


def preprocess_body(input_path: str | os.PathLike, out: str | os.PathLike, cfg: PreprocessConfig | None = None) -> dict:
    """Turn a video or image folder of a full body into the capture folder ``out``; returns the report.

    Writes what :func:`avatar.preprocess.preprocess` writes (frames, masks, landmarks.npz,
    meta.json last, the report, the optional preview). Raises
    :class:`~avatar.io.video_reader.VideoReadError` for an unreadable input and
    :class:`~avatar.preprocess.PreprocessError` when no frame shows a person; in both cases
    nothing is written.
    """
    cfg = cfg or PreprocessConfig(subject="body")
    timer, t_start = Timer(), time.perf_counter()
    source = open_source(input_path, image_fps=cfg.image_fps, rotate=cfg.rotate)
    if not cfg.overwrite:
        refuse_other_capture(Path(out), source.path)
    track = find_bodies(source, cfg, timer)
    if not track.present.any():
        raise _no_person_error(input_path, len(track.times))
    boxes = crop_boxes(track, cfg.crop, cfg.body_crop_scale, cfg.crop_smoothing)
    info = source.info
    fps = min(cfg.fps, info.fps) if cfg.fps and info.fps else (cfg.fps or info.fps)
    writer = CaptureWriter(out, frame_format=cfg.frame_format, jpeg_quality=cfg.jpeg_quality)
    with VideoWriter(Path(out) / PREVIEW_NAME, fps=fps) if cfg.preview else nullcontext() as preview:
        crops = write_body_crops(source, track, boxes, writer, cfg, timer, preview)
    flagged = flag_body_frames(track, crops)
    pose, bridged = fill_pose_gaps(crops.pose, crops.found, cfg.pose_max_gap)
    present = crops.found | bridged
    F = len(track.times)
    pose_report = {"detected_on_crop": int(crops.found_on_crop.sum()),
                   "from_full_frame": int(crops.from_full_frame.sum()), "interpolated": int(bridged.sum()),
                   "missing": int(F - present.sum()), "interpolated_frames": frame_ranges(np.flatnonzero(bridged)),
                   "missing_frames": frame_ranges(np.flatnonzero(~present)), "max_gap": cfg.pose_max_gap}
    meta = CaptureMeta(
        source=str(Path(input_path).resolve()), fps=float(fps), width=cfg.resolution, height=cfg.resolution,
        n_frames=F, rotation=info.rotation, timestamps=[round(float(t), 6) for t in track.times], flagged=flagged,
        crop_boxes=np.round(boxes, 3).tolist(), frame_format=cfg.frame_format,
        extra={
            "subject": "body", "source_width": info.width, "source_height": info.height, "source_fps": info.fps,
            "source_indices": track.indices.tolist(), "crop_mode": cfg.crop, "crop_scale": cfg.body_crop_scale,
            "pose_landmarks": "MediaPipe pose (pose_landmark_full, 33 x [x, y, z, visibility]) detected on the crop; "
                              "first-pass landmarks mapped in where that missed (pose_from_full_frame); short gaps "
                              "interpolated (pose_interpolated)",
            "pose_from_full_frame": np.flatnonzero(crops.from_full_frame).tolist(),
            "pose_interpolated": pose_report["interpolated_frames"], "pose_missing": pose_report["missing_frames"],
            "people": track.n_people.tolist(),
            "mask_model": "mediapipe pose segmentation" if cfg.body_mask == "pose"
                          else f"mediapipe selfie segmentation ({cfg.body_mask})",
            "decode_error": source.decode_error,
        },
    )
    with timer("write"):
        writer.finish(meta, Landmarks(face=np.zeros((F, N_FACE_LANDMARKS, 3), np.float32),
                                      face_present=np.zeros(F, bool), pose=pose, pose_present=present))
    remove_stale_files(Path(out), F, cfg.frame_format)
    report = body_report(source, track, boxes, pose_report, flagged, cfg, timer, time.perf_counter() - t_start, out)
    write_json(Path(out) / REPORT_NAME, report)
    for kind, frames in flags_by_kind(flagged).items():
        log.warning("%s: %d of %d frames flagged '%s': %s", input_path, len(frames), F, kind, frame_ranges(frames))
    return report


def body_report(source, track: BodyTrack, boxes: np.ndarray, pose_report: dict, flagged: dict[int, str],
                cfg: PreprocessConfig, timer: Timer, total_s: float, out) -> dict:
    """The content of ``preprocess_report.json`` for a body capture."""
    return capture_report(
        source, boxes, flagged, body_flag_notes(flagged, len(track.times)), cfg, cfg.body_crop_scale, timer, total_s,
        out, subject="body",
        person={"found": int(track.present.sum()), "fraction": round(float(track.present.mean()), 4),
                "median_height_src_px": _median(track.boxes[:, 3] - track.boxes[:, 1])},
        pose=pose_report)

"""Video (or image folder) -> capture folder: square face crops, masks, landmarks.

Two streaming passes over the source (frames are decoded twice, never held in memory):

1. **Find faces** (:func:`track_faces`): MediaPipe face mesh (tracking mode) on every full
   frame, downscaled so its long side is at most ``detect_size``; where it finds nothing,
   the full-range face detector looks for a small face (:class:`SmallFaceFinder`). Gives
   the face box per frame in source pixels and the number of faces (several: the frame is
   flagged and the largest face is kept, unless a smaller one continues the previous
   frame's face, see :func:`choose_face`).
2. **Crop track** (:func:`crop_boxes`): a square box per frame. ``follow``: centred on the
   face box (raised by ``crop_lift``), ``crop_scale`` times its side, smoothed over time by
   zero-phase local-linear Gaussian fits over the timestamps (:func:`avatar.geometry.crop.smooth_track`; frames
   without a face are bridged from their neighbours); ``fixed``: one box for all frames
   around the median face, grown to cover every face box of the track; ``full``: the
   whole frame, padded to a square.
3. **Write** (:func:`write_crops`): each frame is cut to its box and resized to
   ``resolution`` (:func:`crop_image`); the face mesh runs again on the crop (tracking
   mode), so landmarks are *detected on the crop*, in its pixels. Where the crop detection
   misses the face the first pass kept (finds none, or another one), the first pass's
   landmarks are mapped into the crop instead (listed in
   ``meta.extra["landmarks_from_full_frame"]``). MediaPipe selfie segmentation gives the
   mask of the crop. With ``preprocess.pose=true`` MediaPipe pose (``pose_landmark_full``) runs
   on the crop too: 33 landmarks per frame in its pixels (``landmarks.npz`` ``pose``,
   ``pose_present``; a pose mostly off the person mask is dropped); runs of up to ``pose_max_gap`` frames without a pose between two
   detections are interpolated (``meta.extra["pose_interpolated"]``), the rest have
   ``pose_present`` false (``meta.extra["pose_missing"]``; not flagged: the face still counts).

Pixel coordinates are continuous, as MediaPipe's: pixel ``i`` covers ``[i, i + 1)``. Source
pixels are those of the upright frame (rotation metadata applied). Crop boxes are
``[x0, y0, x1, y1]`` in source pixels and may reach outside the frame (black padding,
mask 0). Flagged frames (``meta.flagged``, index -> reason; later stages skip them):
"no face", "N faces (kept the largest | the one continuing the track)", "face too small
(S px < M px)", joined by "; ". A source in which no frame has a face is an error, raised
before anything is written.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from avatar.geometry.crop import CROP_MODES, crop_boxes, crop_image, transform_landmarks
from avatar.landmarks import FaceDetection, FaceMeshDetector
from avatar.landmarks.draw import draw_points, enlarge, preview_scale
from avatar.landmarks.face_finder import SmallFaceFinder, choose_face, upright_turn
from avatar.landmarks.pose import MIN_MASK_SUPPORT, PoseDetector, fill_pose_gaps, mask_support
from avatar.landmarks.segmentation import SelfieSegmenter
from avatar.io.capture import N_FACE_LANDMARKS, N_POSE_LANDMARKS, CaptureMeta, CaptureWriter, Landmarks, flags_by_kind, frame_ranges
from avatar.io.reports import write_json
from avatar.io.video import VideoWriter
from avatar.io.video_reader import Frame, open_source

log = logging.getLogger(__name__)

REPORT_NAME = "preprocess_report.json"
PREVIEW_NAME = "preprocess_preview.mp4"


class PreprocessError(ValueError):
    """The input cannot be turned into a capture (e.g. no face in any frame)."""


@dataclass
class PreprocessConfig:
    """Options of ``avatar preprocess`` (the ``preprocess:`` block of conf/preprocess.yaml)."""

    max_frames: int | None = None  # keep at most this many frames (after fps subsampling)
    fps: float | None = None  # subsample to at most this rate; None = the source's own
    resolution: int = 512  # side of the square output frames, pixels
    crop: str = "follow"  # follow | fixed | full
    crop_scale: float = 2.0  # crop side / side of the face's landmark box
    crop_lift: float = 0.1  # move the crop up by this fraction of the face size (more hair, less chest)
    crop_smoothing: float = 0.3  # sigma of the temporal Gaussian (local-linear fits) over the crop track, seconds
    detect_size: int = 640  # first pass: long side of the downscaled full frame, pixels
    min_face_size: float = 64.0  # faces smaller than this (landmark box side, source pixels) are flagged
    max_faces: int = 2  # faces looked for per frame (>= 2 to notice a second person)
    small_faces: bool = True  # where the face mesh finds none, look with the full-range detector (also over 480 px tiles of the full frame: faces down to ~30 px)
    mask_model: str = "general"  # MediaPipe selfie model: general (square) | landscape
    frame_format: str = "jpg"  # jpg | png
    jpeg_quality: int = 95
    image_fps: float = 25.0  # frame rate assumed for an image-folder input
    progress: bool = True  # tqdm progress bars
    preview: bool = False  # also write preprocess_preview.mp4: crops, mask, landmarks
    rotate: int = 0  # turn the frames this many degrees counter-clockwise (0, 90, 180, 270) on top of the video's rotation metadata: for a sideways video
    overwrite: bool = False  # replace a capture of another video that `out` already holds (its tracking and runs then refuse it)
    subject: str = "head"  # head: the crop follows the face (face landmarks); body: the whole person (pose landmarks, person mask, avatar.preprocess_body)
    body_crop_scale: float = 1.2  # body: crop side / longer side of the person's box (landmarks grown to their mask region)
    body_mask: str = "pose"  # body: person mask from the pose model's segmentation (pose) or the selfie model (general | landscape)
    pose: bool = False  # also detect the 33 MediaPipe pose landmarks on each crop (landmarks.npz `pose`, `pose_present`)
    pose_max_gap: int = 5  # frames without a pose in runs up to this long between two detections are interpolated

    def __post_init__(self) -> None:
        choices = {"crop": CROP_MODES, "frame_format": ("jpg", "png"), "mask_model": ("general", "landscape"),
                   "rotate": (0, 90, 180, 270), "subject": ("head", "body"),
                   "body_mask": ("pose", "general", "landscape")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"preprocess.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        positive = {"resolution": 16, "crop_scale": 1e-6, "detect_size": 64, "max_faces": 1, "image_fps": 1e-6,
                    "pose_max_gap": 0, "body_crop_scale": 1e-6}
        if self.max_frames is not None:
            positive["max_frames"] = 1
        if self.fps is not None:
            positive["fps"] = 1e-6
        for key, low in positive.items():
            if getattr(self, key) < low:
                raise ValueError(f"preprocess.{key} must be >= {low:g}, got {getattr(self, key)}")
        if self.crop_smoothing < 0:
            raise ValueError(f"preprocess.crop_smoothing must be >= 0 seconds, got {self.crop_smoothing}")


class BoxTrack:
    """Per-frame boxes ``boxes [F, 4]`` (x0, y0, x1, y1, source pixels) of a tracked subject."""

    boxes: np.ndarray

    @property
    def centers(self) -> np.ndarray:  # [F, 2]
        return 0.5 * (self.boxes[:, :2] + self.boxes[:, 2:])

    @property
    def sizes(self) -> np.ndarray:  # [F], side of the box's bounding square
        return np.max(self.boxes[:, 2:] - self.boxes[:, :2], axis=1)


@dataclass
class FaceTrack(BoxTrack):
    """First-pass result, one row per kept frame; boxes and landmarks in source pixels."""

    indices: np.ndarray  # [F] int, frame index in the source
    times: np.ndarray  # [F] float, seconds
    boxes: np.ndarray  # [F, 4] float, landmark box x0, y0, x1, y1 of the kept face (NaN: none)
    landmarks: np.ndarray  # [F, 478, 3] float32 of the kept face (zeros: none)
    n_faces: np.ndarray  # [F] int
    frame_size: tuple[int, int]  # (width, height) of the upright source frames
    chosen: np.ndarray  # [F] int, rank by size of the kept face (0 = largest, -1 = none)
    samples: list = field(default_factory=list)  # a few downscaled frames, to check their orientation

    @property
    def present(self) -> np.ndarray:
        return self.n_faces > 0


@dataclass
class Timer:
    """Accumulates seconds per stage."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

    def timed_frames(self, frames: Iterator[Frame], stage: str = "decode") -> Iterator[Frame]:
        while True:
            with self(stage):
                frame = next(frames, None)
            if frame is None:
                return
            yield frame


def _progress(iterable, total: int | None, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(iterable, total=total, desc=desc, unit="frame")


def _expected_frames(info, cfg: PreprocessConfig) -> int | None:
    n = info.n_frames
    if n and cfg.fps and info.fps and cfg.fps < info.fps:
        n = int(np.ceil(n * cfg.fps / info.fps))
    if cfg.max_frames is not None:
        n = min(n, cfg.max_frames) if n else cfg.max_frames
    return n


def _detect_full_frame(detector: FaceMeshDetector, small: SmallFaceFinder | None, image: np.ndarray,
                       detect_size: int, near: np.ndarray | None = None) -> list:
    """Faces of ``image`` in its pixels, searched at most ``detect_size`` px on the long side
    (the small-face finder also at full resolution, first ``near`` the previous face's box)."""
    import cv2  # noqa: PLC0415

    h, w = image.shape[:2]
    down = min(1.0, detect_size / max(w, h))
    img = image if down == 1.0 else cv2.resize(image, (round(w * down), round(h * down)),
                                                interpolation=cv2.INTER_AREA)
    faces = detector.detect(img)
    if not faces and small is not None:
        return small.find(image, img, near)
    sx, sy = w / img.shape[1], h / img.shape[0]
    return [FaceDetection(f.landmarks * np.array([sx, sy, sx], np.float32), f.box * np.array([sx, sy, sx, sy]))
            for f in faces]


N_SAMPLES, SAMPLE_EVERY, SAMPLE_SIZE = 3, 10, 480  # frames kept to check the orientation: count, spacing, long side


def _downscaled(image: np.ndarray, size: int) -> np.ndarray:
    import cv2  # noqa: PLC0415

    h, w = image.shape[:2]
    s = min(1.0, size / max(h, w))
    return image if s == 1.0 else cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def track_faces(source, cfg: PreprocessConfig, timer: Timer) -> FaceTrack:
    """First pass: the face of every kept frame (:func:`choose_face`), on the downscaled full frame."""
    w, h = source.info.width, source.info.height
    indices, times, boxes, landmarks, n_faces, chosen, samples = [], [], [], [], [], [], []
    previous = None  # box of the last kept face
    frames = timer.timed_frames(source.frames(cfg.max_frames, cfg.fps))
    small = SmallFaceFinder() if cfg.small_faces else None
    try:
        with FaceMeshDetector(video=True, max_faces=cfg.max_faces) as detector:
            total = _expected_frames(source.info, cfg)
            for frame in _progress(frames, total, "preprocess: find faces", cfg.progress):
                with timer("detect"):
                    faces = _detect_full_frame(detector, small, frame.image, cfg.detect_size, previous)
                if len(samples) < N_SAMPLES and len(indices) % SAMPLE_EVERY == 0:
                    samples.append(_downscaled(frame.image, SAMPLE_SIZE))
                indices.append(frame.index)
                times.append(frame.time)
                n_faces.append(len(faces))
                chosen.append(choose_face(faces, previous) if faces else -1)
                face = faces[chosen[-1]] if faces else None
                previous = face.box if face is not None else previous
                boxes.append(face.box if face is not None else np.full(4, np.nan))
                landmarks.append(face.landmarks if face is not None else np.zeros((N_FACE_LANDMARKS, 3), np.float32))
    finally:
        if small is not None:
            small.close()
    if not indices:
        raise PreprocessError(f"{source.path} yielded no frame to preprocess")
    return FaceTrack(np.array(indices), np.array(times, float), np.array(boxes, float),
                     np.array(landmarks, np.float32), np.array(n_faces), (w, h), np.array(chosen), samples)


def flag_frames(track: FaceTrack, found_on_crop: np.ndarray, sizes_src: np.ndarray,
                min_face_size: float) -> dict[int, str]:
    """Reason per flagged output frame: no face, several faces, face too small."""
    flagged = {}
    for i in range(len(track.times)):
        reasons = []
        if not (track.present[i] or found_on_crop[i]):
            reasons.append("no face")
        if track.n_faces[i] > 1:
            kept = "the largest" if track.chosen[i] == 0 else "the one continuing the track"
            reasons.append(f"{track.n_faces[i]} faces (kept {kept})")
        if np.isfinite(sizes_src[i]) and sizes_src[i] < min_face_size:
            reasons.append(f"face too small ({sizes_src[i]:.0f} px < {min_face_size:.0f} px)")
        if reasons:
            flagged[i] = "; ".join(reasons)
    return flagged


@dataclass
class CropResult:
    """Second-pass result per output frame, landmarks in crop pixels."""

    face: np.ndarray  # [F, 478, 3] float32
    found_on_crop: np.ndarray  # [F] bool: detected on the crop
    from_full_frame: np.ndarray  # [F] bool: first-pass landmarks mapped into the crop
    sizes_src: np.ndarray  # [F] face size in source pixels (NaN: no face)
    pose: np.ndarray | None = None  # [F, 33, 4] float32 pose landmarks on the crop (preprocess.pose)
    pose_found: np.ndarray | None = None  # [F] bool: MediaPipe found the pose on the crop

    @property
    def present(self) -> np.ndarray:
        return self.found_on_crop | self.from_full_frame


def _same_face(face, track: FaceTrack, i: int, A: np.ndarray) -> bool:
    """Whether the face found on crop ``i`` is the one the first pass kept (or it found none)."""
    if not track.present[i]:
        return True
    expected = track.centers[i] @ A[:, :2].T + A[:, 2]
    centre = 0.5 * (face.box[:2] + face.box[2:])
    return bool(np.linalg.norm(centre - expected) < 0.5 * track.sizes[i] * A[0, 0])


def preview_image(crop: np.ndarray, mask: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
    """The crop dimmed outside the mask, with the landmarks drawn as green dots sized from the
    frame (crops under 384 pixels are enlarged first: :mod:`avatar.landmarks.draw`)."""
    scale = preview_scale(*crop.shape[:2])
    image = enlarge((crop * (0.35 + 0.65 * mask[..., None])).astype(np.uint8), scale)
    if landmarks is not None:
        draw_points(image, np.asarray(landmarks, np.float64)[:, :2] * scale, (0, 255, 0))
    return image


def write_crops(source, track: FaceTrack, boxes: np.ndarray, writer: CaptureWriter,
                cfg: PreprocessConfig, timer: Timer, preview: VideoWriter | None = None) -> CropResult:
    """Second pass: crop, re-detect the face on the crop, segment, write frame and mask
    (and a preview frame when ``preview`` is given)."""
    F = len(track.times)
    res = CropResult(np.zeros((F, N_FACE_LANDMARKS, 3), np.float32), np.zeros(F, bool),
                     np.zeros(F, bool), np.full(F, np.nan))
    if cfg.pose:
        res.pose, res.pose_found = np.zeros((F, N_POSE_LANDMARKS, 4), np.float32), np.zeros(F, bool)
    n = 0
    frames = timer.timed_frames(source.frames(cfg.max_frames, cfg.fps))
    # One face: the crop is centred on it (tracking then skips the per-frame face detector).
    with FaceMeshDetector(video=True, max_faces=1) as detector, SelfieSegmenter(cfg.mask_model) as segmenter, \
            (PoseDetector(video=True) if cfg.pose else nullcontext()) as poser:
        for i, frame in enumerate(_progress(frames, F, "preprocess: crop, mask, write", cfg.progress)):
            if i >= F or frame.index != track.indices[i]:
                raise PreprocessError(f"{source.path} decoded differently on the second pass (frame {frame.index}); "
                                      "the file may be damaged: re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")
            with timer("crop"):
                crop, A = crop_image(frame.image, boxes[i], cfg.resolution)
            with timer("detect"):
                faces = detector.detect(crop)
            if faces and _same_face(faces[0], track, i, A):
                face = faces[0]
                res.face[i], res.found_on_crop[i], res.sizes_src[i] = face.landmarks, True, face.size / A[0, 0]
            elif track.present[i]:
                res.face[i] = transform_landmarks(track.landmarks[i], A)
                res.from_full_frame[i], res.sizes_src[i] = True, track.sizes[i]
            with timer("segment"):
                mask = segmenter.segment(crop)
            if poser is not None:
                with timer("pose"):
                    pose = poser.detect(crop)
                if pose is not None and mask_support(pose.landmarks, mask) >= MIN_MASK_SUPPORT:
                    res.pose[i], res.pose_found[i] = pose.landmarks, True
            with timer("write"):
                writer.write_frame(i, crop)
                writer.write_mask(i, mask)
                if preview is not None:
                    preview.write(preview_image(crop, mask, res.face[i] if res.present[i] else None))
            n += 1
    if n != F:
        raise PreprocessError(f"{source.path}: the second pass decoded {n} frames, the first {F}; "
                              "the file may be damaged: re-encode it")
    return res


def _sideways_note(path, turn: int, scores: dict, cfg: PreprocessConfig) -> str | None:
    """The warning for frames that look turned (see :func:`upright_turn`), or None."""
    if not turn:
        return None
    return (f"{path}: the frames look sideways (the face detector scores them best turned {turn} degrees "
            f"counter-clockwise; scores by turn: {scores}) and a sideways face gets poor landmarks: if so, preprocess "
            f"again with preprocess.rotate={(cfg.rotate + turn) % 360} (and preprocess.overwrite=true into this folder)")


def _no_face_error(path, track: FaceTrack, cfg: PreprocessConfig, turn: int = 0) -> PreprocessError:
    if turn:
        return PreprocessError(f"no face found in the {len(track.times)} frames of {path} as they are, but one "
                               f"shows when they are turned {turn} degrees counter-clockwise: the video is sideways "
                               f"without rotation metadata; add preprocess.rotate={(cfg.rotate + turn) % 360}")
    if cfg.small_faces:
        size = "at least ~30 px wide (smaller faces are looked for at full resolution, tile by tile)"
    else:
        size = (f"at least ~15% of the frame (or set preprocess.small_faces=true to look for faces down to ~30 px)")
    return PreprocessError(
        f"no face found in any of the {len(track.times)} frames of {path}: the input must show a person's face, "
        f"roughly frontal, lit and {size}"
    )


def preprocess(input_path: str | os.PathLike, out: str | os.PathLike, cfg: PreprocessConfig | None = None) -> dict:
    """Turn a video or image folder into the capture folder ``out``; returns the report.

    Writes ``out/frames``, ``out/masks``, ``out/landmarks.npz``, ``out/meta.json`` (last),
    ``out/preprocess_report.json`` and, with ``cfg.preview``, ``out/preprocess_preview.mp4``. Raises :class:`~avatar.io.video_reader.VideoReadError`
    for an unreadable input and :class:`PreprocessError` when no frame shows a face; in both
    cases nothing is written.
    """
    cfg = cfg or PreprocessConfig()
    if cfg.subject != "head":
        raise ValueError(f"preprocess() makes head captures; subject={cfg.subject!r} is "
                         "avatar.preprocess_body.preprocess_body's (the app picks it)")
    timer, t_start = Timer(), time.perf_counter()
    source = open_source(input_path, image_fps=cfg.image_fps, rotate=cfg.rotate)
    if not cfg.overwrite:
        refuse_other_capture(Path(out), source.path)
    track = track_faces(source, cfg, timer)
    with timer("orientation"):
        turn, turn_scores = upright_turn(track.samples)
    if not track.present.any():
        raise _no_face_error(input_path, track, cfg, turn)
    sideways = _sideways_note(input_path, turn, turn_scores, cfg)
    if sideways:
        log.warning(sideways)
    boxes = crop_boxes(track, cfg.crop, cfg.crop_scale, cfg.crop_smoothing, cfg.crop_lift)
    info = source.info
    fps = min(cfg.fps, info.fps) if cfg.fps and info.fps else (cfg.fps or info.fps)
    writer = CaptureWriter(out, frame_format=cfg.frame_format, jpeg_quality=cfg.jpeg_quality)
    with VideoWriter(Path(out) / PREVIEW_NAME, fps=fps) if cfg.preview else nullcontext() as preview:
        crops = write_crops(source, track, boxes, writer, cfg, timer, preview)
    flagged = flag_frames(track, crops.found_on_crop, crops.sizes_src, cfg.min_face_size)
    meta = CaptureMeta(
        source=str(Path(input_path).resolve()), fps=float(fps), width=cfg.resolution, height=cfg.resolution,
        n_frames=len(track.times), rotation=info.rotation, timestamps=[round(float(t), 6) for t in track.times],
        flagged=flagged, crop_boxes=np.round(boxes, 3).tolist(), frame_format=cfg.frame_format,
        extra={
            "source_width": info.width, "source_height": info.height, "source_fps": info.fps,
            "source_indices": track.indices.tolist(), "crop_mode": cfg.crop, "crop_scale": cfg.crop_scale,
            "landmarks": "MediaPipe face mesh (refined, 478) detected on the crop; first-pass full-frame "
                         "landmarks mapped into the crop where that missed (landmarks_from_full_frame)",
            "landmarks_from_full_frame": np.flatnonzero(crops.from_full_frame).tolist(),
            "mask_model": f"mediapipe selfie segmentation ({cfg.mask_model})",
            "decode_error": source.decode_error,
        },
    )
    pose, pose_present, pose_report = pose_landmarks(crops, cfg.pose_max_gap)
    if pose is not None:
        meta.extra["pose_landmarks"] = ("MediaPipe pose (pose_landmark_full, 33 x [x, y, z, visibility]) detected on "
                                        "the crop; short gaps interpolated (pose_interpolated)")
        meta.extra["pose_interpolated"] = pose_report["interpolated_frames"]
        meta.extra["pose_missing"] = pose_report["missing_frames"]
    with timer("write"):
        writer.finish(meta, Landmarks(face=crops.face, face_present=crops.present, pose=pose, pose_present=pose_present))
    remove_stale_files(Path(out), meta.n_frames, cfg.frame_format)
    report = build_report(source, track, boxes, crops, flagged, cfg, timer, time.perf_counter() - t_start, out)
    if pose_report is not None:
        report["pose"] = pose_report
        if pose_report["missing"]:
            report["notes"].append(f"{pose_report['missing']} of {meta.n_frames} frames have no pose landmarks "
                                   f"({pose_report['missing_frames']}; pose_present is false there)")
    report["orientation"] = {"looks_upright_after_turning_deg": turn, "detector_scores_by_turn": turn_scores}
    if sideways:
        report["notes"].append(sideways)
    write_json(Path(out) / REPORT_NAME, report)
    _warn_flags(input_path, flagged, len(track.times))
    return report


def pose_landmarks(crops: CropResult, max_gap: int) -> tuple[np.ndarray | None, np.ndarray | None, dict | None]:
    """The capture's ``pose [F, 33, 4]`` and ``pose_present [F]`` from the crop detections, short
    gaps interpolated (:func:`~avatar.landmarks.pose.fill_pose_gaps`), and the report's ``pose``
    block (detected / interpolated / missing counts and frame ranges); Nones without pose."""
    if crops.pose is None:
        return None, None, None
    pose, bridged = fill_pose_gaps(crops.pose, crops.pose_found, max_gap)
    present = crops.pose_found | bridged
    F = len(present)
    return pose, present, {
        "detected": int(crops.pose_found.sum()), "interpolated": int(bridged.sum()), "missing": int(F - present.sum()),
        "interpolated_frames": frame_ranges(np.flatnonzero(bridged)),
        "missing_frames": frame_ranges(np.flatnonzero(~present)), "max_gap": max_gap,
    }


def refuse_other_capture(out: Path, source: str | os.PathLike) -> None:
    """PreprocessError when ``out`` holds a finished capture of another video (its frames and
    landmarks would be replaced under the tracking and runs made from them)."""
    import json  # noqa: PLC0415

    try:
        previous = json.loads((out / "meta.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return
    if previous is None or Path(previous) == Path(source).resolve():
        return
    tracked = " (tracked: its tracking.npz would no longer fit)" if (out / "tracking.npz").exists() else ""
    raise PreprocessError(
        f"{out} already holds a capture of another video, {previous}{tracked}: choose a new out= folder, "
        "or pass preprocess.overwrite=true to replace it"
    )


def remove_stale_files(root: Path, n_frames: int, frame_format: str) -> None:
    """Delete frames/masks a previous, longer (or other-format) run left in ``root``."""
    for folder, suffix in (("frames", f".{frame_format}"), ("masks", ".png")):
        for path in (root / folder).iterdir():
            if path.stem.isdigit() and (int(path.stem) >= n_frames or path.suffix != suffix):
                path.unlink(missing_ok=True)


def flag_notes(flagged: dict[int, str], n: int, meaning=None) -> list[str]:
    """What the flags mean for the later stages, one line per kind (the report's ``notes``).
    ``meaning``: flag kind -> what it means (None: not noted); default, a face capture's."""
    meaning = meaning or _face_flag_meaning
    notes = []
    for kind, frames in flags_by_kind(flagged).items():
        text = meaning(kind)
        if text:
            notes.append(f"{len(frames)} of {n} frames ({frame_ranges(frames)}) {text}")
    return notes


def _face_flag_meaning(kind: str) -> str | None:
    if kind.endswith(" faces"):
        return (f"show {kind}: the largest face (or the one continuing the track) was kept and the frames are "
                "flagged, so track and train skip them; film the subject alone to use them")
    if kind == "no face":
        return "show no face: track interpolates them, train skips them"
    if kind == "face too small":
        return "show a face smaller than preprocess.min_face_size: track and train skip them; film closer"
    return None


def _warn_flags(path, flagged: dict[int, str], n: int) -> None:
    for kind, frames in flags_by_kind(flagged).items():
        log.warning("%s: %d of %d frames flagged '%s': %s", path, len(frames), n, kind, frame_ranges(frames))


def build_report(source, track: FaceTrack, boxes: np.ndarray, crops: CropResult, flagged: dict[int, str],
                 cfg: PreprocessConfig, timer: Timer, total_s: float, out) -> dict:
    """The content of ``preprocess_report.json`` (see :func:`preprocess`)."""
    return capture_report(
        source, boxes, flagged, flag_notes(flagged, len(track.times)), cfg, cfg.crop_scale, timer, total_s, out,
        faces={"found": int(crops.present.sum()), "fraction": round(float(crops.present.mean()), 4),
               "detected_on_crop": int(crops.found_on_crop.sum()),
               "from_full_frame": int(crops.from_full_frame.sum()),
               "median_size_src_px": _median(crops.sizes_src)})


def capture_report(source, boxes: np.ndarray, flagged: dict[int, str], notes: list[str], cfg,
                   crop_scale: float, timer: Timer, total_s: float, out, **subject) -> dict:
    """The report fields every preprocess writes (input, frames kept and dropped, flags, crop,
    timings, config), with ``subject``'s own entries (faces found, or the person and its pose)
    after the frame counts. ``boxes``: ``[F, 4]`` crop boxes in source pixels."""
    F = len(boxes)
    sampling = source.sampling
    steps = np.linalg.norm(np.diff(0.5 * (boxes[:, :2] + boxes[:, 2:]), axis=0), axis=1) if F > 1 else np.zeros(1)
    seconds = {k: round(v, 4) for k, v in timer.seconds.items()}
    seconds["total"] = round(total_s, 4)
    return {
        "input": str(source.path), "out": str(out),
        "source": source.info.to_json(),
        "frames_in": sampling.kept + sampling.skipped, "frames_out": F,
        "dropped": {"fps_subsampling": sampling.skipped,
                    "stopped_at_max_frames": bool(cfg.max_frames is not None and sampling.full),
                    "decode_error": source.decode_error},
        **subject,
        "flagged": {str(i): r for i, r in sorted(flagged.items())},
        "flagged_by_kind": {kind: {"count": len(ix), "frames": frame_ranges(ix)}
                            for kind, ix in flags_by_kind(flagged).items()},
        "notes": notes,
        "crop": {"mode": cfg.crop, "scale": crop_scale, "smoothing_s": cfg.crop_smoothing,
                 "median_side_src_px": _median(boxes[:, 2] - boxes[:, 0]),
                 "center_step_src_px": {"median": round(float(np.median(steps)), 4),
                                        "max": round(float(np.max(steps)), 4)}},
        "seconds": seconds,
        "seconds_per_frame": {k: round(v / F, 5) for k, v in seconds.items()},
        "config": asdict(cfg),
    }


def _median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return round(float(np.median(x)), 3) if x.size else None

"""The capture folder: what ``avatar preprocess`` (or a synthetic generator) writes and every later stage reads.

Layout (DESIGN.md)::

    CAPTURE/
      frames/000000.jpg ...   RGB frames at the working resolution (square crops by default)
      masks/000000.png ...    foreground masks, 8-bit, same size
      landmarks.npz           face [F,478,3] float32 (x, y in pixels of the frame, z in the same
                              scale, MediaPipe's relative depth), face_present [F] bool,
                              optional pose [F,33,4] (x, y, z, visibility) and pose_present [F]
      meta.json               source, fps, width, height, rotation, n_frames, timestamps (s),
                              flagged frames {index: reason}, crop boxes, capture_id (a hash of
                              the frames and landmarks, which tracking.npz records), extras

``meta.json`` is written last and atomically: a folder without it is incomplete and is never
trusted. Frames and masks are written atomically one by one, so an interrupted run leaves
no truncated image either. Later stages skip flagged frames (:meth:`Capture.valid_frames`).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avatar.io.atomic import atomic_write
from avatar.io.reports import write_json

N_FACE_LANDMARKS = 478
N_POSE_LANDMARKS = 33


class CaptureError(ValueError):
    """A capture folder is missing something or holds something malformed."""


@dataclass
class CaptureMeta:
    """Contents of ``meta.json``. ``flagged`` maps frame index -> reason (e.g. "no face")."""

    source: str
    fps: float
    width: int
    height: int
    n_frames: int
    rotation: int = 0  # degrees applied to the source frames (phone metadata)
    timestamps: list[float] = field(default_factory=list)  # seconds, per frame
    flagged: dict[int, str] = field(default_factory=dict)
    crop_boxes: list[list[float]] = field(default_factory=list)  # per frame [x0, y0, x1, y1] in source pixels
    frame_format: str = "jpg"
    extra: dict = field(default_factory=dict)
    capture_id: str = ""  # sha256 of the frames and landmarks ("" in captures written before it existed)

    def to_json(self) -> dict:
        d = asdict(self)
        d["flagged"] = {str(k): v for k, v in sorted(self.flagged.items())}
        return d

    @classmethod
    def from_json(cls, d: dict, path: Path) -> "CaptureMeta":
        missing = [k for k in ("source", "fps", "width", "height", "n_frames") if k not in d]
        if missing:
            raise CaptureError(f"{path} lacks key(s) {missing}; re-run avatar preprocess for this capture")
        d = dict(d)
        d["flagged"] = {int(k): v for k, v in d.get("flagged", {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Landmarks:
    """Per-frame landmarks of a capture, in pixels of the capture's frames."""

    face: np.ndarray  # [F, 478, 3] float32
    face_present: np.ndarray  # [F] bool
    pose: np.ndarray | None = None  # [F, 33, 4] float32
    pose_present: np.ndarray | None = None  # [F] bool

    def __post_init__(self) -> None:
        F = self.face.shape[0]
        if self.face.shape[1:] != (N_FACE_LANDMARKS, 3):
            raise CaptureError(f"face landmarks must be [F, {N_FACE_LANDMARKS}, 3], got {self.face.shape}")
        if self.face_present.shape != (F,):
            raise CaptureError(f"face_present must be [{F}], got {self.face_present.shape}")
        if self.pose is not None and self.pose.shape[1:] != (N_POSE_LANDMARKS, 4):
            raise CaptureError(f"pose landmarks must be [F, {N_POSE_LANDMARKS}, 4], got {self.pose.shape}")
        if self.pose is not None and (self.pose.shape[0] != F or self.pose_present is None
                                      or self.pose_present.shape != (F,)):
            raise CaptureError(f"pose landmarks and pose_present must cover the {F} frames, got "
                               f"{self.pose.shape} and {None if self.pose_present is None else self.pose_present.shape}")


def encode_image(image: np.ndarray, ext: str, quality: int = 95) -> bytes:
    """Encode an RGB ``[H,W,3]`` or grey ``[H,W]`` uint8 image as ``ext`` (jpg or png)."""
    import cv2  # noqa: PLC0415

    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    img = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == "jpg" else []
    ok, buf = cv2.imencode(f".{ext}", img, params)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as {ext}")
    return buf.tobytes()


class CaptureWriter:
    """Writes a capture folder; :meth:`finish` writes landmarks and, last, ``meta.json``."""

    def __init__(self, root: str | os.PathLike, frame_format: str = "jpg", jpeg_quality: int = 95):
        if frame_format not in ("jpg", "png"):
            raise ValueError(f"frame_format must be 'jpg' or 'png', got {frame_format!r}")
        self.root = Path(root)
        self.frame_format = frame_format
        self.jpeg_quality = jpeg_quality
        self._digests: dict[int, bytes] = {}  # frame index -> sha256 of its encoded file
        (self.root / "frames").mkdir(parents=True, exist_ok=True)
        (self.root / "masks").mkdir(parents=True, exist_ok=True)
        # A rewrite invalidates the old capture until finish() succeeds.
        (self.root / "meta.json").unlink(missing_ok=True)

    def write_frame(self, index: int, rgb: np.ndarray) -> None:
        data = encode_image(rgb, self.frame_format, self.jpeg_quality)
        atomic_write(self.root / "frames" / f"{index:06d}.{self.frame_format}", data)
        self._digests[index] = hashlib.sha256(data).digest()

    def write_mask(self, index: int, mask: np.ndarray) -> None:
        """``mask``: ``[H, W]`` float in 0..1 or uint8."""
        if mask.dtype != np.uint8:
            mask = (np.clip(mask, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        atomic_write(self.root / "masks" / f"{index:06d}.png", encode_image(mask, "png"))

    def finish(self, meta: CaptureMeta, landmarks: Landmarks) -> Path:
        if landmarks.face.shape[0] != meta.n_frames:
            raise CaptureError(f"{landmarks.face.shape[0]} landmark frames for {meta.n_frames} frames")
        meta.frame_format = self.frame_format
        arrays = {"face": landmarks.face.astype(np.float32), "face_present": landmarks.face_present.astype(bool)}
        if landmarks.pose is not None:
            arrays["pose"] = landmarks.pose.astype(np.float32)
            arrays["pose_present"] = landmarks.pose_present.astype(bool)
        atomic_write(self.root / "landmarks.npz", lambda f: np.savez_compressed(f, **arrays))
        meta.capture_id = capture_id(self._digests, arrays)
        write_json(self.root / "meta.json", meta.to_json())
        return self.root


def capture_id(frame_digests: dict[int, bytes], arrays: dict[str, np.ndarray]) -> str:
    """A short hash of a capture's content: its frames' digests in index order and its landmark
    arrays. Two preprocess runs that write the same frames and landmarks give the same id."""
    h = hashlib.sha256()
    for index in sorted(frame_digests):
        h.update(index.to_bytes(8, "little") + frame_digests[index])
    for key in sorted(arrays):
        h.update(key.encode() + np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()[:16]


class Capture:
    """Read access to a finished capture folder (checks its completeness on open)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CaptureError(f"capture folder {self.root} does not exist; create it with avatar preprocess input=VIDEO out={self.root}")
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise CaptureError(
                f"{self.root} has no meta.json: it is not a finished capture (interrupted or not one); "
                f"run avatar preprocess input=VIDEO out={self.root}"
            )
        try:
            self.meta = CaptureMeta.from_json(json.loads(meta_path.read_text()), meta_path)
        except json.JSONDecodeError as exc:
            raise CaptureError(f"{meta_path} is not valid JSON ({exc}); re-run avatar preprocess") from exc
        self._landmarks: Landmarks | None = None

    @property
    def n_frames(self) -> int:
        return self.meta.n_frames

    def frame_path(self, index: int) -> Path:
        return self.root / "frames" / f"{index:06d}.{self.meta.frame_format}"

    def mask_path(self, index: int) -> Path:
        return self.root / "masks" / f"{index:06d}.png"

    def _read(self, path: Path, flags: int) -> np.ndarray:
        import cv2  # noqa: PLC0415

        img = cv2.imread(str(path), flags)
        if img is None:
            raise CaptureError(f"cannot read {path}: missing or corrupt; re-run avatar preprocess for {self.root}")
        return img

    def load_frame(self, index: int) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB."""
        import cv2  # noqa: PLC0415

        return cv2.cvtColor(self._read(self.frame_path(index), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def load_mask(self, index: int) -> np.ndarray:
        """``[H, W]`` float32 in 0..1."""
        import cv2  # noqa: PLC0415

        return self._read(self.mask_path(index), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0

    @property
    def landmarks(self) -> Landmarks:
        if self._landmarks is None:
            path = self.root / "landmarks.npz"
            if not path.is_file():
                raise CaptureError(f"{self.root} has no landmarks.npz; re-run avatar preprocess for this capture")
            redo = f"re-run avatar preprocess for {self.root}"
            try:
                with np.load(path, allow_pickle=False) as z:
                    if "face" not in z or "face_present" not in z:
                        raise CaptureError(f"{path} lacks 'face'/'face_present'; {redo}")
                    self._landmarks = Landmarks(
                        face=z["face"], face_present=z["face_present"],
                        pose=z["pose"] if "pose" in z else None,
                        pose_present=z["pose_present"] if "pose_present" in z else None,
                    )
            except CaptureError as exc:
                if str(path) in str(exc):
                    raise
                raise CaptureError(f"{path}: {exc}; {redo}") from exc
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise CaptureError(f"{path} cannot be read (truncated or not an .npz: "
                                   f"{' '.join(str(exc).split()) or type(exc).__name__}); {redo}") from exc
            if self._landmarks.face.shape[0] != self.n_frames:
                raise CaptureError(f"{path} has {self._landmarks.face.shape[0]} frames, meta.json says {self.n_frames}; {redo}")
        return self._landmarks

    def crop_transforms(self) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
        """How each frame was cut from the (upright) source video, or None if it was not recorded.

        Returns ``(scale [F], origin [F, 2], (source_width, source_height))`` with
        ``capture_px = (source_px - origin) * scale``. A fixed camera in the source becomes a
        camera whose intrinsics change per frame when the crop follows the face.
        """
        boxes = np.asarray(self.meta.crop_boxes, dtype=np.float64)
        extra = self.meta.extra
        if boxes.shape != (self.n_frames, 4) or "source_width" not in extra or "source_height" not in extra:
            return None
        scale = self.meta.width / (boxes[:, 2] - boxes[:, 0])
        return scale, boxes[:, :2], (int(extra["source_width"]), int(extra["source_height"]))

    def valid_frames(self) -> np.ndarray:
        """Indices of frames that are not flagged and have a face."""
        ok = self.landmarks.face_present.copy()
        for i in self.meta.flagged:
            if 0 <= i < self.n_frames:
                ok[i] = False
        return np.flatnonzero(ok)


def frame_ranges(indices) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts, run = [], []
    for i in sorted(indices):
        if run and i != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
            run = []
        run.append(i)
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
    return ", ".join(parts)


def flags_by_kind(flagged: dict[int, str]) -> dict[str, list[int]]:
    """Frames per kind of flag ("no face", "2 faces", "face too small"), details dropped."""
    by_kind: dict[str, list[int]] = {}
    for i, reason in sorted(flagged.items()):
        for part in reason.split("; "):
            by_kind.setdefault(part.split(" (")[0], []).append(i)
    return by_kind

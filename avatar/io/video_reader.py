"""Frame sources for preprocessing: a video file (PyAV / FFmpeg) or a folder of images.

Frames come out upright and streamed one by one, never the whole video in memory:

    source = open_source("clip.mov")
    for frame in source.frames(max_frames=300, fps=15):
        frame.image  # [H, W, 3] uint8 RGB, upright (rotation metadata applied)
        frame.time   # seconds since the first frame, from the frame's pts
        frame.index  # index of the frame among all decoded frames of the source

Conventions:
- ``rotation`` is the angle in degrees, counter-clockwise, by which the stored pixels are
  turned to display them upright (FFmpeg's display matrix, as ``VideoFrame.rotation``
  reads it; a legacy ``rotate`` tag, which is clockwise, is converted). It is returned in [0, 360):
  a portrait phone video stored as landscape has rotation 90 or 270. Flips in the display matrix are not
  applied (phones do not write them).
- Timestamps follow the pts, so variable-frame-rate videos keep their real timing.
  ``fps`` subsampling keeps at most one frame per ``1/fps`` seconds (the first one in
  each slot), so the output never exceeds ``fps`` on average.
- A video that ends early (truncated file, a corrupt packet) yields the frames decoded
  before the damage; ``source.decode_error`` then says where decoding stopped. A file
  that cannot be opened, holds no video stream or no decodable frame raises
  :class:`VideoReadError` naming the file.
- ``rotate`` (degrees counter-clockwise, a multiple of 90) turns the frames further, on top
  of the metadata: for a sideways video whose metadata does not say so.
- An image folder is read in name order (``.jpg``, ``.jpeg``, ``.png``); its frames are
  ``1 / image_fps`` seconds apart. All images must have the same size.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class VideoReadError(ValueError):
    """The input cannot be read as a video or an image folder."""


@dataclass
class SourceInfo:
    """What the input is. Sizes are of the upright frames (after ``rotation``)."""

    path: str
    kind: str  # "video" or "images"
    width: int
    height: int
    fps: float  # nominal frame rate (average for variable-rate videos)
    rotation: int  # degrees counter-clockwise applied to make frames upright
    n_frames: int | None  # as the container states it (None when it does not say)
    duration: float | None  # seconds, when known
    codec: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Frame:
    index: int  # index among all frames of the source (before subsampling)
    time: float  # seconds since the source's first frame
    image: np.ndarray  # [H, W, 3] uint8 RGB, upright


def open_source(path: str | os.PathLike, image_fps: float = 25.0,
                rotate: int = 0) -> "VideoSource | ImageFolderSource":
    """A video file or an image folder; raises :class:`VideoReadError` when it is neither.
    ``rotate``: degrees counter-clockwise added to the metadata's rotation (multiples of 90)."""
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"input {path} does not exist")
    if path.is_dir():
        return ImageFolderSource(path, fps=image_fps, rotate=rotate)
    return VideoSource(path, rotate=rotate)


class FrameSampling:
    """Keeps at most one frame per ``1/fps`` seconds and at most ``max_frames`` frames."""

    def __init__(self, max_frames: int | None, fps: float | None):
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or null, got {max_frames}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0 or null, got {fps}")
        self.max_frames, self.fps = max_frames, fps
        self.kept = 0
        self.skipped = 0  # frames left out by fps subsampling
        self._last_slot: int | None = None

    @property
    def full(self) -> bool:
        return self.max_frames is not None and self.kept >= self.max_frames

    def keep(self, time: float) -> bool:
        if self.fps is not None:
            slot = math.floor(time * self.fps + 1e-6)
            if self._last_slot is not None and slot <= self._last_slot:
                self.skipped += 1
                return False
            self._last_slot = slot
        self.kept += 1
        return True


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn ``image`` [H, W, C] by ``rotation`` degrees counter-clockwise (multiples of 90)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _display_rotation(degrees: float | int | None) -> int:
    """Nearest multiple of 90 in [0, 360) (phones only write multiples of 90)."""
    if degrees is None or (isinstance(degrees, float) and math.isnan(degrees)):
        return 0
    snapped = int(round(float(degrees) / 90.0)) * 90 % 360
    if abs(((float(degrees) - snapped) + 180) % 360 - 180) > 1:
        log.warning("rotation of %.1f degrees is not a multiple of 90: using %d", degrees, snapped)
    return snapped


class VideoSource:
    """A video file decoded with PyAV; see the module docstring for the conventions."""

    kind = "video"

    def __init__(self, path: Path, rotate: int = 0):
        self.path = Path(path)
        self.decode_error: str | None = None  # set when decoding stopped early
        self.sampling: FrameSampling | None = None
        if self.path.stat().st_size == 0:
            raise VideoReadError(f"{self.path} is empty (0 bytes): not a video")
        with self._open() as container:
            stream = container.streams.video[0]
            first = self._first_frame(container, stream)
            rotation = _display_rotation(first.rotation) if first.rotation else self._rotate_tag(stream)
            rotation = (rotation + rotate) % 360
            w, h = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1e6
            self.info = SourceInfo(
                path=str(self.path), kind=self.kind, width=int(w), height=int(h),
                fps=float(rate) if rate else 0.0, rotation=rotation,
                n_frames=int(stream.frames) or None, duration=duration,
                codec=stream.codec_context.name,
            )

    def _open(self):
        import av  # noqa: PLC0415

        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise VideoReadError(
                f"cannot open {self.path} as a video ({exc.__class__.__name__}: {exc}); "
                "is it a complete mp4/mov/webm/avi file? A truncated file loses its index and cannot be opened"
            ) from exc
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"{self.path} holds no video stream")
        container.streams.video[0].thread_type = "AUTO"
        return container

    def _first_frame(self, container, stream):
        import av  # noqa: PLC0415

        try:
            for frame in container.decode(stream):
                return frame
        except av.error.FFmpegError as exc:
            raise VideoReadError(
                f"cannot decode the first frame of {self.path} ({exc}): the file is damaged or truncated"
            ) from exc
        raise VideoReadError(f"{self.path} has a video stream but no decodable frame (empty or truncated)")

    @staticmethod
    def _rotate_tag(stream) -> int:
        """Legacy ``rotate`` metadata (clockwise degrees), as counter-clockwise."""
        tag = stream.metadata.get("rotate")
        try:
            return _display_rotation(-float(tag)) if tag else 0
        except ValueError:
            return 0

    def frames(self, max_frames: int | None = None, fps: float | None = None) -> Iterator[Frame]:
        """Upright frames, subsampled to at most ``fps`` and stopping after ``max_frames``.

        Afterwards ``self.sampling`` counts the frames kept and skipped by subsampling.
        """
        import av  # noqa: PLC0415

        sampler = self.sampling = FrameSampling(max_frames, fps)
        self.decode_error = None
        index, t0, prev_t = 0, None, None
        nominal = self.info.fps or 25.0
        with self._open() as container:
            stream = container.streams.video[0]
            decoded = container.decode(stream)
            while not sampler.full:
                try:
                    frame = next(decoded)
                except StopIteration:
                    if self.info.n_frames and index < self.info.n_frames:
                        self.decode_error = (f"the video ends after frame {index - 1} but its header lists "
                                             f"{self.info.n_frames} frames (truncated file?)")
                        log.warning("%s: %s", self.path, self.decode_error)
                    break
                except av.error.FFmpegError as exc:
                    self.decode_error = f"decoding stopped after frame {index - 1}: {exc}"
                    log.warning("%s: %s; keeping the %d frames before it", self.path, self.decode_error, index)
                    break
                t = frame.time
                if t is None:  # no pts: assume the nominal rate
                    t = (prev_t + 1.0 / nominal) if prev_t is not None else 0.0
                t0 = t if t0 is None else t0
                prev_t = t
                time = float(t - t0)
                if sampler.keep(time):
                    rotation = self.info.rotation
                    yield Frame(index, time, upright(frame.to_ndarray(format="rgb24"), rotation))
                index += 1


class ImageFolderSource:
    """The ``.jpg``/``.png`` images of a folder in name order (EXIF orientation applied)."""

    kind = "images"

    def __init__(self, path: Path, fps: float = 25.0, rotate: int = 0):
        self.path = Path(path)
        self.decode_error: str | None = None
        self.sampling: FrameSampling | None = None
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise VideoReadError(f"{self.path} holds no .jpg/.jpeg/.png image")
        first = self._read(self.files[0])
        self.stored_size = (first.shape[1], first.shape[0])
        rotation = rotate % 360
        w, h = self.stored_size[::-1] if rotation in (90, 270) else self.stored_size
        self.info = SourceInfo(
            path=str(self.path), kind=self.kind, width=w, height=h,
            fps=float(fps), rotation=rotation, n_frames=len(self.files), duration=len(self.files) / fps,
        )

    def _read(self, file: Path) -> np.ndarray:
        import cv2  # noqa: PLC0415

        img = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if img is None:
            raise VideoReadError(f"cannot read image {file} (corrupt or not an image)")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def frames(self, max_frames: int | None = None, fps: float | None = None) -> Iterator[Frame]:
        """The images in name order (see :meth:`VideoSource.frames`)."""
        sampler = self.sampling = FrameSampling(max_frames, fps)
        for index, file in enumerate(self.files):
            if sampler.full:
                break
            time = index / self.info.fps
            if not sampler.keep(time):
                continue
            img = self._read(file)
            if (img.shape[1], img.shape[0]) != self.stored_size:
                raise VideoReadError(
                    f"{file} is {img.shape[1]}x{img.shape[0]}, the first image of {self.path} is "
                    f"{self.stored_size[0]}x{self.stored_size[1]}: all images of a folder must have one size"
                )
            yield Frame(index, time, upright(img, self.info.rotation))

"""Video writing through PyAV (FFmpeg), with atomic output.

Frames are uint8 RGB arrays ``[H, W, 3]`` (or float tensors/arrays in 0..1). The file is
written to a temporary name beside the target and moved into place only when complete,
so an interrupted run never leaves a truncated video that a later stage would trust.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np

from avatar.io.atomic import commit, partial_path


def to_uint8_rgb(frame) -> np.ndarray:
    """``[H, W, 3]`` uint8 from a uint8 array or a float array/tensor in 0..1."""
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"a video frame must have shape [H, W, 3], got {frame.shape}")
    return frame


class VideoWriter:
    """H.264 MP4 writer (``with VideoWriter(path, fps) as w: w.write(frame)``).

    Odd sizes are padded by one pixel (H.264 with yuv420p needs even sizes).
    ``crf`` is x264's constant rate factor (lower = better, 18 is visually lossless).
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18, codec: str = "libx264"):
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.codec = codec
        self.frames = 0
        self._tmp: Path | None = None
        self._container = None
        self._stream = None

    def __enter__(self) -> "VideoWriter":
        import av  # noqa: PLC0415

        self._tmp = partial_path(self.path)
        self._container = av.open(str(self._tmp), mode="w")
        return self

    def write(self, frame) -> None:
        import av  # noqa: PLC0415

        img = to_uint8_rgb(frame)
        h, w = img.shape[:2]
        if self._stream is None:
            self._stream = self._container.add_stream(self.codec, rate=round(self.fps))
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf)}
        if (w + w % 2, h + h % 2) != (self._stream.width, self._stream.height):
            raise ValueError(f"frame {self.frames} is {w}x{h}, the video is {self._stream.width}x{self._stream.height}")
        if w % 2 or h % 2:
            img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is None and self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
        if exc_type is None and self.frames > 0:
            commit(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
            if exc_type is None:
                raise ValueError(f"no frames were written to {self.path}")


def write_video(path: str | os.PathLike, frames, fps: float, crf: int = 18) -> Path:
    """Write an iterable of frames to ``path`` (H.264 MP4); returns the path."""
    with VideoWriter(path, fps, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)

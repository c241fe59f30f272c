"""Moving an avatar's torso from a driver's pose landmarks (MediaPipe pose, pixels of the driver's
frames), relative to the driver's own reference, applied to the avatar's rest torso.

The driver's camera is not calibrated, so only what the shoulders show in the image is used,
each against its median over the clip (the driver's reference):

- roll: the angle of the line from the right shoulder to the left one in the image;
- yaw: the turn of that line out of the image plane, from MediaPipe's relative depths
  (``atan2(z_left - z_right, x_left - x_right)``, both in pixels);
- shift: the shoulders' midpoint moving in the image, in shoulder widths, turned into metres with
  the avatar's shoulder width.

Frames where the shoulders are not seen are interpolated from their neighbours (held at the ends)
and counted; a driver whose shoulders are never seen, or that has no body at all (ARKit CSV,
parameter files), leaves the avatar's torso at rest (None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tracking.shoulders import LEFT_SHOULDER, RIGHT_SHOULDER, _interpolate, _smooth, rotation_matrices, \
    shoulders_measured
from .retarget import nearest_rotation


@dataclass
class TorsoMotion:
    yaw: np.ndarray  # [F] radians, about the world's up axis, relative to the driver's reference
    roll: np.ndarray  # [F] radians, about the camera's axis
    shift: np.ndarray  # [F, 2] image-plane shift (x right, y up) in shoulder widths
    measured: np.ndarray  # [F] bool: shoulders seen (others interpolated)

    def transforms(self, rest: np.ndarray, shoulder_width: float = 0.36) -> np.ndarray:
        """``[F, 4, 4]`` the avatar's torso per frame: ``rest [4, 4]`` turned by the driver's yaw and
        roll about its own origin and moved by its shift (``shoulder_width`` metres per unit)."""
        F = self.yaw.shape[0]
        zeros = np.zeros(F)
        R = rotation_matrices(np.stack((zeros, zeros, self.roll), -1)) @ rotation_matrices(
            np.stack((zeros, self.yaw, zeros), -1))
        T = np.tile(np.asarray(rest, np.float32), (F, 1, 1))
        T[:, :3, :3] = R @ rest[:3, :3]
        T[:, :3, 3] += np.concatenate((self.shift * shoulder_width, zeros[:, None]), -1)
        return T.astype(np.float32)


def torso_motion(pose: np.ndarray, present: np.ndarray, width: int, height: int,
                 smooth_sigma: float = 2.0) -> TorsoMotion | None:
    """The driver's torso motion (module docstring) from ``pose [F, 33, 4]`` and ``present [F]``;
    None when no frame shows both shoulders."""
    measured = shoulders_measured(pose, present, width, height)
    if not measured.any():
        return None
    values = shoulder_values(pose)
    values = _smooth(_interpolate(values, measured), smooth_sigma)
    ref = np.median(values[measured], axis=0)
    return _relative(values, ref, measured)


def shoulder_values(pose: np.ndarray) -> np.ndarray:
    """``[F, 5]`` per frame: yaw, roll (radians), the shoulders' midpoint x, y and their distance
    (pixels) from pose landmarks ``[F, 33, 4]``."""
    left, right = pose[:, LEFT_SHOULDER].astype(np.float64), pose[:, RIGHT_SHOULDER].astype(np.float64)
    d = left - right
    roll = -np.arctan2(d[:, 1], d[:, 0])  # image y points down; the world's up
    yaw = np.arctan2(d[:, 2], d[:, 0])
    mid = 0.5 * (left[:, :2] + right[:, :2])
    return np.concatenate((yaw[:, None], roll[:, None], mid, np.linalg.norm(d[:, :2], axis=-1)[:, None]), -1)


def _relative(values: np.ndarray, ref: np.ndarray, measured: np.ndarray) -> TorsoMotion:
    shift = (values[:, 2:4] - ref[2:4]) / max(float(ref[4]), 1e-6) * np.array([1.0, -1.0])
    return TorsoMotion(values[:, 0] - ref[0], values[:, 1] - ref[1], shift, measured)


class OnlineTorso:
    """:func:`torso_motion` frame by frame for ``avatar live``: the reference is the median of the
    last ``window`` frames that showed both shoulders, the signal an exponential average
    (``smoothing``: weight of the previous value); a frame without shoulders holds the last torso,
    and before any, the avatar's torso is at rest (None)."""

    def __init__(self, rest: np.ndarray, shoulder_width: float, width: int, height: int, window: int = 300,
                 smoothing: float = 0.5):
        self.rest, self.shoulder_width, self.size = np.asarray(rest, np.float32), shoulder_width, (width, height)
        self.window, self.smoothing = window, smoothing
        self.history: list[np.ndarray] = []
        self.value: np.ndarray | None = None
        self.missing = 0  # frames that did not show both shoulders

    def __call__(self, landmarks: np.ndarray | None) -> np.ndarray | None:
        """``[4, 4]`` the avatar's torso for a frame's pose landmarks ``[33, 4]`` (None: no body found)."""
        seen = landmarks is not None and bool(shoulders_measured(landmarks[None], np.ones(1, bool), *self.size)[0])
        if seen:
            v = shoulder_values(landmarks[None])[0]
            self.history = (self.history + [v])[-self.window:]
            self.value = v if self.value is None else self.smoothing * self.value + (1 - self.smoothing) * v
        else:
            self.missing += 1
        if self.value is None:
            return None
        ref = np.median(np.stack(self.history), axis=0)
        return _relative(self.value[None], ref, np.ones(1, bool)).transforms(self.rest, self.shoulder_width)[0]


class TorsoGlide:
    """Live: the driver's shoulders are detected on every ``frames``-th tracked frame only and held
    between. Instead of jumping to each new detection, the shown torso moves from where it was
    to it over the next ``frames`` rendered frames (rotations blended and put back on a
    rotation, translations blended linearly): the shoulders move smoothly at the cost of at most
    ``frames`` frames of lag. ``None`` (no torso yet, or the driver's body lost) passes through."""

    def __init__(self, frames: int):
        self.frames = max(1, int(frames))
        self.start: np.ndarray | None = None
        self.goal: np.ndarray | None = None
        self.shown: np.ndarray | None = None
        self.step = 0

    def __call__(self, torso: np.ndarray | None) -> np.ndarray | None:
        """The ``[4, 4]`` torso to draw this frame, given the latest detected one."""
        if torso is None:
            self.start = self.goal = self.shown = None
            return None
        torso = np.asarray(torso, np.float32)
        if self.goal is None or not np.array_equal(torso, self.goal):  # a new detection
            self.start = torso if self.shown is None else self.shown
            self.goal, self.step = torso, 0
        self.step = min(self.step + 1, self.frames)
        a = self.step / self.frames
        if a >= 1.0:
            self.shown = self.goal
            return self.goal
        out = (1.0 - a) * self.start + a * self.goal
        out[:3, :3] = nearest_rotation(out[:3, :3].astype(np.float64)).astype(np.float32)
        out[3] = self.goal[3]
        self.shown = out
        return out

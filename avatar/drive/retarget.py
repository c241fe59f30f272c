"""Retargeting a driver's expression and head pose onto an avatar, frame by frame.

Expressions are taken relative to the driver's neutral (ICT coefficients are semantic,
ARKit-named, so they transfer coefficient by coefficient, clamped to 0..1); the head pose is
taken relative to the driver's first pose and applied on top of the avatar's reference pose.
A One Euro filter smooths the result. The same :class:`Retargeter` serves offline rendering
(:func:`retarget` over a whole sequence) and the live loop (one frame at a time).
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..landmarks.filters import OneEuroFilter
from .sources import DriveError, DriveSequence


def _matrix(axis_angle: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(axis_angle, dtype=torch.float64)).numpy()


class Retargeter:
    """``retargeter(expression [E], rotation [3], translation [3], time_s)`` -> the avatar's values.

    The first frame seen (or :meth:`set_neutral`) defines the driver's neutral expression and
    its reference head pose. ``relative=False`` passes the driver's values through (filtered).
    ``min_cutoff=None`` switches the One Euro filter off.
    """

    def __init__(self, ref_rotation: np.ndarray, ref_translation: np.ndarray, relative: bool = True,
                 min_cutoff: float | None = 1.5, beta: float = 0.5):
        self.R_ref = _matrix(ref_rotation)
        self.t_ref = np.asarray(ref_translation, np.float64)
        self.relative = relative
        self.filter = OneEuroFilter(min_cutoff, beta) if min_cutoff is not None else None
        self.neutral = self.R0 = self.t0 = None

    def set_neutral(self, expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> None:
        """Take this driver expression as neutral and this head pose as the driver's reference."""
        self.neutral = np.asarray(expression, np.float64)
        self.R0, self.t0 = _matrix(rotation), np.asarray(translation, np.float64)

    def __call__(self, expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray, time_s: float):
        if self.neutral is None:
            self.set_neutral(expression, rotation, translation)
        e, R, t = np.asarray(expression, np.float64), _matrix(rotation), np.asarray(translation, np.float64)
        if self.relative:
            e = np.clip(e - self.neutral, 0.0, 1.0)
            R = self.R_ref @ self.R0.T @ R  # the driver's motion since its reference, on the avatar's pose
            t = self.t_ref + (t - self.t0)
        if self.filter is not None:
            signal = self.filter(np.concatenate((e, R.reshape(9), t)), time_s)
            e, R, t = np.clip(signal[: len(e)], 0, 1), signal[len(e) : len(e) + 9].reshape(3, 3), signal[-3:]
            u, _, vt = np.linalg.svd(R)  # back onto a rotation after averaging
            R = u @ vt
        rotation = matrix_to_axis_angle(torch.as_tensor(R)).numpy()
        return e.astype(np.float32), rotation.astype(np.float32), t.astype(np.float32)


def retarget(drive: DriveSequence, ref_rotation: np.ndarray, ref_translation: np.ndarray, relative: bool = True,
             neutral_frame: int = 0, min_cutoff: float | None = 1.5, beta: float = 0.5):
    """``(expression [F,E], rotation [F,3], translation [F,3])`` for the avatar, for a whole sequence.

    The expression neutral is frame ``neutral_frame``; the head-pose reference is the first frame.
    """
    if not 0 <= neutral_frame < drive.n_frames:
        raise DriveError(f"neutral_frame={neutral_frame} is outside the driver's {drive.n_frames} frames")
    rt = Retargeter(ref_rotation, ref_translation, relative, min_cutoff, beta)
    rt.set_neutral(drive.expression[neutral_frame], drive.rotation[0], drive.translation[0])
    out = [rt(drive.expression[i], drive.rotation[i], drive.translation[i], i / drive.fps) for i in range(drive.n_frames)]
    return tuple(np.stack(x) for x in zip(*out))

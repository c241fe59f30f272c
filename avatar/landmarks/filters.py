"""Temporal filters for driving signals."""

from __future__ import annotations

import math

import numpy as np


class OneEuroFilter:
    """The One Euro filter (Casiez et al. 2012): a low-pass whose cut-off rises with speed.

    Slow motion is smoothed strongly (little jitter), fast motion passes with little lag.
    Works element-wise on arrays of any fixed shape. ``min_cutoff`` (Hz) sets the smoothing
    at rest, ``beta`` how fast the cut-off grows with speed, ``d_cutoff`` (Hz) the smoothing
    of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filtered value of sample ``x`` taken at time ``t`` (seconds, increasing)."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = max(t - self._t, 1e-6)
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = self._alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()

"""The driver's identity: face shape, focal length and landmark offsets from its own frames.

Driving from another person's video with the mean face puts the driver's face shape into its
expressions (a wide mouth reads as a held smile, deep-set eyes as half-closed lids). Before
tracking frame by frame, the batched fitter (:func:`.fit.fit_sequence`) runs on a sample of
the driver's frames (spread over the clip offline; the first usable seconds live) and the
per-frame fitter then solves expression and pose only, with that identity, focal length and
per-subject landmark offsets.

Usable frames: a face was found and it is turned little enough that the identity is seen
(nose tip within :attr:`IdentityConfig.max_turn` inter-ocular distances of the eyes'
midpoint, sideways); when too few are frontal, any frame with a face is used, and the
notes say so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from .fit import FitConfig, fit_sequence
from .landmark_model import LandmarkModel

NOSE_TIP = 1
EYE_CORNERS = (33, 133, 362, 263)


@dataclass
class IdentityConfig:
    """Options of :func:`estimate_identity`."""

    max_frames: int = 60  # frames fitted together (spread evenly over the usable ones)
    min_frames: int = 8  # usable frames needed before an estimate is made
    max_turn: float = 0.35  # frontal enough: nose tip within this many inter-ocular distances of the eyes' midpoint
    fit: FitConfig = field(default_factory=lambda: FitConfig(rigid_iterations=100, full_iterations=250))


@dataclass
class DriverIdentity:
    """What the per-frame fitter needs of a driver: ``shape [S]``, ``focal`` (pixels),
    ``landmark_offset [L, 3]`` or None, and how it was estimated."""

    shape: Tensor
    focal: float
    landmark_offset: Tensor | None
    frames: list[int]  # the frames it was fitted on
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"frames_used": len(self.frames), "focal_px": round(self.focal, 1),
                "shape_norm": round(float(self.shape.norm()), 3), "seconds": round(self.seconds, 2)}


def frontal(target: np.ndarray, max_turn: float) -> np.ndarray:
    """``[F]`` bool: frames whose face is turned little (see the module doc), from ``target [F, 478, 2]``."""
    t = np.asarray(target, np.float64)
    r, rr, l, ll = (t[:, i] for i in EYE_CORNERS)
    mid = (r + rr + l + ll) / 4
    iod = np.linalg.norm((r + rr) / 2 - (l + ll) / 2, axis=-1)
    turn = np.abs(t[:, NOSE_TIP, 0] - mid[:, 0]) / np.maximum(iod, 1e-6)
    return np.isfinite(turn) & (turn <= max_turn)


def pick_frames(target: np.ndarray, valid: np.ndarray, cfg: IdentityConfig) -> tuple[np.ndarray, list[str]]:
    """Indices of the frames to fit the identity on (at most ``max_frames``, spread evenly) and notes."""
    valid = np.asarray(valid, bool)
    notes = []
    usable = np.flatnonzero(valid & frontal(target, cfg.max_turn))
    if len(usable) < cfg.min_frames:
        usable = np.flatnonzero(valid)
        notes.append(f"only {int((valid & frontal(target, cfg.max_turn)).sum())} frame(s) show the face from the "
                     f"front; the driver's identity was estimated from {len(usable)} frame(s) with a face")
    if len(usable) > cfg.max_frames:
        usable = usable[np.linspace(0, len(usable) - 1, cfg.max_frames).round().astype(int)]
    return usable, notes


def estimate_identity(lm: LandmarkModel, target: np.ndarray, valid: np.ndarray, width: int, height: int,
                      cfg: IdentityConfig | None = None, focal: float | None = None) -> DriverIdentity:
    """Fit the identity to the usable frames of ``target [F, 478, 2]`` (pixels), ``valid [F]``.

    ``focal`` fixes the focal length (a known camera); else it is estimated with the shape.
    Raises ``ValueError`` when no frame has a face.
    """
    cfg = cfg or IdentityConfig()
    frames, notes = pick_frames(target, valid, cfg)
    if len(frames) == 0:
        raise ValueError("no frame with a face to estimate the driver's identity from")
    if len(frames) < cfg.min_frames:
        notes.append(f"the driver's identity rests on {len(frames)} frame(s) only (want {cfg.min_frames})")
    fit_cfg = replace(cfg.fit, focal=focal) if focal is not None else cfg.fit
    dt = lm.template.dtype  # the results come back in lm's dtype; the fit itself runs in float32 (4x faster)
    x = torch.as_tensor(np.asarray(target)[frames], dtype=torch.float32, device=lm.template.device)
    t0 = time.perf_counter()
    res = fit_sequence(lm, x, torch.ones(len(frames), dtype=torch.bool, device=x.device), width, height, fit_cfg)
    seconds = time.perf_counter() - t0
    if not math.isfinite(res.focal) or not bool(torch.isfinite(res.shape).all()):
        raise ValueError("the driver's identity fit did not converge")
    offset = None if res.landmark_offset is None else res.landmark_offset.to(dt)
    return DriverIdentity(res.shape.to(dt), res.focal, offset, frames.tolist(), seconds, notes)


class BackgroundIdentity:
    """A live driver's identity, estimated in a background thread from its first usable frames.

    Feed every frame's landmarks to :meth:`add`; once ``wait_frames`` frames with a face are in
    and at least ``cfg.min_frames`` of them are frontal (or ``give_up_frames`` frames with a
    face went by: then with what there is, and a note), the fit starts in a thread of its own
    (one torch thread, so that the live loop keeps its cores). :meth:`add` returns the
    :class:`DriverIdentity` once, on the first call after the fit finished; ``notes`` says what
    happened (waiting for a frontal face, failures).
    """

    def __init__(self, lm: LandmarkModel, width: int, height: int, cfg: IdentityConfig | None = None,
                 wait_frames: int = 30, give_up_frames: int = 150):
        self.lm, self.width, self.height = lm, width, height
        self.cfg = cfg or IdentityConfig(max_frames=30)
        self.wait_frames, self.give_up_frames = wait_frames, give_up_frames
        self.frames: list[np.ndarray] = []
        self.notes: list[str] = []
        self.result: DriverIdentity | None = None
        self.started_at: int | None = None  # frames with a face seen when the fit started
        self._thread = None
        self._delivered = False
        self._waited = False

    def add(self, landmarks: np.ndarray) -> DriverIdentity | None:
        if self.result is not None:
            if not self._delivered:
                self._delivered = True
                return self.result
            return None
        if self._thread is not None:
            return None
        self.frames.append(np.asarray(landmarks, np.float32))
        n = len(self.frames)
        if n < self.wait_frames:
            return None
        n_frontal = int(frontal(np.stack(self.frames), self.cfg.max_turn).sum())
        if n_frontal < self.cfg.min_frames and n < self.give_up_frames:
            if not self._waited:
                self._waited = True
                self.notes.append(f"the driver's identity waits for a frontal face ({n_frontal} of {n} frames so far)")
            return None
        import threading  # noqa: PLC0415

        self.started_at = n
        self._thread = threading.Thread(target=self._fit, daemon=True)
        self._thread.start()
        return None

    def _fit(self) -> None:
        torch.set_num_threads(1)
        target = np.stack(self.frames)
        try:
            result = estimate_identity(self.lm, target, np.ones(len(target), bool), self.width, self.height, self.cfg)
        except ValueError as exc:
            self.notes.append(f"the driver's identity could not be estimated ({exc}); the mean face drives on")
            return
        self.notes.extend(result.notes)
        self.result = result

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

"""The driver's identity: face shape, focal length and landmark offsets from its own frames.

Driving from another person's video with the mean face puts the driver's face shape into its
expressions (a wide mouth reads as a held smile, deep-set eyes as half-closed lids). Before
tracking frame by frame, the batched fitter (:func:`.fit.fit_sequence`) runs on a sample of
the driver's frames (spread over the clip offline; the first usable seconds live) and the
per-frame fitter then solves expression and pose only, with that identity, focal length and
per-subject landmark offsets.

Which frames: every frame with a face, spread evenly over the clip, turned ones included
(:attr:`IdentityConfig.frontal_only` false, the default): a landmark's depth, and with it the
per-subject landmark offsets, is only seen when the head turns, and on the synthetic captures
the per-frame fit's rotation came 0.3 degrees nearer the truth so (docs/experiments.md). The
identity still needs the face from the front: fewer than :attr:`IdentityConfig.min_frames`
frontal frames (nose tip within :attr:`IdentityConfig.max_turn` inter-ocular distances of the
eyes' midpoint, sideways) and the notes say so; live, the fit waits for them.
``frontal_only=True``: the frontal frames alone (the earlier choice) while there are enough.
"""

from __future__ import annotations

import math
import os
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
    frontal_only: bool = False  # fit on the frontal frames alone (else on every frame with a face, turned ones too)
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
    frontal_frames: int | None = None  # how many of ``frames`` face the camera
    refinement: int = 0  # live: 0 for the first estimate, k for the k-th refinement (:class:`BackgroundIdentity`)

    def summary(self) -> dict:
        return {"frames_used": len(self.frames), "frontal_frames": self.frontal_frames, "focal_px": round(self.focal, 1),
                "shape_norm": round(float(self.shape.norm()), 3), "seconds": round(self.seconds, 2)}


def frontal(target: np.ndarray, max_turn: float) -> np.ndarray:
    """``[F]`` bool: frames whose face is turned little (see the module doc), from ``target [F, 478, 2]``."""
    t = np.asarray(target, np.float64)
    r, rr, l, ll = (t[:, i] for i in EYE_CORNERS)
    mid = (r + rr + l + ll) / 4
    across = (l + ll) / 2 - (r + rr) / 2  # along the eye line: a face rolled in the image (a sideways
    iod = np.linalg.norm(across, axis=-1)  # phone) is as frontal as an upright one
    offset = ((t[:, NOSE_TIP] - mid) * across).sum(-1) / np.maximum(iod, 1e-6)
    turn = np.abs(offset) / np.maximum(iod, 1e-6)
    return np.isfinite(turn) & (turn <= max_turn)


def pick_frames(target: np.ndarray, valid: np.ndarray, cfg: IdentityConfig) -> tuple[np.ndarray, list[str]]:
    """Indices of the frames to fit the identity on (at most ``max_frames``, spread evenly) and notes."""
    valid = np.asarray(valid, bool)
    notes = []
    usable = np.flatnonzero(valid & frontal(target, cfg.max_turn))
    if len(usable) < cfg.min_frames:
        n_frontal = len(usable)
        usable = np.flatnonzero(valid)
        notes.append(f"only {n_frontal} frame(s) show the face from the front; the driver's identity was estimated "
                     f"from {len(usable)} frame(s) with a face")
    elif not cfg.frontal_only:
        usable = np.flatnonzero(valid)
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
    n_frontal = int(frontal(np.asarray(target)[frames], cfg.max_turn).sum())
    return DriverIdentity(res.shape.to(dt), res.focal, offset, frames.tolist(), seconds, notes, n_frontal)


# Live: the first usable frames, and fewer steps (the fit runs beside the live loop).
LIVE_IDENTITY = IdentityConfig(max_frames=30, fit=FitConfig(rigid_iterations=80, full_iterations=150))
# Live refinements: the offline estimate's frames and steps, over the frames seen so far.
REFINED_IDENTITY = IdentityConfig()
REFINE_AT = (150, 600)  # tracked frames with a face after which the live identity is estimated again (10 and 40 s at 15 FPS)


class BackgroundIdentity:
    """A live driver's identity, estimated in a background process from its first usable frames
    and refined later from more of them.

    Feed every frame's landmarks to :meth:`add`; once ``wait_frames`` frames with a face are in
    and at least ``cfg.min_frames`` of them are frontal (or ``give_up_frames`` frames with a
    face went by: then with what there is, and a note), the fit starts in a process of its own
    at a lower priority (niceness :data:`BACKGROUND_NICENESS`) with one torch thread: a thread
    would hold Python's interpreter lock through the fit's many small steps and slow the live
    loop by a fifth. That first fit is lighter than offline (:data:`LIVE_IDENTITY`): the driver
    should not wait. Once ``refine_at[k]`` frames with a face are in, the identity is estimated
    again the offline way (``refine_cfg``, :data:`REFINED_IDENTITY`: frames spread over all
    seen so far, turned ones too, more steps), which the first seconds alone do not pin down as
    well (docs/experiments.md). :meth:`add` returns each :class:`DriverIdentity` once, on the
    first call after its fit finished (``refinement`` 0 for the first, k for the k-th refinement);
    ``notes`` says what happened (waiting for a frontal face, failures). Call :meth:`close` at
    the end.
    """

    def __init__(self, lm: LandmarkModel, width: int, height: int, cfg: IdentityConfig | None = None,
                 wait_frames: int = 30, give_up_frames: int = 150, refine_at: tuple[int, ...] = REFINE_AT,
                 refine_cfg: IdentityConfig | None = None):
        self.lm, self.width, self.height = lm, width, height
        self.cfg = cfg or LIVE_IDENTITY
        self.refine_cfg = refine_cfg or REFINED_IDENTITY
        self.wait_frames, self.give_up_frames = wait_frames, give_up_frames
        self.refine_at = tuple(sorted(int(n) for n in refine_at))
        self.frames: list[np.ndarray] = []
        self.n_frontal = 0  # of the frames collected
        self.notes: list[str] = []
        self.result: DriverIdentity | None = None  # the latest estimate
        self.first: DriverIdentity | None = None  # the first estimate (what the report compares against)
        self.started_at: int | None = None  # frames with a face seen when the first fit started
        self.refined_at: list[int] = []  # the same, for each refinement started
        self._future = None
        self._pool = None
        self._jobs = 0  # fits started
        self._delivered = 0  # estimates handed over by add()
        self._waited = False

    @property
    def started(self) -> bool:
        return self._jobs > 0

    @property
    def running(self) -> bool:
        """A fit is under way in the worker process (started and not finished)."""
        future = self._future
        return future is not None and not future.done()

    @property
    def refinements(self) -> int:
        """Refined estimates that finished."""
        return 0 if self.result is None else self.result.refinement

    def add(self, landmarks: np.ndarray) -> DriverIdentity | None:
        if self._future is not None:
            self._collect()
        if self._jobs <= len(self.refine_at) and (self._jobs == 0 or len(self.frames) < self.refine_at[-1]):
            self.frames.append(np.asarray(landmarks, np.float32))  # more frames for a refinement to come
            self.n_frontal += int(frontal(self.frames[-1][None], self.cfg.max_turn)[0])
        if self.result is not None and self._delivered < self.result.refinement + 1:
            self._delivered = self.result.refinement + 1
            return self.result
        if self._future is not None:  # a fit under way
            return None
        n = len(self.frames)
        if self._jobs == 0:
            if n < self.wait_frames:
                return None
            if self.n_frontal < self.cfg.min_frames and n < self.give_up_frames:
                if not self._waited:
                    self._waited = True
                    self.notes.append(f"the driver's identity waits for a frontal face ({self.n_frontal} of {n} "
                                      "frames so far)")
                return None
            self.started_at = n
            self._submit(self.cfg, 0)
        elif self._jobs <= len(self.refine_at) and self.result is not None and n >= self.refine_at[self._jobs - 1]:
            self.refined_at.append(n)
            self._submit(self.refine_cfg, self._jobs)
        return None

    def _submit(self, cfg: IdentityConfig, refinement: int) -> None:
        if self._pool is None:
            import multiprocessing  # noqa: PLC0415
            from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

            # fork: the worker starts at once, with nothing to import (as PyTorch's data-loader
            # workers; torch resets its thread pool in a forked child); spawn where there is no fork.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method),
                                             initializer=_lower_priority)
        self._jobs += 1
        self._future = self._pool.submit(_fit_in_background, self.lm, np.stack(self.frames), self.width, self.height,
                                         cfg, refinement)

    def _collect(self) -> None:
        if self._future is None or not self._future.done():
            return
        future, self._future = self._future, None
        try:
            result = future.result()
            self.notes.extend(n for n in result.notes if n not in self.notes)
            self.result = result
            if result.refinement == 0:
                self.first = result
        except Exception as exc:  # noqa: BLE001  (a failed fit must not end the live session)
            self.notes.append(f"the driver's identity could not be estimated ({exc}); "
                              + ("the mean face drives on" if self.result is None else "the earlier estimate drives on"))
        if self._jobs > len(self.refine_at) or self.result is None:  # nothing more to fit
            self._shutdown()

    def join(self, timeout: float | None = None) -> None:
        """Wait for a started fit to finish (for tests and reports)."""
        if self._future is not None:
            from concurrent.futures import wait  # noqa: PLC0415

            wait([self._future], timeout)
            self._collect()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._shutdown()


BACKGROUND_NICENESS = int(os.environ.get("AVATAR_IDENTITY_NICENESS", "5"))


def _lower_priority() -> None:
    """Worker start-up: yield the CPU to the live loop. Not the lowest priority: with the loop
    keeping both cores busy, niceness 19 starved the fit for good."""
    try:
        os.nice(BACKGROUND_NICENESS)
    except (AttributeError, OSError):
        pass


def _fit_in_background(lm: LandmarkModel, target: np.ndarray, width: int, height: int,
                       cfg: IdentityConfig, refinement: int = 0) -> DriverIdentity:
    """:func:`estimate_identity` in a worker process, one thread."""
    torch.set_num_threads(1)
    return replace(estimate_identity(lm, target, np.ones(len(target), bool), width, height, cfg), refinement=refinement)

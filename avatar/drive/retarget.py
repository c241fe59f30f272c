"""Retargeting a driver's expression and head pose onto an avatar.

Expressions (ICT's are ARKit-named, so they transfer coefficient by coefficient)::

    avatar = avatar rest + gain * (driver - driver neutral)        clipped to 0..1

- *driver neutral*: per blendshape, where the driver's face sits at rest: the clip's 10th
  percentile offline (:class:`avatar.tracking.expression_range.ExpressionRange`), a running
  estimate live (``r`` takes the current face instead), or one frame (``neutral_frame``);
- *avatar rest*: the same percentile of the avatar's own training tracking, so a subject
  whose tracked mouth never fully closes is driven from how it looked at rest, not from
  coefficients it never showed (``rest=false``: zeros);
- *typical* (``typical``, name patterns; default the eyelids' blink, wide and squint and the
  brows): these blendshapes rest mid-range, not at their low end (eyes are open most of the
  time, blinks are short, some moments wider; brows go both up and down from where they
  usually sit), so both the driver's neutral and the avatar's rest are their clip medians:
  the driver's usual eye opening becomes the avatar's usual eye opening. From the 10th
  percentile instead, the driven avatars' eye opening sat at the 21st-39th percentile of their
  own training frames' (MediaPipe-measured; docs/experiments.md): eyes half shut;
- *gain*: ``gain`` (default: :data:`PER_FRAME_FIT_GAIN` for drivers tracked frame by frame,
  videos and webcams, whose fit follows MediaPipe's landmarks at about 0.6 of their
  amplitude; 1 for parameter files, tracked captures and ARKit CSVs), times, with
  ``range=true``, per blendshape the avatar's range over the driver's, clamped to
  ``gain_limits``: the driver's strongest smile becomes the avatar's strongest trained smile;
- *closure* (``closure``, name patterns; default the blinks): the driver's top (its 98th
  percentile) above its neutral becomes fully on for the avatar, its antagonist released, so a
  driver's full blink closes the avatar's eyes whatever they rest at (a wide-eyed avatar resting
  at ``eyeWide`` 0.3 needed 1.3 of signed travel, which the linear gain rarely gave). Never
  below the linear gain, at most ``closure_gain_max``; a driver whose top lies less than
  :data:`MIN_CLOSURE_SPAN` above its neutral is taken to move that far (a clip without blinks
  is not blown up into blinks). MediaPipe on the renders, the mean eye correlation over six
  cross-identity pairs went from 0.51 to 0.61 (docs/experiments.md);
- *antagonists* (``antagonists=true``): for the antagonist pairs of the avatar model's
  tracking profile (ICT's, :data:`RETARGET_PAIRS`: blink and wide, smile and frown, brow down
  and inner up, gaze in and out, up and down, jaw and mouth left and right) the pair is one
  signed coordinate, so a deviation below the driver's neutral moves the avatar the other way
  (a smile that falls below neutral is a frown).

Head pose: the driver's motion relative to its reference pose (offline: the clip's mean
rotation and median translation; live and ``neutral_frame``: that frame) applied on top of
the avatar's reference pose; with ``turn_margin_deg`` its yaw and pitch are held within the turns
the avatar's training frames showed plus that margin (:meth:`Retargeter.limit_turn`). A One Euro
filter smooths the result. The same
:class:`Retargeter` serves offline rendering (:func:`retarget`) and the live loop.

Smoothing: live, the One Euro filter runs forward only (it can only see the past) and so
lags; offline, a whole sequence is known, and :func:`retarget` runs the filter forward and
backward and averages the two (``two_sided``): the backward pass leads by as much as the
forward one lags. MediaPipe on the avatar's render against MediaPipe on the driver, the
one-pass filter put the avatar 1-3 frames behind the driver (docs/experiments.md).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..geometry.rotations import axis_angle_to_matrix, from_turn_angles, matrix_to_axis_angle, turn_angles
from ..landmarks.filters import OneEuroFilter
from ..models.ict import TRACKING_PROFILE as ICT_PROFILE
from ..models.profile import disjoint_pairs, name_mask
from ..tracking.expression_range import ExpressionRange
from .sources import DriveError, DriveSequence

# The per-frame fit follows MediaPipe's landmarks at 0.55-0.8 of their amplitude (eyes least;
# measured on the shared real videos), and 1.6 brought the avatars' MediaPipe-measured amplitude
# nearest the drivers' on the mean over every cross-identity pair (benchmarks/reenact.py; 1.0
# and 2.2 measured too, docs/experiments.md).
PER_FRAME_FIT_GAIN = 1.6
MIN_SPAN = 0.05  # a blendshape that moves less than this in a clip has no usable range (gain 1)
# Closure (RetargetConfig.closure): a driver whose top lies less than this above its neutral is
# taken to move this far (a clip without a blink must not blow its noise up to full blinks).
MIN_CLOSURE_SPAN = 0.25


# ICT's antagonists, one per blendshape (browDown pairs with browInnerUp; browOuterUp stays
# unpaired): the default for ARKit-named drivers and avatars.
RETARGET_PAIRS = disjoint_pairs(ICT_PROFILE.antagonists)


@dataclass
class RetargetConfig:
    """How a driver's expressions map onto the avatar (see the module doc)."""

    relative: bool = True  # false: the driver's values pass through (filtered)
    rest: bool = True  # start from the avatar's rest expression (else zeros)
    range: bool = False  # per-blendshape gain: the avatar's range over the driver's
    # One gain on every blendshape's deviation (times the range gain); None: PER_FRAME_FIT_GAIN
    # for drivers tracked frame by frame, 1 for the others.
    gain: float | None = None
    gain_limits: tuple[float, float] = (0.5, 2.0)
    antagonists: bool = True  # below-neutral deviations move the antagonist
    # Blendshapes (fnmatch patterns on the names) whose neutral and rest are the clip's median.
    typical: tuple[str, ...] = ("eyeBlink*", "eyeWide*", "eyeSquint*", "brow*")
    # One Euro filter, Hz at rest (None: off). 4 Hz for whole sequences, filtered both ways (the
    # mean correlation over the measured pairs was highest there; `avatar live` sets 1.5, one way).
    min_cutoff: float | None = 4.0
    beta: float = 0.5
    two_sided: bool = True  # whole sequences (retarget): filter forward and backward, averaged (no lag)
    # Blendshapes whose driver top (its clip's 98th percentile above its neutral) maps onto fully on
    # for the avatar, its antagonist released: a driver's full blink closes the avatar's eyes
    # whatever they rest at. The gain is never below the linear one, at most ``closure_gain_max``.
    closure: tuple[str, ...] = ("eyeBlink*",)
    closure_gain_max: float = 4.0
    # The avatar's eyeballs turned as the driver's eyes look (video drivers: the gaze read off its
    # irises, from where it usually looks; parameter files and ARKit CSVs: their gaze blendshapes,
    # from the avatar's rest), times this; 0: the eyeballs stay as trained. A model without gaze
    # blendshapes and eyeball parts never turns them. Over 6 cross-identity pairs MediaPipe's iris
    # position on the render correlates 0.43 with the driver's on the mean (0.15 with the eyes still;
    # 0.95 on the avatar whose training clip fixed one iris, driven by the driver whose eyes move most).
    eyes: float = 1.0
    # Largest turn of the avatar's eyeballs, degrees each way (yaw and pitch): beyond it the
    # eyeball's side, which the lids hid in training, would show.
    eyes_max_deg: float = 30.0
    # The up-down turn's share of ``eyes`` (MediaPipe reads an iris's height less surely than its
    # side to side: the lids cover it, and a blink moves it).
    eyes_vertical: float = 1.0
    # The head's turn (side to side and up and down, about the camera's axes, from the avatar's
    # reference pose) held near what the avatar's training frames showed: up to this many degrees
    # beyond their range, approached smoothly; None: the driver's turn as it comes. An avatar from a
    # frontal clip shows the hair, glasses and cheeks it never saw turned as torn patches and doubled
    # outlines (docs/experiments.md). Roll (a tilt in the image) is never held.
    turn_margin_deg: float | None = None


def retarget_config(cfg) -> RetargetConfig:
    """:class:`RetargetConfig` from an app config's ``relative``, ``retarget`` and ``smoothing`` keys;
    a value of the wrong kind is a :class:`DriveError` that names its key."""
    r = cfg.get("retarget") or {}

    def number(key, value):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DriveError(f"{key} must be a number, got {value!r}") from None

    limits = r.get("gain_limits", RetargetConfig.gain_limits)
    if len(limits) != 2 or not 0 < number("retarget.gain_limits", limits[0]) <= number("retarget.gain_limits", limits[1]):
        raise DriveError(f"retarget.gain_limits must be [low, high] with 0 < low <= high, got {list(limits)}")
    gain = r.get("gain")
    if gain is not None:
        gain = number("retarget.gain", gain)
        if gain <= 0:
            raise DriveError(f"retarget.gain must be above 0, got {gain}")
    eyes = number("retarget.eyes", r.get("eyes", RetargetConfig.eyes))
    if eyes < 0:
        raise DriveError(f"retarget.eyes must be 0 (eyeballs still) or more, got {eyes}")
    eyes_max = number("retarget.eyes_max_deg", r.get("eyes_max_deg", RetargetConfig.eyes_max_deg))
    if not 0 < eyes_max <= 90:
        raise DriveError(f"retarget.eyes_max_deg must be in (0, 90] degrees, got {eyes_max}")
    eyes_vertical = number("retarget.eyes_vertical", r.get("eyes_vertical", RetargetConfig.eyes_vertical))
    if eyes_vertical < 0:
        raise DriveError(f"retarget.eyes_vertical must be 0 (side to side only) or more, got {eyes_vertical}")
    margin = r.get("turn_margin_deg", RetargetConfig.turn_margin_deg)
    if margin is not None:
        margin = number("retarget.turn_margin_deg", margin)
        if margin < 0:
            raise DriveError(f"retarget.turn_margin_deg must be 0 or more degrees (null: no limit), got {margin}")
    min_cutoff = cfg.smoothing.min_cutoff
    return RetargetConfig(relative=bool(cfg.get("relative", True)), rest=bool(r.get("rest", True)),
                          range=bool(r.get("range", False)), gain=gain,
                          gain_limits=(float(limits[0]), float(limits[1])), antagonists=bool(r.get("antagonists", True)),
                          typical=tuple(str(p) for p in r.get("typical", RetargetConfig.typical)),
                          closure=tuple(str(p) for p in r.get("closure", RetargetConfig.closure)),
                          closure_gain_max=number("retarget.closure_gain_max",
                                                  r.get("closure_gain_max", RetargetConfig.closure_gain_max)),
                          min_cutoff=None if min_cutoff is None else number("smoothing.min_cutoff", min_cutoff),
                          beta=number("smoothing.beta", cfg.smoothing.beta),
                          two_sided=bool(cfg.smoothing.get("two_sided", True)), eyes=eyes,
                          eyes_max_deg=eyes_max, eyes_vertical=eyes_vertical, turn_margin_deg=margin)


def _matrix(axis_angle: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(axis_angle, dtype=torch.float64)).numpy()


def nearest_rotation(M: np.ndarray) -> np.ndarray:
    """The rotation(s) nearest ``M [..., 3, 3]`` (Frobenius): averaged or filtered matrices back onto SO(3)."""
    u, _, vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(u @ vt))
    u = u * np.stack((np.ones_like(d), np.ones_like(d), d), axis=-1)[..., None, :]
    return u @ vt


def soft_limit(x: float, low: float, high: float, margin: float) -> float:
    """``x`` unchanged within ``[low - margin / 2, high + margin / 2]``; beyond, compressed smoothly
    (tanh, slope 1 at the knee) so that it never passes ``low - margin`` or ``high + margin``."""
    knee_hi, knee_lo, soft = high + margin / 2, low - margin / 2, max(margin / 2, 1e-9)
    if x > knee_hi:
        return knee_hi + soft * math.tanh((x - knee_hi) / soft)
    if x < knee_lo:
        return knee_lo - soft * math.tanh((knee_lo - x) / soft)
    return x


def mean_rotation(rotation: np.ndarray) -> np.ndarray:
    """The chordal mean ``[3]`` (axis-angle) of rotations ``[F, 3]``."""
    return matrix_to_axis_angle(torch.as_tensor(nearest_rotation(_matrix(rotation).mean(0)))).numpy()


def pair_indices(names, antagonists=None) -> np.ndarray:
    """``[K, 2]`` column indices of the antagonist pairs that ``names`` has: ``antagonists`` (a
    tracking profile's, one antagonist per blendshape kept) or :data:`RETARGET_PAIRS`."""
    names = list(names)
    pairs = RETARGET_PAIRS if antagonists is None else disjoint_pairs(antagonists)
    return np.array([(names.index(a), names.index(b)) for a, b in pairs if a in names and b in names],
                    dtype=int).reshape(-1, 2)


def gains(avatar: ExpressionRange, driver: ExpressionRange, limits=(0.5, 2.0)) -> np.ndarray:
    """``[E]`` per-blendshape gain mapping the driver's span onto the avatar's (1 where either is flat)."""
    a, d = avatar.span, driver.span
    g = np.where((a >= MIN_SPAN) & (d >= MIN_SPAN), a / np.maximum(d, 1e-9), 1.0)
    return np.clip(g, *limits)


def closure_gains(rest: np.ndarray, partner: np.ndarray, neutral: np.ndarray, high: np.ndarray, top: float,
                  low: np.ndarray, limit: float) -> np.ndarray:
    """``[E]`` gains taking the driver's top (``high [E]``) above its ``neutral [E]`` onto ``top`` (fully
    on) from the avatar's ``rest [E]``, measured along the antagonist pair's signed coordinate
    (``partner [E]``: the antagonist's index, -1 for none); between ``low [E]`` and ``limit``."""
    other = np.where(partner >= 0, rest[np.maximum(partner, 0)], 0.0)
    span = np.maximum(high - neutral, MIN_CLOSURE_SPAN)
    return np.clip((top - (rest - other)) / span, low, np.maximum(low, limit))


def map_expressions(e: np.ndarray, neutral: np.ndarray, rest: np.ndarray, gain: np.ndarray,
                    pairs: np.ndarray | None, bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """``rest + gain * (e - neutral)`` clipped to the model's ``bounds`` (blendshapes 0..1; FLAME's
    signed components wider), with each antagonist pair ``[K, 2]`` as one signed coordinate;
    ``e [..., E]``."""
    d = e - neutral
    out = rest + gain * d
    if pairs is not None and len(pairs):
        a, b = pairs[:, 0], pairs[:, 1]
        c = d[..., a] - d[..., b]  # the pair's signed deviation from the driver's neutral
        signed = rest[a] - rest[b] + np.where(c > 0, gain[a], gain[b]) * c
        out[..., a] = np.maximum(signed, 0.0)
        out[..., b] = np.maximum(-signed, 0.0)
    return np.clip(out, *bounds)


class Retargeter:
    """``retargeter(expression [E], rotation [3], translation [3], time_s)`` -> the avatar's values.

    ``avatar_range``: the avatar's :class:`ExpressionRange` (None: rest at 0, full range).
    ``driver_range``: the driver's, known offline; None estimates it as frames arrive (the
    neutral is a running low percentile of the last ``window`` frames, refreshed every
    ``refresh`` frames) until :meth:`set_neutral` fixes it. The head-pose reference is the
    first frame seen unless given. ``per_frame_fit``: the driver is tracked frame by frame
    (the default gain is then :data:`PER_FRAME_FIT_GAIN`). ``antagonists``: the avatar model's
    antagonist pairs (``model.tracking_profile.antagonists``; None: :data:`RETARGET_PAIRS`).
    ``bounds``: the range of its expression coefficients (``tracking_profile.expression_bounds``).
    """

    def __init__(self, ref_rotation: np.ndarray, ref_translation: np.ndarray, names, cfg: RetargetConfig | None = None,
                 avatar_range: ExpressionRange | None = None, driver_range: ExpressionRange | None = None,
                 window: int = 900, refresh: int = 10, per_frame_fit: bool = True, antagonists=None,
                 bounds: tuple[float, float] = (0.0, 1.0), turn_range: np.ndarray | None = None):
        self.cfg = cfg = cfg or RetargetConfig()
        # [2, 2] radians, the avatar's trained yaw and pitch (geometry.rotations.training_turn_range); None: no limit
        self.turn_range = None if turn_range is None or cfg.turn_margin_deg is None else np.asarray(turn_range, np.float64)
        self.base_gain = cfg.gain if cfg.gain is not None else (PER_FRAME_FIT_GAIN if per_frame_fit else 1.0)
        E = len(names)
        self.R_ref = _matrix(ref_rotation)
        self.t_ref = np.asarray(ref_translation, np.float64)
        self.avatar = avatar_range if avatar_range is not None else ExpressionRange.neutral(E)
        self.typical = typical_mask(names, cfg.typical)
        self.rest = self.avatar.level(self.typical) if cfg.rest else np.zeros(E)
        self.pairs = pair_indices(names, antagonists) if cfg.antagonists else None
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.closure = typical_mask(names, cfg.closure)
        self.partner = np.full(E, -1)
        if self.pairs is not None:
            self.partner[self.pairs[:, 0]], self.partner[self.pairs[:, 1]] = self.pairs[:, 1], self.pairs[:, 0]
        self.filter = OneEuroFilter(cfg.min_cutoff, cfg.beta) if cfg.min_cutoff is not None else None
        self.R0 = self.t0 = None
        self.driver = driver_range
        self.fixed = driver_range is not None
        self.history: deque = deque(maxlen=window)
        self.refresh = refresh
        self._update_gain()

    def _update_gain(self) -> None:
        E = len(self.rest)
        if self.driver is None:
            self.neutral, self.gain = None, np.full(E, self.base_gain)
            return
        self.neutral = self.driver.level(self.typical)
        self.gain = self.base_gain * (gains(self.avatar, self.driver, self.cfg.gain_limits) if self.cfg.range else np.ones(E))
        if self.closure.any():
            top = closure_gains(self.rest, self.partner, self.neutral, self.driver.high, self.bounds[1], self.gain,
                                self.cfg.closure_gain_max)
            self.gain = np.where(self.closure, top, self.gain)

    def set_pose_reference(self, rotation: np.ndarray, translation: np.ndarray) -> None:
        self.R0, self.t0 = _matrix(rotation), np.asarray(translation, np.float64)
        # The driver's head moves in its camera's frame; a camera held sideways (the reference
        # head rolled in the image against the avatar's) would turn those moves with it: turn
        # them back by the roll between the two references, about the camera's axis.
        M = self.R_ref @ self.R0.T
        self.turn = _matrix(np.array([0.0, 0.0, math.atan2(M[1, 0] - M[0, 1], M[0, 0] + M[1, 1])]))

    def set_neutral(self, expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> None:
        """Take this driver face as neutral (and its head pose as the reference) from now on."""
        e = np.asarray(expression, np.float64)
        span = self.driver.high - self.driver.rest if self.driver is not None else np.ones_like(e)
        self.driver = ExpressionRange(e, e + span, 1, median=e)
        self.fixed = True
        self._update_gain()
        self.set_pose_reference(rotation, translation)

    def shift_reference(self, shift: np.ndarray) -> None:
        """The driver's head is measured ``shift [3]`` (metres) from where it was measured so far
        (a refined identity): move the head-pose reference with it, so the avatar stays put."""
        if self.t0 is not None:
            self.t0 = self.t0 + np.asarray(shift, np.float64)

    def restart_statistics(self) -> None:
        """A new driver identity: its depths and expressions read differently from here on. The
        next frame becomes the head-pose reference, and the running driver statistics start over
        (a neutral set by hand stays)."""
        self.R0 = self.t0 = None
        if not self.fixed:
            self.history.clear()
            self.driver = None
            self._update_gain()

    def _observe(self, e: np.ndarray) -> None:
        """Running driver statistics (live): refreshed every ``refresh`` frames."""
        self.history.append(e)
        n = len(self.history)
        if self.driver is None or n % self.refresh == 0:
            self.driver = ExpressionRange.from_sequence(np.stack(self.history))
            self._update_gain()

    def __call__(self, expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray, time_s: float):
        e, R, t = np.asarray(expression, np.float64), _matrix(rotation), np.asarray(translation, np.float64)
        if self.R0 is None:
            self.set_pose_reference(rotation, translation)
        if not self.fixed:
            self._observe(e)
        if self.cfg.relative:
            e = map_expressions(e, self.neutral, self.rest, self.gain, self.pairs, self.bounds)
            R = self.R_ref @ self.R0.T @ R  # the driver's motion since its reference, on the avatar's pose
            t = self.t_ref + self.turn @ (t - self.t0)
        if self.turn_range is not None:
            R = self.limit_turn(R)
        if self.filter is not None:
            signal = self.filter(np.concatenate((e, R.reshape(9), t)), time_s)
            e, R, t = np.clip(signal[: len(e)], *self.bounds), signal[len(e) : len(e) + 9].reshape(3, 3), signal[-3:]
            R = nearest_rotation(R)  # back onto a rotation after averaging
        rotation = matrix_to_axis_angle(torch.as_tensor(R)).numpy()
        return e.astype(np.float32), rotation.astype(np.float32), t.astype(np.float32)

    def limit_turn(self, R: np.ndarray) -> np.ndarray:
        """``R [3, 3]`` with its yaw and pitch from the avatar's reference held within the trained
        range plus :attr:`RetargetConfig.turn_margin_deg` (:func:`soft_limit`); roll unchanged."""
        yaw, pitch, roll = turn_angles(R, self.R_ref)
        margin = math.radians(self.cfg.turn_margin_deg)
        (y0, y1), (p0, p1) = self.turn_range
        held = (soft_limit(yaw, y0, y1, margin), soft_limit(pitch, p0, p1, margin), roll)
        if held[0] == yaw and held[1] == pitch:
            return R
        return from_turn_angles(np.array(held), self.R_ref)


def scaled_gaze(offset: np.ndarray, cfg: RetargetConfig) -> np.ndarray:
    """``offset [..., 2]`` (yaw, pitch radians from the neutral gaze) times ``cfg.eyes``, the pitch
    also times ``cfg.eyes_vertical``."""
    return cfg.eyes * np.asarray(offset, np.float64) * np.array([1.0, cfg.eyes_vertical])


def both_eyes(turn: np.ndarray, cfg: RetargetConfig) -> np.ndarray:
    """``turn [..., 2]`` within ``cfg.eyes_max_deg`` each way, for both eyeballs: ``[..., 2, 2]`` float32."""
    limit = math.radians(cfg.eyes_max_deg)
    clipped = np.clip(turn, -limit, limit)[..., None, :]
    return np.repeat(clipped, 2, axis=-2).astype(np.float32)


class LiveGaze:
    """Live eyeball turns (``avatar live``): :func:`driver_gaze` one frame at a time. The neutral
    gaze is the median of the last ``window`` frames' readings (where the driver usually looks:
    the screen), or the one :meth:`set_neutral` fixed; the filter runs forward only."""

    def __init__(self, cfg: RetargetConfig, window: int = 150):
        self.cfg = cfg
        self.history: deque = deque(maxlen=window)
        self.fixed: np.ndarray | None = None
        self.last: np.ndarray | None = None  # the last turn, held while no gaze is read (a blink)
        self.filter = OneEuroFilter(cfg.min_cutoff, cfg.beta) if cfg.min_cutoff is not None else None

    def set_neutral(self, gaze: np.ndarray | None) -> None:
        """This reading (``[2, 2]``) is where the driver looks straight (the live ``r`` key)."""
        if gaze is not None:
            self.fixed = np.asarray(gaze, np.float64).mean(axis=0)

    def restart(self) -> None:
        """A new driver identity: its readings start over (a neutral set by hand stays)."""
        self.history.clear()

    def __call__(self, gaze: np.ndarray | None, time_s: float) -> np.ndarray | None:
        """``[2, 2]`` float32 turns for this frame's reading ``gaze [2, 2]`` (None: none read, e.g.
        shut lids: the last turn is held)."""
        if not self.cfg.eyes:
            return None
        if gaze is None:
            return self.last
        g = np.asarray(gaze, np.float64).mean(axis=0)
        self.history.append(g)
        neutral = self.fixed if self.fixed is not None else np.median(np.stack(self.history), axis=0)
        turn = scaled_gaze(g - neutral, self.cfg)
        if self.filter is not None:
            turn = self.filter(turn, time_s)
        self.last = both_eyes(turn, self.cfg)
        return self.last


def typical_mask(names, patterns) -> np.ndarray:
    """``[E]`` bool: the blendshapes whose name matches one of ``patterns`` (fnmatch)."""
    return np.array(name_mask(names, patterns), bool)


def driver_range(drive: DriveSequence, neutral_frame: int | None = None) -> ExpressionRange:
    """The driver's expression statistics over its frames with a face; ``neutral_frame`` fixes the rest there."""
    rng = ExpressionRange.from_sequence(drive.expression, drive.valid)
    if neutral_frame is not None:
        rest = drive.expression[neutral_frame].astype(np.float64)
        rng = ExpressionRange(rest, rest + rng.span, rng.frames, rng.at_rest, median=rest)
    return rng


def retarget(drive: DriveSequence, ref_rotation: np.ndarray, ref_translation: np.ndarray, names=None,
             cfg: RetargetConfig | None = None, avatar_range: ExpressionRange | None = None,
             neutral_frame: int | None = None, driver: ExpressionRange | None = None, antagonists=None,
             bounds: tuple[float, float] = (0.0, 1.0), turn_range: np.ndarray | None = None):
    """``(expression [F,E], rotation [F,3], translation [F,3])`` for the avatar, for a whole sequence.

    The driver's neutral is its robust per-blendshape estimate (or frame ``neutral_frame``); its
    head-pose reference is its mean pose over the frames with a face (or that frame).
    ``driver``: :func:`driver_range` of ``drive`` when the caller has it already.
    ``antagonists``: the avatar model's pairs (its tracking profile's; None: :data:`RETARGET_PAIRS`);
    ``bounds``: the range of its expression coefficients; ``turn_range``: the avatar's trained yaw and
    pitch (:func:`avatar.geometry.rotations.training_turn_range`; held with :attr:`RetargetConfig.turn_margin_deg`).
    """
    if neutral_frame is not None and not 0 <= neutral_frame < drive.n_frames:
        raise DriveError(f"neutral_frame={neutral_frame} is outside the driver's {drive.n_frames} frames")
    names = names if names is not None else [str(i) for i in range(drive.expression.shape[1])]
    if driver is None:
        driver = driver_range(drive, neutral_frame)
    cfg = cfg or RetargetConfig()
    two_sided = cfg.two_sided and cfg.min_cutoff is not None
    rt = Retargeter(ref_rotation, ref_translation, names, replace(cfg, min_cutoff=None) if two_sided else cfg,
                    avatar_range, driver, per_frame_fit=bool(drive.info.get("per_frame_fit")),
                    antagonists=antagonists, bounds=bounds, turn_range=turn_range)
    if neutral_frame is not None:
        rt.set_pose_reference(drive.rotation[neutral_frame], drive.translation[neutral_frame])
    else:
        ok = drive.valid if drive.valid is not None and drive.valid.any() else np.ones(drive.n_frames, bool)
        rt.set_pose_reference(mean_rotation(drive.rotation[ok]), np.median(drive.translation[ok], axis=0))
    out = [rt(drive.expression[i], drive.rotation[i], drive.translation[i], i / drive.fps) for i in range(drive.n_frames)]
    expression, rotation, translation = (np.stack(x) for x in zip(*out))
    if two_sided:
        expression, rotation, translation = smooth_sequence(expression, rotation, translation, drive.fps, cfg, bounds)
    return expression, rotation, translation


def driver_gaze(drive: DriveSequence, cfg: RetargetConfig | None = None, neutral_frame: int | None = None
                ) -> np.ndarray | None:
    """``[F, 2, 2]`` float32 eyeball turns for the avatar, per frame and eye (right, left), (yaw,
    pitch) radians, from the gaze read off the driver's irises (``drive.gaze``): the two eyes'
    mean for both (they look at one point; one eye's reading alone is noisier), relative to the
    driver's neutral gaze (its median over the frames with a face, or frame ``neutral_frame``),
    times ``cfg.eyes``, smoothed as the expressions are. None when ``cfg.eyes`` is 0 or the
    driver has no gaze reading."""
    cfg = cfg or RetargetConfig()
    if not cfg.eyes or drive.gaze is None:
        return None
    g = np.asarray(drive.gaze, np.float64).mean(axis=1)  # [F, 2] conjugate (yaw, pitch)
    ok = drive.valid if drive.valid is not None and drive.valid.any() else np.ones(len(g), bool)
    neutral = g[neutral_frame] if neutral_frame is not None else np.median(g[ok], axis=0)
    turn = scaled_gaze(g - neutral, cfg)
    if cfg.min_cutoff is not None and cfg.two_sided:
        turn = two_sided_one_euro(turn, drive.fps, cfg.min_cutoff, cfg.beta)
    elif cfg.min_cutoff is not None:
        f = OneEuroFilter(cfg.min_cutoff, cfg.beta)
        turn = np.stack([f(x, i / drive.fps) for i, x in enumerate(turn)])
    return both_eyes(turn, cfg)


def two_sided_one_euro(signal: np.ndarray, fps: float, min_cutoff: float, beta: float) -> np.ndarray:
    """``[F, D]`` the One Euro filter run over ``signal [F, D]`` forward and backward (frames at
    ``fps``), the two averaged: smoothing without the one-pass filter's lag."""
    signal = np.asarray(signal, np.float64)
    if not len(signal):
        return signal.copy()
    times = np.arange(len(signal)) / float(fps)
    forward, backward = OneEuroFilter(min_cutoff, beta), OneEuroFilter(min_cutoff, beta)
    ahead = np.stack([forward(x, t) for x, t in zip(signal, times)])
    behind = np.stack([backward(x, t) for x, t in zip(signal[::-1], times)])[::-1]
    return 0.5 * (ahead + behind)


def smooth_sequence(expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray, fps: float,
                    cfg: RetargetConfig, bounds: tuple[float, float] = (0.0, 1.0)):
    """A whole retargeted sequence (``[F, E]``, ``[F, 3]`` axis-angle, ``[F, 3]``) smoothed by
    :func:`two_sided_one_euro` (rotations as matrices, projected back onto rotations)."""
    F, E = expression.shape
    R = _matrix(rotation).reshape(F, 9)
    signal = two_sided_one_euro(np.concatenate((expression, R, translation), axis=1), fps, cfg.min_cutoff, cfg.beta)
    rotation = matrix_to_axis_angle(torch.as_tensor(nearest_rotation(signal[:, E : E + 9].reshape(F, 3, 3)))).numpy()
    return (np.clip(signal[:, :E], *bounds).astype(np.float32), rotation.astype(np.float32),
            signal[:, E + 9 :].astype(np.float32))

"""How a subject's expression coefficients move over a clip: rest and range per blendshape.

Retargeting maps a driver's expressions onto an avatar through these statistics: the
driver's *neutral* (where each blendshape sits when the face is at rest) and the avatar's
*rest* (how the trained subject looked at rest: a face whose tracked ``mouthPress`` never
drops below 0.2 is rendered best with it there), and both subjects' *ranges* (how far each
blendshape goes above its rest in the clip).

Rest is a low percentile per blendshape, not the first frame and not zero: a clip whose
first frame already smiles, or a subject whose mouth never fully closes, still gets the
level the face returns to. The range is a high percentile minus the rest. Blendshapes whose
rest is mid-range rather than at the low end (the eyelids: open most of the time, blinks are
short, some frames wider) use the *typical* level, the median (``median``). How sure the rest
estimate is: ``at_rest``, the share of frames that sit near it, averaged over the blendshapes
(talking clips measure about 0.5; a clip with extreme expressions throughout, less), and
the rest levels themselves (:meth:`ExpressionRange.high_rest`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REST_PERCENTILE = 10.0  # per blendshape: the level the face returns to at rest
HIGH_PERCENTILE = 98.0  # per blendshape: the top of its range (robust to a few spikes)
NEAR_REST = 0.1  # a blendshape is "at rest" in a frame when it sits no further than this above its rest


@dataclass
class ExpressionRange:
    """Per-blendshape ``rest [E]`` and ``high [E]`` (coefficients, 0..1) and
    the number of frames they were estimated from."""

    rest: np.ndarray
    high: np.ndarray
    frames: int
    at_rest: float = 1.0  # share of frames within NEAR_REST of the rest, mean over the blendshapes
    median: np.ndarray | None = None  # [E] the typical level (None: not known, e.g. older files)

    @classmethod
    def from_sequence(cls, expression: np.ndarray, valid: np.ndarray | None = None) -> "ExpressionRange":
        """Statistics of ``expression [F, E]`` over the frames marked ``valid [F]`` (default all)."""
        e = np.asarray(expression, np.float64)
        if e.ndim != 2:
            raise ValueError(f"expression must be [F, E], got shape {list(e.shape)}")
        if valid is not None:
            e = e[np.asarray(valid, bool)]
        if len(e) == 0:
            raise ValueError("no valid frame to estimate the expression range from")
        rest = np.percentile(e, REST_PERCENTILE, axis=0)
        at_rest = float(np.mean(e - rest <= NEAR_REST))
        return cls(rest, np.percentile(e, HIGH_PERCENTILE, axis=0), len(e), at_rest, np.median(e, axis=0))

    @classmethod
    def neutral(cls, n_expressions: int) -> "ExpressionRange":
        """All blendshapes at rest at 0 with a full range (no statistics known)."""
        return cls(np.zeros(n_expressions), np.ones(n_expressions), 0, 1.0, np.zeros(n_expressions))

    def high_rest(self, names, level: float = 0.3) -> dict[str, float]:
        """``{name: rest}`` of the blendshapes that rest above ``level`` (held through the clip)."""
        return {n: round(float(r), 2) for n, r in zip(names, self.rest) if r > level}

    def level(self, typical: np.ndarray | None = None) -> np.ndarray:
        """``[E]`` the rest, with the blendshapes marked in ``typical [E] bool`` at their median."""
        if typical is None or self.median is None or not np.any(typical):
            return self.rest
        return np.where(typical, self.median, self.rest)

    @property
    def span(self) -> np.ndarray:
        """``[E]`` how far each blendshape goes above its rest."""
        return np.maximum(self.high - self.rest, 0.0)

    def state(self) -> dict:
        """Plain arrays for ``avatar.pt`` (``torch.load(weights_only=True)`` reads them back)."""
        import torch  # noqa: PLC0415

        return {"rest": torch.as_tensor(self.rest, dtype=torch.float32),
                "high": torch.as_tensor(self.high, dtype=torch.float32),
                "frames": int(self.frames), "at_rest": float(self.at_rest),
                **({"median": torch.as_tensor(self.median, dtype=torch.float32)} if self.median is not None else {})}

    @classmethod
    def from_state(cls, state: dict) -> "ExpressionRange":
        arr = lambda k: np.asarray(state[k], np.float64)  # noqa: E731
        return cls(arr("rest"), arr("high"), int(state["frames"]), float(state.get("at_rest", 1.0)),
                   arr("median") if "median" in state else None)

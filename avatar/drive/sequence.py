"""What every driving source becomes: a :class:`DriveSequence` (per-frame expression and head
pose in the avatar model's terms), and the error a source that cannot drive raises."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DriveError(ValueError):
    """A driving source is missing, malformed or does not fit the avatar."""


@dataclass
class DriveSequence:
    expression: np.ndarray  # [F, E] in the avatar model's expression order, 0..1
    rotation: np.ndarray  # [F, 3] head rotation, axis-angle (model world)
    translation: np.ndarray  # [F, 3] head translation, metres (model world)
    fps: float
    source: str
    valid: np.ndarray | None = None  # [F] frames where the driver's face was found
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # how the driver was tracked (identity, re-initialisations)
    # The driver's body (videos driving an avatar with a torso): MediaPipe pose landmarks per frame.
    pose: np.ndarray | None = None  # [F, 33, 4] pixels of the driver's frames (x, y, z, visibility)
    pose_present: np.ndarray | None = None  # [F] bool
    frame_size: tuple[int, int] | None = None  # (width, height) of the driver's frames
    # Where the driver's eyes look, read from its irises (video drivers of a model with eyeballs):
    # [F, 2, 2] per eye (right, left) the eyeball's (yaw, pitch), radians, in the head's frame.
    gaze: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return self.expression.shape[0]

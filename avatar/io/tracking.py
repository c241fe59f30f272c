"""Tracked sequences: ``tracking.npz`` beside a capture.

Contents (numpy arrays, lengths in metres, angles in radians)::

    model             str    parametric model name ("ict")
    shape             [S]    identity coefficients
    expression        [F, E] expression coefficients (0..1 for ICT; FLAME's are signed)
    expression_names  [E]    str
    rotation          [F, 3] head rotation, axis-angle about the model origin (model world;
                             skinned models such as FLAME: about their root joint)
    translation       [F, 3] head translation (model world), as the model's forward takes it
    K                 [3, 3] camera intrinsics, pixels, or [F, 3, 3] one per frame (a capture
                             whose crop follows the head: one source camera seen through moving crops)
    viewmat           [4, 4] world-to-camera (OpenCV): the tracking camera, diag(1, -1, -1, 1)
    width, height     int    image size, pixels
    valid             [F]    bool: frame had landmarks (others are interpolated)
    capture_id        str    the capture's ``meta.json`` capture_id it was tracked from
                             (optional: absent in older files)
    shoulders         [F, 2, 3] optional (captures with pose landmarks): the subject's left and
                             right shoulder, model world (avatar.tracking.shoulders)
    torso_rotation    [F, 3] optional: the torso's frame (x right-to-left shoulder, y up), axis-angle
    neck              [F, 3] optional: between the shoulders' midpoint and the head's origin
    torso_measured    [F]    optional bool: shoulders seen in the frame (others interpolated)

Posed vertices of frame i: ``model(shape, expression[i], rotation[i], translation[i])``,
seen by the camera ``(viewmat, K)``. Written atomically.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write

TRACKING_FILE = "tracking.npz"


class TrackingError(ValueError):
    """A tracking file is missing, malformed or belongs to another model."""


@dataclass
class TrackedSequence:
    model: str
    shape: np.ndarray
    expression: np.ndarray
    expression_names: tuple[str, ...]
    rotation: np.ndarray
    translation: np.ndarray
    K: np.ndarray
    viewmat: np.ndarray
    width: int
    height: int
    valid: np.ndarray
    capture_id: str = ""  # the capture it was tracked from (meta.json's capture_id); "" unknown
    # The upper body (avatar.tracking.shoulders), when the capture had pose landmarks; else None.
    shoulders: np.ndarray | None = None  # [F, 2, 3]
    torso_rotation: np.ndarray | None = None  # [F, 3]
    neck: np.ndarray | None = None  # [F, 3]
    torso_measured: np.ndarray | None = None  # [F] bool

    def __post_init__(self) -> None:
        F, E = self.expression.shape
        body = {"shoulders": (F, 2, 3), "torso_rotation": (F, 3), "neck": (F, 3), "torso_measured": (F,)}
        given = [k for k in body if getattr(self, k) is not None]
        if given and len(given) != len(body):
            raise TrackingError(f"tracking has {given} of the shoulder state but not {sorted(set(body) - set(given))}")
        for name in given:
            if tuple(getattr(self, name).shape) != body[name]:
                raise TrackingError(f"tracking '{name}' must be {list(body[name])}, got {list(getattr(self, name).shape)}")
        if tuple(self.K.shape) not in ((3, 3), (F, 3, 3)):
            raise TrackingError(f"tracking 'K' must be [3, 3] or [{F}, 3, 3], got {list(self.K.shape)}")
        for name, arr, shape in (("rotation", self.rotation, (F, 3)), ("translation", self.translation, (F, 3)),
                                 ("viewmat", self.viewmat, (4, 4)), ("valid", self.valid, (F,))):
            if tuple(arr.shape) != shape:
                raise TrackingError(f"tracking '{name}' must be {list(shape)}, got {list(arr.shape)}")
        if len(self.expression_names) != E:
            raise TrackingError(f"{len(self.expression_names)} expression names for {E} expression coefficients")

    @property
    def n_frames(self) -> int:
        return self.expression.shape[0]

    @property
    def has_torso(self) -> bool:
        return self.shoulders is not None

    def intrinsics(self, index: int | np.ndarray | None = None) -> np.ndarray:
        """``K`` of frame ``index`` ([3, 3]), of several frames ([n, 3, 3]) or of all ([F, 3, 3])."""
        K = self.K if self.K.ndim == 3 else np.broadcast_to(self.K, (self.n_frames, 3, 3))
        return K if index is None else K[index]

    def save(self, path: str | os.PathLike) -> Path:
        arrays = dict(
            model=np.array(self.model), shape=self.shape.astype(np.float32),
            expression=self.expression.astype(np.float32), expression_names=np.array(self.expression_names),
            rotation=self.rotation.astype(np.float32), translation=self.translation.astype(np.float32),
            K=self.K.astype(np.float32), viewmat=self.viewmat.astype(np.float32),
            width=np.array(self.width), height=np.array(self.height), valid=self.valid.astype(bool),
        )
        if self.capture_id:
            arrays["capture_id"] = np.array(self.capture_id)
        if self.shoulders is not None:
            arrays.update(shoulders=self.shoulders.astype(np.float32), torso_rotation=self.torso_rotation.astype(np.float32),
                          neck=self.neck.astype(np.float32), torso_measured=self.torso_measured.astype(bool))
        return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_tracking(path: str | os.PathLike, model: str | None = None, capture_id: str | None = None) -> TrackedSequence:
    """Read ``tracking.npz`` (a file, or a capture folder holding one).

    ``model``: the model name the caller is configured with; a different tracked model is
    an error (re-track, or configure the model that was tracked). ``capture_id``: the id of
    the capture the caller pairs it with (``meta.json``); a file tracked from another capture
    (other frames or landmarks, e.g. preprocessed again since) is an error. Files or captures
    without an id are not checked.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRACKING_FILE
    if not path.is_file():
        raise TrackingError(f"{path} does not exist; run `avatar track capture={path.parent}` first")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise TrackingError(f"{path} cannot be read (truncated or not an .npz); re-run avatar track") from exc
    with z:
        missing = [k for k in ("model", "shape", "expression", "expression_names", "rotation", "translation",
                               "K", "viewmat", "width", "height", "valid") if k not in z]
        if missing:
            raise TrackingError(f"{path} lacks {missing}; re-run avatar track")
        seq = TrackedSequence(
            model=str(z["model"]), shape=z["shape"], expression=z["expression"],
            expression_names=tuple(str(n) for n in z["expression_names"]), rotation=z["rotation"],
            translation=z["translation"], K=z["K"], viewmat=z["viewmat"], width=int(z["width"]),
            height=int(z["height"]), valid=z["valid"], capture_id=str(z["capture_id"]) if "capture_id" in z else "",
            **{k: z[k] for k in ("shoulders", "torso_rotation", "neck", "torso_measured") if k in z},
        )
    if model is not None and seq.model != model:
        raise TrackingError(
            f"capture tracked with {seq.model}, config says {model}: set model={seq.model} "
            f"or re-run `avatar track capture={path.parent} model={model}`"
        )
    if capture_id and seq.capture_id and seq.capture_id != capture_id:
        raise TrackingError(
            f"{path} was tracked from other frames than those in {path.parent} now (preprocessed again since?): "
            f"re-run `avatar track capture={path.parent}`"
        )
    return seq

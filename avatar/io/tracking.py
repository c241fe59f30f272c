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

Bodies (``kind = "body"``, a :class:`BodyTrackedSequence`; body models of
:mod:`avatar.models.body`: "anny", "smpl", "smplx") keep the camera keys above (``K``,
``viewmat``, ``width``, ``height``, ``valid``, ``capture_id``) and replace the head's::

    kind              str       "body" (absent in head files)
    model             str       body model name ("anny")
    shape             [S]       shape parameters: Anny's phenotype in [0, 1], SMPL's betas
    shape_names       [S]       str
    pose              [F, J, 3] joint rotations, axis-angle (radians), each relative to its parent
                                in the rest pose's axes (avatar.geometry.skeleton); joint 0 (the
                                root) is usually zero, the global motion being ``rotation``
    joint_names       [J]       str, the model's joints in its order
    rotation          [F, 3]    global rotation, axis-angle about the root joint's rest position
    translation       [F, 3]    metres, added after the rotation
    focal_fitted      bool      whether K's focal length was fitted (optional, default False)
    landmark_error_px [F]       mean reprojection error of the pose landmarks, pixels (optional)
    mask_iou          [F]       silhouette IoU of the fitted body against the person mask (optional)

The body model's axes: metres, +Y up, the rest pose facing +Z. Posed vertices of frame i:
``body(shape[None], pose[i:i+1], rotation[i:i+1], translation[i:i+1])``, seen by ``(viewmat, K)``.
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


@dataclass
class BodyTrackedSequence:
    """A tracked body sequence (``kind = "body"``, see the module doc)."""

    model: str
    shape: np.ndarray  # [S]
    shape_names: tuple[str, ...]
    pose: np.ndarray  # [F, J, 3]
    joint_names: tuple[str, ...]
    rotation: np.ndarray  # [F, 3]
    translation: np.ndarray  # [F, 3]
    K: np.ndarray  # [3, 3] or [F, 3, 3]
    viewmat: np.ndarray  # [4, 4]
    width: int
    height: int
    valid: np.ndarray  # [F]
    capture_id: str = ""
    focal_fitted: bool = False
    landmark_error_px: np.ndarray | None = None  # [F]
    mask_iou: np.ndarray | None = None  # [F]

    kind = "body"

    def __post_init__(self) -> None:
        if self.pose.ndim != 3 or self.pose.shape[2] != 3:
            raise TrackingError(f"body tracking 'pose' must be [F, J, 3], got {list(self.pose.shape)}")
        F, J = self.pose.shape[:2]
        if tuple(self.K.shape) not in ((3, 3), (F, 3, 3)):
            raise TrackingError(f"tracking 'K' must be [3, 3] or [{F}, 3, 3], got {list(self.K.shape)}")
        checks = [("rotation", self.rotation, (F, 3)), ("translation", self.translation, (F, 3)),
                  ("viewmat", self.viewmat, (4, 4)), ("valid", self.valid, (F,)),
                  ("shape", self.shape, (len(self.shape_names),))]
        checks += [(n, a, (F,)) for n, a in (("landmark_error_px", self.landmark_error_px),
                                             ("mask_iou", self.mask_iou)) if a is not None]
        for name, arr, shape in checks:
            if tuple(arr.shape) != shape:
                raise TrackingError(f"body tracking '{name}' must be {list(shape)}, got {list(arr.shape)}")
        if len(self.joint_names) != J:
            raise TrackingError(f"{len(self.joint_names)} joint names for {J} joints in 'pose'")

    @property
    def n_frames(self) -> int:
        return self.pose.shape[0]

    intrinsics = TrackedSequence.intrinsics

    def save(self, path: str | os.PathLike) -> Path:
        arrays = dict(
            kind=np.array("body"), model=np.array(self.model), shape=self.shape.astype(np.float32),
            shape_names=np.array(self.shape_names), pose=self.pose.astype(np.float32),
            joint_names=np.array(self.joint_names), rotation=self.rotation.astype(np.float32),
            translation=self.translation.astype(np.float32), K=self.K.astype(np.float32),
            viewmat=self.viewmat.astype(np.float32), width=np.array(self.width), height=np.array(self.height),
            valid=self.valid.astype(bool), focal_fitted=np.array(bool(self.focal_fitted)),
        )
        for name in ("landmark_error_px", "mask_iou"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name).astype(np.float32)
        if self.capture_id:
            arrays["capture_id"] = np.array(self.capture_id)
        return atomic_write(path, lambda f: np.savez(f, **arrays))


BODY_KEYS = ("kind", "model", "shape", "shape_names", "pose", "joint_names", "rotation", "translation", "K",
             "viewmat", "width", "height", "valid")


def body_sequence_from_arrays(z, path: Path | str = "tracking") -> BodyTrackedSequence:
    """A :class:`BodyTrackedSequence` from the arrays of a body tracking file (or of a synthetic
    capture's ``ground_truth.npz``, whose keys are a superset)."""
    missing = [k for k in BODY_KEYS if k not in z and k != "kind"]
    if missing:
        raise TrackingError(f"{path} lacks {missing}; re-run avatar track")
    opt = lambda k: z[k] if k in z else None  # noqa: E731
    return BodyTrackedSequence(
        model=str(z["model"]), shape=np.asarray(z["shape"]), shape_names=tuple(str(n) for n in z["shape_names"]),
        pose=np.asarray(z["pose"]), joint_names=tuple(str(n) for n in z["joint_names"]),
        rotation=np.asarray(z["rotation"]), translation=np.asarray(z["translation"]), K=np.asarray(z["K"]),
        viewmat=np.asarray(z["viewmat"]), width=int(z["width"]), height=int(z["height"]), valid=np.asarray(z["valid"]),
        capture_id=str(z["capture_id"]) if "capture_id" in z else "",
        focal_fitted=bool(z["focal_fitted"]) if "focal_fitted" in z else False,
        landmark_error_px=opt("landmark_error_px"), mask_iou=opt("mask_iou"),
    )


def load_tracking(path: str | os.PathLike, model: str | None = None,
                  capture_id: str | None = None) -> TrackedSequence | BodyTrackedSequence:
    """Read ``tracking.npz`` (a file, or a capture folder holding one): a :class:`TrackedSequence`
    for a head, a :class:`BodyTrackedSequence` for a body (``kind = "body"``).

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
        if "kind" in z and str(z["kind"]) == "body":
            seq = body_sequence_from_arrays(z, path)
        else:
            seq = _head_sequence(z, path)
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


def _head_sequence(z, path: Path) -> TrackedSequence:
    missing = [k for k in ("model", "shape", "expression", "expression_names", "rotation", "translation",
                           "K", "viewmat", "width", "height", "valid") if k not in z]
    if missing:
        raise TrackingError(f"{path} lacks {missing}; re-run avatar track")
    return TrackedSequence(
        model=str(z["model"]), shape=z["shape"], expression=z["expression"],
        expression_names=tuple(str(n) for n in z["expression_names"]), rotation=z["rotation"],
        translation=z["translation"], K=z["K"], viewmat=z["viewmat"], width=int(z["width"]),
        height=int(z["height"]), valid=z["valid"], capture_id=str(z["capture_id"]) if "capture_id" in z else "",
        **{k: z[k] for k in ("shoulders", "torso_rotation", "neck", "torso_measured") if k in z},
    )

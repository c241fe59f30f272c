"""Driving sources: what moves an avatar, as per-frame expression and head pose.

Every source becomes a :class:`DriveSequence` in the avatar model's expression order:
- a parameter file (``.npz`` with ``expression``, ``expression_names``, ``rotation``,
  ``translation``, optional ``fps``; ``tracking.npz`` is one) or a tracked capture folder;
- an ARKit blendshape CSV in the Live Link Face layout (``Timecode``, ``BlendShapeCount``,
  52 blendshape columns such as ``EyeBlinkLeft``, ``HeadYaw/HeadPitch/HeadRoll`` in radians,
  eye yaw/pitch/roll columns);
- a video, tracked on the fly with the per-frame fitter (see :func:`from_video`).

ARKit -> ICT: ICT's expressions are the ARKit shapes with ``_L``/``_R`` suffixes; an ARKit
shape without a side (``browInnerUp``, ``cheekPuff``) drives both ICT sides; ``tongueOut``
has no ICT shape and is dropped (reported).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from .sequence import DriveError, DriveSequence

__all__ = ["DriveError", "DriveSequence", "VIDEO_SUFFIXES", "expression_from_weights", "from_arkit_csv", "from_params",
           "load_drive"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")

ARKIT_BLENDSHAPES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose",
    "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight",
    "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft",
    "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
)
ARKIT_OTHER = ("Timecode", "BlendShapeCount", "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch",
               "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")


def arkit_to_model(name: str, model_names) -> list[str]:
    """The model expressions an ARKit blendshape (``EyeBlinkLeft`` or ``eyeBlinkLeft``) drives."""
    base = name[0].lower() + name[1:]
    if base in model_names:  # e.g. jawLeft, mouthRight: directions, not sides
        return [base]
    for side, suffix in (("Left", "_L"), ("Right", "_R")):
        if base.endswith(side):
            base = base[: -len(side)] + suffix
    if base in model_names:
        return [base]
    if base + "_L" in model_names and base + "_R" in model_names:
        return [base + "_L", base + "_R"]
    return []


def expression_from_weights(weights, model_names) -> np.ndarray:
    """``[E]`` expression coefficients in ``model_names`` order from ``{name: weight}``: ARKit
    names (``jawOpen`` or ``JawOpen``; a side-less one such as ``browInnerUp`` sets both sides)
    or the model's own names (``eyeBlink_L``); the others stay 0. An unknown name is a
    :class:`DriveError` that lists the closest names."""
    import difflib  # noqa: PLC0415

    names = list(model_names)
    out = np.zeros(len(names), np.float32)
    for name, weight in dict(weights).items():
        name = str(name)
        targets = [name] if name in names else arkit_to_model(name, names)
        if not targets:
            known = [s[0].lower() + s[1:] for s in ARKIT_BLENDSHAPES if arkit_to_model(s, names)] + names
            lower = {k.lower(): k for k in known}
            close = [lower[k] for k in difflib.get_close_matches(name.lower(), list(lower), n=4, cutoff=0.5)]
            hint = f"close names: {', '.join(close)}" if close else "expected ARKit names such as jawOpen, eyeBlinkLeft"
            raise DriveError(f"unknown expression {name!r} for this avatar's {len(names)} expressions ({hint})")
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise DriveError(f"expression {name!r}: weight {weight!r} is not a number") from None
        for t in targets:
            out[names.index(t)] = value
    return out


def from_arkit_csv(path: str | os.PathLike, model_names, fps: float = 60.0) -> DriveSequence:
    """Read a Live Link Face CSV; missing or unknown columns are an error that names them."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise DriveError(f"cannot read {path}: {exc}") from exc
    if len(rows) < 2:
        raise DriveError(f"{path} has no data rows (expected a header and one row per frame)")
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h and h not in ARKIT_BLENDSHAPES and h not in ARKIT_OTHER]
    missing = [h for h in ARKIT_BLENDSHAPES if h not in header]
    if unknown or missing:
        raise DriveError(
            f"{path} is not a Live Link Face ARKit CSV: "
            + (f"unknown column(s) {unknown}; " if unknown else "")
            + (f"missing blendshape column(s) {missing}" if missing else "")
        )
    col = {h: i for i, h in enumerate(header)}
    try:
        data = np.array([[float(r[col[h]]) for h in ARKIT_BLENDSHAPES] for r in rows[1:] if r], dtype=np.float64)
        pose = {h: np.array([float(r[col[h]]) if h in col else 0.0 for r in rows[1:] if r])
                for h in ("HeadYaw", "HeadPitch", "HeadRoll")}
    except (ValueError, IndexError) as exc:
        raise DriveError(f"{path}: a row has a missing or non-numeric value ({exc})") from exc
    names = list(model_names)
    expression = np.zeros((len(data), len(names)))
    dropped = []
    for j, shape in enumerate(ARKIT_BLENDSHAPES):
        targets = arkit_to_model(shape, names)
        if not targets:
            dropped.append(shape)
        for t in targets:
            expression[:, names.index(t)] = data[:, j]
    from ..geometry.rotations import euler_to_axis_angle  # noqa: PLC0415

    rotation = euler_to_axis_angle(*(torch.as_tensor(pose[k], dtype=torch.float64) for k in ("HeadYaw", "HeadPitch", "HeadRoll"))).numpy()
    notes = [f"ARKit shapes without a model expression, ignored: {dropped}"] if dropped else []
    return DriveSequence(np.clip(expression, 0, 1).astype(np.float32), rotation.astype(np.float32),
                         np.zeros((len(data), 3), np.float32), fps, str(path), notes=notes)


def from_params(path: str | os.PathLike, model_names) -> DriveSequence:
    """A parameter ``.npz`` (or a capture folder with ``tracking.npz``), reordered to ``model_names``."""
    path = Path(path)
    if path.is_dir():
        path = path / "tracking.npz"
        if not path.is_file():
            raise DriveError(f"{path.parent} has no tracking.npz; run avatar track capture={path.parent} first")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("expression", "expression_names", "rotation") if k not in z]
            if missing:
                raise DriveError(f"{path} lacks {missing}; a parameter file needs expression, expression_names, "
                                 "rotation (and optionally translation, fps)")
            expr, names = z["expression"], [str(n) for n in z["expression_names"]]
            rotation = z["rotation"]
            translation = z["translation"] if "translation" in z else np.zeros_like(rotation)
            fps = float(z["fps"]) if "fps" in z else 25.0
            valid = z["valid"] if "valid" in z else None
    except (OSError, ValueError) as exc:
        if isinstance(exc, DriveError):
            raise
        raise DriveError(f"cannot read parameter file {path}: {exc}") from exc
    out = np.zeros((expr.shape[0], len(model_names)), np.float32)
    unknown = [n for n in names if n not in model_names]
    for j, n in enumerate(names):
        if n in model_names:
            out[:, list(model_names).index(n)] = expr[:, j]
    notes = [f"expressions the avatar's model lacks, ignored: {unknown}"] if unknown else []
    if path.parent.joinpath("meta.json").is_file():  # a capture folder: its frame rate
        from avatar.io.capture import Capture  # noqa: PLC0415

        fps = float(Capture(path.parent).meta.fps) or fps
    return DriveSequence(out, rotation.astype(np.float32), translation.astype(np.float32), fps, str(path),
                         valid=valid, notes=notes)


def load_drive(path: str | os.PathLike, model_names, **video_options) -> DriveSequence:
    """Dispatch on the source's kind (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise DriveError(f"driving source {path} does not exist")
    if path.suffix.lower() == ".csv":
        return from_arkit_csv(path, model_names)
    if path.is_dir() or path.suffix.lower() == ".npz":
        return from_params(path, model_names)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        from .video_driver import from_video  # noqa: PLC0415

        return from_video(path, **video_options)
    raise DriveError(f"cannot drive from {path}: use a video ({', '.join(VIDEO_SUFFIXES)}), a capture folder, "
                     "a parameter .npz or an ARKit .csv")

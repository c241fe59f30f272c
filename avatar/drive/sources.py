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
import zipfile
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


def _read_table(path: Path) -> list[list[str]]:
    """The rows of a CSV whose separator is ``,``, ``;`` or a tab (UTF-8, a BOM allowed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DriveError(f"{path} is not UTF-8 text; export the take again as CSV") from exc
    except OSError as exc:
        raise DriveError(f"cannot read {path}: {exc.strerror or exc}") from exc
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    return [row for row in csv.reader(text.splitlines(), delimiter=delimiter) if any(c.strip() for c in row)]


def _numbers(rows: list[list[str]], col: dict[str, int], names, path: Path) -> np.ndarray:
    """``[len(rows) - 1, len(names)]`` floats of the named columns; DriveError naming the line and
    column of the first cell that is missing, not a number, NaN or infinite."""
    out = np.empty((len(rows) - 1, len(names)))
    for r, row in enumerate(rows[1:]):
        for j, name in enumerate(names):
            cell = row[col[name]].strip() if col[name] < len(row) else ""
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value is None or not np.isfinite(value):
                what = "is empty" if not cell else f"holds '{cell}', not a finite number"
                raise DriveError(f"{path}: line {r + 2} (frame {r}), column {name} {what}; fix or delete that line")
            out[r, j] = value
    return out


def from_arkit_csv(path: str | os.PathLike, model_names, fps: float = 60.0) -> DriveSequence:
    """Read a Live Link Face CSV; missing or unknown columns are an error that names them.

    Column names match whatever their case (``eyeBlinkLeft``, ``EYEBLINKLEFT``); the separator
    may be ``,``, ``;`` or a tab; a UTF-8 byte-order mark is skipped. Without the head pose
    columns the head stays in its reference pose (a note says so).
    """
    path = Path(path)
    rows = _read_table(path)
    if len(rows) < 2:
        raise DriveError(f"{path} has no data rows (expected a header and one row per frame)")
    canonical = {n.lower(): n for n in (*ARKIT_BLENDSHAPES, *ARKIT_OTHER)}
    header = [canonical.get(h.strip().lower(), h.strip()) for h in rows[0]]
    unknown = [h for h in header if h and h not in canonical.values()]
    missing = [h for h in ARKIT_BLENDSHAPES if h not in header]
    if unknown or missing:
        raise DriveError(
            f"{path} is not a Live Link Face ARKit CSV: "
            + (f"unknown column(s) {unknown}; " if unknown else "")
            + (f"missing blendshape column(s) {missing}" if missing else "")
        )
    col = {h: i for i, h in enumerate(header)}
    data = _numbers(rows, col, ARKIT_BLENDSHAPES, path)
    pose_names = ("HeadYaw", "HeadPitch", "HeadRoll")
    present = [h for h in pose_names if h in col]
    pose = dict(zip(present, _numbers(rows, col, present, path).T)) if present else {}
    notes = []
    if len(present) < 3:
        absent = [h for h in pose_names if h not in col]
        notes.append(f"{path.name} has no {'/'.join(absent)} column(s): "
                     f"{'head pose stays neutral' if not present else 'those head angles stay 0'}")
    names = list(model_names)
    expression = np.zeros((len(data), len(names)))
    dropped = []
    for j, shape in enumerate(ARKIT_BLENDSHAPES):
        targets = arkit_to_model(shape, names)
        if not targets:
            dropped.append(shape)
        for t in targets:
            expression[:, names.index(t)] = data[:, j]
    if len(dropped) == len(ARKIT_BLENDSHAPES):
        raise DriveError(f"no ARKit blendshape of {path} is an expression of the avatar's model "
                         f"(its expressions: {_some(names)}); drive this avatar with a parameter file")
    from ..geometry.rotations import euler_to_axis_angle  # noqa: PLC0415

    angles = [torch.as_tensor(pose.get(k, np.zeros(len(data))), dtype=torch.float64) for k in pose_names]
    rotation = euler_to_axis_angle(*angles).numpy()
    if dropped:
        notes.append(f"ARKit shapes without a model expression, ignored: {dropped}")
    return DriveSequence(np.clip(expression, 0, 1).astype(np.float32), rotation.astype(np.float32),
                         np.zeros((len(data), 3), np.float32), fps, str(path), notes=notes)


def _some(names, n: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


PARAMETER_KEYS = "expression [F, E], expression_names [E], rotation [F, 3] (optional: translation [F, 3], fps, valid [F])"


def _param_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a parameter ``.npz``, checked: DriveError naming the file, the key and the
    shape it must have."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("expression", "expression_names", "rotation") if k not in z]
            if missing:
                raise DriveError(f"{path} lacks {missing}; a parameter file holds {PARAMETER_KEYS}")
            arrays = {k: z[k] for k in ("expression", "expression_names", "rotation", "translation", "fps", "valid")
                      if k in z}
    except DriveError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        why = "it holds Python objects" if "allow_pickle" in str(exc) else " ".join(str(exc).split())
        raise DriveError(f"cannot read parameter file {path} ({why}); it must be an .npz of {PARAMETER_KEYS}") from exc

    def bad(key: str, wanted: str, got: str) -> DriveError:
        return DriveError(f"{path}: '{key}' must be {wanted}, got {got}; a parameter file holds {PARAMETER_KEYS}")

    for key in ("expression", "rotation", "translation", "fps", "valid"):
        if key in arrays and not (np.issubdtype(arrays[key].dtype, np.number) or arrays[key].dtype == bool):
            raise bad(key, "numbers", f"{arrays[key].dtype} values")
    expr = arrays["expression"]
    if expr.ndim != 2:
        raise bad("expression", "[frames, expressions]", f"shape {list(expr.shape)}")
    F, E = expr.shape
    if F == 0:
        raise bad("expression", "at least one frame", "0 frames")
    names = arrays["expression_names"]
    if names.ndim != 1 or len(names) != E:
        raise bad("expression_names", f"[{E}] (one name per expression column)", f"shape {list(names.shape)}")
    for key in ("rotation", "translation"):
        if key in arrays and arrays[key].shape != (F, 3):
            raise bad(key, f"[{F}, 3] (one axis-angle per expression frame)" if key == "rotation"
                      else f"[{F}, 3] (metres, one per expression frame)", f"shape {list(arrays[key].shape)}")
    if "valid" in arrays and arrays["valid"].shape != (F,):
        raise bad("valid", f"[{F}]", f"shape {list(arrays['valid'].shape)}")
    if "fps" in arrays and (arrays["fps"].size != 1 or not float(arrays["fps"].reshape(-1)[0]) > 0):
        raise bad("fps", "one positive number", f"{arrays['fps'].tolist()}")
    for key in ("expression", "rotation", "translation"):
        if key in arrays and not np.isfinite(arrays[key]).all():
            frame = int(np.flatnonzero(~np.isfinite(arrays[key]).reshape(F, -1).all(1))[0])
            raise DriveError(f"{path}: '{key}' holds NaN or infinite values (first at frame {frame}); fix that frame")
    return arrays


def from_params(path: str | os.PathLike, model_names) -> DriveSequence:
    """A parameter ``.npz`` (or a capture folder with ``tracking.npz``), reordered to ``model_names``.

    A file whose shapes do not fit, or none of whose expression names is one of the model's,
    raises :class:`DriveError` naming the file and the key."""
    path = Path(path)
    if path.is_dir():
        path = path / "tracking.npz"
        if not path.is_file():
            raise DriveError(f"{path.parent} has no tracking.npz; run avatar track capture={path.parent} first")
    arrays = _param_arrays(path)
    expr, names = arrays["expression"], [str(n) for n in arrays["expression_names"]]
    rotation = arrays["rotation"]
    translation = arrays.get("translation", np.zeros_like(rotation))
    fps = float(arrays["fps"].reshape(-1)[0]) if "fps" in arrays else 25.0
    valid = arrays["valid"].astype(bool) if "valid" in arrays else None
    model_names = list(model_names)
    known = [n for n in names if n in model_names]
    if names and not known:
        raise DriveError(f"none of the {len(names)} expression names of {path} ({_some(names)}) is an expression "
                         f"of the avatar's model ({_some(model_names)}); was it tracked with another model?")
    out = np.zeros((expr.shape[0], len(model_names)), np.float32)
    unknown = [n for n in names if n not in model_names]
    for j, n in enumerate(names):
        if n in model_names:
            out[:, model_names.index(n)] = expr[:, j]
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

"""The avatar file (``avatar.pt``) and the training checkpoints: the one module that reads and writes them.

An avatar file is a ``torch.save`` of plain tensors and Python values (read back with
``weights_only=True``: no code runs on load). Format 2, written by this version::

    format               2
    model                parametric model name ("ict", "flame", ...)
    model_options        what ``avatar.models.load(model, **model_options)`` needs (e.g. model_path)
    avatar               {"kind": registry name, "config": the kind's config, "state": its tensors}
    expression_names     [E] the model's expression names, in coefficient order
    shape                [S] the subject's identity coefficients
    K, viewmat           [3, 3] / [4, 4] the reference (first training) camera, OpenCV convention, metres
    width, height        its image size in pixels
    reference_rotation   [3] axis-angle / reference_translation [3] metres: the head pose there
    background           [3] the training background colour, 0..1
    expression_range     the training expressions' statistics (ExpressionRange.state()), or absent
    visibility           [N] how much each Gaussian shows in typical driven views, or absent

Format 1 (written before the avatar interface) kept the mesh-bound Gaussians' tensors at the
top level (``faces``, ``binding``, ``params``, ``sh_degree``, ``sh_frame``, the deformer's) and no
model options; :func:`read_avatar` returns every file in the format-2 layout.

A checkpoint (``checkpoints/*.pt``) holds ``format``, ``avatar`` (kind and state, as above) and the
trainer's own state (step, optimizer, strategy statistics, random state ...).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_write

AVATAR_FORMAT = 2
LEGACY_KIND = "mesh_gaussians"  # what format 1 files hold
# Format 1: the mesh-bound Gaussians' entries at the top level of the file.
_LEGACY_AVATAR_KEYS = ("faces", "binding", "params", "sh_degree", "sh_frame", "deformer", "deformer_config",
                       "canonical_vertices")
REQUIRED_KEYS = ("model", "avatar", "expression_names", "shape", "K", "viewmat", "width", "height", "background")


class AvatarFileError(ValueError):
    """An avatar file or checkpoint that cannot be read as asked (missing, refused, corrupt,
    from a newer version, or whose model cannot be found)."""


def avatar_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/avatar.pt`` when it is a run folder."""
    path = Path(path)
    return path / "avatar.pt" if path.is_dir() else path


def write_avatar(path: str | os.PathLike, *, model: str, model_options: dict | None, kind: str, config: dict | None,
                 avatar_state: dict, **entries) -> Path:
    """Write an avatar file (format :data:`AVATAR_FORMAT`) atomically; ``entries``: the other
    top-level entries of the format (``expression_names``, ``shape``, ``K`` ...)."""
    state = {"format": AVATAR_FORMAT, "model": model, "model_options": dict(model_options or {}),
             "avatar": {"kind": kind, "config": dict(config or {}), "state": avatar_state}, **entries}
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"an avatar file needs {missing}")
    return save(path, state)


def save(path: str | os.PathLike, state: dict) -> Path:
    """``torch.save(state)`` to ``path`` atomically (avatar files and checkpoints)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load(path: str | os.PathLike, what: str = "avatar file") -> dict:
    """``torch.load`` of a file of plain tensors and values, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        run = path.parent if path.suffix == ".pt" else path  # a run folder or an avatar file was meant
        raise AvatarFileError(f"{path} does not exist: train an avatar first (avatar train ... out={run})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))  # torch's advice is left out
        holds = f" ({found.group(1)})" if found else ""
        raise AvatarFileError(
            f"{path} was refused: it holds Python objects{holds} besides tensors and values, and loading them could "
            f"run code, so it may be unsafe; it was not loaded. Use only a {what} that avatar train or avatar export wrote"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise AvatarFileError(f"{path} is not a readable {what} (truncated or not written by avatar train: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise AvatarFileError(f"{path} is not a {what}: it holds a {type(state).__name__}, not a dict of tensors")
    return state


def read_avatar(path: str | os.PathLike) -> dict:
    """Read an avatar file (or a run folder's ``avatar.pt``) in the format-2 layout.

    Raises :class:`AvatarFileError` naming the file when it is missing, refused (pickled code),
    corrupt, written by a newer version, or lacks an entry.
    """
    path = avatar_path(path)
    state = upgrade(load(path), path)
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise AvatarFileError(f"{path} lacks {', '.join(missing)}: it is not a complete avatar file; re-export it "
                              f"with avatar export run=RUN")
    return state


def upgrade(state: dict, path: str | os.PathLike = "<avatar>") -> dict:
    """An avatar file's content in the current layout (format 1 -> 2); refuses newer formats."""
    version = state.get("format", 1)
    if not isinstance(version, int) or version > AVATAR_FORMAT:
        raise AvatarFileError(f"{path} is avatar format {version}, newer than this version of the toolkit reads "
                              f"(format {AVATAR_FORMAT}): upgrade the toolkit to use it")
    if version == AVATAR_FORMAT:
        return state
    state = dict(state)
    avatar_state = {k: state.pop(k) for k in _LEGACY_AVATAR_KEYS if k in state}
    state.update(format=AVATAR_FORMAT, model_options={},
                 avatar={"kind": LEGACY_KIND, "config": {}, "state": avatar_state})
    return state


def checkpoint_avatar(checkpoint: dict) -> tuple[str, dict]:
    """``(kind, avatar state)`` of a training checkpoint (also those written before format 2,
    which kept the mesh-bound Gaussians' entries at the top level)."""
    version = checkpoint.get("format", 1)
    if isinstance(version, int) and version > AVATAR_FORMAT:
        raise AvatarFileError(f"the checkpoint is format {version}, newer than this version reads ({AVATAR_FORMAT})")
    if "avatar" in checkpoint:
        return checkpoint["avatar"]["kind"], checkpoint["avatar"]["state"]
    return LEGACY_KIND, {k: checkpoint[k] for k in _LEGACY_AVATAR_KEYS if k in checkpoint}


def checkpoint_state(kind: str, avatar_state: dict, **trainer_state) -> dict:
    """A checkpoint's content: the avatar's kind and state, and the trainer's own entries."""
    return {"format": AVATAR_FORMAT, "avatar": {"kind": kind, "state": avatar_state}, **trainer_state}


def read_checkpoint(path: str | os.PathLike) -> dict:
    return load(path, "training checkpoint")

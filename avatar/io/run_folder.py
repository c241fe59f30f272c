"""Where a run folder's training capture is, read from the run's ``config.yaml``.

``avatar train`` records the capture as an absolute path, so eval, export, render and the
benchmarks find it from any working directory. Runs written before that recorded the path as
typed, relative to the directory training ran in; that directory is recovered from the run's
own recorded ``out`` (the run folder's path minus ``out``), then the current directory is tried.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["recorded_config", "resolve_capture", "run_capture"]


def recorded_config(run: str | os.PathLike):
    """The run's ``config.yaml`` as an OmegaConf object, or None when it has none."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    path = Path(run) / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def resolve_capture(run: str | os.PathLike, capture: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """The capture folder ``capture`` (as a run's config names it) of the run folder ``run``
    whose config recorded ``out``. An absolute path is returned as it is. A relative one is
    tried from the directory training ran in (``run`` with ``out``'s trailing parts removed),
    then from beside the run folder, then from the current directory; the first that exists
    is returned, else the path from the current directory (so an error names what was looked for)."""
    capture = Path(capture)
    if capture.is_absolute():
        return capture
    run_abs = Path(run).resolve()
    bases = []
    if out is not None and not Path(out).is_absolute():
        parts = [p for p in Path(out).parts if p not in (".", "")]
        if parts and ".." not in parts and tuple(run_abs.parts[-len(parts):]) == tuple(parts):
            bases.append(run_abs.parents[len(parts) - 1])
    bases += [run_abs.parent, Path.cwd()]
    for base in bases:
        if (base / capture).is_dir():
            return base / capture
    return capture


def run_capture(run: str | os.PathLike) -> Path | None:
    """The capture folder the run in ``run`` was trained on (see :func:`resolve_capture`), or
    None when the run has no ``config.yaml`` or it names no capture. The folder may be gone:
    callers check."""
    cfg = recorded_config(run)
    if cfg is None or not cfg.get("capture"):
        return None
    return resolve_capture(run, str(cfg.capture), cfg.get("out"))

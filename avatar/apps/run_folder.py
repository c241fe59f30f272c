"""A failed run leaves no folder behind that it only made for Hydra's records.

Hydra creates the run folder, ``.hydra/<subcommand>/`` and ``<subcommand>.log`` before the
job starts. When the job then fails before writing anything of its own (a missing input, a
run folder that cannot be used, Ctrl-C while loading), those records are all that is left:
:class:`RemoveRecordsOnFailure` (a Hydra callback, listed in ``conf/_common.yaml``) notes
what the folder held before the run and, after a failed run, removes what the run added if
it added nothing else: the log, ``.hydra`` (or just this subcommand's part of it) and the
folders it created, up to the first one that was there before. A run that wrote outputs
keeps everything, its log included. Multiruns are left alone. A run folder that cannot be
made (a read-only or full disk, a path under a file) is answered in one line (exit 1).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback

from ..errors import PassedOn


class RemoveRecordsOnFailure(Callback):
    def __init__(self) -> None:
        self.folder: Path | None = None
        self.before: set[str] = set()  # what the folder held before the run
        self.subdir_existed = False  # .hydra/<subcommand> was there before
        self.existing_parent: Path | None = None  # the nearest folder that was there before

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self.folder = Path(str(config.hydra.run.dir)).absolute()
        self.before = set(os.listdir(self.folder)) if self.folder.is_dir() else set()
        subdir = config.hydra.output_subdir
        self.subdir_existed = subdir is not None and (self.folder / str(subdir)).exists()
        parent = self.folder
        while not parent.exists():
            parent = parent.parent
        self.existing_parent = parent
        try:  # Hydra would make it next and print a traceback if it cannot: say it in one line
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PassedOn(exc) from exc

    def on_run_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        succeeded = (job_return is not None and job_return.status == JobStatus.COMPLETED
                     and not job_return.return_value)  # the task returns the job's exit status
        if not succeeded and self.folder is not None:
            remove_records(self.folder, self.before, str(config.hydra.output_subdir or ""),
                           f"{config.hydra.job.name}.log", self.subdir_existed, self.existing_parent)


def remove_records(folder: Path, before: set[str], output_subdir: str, log_name: str, subdir_existed: bool,
                   existing_parent: Path | None) -> None:
    """Remove what a failed run added to ``folder`` when it is only Hydra's records (see the module doc)."""
    if not folder.is_dir():
        return
    records_top = output_subdir.split("/", 1)[0] if output_subdir else None
    added = set(os.listdir(folder)) - before
    if not added <= {records_top, log_name}:
        return  # the job wrote outputs: keep everything
    if log_name in added:
        _close_log_handlers(folder / log_name)
        (folder / log_name).unlink(missing_ok=True)
    if records_top in added:
        shutil.rmtree(folder / records_top, ignore_errors=True)
    elif output_subdir and not subdir_existed:
        shutil.rmtree(folder / output_subdir, ignore_errors=True)
    path = folder
    while path != existing_parent and path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        path = path.parent


def _close_log_handlers(log_file: Path) -> None:
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == log_file.absolute():
                handler.close()
                logger.removeHandler(handler)

"""Exit statuses of the ``avatar`` command, and the one line on stderr each error gives.

The one place that maps the toolkit's error types to what the command does with them:

=======  ===================================================================================
status   meaning
=======  ===================================================================================
0        done
1        an input cannot be used: a missing or corrupt file, no face, a run folder problem
         (the line names the file and what to do)
2        the command line is wrong: an unknown key, a value of the wrong type or out of
         range, a required key not given (the line names the key)
130      interrupted (Ctrl-C)
=======  ===================================================================================

The library's error classes stay in their modules; they are named here as
``"module:Class"`` and looked up only in modules that are already imported (an error of a
module nobody imported cannot have been raised), so this module imports nothing of the
toolkit and sits below every other layer.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake on the command line (exit 2); the message is the whole line to print."""


# The library's "this input cannot be used" errors: exit 1 with their message.
INPUT_ERRORS: tuple[str, ...] = (
    "avatar.cli:ConfigDirNotFound",
    "avatar.io.capture:CaptureError",
    "avatar.preprocess:PreprocessError",
    "avatar.io.video_reader:VideoReadError",
    "avatar.drive.sequence:DriveError",
    "avatar.gaussians.registry:UnknownAvatarKindError",
    "avatar.io.avatar_file:AvatarFileError",
    "avatar.models.assets:AssetNotFoundError",
    "avatar.models.profile:TrackingProfileError",
    "avatar.models.restricted_pickle:RestrictedUnpicklingError",
    "avatar.io.tracking:TrackingError",
    "avatar.train.data:TrainDataError",
    "avatar.train.session:RunError",
    "avatar.view.server:ViewerError",
    "builtins:FileNotFoundError",
    "builtins:NotADirectoryError",
)
USAGE_ERRORS: tuple[str, ...] = ("avatar.errors:UsageError", "avatar.device:DeviceUnavailableError")


def _loaded(names: tuple[str, ...]) -> tuple[type, ...]:
    """The classes of ``names`` whose module is imported already."""
    classes = []
    for name in names:
        module_name, _, attr = name.partition(":")
        module = sys.modules.get(module_name)
        cls = getattr(module, attr, None) if module is not None else None
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


def exit_status(exc: BaseException) -> int | None:
    """The exit status for ``exc``; None for an error this table does not know (a bug)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, _loaded(USAGE_ERRORS)):
        return EXIT_USAGE
    if isinstance(exc, _loaded(INPUT_ERRORS)):
        return EXIT_INPUT
    return None


def describe(prog: str, exc: BaseException) -> str:
    """The one line to print for ``exc``, starting with ``prog`` (e.g. ``avatar train``)."""
    if isinstance(exc, KeyboardInterrupt):
        return f"{prog}: interrupted"
    text = str(exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        # "[Errno 2] No such file or directory: 'x'" -> "x: no such file or directory"
        text = f"{exc.filename}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
    text = " ".join(text.split())
    if not text:
        text = type(exc).__name__
    return text if text.startswith(f"{prog}:") else f"{prog}: {text}"


def run(prog: str, function: Callable[..., int | None], *args: Any) -> int:
    """``function(*args)``'s exit status (None counts as 0). An error this module knows
    prints its line on stderr and gives its status; any other error propagates (a bug:
    its traceback is the report)."""
    try:
        status = function(*args)
    except BaseException as exc:  # KeyboardInterrupt included; SystemExit is not ours
        code = exit_status(exc)
        if code is None:
            raise
        print(describe(prog, exc), file=sys.stderr)
        return code
    return EXIT_OK if status is None else int(status)


def command(prog: str) -> Callable[[Callable[..., int | None]], Callable[..., int]]:
    """Decorator for a subcommand's ``main(cfg)``: its errors go through :func:`run`."""

    def decorate(function: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(function)
        def main(*args: Any) -> int:
            return run(prog, function, *args)

        return main

    return decorate

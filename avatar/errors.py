"""Exit statuses of the ``avatar`` command, and the one line on stderr each error gives.

The one place that maps the toolkit's error types to what the command does with them:

=======  ===================================================================================
status   meaning
=======  ===================================================================================
0        done
1        an input cannot be used: a missing or corrupt file, no face, a run folder problem,
         an output that cannot be written (full disk, read-only folder; the line names the
         file and what to do)
2        the command line is wrong: an unknown key, a value of the wrong type or out of
         range, a required key not given (the line names the key)
130      interrupted (Ctrl-C)
143      stopped by SIGTERM (``kill``, a job scheduler)
=======  ===================================================================================

The library's error classes stay in their modules; they are named here as
``"module:Class"`` and looked up only in modules that are already imported (an error of a
module nobody imported cannot have been raised), so this module imports nothing of the
toolkit and sits below every other layer.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import signal
import sys
import threading
from typing import Any, Callable

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report a process that SIGTERM ended


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where it arrives as Ctrl-C's KeyboardInterrupt is (see :func:`sigterm_raises`)."""


class UsageError(Exception):
    """A mistake on the command line (exit 2); the message is the whole line to print."""


class PassedOn(BaseException):
    """Carries ``error`` past code that would print its traceback (Hydra's callbacks run
    inside Hydra's own error report) to :func:`run`, which answers it as ``error``."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


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
    "avatar.io.spz:SpzError",
    "avatar.train.data:TrainDataError",
    "avatar.train.session:RunError",
    "avatar.view.server:ViewerError",
    "builtins:FileNotFoundError",
    "builtins:NotADirectoryError",
)
USAGE_ERRORS: tuple[str, ...] = ("avatar.errors:UsageError", "avatar.device:DeviceUnavailableError")

# An output that cannot be written (full disk, read-only or forbidden folder): exit 1, the
# line names the path and what to do.
DISK_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "free some space or choose another out=",
    errno.EDQUOT: "free some space or choose another out=",
    errno.EROFS: "choose an out= on a writable disk",
    errno.EACCES: "choose an out= you may write to, or fix the folder's permissions",
    errno.EPERM: "choose an out= you may write to, or fix the folder's permissions",
}


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
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, _loaded(USAGE_ERRORS)):
        return EXIT_USAGE
    if isinstance(exc, _loaded(INPUT_ERRORS)) or _disk_error(exc):
        return EXIT_INPUT
    return None


def _disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def describe(prog: str, exc: BaseException) -> str:
    """The one line to print for ``exc``, starting with ``prog`` (e.g. ``avatar train``)."""
    if isinstance(exc, KeyboardInterrupt):  # its text, if any, says what was kept and how to go on
        what = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        return f"{prog}: {what}" + (f" {' '.join(str(exc).split())}" if str(exc) else "")
    text = str(exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        # "[Errno 2] No such file or directory: 'x'" -> "x: no such file or directory"
        text = f"{exc.filename}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
        if _disk_error(exc):
            text += f"; {DISK_ERRNOS[exc.errno]}"
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
        if isinstance(exc, PassedOn):
            exc = exc.error
        code = exit_status(exc)
        if code is None:
            raise exc
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


@contextlib.contextmanager
def sigterm_raises():
    """While the block runs, SIGTERM raises :class:`Terminated` where the program is, as Ctrl-C
    raises KeyboardInterrupt: the same clean-up runs and the command says it was stopped.
    Only in the main thread (elsewhere signals cannot be handled); the old handler comes back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """Ctrl-C or SIGTERM noted, not raised, while the block runs, for a loop that stops at a
    safe point (``if stop.error: ...``); a second signal raises at once. Main thread only."""

    def __init__(self) -> None:
        self.error: KeyboardInterrupt | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        error = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if self.error is not None:
            raise error
        self.error = error
        print("\nstopping after this step (press Ctrl-C again to stop at once)", file=sys.stderr)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

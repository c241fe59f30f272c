"""One atomic file write for the whole toolkit.

The data goes to a temporary file in the target's folder, is flushed, gets the permissions
a plain ``open(path, "w")`` would give (``0666 & ~umask``; ``mkstemp`` alone makes ``0600``)
and replaces the target with ``os.replace``: readers see the old file or the new one, never
half of one, and an interrupted write leaves no partial file behind. A write that fails
(a full or read-only disk) raises an OSError naming the target, not the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (the file the caller asked for, not a temporary name or none)."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, os.strerror(exc.errno), str(path))


def partial_path(path: str | os.PathLike) -> Path:
    """A new, empty temporary file beside ``path`` (its parent folder created), named after it
    and keeping its suffix (a video encoder picks the container from it); :func:`commit` moves
    it into place. An OSError (read-only or full disk) names ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise _named(exc, path) from exc
    os.close(fd)
    return Path(tmp)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Give the finished temporary file ``tmp`` the usual permissions and move it to ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return Path(path)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], object]) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    ``data``: bytes, text (UTF-8), or a function that writes into the open binary file it is
    given (``torch.save``, ``np.savez``, an encoder). The parent folder is created.
    """
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                data(f)
        return commit(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _named(exc, Path(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

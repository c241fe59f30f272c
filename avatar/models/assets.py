"""Finding model assets and caching converted ones.

Lookup order for an asset: the explicit path from the config, then the folder in the
environment variable ``AVATAR_ASSETS``, then the user cache (``$XDG_CACHE_HOME/avatar``
or ``~/.cache/avatar``). Converted files are written atomically (a temporary file in the
same folder, then ``os.replace``), so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from avatar.io.atomic import atomic_write

ASSETS_ENV = "AVATAR_ASSETS"


class AssetNotFoundError(FileNotFoundError):
    """No file for an asset in any of the places searched.

    Attributes:
        asset: what was looked for.
        searched: every path that was tried, in order.
        hint: how to get the files.
    """

    def __init__(self, asset: str, searched: list[Path], hint: str) -> None:
        self.asset, self.searched, self.hint = asset, list(searched), hint
        places = "\n".join(f"  - {p}" for p in self.searched) or "  (nowhere: no path configured)"
        super().__init__(f"{asset} not found. Looked in:\n{places}\n{hint}")


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/avatar`` if set, else ``~/.cache/avatar`` (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "avatar"


def search_roots(explicit: str | Path | None = None) -> list[tuple[str, Path]]:
    """The folders (or explicit file) to search, in lookup order, with where each came from."""
    roots: list[tuple[str, Path]] = []
    if explicit is not None:
        roots.append(("config", Path(explicit).expanduser()))
    env = os.environ.get(ASSETS_ENV)
    if env:
        roots.append((ASSETS_ENV, Path(env).expanduser()))
    roots.append(("user cache", user_cache_dir()))
    return roots


def find_asset(asset: str, names: Iterable[str], explicit: str | Path | None, hint: str) -> Path:
    """The first existing path among the lookup roots joined with ``names``.

    An explicit path that is itself an existing file (or a folder matching no name) is
    returned as is; :class:`AssetNotFoundError` lists everything tried otherwise.
    """
    names = list(names)
    searched: list[Path] = []
    for origin, root in search_roots(explicit):
        if origin == "config" and root.is_file():
            return root
        for name in names:
            candidate = root / name
            searched.append(candidate)
            if candidate.exists():
                return candidate
        if origin == "config":
            searched.append(root)
    raise AssetNotFoundError(asset, searched, hint)


def fingerprint(path: Path, chunk: int = 1 << 22) -> str:
    """16 hex digits identifying an asset: the sha256 of a file's bytes, or of a folder's
    file names, sizes and modification times."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    else:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def atomic_savez(path: Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` (uncompressed: fast to load) to ``path`` through a temporary file."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))

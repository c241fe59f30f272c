"""Download ICT-FaceKit (MIT licence) into the user cache and convert it once.

    python data_tools/fetch_ict.py                     # default: the repository's master archive
    python data_tools/fetch_ict.py --sha256 <hex>      # verify a known checksum
    python data_tools/fetch_ict.py --dest /data/assets # then: AVATAR_ASSETS=/data/assets

The download goes to ``<dest>/ict-facekit/ICT-FaceKit.tar.gz`` through a ``.part`` file
that a rerun resumes with an HTTP Range request. The archive's sha256 is printed (and
checked when ``--sha256`` is given; GitHub's generated archives have no published
checksum). Then ``avatar.models.ict`` converts it into its cache (a few seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path
from typing import Callable

DEFAULT_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/refs/heads/master.tar.gz"
ARCHIVE_NAME = "ICT-FaceKit.tar.gz"
CHUNK = 1 << 20

Opener = Callable[[urllib.request.Request], object]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, opener: Opener = urllib.request.urlopen, progress=None) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if a previous run left one.

    A server that ignores the Range header (status 200 instead of 206) restarts the file.
    The ``.part`` file becomes ``dest`` only when complete.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "avatar-fetch-ict"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    with opener(request) as response:
        status = getattr(response, "status", None) or response.getcode()
        if status == 416:  # range past the end: the .part is already complete
            os.replace(part, dest)
            return dest
        resumed = offset > 0 and status == 206
        total = response.headers.get("Content-Length")
        total = int(total) + (offset if resumed else 0) if total else None
        done = offset if resumed else 0
        with open(part, "ab" if resumed else "wb") as f:
            while block := response.read(CHUNK):
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    if total is not None and part.stat().st_size != total:
        raise OSError(f"download of {url} incomplete: {part.stat().st_size} of {total} bytes; rerun to resume")
    os.replace(part, dest)
    return dest


def _print_progress(done: int, total: int | None) -> None:
    msg = f"{done / 1e6:8.1f} MB" + (f" / {total / 1e6:.1f} MB" if total else "")
    print("\r" + msg, end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        import avatar  # noqa: F401
    except ImportError:  # run from a checkout without installing the package
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from avatar.models import ict
    from avatar.models.assets import user_cache_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--dest", type=Path, default=user_cache_dir(), help="assets folder (default: user cache)")
    parser.add_argument("--sha256", help="expected sha256 of the archive")
    parser.add_argument("--no-convert", action="store_true", help="only download")
    args = parser.parse_args(argv)

    archive = args.dest / "ict-facekit" / ARCHIVE_NAME
    if not archive.exists():
        print(f"downloading {args.url} -> {archive}", file=sys.stderr)
        download(args.url, archive, progress=_print_progress)
        print(file=sys.stderr)
    digest = sha256_of(archive)
    print(f"sha256 {digest}  {archive}")
    if args.sha256 and digest != args.sha256.lower():
        bad = archive.with_name(archive.name + ".bad")
        os.replace(archive, bad)
        print(f"checksum mismatch: expected {args.sha256}; moved the file to {bad}", file=sys.stderr)
        return 1
    if not args.no_convert:
        arrays = ict.converted(str(archive))
        print(f"converted: {arrays['template'].shape[0]} vertices, {arrays['faces'].shape[0]} triangles")
    return 0


if __name__ == "__main__":
    sys.exit(main())

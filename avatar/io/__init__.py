"""The bottom layer: file formats and their I/O.

``atomic_write`` is the one way the toolkit writes a file: the file appears complete or not
at all, with the permissions a plain ``open(..., "w")`` would give. ``avatar_file`` owns the
``avatar.pt`` format (every reader and writer goes through it).
"""

from avatar.io.atomic import atomic_write, commit, partial_path

__all__ = ["atomic_write", "commit", "partial_path"]

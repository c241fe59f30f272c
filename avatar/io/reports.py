"""Machine-readable reports and other small files, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from avatar.io.atomic import atomic_write


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON; the file appears complete or not at all."""
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")

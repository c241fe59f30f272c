"""Benchmark of `avatar export` for a body avatar: the canonical (rest) pose as PLY and SPZ; prints ONE JSON line.

    python benchmarks/export_body.py --run RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    args = parser.parse_args()
    out = Path(args.run) / "export"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "avatar", "export", f"run={args.run}", f"out={out}"],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(json.dumps({"benchmark": "export_body", "error": proc.stderr[-2000:]}))
        sys.exit(1)
    report = json.loads((out / "export_report.json").read_text())
    files = {Path(f).name: Path(f).stat().st_size for f in report["files"]}
    print(json.dumps({"benchmark": "export_body", "run": args.run, "kind": report["kind"],
                      "n_gaussians": report["n_gaussians"], "file_bytes": files, "wall_seconds": round(wall, 2)}))


if __name__ == "__main__":
    main()

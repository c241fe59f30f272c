"""Benchmark of `avatar train avatar=body` on the synthetic body capture: prints ONE JSON line.

Makes the synthetic Anny capture (avatar.synthetic.body_capture: walking, arms raised, one full
turn; 256x256; needs `pip install anny`), trains the skinned body avatar on its ground-truth
tracking (the capture's tracking.npz) and reports the held-out PSNR / SSIM (the last 15% of the
frames) and the wall time. The issue's target: held-out PSNR >= 30 dB at 256x256.

    python benchmarks/train_body.py [--frames 80] [--resolution 256] [--iterations 3000] [--densify] [--work DIR] [overrides ...]

Densification is off unless ``--densify``: on this thin subject it made the steps about ten
times slower on the CPU (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--densify", action="store_true", help="keep the default densification (clone, split, prune)")
    parser.add_argument("--work", default=None, help="folder for the capture and the run (default: a temp folder)")
    args, overrides = parser.parse_known_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="avatar-bench-body-"))
    capture, run = work / "capture", work / "run"
    if run.exists():
        shutil.rmtree(run)
    t0 = time.perf_counter()
    if not (capture / "meta.json").is_file():
        from avatar.synthetic.body_capture import BodySyntheticConfig, make_body_capture

        make_body_capture(capture, BodySyntheticConfig(n_frames=args.frames, resolution=args.resolution), progress=False)
    capture_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not args.densify:
        overrides = ["train.densify.refine_start=100000", "train.densify.refine_stop=100001", *overrides]
    cmd = [sys.executable, "-m", "avatar", "train", f"capture={capture}", f"out={run}", "avatar=body",
           f"train.iterations={args.iterations}", f"train.resolution={args.resolution}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=dict(os.environ))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(json.dumps({"benchmark": "train_body", "error": proc.stdout[-2000:] + proc.stderr[-2000:]}))
        sys.exit(1)
    m = json.loads((run / "metrics.json").read_text())
    print(json.dumps({
        "benchmark": "train_body",
        "data": f"synthetic Anny body capture, {args.frames} frames, ground-truth tracking",
        "overrides": overrides, "resolution": args.resolution, "iterations": m["iterations"],
        "heldout_psnr": m["psnr"], "heldout_ssim": m["ssim"], "heldout_frames": m["heldout_frames"],
        "n_gaussians": m["n_gaussians"], "train_seconds": m["train_seconds"], "train_wall_seconds": round(wall, 1),
        "capture_seconds": round(capture_s, 1), "device": m["device"], "target_psnr": 30.0,
        "load_average": os.getloadavg()[0], "work": str(work),
    }))


if __name__ == "__main__":
    main()

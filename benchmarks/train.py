"""Benchmark of `avatar train` on a synthetic ground-truth capture: prints ONE JSON line.

Makes the synthetic ICT capture (textured from the astronaut portrait; needs the ICT assets:
AVATAR_ASSETS), uses its ground-truth parameters as the tracking, trains at the given
resolution on this machine and reports the held-out PSNR / SSIM and the wall time. The
issue's target: held-out PSNR >= 30 dB at 256x256 on a 2-core CPU.

    python benchmarks/train.py [--frames 120] [--resolution 256] [--iterations 3000] [--work DIR]
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
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--work", default=None, help="folder for the capture and run (default: a temp folder)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="avatar-bench-train-"))
    capture, run = work / "capture", work / "run"
    if run.exists():
        shutil.rmtree(run)

    from avatar.data.synthetic import SyntheticConfig, make_synthetic_capture

    t0 = time.perf_counter()
    if not (capture / "meta.json").is_file():
        make_synthetic_capture(capture, SyntheticConfig(n_frames=args.frames, resolution=args.resolution), progress=False)
    shutil.copyfile(capture / "ground_truth.npz", capture / "tracking.npz")  # ground-truth tracking
    capture_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "avatar", "train", f"capture={capture}", f"out={run}",
           f"train.iterations={args.iterations}", f"train.resolution={args.resolution}", f"renderer.backend={args.backend}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=dict(os.environ))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(json.dumps({"benchmark": "train", "error": proc.stdout[-2000:] + proc.stderr[-2000:]}))
        sys.exit(1)
    metrics = json.loads((run / "metrics.json").read_text())
    print(json.dumps({
        "benchmark": "train",
        "data": f"synthetic ICT capture, {args.frames} frames, ground-truth tracking",
        "resolution": args.resolution,
        "iterations": metrics["iterations"],
        "heldout_psnr": metrics["psnr"],
        "heldout_ssim": metrics["ssim"],
        "heldout_lpips": metrics["lpips"],
        "heldout_frames": metrics["heldout_frames"],
        "n_gaussians": metrics["n_gaussians"],
        "train_seconds": metrics["train_seconds"],
        "seconds_per_iteration": metrics["seconds_per_iteration"],
        "wall_seconds": round(wall, 1),
        "capture_seconds": round(capture_s, 1),
        "backend": metrics["backend"],
        "device": metrics["device"],
        "target_psnr": 30.0,
    }))


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()

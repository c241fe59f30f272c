"""Benchmark of `avatar train` on a synthetic ground-truth capture: prints ONE JSON line.

Makes the synthetic ICT capture (textured from the astronaut portrait; needs the ICT assets:
AVATAR_ASSETS), uses its ground-truth parameters as the tracking, trains at the given
resolution on this machine and reports the held-out PSNR / SSIM and the wall time. The
issue's target: held-out PSNR >= 30 dB at 256x256 on a 2-core CPU.

With ``--capture DIR`` it trains on a tracked capture instead (e.g. ``head_talking_512.mp4``
after ``avatar preprocess`` and ``avatar track``; targets 27 dB / SSIM 0.92 at 256x256);
further arguments are passed to ``avatar train`` as overrides. The line also gives the
held-out figures split by head pose (``by_pose`` of metrics.json).

    python benchmarks/train.py [--frames 120] [--resolution 256] [--iterations 3000] [--work DIR]
    python benchmarks/train.py --capture CAP [--work DIR] avatar=mesh_gaussians_dynamic train.gaussians.uv_resolution=64 train.densify.max_gaussians=20000
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
    parser.add_argument("--work", default=None, help="folder for the synthetic capture and the run (default: a temp folder)")
    parser.add_argument("--capture", default=None, help="a tracked capture to train on instead of the synthetic one")
    args, overrides = parser.parse_known_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="avatar-bench-train-"))
    capture, run = work / "capture", work / "run"
    if run.exists():
        shutil.rmtree(run)

    t0 = time.perf_counter()
    if args.capture:
        capture = Path(args.capture)
        if not (capture / "tracking.npz").is_file():
            parser.error(f"{capture} has no tracking.npz: run avatar preprocess and avatar track first")
        data = f"{capture}, its tracking"
    else:
        from avatar.synthetic.capture import SyntheticConfig, make_synthetic_capture

        if not (capture / "meta.json").is_file():
            make_synthetic_capture(capture, SyntheticConfig(n_frames=args.frames, resolution=args.resolution),
                                   progress=False)
        shutil.copyfile(capture / "ground_truth.npz", capture / "tracking.npz")  # ground-truth tracking
        data = f"synthetic ICT capture, {args.frames} frames, ground-truth tracking"
    capture_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "avatar", "train", f"capture={capture}", f"out={run}",
           f"train.iterations={args.iterations}", f"train.resolution={args.resolution}", f"renderer.backend={args.backend}",
           *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=dict(os.environ))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(json.dumps({"benchmark": "train", "error": proc.stdout[-2000:] + proc.stderr[-2000:]}))
        sys.exit(1)
    metrics = json.loads((run / "metrics.json").read_text())
    print(json.dumps({
        "benchmark": "train",
        "data": data,
        "overrides": overrides,
        "resolution": args.resolution,
        "iterations": metrics["iterations"],
        "heldout_psnr": metrics["psnr"],
        "heldout_ssim": metrics["ssim"],
        "heldout_lpips": metrics["lpips"],
        "heldout_frames": metrics["heldout_frames"],
        "heldout_by_pose": metrics.get("by_pose"),
        "heldout_pose_aligned": {k: metrics["pose_aligned"][k] for k in ("psnr", "ssim")} if "pose_aligned" in metrics else None,
        "n_gaussians": metrics["n_gaussians"],
        "train_seconds": metrics["train_seconds"],
        "seconds_per_iteration": metrics["seconds_per_iteration"],
        "wall_seconds": round(wall, 1),
        "capture_seconds": round(capture_s, 1),
        "backend": metrics["backend"],
        "device": metrics["device"],
        "target_psnr": 27.0 if args.capture else 30.0,
        "target_ssim": 0.92 if args.capture else None,
    }))


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()

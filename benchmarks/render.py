"""Benchmark of `avatar render`: a driven animation of a trained avatar; prints one JSON line.

    python benchmarks/render.py --run RUN_DIR [--drive SOURCE] [--size 512] [--frames 300] [--out DIR]

SOURCE: a tracked capture folder, a parameter .npz, an ARKit CSV or a video (tracked on the
fly). Figures: frames, render-only FPS (rasterization), end-to-end FPS (retargeting, posing,
rasterization and video encoding) and the load average. The issue asks for the FPS of a
300-frame animation at 512x512 on a CPU and on a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=os.environ.get("AVATAR_BENCH_RUN"))
    parser.add_argument("--drive", default=None, help="default: the run's own capture (its config.yaml)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--out", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not args.run:
        print(json.dumps({"benchmark": "render", "skipped": "needs a trained avatar: --run RUN_DIR or AVATAR_BENCH_RUN=RUN_DIR"}))
        return

    from avatar.device import pick_device
    from avatar.drive.animate import AvatarPackage, render_driven
    from avatar.drive.sources import VIDEO_SUFFIXES, load_drive

    if args.drive is None:
        from avatar.io.run_folder import run_capture

        capture = run_capture(args.run)
        if capture is None:
            sys.exit(f"benchmarks/render.py: pass --drive (no {Path(args.run) / 'config.yaml'} to take the run's capture from)")
        args.drive = str(capture)
    device = pick_device(args.device)
    package = AvatarPackage.load(args.run, device)
    t0 = time.perf_counter()
    options = {}
    if Path(args.drive).suffix.lower() in VIDEO_SUFFIXES:
        options = {"model": package.model.to("cpu"), "max_frames": args.frames}
    drive = load_drive(Path(args.drive), package.expression_names, **options)
    package.model.to(device)
    n = min(args.frames, drive.n_frames)
    drive.expression, drive.rotation, drive.translation = drive.expression[:n], drive.rotation[:n], drive.translation[:n]
    drive.valid = None if drive.valid is None else drive.valid[:n]
    load_seconds = time.perf_counter() - t0
    out = Path(args.out or tempfile.mkdtemp(prefix="avatar-bench-render-")) / "anim.mp4"
    report = render_driven(package, drive, out, size=args.size, progress=False)
    print(json.dumps({
        "benchmark": "render", "run": str(args.run), "drive": Path(args.drive).name, "frames": report["frames"],
        "size": report["size"], "n_gaussians": report["n_gaussians"], "backend": report["backend"],
        "device": report["device"], "render_fps": report["render_fps"], "end_to_end_fps": report["end_to_end_fps"],
        "driver_load_seconds": round(load_seconds, 2), "output": str(out),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

"""Benchmark of `avatar live` with a trained avatar and a video standing in for the webcam; prints one JSON line.

    python benchmarks/live.py --run RUN_DIR [--source VIDEO] [--size 256] [--frames 300] [--max-gaussians auto|N|none]
        [--still-eyes]

The video is delivered at its own frame rate, like a camera; capture, MediaPipe + the
per-frame fitter, and rendering run as concurrent stages (``avatar.drive.live``), headless.
Figures: frames shown, FPS, capture-to-display latency (mean, p95) and median ms per stage,
the avatar's Gaussians (rendered / trained), the PSNR of the Gaussian budget's renders
against the whole avatar's over the budget's typical poses (``max_gaussians``, see
``avatar.drive.animate``), and the machine's load average (other processes change timings).
The issue's targets on a 2-core CPU at 256x256: >= 15 FPS and p95 latency <= 150 ms.
Default source: ``drive_expressive_512.mp4`` from ``$AVATAR_TEST_DATA`` or ``../shared/data/real``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_source() -> Path:
    return Path(os.environ.get("AVATAR_TEST_DATA", ROOT.parent / "shared" / "data" / "real")) / "drive_expressive_512.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=os.environ.get("AVATAR_BENCH_RUN"), help="run folder of `avatar train` (its avatar.pt) or an avatar.pt")
    parser.add_argument("--source", default=None)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--max-gaussians", default="auto", help="a number, auto (as `avatar live`) or none (all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-driver-identity", action="store_true", help="drive with the mean face (retarget.driver_identity=false)")
    parser.add_argument("--still-eyes", action="store_true", help="the eyeballs do not turn with the driver's gaze (retarget.eyes=0)")
    parser.add_argument("--deformer-dtype", default="auto", choices=("auto", "float32", "bfloat16", "mlp"),
                        help="the expression MLP's posing as `avatar live` deformer_dtype=...; mlp: the trained MLP as is")
    parser.add_argument("--pose-every", type=int, default=3, help="portraits: the driver's pose on every Nth frame")
    parser.add_argument("--schedule", default="overlap", choices=("overlap", "sequential"),
                        help="when the tracker starts on the next frame (`avatar live` schedule)")
    parser.add_argument("--render-threads", default="auto",
                        help="the renderer's threads (`avatar live` render_threads): a number or auto")
    parser.add_argument("--warp-downscale", type=int, default=4,
                        help="avatar=portrait: its body texture's warp drawn at 1/N size (`avatar live` body_warp_downscale)")
    args = parser.parse_args()
    if not args.run:
        print(json.dumps({"benchmark": "live", "skipped": "needs a trained avatar: --run RUN_DIR or AVATAR_BENCH_RUN=RUN_DIR"}))
        return

    import numpy as np
    import torch

    from avatar.device import pick_device
    from avatar.drive.animate import AvatarPackage, body_warp_downscale, limit_gaussians
    from avatar.drive.live import run_live
    from avatar.drive.retarget import RetargetConfig
    from avatar.gaussians.deform import fix_deformer

    source = Path(args.source) if args.source else default_source()
    if not source.is_file():
        sys.exit(f"benchmarks/live.py: no source video {source} (pass --source or set AVATAR_TEST_DATA)")
    device = pick_device(args.device)
    package = AvatarPackage.load(args.run, device)
    n_trained = len(package.gaussians)
    choice = args.max_gaussians.lower()
    budget = int(choice) if choice.isdigit() else {"auto": "auto", "none": None}.get(choice, choice)
    views = package.budget_views()
    K, width, height = package.camera(args.size)
    viewmat = package.state["viewmat"].to(device, torch.float32)
    full = [package.render_frame(*v, viewmat, K, width, height)[0] for v in views]
    limit_gaussians(package, budget)
    psnr = None
    if len(package.gaussians) < n_trained:  # what the budget costs: its renders against the full avatar's
        mse = np.mean([np.mean((package.render_frame(*v, viewmat, K, width, height)[0] / 255.0 - f / 255.0) ** 2)
                       for v, f in zip(views, full)])
        psnr = round(float(-10 * np.log10(max(mse, 1e-12))), 2)
    deformer = None if args.deformer_dtype == "mlp" else fix_deformer(package, args.deformer_dtype)
    warp = body_warp_downscale(package, args.warp_downscale)
    report = run_live(package, str(source), display=False, size=args.size, max_frames=args.frames,
                      driver_identity=not args.no_driver_identity, pose_every=args.pose_every,
                      schedule=args.schedule, render_threads=args.render_threads,
                      retarget_cfg=RetargetConfig(eyes=0.0) if args.still_eyes else None)
    print(json.dumps({
        "benchmark": "live", "run": str(args.run), "source": source.name, "size": args.size,
        "n_gaussians": len(package.gaussians), "n_gaussians_trained": n_trained,
        "budget_psnr_vs_all_db": psnr, "expression_mlp_dtype": deformer, "body_warp_downscale": warp,
        "pose_every": args.pose_every, "schedule": args.schedule, "eyes_turn": not args.still_eyes,
        "device": str(device), "torch_threads": torch.get_num_threads(),
        **{k: report[k] for k in ("frames_captured", "frames_shown", "fps", "latency_ms", "stage_ms", "stop_reason",
                                  "render_threads", "driver_identity")},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "targets": {"fps": 15, "latency_p95_ms": 150},
    }))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

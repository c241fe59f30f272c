"""Benchmark of `avatar render` for a body avatar driven by a novel motion: prints ONE JSON line.

Writes a motion file in the AMASS/SMPL layout (avatar.synthetic.body_capture.amass_motion: a
squat, arm circles, a kick and a quarter turn, none of which the synthetic capture shows),
drives the trained body avatar with it through the training camera at SIZE pixels and reports
the rasterization-only FPS and the end-to-end FPS (retargeting, skinning, rasterization, video
encoding). Runs on CUDA when present (--device auto). The issue's target: >= 15 FPS at 256x256
on the CPU.

    python benchmarks/render_body.py --run RUN_DIR [--size 256] [--frames 120] [--device auto] [--camera tracked]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained body run folder (benchmarks/train_body.py --work DIR: DIR/run)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--camera", default="tracked")
    parser.add_argument("--out", default=None, help="folder for the motion file and the video (default: a temp folder)")
    args = parser.parse_args()

    import torch

    from avatar.device import pick_device
    from avatar.drive.body_motion import load_body_drive, render_body_driven
    from avatar.gaussians.package import AvatarPackage
    from avatar.synthetic.body_capture import amass_motion

    out = Path(args.out or tempfile.mkdtemp(prefix="avatar-bench-render-body-"))
    out.mkdir(parents=True, exist_ok=True)
    motion = out / "novel_motion.npz"
    np.savez(motion, **amass_motion(args.frames, 30.0))
    t0 = time.perf_counter()
    package = AvatarPackage.load(args.run, pick_device(args.device))
    load_s = time.perf_counter() - t0
    drive = load_body_drive(motion, package, fps=30.0)
    report = render_body_driven(package, drive, out / "novel_motion.mp4", camera=args.camera, size=args.size,
                                progress=False)
    print(json.dumps({
        "benchmark": "render_body", "run": str(args.run), "motion": "amass_motion (squat, arm circles, kick, turn)",
        "frames": report["frames"], "size": report["size"], "n_gaussians": report["n_gaussians"],
        "device": report["device"], "backend": report["backend"], "render_fps": report["render_fps"],
        "end_to_end_fps": report["end_to_end_fps"], "load_seconds": round(load_s, 2), "target_fps_cpu": 15,
        "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0], "video": str(out / "novel_motion.mp4"),
    }))


if __name__ == "__main__":
    main()

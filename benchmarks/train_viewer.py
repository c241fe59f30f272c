"""Benchmark: how much `train.viewer=true` slows training; ONE JSON line.

Trains the same short run on a small synthetic ICT capture (ground-truth tracking; needs the ICT
assets: AVATAR_ASSETS) with and without the viewer, alternating, ``--repeats`` times each, in
this process, and compares the wall time of ``Trainer.run`` (the viewer serving, no page open).
Target (issue 25): at most 10% slower.

    python benchmarks/train_viewer.py [--iterations 200] [--repeats 3] [--every 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=100, help="train.viewer_every")
    args = parser.parse_args()
    from avatar.synthetic.capture import SyntheticConfig, make_synthetic_capture
    from avatar.train.session import setup
    from avatar.view.training import TrainingViewer

    work = Path(tempfile.mkdtemp(prefix="avatar-bench-train-viewer-"))
    capture = work / "capture"
    make_synthetic_capture(capture, SyntheticConfig(n_frames=args.frames, resolution=args.resolution), progress=False)
    shutil.copyfile(capture / "ground_truth.npz", capture / "tracking.npz")
    times: dict[str, list[float]] = {"off": [], "on": []}
    for k in range(args.repeats):
        for mode in ("off", "on"):
            out = work / f"run_{mode}_{k}"
            cfg = OmegaConf.create({"capture": str(capture), "out": str(out), "model": None, "device": "cpu",
                                    "resume": False, "renderer": {"backend": "torch"},
                                    "train": {"iterations": args.iterations, "resolution": args.resolution,
                                              "preview_every": 0, "checkpoint_every": 0,
                                              "gaussians": {"uv_resolution": 32}}})
            trainer, _, _ = setup(cfg, write_config=False)
            viewer = TrainingViewer(trainer, port=0, every=args.every) if mode == "on" else None
            t0 = time.perf_counter()
            trainer.run(progress=False, on_step=None if viewer is None else viewer.step)
            times[mode].append(time.perf_counter() - t0)
            if viewer is not None:
                viewer.close()
    shutil.rmtree(work, ignore_errors=True)
    off, on = sorted(times["off"])[len(times["off"]) // 2], sorted(times["on"])[len(times["on"]) // 2]
    print(json.dumps({
        "benchmark": "train_viewer",
        "data": f"synthetic ICT capture, {args.frames} frames, {args.resolution} px, uv_resolution 32",
        "iterations": args.iterations, "viewer_every": args.every, "repeats": args.repeats,
        "seconds_without_viewer": [round(t, 2) for t in times["off"]],
        "seconds_with_viewer": [round(t, 2) for t in times["on"]],
        "slowdown_percent": round(100 * (on / off - 1), 1),
        "target_slowdown_percent": 10.0,
    }))


if __name__ == "__main__":
    main()

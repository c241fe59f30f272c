"""Benchmark: how much `train.viewer=true` slows training; ONE JSON line.

Trains the same short run on a small synthetic ICT capture (ground-truth tracking; needs the ICT
assets: AVATAR_ASSETS) with and without the viewer, alternating, ``--repeats`` times each, in
this process, and compares the median CPU time (all threads of the process: training and the
viewer's, so other jobs on the machine matter little) and wall time of ``Trainer.run``: the viewer serving with no page
open, or with ``--browser`` a headless Chromium showing it on the same machine (its software WebGL
then competes for the same cores). ``--mode``: the viewer's ``train.viewer_mode`` (``image``, the
default: the training renders the page's view and sends a picture; ``splats``: the browser splats
the Gaussians). With a page, the clock starts once the page has connected and
``--settle`` seconds have passed (the page's start-up, a few seconds of the browser's CPU once,
is reported apart as ``page_start_seconds``): the steady cost of watching a training, which
lasts minutes, not the one-off load folded into a run of seconds. Target (issue 25): at most 10% slower.

    python benchmarks/train_viewer.py [--iterations 200] [--repeats 5] [--every 100] [--browser] [--settle 5]
        [--resolution 96] [--uv-resolution 32] [--plot-seconds 5] [--mode image|splats]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from omegaconf import OmegaConf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--uv-resolution", type=float, default=32, help="train.gaussians.uv_resolution (64: ~11.5k Gaussians)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, default=100, help="train.viewer_every")
    parser.add_argument("--browser", action="store_true", help="keep a headless Chromium page on the viewer")
    parser.add_argument("--mode", default="image", choices=("image", "splats"),
                        help="train.viewer_mode: pictures rendered by the training, or splats drawn by the browser")
    parser.add_argument("--plot-seconds", type=float, default=5.0, help="train.viewer_plot_seconds: the plot and status refresh")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after the page connected before the clock starts (--browser)")
    args = parser.parse_args()
    from avatar.synthetic.capture import SyntheticConfig, make_synthetic_capture
    from avatar.train.session import setup
    from avatar.view.training import TrainingViewer

    work = Path(tempfile.mkdtemp(prefix="avatar-bench-train-viewer-"))
    capture = work / "capture"
    make_synthetic_capture(capture, SyntheticConfig(n_frames=args.frames, resolution=args.resolution), progress=False)
    shutil.copyfile(capture / "ground_truth.npz", capture / "tracking.npz")
    times: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}  # this process's CPU seconds, all its threads
    page_start: list[float] = []
    pictures: list[int] = []  # image mode: pictures sent per run
    picture_ms: list[float] = []
    for k in range(args.repeats):
        for mode in ("off", "on"):
            out = work / f"run_{mode}_{k}"
            cfg = OmegaConf.create({"capture": str(capture), "out": str(out), "model": None, "device": "cpu",
                                    "resume": False, "renderer": {"backend": "torch"},
                                    "train": {"iterations": args.iterations, "resolution": args.resolution,
                                              "preview_every": 0, "checkpoint_every": 0,
                                              "gaussians": {"uv_resolution": args.uv_resolution}}})
            trainer, _, _ = setup(cfg, write_config=False)
            viewer = TrainingViewer(trainer, port=0, every=args.every, plot_seconds=args.plot_seconds,
                                    mode=args.mode) if mode == "on" else None
            with _page(viewer.server if viewer is not None and args.browser else None, args.settle, page_start):
                t0, c0 = time.perf_counter(), time.process_time()
                trainer.run(progress=False, on_step=None if viewer is None else viewer.step)
                times[mode].append(time.perf_counter() - t0)
                cpu[mode].append(time.process_time() - c0)
            if viewer is not None:
                pictures.append(viewer.pictures)
                picture_ms.extend(viewer.picture_ms)
                viewer.close()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "benchmark": "train_viewer",
        "data": f"synthetic ICT capture, {args.frames} frames, {args.resolution} px, uv_resolution {args.uv_resolution:g}",
        "iterations": args.iterations, "viewer_every": args.every, "repeats": args.repeats,
        "viewer_mode": args.mode,
        "page_open": "headless chromium on the same machine" if args.browser else "none",
        "settle_seconds": args.settle if args.browser else None, "plot_seconds": args.plot_seconds,
        "page_start_seconds": [round(t, 2) for t in page_start] or None,
        "seconds_without_viewer": [round(t, 2) for t in times["off"]],
        "seconds_with_viewer": [round(t, 2) for t in times["on"]],
        "cpu_seconds_without_viewer": [round(t, 2) for t in cpu["off"]],
        "cpu_seconds_with_viewer": [round(t, 2) for t in cpu["on"]],
        # CPU time of the process (training + the viewer's threads): what the viewer adds on an idle machine,
        # at most; the wall time also carries the other jobs running on the machine.
        "slowdown_percent_cpu": round(100 * (median(cpu["on"]) / median(cpu["off"]) - 1), 1),
        "slowdown_percent_wall": round(100 * (median(times["on"]) / median(times["off"]) - 1), 1),
        "pictures_per_run": pictures or None,
        "ms_per_picture": round(float(median(picture_ms)), 1) if picture_ms else None,
        "target_slowdown_percent": 10.0,
    }))


@contextlib.contextmanager
def _page(server, settle: float, started: list):
    """A headless Chromium page on ``server`` (a :class:`SplatServer`; nothing when None) for the
    block, entered once the page has connected and ``settle`` more seconds have passed; the
    seconds from navigation to connection are appended to ``started``."""
    if server is None:
        yield
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import browser_page

    with browser_page() as page:
        t0 = time.perf_counter()
        page.goto(server.url)
        while not server.server.get_clients():
            if time.perf_counter() - t0 > 60:
                raise RuntimeError(f"the page on {server.url} did not connect within 60 s")
            time.sleep(0.05)
        started.append(time.perf_counter() - t0)
        time.sleep(settle)
        yield


if __name__ == "__main__":
    main()

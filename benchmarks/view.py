"""Benchmark of `avatar view`: page load time and posed frames pushed per second; ONE JSON line.

Starts `avatar view run=RUN drive=DRIVE` with playback as fast as it goes (``view.fps=1000``), opens
the page in headless Chromium (Debian's chromium, SwiftShader WebGL, through Playwright), and reports
- ``page_load_seconds``: from navigation start to the first frame whose canvas shows the avatar
  (read in the page, on its own clock: tests/browser.py);
- ``pushed_fps``: posed frames pushed to the connected page per second during playback, as the
  viewer's status line reports it (pose + pack + send of every Gaussian of every frame).
Targets (issue 25): page load < 5 s, >= 10 FPS for a 20k-Gaussian avatar on a 2-core CPU.

    python benchmarks/view.py --run /tmp/w/run_head_talking_512 --drive /tmp/w/cap_head_talking_512
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import AVATAR_SHOWN_JS, avatar_shown_seconds, browser_page, missing_reason  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=os.environ.get("AVATAR_BENCH_RUN"), help="run folder of `avatar train`")
    parser.add_argument("--drive", default=None, help="what to play (default: the run's capture)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to play")
    parser.add_argument("--max-gaussians", type=int, default=None, help="view.max_gaussians (default: all)")
    parser.add_argument("--deformer-dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="view.deformer_dtype: the expression MLP's precision when posing")
    args = parser.parse_args()
    if not args.run:
        print(json.dumps({"benchmark": "view", "skipped": "needs a trained avatar: --run RUN_DIR or AVATAR_BENCH_RUN=RUN_DIR"}))
        return
    if args.drive is None:
        from avatar.io.run_folder import run_capture

        capture = run_capture(args.run)
        if capture is None:
            sys.exit(f"benchmarks/view.py: pass --drive (no {Path(args.run) / 'config.yaml'} to take the run's capture from)")
        args.drive = str(capture)
    if missing_reason():
        print(json.dumps({"benchmark": "view", "error": missing_reason()}))
        sys.exit(1)
    alone_ms = _pose_pack_ms(args.run, args.drive, args.max_gaussians, args.deformer_dtype)
    limit = [] if args.max_gaussians is None else [f"view.max_gaussians={args.max_gaussians}"]
    proc = subprocess.Popen([sys.executable, "-m", "avatar", "view", f"run={args.run}", f"drive={args.drive}",
                             "view.port=0", "view.fps=1000", f"view.seconds={args.seconds + 60}",
                             f"view.deformer_dtype={args.deformer_dtype}", *limit],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, gaussians = None, None
    for line in proc.stdout:
        found = re.search(r"view: ([\d,]+) Gaussians at (http://\S+) ", line)
        if found:
            gaussians, url = int(found.group(1).replace(",", "")), found.group(2)
            break
    if url is None:
        print(json.dumps({"benchmark": "view", "error": "avatar view did not start"}))
        sys.exit(1)
    try:
        with browser_page() as page:
            page.add_init_script(AVATAR_SHOWN_JS)
            page.goto(url)
            load = avatar_shown_seconds(page)
            page.get_by_role("button", name="Play").click()
            time.sleep(3.0)  # settle
            rates, work = [], []
            end = time.perf_counter() + args.seconds
            while time.perf_counter() < end:
                time.sleep(1.0)
                found = re.search(r"pushed ([\d.]+) FPS · pose \+ pack (\d+) ms", page.locator("body").inner_text())
                if found:
                    rates.append(float(found.group(1)))
                    work.append(float(found.group(2)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(json.dumps({
        "benchmark": "view",
        "run": args.run,
        "n_gaussians": gaussians, "deformer_dtype": args.deformer_dtype,
        "page_load_seconds": round(load, 2),
        "pose_pack_ms_without_browser": round(alone_ms, 1),
        "pushed_fps": round(float(np.median(rates)), 1) if rates else None,
        "pose_pack_ms": round(float(np.median(work)), 1) if work else None,
        "browser": "headless chromium, SwiftShader WebGL, on the same machine",
        "target_page_load_seconds": 5.0,
        "target_pushed_fps": 10.0,
    }))


def _pose_pack_ms(run: str, drive: str, max_gaussians: int | None, deformer_dtype: str = "auto",
                  frames: int = 20) -> float:
    """Median milliseconds to pose and pack one driven frame in this process, no page open."""
    import torch

    from avatar.drive.animate import limit_gaussians
    from avatar.drive.sources import load_drive
    from avatar.gaussians.package import AvatarPackage
    from avatar.drive.animate import driven_poses
    from avatar.gaussians.deform import fix_deformer
    from avatar.view.splats import pack_world

    package = AvatarPackage.load(run, torch.device("cpu"))
    limit_gaussians(package, max_gaussians)
    fix_deformer(package, deformer_dtype)  # as avatar view does
    expression, rotation, translation = driven_poses(package, load_drive(drive, package.expression_names))
    viewmat, times = package.state["viewmat"].float(), []
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32)[None])  # noqa: E731
    with torch.no_grad():
        for i in range(frames + 1):
            t0 = time.perf_counter()
            world = package.posed_gaussians(t(expression[i]), t(rotation[i]), t(translation[i]))
            pack_world(world, viewmat, package.gaussians.sh_degree)
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times[1:]))


if __name__ == "__main__":
    main()

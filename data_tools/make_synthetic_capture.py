"""Write a synthetic ground-truth capture: a textured ICT head under a scripted performance.

    python data_tools/make_synthetic_capture.py OUT_DIR [--frames 120] [--resolution 512] [--seed 0]
        [--cache-dir DIR] [--gaze] [--preview strip.png]

Needs ICT-FaceKit (``AVATAR_ASSETS`` or ``python data_tools/fetch_ict.py``). The folder
layout and ``ground_truth.npz`` are described in :mod:`avatar.synthetic.capture`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from avatar.synthetic.capture import SyntheticConfig, make_synthetic_capture, preview_strip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="capture folder to write (created; an old capture there is replaced)")
    parser.add_argument("--frames", type=int, default=SyntheticConfig.n_frames)
    parser.add_argument("--resolution", type=int, default=SyntheticConfig.resolution)
    parser.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    parser.add_argument("--cache-dir", default=None, help="texture cache (default: the user cache)")
    parser.add_argument("--gaze", action="store_true", help="also move the eyes (left, right, up, down)")
    parser.add_argument("--preview", default=None, help="also save a strip of frames with landmarks here (PNG)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = SyntheticConfig(n_frames=args.frames, resolution=args.resolution, seed=args.seed,
                             cache_dir=args.cache_dir, gaze=args.gaze)
    result = make_synthetic_capture(args.out_dir, config)
    if args.preview:
        import cv2  # noqa: PLC0415

        cv2.imwrite(args.preview, cv2.cvtColor(preview_strip(result.root), cv2.COLOR_RGB2BGR))
    print(json.dumps(result.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

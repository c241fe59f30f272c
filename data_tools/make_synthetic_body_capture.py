"""Write a synthetic ground-truth body capture: Anny walking, raising its arms and turning a full circle.

    python data_tools/make_synthetic_body_capture.py OUT_DIR [--frames 80] [--resolution 256] [--seed 0]
        [--motion novel_motion.npz]

Needs `pip install anny`. The folder (frames, masks, true pose landmarks, ground_truth.npz and
the truth as tracking.npz) is described in :mod:`avatar.synthetic.body_capture`. ``--motion``
also writes a novel motion in the AMASS/SMPL layout (for ``avatar render drive=``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from avatar.synthetic.body_capture import BodySyntheticConfig, amass_motion, make_body_capture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="capture folder to write")
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--resolution", type=int, default=BodySyntheticConfig.resolution)
    parser.add_argument("--seed", type=int, default=BodySyntheticConfig.seed)
    parser.add_argument("--motion", default=None, help="also write a novel AMASS-layout motion file here (.npz)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = make_body_capture(args.out_dir, BodySyntheticConfig(n_frames=args.frames, resolution=args.resolution,
                                                               seed=args.seed))
    if args.motion:
        from avatar.io.atomic import atomic_write

        atomic_write(args.motion, lambda f: np.savez(f, **amass_motion()))
    print(json.dumps(json.loads((root / "synthetic_report.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

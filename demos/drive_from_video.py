"""Render a trained avatar driven by another person's video (cross-identity reenactment).

    python demos/drive_from_video.py runs/me/avatar.pt driver.mp4 out.mp4 [--side-by-side]

The driver's identity is estimated from its own frames, then it is tracked frame by frame;
its expressions are taken relative to its neutral face and its head motion relative to its
mean pose, on top of the avatar's rest face and pose, so the avatar keeps its identity.
"""

from __future__ import annotations

import argparse
import json

from avatar.device import pick_device
from avatar.drive.animate import AvatarPackage, render_driven
from avatar.drive.sources import load_drive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("driver", help="a video of a face")
    parser.add_argument("out")
    parser.add_argument("--side-by-side", action="store_true", help="driver | avatar")
    parser.add_argument("--max-frames", type=int, default=None)
    args = parser.parse_args()
    package = AvatarPackage.load(args.package, pick_device("auto"))
    drive = load_drive(args.driver, package.expression_names, model=package.model.to("cpu"),
                       max_frames=args.max_frames, keep_frames=args.side_by_side)
    package.model.to(package.device)
    report = render_driven(package, drive, args.out, layout="side_by_side" if args.side_by_side else "avatar")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

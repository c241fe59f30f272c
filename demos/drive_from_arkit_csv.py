"""Render a trained avatar driven by an ARKit blendshape recording (Live Link Face CSV).

    python demos/drive_from_arkit_csv.py runs/me/avatar.pt take.csv out.mp4 [--camera orbit]

ICT's expressions are ARKit's shapes split into left/right, so the CSV columns drive them by
name; HeadYaw/HeadPitch/HeadRoll (radians) turn the head.
"""

from __future__ import annotations

import argparse
import json

from avatar.device import pick_device
from avatar.drive.animate import AvatarPackage, render_driven
from avatar.drive.sources import from_arkit_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("csv", help="Live Link Face CSV")
    parser.add_argument("out")
    parser.add_argument("--camera", default="tracked", choices=("tracked", "fixed", "orbit"))
    parser.add_argument("--fps", type=float, default=60.0, help="the recording's frame rate")
    args = parser.parse_args()
    package = AvatarPackage.load(args.package, pick_device("auto"))
    drive = from_arkit_csv(args.csv, package.expression_names, fps=args.fps)
    report = render_driven(package, drive, args.out, camera=args.camera)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

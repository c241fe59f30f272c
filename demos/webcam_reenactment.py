"""Your trained avatar mimics you live: webcam -> MediaPipe + per-frame fit -> rendered avatar.

    python demos/webcam_reenactment.py runs/me/avatar.pt [--camera 0] [--record session.mp4]

Keys in the window: q quits, r takes your current face as neutral, s saves a snapshot.
"""

from __future__ import annotations

import argparse
import json

from avatar.device import pick_device
from avatar.drive.animate import AvatarPackage
from avatar.drive.live import run_live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="avatar.pt (or the run folder holding it)")
    parser.add_argument("--camera", default="0", help="webcam index, or a video standing in for one")
    parser.add_argument("--record", default=None, help="also write the avatar to this .mp4")
    parser.add_argument("--headless", action="store_true", help="no window (with a video source)")
    args = parser.parse_args()
    package = AvatarPackage.load(args.package, pick_device("auto"))
    report = run_live(package, args.camera, display=not args.headless, out=args.record)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

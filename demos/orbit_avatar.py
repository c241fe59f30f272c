"""Render a turntable video of a trained avatar (its canonical pose: neutral expression).

    python demos/orbit_avatar.py runs/me/avatar.pt orbit.mp4 [--frames 90] [--size 512]
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm

from avatar.io.video import VideoWriter
from avatar.device import pick_device
from avatar.gaussians.base import FrameState
from avatar.gaussians.package import AvatarPackage
from avatar.geometry.cameras import intrinsics_from_fov, orbit_viewmats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="avatar.pt written by avatar train / avatar export")
    parser.add_argument("out", help="output .mp4")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = pick_device(args.device)
    package = AvatarPackage.load(args.package, device)
    state, gaussians, model = package.state, package.gaussians, package.model
    with torch.no_grad():
        shape = state["shape"][None].to(device)
        w = gaussians(FrameState(model(shape=shape).vertices, rotation=shape.new_zeros(1, 3)))  # canonical pose
    viewmats = orbit_viewmats(args.frames, radius=0.65, height=0.03, target=(0.0, 0.0, 0.0), device=device)
    K = intrinsics_from_fov(args.size, args.size, 30.0, device=device)[None]
    background = state["background"].to(device)[None]
    with VideoWriter(args.out, fps=30) as video, torch.no_grad():
        for i in tqdm(range(args.frames), desc="orbit", unit="frame"):
            img, _, _ = w.render(viewmats[i : i + 1], K, args.size, args.size, gaussians.sh_degree,
                                 backgrounds=background)
            video.write(img[0])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

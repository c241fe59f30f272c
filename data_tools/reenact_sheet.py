"""A contact sheet of avatars driven by one video, at the driver's telling moments.

    python data_tools/reenact_sheet.py --drive VIDEO --run RUN [RUN ...] --out sheet.png
        [--size 160] [--max-frames N] [--device auto]

The first row is the driver (its frame cropped round the face), then one row per avatar,
rendered as ``avatar render run=RUN drive=VIDEO`` renders it: the same per-frame fit of the
driver, the same retargeting defaults, the avatar's training camera. The columns are the
driver's moments, picked from MediaPipe's measures of the driver
(:mod:`avatar.landmarks.face_measures`): its most relaxed frame (every expression measure
nearest its median), the jaw widest open, the mouth widest, the eyes most shut, the brows
highest and the head turned furthest. Moments closer than a third of a second to one already
picked give way to the next best frame. A look at one picture says whether the avatar
follows; ``benchmarks/reenact.py`` gives the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PROG = "reenact_sheet"
MOMENTS = ("rest", "jaw open", "wide mouth", "eyes shut", "brows up", "turned")


def pick_moments(measures: dict[str, np.ndarray], min_gap: int = 8) -> list[tuple[str, int]]:
    """``[(moment, frame)]`` for :data:`MOMENTS` from per-frame measures (``face_measures``'
    ``eye``, ``jaw``, ``mouth_width``, ``brow``, ``yaw``; NaN where no face). Each moment takes
    the best frame at least ``min_gap`` frames from those already taken (the best one when all
    are that close); moments with no finite frame are left out."""
    expr = np.stack([measures[k] for k in ("eye", "jaw", "mouth_width", "brow")], axis=1)
    ok = np.isfinite(expr).all(axis=1) & np.isfinite(measures["yaw"])
    if not ok.any():
        return []
    z = (expr - np.nanmedian(expr[ok], axis=0)) / np.maximum(np.nanstd(expr[ok], axis=0), 1e-9)
    scores = {  # higher is better
        "rest": -np.abs(z).sum(axis=1),
        "jaw open": measures["jaw"],
        "wide mouth": measures["mouth_width"],
        "eyes shut": -measures["eye"],
        "brows up": measures["brow"],
        "turned": np.abs(measures["yaw"]),
    }
    taken: list[tuple[str, int]] = []
    for name in MOMENTS:
        order = [int(i) for i in np.argsort(-np.where(ok, scores[name], -np.inf)) if ok[i]]
        far = [i for i in order if all(abs(i - j) >= min_gap for _, j in taken)]
        taken.append((name, (far or order)[0]))
    return taken


def face_crop(frame: np.ndarray, points: np.ndarray, scale: float = 1.8) -> np.ndarray:
    """A square crop of ``frame`` round the landmarks ``points [478, >=2]`` (pixels), ``scale``
    times their extent, padded with white where it leaves the frame."""
    h, w = frame.shape[:2]
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    centre, half = (lo + hi) / 2, max(hi - lo) * scale / 2
    x0, y0 = (centre - half).round().astype(int)
    side = int(round(2 * half))
    out = np.full((side, side, 3), 255, np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return out


def compose(rows: list[tuple[str, list[np.ndarray]]], columns: list[str], size: int) -> np.ndarray:
    """One image: a header with the column names, then each ``(label, tiles)`` row with its
    label on the left; tiles resized to ``size`` square."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    label_w, header_h = max(120, size // 2), 22
    sheet = Image.new("RGB", (label_w + size * len(columns), header_h + size * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(columns):
        draw.text((label_w + c * size + 4, 5), name, fill="black")
    for r, (label, tiles) in enumerate(rows):
        y = header_h + r * size
        draw.text((4, y + size // 2 - 6), label[:18], fill="black")
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile).convert("RGB").resize((size, size), Image.LANCZOS), (label_w + c * size, y))
    return np.asarray(sheet)


def _frames(video: str, wanted: list[int]) -> dict[int, np.ndarray]:
    """The driver's frames ``wanted`` (decoded as the landmarks were: rotation applied), read
    again rather than holding the whole clip in memory."""
    from avatar.io.video_reader import open_source  # noqa: PLC0415

    keep, last = {}, max(wanted)
    for i, frame in enumerate(open_source(video).frames()):
        if i in wanted:
            keep[i] = frame.image
        if i >= last:
            break
    return keep


def sheet(args: argparse.Namespace) -> int:
    import imageio.v3 as iio
    from tqdm.auto import tqdm

    from avatar.device import pick_device
    from avatar.drive.animate import AvatarPackage
    from avatar.drive.reenact_eval import render_driven_frames
    from avatar.drive.video_driver import detect_landmarks, landmark_model, track_landmarks
    from avatar.io import atomic_write
    from avatar.landmarks.face_measures import face_measures

    points, _, fps, size, _ = detect_landmarks(args.drive, args.max_frames)
    moments = pick_moments(face_measures(points))
    if not moments:
        print(f"{PROG}: MediaPipe found no face in {args.drive}: nothing to show", file=sys.stderr)
        return 1
    picked = [i for _, i in moments]
    frames = _frames(args.drive, picked)
    rows = [("driver", [face_crop(frames[i], points[i]) for i in picked])]
    drive = track_landmarks(points[..., :2], size, fps, str(args.drive), landmark_model())
    device = pick_device(args.device)
    for run in args.run:
        package = AvatarPackage.load(run, device)
        wanted, tiles = set(picked), {}
        for i, image in enumerate(tqdm(render_driven_frames(package, drive), total=drive.n_frames,
                                       desc=Path(run).name, unit="frame", leave=False)):
            if i in wanted:
                tiles[i] = image
                if len(tiles) == len(wanted):
                    break
        rows.append((Path(run).name, [tiles[i] for i in picked]))
    image = compose(rows, [f"{name} ({i})" for name, i in moments], args.size)
    out = atomic_write(args.out, iio.imwrite("<bytes>", image, extension=".png"))
    print(f"{PROG}: {len(rows) - 1} avatar(s) x {len(moments)} moments of {args.drive} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", required=True, help="driver video")
    parser.add_argument("--run", nargs="+", required=True, help="run folders of avatar train (or avatar.pt files)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--size", type=int, default=160, help="pixels per tile")
    parser.add_argument("--max-frames", type=int, default=None, help="read at most this many driver frames")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    from avatar.errors import run  # noqa: PLC0415

    return run(PROG, sheet, args)


if __name__ == "__main__":
    sys.exit(main())

"""Portrait avatar vs head-only avatar on the same held-out frames: prints ONE JSON line per video.

Both runs are re-opened at their last checkpoint with ``train.mask=person`` (the whole person on
the flat background is the target, held-out last 15% as ``avatar train``), so both are scored on
the same frames and the same mask in the same process:

- ``psnr`` / ``ssim``: the whole frame, the person composited on the background (what ``avatar
  eval`` scores with ``train.mask=person``);
- ``head_psnr``: PSNR over the head region alone (the pixels ``train.mask=head`` keeps: the
  tracked head's silhouette grown by ``head_dilate``, cut under the chin, inside the person mask);
- ``delta_db`` = portrait - head-only, ``head_delta_db`` the same on the head region;
- targets: ``delta_db >= 3`` and ``head_delta_db >= -0.2`` when a head-only run is given
  (``head_talking_512``); ``psnr >= 27`` and ``ssim >= 0.90`` (``selfie_upperbody``).

``--render-fps``: also the portrait avatar's render FPS (posing + rasterization, from its
``avatar.pt``) at ``--render-size`` on ``--device`` (CUDA when present with ``auto``).

    python benchmarks/portrait.py --portrait RUN [--head RUN] [--capture CAP] [--render-fps --render-size 512]

How the figures in the README were made (captures copied and given pose landmarks by
``data_tools/add_pose.py``, as ``preprocess.pose=true`` + ``avatar track`` would write them):

    python data_tools/add_pose.py CAP_HEAD_TALKING CAP_P
    avatar train capture=CAP_P out=RUN_P avatar=portrait train.resolution=256 \
        train.gaussians.uv_resolution=64 train.densify.max_gaussians=30000
    python benchmarks/portrait.py --portrait RUN_P --head RUN_HEAD_ONLY

``avatar=portrait`` draws the upper body as an anchor-warped texture; train the same capture with
``avatar=portrait_gaussians`` (torso Gaussians) and grade both to compare them side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def masked_psnr(img: torch.Tensor, gt: torch.Tensor, region: torch.Tensor) -> float:
    """PSNR over the pixels where ``region [H, W]`` is true (images ``[H, W, 3]`` in 0..1)."""
    sel = region.bool()
    if not sel.any():
        return float("nan")
    mse = float(((img - gt) ** 2)[sel].mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def head_regions(trainer) -> dict[int, torch.Tensor]:
    """``{frame index: [H, W] bool}`` the head region of each held-out frame (``train.mask=head``'s cut)."""
    from avatar.train.data import head_masks, neck_height

    f, cfg = trainer.frames, trainer.cfg
    idx = torch.as_tensor(f.heldout, device=f.vertices.device)
    keep = head_masks(f.vertices[idx], trainer.model.faces.to(f.vertices.device), f.K[idx], f.viewmat, f.width,
                      f.height, cfg.head_dilate, neck=neck_height(trainer.model, cfg.neck_below_chin))
    return {int(i): (keep[k] > 0) & (f.masks[int(i)] > 127) for k, i in enumerate(f.heldout)}


@torch.no_grad()
def score(trainer, regions: dict[int, torch.Tensor]) -> dict:
    from avatar.train.metrics import psnr, ssim

    out = {"psnr": [], "ssim": [], "head_psnr": []}
    for i in trainer.frames.heldout:
        img, _, _ = trainer.render(int(i), sh_degree=trainer.gaussians.sh_degree)
        gt, _ = trainer.target(int(i))
        img = img.clamp(0, 1)
        out["psnr"].append(float(psnr(img, gt)))
        out["ssim"].append(float(ssim(img, gt)))
        out["head_psnr"].append(masked_psnr(img, gt, regions[int(i)]))
    return {k: round(float(np.nanmean(v)), 3) for k, v in out.items()}


def open_run(run: str, capture: str | None, resolution: int | None):
    from omegaconf import OmegaConf

    from avatar.train.session import load_run

    over = {"train": {"mask": "person", "preview_every": 0}}
    if capture:
        over["capture"] = capture
    if resolution:
        over["train"]["resolution"] = resolution
    trainer, tracking, model, cfg = load_run(run, OmegaConf.create(over))
    return trainer, cfg


def render_fps(run: str, size: int, device: str, frames: int = 50) -> dict:
    from avatar.device import pick_device
    from avatar.gaussians.package import AvatarPackage

    dev = pick_device(device)
    package = AvatarPackage.load(run, dev)
    K, width, height = package.camera(size)
    viewmat = package.state["viewmat"].to(dev, torch.float32)
    e = np.zeros(len(package.expression_names), np.float32)
    r, t = package.reference_pose_or(np.zeros(3, np.float32), np.array([0, 0, -0.5], np.float32))
    times = []
    for k in range(frames + 5):
        rot = np.asarray(r, np.float32) + np.array([0, 0.3 * math.sin(k / 8), 0], np.float32)
        t0 = time.perf_counter()
        package.render_frame(e, rot, t, viewmat, K, width, height)
        if k >= 5:
            times.append(time.perf_counter() - t0)
    return {"device": str(dev), "size": [width, height], "n_gaussians": len(package.gaussians),
            "fps": round(1 / float(np.mean(times)), 1), "frames": frames}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portrait", default=os.environ.get("AVATAR_BENCH_PORTRAIT"),
                        help="run folder of avatar=portrait (or AVATAR_BENCH_PORTRAIT=RUN_DIR)")
    parser.add_argument("--head", default=None, help="run folder of today's head-only avatar on the same video")
    parser.add_argument("--capture", default=None, help="capture both are scored on (default: the portrait run's)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--render-fps", action="store_true")
    parser.add_argument("--render-size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not args.portrait:
        print(json.dumps({"benchmark": "portrait", "skipped": "needs a trained portrait avatar: --portrait RUN_DIR or "
                                                               "AVATAR_BENCH_PORTRAIT=RUN_DIR"}))
        return 0

    t0 = time.perf_counter()
    trainer, cfg = open_run(args.portrait, args.capture, args.resolution)
    capture = args.capture or str(cfg.capture)
    regions = head_regions(trainer)
    metrics = json.loads((Path(args.portrait) / "metrics.json").read_text()) if (Path(args.portrait) / "metrics.json").is_file() else {}
    line: dict = {
        "benchmark": "portrait", "capture": capture, "resolution": [trainer.frames.width, trainer.frames.height],
        "heldout_frames": int(len(trainer.frames.heldout)),
        "portrait": {**score(trainer, regions), "n_gaussians": len(trainer.gaussians), "iterations": trainer.step,
                     "train_seconds": metrics.get("train_seconds")},
    }
    line["torso"] = ({"tracked": True} if trainer.frames.torso is not None
                     else {"tracked": False, "note": "no shoulder state in the tracking: the rest torso throughout"})
    if args.head:
        head, _ = open_run(args.head, capture, args.resolution)
        if not np.array_equal(head.frames.frame_ids[head.frames.heldout], trainer.frames.frame_ids[trainer.frames.heldout]):
            raise SystemExit("the two runs hold out different frames; train them on the same capture and holdout")
        line["head_only"] = {**score(head, regions), "n_gaussians": len(head.gaussians), "iterations": head.step}
        line["delta_db"] = round(line["portrait"]["psnr"] - line["head_only"]["psnr"], 3)
        line["head_delta_db"] = round(line["portrait"]["head_psnr"] - line["head_only"]["head_psnr"], 3)
        line["targets"] = {"delta_db>=3": line["delta_db"] >= 3, "head_delta_db>=-0.2": line["head_delta_db"] >= -0.2}
    line.setdefault("targets", {}).update(
        {"psnr>=27": line["portrait"]["psnr"] >= 27, "ssim>=0.90": line["portrait"]["ssim"] >= 0.90})
    if args.render_fps:
        line["render"] = render_fps(args.portrait, args.render_size, args.device)
    line["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())

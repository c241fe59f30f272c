"""Benchmark of the compact export (``.spz``): its size and what it loses in the renders; prints one JSON line.

    python benchmarks/export.py [--run RUN_DIR] [--frames N] [--orbit 12] [--device auto]

With a trained run (``--run`` or ``AVATAR_BENCH_RUN``; it needs its checkpoint and capture): on
each held-out frame of the capture, the avatar posed there is written as ``.spz`` in the
canonical frame (as ``avatar export drive=CAPTURE frame=N`` writes it), read back with
:func:`avatar.io.spz.read_spz`, moved back and rendered through that frame's camera beside the
full avatar (the trainer's render, SH in the head's frame). ``psnr_loss_db``: PSNR of the full
render against the ground truth (the frame on the training background, as training evaluates
it) minus that of the compact render, mean and worst over the frames. ``psnr_vs_full_db``: PSNR of
the compact render against the full one. Also an orbit of ``--orbit`` views around the
canonical ``avatar.spz``.

Without a run: a synthetic 20k-Gaussian head (procedural shape and colours, random anisotropic
scales, rotations, opacities and SH degree 3) on the orbit. It has no ground truth, so
``psnr_loss_db`` is null there and ``psnr_vs_full_db`` says what the codec loses.
The issue's target: <= 5 MB for a 20k-Gaussian avatar with <= 0.3 dB PSNR loss.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _stats(values) -> dict | None:
    values = [float(v) for v in values]
    return {"mean": round(float(np.mean(values)), 3), "worst": round(float(np.min(values)), 3)} if values else None


def _loss_stats(values) -> dict | None:
    values = [float(v) for v in values]
    return {"mean": round(float(np.mean(values)), 4), "worst": round(float(np.max(values)), 4)} if values else None


def _decoded(splats, fractional_bits=None):
    """``splats`` through .spz bytes and back, and the number of bytes."""
    from avatar.drive.export import Splats
    from avatar.io.spz import decode_spz, encode_spz

    data = encode_spz(*(t.detach().cpu().numpy() for t in (splats.means, splats.quats, splats.scales,
                                                            splats.opacities, splats.sh)), fractional_bits)
    d = decode_spz(data)
    dev = splats.means.device
    return Splats(*(torch.from_numpy(d[k]).to(dev) for k in ("means", "quats", "scales", "opacities", "sh"))), len(data)


def _render(splats, viewmat, K, width, height, sh_degree, background, renderer):
    from avatar.render.rasterization import rasterization

    img, _, _ = rasterization(splats.means, splats.quats, splats.scales, splats.opacities, splats.sh, viewmat[None],
                              K[None], width, height, sh_degree=sh_degree, backgrounds=background[None], **renderer)
    return img[0].clamp(0, 1)


def _orbit(splats, K, width, height, sh_degree, background, renderer, views: int) -> list[float]:
    """PSNR of the decoded ``splats`` against the full ones, on ``views`` cameras around them."""
    from avatar.geometry.cameras import orbit_viewmats
    from avatar.train.metrics import psnr

    decoded, _ = _decoded(splats)
    centre = splats.means.mean(0)
    radius = float(K[0, 0]) * 0.5 / width  # a 25 cm head about half the image wide
    cams = orbit_viewmats(views, radius=radius, target=tuple(float(c) for c in centre),
                          device=splats.means.device)
    out = []
    for v in cams:
        full = _render(splats, v, K, width, height, sh_degree, background, renderer)
        compact = _render(decoded, v, K, width, height, sh_degree, background, renderer)
        out.append(float(psnr(compact, full)))
    return out


def synthetic(views: int, device) -> dict:
    from avatar.drive.export import Splats
    from avatar.gaussians.procedural import procedural_head
    from avatar.geometry.cameras import intrinsics_from_fov
    from avatar.geometry.rotations import normalize_quaternion

    head = procedural_head(20000, sh_degree=3, seed=0)
    gen = torch.Generator().manual_seed(0)
    n = len(head)
    scales = head.scales * torch.exp(torch.randn(n, 3, generator=gen) * 0.4)
    quats = normalize_quaternion(torch.randn(n, 4, generator=gen))
    opacities = torch.rand(n, generator=gen) * 0.9 + 0.1
    sh = head.sh.clone()
    sh[:, 1:] = torch.randn(n, 15, 3, generator=gen) * 0.05
    splats = Splats(*(t.to(device) for t in (head.means, quats, scales, opacities, sh)))
    K = intrinsics_from_fov(512, 512, 20.0, device=device)
    background = torch.ones(3, device=device)
    t0 = time.perf_counter()
    _, size = _decoded(splats)
    codec_s = time.perf_counter() - t0
    orbit = _orbit(splats, K, 512, 512, 3, background, {}, views)
    return {"avatar": "synthetic (procedural head, SH degree 3)", "n_gaussians": n, "size_mb": round(size / 1e6, 3),
            "ply_mb": round(n * (62 * 4) / 1e6, 2), "psnr_loss_db": None, "ground_truth": None,
            "psnr_vs_full_db": _stats(orbit), "orbit_views": views, "resolution": [512, 512],
            "encode_decode_seconds": round(codec_s, 2)}


def trained(run: Path, max_frames: int | None, views: int) -> dict:
    from avatar.drive.export import canonical_transform, splats_of
    from avatar.gaussians.base import FrameState
    from avatar.gaussians.package import AvatarPackage
    from avatar.train.metrics import psnr
    from avatar.train.session import load_run

    trainer, tracking, model, _ = load_run(run)
    package = AvatarPackage.load(run, trainer.frames.vertices.device)
    A, b = canonical_transform(package)
    T = torch.eye(4, device=A.device)
    T[:3, :3], T[:3, 3] = A, b
    T_inv = torch.linalg.inv(T)
    f, degree = trainer.frames, trainer.gaussians.sh_degree
    frames = [int(i) for i in f.heldout][: max_frames or None]
    loss, vs_full, sizes, full_psnr = [], [], [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in frames:
            full, _, _ = trainer.render(i, sh_degree=degree)
            full = full.clamp(0, 1)
            gt, _ = trainer.target(i)
            exported, size = _decoded(splats_of(trainer.gaussians(trainer.mesh(i)), (A, b)))
            # The canonical-frame file seen by the frame's camera moved alike.
            compact = _render(exported, f.viewmat @ T_inv, f.K[i], f.width, f.height, degree, trainer.background,
                              trainer.renderer)
            p_full, p_compact = float(psnr(full, gt)), float(psnr(compact, gt))
            full_psnr.append(p_full)
            loss.append(p_full - p_compact)
            vs_full.append(float(psnr(compact, full)))
            sizes.append(size)
        dev = f.vertices.device
        shape = torch.as_tensor(tracking.shape, dtype=f.vertices.dtype, device=dev)[None]
        canonical = splats_of(trainer.gaussians(FrameState(model(shape=shape).vertices, rotation=shape.new_zeros(1, 3))))
        _, canonical_size = _decoded(canonical)
        orbit = _orbit(canonical, f.K[0], f.width, f.height, degree, trainer.background, trainer.renderer, views)
    n = len(trainer.gaussians)
    return {"avatar": str(run), "n_gaussians": n, "size_mb": round(canonical_size / 1e6, 3),
            "frame_size_mb_mean": round(float(np.mean(sizes)) / 1e6, 3), "ply_mb": round(n * (62 * 4) / 1e6, 2),
            "psnr_loss_db": _loss_stats(loss), "ground_truth": f"{len(frames)} held-out capture frames",
            "psnr_full_db": round(float(np.mean(full_psnr)), 3), "psnr_vs_full_db": _stats(vs_full),
            "orbit_psnr_vs_full_db": _stats(orbit), "orbit_views": views, "resolution": [f.width, f.height],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=os.environ.get("AVATAR_BENCH_RUN"),
                        help="run folder of `avatar train` (checkpoint and capture); default: a synthetic avatar")
    parser.add_argument("--frames", type=int, default=None, help="at most this many held-out frames (default: all)")
    parser.add_argument("--orbit", type=int, default=12, help="views of the orbit")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from avatar.device import pick_device
    from avatar.io.spz import FRACTIONAL_BITS, quantisation_steps

    device = pick_device(args.device)
    result = trained(Path(args.run), args.frames, args.orbit) if args.run else synthetic(args.orbit, device)
    steps = {k: float(f"{v:.4g}") for k, v in quantisation_steps(FRACTIONAL_BITS).items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({"benchmark": "export", "format": "spz v3", **result, "quantisation_steps": steps,
                      "device": str(device), "load_average": round(load, 2) if load is not None else None}))


if __name__ == "__main__":
    main()

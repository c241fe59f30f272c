"""The whole pipeline on an embedded default: synthetic capture -> track -> train -> driven animation.

Runs when the ICT-FaceKit head model is available (``AVATAR_ASSETS`` or the user cache);
``avatar demo`` falls back to the procedural-head orbit otherwise. Everything is small so it
fits in a few minutes on a 2-core CPU: the capture is rendered from the ICT head textured with
scikit-image's public-domain astronaut portrait, tracked from its real MediaPipe landmarks,
and a second scripted performance drives the trained avatar.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from avatar.io.reports import write_json


def run_pipeline(cfg: DictConfig, model) -> dict:
    """Run every stage into ``cfg.out``; returns the summary report."""
    from avatar.synthetic.capture import SyntheticConfig, make_synthetic_capture, scripted_sequence  # noqa: PLC0415
    from ..device import pick_device  # noqa: PLC0415
    from ..drive.animate import AvatarPackage, render_driven  # noqa: PLC0415
    from ..drive.sources import DriveSequence  # noqa: PLC0415
    from avatar.tracking.embedding import load_embedding  # noqa: PLC0415
    from ..tracking.fit import FitConfig  # noqa: PLC0415
    from ..tracking.track import TrackConfig, track_capture  # noqa: PLC0415
    from ..train.session import finish, frame_rate, setup  # noqa: PLC0415

    p = cfg.pipeline
    out = Path(cfg.out)
    device = pick_device(cfg.get("device", "auto"))
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    capture = out / "capture"
    synthetic = make_synthetic_capture(capture, SyntheticConfig(n_frames=p.frames, resolution=p.resolution), model=model)
    seconds["capture"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fit = FitConfig(rigid_iterations=p.track_iterations // 3, full_iterations=p.track_iterations)
    tracking = track_capture(capture, model, load_embedding(model), TrackConfig(fit=fit, overlay=True, overlay_stride=4),
                             progress=True)
    seconds["track"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_cfg = OmegaConf.create({
        "capture": str(capture), "out": str(out / "run"), "resume": False, "model": "ict", "device": str(device),
        "renderer": OmegaConf.to_container(cfg.renderer),
        "train": {"iterations": p.train_iterations, "resolution": p.resolution, "preview_every": 0,
                  "checkpoint_every": p.train_iterations, "sh_increase_every": max(1, p.train_iterations // 4),
                  "gaussians": {"uv_resolution": p.uv_resolution, "sh_degree": 1,
                                "part_uv_resolution": {"eyeball_left": 16, "eyeball_right": 16,
                                                       "gums_and_tongue": 24, "teeth": 32}},
                  "densify": {"refine_start": p.train_iterations // 5, "refine_every": 50,
                              "refine_stop": int(p.train_iterations * 0.8), "reset_opacity_every": 0}},
    })
    if (out / "run" / "checkpoints" / "last.pt").is_file():
        train_cfg.resume = True
    trainer, seq, _ = setup(train_cfg)
    trainer.run()
    metrics = finish(trainer, seq, model, fps=frame_rate(capture))
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    package = AvatarPackage.load(out / "run" / "avatar.pt", device)
    perf = scripted_sequence(p.drive_frames, package.expression_names)
    # A second performance: the script played in reverse, with the head turns mirrored.
    drive = DriveSequence(perf.expression[::-1].copy(), (perf.rotation[::-1] * np.array([1, -1, -1], np.float32)).copy(),
                          perf.translation[::-1].copy(), 25.0, "scripted performance (reversed, mirrored)")
    renderer = OmegaConf.to_container(cfg.renderer)
    driven = render_driven(package, drive, out / "driven.mp4", size=p.render_size, renderer=renderer)
    orbit = render_driven(package, drive, out / "orbit.mp4", camera="orbit", size=p.render_size, renderer=renderer)
    seconds["render"] = time.perf_counter() - t0
    report = {
        "command": "demo",
        "mode": "pipeline",
        "capture": {"frames": p.frames, "resolution": p.resolution,
                    "mediapipe_detection_rate": getattr(synthetic, "report", {}).get("mediapipe_detection_rate")},
        "tracking": {"landmark_error_px": tracking["reprojection"], "fit_seconds": tracking["fit_seconds"]},
        "training": {k: metrics.get(k) for k in ("psnr", "ssim", "n_gaussians", "iterations", "train_seconds", "device",
                                                   "backend")},
        "render": {"frames": driven["frames"], "render_fps": driven["render_fps"], "orbit_frames": orbit["frames"]},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "outputs": {"capture": str(capture), "tracking_overlay": str(capture / "tracking_overlay.mp4"),
                    "run": str(out / "run"), "driven": str(out / "driven.mp4"), "orbit": str(out / "orbit.mp4")},
    }
    write_json(out / "demo_report.json", report)
    return report


def ict_available():
    """The ICT model when its assets can be found without downloading, else None."""
    from .. import models  # noqa: PLC0415

    try:
        return models.load("ict")
    except FileNotFoundError:
        return None


def summary(report: dict) -> str:
    t, s = report["training"], report["seconds"]
    return (
        f"avatar demo: synthetic capture ({report['capture']['frames']} frames) -> tracked (median landmark error "
        f"{report['tracking']['landmark_error_px']['median_px']} px) -> trained {t['n_gaussians']} Gaussians "
        f"({t['iterations']} iterations, held-out PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f}) -> driven animation "
        f"({report['render']['frames']} frames, {report['render']['render_fps']} FPS render)\n"
        f"  seconds: {s}\n" + "\n".join(f"  {k}: {v}" for k, v in report["outputs"].items())
    )

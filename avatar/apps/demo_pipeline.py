"""The whole pipeline on an embedded default: synthetic capture -> track -> train -> driven animation.

Runs when the ICT-FaceKit head model is available (``AVATAR_ASSETS`` or the user cache);
``avatar demo`` falls back to the procedural-head orbit otherwise. Everything is small so it
fits in a few minutes on a 2-core CPU: the capture is rendered from the ICT head textured with
scikit-image's public-domain astronaut portrait, tracked from its real MediaPipe landmarks,
trained with ``avatar train``'s code and defaults except the overrides under
``pipeline.train`` in conf/demo.yaml (sized for a 128-pixel capture), and a second scripted
performance drives the trained avatar. The orbit swings the camera through the views the
capture trained (``pipeline.orbit_sweep_deg``), not round the unseen back of the head.
It ends with ``summary.png``, a contact sheet of every stage.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from avatar.io.reports import write_json

SUMMARY_FILE = "summary.png"


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
    synthetic = make_synthetic_capture(capture, SyntheticConfig(n_frames=p.frames, resolution=p.resolution,
                                                                seed=p.seed, yaw_deg=p.yaw_deg,
                                                                supersample=p.supersample), model=model)
    seconds["capture"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fit = FitConfig(rigid_iterations=p.track_iterations // 3, full_iterations=p.track_iterations)
    tracking = track_capture(capture, model, load_embedding(model), TrackConfig(fit=fit, overlay=True), progress=True)
    seconds["track"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train = OmegaConf.to_container(p.train, resolve=True)
    train_cfg = OmegaConf.create({
        "capture": str(capture), "out": str(out / "run"), "resume": False, "model": "ict", "device": str(device),
        "renderer": OmegaConf.to_container(cfg.renderer), "train": train,
    })
    if (out / "run" / "checkpoints" / "last.pt").is_file():
        train_cfg.resume = True
    trainer, seq, _ = setup(train_cfg)
    trainer.run()
    metrics = finish(trainer, seq, model, fps=frame_rate(capture))
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    package = AvatarPackage.load(out / "run" / "avatar.pt", device)
    perf = scripted_sequence(p.drive_frames, package.expression_names, yaw_deg=p.yaw_deg)
    # A second performance: the script played in reverse, with the head turns mirrored.
    drive = DriveSequence(perf.expression[::-1].copy(), (perf.rotation[::-1] * np.array([1, -1, -1], np.float32)).copy(),
                          perf.translation[::-1].copy(), 25.0, "scripted performance (reversed, mirrored)")
    renderer = OmegaConf.to_container(cfg.renderer)
    driven = render_driven(package, drive, out / "driven.mp4", size=p.render_size, renderer=renderer)
    # The orbit: the same expressions with the head still, the camera swinging through the trained views.
    still = DriveSequence(drive.expression, np.zeros_like(drive.rotation), np.zeros_like(drive.translation), 25.0,
                          "scripted performance, head still")
    orbit = render_driven(package, still, out / "orbit.mp4", camera="orbit", size=p.render_size, renderer=renderer,
                          orbit_sweep_deg=p.orbit_sweep_deg)
    seconds["render"] = time.perf_counter() - t0

    report = {
        "command": "demo",
        "mode": "pipeline",
        "seed": p.seed,
        "capture": {"frames": p.frames, "resolution": p.resolution, "yaw_deg": p.yaw_deg,
                    "mediapipe_detection_rate": getattr(synthetic, "report", {}).get("mediapipe_detection_rate")},
        "tracking": {"landmark_error_px": tracking["reprojection"], "fit_seconds": tracking["fit_seconds"]},
        "training": {k: metrics.get(k) for k in ("psnr", "ssim", "n_gaussians", "iterations", "train_seconds", "device",
                                                   "backend", "train_frames", "heldout_frames")},
        "render": {"frames": driven["frames"], "render_fps": driven["render_fps"], "orbit_frames": orbit["frames"],
                   "orbit_sweep_deg": p.orbit_sweep_deg},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "outputs": {"capture": str(capture), "tracking_overlay": str(capture / "tracking_overlay.mp4"),
                    "run": str(out / "run"), "heldout": str(out / "run" / "heldout_side_by_side.mp4"),
                    "driven": str(out / "driven.mp4"), "orbit": str(out / "orbit.mp4"),
                    "summary": str(out / SUMMARY_FILE), "report": str(out / "demo_report.json")},
    }
    t0 = time.perf_counter()
    write_summary(out, report)
    report["seconds"]["summary"] = round(time.perf_counter() - t0, 1)
    write_json(out / "demo_report.json", report)
    return report


def write_summary(out: Path, report: dict, columns: int = 5) -> Path:
    """``out/summary.png``: capture frames, tracking overlay, held-out truth and render, driven
    animation and orbit, one labelled row each."""
    from ..io.capture import Capture  # noqa: PLC0415
    from .contact_sheet import contact_sheet, save_png, video_frames  # noqa: PLC0415

    o = report["outputs"]
    capture = Capture(o["capture"])
    picks = np.linspace(0, capture.n_frames - 1, columns).round().astype(int)
    heldout = []
    for frame in video_frames(o["heldout"], 3):  # ground truth | render | error (x4)
        w = frame.shape[1] // 3
        heldout += [frame[:, :w], frame[:, w : 2 * w]]
    t, tr = report["training"], report["tracking"]["landmark_error_px"]
    rows = [
        ("capture", f"synthetic, seed {report['seed']}\n{report['capture']['frames']} frames, "
                    f"{report['capture']['resolution']} px", [capture.load_frame(int(i)) for i in picks]),
        ("tracking", f"landmark error\n{tr['median_px']} px median\ngreen: detected\nred: fitted mesh",
         video_frames(o["tracking_overlay"], columns)),
        ("held out", f"last {t['heldout_frames']} frames\ntruth | render\nPSNR {t['psnr']:.2f} dB\nSSIM {t['ssim']:.3f}",
         heldout),
        ("driven", f"another script\n{report['render']['frames']} frames", video_frames(o["driven"], columns)),
        ("orbit", f"camera +-{report['render']['orbit_sweep_deg'] / 2:g} deg\n(the views the\ncapture showed)",
         video_frames(o["orbit"], columns)),
    ]
    title = (f"avatar demo: {t['n_gaussians']} Gaussians, {t['iterations']} steps, held-out PSNR {t['psnr']:.2f} dB / "
             f"SSIM {t['ssim']:.3f}")
    return save_png(out / SUMMARY_FILE, contact_sheet(rows, title=title))


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
        f"({t['iterations']} iterations, held-out PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f} on the last "
        f"{t['heldout_frames']} frames) -> driven animation ({report['render']['frames']} frames, "
        f"{report['render']['render_fps']} FPS render)\n"
        f"  seconds: {s}\n" + "\n".join(f"  {k}: {v}" for k, v in report["outputs"].items())
    )

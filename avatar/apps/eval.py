"""``avatar eval run=RUN``: held-out metrics and comparison video of a trained run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..data.capture import CaptureError
from ..data.reports import write_json
from ..tracking.sequence import TrackingError
from ..train.session import RunError, frame_rate, heldout_video, load_run, summary


def main(cfg: DictConfig) -> int:
    try:
        trainer, _, _, run_cfg = load_run(cfg.run, DictConfig({"renderer": cfg.renderer}) if "renderer" in cfg else None)
    except (CaptureError, TrackingError, RunError, FileNotFoundError) as exc:
        print(f"avatar eval: {exc}")
        return 2
    out = Path(cfg.out)
    metrics = trainer.evaluate()
    metrics.update({"n_gaussians": len(trainer.gaussians), "iterations": trainer.step,
                    "backend": trainer.backend_used, "device": str(trainer.frames.vertices.device)})
    write_json(out / "metrics.json", metrics)
    heldout_video(trainer, out / "heldout_side_by_side.mp4", frame_rate(run_cfg.capture))
    print(f"avatar eval: {summary(metrics)}\n  written to {out}")
    return 0

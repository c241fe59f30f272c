"""``avatar eval run=RUN``: held-out metrics and comparison video of a trained run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from avatar.io.reports import write_json
from ..errors import command
from ..train.session import frame_rate, heldout_video, load_run, pose_aligned_metrics, summary


@command("avatar eval")
def main(cfg: DictConfig) -> int:
    trainer, _, _, run_cfg = load_run(cfg.run, DictConfig({"renderer": cfg.renderer}) if "renderer" in cfg else None)
    out = Path(cfg.out)
    metrics = trainer.evaluate(progress=True)
    steps = cfg.get("pose_steps")
    steps = trainer.cfg.eval_pose_steps if steps is None else int(steps)
    trainer.cfg.eval_pose_downscale = int(cfg.get("pose_downscale", 1))  # runs trained before 2026-12-06 saved 2
    if steps > 0:
        metrics["pose_aligned"] = pose_aligned_metrics(trainer, steps)
    metrics.update({"n_gaussians": len(trainer.gaussians), "iterations": trainer.step,
                    "backend": trainer.backend_used, "device": str(trainer.frames.vertices.device)})
    write_json(out / "metrics.json", metrics)
    heldout_video(trainer, out / "heldout_side_by_side.mp4", frame_rate(run_cfg.capture))
    print(f"avatar eval: {summary(metrics)}\n  written to {out}")
    return 0

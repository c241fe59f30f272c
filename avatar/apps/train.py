"""``avatar train capture=DIR out=RUN``: train mesh-bound Gaussians on a tracked capture
(``train.viewer=true``: watch it in a web browser while it trains)."""

from __future__ import annotations

from omegaconf import DictConfig

from ..errors import command
from ..train.session import finish, frame_rate, setup, summary
from .schema import register


@command("avatar train")
def main(cfg: DictConfig) -> int:
    trainer, tracking, model = setup(cfg)
    viewer = None
    if trainer.cfg.viewer:
        from ..view.training import TrainingViewer  # noqa: PLC0415

        viewer = TrainingViewer(trainer, trainer.cfg.viewer_host, trainer.cfg.viewer_port, trainer.cfg.viewer_every)
        print(f"avatar train: watch it at {viewer.server.url}", flush=True)
    try:
        trainer.run(on_step=None if viewer is None else viewer.step)
    finally:
        if viewer is not None:
            viewer.close()
    metrics = finish(trainer, tracking, model, frame_rate(cfg.capture))
    print(f"avatar train: {summary(metrics)}\n  run folder: {trainer.out}")
    return 0


register("train")  # conf/train.yaml composes once this module is imported

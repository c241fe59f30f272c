"""``avatar train capture=DIR out=RUN``: train mesh-bound Gaussians on a tracked capture."""

from __future__ import annotations

from omegaconf import DictConfig

from ..errors import command
from ..train.session import finish, frame_rate, setup, summary
from .schema import register


@command("avatar train")
def main(cfg: DictConfig) -> int:
    trainer, tracking, model = setup(cfg)
    trainer.run()
    metrics = finish(trainer, tracking, model, frame_rate(cfg.capture))
    print(f"avatar train: {summary(metrics)}\n  run folder: {trainer.out}")
    return 0


register("train")  # conf/train.yaml composes once this module is imported

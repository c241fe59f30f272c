"""``avatar train capture=DIR out=RUN``: train mesh-bound Gaussians on a tracked capture."""

from __future__ import annotations

from omegaconf import DictConfig

from ..data.capture import CaptureError
from ..tracking.sequence import TrackingError
from ..train.data import TrainDataError
from ..train.session import RunError, finish, frame_rate, setup, summary


def main(cfg: DictConfig) -> int:
    try:
        trainer, tracking, model = setup(cfg)
    except (CaptureError, TrackingError, TrainDataError, RunError, FileNotFoundError) as exc:
        print(f"avatar train: {exc}")
        return 2
    trainer.run()
    metrics = finish(trainer, tracking, model, frame_rate(cfg.capture))
    print(f"avatar train: {summary(metrics)}\n  run folder: {trainer.out}")
    return 0

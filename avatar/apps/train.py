"""``avatar train capture=DIR out=RUN``: train mesh-bound Gaussians on a tracked capture
(``train.viewer=true``: watch it in a web browser while it trains).

Ctrl-C (or SIGTERM) while training stops after the current step with a checkpoint, and the
line says how to go on (``resume=true``); a second Ctrl-C stops at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from ..errors import StopRequest, command
from ..train.session import finish, frame_rate, setup, summary
from .schema import register


@command("avatar train")
def main(cfg: DictConfig) -> int:
    trainer, tracking, model = setup(cfg, given=_set_on_command_line())
    viewer = None
    if trainer.cfg.viewer:
        from ..view.training import TrainingViewer  # noqa: PLC0415

        c = trainer.cfg
        viewer = TrainingViewer(trainer, c.viewer_host, c.viewer_port, c.viewer_every, mode=c.viewer_mode,
                                max_side=c.viewer_max_side, plot_seconds=c.viewer_plot_seconds)
        print(f"avatar train: watch it at {viewer.server.url}", flush=True)
    try:
        with StopRequest() as stop:
            trainer.run(stop=lambda: stop.error is not None, on_step=None if viewer is None else viewer.step)
    finally:
        if viewer is not None:
            viewer.close()
    if stop.error is not None:
        raise type(stop.error)(
            f"at step {trainer.step} of {trainer.cfg.iterations}; checkpoint saved in {trainer.out / 'checkpoints'}; "
            f"go on with: avatar train capture={cfg.capture} out={cfg.out} resume=true"
        )
    metrics = finish(trainer, tracking, model, frame_rate(cfg.capture))
    print(f"avatar train: {summary(metrics)}\n  run folder: {trainer.out}")
    return 0


def _set_on_command_line() -> Callable[[str], bool]:
    """Whether a config key was set by this command line (a key, or a group such as
    ``avatar=...`` whose package holds it); every key when Hydra is not running."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415

    if not HydraConfig.initialized():
        return lambda key: True
    hydra = HydraConfig.get()
    prefixes = []
    for override in hydra.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in hydra.runtime.choices:
            key = _group_package(hydra, key, hydra.runtime.choices[key])
        prefixes.append(key)
    return lambda key: any(key == p or key.startswith(p + ".") for p in prefixes)


def _group_package(hydra, group: str, option: str) -> str:
    """Where config group ``group`` puts its keys: its file's ``# @package`` line, else the group's name."""
    for source in hydra.runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            path = Path(source.path) / group / f"{option}.yaml"
            first = path.read_text().split("\n", 1)[0] if path.is_file() else ""
            if first.startswith("# @package "):
                return first.split(None, 2)[2].strip()
    return group


register("train")  # conf/train.yaml composes once this module is imported

"""``avatar export run=RUN``: the trained avatar as a 3DGS PLY (canonical pose) and the drivable package."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..data.capture import CaptureError
from ..data.reports import write_json
from ..tracking.sequence import TrackingError
from ..train.session import RunError, avatar_package, export_ply, load_run, with_visibility
from ..train.trainer import atomic_torch_save


def main(cfg: DictConfig) -> int:
    try:
        trainer, tracking, model, _ = load_run(cfg.run)
    except (CaptureError, TrackingError, RunError, FileNotFoundError) as exc:
        print(f"avatar export: {exc}")
        return 2
    out = Path(cfg.out)
    ply = export_ply(trainer, tracking, model, out / "avatar.ply")
    pkg = atomic_torch_save(with_visibility(avatar_package(trainer, tracking), model), out / "avatar.pt")
    write_json(out / "export_report.json", {"ply": str(ply), "package": str(pkg), "n_gaussians": len(trainer.gaussians),
                                            "step": trainer.step})
    print(f"avatar export: {len(trainer.gaussians)} Gaussians\n  {ply}\n  {pkg}")
    return 0

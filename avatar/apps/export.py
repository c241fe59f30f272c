"""``avatar export run=RUN``: the trained avatar as a 3DGS PLY (canonical pose) and the drivable package."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from avatar.io.reports import write_json
from ..errors import command
from ..train.session import export_ply, load_run, save_avatar


@command("avatar export")
def main(cfg: DictConfig) -> int:
    trainer, tracking, model, _ = load_run(cfg.run)
    out = Path(cfg.out)
    ply = export_ply(trainer, tracking, model, out / "avatar.ply")
    pkg = save_avatar(trainer, tracking, out / "avatar.pt")
    write_json(out / "export_report.json", {"ply": str(ply), "package": str(pkg), "n_gaussians": len(trainer.gaussians),
                                            "step": trainer.step})
    print(f"avatar export: {len(trainer.gaussians)} Gaussians\n  {ply}\n  {pkg}")
    return 0

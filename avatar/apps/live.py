"""``avatar live run=RUN source=0``: the avatar mimics the face in front of the camera."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from avatar.io.reports import write_json
from ..device import pick_device
from ..drive.animate import AvatarPackage, body_warp_downscale, limit_gaussians
from ..gaussians.deform import fix_deformer
from ..drive.live import run_live
from ..drive.retarget import retarget_config
from ..errors import command


@command("avatar live")
def main(cfg: DictConfig) -> int:
    package = AvatarPackage.load(cfg.run, pick_device(cfg.get("device", "auto")), _options(cfg))
    limit_gaussians(package, cfg.get("max_gaussians"), OmegaConf.to_container(cfg.renderer))
    deformer = fix_deformer(package, cfg.get("deformer_dtype", "auto"))  # after the budget: it is bound to the Gaussians
    warp = body_warp_downscale(package, cfg.get("body_warp_downscale", 4))
    schedule, pose_every = cfg.get("schedule", "overlap"), cfg.get("pose_every", 3)
    report = run_live(package, cfg.source, display=cfg.display, out=cfg.out, size=cfg.size,
                      max_frames=cfg.max_frames, retarget_cfg=retarget_config(cfg),
                      renderer=OmegaConf.to_container(cfg.renderer), driver_identity=cfg.retarget.driver_identity,
                      pose_every=pose_every, schedule=schedule, render_threads=cfg.get("render_threads", "auto"))
    report.update({"run": str(cfg.run), "source": str(cfg.source), "recording": cfg.out,
                   "n_gaussians": len(package.gaussians), "device": str(package.device),
                   "expression_mlp_dtype": deformer, "body_warp_downscale": warp,
                   "schedule": schedule, "pose_every": pose_every})
    path = Path(cfg.report)
    if not path.is_absolute() and HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir) / path
    write_json(path, report)
    print(f"avatar live: {report['frames_shown']} frames at {report['fps']} FPS, latency mean "
          f"{report['latency_ms']['mean']} ms / p95 {report['latency_ms']['p95']} ms ({report['stop_reason']})\n"
          f"  report: {path}" + "".join(f"\n  note: {n}" for n in report["notes"]))
    return 0


def _options(cfg: DictConfig) -> dict:
    """``model_options=`` overrides of the options recorded in the avatar file (e.g. a moved model file)."""
    options = cfg.get("model_options")
    return OmegaConf.to_container(options) if options else {}

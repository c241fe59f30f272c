"""``avatar render run=RUN drive=SOURCE out=OUT.mp4``: a driven animation of a trained avatar."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from avatar.io.capture import Capture
from avatar.io.reports import write_json
from ..device import pick_device
from ..drive.animate import AvatarPackage, limit_gaussians, render_driven
from ..drive.retarget import retarget_config
from ..drive.sources import VIDEO_SUFFIXES, load_drive
from ..errors import command


@command("avatar render")
def main(cfg: DictConfig) -> int:
    t0 = time.perf_counter()
    drive_path = Path(cfg.drive)
    side_by_side = cfg.layout == "side_by_side"
    package = AvatarPackage.load(cfg.run, pick_device(cfg.get("device", "auto")), _options(cfg))
    limit_gaussians(package, cfg.get("max_gaussians"), OmegaConf.to_container(cfg.renderer))
    video_options = {}
    if drive_path.suffix.lower() in VIDEO_SUFFIXES:
        video_options = {"model": package.model.to("cpu"), "max_frames": cfg.max_frames, "keep_frames": side_by_side,
                         "identity": cfg.retarget.driver_identity}
    drive = load_drive(drive_path, package.expression_names, **video_options)
    package.model.to(package.device)
    if cfg.max_frames:
        n = int(cfg.max_frames)
        drive.expression, drive.rotation = drive.expression[:n], drive.rotation[:n]
        drive.translation = drive.translation[:n]
        drive.valid = None if drive.valid is None else drive.valid[:n]
    if side_by_side and drive_path.is_dir():
        capture = Capture(drive_path)
        drive.frames = [capture.load_frame(i) for i in range(drive.n_frames)]  # type: ignore[attr-defined]
    report = render_driven(
        package, drive, cfg.out, camera=cfg.camera, layout=cfg.layout, size=cfg.size,
        retarget_cfg=retarget_config(cfg), neutral_frame=cfg.neutral_frame,
        renderer=OmegaConf.to_container(cfg.renderer),
    )
    total = time.perf_counter() - t0
    report["end_to_end_fps"] = round(report["frames"] / total, 2)  # including loading and tracking the driver
    report["seconds_total"] = round(total, 2)
    path = write_json(Path(cfg.out).parent / "render_report.json", report)
    notes = "".join(f"\n  note: {n}" for n in report["notes"])
    print(f"avatar render: {report['frames']} frames, render {report['render_fps']} FPS, end to end "
          f"{report['end_to_end_fps']} FPS\n  video:  {cfg.out}\n  report: {path}{notes}")
    return 0


def _options(cfg: DictConfig) -> dict:
    """``model_options=`` overrides of the options recorded in the avatar file (e.g. a moved model file)."""
    options = cfg.get("model_options")
    return OmegaConf.to_container(options) if options else {}

"""``avatar render run=RUN drive=SOURCE out=OUT.mp4``: a driven animation of a trained avatar (a head
driven by a video, capture, parameter file or ARKit CSV; a body by a motion file, a tracked body capture
or a person's video)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from avatar.io.capture import Capture
from avatar.io.reports import write_json
from ..device import pick_device
from ..drive.animate import AvatarPackage, limit_gaussians, render_driven
from ..drive.retarget import retarget_config
from ..drive.sources import VIDEO_SUFFIXES, DriveError, load_drive
from ..errors import command
from ..gaussians.deform import fix_deformer

REPORT_NAME = "render_report.json"


@command("avatar render")
def main(cfg: DictConfig) -> int:
    t0 = time.perf_counter()
    drive_path = Path(cfg.drive)
    side_by_side = cfg.layout == "side_by_side"
    package = AvatarPackage.load(cfg.run, pick_device(cfg.get("device", "auto")), _options(cfg))
    limit_gaussians(package, cfg.get("max_gaussians"), OmegaConf.to_container(cfg.renderer))
    fix_deformer(package, "float32")  # the MLP's positional part once, not every frame (same posing, to float rounding)
    if package.is_body:
        return _render_body(cfg, package, drive_path, t0)
    from ..drive.body_motion import is_motion_file  # noqa: PLC0415

    if is_motion_file(drive_path):
        raise DriveError(f"{drive_path} is body motion (joint rotations) but {cfg.run} is a head avatar: drive a head "
                         "with a video, a tracked head capture, a parameter .npz or an ARKit .csv")
    video_options = {}
    if drive_path.suffix.lower() in VIDEO_SUFFIXES:
        video_options = {"model": package.model.to("cpu"), "max_frames": cfg.max_frames, "keep_frames": side_by_side,
                         "identity": cfg.retarget.driver_identity, "pose": package.has_torso}
    drive = load_drive(drive_path, package.expression_names, **video_options)
    package.model.to(package.device)
    if cfg.max_frames:
        n = int(cfg.max_frames)
        drive.expression, drive.rotation = drive.expression[:n], drive.rotation[:n]
        drive.translation = drive.translation[:n]
        drive.valid = None if drive.valid is None else drive.valid[:n]
        if drive.pose is not None:
            drive.pose, drive.pose_present = drive.pose[:n], drive.pose_present[:n]
    if side_by_side and drive_path.is_dir():
        capture = Capture(drive_path)
        drive.frames = [capture.load_frame(i) for i in range(drive.n_frames)]  # type: ignore[attr-defined]
    report = render_driven(
        package, drive, cfg.out, camera=cfg.camera, layout=cfg.layout, size=cfg.size,
        retarget_cfg=retarget_config(cfg), neutral_frame=cfg.neutral_frame,
        renderer=OmegaConf.to_container(cfg.renderer),
    )
    return _finish(cfg, report, t0)


def _render_body(cfg: DictConfig, package, drive_path: Path, t0: float) -> int:
    """A body avatar driven by a motion file or a tracked body capture (:mod:`avatar.drive.body_motion`),
    or by a person's video tracked on the fly (:mod:`avatar.drive.body_video`)."""
    from ..drive.body_motion import load_body_drive, render_body_driven  # noqa: PLC0415

    if cfg.layout != "avatar":
        raise DriveError("layout=side_by_side is for video and capture drivers of heads; a body avatar renders "
                         "layout=avatar")
    if drive_path.suffix.lower() in VIDEO_SUFFIXES:  # a person's video, tracked on the fly
        from ..drive.body_video import body_drive_from_video  # noqa: PLC0415

        drive = body_drive_from_video(drive_path, package, max_frames=cfg.max_frames)
    else:
        drive = load_body_drive(drive_path, package, fps=cfg.get("fps"), relative=cfg.relative)
    if cfg.max_frames:
        n = int(cfg.max_frames)
        drive.pose, drive.rotation, drive.translation = drive.pose[:n], drive.rotation[:n], drive.translation[:n]
    report = render_body_driven(package, drive, cfg.out, camera=cfg.camera, size=cfg.size,
                                renderer=OmegaConf.to_container(cfg.renderer))
    return _finish(cfg, report, t0)


def _finish(cfg: DictConfig, report: dict, t0: float) -> int:
    total = time.perf_counter() - t0
    report["end_to_end_fps"] = round(report["frames"] / total, 2)  # including loading and tracking the driver
    report["seconds_total"] = round(total, 2)
    report["output"] = str(Path(cfg.out).resolve())
    path = report_path(Path(cfg.out))
    if path.name != REPORT_NAME:
        report["notes"].append(f"{path.parent / REPORT_NAME} describes another video: this one's report is {path.name}")
    write_json(path, report)
    print(f"avatar render: {report['frames']} frames, render {report['render_fps']} FPS, end to end "
          f"{report['end_to_end_fps']} FPS\n  video:  {cfg.out}\n  report: {path}")
    for note in report["notes"]:  # what the driver lacked or what was done about it: stderr, like warnings
        print(f"avatar render: note: {note}", file=sys.stderr)
    return 0


def report_path(video: Path) -> Path:
    """``render_report.json`` beside ``video``, unless that one describes another video of the
    folder: then ``<video name>.render_report.json`` (a second render never replaces the first's report)."""
    path = video.parent / REPORT_NAME
    try:
        previous = json.loads(path.read_text()).get("output")
    except (OSError, ValueError, AttributeError):
        return path
    if previous is None or Path(previous).resolve() == video.resolve():
        return path
    return video.parent / f"{video.stem}.{REPORT_NAME}"


def _options(cfg: DictConfig) -> dict:
    """``model_options=`` overrides of the options recorded in the avatar file (e.g. a moved model file)."""
    options = cfg.get("model_options")
    return OmegaConf.to_container(options) if options else {}

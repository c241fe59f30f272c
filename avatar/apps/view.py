"""``avatar view run=RUN [drive=SOURCE]``: the trained avatar in a web browser (viser).

Exit status (:mod:`avatar.errors`): 0 when stopped (Ctrl-C or ``view.seconds``), 1 when an
input cannot be used (no ``avatar.pt`` in the run, the port in use, a driver that cannot be
read), 2 for a mistake on the command line.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from avatar.io.avatar_file import avatar_path
from ..device import pick_device
from ..drive.animate import AvatarPackage, driven_gaze, driven_poses, limit_gaussians
from ..drive.retarget import retarget_config
from ..drive.sources import VIDEO_SUFFIXES, load_drive
from ..errors import command
from ..gaussians.deform import fix_deformer
from ..view.avatar_viewer import AvatarViewer
from ..view.server import SplatServer, ViewerError
from .schema import register


@command("avatar view")
def main(cfg: DictConfig) -> int:
    view = cfg.view
    path = avatar_path(cfg.run)
    if not path.is_file():
        raise ViewerError(f"{path} does not exist: point run= at a run folder written by avatar train (it holds "
                          "avatar.pt once training finished; avatar export run=RUN writes one for an older run)")
    package = AvatarPackage.load(path, pick_device(cfg.get("device", "auto")), _options(cfg))
    limit_gaussians(package, view.max_gaussians)
    fix_deformer(package, view.deformer_dtype)
    poses, gaze, fps, frame_image = None, None, 25.0, None
    if cfg.drive is not None:
        drive_path = Path(cfg.drive)
        options = {}
        if drive_path.suffix.lower() in VIDEO_SUFFIXES:
            options = {"model": package.model.to("cpu"), "identity": cfg.retarget.driver_identity}
        drive = load_drive(drive_path, package.expression_names, **options)
        package.model.to(package.device)
        retarget_cfg = retarget_config(cfg)
        poses = driven_poses(package, drive, retarget_cfg, cfg.neutral_frame)
        gaze = driven_gaze(package, drive, poses[0], retarget_cfg, cfg.neutral_frame)
        fps = float(view.fps or drive.fps or 25.0)
        frame_image = _capture_frames(drive_path if drive_path.is_dir() else None)
    if view.capture_image and frame_image is None:
        frame_image = _capture_frames(_run_capture(path), first_only=True)
    if not view.capture_image:
        frame_image = None
    server = SplatServer(view.host, view.port, host_key="view.host", port_key="view.port",
                         title=f"avatar {path.parent.name}")
    viewer = AvatarViewer(package, server, poses, fps, frame_image, gaze=gaze)
    print(f"avatar view: {len(package.gaussians):,} Gaussians at {server.url} (Ctrl-C stops)", flush=True)
    try:
        deadline = None if view.seconds is None else time.monotonic() + float(view.seconds)
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    finally:
        viewer.close()
        server.close()
    print(f"avatar view: stopped after {server.rate.count} frames pushed")
    return 0


def _run_capture(path: Path) -> Path | None:
    """The capture the run was trained on, as its ``config.yaml`` names it (None: not known or gone)."""
    from avatar.io.run_folder import run_capture  # noqa: PLC0415

    capture = run_capture(path.parent)
    return capture if capture is not None and capture.is_dir() else None


def _capture_frames(root: Path | None, first_only: bool = False):
    """``frame_image(i)`` over the capture at ``root`` (None when there is none or it cannot be read)."""
    if root is None:
        return None
    from avatar.io.capture import Capture, CaptureError  # noqa: PLC0415

    try:
        capture = Capture(root)
        n = capture.n_frames
    except CaptureError:
        return None
    return lambda i: capture.load_frame(0 if first_only else min(int(i), n - 1))


def _options(cfg: DictConfig) -> dict:
    """``model_options=`` overrides of the options recorded in the avatar file (e.g. a moved model file)."""
    options = cfg.get("model_options")
    return OmegaConf.to_container(options) if options else {}


register("view")  # conf/view.yaml composes once this module is imported

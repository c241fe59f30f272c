"""``avatar export run=RUN``: the trained avatar for splat viewers and engines.

- canonical pose (no pose option): ``avatar.ply`` (3DGS attributes), ``avatar.spz`` (compact)
  and the drivable ``avatar.pt``, from the run's last checkpoint; a folder with only an
  ``avatar.pt`` gives the first two from it;
- ``expression=`` / ``head=``: ``posed.ply`` / ``posed.spz`` at those expression weights and head pose;
- ``drive=SOURCE``: every driver frame into ``sequence/``; with ``frame=N``, that frame alone.

Axes and units of every file: :mod:`avatar.drive.export` (and the README's Exports section).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from avatar.io.reports import write_json
from ..errors import UsageError, command
from ..io.avatar_file import AvatarFileError, avatar_path, read_avatar


@command("avatar export")
def main(cfg: DictConfig) -> int:
    formats = _formats(cfg)
    expression = _expression(cfg.get("expression"))
    head = _head(cfg.get("head"))
    posed = bool(expression) or any(h != 0 for h in head)
    if posed and cfg.drive is not None:
        raise UsageError("expression=/head= and drive= are two kinds of export: give one of them")
    if cfg.frame is not None and cfg.drive is None:
        raise UsageError(f"frame={cfg.frame} picks a frame of a driver: give drive=SOURCE too")
    out = Path(cfg.out)
    if cfg.drive is not None:
        report = _driven(cfg, out, formats)
    elif posed:
        report = _posed(cfg, out, formats, expression, head)
    else:
        report = _canonical(cfg, out, formats)
    path = write_json(out / "export_report.json", report)
    files = "".join(f"\n  {f}" for f in report["files"][:6]) + (
        f"\n  ... {len(report['files']) - 6} more" if len(report["files"]) > 6 else "")
    print(f"avatar export: {report['n_gaussians']} Gaussians, {report['kind']}{files}\n  report: {path}")
    if report.get("not_exported"):
        print(f"  not exported: {report['not_exported']}")
    return 0


def _head(value) -> tuple[float, float, float]:
    """``head=[yaw, pitch, roll]`` in degrees."""
    value = [0, 0, 0] if value is None else value
    try:
        if len(value) == 3:
            return tuple(float(h) for h in value)
    except (TypeError, ValueError):
        pass
    value = list(value) if OmegaConf.is_list(value) else value
    raise UsageError(f"head={value}: expected [yaw, pitch, roll] in degrees, e.g. head=[20,0,0]")


def _expression(value) -> dict:
    """``{name: weight}`` from ``expression=``: a mapping, or the text ``name:weight[,name:weight ...]``."""
    if value is None:
        return {}
    given = [o for o in _task_overrides() if o.split("=", 1)[0].lstrip("+") == "expression"]
    if len(given) > 1:  # bash turns expression={a:1,b:2} into expression=a:1 expression=b:2
        raise UsageError(f"expression= is given {len(given)} times ({' '.join(given)}): quote the value, "
                         "'expression={jawOpen:0.5,eyeBlinkLeft:1}', or the shell splits it at its commas")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, str):
        pairs = [p.split(":") for p in value.split(",") if p.strip()]
        if pairs and all(len(p) == 2 for p in pairs):
            try:
                return {name.strip(): float(weight) for name, weight in pairs}
            except ValueError:
                pass
    if not isinstance(value, dict):
        raise UsageError(f"expression={value}: expected names with weights, e.g. 'expression={{jawOpen:0.5,"
                         "eyeBlinkLeft:1}' (quoted: the shell expands unquoted braces)")
    return value


def _task_overrides() -> list[str]:
    """The command line's overrides, as Hydra recorded them (none outside a Hydra run)."""
    try:
        from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def _formats(cfg: DictConfig) -> tuple[str, ...]:
    from ..drive.export import FORMATS  # noqa: PLC0415

    formats = cfg.get("formats")
    formats = [formats] if isinstance(formats, str) else list(formats or [])
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(f"formats={formats}: expected a list of {', '.join(FORMATS)} (e.g. formats=[spz])")
    return tuple(formats)


def _package(cfg: DictConfig):
    from ..device import pick_device  # noqa: PLC0415
    from ..gaussians.package import AvatarPackage  # noqa: PLC0415

    path = avatar_path(cfg.run)
    if not path.is_file():
        raise AvatarFileError(f"{cfg.run} holds no avatar.pt: train an avatar there first (avatar train ... "
                              f"out={cfg.run}), or point run= at a folder that holds one")
    options = cfg.get("model_options")
    return AvatarPackage.load(path, pick_device(cfg.get("device", "auto")),
                              OmegaConf.to_container(options) if options else {})


def _summary(package, kind: str, files: list[Path], **extra) -> dict:
    return _report(kind, package.gaussians, package.model, package.state, files, **extra)


def _report(kind: str, gaussians, model, state: dict, files: list[Path], **extra) -> dict:
    from ..drive.export import reference_camera  # noqa: PLC0415

    device = next(iter(gaussians.params.values())).device
    if getattr(gaussians, "torso_texture", None) is not None:  # avatar=portrait (kind portrait_texture)
        extra["not_exported"] = ("the body's neural texture and its anchor warp: PLY / SPZ hold Gaussians only, "
                                 "so these files have the head without the shoulders; avatar.pt keeps the texture "
                                 "for avatar render / live")
    return {"kind": kind, "n_gaussians": len(gaussians), "sh_degree": int(gaussians.sh_degree),
            "files": [str(f) for f in files], **extra, "axes": AXES,
            "reference_camera": reference_camera(model, state, device)}


AXES = ("metres; +x the subject's left, +y up, +z out of the face (right-handed, OpenGL / three.js axes); "
        "head at the canonical pose; reference_camera: OpenCV camera axes (x right, y down, z forward)")


def _canonical(cfg: DictConfig, out: Path, formats) -> dict:
    """Today's export from the last checkpoint (avatar.ply, avatar.pt) plus avatar.spz; from the
    avatar.pt alone when the run has no checkpoint."""
    run = Path(cfg.run)
    if not (run / "checkpoints" / "last.pt").is_file():
        from ..drive.export import posed_splats  # noqa: PLC0415

        package = _package(cfg)
        if package.is_body:  # a body's canonical pose: its rest pose
            splats = posed_splats(package, np.zeros(0), np.zeros(3), np.zeros(3), pose=np.zeros((package.model.num_joints, 3)))
        else:
            n_expr = len(package.expression_names) or package.model.num_expression
            splats = posed_splats(package, np.zeros(n_expr), np.zeros(3), np.zeros(3))
        files = splats.save(out / "avatar", {"ply", *formats})
        return _summary(package, "canonical", files, ply=str(files[0]))
    from ..gaussians.ply import load_ply  # noqa: PLC0415
    from ..io.spz import write_spz  # noqa: PLC0415
    from ..train.session import export_ply, load_run, save_avatar  # noqa: PLC0415

    trainer, tracking, model, _ = load_run(run)
    ply = export_ply(trainer, tracking, model, out / "avatar.ply")
    pkg = save_avatar(trainer, tracking, out / "avatar.pt")
    files = [ply, pkg]
    if "spz" in formats:  # the same Gaussians as avatar.ply
        files.append(write_spz(out / "avatar.spz", **{k: v.numpy() for k, v in load_ply(ply).items()}))
    return _report("canonical", trainer.gaussians, model, read_avatar(pkg), files, ply=str(ply), package=str(pkg),
                   step=trainer.step)


def _posed(cfg: DictConfig, out: Path, formats, expression: dict, head: tuple) -> dict:
    from ..drive.export import head_rotation, posed_splats  # noqa: PLC0415
    from ..drive.sources import DriveError, expression_from_weights  # noqa: PLC0415

    package = _package(cfg)
    try:
        weights = expression_from_weights(expression, package.expression_names)
    except DriveError as exc:
        raise UsageError(f"expression: {exc}") from None
    yaw, pitch, roll = head
    files = posed_splats(package, weights, head_rotation(yaw, pitch, roll), np.zeros(3)).save(out / "posed", formats)
    return _summary(package, "posed", files, expression={str(k): float(v) for k, v in expression.items()},
                    head_deg={"yaw": yaw, "pitch": pitch, "roll": roll})


def _driven(cfg: DictConfig, out: Path, formats) -> dict:
    from ..drive.animate import driven_gaze, driven_poses  # noqa: PLC0415
    from ..drive.export import canonical_transform, export_sequence, posed_splats  # noqa: PLC0415
    from ..drive.retarget import retarget_config  # noqa: PLC0415
    from ..drive.sources import VIDEO_SUFFIXES, DriveError, load_drive  # noqa: PLC0415

    source = Path(cfg.drive)
    if cfg.frame is not None and cfg.max_frames and int(cfg.frame) >= int(cfg.max_frames):
        raise UsageError(f"frame={cfg.frame} is beyond max_frames={cfg.max_frames} (frames count from 0)")
    package = _package(cfg)
    options = {}
    if source.suffix.lower() in VIDEO_SUFFIXES:
        options = {"model": package.model.to("cpu"), "max_frames": cfg.max_frames,
                   "identity": cfg.retarget.driver_identity}
    drive = load_drive(source, package.expression_names, **options)
    package.model.to(package.device)
    if cfg.max_frames:
        n = int(cfg.max_frames)
        drive.expression, drive.rotation, drive.translation = drive.expression[:n], drive.rotation[:n], drive.translation[:n]
        drive.valid = None if drive.valid is None else drive.valid[:n]
        drive.gaze = None if drive.gaze is None else drive.gaze[:n]
    n = drive.n_frames
    if cfg.frame is not None and not 0 <= int(cfg.frame) < n:
        limit = " (max_frames=" + str(cfg.max_frames) + ")" if cfg.max_frames else ""
        raise DriveError(f"frame={cfg.frame} is beyond the driver {source}: it has {n} frames{limit}, 0 to {n - 1}")
    notes = list(drive.notes)
    retarget_cfg = retarget_config(cfg)
    poses = driven_poses(package, drive, retarget_cfg, cfg.neutral_frame, notes)
    gaze = driven_gaze(package, drive, poses[0], retarget_cfg, cfg.neutral_frame)
    extra = {"driver": str(source), "driver_frames": n, "fps": float(drive.fps), "notes": notes}
    if cfg.frame is not None:
        i = int(cfg.frame)
        splats = posed_splats(package, *(p[i] for p in poses), transform=canonical_transform(package),
                              gaze=None if gaze is None else gaze[i])
        return _summary(package, "driver frame", splats.save(out / f"frame_{i:05d}", formats), frame=i, **extra)
    info = export_sequence(package, poses, out / "sequence", formats, drive.fps, str(source), gaze=gaze)
    files = [out / "sequence" / name for names in info["files"] for name in names]
    return _summary(package, "sequence", files, frames=info["frames"], sequence=str(out / "sequence" / "sequence.json"),
                    seconds=info["seconds"], **extra)

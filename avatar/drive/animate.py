"""Driving a trained avatar: load its package, retarget a driving sequence and render it to video.

Retargeting (cross-identity, :mod:`avatar.drive.retarget`) applies the driver's expressions
relative to its neutral frame and its head motion relative to its first pose on top of the
avatar's reference pose (its first training frame).
"""

from __future__ import annotations

import logging
import math
import os
import time

import numpy as np
import torch

from ..gaussians.package import AvatarPackage
from ..geometry.cameras import orbit_viewmats
from .retarget import RetargetConfig, driver_gaze, driver_range, retarget, typical_mask
from .sources import DriveError, DriveSequence

log = logging.getLogger(__name__)


def profile_options(package: AvatarPackage) -> dict:
    """What retargeting takes from the avatar model's tracking profile: its antagonist pairs and
    the range of its expression coefficients (none for a model without a profile)."""
    profile = getattr(package.model, "tracking_profile", None)
    if profile is None:
        return {}
    return {"antagonists": profile.antagonists, "bounds": profile.expression_bounds}


def training_tracking(package: AvatarPackage):
    """``(tracking, holdout)``: the tracking of the capture the avatar was trained on and the run's
    ``train.holdout``, for avatar files written before training stored what driving needs (their
    run folder still pointing at the capture); None when there is none. Read once per package."""
    cached = getattr(package, "_training_tracking", False)
    if cached is not False:
        return cached
    found = None
    if package.path is not None:
        from avatar.io.run_folder import recorded_config, run_capture  # noqa: PLC0415
        from avatar.io.tracking import TrackingError, load_tracking  # noqa: PLC0415

        try:
            capture = run_capture(package.path.parent)
            if capture is not None:
                cfg = recorded_config(package.path.parent)
                train = cfg.get("train") if cfg is not None else None
                found = (load_tracking(capture), float(train.get("holdout", 0.15)) if train is not None else 0.15)
        except (TrackingError, OSError, ValueError) as exc:
            log.info("no training tracking for %s (%s)", package.path, exc)
    package._training_tracking = found
    return found


def expression_range(package: AvatarPackage):
    """How the avatar's expressions moved in its training frames (:class:`ExpressionRange`):
    stored in the avatar file by training; for files written before, read from the training
    capture's tracking when the run folder still points at it; else None (rest at zero)."""
    from ..tracking.expression_range import ExpressionRange  # noqa: PLC0415

    stored = package.state.get("expression_range")
    if stored is not None and "median" in stored:
        return ExpressionRange.from_state(stored)
    # Older files: no statistics at all, or no median; the training tracking has both.
    fallback = ExpressionRange.from_state(stored) if stored is not None else None
    found = training_tracking(package)
    if found is None:
        log.info("no expression statistics for %s: %s", package.path,
                 "rest at the stored low percentile" if fallback is not None else "rest expression zero")
        return fallback
    tracking = found[0]
    if list(tracking.expression_names) != list(package.expression_names):
        return fallback
    return ExpressionRange.from_sequence(tracking.expression, tracking.valid)


def turn_range(package: AvatarPackage) -> np.ndarray | None:
    """``[2, 2]`` radians: the yaw and pitch (low, high) of the avatar's training frames from its
    reference pose (:func:`avatar.geometry.rotations.training_turn_range`): stored in the avatar file
    by training; for files written before, read from the training capture's tracking (its first
    ``train.holdout`` of usable frames) when the run folder still points at it; else None."""
    from ..geometry.rotations import training_turn_range  # noqa: PLC0415

    stored = package.state.get("turn_range")
    if stored is not None:
        return np.asarray(stored, np.float64)
    ref = package.state.get("reference_rotation")
    found = None if ref is None or package.is_body else training_tracking(package)
    if found is None:
        return None
    tracking, holdout = found
    usable = np.flatnonzero(np.asarray(tracking.valid, bool))
    if tracking.rotation.ndim != 2 or len(usable) < 2:
        return None
    train = usable[: max(1, len(usable) - int(round(len(usable) * holdout)))]
    return training_turn_range(tracking.rotation[train], np.asarray(ref, np.float64))


TURN_NOTE_DEG = 15.0  # a driven turn this far beyond the avatar's trained turns is noted (offline and live)


def turn_beyond(rotation: np.ndarray, reference: np.ndarray, trained: np.ndarray) -> float:
    """Degrees: how far the yaw or pitch of the head rotations ``rotation [F, 3]`` (axis-angle) from
    ``reference [3]`` goes beyond the ``trained`` turns (:func:`turn_range`), at most over frames and axes."""
    from ..geometry.rotations import axis_angle_turns  # noqa: PLC0415

    angles = axis_angle_turns(rotation, reference)[:, :2]
    low, high = np.asarray(trained, np.float64)[:, 0], np.asarray(trained, np.float64)[:, 1]
    excess = np.maximum(angles - high, low - angles).max(initial=0.0)
    return float(np.degrees(max(excess, 0.0)))


def avatar_rest(package: AvatarPackage) -> np.ndarray:
    """``[E]`` float32: the expression a driven avatar starts from (the retargeting's avatar rest
    with the default ``typical`` blendshapes, lids and brows, at their training median); zeros
    when the avatar has no expression statistics."""
    names = package.expression_names
    rng = expression_range(package)
    if rng is None:
        return np.zeros(len(names), np.float32)
    return np.asarray(rng.level(typical_mask(names, RetargetConfig.typical)), np.float32)


def eye_turns(package: AvatarPackage, expression: np.ndarray, gain: float,
              limit_deg: float = RetargetConfig.eyes_max_deg, vertical: float = 1.0) -> np.ndarray | None:
    """``[F, 2, 2]`` float32 per frame and eyeball (right, left): (yaw, pitch) radians to turn the
    avatar's eyeballs by for the retargeted ``expression [F, E]`` (or ``[E]``: ``[2, 2]``): ``gain``
    times the gaze its ``eyeLook*`` coefficients stand for (as the trackers read it) minus the
    gaze of the avatar's rest (:func:`avatar_rest`), the pitch also times ``vertical``, each angle
    within ``limit_deg``. None when
    ``gain`` is 0 or the avatar's model cannot turn its eyes."""
    profile = package.gaze_profile() if gain else None
    if profile is None:
        return None
    from ..tracking.landmark_model import blendshape_gaze_angles  # noqa: PLC0415

    names = list(package.expression_names)
    e = np.asarray(expression, np.float64)
    d = torch.as_tensor(np.atleast_2d(e) - avatar_rest(package).astype(np.float64)[None])
    yaw, pitch = blendshape_gaze_angles(profile.gaze, names.index, d)
    limit = math.radians(limit_deg)
    out = (float(gain) * torch.stack((yaw, float(vertical) * pitch), -1)).clamp(-limit, limit).numpy().astype(np.float32)
    return out if e.ndim == 2 else out[0]


def driven_gaze(package: AvatarPackage, drive: DriveSequence, expression: np.ndarray,
                retarget_cfg: RetargetConfig | None = None, neutral_frame: int | None = None) -> np.ndarray | None:
    """``[F, 2, 2]`` the avatar's eyeball turns for ``drive`` (None: they stay as trained): from the
    driver's irises when it was read off a video (:func:`avatar.drive.retarget.driver_gaze`), else
    from the gaze blendshapes of the retargeted ``expression [F, E]`` (:func:`eye_turns`: ARKit
    CSVs, parameter files). ``retarget_cfg.eyes`` scales both; models without eyeballs never turn."""
    cfg = retarget_cfg or RetargetConfig()
    if not cfg.eyes or package.gaze_profile() is None:
        return None
    if drive.gaze is not None:
        return driver_gaze(drive, cfg, neutral_frame)
    return eye_turns(package, expression, cfg.eyes, limit_deg=cfg.eyes_max_deg, vertical=cfg.eyes_vertical)


CPU_LIVE_GAUSSIANS = 12000  # max_gaussians=auto on a CPU: real time at 256x256 on 2 cores (benchmarks/live.py)


def limit_gaussians(package: AvatarPackage, max_gaussians: int | str | None, renderer: dict | None = None) -> None:
    """:meth:`AvatarPackage.limit_gaussians` with a log line saying what it kept and how long it took.

    ``max_gaussians``: a number, None (all), or "auto" (:data:`CPU_LIVE_GAUSSIANS` on a CPU, all on a GPU)."""
    if max_gaussians == "auto":
        max_gaussians = CPU_LIVE_GAUSSIANS if package.device.type == "cpu" else None
    elif isinstance(max_gaussians, str):
        raise DriveError(f"max_gaussians must be a number, null or auto, got {max_gaussians!r}")
    if not max_gaussians or len(package.gaussians) <= max_gaussians:
        return
    t0 = time.perf_counter()
    n = package.limit_gaussians(int(max_gaussians), renderer=renderer)
    log.info("kept the %d of %d Gaussians that show most (%.1f s)", len(package.gaussians), n, time.perf_counter() - t0)


def body_warp_downscale(package: AvatarPackage, factor: int | None) -> int | None:
    """Draw a portrait's body-texture warp (:class:`avatar.gaussians.torso_texture.TorsoTexture`) at
    1/``factor`` of the frame each way; returns the factor set, or None for avatars without one."""
    texture = getattr(package.gaussians, "torso_texture", None)
    if texture is None or factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise DriveError(f"body_warp_downscale must be a whole number >= 1 (1: full size), got {factor!r}")
    texture.warp_downscale = factor
    return factor


def driven_poses(package: AvatarPackage, drive: DriveSequence, retarget_cfg: RetargetConfig | None = None,
                 neutral_frame: int | None = None, notes: list | None = None):
    """``(expression [F, E], rotation [F, 3], translation [F, 3])``: ``drive`` retargeted onto
    ``package`` (:func:`avatar.drive.retarget.retarget`), the head placed relative to the avatar's
    reference pose, in the model world of its reference camera. What the report should say
    about the retargeting's inputs is appended to ``notes``."""
    ref_r, ref_t = package.reference_pose(drive)
    avatar_range = expression_range(package)
    drv = driver_range(drive, neutral_frame)
    holding = retarget_cfg is not None and retarget_cfg.turn_margin_deg is not None
    trained = turn_range(package) if holding or notes is not None else None
    poses = retarget(drive, ref_r, ref_t, package.expression_names, retarget_cfg, avatar_range,
                     neutral_frame, drv, **profile_options(package), turn_range=trained if holding else None)
    if notes is not None and holding and trained is None:
        notes.append("retarget.turn_margin_deg: the avatar's trained head turns are not known (an avatar file from "
                     "before they were recorded, its training capture gone): the head turns as the driver's")
    if notes is not None and trained is not None and not holding:
        beyond = turn_beyond(poses[1], ref_r, trained)
        if beyond > TURN_NOTE_DEG:
            notes.append(f"the driver turns the head up to {beyond:.0f} degrees beyond the turns the avatar was trained "
                         "on: there its hair, glasses and cheeks may show torn patches; retarget.turn_margin_deg=10 "
                         "holds the turn near the trained ones")
    if notes is not None:
        notes += retarget_notes(avatar_range, drv if neutral_frame is None else None, package.expression_names)
    return poses


def driven_frames(package: AvatarPackage, drive: DriveSequence, camera: str = "tracked", size: int | None = None,
                  retarget_cfg: RetargetConfig | None = None, neutral_frame: int | None = None,
                  renderer: dict | None = None, notes: list | None = None, orbit_sweep_deg: float | None = None):
    """Yield ``(image [H, W, 3] uint8, backend, rasterization seconds)`` per driver frame: ``drive``
    retargeted onto ``package`` (:func:`avatar.drive.retarget.retarget`) and rendered through
    ``camera`` (tracked | fixed | orbit) at ``size`` pixels high. ``orbit_sweep_deg``: the orbit
    swings through this many degrees in front of the face (None: all the way round). What the report should say
    about the retargeting's inputs is appended to ``notes``. Checks and retargets at once;
    renders as the frames are taken."""
    if camera not in ("tracked", "fixed", "orbit"):
        raise DriveError(f"camera must be tracked, fixed or orbit, got {camera!r}")
    dev = package.device
    ref_r, ref_t = package.reference_pose(drive)
    expr, rot, trans = driven_poses(package, drive, retarget_cfg, neutral_frame, notes)
    if camera == "fixed":
        rot[:], trans[:] = ref_r, ref_t
    K, width, height = package.camera(size)
    torso = driven_torso(package, drive, notes)
    viewmats = package.state["viewmat"].to(dev, torch.float32)[None].expand(drive.n_frames, 4, 4)
    if camera == "orbit":
        centre = tuple(float(x) for x in ref_t)
        viewmats = orbit_viewmats(drive.n_frames, radius=float(np.linalg.norm(ref_t)), target=centre,
                                  sweep_deg=orbit_sweep_deg, device=dev)
    gaze = driven_gaze(package, drive, expr, retarget_cfg, neutral_frame)
    return (package.render_frame(expr[i], rot[i], trans[i], viewmats[i], K, width, height, renderer,
                                 torso=None if torso is None else torso[i], gaze=None if gaze is None else gaze[i])
            for i in range(drive.n_frames))


def driven_torso(package: AvatarPackage, drive: DriveSequence, notes: list | None = None) -> np.ndarray | None:
    """``[F, 4, 4]`` the avatar's torso moved by the driver's shoulders (:mod:`avatar.drive.torso`), or
    None (at rest) for an avatar without a torso or a driver without a body; what happened is
    appended to ``notes``."""
    if not package.has_torso:
        return None
    say = notes.append if notes is not None else (lambda _: None)
    if drive.pose is None:
        say("the driver has no body (no pose landmarks): the avatar's shoulders stay at rest")
        return None
    from .torso import torso_motion  # noqa: PLC0415

    w, h = drive.frame_size
    motion = torso_motion(drive.pose, drive.pose_present, w, h)
    if motion is None:
        say("no driver frame shows both shoulders: the avatar's shoulders stay at rest")
        return None
    missing = int((~motion.measured).sum())
    if missing:
        say(f"{missing} of {drive.n_frames} driver frames do not show both shoulders: their torso is interpolated")
    rest = package.gaussians.torso_rest.detach().cpu().numpy()
    width = float(package.state.get("shoulder_width", 0.36))
    return motion.transforms(rest, width)


def render_driven(package: AvatarPackage, drive: DriveSequence, out: str | os.PathLike, camera: str = "tracked",
                  layout: str = "avatar", size: int | None = None, retarget_cfg: RetargetConfig | None = None,
                  neutral_frame: int | None = None, renderer: dict | None = None, progress: bool = True,
                  orbit_sweep_deg: float | None = None) -> dict:
    """Render ``drive`` on ``package`` into the video ``out``; returns the report (``orbit_sweep_deg``:
    :func:`driven_frames`)."""
    from avatar.io.video import VideoWriter  # noqa: PLC0415

    if layout not in ("avatar", "side_by_side"):
        raise DriveError(f"layout must be avatar or side_by_side, got {layout!r}")
    driver_frames = getattr(drive, "frames", None)
    if layout == "side_by_side" and driver_frames is None:
        raise DriveError("layout=side_by_side needs driver frames: drive from a video or a capture folder")
    t_start = time.perf_counter()
    dev = package.device
    _, width, height = package.camera(size)
    notes = list(drive.notes)
    frames = driven_frames(package, drive, camera, size, retarget_cfg, neutral_frame, renderer, notes, orbit_sweep_deg)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        frames = tqdm(frames, desc="render", unit="frame", total=drive.n_frames)
    render_s, backend = 0.0, None
    with VideoWriter(out, fps=drive.fps) as video:
        for i, (frame, backend, seconds) in enumerate(frames):
            render_s += seconds
            if layout == "side_by_side":
                import cv2  # noqa: PLC0415

                d = driver_frames[i]
                d = cv2.resize(d, (int(round(d.shape[1] * height / d.shape[0])), height), interpolation=cv2.INTER_AREA)
                frame = np.concatenate((d, frame), axis=1)
            video.write(frame)
    total = time.perf_counter() - t_start
    return {
        "command": "render",
        "driver": drive.source,
        "frames": drive.n_frames,
        "driver_frames_without_face": int((~drive.valid).sum()) if drive.valid is not None else 0,
        "camera": camera,
        "layout": layout,
        "size": [width, height],
        "n_gaussians": len(package.gaussians),
        "backend": backend,
        "device": str(dev),
        "render_fps": round(drive.n_frames / max(render_s, 1e-9), 2),
        "end_to_end_fps": round(drive.n_frames / max(total, 1e-9), 2),
        "seconds": round(total, 2),
        "driver_tracking": drive.info,
        "notes": notes,
        "output": str(out),
    }


UNSURE_AT_REST = 0.3  # the driver's neutral is reported unsure below this share of frames near it


def retarget_notes(avatar_range, driver, names=None) -> list[str]:
    """What the report should say about the retargeting's inputs: an avatar without expression
    statistics, and how sure the driver's estimated neutral is (``driver``: its
    :class:`ExpressionRange`, None when a chosen frame is the neutral)."""
    notes = []
    if avatar_range is None:
        notes.append("the avatar package has no expression statistics (trained before they were stored): its rest "
                     "expression is taken as zero")
    rng = driver
    if rng is not None:
        # Talking clips measure 0.47-0.52 here (the shared real videos); a face never at rest, lower.
        if rng.at_rest < UNSURE_AT_REST:
            held = rng.high_rest(names if names is not None else [str(i) for i in range(len(rng.rest))])
            notes.append(f"the driver's neutral is unsure: its blendshapes sit near their estimated rest in only "
                         f"{rng.at_rest:.0%} of the frames" + (f" (resting high: {held})" if held else "")
                         + "; is the driver expressive throughout? set neutral_frame= to a frame with a relaxed face")
    return notes

"""Drive a body avatar from another person's video: pose landmarks tracked on the fly.

:func:`body_motion_from_video` decodes the driver video, finds MediaPipe's 33 pose landmarks
in every frame (:func:`avatar.landmarks.pose.detect_poses`, tracking mode; short gaps
bridged) and fits the *avatar's* body to them (:func:`avatar.tracking.body_fit.fit_body_sequence`
with the avatar's shape held fixed, landmarks only, a short schedule): the driver's joint
rotations, global rotation and translation become the avatar's, whatever the driver's build.
The motion is in the tracking camera's world (``viewmat = diag(1, -1, -1, 1)``, the body at
negative z), as a body ``tracking.npz`` is.

:func:`body_motion_from_landmarks` is the same fit on landmarks already found.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avatar.tracking.body_fit import BodyFitConfig, fit_body_sequence
from .sequence import DriveError

# A short schedule: the avatar's shape is known, no silhouette.
DRIVE_FIT = dict(global_iterations=60, torso_iterations=60, limb_iterations=100, fit_shape=False)


@dataclass
class BodyMotion:
    """Per-frame body motion for a body avatar (the avatar model's joints, tracking camera world)."""

    pose: np.ndarray  # [F, J, 3] joint rotations, axis-angle (radians)
    rotation: np.ndarray  # [F, 3] global rotation, axis-angle about the root's rest position
    translation: np.ndarray  # [F, 3] metres
    fps: float
    source: str
    valid: np.ndarray  # [F] bool: the driver's pose was found (others interpolated)
    focal: float = 0.0  # the driver video's fitted focal length, pixels
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return self.pose.shape[0]


def body_motion_from_landmarks(body, shape: torch.Tensor, landmarks: np.ndarray, valid: np.ndarray, width: int,
                               height: int, fps: float, source: str = "landmarks", cfg: BodyFitConfig | None = None,
                               progress: bool = False) -> BodyMotion:
    """Fit ``body`` with the fixed ``shape [S]`` to pose ``landmarks [F, 33, 4]`` (pixels of
    ``width x height`` frames) with ``valid [F]``; device and dtype follow ``body``'s buffers."""
    if not np.asarray(valid).any():
        raise DriveError(f"{source}: no frame shows a person's pose; a driving video needs one person, "
                         "whole body or at least head to hips in view")
    cfg = cfg or BodyFitConfig(**DRIVE_FIT)
    dev, dt = body.template.device, body.template.dtype
    t0 = time.perf_counter()
    result = fit_body_sequence(body, torch.as_tensor(landmarks, device=dev, dtype=dt),
                               torch.as_tensor(np.asarray(valid, bool), device=dev), width, height,
                               cfg=cfg, shape=shape.to(dev, dt), progress=progress)
    valid = np.asarray(valid, bool)
    notes = []
    if not valid.all():
        notes.append(f"{int((~valid).sum())} of {len(valid)} driver frames without a pose were interpolated")
    return BodyMotion(result.pose.cpu().numpy(), result.rotation.cpu().numpy(), result.translation.cpu().numpy(),
                      float(fps), source, valid, result.focal, notes,
                      {"fit_seconds": round(time.perf_counter() - t0, 3), "stages": result.stats})


def body_motion_from_video(path: str | os.PathLike, body, shape: torch.Tensor, max_frames: int | None = None,
                           fps: float | None = None, max_gap: int = 5, cfg: BodyFitConfig | None = None,
                           progress: bool = False) -> BodyMotion:
    """Track the driver video ``path`` and fit the avatar's body (fixed ``shape [S]``) to it (module doc)."""
    from avatar.io.video_reader import open_source
    from avatar.landmarks.pose import detect_poses

    source = open_source(path)
    info = source.info
    t0 = time.perf_counter()
    frames = (frame.image for frame in source.frames(max_frames, fps))
    track = detect_poses(frames, video=True, max_gap=max_gap, progress=progress, total=info.n_frames or None)
    detect_seconds = time.perf_counter() - t0
    if track.landmarks.shape[0] == 0:
        raise DriveError(f"{path} yielded no frame")
    rate = min(fps, info.fps) if fps and info.fps else (fps or info.fps or 25.0)
    motion = body_motion_from_landmarks(body, shape, track.landmarks, track.present, info.width, info.height, rate,
                                        str(Path(path)), cfg, progress)
    motion.info.update(detect_seconds=round(detect_seconds, 3), detected=int(track.valid.sum()),
                       bridged=int(track.filled.sum()))
    return motion


def retarget_body_motion(package, motion: BodyMotion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pose [F, J, 3], rotation [F, 3], translation [F, 3])`` putting ``motion`` (tracking camera
    world, fitted with the avatar's own body) in front of the avatar's camera: the driver's
    rotation as seen by its camera becomes the avatar's as seen by its own, and the driver's root
    moves about the avatar's reference position by the driver's motion relative to its first
    frame, scaled by the ratio of the two depths."""
    from avatar.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    f64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    V = f64(package.state["viewmat"].cpu())
    Va, va = V[:3, :3], V[:3, 3]
    Vd = torch.diag(f64([1.0, -1.0, -1.0]))  # the driver's tracking camera
    root = f64(package._body_rest()[1][0, 0].cpu())  # rest root joint: the rotations turn about it
    ref_r, ref_t = package.reference_pose_or(motion.rotation[0], motion.translation[0])
    q_ref = Va @ (root + f64(ref_t)) + va  # the avatar's root in its camera
    q_d = (root + f64(motion.translation)) @ Vd.T  # [F, 3] the driver's root in its camera
    s = q_ref[2] / q_d[0, 2].clamp_min(1e-6)
    q = q_ref + (q_d - q_d[0]) * s
    translation = (q - va) @ Va - root  # Va^T (q - va) - root, row-wise
    R = Va.T @ Vd @ axis_angle_to_matrix(f64(motion.rotation))
    return (motion.pose.astype(np.float32), matrix_to_axis_angle(R).numpy().astype(np.float32),
            translation.numpy().astype(np.float32))


def render_body_driven(package, motion: BodyMotion, out: str | os.PathLike, camera: str = "tracked",
                       size: int | None = None, renderer: dict | None = None, progress: bool = True) -> dict:
    """Render ``motion`` on the body avatar ``package`` into the video ``out`` (camera tracked:
    the avatar's camera, the driver's global motion; fixed: the avatar stays at its reference
    place and facing, the joints move; orbit: the camera circles the avatar); returns the report."""
    from avatar.geometry.cameras import orbit_viewmats
    from avatar.io.video import VideoWriter

    if camera not in ("tracked", "fixed", "orbit"):
        raise DriveError(f"camera must be tracked, fixed or orbit, got {camera!r}")
    t_start = time.perf_counter()
    pose, rotation, translation = retarget_body_motion(package, motion)
    if camera == "fixed":
        rotation[:], translation[:] = rotation[0], translation[0]
    K, width, height = package.camera(size)
    dev = package.device
    F = motion.n_frames
    viewmats = package.state["viewmat"].to(dev, torch.float32)[None].expand(F, 4, 4)
    if camera == "orbit":
        V = package.state["viewmat"].cpu().double()
        centre_cam = -V[:3, :3].T @ V[:3, 3]
        root = package._body_rest()[1][0, 0].cpu().double() + torch.as_tensor(translation[0], dtype=torch.float64)
        viewmats = orbit_viewmats(F, radius=float((root - centre_cam).norm()), target=tuple(root.tolist()), device=dev)
    frames = range(F)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc="render", unit="frame")
    render_s, backend = 0.0, None
    with VideoWriter(out, fps=motion.fps) as video:
        for i in frames:
            image, backend, seconds = package.render_frame(None, rotation[i], translation[i], viewmats[i], K, width,
                                                           height, renderer, pose=pose[i])
            render_s += seconds
            video.write(image)
    total = time.perf_counter() - t_start
    return {
        "command": "render", "driver": motion.source, "frames": F, "subject": "body",
        "driver_frames_without_pose": int((~motion.valid).sum()), "camera": camera, "size": [width, height],
        "n_gaussians": len(package.gaussians), "backend": backend, "device": str(dev),
        "render_fps": round(F / max(render_s, 1e-9), 2), "end_to_end_fps": round(F / max(total, 1e-9), 2),
        "seconds": round(total, 2), "driver_tracking": motion.info, "notes": list(motion.notes), "output": str(out),
    }

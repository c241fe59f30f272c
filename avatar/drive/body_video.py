"""Drive a body avatar from another person's video: pose landmarks tracked on the fly.

:func:`body_motion_from_video` decodes the driver video, finds MediaPipe's 33 pose landmarks
in every frame (:func:`avatar.landmarks.pose.detect_poses`, tracking mode; short gaps
bridged) and fits the *avatar's* body to them (:func:`avatar.tracking.body_fit.fit_body_sequence`
with the avatar's shape held fixed, landmarks only, a short schedule): the driver's joint
rotations, global rotation and translation become the avatar's, whatever the driver's build.
The motion is in the tracking camera's world (``viewmat = diag(1, -1, -1, 1)``, the body at
negative z), as a body ``tracking.npz`` is; :func:`body_drive_from_video` puts it in front of the
avatar's camera (``avatar render run=BODY_RUN drive=VIDEO``).

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


def body_drive_from_video(path: str | os.PathLike, package, max_frames: int | None = None,
                          progress: bool = False):
    """A :class:`avatar.drive.body_motion.BodyDrive` for the body avatar ``package`` from the video
    of a person at ``path``: tracked with the avatar's own body (:func:`body_motion_from_video`) and
    put in front of its camera (:func:`retarget_body_motion`); render it with
    :func:`avatar.drive.body_motion.render_body_driven`."""
    from .body_motion import BodyDrive

    shape = package.state["shape"].to(package.device, package.model.template.dtype)
    motion = body_motion_from_video(path, package.model, shape, max_frames=max_frames, progress=progress)
    pose, rotation, translation = retarget_body_motion(package, motion)
    info = motion.info
    notes = list(motion.notes) + [f"driver tracked on the fly: a pose in {info['detected']} of {motion.n_frames} frames "
                                  f"(+{info['bridged']} bridged), detection {info['detect_seconds']} s, body fit "
                                  f"{info['fit_seconds']} s"]
    return BodyDrive(pose, rotation, translation, motion.fps, motion.source, notes)

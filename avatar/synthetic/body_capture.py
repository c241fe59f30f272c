"""Synthetic ground-truth body captures: a textured body model (Anny by default) walking in
place, swinging and raising its arms and turning a full circle, seen by a fixed camera.

:func:`make_body_capture` writes a capture folder (:mod:`avatar.io.capture`) marked
``extra.subject = "body"``, plus what made it:

- ``frames/``: the body, Lambert-shaded, its albedo a procedural outfit on the rest mesh
  (:func:`body_colors`: skin, hair, a striped shirt with a chest badge, so front and back
  differ, trousers, shoes) over the soft backdrop of the head captures;
- ``masks/``: the rendered silhouette (with ``supersample`` > 1 the share of each pixel covered);
- ``landmarks.npz``: ``pose [F, 33, 4]``: the model's 33 MediaPipe Pose landmarks projected
  (x, y pixels; z the camera depth minus the root's, metres; visibility 1), ``pose_present``
  all True; ``face`` zeros, ``face_present`` False. They are the truth, not a detector's;
- ``ground_truth.npz``: the keys of a body ``tracking.npz`` (:class:`avatar.io.tracking.BodyTrackedSequence`:
  ``kind``, ``model``, ``shape``, ``shape_names``, ``pose [F, J, 3]``, ``joint_names``, ``rotation``,
  ``translation``, ``K``, ``viewmat``, ``width``, ``height``, ``valid``) plus ``landmarks2d [F, 33, 2]``,
  ``joints2d [F, J, 2]`` (pixels) and ``fps``;
- ``tracking.npz`` (with ``write_tracking``): the ground truth as the body tracking file, so
  the avatar stages can be measured without the tracker's error;
- ``synthetic_report.json``: frames, timings.

The performance (:func:`body_performance`) is defined on normalised time (any frame count
plays all of it): three walking steps in place (hips, knees, arms swinging against the legs,
elbows), both arms raised sideways in the middle, and one full turn about the vertical axis
(the held-out end of the sequence faces the way its start does).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avatar.geometry.cameras import intrinsics, look_at
from avatar.io.capture import CaptureMeta, CaptureWriter, Landmarks
from avatar.io.reports import write_json
from avatar.io.tracking import BodyTrackedSequence
from avatar.render import render_mesh
from avatar.synthetic.capture import GROUND_TRUTH_FILE, REPORT_FILE, background_image

log = logging.getLogger(__name__)


@dataclass
class BodySyntheticConfig:
    """Options of :func:`make_body_capture`.

    Attributes:
        n_frames: frames to render (the whole performance plays whatever the count).
        resolution: width = height in pixels.
        seed: seeds the phenotype and the backdrop.
        fps: frame rate written to ``meta.json``.
        focal: focal length in image widths.
        distance: camera distance from the body's root, metres.
        target_y: height (metres, body axes) of the point the camera looks at.
        turns: full turns about the vertical axis over the sequence.
        steps: walking cycles over the sequence.
        phenotype_spread: the random shape is ``default +- spread`` (uniform; clipped to the bounds).
        ambient, light_dir: Lambert shading; ``light_dir`` in camera axes, toward the light.
        batch_size: frames rendered at once.
        frame_format: "jpg" or "png".
        supersample: render this many times larger each way and average down.
        write_tracking: also write the truth as ``tracking.npz``.
    """

    n_frames: int = 60
    resolution: int = 256
    seed: int = 0
    fps: float = 25.0
    focal: float = 1.4
    distance: float = 2.9
    target_y: float = -0.02
    turns: float = 1.0
    steps: float = 3.0
    phenotype_spread: float = 0.2
    ambient: float = 0.55
    light_dir: tuple[float, float, float] = (-0.3, -0.5, -1.0)
    batch_size: int = 8
    frame_format: str = "png"
    supersample: int = 2
    write_tracking: bool = True


@dataclass
class BodyPerformance:
    """Per-frame parameters: ``pose [F, J, 3]`` axis-angles (radians, the contract's), global
    ``rotation [F, 3]`` and ``translation [F, 3]`` (metres)."""

    pose: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray


def _bump(t: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    x = np.clip(np.abs(t - centre) / half_width, 0.0, 1.0)
    return 1.0 - x * x * (3 - 2 * x)


def body_performance(joint_names: tuple[str, ...], n_frames: int, steps: float = 3.0,
                     turns: float = 1.0) -> BodyPerformance:
    """The scripted body performance (module doc) on a skeleton with Anny's or SMPL's joint names.

    Axes of the rotations: +X the subject's left, +Y up, +Z forward: a leg or an arm swings
    forward with a negative X rotation; the left arm rises sideways with +Z, the right with -Z.
    """
    if n_frames < 2:
        raise ValueError(f"a synthetic sequence needs at least 2 frames, got {n_frames}")
    names = {n: i for i, n in enumerate(joint_names)}
    aliases = {  # Anny name -> SMPL name
        "upperleg01.L": "left_hip", "upperleg01.R": "right_hip", "lowerleg01.L": "left_knee",
        "lowerleg01.R": "right_knee", "upperarm01.L": "left_shoulder", "upperarm01.R": "right_shoulder",
        "lowerarm01.L": "left_elbow", "lowerarm01.R": "right_elbow", "spine03": "spine2", "head": "head",
    }

    def index(name: str) -> int:
        for candidate in (name, aliases.get(name)):
            if candidate in names:
                return names[candidate]
        raise ValueError(f"the skeleton has no joint '{name}' (nor '{aliases.get(name)}')")

    t = np.linspace(0.0, 1.0, n_frames)
    phase = 2 * math.pi * steps * t
    pose = np.zeros((n_frames, len(joint_names), 3))
    walk = 1.0 - 0.8 * _bump(t, 0.5, 0.14)  # the walk calms while the arms rise
    raise_arms = _bump(t, 0.5, 0.14)
    for side, sign in (("L", 1.0), ("R", -1.0)):
        leg = sign * np.sin(phase)
        pose[:, index(f"upperleg01.{side}"), 0] = -0.45 * leg * walk
        pose[:, index(f"lowerleg01.{side}"), 0] = 0.65 * np.clip(np.sin(phase * sign + 0.9 * sign), 0, None) * walk
        pose[:, index(f"upperarm01.{side}"), 0] = 0.4 * leg * walk
        pose[:, index(f"upperarm01.{side}"), 2] = sign * 1.1 * raise_arms
        pose[:, index(f"lowerarm01.{side}"), 0] = -(0.25 + 0.2 * np.clip(leg, 0, None)) * walk
    pose[:, index("spine03"), 1] = 0.08 * np.sin(phase)
    pose[:, index("head"), 1] = 0.25 * np.sin(2 * math.pi * t * 1.5)
    yaw = 2 * math.pi * turns * t
    rotation = np.zeros((n_frames, 3))
    rotation[:, 1] = yaw
    translation = np.stack((0.02 * np.sin(2 * math.pi * t), 0.012 * np.abs(np.sin(phase)), 0.03 * np.sin(4 * math.pi * t)), 1)
    return BodyPerformance(pose.astype(np.float32), rotation.astype(np.float32), translation.astype(np.float32))


# Outfit colours (linear 0..1 albedo).
SKIN = (0.80, 0.60, 0.48)
HAIR = (0.22, 0.14, 0.09)
SHIRT = ((0.16, 0.38, 0.66), (0.90, 0.88, 0.80))
BADGE = (0.85, 0.18, 0.15)
TROUSERS = ((0.22, 0.22, 0.28), (0.30, 0.28, 0.36))
SHOES = (0.10, 0.09, 0.09)


def body_colors(body, rest_vertices: torch.Tensor) -> torch.Tensor:
    """``[V, 3]`` albedo of a procedural outfit on ``rest_vertices [V, 3]`` (contract axes):
    skin (face, lower arms, hands), hair, a shirt with 9 cm stripes and a red badge on the chest,
    trousers with a soft check, dark shoes."""
    v = rest_vertices.detach().cpu().double()
    x, y, z = v.unbind(-1)
    names = body.joint_names
    dominant = body.lbs_weights.detach().cpu().argmax(1)

    def on(*joints: str) -> torch.Tensor:
        ids = torch.tensor([names.index(j) for j in joints if j in names], dtype=torch.long)
        return torch.isin(dominant, ids)

    landmarks = dict(zip(body.landmark_names, body.landmarks(rest_vertices[None].to(body.template))[0].cpu().double()))
    hip_y = float((landmarks["left_hip"][1] + landmarks["right_hip"][1]) / 2)
    ankle_y = float((landmarks["left_ankle"][1] + landmarks["right_ankle"][1]) / 2)
    eye_y = float((landmarks["left_eye"][1] + landmarks["right_eye"][1]) / 2)
    ear_z = float((landmarks["left_ear"][2] + landmarks["right_ear"][2]) / 2)
    chest = landmarks["left_shoulder"] * 0.5 + landmarks["right_shoulder"] * 0.5

    stripe = 0.5 + 0.5 * torch.sin(2 * math.pi * y / 0.09)
    shirt = torch.tensor(SHIRT[0]) * stripe[:, None] + torch.tensor(SHIRT[1]) * (1 - stripe[:, None])
    check = (0.5 + 0.25 * (torch.sin(2 * math.pi * x / 0.12) + torch.sin(2 * math.pi * y / 0.12)))[:, None]
    trousers = torch.tensor(TROUSERS[0]) * check + torch.tensor(TROUSERS[1]) * (1 - check)
    colors = torch.where((y > hip_y - 0.04)[:, None], shirt, trousers)
    badge = ((x - chest[0]) ** 2 + (y - chest[1] + 0.12) ** 2 < 0.05 ** 2) & (z > float(chest[2]) - 0.02)
    colors[badge] = torch.tensor(BADGE).double()
    head = y > eye_y - 0.16
    skin = head | on("lowerarm02.L", "lowerarm02.R", "wrist.L", "wrist.R") | torch.as_tensor(
        body.parts["hands"].vertices.cpu() if "hands" in body.parts else torch.zeros_like(head))
    colors[skin] = torch.tensor(SKIN).double()
    hair = head & ((y > eye_y + 0.055) | ((z < ear_z - 0.01) & (y > eye_y - 0.07)))
    colors[hair] = torch.tensor(HAIR).double()
    colors[y < ankle_y + 0.02] = torch.tensor(SHOES).double()
    return colors.float()


def body_camera(config: BodySyntheticConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``K [3, 3]`` and world-to-camera ``viewmat [4, 4]``: in front of the body (+Z) at ``distance``."""
    R = config.resolution
    K = intrinsics(config.focal * R, config.focal * R, R / 2, R / 2)
    target = torch.tensor([0.0, config.target_y, 0.0])
    return K, look_at(target + torch.tensor([0.0, 0.0, config.distance]), target, torch.tensor([0.0, 1.0, 0.0]))


def random_phenotype(body, spread: float, seed: int) -> np.ndarray:
    """``[S]`` shape parameters: the model's default plus a uniform ``+-spread``, within its bounds."""
    rng = np.random.default_rng(seed)
    low, high = body.body_profile.shape_bounds
    default = body.default_shape.detach().cpu().numpy()
    return np.clip(default + rng.uniform(-spread, spread, default.shape), low, high).astype(np.float32)


def project(points: torch.Tensor, K: torch.Tensor, viewmat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ``[..., N, 2]`` and camera depth ``[..., N]`` of world ``points [..., N, 3]``."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    uv = cam @ K.T
    return uv[..., :2] / uv[..., 2:3], cam[..., 2]


def render_body_frames(body, config: BodySyntheticConfig, shape: np.ndarray, perf: BodyPerformance):
    """Yield ``(first index, images [B, R, R, 3] uint8, masks [B, R, R] float32 0..1, output)``."""
    s = max(1, int(config.supersample))
    R = config.resolution
    K, viewmat = body_camera(dataclasses.replace(config, resolution=R * s))
    shape_t = torch.as_tensor(shape)[None].to(body.template)
    with torch.no_grad():
        colors = body_colors(body, body.rest(shape_t)[0][0])
    backdrop = torch.as_tensor(background_image(R * s, config.seed))
    for start in range(0, len(perf.pose), config.batch_size):
        sl = slice(start, start + config.batch_size)
        with torch.no_grad():
            out = body(shape=shape_t, pose=torch.as_tensor(perf.pose[sl]).to(body.template),
                       rotation=torch.as_tensor(perf.rotation[sl]).to(body.template),
                       translation=torch.as_tensor(perf.translation[sl]).to(body.template))
            rendered = render_mesh(out.vertices.float().cpu(), body.faces.cpu(), K, R * s, R * s, viewmat,
                                   colors=colors, ambient=config.ambient, light_dir=config.light_dir)
            image = torch.where(rendered.mask[..., None], rendered.image, backdrop)
            mask = rendered.mask.to(image.dtype)
            if s > 1:
                B = image.shape[0]
                image = image.reshape(B, R, s, R, s, 3).mean(dim=(2, 4))
                mask = mask.reshape(B, R, s, R, s).mean(dim=(2, 4))
        yield start, (image * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy(), mask.numpy(), out


def make_body_capture(out_dir: str | os.PathLike, config: BodySyntheticConfig | None = None, body=None,
                      progress: bool = True) -> Path:
    """Render the body performance and write the capture folder (module doc) to ``out_dir``.

    ``body``: a :class:`avatar.models.body.BodyModel` (default: ``avatar.models.load("anny")``).
    Returns the folder.
    """
    from tqdm import tqdm

    config = config or BodySyntheticConfig()
    t_start = time.perf_counter()
    if body is None:
        import avatar.models

        body = avatar.models.load("anny")
    F, R = config.n_frames, config.resolution
    perf = body_performance(body.joint_names, F, config.steps, config.turns)
    shape = random_phenotype(body, config.phenotype_spread, config.seed)
    K, viewmat = body_camera(config)
    writer = CaptureWriter(out_dir, frame_format=config.frame_format)
    pose_lm = np.zeros((F, 33, 4), np.float32)
    lm2d = np.zeros((F, 33, 2), np.float32)
    joints2d = np.zeros((F, body.num_joints, 2), np.float32)
    with tqdm(total=F, desc="synthetic body capture", unit="frame", disable=not progress) as bar:
        for start, images, masks, out in render_body_frames(body, config, shape, perf):
            n = len(images)
            px, depth = project(out.landmarks.float().cpu(), K, viewmat)
            root_depth = project(out.joints[:, :1].float().cpu(), K, viewmat)[1]
            pose_lm[start:start + n, :, :2] = px.numpy()
            pose_lm[start:start + n, :, 2] = (depth - root_depth).numpy()
            pose_lm[start:start + n, :, 3] = 1.0
            lm2d[start:start + n] = px.numpy()
            joints2d[start:start + n] = project(out.joints.float().cpu(), K, viewmat)[0].numpy()
            for k in range(n):
                writer.write_frame(start + k, images[k])
                writer.write_mask(start + k, (masks[k] * 255.0 + 0.5).astype(np.uint8))
            bar.update(n)
    truth = BodyTrackedSequence(
        model=body.name, shape=shape, shape_names=body.shape_names, pose=perf.pose, joint_names=body.joint_names,
        rotation=perf.rotation, translation=perf.translation, K=K.numpy(), viewmat=viewmat.numpy(), width=R, height=R,
        valid=np.ones(F, bool),
    )
    root = Path(out_dir)
    _write_ground_truth(root, truth, lm2d, joints2d, config.fps)
    meta = CaptureMeta(
        source=f"synthetic-body:{config.seed}", fps=config.fps, width=R, height=R, n_frames=F,
        timestamps=[i / config.fps for i in range(F)],
        extra={"synthetic": True, "subject": "body", "model": body.name, "ground_truth": GROUND_TRUTH_FILE,
               "texture": "procedural outfit (avatar.synthetic.body_capture.body_colors)"},
    )
    landmarks = Landmarks(face=np.zeros((F, 478, 3), np.float32), face_present=np.zeros(F, bool), pose=pose_lm,
                          pose_present=np.ones(F, bool))
    writer.finish(meta, landmarks)
    if config.write_tracking:
        from avatar.io.capture import Capture
        from avatar.io.tracking import TRACKING_FILE

        truth.capture_id = Capture(root).meta.capture_id
        truth.save(root / TRACKING_FILE)
    report = {"frames": F, "resolution": R, "supersample": config.supersample, "seed": config.seed,
              "model": body.name, "seconds": round(time.perf_counter() - t_start, 3)}
    write_json(root / REPORT_FILE, report)
    log.info("synthetic body capture: %d frames, %.1f s", F, report["seconds"])
    return root


def _write_ground_truth(root: Path, truth: BodyTrackedSequence, lm2d: np.ndarray, joints2d: np.ndarray,
                        fps: float) -> None:
    from avatar.io.atomic import atomic_write

    arrays = dict(
        kind=np.array("body"), model=np.array(truth.model), shape=truth.shape, shape_names=np.array(truth.shape_names),
        pose=truth.pose, joint_names=np.array(truth.joint_names), rotation=truth.rotation,
        translation=truth.translation, K=truth.K, viewmat=truth.viewmat, width=np.array(truth.width),
        height=np.array(truth.height), valid=truth.valid, landmarks2d=lm2d, joints2d=joints2d, fps=np.float32(fps),
    )
    atomic_write(root / GROUND_TRUTH_FILE, lambda f: np.savez(f, **arrays))


def load_body_ground_truth(root: str | os.PathLike) -> BodyTrackedSequence:
    """The truth of a synthetic body capture as a :class:`BodyTrackedSequence` (the extra arrays:
    ``np.load(ROOT / "ground_truth.npz")``)."""
    from avatar.io.tracking import body_sequence_from_arrays

    path = Path(root) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {root} is not a synthetic body capture")
    with np.load(path, allow_pickle=False) as z:
        return body_sequence_from_arrays(z, path)


__all__ = [
    "BodyPerformance", "BodySyntheticConfig", "body_camera", "body_colors", "body_performance",
    "amass_motion", "load_body_ground_truth", "make_body_capture", "project", "random_phenotype", "render_body_frames",
]


def amass_motion(n_frames: int = 120, fps: float = 30.0) -> dict[str, np.ndarray]:
    """A novel motion in the AMASS/SMPL layout (``poses [T, 72]``, ``trans [T, 3]``,
    ``mocap_framerate``; Z-up like AMASS): a squat, arm circles and a kick with a quarter turn,
    none of which the synthetic capture's walk shows. For ``avatar render drive=`` tests and benchmarks."""
    from avatar.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    t = np.linspace(0.0, 1.0, n_frames)
    poses = np.zeros((n_frames, 24, 3))
    squat = _bump(t, 0.25, 0.2)
    for hip, knee, ankle in ((1, 4, 7), (2, 5, 8)):
        poses[:, hip, 0] = -1.0 * squat
        poses[:, knee, 0] = 1.6 * squat
        poses[:, ankle, 0] = -0.5 * squat
    circle = 2 * math.pi * 2 * t
    for shoulder, sign in ((16, 1.0), (17, -1.0)):
        poses[:, shoulder, 2] = sign * (-0.6 + 0.6 * np.cos(circle))
        poses[:, shoulder, 1] = 0.6 * np.sin(circle)
    kick = _bump(t, 0.75, 0.12)
    poses[:, 1, 0] += -1.3 * kick
    poses[:, 4, 0] += 0.4 * kick
    upright = axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    yaw = torch.stack([torch.zeros(n_frames), torch.zeros(n_frames), torch.as_tensor(0.5 * math.pi * t)], 1).double()
    poses[:, 0] = matrix_to_axis_angle(axis_angle_to_matrix(yaw) @ upright).numpy()
    trans = np.stack((0.1 * np.sin(2 * math.pi * t), np.zeros(n_frames), -0.25 * squat), 1)
    return {"poses": poses.reshape(n_frames, 72).astype(np.float32), "trans": trans.astype(np.float32),
            "mocap_framerate": np.float32(fps)}

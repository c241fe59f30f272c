"""A training run folder from start to finish: set-up, resume, results, export, evaluation.

Run folder (DESIGN.md): ``config.yaml`` (resolved), ``checkpoints/`` (``last.pt`` + numbered),
``progress/`` preview images, ``metrics.json``, ``heldout_side_by_side.mp4``,
``avatar.ply`` (canonical pose, 3DGS attributes) and ``avatar.pt`` (what render/live load).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from avatar.io.capture import Capture
from avatar.io.reports import write_json
from avatar.io.run_folder import resolve_capture
from avatar.io.video import VideoWriter
from ..device import pick_device
from ..gaussians.base import FrameState
from ..geometry.rotations import training_turn_range
from ..gaussians.package import AvatarPackage
from ..gaussians.ply import save_ply
from ..io import atomic_write, avatar_file
from ..tracking.expression_range import ExpressionRange
from avatar.io.tracking import BodyTrackedSequence, TrackedSequence, load_tracking
from .data import load_frames
from .trainer import TrainConfig, Trainer, init_gaussians

log = logging.getLogger(__name__)


class RunError(ValueError):
    """A run folder cannot be used as asked (exists, missing, incomplete)."""


def train_config(node) -> TrainConfig:
    """A :class:`TrainConfig` from a (partial) config node, validated against the schema."""
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), node or {})
    return OmegaConf.to_object(merged)


def _load_model(name: str, device: torch.device, model_options: dict | None = None):
    from .. import models  # noqa: PLC0415

    return models.load(name, **(model_options or {})).to(device)


def setup(cfg: DictConfig, write_config: bool = True, given: Callable[[str], bool] = lambda key: True
          ) -> tuple[Trainer, TrackedSequence, object]:
    """Build the trainer for ``cfg`` (capture, out, model, device, resume, train, renderer).

    ``write_config``: record the resolved config as ``out/config.yaml`` (training does;
    re-opening a finished run for eval or export does not touch it). Resuming a run goes on
    with the config it was trained with (:func:`resume_config`; ``given(key)``: whether the
    command line set ``key``).
    """
    out = Path(cfg.out)
    has_checkpoint = (out / "checkpoints" / "last.pt").is_file()
    if has_checkpoint and not cfg.resume:
        raise RunError(f"{out} already holds a trained run; pass resume=true to continue it, or choose another out=")
    if has_checkpoint and write_config and (out / "config.yaml").is_file():
        cfg, changes = resume_config(out, cfg, given)
        if changes:  # config.yaml is rewritten with them below: say so
            log.warning("resuming %s with %s (config.yaml updated)", out, "; ".join(changes))
    if write_config:  # recorded absolute: eval, export and render find it from any directory
        cfg.capture = str(Path(cfg.capture).resolve())
    capture = Capture(cfg.capture)
    tracking = load_tracking(capture.root, model=cfg.get("model"), capture_id=capture.meta.capture_id)
    tcfg = train_config(cfg.get("train"))
    device = pick_device(cfg.get("device", "auto"))
    options = cfg.get("model_options")
    options = OmegaConf.to_container(options) if options is not None else {}
    model = _load_model(tracking.model, device, options)
    try:
        frames = load_frames(capture, tracking, model, tcfg.resolution, tcfg.holdout, device, mask=tcfg.mask,
                             head_dilate=tcfg.head_dilate, neck_below_chin=tcfg.neck_below_chin, progress=True,
                             turn_eyes=tcfg.turn_eyes, turn_eyes_vertical=tcfg.turn_eyes_vertical)
        trainer = Trainer(tcfg, frames, init_gaussians(model, tcfg.gaussians, frames, tcfg.seed), out,
                          renderer=OmegaConf.to_container(cfg.renderer) if "renderer" in cfg else None, model=model,
                          model_options=options)
    except torch.OutOfMemoryError as exc:
        raise RunError(
            f"out of memory while loading {capture.root} on {device}: lower train.resolution, "
            "train.gaussians.uv_resolution or train.densify.max_gaussians"
        ) from exc
    if cfg.resume and not trainer.resume():
        log.info("resume=true but %s has no checkpoint: starting from scratch", out)
    if write_config:
        atomic_write(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return trainer, tracking, model


# Keys a resumed run may change: they do not change what was trained so far.
RESUME_MAY_CHANGE = {
    "resume": "the switch itself",
    "out": "the run folder itself (the same folder, written another way)",
    "train.iterations": "more steps extend the run",
    "train.preview_every": "when previews are written",
    "train.checkpoint_every": "when checkpoints are written",
    "train.viewer": "whether a browser viewer watches the training",
    "train.viewer_every": "how often the viewer is refreshed",
    "train.viewer_host": "where the viewer listens",
    "train.viewer_port": "where the viewer listens",
    "train.viewer_mode": "how the viewer shows the avatar",
    "train.viewer_max_side": "the size of the viewer's pictures",
    "device": "where it runs (checkpoints load on any device)",
    "renderer.backend": "the rasterizer's implementation (same images)",
}

# Settings added after runs were recorded, with the value that gives what such a run was trained
# with: a run recorded without the key resumes with it (not with today's default).
ADDED_SINCE = {
    "train.eyeball_weight": 0.0,  # eyeball Gaussians held on the eyeball (2026-12-07)
    "train.shut_lids_weight": 0.0,  # shut lids held at the skin round the eyes (2026-12-07, fifteenth session)
}


def resume_config(out: Path, cfg: DictConfig, given: Callable[[str], bool] = lambda key: True
                  ) -> tuple[DictConfig, list[str]]:
    """The config to resume the run in ``out`` with, and its changes as ``key: old -> new``.

    It is the run's own ``out/config.yaml``. Of the keys the command line set (``given(key)``)
    with another value, those of :data:`RESUME_MAY_CHANGE` take it, and any other is refused
    (RunError listing them all: another capture, model or training setting). A key it did
    not set keeps the run's value (the user need not repeat the first command's options)."""
    saved_cfg = OmegaConf.load(out / "config.yaml")
    recorded = _flat(OmegaConf.to_container(saved_cfg, resolve=True))
    for key, before in ADDED_SINCE.items():
        if key not in recorded and key.split(".")[0] in saved_cfg:
            OmegaConf.update(saved_cfg, key, before, force_add=True)
    saved = _flat(OmegaConf.to_container(saved_cfg, resolve=True))
    new = _flat(OmegaConf.to_container(cfg, resolve=True))
    changes, refused = [], []
    for key in sorted(set(saved) | set(new)):
        old_value, new_value = saved.get(key, "(unset)"), new.get(key, "(unset)")
        if key == "capture" and isinstance(old_value, str) and isinstance(new_value, str):
            # a run recorded before captures were absolute named it from where training ran
            same = resolve_capture(out, old_value, saved.get("out")).resolve() == Path(new_value).resolve()
        else:
            same = old_value == new_value
        if same or key == "resume":
            continue
        change = f"{key}: {old_value} -> {new_value}"
        if not given(key):
            continue  # a default, not asked for: the run keeps its own value
        if key in RESUME_MAY_CHANGE:
            OmegaConf.update(saved_cfg, key, new_value, force_add=True)
            changes.append(change)
        else:
            refused.append(change)
    if refused:
        raise RunError(
            f"{out} was trained with other settings ({'; '.join(refused)}): resume=true goes on with the run's "
            f"own settings (only {', '.join(k for k in RESUME_MAY_CHANGE if k != 'resume')} may change); drop "
            "those overrides, or train into a new out="
        )
    saved_cfg.resume = True
    return saved_cfg, changes


def _flat(tree, prefix: str = "") -> dict:
    """{dotted key: leaf value} of a nested config container (lists stay values)."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def save_avatar(trainer: Trainer, tracking: TrackedSequence, path: Path) -> Path:
    """Write the trained avatar's file (``avatar.pt``) through :mod:`avatar.io.avatar_file`:
    everything render and live need to drive it, with each Gaussian's ``visibility`` in
    typical driven poses (live picks a Gaussian budget from it without rendering at start)."""
    g, f = trainer.gaussians, trainer.frames
    first = int(f.train[0])
    if f.is_body:
        return _save_body_avatar(trainer, tracking, path, first)
    entries = {
        "model": tracking.model,
        "model_options": dict(trainer.model_options),
        "expression_names": list(tracking.expression_names),
        "shape": torch.as_tensor(tracking.shape),
        "K": f.K[first].cpu(),  # a reference camera for driving
        "reference_rotation": f.rotation[first].cpu(),  # head pose there
        "reference_translation": f.translation[first].cpu(),
        "viewmat": f.viewmat.cpu(),
        "width": f.width,
        "height": f.height,
        "background": trainer.background.cpu(),
        # How the subject's face moved in the training frames: retargeting maps a driver onto it.
        "expression_range": ExpressionRange.from_sequence(tracking.expression[f.frame_ids[f.train]]).state(),
        # How far the head turned in them (retarget.turn_margin_deg holds a driven turn near it).
        "turn_range": torch.as_tensor(training_turn_range(f.rotation[f.train].cpu().numpy(), f.rotation[first].cpu().numpy())),
    }
    if tracking.shoulders is not None:  # metres per shoulder width when a driver's shoulders move the torso
        entries["shoulder_width"] = float(np.median(np.linalg.norm(tracking.shoulders[:, 0] - tracking.shoulders[:, 1], axis=-1)))
    entries["visibility"] = AvatarPackage(entries, g, trainer.model, f.vertices.device).visibility(progress=True).cpu()
    config = trainer.cfg.gaussians
    return avatar_file.write_avatar(path, kind=g.kind, config=dataclasses.asdict(config), avatar_state=g.state(),
                                    **entries)


def _save_body_avatar(trainer: Trainer, tracking: BodyTrackedSequence, path: Path, first: int) -> Path:
    """A body avatar's file: the head entries that apply (camera, shape, reference global pose)
    plus ``body: True``, ``joint_names`` and ``reference_pose [J, 3]`` (the first training frame's)."""
    g, f = trainer.gaussians, trainer.frames
    entries = {
        "model": tracking.model,
        "model_options": dict(trainer.model_options),
        "expression_names": [],
        "shape": torch.as_tensor(tracking.shape),
        "K": f.K[first].cpu(),
        "reference_rotation": f.rotation[first].cpu(),
        "reference_translation": f.translation[first].cpu(),
        "viewmat": f.viewmat.cpu(),
        "width": f.width,
        "height": f.height,
        "background": trainer.background.cpu(),
        "body": True,
        "joint_names": list(tracking.joint_names),
        "reference_pose": f.pose[first].cpu(),
    }
    entries["visibility"] = AvatarPackage(entries, g, trainer.model, f.vertices.device).visibility(progress=True).cpu()
    return avatar_file.write_avatar(path, kind=g.kind, config=dataclasses.asdict(trainer.cfg.gaussians),
                                    avatar_state=g.state(), **entries)


def export_ply(trainer: Trainer, tracking: TrackedSequence | BodyTrackedSequence, model, path: Path) -> Path:
    """``avatar.ply`` in the canonical pose: the subject's identity, neutral expression (a body: its
    rest pose), no rotation."""
    device = trainer.frames.vertices.device
    with torch.no_grad():
        shape = torch.as_tensor(tracking.shape, dtype=trainer.frames.vertices.dtype, device=device)[None]
        pose = model.zero_pose() if trainer.frames.is_body else None
        w = trainer.gaussians(FrameState(model(shape=shape).vertices, rotation=shape.new_zeros(1, 3), pose=pose,
                                         torso=None if trainer.frames.is_body else canonical_torso(trainer)))
    # No rotation: the head's frame is the world's, so the SH coefficients are what a viewer evaluates.
    quats, scales = w.shapes(0)
    return save_ply(path, w.means[0], quats, scales, w.opacities, w.sh)


def canonical_torso(trainer: Trainer) -> torch.Tensor | None:
    """``[1, 4, 4]`` the rest torso of an avatar with one (``torso_rest``, in the first training
    frame's world) seen from the canonical head (no rotation or translation): where it sits
    under the canonical head in ``avatar.ply``. None for avatars without a torso."""
    rest = getattr(trainer.gaussians, "torso_rest", None)
    if rest is None:
        return None
    from ..geometry.rotations import axis_angle_to_matrix  # noqa: PLC0415

    f = trainer.frames
    first = int(f.train[0])
    head = torch.eye(4, dtype=rest.dtype, device=rest.device)
    head[:3, :3] = axis_angle_to_matrix(f.rotation[first][None])[0]
    head[:3, 3] = f.translation[first]
    return (torch.linalg.inv(head) @ rest)[None]


def refined_tracking(trainer: Trainer, tracking: TrackedSequence) -> TrackedSequence:
    """The tracking with the jointly refined per-frame offsets added (usable frames only change)."""
    ids = trainer.frames.frame_ids
    o = {k: v.detach().cpu().numpy() for k, v in trainer.offsets.items()}
    rotation, translation, expression = tracking.rotation.copy(), tracking.translation.copy(), tracking.expression.copy()
    rotation[ids] += o["rotation"]
    translation[ids] += o["translation"]
    expression[ids] += o["expression"]
    return dataclasses.replace(tracking, rotation=rotation, translation=translation, expression=expression)


def heldout_video(trainer: Trainer, path: Path, fps: float) -> Path | None:
    frames = trainer.frames.heldout
    if len(frames) == 0:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    with VideoWriter(path, fps=fps) as writer:
        for i in tqdm(frames, desc="held-out video", unit="frame", leave=False):
            writer.write(trainer.side_by_side(int(i)))
    return path


def finish(trainer: Trainer, tracking: TrackedSequence, model, fps: float) -> dict:
    """Final checkpoint, metrics.json, held-out video, avatar.ply and avatar.pt."""
    out = trainer.out
    trainer.save_checkpoint()
    metrics = trainer.evaluate(progress=True)
    if trainer.cfg.eval_pose_steps > 0:
        metrics["pose_aligned"] = pose_aligned_metrics(trainer, trainer.cfg.eval_pose_steps)
    iterations = trainer.step
    metrics.update({
        "n_gaussians": len(trainer.gaussians),
        "iterations": iterations,
        "train_seconds": round(trainer.train_seconds, 2),
        "seconds_per_iteration": round(trainer.train_seconds / max(1, iterations), 4),
        "skipped_steps": trainer.skipped_steps,
        "backend": trainer.backend_used,
        "device": str(trainer.frames.vertices.device),
        "resolution": [trainer.frames.width, trainer.frames.height],
        "train_frames": int(len(trainer.frames.train)),
        "heldout_frames": int(len(trainer.frames.heldout)),
    })
    f = trainer.frames
    if f.torso is not None or (f.head_only is not None and f.head_only.any()):
        metrics["torso"] = {"tracked": f.torso is not None,
                            "head_only_frames": [int(i) for i in f.frame_ids[np.flatnonzero(f.head_only)]]
                            if f.head_only is not None else []}
    write_json(out / "metrics.json", metrics)
    if trainer.offsets is not None:
        refined_tracking(trainer, tracking).save(out / "tracking_refined.npz")
    heldout_video(trainer, out / "heldout_side_by_side.mp4", fps)
    export_ply(trainer, tracking, model, out / "avatar.ply")
    save_avatar(trainer, tracking, out / "avatar.pt")
    return metrics


def pose_aligned_metrics(trainer: Trainer, steps: int) -> dict:
    """Held-out metrics after aligning each frame's head pose to its image (see :meth:`Trainer.align_pose`)."""
    t0 = time.perf_counter()
    out = trainer.evaluate(pose_steps=steps, progress=True)
    out.update({"pose_steps": steps, "downscale": trainer.cfg.eval_pose_downscale,
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


def load_run(run: str | os.PathLike, overrides: DictConfig | None = None) -> tuple[Trainer, TrackedSequence, object, DictConfig]:
    """Re-open a run folder at its last checkpoint (for eval and export)."""
    run = Path(run)
    cfg_path, ckpt = run / "config.yaml", run / "checkpoints" / "last.pt"
    if not cfg_path.is_file() or not ckpt.is_file():
        raise RunError(f"{run} is not a trained run (no config.yaml or checkpoints/last.pt); run avatar train out={run}")
    cfg = OmegaConf.load(cfg_path)
    cfg.capture = str(resolve_capture(run, cfg.capture, cfg.get("out")))
    if overrides is not None:
        cfg = OmegaConf.merge(cfg, overrides)
    cfg.resume = True
    cfg.out = str(run)
    trainer, tracking, model = setup(cfg, write_config=False)
    return trainer, tracking, model, cfg


def frame_rate(capture_dir) -> float:
    try:
        return float(Capture(capture_dir).meta.fps) or 25.0
    except (ValueError, OSError):
        return 25.0


def summary(metrics: dict) -> str:
    def f(v, spec):
        return "n/a" if v is None else format(v, spec)

    seconds = metrics.get("train_seconds")
    timing = f" in {seconds} s" if seconds is not None else ""
    aligned = metrics.get("pose_aligned")
    extra = (f" (poses aligned to the images: {f(aligned.get('psnr'), '.2f')} dB, SSIM {f(aligned.get('ssim'), '.4f')})"
             if aligned else "")
    by_pose = metrics.get("by_pose")
    if by_pose and by_pose["novel"]["frames"]:
        seen, novel = by_pose["seen"], by_pose["novel"]
        extra += (f"; {novel['frames']} frames posed more than {by_pose['threshold_deg']:g} deg from every training "
                  f"frame: {f(novel['psnr'], '.2f')} dB / {f(novel['ssim'], '.4f')}, the other {seen['frames']}: "
                  f"{f(seen['psnr'], '.2f')} dB / {f(seen['ssim'], '.4f')}")
    regions = (metrics.get("by_region") or {}).get("all")
    if regions:
        worst = sorted(regions.items(), key=lambda kv: -kv[1]["error_share"])[:2]
        extra += "; most of the error: " + ", ".join(
            f"{name} {100 * v['error_share']:.0f}% ({100 * v['pixel_share']:.0f}% of the pixels)" for name, v in worst)
    return (f"held-out PSNR {f(metrics.get('psnr'), '.2f')} dB, SSIM {f(metrics.get('ssim'), '.4f')}, "
            f"LPIPS {f(metrics.get('lpips'), '.4f')}{extra}; {metrics.get('n_gaussians')} Gaussians, "
            f"{metrics.get('iterations')} iterations{timing}")


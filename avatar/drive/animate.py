"""Driving a trained avatar: retarget a driving sequence and render it to video.

Retargeting (cross-identity): expressions are taken relative to the driver's neutral frame
(ICT coefficients are semantic, ARKit-named, so they transfer coefficient by coefficient and
are clamped to 0..1); the head pose is taken relative to the driver's first frame and applied
on top of the avatar's reference pose (its first training frame). A One Euro filter smooths
the driving signal.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry.cameras import orbit_viewmats
from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..landmarks.filters import OneEuroFilter
from ..render import rasterization
from .sources import DriveError, DriveSequence


@dataclass
class AvatarPackage:
    """A trained avatar as ``avatar train`` / ``avatar export`` write it (``avatar.pt``)."""

    state: dict
    gaussians: torch.nn.Module
    model: torch.nn.Module
    device: torch.device

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device) -> "AvatarPackage":
        from .. import models  # noqa: PLC0415
        from ..train.trainer import gaussians_from_state  # noqa: PLC0415

        path = Path(path)
        if path.is_dir():
            path = path / "avatar.pt"
        if not path.is_file():
            raise DriveError(f"{path} does not exist: train an avatar first (avatar train ... out={path.parent})")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state, gaussians_from_state(state, device), models.load(state["model"]).to(device), device)

    @property
    def expression_names(self) -> tuple[str, ...]:
        return tuple(self.model.expression_names)

    def reference_pose(self, drive: DriveSequence) -> tuple[np.ndarray, np.ndarray]:
        """The avatar's head pose the driver's motion is applied to: its first training frame
        (packages written before that was recorded: the driver's own first frame)."""
        return self.reference_pose_or(drive.rotation[0].astype(np.float32), drive.translation[0].astype(np.float32))

    def reference_pose_or(self, rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The recorded reference pose, or the given one when the package has none."""
        r, t = self.state.get("reference_rotation"), self.state.get("reference_translation")
        if r is None or t is None:
            return rotation, translation
        return np.asarray(r, np.float32), np.asarray(t, np.float32)


def _axis_angle(matrix: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(torch.as_tensor(matrix, dtype=torch.float64)).numpy().astype(np.float32)


def retarget(drive: DriveSequence, ref_rotation: np.ndarray, ref_translation: np.ndarray, relative: bool = True,
             neutral_frame: int = 0, min_cutoff: float | None = 1.5, beta: float = 0.5):
    """``(expression [F,E], rotation [F,3], translation [F,3])`` for the avatar."""
    if not 0 <= neutral_frame < drive.n_frames:
        raise DriveError(f"neutral_frame={neutral_frame} is outside the driver's {drive.n_frames} frames")
    expr = drive.expression.astype(np.float64)
    R = axis_angle_to_matrix(torch.as_tensor(drive.rotation, dtype=torch.float64)).numpy()
    R_ref = axis_angle_to_matrix(torch.as_tensor(ref_rotation, dtype=torch.float64)).numpy()
    t = drive.translation.astype(np.float64)
    if relative:
        expr = np.clip(expr - expr[neutral_frame], 0.0, 1.0)
        R = R_ref @ R[0].T @ R  # the driver's motion since its first frame, on the avatar's reference
        t = ref_translation + (t - t[0])
    if min_cutoff is not None:
        filt = OneEuroFilter(min_cutoff, beta)
        signal = np.concatenate((expr, R.reshape(len(R), 9), t), axis=1)
        signal = np.stack([filt(x, i / drive.fps) for i, x in enumerate(signal)])
        expr = np.clip(signal[:, : expr.shape[1]], 0, 1)
        R = signal[:, expr.shape[1] : expr.shape[1] + 9].reshape(-1, 3, 3)
        u, _, vt = np.linalg.svd(R)  # back onto rotations after averaging
        R = u @ vt
        t = signal[:, -3:]
    return expr.astype(np.float32), _axis_angle(R), t.astype(np.float32)


def render_driven(package: AvatarPackage, drive: DriveSequence, out: str | os.PathLike, camera: str = "tracked",
                  layout: str = "avatar", size: int | None = None, relative: bool = True, neutral_frame: int = 0,
                  min_cutoff: float | None = 1.5, beta: float = 0.5, renderer: dict | None = None,
                  progress: bool = True) -> dict:
    """Render ``drive`` on ``package`` into the video ``out``; returns the report."""
    from ..data.video import VideoWriter  # noqa: PLC0415

    if camera not in ("tracked", "fixed", "orbit"):
        raise DriveError(f"camera must be tracked, fixed or orbit, got {camera!r}")
    if layout not in ("avatar", "side_by_side"):
        raise DriveError(f"layout must be avatar or side_by_side, got {layout!r}")
    driver_frames = getattr(drive, "frames", None)
    if layout == "side_by_side" and driver_frames is None:
        raise DriveError("layout=side_by_side needs driver frames: drive from a video or a capture folder")
    t_start = time.perf_counter()
    dev, st = package.device, package.state
    ref_r, ref_t = package.reference_pose(drive)
    expr, rot, trans = retarget(drive, ref_r, ref_t, relative, neutral_frame, min_cutoff, beta)
    if camera == "fixed":
        rot[:], trans[:] = ref_r, ref_t
    height0, width0 = int(st["height"]), int(st["width"])
    height = size or height0
    width = int(round(width0 * height / height0))
    K = st["K"].to(dev, torch.float32).clone()
    K[:2] *= height / height0
    viewmats = st["viewmat"].to(dev, torch.float32)[None].expand(drive.n_frames, 4, 4)
    if camera == "orbit":
        centre = tuple(float(x) for x in ref_t)
        viewmats = orbit_viewmats(drive.n_frames, radius=float(np.linalg.norm(ref_t)), target=centre, device=dev)
    background = st["background"].to(dev, torch.float32)[None]
    shape = st["shape"].to(dev, torch.float32)[None]
    render_s = 0.0
    frames = range(drive.n_frames)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        frames = tqdm(frames, desc="render", unit="frame")
    with VideoWriter(out, fps=drive.fps) as video, torch.no_grad():
        for i in frames:
            e = torch.as_tensor(expr[i : i + 1], device=dev)
            verts = package.model(shape=shape, expression=e, rotation=torch.as_tensor(rot[i : i + 1], device=dev),
                                  translation=torch.as_tensor(trans[i : i + 1], device=dev)).vertices
            w = package.gaussians(verts, e)
            t0 = time.perf_counter()
            img, _, meta = rasterization(w.means[0], w.quats[0], w.scales[0], w.opacities, w.sh, viewmats[i : i + 1],
                                         K[None], width, height, sh_degree=package.gaussians.sh_degree,
                                         backgrounds=background, **(renderer or {}))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            render_s += time.perf_counter() - t0
            frame = (img[0].clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
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
        "backend": meta["backend"],
        "device": str(dev),
        "render_fps": round(drive.n_frames / max(render_s, 1e-9), 2),
        "end_to_end_fps": round(drive.n_frames / max(total, 1e-9), 2),
        "seconds": round(total, 2),
        "notes": drive.notes,
        "output": str(out),
    }

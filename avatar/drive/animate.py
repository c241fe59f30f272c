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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry.cameras import orbit_viewmats
from .retarget import RetargetConfig, driver_range, retarget
from .sources import DriveError, DriveSequence

log = logging.getLogger(__name__)


@dataclass
class AvatarPackage:
    """A trained avatar as ``avatar train`` / ``avatar export`` write it (``avatar.pt``)."""

    state: dict
    gaussians: torch.nn.Module
    model: torch.nn.Module
    device: torch.device
    path: Path | None = None  # the avatar.pt it was loaded from

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
        return cls(state, gaussians_from_state(state, device), models.load(state["model"]).to(device), device, path)

    def __post_init__(self) -> None:
        self._compact = None

    def _compact_mesh(self):
        """The part of the mesh the Gaussians sit on, ready to pose per frame (built once per
        set of Gaussians): vertex ids, Gaussians re-bound to the sub-mesh, the identity shape
        ``[1, S]``, and for models
        without a skeleton the identity-blended vertices and the expression basis there
        (posing then costs a small blend instead of the whole model)."""
        g = self.gaussians
        if self._compact is not None and self._compact[0] is g:
            return self._compact[1:]
        from ..gaussians.mesh_gaussians import MeshGaussians  # noqa: PLC0415

        used_faces, binding = torch.unique(g.binding, return_inverse=True)
        faces = g.faces[used_faces]
        vidx, faces = torch.unique(faces, return_inverse=True)
        canonical = None if g.canonical_vertices is None else g.canonical_vertices[vidx]
        sub = MeshGaussians(faces, binding, {k: v.detach() for k, v in g.params.items()}, g.sh_degree,
                            canonical_vertices=canonical, deformer=g.deformer, sh_frame=g.sh_frame)
        blend = None
        m = self.model
        shape = self.state["shape"].to(self.device, torch.float32)[None]
        if not getattr(m, "has_skeleton", True) and hasattr(m, "exprdirs"):
            with torch.no_grad():
                base = m(shape=shape).vertices[0][vidx]  # identity blended, no pose
            blend = (base, m.exprdirs[vidx].to(torch.float32))
        self._compact = (g, vidx, sub, blend, shape)
        return vidx, sub, blend, shape

    def posed_gaussians(self, expression: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor):
        """World Gaussians (``WorldGaussians``) for ``expression [1, E]``, ``rotation [1, 3]``, ``translation [1, 3]``."""
        from ..models.engine import rigid_transform  # noqa: PLC0415

        vidx, sub, blend, shape = self._compact_mesh()
        if blend is not None:
            base, dirs = blend
            e = expression[:, : dirs.shape[-1]]
            verts = rigid_transform(base[None] + torch.einsum("vke,be->bvk", dirs[..., : e.shape[-1]], e), rotation, translation)
        else:
            verts = self.model(shape=shape, expression=expression, rotation=rotation, translation=translation).vertices[:, vidx]
        return sub(verts, expression, rotation)

    def expression_range(self):
        """How the avatar's expressions moved in its training frames (:class:`ExpressionRange`):
        stored in the package by training; for packages written before, read from the training
        capture's tracking when the run folder still points at it; else None (rest at zero)."""
        from ..tracking.expression_range import ExpressionRange  # noqa: PLC0415

        stored = self.state.get("expression_range")
        if stored is not None:
            return ExpressionRange.from_state(stored)
        config = self.path.parent / "config.yaml" if self.path is not None else None
        if config is None or not config.is_file():
            return None
        from omegaconf import OmegaConf  # noqa: PLC0415

        from ..tracking.sequence import TrackingError, load_tracking  # noqa: PLC0415

        try:
            capture = OmegaConf.load(config).get("capture")
            if capture is None:
                return None
            tracking = load_tracking(capture)
        except (TrackingError, OSError, ValueError) as exc:
            log.info("no expression statistics for %s (%s): rest expression zero", self.path, exc)
            return None
        if list(tracking.expression_names) != list(self.expression_names):
            return None
        return ExpressionRange.from_sequence(tracking.expression, tracking.valid)

    @property
    def expression_names(self) -> tuple[str, ...]:
        names = getattr(self.model, "expression_names", None)
        return tuple(names if names is not None else self.state.get("expression_names", ()))

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

    def camera(self, size: int | None = None) -> tuple[torch.Tensor, int, int]:
        """The training camera's ``K [3, 3]`` scaled to ``size`` pixels high (None: as trained), and width, height."""
        height0, width0 = int(self.state["height"]), int(self.state["width"])
        height = size or height0
        K = self.state["K"].to(self.device, torch.float32).clone()
        K[:2] *= height / height0
        return K, int(round(width0 * height / height0)), height

    def budget_views(self, yaw_deg: float = 40.0, pitch_deg: float = 20.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(expression, rotation, translation)`` poses a driven avatar typically shows: the
        reference pose turned by up to ``yaw_deg`` / ``pitch_deg``, neutral and with the mouth
        open, eyes closed and a smile (for the models that name those expressions)."""
        from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: PLC0415

        names = self.expression_names
        ref_r, ref_t = self.reference_pose_or(np.zeros(3, np.float32), np.array([0, 0, -0.5], np.float32))
        R_ref = axis_angle_to_matrix(torch.as_tensor(ref_r, dtype=torch.float64))
        expressions = [np.zeros(len(names), np.float32)]
        for group in (("jawOpen",), ("eyeBlink_L", "eyeBlink_R"), ("mouthSmile_L", "mouthSmile_R")):
            e = np.zeros(len(names), np.float32)
            for n in group:
                if n in names:
                    e[names.index(n)] = 0.8
            if e.any():
                expressions.append(e)
        views = []
        for k, (yaw, pitch) in enumerate([(0, 0), (-yaw_deg, 0), (yaw_deg, 0), (0, -pitch_deg), (0, pitch_deg),
                                          (-yaw_deg / 2, pitch_deg / 2), (yaw_deg / 2, -pitch_deg / 2)]):
            delta = torch.tensor([math.radians(pitch), math.radians(yaw), 0.0], dtype=torch.float64)
            R = R_ref @ axis_angle_to_matrix(delta)
            r = matrix_to_axis_angle(R).numpy().astype(np.float32)
            for e in expressions if k == 0 else expressions[:2]:
                views.append((e, r, np.asarray(ref_t, np.float32)))
        return views

    def visibility(self, size: int = 128, renderer: dict | None = None) -> torch.Tensor:
        """``[N]`` how much each Gaussian shows in :meth:`budget_views`: its blending weight
        summed over the pixels (:func:`avatar.gaussians.importance.visibility`), seen by the
        reference camera at ``size`` pixels high. Training stores it in the package
        (``visibility``); it is computed here for packages without it."""
        from ..gaussians.importance import visibility  # noqa: PLC0415

        stored = self.state.get("visibility")
        if stored is not None and stored.shape[0] == len(self.gaussians):
            return stored.to(self.device)
        dev, st = self.device, self.state
        K, width, height = self.camera(size)
        viewmat = st["viewmat"].to(dev, torch.float32)

        def worlds():
            for e, r, t in self.budget_views():
                tt = lambda a: torch.as_tensor(a[None], dtype=torch.float32, device=dev)  # noqa: E731
                with torch.no_grad():
                    w = self.posed_gaussians(tt(e), tt(r), tt(t))
                yield w.means[0], w.quats[0], w.scales[0], w.opacities, viewmat, K

        return visibility(worlds(), width, height, renderer)

    def limit_gaussians(self, max_gaussians: int, size: int = 128, renderer: dict | None = None) -> int:
        """Keep the ``max_gaussians`` Gaussians that show most (:meth:`visibility`): a lighter
        avatar for live driving; returns how many Gaussians there were. No-op when the avatar
        has no more than that."""
        from ..gaussians.importance import top_k  # noqa: PLC0415

        n = len(self.gaussians)
        if max_gaussians is None or max_gaussians <= 0 or n <= max_gaussians:
            return n
        self.gaussians = self.gaussians.subset(top_k(self.visibility(size, renderer), max_gaussians))
        return n

    @torch.no_grad()
    def render_frame(self, expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
                     viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                     renderer: dict | None = None) -> tuple[np.ndarray, str, float]:
        """The avatar posed with ``expression [E]``, ``rotation [3]``, ``translation [3]`` (model world),
        seen by ``viewmat [4, 4]`` / ``K [3, 3]``: ``(uint8 image [H, W, 3], backend, rasterization seconds)``."""
        dev, st = self.device, self.state
        t = lambda a: torch.as_tensor(np.asarray(a)[None], dtype=torch.float32, device=dev)  # noqa: E731
        w = self.posed_gaussians(t(expression), t(rotation), t(translation))
        t0 = time.perf_counter()
        img, _, meta = w.render(viewmat[None], K[None], width, height, self.gaussians.sh_degree,
                                backgrounds=st["background"].to(dev, torch.float32)[None], **(renderer or {}))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        backend = meta["backend"] + (" (compiled compositor)" if meta.get("compositor") == "compiled" else "")
        return (img[0].clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8), backend, seconds


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


def driven_frames(package: AvatarPackage, drive: DriveSequence, camera: str = "tracked", size: int | None = None,
                  retarget_cfg: RetargetConfig | None = None, neutral_frame: int | None = None,
                  renderer: dict | None = None, notes: list | None = None):
    """Yield ``(image [H, W, 3] uint8, backend, rasterization seconds)`` per driver frame: ``drive``
    retargeted onto ``package`` (:func:`avatar.drive.retarget.retarget`) and rendered through
    ``camera`` (tracked | fixed | orbit) at ``size`` pixels high. What the report should say
    about the retargeting's inputs is appended to ``notes``. Checks and retargets at once;
    renders as the frames are taken."""
    if camera not in ("tracked", "fixed", "orbit"):
        raise DriveError(f"camera must be tracked, fixed or orbit, got {camera!r}")
    dev = package.device
    ref_r, ref_t = package.reference_pose(drive)
    avatar_range = package.expression_range()
    drv = driver_range(drive, neutral_frame)
    expr, rot, trans = retarget(drive, ref_r, ref_t, package.expression_names, retarget_cfg, avatar_range,
                                neutral_frame, drv)
    if notes is not None:
        notes += retarget_notes(avatar_range, drv if neutral_frame is None else None, package.expression_names)
    if camera == "fixed":
        rot[:], trans[:] = ref_r, ref_t
    K, width, height = package.camera(size)
    viewmats = package.state["viewmat"].to(dev, torch.float32)[None].expand(drive.n_frames, 4, 4)
    if camera == "orbit":
        centre = tuple(float(x) for x in ref_t)
        viewmats = orbit_viewmats(drive.n_frames, radius=float(np.linalg.norm(ref_t)), target=centre, device=dev)
    return (package.render_frame(expr[i], rot[i], trans[i], viewmats[i], K, width, height, renderer)
            for i in range(drive.n_frames))


def render_driven(package: AvatarPackage, drive: DriveSequence, out: str | os.PathLike, camera: str = "tracked",
                  layout: str = "avatar", size: int | None = None, retarget_cfg: RetargetConfig | None = None,
                  neutral_frame: int | None = None, renderer: dict | None = None, progress: bool = True) -> dict:
    """Render ``drive`` on ``package`` into the video ``out``; returns the report."""
    from ..data.video import VideoWriter  # noqa: PLC0415

    if layout not in ("avatar", "side_by_side"):
        raise DriveError(f"layout must be avatar or side_by_side, got {layout!r}")
    driver_frames = getattr(drive, "frames", None)
    if layout == "side_by_side" and driver_frames is None:
        raise DriveError("layout=side_by_side needs driver frames: drive from a video or a capture folder")
    t_start = time.perf_counter()
    dev = package.device
    _, width, height = package.camera(size)
    notes = list(drive.notes)
    frames = driven_frames(package, drive, camera, size, retarget_cfg, neutral_frame, renderer, notes)
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

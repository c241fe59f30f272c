"""Training an avatar (any kind behind :class:`avatar.gaussians.base.GaussianAvatar`) against a tracked capture.

The loop: pick a training frame, place the Gaussians on that frame's tracked mesh, render
with :func:`avatar.render.rasterization`, compare with the frame composited on the
configured background (L1 + D-SSIM, plus opacity vs mask and regularisers on size and
distance from the surface), step Adam with one param group per parameter kind, and let
the densification strategy grow and prune. Checkpoints are written atomically and hold
everything needed to continue bit-for-bit (parameters, bindings, optimizer, strategy
statistics, random states). A non-finite loss or gradient skips the step, halves the
learning rates and is counted in the report; it never reaches a checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..gaussians.base import FrameState, GaussianAvatar
from ..gaussians.config import MeshGaussiansConfig
from ..gaussians.registry import avatar_from_state, avatar_kind
from ..gaussians.strategy import DensifyStrategy
from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..io import atomic_write, avatar_file
from ..models.profile import name_mask
from .config import TrainConfig
from .data import FrameSet, posed_with_gaze
from .losses import alpha_mask, excess, photometric
from .metrics import lpips, psnr, ssim
from .regions import RegionErrors, grow_mask, pixel_regions, triangle_regions

log = logging.getLogger(__name__)


# The tracking offsets' learning rates (train.refine_tracking); the avatar's come from its kind.
_OFFSET_LR_KEYS = {"rotation": "lr_rotation", "translation": "lr_translation", "expression": "lr_expression"}
_DECAYING_LR = "lr_xyz"  # the one learning rate that decays exponentially to lr_xyz_final
_SH_C0 = 0.28209479177387814  # SH band 0: colour = 0.5 + C0 * sh0
REGION_BAND = 0.01  # half-width of the silhouette band of the error regions, fraction of the width


def lr_keys(gaussians: GaussianAvatar) -> dict[str, str]:
    """Optimizer group name -> the :class:`TrainConfig` field holding its learning rate."""
    return {**gaussians.learning_rates, **_OFFSET_LR_KEYS}


def make_optimizer(gaussians: GaussianAvatar, cfg: TrainConfig, offsets: torch.nn.ParameterDict | None = None):
    """Adam with one group per per-Gaussian parameter (the strategy resizes their state), one per
    other module of the avatar and one per tracking offset."""
    keys = lr_keys(gaussians)
    groups = [{"params": [p], "name": n, "lr": getattr(cfg, keys[n])} for n, p in gaussians.params.items()]
    for name, params in gaussians.other_parameters().items():
        groups.append({"params": list(params), "name": name, "lr": getattr(cfg, keys[name])})
    for name, p in (offsets or {}).items():
        groups.append({"params": [p], "name": name, "lr": getattr(cfg, keys[name])})
    return torch.optim.Adam(groups, eps=1e-15)


class Trainer:
    """Owns the Gaussians, the optimizer and the strategy for one run folder."""

    def __init__(self, cfg: TrainConfig, frames: FrameSet, gaussians: GaussianAvatar, out: str | os.PathLike,
                 renderer: dict | None = None, model=None, model_options: dict | None = None):
        self.cfg = cfg
        self.frames = frames
        self.gaussians = gaussians
        self.out = Path(out)
        self.renderer = dict(renderer or {})
        self.model = model
        self.model_options = dict(model_options or {})  # how `model` was loaded: recorded in avatar.pt
        self.offsets = None
        if cfg.refine_tracking:
            if model is None:
                raise ValueError("train.refine_tracking needs the parametric model")
            if frames.is_body:
                raise ValueError("train.refine_tracking is for heads; a body's tracking is not refined while training "
                                 "(set train.refine_tracking=false)")
            n, e = frames.conditions.shape
            zeros = lambda *size: torch.nn.Parameter(frames.vertices.new_zeros(*size))  # noqa: E731
            self.offsets = torch.nn.ParameterDict(
                {"rotation": zeros(n, 3), "translation": zeros(n, 3), "expression": zeros(n, e)})
        self.optimizer = make_optimizer(gaussians, cfg, self.offsets)
        self.strategy = DensifyStrategy(cfg.densify)
        self.step = 0
        self.lr_factor = 1.0
        self.skipped_steps: list[int] = []
        self._epoch_order: tuple[int, list[int]] | None = None  # (epoch, its frame order): training_frame's cache
        self._eyeball_faces: torch.Tensor | None = None  # eyeball_gaussians' cache
        self._active_faces: torch.Tensor | None = None  # active_pixels' per-triangle cache
        self._active_maps: dict[int, torch.Tensor] = {}  # active_pixels' per-frame maps (uint8)
        self._eye_faces: torch.Tensor | None = None  # eye_openings' [2, F] eyeball triangles (None: no eyes to shut)
        self._shut_ids: tuple[list[int], list[int]] | None = None  # its blinks / their antagonists (None: not looked up)
        self._eye_maps: dict[int, tuple[Tensor, Tensor]] = {}  # eye_openings' per-frame masks and rings
        torch.manual_seed(cfg.seed)
        self.background = torch.tensor(cfg.background, dtype=frames.vertices.dtype, device=frames.vertices.device)
        self.train_seconds = 0.0
        self.backend_used: str | None = None

    # ---------------------------------------------------------------- rendering
    def sh_degree(self) -> int:
        return min(self.gaussians.sh_degree, self.step // max(1, self.cfg.sh_increase_every))

    def mesh(self, index: int, pose: tuple[Tensor, Tensor] | None = None,
             expression_edit: Callable[[Tensor], Tensor] | None = None) -> FrameState:
        """The posed model of frame ``index`` (refined if enabled): vertices ``[1, V, 3]``,
        expression ``[1, E]``, head (or body) rotation ``[1, 3]`` (axis-angle) and a body's joint
        rotations ``[1, J, 3]``.

        ``pose``: extra ``(rotation [1, 3], translation [1, 3])`` offsets on top (evaluation-time alignment).
        ``expression_edit``: a head's expression ``[1, E]`` -> the one to pose instead (e.g. the lids shut)."""
        f = self.frames
        joints = None if f.pose is None else f.pose[index][None]
        torso = None if f.torso is None else f.torso[index][None]
        if self.offsets is None and pose is None and (expression_edit is None or f.is_body):
            return FrameState(f.vertices[index][None], f.conditions[index][None], f.rotation[index][None], joints,
                              torso=torso)
        rotation, translation, expression = f.rotation[index][None], f.translation[index][None], f.conditions[index][None]
        if f.is_body:  # a body: its skinned mesh, turned and moved by the alignment offsets
            rotation, translation = rotation + pose[0], translation + pose[1]
            out = self.model(shape=f.shape[None], pose=joints, rotation=rotation, translation=translation)
            return FrameState(out.vertices, expression, rotation, joints)
        if self.offsets is not None:
            o = self.offsets
            expression = expression + o["expression"][index][None]
            rotation, translation = rotation + o["rotation"][index][None], translation + o["translation"][index][None]
        if pose is not None:
            rotation, translation = rotation + pose[0], translation + pose[1]
        if expression_edit is not None:
            expression = expression_edit(expression)
        if f.gaze is not None:  # the frame's eyeballs turned as in f.vertices (train.turn_eyes)
            verts = posed_with_gaze(self.model, f.eyeball_parts, f.shape, expression, rotation, translation,
                                    f.gaze[index][None])
            return FrameState(verts, expression, rotation, torso=torso)
        out = self.model(shape=f.shape[None], expression=expression, rotation=rotation, translation=translation)
        return FrameState(out.vertices, expression, rotation, torso=torso)

    def render(self, index: int, sh_degree: int | None = None, pose: tuple[Tensor, Tensor] | None = None,
               downscale: int = 1, state: FrameState | None = None, window: tuple[int, int, int, int] | None = None,
               background: Tensor | None = None):
        """Render frame ``index`` of the frame set: ``(image [H,W,3], alpha [H,W,1], meta)``
        (``downscale``: that many times fewer pixels each way; ``state``: the posed model to render
        instead of the frame's own, with the frame's camera; ``window``: ``(x0, y0, x1, y1)``, only
        those pixels of the frame; ``background``: ``[3]`` colour behind it instead of the configured one)."""
        f = self.frames
        w = self.gaussians(self.mesh(index, pose) if state is None else state)
        K = f.K[index]
        if downscale > 1:
            K = torch.cat((K[:2] / downscale, K[2:]))
        width, height = f.width // downscale, f.height // downscale
        if window is not None:
            x0, y0, x1, y1 = window
            K = K.clone()
            K[0, 2], K[1, 2] = K[0, 2] - x0, K[1, 2] - y0
            width, height = x1 - x0, y1 - y0
        img, alpha, meta = w.render(f.viewmat[None], K[None], width, height,
                                    self.sh_degree() if sh_degree is None else sh_degree,
                                    backgrounds=(self.background if background is None else background)[None],
                                    **self.renderer)
        self.backend_used = meta["backend"]
        return img[0], alpha[0], meta

    def target(self, index: int, background: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The frame on the configured background (or on ``background [3]``), and its mask."""
        mask = self.frames.mask(index)
        bg = self.background if background is None else background
        return self.frames.image(index) * mask[..., None] + bg * (1 - mask[..., None]), mask

    def step_background(self, step: int) -> Tensor | None:
        """``train.random_background``: the uniform colour ``[3]`` behind step ``step``'s frame, drawn
        from the seed and the step number (a resumed run draws the same); None when off."""
        if not self.cfg.random_background:
            return None
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_033 + step)
        return torch.rand(3, generator=gen).to(self.background)

    # ---------------------------------------------------------------- training
    def _set_lrs(self) -> None:
        cfg = self.cfg
        t = min(1.0, self.step / max(1, cfg.iterations))
        xyz = cfg.lr_xyz * (cfg.lr_xyz_final / cfg.lr_xyz) ** t
        keys = lr_keys(self.gaussians)
        for group in self.optimizer.param_groups:
            key = keys[group["name"]]
            group["lr"] = (xyz if key == _DECAYING_LR else getattr(cfg, key)) * self.lr_factor

    def training_frame(self, step: int) -> int:
        """The frame trained on at ``step`` (1-based): every training frame once per epoch, in
        an order shuffled afresh each epoch from the seed and the epoch number (so a resumed
        run continues the same order without storing it)."""
        n = len(self.frames.train)
        epoch, k = divmod(step - 1, n)
        if self._epoch_order is None or self._epoch_order[0] != epoch:  # one shuffle per epoch, not per step
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._epoch_order = (epoch, torch.randperm(n, generator=gen).tolist())
        return int(self.frames.train[self._epoch_order[1][k]])

    def train_step(self) -> dict[str, float]:
        cfg, g = self.cfg, self.gaussians
        self.step += 1
        self._set_lrs()
        index = self.training_frame(self.step)
        bg = self.step_background(self.step)
        img, alpha, meta = self.render(index, state=self._noisy_state(index) if cfg.condition_noise else None,
                                       background=bg)
        gt, mask = self.target(index, bg)
        loss = photometric(img, gt, cfg.ssim_weight)
        if cfg.alpha_weight:
            loss = loss + cfg.alpha_weight * alpha_mask(alpha, mask)
        if cfg.active_weight and (active := self.active_pixels(index)) is not None:
            loss = loss + cfg.active_weight * (active[..., None] * (img - gt).abs()).mean()
        if cfg.scale_weight:
            loss = loss + cfg.scale_weight * excess(g.local_scales(), cfg.scale_threshold)
        if cfg.xyz_weight:
            loss = loss + cfg.xyz_weight * excess(g.anchor_distances(), cfg.xyz_threshold)
        if cfg.flat_weight and (extents := g.normal_extents()) is not None:
            loss = loss + cfg.flat_weight * excess(extents, cfg.flat_threshold)
        if cfg.eyeball_weight and (on_eyes := self.eyeball_gaussians()) is not None and bool(on_eyes.any()):
            lift = g.params["local_xyz"][on_eyes][:, 2].abs()  # off the eyeball, along its normal
            loss = loss + cfg.eyeball_weight * (excess(lift, cfg.eyeball_threshold)
                                                + excess(g.normal_extents()[on_eyes], cfg.eyeball_threshold))
        if cfg.shut_lids_weight and self.step % max(1, cfg.shut_lids_every) == 0:
            shut = self.shut_lids_loss(index, gt)
            if shut is not None:
                loss = loss + cfg.shut_lids_weight * shut
        self.strategy.step_pre_backward(meta)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return self._skip(f"loss is {float(loss.detach())}")
        loss.backward()
        bad = [n for n, q in g.params.items() if q.grad is not None and not torch.isfinite(q.grad).all()]
        if bad:
            return self._skip(f"non-finite gradient in {bad}")
        self.strategy.step_post_backward(self.gaussians, self.optimizer, meta, self.step, cfg.iterations)
        self.optimizer.step()
        with torch.no_grad():
            return {"loss": float(loss), "psnr": float(psnr(img.detach(), gt))}

    @torch.no_grad()
    def active_pixels(self, index: int) -> Tensor | None:
        """``[H, W]`` in 0..1: how much the model's expressions move the front-most triangle at each
        pixel of frame ``index``: per vertex the mean over blendshapes of its displacement (each
        blendshape's largest counts 1), over its 99th percentile and capped at 1, averaged over the
        triangle's corners; 0 where no triangle is. None for a body or a model without expression
        blendshapes. Kept per frame (8 bits) unless the training refines the tracking."""
        f = self.frames
        if self.model is None or f.is_body or getattr(self.model, "num_expression", 0) == 0:
            return None
        if self._active_faces is None:
            dirs = self.model.exprdirs.detach().to(f.vertices.device, torch.float64)  # [V, 3, E]
            moved = dirs.norm(dim=1)  # [V, E]
            moved = (moved / moved.max(0).values.clamp_min(1e-12)).mean(1)  # [V]: over the blendshapes
            moved = (moved / torch.quantile(moved[moved > 0], 0.99).clamp_min(1e-12)).clamp(max=1.0)
            faces = self.model.faces.to(f.vertices.device).long()
            self._active_faces = moved[faces].mean(1).to(f.vertices.dtype)  # [F]
        if index not in self._active_maps:
            tri = self.triangle_ids(index)
            active = torch.where(tri >= 0, self._active_faces[tri.clamp_min(0)], torch.zeros_like(self._active_faces[0]))
            if self.offsets is not None:  # refined tracking moves the mesh every step: nothing to keep
                return active
            self._active_maps[index] = (active * 255.0 + 0.5).to(torch.uint8)  # one rasterization per frame
        return self._active_maps[index].to(f.vertices.dtype) / 255.0

    def shut_lids_loss(self, index: int, gt: Tensor) -> Tensor | None:
        """``train.shut_lids_weight``'s term for frame ``index`` (``gt``: its target image): frame
        ``index`` drawn with the lids shut (the profile's blinks at 1, their antagonists at 0), in a
        window round the eyes; the absolute difference, over the pixels where an eyeball showed in
        the frame, from the median colour of the frame in a ring round that eye opening, summed and
        divided by the frame's pixel count (so each such pixel weighs what a pixel of the
        photometric L1 does). None where no eyeball shows (a blink, a turned head) or the model
        names no blinks or eyeballs."""
        eyes = self.eye_openings(index)
        if eyes is None:
            return None
        masks, rings = eyes
        if not bool(masks.any()):
            return None
        H, W = masks.shape[1:]
        ys, xs = torch.nonzero(rings.any(0) | masks.any(0), as_tuple=True)
        pad = 2
        x0, x1 = max(0, int(xs.min()) - pad), min(W, int(xs.max()) + 1 + pad)
        y0, y1 = max(0, int(ys.min()) - pad), min(H, int(ys.max()) + 1 + pad)
        on, off = self._shut_ids
        def shut_expression(e: Tensor) -> Tensor:
            e = e.clone()
            e[..., on] = 1.0
            e[..., off] = 0.0
            return e
        img, _, _ = self.render(index, state=self.mesh(index, expression_edit=shut_expression), window=(x0, y0, x1, y1))
        terms = []
        for m, r in zip(masks, rings):
            if not bool(m.any()) or not bool(r.any()):
                continue
            skin = gt[r].median(0).values.detach()  # [3]
            terms.append((img[m[y0:y1, x0:x1]] - skin).abs().mean(-1).sum())
        if not terms:
            return None
        return torch.stack(terms).sum() / (H * W)

    @torch.no_grad()
    def eye_openings(self, index: int) -> tuple[Tensor, Tensor] | None:
        """``(masks [2, H, W], rings [2, H, W])`` bool for frame ``index``: per eye (the profile's
        order) the pixels whose front-most model triangle is on that eyeball, and a ring round
        them (out to 1.2% of the width, at least 2 px; not the opening itself nor a pixel next to
        it). None for a body or a model whose profile names no blinks or eyeballs. Kept per frame
        unless the training refines the tracking."""
        f = self.frames
        if self.model is None or f.is_body:
            return None
        if self._shut_ids is None:
            self._shut_ids = ([], [])
            profile = getattr(self.model, "tracking_profile", None)
            names = list(getattr(self.model, "expression_names", ()) or ())
            eyeballs, blinks = getattr(profile, "eyeball_parts", None), getattr(profile, "blinks", None)
            eyes = self.part_faces(eyeballs)
            if eyes is not None and blinks and all(b in names for b in blinks):
                self._eye_faces = eyes.to(f.vertices.device)  # [2, F]
                pairs = tuple(getattr(profile, "antagonists", ()) or ())
                other = [a if b == blink else b for blink in blinks for a, b in pairs if blink in (a, b)]
                self._shut_ids = ([names.index(b) for b in blinks], [names.index(n) for n in other if n in names])
        if self._eye_faces is None:
            return None
        if index in self._eye_maps:
            return self._eye_maps[index]
        tri = self.triangle_ids(index)
        masks = (tri >= 0)[None] & self._eye_faces[:, tri.clamp_min(0)]  # [2, H, W]
        reach = max(2, round(0.012 * f.width))
        rings = grow_mask(masks, reach) & ~grow_mask(masks.any(0), 1)[None] & (tri >= 0)[None]
        out = (masks, rings)
        if self.offsets is None:
            self._eye_maps[index] = out
        return out

    def part_faces(self, names) -> Tensor | None:
        """``[len(names), F]`` bool: each named part's triangles of the model; None when ``names`` is
        empty or None or the model lacks one of them."""
        parts = getattr(self.model, "parts", None) or {}
        if not names or not all(n in parts for n in names):
            return None
        return torch.stack([torch.as_tensor(parts[n].faces, dtype=torch.bool) for n in names])

    def eyeball_gaussians(self) -> torch.Tensor | None:
        """``[N]`` bool: the Gaussians held on the model's eyeballs (bound to its tracking profile's
        ``eyeball_parts``, of the kind's surface Gaussians: a portrait's off-mesh glasses are left
        free); None for kinds not bound to the model's triangles or models without eyeballs."""
        binding = getattr(self.gaussians, "binding", None)
        surface = self.gaussians.held_to_surface()
        if binding is None or surface is None or self.model is None:
            return None
        if self._eyeball_faces is None:
            eyes = self.part_faces(getattr(getattr(self.model, "tracking_profile", None), "eyeball_parts", None))
            if eyes is None:
                return None
            parts = self.model.parts
            extra = self.part_faces([n for n, on in zip(parts, name_mask(parts, self.cfg.eyeball_extra_parts)) if on])
            self._eyeball_faces = (eyes.any(0) if extra is None else eyes.any(0) | extra.any(0)).to(binding.device)
        return surface & (binding >= 0) & self._eyeball_faces[binding.clamp_min(0)]

    def _noisy_state(self, index: int) -> FrameState:
        """Frame ``index``'s posed model with ``cfg.condition_noise`` added to the expression the
        deformer reads (the vertices stay the tracked mesh's); the noise is drawn from the seed and
        the step, so a resumed run draws the same."""
        state = self.mesh(index)
        if state.expression is None or state.expression.shape[-1] == 0:
            return state
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + 7_919 * self.step + 1)
        noise = torch.randn(state.expression.shape, generator=gen, dtype=torch.float64)
        state.expression = state.expression + (self.cfg.condition_noise * noise).to(state.expression)
        return state

    def _skip(self, why: str) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_factor *= 0.5
        self.skipped_steps.append(self.step)
        log.warning("step %d skipped: %s; learning rates halved (x%.3g)", self.step, why, self.lr_factor)
        return {"loss": float("nan"), "psnr": float("nan")}

    def run(self, until: int | None = None, progress: bool = True, stop: Callable[[], bool] | None = None,
            on_step: Callable[[dict], None] | None = None) -> None:
        """Train up to step ``until`` (default: ``cfg.iterations``), checkpointing on the way.
        ``stop``: asked after every step; when it says yes, the run checkpoints and returns early.
        ``on_step(stats)`` (e.g. a viewer's) is called after each step with its loss and PSNR."""
        from tqdm import tqdm  # noqa: PLC0415

        until = self.cfg.iterations if until is None else until
        bar = tqdm(total=until, initial=self.step, desc="train", unit="it", disable=not progress)
        ema = None
        while self.step < until:
            t0 = time.perf_counter()
            stats = self.train_step()
            self.train_seconds += time.perf_counter() - t0
            if math.isfinite(stats["psnr"]):
                ema = stats["psnr"] if ema is None else 0.9 * ema + 0.1 * stats["psnr"]
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{ema or 0:.2f}", n=len(self.gaussians))
            if on_step is not None:
                on_step(stats)
            if self.cfg.preview_every and self.step % self.cfg.preview_every == 0:
                self.save_preview()
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if stop is not None and stop():
                self.save_checkpoint()
                break
        bar.close()

    # ---------------------------------------------------------------- evaluation
    def align_pose(self, index: int, steps: int) -> tuple[Tensor, Tensor]:
        """Rotation and translation offsets ``([1, 3], [1, 3])`` that align frame ``index``'s head
        to its image: ``steps`` Adam steps on the image loss with the Gaussians and the
        expression frozen (what a photometric tracker does on a new frame)."""
        if self.model is None:
            raise ValueError("aligning a pose needs the parametric model")
        f, cfg = self.frames, self.cfg
        rot = torch.zeros(1, 3, dtype=f.vertices.dtype, device=f.vertices.device, requires_grad=True)
        trans = torch.zeros_like(rot, requires_grad=True)
        opt = torch.optim.Adam([{"params": [rot], "lr": cfg.eval_lr_rotation},
                                {"params": [trans], "lr": cfg.eval_lr_translation}])
        gt, _ = self.target(index)
        d = max(1, int(cfg.eval_pose_downscale))
        if d > 1:  # the pose from a coarser image: d^2 times cheaper steps
            h, w = f.height // d * d, f.width // d * d
            gt = torch.nn.functional.avg_pool2d(gt[:h, :w].permute(2, 0, 1)[None], d)[0].permute(1, 2, 0)
        frozen = [p for p in self.gaussians.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                for _ in range(steps):
                    img, _, _ = self.render(index, sh_degree=self.gaussians.sh_degree, pose=(rot, trans), downscale=d)
                    loss = photometric(img, gt, cfg.ssim_weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return rot.detach(), trans.detach()

    def pose_distance_deg(self, indices: np.ndarray) -> np.ndarray:
        """Per frame of ``indices``, the angle (degrees) between its tracked head rotation and the
        nearest training frame's: how far from anything seen in training the head is turned."""
        f = self.frames
        train = torch.as_tensor(f.train, device=f.rotation.device)
        if len(train) == 0 or len(indices) == 0:
            return np.full(len(indices), np.nan)
        Ra = axis_angle_to_matrix(f.rotation[torch.as_tensor(indices, device=f.rotation.device)].detach())
        Rt = axis_angle_to_matrix(f.rotation[train].detach())
        relative = Ra[:, None] @ Rt[None].transpose(-1, -2)  # [A, T, 3, 3]
        angles = matrix_to_axis_angle(relative.reshape(-1, 3, 3)).norm(dim=-1).reshape(len(indices), len(train))
        return torch.rad2deg(angles.amin(1)).cpu().numpy()

    @torch.no_grad()
    def evaluate(self, indices: np.ndarray | None = None, pose_steps: int = 0, progress: bool = False) -> dict:
        """Mean PSNR / SSIM / LPIPS over ``indices`` (default: the held-out frames), full frame.

        ``pose_steps > 0``: each frame's head pose is first aligned to its image (:meth:`align_pose`).
        Also ``per_frame`` (capture frame, PSNR, SSIM, :meth:`pose_distance_deg`) and the means
        over the frames posed within / beyond ``eval_novel_pose_deg`` of the training poses.
        ``progress``: a tqdm bar over the frames."""
        indices = self.frames.heldout if indices is None else indices
        if len(indices) == 0:
            return {"psnr": None, "ssim": None, "lpips": None, "frames": 0}
        scores = {"psnr": [], "ssim": [], "lpips": []}
        from tqdm.auto import tqdm  # noqa: PLC0415

        distance = self.pose_distance_deg(np.asarray(indices))
        novel = distance > self.cfg.eval_novel_pose_deg
        regions, tri_region = RegionErrors(), None
        if self.model is not None and hasattr(self.model, "faces"):
            tri_region = triangle_regions(self.model, int(self.model.faces.shape[0]), self.frames.vertices.device)
        band = max(1, round(REGION_BAND * self.frames.width))
        for k, i in enumerate(tqdm(indices, desc="eval", unit="frame", disable=not progress, leave=False)):
            pose = self.align_pose(int(i), pose_steps) if pose_steps > 0 else None
            img, _, _ = self.render(int(i), sh_degree=self.gaussians.sh_degree, pose=pose)
            gt, mask = self.target(int(i))
            img = img.clamp(0, 1)
            scores["psnr"].append(float(psnr(img, gt)))
            scores["ssim"].append(float(ssim(img, gt)))
            lp = lpips(img[None], gt[None])
            scores["lpips"].append(None if lp is None else float(lp))
            if tri_region is not None:
                labels = pixel_regions(self.triangle_ids(int(i), pose), mask, tri_region, band)
                for group in ("all", "novel" if novel[k] else "seen"):
                    regions.add(group, img, gt, labels)
        def means(keep: np.ndarray) -> dict:  # over the frames where keep is True (None: no frame / no metric)
            return {"frames": int(keep.sum()), **{k: float(np.mean(np.asarray(v)[keep])) if v[0] is not None and keep.any()
                                                 else None for k, v in scores.items()}}

        out: dict = means(np.ones(len(indices), bool))
        out["by_pose"] = {"threshold_deg": self.cfg.eval_novel_pose_deg, "seen": means(~novel), "novel": means(novel)}
        if tri_region is not None:
            out["by_region"] = {"band_px": band, **{g: regions.summary(g) for g in ("all", "seen", "novel")}}
        expression = self.expression_distance(np.asarray(indices))
        ids = self.frames.frame_ids
        out["per_frame"] = [
            {"frame": int(ids[i]), "psnr": round(p, 3), "ssim": round(q, 4),
             "pose_distance_deg": None if np.isnan(d) else round(float(d), 2),
             "expression_distance": None if np.isnan(e) else round(float(e), 4)}
            for i, p, q, d, e in zip(indices, scores["psnr"], scores["ssim"], distance, expression)
        ]
        return out

    @torch.no_grad()
    def triangle_ids(self, index: int, pose: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``[H, W]`` front-most triangle of the posed model at frame ``index`` (-1: none)."""
        from ..render import rasterize_mesh  # noqa: PLC0415

        f = self.frames
        v = self.mesh(index, pose).vertices
        return rasterize_mesh(v, self.model.faces.to(v.device), f.K[index][None], f.width, f.height,
                              f.viewmat[None]).triangle_id[0]

    def expression_distance(self, indices: np.ndarray) -> np.ndarray:
        """Per frame of ``indices``, the Euclidean distance of its expression coefficients to the
        nearest training frame's: how far from any expression seen in training the face is."""
        f = self.frames
        if len(f.train) == 0 or len(indices) == 0 or f.conditions.shape[-1] == 0:
            return np.full(len(indices), np.nan)
        dev = f.conditions.device
        a = f.conditions[torch.as_tensor(indices, device=dev)].double()
        t = f.conditions[torch.as_tensor(f.train, device=dev)].double()
        return torch.cdist(a, t).amin(1).cpu().numpy()

    @torch.no_grad()
    def side_by_side(self, index: int) -> Tensor:
        """``[H, 3W, 3]`` ground truth | render | absolute error (x4), in 0..1."""
        img, _, _ = self.render(index, sh_degree=self.gaussians.sh_degree)
        gt, _ = self.target(index)
        img = img.clamp(0, 1)
        return torch.cat((gt, img, ((img - gt).abs() * 4).clamp(0, 1)), dim=1)

    def save_preview(self) -> Path:
        from avatar.io.capture import encode_image  # noqa: PLC0415

        f = self.frames
        index = int(f.heldout[0]) if len(f.heldout) else int(f.train[0])
        frame = (self.side_by_side(index).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        return atomic_write(self.out / "progress" / f"step_{self.step:06d}.png", encode_image(frame, "png"))

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        """The checkpoint's content (:func:`avatar.io.avatar_file.checkpoint_state`)."""
        g = self.gaussians
        return avatar_file.checkpoint_state(
            g.kind, g.state(),
            step=self.step,
            optimizer=self.optimizer.state_dict(),
            offsets=None if self.offsets is None else {k: v.detach().clone() for k, v in self.offsets.items()},
            strategy={"grad_sum": self.strategy.grad_sum, "count": self.strategy.count},
            torch_rng=torch.get_rng_state(),
            lr_factor=self.lr_factor,
            skipped_steps=list(self.skipped_steps),
            train_seconds=self.train_seconds,
        )

    def save_checkpoint(self) -> Path:
        state = self.state()
        path = avatar_file.save(self.out / "checkpoints" / f"step_{self.step:06d}.pt", state)
        avatar_file.save(self.out / "checkpoints" / "last.pt", state)
        return path

    def load_state(self, state: dict) -> None:
        """Continue from a checkpoint's content (also checkpoints written before format 2)."""
        kind, avatar_state = avatar_file.checkpoint_avatar(state)
        self.gaussians = avatar_from_state(kind, avatar_state, self.frames.vertices.device)
        if self.offsets is not None and state.get("offsets") is not None:
            with torch.no_grad():
                for k, v in state["offsets"].items():
                    self.offsets[k].copy_(v)
        self.optimizer = make_optimizer(self.gaussians, self.cfg, self.offsets)
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy.grad_sum = state["strategy"]["grad_sum"]
        self.strategy.count = state["strategy"]["count"]
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.lr_factor = float(state["lr_factor"])
        self.skipped_steps = list(state["skipped_steps"])
        self.train_seconds = float(state["train_seconds"])

    def resume(self) -> bool:
        """Continue from ``checkpoints/last.pt`` if there is one; returns whether it did."""
        path = self.out / "checkpoints" / "last.pt"
        if not path.is_file():
            return False
        self.load_state(avatar_file.read_checkpoint(path))
        log.info("resumed from %s at step %d", path, self.step)
        return True


def init_gaussians(model, cfg: MeshGaussiansConfig, frames: FrameSet, seed: int = 0) -> GaussianAvatar:
    """A new avatar of the kind ``cfg.kind`` names (:mod:`avatar.gaussians.registry`), measured
    on the first training frame's mesh (frames share one identity). Its random parts (an
    expression MLP's weights) come from ``seed`` alone, not from whatever used the global
    random state before."""
    cls = avatar_kind(cfg.kind).load_class()
    extra = {"frames": frames} if getattr(cls, "seeds_from_frames", False) else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gaussians = cls.initialise(model, cfg, vertices=frames.vertices[int(frames.train[0])],
                                   n_condition=frames.conditions.shape[-1], **extra)
    if cfg.init_color_frames > 0:
        colors_from_frames(gaussians, frames, cfg.init_color_frames)
    return gaussians


@torch.no_grad()
def colors_from_frames(gaussians: GaussianAvatar, frames: FrameSet, n_frames: int) -> Tensor:
    """Set each Gaussian's base colour (``sh0``) to the mean colour of the pixels it projects to in
    ``n_frames`` training frames spread over the sequence, counting a frame only where the
    Gaussian's surface faces the camera and the pixel is inside the mask (no occlusion test:
    a start, not a texture). Gaussians seen in none keep theirs. Returns ``[N]`` how many frames
    each was seen in."""
    from ..geometry.rotations import quaternion_to_matrix  # noqa: PLC0415

    train = frames.train[np.linspace(0, len(frames.train) - 1, min(n_frames, len(frames.train))).round().astype(int)]
    n = len(gaussians)
    total = frames.vertices.new_zeros(n, 3)
    seen = frames.vertices.new_zeros(n)
    R, t = frames.viewmat[:3, :3], frames.viewmat[:3, 3]
    for i in np.unique(train):
        state = FrameState(frames.vertices[int(i)][None], frames.conditions[int(i)][None], frames.rotation[int(i)][None],
                           None if frames.pose is None else frames.pose[int(i)][None])
        w = gaussians(state)
        cam = w.means[0] @ R.T + t  # [N, 3]
        normal = quaternion_to_matrix(w.quats[0])[:, :, 2] @ R.T  # the surface normal, camera axes
        uv = cam @ frames.K[int(i)].T
        px = (uv[:, :2] / uv[:, 2:3].clamp_min(1e-6)).round().long()
        inside = (cam[:, 2] > 0) & (px[:, 0] >= 0) & (px[:, 0] < frames.width) & (px[:, 1] >= 0) & (px[:, 1] < frames.height)
        px = px.clamp_min(0)
        px[:, 0].clamp_(max=frames.width - 1)
        px[:, 1].clamp_(max=frames.height - 1)
        facing = (normal * cam).sum(-1) < -0.2 * cam.norm(dim=-1)
        ok = inside & facing & (frames.mask(int(i))[px[:, 1], px[:, 0]] > 0.5)
        color = frames.image(int(i))[px[:, 1], px[:, 0]]
        total += color * ok[:, None]
        seen += ok.float()
    hit = seen > 0
    sh0 = gaussians.params["sh0"]
    sh0.data[hit, 0] = ((total[hit] / seen[hit, None]) - 0.5) / _SH_C0
    return seen

"""Photometric refinement of a landmark tracking (``track.photometric``; ``iterations=0`` turns it off).

Landmarks alone leave the head a few degrees and millimetres off: MediaPipe's points sit
where the face's texture puts them, not exactly where the landmark embedding says, and
some move less than the face does (on the synthetic capture MediaPipe's chin drops 41% as
far as the true one when the jaw opens, so a landmark fit opens the jaw half as much and
moves the head to make up for it). This stage refines each frame's rotation, translation
and expression, and the subject's identity, so that the face's colours agree across
frames, in the spirit of the photometric terms of metrical-tracker and VHAP, but without a
mesh renderer in the loop:

- a few thousand vertices of the model's face (the tracking profile's ``face_part``: ICT's
  ``face``; the identity and the frame's
  expression) are projected into every frame and the (blurred) frame is sampled there;
- every vertex has one albedo (RGB), shared by all frames, lit by one second-order
  spherical-harmonics light in camera space (a phone on a stand: the light stays put
  while the head turns);
- the loss is a robust (Charbonnier) difference between the samples and albedo x light,
  over the vertices that a frame sees (in front in a z-buffer of the whole head, facing
  the camera, inside the person mask), plus the inner landmarks' reprojection (an anchor,
  ``landmark_weight``) and, optionally, temporal smoothness of the pose corrections and
  priors on the expression and identity changes;
- colour agreement fixes the poses relative to each other, not the whole sequence's: a
  common turn of every frame is matched by the albedo sliding over the surface. The pose
  corrections are therefore kept at zero mean over the frames, so the average pose stays
  the landmarks';
- the blendshapes named by ``expressions`` (glob patterns, ``"*"`` by default) less those
  of ``exclude_expressions`` are refined per frame and kept within the profile's bounds
  (0..1 for ICT); ``shape=True``
  refines the identity (one for all frames); the focal length stays the landmark fit's;
- coarse to fine: the frames are blurred less and less; visibility is refreshed now and then.

On the synthetic capture (``benchmarks/track_synthetic.py``) refining the pose only left
the face vertices 4.4 mm off in camera space (median); with the expressions and the
identity refined too, 2.65 mm (see the README's figures).

Poses are the trackers' (rotation about the model origin, :mod:`.landmark_model`); the
whole-head z-buffer poses the model with :func:`.landmark_model.model_translation`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatar.io.capture import Capture
from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..render import rasterize_mesh, vertex_normals
from .fit import geman_mcclure
from ..models.profile import require_profile
from .landmark_model import CAMERA_FLIP, LandmarkModel, model_translation, to_camera, view_directions
from avatar.io.tracking import TrackedSequence


@dataclass
class PhotometricConfig:
    """Options of :func:`refine_photometric` (``track.photometric`` in conf/track.yaml)."""

    iterations: int = 150        # Adam steps; 0 turns the stage off
    resolution: int = 128        # working width of the frames, pixels
    vertices: int = 2500         # face vertices sampled (random, seeded)
    lr_rotation: float = 0.006   # radians
    lr_translation: float = 0.0006  # metres
    lr_albedo: float = 0.02
    lr_light: float = 0.005
    lr_decay: float = 1.0        # learning rates end at this fraction (exponential decay)
    landmark_weight: float = 0.01  # inner landmarks, robust px^2 (working pixels) against the colour term
    robust_px: float = 4.0       # Geman-McClure scale of the landmark term, capture pixels
    smooth_rotation: float = 0.0  # weight of squared frame-to-frame changes of the correction
    smooth_translation: float = 0.0  # (both 0: the landmark fit's poses are smooth already, and a
    # prior here held back the corrections: on the synthetic capture, with 5000 vertices, rotation
    # error 2.96 deg at 10 / 1000, 2.36 at 1 / 100, 1.52 at 0)
    blur: tuple[float, ...] = (2.0, 1.0, 0.5)  # Gaussian blur (working pixels) per equal part of the steps
    visibility_every: int = 50   # recompute which vertices each frame sees every n steps
    seed: int = 0
    expressions: tuple[str, ...] = ("*",)  # blendshapes refined too (glob patterns; "*": all; (): none)
    exclude_expressions: tuple[str, ...] = ()  # glob patterns left as the landmark fit has them
    shape: bool = True  # refine the identity too
    lr_shape: float = 0.01
    shape_prior: float = 0.0  # squared change of the identity coefficients (against the colour term)
    lr_expression: float = 0.01
    expression_prior: float = 0.0  # squared change of the refined coefficients (per frame, against the colour term)


def frames_at(capture: Capture, seq, resolution: int, dtype, device) -> tuple[Tensor, Tensor, Tensor]:
    """The capture's frames and masks ``[N, 3 | 1, H, W]`` at ``resolution`` pixels wide (the height
    keeps the aspect) and the sequence's intrinsics ``[N, 3, 3]`` scaled to that size."""
    width = int(resolution)
    height = max(1, int(round(seq.height * width / seq.width)))
    images, masks = _load_frames(capture, width, height, dtype, device)
    K = torch.as_tensor(np.array(seq.intrinsics()), device=device, dtype=dtype).clone()
    K[:, 0] *= width / seq.width
    K[:, 1] *= height / seq.height
    return images, masks, K


def _load_frames(capture: Capture, width: int, height: int, dtype, device) -> tuple[Tensor, Tensor]:
    import cv2  # noqa: PLC0415

    n = capture.n_frames
    images = torch.empty(n, 3, height, width, dtype=dtype)
    masks = torch.empty(n, 1, height, width, dtype=dtype)
    for i in range(n):
        frame = cv2.resize(capture.load_frame(i), (width, height), interpolation=cv2.INTER_AREA)
        images[i] = torch.from_numpy(frame).permute(2, 0, 1).to(dtype) / 255
        masks[i, 0] = torch.from_numpy(cv2.resize(capture.load_mask(i), (width, height),
                                                  interpolation=cv2.INTER_AREA)).to(dtype)
    return images.to(device), masks.to(device)


def _blur(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of ``images [B, C, H, W]`` (``sigma`` pixels, taps to 3 sigma, borders replicated).

    Separable, and each pass is one matrix product with the band matrix of the taps (the
    replicated border folded into its first and last columns): on a CPU about 10x faster than
    a depthwise ``conv2d`` over hundreds of frames, and the same filter (equal up to rounding)."""
    if sigma <= 0:
        return images
    r = int(math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, device=images.device, dtype=images.dtype)
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()

    def band(n: int) -> Tensor:  # [n, n]: out[i] = sum_k g[k] * in[clamp(i + k - r, 0, n - 1)]
        rows = torch.arange(n, device=images.device)[:, None].expand(-1, 2 * r + 1)
        cols = (rows + torch.arange(-r, r + 1, device=images.device)).clamp(0, n - 1)
        return images.new_zeros(n, n).index_put_((rows, cols), g.expand(n, -1), accumulate=True)

    out = images @ band(images.shape[-1]).T  # along the rows (x)
    return band(images.shape[-2]) @ out  # along the columns (y)


def _sh9(n: Tensor) -> Tensor:
    """Unnormalised real SH basis up to degree 2 of unit vectors ``[..., 3]`` -> ``[..., 9]``.

    :func:`avatar.render.sh.sh_basis` gives the same functions with gsplat's normalisation; the
    light is learned, so only Adam's step sizes differ (tracking 0.1 degrees apart on
    head_talking). The figures in the README were measured with this one."""
    x, y, z = n.unbind(-1)
    return torch.stack((torch.ones_like(x), y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y), -1)


def _project(cam: Tensor, K: Tensor) -> Tensor:
    """Pixels ``[B, N, 2]`` of camera points ``[B, N, 3]`` through per-frame ``K [B, 3, 3]``."""
    z = cam[..., 2].clamp_min(1e-4)
    return torch.stack((K[:, None, 0, 0] * cam[..., 0] / z + K[:, None, 0, 2],
                        K[:, None, 1, 1] * cam[..., 1] / z + K[:, None, 1, 2]), -1)


def _grid(px: Tensor, width: int, height: int) -> Tensor:
    """Pixel positions (pixel centres at +0.5) -> grid_sample coordinates ``[B, N, 1, 2]``."""
    return torch.stack((px[..., 0] * (2 / width) - 1, px[..., 1] * (2 / height) - 1), -1)[:, :, None]


class ColourModel:
    """What the photometric stages (this module's and :mod:`.body_photometric`) share: one albedo
    per sampled point and one second-order SH light in camera space (both learned), the frames
    blurred less and less over the steps, and the robust colour term with its progress bar.

    ``images [F, 3, H, W]``; ``blur``: sigmas (working pixels) for equal parts of ``iterations``."""

    def __init__(self, images: Tensor, n_points: int, blur: tuple[float, ...], iterations: int,
                 desc: str, progress: bool = False) -> None:
        self.images, self.blur, self.iterations = images, list(blur) or [0.0], iterations
        dtype, device = images.dtype, images.device
        self.albedo = torch.full((n_points, 3), 0.5, device=device, dtype=dtype, requires_grad=True)
        self.light = torch.zeros(9, 3, device=device, dtype=dtype)
        self.light[0] = 1.0
        self.light.requires_grad_(True)
        self.level, self._frames = -1, images
        self.losses: list[float] = []
        self.bar = None
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            self.bar = tqdm(total=iterations, desc=desc, unit="it")

    def param_groups(self, lr_albedo: float, lr_light: float) -> list[dict]:
        return [{"params": [self.albedo], "lr": lr_albedo}, {"params": [self.light], "lr": lr_light}]

    def frames(self, step: int) -> Tensor:
        """The frames as blurred at ``step`` (coarse to fine)."""
        lv = min(len(self.blur) - 1, step * len(self.blur) // self.iterations)
        if lv != self.level:
            self.level, self._frames = lv, _blur(self.images, self.blur[lv])
        return self._frames

    def loss(self, colour: Tensor, normals: Tensor, vis: Tensor, step: int) -> Tensor:
        """Robust (Charbonnier) difference between the sampled ``colour [F, N, 3]`` and albedo x
        light at camera-space ``normals [F, N, 3]``, weighted by ``vis [F, N]``. At step 0 the
        albedo starts at the visibility-weighted mean of what the frames show."""
        shading = _sh9(normals) @ self.light
        if step == 0:
            with torch.no_grad():
                self.albedo.copy_((vis[..., None] * colour / shading.clamp_min(0.1)).sum(0)
                                  / vis.sum(0)[:, None].clamp_min(1e-6))
        r = colour - self.albedo[None] * shading
        return (vis[..., None] * torch.sqrt(r * r + 1e-4)).sum() / (3 * vis.sum())

    def done_step(self, photo: Tensor) -> None:
        self.losses.append(float(photo.detach()))
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(photo=f"{self.losses[-1]:.4f}")

    def close(self) -> dict:
        """Closes the bar; the colour loss's first and last values for the report."""
        if self.bar is not None:
            self.bar.close()
        return {"first": round(self.losses[0], 5), "last": round(self.losses[-1], 5)}


def seen_weights(depth: Tensor, masks: Tensor, cam: Tensor, px: Tensor, normals: Tensor, valid: Tensor,
                 tolerance: float, width: int, height: int) -> Tensor:
    """``[B, N]`` visibility weights of points ``cam [B, N, 3]`` (camera space, at pixels ``px``,
    camera-space ``normals``) against a z-buffer ``depth [B, 1, H, W]`` (empty pixels far) and
    the person ``masks [B, 1, H, W]``: 0 where hidden (behind the nearest surface by more than
    ``tolerance``), turned away, off the mask or in a frame not ``valid``; else how frontally
    the point is seen."""
    grid = _grid(px, width, height)
    zbuf = F.grid_sample(depth, grid, mode="nearest", align_corners=False)[:, 0, :, 0]
    inside = F.grid_sample(masks, grid, align_corners=False)[:, 0, :, 0]
    facing = -(normals * F.normalize(cam, dim=-1)).sum(-1)
    seen = (cam[..., 2] <= zbuf + tolerance) & (facing > 0.2) & (inside > 0.5) & valid[:, None]
    return seen.to(cam.dtype) * facing.clamp(0, 1)


def pose_optimizer(rotation0: Tensor, translation0: Tensor, colours: "ColourModel", cfg,
                   extra: list[dict] | None = None):
    """The per-frame pose corrections (zero, learned) of a photometric stage, and its Adam
    optimizer (rotation, translation, the colour model, ``extra`` groups) with the exponential
    decay to ``cfg.lr_decay``: ``(d_rotation, d_translation, optimizer, scheduler)``."""
    d_rotation = torch.zeros_like(rotation0, requires_grad=True)
    d_translation = torch.zeros_like(translation0, requires_grad=True)
    opt = torch.optim.Adam([
        {"params": [d_rotation], "lr": cfg.lr_rotation}, {"params": [d_translation], "lr": cfg.lr_translation}]
        + colours.param_groups(cfg.lr_albedo, cfg.lr_light) + list(extra or []))
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: cfg.lr_decay ** (i / cfg.iterations))
    return d_rotation, d_translation, opt, decay


def refine_photometric(capture: Capture, seq: TrackedSequence, model, lm: LandmarkModel, targets: Tensor,
                       valid: Tensor, cfg: PhotometricConfig, progress: bool = False) -> tuple[TrackedSequence, dict]:
    """Refine ``seq``'s per-frame rotation, translation and expression, and its identity,
    photometrically (see the module doc).

    ``seq`` is in the capture's pixels (per-frame ``K``); ``targets [F, 478, 2]`` are the
    detected landmarks in the same pixels and ``valid [F]`` the frames to use. Returns the
    refined sequence and a report of the stage."""
    if cfg.iterations <= 0:
        raise ValueError("track.photometric.iterations must be > 0 to run the photometric stage")
    face_part = require_profile(model).face_part
    if face_part not in model.parts:
        raise ValueError(f"track.photometric needs a '{face_part}' part on model '{model.name}' "
                         f"(it has: {', '.join(model.parts)}); set track.photometric.iterations=0")
    t0 = time.perf_counter()
    device, dtype = lm.template.device, lm.template.dtype
    n_frames = seq.n_frames
    images, masks, K = frames_at(capture, seq, cfg.resolution, dtype, device)
    height, width = images.shape[-2:]
    load_seconds = time.perf_counter() - t0

    t = lambda a: torch.as_tensor(np.array(a), device=device, dtype=dtype)  # noqa: E731
    shape, expression = t(seq.shape), t(seq.expression)
    rotation0, translation0 = t(seq.rotation), t(seq.translation)
    targets = targets.to(device=device, dtype=dtype)
    targets = targets * targets.new_tensor([width / seq.width, height / seq.height])
    valid = valid.to(device)
    flip = torch.tensor(CAMERA_FLIP, device=device, dtype=dtype)
    viewmat = t(seq.viewmat)

    # The sampled face vertices: identity blended once; expressions per frame.
    face = torch.nonzero(model.parts[face_part].vertices.to(device))[:, 0]
    g = torch.Generator().manual_seed(cfg.seed)
    pick = face[torch.randperm(len(face), generator=g)[: cfg.vertices].to(device)]
    mdl = model.to(device)
    shapedirs = mdl.shapedirs[pick].to(dtype)
    base = (mdl.template[pick] + torch.einsum("vks,s->vk", shapedirs, shape)).to(dtype)
    exprdirs = mdl.exprdirs[pick].to(dtype)
    with torch.no_grad():
        neutral = mdl(shape=shape[None].to(mdl.template.dtype)).vertices[0].to(dtype)
        normals0 = vertex_normals(neutral, mdl.faces)[pick]
    inner = ~lm.contour.to(device)

    names = list(seq.expression_names)
    for key, patterns in (("expressions", cfg.expressions), ("exclude_expressions", cfg.exclude_expressions)):
        unknown = [p for p in patterns if not fnmatch.filter(names, p)]
        if unknown:
            raise ValueError(f"track.photometric.{key}: {unknown} match no blendshape of '{model.name}' "
                             f"(it has: {', '.join(names)})")
    wanted = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in cfg.expressions)
              and not any(fnmatch.fnmatchcase(n, p) for p in cfg.exclude_expressions)]
    refined = torch.tensor([names.index(n) for n in wanted], device=device, dtype=torch.long)
    d_expression = torch.zeros(n_frames, len(wanted), device=device, dtype=dtype, requires_grad=bool(wanted))
    # The sampled points in model space at the landmark fit's expressions, blended once.
    local0 = base[None] + torch.einsum("vke,be->bvk", exprdirs, expression)  # [F, N, 3]
    exprdirs_refined = exprdirs[..., refined]
    # The refined coefficients stay within the model's bounds (0..1 for ICT): bounds on their changes.
    low, high = lm.expression_bounds
    change_min, change_max = -(expression[:, refined] - low), high - expression[:, refined]
    d_shape = torch.zeros_like(shape, requires_grad=cfg.shape)

    def current_shape() -> Tensor:
        return shape + d_shape if cfg.shape else shape

    def current_expression() -> Tensor:
        if not wanted:
            return expression
        return expression.index_add(1, refined, d_expression)

    def points_camera(rotation: Tensor, translation: Tensor, frames: slice = slice(None)) -> Tensor:
        local = local0[frames]
        if wanted:
            local = local + torch.einsum("vke,be->bvk", exprdirs_refined, d_expression[frames])
        if cfg.shape:
            local = local + torch.einsum("vks,s->vk", shapedirs, d_shape)
        return to_camera(local, rotation, translation)

    def visibility(rotation: Tensor, translation: Tensor) -> Tensor:
        """``[F, N]`` weights: 0 where hidden, else how frontally the vertex is seen."""
        out = []
        with torch.no_grad():
            shape_now, expression_now = current_shape(), current_expression()
            for s in range(0, n_frames, 32):
                sl = slice(s, min(n_frames, s + 32))
                b = sl.stop - sl.start
                posed_t = model_translation(lm, shape_now, expression_now[sl], rotation[sl], translation[sl])
                verts = mdl(shape=shape_now[None].expand(b, -1).to(mdl.template.dtype), expression=expression_now[sl],
                            rotation=rotation[sl], translation=posed_t).vertices.to(dtype)
                # The nearest surface of the closed head faces the camera: back faces need no z-test.
                r = rasterize_mesh(verts, mdl.faces, K[sl], width, height, viewmats=viewmat[None].expand(b, -1, -1),
                                   cull_backfaces=True)
                depth = torch.where(r.mask, r.depth, torch.full_like(r.depth, 1e6))[:, None]
                cam = points_camera(rotation[sl], translation[sl], sl)
                n = torch.einsum("bij,vj->bvi", axis_angle_to_matrix(rotation[sl]), normals0) * flip
                out.append(seen_weights(depth, masks[sl], cam, _project(cam, K[sl]), n, valid[sl], 0.004,
                                        width, height))
        return torch.cat(out)

    colours = ColourModel(images, len(pick), cfg.blur, cfg.iterations, "track: photometric", progress)
    d_rotation, d_translation, opt, decay = pose_optimizer(
        rotation0, translation0, colours, cfg,
        ([{"params": [d_expression], "lr": cfg.lr_expression}] if wanted else [])
        + ([{"params": [d_shape], "lr": cfg.lr_shape}] if cfg.shape else []))
    vis = visibility(rotation0, translation0)
    if float(vis.sum()) <= 0:
        raise ValueError(f"{capture.root}: no face vertex is visible in any frame; is the capture tracked? "
                         "Set track.photometric.iterations=0 to skip this stage")
    landmark_scale = cfg.robust_px * width / seq.width  # working pixels
    for step in range(cfg.iterations):
        frames = colours.frames(step)
        rotation, translation = rotation0 + d_rotation, translation0 + d_translation
        if step and step % cfg.visibility_every == 0:
            vis = visibility(rotation.detach(), translation.detach())
        cam = points_camera(rotation, translation)
        colour = F.grid_sample(frames, _grid(_project(cam, K), width, height), align_corners=False,
                               padding_mode="border")[..., 0].transpose(1, 2)  # [F, N, 3]
        n = torch.einsum("bij,vj->bvi", axis_angle_to_matrix(rotation), normals0) * flip
        photo = colours.loss(colour, n, vis, step)
        view = view_directions(rotation, translation)
        pixels = _project(to_camera(lm.points(current_shape(), current_expression(), view), rotation, translation), K)
        e2 = ((pixels - targets) ** 2).sum(-1)[:, inner]
        landmarks = (geman_mcclure(e2, landmark_scale) * valid[:, None]).sum() / (valid.sum() * inner.sum())
        smooth = (cfg.smooth_rotation * (d_rotation[1:] - d_rotation[:-1]).pow(2).sum()
                  + cfg.smooth_translation * (d_translation[1:] - d_translation[:-1]).pow(2).sum())
        loss = photo + cfg.landmark_weight * landmarks + smooth
        if wanted and cfg.expression_prior > 0:
            loss = loss + cfg.expression_prior * d_expression.pow(2).sum() / n_frames
        if cfg.shape and cfg.shape_prior > 0:
            loss = loss + cfg.shape_prior * d_shape.pow(2).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"track.photometric: the loss became {float(loss)} at step {step}; "
                                     "lower track.photometric.lr_rotation / lr_translation / lr_expression / lr_shape")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
        with torch.no_grad():  # colours pin poses relative to each other only: keep the landmarks' mean pose
            for d in (d_rotation, d_translation):
                d.sub_(d[valid].mean(0))
            if wanted:  # coefficients stay within their bounds
                d_expression.clamp_(change_min, change_max)
        colours.done_step(photo)
    colour_loss = colours.close()

    rotation = (rotation0 + d_rotation).detach()
    translation = (translation0 + d_translation).detach()
    out = dataclasses.replace(seq, rotation=rotation.cpu().numpy().astype(np.float32),
                              translation=translation.cpu().numpy().astype(np.float32),
                              expression=current_expression().detach().cpu().numpy().astype(np.float32),
                              shape=current_shape().detach().cpu().numpy().astype(np.float32))
    report = {
        **stage_report(cfg.iterations, t0, load_seconds, (width, height), len(pick), colour_loss,
                       (rotation0, rotation), (translation0, translation), valid),
        "expressions_refined": len(wanted),
        "expression_change": ({"mean_abs": round(float(d_expression.detach()[valid].abs().mean()), 4),
                               "max_abs": round(float(d_expression.detach()[valid].abs().max()), 4)}
                              if wanted else None),
        "shape_refined": bool(cfg.shape),
        "shape_change_norm": round(float(d_shape.detach().norm()), 4) if cfg.shape else None,
    }
    return out, report


def stage_report(iterations: int, t0: float, load_seconds: float, size: tuple[int, int], points: int,
                 colour_loss: dict, rotations: tuple[Tensor, Tensor], translations: tuple[Tensor, Tensor],
                 valid: Tensor) -> dict:
    """The part of a photometric stage's report both stages share: steps, times, working size,
    points, colour loss and how far the poses moved (``(before, after)`` pairs, over ``valid``)."""
    change = _rotation_change_deg(*rotations)[valid]
    moved = (translations[1] - translations[0])[valid].norm(dim=-1)
    return {
        "iterations": iterations,
        "seconds": round(time.perf_counter() - t0, 3),
        "load_seconds": round(load_seconds, 3),
        "resolution": list(size),
        "vertices": points,
        "colour_loss": colour_loss,
        "rotation_change_deg": {"median": round(float(change.median()), 3), "max": round(float(change.max()), 3)},
        "translation_change_mm": {"median": round(float(moved.median() * 1000), 3)},
    }


def _rotation_change_deg(a: Tensor, b: Tensor) -> Tensor:
    R = axis_angle_to_matrix(a).transpose(-1, -2) @ axis_angle_to_matrix(b)
    return torch.rad2deg(matrix_to_axis_angle(R).norm(dim=-1))


def sequence_landmarks(lm: LandmarkModel, seq: TrackedSequence) -> Tensor:
    """Projected model landmarks ``[F, 478, 2]`` of a tracked sequence, in its own pixels."""
    t = lambda a: torch.as_tensor(np.array(a), device=lm.template.device, dtype=lm.template.dtype)  # noqa: E731
    rotation, translation = t(seq.rotation), t(seq.translation)
    with torch.no_grad():
        points = lm.points(t(seq.shape), t(seq.expression), view_directions(rotation, translation))
        return _project(to_camera(points, rotation, translation), t(seq.intrinsics()))

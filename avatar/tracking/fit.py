"""Batched fitting of the head model to a whole sequence of 2D landmarks.

All frames are optimised together as batched tensors (no loop over frames): one identity
``shape [S]`` per subject, per frame ``rotation [F, 3]`` (axis-angle), ``translation [F, 3]``
(metres) and ``expression [F, E]`` kept in 0..1 by projection after each Adam step, one
focal length (pixels; principal point at the image centre).

Energy (pixels at the capture's resolution):
- robust reprojection of the embedded landmarks, Geman-McClure with scale ``robust_px``;
  face-oval (contour) landmarks are weighted by how frontally their surface is seen
  (``cos^2`` of the normal to the viewing ray, not differentiated), so the jawline does
  not pull the mesh when the head turns; iris ring points are not used, iris centres drive
  the gaze blendshapes (see :mod:`.landmark_model`; unused for a model without them);
- the embedded points slide with the view direction as MediaPipe's do (the embedding's
  ``view_offsets``, evaluated at the current pose, not differentiated);
- priors: ``|shape|^2`` (PCA units), ``sum(expression)`` (sparse, non-negative; for a model
  with signed coefficients, a PCA space such as FLAME's, ``|expression|^2``), focal length
  toward its initial value (log scale);
- temporal smoothness: squared second differences of rotation, translation (in
  pixel-equivalent units) and expression across consecutive frames;
- eye closure (the eye-closure loss of DECA): the 2D offsets from upper to lower eyelid
  points (:data:`EYE_CLOSURE_PAIRS`) match MediaPipe's, squared, not robust. The robust
  data term alone lets blinks go: during a blink the lid points are the ones far off, and
  Geman-McClure all but ignores them, so the fit shuts the eye with eyeWide/eyeSquint
  drift instead of eyeBlink;
- per-subject landmark offsets (``w_landmark_offset`` > 0; 0 turns them off): one model-space
  offset per landmark, shared by all frames, under an L2 prior (pixel-equivalents at the
  head's distance). MediaPipe's points on a given face sit a few pixels from the
  embedding's in a way that stays from frame to frame (where the face's texture puts the
  features, not the mesh); without offsets the fit explains that constant part with
  expressions held all through the sequence;
- exclusion of antagonists (the tracking profile's, e.g. :data:`EXCLUSIVE_EXPRESSIONS` for
  ARKit names: an eye cannot blink and open wide at once, a mouth corner smile and frown):
  ``w_exclusive * a * b`` per pair, for the models that have those blendshapes.

Expression coefficients stay within the profile's bounds (0..1 for ICT) by projection.

Stages: ``rigid`` (pose only, contour excluded, robust scale widened by
``rigid_robust_factor`` so that frames starting far off are not ignored), then ``full``
(everything). Frames without
a face, or flagged, have no data term; after fitting, their pose and expression are
replaced by linear interpolation of the nearest valid frames (held at the ends).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from avatar.tracking.embedding import IRIS
from ..models.profile import ARKIT_ANTAGONISTS
from .landmark_model import IRIS_LEFT, IRIS_RIGHT, LandmarkModel, project, to_camera, view_directions

# MediaPipe (upper lid, lower lid) pairs across the middle of each eye's opening (subject's
# right eye, then left; the pairs nearer the corners move little in a blink).
EYE_CLOSURE_PAIRS = ((160, 144), (159, 145), (158, 153), (387, 373), (386, 374), (385, 380))
# Blendshapes (ARKit names) that move the same feature in opposite directions (ICT's tracking
# profile lists them; other models name their own).
EXCLUSIVE_EXPRESSIONS = ARKIT_ANTAGONISTS


def antagonist_indices(lm: LandmarkModel, device: torch.device | str | None = None) -> Tensor | None:
    """Column indices ``[2, K]`` of the antagonist pairs of ``lm``'s tracking profile that it
    has (None when it has none, e.g. a model without ARKit-named blendshapes)."""
    names = set(lm.expression_names)
    pairs = [(lm.index(a), lm.index(b)) for a, b in lm.antagonists if a in names and b in names]
    return torch.tensor(pairs, device=device).T if pairs else None


@dataclass
class FitConfig:
    """Options of :func:`fit_sequence` (weights are relative to the data term in px^2)."""

    rigid_iterations: int = 150
    full_iterations: int = 400
    lr_rigid: float = 0.02
    lr_full: float = 0.01
    robust_px: float = 4.0
    rigid_robust_factor: float = 5.0  # the rigid stage uses a wider robust scale (poses start far off)
    fov_deg: float = 40.0  # initial horizontal field of view when focal is None
    focal: float | None = None  # pixels; fixed when given, else optimised
    focal_prior: float = 1.0
    w_shape: float = 1.0
    w_expression: float = 2.0
    w_smooth_pose: float = 50.0
    w_smooth_expression: float = 20.0
    w_iris: float = 1.0
    w_eye_closure: float = 5.0  # lid-to-lid offsets vs MediaPipe's (px^2; 0: off)
    w_exclusive: float = 100.0  # antagonist blendshapes active together (per unit^2 product; 0: off)
    head_width_m: float = 0.15  # for the initial distance
    weights_every: int = 10  # refresh the contour (frontality) weights every n steps
    w_landmark_offset: float = 2.0  # per-subject landmark offsets: prior per px-equivalent^2 (0: no offsets)


@dataclass
class FitResult:
    shape: Tensor  # [S]
    expression: Tensor  # [F, E]
    rotation: Tensor  # [F, 3]
    translation: Tensor  # [F, 3]
    focal: float
    stats: dict = field(default_factory=dict)
    landmark_offset: Tensor | None = None  # [L, 3] per-subject offsets (model space, metres) when fitted


def geman_mcclure(sq: Tensor, scale: float) -> Tensor:
    """Geman-McClure of squared residuals: ``s^2 * r^2 / (r^2 + s^2)`` (about r^2 near 0, saturates at s^2)."""
    s2 = scale * scale
    return s2 * sq / (sq + s2)


def landmark_weights(lm: LandmarkModel, normals_cam: Tensor, points_cam: Tensor, contour: bool = True) -> Tensor:
    """Per-frame landmark weights ``[B, L]``: 1, contour points ``cos^2`` of their frontality
    (0 when ``contour`` is False), iris ring points 0."""
    B, L = points_cam.shape[:2]
    w = points_cam.new_ones(B, L)
    ring = [i for i in IRIS if i not in (IRIS_RIGHT, IRIS_LEFT)]
    w[:, ring] = 0.0
    if contour:
        cos = (normals_cam * torch.nn.functional.normalize(-points_cam, dim=-1)).sum(-1).clamp_min(0)
        w = torch.where(lm.contour, cos.detach() ** 2, w)
    else:
        w = torch.where(lm.contour, torch.zeros_like(w), w)
    return w


def initial_pose(target: Tensor, valid: Tensor, focal: float, width: int, height: int, head_width_m: float,
                 reference: Tensor | None = None):
    """Start pose ``(rotation, translation)``, ``[F, 3]`` each, of landmarks ``target [F, L, 2]``:
    placed from the landmarks' centroid and spread and, given the model's landmarks at rest
    ``reference [L, >= 2]`` (model space), turned about the camera's axis as far as the
    landmarks are turned in the image against them (a face upright, or rolled by a sideways
    camera); without it, not turned."""
    F = target.shape[0]
    centre = target.new_tensor([width / 2, height / 2])
    c = target.mean(1)  # [F, 2]
    roll = target.new_zeros(F)
    if reference is not None:  # the 2D rotation from the rest landmarks (y flipped to point down) to the frame's
        a = reference[:, :2].to(target) * target.new_tensor([1.0, -1.0])
        a, b = a - a.mean(0), target - c[:, None]
        angle = torch.atan2((a[:, 0] * b[..., 1] - a[:, 1] * b[..., 0]).sum(-1), (a * b).sum((-1, -2)))
        roll = torch.where(valid, -angle, 0.0)  # an image turn of a (y down) is a turn of -a about the world's z
    extent = target - c[:, None]  # the face's width along its own horizontal axis
    extent = extent[..., 0] * roll.cos()[:, None] - extent[..., 1] * roll.sin()[:, None]
    spread = (extent.amax(1) - extent.amin(1)).clamp_min(1.0)
    z = focal * head_width_m / spread  # camera depth (positive)
    fill = valid if valid.any() else torch.ones_like(valid)
    z = torch.where(valid, z, z[fill].median())
    c = torch.where(valid[:, None], c, c[fill].mean(0))
    xy = (c - centre) * z[:, None] / focal
    translation = torch.stack((xy[:, 0], -xy[:, 1], -z), -1)  # world: camera flip of y and z
    rotation = torch.stack((torch.zeros_like(roll), torch.zeros_like(roll), roll), -1)
    return rotation, translation


def second_difference(x: Tensor) -> Tensor:
    return x[2:] - 2 * x[1:-1] + x[:-2] if x.shape[0] > 2 else x[:0]


def fit_sequence(lm: LandmarkModel, target: Tensor, valid: Tensor, width: int, height: int,
                 cfg: FitConfig | None = None, progress: bool = False) -> FitResult:
    """Fit ``lm`` to ``target [F, 478, 2]`` pixel landmarks; ``valid [F]`` bool marks frames with data.

    Device and dtype follow ``target``; ``lm`` is moved to them. ``progress``: a tqdm bar
    over the iterations of both stages.
    """
    cfg = cfg or FitConfig()
    F, L = target.shape[:2]
    assert target.shape == (F, lm.template.shape[0], 2), f"target must be [F, {lm.template.shape[0]}, 2], got {tuple(target.shape)}"
    assert valid.shape == (F,), f"valid must be [F={F}], got {tuple(valid.shape)}"
    if not bool(valid.any()):
        raise ValueError("no frame has landmarks: nothing to fit")
    dev, dt = target.device, target.dtype
    lm = lm.to(dev, dt)
    valid = valid.to(dev)
    target = torch.where(valid[:, None, None], target, torch.zeros_like(target))
    principal = target.new_tensor([width / 2, height / 2])
    f0 = cfg.focal or 0.5 * width / math.tan(math.radians(cfg.fov_deg) / 2)
    log_f = torch.tensor(math.log(f0), device=dev, dtype=dt, requires_grad=cfg.focal is None)
    rot0, trans0 = initial_pose(target, valid, f0, width, height, cfg.head_width_m, lm.template)
    rotation = rot0.requires_grad_()
    translation = trans0.requires_grad_()
    shape = torch.zeros(lm.num_shape, device=dev, dtype=dt, requires_grad=True)
    expression = torch.zeros(F, lm.num_expression, device=dev, dtype=dt, requires_grad=True)
    offset = torch.zeros(L, 3, device=dev, dtype=dt, requires_grad=cfg.w_landmark_offset > 0)
    n_valid = valid.sum()
    low, high = lm.expression_bounds
    depth0 = float(-trans0.detach()[valid, 2].mean())
    m_to_px = f0 / depth0  # pixel-equivalent of a metre at the head's distance

    cache: dict = {}
    offset_mask = torch.ones(L, 1, device=dev, dtype=dt)
    offset_mask[list(IRIS)] = 0.0
    pairs = torch.tensor(EYE_CLOSURE_PAIRS, device=dev).T if cfg.w_eye_closure > 0 else None
    if pairs is not None:
        target_gap = target[:, pairs[0]] - target[:, pairs[1]]  # [F, P, 2]
    exclusive = antagonist_indices(lm, dev) if cfg.w_exclusive > 0 else None

    def energy(full: bool, step: int) -> tuple[Tensor, dict]:
        expr = expression if full else expression.detach()
        with torch.no_grad():
            view = view_directions(rotation, translation)
        pts = lm.points(shape if full else shape.detach(), expr, view)
        if full and cfg.w_landmark_offset > 0:
            masked_offset = offset * offset_mask
            pts = pts + masked_offset
        cam = to_camera(pts, rotation, translation)
        px = project(cam, log_f.exp(), principal)
        sq = ((px - target) ** 2).sum(-1)  # [F, L]
        if step % cfg.weights_every == 0 or cache.get("full") != full:  # detached: refresh now and then
            with torch.no_grad():
                normals = to_camera(lm.normals(shape, expr), rotation, torch.zeros_like(translation))
                w = landmark_weights(lm, normals, cam, contour=full)
                w[:, [IRIS_RIGHT, IRIS_LEFT]] *= cfg.w_iris if lm.gaze is not None else 0.0
                cache.update(w=w * valid[:, None], full=full)
        w = cache["w"]
        scale = cfg.robust_px * (1.0 if full else cfg.rigid_robust_factor)
        data = (w * geman_mcclure(sq, scale)).sum() / n_valid
        smooth = cfg.w_smooth_pose * (
            (second_difference(rotation) * m_to_px * depth0 * 0.1).pow(2).sum()
            + (second_difference(translation) * m_to_px).pow(2).sum()
        ) / F
        terms = {"data": data, "smooth_pose": smooth}
        if full:
            terms["shape"] = cfg.w_shape * shape.pow(2).sum() / 1.0
            if lm.signed_expressions:  # a PCA space: Gaussian prior
                terms["expression"] = cfg.w_expression * expression.pow(2).sum() / F
            else:  # activations: sparse
                terms["expression"] = cfg.w_expression * expression.sum() / F
            terms["smooth_expression"] = cfg.w_smooth_expression * second_difference(expression).pow(2).sum() / F * 100
            if pairs is not None:
                gap = px[:, pairs[0]] - px[:, pairs[1]]
                terms["eye_closure"] = cfg.w_eye_closure * (
                    valid[:, None] * (gap - target_gap).pow(2).sum(-1)).sum() / n_valid
            if exclusive is not None:
                terms["exclusive"] = cfg.w_exclusive * (expression[:, exclusive[0]] * expression[:, exclusive[1]]).sum() / F
            if cfg.w_landmark_offset > 0:
                terms["landmark_offset"] = cfg.w_landmark_offset * (masked_offset * m_to_px).pow(2).sum()
            terms["focal"] = cfg.focal_prior * 100 * (log_f - math.log(f0)) ** 2
        return sum(terms.values()), terms

    stats = {"frames": F, "valid_frames": int(n_valid)}
    from tqdm.auto import tqdm  # noqa: PLC0415

    bar = tqdm(total=cfg.rigid_iterations + cfg.full_iterations, desc="track: landmark fit", unit="it",
               disable=not progress)
    stages = [("rigid", cfg.rigid_iterations, cfg.lr_rigid, [rotation, translation], False),
              ("full", cfg.full_iterations, cfg.lr_full, [rotation, translation, shape, expression, log_f, offset], True)]
    for name, iters, lr, params, full in stages:
        params = [p for p in params if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        t0 = time.perf_counter()
        for step in range(iters):
            opt.zero_grad(set_to_none=True)
            loss, terms = energy(full, step)
            loss.backward()
            opt.step()
            with torch.no_grad():
                expression.clamp_(low, high)
            bar.update(1)
        seconds = time.perf_counter() - t0
        stats[name] = {
            "iterations": iters, "seconds": round(seconds, 3),
            "iterations_per_second": round(iters / max(seconds, 1e-9), 2),
            "frames_per_second": round(F / max(seconds, 1e-9), 2),  # whole stage, all iterations
            "frame_iterations_per_second": round(F * iters / max(seconds, 1e-9), 1),
            "final_losses": {k: round(float(v.detach()), 4) for k, v in terms.items()},
        }
    bar.close()
    with torch.no_grad():
        rot, trans, expr = (interpolate_invalid(x.detach(), valid) for x in (rotation, translation, expression))
    fitted_offset = (offset * offset_mask).detach() if cfg.w_landmark_offset > 0 else None
    if fitted_offset is not None:
        stats["landmark_offset_mm"] = {"median": round(float(fitted_offset.norm(dim=-1).median()) * 1e3, 3),
                                       "max": round(float(fitted_offset.norm(dim=-1).max()) * 1e3, 3)}
    return FitResult(shape.detach(), expr, rot, trans, float(log_f.detach().exp()), stats, fitted_offset)


def interpolate_invalid(x: Tensor, valid: Tensor) -> Tensor:
    """``x [F, ...]`` with the rows of invalid frames linearly interpolated from valid ones (held at the ends)."""
    if bool(valid.all()):
        return x
    idx = np.flatnonzero(valid.cpu().numpy())
    frames = np.arange(x.shape[0])
    flat = x.reshape(x.shape[0], -1).cpu().numpy()
    out = np.stack([np.interp(frames, idx, flat[idx, j]) for j in range(flat.shape[1])], 1)
    return torch.as_tensor(out, dtype=x.dtype, device=x.device).reshape(x.shape)


def reprojection_errors(lm: LandmarkModel, result: FitResult, target: Tensor, width: int, height: int,
                        contour: bool = False) -> Tensor:
    """Per-frame, per-landmark pixel errors ``[F, L']`` of a fit (without contour and iris ring points unless asked)."""
    with torch.no_grad():
        lm = lm.to(target.device, target.dtype)
        view = view_directions(result.rotation, result.translation)
        px = project(to_camera(lm.points(result.shape, result.expression, view), result.rotation, result.translation),
                     torch.tensor(result.focal, dtype=target.dtype), target.new_tensor([width / 2, height / 2]))
        err = (px - target).norm(dim=-1)
    return err[:, reported_landmarks(lm, contour).to(err.device)]


def reported_landmarks(lm: LandmarkModel, contour: bool = False) -> Tensor:
    """``[L]`` bool: the landmarks whose errors are reported (no iris ring, no iris centres for a model
    without gaze; no contour unless asked)."""
    keep = torch.ones(lm.contour.shape[0], dtype=torch.bool)
    keep[[i for i in IRIS if i not in (IRIS_RIGHT, IRIS_LEFT)]] = False
    if lm.gaze is None:  # iris centres not modelled
        keep[[IRIS_RIGHT, IRIS_LEFT]] = False
    if not contour:
        keep &= ~lm.contour.cpu()
    return keep

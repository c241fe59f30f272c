"""Batched fitting of a body model to a sequence of pose landmarks and person masks.

All frames are optimised together (no loop over frames), in the *source* video's pixels
(a capture whose crop follows the person is one fixed camera seen through moving crops):

- one body shape ``[S]`` (Anny's phenotype, kept in the profile's ``shape_bounds``);
- per frame: the global rotation as a turn about the vertical ``yaw [F]`` (unwrapped, so a
  person turning a full circle stays smooth) times a residual axis-angle ``[F, 3]``, the
  translation ``[F, 3]`` (metres) and the rotations ``[F, Jt, 3]`` (axis-angle) of the
  tracking profile's joints (the others stay at rest);
- one focal length (pixels; principal point at the source frame's centre).

Camera: the tracking camera of the head fits (OpenCV, ``viewmat = diag(1, -1, -1, 1)``); the
body stands in front of it at negative world z, rest pose facing it.

Energy, in *capture* pixels (errors in source pixels times each frame's crop scale):

- landmarks: Geman-McClure (scale ``robust_px``) of the reprojection of the model's 33
  pose landmarks, weighted by MediaPipe's visibility (below ``min_visibility``: 0), face
  and hand points down-weighted (``w_face``, ``w_hands``);
- silhouette (:mod:`.silhouette`, last stage): ``inside`` (projected vertices off the mask)
  and ``cover`` (mask outline points far from every projected vertex), Huber;
- priors, as pixel-equivalents of a ``LIMB_M`` limb at the body's distance: joint angles
  beyond the profile's limits (``w_limit``), a weak pull to the rest pose (``w_pose``),
  shape toward the model's default (``w_shape``), the focal length toward its start (log);
- temporal smoothness: squared second differences of yaw, residual rotation, joint
  rotations and translation.

Coarse to fine: ``global`` (yaw, residual rotation, translation; torso and head
landmarks), ``torso`` (+ shape, focal length, spine, neck, head, clavicles, hips and
shoulders; all landmarks), ``limbs`` (+ every tracked joint, the silhouette). Frames
without landmarks have no data term and are interpolated afterwards.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from avatar.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from avatar.geometry.skeleton import POSE_LANDMARK_NAMES
from .body_points import BodyPoints, spread_vertices
from .fit import geman_mcclure, interpolate_invalid, second_difference
from .silhouette import SilhouetteTargets

LIMB_M = 0.3  # metres: rotations are priced as the motion of a limb this long, in pixels
NAME = {n: i for i, n in enumerate(POSE_LANDMARK_NAMES)}
FACE_POINTS = tuple(range(0, 11))
HAND_POINTS = tuple(range(17, 23))
TORSO_POINTS = (NAME["left_shoulder"], NAME["right_shoulder"], NAME["left_hip"], NAME["right_hip"])
# Joints freed in the torso stage (the rest of the profile's joints wait for the limbs stage).
TORSO_JOINTS = ("spine05", "spine04", "spine03", "spine02", "spine01", "neck01", "neck02", "head", "clavicle.L",
                "clavicle.R", "upperleg01.L", "upperleg01.R", "upperarm01.L", "upperarm01.R",
                "pelvis.L", "pelvis.R", "left_hip", "right_hip", "left_shoulder", "right_shoulder", "spine1",
                "spine2", "spine3", "neck", "left_collar", "right_collar")
CAMERA_FLIP = (1.0, -1.0, -1.0)


@dataclass
class BodyFitConfig:
    """Options of :func:`fit_body_sequence` (weights relative to the landmark term in capture px^2)."""

    global_iterations: int = 80  # stage 1: yaw, residual rotation, translation
    torso_iterations: int = 120  # stage 2: + shape, focal, torso and root joints of the limbs
    limb_iterations: int = 150  # stage 3: + every tracked joint and the silhouette
    lr: float = 0.02  # Adam step size (radians, metres, shape units)
    robust_px: float = 6.0  # Geman-McClure scale of the landmark term, capture pixels
    min_visibility: float = 0.3  # landmarks MediaPipe sees less than this are not used
    w_face: float = 0.3  # weight of the face landmarks (nose, eyes, ears, mouth) relative to the body's
    w_hands: float = 0.3  # weight of the hand landmarks (pinky, index, thumb)
    fov_deg: float = 45.0  # initial field of view across the source frame's longer side, degrees
    focal: float | None = None  # source pixels; fixed when given, else fitted
    focal_prior: float = 1.0  # pull of the focal length toward its start (log scale)
    w_inside: float = 10.0  # silhouette: projected vertices off the person mask
    w_cover: float = 20.0  # silhouette: mask outline far from the projected vertices
    silhouette_px: float = 3.0  # Huber scale of the silhouette terms, capture pixels
    silhouette_vertices: int = 1000  # vertices (spread over the mesh) used for the silhouette
    cover_tolerance: float = 0.1  # cover term: outline points this close to a projected vertex (fraction of the vertices' spacing) are covered
    w_smooth: float = 1.0  # temporal smoothness (second differences), pixel-equivalents
    w_pose: float = 0.002  # pull of the joint rotations to the rest pose
    w_limit: float = 10.0  # joint rotations beyond the profile's limits
    w_shape: float = 0.3  # shape away from the model's default (squared, shape units x 100)
    fit_shape: bool = True  # false: keep the starting shape (e.g. a trained avatar's) fixed


@dataclass
class BodyFitResult:
    """A fitted body sequence (tensors on the fit's device)."""

    shape: Tensor  # [S]
    pose: Tensor  # [F, J, 3] axis-angle, all joints (untracked: zero)
    rotation: Tensor  # [F, 3] global axis-angle about the root's rest position
    translation: Tensor  # [F, 3] metres
    focal: float  # source pixels
    width: int  # source frame size
    height: int
    stats: dict = field(default_factory=dict)


def yaw_matrix(yaw: Tensor) -> Tensor:
    """``[..., 3, 3]`` rotations about +Y by ``yaw [...]`` radians."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    return torch.stack((c, z, s, z, o, z, -s, z, c), -1).reshape(yaw.shape + (3, 3))


YAW_POINTS = (NAME["nose"], NAME["left_eye"], NAME["right_eye"], NAME["left_ear"], NAME["right_ear"],
              NAME["left_shoulder"], NAME["right_shoulder"], NAME["left_hip"], NAME["right_hip"])


def initial_yaw(target: np.ndarray, valid: np.ndarray, rest_landmarks: np.ndarray, steps: int = 24,
                jump_cost: float = 0.5) -> np.ndarray:
    """Per-frame turn of the body about the vertical ``[F]`` (radians, unwrapped over time).

    For each of ``steps`` candidate turns the rest pose's head and torso landmarks
    (``rest_landmarks [33, 3]``, model axes) are seen orthographically and fitted to the
    frame's (``target [F, 33, 2+]``, pixels) by a scale and a shift; the left/right labels
    tell front from back, the nose and ears how far the body has turned. A Viterbi pass over
    the frames then picks the sequence of turns with the least error plus ``jump_cost``
    times the squared step (in candidate steps) between frames, so a person turning a
    full circle is followed continuously. Frames without data take their neighbours' turn.
    """
    F = target.shape[0]
    if not valid.any():
        return np.zeros(F)
    cand = np.arange(steps) * 2 * np.pi / steps
    c, s = np.cos(cand), np.sin(cand)
    p = rest_landmarks[list(YAW_POINTS)]  # [P, 3]
    # R_y(yaw) then the camera flip (x, -y): image x = c x + s z, image y = -y
    px = c[:, None] * p[None, :, 0] + s[:, None] * p[None, :, 2]  # [C, P]
    py = np.broadcast_to(-p[None, :, 1], px.shape)
    model = np.stack((px, py), -1)  # [C, P, 2]
    q = target[:, list(YAW_POINTS), :2].astype(np.float64)  # [F, P, 2]
    mc = model - model.mean(1, keepdims=True)
    qc = q - q.mean(1, keepdims=True)
    scale = np.einsum("cpd,fpd->fc", mc, qc) / np.maximum((mc ** 2).sum((1, 2)), 1e-9)[None]  # [F, C]
    resid = qc[:, None] - scale[..., None, None] * mc[None]  # [F, C, P, 2]
    err = (resid ** 2).sum((2, 3)) / np.maximum((qc ** 2).sum((1, 2)), 1e-9)[:, None]  # relative
    err = np.where(scale > 0, err, err + 10.0)  # a negative scale is a mirrored body
    err[~valid] = 0.0
    step = np.minimum(np.abs(np.arange(steps)[:, None] - np.arange(steps)[None]),
                      steps - np.abs(np.arange(steps)[:, None] - np.arange(steps)[None]))
    trans = jump_cost * step.astype(float) ** 2 * 0.01
    cost, back = err[0].copy(), np.zeros((F, steps), int)
    for f in range(1, F):
        total = cost[:, None] + trans  # [from, to]
        back[f] = total.argmin(0)
        cost = total.min(0) + err[f]
    path = np.zeros(F, int)
    path[-1] = int(cost.argmin())
    for f in range(F - 1, 0, -1):
        path[f - 1] = back[f, path[f]]
    return np.unwrap(cand[path])


def project(cam: Tensor, focal: Tensor, principal: Tensor) -> Tensor:
    """Pinhole projection of camera points ``[..., 3]`` (OpenCV) to pixels ``[..., 2]``."""
    return focal * cam[..., :2] / cam[..., 2:].clamp_min(1e-3) + principal


def to_camera(points: Tensor) -> Tensor:
    """World -> tracking camera (``viewmat = diag(1, -1, -1, 1)``)."""
    return points * points.new_tensor(CAMERA_FLIP)


def landmark_weights(target: Tensor, valid: Tensor, cfg: BodyFitConfig) -> Tensor:
    """``[F, 33]`` weights of the landmark term: visibility (0 below ``min_visibility``), the
    face and hand points scaled, frames without data 0."""
    vis = target[..., 3]
    w = torch.where(vis >= cfg.min_visibility, vis, torch.zeros_like(vis))
    scale = torch.ones(33, dtype=w.dtype, device=w.device)
    scale[list(FACE_POINTS)] = cfg.w_face
    scale[list(HAND_POINTS)] = cfg.w_hands
    return w * scale * valid[:, None]


class BodyFitter:
    """Holds the parameters and the energy of a body fit (see the module doc)."""

    def __init__(self, body, target: Tensor, valid: Tensor, scale: Tensor, width: int, height: int,
                 cfg: BodyFitConfig, silhouette: SilhouetteTargets | None = None, shape: Tensor | None = None):
        dev, dt = target.device, target.dtype
        self.cfg, self.width, self.height, self.silhouette = cfg, width, height, silhouette
        self.F = F = target.shape[0]
        self.target, self.valid, self.scale = target, valid, scale  # [F, 33, 4] source px, [F], [F]
        profile = body.body_profile
        names = [n for n in profile.tracked_joints if n in body.joint_names]
        self.joint_ids = torch.tensor(body.joint_index(names), device=dev)
        self.joint_names = names
        self.limits = torch.tensor([profile.max_angle(n) for n in names], device=dev, dtype=dt)
        self.torso_mask = torch.tensor([n in TORSO_JOINTS for n in names], device=dev)
        self.J = body.num_joints
        ids = spread_vertices(body.template, cfg.silhouette_vertices) if silhouette is not None else None
        self.points = BodyPoints(body, ids).to(dev, dt)
        self.vertex_spacing_m = 0.0
        if ids is not None:  # median distance from a silhouette vertex to its nearest neighbour, rest pose
            rest = body.template[ids]
            self.vertex_spacing_m = float(torch.cdist(rest, rest).topk(2, largest=False).values[:, 1].median())
        self.low, self.high = profile.shape_bounds
        self.shape0 = body.default_shape.to(dev, dt).clone()
        self.principal = target.new_tensor([width / 2, height / 2])
        self.f0 = cfg.focal or 0.5 * max(width, height) / math.tan(math.radians(cfg.fov_deg) / 2)
        self.weights = landmark_weights(target, valid, cfg)

        self.log_f = torch.tensor(math.log(self.f0), device=dev, dtype=dt, requires_grad=cfg.focal is None)
        self.shape = (shape if shape is not None else self.shape0).to(dev, dt).clone().requires_grad_()
        self.pose = torch.zeros(F, len(names), 3, device=dev, dtype=dt, requires_grad=True)
        self.residual = torch.zeros(F, 3, device=dev, dtype=dt, requires_grad=True)
        with torch.no_grad():
            rest_lm = self.points(self.shape, torch.eye(3, dtype=dt, device=dev).expand(1, self.J, 3, 3),
                                  torch.zeros(1, 3, dtype=dt, device=dev), vertices=False)[0][0]
        yaw = initial_yaw(target.detach().cpu().numpy(), valid.cpu().numpy(), rest_lm.cpu().numpy())
        self.yaw = torch.tensor(yaw, device=dev, dtype=dt, requires_grad=True)
        self.translation = self._initial_translation().requires_grad_()
        self.m_to_px = float(self.f0 * scale.median() / -self.translation.detach()[:, 2].median())

    # -- model -----------------------------------------------------------------------------

    def rotations(self) -> Tensor:
        """``[F, J, 3, 3]`` local rotations with the global rotation folded into the root's."""
        F, dt, dev = self.F, self.pose.dtype, self.pose.device
        local = torch.eye(3, dtype=dt, device=dev).expand(F, self.J, 3, 3)
        local = local.index_copy(1, self.joint_ids, axis_angle_to_matrix(self.pose))
        glob = yaw_matrix(self.yaw) @ axis_angle_to_matrix(self.residual)
        return torch.cat((glob[:, None] @ local[:, :1], local[:, 1:]), 1)

    def project(self, points: Tensor) -> Tensor:
        return project(to_camera(points), self.log_f.exp(), self.principal)

    def _initial_translation(self) -> Tensor:
        """Translation putting the root on the ray through the hips' midpoint, at the depth where
        the model's nose-to-ankle height matches the landmarks'."""
        with torch.no_grad():
            lm, _, joints = self.points(self.shape, self.rotations(), torch.zeros(self.F, 3, dtype=self.pose.dtype,
                                                                                  device=self.pose.device))
            t = self.target
            ankles = 0.5 * (t[:, NAME["left_ankle"], :2] + t[:, NAME["right_ankle"], :2])
            px_height = (ankles - t[:, NAME["nose"], :2]).norm(dim=-1)
            m_height = (0.5 * (lm[:, NAME["left_ankle"]] + lm[:, NAME["right_ankle"]]) - lm[:, NAME["nose"]]).norm(dim=-1)
            ok = self.valid & (px_height > 1)
            depth = self.f0 * m_height / px_height.clamp_min(1)
            depth = torch.where(ok, depth, depth[ok].median() if ok.any() else torch.full_like(depth, 3.0))
            hips = 0.5 * (t[:, NAME["left_hip"], :2] + t[:, NAME["right_hip"], :2])
            fill = hips[ok].mean(0) if ok.any() else self.principal
            hips = torch.where(ok[:, None], hips, fill)
            cam = torch.cat(((hips - self.principal) * depth[:, None] / self.f0, depth[:, None]), -1)
            world = to_camera(cam)  # the flip is its own inverse
            root = joints[:, 0]  # rest root (the rotation turns about it)
            return world - root

    def posed(self, vertices: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        return self.points(self.shape, self.rotations(), self.translation, vertices)

    # -- energy ----------------------------------------------------------------------------

    def energy(self, stage: str) -> tuple[Tensor, dict]:
        cfg = self.cfg
        silhouette = stage == "limbs" and self.silhouette is not None and (cfg.w_inside > 0 or cfg.w_cover > 0)
        lm, verts, _ = self.posed(vertices=silhouette)
        px = self.project(lm)  # [F, 33, 2] source px
        err2 = ((px - self.target[..., :2]) * self.scale[:, None, None]).pow(2).sum(-1)  # capture px^2
        w = self.weights
        if stage == "global":
            keep = torch.zeros(33, dtype=w.dtype, device=w.device)
            keep[list(TORSO_POINTS)] = 1.0
            keep[[NAME["nose"], NAME["left_ear"], NAME["right_ear"]]] = 0.5
            w = w * keep
        scale = cfg.robust_px * (4.0 if stage == "global" else 1.0)
        n_valid = self.valid.sum().clamp_min(1)
        terms = {"landmarks": (w * geman_mcclure(err2, scale)).sum() / n_valid}
        px_per_rad = LIMB_M * self.m_to_px
        F = self.F
        terms["smooth"] = cfg.w_smooth * (
            (second_difference(self.yaw) * px_per_rad).pow(2).sum()
            + (second_difference(self.residual) * px_per_rad).pow(2).sum()
            + (second_difference(self.pose) * px_per_rad).pow(2).sum()
            + (second_difference(self.translation) * self.m_to_px).pow(2).sum()) / F
        if stage != "global":
            angle = self.pose.norm(dim=-1)  # [F, Jt]
            terms["limit"] = cfg.w_limit * ((angle - self.limits).clamp_min(0) * px_per_rad).pow(2).sum() / F
            terms["pose"] = cfg.w_pose * (angle * px_per_rad).pow(2).sum() / F
            if cfg.fit_shape:
                terms["shape"] = cfg.w_shape * 100 * (self.shape - self.shape0).pow(2).sum()
            terms["focal"] = cfg.focal_prior * 100 * (self.log_f - math.log(self.f0)) ** 2
        if silhouette:
            terms.update(self.silhouette_terms(verts))
        return sum(terms.values()), terms

    def silhouette_terms(self, verts: Tensor) -> dict:
        cfg, sil = self.cfg, self.silhouette
        pts = self.project(verts)  # [F, N, 2] source px
        use = (self.valid & sil.has_outline).to(pts.dtype)
        n = use.sum().clamp_min(1)
        delta = cfg.silhouette_px

        def huber(d: Tensor) -> Tensor:
            return torch.nn.functional.huber_loss(d, torch.zeros_like(d), reduction="none", delta=delta) * 2

        inside = sil.inside_distance(pts) * self.scale[:, None]  # capture px
        with torch.no_grad():  # spacing of the projected vertices (source px): the cover term's tolerance
            spacing = cfg.cover_tolerance * self.vertex_spacing_m * self.log_f.exp() / (-self.translation[:, 2]).clamp_min(0.1)
        cover = sil.cover_distance(pts, spacing) * self.scale[:, None]
        return {"inside": cfg.w_inside * (use[:, None] * huber(inside)).mean(-1).sum() / n,
                "cover": cfg.w_cover * (use[:, None] * huber(cover)).mean(-1).sum() / n}

    def stage_parameters(self, stage: str) -> list[Tensor]:
        base = [self.yaw, self.residual, self.translation]
        if stage == "global":
            return base
        extra = ([self.shape] if self.cfg.fit_shape else []) + [self.pose] + (
            [self.log_f] if self.log_f.requires_grad else [])
        return base + extra

    def pose_mask(self, stage: str) -> Tensor | None:
        """``[Jt]`` joints free in ``stage`` (None: all)."""
        return self.torso_mask if stage == "torso" else None

    # -- result ----------------------------------------------------------------------------

    def result(self, stats: dict) -> BodyFitResult:
        with torch.no_grad():
            valid = self.valid
            yaw, res, trans, pose = (interpolate_invalid(x.detach(), valid)
                                     for x in (self.yaw, self.residual, self.translation, self.pose))
            glob = matrix_to_axis_angle(yaw_matrix(yaw) @ axis_angle_to_matrix(res))
            full = pose.new_zeros(self.F, self.J, 3).index_copy(1, self.joint_ids, pose)
        return BodyFitResult(self.shape.detach().clone(), full, glob, trans, float(self.log_f.detach().exp()),
                             self.width, self.height, stats)


def fit_body_sequence(body, target: Tensor, valid: Tensor, width: int, height: int, scale: Tensor | None = None,
                      silhouette: SilhouetteTargets | None = None, cfg: BodyFitConfig | None = None,
                      shape: Tensor | None = None, progress: bool = False) -> BodyFitResult:
    """Fit ``body`` (a :class:`~avatar.models.body.BodyModel` with a ``body_profile``) to pose landmarks.

    Args:
        target: ``[F, 33, 4]`` landmarks (x, y in source pixels, z as MediaPipe's relative
            depth in pixels, visibility).
        valid: ``[F]`` bool, frames with landmarks.
        width, height: the source frame's size (principal point at its centre).
        scale: ``[F]`` capture pixels per source pixel (crops; default ones).
        silhouette: mask targets for the last stage (None: landmarks only).
        shape: fixed starting shape ``[S]`` (default: the model's default shape).

    Device and dtype follow ``target``; the model's buffers are copied to them.
    """
    cfg = cfg or BodyFitConfig()
    F = target.shape[0]
    assert target.shape == (F, 33, 4), f"target must be [F, 33, 4], got {tuple(target.shape)}"
    assert valid.shape == (F,), f"valid must be [F={F}], got {tuple(valid.shape)}"
    if not bool(valid.any()):
        raise ValueError("no frame has pose landmarks: nothing to fit")
    scale = torch.ones(F, dtype=target.dtype, device=target.device) if scale is None else scale
    threads = torch.get_num_threads()
    if target.device.type == "cpu":
        torch.set_num_threads(1)  # small tensors: a second thread only waits (and spins on a busy machine)
    try:
        return _fit(body, target, valid, width, height, scale, silhouette, cfg, shape, progress)
    finally:
        torch.set_num_threads(threads)


def _fit(body, target, valid, width, height, scale, silhouette, cfg, shape, progress) -> BodyFitResult:
    F = target.shape[0]
    fitter = BodyFitter(body, target, valid.to(target.device), scale, width, height, cfg, silhouette, shape)
    stats: dict = {"frames": F, "valid_frames": int(valid.sum())}
    from tqdm.auto import tqdm  # noqa: PLC0415

    stages = [("global", cfg.global_iterations), ("torso", cfg.torso_iterations), ("limbs", cfg.limb_iterations)]
    bar = tqdm(total=sum(n for _, n in stages), desc="track: body fit", unit="it", disable=not progress)
    for name, iters in stages:
        if iters <= 0:
            continue
        params = fitter.stage_parameters(name)
        opt = torch.optim.Adam(params, lr=cfg.lr)
        mask = fitter.pose_mask(name)
        t0 = time.perf_counter()
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            loss, terms = fitter.energy(name)
            loss.backward()
            if mask is not None and fitter.pose.grad is not None:
                fitter.pose.grad[:, ~mask] = 0.0
            opt.step()
            with torch.no_grad():
                fitter.shape.clamp_(fitter.low, fitter.high)
            bar.update(1)
        seconds = time.perf_counter() - t0
        stats[name] = {"iterations": iters, "seconds": round(seconds, 3),
                       "final_losses": {k: round(float(v.detach()), 4) for k, v in terms.items()}}
    bar.close()
    return fitter.result(stats)

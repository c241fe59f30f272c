"""Per-frame tracking for driving: expression + head pose, one frame at a time.

Identity ``shape``, ``focal`` and the per-subject ``landmark_offset`` are fixed (estimated
from the driver's own frames by :func:`avatar.tracking.identity.estimate_identity`, or the
mean face and a guessed focal). Each frame runs a few Levenberg-Marquardt steps,
warm-started from the previous frame, on the linear landmark model of
:mod:`.landmark_model`: the landmark rows of the blendshape basis are precomputed, so a step
is a ``[2L, E+6]`` Jacobian and a ``(E+6)``-square solve. A step is kept only when it lowers
the energy (else the damping grows and the step is tried again), so a frame cannot throw the
head away, as plain Gauss-Newton steps from a far start did (a head turned 150 degrees,
10 m away).

Unknowns per step: expression ``psi [E]`` (projected to the profile's bounds, 0..1 for ICT,
after each step), a rotation
increment ``dw [3]`` applied on the left (``R <- exp(dw) R``) and the translation ``t [3]``.
Residuals are IRLS-weighted (Geman-McClure, as the batched fitter), with contour landmarks
weighted by their frontality and iris ring points unused (iris centres too for a model
without gaze blendshapes). Regularisers: an L1 push of ``psi`` toward 0 (L2 for signed
coefficients: FLAME's PCA space) and a pull toward the previous frame's expression and
translation, per blendshape: ten times stronger on the mouth, jaw, cheeks and nose than on the
lids, gaze and brows, which move fast (one weak weight for all, the earlier choice, let the
mouth's blendshapes trade frame by frame against the head's turn: docs/experiments.md). The
batched fitter's eye terms apply here too: lid-to-lid offsets that match MediaPipe's
(:data:`.fit.EYE_CLOSURE_PAIRS`, unweighted rows on the expressions only) and no two
antagonist blendshapes active together (:data:`.fit.EXCLUSIVE_EXPRESSIONS`; the product's
gradient, linearised at the current step). The returned translation is the model's own
(:func:`.landmark_model.model_translation`: skinned models turn about their root joint).

Start and recovery: the first frame (and any frame after :meth:`FrameTracker.reset`) first
fits the rigid pose alone (contour points out, a wider robust scale), then everything. After
every frame the state is checked (:meth:`FrameTracker.implausible`: turned away beyond 90 degrees,
behind the camera or metres away, a quarter of the coefficients pinned at 1, landmarks far
off); an implausible frame is fitted again from a fresh start, and if that fails too the
previous frame's state is kept. ``reinitialisations`` and ``rejected`` count both, for the
reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..models.profile import name_mask
from avatar.tracking.embedding import IRIS, view_directions
from .fit import EYE_CLOSURE_PAIRS, antagonist_indices, initial_pose
from .landmark_model import (
    CAMERA_FLIP, GAZE_MAX_PITCH, GAZE_MAX_YAW, IRIS_LEFT, IRIS_RIGHT, LandmarkModel, model_translation,
)


@dataclass
class OnlineConfig:
    iterations: int = 2  # Levenberg-Marquardt steps per frame (warm-started)
    # Then pose-only steps with the expression held, contour points out and the rigid start's wider
    # robust scale: the joint steps leave the head turned short of where the landmarks put it
    # (synthetic captures: 3.4 degrees median from the truth with 3 joint steps, 3.0 with 2 + 1).
    pose_iterations: int = 1
    first_iterations: int = 15  # on the first frame (or after a reset), after the rigid start
    rigid_iterations: int = 10  # pose-only steps that start a first frame
    rigid_robust_factor: float = 5.0  # wider robust scale for the rigid start (the pose starts far off)
    robust_px: float = 4.0
    # The iris centres (the gaze's only evidence; two points against hundreds that move the lids):
    # their rows' weight and their own robust scale (None: robust_px).
    w_iris: float = 1.0
    iris_robust_px: float | None = None
    w_expression: float = 2.0  # L1 weight (px^2 per unit coefficient)
    # Pull toward the previous frame's expression, px^2 per unit^2 change. The lower face's
    # blendshapes (fnmatch patterns on the names) get ``w_temporal_slow``; the rest (lids, gaze,
    # brows: a blink lasts 3-5 frames; every blendshape of a model with other names, e.g.
    # FLAME's PCA) ``w_temporal_expression``. w_temporal_slow None: one weight for all.
    w_temporal_expression: float = 50.0
    slow_expressions: tuple[str, ...] = ("jaw*", "mouth*", "cheek*", "nose*")
    w_temporal_slow: float | None = 500.0
    w_temporal_translation: float = 1e4  # px^2 per m^2 ... scaled by (focal/depth)^2 inside
    w_eye_closure: float = 1.0  # lid-to-lid offsets vs MediaPipe's (one frame: noisier than the batched fit; 0: off)
    w_exclusive: float = 100.0  # antagonist blendshapes active together (as the batched fitter; 0: off)
    damping: float = 1e-2  # initial Levenberg-Marquardt damping (relative to the diagonal)
    head_width_m: float = 0.15
    # Plausibility (checked after every frame; an implausible state re-initialises):
    max_rotation_deg: float = 90.0  # turned further away from facing the camera (a roll in the image aside)
    depth_range_m: tuple[float, float] = (0.05, 3.0)  # head centre distance in front of the camera
    max_pinned: float = 0.25  # share of expression coefficients at their upper bound
    max_error_iod: float = 0.25  # median landmark error over the inter-ocular distance


class FrameTracker:
    """Track one frame at a time: ``tracker(landmarks_px [478, 2])`` -> ``(expression [E], rotation [3], translation [3])``.

    Tensors follow ``lm``'s device and dtype (float64 recommended for the normal equations).
    ``landmark_offset [L, 3]``: per-subject model-space offsets (``FitResult.landmark_offset``).
    """

    def __init__(self, lm: LandmarkModel, shape: Tensor, focal: float, width: int, height: int,
                 cfg: OnlineConfig | None = None, landmark_offset: Tensor | None = None):
        self.cfg = cfg or OnlineConfig()
        self.lm = lm
        dt, dev = lm.template.dtype, lm.template.device
        L, E = lm.template.shape[0], lm.num_expression
        self.exprdirs = lm.exprdirs  # [L, 3, E]
        self.focal, self.width, self.height = float(focal), width, height
        self.principal = torch.tensor([width / 2, height / 2], dtype=dt, device=dev)
        self.flip = torch.tensor(CAMERA_FLIP, dtype=dt, device=dev)
        use = torch.ones(L, dtype=torch.bool, device=dev)
        use[[i for i in IRIS if i not in (IRIS_RIGHT, IRIS_LEFT)]] = False
        if lm.gaze is None:  # the iris centres do not turn: not modelled
            use[[IRIS_RIGHT, IRIS_LEFT]] = False
        self.use = use
        self.iris_rows = torch.zeros(L, dtype=torch.bool, device=dev)
        self.iris_rows[[IRIS_RIGHT, IRIS_LEFT]] = True
        self.signed = lm.signed_expressions
        self.low, self.high = lm.expression_bounds
        self.contour = lm.contour.to(dev)
        self.view_offsets = None if lm.view_offsets is None else lm.view_offsets.to(dev, dt)
        self.iris = torch.tensor([IRIS_RIGHT, IRIS_LEFT], device=dev)
        self.pairs = torch.tensor(EYE_CLOSURE_PAIRS, device=dev).T  # [2, P]
        self.exclusive = antagonist_indices(lm, dev)  # [2, K] or None
        # Per-blendshape pull toward the previous frame ([E]): the lower face's its own.
        w_temporal = torch.full((E,), float(self.cfg.w_temporal_expression), dtype=dt, device=dev)
        if self.cfg.w_temporal_slow is not None:
            slow = torch.tensor(name_mask(lm.expression_names, self.cfg.slow_expressions), dtype=torch.bool, device=dev)
            w_temporal[slow] = float(self.cfg.w_temporal_slow)
        self.w_temporal = w_temporal
        self.ey = torch.tensor([0.0, 1.0, 0.0], dtype=dt, device=dev)
        # d(yaw)/d(psi) and d(pitch)/d(psi) per eye as [2, 1, E] selectors (see gaze_angles);
        # zeros for a model without gaze blendshapes.
        self.yaw_sel = torch.zeros(2, 1, E, dtype=dt, device=dev)
        self.pitch_sel = torch.zeros(2, 1, E, dtype=dt, device=dev)
        g = lm.gaze
        for eye in range(2 if g is not None else 0):  # 0: right, 1: left
            sign_in = 1.0 if eye == 0 else -1.0  # looking in turns the right eye toward +x
            self.yaw_sel[eye, 0, lm.index(g.look_in[eye])] = sign_in
            self.yaw_sel[eye, 0, lm.index(g.look_out[eye])] = -sign_in
            self.pitch_sel[eye, 0, lm.index(g.look_down[eye])] = 1.0
            self.pitch_sel[eye, 0, lm.index(g.look_up[eye])] = -1.0
        self.set_identity(shape, focal, landmark_offset)
        self.reinitialisations = 0  # frames that were fitted again from a fresh start
        self.rejected = 0  # frames whose fit stayed implausible (the previous state was kept)
        self.reset()

    @classmethod
    def mean_face(cls, lm: LandmarkModel, width: int, height: int, fov_deg: float = 40.0,
                  cfg: OnlineConfig | None = None) -> "FrameTracker":
        """A tracker with the mean face and a focal length from a guessed horizontal field of view
        (until the driver's own identity is known, or for comparison)."""
        zeros = torch.zeros(lm.num_shape, dtype=lm.template.dtype, device=lm.template.device)
        return cls(lm, zeros, 0.5 * width / math.tan(math.radians(fov_deg) / 2), width, height, cfg)

    def set_identity(self, shape: Tensor, focal: float | None = None, landmark_offset: Tensor | None = None) -> None:
        """Use this identity (and focal, offsets) from the next frame on; the pose is kept."""
        lm = self.lm
        dt, dev = lm.template.dtype, lm.template.device
        shape = shape.to(dev, dt)
        self.shape = shape
        base = lm.template + torch.einsum("lks,s->lk", lm.shapedirs, shape)  # [L, 3]
        if landmark_offset is not None:
            base = base + landmark_offset.to(dev, dt)
        self.base = base
        self.eye_centres = lm.eye_template + torch.einsum("eks,s->ek", lm.eye_shapedirs, shape)  # [2, 3]
        corners = lm.corner_template + torch.einsum("lcks,s->lck", lm.corner_shapedirs, shape)
        self.normals = torch.nn.functional.normalize(
            torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), dim=-1)
        if focal is not None:
            self.focal = float(focal)

    def reset(self) -> None:
        """Forget the previous frame (next call re-initialises the pose)."""
        self.expression = None
        self.R = None
        self.t = None
        self.gaze = None  # [2, 2] the last frame's eyeball turns (read_gaze), None before one

    def _model_points(self, psi: Tensor) -> tuple[Tensor, Tensor]:
        """Model-space points ``[L, 3]``, iris centres turned by the gaze, and the iris
        centres' Jacobian ``[2, 3, E]`` w.r.t. ``psi`` (the other rows' is ``exprdirs``).
        The points slide with the current view direction (the embedding's view offsets)."""
        p = self.base + self.exprdirs @ psi
        if self.view_offsets is not None:
            p = p + self.view_offsets @ view_directions(self.R, -self.t)  # camera at the origin
        # Ry(yaw) @ Rx(pitch) per eye, written out (as gaze_rotations, fewer small ops).
        yaw, pitch = self.yaw_sel[:, 0] @ psi * GAZE_MAX_YAW, self.pitch_sel[:, 0] @ psi * GAZE_MAX_PITCH
        cy, sy, cp, sp = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin()
        zero = torch.zeros_like(cy)
        Rg = torch.stack((cy, sy * sp, sy * cp, zero, cp, -sp, -sy, cy * sp, cy * cp), -1).view(2, 3, 3)
        c = self.eye_centres
        q = c + torch.einsum("eij,ej->ei", Rg, p[self.iris] - c)  # [2, 3]
        d_yaw = torch.linalg.cross(self.ey.expand_as(q), q - c) * GAZE_MAX_YAW
        d_pitch = torch.linalg.cross(Rg[:, :, 0], q - c) * GAZE_MAX_PITCH  # axis Ry e_x = Rg e_x
        J_iris = torch.einsum("ek,egm->ekm", d_yaw, self.yaw_sel) + torch.einsum("ek,egm->ekm", d_pitch, self.pitch_sel)
        p = p.index_put((self.iris,), q)
        return p, J_iris.squeeze(-2) if J_iris.dim() == 4 else J_iris

    def _project(self, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """World points, camera points and pixels ``[L, 2]`` of model points ``p`` at the current pose."""
        world = p @ self.R.T + self.t  # [L, 3]
        cam = world * self.flip
        px = self.focal * cam[:, :2] / cam[:, 2:].clamp_min(1e-4) + self.principal
        return world, cam, px

    def _system(self, target: Tensor, prev: tuple[Tensor, Tensor] | None, w_t: float, rigid: bool,
                linearise: bool = True):
        """Energy at the current state and its Gauss-Newton system ``(cost, A, b)``; ``A`` holds the
        priors' curvature, not the damping. ``rigid``: the 6 pose unknowns only, contour out.
        ``linearise=False``: the energy alone (``A``, ``b`` None), for a step no other step follows."""
        cfg = self.cfg
        psi = self.expression
        E = psi.shape[0]
        p, J_iris = self._model_points(psi)
        world, cam, px = self._project(p)
        self._px = px  # the projection at this state (the plausibility check reads the accepted one)
        res = px - target
        # Geman-McClure: rho(sq) = s2 sq / (sq + s2); IRLS weight rho'(sq) = (s2 / (sq + s2))^2.
        sq = res.pow(2).sum(-1)
        s2 = (cfg.robust_px * (cfg.rigid_robust_factor if rigid else 1.0)) ** 2
        normal = self.normals @ self.R.T * self.flip
        cos = (normal * torch.nn.functional.normalize(-cam, dim=-1)).sum(-1).clamp_min(0)
        base_w = torch.where(self.contour, torch.zeros_like(cos) if rigid else cos**2, self.use.to(cos))
        if not rigid and (cfg.w_iris != 1.0 or cfg.iris_robust_px is not None):
            base_w = torch.where(self.iris_rows, base_w * cfg.w_iris, base_w)
            if cfg.iris_robust_px is not None:
                s2 = torch.where(self.iris_rows, torch.full_like(sq, cfg.iris_robust_px**2), torch.full_like(sq, s2))
        cost = 0.5 * (base_w * s2 * sq / (sq + s2)).sum()
        if not rigid:  # the priors' energy
            if self.signed:  # L2 on a signed (PCA) psi
                cost = cost + 0.5 * cfg.w_expression * psi.pow(2).sum()
            else:
                cost = cost + 0.5 * cfg.w_expression * psi.sum()  # L1 on psi >= 0
            if prev is not None:  # pull toward the previous frame's expression and translation
                psi_prev, t_prev = prev
                cost = cost + 0.5 * ((self.w_temporal * (psi - psi_prev).pow(2)).sum()
                                     + w_t * (self.t - t_prev).pow(2).sum())
            if cfg.w_eye_closure > 0:  # lid-to-lid offsets against MediaPipe's
                up, lo = self.pairs
                r_gap = ((px[up] - px[lo]) - (target[up] - target[lo])).reshape(-1)
                cost = cost + 0.5 * cfg.w_eye_closure * r_gap.pow(2).sum()
            if self.exclusive is not None and cfg.w_exclusive > 0:
                ia, ib = self.exclusive
                cost = cost + 0.5 * cfg.w_exclusive * (psi[ia] * psi[ib]).sum()
        if not linearise:
            return cost, None, None
        # d px / d world: [L, 2, 3] = dproj/dcam @ flip
        z = cam[:, 2].clamp_min(1e-4)
        dproj = torch.zeros(p.shape[0], 2, 3, dtype=p.dtype, device=p.device)
        dproj[:, 0, 0] = self.focal / z
        dproj[:, 1, 1] = self.focal / z
        dproj[:, :, 2] = -(px - self.principal) / z[:, None]
        D = dproj * self.flip
        rp = world - self.t  # R p
        skew = torch.zeros(p.shape[0], 3, 3, dtype=p.dtype, device=p.device)
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -rp[:, 2], rp[:, 1], -rp[:, 0]
        skew = skew - skew.transpose(1, 2)  # [Rp]x
        J_w = -D @ skew  # d px / d dw (left perturbation)
        if rigid:
            J3 = torch.cat((J_w, D), dim=2)  # [L, 2, 6]
        else:
            DR = D @ self.R  # [L, 2, 3]
            J_psi = (DR[..., None] * self.exprdirs[:, None]).sum(2)  # [L, 2, E]
            J_psi[self.iris] = torch.bmm(DR[self.iris], J_iris)
            J3 = torch.cat((J_psi, J_w, D), dim=2)  # [L, 2, E + 6]
        n = J3.shape[-1]
        J = J3.reshape(-1, n)
        w2 = (base_w * (s2 / (sq + s2)) ** 2).repeat_interleave(2)
        A = J.T @ (J * w2[:, None])
        b = -(J.T @ (w2 * res.reshape(-1)))
        if rigid:
            return cost, A, b
        reg = torch.zeros(n, dtype=p.dtype, device=p.device)
        if prev is not None:
            reg[:E] += self.w_temporal
            reg[E + 3 :] += w_t
            b[:E] -= self.w_temporal * (psi - psi_prev)
            b[E + 3 :] -= w_t * (self.t - t_prev)
        if self.signed:
            reg[:E] += cfg.w_expression
            b[:E] -= cfg.w_expression * psi
        else:
            b[:E] -= cfg.w_expression * 0.5
        if cfg.w_eye_closure > 0:  # rows J_upper - J_lower, expressions only (how open, not where)
            J_gap = torch.nn.functional.pad((J3[up, :, :E] - J3[lo, :, :E]).reshape(-1, E), (0, 6))
            A = A + cfg.w_eye_closure * (J_gap.T @ J_gap)
            b = b - cfg.w_eye_closure * (J_gap.T @ r_gap)
        if self.exclusive is not None and cfg.w_exclusive > 0:  # d(a b) = (b, a), halved as the L1 term
            b[:E] = b[:E].index_add(0, ia, psi[ib], alpha=-0.5 * cfg.w_exclusive)  # (pairs share blendshapes:
            b[:E] = b[:E].index_add(0, ib, psi[ia], alpha=-0.5 * cfg.w_exclusive)  # accumulate)
        return cost, A + torch.diag(reg), b

    def _solve(self, target: Tensor, iterations: int, prev, w_t: float, rigid: bool) -> None:
        """Levenberg-Marquardt: a step is kept when it lowers the energy, else the damping grows.
        The last step's state is only scored, not linearised (no step follows it)."""
        E = self.lm.num_expression
        lam = self.cfg.damping
        cost, A, b = self._system(target, prev, w_t, rigid)
        px = self._px
        for it in range(iterations):
            delta = torch.linalg.solve(A + torch.diag(lam * (A.diagonal() + 1.0)), b)
            saved = (self.expression, self.R, self.t)
            if not rigid:
                self.expression = (self.expression + delta[:E]).clamp(self.low, self.high)
                delta = delta[E:]
            self.R = axis_angle_to_matrix(delta[None, :3])[0] @ self.R
            self.t = self.t + delta[3:]
            new_cost, A_new, b_new = self._system(target, prev, w_t, rigid, linearise=it < iterations - 1)
            if bool(torch.isfinite(new_cost)) and new_cost <= cost:
                cost, A, b, px = new_cost, A_new, b_new, self._px
                lam = max(lam / 3.0, 1e-6)
            else:  # reject: back to the kept state, damp harder
                self.expression, self.R, self.t = saved
                self._px = px
                lam *= 10.0

    def _start(self, target: Tensor) -> None:
        """A fresh start on this frame: pose from the landmarks' spread, rigid fit, then everything."""
        rot, trans = initial_pose(target[None], torch.ones(1, dtype=torch.bool, device=target.device),
                                  self.focal, self.width, self.height, self.cfg.head_width_m, self.base)
        self.R = axis_angle_to_matrix(rot)[0]
        self.t = trans[0]
        self.expression = target.new_zeros(self.lm.num_expression)
        self._solve(target, self.cfg.rigid_iterations, None, 0.0, rigid=True)
        self._solve(target, self.cfg.first_iterations, None, 0.0, rigid=False)

    def implausible(self, target: Tensor, px: Tensor | None = None) -> str | None:
        """Why the current state cannot be a face (a short reason), or None when it can.
        ``px``: the state's projected landmarks when already known."""
        cfg = self.cfg
        # How far the face turns away from the camera: its forward axis against the direction to
        # the camera. A turn about that direction (a face rolled in the image, a sideways phone)
        # is not turning away.
        to_camera = torch.nn.functional.normalize(-self.t, dim=0)
        angle = math.degrees(math.acos(max(-1.0, min(1.0, float(self.R[:, 2] @ to_camera)))))
        if angle > cfg.max_rotation_deg:
            return f"head turned {angle:.0f} degrees from the camera"
        depth = float(-self.t[2])
        lo, hi = cfg.depth_range_m
        if not lo <= depth <= hi:
            return f"head {depth:.2f} m in front of the camera"
        pinned = float((self.expression >= self.high - 1e-3).to(self.t.dtype).mean())
        if pinned > cfg.max_pinned:
            return f"{pinned:.0%} of the expression coefficients pinned at {self.high:g}"
        if px is None:
            px = self._project(self._model_points(self.expression)[0])[2]
        iod = float((target[33] + target[133] - target[362] - target[263]).norm() / 2)
        err = float((px - target)[self.use].norm(dim=-1).median())
        if err > cfg.max_error_iod * max(iod, 1.0):
            return f"landmarks {err:.1f} px off (inter-ocular distance {iod:.0f} px)"
        return None

    @torch.inference_mode()
    def __call__(self, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Fit one frame's landmarks ``target [478, 2]`` (pixels); returns ``(expression [E], rotation [3], translation [3])``
        with the translation the model's own (:func:`.landmark_model.model_translation`)."""
        cfg = self.cfg
        target = target.to(self.base)
        if self.R is None:
            self._start(target)
            kept = None
        else:
            kept = (self.expression, self.R, self.t)
            w_t = cfg.w_temporal_translation * (self.focal / float(-self.t[2])) ** 2 / 1e4
            self._solve(target, cfg.iterations, (self.expression.clone(), self.t.clone()), w_t, rigid=False)
            if cfg.pose_iterations:
                self._solve(target, cfg.pose_iterations, None, 0.0, rigid=True)
        if self.implausible(target, self._px) is not None:
            self.reinitialisations += 1
            self._start(target)
            if self.implausible(target, self._px) is not None:
                self.rejected += 1
                if kept is not None:
                    self.expression, self.R, self.t = kept
                else:
                    self.reset()
                    raise ImplausibleFrame("no plausible head pose fits this frame's landmarks")
        self.gaze = self.read_gaze(target) if self.lm.gaze is not None else None
        rotation = matrix_to_axis_angle(self.R)
        if self.lm.root_template is None:
            return self.expression.clone(), rotation, self.t.clone()
        t = model_translation(self.lm, self.shape, self.expression[None], rotation[None], self.t[None])[0]
        return self.expression.clone(), rotation, t


    def read_gaze(self, target: Tensor) -> Tensor:
        """``[2, 2]`` (yaw, pitch) radians per eye (right, left): the turn of each eyeball about its
        centre, in the head's frame (+yaw toward the model's +x, +pitch down), that puts the model's
        iris centre on MediaPipe's in ``target [478, 2]``, at the current head pose
        (:func:`avatar.tracking.gaze.gaze_from_rays`). Read from the two iris points alone, after the
        fit: the fit's gaze blendshapes also move the lids, and its robust loss and priors hold
        them at about half the irises' travel."""
        from .gaze import gaze_from_rays  # noqa: PLC0415

        p = self.base[self.iris] + self.exprdirs[self.iris] @ self.expression  # [2, 3] irises looking ahead
        if self.view_offsets is not None:
            p = p + self.view_offsets[self.iris] @ view_directions(self.R, -self.t)
        # The camera sits at the world's origin; its ray through each iris pixel, in model space.
        pix = (target[self.iris] - self.principal) / self.focal
        ray_cam = torch.cat((pix, torch.ones_like(pix[:, :1])), -1)
        directions = (ray_cam * self.flip) @ self.R  # R^T applied to each row
        origins = (-self.t @ self.R).expand(2, 3)
        return gaze_from_rays(self.eye_centres[None], p[None], origins[None], directions[None])[0]


class ImplausibleFrame(ValueError):
    """The first frame's landmarks admit no plausible head pose (treat the frame as faceless)."""

"""Per-frame tracking for live driving: expression + head pose, one frame at a time.

Identity ``shape`` and ``focal`` are fixed (from a batched fit, or zeros / a guess). Each
frame runs a few damped Gauss-Newton steps, warm-started from the previous frame, on the
linear landmark model of :mod:`.landmark_model`: the landmark rows of the blendshape basis
are precomputed, so a step is a ``[2L, E+6]`` Jacobian and a ``(E+6)``-square solve.

Unknowns per step: expression ``psi [E]`` (projected to 0..1 after each step), a rotation
increment ``dw [3]`` applied on the left (``R <- exp(dw) R``) and the translation ``t [3]``.
Residuals are IRLS-weighted (Geman-McClure, as the batched fitter), with contour landmarks
weighted by their frontality and iris ring points unused. Regularisers: an L1 push of
``psi`` toward 0 and a pull toward the previous frame's expression and translation. The
batched fitter's eye terms apply here too: lid-to-lid offsets that match MediaPipe's
(:data:`.fit.EYE_CLOSURE_PAIRS`, unweighted rows on the expressions only) and no two
antagonist blendshapes active together (:data:`.fit.EXCLUSIVE_EXPRESSIONS`; the product's
gradient, linearised at the current step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..landmarks.embedding import IRIS, view_directions
from .fit import EYE_CLOSURE_PAIRS, antagonist_indices, initial_pose
from .landmark_model import (
    CAMERA_FLIP, GAZE_MAX_PITCH, GAZE_MAX_YAW, IRIS_LEFT, IRIS_RIGHT, LandmarkModel,
)


@dataclass
class OnlineConfig:
    iterations: int = 3  # Gauss-Newton steps per frame (warm-started)
    first_iterations: int = 15  # on the first frame (or after a lost face)
    robust_px: float = 4.0
    w_expression: float = 2.0  # L1 weight (px^2 per unit coefficient)
    w_temporal_expression: float = 50.0  # px^2 per unit^2 change from the previous frame
    w_temporal_translation: float = 1e4  # px^2 per m^2 ... scaled by (focal/depth)^2 inside
    w_eye_closure: float = 1.0  # lid-to-lid offsets vs MediaPipe's (one frame: noisier than the batched fit; 0: off)
    w_exclusive: float = 100.0  # antagonist blendshapes active together (as the batched fitter; 0: off)
    damping: float = 1e-2
    head_width_m: float = 0.15


class FrameTracker:
    """Track one frame at a time: ``tracker(landmarks_px [478, 2])`` -> ``(expression [E], rotation [3], translation [3])``.

    Tensors follow ``lm``'s device and dtype (float64 recommended for the normal equations).
    """

    def __init__(self, lm: LandmarkModel, shape: Tensor, focal: float, width: int, height: int,
                 cfg: OnlineConfig | None = None):
        self.cfg = cfg or OnlineConfig()
        self.lm = lm
        dt, dev = lm.template.dtype, lm.template.device
        shape = shape.to(dev, dt)
        L, E = lm.template.shape[0], lm.num_expression
        self.base = lm.template + torch.einsum("lks,s->lk", lm.shapedirs, shape)  # [L, 3]
        self.exprdirs = lm.exprdirs  # [L, 3, E]
        self.eye_centres = lm.eye_template + torch.einsum("eks,s->ek", lm.eye_shapedirs, shape)  # [2, 3]
        self.corners = lm.corner_template + torch.einsum("lcks,s->lck", lm.corner_shapedirs, shape)
        self.focal, self.width, self.height = float(focal), width, height
        self.principal = torch.tensor([width / 2, height / 2], dtype=dt, device=dev)
        self.flip = torch.tensor(CAMERA_FLIP, dtype=dt, device=dev)
        use = torch.ones(L, dtype=torch.bool, device=dev)
        use[[i for i in IRIS if i not in (IRIS_RIGHT, IRIS_LEFT)]] = False
        self.use = use
        self.contour = lm.contour.to(dev)
        self.view_offsets = None if lm.view_offsets is None else lm.view_offsets.to(dev, dt)
        self.iris = torch.tensor([IRIS_RIGHT, IRIS_LEFT], device=dev)
        self.pairs = torch.tensor(EYE_CLOSURE_PAIRS, device=dev).T  # [2, P]
        self.exclusive = antagonist_indices(lm, dev)  # [2, K] or None
        self.ey = torch.tensor([0.0, 1.0, 0.0], dtype=dt, device=dev)
        # d(yaw)/d(psi) and d(pitch)/d(psi) per eye as [2, 1, E] selectors (see gaze_angles).
        self.yaw_sel = torch.zeros(2, 1, E, dtype=dt, device=dev)
        self.pitch_sel = torch.zeros(2, 1, E, dtype=dt, device=dev)
        for eye, side in enumerate("RL"):
            sign_in = 1.0 if side == "R" else -1.0  # looking in turns the right eye toward +x
            self.yaw_sel[eye, 0, lm.index(f"eyeLookIn_{side}")] = sign_in
            self.yaw_sel[eye, 0, lm.index(f"eyeLookOut_{side}")] = -sign_in
            self.pitch_sel[eye, 0, lm.index(f"eyeLookDown_{side}")] = 1.0
            self.pitch_sel[eye, 0, lm.index(f"eyeLookUp_{side}")] = -1.0
        corners = self.corners
        self.normals = torch.nn.functional.normalize(
            torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), dim=-1)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (next call re-initialises the pose)."""
        self.expression = None
        self.R = None
        self.t = None

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

    def _init_pose(self, target: Tensor) -> None:
        rot, trans = initial_pose(target[None], torch.ones(1, dtype=torch.bool, device=target.device),
                                  self.focal, self.width, self.height, self.cfg.head_width_m)
        self.R = axis_angle_to_matrix(rot)[0]
        self.t = trans[0]
        self.expression = target.new_zeros(self.lm.num_expression)

    @torch.inference_mode()
    def __call__(self, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Fit one frame's landmarks ``target [478, 2]`` (pixels); returns ``(expression [E], rotation [3], translation [3])``."""
        cfg = self.cfg
        target = target.to(self.base)
        first = self.R is None
        if first:
            self._init_pose(target)
        psi_prev, t_prev = self.expression.clone(), self.t.clone()
        E = psi_prev.shape[0]
        depth = float(-self.t[2])
        w_t = cfg.w_temporal_translation * (self.focal / depth) ** 2 / 1e4
        for _ in range(cfg.first_iterations if first else cfg.iterations):
            p, J_iris = self._model_points(self.expression)
            world = p @ self.R.T + self.t  # [L, 3]
            cam = world * self.flip
            z = cam[:, 2].clamp_min(1e-4)
            px = self.focal * cam[:, :2] / z[:, None] + self.principal
            r = (px - target).reshape(-1)  # [2L]
            # d px / d world: [L, 2, 3] = dproj/dcam @ flip
            dproj = torch.zeros(p.shape[0], 2, 3, dtype=p.dtype, device=p.device)
            dproj[:, 0, 0] = self.focal / z
            dproj[:, 1, 1] = self.focal / z
            dproj[:, :, 2] = -(px - self.principal) / z[:, None]
            D = dproj * self.flip
            DR = D @ self.R  # [L, 2, 3]
            J_psi = (DR[..., None] * self.exprdirs[:, None]).sum(2)  # [L, 2, E]
            J_psi[self.iris] = torch.bmm(DR[self.iris], J_iris)
            rp = world - self.t  # R p
            skew = torch.zeros(p.shape[0], 3, 3, dtype=p.dtype, device=p.device)
            skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -rp[:, 2], rp[:, 1], -rp[:, 0]
            skew = skew - skew.transpose(1, 2)  # [Rp]x
            J_w = -D @ skew  # d px / d dw (left perturbation)
            J3 = torch.cat((J_psi, J_w, D), dim=2)  # [L, 2, E + 6]
            J = J3.reshape(-1, E + 6)
            # IRLS weights.
            sq = (px - target).pow(2).sum(-1)
            s2 = cfg.robust_px**2
            w = (s2 / (sq + s2)) ** 2 * self.use
            n = self.normals @ self.R.T * self.flip
            cos = (n * torch.nn.functional.normalize(-cam, dim=-1)).sum(-1).clamp_min(0)
            w = torch.where(self.contour, w * cos**2, w)
            w2 = w.repeat_interleave(2)
            A = J.T @ (J * w2[:, None])
            b = -(J.T @ (w2 * r))
            # Priors: L1 on psi (gradient w_e), pull toward previous psi and t.
            reg = torch.zeros(E + 6, dtype=p.dtype, device=p.device)
            if not first:
                reg[:E] += cfg.w_temporal_expression
                reg[E + 3 :] += w_t
                b[:E] -= cfg.w_temporal_expression * (self.expression - psi_prev)
                b[E + 3 :] -= w_t * (self.t - t_prev)
            b[:E] -= cfg.w_expression * 0.5
            if cfg.w_eye_closure > 0:  # lid-to-lid offsets: rows J_upper - J_lower, expressions only
                up, lo = self.pairs  # (the offsets say how open the eyes are, not where the head is)
                r_gap = ((px[up] - px[lo]) - (target[up] - target[lo])).reshape(-1)
                J_gap = (J3[up, :, :E] - J3[lo, :, :E]).reshape(-1, E)
                J_gap = torch.nn.functional.pad(J_gap, (0, 6))
                A = A + cfg.w_eye_closure * (J_gap.T @ J_gap)
                b = b - cfg.w_eye_closure * (J_gap.T @ r_gap)
            if self.exclusive is not None and cfg.w_exclusive > 0:  # d(a b) = (b, a), halved as the L1 term
                ia, ib = self.exclusive  # (a blendshape may sit in several pairs: accumulate)
                b[:E] = b[:E].index_add(0, ia, self.expression[ib], alpha=-0.5 * cfg.w_exclusive)
                b[:E] = b[:E].index_add(0, ib, self.expression[ia], alpha=-0.5 * cfg.w_exclusive)
            A = A + torch.diag(reg + cfg.damping * (A.diagonal() + 1.0))
            delta = torch.linalg.solve(A, b)
            self.expression = (self.expression + delta[:E]).clamp(0.0, 1.0)
            self.R = axis_angle_to_matrix(delta[None, E : E + 3])[0] @ self.R
            self.t = self.t + delta[E + 3 :]
        return self.expression.clone(), matrix_to_axis_angle(self.R), self.t.clone()

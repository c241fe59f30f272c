"""A dense, obviously-correct compositing reference: every pixel against every Gaussian.

O(pixels x Gaussians) time and memory: for tests and for scale in benchmarks, not for use.
Shares the projection with the torch backend; compositing follows the same gsplat rules
written directly (no tiles, no exponent trick, no hand-written backward).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .torch_backend import ALPHA_MAX, ALPHA_THRESHOLD, TRANSMITTANCE_MIN, project_gaussians


def rasterize_dense(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, eps2d: float = 0.3,
    near_plane: float = 0.01, backgrounds: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(colors [C, H, W, D], alphas [C, H, W, 1])`` for colours ``[N, D]``, autograd only."""
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                             near_plane=near_plane, eps2d=eps2d)
    C, D = viewmats.shape[0], colors.shape[-1]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=means.device, dtype=means.dtype) + 0.5,
        torch.arange(width, device=means.device, dtype=means.dtype) + 0.5,
        indexing="ij",
    )
    out, acc = [], []
    for c in range(C):
        keep = (proj["radii"][c] > 0).all(-1)
        order = torch.argsort(proj["depths"][c].masked_fill(~keep, float("inf")))[: int(keep.sum())]
        m, q = proj["means2d"][c, order], proj["conics"][c, order]
        dx = m[:, 0] - xs.reshape(-1, 1)  # [HW, n]
        dy = m[:, 1] - ys.reshape(-1, 1)
        sigma = 0.5 * (q[:, 0] * dx * dx + q[:, 2] * dy * dy) + q[:, 1] * dx * dy
        alpha = (proj["opacities"][c, order] * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
        alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
        after = torch.cumprod(1 - alpha, dim=-1)
        before = torch.cat((torch.ones_like(after[:, :1]), after[:, :-1]), dim=-1)
        w = torch.where(after > TRANSMITTANCE_MIN, alpha * before, torch.zeros_like(alpha))
        rgb = w @ colors[order]
        a = w.sum(-1, keepdim=True)
        if backgrounds is not None:
            rgb = rgb + (1 - a) * backgrounds[c]
        out.append(rgb.reshape(height, width, D))
        acc.append(a.reshape(height, width, 1))
    return torch.stack(out), torch.stack(acc)

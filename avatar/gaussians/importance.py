"""How much each Gaussian shows: the blending weight it receives, summed over pixels and views.

For a pixel, the rasterizer composites ``sum_i w_i c_i`` with ``w_i = T_i alpha_i``; the
gradient of the image's sum with respect to a per-Gaussian colour is therefore exactly
``sum_pixels w_i``, which one backward pass gives for all Gaussians at once. Gaussians that
are never seen (hidden behind others, transparent, off the views) score zero. This ranks
Gaussians for a rendering budget (LightGaussian's "global significance" is the same sum
of hit weights), e.g. a light avatar for live driving on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..render import rasterization


def visibility(views: Iterable[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]], width: int, height: int,
               renderer: dict | None = None) -> Tensor:
    """``[N]`` blending weight per Gaussian summed over ``views``.

    Each view is world Gaussians and a camera: ``(means [N,3], quats [N,4], scales [N,3],
    opacities [N], viewmat [4,4], K [3,3])``, with ``K`` for ``width x height`` pixels.
    """
    total = None
    for means, quats, scales, opacities, viewmat, K in views:
        probe = torch.zeros(means.shape[0], 1, dtype=means.dtype, device=means.device, requires_grad=True)
        img, _, _ = rasterization(means.detach(), quats.detach(), scales.detach(), opacities.detach(), probe,
                                  viewmat[None], K[None], width, height, **(renderer or {}))
        (grad,) = torch.autograd.grad(img.sum(), probe)
        total = grad[:, 0] if total is None else total + grad[:, 0]
    if total is None:
        raise ValueError("visibility needs at least one view")
    return total


def top_k(score: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores, in their original order (stable for rendering)."""
    k = min(int(k), score.shape[0])
    return torch.sort(torch.topk(score, k).indices).values

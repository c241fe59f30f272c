"""Training losses for Gaussian avatars."""

from __future__ import annotations

import torch
from torch import Tensor

from .metrics import ssim


def photometric(pred: Tensor, target: Tensor, ssim_weight: float = 0.4) -> Tensor:
    """``(1 - w) L1 + w (1 - SSIM) / 2`` for ``[..., H, W, C]``: L1 plus D-SSIM, as in 3D Gaussian
    Splatting. At ``w = 0.4`` the ``1 - SSIM`` term has 3DGS's weight, 0.2."""
    l1 = (pred - target).abs().mean()
    if ssim_weight == 0:
        return l1
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim(pred, target).mean()) / 2


def alpha_mask(alpha: Tensor, mask: Tensor) -> Tensor:
    """L1 between rendered opacity ``[..., H, W, 1]`` and the foreground mask ``[..., H, W]``."""
    return (alpha[..., 0] - mask).abs().mean()


def excess(values: Tensor, threshold: float) -> Tensor:
    """Mean of ``max(values - threshold, 0)``: penalises only what goes beyond ``threshold``."""
    return torch.relu(values - threshold).mean()

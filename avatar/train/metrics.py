"""Image quality metrics: PSNR, SSIM (differentiable, used as D-SSIM loss too), LPIPS when available.

Images are ``[..., H, W, C]`` tensors in 0..1 (the layout the rasterizer returns).
SSIM uses the standard 11x11 Gaussian window (sigma 1.5) and constants (0.01 L)^2, (0.03 L)^2
with L = 1, averaged over pixels and channels ("valid" convolution, no padding).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image ``[...]`` (peak 1)."""
    mse = ((pred - target) ** 2).flatten(-3).mean(-1)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def _window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    x = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity per image ``[...]`` for ``[..., H, W, C]`` inputs."""
    batch = pred.shape[:-3]
    h, w, c = pred.shape[-3:]
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    k = _window(window, sigma, c, x)
    conv = functools.partial(F.conv2d, weight=k, groups=c)
    mu_x, mu_y = conv(x), conv(y)
    sxx = conv(x * x) - mu_x * mu_x
    syy = conv(y * y) - mu_y * mu_y
    sxy = conv(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(-1).reshape(batch)


@functools.lru_cache(maxsize=1)
def lpips_model():
    """An LPIPS (AlexNet) model when the ``lpips`` package and its weights are already here, else None.

    LPIPS needs backbone weights from the internet; it is never downloaded by this toolkit.
    """
    try:
        import lpips  # noqa: PLC0415
    except ImportError:
        log.info("LPIPS not computed: the 'lpips' package is not installed")
        return None
    try:
        return lpips.LPIPS(net="alex", verbose=False, pretrained=True).eval()
    except Exception as exc:  # noqa: BLE001 (weights missing, no network, no torchvision ...)
        log.info("LPIPS not computed: %s", exc)
        return None


def lpips(pred: Tensor, target: Tensor) -> Tensor | None:
    """LPIPS per image ``[...]`` or None when unavailable (see :func:`lpips_model`)."""
    model = lpips_model()
    if model is None:
        return None
    h, w, c = pred.shape[-3:]
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2) * 2 - 1
    y = target.reshape(-1, h, w, c).permute(0, 3, 1, 2) * 2 - 1
    model = model.to(x.device)
    with torch.no_grad():
        return model(x, y).reshape(pred.shape[:-3])

"""PSNR / SSIM against hand-computed and scikit-image values; losses behave."""

from __future__ import annotations

import math

import pytest
import torch

from avatar.train.losses import alpha_mask, excess, photometric
from avatar.train.metrics import lpips, psnr, ssim


def test_psnr_by_hand():
    a = torch.zeros(2, 8, 8, 3)
    b = torch.full((2, 8, 8, 3), 0.1)
    torch.testing.assert_close(psnr(a, b), torch.full((2,), 20.0))


def test_ssim_identity_and_against_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 40, 3, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(32, 40, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert abs(float(ssim(x, x)) - 1.0) < 1e-12
    ref = metrics.structural_similarity(
        x.numpy(), y.numpy(), channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )
    # skimage averages over the image minus a border of 5 px, exactly our "valid" window.
    assert abs(float(ssim(x, y)) - ref) < 1e-6


def test_losses():
    img = torch.rand(1, 16, 16, 3, requires_grad=True)
    loss = photometric(img, torch.rand(1, 16, 16, 3))
    loss.backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert float(photometric(img.detach(), img.detach())) < 1e-6
    assert float(alpha_mask(torch.ones(1, 4, 4, 1), torch.ones(1, 4, 4))) == 0
    assert math.isclose(float(excess(torch.tensor([0.0, 1.0, 3.0]), 1.0)), 2 / 3, rel_tol=1e-6)


def test_lpips_is_none_without_the_package(monkeypatch, caplog):
    import logging
    import sys

    from avatar.train import metrics

    monkeypatch.setitem(sys.modules, "lpips", None)  # `import lpips` raises ImportError
    with caplog.at_level(logging.INFO, logger="avatar.train.metrics"):
        assert metrics.lpips_model.__wrapped__() is None
    assert "'lpips' package is not installed" in caplog.text
    monkeypatch.setattr(metrics, "lpips_model", lambda: None)
    assert metrics.lpips(torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8, 3)) is None


def test_lpips_feeds_the_network_nchw_images_in_minus_one_to_one(monkeypatch):
    from avatar.train import metrics

    seen = {}

    class Distance(torch.nn.Module):  # stands in for the AlexNet LPIPS: mean |x - y| per image
        def forward(self, x, y):
            seen["shape"], seen["range"] = tuple(x.shape), (float(x.min()), float(x.max()))
            return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setattr(metrics, "lpips_model", lambda: Distance())
    pred, target = torch.rand(2, 3, 16, 12, 3), torch.rand(2, 3, 16, 12, 3)
    out = lpips(pred, target)
    assert out.shape == (2, 3) and seen["shape"] == (6, 3, 16, 12)
    assert -1.0 <= seen["range"][0] and seen["range"][1] <= 1.0 and seen["range"][0] < -0.9
    torch.testing.assert_close(out, 2 * (pred - target).abs().mean(dim=(-3, -2, -1)))
    assert float(lpips(pred, pred).max()) == 0.0

"""Per-Gaussian visibility (summed blending weights) used to fit an avatar into a budget."""

from __future__ import annotations

import torch

from avatar.gaussians.importance import top_k, visibility
from avatar.render import rasterization

W = H = 32
K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
VIEW = torch.eye(4)


def _scene(depths, opacities, scale=0.2):
    n = len(depths)
    means = torch.tensor([[0.0, 0.0, d] for d in depths])
    quats = torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4)
    scales = torch.full((n, 3), scale)
    return means, quats, scales, torch.tensor(opacities)


def test_visibility_of_one_gaussian_is_its_rendered_alpha():
    means, quats, scales, opac = _scene([2.0], [0.7])
    score = visibility([(means, quats, scales, opac, VIEW, K)], W, H, {"backend": "torch"})
    _, alpha, _ = rasterization(means, quats, scales, opac, torch.ones(1, 3), VIEW[None], K[None], W, H, backend="torch")
    torch.testing.assert_close(score, alpha.sum().reshape(1), rtol=1e-5, atol=1e-5)


def test_visibility_splits_the_alpha_front_to_back_and_sums_over_views():
    means, quats, scales, opac = _scene([2.0, 3.0], [0.9, 0.9])
    view = (means, quats, scales, opac, VIEW, K)
    score = visibility([view], W, H, {"backend": "torch"})
    _, alpha, _ = rasterization(means, quats, scales, opac, torch.ones(2, 3), VIEW[None], K[None], W, H, backend="torch")
    torch.testing.assert_close(score.sum(), alpha.sum(), rtol=1e-5, atol=1e-4)  # weights add up to alpha
    assert score[0] > 3 * score[1]  # the one in front takes most; the one behind shows around it
    torch.testing.assert_close(visibility([view, view], W, H, {"backend": "torch"}), 2 * score)
    assert top_k(score, 1).tolist() == [0]
    assert top_k(torch.tensor([0.1, 0.5, 0.3, 0.9]), 2).tolist() == [1, 3]  # original order kept

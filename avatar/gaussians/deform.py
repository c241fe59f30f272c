"""Expression-conditioned deformation of mesh-bound Gaussians (FlashAvatar-style offsets).

A small MLP maps (positional encoding of each Gaussian's canonical position, the frame's
expression coefficients) to offsets of its local position, rotation and log-scale. The
last layer starts at zero, so a fresh deformer changes nothing and training starts from the
plain mesh-bound avatar.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def positional_encoding(x: Tensor, frequencies: int) -> Tensor:
    """``[..., D]`` -> ``[..., D (1 + 2 frequencies)]``: x, sin(2^k pi x), cos(2^k pi x)."""
    scales = (2.0 ** torch.arange(frequencies, device=x.device, dtype=x.dtype)) * math.pi
    angles = x[..., None] * scales  # [..., D, f]
    return torch.cat((x, torch.sin(angles).flatten(-2), torch.cos(angles).flatten(-2)), dim=-1)


class ExpressionDeformer(nn.Module):
    """MLP offsets ``(d_xyz [B,N,3], d_quat [B,N,4], d_log_scale [B,N,3])`` from positions and a condition.

    Args:
        n_condition: length of the per-frame condition (e.g. 53 ICT expression coefficients).
        hidden, layers: MLP width and number of hidden layers.
        frequencies: positional-encoding octaves of the canonical positions (in ``position_scale`` units).
        position_scale: metres mapped to 1 before encoding (a head is ~0.25 m).
    """

    def __init__(self, n_condition: int, hidden: int = 128, layers: int = 3, frequencies: int = 4,
                 position_scale: float = 0.15):
        super().__init__()
        self.n_condition, self.frequencies, self.position_scale = n_condition, frequencies, position_scale
        self.config = {"n_condition": n_condition, "hidden": hidden, "layers": layers, "frequencies": frequencies,
                       "position_scale": position_scale}
        dims = [3 * (1 + 2 * frequencies) + n_condition] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        out = nn.Linear(dims[-1], 10)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(*blocks, out)

    def forward(self, positions: Tensor, condition: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``positions [N, 3]`` canonical (metres), ``condition [B, n_condition]``."""
        if condition.shape[-1] != self.n_condition:
            raise ValueError(f"deformer expects {self.n_condition} condition values, got {condition.shape[-1]}")
        pe = positional_encoding(positions / self.position_scale, self.frequencies)  # [N, P]
        b, n = condition.shape[0], positions.shape[0]
        x = torch.cat((pe[None].expand(b, -1, -1), condition[:, None, :].expand(-1, n, -1)), dim=-1)
        d = self.mlp(x)
        return d[..., :3], d[..., 3:7], d[..., 7:]

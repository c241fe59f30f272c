"""Expression-conditioned deformation of mesh-bound Gaussians.

Two models of the offsets of each Gaussian's local position, rotation and log-scale:

- ``mlp`` (:class:`ExpressionDeformer`, FlashAvatar-style): a small MLP of (positional encoding
  of the Gaussian's canonical position, the frame's expression coefficients).
- ``linear`` (:class:`BlendshapeDeformer`, after GaussianBlendshapes): one offset per
  blendshape, weighted by that blendshape's coefficient and summed. The per-blendshape offsets
  are an MLP of the canonical position alone, so densification needs no per-Gaussian state and
  an expression beyond the trained ones moves the Gaussians along the same directions as the
  mesh's blendshapes do, instead of wherever an MLP extrapolates to.

Either's last layer starts at zero, so a fresh deformer changes nothing and training starts
from the plain mesh-bound avatar.
"""

from __future__ import annotations

import copy
import logging
import math
import time

import torch
from torch import Tensor, nn

from .config import DEFORM_MODELS

log = logging.getLogger(__name__)

DEFORMER_DTYPES = ("auto", "float32", "bfloat16")  # fix_deformer's choices


def positional_encoding(x: Tensor, frequencies: int) -> Tensor:
    """``[..., D]`` -> ``[..., D (1 + 2 frequencies)]``: x, sin(2^k pi x), cos(2^k pi x)."""
    scales = (2.0 ** torch.arange(frequencies, device=x.device, dtype=x.dtype)) * math.pi
    angles = x[..., None] * scales  # [..., D, f]
    return torch.cat((x, torch.sin(angles).flatten(-2), torch.cos(angles).flatten(-2)), dim=-1)


def _offsets_mlp(inputs: int, hidden: int, layers: int, outputs: int) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear layer that starts at zero."""
    dims = [inputs] + [hidden] * layers
    blocks: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    out = nn.Linear(dims[-1], outputs)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*blocks, out)


class ExpressionDeformer(nn.Module):
    """MLP offsets ``(d_xyz [B,N,3], d_quat [B,N,4], d_log_scale [B,N,3])`` from positions and a condition.

    Args:
        n_condition: length of the per-frame condition (e.g. 53 ICT expression coefficients).
        hidden, layers: MLP width and number of hidden layers.
        frequencies: positional-encoding octaves of the canonical positions (in ``position_scale`` units).
        position_scale: metres mapped to 1 before encoding (a head is ~0.25 m).
    """

    uses_positions = True  # reads the canonical positions it is given (see FixedDeformer)

    def __init__(self, n_condition: int, hidden: int = 128, layers: int = 3, frequencies: int = 4,
                 position_scale: float = 0.15):
        super().__init__()
        self.n_condition, self.frequencies, self.position_scale = n_condition, frequencies, position_scale
        self.config = {"n_condition": n_condition, "hidden": hidden, "layers": layers, "frequencies": frequencies,
                       "position_scale": position_scale}
        self.mlp = _offsets_mlp(3 * (1 + 2 * frequencies) + n_condition, hidden, layers, 10)

    def forward(self, positions: Tensor, condition: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``positions [N, 3]`` canonical (metres), ``condition [B, n_condition]``."""
        if condition.shape[-1] != self.n_condition:
            raise ValueError(f"deformer expects {self.n_condition} condition values, got {condition.shape[-1]}")
        pe = positional_encoding(positions / self.position_scale, self.frequencies)  # [N, P]
        b, n = condition.shape[0], positions.shape[0]
        x = torch.cat((pe[None].expand(b, -1, -1), condition[:, None, :].expand(-1, n, -1)), dim=-1)
        d = self.mlp(x)
        return d[..., :3], d[..., 3:7], d[..., 7:]


class BlendshapeDeformer(nn.Module):
    """Offsets linear in the condition: ``d = sum_e c_e B_e(p)``, with the per-blendshape offsets
    ``B(p) [N, n_condition, 10]`` an MLP of the positional encoding of the canonical position
    ``p`` (no term outside the sum: a zero condition gives no offset). Arguments as :class:`ExpressionDeformer`'s."""

    uses_positions = True

    def __init__(self, n_condition: int, hidden: int = 128, layers: int = 3, frequencies: int = 4,
                 position_scale: float = 0.15):
        super().__init__()
        self.n_condition, self.frequencies, self.position_scale = n_condition, frequencies, position_scale
        self.config = {"model": "linear", "n_condition": n_condition, "hidden": hidden, "layers": layers,
                       "frequencies": frequencies, "position_scale": position_scale}
        self.mlp = _offsets_mlp(3 * (1 + 2 * frequencies), hidden, layers, 10 * n_condition)

    def basis(self, positions: Tensor) -> Tensor:
        """``[N, n_condition, 10]``: each blendshape's offsets at full strength."""
        pe = positional_encoding(positions / self.position_scale, self.frequencies)
        return self.mlp(pe).reshape(positions.shape[0], self.n_condition, 10)

    def forward(self, positions: Tensor, condition: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if condition.shape[-1] != self.n_condition:
            raise ValueError(f"deformer expects {self.n_condition} condition values, got {condition.shape[-1]}")
        d = torch.einsum("be,neo->bno", condition, self.basis(positions))
        return d[..., :3], d[..., 3:7], d[..., 7:]


def build_deformer(config: dict) -> nn.Module:
    """A deformer from its saved ``config`` (an avatar's ``deformer_config``; without a ``model``
    key: the MLP, as avatars saved before the linear model)."""
    config = dict(config)
    model = config.pop("model", "mlp")
    if model not in DEFORM_MODELS:
        raise ValueError(f"deformer model {model!r}: use one of {', '.join(DEFORM_MODELS)}")
    return (BlendshapeDeformer if model == "linear" else ExpressionDeformer)(**config)


class FixedDeformer(nn.Module):
    """An avatar's deformer for its current Gaussians only, to show it (live, ``avatar view``).
    For the MLP (:class:`ExpressionDeformer`) the positional part of the first layer is computed
    once, so a frame costs the expression's part and the other layers; for the linear model
    (:class:`BlendshapeDeformer`) the per-blendshape offsets are, so a frame costs one product.
    Either runs in ``dtype`` (bfloat16 is about twice as
    fast as float32 on a CPU with bfloat16 instructions and several times slower on one
    without; renders within ~58 dB PSNR of float32 ones, measured on head_talking_512). Never
    trained or saved."""

    uses_positions = False  # built on its Gaussians' positions: posing need not compute them again

    def __init__(self, deformer: nn.Module, positions: Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.out_dtype = positions.dtype
        self.n_condition, self.dtype = deformer.n_condition, dtype
        self.linear = isinstance(deformer, BlendshapeDeformer)
        if self.linear:  # the offsets are the condition times a fixed basis: [N, E * 10] once
            with torch.no_grad():
                basis = deformer.basis(positions)  # [N, E, 10]
            self.register_buffer("basis", basis.permute(1, 0, 2).reshape(self.n_condition, -1).to(dtype))
            return
        first = deformer.mlp[0]
        with torch.no_grad():
            pe = positional_encoding(positions / deformer.position_scale, deformer.frequencies)  # [N, P]
            p = pe.shape[-1]
            self.register_buffer("base", (pe @ first.weight[:, :p].T + first.bias).to(dtype))  # [N, H]
            self.register_buffer("w_condition", first.weight[:, p:].detach().to(dtype))  # [H, E]
        self.rest = copy.deepcopy(deformer.mlp[1:]).to(dtype)

    def forward(self, positions: Tensor, condition: Tensor):
        """As the deformer's forward, for the ``positions [N, 3]`` it was built on (only their count is
        checked: any ``[N, ...]`` tensor of the Gaussians will do, see :attr:`uses_positions`)."""
        if self.linear:
            n = positions.shape[0]
            assert self.basis.shape[1] == 10 * n, "FixedDeformer: the Gaussians changed"
            d = (condition.to(self.dtype) @ self.basis).reshape(-1, n, 10).to(self.out_dtype)
            return d[..., :3], d[..., 3:7], d[..., 7:]
        assert positions.shape[0] == self.base.shape[0], "FixedDeformer: the Gaussians changed"
        h = self.base[None] + (condition.to(self.dtype) @ self.w_condition.T)[:, None, :]  # [B, N, H]
        d = self.rest(h).to(self.out_dtype)
        return d[..., :3], d[..., 3:7], d[..., 7:]


def _seconds_per_call(deformer: FixedDeformer, positions: Tensor, repeats: int = 3) -> float:
    """Median wall seconds of one posing of ``deformer`` (after a warm-up call)."""
    condition = torch.full((1, deformer.n_condition), 0.2, device=positions.device, dtype=positions.dtype)
    times = []
    with torch.no_grad():
        for k in range(repeats + 1):
            t0 = time.perf_counter()
            deformer(positions, condition)
            if k:
                times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def fix_deformer(package, dtype: str = "auto") -> str | None:
    """Replace the expression MLP of ``package`` (an :class:`avatar.gaussians.package.AvatarPackage`)
    by a :class:`FixedDeformer` for showing it: the same Gaussians every frame, posed faster.

    ``dtype``: ``float32``, ``bfloat16`` (on a CPU; float32 elsewhere), or ``auto``: on a CPU, both
    are timed on the avatar's own Gaussians (a fraction of a second) and the faster kept -- bfloat16
    wins only where the CPU has bfloat16 instructions. Returns the dtype used, or None when the
    avatar has no expression MLP (nothing changed)."""
    if dtype not in DEFORMER_DTYPES:
        raise ValueError(f"deformer dtype {dtype!r}: use one of {', '.join(DEFORMER_DTYPES)}")
    g = package.gaussians
    if getattr(g, "deformer", None) is None or isinstance(g.deformer, FixedDeformer):
        return None
    positions = g.canonical_positions()
    if package.device.type != "cpu":
        dtype = "float32"
    fixed = FixedDeformer(g.deformer, positions, torch.float32)
    if dtype != "float32":
        bf16 = FixedDeformer(g.deformer, positions, torch.bfloat16)
        if dtype == "bfloat16":
            fixed = bf16
        else:
            t32, t16 = _seconds_per_call(fixed, positions), _seconds_per_call(bf16, positions)
            log.info("expression MLP: %.1f ms a frame in float32, %.1f ms in bfloat16", 1e3 * t32, 1e3 * t16)
            fixed = bf16 if t16 < t32 else fixed
    g.deformer = fixed
    package.gaussians = g.subset(torch.arange(len(g), device=package.device))  # a new avatar: posing starts afresh
    return "bfloat16" if fixed.dtype == torch.bfloat16 else "float32"

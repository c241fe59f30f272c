"""Real spherical harmonics in the convention of the original 3D Gaussian Splatting code.

Colours are evaluated as ``max(SH(dir) + 0.5, 0)`` by the rasterizer, as gsplat does.
The basis constants are the standard real-SH normalisation factors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import cpu_kernels
from .torch_backend import compiled_forward

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Number of coefficients per channel for SH up to ``degree`` (inclusive)."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values ``[..., (degree+1)^2]`` for directions ``[..., 3]`` (normalised here)."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree must be in 0..3, got {degree}")
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2 * zz - xx - yy),
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Evaluate SH colours.

    Args:
        degree: SH degree 0..3; only the first ``(degree+1)^2`` coefficients are used.
        dirs: ``[..., 3]`` viewing directions (camera centre to Gaussian), any length.
        coeffs: ``[..., K, D]`` coefficients with ``K >= (degree+1)^2``.

    Returns:
        ``[..., D]`` raw SH values (no +0.5 offset, no clamping).
    """
    k = num_sh_bases(degree)
    basis = sh_basis(degree, dirs)  # [..., k]
    return (basis[..., None] * coeffs[..., :k, :]).sum(-2)


def sh_colors(degree: int, coeffs: Tensor, means: Tensor, viewmats: Tensor, frame: Tensor | None = None) -> Tensor:
    """Colours ``[C, N, D]`` of SH coefficients seen from ``C`` cameras, as the rasterizer shades them:
    ``max(SH(d) + 0.5, 0)`` with ``d`` the direction from each camera's centre to each Gaussian.

    Args:
        degree: SH degree 0..3.
        coeffs: ``[N, K, D]`` or ``[C, N, K, D]``.
        means: ``[N, 3]`` world positions.
        viewmats: ``[C, 4, 4]`` world-to-camera.
        frame: ``[3, 3]`` rotation whose columns are the axes of the frame the coefficients
            are expressed in (world coordinates), e.g. a head's rotation so that the colours
            turn with the head; None: world axes (what :func:`avatar.render.rasterization`
            does with ``sh_degree``).
    """
    campos = -(viewmats[:, :3, :3].transpose(-1, -2) @ viewmats[:, :3, 3:])[..., 0]  # [C, 3]
    if coeffs.dim() == 3 and coeffs.shape[-2] >= num_sh_bases(degree) and 0 <= degree <= 3:
        extra = () if frame is None else (frame,)
        if compiled_forward(means.device, coeffs, means, viewmats, *extra):
            # one compiled loop instead of some forty small tensor ops (forward-only CPU renders)
            return cpu_kernels.sh_colors(degree, coeffs, means, campos, frame, (_C0, _C1, *_C2, *_C3))
    dirs = means[None, :, :] - campos[:, None, :]  # [C, N, 3]
    if frame is not None:
        dirs = dirs @ frame.to(dirs.dtype)  # frame^T d, row-wise
    if coeffs.dim() == 3:
        coeffs = coeffs[None].expand(dirs.shape[0], -1, -1, -1)
    return (eval_sh(degree, dirs, coeffs) + 0.5).clamp_min(0.0)


def rotate_sh(coeffs: Tensor, frame: Tensor) -> Tensor:
    """Coefficients in world axes of SH given in ``frame``'s axes: the ``c'`` with
    ``eval_sh(deg, d, c') == eval_sh(deg, frame^T d, c)`` for every direction ``d``.

    Args:
        coeffs: ``[..., K, D]`` with ``K = (degree + 1)^2``, degree 0..3.
        frame: ``[3, 3]`` rotation whose columns are the frame's axes in world coordinates (as
            in :func:`sh_colors`).

    Each band turns on its own (degree 0 never does): its ``(2l+1) x (2l+1)`` matrix is solved
    by least squares from the basis at 64 directions spread over the sphere, exact up to
    rounding since a rotated band is a linear map of the band.
    """
    k = coeffs.shape[-2]
    degree = round(k ** 0.5) - 1
    if (degree + 1) ** 2 != k:
        raise ValueError(f"rotate_sh: {k} coefficients per channel is not (degree + 1)^2")
    if degree == 0:
        return coeffs.clone()
    dtype = torch.float64
    i = torch.arange(64, dtype=dtype) + 0.5
    z = 1 - 2 * i / 64
    phi = i * torch.pi * (3 - 5 ** 0.5)
    dirs = torch.stack(((1 - z * z).sqrt() * phi.cos(), (1 - z * z).sqrt() * phi.sin(), z), -1)
    basis = sh_basis(degree, dirs)  # [S, K]
    turned = sh_basis(degree, dirs @ frame.detach().to("cpu", dtype))  # [S, K]: frame^T d
    out = coeffs.clone()
    for band in range(1, degree + 1):
        b = slice(band * band, (band + 1) * (band + 1))
        m = torch.linalg.lstsq(basis[:, b], turned[:, b]).solution  # basis @ m = turned
        out[..., b, :] = torch.einsum("nm,...md->...nd", m.to(coeffs), coeffs[..., b, :])
    return out

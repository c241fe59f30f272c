"""Posed Gaussians in the layout viser's splat renderer reads.

Each Gaussian is 8 ``uint32`` (32 bytes): centre ``x, y, z`` as float32, one word viser
reserves, the six upper-triangular terms of its 3D covariance as float16
(``xx, xy, xz, yy, yz, zz``) and its RGBA as 4 ``uint8``.

float16 covariances lose mm-sized Gaussians (variances around 1e-6 m^2 fall in float16's
subnormal range), so centres and covariances are written in :data:`UNITS_PER_METRE` units
(centimetres) and the scene node is scaled back by ``1 / UNITS_PER_METRE``: the scene itself
stays in metres, with the toolkit's OpenCV axes (x right, y down, z forward).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..geometry.rotations import quaternion_to_matrix
from ..render.sh import sh_colors

UNITS_PER_METRE = 100.0  # buffer units: centimetres (float16 keeps 3 digits for mm-sized Gaussians)
_TRIU = (0, 1, 2, 4, 5, 8)  # xx, xy, xz, yy, yz, zz of a flattened 3x3


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """``[N, 3, 3]`` covariances ``R diag(s^2) R^T`` of Gaussians with rotations ``quats [N, 4]``
    (w, x, y, z; normalised here) and standard deviations ``scales [N, 3]``."""
    assert quats.shape[:-1] == scales.shape[:-1] and quats.shape[-1] == 4 and scales.shape[-1] == 3
    m = quaternion_to_matrix(torch.nn.functional.normalize(quats, dim=-1)) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def view_colors(world, viewmat: Tensor, sh_degree: int, index: int = 0) -> Tensor:
    """``[N, 3]`` colours in 0..1 of the posed Gaussians ``world`` (:class:`WorldGaussians`, frame
    ``index``) seen from the camera ``viewmat [4, 4]`` (world-to-camera), shaded as the toolkit's
    rasterizer shades them (SH of ``sh_degree``, in the head's frame when the avatar uses one)."""
    frame = None if world.sh_frame is None else world.sh_frame[index]
    rgb = sh_colors(sh_degree, world.sh, world.means[index], viewmat[None].to(world.means.dtype), frame)[0]
    return rgb.clamp(0.0, 1.0)


def pack(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, rgb: Tensor) -> np.ndarray:
    """The viser buffer ``[N, 8] uint32`` of Gaussians ``means [N, 3]`` (metres), ``quats [N, 4]``
    (w, x, y, z), ``scales [N, 3]`` (standard deviations, metres), ``opacities [N]`` and ``rgb [N, 3]``
    (both 0..1); positions and covariances in :data:`UNITS_PER_METRE` units."""
    n = means.shape[0]
    assert means.shape == (n, 3) and quats.shape == (n, 4) and scales.shape == (n, 3)
    assert opacities.shape == (n,) and rgb.shape == (n, 3)
    with torch.no_grad():
        cov = covariances(quats.float(), scales.float() * UNITS_PER_METRE).reshape(n, 9)[:, _TRIU]
        rgba = torch.cat((rgb.float(), opacities.float()[:, None]), 1).clamp(0, 1).mul(255).add(0.5)
        centres = (means.float() * UNITS_PER_METRE).cpu().numpy()
        cov16 = cov.clamp(-65000, 65000).cpu().numpy().astype(np.float16)
        rgba8 = rgba.to(torch.uint8).cpu().numpy()
    buffer = np.zeros((n, 8), np.uint32)
    buffer[:, 0:3] = centres.view(np.uint32)
    buffer[:, 4:7] = cov16.view(np.uint32)
    buffer[:, 7] = rgba8.view(np.uint32)[:, 0]
    return buffer


def pack_world(world, viewmat: Tensor, sh_degree: int, index: int = 0) -> np.ndarray:
    """:func:`pack` of frame ``index`` of ``world`` (:class:`WorldGaussians`), coloured as seen
    from ``viewmat [4, 4]``."""
    quats, scales = world.shapes(index)
    return pack(world.means[index], quats, scales, world.opacities, view_colors(world, viewmat, sh_degree, index))


def unpack(buffer: np.ndarray) -> dict[str, np.ndarray]:
    """The inverse of :func:`pack` (in metres): ``means [N, 3]``, ``covariances [N, 3, 3]``,
    ``rgb [N, 3]`` and ``opacities [N]`` (0..1)."""
    n = buffer.shape[0]
    means = buffer[:, 0:3].copy().view(np.float32) / UNITS_PER_METRE
    triu = buffer[:, 4:7].copy().view(np.float16).astype(np.float32) / UNITS_PER_METRE**2
    cov = np.zeros((n, 9), np.float32)
    cov[:, list(_TRIU)] = triu
    cov = cov.reshape(n, 3, 3)
    cov = cov + np.triu(cov, 1).transpose(0, 2, 1)
    rgba = buffer[:, 7:8].copy().view(np.uint8).reshape(n, 4).astype(np.float32) / 255
    return {"means": means, "covariances": cov, "rgb": rgba[:, :3], "opacities": rgba[:, 3]}

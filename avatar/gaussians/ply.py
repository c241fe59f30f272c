"""3D Gaussian Splatting PLY files (the layout of the original 3DGS code, read by common splat viewers).

Per vertex, binary little-endian float32: ``x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1)
opacity scale_0..2 rot_0..3`` where opacity is the pre-sigmoid logit, scales are natural
logs, rotations are quaternions (w, x, y, z) and ``f_rest`` is channel-major (all of red's
higher-order coefficients, then green's, then blue's).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..io.atomic import atomic_write


def _columns(n_rest: int) -> list[str]:
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(3 * n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def save_ply(path: str | os.PathLike, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor) -> Path:
    """Write Gaussians (world space, linear scales, opacities in 0..1, SH ``[N, K, 3]``) atomically."""
    n, k = sh.shape[0], sh.shape[1]
    eps = 1e-7
    op = opacities.detach().double().clamp(eps, 1 - eps)
    cols = [
        means.detach(),
        torch.zeros_like(means.detach()),
        sh[:, 0, :].detach(),
        sh[:, 1:, :].detach().transpose(1, 2).reshape(n, 3 * (k - 1)),
        torch.log(op / (1 - op)).to(means.dtype)[:, None],
        torch.log(scales.detach().clamp_min(1e-12)),
        quats.detach() / quats.detach().norm(dim=-1, keepdim=True).clamp_min(1e-12),
    ]
    data = torch.cat([c.to(torch.float32).cpu() for c in cols], dim=1).numpy()
    names = _columns(k - 1)
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    return atomic_write(path, header.encode("ascii") + np.ascontiguousarray(data, dtype="<f4").tobytes())


def load_ply(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a 3DGS PLY back: ``means, quats, scales (linear), opacities (0..1), sh [N, K, 3]``."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path} is not a PLY file")
    lines = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary little-endian PLY files are supported")
    n = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    props = [line.split() for line in lines if line.startswith("property")]
    if any(p[1] != "float" for p in props):
        raise ValueError(f"{path}: expected float properties only")
    names = [p[2] for p in props]
    data = np.frombuffer(raw, dtype="<f4", count=n * len(names), offset=end + len(b"end_header\n")).reshape(n, len(names))
    col = {name: i for i, name in enumerate(names)}
    missing = [c for c in ("x", "f_dc_0", "opacity", "scale_0", "rot_0") if c not in col]
    if missing:
        raise ValueError(f"{path} lacks 3DGS properties {missing}")
    t = torch.from_numpy(data.copy())
    n_rest = sum(name.startswith("f_rest_") for name in names) // 3
    rest = t[:, [col[f"f_rest_{i}"] for i in range(3 * n_rest)]].reshape(n, 3, n_rest).transpose(1, 2)
    dc = t[:, [col[f"f_dc_{i}"] for i in range(3)]][:, None, :]
    return {
        "means": t[:, [col["x"], col["y"], col["z"]]],
        "quats": t[:, [col[f"rot_{i}"] for i in range(4)]],
        "scales": torch.exp(t[:, [col[f"scale_{i}"] for i in range(3)]]),
        "opacities": torch.sigmoid(t[:, col["opacity"]]),
        "sh": torch.cat((dc, rest), dim=1),
    }

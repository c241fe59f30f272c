"""Rendering: Gaussian rasterization (pure torch and gsplat CUDA backends).

Public entry point: :func:`rasterization` (the gsplat 1.5 signature; see DESIGN.md).
"""

from .rasterization import gsplat_status, rasterization, resolve_backend
from .sh import eval_sh, num_sh_bases

__all__ = ["eval_sh", "gsplat_status", "num_sh_bases", "rasterization", "resolve_backend"]

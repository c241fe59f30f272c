"""The one public entry point for Gaussian rasterization, with swappable backends.

``rasterization(...)`` takes the argument names, shapes and meaning of
``gsplat.rendering.rasterization`` (gsplat 1.5, non-batched, non-packed) and follows its
compositing rules: opacity-aware 3-sigma boxes, alphas below 1/255 skipped, alphas
clamped at 0.999 (gsplat's kernels), a pixel stops before its transmittance reaches
1e-4, 2D blur ``eps2d``. Backends:

* ``"torch"``: pure PyTorch (:mod:`avatar.render.torch_backend`), CPU or GPU, differentiable;
* ``"gsplat"``: gsplat's CUDA kernels (CUDA tensors only);
* ``"auto"``: gsplat when the inputs are on a CUDA device and gsplat's kernels load, else torch
  (the reason is logged once).
"""

from __future__ import annotations

import functools
import logging
from typing import Literal

import torch
from torch import Tensor

from . import torch_backend
from .sh import num_sh_bases, sh_colors

log = logging.getLogger(__name__)

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
Backend = Literal["auto", "torch", "gsplat"]
_RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


@functools.lru_cache(maxsize=None)
def gsplat_status() -> tuple[bool, str]:
    """Whether gsplat's CUDA kernels can be used here, and why (not)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        from gsplat.cuda._backend import _C  # noqa: PLC0415 (compiles or loads the kernels)
    except Exception as exc:  # noqa: BLE001 (any failure means: fall back)
        return False, f"gsplat failed to import its CUDA kernels ({type(exc).__name__}: {exc})"
    if _C is None:
        return False, "gsplat's CUDA kernels could not be built or loaded"
    return True, "gsplat CUDA kernels loaded"


@functools.lru_cache(maxsize=None)
def _log_fallback_once(reason: str) -> None:
    log.info("rasterization backend 'auto': using 'torch' because %s", reason)


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend (``"torch"`` or ``"gsplat"``) for ``backend`` and inputs on ``device``."""
    if backend == "torch":
        return "torch"
    if backend == "gsplat":
        ok, why = gsplat_status()
        if not ok:
            raise RuntimeError(f"backend='gsplat' is not available: {why}. Use backend='torch' or 'auto'.")
        if device.type != "cuda":
            raise ValueError(f"backend='gsplat' needs CUDA tensors, got inputs on {device}")
        return "gsplat"
    if backend != "auto":
        raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if device.type != "cuda":
        _log_fallback_once(f"the inputs are on {device}, not a CUDA device")
        return "torch"
    ok, why = gsplat_status()
    if not ok:
        _log_fallback_once(why)
        return "torch"
    return "gsplat"


def _check_shape(name: str, t: Tensor, expected: tuple, what: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    ok = t.dim() == len(expected) and all(e is None or s == e for s, e in zip(t.shape, expected))
    if not ok:
        raise ValueError(f"{name} must have shape {what}, got {tuple(t.shape)}")


def _check_finite(**tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is None or t.numel() == 0:
            continue
        if bool(torch.isfinite(t.detach().sum())):  # one reduction: NaN and inf propagate into the sum
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"{name} contains {bad} NaN or infinite value(s) (first at index "
                f"{tuple(int(i) for i in (~finite).nonzero()[0])}); fix the input instead of rendering it"
            )


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode,
              covars=None):
    _check_shape("means", means, (None, 3), "[N, 3]")
    N = means.shape[0]
    _check_shape("quats", quats, (N, 4), f"[N, 4] = [{N}, 4] (w, x, y, z)")
    _check_shape("scales", scales, (N, 3), f"[N, 3] = [{N}, 3]")
    if covars is not None:
        _check_shape("covars", covars, (N, 3, 3), f"[N, 3, 3] = [{N}, 3, 3]")
    _check_shape("opacities", opacities, (N,), f"[N] = [{N}]")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must have shape [C, 4, 4], got {tuple(viewmats.shape)}")
    C = viewmats.shape[0]
    _check_shape("Ks", Ks, (C, 3, 3), f"[C, 3, 3] = [{C}, 3, 3]")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width and height must be positive ints, got {width!r} x {height!r}")
    if render_mode not in _RENDER_MODES:
        raise ValueError(f"render_mode must be one of {_RENDER_MODES}, got {render_mode!r}")
    if sh_degree is None:
        if colors.dim() not in (2, 3) or colors.shape[-2] != N or (colors.dim() == 3 and colors.shape[0] != C):
            raise ValueError(f"colors must have shape [N, D] or [C, N, D] with N={N}, C={C}, got {tuple(colors.shape)}")
        D = colors.shape[-1]
    else:
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be in 0..3, got {sh_degree}")
        K = num_sh_bases(sh_degree)
        shape_ok = colors.dim() in (3, 4) and colors.shape[-3] == N and colors.shape[-1] == 3
        shape_ok = shape_ok and colors.shape[-2] >= K and (colors.dim() == 3 or colors.shape[0] == C)
        if not shape_ok:
            raise ValueError(
                f"colors must be SH coefficients [N, K, 3] or [C, N, K, 3] with N={N}, C={C}, "
                f"K >= {K} for sh_degree={sh_degree}, got {tuple(colors.shape)}"
            )
        D = 3
    if backgrounds is not None:
        _check_shape("backgrounds", backgrounds, (C, D), f"[C, D] = [{C}, {D}]")
    _check_finite(
        means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
        viewmats=viewmats, Ks=Ks, backgrounds=backgrounds, covars=covars,
    )
    return N, C, D


def _empty_render(C, D, width, height, backgrounds, render_mode, like: Tensor):
    depth_ch = render_mode != "RGB"
    channels = (0 if render_mode in ("D", "ED") else D) + depth_ch
    out = torch.zeros(C, height, width, channels, device=like.device, dtype=like.dtype)
    if backgrounds is not None and render_mode not in ("D", "ED"):
        out[..., :D] = backgrounds[:, None, None, :]
    alphas = torch.zeros(C, height, width, 1, device=like.device, dtype=like.dtype)
    return out, alphas


def rasterization(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or SH [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    tile_size: int | None = None,
    backgrounds: Tensor | None = None,  # [C, D]
    render_mode: RenderMode = "RGB",
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    backend: Backend = "auto",
    validate: bool = True,
    covars: Tensor | None = None,  # [N, 3, 3]
) -> tuple[Tensor, Tensor, dict]:
    """Render 3D Gaussians into one or more pinhole cameras.

    Args:
        means: ``[N, 3]`` centres in world space, metres.
        quats: ``[N, 4]`` rotations as quaternions, real part first (w, x, y, z); normalised here.
        scales: ``[N, 3]`` standard deviations along the rotated axes, metres (linear, not log).
        opacities: ``[N]`` in 0..1.
        colors: post-activation colours ``[N, D]`` or per camera ``[C, N, D]``; or, when
            ``sh_degree`` is given, SH coefficients ``[N, K, 3]`` / ``[C, N, K, 3]`` with
            ``K >= (sh_degree + 1)^2``, evaluated as ``max(SH(dir) + 0.5, 0)``.
        viewmats: ``[C, 4, 4]`` world-to-camera transforms, OpenCV convention (x right, y down, z forward).
        Ks: ``[C, 3, 3]`` intrinsics in pixels.
        width, height: image size in pixels.
        near_plane, far_plane: camera-z range kept, metres.
        radius_clip: Gaussians whose box half-sizes are both <= this (pixels) are skipped.
        eps2d: isotropic blur added to each 2D covariance (pixels^2).
        tile_size: tile edge in pixels (speed only, not results); None: the backend's best
            (16 for gsplat and for the compiled forward-only CPU compositor, 8 for the torch one).
        backgrounds: ``[C, D]`` colour behind the Gaussians per camera (default black).
        render_mode: "RGB"; "D" accumulated depth; "ED" expected depth (normalised by alpha);
            "RGB+D" / "RGB+ED" append the depth channel.
        rasterize_mode: "classic", or "antialiased" (opacity times the blur's compensation).
        backend: "auto", "torch" or "gsplat" (see the module docstring).
        validate: check shapes and finiteness (NaN/inf raise ``ValueError`` naming the argument).
        covars: ``[N, 3, 3]`` world covariances, metres squared, used instead of ``quats`` and
            ``scales`` (which must still be given; gsplat's ``covars``): shapes that are not a
            rotated box of three scales' making, e.g. Gaussians stretched with their triangles.

    Returns:
        ``(colors [C, H, W, X], alphas [C, H, W, 1], meta)`` where X is D, 1 or D+1 by
        ``render_mode``. ``meta`` holds ``means2d [C, N, 2]`` (in the autograd graph; call
        ``meta["means2d"].retain_grad()`` before backward to read its gradient, as densification
        does), ``radii [C, N, 2]`` (int32, 0 = culled), ``depths``, ``conics``, ``opacities``,
        ``width``, ``height``, ``tile_size``, ``n_cameras``, ``backend`` (the one used) and, for
        the torch backend, ``compositor`` ("compiled" for forward-only CPU renders with numba, else "torch").
    """
    if validate:
        N, C, D = _validate(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode,
            covars,
        )
    else:
        N, C, D = means.shape[0], viewmats.shape[0], (3 if sh_degree is not None else colors.shape[-1])
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
    used = resolve_backend(backend, means.device)
    if tile_size is None:
        # 16 for gsplat, and for the compiled forward-only CPU compositor (a tile row is one SIMD
        # loop; frames 3-12% faster than with 8 on three avatars, interleaved); 8 for the torch compositor.
        compiled = used == "torch" and torch_backend.compiled_forward(means.device, means, quats, scales, opacities,
                                                                      colors, viewmats, Ks)
        tile_size = 16 if used == "gsplat" or compiled else torch_backend.DEFAULT_TILE_SIZE
    if N == 0:  # the background, with the usual (empty) per-Gaussian meta
        out, alphas = _empty_render(C, D, width, height, backgrounds, render_mode, means)
        proj = torch_backend.project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height)
        meta = {k: proj[k] for k in ("means2d", "radii", "depths", "conics", "opacities")}
        meta.update({"width": width, "height": height, "tile_size": tile_size, "n_cameras": C, "backend": used})
        return out, alphas, meta

    return BACKENDS[used](
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
        radius_clip, eps2d, sh_degree, tile_size, backgrounds, render_mode, rasterize_mode, covars,
    )


def _rasterize_torch(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
    radius_clip, eps2d, sh_degree, tile_size, backgrounds, render_mode, rasterize_mode, covars=None,
):
    C = viewmats.shape[0]
    proj = torch_backend.project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
        antialiased=rasterize_mode == "antialiased", covars=covars,
    )
    if sh_degree is not None:
        colors = sh_colors(sh_degree, colors, means, viewmats)
    elif colors.dim() == 2:
        colors = colors[None].expand(C, -1, -1)

    depths = proj["depths"]
    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat((colors, depths[..., None]), dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat((backgrounds, torch.zeros_like(backgrounds[:, :1])), dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        backgrounds = None
    out, alphas = torch_backend.rasterize_to_pixels(
        proj["means2d"], proj["conics"], colors, proj["opacities"], proj["radii"], depths,
        width, height, tile_size=tile_size, backgrounds=backgrounds,
    )
    if render_mode in ("ED", "RGB+ED"):
        out = torch.cat((out[..., :-1], out[..., -1:] / alphas.clamp_min(1e-10)), dim=-1)
    meta = {
        "means2d": proj["means2d"],
        "radii": proj["radii"],
        "depths": depths,
        "conics": proj["conics"],
        "opacities": proj["opacities"],
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_cameras": C,
        "backend": "torch",
        # Forward-only CPU renders composite with the compiled kernel (numba), else torch ops.
        "compositor": "compiled" if torch_backend.compiled_forward(
            means.device, proj["means2d"], proj["conics"], colors, proj["opacities"]) else "torch",
    }
    return out, alphas, meta


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
    radius_clip, eps2d, sh_degree, tile_size, backgrounds, render_mode, rasterize_mode, covars=None,
):
    from gsplat.rendering import rasterization as gsplat_rasterization  # noqa: PLC0415

    out, alphas, meta = gsplat_rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
        sh_degree=sh_degree, packed=False, tile_size=tile_size, backgrounds=backgrounds,
        render_mode=render_mode, rasterize_mode=rasterize_mode, covars=covars,
    )
    meta = dict(meta)
    meta.update({"n_cameras": viewmats.shape[0], "backend": "gsplat"})
    return out, alphas, meta


# The backends by name: ``backend=`` (the config's ``renderer.backend``) picks one; "auto"
# resolves to one of them (:func:`resolve_backend`).
BACKENDS = {"torch": _rasterize_torch, "gsplat": _rasterize_gsplat}

"""Silhouette terms for body tracking: distance transforms of the person mask, sampled at projected points.

A hard mesh rasterizer gives no gradient through coverage, so the silhouette enters the fit
through points (a spread-out subset of the mesh's vertices, projected):

- **inside**: every projected vertex should fall on the person mask; its cost is the
  distance (pixels) from the point to the mask, read bilinearly from the distance transform
  of the mask's outside (0 on the mask), so it is differentiable in the point's position;
- **cover**: every point of the mask's outline should have a projected vertex near it; its
  cost is the distance to the nearest projected vertex beyond a tolerance (about the
  spacing of the projected vertices), so a body thinner than the mask is pushed out.

Masks are the capture's (crop pixels, per frame). Points are given in *source* pixels
together with each frame's crop transform (``capture_px = (source_px - origin) * scale``,
:meth:`avatar.io.capture.Capture.crop_transforms`); distances come back in source pixels.
The transforms are computed at ``size`` pixels (the mask downscaled) to keep them cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class SilhouetteTargets:
    """Per-frame mask data for the silhouette terms (see the module doc)."""

    outside: Tensor  # [F, 1, s, s] distance to the mask, pixels of the downscaled mask
    outline: Tensor  # [F, P, 2] points on the mask's outline, source pixels (repeats where fewer)
    has_outline: Tensor  # [F] bool: the mask has an outline (a person)
    scale: Tensor  # [F] capture px per source px
    origin: Tensor  # [F, 2] source px of the crop's corner
    capture_size: int  # side of the capture's (square) frames, pixels

    def to_capture(self, points: Tensor) -> Tensor:
        """Source pixels ``[F, N, 2]`` -> capture pixels."""
        return (points - self.origin[:, None]) * self.scale[:, None, None]

    def inside_distance(self, points: Tensor) -> Tensor:
        """Distance (source px) from each projected point ``[F, N, 2]`` (source px) to the mask, ``[F, N]``."""
        s = self.outside.shape[-1]
        uv = self.to_capture(points) / self.capture_size * 2.0 - 1.0  # grid_sample's [-1, 1], corners at pixel edges
        d = torch.nn.functional.grid_sample(self.outside, uv[:, None], mode="bilinear", padding_mode="border",
                                            align_corners=False)[:, 0, 0]  # [F, N], downscaled px
        beyond = (uv.abs() - 1.0).clamp_min(0).norm(dim=-1) * 0.5 * s  # off the frame: keep pulling inward
        return (d + beyond) * (self.capture_size / s) / self.scale[:, None]

    def cover_distance(self, points: Tensor, tolerance: Tensor | float) -> Tensor:
        """Distance (source px) from each outline point to the nearest of ``points [F, N, 2]`` beyond
        ``tolerance`` (source px, scalar or ``[F]``), ``[F, P]``."""
        with torch.no_grad():  # the nearest point per outline point; the distance to it carries the gradient
            nearest = torch.cdist(self.outline, points).argmin(-1)  # [F, P]
        d = (points.gather(1, nearest[..., None].expand(-1, -1, 2)) - self.outline).norm(dim=-1)
        tol = torch.as_tensor(tolerance, dtype=d.dtype, device=d.device).reshape(-1, 1)
        return (d - tol).clamp_min(0.0)


def outline_points(mask: np.ndarray, count: int) -> np.ndarray | None:
    """``count`` points evenly spaced along the outer outlines of the boolean ``mask [H, W]``
    (pixel centres, ``[count, 2]`` x, y), or None when the mask is empty."""
    import cv2  # noqa: PLC0415

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c[:, 0] for c in contours], 0).astype(np.float64) if contours else np.zeros((0, 2))
    if len(pts) == 0:
        return None
    pick = np.linspace(0, len(pts), count, endpoint=False).astype(int)
    return pts[pick] + 0.5


def silhouette_targets(masks: list[np.ndarray], scale: np.ndarray, origin: np.ndarray, size: int = 128,
                       outline_count: int = 192, device=None, dtype=torch.float32) -> SilhouetteTargets:
    """Targets from the capture's masks (``[H, H]`` float 0..1 each, crop pixels) and crop transforms."""
    import cv2  # noqa: PLC0415

    H = masks[0].shape[0]
    outside, outline, has = [], [], []
    for i, m in enumerate(masks):
        small = cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA) > 0.5
        dist = cv2.distanceTransform((~small).astype(np.uint8), cv2.DIST_L2, 5) if small.any() else np.full(
            (size, size), float(size), np.float32)
        outside.append(dist)
        pts = outline_points(m > 0.5, outline_count)
        has.append(pts is not None)
        pts = np.zeros((outline_count, 2)) if pts is None else pts
        outline.append(pts / scale[i] + origin[i])
    t = lambda a: torch.as_tensor(np.asarray(a), device=device, dtype=dtype)  # noqa: E731
    return SilhouetteTargets(t(np.stack(outside))[:, None], t(np.stack(outline)), torch.as_tensor(np.array(has), device=device),
                             t(scale), t(origin), H)


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(pred, target).sum()
    return float(np.logical_and(pred, target).sum() / union) if union else 1.0

"""Where the held-out error is: each pixel of an evaluated frame gets a region, and the squared
error is summed per region.

Regions (in this order of precedence):

- ``silhouette``: within ``band`` pixels of the ground-truth mask's edge, on either side: the
  hair outline, the ears and the neck cut, where a misplaced or missing edge shows;
- ``background``: outside the mask (beyond the band): what the avatar should leave empty;
- inside the mask, the front-most triangle of the tracked mesh decides: ``face`` (skin of the
  face), ``eyes`` (eyeballs and eye sockets), ``mouth`` (mouth socket, gums, tongue, teeth),
  ``head`` (scalp, ears, back of the head, neck), or ``mesh`` for a model without named parts;
- ``beyond_mesh``: inside the mask where no triangle is: hair volume, glasses, anything the
  head model does not cover.

The model's named parts (ICT-FaceKit's) map onto these regions by :data:`PART_REGIONS`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

REGIONS = ("face", "eyes", "mouth", "head", "mesh", "beyond_mesh", "silhouette", "background")
PART_REGIONS = {
    "face": "face",
    "eye_socket_left": "eyes", "eye_socket_right": "eyes", "eyeball_left": "eyes", "eyeball_right": "eyes",
    "mouth_socket": "mouth", "gums_and_tongue": "mouth", "teeth": "mouth",
    "head_and_neck": "head",
}
_INDEX = {name: i for i, name in enumerate(REGIONS)}


def triangle_regions(model, n_faces: int, device=None) -> Tensor:
    """``[F]`` region index of each triangle, from the model's named parts (``mesh`` where a
    triangle is in no part the map knows, or the model has no parts)."""
    out = torch.full((n_faces,), _INDEX["mesh"], dtype=torch.long, device=device)
    for name, part in (getattr(model, "parts", None) or {}).items():
        region = PART_REGIONS.get(name)
        if region is not None:
            out[torch.as_tensor(part.faces, device=device)] = _INDEX[region]
    return out


def grow_mask(m: Tensor, radius: int) -> Tensor:
    """Boolean masks ``[..., H, W]`` grown by ``radius`` pixels (a square neighbourhood)."""
    x = m.float().reshape(-1, 1, *m.shape[-2:])
    return (torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) > 0).reshape(m.shape)


def pixel_regions(triangle_id: Tensor, mask: Tensor, tri_region: Tensor, band: int) -> Tensor:
    """``[H, W]`` region index per pixel (see the module docstring).

    triangle_id: ``[H, W]`` front-most triangle (-1: none); mask: ``[H, W]`` ground-truth mask in
    0..1; tri_region: :func:`triangle_regions`; band: half-width of the silhouette band, pixels."""
    inside = mask > 0.5
    labels = torch.where(triangle_id >= 0, tri_region[triangle_id.clamp_min(0)],
                         torch.full_like(triangle_id, _INDEX["beyond_mesh"]))
    labels = torch.where(inside, labels, torch.full_like(labels, _INDEX["background"]))
    if band > 0:
        edge = grow_mask(inside, band) & grow_mask(~inside, band)
        labels = torch.where(edge, torch.full_like(labels, _INDEX["silhouette"]), labels)
    return labels


class RegionErrors:
    """Sums of squared error and pixel counts per region, over frames added to named groups."""

    def __init__(self) -> None:
        self.sse: dict[str, Tensor] = {}
        self.count: dict[str, Tensor] = {}

    def add(self, group: str, pred: Tensor, target: Tensor, labels: Tensor) -> None:
        """``pred``, ``target``: ``[H, W, 3]`` in 0..1; ``labels``: :func:`pixel_regions`."""
        err = ((pred - target) ** 2).mean(-1).flatten().double()
        lab = labels.flatten()
        sse = torch.zeros(len(REGIONS), dtype=torch.float64, device=err.device).index_add_(0, lab, err)
        count = torch.bincount(lab, minlength=len(REGIONS)).double()
        self.sse[group] = self.sse.get(group, 0) + sse
        self.count[group] = self.count.get(group, 0) + count

    def summary(self, group: str) -> dict | None:
        """Per region with pixels: ``psnr`` over its pixels (dB), ``error_share`` (its part of the
        group's total squared error) and ``pixel_share``; None for a group with no frame."""
        if group not in self.sse:
            return None
        sse, count = self.sse[group].cpu(), self.count[group].cpu()
        total_sse, total_count = float(sse.sum()), float(count.sum())
        out = {}
        for i, name in enumerate(REGIONS):
            n = float(count[i])
            if n == 0:
                continue
            mse = float(sse[i]) / n
            out[name] = {"psnr": round(10 * math.log10(1 / mse), 3) if mse > 0 else None,
                         "error_share": round(float(sse[i]) / total_sse, 4) if total_sse > 0 else 0.0,
                         "pixel_share": round(n / total_count, 4)}
        return out

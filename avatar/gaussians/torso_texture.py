"""The upper body as a neural texture read through an anchor-Gaussian warp (Gaussian Head &
Shoulders' idea, written for this toolkit), and the portrait kind that uses it.

GH&S observed that Gaussians fit a clothed chest badly (each carries one colour, so printed or
folded cloth needs very many, and they float off under new poses) and drew the shoulders from a
texture instead, read through a warping field from image coordinates to texture space that a
sparse set of *anchor Gaussians* constrains. Here:

- **Anchors**: a regular grid of flat Gaussians in the torso's frame (:attr:`FrameState.torso`,
  the tracked shoulder state), spread over where the training frames show the person below the
  neck. Each carries its *rest* texture coordinate ``(u, v)`` as its colour and a learned offset
  (the warp) and size; all share one low opacity (see ``_ANCHOR_OPACITY``).
- **Warp**: the anchors are splatted into the camera with colour ``(u, v, 1)``; the ratio of the
  first two channels to the accumulated weight is a smooth per-pixel texture coordinate, and the
  accumulated opacity says where the body is. No MLP: the warp is the anchors' splat, so its
  cost does not grow with the image's detail.
- **Texture**: a learned map (colour, opacity, and ``fine_features`` channels) sampled at those
  coordinates. The colour is coarse colour plus a pose-dependent fine colour: the fine channels
  weighted by a linear map of the torso's rotation and shift relative to its rest state (GH&S's
  coarse and pose-dependent fine colours, decoded per frame by one small matrix rather than a
  per-pixel MLP).
- **Compositing**: the texture layer lies behind the head's Gaussians (the shoulders are behind
  the chin and the hair in a portrait video); the Gaussians are drawn over it with their alpha,
  and the layer over the background with its own
  (:attr:`avatar.gaussians.base.WorldGaussians.under`).

The portrait kind here (``portrait_texture``; ``avatar=portrait`` picks it) is
:class:`avatar.gaussians.portrait.PortraitGaussians` without torso Gaussians: surface and off-mesh
Gaussians for the head, the texture layer for the body (``avatar=portrait_gaussians`` keeps the
torso Gaussians). Export (PLY / SPZ) writes the Gaussians only; the texture is kept in ``avatar.pt``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..geometry.rotations import matrix_to_quaternion
from ..render.rasterization import rasterization
from .base import FrameState, WorldGaussians
from .config import MeshGaussiansConfig
from .portrait import TORSO, PortraitGaussians

__all__ = ["PortraitTextureGaussians", "TorsoTexture"]

# Anchors are splatted nearly transparent so that front-to-back compositing weighs them almost
# equally (the warp is then a plain kernel average of their coordinates, not biased toward
# whichever anchor is drawn first); the layer counts as covered where their accumulated opacity
# reaches half of what the grid's interior gets.
_ANCHOR_OPACITY = 0.05
_HALF_COVER = 0.5 * (1 - math.exp(-_ANCHOR_OPACITY * 2 * math.pi * 0.7 ** 2))


def _logit(x: Tensor, lo: float, hi: float) -> Tensor:
    x = x.clamp(lo, hi)
    return torch.log(x / (1 - x))


class TorsoTexture(nn.Module):
    """Anchor Gaussians, texture and fine-colour decoder of the upper body (module docstring).

    ``anchors [A, 3]`` rest positions in the torso's frame (torso units), ``box (x0, x1, y0, y1)``
    the texture's extent there, ``texture [1, 4 + Fe, H, W]`` (colour logits, opacity logit, fine
    channels), ``unit`` metres per torso unit, ``torso_rest [4, 4]`` the pose the fine colour is
    relative to, ``warp_downscale`` the anchors' splat drawn at 1/this of the image's size each way
    (:meth:`layer`; training draws it at full size, ``avatar live`` smaller: ``warp_downscale``).
    """

    def __init__(self, anchors: Tensor, box: tuple[float, float, float, float], texture: Tensor,
                 anchor_log_scale: Tensor, torso_rest: Tensor, unit: float, fine_features: int = 4,
                 warp_downscale: int = 1):
        super().__init__()
        if int(warp_downscale) < 1:
            raise ValueError(f"warp_downscale must be >= 1 (1: the anchors' splat at the image's size), got {warp_downscale}")
        self.warp_downscale = int(warp_downscale)
        self._last = None  # (key, inputs, layer): the last layer drawn without gradients (layer)
        x0, x1, y0, y1 = (float(b) for b in box)
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"TorsoTexture box must have x1 > x0 and y1 > y0, got {box}")
        if texture.dim() != 4 or texture.shape[:2] != (1, 4 + fine_features):
            raise ValueError(f"texture must be [1, {4 + fine_features}, H, W], got {tuple(texture.shape)}")
        self.box, self.unit, self.fine_features = (x0, x1, y0, y1), float(unit), int(fine_features)
        self.register_buffer("anchors", anchors.clone())
        self.register_buffer("torso_rest", torso_rest.to(anchors).clone())
        u = (anchors[:, 0] - x0) / (x1 - x0)
        v = (y1 - anchors[:, 1]) / (y1 - y0)  # row 0 at the top: the texture reads upright
        self.register_buffer("anchor_uv", torch.stack((u, v, torch.ones_like(u)), -1), persistent=False)  # from anchors, box
        A = anchors.shape[0]
        self.anchor_offset = nn.Parameter(torch.zeros_like(anchors))
        self.anchor_log_scale = nn.Parameter(anchor_log_scale.to(anchors).clone().reshape(A, 3))
        self.texture = nn.Parameter(texture.clone())
        self.decoder = nn.Linear(9, 3 * self.fine_features).to(anchors)
        nn.init.zeros_(self.decoder.weight)
        nn.init.zeros_(self.decoder.bias)

    # ------------------------------------------------------------ building
    @classmethod
    def from_seeds(cls, seeds: Tensor, torso_rest: Tensor, unit: float, cfg: MeshGaussiansConfig,
                   frames=None) -> "TorsoTexture":
        """Anchors and texture over ``seeds [P, 3]``: torso-frame points (torso units) where the
        training frames show the person below the neck. The texture starts from the colour and
        mask of up to three training ``frames`` (a :class:`avatar.train.data.FrameSet`) seen through
        the torso's plane; without frames, mid grey, half opaque."""
        if seeds.shape[0] < 3:
            raise ValueError(f"a torso texture needs the person below the neck in the training frames; only "
                             f"{seeds.shape[0]} seed points were found (train.mask=person, and a capture whose "
                             "frames show the shoulders)")
        dtype, device = seeds.dtype, seeds.device
        spacing = float(cfg.torso_anchor_spacing)
        lo = torch.quantile(seeds[:, :2], 0.005, dim=0) - 2 * spacing
        hi = torch.quantile(seeds[:, :2], 0.995, dim=0) + 2 * spacing
        z0 = float(seeds[:, 2].median())
        nx = max(2, int(math.ceil(float(hi[0] - lo[0]) / spacing)) + 1)
        ny = max(2, int(math.ceil(float(hi[1] - lo[1]) / spacing)) + 1)
        gx = torch.linspace(float(lo[0]), float(lo[0]) + (nx - 1) * spacing, nx, dtype=dtype, device=device)
        gy = torch.linspace(float(lo[1]), float(lo[1]) + (ny - 1) * spacing, ny, dtype=dtype, device=device)
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")
        anchors = torch.stack((xx.reshape(-1), yy.reshape(-1), torch.full_like(xx.reshape(-1), z0)), -1)
        box = (float(gx[0]), float(gx[-1]), float(gy[0]), float(gy[-1]))
        # flat discs facing the camera: in-plane std 0.7 x spacing, thin across
        log_scale = torch.log(torch.tensor([0.7 * spacing, 0.7 * spacing, 0.1 * spacing], dtype=dtype, device=device))
        texel = float(cfg.torso_texel)
        W = min(int(cfg.torso_texture_max), max(8, int(math.ceil((box[1] - box[0]) / texel))))
        H = min(int(cfg.torso_texture_max), max(8, int(math.ceil((box[3] - box[2]) / texel))))
        fe = int(cfg.torso_fine_features)
        colour, cover = _texture_from_frames(frames, box, z0, unit, H, W) if frames is not None else (None, None)
        if colour is None:
            colour = torch.full((3, H, W), 0.5, dtype=dtype, device=device)
            cover = torch.full((H, W), 0.5, dtype=dtype, device=device)
        fine = 0.01 * torch.randn(fe, H, W, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
        texture = torch.cat((_logit(colour, 0.02, 0.98), _logit(cover, 0.05, 0.95)[None], fine))[None]
        return cls(anchors, box, texture, log_scale.expand(anchors.shape[0], 3), torso_rest, unit, fe)

    # ------------------------------------------------------------ the layer
    def pose_features(self, torso: Tensor) -> Tensor:
        """``[B, 9]``: the torso's rotation relative to its rest (two columns, minus identity) and its
        shift in the rest torso's axes (in 10-unit steps): what the fine colour is conditioned on."""
        R0, t0 = self.torso_rest[:3, :3], self.torso_rest[:3, 3]
        rel = R0.T @ torso[:, :3, :3]
        eye = torch.eye(3, dtype=rel.dtype, device=rel.device)
        rot = (rel - eye)[:, :, :2].reshape(-1, 6)
        shift = (torso[:, :3, 3] - t0) @ R0 / (10 * self.unit)
        return torch.cat((rot, shift), -1)

    def layer(self, torso: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
              renderer: dict | None = None) -> tuple[Tensor, Tensor]:
        """The body layer for one frame's ``torso [4, 4]`` seen by ``viewmats [C, 4, 4]`` / ``Ks [C, 3, 3]``:
        ``(colour [C, H, W, 3], opacity [C, H, W, 1])`` (:meth:`_draw`).

        Without gradients, the last layer is given back while everything it depends on is the same
        (the torso, the camera, the size, the options and the module's weights): live holds the
        driver's shoulders between pose detections, and a driver without a body keeps them at rest."""
        if torch.is_grad_enabled():
            return self._draw(torso, viewmats, Ks, width, height, renderer)
        key = (int(width), int(height), self.warp_downscale, repr(sorted((renderer or {}).items())),
               tuple(t._version for t in (*self.parameters(), *self.buffers())))
        inputs = (torso, viewmats, Ks)
        last = self._last
        if last is not None and last[0] == key and all(
                a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
                for a, b in zip(last[1], inputs)):
            return last[2]
        out = self._draw(torso, viewmats, Ks, width, height, renderer)
        self._last = (key, tuple(x.detach().clone() for x in inputs), out)
        return out

    def _draw(self, torso: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
              renderer: dict | None = None) -> tuple[Tensor, Tensor]:
        """Draw :meth:`layer`.

        The anchors' splat is a smooth field (each anchor spans many pixels), so it is drawn at
        1/:attr:`warp_downscale` of the image each way and upsampled bilinearly; the texture is then
        read at full size. The fine colour is added at the texture's own resolution before it is
        read (bilinear reading is linear, so this is the same sum, over fewer texels)."""
        torso = torso.to(self.anchors)
        local = (self.anchors + self.anchor_offset) * self.unit
        means = local @ torso[:3, :3].T + torso[:3, 3]
        # the anchors' discs lie in the torso's axes: their rotation is the torso's
        quats = matrix_to_quaternion(torso[:3, :3][None]).expand(local.shape[0], 4)
        opts = {k: v for k, v in (renderer or {}).items() if k in ("backend", "tile_size", "rasterize_mode")}
        opacity = torch.full_like(self.anchor_uv[:, 0], _ANCHOR_OPACITY)
        d = self.warp_downscale
        w_low, h_low = max(1, -(-width // d)), max(1, -(-height // d))
        Ks_low = Ks.clone()
        Ks_low[:, 0] *= w_low / width  # pixel coordinates scale with the image (centres at i + 0.5)
        Ks_low[:, 1] *= h_low / height
        splat, cover, _ = rasterization(means, quats, torch.exp(self.anchor_log_scale) * self.unit, opacity,
                                        self.anchor_uv, viewmats, Ks_low, w_low, h_low, **opts)
        field = torch.cat((splat, cover), -1).permute(0, 3, 1, 2)  # [C, 4, h, w]
        if (h_low, w_low) != (height, width):
            field = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=False)
        uv = field[:, :2] / field[:, 2:3].clamp_min(1e-6)
        grid = (uv * 2 - 1).permute(0, 2, 3, 1)  # grid_sample's corners-excluded convention: 0..1 spans the texture
        fine = self.decoder(self.pose_features(torso[None])).reshape(self.fine_features, 3)
        tex = self.texture[0]
        logits = torch.cat((tex[:3] + torch.einsum("fhw,fk->khw", tex[4:], fine), tex[3:4]))[None]  # [1, 4, Ht, Wt]
        C = viewmats.shape[0]
        read = F.grid_sample(logits.expand(C, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)  # [C, 4, H, W]
        colour = torch.sigmoid(read[:, :3]).permute(0, 2, 3, 1)
        opacity = torch.sigmoid(read[:, 3:4]).permute(0, 2, 3, 1) * (field[:, 3:4].permute(0, 2, 3, 1) / _HALF_COVER).clamp(max=1.0)
        return colour, opacity

    # ------------------------------------------------------------ saving
    def state(self) -> dict:
        """The box, units and channel count, and the module's tensors (anchors and rest torso among them)."""
        return {"box": list(self.box), "unit": self.unit, "fine_features": self.fine_features,
                "weights": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict, device=None) -> "TorsoTexture":
        w = {k: v for k, v in state["weights"].items() if k != "anchor_uv"}  # derived (saved by the first files)
        module = cls(w["anchors"], tuple(state["box"]), w["texture"], w["anchor_log_scale"], w["torso_rest"],
                     state["unit"], state["fine_features"])
        module.load_state_dict(w)
        return module.to(device)


def _texture_from_frames(frames, box, z0: float, unit: float, H: int, W: int):
    """``(colour [3, H, W], cover [H, W])``: the texels seen through the torso's plane (at ``z0``) in up
    to three training frames, averaged where the person mask covers them; cover is the mean mask."""
    train = [int(i) for i in frames.train]
    picks = sorted({train[0], train[len(train) // 2], train[-1]})
    torso_all = getattr(frames, "torso", None)
    if torso_all is None:
        return None, None
    x0, x1, y0, y1 = box
    dtype, device = frames.viewmat.dtype, frames.viewmat.device
    xs = x0 + (torch.arange(W, dtype=dtype, device=device) + 0.5) / W * (x1 - x0)
    ys = y1 - (torch.arange(H, dtype=dtype, device=device) + 0.5) / H * (y1 - y0)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    local = torch.stack((xx, yy, torch.full_like(xx, z0)), -1).reshape(-1, 3) * unit
    colour_sum = torch.zeros(3, H * W, dtype=dtype, device=device)
    mask_sum = torch.zeros(H * W, dtype=dtype, device=device)
    V = frames.viewmat
    for i in picks:
        T = torso_all[i].to(dtype)
        cam = (local @ T[:3, :3].T + T[:3, 3]) @ V[:3, :3].T + V[:3, 3]
        px = cam @ frames.K[i].T
        px = px[:, :2] / px[:, 2:].clamp_min(1e-6)
        grid = torch.stack((px[:, 0] / frames.width * 2 - 1, px[:, 1] / frames.height * 2 - 1), -1)[None, None]
        img = frames.image(i).permute(2, 0, 1)[None]
        mask = frames.mask(i)[None, None].to(dtype)
        c = F.grid_sample(img, grid, align_corners=False, padding_mode="zeros")[0, :, 0]
        m = F.grid_sample(mask, grid, align_corners=False, padding_mode="zeros")[0, 0, 0]
        m = m * (cam[:, 2] > 0)
        colour_sum += c * m
        mask_sum += m
    mean_colour = colour_sum.sum(-1) / mask_sum.sum().clamp_min(1e-6)
    colour = torch.where(mask_sum > 1e-3, colour_sum / mask_sum.clamp_min(1e-6), mean_colour[:, None])
    return colour.reshape(3, H, W), (mask_sum / len(picks)).reshape(H, W)


class PortraitTextureGaussians(PortraitGaussians):
    """A portrait whose upper body is a :class:`TorsoTexture` (module docstring): surface and off-mesh
    Gaussians for the head, no torso Gaussians."""

    kind = "portrait_texture"
    learning_rates = {**PortraitGaussians.learning_rates, "torso_texture": "lr_torso_texture",
                      "torso_anchors": "lr_torso_anchors", "torso_decoder": "lr_torso_decoder"}

    def __init__(self, *args, torso_texture: TorsoTexture | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.torso_texture = torso_texture

    @classmethod
    def initialise(cls, model, cfg: MeshGaussiansConfig, vertices: Tensor | None = None,
                   n_condition: int | None = None, frames=None) -> "PortraitTextureGaussians":
        """:meth:`PortraitGaussians.initialise`, then the torso seeds become the texture's extent and
        are dropped as Gaussians. Without frames (or without torso seeds) there is no texture."""
        base = PortraitGaussians.initialise(model, cfg, vertices, n_condition, frames)
        on_torso = base.group == TORSO
        texture = None
        if frames is not None and bool(on_torso.any()):
            seeds = base.params["local_xyz"].detach()[on_torso]
            texture = TorsoTexture.from_seeds(seeds, base.torso_rest, base.torso_unit, cfg, frames)
        keep = ~on_torso
        return cls(base.faces, base.binding[keep], {k: v.detach()[keep] for k, v in base.params.items()},
                   base.sh_degree, base.group[keep], base.torso_rest, base.torso_unit,
                   canonical_vertices=base.canonical_vertices, deformer=base.deformer, sh_frame=base.sh_frame,
                   neck=base.neck, torso_texture=texture)

    def other_parameters(self) -> dict:
        out = dict(super().other_parameters())
        t = self.torso_texture
        if t is not None:
            out.update({"torso_texture": [t.texture],
                        "torso_anchors": [t.anchor_offset, t.anchor_log_scale],
                        "torso_decoder": list(t.decoder.parameters())})
        return out

    def _like(self, faces, binding, group, params, canonical_vertices, neck: dict | None | str = "same") -> "PortraitTextureGaussians":
        return PortraitTextureGaussians(faces, binding, params, self.sh_degree, group, self.torso_rest, self.torso_unit,
                                        canonical_vertices=canonical_vertices, deformer=self.deformer,
                                        sh_frame=self.sh_frame, neck=self.neck if neck == "same" else neck,
                                        torso_texture=self.torso_texture)

    def state(self) -> dict:
        out = super().state()
        out["torso_texture"] = None if self.torso_texture is None else self.torso_texture.state()
        return out

    @classmethod
    def from_state(cls, state: dict, device=None) -> "PortraitTextureGaussians":
        base = PortraitGaussians.from_state(state, device)
        t = state.get("torso_texture")
        return cls(base.faces, base.binding, {k: v.detach() for k, v in base.params.items()}, base.sh_degree,
                   base.group, base.torso_rest, base.torso_unit, canonical_vertices=base.canonical_vertices,
                   deformer=base.deformer, sh_frame=base.sh_frame, neck=base.neck,
                   torso_texture=None if t is None else TorsoTexture.from_state(t, device))

    def forward(self, state: FrameState) -> WorldGaussians:
        w = super().forward(state)
        if self.torso_texture is not None:
            B = state.vertices.shape[0]
            torso = state.torso if state.torso is not None else self.torso_rest[None]
            torso = torso.to(state.vertices).expand(B, 4, 4)
            texture = self.torso_texture

            def under(index: int, viewmats: Tensor, Ks: Tensor, width: int, height: int, renderer: dict):
                return texture.layer(torso[index], viewmats, Ks, width, height, renderer)

            w.under = under
        return w

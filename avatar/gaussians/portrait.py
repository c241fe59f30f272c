"""Portrait avatars: mesh-bound Gaussians plus Gaussians off the mesh (hair, glasses, beard,
the neck's outline) and on the upper body (shoulders, clothing).

Three groups of Gaussians share one set of parameters (so one densification strategy grows
and prunes them all, and children keep their parent's group):

- ``SURFACE``: the mesh-bound Gaussians of :class:`avatar.gaussians.mesh_gaussians.MeshGaussians`
  (UV grid on the triangles, held near their triangle by the trainer's ``xyz_threshold``).
- ``OFFMESH``: Gaussians where the person mask shows something the mesh does not cover, above
  the neck. Each is bound to its *nearest* triangle at initialisation and stored in that
  triangle's local frame, exactly as a surface Gaussian, but without the pull back to the
  surface (PSAvatar's off-surface points). We bind to triangles rather than to one rigid head
  frame because the nearest triangles carry the motion that matters locally: hair above the
  forehead follows the scalp, the beard's outline follows the jaw when the mouth opens, and the
  neck's outline follows the neck; far from the face the scalp's triangles barely deform, so
  this is the head's rigid motion there.
- ``TORSO``: Gaussians below the neck, in the torso's frame (:attr:`FrameState.torso`, a rigid
  transform per frame: origin between the shoulders, from the tracked shoulder state) in units
  of ``torso_unit`` metres: they are *skinned* rigidly to the shoulders' state. Without a torso
  in the frame state they sit at the avatar's rest torso (``torso_rest``), which is what a
  driver without a body gets.

The mesh's neck (ICT's reaches well into the collar) is one rigid part of the head in the model, so
a turned head would carry the collar the lower neck's Gaussians learn up the neck. Portraits
therefore skin the neck between head and torso (``cfg.neck_blend``): under the neck's cut each
vertex's position is a linear blend of where the head puts it and where the torso carries its
first training frame's position, the torso's share growing from 0 at the cut to 1 one blend
length below it (a neck joint's skinning, with the tracked torso as the second bone).

View-dependent colour is taken in the head's frame for all groups (``sh_frame="head"``), as for
mesh Gaussians; the torso's SH terms therefore turn with the head (a small error: torso
Gaussians learn little view dependence from a frontal video).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..geometry.mesh import triangle_frames
from ..geometry.rotations import axis_angle_to_matrix
from .base import FrameState, WorldGaussians
from .config import MeshGaussiansConfig
from .mesh_gaussians import _SH_C0, MeshGaussians, refuse_stretch

__all__ = ["OFFMESH", "PortraitGaussians", "SURFACE", "TORSO", "neck_cut", "neck_skinning", "offmesh_seeds", "outer_faces",
           "rest_torso"]

SURFACE, OFFMESH, TORSO = 0, 1, 2
# Model parts inside the head (ICT's names): never the nearest surface of hair or a beard.
_INNER_PARTS = ("eye", "teeth", "gum", "mouth")


def outer_faces(model) -> Tensor:
    """``[F]`` bool: the triangles of the model's outer surface (parts whose names are not those
    of eyes, teeth, gums or the mouth's interior; all triangles when the model names no parts)."""
    parts = getattr(model, "parts", None) or {}
    n = model.faces.shape[0]
    outer = [p.faces.cpu() for name, p in parts.items() if not any(k in name for k in _INNER_PARTS)]
    if not outer:
        return torch.ones(n, dtype=torch.bool)
    mask = torch.zeros(n, dtype=torch.bool)
    for m in outer:
        mask |= m
    return mask


def rest_torso(neck_base: Tensor) -> Tensor:
    """``[4, 4]`` a torso facing the camera (world axes) with its origin at ``neck_base [3]``:
    the rest state when no shoulders were tracked."""
    T = torch.eye(4, dtype=neck_base.dtype, device=neck_base.device)
    T[:3, 3] = neck_base
    return T


def offmesh_seeds(mask: Tensor, covered: Tensor, K: Tensor, viewmat: Tensor, depth: Tensor | float,
                  stride: int) -> tuple[Tensor, Tensor, Tensor]:
    """World points where the person mask shows something the mesh does not cover.

    Args:
        mask: ``[H, W]`` person mask in 0..1; covered: ``[H, W]`` bool, the mesh's silhouette.
        K: ``[3, 3]`` intrinsics (pixels); viewmat: ``[4, 4]`` world-to-camera (OpenCV).
        depth: camera depth (metres) the pixels are lifted to: a float or ``[H, W]``.
        stride: one seed per ``stride`` pixels each way (pixel centres of a regular grid).

    Returns:
        ``(points [P, 3] world metres, spacing [P] metres between neighbouring seeds at their
        depth, pixels [P, 2] (x, y))``.
    """
    H, W = mask.shape
    ys = torch.arange(stride // 2, H, stride, device=mask.device)
    xs = torch.arange(stride // 2, W, stride, device=mask.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    keep = (mask[gy, gx] > 0.5) & ~covered[gy, gx]
    px, py = gx[keep].to(K.dtype), gy[keep].to(K.dtype)
    z = depth[gy, gx][keep] if torch.is_tensor(depth) and depth.dim() == 2 else torch.full_like(px, float(depth))
    x = (px + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (py + 0.5 - K[1, 2]) / K[1, 1] * z
    cam = torch.stack((x, y, z), -1)
    inv = torch.linalg.inv(viewmat)
    world = cam @ inv[:3, :3].T + inv[:3, 3]
    spacing = stride * z / K[0, 0]
    return world, spacing, torch.stack((px, py), -1)


class PortraitGaussians(MeshGaussians):
    """Surface, off-mesh and torso Gaussians (see the module docstring).

    Beyond :class:`MeshGaussians`: ``group [N]`` (``SURFACE``, ``OFFMESH`` or ``TORSO``, kept in
    step with the parameters), ``torso_rest [4, 4]`` (the torso used when a frame gives none) and
    ``torso_unit`` (metres per torso-local unit), and ``neck`` (None, or ``{"weight": [V], "local": [V, 3]}``:
    each vertex's head share and its first training frame's position in the rest torso's frame, metres;
    :func:`neck_skinning`). A torso Gaussian's ``binding`` is -1.
    """

    kind = "portrait"
    seeds_from_frames = True  # initialise() takes the training frames (avatar.train.trainer.init_gaussians)

    def __init__(self, faces: Tensor, binding: Tensor, params: dict[str, Tensor], sh_degree: int,
                 group: Tensor, torso_rest: Tensor, torso_unit: float = 0.01,
                 canonical_vertices: Tensor | None = None, deformer: nn.Module | None = None,
                 sh_frame: str = "head", neck: dict | None = None):
        super().__init__(faces, binding, params, sh_degree, canonical_vertices, deformer, sh_frame)
        if group.shape != binding.shape:
            raise ValueError(f"group has {tuple(group.shape)} entries, binding {tuple(binding.shape)}")
        if tuple(torso_rest.shape) != (4, 4):
            raise ValueError(f"torso_rest must be [4, 4], got {tuple(torso_rest.shape)}")
        self.register_buffer("group", group.to(torch.uint8).clone())
        self.register_buffer("torso_rest", torso_rest.to(params["local_xyz"]).clone())
        self.torso_unit = float(torso_unit)
        if neck is not None and neck["weight"].shape[0] != neck["local"].shape[0]:
            raise ValueError(f"neck weight has {neck['weight'].shape[0]} vertices, local {neck['local'].shape[0]}")
        self.register_buffer("neck_weight", None if neck is None else neck["weight"].to(params["local_xyz"]).clone())
        self.register_buffer("neck_local", None if neck is None else neck["local"].to(params["local_xyz"]).clone())

    @property
    def neck(self) -> dict | None:
        """The neck's skinning between head and torso (module docstring), or None."""
        return None if self.neck_weight is None else {"weight": self.neck_weight, "local": self.neck_local}

    # ------------------------------------------------------------ initialisation
    @classmethod
    def initialise(cls, model, cfg: MeshGaussiansConfig, vertices: Tensor | None = None,
                   n_condition: int | None = None, frames=None) -> "PortraitGaussians":
        """Surface Gaussians on the UV grid (:meth:`MeshGaussians.from_uv_grid`), then off-mesh and
        torso Gaussians seeded from ``frames`` (a :class:`avatar.train.data.FrameSet`): the person
        mask's pixels outside the mesh's silhouette in ``cfg.offmesh_frames`` training frames
        (:func:`offmesh_seeds`), lifted to the head's depth above the neck and to the torso's below
        it, coloured from the image. Without frames, only the surface Gaussians."""
        refuse_stretch(cfg, cls.kind)
        surface = MeshGaussians.from_uv_grid(model, cfg, vertices, n_condition)
        p = {k: v.detach() for k, v in surface.params.items()}
        dtype, device = p["local_xyz"].dtype, p["local_xyz"].device
        binding, group = surface.binding, torch.zeros_like(surface.binding)
        torso_rest = rest_torso(torch.zeros(3, dtype=dtype, device=device))
        neck = None
        if frames is not None:
            cut = neck_cut(model, cfg, frames)
            extra, torso_rest = _seed_from_frames(model, cfg, frames, surface.faces, p, cut)
            if extra is not None:
                binding = torch.cat((binding, extra["binding"]))
                group = torch.cat((group, extra["group"]))
                p = {k: torch.cat((v, extra["params"][k])) for k, v in p.items()}
            if getattr(frames, "torso", None) is not None and cfg.neck_blend > 0:
                neck = neck_skinning(frames, cut, float(cfg.neck_blend), torso_rest)
        return cls(surface.faces, binding, p, cfg.sh_degree, group, torso_rest, cfg.torso_unit,
                   canonical_vertices=surface.canonical_vertices, deformer=surface.deformer, sh_frame=cfg.sh_frame,
                   neck=neck)

    # ------------------------------------------------------------ the interface
    def per_gaussian_buffers(self) -> dict[str, Tensor]:
        return {"binding": self.binding, "group": self.group}

    def anchor_distances(self) -> Tensor:
        """Surface Gaussians' distance from their triangle; 0 for the off-mesh and torso ones
        (they are not held to the surface)."""
        d = self.params["local_xyz"].norm(dim=-1)
        return torch.where(self.group == SURFACE, d, torch.zeros_like(d))

    def held_to_surface(self) -> Tensor:
        """The surface group only (off-mesh and torso Gaussians are not held to a triangle)."""
        return self.group == SURFACE

    def normal_extents(self) -> Tensor:
        """Surface Gaussians' extent across their triangle; 0 for the off-mesh and torso ones
        (hair, glasses and clothes are not laid flat)."""
        e = super().normal_extents()
        return torch.where(self.group == SURFACE, e, torch.zeros_like(e))

    def canonical_positions(self) -> Tensor:
        """``[N, 3]`` positions on the canonical mesh (torso Gaussians: in the rest torso)."""
        b = self.binding.clamp_min(0)
        local = self.params["local_xyz"].detach()
        mesh = self.canonical_origin[b] + self.canonical_scale[b, None] * (self.canonical_rotation[b] @ local[..., None])[..., 0]
        T = self.torso_rest
        torso = (local * self.torso_unit) @ T[:3, :3].T + T[:3, 3]
        return torch.where((self.group == TORSO)[:, None], torso, mesh)

    def _like(self, faces, binding, group, params, canonical_vertices, neck: dict | None | str = "same") -> "PortraitGaussians":
        return PortraitGaussians(faces, binding, params, self.sh_degree, group, self.torso_rest, self.torso_unit,
                                 canonical_vertices=canonical_vertices, deformer=self.deformer, sh_frame=self.sh_frame,
                                 neck=self.neck if neck == "same" else neck)

    def subset(self, index: Tensor) -> "PortraitGaussians":
        return self._like(self.faces, self.binding[index], self.group[index],
                          {k: v.detach()[index] for k, v in self.params.items()}, self.canonical_vertices)

    def compact(self) -> tuple[Tensor, "PortraitGaussians"]:
        """As :meth:`MeshGaussians.compact`; torso Gaussians stay unbound (-1)."""
        on_mesh = self.binding >= 0
        used_faces, inverse = torch.unique(self.binding[on_mesh], return_inverse=True)
        vidx, faces = torch.unique(self.faces[used_faces], return_inverse=True)
        binding = torch.full_like(self.binding, -1)
        binding[on_mesh] = inverse
        canonical = None if self.canonical_vertices is None else self.canonical_vertices[vidx]
        neck = None if self.neck is None else {k: v[vidx] for k, v in self.neck.items()}
        return vidx, self._like(faces, binding, self.group, {k: v.detach() for k, v in self.params.items()}, canonical,
                                neck)

    def state(self) -> dict:
        out = super().state()
        out.update({"group": self.group.detach().cpu().clone(), "torso_rest": self.torso_rest.detach().cpu().clone(),
                    "torso_unit": self.torso_unit,
                    "neck": None if self.neck is None else {k: v.detach().cpu().clone() for k, v in self.neck.items()}})
        return out

    @classmethod
    def from_state(cls, state: dict, device=None) -> "PortraitGaussians":
        base = MeshGaussians.from_state(state, device)
        neck = state.get("neck")  # files before the neck's skinning: the whole mesh follows the head
        return cls(base.faces, base.binding, {k: v.detach() for k, v in base.params.items()}, base.sh_degree,
                   state["group"].to(device), state["torso_rest"].to(device), state["torso_unit"],
                   canonical_vertices=base.canonical_vertices, deformer=base.deformer, sh_frame=base.sh_frame,
                   neck=None if neck is None else {k: v.to(device) for k, v in neck.items()})

    # ------------------------------------------------------------ posing
    def forward(self, state: FrameState) -> WorldGaussians:
        """World Gaussians: mesh-bound ones on ``state.vertices [B, V, 3]`` (as :class:`MeshGaussians`),
        torso ones in ``state.torso [B, 4, 4]`` (None: :attr:`torso_rest`)."""
        if not isinstance(state, FrameState):
            raise TypeError(f"PortraitGaussians takes a FrameState, got {type(state).__name__}")
        vertices, condition = state.vertices, state.expression
        B = vertices.shape[0]
        frame = self.sh_frame_matrices(state)
        torso = state.torso if state.torso is not None else self.torso_rest[None]
        torso = torso.to(vertices).expand(B, 4, 4)
        if self.neck_weight is not None:  # the neck under the cut: blended toward where the torso carries it
            carried = self.neck_local @ torso[:, :3, :3].transpose(-1, -2) + torso[:, None, :3, 3]
            w = self.neck_weight[:, None]
            vertices = w * vertices + (1 - w) * carried
        origin, rot, scale = triangle_frames(vertices, self.faces)
        # The torso's frame is one more "triangle" (index F): one gather gives every Gaussian its frame.
        F = origin.shape[1]
        b = torch.where(self.group == TORSO, torch.full_like(self.binding, F), self.binding.clamp_min(0))
        o = torch.cat((origin, torso[:, None, :3, 3]), 1)[:, b]  # [B, N, 3]
        r = torch.cat((rot, torso[:, None, :3, :3]), 1)[:, b]  # [B, N, 3, 3]
        k = torch.cat((scale, scale.new_full((B, 1), self.torso_unit)), 1)[:, b]  # [B, N]
        return self.on_frames(o, r, k, condition, frame)


def _seed_from_frames(model, cfg: MeshGaussiansConfig, frames, faces: Tensor, like: dict[str, Tensor], cut: float):
    """Off-mesh and torso Gaussians seeded from the frames' masks (see :meth:`PortraitGaussians.initialise`):
    ``({"binding", "group", "params"} | None, torso_rest [4, 4])``."""
    dtype, device = like["local_xyz"].dtype, like["local_xyz"].device
    train = [int(i) for i in frames.train]
    first = train[0]
    count = max(1, min(int(cfg.offmesh_frames), len(train)))
    picks = [train[round(j * (len(train) - 1) / max(1, count - 1))] for j in range(count)] if count > 1 else [first]
    points, spacing, colours, frame_of = _uncovered(frames, faces, picks, cut, max(1, int(cfg.offmesh_stride)))
    # Above or below the neck: the seed's height in the head's axes of its frame.
    R = axis_angle_to_matrix(frames.rotation[frame_of])  # [P, 3, 3]
    head_local = (R.transpose(-1, -2) @ (points - frames.translation[frame_of])[..., None])[..., 0]
    on_torso = head_local[:, 1] < cut
    # The rest torso: the tracked one of the first training frame, else a torso facing the camera
    # whose origin is the neck's base (at the cut, in the first frame's head pose).
    torso_all = getattr(frames, "torso", None)
    if torso_all is not None:
        torso_rest = torso_all[first].to(dtype)
    else:
        base = torch.tensor([0.0, cut, 0.0], dtype=dtype, device=device)
        torso_rest = rest_torso(axis_angle_to_matrix(frames.rotation[first][None])[0] @ base + frames.translation[first])
    T = torso_all[frame_of].to(dtype) if torso_all is not None else torso_rest[None].expand(points.shape[0], 4, 4)
    # Torso seeds are lifted again, to the torso's depth (the camera depth of its origin in that frame).
    V = frames.viewmat
    cam_p = points @ V[:3, :3].T + V[:3, 3]
    cam_t = T[:, :3, 3] @ V[:3, :3].T + V[:3, 3]
    ratio = torch.where(on_torso, cam_t[:, 2] / cam_p[:, 2], torch.ones_like(cam_p[:, 2]))
    inv = torch.linalg.inv(V)
    points = (cam_p * ratio[:, None]) @ inv[:3, :3].T + inv[:3, 3]
    spacing = spacing * ratio
    n = points.shape[0]
    if n == 0:
        return None, torso_rest
    if n > cfg.offmesh_max:
        keep = torch.randperm(n, device=device)[: int(cfg.offmesh_max)]
        points, spacing, colours, frame_of, on_torso, T = (x[keep] for x in (points, spacing, colours, frame_of, on_torso, T))
    binding, local, unit = _bind(points, frame_of, on_torso, T, frames, faces, outer_faces(model).to(device),
                                 cfg.torso_unit)
    params = _seed_params(local, torch.log(cfg.init_scale * spacing / unit), colours, cfg.init_opacity, num_sh(like))
    group = torch.where(on_torso, torch.full_like(binding, TORSO), torch.full_like(binding, OFFMESH))
    return {"binding": binding, "group": group, "params": params}, torso_rest


def neck_cut(model, cfg: MeshGaussiansConfig, frames) -> float:
    """The neck's cut: ``cfg.neck_length`` under the chin (the lowest landmark of the subject's
    neutral face), a height in the head's own axes."""
    lmk = getattr(model, "lmk_faces", None)
    with torch.no_grad():
        neutral = model(shape=frames.shape[None]).vertices[0]
        chin = float(model.landmarks(neutral[None])[0, :, 1].min()) if lmk is not None and lmk.numel() else \
            float(neutral[:, 1].min())
    return chin - cfg.neck_length


def neck_skinning(frames, cut: float, blend: float, torso_rest: Tensor) -> dict | None:
    """The neck's skinning between head and torso, measured on the first training frame:
    ``{"weight": [V], "local": [V, 3]}``, each vertex's head share (1 at and above ``cut``, a height in
    the head's axes, falling linearly to 0 at ``cut - blend``) and its position in ``torso_rest``'s
    frame (metres). None when no vertex lies under the cut."""
    first = int(frames.train[0])
    v = frames.vertices[first]
    height = _head_heights(frames, first)
    weight = ((height - (cut - blend)) / blend).clamp(0.0, 1.0)
    if bool((weight >= 1).all()):
        return None
    T = torso_rest.to(v)
    return {"weight": weight, "local": (v - T[:3, 3]) @ T[:3, :3]}


def _head_heights(frames, i: int) -> Tensor:
    """``[V]`` each vertex's height in the head's own axes in frame ``i`` (its tracked pose undone)."""
    v = frames.vertices[i]
    R = axis_angle_to_matrix(frames.rotation[i][None])[0].to(v)
    return ((v - frames.translation[i].to(v)) @ R)[:, 1]


def _uncovered(frames, faces: Tensor, picks: list[int], cut: float, stride: int):
    """``(points [P, 3], spacing [P], colours [P, 3], frame [P])``: :func:`offmesh_seeds` of frames
    ``picks`` at the head's median depth. The mesh covers a pixel only above the neck's ``cut`` (a
    height in the head's axes): below it (the mesh's neck stub over the collar) the torso is seeded too."""
    from ..render import rasterize_mesh  # noqa: PLC0415

    out = []
    V = frames.viewmat
    for i in picks:
        v = frames.vertices[i]
        r = rasterize_mesh(v[None], faces, frames.K[i][None], frames.width, frames.height, V[None])
        height = _head_heights(frames, i)
        y = (height[faces[r.triangle_id[0].clamp_min(0)]] * r.bary[0]).sum(-1)
        covered = r.mask[0] & (y >= cut)
        depth = (v @ V[:3, :3].T + V[:3, 3])[:, 2].median()
        world, space, px = offmesh_seeds(frames.mask(i), covered, frames.K[i], V, depth, stride)
        colour = frames.image(i)[px[:, 1].long(), px[:, 0].long()]
        out.append((world, space, colour, torch.full((world.shape[0],), i, dtype=torch.long, device=world.device)))
    return tuple(torch.cat(x) for x in zip(*out))


def _bind(points: Tensor, frame_of: Tensor, on_torso: Tensor, T: Tensor, frames, faces: Tensor, outer: Tensor,
          torso_unit: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(binding [P], local [P, 3], unit [P])`` of seeds ``points [P, 3]``: head seeds in the frame of the
    nearest outer triangle (by centroid) of their frame's posed mesh, torso seeds in their frame's
    torso ``T [P, 4, 4]`` (binding -1); ``unit`` the metres per local unit."""
    n = points.shape[0]
    binding = torch.full((n,), -1, dtype=torch.long, device=points.device)
    local = torch.zeros_like(points)
    unit = torch.full((n,), float(torso_unit), dtype=points.dtype, device=points.device)
    outer_ids = outer.nonzero().squeeze(-1)
    for i in frame_of.unique().tolist():
        sel = (frame_of == i) & ~on_torso
        if not sel.any():
            continue
        origin, rot, scale = triangle_frames(frames.vertices[i], faces)
        face = outer_ids[torch.cdist(points[sel], origin[outer_ids]).argmin(-1)]
        binding[sel] = face
        local[sel] = (rot[face].transpose(-1, -2) @ (points[sel] - origin[face])[..., None])[..., 0] / scale[face][:, None]
        unit[sel] = scale[face]
    if on_torso.any():
        Tt = T[on_torso]
        local[on_torso] = (Tt[:, :3, :3].transpose(-1, -2) @ (points[on_torso] - Tt[:, :3, 3])[..., None])[..., 0] / torso_unit
    return binding, local, unit


def _seed_params(local: Tensor, log_scale: Tensor, colours: Tensor, opacity: float, n_sh: int) -> dict[str, Tensor]:
    """Parameters of new Gaussians at ``local [P, 3]`` with isotropic ``log_scale [P]`` (local units),
    base colour ``colours [P, 3]`` (0..1), opacity ``opacity`` and ``n_sh`` SH bases."""
    n, dtype, device = local.shape[0], local.dtype, local.device
    quat = torch.zeros(n, 4, dtype=dtype, device=device)
    quat[:, 0] = 1
    return {
        "local_xyz": local,
        "local_quat": quat,
        "log_scale": log_scale.clamp(-12, 4)[:, None].expand(-1, 3).clone(),
        "opacity_logit": torch.full((n,), math.log(opacity / (1 - opacity)), dtype=dtype, device=device),
        "sh0": ((colours.to(dtype) - 0.5) / _SH_C0)[:, None, :],
        "shN": torch.zeros(n, n_sh - 1, 3, dtype=dtype, device=device),
    }


def num_sh(params: dict[str, Tensor]) -> int:
    """SH bases per Gaussian of a parameter dict (``sh0`` + ``shN`` rows)."""
    return params["sh0"].shape[1] + params["shN"].shape[1]

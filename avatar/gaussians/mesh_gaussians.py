"""Gaussians bound to the triangles of a parametric mesh, initialised on a UV grid.

Each Gaussian stores its parent triangle (``binding``) and its position, rotation and
log-scale in that triangle's local frame (origin at the centroid, axes from an edge and
the normal, scaled by the triangle's mean edge length: :func:`avatar.geometry.mesh.triangle_frames`).
World parameters are recomputed from the posed mesh every frame, so the Gaussians follow
the mesh's expression and pose (GaussianAvatars / SplattingAvatar); the initial positions
are a uniform grid in UV space (FlashAvatar's UV layout), so texture-rich regions are
covered evenly regardless of triangle sizes.

Parameters live in ``self.params`` (an ``nn.ParameterDict``, one tensor per kind, first
dimension N) so that a densification strategy can grow and prune them together with the
optimizer's state; ``binding`` is a buffer kept in step with them.

Colour is view-dependent (SH). ``sh_frame`` says which axes the SH directions are taken
in: ``"head"`` (the default for new avatars) evaluates them in the head's frame, so the
colours turn with the head as a surface's appearance does, and in a video shot from one
camera the view-dependent terms can follow how the head is lit as it turns (the lighting is
fixed in the world; the head's orientation relative to it is what changes); ``"world"``
evaluates them in world axes as plain 3DGS does (avatars trained before this option).

``stretch`` (off unless the config turns it on): a triangle frame is a similarity, so a
triangle that stretches one way (a lid closing over the eyeball stretches up to 3.8 times
along one axis while its mean edge grows 1.2 times) carries its Gaussians bunched round its
centre. With ``stretch`` each Gaussian follows the triangle's affine map from the canonical
mesh: its position keeps its barycentric place (as SplattingAvatar's points do) and its
covariance is carried by the map (``WorldGaussians.covars``, which the rasterizer draws;
``WorldGaussians.shapes`` gives the rotation and sizes for exports). Under a similarity the map
is the frame itself and nothing changes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..geometry.mesh import face_vertices, triangle_frames
from ..geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_quaternion,
    normalize_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
)
from ..render import cpu_kernels
from ..render.sh import num_sh_bases
from ..render.torch_backend import compiled_forward
from .base import FrameState, GaussianAvatar, WorldGaussians
from .config import MeshGaussiansConfig


def _compiled(*tensors: Tensor) -> bool:
    """Whether posing can take the compiled loop: a forward-only CPU pose in float32 or float64."""
    return tensors[0].dtype in (torch.float32, torch.float64) and compiled_forward(tensors[0].device, *tensors)

__all__ = ["FrameState", "MeshGaussians", "MeshGaussiansConfig", "SH_FRAMES", "WorldGaussians", "uv_samples"]

SH_FRAMES = ("head", "world")

_SH_C0 = 0.28209479177387814


def edge_frames(vertices: Tensor, faces: Tensor) -> Tensor:
    """``[..., F, 3, 3]`` per triangle the columns ``(v1 - v0, v2 - v0, m)`` with ``m`` the normal
    of length ``sqrt(|(v1 - v0) x (v2 - v0)|)``: a basis that an affine map of the triangle
    (thickness following the square root of its area) carries along, and a similarity scales
    and turns as it does the triangle."""
    tri = face_vertices(vertices, faces)
    e1, e2 = tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :]
    c = torch.linalg.cross(e1, e2, dim=-1)
    m = c / c.norm(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)
    return torch.stack((e1, e2, m), dim=-1)


def refuse_stretch(cfg: MeshGaussiansConfig, kind: str) -> None:
    """Raise for ``cfg.stretch`` in a kind whose Gaussians do not stretch (only ``mesh_gaussians`` does)."""
    if cfg.stretch:
        raise ValueError(f"train.gaussians.stretch is for head avatars (kind mesh_gaussians); the {kind} kind "
                         "does not stretch its Gaussians: set train.gaussians.stretch=false")


def uv_samples(uvs: Tensor, uv_faces: Tensor, face_mask: Tensor, resolution: float) -> tuple[Tensor, Tensor]:
    """Points of a regular grid in UV space that fall inside the selected triangles.

    Args:
        uvs: ``[T, 2]`` UV coordinates; uv_faces: ``[F, 3]``; face_mask: ``[F]`` bool.
        resolution: grid points per unit of UV (cell centres), over the selected faces' UV box.

    Returns:
        ``(face_index [S], barycentric [S, 3])`` of every grid point inside a selected triangle
        (the first triangle in index order where selected UV triangles overlap).
    """
    face_ids = face_mask.nonzero().squeeze(-1)
    if not len(face_ids):  # e.g. a part wholly inside one listed before it
        return face_ids, torch.zeros(0, 3, dtype=uvs.dtype)
    faces = uv_faces[face_ids]
    tri = uvs[faces].double()  # [F', 3, 2]
    lo = torch.floor(tri.reshape(-1, 2).min(0).values * resolution)
    hi = torch.ceil(tri.reshape(-1, 2).max(0).values * resolution)
    # Per triangle: the grid cells of its bounding box, tested with edge functions.
    tmin = torch.floor(tri.min(1).values * resolution - 0.5).clamp_min(lo)
    tmax = torch.ceil(tri.max(1).values * resolution - 0.5).clamp_max(hi)
    span = (tmax - tmin + 1).clamp_min(0).long()  # [F', 2]
    count = span[:, 0] * span[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(faces)), count)
    local = torch.arange(owner.numel()) - (torch.cumsum(count, 0) - count)[owner]
    cell = tmin[owner] + torch.stack((local % span[owner, 0], local // span[owner, 0]), -1).double()
    p = (cell + 0.5) / resolution  # [M, 2] UV of the cell centre
    a, b, c = tri[owner, 0], tri[owner, 1], tri[owner, 2]
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok_den = den.abs() > 1e-18
    den = torch.where(ok_den, den, torch.ones_like(den))
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = torch.stack((1 - w1 - w2, w1, w2), -1)
    inside = ok_den & (bary >= -1e-9).all(-1)
    cell_key = ((cell[:, 1] - lo[1]) * (hi[0] - lo[0] + 1) + (cell[:, 0] - lo[0])).long()
    owner, bary, cell_key = owner[inside], bary[inside], cell_key[inside]
    # One sample per grid cell: keep the lowest face index where triangles touch or overlap.
    order = torch.argsort(cell_key * (len(faces) + 1) + owner)
    cell_key, owner, bary = cell_key[order], owner[order], bary[order]
    first = torch.ones_like(cell_key, dtype=torch.bool)
    first[1:] = cell_key[1:] != cell_key[:-1]
    return face_ids[owner[first]], bary[first].clamp_min(0).float()


class MeshGaussians(GaussianAvatar):
    """Gaussians bound to mesh triangles: ``binding [N]`` plus per-Gaussian local parameters.

    ``params``: ``local_xyz [N,3]`` (triangle-frame coordinates in units of the triangle's
    scale), ``local_quat [N,4]`` (w,x,y,z, relative to the frame), ``log_scale [N,3]``
    (relative to the triangle's scale), ``opacity_logit [N]``, ``sh0 [N,1,3]``, ``shN [N,K-1,3]``.
    Sizes and distances the strategy and the trainer's regularisers see are in units of the
    parent triangle's scale.
    """

    kind = "mesh_gaussians"
    learning_rates = {"local_xyz": "lr_xyz", "local_quat": "lr_quat", "log_scale": "lr_scale",
                      "opacity_logit": "lr_opacity", "sh0": "lr_sh0", "shN": "lr_shN", "deformer": "lr_deform"}

    def __init__(self, faces: Tensor, binding: Tensor, params: dict[str, Tensor], sh_degree: int,
                 canonical_vertices: Tensor | None = None, deformer: nn.Module | None = None,
                 sh_frame: str = "world", stretch: bool = False):
        super().__init__()
        if sh_frame not in SH_FRAMES:
            raise ValueError(f"sh_frame must be one of {SH_FRAMES}, got {sh_frame!r}")
        n = binding.shape[0]
        for name, value in params.items():
            if value.shape[0] != n:
                raise ValueError(f"parameter {name!r} has {value.shape[0]} rows, binding has {n}")
        if deformer is not None and canonical_vertices is None:
            raise ValueError("a deformer needs canonical_vertices (the mesh its positions are encoded on)")
        if stretch and canonical_vertices is None:
            raise ValueError("stretch needs canonical_vertices (the mesh the Gaussians' frames are measured on)")
        self.sh_degree = sh_degree
        self.sh_frame = sh_frame
        self.register_buffer("faces", faces.long().clone())
        self.register_buffer("binding", binding.long().clone())
        self.params = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in params.items()})
        self.register_buffer("canonical_vertices", None if canonical_vertices is None else canonical_vertices.clone())
        # The canonical mesh never changes: its triangle frames are computed once (not saved; derived).
        frames = (None, None, None) if canonical_vertices is None else triangle_frames(canonical_vertices, self.faces)
        for name, value in zip(("canonical_origin", "canonical_rotation", "canonical_scale"), frames):
            self.register_buffer(name, None if value is None else value.detach().clone(), persistent=False)
        self.stretch = bool(stretch)
        # stretch: per triangle the map from frame coordinates to the canonical edge basis,
        # E0^-1 k0 R0 (float64 for the inverse), and which triangles are degenerate there (they
        # keep the similarity frame).
        to_edges = flat = None
        if self.stretch:
            e0 = edge_frames(self.canonical_vertices.double(), self.faces)
            flat = torch.linalg.det(e0).abs() <= 1e-30
            inv = torch.linalg.inv(torch.where(flat[:, None, None], torch.eye(3, dtype=e0.dtype, device=e0.device), e0))
            frame = self.canonical_scale.double()[:, None, None] * self.canonical_rotation.double()
            to_edges = (inv @ frame).to(self.canonical_vertices.dtype)
        self.register_buffer("canonical_to_edges", to_edges, persistent=False)
        self.register_buffer("canonical_flat", flat, persistent=False)
        self.deformer = deformer

    @classmethod
    def initialise(cls, model, cfg: MeshGaussiansConfig, vertices: Tensor | None = None,
                   n_condition: int | None = None) -> "MeshGaussians":
        """The kind's initialisation from its config (the registry's entry point): :meth:`from_uv_grid`."""
        return cls.from_uv_grid(model, cfg, vertices, n_condition)

    @classmethod
    def from_uv_grid(cls, model, cfg: MeshGaussiansConfig, vertices: Tensor | None = None,
                     n_condition: int | None = None) -> "MeshGaussians":
        """Initialise one Gaussian per UV grid point on the chosen parts of ``model``.

        ``model`` exposes ``faces``, ``uvs``, ``uv_faces`` and ``parts`` (``avatar.models``);
        ``vertices [V,3]`` is the mesh the local frames are measured on (default: the
        model's neutral output). ``n_condition``: length of the per-frame condition
        (expression coefficients) when ``cfg.deform`` is on.
        """
        if getattr(model, "uvs", None) is None or getattr(model, "uv_faces", None) is None:
            raise ValueError(f"{type(model).__name__} has no UV layout; UV-grid initialisation needs one")
        faces = model.faces
        if vertices is None:
            with torch.no_grad():
                vertices = model().vertices[0]
        vertices = vertices.detach()
        names = cfg.parts if cfg.parts is not None else tuple(model.parts)
        taken = torch.zeros(faces.shape[0], dtype=torch.bool)
        samples = []
        for name in names:  # part by part: parts may share a UV chart (left and right eyeballs)
            if name not in model.parts:
                raise KeyError(f"model has no part {name!r}; it has {sorted(model.parts)}")
            mask = model.parts[name].faces.cpu() & ~taken  # a face in two parts: the first listed
            taken |= mask
            res = float(cfg.part_uv_resolution.get(name, cfg.uv_resolution))
            face, bary = uv_samples(model.uvs.cpu(), model.uv_faces.cpu(), mask, res)
            samples.append((face, bary, torch.full((face.numel(),), res)))
        face_idx, bary, resolution = (torch.cat(parts) for parts in zip(*samples))
        face_idx, bary, resolution = face_idx.to(vertices.device), bary.to(vertices), resolution.to(vertices)
        if face_idx.numel() == 0:
            raise ValueError(f"no UV samples on parts {names} at uv_resolution={cfg.uv_resolution}")

        origin, rot, scale = triangle_frames(vertices, faces)
        points = (vertices[faces[face_idx]] * bary[..., None]).sum(-2)  # [N, 3]
        k = scale[face_idx]
        local_xyz = (rot[face_idx].transpose(-1, -2) @ (points - origin[face_idx])[..., None])[..., 0] / k[:, None]
        # Surface spacing of the UV grid: sqrt(world area / UV area) / resolution, per triangle.
        tri_w = vertices[faces[face_idx]]
        tri_uv = model.uvs.to(vertices)[model.uv_faces[face_idx]]
        area_w = torch.linalg.cross(tri_w[:, 1] - tri_w[:, 0], tri_w[:, 2] - tri_w[:, 0]).norm(dim=-1) / 2
        e1, e2 = tri_uv[:, 1] - tri_uv[:, 0], tri_uv[:, 2] - tri_uv[:, 0]
        area_uv = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs() / 2
        spacing = (area_w / area_uv.clamp_min(1e-12)).sqrt() / resolution
        log_scale = torch.log(cfg.init_scale * spacing / k).clamp(-12, 2)[:, None].expand(-1, 3).clone()

        n, kk = face_idx.shape[0], num_sh_bases(cfg.sh_degree)
        quat = torch.zeros(n, 4, dtype=vertices.dtype, device=vertices.device)
        quat[:, 0] = 1
        color = torch.tensor(cfg.init_color, dtype=vertices.dtype, device=vertices.device)
        params = {
            "local_xyz": local_xyz,
            "local_quat": quat,
            "log_scale": log_scale,
            "opacity_logit": torch.full((n,), math.log(cfg.init_opacity / (1 - cfg.init_opacity)), dtype=vertices.dtype,
                                        device=vertices.device),
            "sh0": ((color - 0.5) / _SH_C0).expand(n, 1, 3).clone(),
            "shN": torch.zeros(n, kk - 1, 3, dtype=vertices.dtype, device=vertices.device),
        }
        deformer = None
        if cfg.deform:
            if not n_condition:
                raise ValueError("deform=true needs the number of expression coefficients (n_condition)")
            from .deform import build_deformer  # noqa: PLC0415

            deformer = build_deformer({"model": cfg.deform_model, "n_condition": n_condition, "hidden": cfg.deform_hidden,
                                       "layers": cfg.deform_layers, "frequencies": cfg.deform_frequencies}).to(vertices)
        keep_canonical = deformer is not None or cfg.stretch
        return cls(faces, face_idx, params, cfg.sh_degree, canonical_vertices=vertices if keep_canonical else None,
                   deformer=deformer, sh_frame=cfg.sh_frame, stretch=cfg.stretch)

    def canonical_positions(self) -> Tensor:
        """``[N, 3]`` positions on the canonical mesh (no gradient), what the deformer encodes."""
        b = self.binding
        local = self.params["local_xyz"].detach()
        return self.canonical_origin[b] + self.canonical_scale[b, None] * (self.canonical_rotation[b] @ local[..., None])[..., 0]

    def __len__(self) -> int:
        return self.binding.shape[0]

    # ------------------------------------------------------------ the interface's densification side
    def per_gaussian_buffers(self) -> dict[str, Tensor]:
        return {"binding": self.binding}

    def other_parameters(self) -> dict:
        return {} if self.deformer is None else {"deformer": list(self.deformer.parameters())}

    def local_scales(self) -> Tensor:
        return torch.exp(self.params["log_scale"])

    def anchor_distances(self) -> Tensor:
        return self.params["local_xyz"].norm(dim=-1)

    def held_to_surface(self) -> Tensor:
        return torch.ones_like(self.binding, dtype=torch.bool)

    def normal_extents(self) -> Tensor:
        # The frame's third axis is the triangle's normal: the extent along it is |S R^T n| with
        # R the Gaussian's rotation in the frame, so R^T n is R's last row.
        rot = quaternion_to_matrix(normalize_quaternion(self.params["local_quat"]))
        return (torch.exp(self.params["log_scale"]) * rot[:, 2, :]).norm(dim=-1)

    def opacities(self) -> Tensor:
        return torch.sigmoid(self.params["opacity_logit"])

    def split_children(self, index: Tensor, factor: float) -> dict[str, Tensor]:
        """Two children per parent, sampled from the parent Gaussian in its triangle's frame,
        ``factor`` times smaller."""
        p = self.params
        scale = torch.exp(p["log_scale"][index])  # [S, 3]
        rot = quaternion_to_matrix(p["local_quat"][index])  # [S, 3, 3]
        noise = torch.randn(2, *scale.shape, device=scale.device, dtype=scale.dtype)
        offsets = (rot[None] @ (noise * scale)[..., None])[..., 0]
        out = {k: v[index][None].expand(2, *v[index].shape).clone() for k, v in p.items()}
        out["local_xyz"] = p["local_xyz"][index][None] + offsets
        out["log_scale"] = out["log_scale"] - math.log(factor)
        return out

    def subset(self, index: Tensor) -> "MeshGaussians":
        """A new :class:`MeshGaussians` with the Gaussians ``index`` (indices or a bool mask),
        the same mesh and the same deformer (shared, not copied)."""
        return MeshGaussians(self.faces, self.binding[index], {k: v.detach()[index] for k, v in self.params.items()},
                             self.sh_degree, canonical_vertices=self.canonical_vertices, deformer=self.deformer,
                             sh_frame=self.sh_frame, stretch=self.stretch)

    def compact(self) -> tuple[Tensor, "MeshGaussians"]:
        """The vertices of the triangles the Gaussians sit on ``[V']``, and these Gaussians re-bound
        to that sub-mesh (same parameters; the deformer shared)."""
        used_faces, binding = torch.unique(self.binding, return_inverse=True)
        vidx, faces = torch.unique(self.faces[used_faces], return_inverse=True)
        canonical = None if self.canonical_vertices is None else self.canonical_vertices[vidx]
        sub = MeshGaussians(faces, binding, {k: v.detach() for k, v in self.params.items()}, self.sh_degree,
                            canonical_vertices=canonical, deformer=self.deformer, sh_frame=self.sh_frame,
                            stretch=self.stretch)
        return vidx, sub

    # ------------------------------------------------------------ saving
    def state(self) -> dict:
        """Parameters, binding, mesh faces, SH settings and the deformer (weights, config and
        canonical mesh): plain tensors and values."""
        out = {
            "faces": self.faces.detach().cpu().clone(),
            "binding": self.binding.detach().cpu().clone(),
            "params": {k: v.detach().cpu().clone() for k, v in self.params.items()},
            "sh_degree": self.sh_degree,
            "sh_frame": self.sh_frame,
        }
        if self.deformer is not None:
            out.update({"deformer": {k: v.detach().cpu().clone() for k, v in self.deformer.state_dict().items()},
                        "deformer_config": dict(self.deformer.config)})
        if self.canonical_vertices is not None:
            out["canonical_vertices"] = self.canonical_vertices.detach().cpu().clone()
        if self.stretch:
            out["stretch"] = True
        return out

    @classmethod
    def from_state(cls, state: dict, device=None) -> "MeshGaussians":
        """Rebuild from :meth:`state` (also the layout of checkpoints and packages of format 1,
        whose ``sh_frame`` defaults to ``"world"`` when they predate it)."""
        deformer = None
        if state.get("deformer") is not None:
            from .deform import build_deformer  # noqa: PLC0415

            deformer = build_deformer(state["deformer_config"])
            deformer.load_state_dict(state["deformer"])
            deformer = deformer.to(device)
        canonical = state.get("canonical_vertices")
        return cls(state["faces"].to(device), state["binding"].to(device),
                   {k: v.to(device) for k, v in state["params"].items()}, state["sh_degree"],
                   canonical_vertices=None if canonical is None else canonical.to(device), deformer=deformer,
                   sh_frame=state.get("sh_frame", "world"), stretch=bool(state.get("stretch", False)))

    # ------------------------------------------------------------ posing
    def sh_frame_matrices(self, state: FrameState) -> Tensor | None:
        """``[B, 3, 3]`` the axes the SH view directions are taken in: the head's rotation for
        ``sh_frame="head"`` (required then), None for ``"world"``."""
        if self.sh_frame != "head":
            return None
        rotation = state.rotation
        if rotation is None:
            raise ValueError("these Gaussians take SH directions in the head's frame (sh_frame='head'): "
                             "pass the head rotation the mesh was posed with")
        frame = rotation if rotation.dim() == 3 else axis_angle_to_matrix(rotation.reshape(-1, 3))
        return frame.to(state.vertices.dtype).expand(state.vertices.shape[0], 3, 3)

    def forward(self, state: FrameState) -> WorldGaussians:
        """World-space Gaussians on the posed mesh ``state.vertices [B, V, 3]``.

        ``state.expression [B, E]``: the frames' expression coefficients, used by the deformer
        when there is one (zeros when not given). ``state.rotation [B, 3]`` (axis-angle) or
        ``[B, 3, 3]`` (matrices): the head rotation the mesh was posed with; needed when
        ``sh_frame`` is ``"head"``, ignored for ``"world"``.
        """
        if not isinstance(state, FrameState):
            raise TypeError(f"MeshGaussians takes a FrameState, got {type(state).__name__}")
        vertices, condition = state.vertices, state.expression
        frame = self.sh_frame_matrices(state)
        origin, rot, scale = triangle_frames(vertices, self.faces)
        b = self.binding
        stretch = self.frame_stretch(vertices, rot, scale)[:, b] if self.stretch else None
        return self.on_frames(origin[:, b], rot[:, b], scale[:, b], condition, frame, stretch)

    def frame_stretch(self, vertices: Tensor, rot: Tensor, scale: Tensor) -> Tensor:
        """``[B, F, 3, 3]`` per triangle of the posed mesh ``vertices [B, V, 3]`` (frames ``rot``,
        ``scale`` from :func:`triangle_frames`): the triangle's affine map from the canonical mesh
        in its own frame's coordinates, ``(k R)^-1 E E0^-1 k0 R0`` (the identity under a
        similarity; degenerate triangles get the identity)."""
        world = edge_frames(vertices, self.faces) @ self.canonical_to_edges.to(vertices.dtype)  # frame coords -> world
        d = rot.transpose(-1, -2) @ world / scale.clamp_min(1e-12)[..., None, None]
        return torch.where(self.canonical_flat[:, None, None], torch.eye(3, dtype=d.dtype, device=d.device), d)

    def on_frames(self, o: Tensor, r: Tensor, k: Tensor, condition: Tensor | None,
                  sh_frame: Tensor | None, stretch: Tensor | None = None) -> WorldGaussians:
        """The Gaussians placed in their per-Gaussian frames: origins ``o [B, N, 3]``, rotations
        ``r [B, N, 3, 3]`` and scales ``k [B, N]`` (a triangle's, or any frame a subclass binds
        Gaussians to), after the deformer's offsets for ``condition [B, C]`` (zeros when None).
        ``stretch [B, N, 3, 3]``: the frame's affine stretch (:meth:`frame_stretch`), None for none."""
        p = self.params
        xyz, quat, log_scale = p["local_xyz"][None], p["local_quat"][None], p["log_scale"][None]
        if self.deformer is not None:
            if condition is None:
                condition = o.new_zeros(o.shape[0], self.deformer.n_condition)
            # a deformer built on these Gaussians' positions only checks their count
            positions = self.canonical_positions() if self.deformer.uses_positions else p["local_xyz"]
            d_xyz, d_quat, d_scale = self.deformer(positions, condition.reshape(-1, condition.shape[-1]))
            xyz, quat, log_scale = xyz + d_xyz, quat + d_quat, log_scale + d_scale
        if stretch is None and o.shape[0] == 1 and _compiled(o, r, k, xyz, quat, log_scale):
            # forward-only on a CPU (live, render): one compiled loop instead of some thirty tensor ops
            means, quats, scales = cpu_kernels.place_gaussians(o[0], r[0], k[0], xyz[0], quat[0], log_scale[0])
            return WorldGaussians(means=means[None], quats=quats[None], scales=scales[None], covars=None,
                                  opacities=torch.sigmoid(p["opacity_logit"]), sh=torch.cat((p["sh0"], p["shN"]), dim=1),
                                  sh_frame=sh_frame)
        scales = torch.exp(log_scale) * k[..., None]
        covars = None
        if stretch is not None:
            xyz = (stretch @ xyz[..., None])[..., 0]
            # the Gaussian's axes times its sizes, in the frame, carried by the stretch into world axes
            axes = quaternion_to_matrix(normalize_quaternion(quat)) * torch.exp(log_scale)[..., None, :]
            world = k[..., None, None] * (r @ (stretch @ axes))
            covars = world @ world.transpose(-1, -2)
        means = o + k[..., None] * (r @ xyz[..., None])[..., 0]
        frame_q = matrix_to_quaternion(r)
        quats = quaternion_multiply(frame_q, normalize_quaternion(quat).expand_as(frame_q))
        return WorldGaussians(means=means, quats=quats, scales=scales, covars=covars,
                              opacities=torch.sigmoid(p["opacity_logit"]), sh=torch.cat((p["sh0"], p["shN"]), dim=1),
                              sh_frame=sh_frame)

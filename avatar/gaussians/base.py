"""The avatar interface: what the trainer, the densification strategy, export, render and live
see of any avatar kind.

An avatar kind (mesh-bound Gaussians for heads, skinned body Gaussians; off-mesh points or a
neural texture next) is an ``nn.Module`` that

- holds its per-Gaussian parameters in ``params`` (an ``nn.ParameterDict``, each tensor's first
  dimension the number of Gaussians ``N``) and its per-Gaussian buffers (for example the parent
  triangle ``binding``) in :meth:`GaussianAvatar.per_gaussian_buffers`: these are the tensors that
  grow and shrink together when Gaussians are cloned, split or pruned;
- may hold other trainable modules (an expression MLP): :meth:`GaussianAvatar.other_parameters`;
- turns a :class:`FrameState` (the posed model of one or more frames) into
  :class:`WorldGaussians` with ``forward``;
- tells the strategy what it needs to refine: each Gaussian's size and opacity
  (:meth:`GaussianAvatar.sizes`, :meth:`GaussianAvatar.opacities`) and where the two children of
  a split go (:meth:`GaussianAvatar.split_children`);
- saves its state as plain tensors and Python values (:meth:`GaussianAvatar.state`, read back by
  :meth:`GaussianAvatar.from_state`) so that ``torch.load(weights_only=True)`` can read it.

Kinds are built by name through :mod:`avatar.gaussians.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable

import torch
from torch import Tensor, nn

from ..geometry.rotations import matrix_to_quaternion, normalize_quaternion, quaternion_to_matrix
from ..render.rasterization import rasterization
from ..render.sh import sh_colors

# The six orderings of three axes (for matching a covariance's eigenvectors to a Gaussian's axes).
_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


@torch.no_grad()
def covariance_shapes(covars: Tensor, quats: Tensor) -> tuple[Tensor, Tensor]:
    """The rotation (``quats [..., N, 4]``, w first) and standard deviations (``scales [..., N, 3]``)
    of covariances ``covars [..., N, 3, 3]``, exactly (an eigendecomposition; no gradient). Each
    Gaussian's axes are matched to those of the reference rotation ``quats`` (the one it had before
    its covariance was stretched): the eigenvector nearest each reference axis takes its place and
    sign, so that the third axis is still the one across its surface."""
    values, vectors = torch.linalg.eigh(covars.double())
    ref = quaternion_to_matrix(normalize_quaternion(quats.double()))
    cos = vectors.transpose(-1, -2) @ ref  # [..., N, 3 eigen, 3 reference]
    score = torch.stack([sum(cos[..., p[i], i].abs() for i in range(3)) for p in _PERMUTATIONS], -1)
    perm = torch.tensor(_PERMUTATIONS, device=covars.device)[score.argmax(-1)]  # [..., N, 3]
    axes = torch.gather(vectors, -1, perm[..., None, :].expand(*perm.shape[:-1], 3, 3))
    values = torch.gather(values, -1, perm)
    signs = torch.sign((axes * ref).sum(-2))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)[..., None, :]
    flip = torch.linalg.det(axes) < 0  # a reflection: turn the axis least like its reference round
    weakest = (axes * ref).sum(-2).abs().argmin(-1)
    axes = axes * torch.where(flip[..., None] & (torch.arange(3, device=covars.device) == weakest[..., None]), -1.0, 1.0)[..., None, :]
    return (matrix_to_quaternion(axes).to(covars.dtype), values.clamp_min(0).sqrt().to(covars.dtype))


@dataclass
class FrameState:
    """The posed model an avatar is placed on, for ``B`` frames.

    vertices: ``[B, V, 3]`` posed model vertices, metres, in the model's world (OpenCV axes
        after the tracked rotation and translation).
    expression: ``[B, E]`` the frames' expression coefficients (None: zeros).
    rotation: ``[B, 3]`` axis-angle or ``[B, 3, 3]`` matrices: the head (or body) rotation the
        mesh was posed with (the frame view-dependent colours may be evaluated in).
    pose: ``[B, J, 3]`` a body's local joint rotations (axis-angle, :mod:`avatar.geometry.skeleton`)
        the mesh was posed with, for pose-dependent avatars; None for heads.
    torso: ``[B, 4, 4]`` torso-to-world rigid transforms (metres; origin between the shoulders,
        x from the subject's right shoulder to the left, y up): where kinds with an upper body
        place it (None: the avatar's rest torso; kinds without one ignore it).
    """

    vertices: Tensor
    expression: Tensor | None = None
    rotation: Tensor | None = None
    pose: Tensor | None = None
    torso: Tensor | None = None

    def __post_init__(self) -> None:
        if self.vertices.dim() == 2:
            self.vertices = self.vertices[None]
        if self.vertices.dim() != 3 or self.vertices.shape[-1] != 3:
            raise ValueError(f"FrameState.vertices must be [B, V, 3], got {tuple(self.vertices.shape)}")
        if self.expression is not None and self.expression.dim() == 1:
            self.expression = self.expression[None]

    @property
    def batch(self) -> int:
        return self.vertices.shape[0]


@dataclass
class WorldGaussians:
    """Gaussians in world space, ready for :func:`avatar.render.rasterization` (one frame each)."""

    means: Tensor  # [B, N, 3]
    quats: Tensor  # [B, N, 4] (w, x, y, z)
    scales: Tensor  # [B, N, 3]
    opacities: Tensor  # [N]
    sh: Tensor  # [N, K, 3]
    sh_frame: Tensor | None = None  # [B, 3, 3] axes the SH directions are taken in (None: world)
    # A layer behind the Gaussians (a body's neural texture): ``under(index, viewmats, Ks, width,
    # height, renderer) -> (colour [C, H, W, 3], opacity [C, H, W, 1])`` for frame ``index``.
    under: Callable | None = None
    # [B, N, 3, 3] world covariances, for shapes that three scales along ``quats``' axes do not make
    # (Gaussians stretched with their triangles): rendering uses them, and ``quats`` / ``scales``
    # are then the shapes before the stretch; :meth:`shapes` gives the exact ones.
    covars: Tensor | None = None

    def shapes(self, index: int = 0) -> tuple[Tensor, Tensor]:
        """``(quats [N, 4], scales [N, 3])`` of frame ``index`` as the renderer draws them (from
        :attr:`covars` when there are any, with no gradient): what exports and viewers write."""
        if self.covars is None:
            return self.quats[index], self.scales[index]
        return covariance_shapes(self.covars[index], self.quats[index])

    def render(self, viewmats: Tensor, Ks: Tensor, width: int, height: int, sh_degree: int, index: int = 0, **kwargs):
        """:func:`avatar.render.rasterization` of frame ``index`` seen by ``viewmats [C, 4, 4]`` /
        ``Ks [C, 3, 3]`` (``kwargs``: its other arguments), SH of degree ``sh_degree`` shaded in
        :attr:`sh_frame`: world directions are left to the rasterizer, head-frame colours are
        evaluated here. With an :attr:`under` layer (RGB renders), the Gaussians are composited over
        it and it over the background; the alpha returned covers both."""
        colors, degree = self.sh, sh_degree
        if self.sh_frame is not None:
            colors, degree = sh_colors(sh_degree, self.sh, self.means[index], viewmats, self.sh_frame[index]), None
        under = self.under if kwargs.get("render_mode", "RGB") == "RGB" else None
        backgrounds = kwargs.pop("backgrounds", None) if under is not None else None  # else the rasterizer's
        covars = None if self.covars is None else self.covars[index]
        img, alpha, meta = rasterization(self.means[index], self.quats[index], self.scales[index], self.opacities,
                                         colors, viewmats, Ks, width, height, sh_degree=degree, covars=covars, **kwargs)
        if under is None:
            return img, alpha, meta
        colour, opacity = under(index, viewmats, Ks, width, height, kwargs)
        behind = colour * opacity
        if backgrounds is not None:
            behind = behind + backgrounds[:, None, None, :] * (1 - opacity)
        return img + (1 - alpha) * behind, alpha + (1 - alpha) * opacity, meta


class GaussianAvatar(nn.Module):
    """Base class of the avatar kinds (see the module docstring for the contract).

    Class attributes a kind sets: ``kind`` (its registry name) and ``learning_rates``
    (parameter name -> the :class:`avatar.train.config.TrainConfig` field holding its learning
    rate; :meth:`other_parameters` groups are looked up the same way).
    """

    kind: ClassVar[str] = ""
    learning_rates: ClassVar[dict[str, str]] = {}
    params: nn.ParameterDict
    sh_degree: int

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    # ------------------------------------------------------------ what densification needs
    def per_gaussian_buffers(self) -> dict[str, Tensor]:
        """Buffers with one row per Gaussian, kept in step with ``params`` (default: none)."""
        return {}

    def set_per_gaussian_buffers(self, buffers: dict[str, Tensor]) -> None:
        """Replace the per-Gaussian buffers (after the strategy grew or pruned them)."""
        for name, value in buffers.items():
            setattr(self, name, value)

    def other_parameters(self) -> dict[str, Iterable[nn.Parameter]]:
        """Trainable parameters not per Gaussian, by optimizer group name (default: none)."""
        return {}

    def sizes(self) -> Tensor:
        """``[N]`` each Gaussian's size in the units of the strategy's ``split_scale`` / ``prune_scale``
        (default: the largest of :meth:`local_scales`)."""
        return self.local_scales().max(-1).values

    def opacities(self) -> Tensor:
        """``[N]`` opacities in 0..1."""
        raise NotImplementedError

    def split_children(self, index: Tensor, factor: float) -> dict[str, Tensor]:
        """Parameters ``{name: [2, S, ...]}`` of the two children of each Gaussian in ``index [S]``."""
        raise NotImplementedError

    # ------------------------------------------------------------ posing
    def forward(self, frame: FrameState) -> WorldGaussians:  # pragma: no cover - interface
        raise NotImplementedError

    def local_scales(self) -> Tensor:
        """``[N, 3]`` Gaussian standard deviations in the kind's own units (the trainer penalises
        those beyond ``scale_threshold``)."""
        raise NotImplementedError

    def anchor_distances(self) -> Tensor:
        """``[N]`` distance of each Gaussian from where it is anchored, in the kind's units (the
        trainer penalises those beyond ``xyz_threshold``)."""
        raise NotImplementedError

    def held_to_surface(self) -> Tensor | None:
        """``[N]`` bool: the Gaussians held on the mesh triangle they are bound to (the trainer's
        per-part surface terms apply to these only); None for kinds not bound to triangles."""
        return None

    def normal_extents(self) -> Tensor | None:
        """``[N]`` each Gaussian's standard deviation along its anchor surface's normal, in the
        kind's units (the trainer penalises those beyond ``flat_threshold``); None for kinds
        whose Gaussians have no surface to lie on."""
        return None

    def subset(self, index: Tensor) -> "GaussianAvatar":
        """A new avatar of the same kind with the Gaussians ``index`` (indices or a bool mask)."""
        raise NotImplementedError

    def compact(self) -> tuple[Tensor | None, "GaussianAvatar"]:
        """``(vertex ids [V'] | None, avatar)``: the avatar re-bound to the part of the model mesh
        it uses, so posing can evaluate only those vertices (None: it needs the whole mesh)."""
        return None, self

    # ------------------------------------------------------------ saving
    def state(self) -> dict:
        """Plain tensors and values that :meth:`from_state` rebuilds the avatar from."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict, device: torch.device | str | None = None) -> "GaussianAvatar":
        raise NotImplementedError

"""Avatar kinds by name: the one place a configuration's ``kind`` becomes a class.

``train.gaussians.kind`` (the ``avatar`` config group sets it) and the ``kind`` recorded in
``avatar.pt`` are looked up here; a new kind registers its class's import path and its config
dataclass. Classes are imported when first asked for, so listing the kinds costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

DEFAULT_KIND = "mesh_gaussians"


@dataclass(frozen=True)
class AvatarKind:
    name: str
    cls: str  # "module:Class" of the GaussianAvatar subclass
    config: str  # "module:Class" of its config dataclass
    summary: str

    def load_class(self):
        return _import(self.cls)

    def load_config(self):
        return _import(self.config)


AVATAR_KINDS: dict[str, AvatarKind] = {
    "mesh_gaussians": AvatarKind(
        "mesh_gaussians", "avatar.gaussians.mesh_gaussians:MeshGaussians",
        "avatar.gaussians.config:MeshGaussiansConfig",
        "Gaussians bound to the model's triangles on a UV grid (optionally with an expression MLP)"),
    "skinned_gaussians": AvatarKind(
        "skinned_gaussians", "avatar.gaussians.skinned_gaussians:SkinnedGaussians",
        "avatar.gaussians.config:MeshGaussiansConfig",
        "Gaussians on a body model's triangles, moved by its skinning (optionally with a pose-dependent MLP)"),
    "portrait": AvatarKind(
        "portrait", "avatar.gaussians.portrait:PortraitGaussians", "avatar.gaussians.config:MeshGaussiansConfig",
        "mesh-bound Gaussians plus off-mesh ones (hair, glasses, neck) and torso ones skinned to the shoulders"),
    "portrait_texture": AvatarKind(
        "portrait_texture", "avatar.gaussians.torso_texture:PortraitTextureGaussians",
        "avatar.gaussians.config:MeshGaussiansConfig",
        "a portrait whose upper body is a neural texture read through an anchor-Gaussian warp (GH&S)"),
}


class UnknownAvatarKindError(ValueError):
    """A configuration or an avatar file names an avatar kind this version does not have."""


def avatar_kind(name: str) -> AvatarKind:
    try:
        return AVATAR_KINDS[name]
    except KeyError:
        raise UnknownAvatarKindError(
            f"unknown avatar kind {name!r}; this version has: {', '.join(AVATAR_KINDS)}") from None


def avatar_from_state(kind: str, state: dict, device=None):
    """Rebuild an avatar of ``kind`` from its saved :meth:`GaussianAvatar.state`."""
    return avatar_kind(kind).load_class().from_state(state, device)


def _import(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)

"""Parametric models: one linear-blendshape + skinning engine, asset loaders.

Front door::

    model = avatar.models.load("ict")                                  # ICT-FaceKit (default head)
    model = avatar.models.load("flame", model_path=".../generic_model.pkl")
    model = avatar.models.load("smplx", model_path=".../SMPLX_NEUTRAL.npz")
    body = avatar.models.load("anny")                                  # open body model (pip install anny)
    body = avatar.models.load_body("smpl", model_path=".../SMPL_NEUTRAL.pkl")  # SMPL as a BodyModel
    out = model(expression=psi, rotation=aa, translation=t)            # zeros by default
    out.vertices  # (B, V, 3) metres; out.landmarks (B, L, 3); out.joints (B, J, 3) if skeleton

Every model exposes ``faces``, ``uvs``/``uv_faces``, ``parts``, ``lmk_faces``/``lmk_bary``,
``landmarks(vertices)``, ``triangle_frames(vertices)`` and ``expression_names`` /
``joint_names`` where they exist, and ``tracking_profile``: what face tracking needs from it
(:class:`TrackingProfile`; None for the body models, :func:`require_profile` raises
:class:`TrackingProfileError` saying what they lack). Options are the fields of each model's
config class.

Bodies (Anny, SMPL, SMPL-X) share one contract, :class:`BodyModel` (see :mod:`avatar.models.body`):
``load("anny")`` returns one; ``load_body(name)`` returns one for any body model (``load("smpl")``
keeps returning the :class:`SMPLFamilyModel` wrapper of ``smplx``).
"""

from __future__ import annotations

from avatar.models.anny_body import AnnyConfig
from avatar.models.assets import AssetNotFoundError
from avatar.models.body import BodyData, BodyModel, BodyOutput, BodyTrackingProfile
from avatar.models.engine import (
    BlendshapeModel,
    ModelData,
    ModelOutput,
    ParametricModel,
    Part,
    Skeleton,
    blend,
    evaluate_landmarks,
    rigid_transform,
)
from avatar.models.flame import FLAME, FLAMEConfig
from avatar.models.ict import ICTConfig
from avatar.models.profile import GazeBlendshapes, TrackingProfile, TrackingProfileError, require_profile
from avatar.models.restricted_pickle import RestrictedUnpicklingError, restricted_load
from avatar.models.smpl import SMPLConfig, SMPLFamilyModel
from avatar.models.toy_body import ToyBodyConfig

CONFIGS = {
    "ict": ICTConfig,
    "flame": FLAMEConfig,
    "smpl": lambda **o: SMPLConfig(kind="smpl", **o),
    "smplx": lambda **o: SMPLConfig(kind="smplx", **o),
    "anny": AnnyConfig,
    "toy_body": ToyBodyConfig,  # a tiny procedural body for tests (avatar.models.toy_body)
}


def load(name: str, **options) -> ParametricModel:
    """Build the parametric model ``name`` ("ict", "flame", "anny", "smpl", "smplx").

    ``options`` are the fields of the model's config (:class:`ICTConfig`,
    :class:`FLAMEConfig`, :class:`SMPLConfig`), e.g. ``model_path=...`` for the
    licence-gated models or ``parts=(...)`` for ICT.
    """
    try:
        config = CONFIGS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(CONFIGS)}") from None
    return config(**options).build()


BODY_MODELS = ("anny", "smpl", "smplx", "toy_body")


def load_body(name: str, **options) -> BodyModel:
    """Build the body model ``name`` ("anny", "smpl", "smplx") as a :class:`BodyModel`."""
    key = name.lower()
    if key not in BODY_MODELS:
        raise ValueError(f"unknown body model '{name}'; available: {', '.join(BODY_MODELS)}")
    model = load(key, **options)
    return model if isinstance(model, BodyModel) else model.as_body_model()


__all__ = [
    "AnnyConfig", "AssetNotFoundError", "BODY_MODELS", "BlendshapeModel", "BodyData", "BodyModel", "BodyOutput",
    "BodyTrackingProfile", "CONFIGS", "FLAME", "FLAMEConfig", "GazeBlendshapes", "ICTConfig",
    "ModelData", "ModelOutput", "ParametricModel", "Part", "RestrictedUnpicklingError",
    "SMPLConfig", "SMPLFamilyModel", "Skeleton", "TrackingProfile", "TrackingProfileError", "blend",
    "evaluate_landmarks", "load", "load_body", "require_profile", "restricted_load", "rigid_transform",
]

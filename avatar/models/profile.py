"""What face tracking needs to know about a parametric head model: its tracking profile.

Tracking fits a model to MediaPipe's 478 face landmarks (:mod:`avatar.tracking`). Beyond
the mesh and its blendshapes, that needs a few model-specific facts: which parts to render
when calibrating the landmark embedding, where the eyeballs are and how the eyes turn, which
blendshapes oppose each other, and the range the expression coefficients live in. Every
model loader attaches a :class:`TrackingProfile` (``model.tracking_profile``), or None with
the reason in ``model.tracking_profile_lacks`` (body models); :func:`require_profile` turns
a missing one into a :class:`TrackingProfileError` naming what the model lacks.

Eye order is (right, left): the subject's right eye first, as MediaPipe's iris centres
(468 right, 473 left) and :class:`avatar.tracking.landmark_model.LandmarkModel`.
"""

from __future__ import annotations

from dataclasses import dataclass


class TrackingProfileError(ValueError):
    """A model cannot be used for face tracking (it has no profile, or lacks what it names)."""


@dataclass(frozen=True)
class GazeBlendshapes:
    """Gaze as blendshapes (ARKit ``eyeLook*``): per eye ``(right, left)`` the names of the
    looking-in, -out, -up and -down shapes. Coefficient 1 turns the eye by the tracker's
    maximum gaze angle (:data:`avatar.tracking.landmark_model.GAZE_MAX_YAW` / ``_PITCH``)."""

    look_in: tuple[str, str]
    look_out: tuple[str, str]
    look_up: tuple[str, str]
    look_down: tuple[str, str]

    @property
    def names(self) -> tuple[str, ...]:
        return self.look_in + self.look_out + self.look_up + self.look_down


@dataclass(frozen=True)
class TrackingProfile:
    """What face tracking needs from a model (see the module doc).

    Attributes:
        calibration_parts: parts rendered to calibrate the MediaPipe landmark embedding (names
            of ``model.parts``; a plural ``<name>s`` selects ``<name>_left`` and ``<name>_right``).
        eyeball_parts: ``(right, left)`` eyeball parts: the iris centres go to their front poles
            and gaze turns about their centres; None when the mesh has no separate eyeballs.
        eye_joints: ``(right, left)`` joints whose rotation turns the eyes (skinned models);
            their rest positions are the eye centres when there are no eyeball parts.
        lid_part: skin part that the lid-margin landmarks are moved onto when the calibration
            lands them on an eyeball; None: not moved.
        face_part: the part whose skin shows the face (the photometric refinement samples it).
        gaze: gaze blendshapes, or None when gaze is not an expression (a joint rotation, or
            absent): the iris centres then do not drive the fit.
        jaw_blendshape: the blendshape that opens the jaw (ICT ``jawOpen``), or None.
        jaw_joint: the joint that opens the jaw (FLAME ``jaw``), or None.
        antagonists: blendshape pairs that move one feature in opposite directions (a face does
            one or the other): the fitters keep them from acting together, the retargeter treats
            each pair as one signed coordinate. Pairs the model lacks are skipped.
        blinks: ``(right, left)`` eye-closing blendshapes, or None.
        expression_bounds: ``(low, high)`` range of the expression coefficients: ``(0, 1)`` for
            activations (sparse L1 prior in the fitters), signed for PCA spaces such as FLAME's
            (L2 prior).
        embedding_path: a 478-landmark MediaPipe embedding file to read instead of calibrating
            one (:func:`avatar.tracking.embedding.load_embedding`), or None.
    """

    calibration_parts: tuple[str, ...]
    eyeball_parts: tuple[str, str] | None = None
    eye_joints: tuple[str, str] | None = None
    lid_part: str | None = None
    face_part: str = "face"
    gaze: GazeBlendshapes | None = None
    jaw_blendshape: str | None = None
    jaw_joint: str | None = None
    antagonists: tuple[tuple[str, str], ...] = ()
    blinks: tuple[str, str] | None = None
    expression_bounds: tuple[float, float] = (0.0, 1.0)
    embedding_path: str | None = None

    def __post_init__(self) -> None:
        low, high = self.expression_bounds
        if not low < high:
            raise ValueError(f"expression_bounds must be (low, high) with low < high, got {self.expression_bounds}")
        if not self.calibration_parts:
            raise ValueError("calibration_parts must name at least one part")

    @property
    def signed_expressions(self) -> bool:
        """True when coefficients may be negative (a PCA space): the fitters use an L2 prior."""
        return self.expression_bounds[0] < 0

    def check_model(self, model) -> None:
        """Raise :class:`TrackingProfileError` when ``model`` lacks a part, joint or blendshape
        that this profile names (e.g. an ICT model loaded without its eyeballs)."""
        name = getattr(model, "name", "model")
        parts = set(getattr(model, "part_names", ()))
        if self.eyeball_parts and not set(self.eyeball_parts) <= parts:
            raise TrackingProfileError(
                f"model '{name}' lacks the eyeball parts {list(self.eyeball_parts)} that face tracking needs "
                f"(it has {sorted(parts)}): load it with parts including 'eyeballs'")
        if self.eye_joints and not set(self.eye_joints) <= set(getattr(model, "joint_names", ())):
            raise TrackingProfileError(f"model '{name}' lacks the eye joints {list(self.eye_joints)}")
        if self.eyeball_parts is None and self.eye_joints is None:
            raise TrackingProfileError(f"model '{name}' has neither eyeball parts nor eye joints: face tracking "
                                       "needs one of them for the eye centres")
        names = set(getattr(model, "expression_names", ()))
        wanted = list(self.gaze.names if self.gaze else ()) + list(self.blinks or ())
        wanted += [self.jaw_blendshape] if self.jaw_blendshape else []
        missing = sorted({n for n in wanted if n not in names})
        if missing:
            raise TrackingProfileError(f"model '{name}' lacks the blendshapes {missing} named by its tracking profile")
        if self.jaw_joint and self.jaw_joint not in getattr(model, "joint_names", ()):
            raise TrackingProfileError(f"model '{name}' lacks the jaw joint '{self.jaw_joint}'")


def require_profile(model) -> TrackingProfile:
    """``model.tracking_profile``, checked against the model; a model without one (or lacking
    what it names) raises :class:`TrackingProfileError` saying what it lacks."""
    profile = getattr(model, "tracking_profile", None)
    name = getattr(model, "name", type(model).__name__)
    if profile is None:
        lacks = getattr(model, "tracking_profile_lacks", None) or "a tracking profile from its loader"
        raise TrackingProfileError(f"model '{name}' has no face-tracking profile: it lacks {lacks}")
    profile.check_model(model)
    return profile


def name_mask(names, patterns) -> list[bool]:
    """Per name: does it match one of ``patterns`` (fnmatch, case-sensitive: ``"eyeBlink*"``)?"""
    from fnmatch import fnmatchcase  # noqa: PLC0415

    return [any(fnmatchcase(str(n), p) for p in patterns) for n in names]


def disjoint_pairs(pairs) -> tuple[tuple[str, str], ...]:
    """The pairs in order, skipping any that shares a name with an earlier one (one antagonist
    per blendshape)."""
    used, out = set(), []
    for a, b in pairs:
        if a not in used and b not in used:
            out.append((a, b))
            used.update((a, b))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# ARKit-named blendshapes (ICT-FaceKit)

ARKIT_GAZE = GazeBlendshapes(
    look_in=("eyeLookIn_R", "eyeLookIn_L"),
    look_out=("eyeLookOut_R", "eyeLookOut_L"),
    look_up=("eyeLookUp_R", "eyeLookUp_L"),
    look_down=("eyeLookDown_R", "eyeLookDown_L"),
)
# Blendshapes that move the same feature in opposite directions; a face does one or the other,
# and a fit that uses both at once is explaining detector noise.
ARKIT_ANTAGONISTS: tuple[tuple[str, str], ...] = tuple(
    pair for side in ("L", "R") for pair in (
        (f"eyeBlink_{side}", f"eyeWide_{side}"),
        (f"mouthSmile_{side}", f"mouthFrown_{side}"),
        (f"browDown_{side}", f"browInnerUp_{side}"),
        (f"browDown_{side}", f"browOuterUp_{side}"),
        (f"eyeLookIn_{side}", f"eyeLookOut_{side}"),
        (f"eyeLookUp_{side}", f"eyeLookDown_{side}"),
    )
) + (("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"))


__all__ = [
    "ARKIT_ANTAGONISTS", "ARKIT_GAZE", "GazeBlendshapes", "TrackingProfile", "TrackingProfileError",
    "disjoint_pairs", "require_profile",
]

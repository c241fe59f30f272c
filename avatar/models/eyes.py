"""A head model's eyeballs: where they are and how they turn.

The eyeballs are parts of the model (its tracking profile's ``eyeball_parts``, right then left).
A turn is (yaw, pitch) per eye in the head's unposed frame, ``R = Ry(yaw) Rx(pitch)`` about the
eyeball's centre (:func:`avatar.geometry.rotations.yaw_pitch_matrix`: +yaw toward the model's
+x, +pitch down), as the trackers model the irises and the gaze reading measures them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..geometry.rotations import yaw_pitch_matrix


def eye_profile(model):
    """The model's tracking profile when its eyes can turn: it names gaze blendshapes and eyeball
    parts the model has, and the model is a head (no skeleton); else None."""
    from .profile import TrackingProfileError, require_profile  # noqa: PLC0415

    try:
        profile = require_profile(model)
    except TrackingProfileError:
        return None
    ok = (profile.gaze is not None and profile.eyeball_parts is not None and not getattr(model, "has_skeleton", False)
          and set(profile.eyeball_parts) <= set(getattr(model, "parts", None) or {}))
    return profile if ok else None


def eyeball_vertex_ids(model, eyeball_parts) -> list[Tensor]:
    """Vertex ids ``[n]`` of each eyeball part (parts hold vertex masks)."""
    return [model.parts[part].vertices.nonzero()[:, 0] for part in eyeball_parts]


def eyeball_geometry(model, eyeball_parts, vertices: Tensor) -> tuple[Tensor, Tensor]:
    """``(centres [2, 3], poles [2, 3])`` of the eyeball parts of an unposed mesh ``vertices [V, 3]``:
    each eyeball's centre (its vertices' mean) and its front pole (the vertex furthest along the
    model's forward axis, +z), where the iris centre sits when the eye looks straight ahead."""
    centres, poles = [], []
    for ids in eyeball_vertex_ids(model, eyeball_parts):
        v = vertices[ids.to(vertices.device)]
        centres.append(v.mean(0))
        poles.append(v[torch.argmax(v[:, 2])])
    return torch.stack(centres), torch.stack(poles)


def turn_about_centres(vertices: Tensor, ids: list[Tensor], angles: Tensor, centres: Tensor | None = None) -> Tensor:
    """``vertices [B, V, 3]`` (unposed) with the rows ``ids[k]`` (eye ``k``: right, left) turned by
    ``angles [B, 2, 2]`` (yaw, pitch; radians) about ``centres [2, 3]`` (None: those rows' mean)."""
    R = yaw_pitch_matrix(angles[..., 0].to(vertices.dtype), angles[..., 1].to(vertices.dtype))  # [B, 2, 3, 3]
    out = vertices.clone()
    for k, rows in enumerate(ids):
        if len(rows):
            eye = vertices[:, rows]
            c = eye.mean(dim=1, keepdim=True) if centres is None else centres[k].to(vertices.dtype)
            out[:, rows] = c + (eye - c) @ R[:, k].transpose(1, 2)
    return out


def turn_eyeballs(model, eyeball_parts, vertices: Tensor, angles: Tensor) -> Tensor:
    """``vertices [B, V, 3]`` (the whole unposed mesh) with each eyeball part turned about its
    centre by ``angles [B, 2, 2]``."""
    ids = [i.to(vertices.device) for i in eyeball_vertex_ids(model, eyeball_parts)]
    return turn_about_centres(vertices, ids, angles)

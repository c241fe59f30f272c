"""Where the eyes look: eyeball turns read off MediaPipe's iris centres, and a mesh's eyeballs
turned by them.

The head models' gaze blendshapes (ICT's ``eyeLook*``) reshape the lids but move no eyeball
vertex, and a landmark fit that carries the gaze in them turns the eyes only part of the way
(two iris points against hundreds that move the lids, a robust loss and priors). So the gaze is
read on its own, from the irises alone, once the head's pose is known: per eye, the (yaw,
pitch) that turns the eyeball about its centre until its iris point projects onto MediaPipe's
iris centre (:func:`gaze_from_rays`: where the camera ray through that iris centre meets the
eyeball). :func:`avatar.models.eyes.turn_eyeballs` turns a mesh's eyeball parts by such angles.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..landmarks.face_measures import EYE_LIDS, LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS
from .landmark_model import IRIS_LEFT, IRIS_RIGHT

IRIS_CENTRES = (IRIS_RIGHT, IRIS_LEFT)  # MediaPipe: the subject's right, left iris centre
# Lids nearer than this (lid-to-lid over the eye's width, both eyes' mean) hide the iris: its
# reading is not a gaze. Open eyes on the shared clips read 0.23-0.39 (median), blinks 0.04-0.07.
MIN_LID_OPENING = 0.12


def lids_open(points, threshold: float = MIN_LID_OPENING):
    """``[...]`` bool: the lids of MediaPipe's landmarks ``points [..., 478, >=2]`` (pixels) are
    open enough for the irises to be read (see :data:`MIN_LID_OPENING`); False where not finite."""
    p = np.asarray(points, np.float64)[..., :2]
    opening = 0.0
    for (a, b), lids in zip((RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS), (EYE_LIDS[:3], EYE_LIDS[3:])):
        width = np.linalg.norm(p[..., a, :] - p[..., b, :], axis=-1)
        gap = np.mean([np.linalg.norm(p[..., i, :] - p[..., j, :], axis=-1) for i, j in lids], axis=0)
        opening = opening + 0.5 * gap / np.maximum(width, 1e-9)
    return np.isfinite(opening) & (opening >= threshold)


def hold_through_blinks(gaze, readable):
    """``gaze [F, 2, 2]`` with the frames not ``readable [F]`` (shut lids) filled in linearly from the
    readable frames around them (held at the ends); unchanged when no frame is readable."""
    gaze = np.asarray(gaze)
    ok = np.asarray(readable, bool)
    if ok.all() or not ok.any():
        return gaze.copy()
    frames = np.arange(len(gaze))
    flat = gaze.reshape(len(gaze), -1).astype(np.float64)
    for k in range(flat.shape[1]):
        flat[~ok, k] = np.interp(frames[~ok], frames[ok], flat[ok, k])
    return flat.reshape(gaze.shape).astype(gaze.dtype)


def unit_angles(u: Tensor) -> Tensor:
    """``[..., 2]`` (yaw, pitch) with ``Ry(yaw) @ Rx(pitch) @ e_z = u`` for unit vectors ``u [..., 3]``."""
    return torch.stack((torch.atan2(u[..., 0], u[..., 2]), -torch.asin(u[..., 1].clamp(-1.0, 1.0))), -1)


def gaze_from_rays(centres: Tensor, poles: Tensor, origins: Tensor, directions: Tensor,
                   limit_deg: float = 60.0) -> Tensor:
    """Per frame and eye, the (yaw, pitch) ``[B, 2, 2]`` (radians) that turns ``poles [B, 2, 3]``
    about ``centres [B, 2, 3]`` onto the camera ray through MediaPipe's iris centre (``origins``,
    ``directions [B, 2, 3]``, all in the model's unposed frame): where the ray first meets the
    eyeball's sphere (radius: centre to pole), or the sphere's point nearest the ray when it
    misses. The pole's own offset from straight ahead is taken off angle by angle (exact for a
    pole straight ahead, within a small fraction of a degree for the few degrees an iris point
    sits off it); each angle within ``limit_deg``."""
    d = torch.nn.functional.normalize(directions, dim=-1)
    oc = origins - centres
    r = (poles - centres).norm(dim=-1)
    b = (d * oc).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    s = torch.where(disc >= 0, -b - disc.clamp_min(0).sqrt(), -b)  # the near hit, or the closest approach
    hit = origins + s[..., None] * d
    u = torch.nn.functional.normalize(hit - centres, dim=-1)
    w0 = torch.nn.functional.normalize(poles - centres, dim=-1)
    limit = math.radians(limit_deg)
    return (unit_angles(u) - unit_angles(w0)).clamp(-limit, limit)

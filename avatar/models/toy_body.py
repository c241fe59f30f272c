"""A toy body model: tubes around an SMPL-named skeleton, under the body-model contract.

For tests and quick experiments that should not wait for a real body model: 24 joints with
SMPL's names and tree, one tube (``segments`` around, 3 rings along) per bone, each ring
skinned to its bone (the ring at a joint half to the bone before it), a linear "height"
shape parameter, atlas UVs, and the 33 pose landmarks on the tubes' rings (face points on the
head tube). A few hundred vertices; nothing is read from disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.geometry.skeleton import POSE_LANDMARK_NAMES
from avatar.models.body import BodyData, BodyModel, BodyTrackingProfile

JOINTS = (
    ("pelvis", -1, (0.0, 0.0, 0.0)), ("left_hip", 0, (0.09, -0.08, 0.0)), ("right_hip", 0, (-0.09, -0.08, 0.0)),
    ("spine1", 0, (0.0, 0.11, 0.0)), ("left_knee", 1, (0.1, -0.48, 0.0)), ("right_knee", 2, (-0.1, -0.48, 0.0)),
    ("spine2", 3, (0.0, 0.24, 0.0)), ("left_ankle", 4, (0.1, -0.88, 0.0)), ("right_ankle", 5, (-0.1, -0.88, 0.0)),
    ("spine3", 6, (0.0, 0.30, 0.0)), ("left_foot", 7, (0.11, -0.94, 0.12)), ("right_foot", 8, (-0.11, -0.94, 0.12)),
    ("neck", 9, (0.0, 0.50, 0.0)), ("left_collar", 9, (0.07, 0.44, 0.0)), ("right_collar", 9, (-0.07, 0.44, 0.0)),
    ("head", 12, (0.0, 0.60, 0.0)), ("left_shoulder", 13, (0.18, 0.44, 0.0)),
    ("right_shoulder", 14, (-0.18, 0.44, 0.0)), ("left_elbow", 16, (0.38, 0.26, 0.0)),
    ("right_elbow", 17, (-0.38, 0.26, 0.0)), ("left_wrist", 18, (0.55, 0.10, 0.0)),
    ("right_wrist", 19, (-0.55, 0.10, 0.0)), ("left_hand", 20, (0.62, 0.04, 0.0)), ("right_hand", 21, (-0.62, 0.04, 0.0)),
)
HEAD_TOP = (0.0, 0.80, 0.0)
_RADIUS = {"head": 0.09, "neck": 0.05, "spine": 0.13, "pelvis": 0.12, "hip": 0.08, "knee": 0.06, "shoulder": 0.05,
           "elbow": 0.04, "collar": 0.05, "wrist": 0.03, "ankle": 0.05}
_LANDMARK_JOINT = {
    "left_shoulder": "left_shoulder", "right_shoulder": "right_shoulder", "left_elbow": "left_elbow",
    "right_elbow": "right_elbow", "left_wrist": "left_wrist", "right_wrist": "right_wrist", "left_pinky": "left_hand",
    "right_pinky": "right_hand", "left_index": "left_hand", "right_index": "right_hand", "left_thumb": "left_hand",
    "right_thumb": "right_hand", "left_hip": "left_hip", "right_hip": "right_hip", "left_knee": "left_knee",
    "right_knee": "right_knee", "left_ankle": "left_ankle", "right_ankle": "right_ankle", "left_heel": "left_ankle",
    "right_heel": "right_ankle", "left_foot_index": "left_foot", "right_foot_index": "right_foot",
}


def _radius(name: str) -> float:
    return next((r for key, r in _RADIUS.items() if key in name), 0.05)


def toy_body_data(segments: int = 8) -> BodyData:
    """The toy body's :class:`BodyData` (module doc)."""
    names = tuple(n for n, _, _ in JOINTS)
    parents = np.array([p for _, p, _ in JOINTS])
    joints = np.array([j for _, _, j in JOINTS], float)
    children = {j: [c for c in range(len(JOINTS)) if parents[c] == j] for j in range(len(JOINTS))}
    verts, weights, faces, ring_of = [], [], [], {}
    angles = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    for j, name in enumerate(names):
        ends = [joints[c] for c in children[j]] or ([np.array(HEAD_TOP)] if name == "head" else [])
        for c, end in zip(children[j] or [None], ends):
            start = joints[j]
            axis = end - start
            length = np.linalg.norm(axis)
            axis = axis / length
            helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
            u = np.cross(axis, helper)
            u /= np.linalg.norm(u)
            w = np.cross(axis, u)
            r = _radius(name)
            base = len(verts)
            for k, s in enumerate((0.0, 0.5, 1.0)):
                centre = start + s * axis * length
                for a in angles:
                    verts.append(centre + r * (np.cos(a) * u + np.sin(a) * w))
                    wt = np.zeros(len(names))
                    if k == 0 and parents[j] >= 0:
                        wt[j], wt[parents[j]] = 0.5, 0.5
                    else:
                        wt[j] = 1.0
                    weights.append(wt)
                ring_of.setdefault(j, base)
            if c is not None:
                ring_of.setdefault(c, base + 2 * segments)  # a leaf joint: the ring ending on it
            for k in range(2):
                for a in range(segments):
                    p0 = base + k * segments + a
                    p1 = base + k * segments + (a + 1) % segments
                    faces += [(p0, p1, p1 + segments), (p0, p1 + segments, p0 + segments)]
    verts, weights, faces = np.array(verts), np.array(weights), np.array(faces)
    V = len(verts)
    reg = np.zeros((len(POSE_LANDMARK_NAMES), V))
    head_ring = ring_of[names.index("head")] + segments  # middle ring of the head tube
    front = head_ring + int(np.argmax(verts[head_ring:head_ring + segments, 2]))
    for row, lm in enumerate(POSE_LANDMARK_NAMES):
        if lm in _LANDMARK_JOINT:
            first = ring_of[names.index(_LANDMARK_JOINT[lm])]
            reg[row, first:first + segments] = 1.0 / segments  # the ring at the joint: its centre
        else:  # face points: on the head's middle ring, spread left/right by name
            side = 1 if "left" in lm else -1 if "right" in lm else 0
            ring = np.arange(head_ring, head_ring + segments)
            target = verts[front] + np.array([0.03 * side, 0.0, 0.0])
            reg[row, ring[np.argmin(np.linalg.norm(verts[ring] - target, axis=1))]] = 1.0
    heightdirs = np.zeros((V, 3, 1))
    heightdirs[:, 1, 0] = verts[:, 1] * 0.1
    joint_heightdirs = np.zeros((len(names), 3, 1))
    joint_heightdirs[:, 1, 0] = joints[:, 1] * 0.1
    tracked = tuple((n, 2.6) for n in names[1:22])
    return BodyData(
        name="toy_body", template=verts, shapedirs=heightdirs, joint_template=joints, joint_shapedirs=joint_heightdirs,
        faces=faces, parents=parents, joint_names=names, weights=weights, landmark_regressor=reg,
        shape_names=("height",), default_shape=np.zeros(1),
        tracking_profile=BodyTrackingProfile(tracked_joints=tuple(n for n, _ in tracked), joint_limits=tracked,
                                             shape_bounds=(-1.0, 1.0)),
        parts={"body": np.ones(V, bool)},
    )


def toy_body(segments: int = 8) -> BodyModel:
    """The toy body model (module doc)."""
    return BodyModel(toy_body_data(segments))


@dataclass
class ToyBodyConfig:
    """Options of the toy body (``avatar.models.load("toy_body")``): tests and quick experiments only."""

    segments: int = 8  # vertices around each tube

    def build(self) -> BodyModel:
        return toy_body(self.segments)


__all__ = ["ToyBodyConfig", "toy_body", "toy_body_data"]

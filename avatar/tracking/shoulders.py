"""The upper body's state per frame, from MediaPipe pose landmarks: where the shoulders are in
3D and how the torso is turned relative to the camera, with the neck between head and torso.

MediaPipe gives each shoulder in image pixels plus a relative depth (``z``, pixels, scaled like
``x``). A single camera cannot measure how far the shoulders are, so they are placed at the
camera depth of the tracked head's origin (ICT: about the middle of the head, which sits over
the shoulders), each shoulder moved nearer or farther by MediaPipe's depth difference
(pixels -> metres at that depth). Then per frame:

- ``shoulders [F, 2, 3]``: the subject's left and right shoulder, metres, model world;
- the torso's frame: origin between the shoulders; ``x`` from the right shoulder to the left;
  ``y`` the world's up made orthogonal to ``x`` (the shoulders say nothing of the torso's pitch);
  ``z = x × y`` (forward, toward a camera the subject faces): ``torso_rotation [F, 3]`` axis-angle;
- ``neck [F, 3]``: halfway between the shoulders' midpoint and the head's origin.

Frames whose shoulders were not seen (no pose, a shoulder less than ``min_visibility`` visible,
or farther out of the image than ``margin``) are interpolated linearly from their measured neighbours (held at the
ends) and flagged (``torso_measured`` false); the measured ones are smoothed over time with a
Gaussian of ``smooth_sigma`` frames (positions and the torso's axes). With no measured frame at
all there is no shoulder state (None): training and driving then use the avatar's rest torso.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12  # MediaPipe pose indices (the subject's left and right)


@dataclass
class ShoulderState:
    shoulders: np.ndarray  # [F, 2, 3] left, right shoulder (metres, model world)
    torso_rotation: np.ndarray  # [F, 3] axis-angle of the torso's frame (x right-to-left shoulder, y up)
    neck: np.ndarray  # [F, 3] between the shoulders' midpoint and the head's origin
    measured: np.ndarray  # [F] bool: shoulders seen in this frame (others interpolated)

    @property
    def n_frames(self) -> int:
        return self.shoulders.shape[0]

    def transforms(self) -> np.ndarray:
        """``[F, 4, 4]`` torso-to-world: rotation :attr:`torso_rotation`, origin between the shoulders."""
        T = np.tile(np.eye(4, dtype=np.float32), (self.n_frames, 1, 1))
        T[:, :3, :3] = rotation_matrices(self.torso_rotation)
        T[:, :3, 3] = self.shoulders.mean(1)
        return T


def rotation_matrices(axis_angle: np.ndarray) -> np.ndarray:
    """``[..., 3]`` axis-angle -> ``[..., 3, 3]`` (Rodrigues)."""
    a = np.asarray(axis_angle, np.float64)
    theta = np.linalg.norm(a, axis=-1, keepdims=True)
    k = a / np.maximum(theta, 1e-12)
    K = np.zeros(a.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return (np.eye(3) + s * K + (1 - c) * (K @ K)).astype(np.float32)


def matrix_axis_angle(R: np.ndarray) -> np.ndarray:
    """``[..., 3, 3]`` rotation matrices -> ``[..., 3]`` axis-angle (angles below pi)."""
    R = np.asarray(R, np.float64)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    theta = np.arccos(cos)
    v = np.stack((R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]), -1)
    s = np.sin(theta)
    scale = np.where(s > 1e-8, theta / (2 * np.maximum(s, 1e-12)), 0.5)
    return (v * scale[..., None]).astype(np.float32)


def torso_axes(left: np.ndarray, right: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """``[F, 3, 3]`` torso frames (columns x, y, z) from the shoulders ``[F, 3]`` each."""
    x = left - right
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)
    y = up[None] - (x @ up)[:, None] * x
    y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-9)
    z = np.cross(x, y)
    return np.stack((x, y, z), -1)


def _interpolate(values: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Fill the rows of ``values [F, ...]`` where ``measured`` is false, linearly per channel."""
    F = values.shape[0]
    good = np.flatnonzero(measured)
    flat = values.reshape(F, -1).astype(np.float64)
    out = np.empty_like(flat)
    for c in range(flat.shape[1]):
        out[:, c] = np.interp(np.arange(F), good, flat[good, c])
    return out.reshape(values.shape)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over the first axis (edges reflected); sigma in frames (0: none)."""
    if sigma <= 0 or values.shape[0] < 2:
        return values
    r = int(np.ceil(3 * sigma))
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    w /= w.sum()
    padded = np.concatenate((values[r:0:-1], values, values[-2:-r - 2:-1]), 0) if values.shape[0] > r else \
        np.concatenate((np.repeat(values[:1], r, 0), values, np.repeat(values[-1:], r, 0)), 0)
    return np.tensordot(np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1, axis=0), w, axes=([-1], [0]))


def shoulders_measured(pose: np.ndarray, present: np.ndarray, width: int, height: int,
                       min_visibility: float = 0.5, margin: float = 0.15) -> np.ndarray:
    """``[F]`` bool: both shoulders detected, at least ``min_visibility`` visible and inside the image
    grown by ``margin`` x its size on every side (MediaPipe places a shoulder just under the frame's
    edge well; farther out it guesses)."""
    s = pose[:, [LEFT_SHOULDER, RIGHT_SHOULDER]]
    mx, my = margin * width, margin * height
    inside = (s[..., 0] >= -mx) & (s[..., 0] < width + mx) & (s[..., 1] >= -my) & (s[..., 1] < height + my)
    return np.asarray(present, bool) & (s[..., 3] >= min_visibility).all(-1) & inside.all(-1)


def shoulder_state(pose: np.ndarray, present: np.ndarray, K: np.ndarray, viewmat: np.ndarray,
                   head_translation: np.ndarray, width: int, height: int, smooth_sigma: float = 2.0,
                   min_visibility: float = 0.5, margin: float = 0.15) -> ShoulderState | None:
    """The shoulder state of every frame (module docstring), or None when no frame shows both shoulders.

    Args:
        pose: ``[F, 33, 4]`` MediaPipe pose landmarks in the frames' pixels (x, y, z, visibility).
        present: ``[F]`` bool, a pose was found (or bridged) in the frame.
        K: ``[F, 3, 3]`` (or ``[3, 3]``) the frames' intrinsics, pixels; viewmat: ``[4, 4]`` world-to-camera.
        head_translation: ``[F, 3]`` the tracked head origin (model world).
        width, height: the frames' size in pixels.
    """
    F = pose.shape[0]
    K = np.broadcast_to(np.asarray(K, np.float64), (F, 3, 3))
    measured = shoulders_measured(pose, present, width, height, min_visibility, margin)
    if not measured.any():
        return None
    V = np.asarray(viewmat, np.float64)
    head_cam = head_translation @ V[:3, :3].T + V[:3, 3]  # [F, 3]
    s = pose[:, [LEFT_SHOULDER, RIGHT_SHOULDER]].astype(np.float64)  # [F, 2, 4]
    depth = head_cam[:, 2:3] * (1 + (s[..., 2] - s[..., 2].mean(1, keepdims=True)) / K[:, None, 0, 0])  # [F, 2]
    x = (s[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0] * depth
    y = (s[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1] * depth
    cam = np.stack((x, y, depth), -1)
    inv = np.linalg.inv(V)
    world = cam @ inv[:3, :3].T + inv[:3, 3]  # [F, 2, 3]
    world = _interpolate(world, measured)
    world = _smooth(world, smooth_sigma)
    axes = torso_axes(world[:, 0], world[:, 1])
    rotation = matrix_axis_angle(axes)
    neck = 0.5 * (world.mean(1) + head_translation)
    return ShoulderState(world.astype(np.float32), rotation.astype(np.float32), neck.astype(np.float32), measured)


def torso_transforms(tracking) -> np.ndarray | None:
    """``[F, 4, 4]`` torso-to-world of a :class:`avatar.io.tracking.TrackedSequence` with a shoulder
    state (None without one)."""
    if tracking.shoulders is None:
        return None
    return ShoulderState(tracking.shoulders, tracking.torso_rotation, tracking.neck, tracking.torso_measured).transforms()


def shoulder_report(state: ShoulderState | None, n_frames: int) -> dict:
    """The tracking report's ``shoulders`` block: measured and interpolated frame counts and ranges."""
    if state is None:
        return {"frames": n_frames, "measured": 0, "interpolated": 0,
                "note": "no frame shows both shoulders: the avatar's rest torso is used for every frame"}
    missing = np.flatnonzero(~state.measured).tolist()
    return {"frames": n_frames, "measured": int(state.measured.sum()), "interpolated": len(missing),
            "interpolated_frames": missing}

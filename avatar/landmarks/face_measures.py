"""Measures of a face read straight off MediaPipe's landmarks, independent of any head model.

They grade reenactment from outside: MediaPipe runs on the driver's video and on the
avatar's render, and the same measures are compared frame by frame. Nothing here uses the
toolkit's fitter, which would grade itself.

Per frame, from the 478 landmarks in pixels (``[478, 3]``: x, y and MediaPipe's depth scaled
like x), every distance over the inter-ocular distance (between the eye-corner midpoints,
3D), so the measures do not depend on the face's size in the image:

- ``eye``: lid-to-lid opening, mean of three upper/lower pairs per eye and of both eyes;
- ``jaw``: inner-lip gap (upper to lower inner lip, three pairs), how far the mouth opens;
- ``mouth_width``: corner to corner;
- ``brow``: brow (five points per side) above the eye corners' midpoint, both sides;
- ``yaw``, ``pitch``, ``roll`` (degrees): the head's rotation from the clip's mean face
  (a Procrustes fit of the rigid points: forehead, nose bridge and tip, eye corners),
  about the camera's y, x and z axes;
- ``gaze_x``, ``gaze_y``: where the irises sit between the eye corners, in eye widths, mean of
  both eyes: the iris centre's offset from the corners' midpoint along the eye line (toward the
  image's right for an upright face) and across it (down). In the image plane, so a head
  turned far also moves them a little (about 0.004 eye widths per degree of yaw); a face that
  looks left and right moves ``gaze_x`` by 0.05-0.1.
"""

from __future__ import annotations

import math

import numpy as np

RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (362, 263)
EYE_LIDS = ((159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373))
INNER_LIPS = ((13, 14), (82, 87), (312, 317))
MOUTH_CORNERS = (61, 291)
RIGHT_BROW, LEFT_BROW = (70, 63, 105, 66, 107), (300, 293, 334, 296, 336)
# Iris centre and the eye's corners (image left to right for an upright face), per eye.
IRISES = ((468, 33, 133), (473, 362, 263))
# Points that stay put on the skull when the face moves (for the head's rotation): forehead,
# nose bridge and tip, eye corners. Not the face outline: MediaPipe slides those points round
# the cheek as the head turns, which reads a 23-degree turn as 18.
RIGID = (10, 151, 9, 8, 168, 6, 197, 195, 33, 133, 362, 263, 1, 4)

EXPRESSION_MEASURES = ("eye", "jaw", "mouth_width", "brow")
POSE_MEASURES = ("yaw", "pitch", "roll")
GAZE_MEASURES = ("gaze_x", "gaze_y")
MEASURES = EXPRESSION_MEASURES + POSE_MEASURES + GAZE_MEASURES


def _dist(p: np.ndarray, pairs) -> np.ndarray:
    a, b = np.array(pairs).T
    return np.linalg.norm(p[..., a, :] - p[..., b, :], axis=-1).mean(-1)


def expression_measures(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """``{eye, jaw, mouth_width, brow}`` each ``[F]`` for ``landmarks [F, 478, 3]`` (NaN rows stay NaN)."""
    p = np.asarray(landmarks, np.float64)
    if p.ndim != 3 or p.shape[1:] != (478, 3):
        raise ValueError(f"landmarks must be [F, 478, 3], got {list(p.shape)}")
    r_eye = p[:, list(RIGHT_EYE_CORNERS)].mean(1)
    l_eye = p[:, list(LEFT_EYE_CORNERS)].mean(1)
    iod = np.linalg.norm(r_eye - l_eye, axis=-1)
    brow = 0.5 * (np.linalg.norm(p[:, list(RIGHT_BROW)].mean(1) - r_eye, axis=-1)
                  + np.linalg.norm(p[:, list(LEFT_BROW)].mean(1) - l_eye, axis=-1))
    return {
        "eye": _dist(p, EYE_LIDS) / iod,
        "jaw": _dist(p, INNER_LIPS) / iod,
        "mouth_width": _dist(p, (MOUTH_CORNERS,)) / iod,
        "brow": brow / iod,
    }


def gaze_measures(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """``{gaze_x, gaze_y}`` each ``[F]`` for ``landmarks [F, 478, 3]``: the iris centres' offsets
    between the eye corners in the image (module docstring), mean of both eyes."""
    p = np.asarray(landmarks, np.float64)[..., :2]
    along, across = [], []
    for iris, a, b in IRISES:
        A, B = p[:, a], p[:, b]
        d = B - A
        width = np.linalg.norm(d, axis=-1)
        u = d / width[:, None]
        n = np.stack((-u[:, 1], u[:, 0]), -1)  # the eye line turned 90 degrees: down in the image
        rel = p[:, iris] - 0.5 * (A + B)
        along.append((rel * u).sum(-1) / width)
        across.append((rel * n).sum(-1) / width)
    return {"gaze_x": 0.5 * (along[0] + along[1]), "gaze_y": 0.5 * (across[0] + across[1])}


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation ``R [3, 3]`` minimising ``|R src_c - dst_c|`` over centred point sets ``[N, 3]``."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def head_angles(landmarks: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``{yaw, pitch, roll}`` each ``[F]`` degrees, relative to the clip's mean face.

    The mean face is found by aligning every valid frame's rigid points to the first's,
    averaging, and aligning again (twice); each frame's rotation from it is read as
    ``R = Rz(roll) Rx(pitch) Ry(yaw)`` in the mean face's axes: the camera's (x right, y down,
    z away) turned about z until the face's eye line lies along x."""
    p = np.asarray(landmarks, np.float64)[:, list(RIGID)]
    valid = np.isfinite(p).all(axis=(1, 2)) if valid is None else np.asarray(valid, bool) & np.isfinite(p).all(axis=(1, 2))
    F = p.shape[0]
    out = {k: np.full(F, np.nan) for k in POSE_MEASURES}
    if not valid.any():
        return out
    pts = p[valid] - p[valid].mean(1, keepdims=True)
    pts /= np.linalg.norm(pts, axis=(1, 2), keepdims=True)
    ref = pts[0]
    for _ in range(3):
        aligned = np.stack([q @ _kabsch(q, ref).T for q in pts])
        ref = aligned.mean(0)
        ref /= np.linalg.norm(ref)
    rots = np.stack([_kabsch(ref, q) for q in pts])  # ref -> frame
    # Read in the mean face's own axes: its eye line turned onto the image's x (a clip filmed
    # sideways reads like an upright one; for an upright face this turns by a degree or two).
    eye = ref[RIGID.index(263)] - ref[RIGID.index(33)]
    c, s = eye[:2] / max(float(np.linalg.norm(eye[:2])), 1e-12)
    A = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    rots = A.T @ rots @ A
    # R = Rz(roll) @ Rx(pitch) @ Ry(yaw): R[2,1] = sin(pitch) (cos yaw ...), see below.
    pitch = np.arcsin(np.clip(rots[:, 2, 1], -1, 1))
    yaw = np.arctan2(-rots[:, 2, 0], rots[:, 2, 2])
    roll = np.arctan2(-rots[:, 0, 1], rots[:, 1, 1])
    for k, v in zip(POSE_MEASURES, (yaw, pitch, roll)):
        out[k][valid] = np.degrees(v)
    return out


def face_measures(landmarks: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All :data:`MEASURES` of ``landmarks [F, 478, 3]``; frames not ``valid`` are NaN."""
    p = np.array(landmarks, np.float64)
    if valid is not None:
        p[~np.asarray(valid, bool)] = np.nan
    return {**expression_measures(p), **head_angles(p), **gaze_measures(p)}


def pose_explained(measures: dict[str, np.ndarray], min_frames: int = 12) -> dict[str, float | None]:
    """Per expression measure of ``measures`` (as :func:`face_measures` returns): the share of its
    variance (R^2) that a quadratic in the same frames' head yaw and pitch explains. A reading
    that moves with the head's turn rather than the face shows here (MediaPipe's eye opening on
    the head_talking avatar moves by 0.03 between its head tipped 25 degrees up and 25 down, its
    full blink by 0.04). None without ``min_frames`` finite frames, or for a head that does not move."""
    out: dict[str, float | None] = {}
    yaw, pitch = (np.asarray(measures.get(k, ()), np.float64) for k in ("yaw", "pitch"))
    for k in EXPRESSION_MEASURES:
        y = np.asarray(measures.get(k, ()), np.float64)
        n = min(len(y), len(yaw), len(pitch))
        y, a, b = y[:n], yaw[:n], pitch[:n]
        ok = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)
        out[k] = None
        if ok.sum() < min_frames or y[ok].std() == 0 or (a[ok].std() == 0 and b[ok].std() == 0):
            continue
        a, b, y = a[ok], b[ok], y[ok]
        X = np.stack((np.ones_like(a), a, b, a * a, a * b, b * b), 1)
        X[:, 1:] /= np.maximum(np.abs(X[:, 1:]).max(0), 1e-12)  # conditioned columns
        fit = X @ np.linalg.lstsq(X, y, rcond=None)[0]
        out[k] = round(float(1.0 - ((y - fit) ** 2).sum() / ((y - y.mean()) ** 2).sum()), 3)
    return out


def compare(driver: dict[str, np.ndarray], follower: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per measure over the frames where both are finite: Pearson ``correlation`` of the
    follower with the driver and ``amplitude`` (ratio of their standard deviations,
    follower / driver); ``frames`` used and ``driver_std`` (how much the driver moved: a
    measure that barely moves correlates with noise). Undefined figures (a flat series) are None.
    Each expression measure also gets ``pose_r2_driver`` and ``pose_r2_follower``
    (:func:`pose_explained`): how much of each side's reading its head's turn explains."""
    out = {}
    for k in driver:
        if k not in follower:
            continue
        a, b = np.asarray(driver[k], np.float64), np.asarray(follower[k], np.float64)
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        ok = np.isfinite(a) & np.isfinite(b)
        sa, sb = (a[ok].std(), b[ok].std()) if ok.sum() > 2 else (0.0, 0.0)
        corr = float(np.corrcoef(a[ok], b[ok])[0, 1]) if sa > 0 and sb > 0 else None
        out[k] = {"correlation": None if corr is None or math.isnan(corr) else round(corr, 3),
                  "amplitude": round(float(sb / sa), 3) if sa > 0 else None, "frames": int(ok.sum()),
                  "driver_std": round(float(sa), 4)}
    for who, measures in (("driver", driver), ("follower", follower)):
        for k, r2 in pose_explained(measures).items():
            if k in out:
                out[k][f"pose_r2_{who}"] = r2
    return out

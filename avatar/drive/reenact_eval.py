"""Grading reenactment from outside: MediaPipe on the driver and on the avatar's render.

:func:`driven_measures` renders a driven avatar frame by frame, runs MediaPipe face mesh on
each render and reads the model-free measures of :mod:`avatar.landmarks.face_measures`
(eye and jaw opening, mouth width, brow height, head yaw/pitch/roll); the driver's come from
its own MediaPipe landmarks. :func:`avatar.landmarks.face_measures.compare` then gives the
correlation and amplitude ratio per measure. The toolkit's fitter never grades itself here.

:func:`fit_agreement` compares the per-frame driver fit with a batched fit (or the truth) of
the same frames: head-rotation difference and relative depth difference.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry.rotations import axis_angle_to_matrix
from ..landmarks.face_measures import EXPRESSION_MEASURES, MEASURES, compare, face_measures
from .retarget import RetargetConfig
from .sources import DriveSequence


def render_driven_frames(package, drive: DriveSequence, cfg: RetargetConfig | None = None, size: int | None = None,
                         neutral_frame: int | None = None, camera: str = "tracked"):
    """Yield the avatar's rendered frames ``[H, W, 3]`` uint8 for ``drive``, as ``avatar render`` renders them."""
    from .animate import driven_frames  # noqa: PLC0415

    for image, _, _ in driven_frames(package, drive, camera, size, cfg, neutral_frame):
        yield image


def detect_sequence(frames) -> np.ndarray:
    """MediaPipe landmarks ``[F, 478, 3]`` (NaN where no face) of an iterable of RGB frames (video mode)."""
    from ..landmarks import FaceMeshDetector  # noqa: PLC0415

    out = []
    with FaceMeshDetector(video=True, max_faces=1) as detector:
        for frame in frames:
            faces = detector.detect(frame)
            out.append(faces[0].landmarks if faces else np.full((478, 3), np.nan, np.float32))
    return np.stack(out)


def summarise(comparison: dict) -> dict:
    """Mean correlation and the amplitude ratios' spread over the four expression measures."""
    corr = [comparison[k]["correlation"] for k in EXPRESSION_MEASURES if comparison.get(k, {}).get("correlation") is not None]
    amp = [comparison[k]["amplitude"] for k in EXPRESSION_MEASURES if comparison.get(k, {}).get("amplitude") is not None]
    return {"expression_correlation_mean": round(float(np.mean(corr)), 3) if corr else None,
            "expression_correlation_min": round(float(np.min(corr)), 3) if corr else None,
            "amplitude_min": round(float(np.min(amp)), 3) if amp else None,
            "amplitude_max": round(float(np.max(amp)), 3) if amp else None}


def grade_reenactment(package, drive: DriveSequence, driver_landmarks: np.ndarray, cfg: RetargetConfig | None = None,
                      size: int | None = None, neutral_frame: int | None = None) -> dict:
    """Render ``drive`` on ``package`` and compare MediaPipe's measures of the render with the
    driver's (``driver_landmarks [F, 478, 3]``, NaN without a face): per measure
    ``{correlation, amplitude, frames}``, the summary, and the frames where MediaPipe found the
    avatar's face."""
    rendered = detect_sequence(render_driven_frames(package, drive, cfg, size, neutral_frame))
    avatar = face_measures(rendered)
    driver = face_measures(driver_landmarks[: len(rendered)])
    per = compare(driver, avatar)
    found = np.isfinite(rendered).all(axis=(1, 2))
    return {"measures": per, **summarise(per), "frames": int(len(rendered)),
            "avatar_face_found": round(float(found.mean()), 3)}


# What each expression measure's response sets, from the avatar's rest: the blendshapes turned
# fully on and those released to 0 (their antagonists), by name pattern (ARKit / ICT names).
RESPONSE_SHAPES = {
    "eye": (("eyeBlink*",), ("eyeWide*",)),  # lids shut
    "jaw": (("jawOpen",), ("mouthClose",)),
    "mouth_width": (("mouthStretch*",), ("mouthPucker", "mouthFunnel")),
    "brow": (("browInnerUp*", "browOuterUp*"), ("browDown*",)),
}


def expression_response(package, size: int | None = None) -> dict:
    """How far the avatar can move each expression measure: MediaPipe's measures on the avatar
    rendered at its reference pose and rest expression, and with each measure's blendshapes of
    :data:`RESPONSE_SHAPES` fully on (their antagonists released). Per measure ``{rest, on,
    change}`` (inter-ocular units, as :mod:`avatar.landmarks.face_measures`); None for a measure
    whose blendshapes the avatar's model does not name or whose render shows no face. A driver's
    motion larger than ``change`` cannot show on this avatar whatever the retargeting."""
    from ..models.profile import name_mask  # noqa: PLC0415
    from .animate import avatar_rest  # noqa: PLC0415

    names = list(package.expression_names)
    rest = avatar_rest(package)
    r0, t0 = package.reference_pose_or(np.zeros(3, np.float32), np.zeros(3, np.float32))
    K, width, height = package.camera(size)
    viewmat = package.state["viewmat"].to(K.device, torch.float32)
    poses, keys = [rest], []
    for measure, (on, off) in RESPONSE_SHAPES.items():
        on_mask, off_mask = np.array(name_mask(names, on), bool), np.array(name_mask(names, off), bool)
        if not on_mask.any():
            continue
        e = rest.copy()
        e[on_mask], e[off_mask] = 1.0, 0.0
        poses.append(e)
        keys.append(measure)
    images = [package.render_frame(e, r0, t0, viewmat, K, width, height)[0] for e in poses]
    measures = face_measures(detect_sequence(images))
    out: dict = {m: None for m in RESPONSE_SHAPES}
    for i, measure in enumerate(keys, start=1):
        a, b = float(measures[measure][0]), float(measures[measure][i])
        if np.isfinite(a) and np.isfinite(b):
            out[measure] = {"rest": round(a, 4), "on": round(b, 4), "change": round(b - a, 4)}
    return out


def fit_agreement(rotation: np.ndarray, translation: np.ndarray, ref_rotation: np.ndarray,
                  ref_depth: np.ndarray, valid: np.ndarray | None = None, to_camera: np.ndarray | None = None) -> dict:
    """Per-frame fit ``rotation [F, 3]`` (axis-angle, tracking camera at the origin) and
    ``translation [F, 3]`` against reference rotations ``[F, 3]`` and camera depths ``[F]`` (metres):
    rotation difference (degrees: median, p95, max, frames beyond 15) and relative depth
    difference (median, max). ``to_camera [3, 3]`` maps the reference rotations into the
    tracking camera's world (for a reference seen through another camera)."""
    R = axis_angle_to_matrix(torch.as_tensor(rotation, dtype=torch.float64)).numpy()
    R_ref = axis_angle_to_matrix(torch.as_tensor(ref_rotation, dtype=torch.float64)).numpy()
    if to_camera is not None:
        R_ref = to_camera @ R_ref
    ok = np.ones(len(R), bool) if valid is None else np.asarray(valid, bool)
    cos = (np.einsum("fij,fij->f", R, R_ref) - 1) / 2
    angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))[ok]
    depth = -np.asarray(translation, np.float64)[:, 2]
    rel = np.abs(depth / np.asarray(ref_depth, np.float64) - 1)[ok]
    return {"frames": int(ok.sum()),
            "rotation_deg": {"median": round(float(np.median(angle)), 2), "p95": round(float(np.percentile(angle, 95)), 2),
                             "max": round(float(angle.max()), 2), "frames_over_15": int((angle > 15).sum())},
            "depth_rel": {"median": round(float(np.median(rel)), 4), "max": round(float(rel.max()), 4)}}


__all__ = ["MEASURES", "RESPONSE_SHAPES", "detect_sequence", "expression_response", "fit_agreement", "grade_reenactment",
           "render_driven_frames", "summarise"]

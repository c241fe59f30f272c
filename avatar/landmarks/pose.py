"""MediaPipe pose landmarks (0.10.21, bundled ``pose_landmark_full`` model): 33 body points per frame.

``mediapipe.solutions.pose`` with ``model_complexity=1`` runs the ``pose_landmark_full``
model that the 0.10.21 wheel bundles (the Tasks API's ``PoseLandmarker`` needs a ``.task``
bundle that is not shipped, so it is not used). It finds one person per image.

Coordinates are returned in pixels of the image given: x right, y down, continuous (pixel
``i`` covers ``[i, i + 1)``, as MediaPipe's normalised coordinates times the image size);
z is MediaPipe's relative depth scaled like x (pixels; origin at the hips' midpoint,
smaller = closer to the camera); the fourth value is MediaPipe's visibility in 0..1.
The order of the 33 points is :data:`POSE_LANDMARK_NAMES`. With ``segmentation=True`` the
pose model's person mask (float32 in 0..1, image-sized) comes with each detection.

:func:`detect_poses` runs the detector over a sequence of frames and returns
``[T, 33, 4]`` landmarks with a per-frame ``valid`` flag (detected); :func:`fill_pose_gaps`
bridges short runs of frames without a pose by linear interpolation from their neighbours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np

N_POSE_LANDMARKS = 33
MIN_MASK_SUPPORT = 0.5  # a pose with fewer of its visible landmarks on the person mask is no pose

POSE_LANDMARK_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)

# Bones of the skeleton drawing (index pairs into POSE_LANDMARK_NAMES).
POSE_CONNECTIONS = (
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24), (23, 25), (25, 27),
    (24, 26), (26, 28), (27, 29), (29, 31), (27, 31), (28, 30), (30, 32), (28, 32), (15, 17), (15, 19),
    (15, 21), (16, 18), (16, 20), (16, 22), (0, 2), (0, 5), (2, 7), (5, 8), (9, 10),
)


@dataclass
class PoseDetection:
    """One person's pose in one image."""

    landmarks: np.ndarray  # [33, 4] float32: x, y (pixels), z (pixels, relative), visibility (0..1)
    world: np.ndarray  # [33, 3] float32: MediaPipe's metric landmarks, metres, origin between the hips
    mask: np.ndarray | None = None  # [H, W] float32 person probability (with segmentation=True)

    def box(self, min_visibility: float = 0.5) -> np.ndarray:
        """``[x0, y0, x1, y1]`` of the landmarks at least ``min_visibility`` visible (all when none is)."""
        pts = self.landmarks
        seen = pts[pts[:, 3] >= min_visibility] if (pts[:, 3] >= min_visibility).any() else pts
        return np.concatenate((seen[:, :2].min(0), seen[:, :2].max(0))).astype(np.float64)


def mask_support(landmarks: np.ndarray, mask: np.ndarray, min_visibility: float = 0.5) -> float:
    """Fraction of the visible landmarks (``[33, 4]``, pixels) that lie on the person ``mask``
    (``[H, W]`` in 0..1, > 0.5); 0.0 when none is visible or inside the image.

    In tracking mode MediaPipe can keep reporting a pose for a few frames after the person
    has left (it re-detects only when its tracking confidence drops): such a pose lies on no
    person in the segmentation mask, which this tells.
    """
    h, w = mask.shape
    seen = landmarks[landmarks[:, 3] >= min_visibility, :2]
    inside = (seen[:, 0] >= 0) & (seen[:, 0] < w) & (seen[:, 1] >= 0) & (seen[:, 1] < h)
    if not inside.any():
        return 0.0
    x, y = seen[inside].astype(int).T
    return float((mask[y, x] > 0.5).sum() / len(seen))


class PoseDetector:
    """Thin wrapper over ``mediapipe.solutions.pose.Pose`` (``model_complexity=1``: pose_landmark_full).

    ``video=True`` tracks across consecutive frames (faster, steadier, landmarks smoothed
    over time by MediaPipe); ``video=False`` treats every image independently.
    ``segmentation=True`` also returns the person mask. Use as a context manager or call
    :meth:`close`. Input images are ``[H, W, 3]`` uint8 RGB.
    """

    def __init__(self, video: bool = True, segmentation: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ logging quiet
        import mediapipe as mp  # noqa: PLC0415

        self.segmentation = segmentation
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=not video, model_complexity=1, smooth_landmarks=video,
            enable_segmentation=segmentation, smooth_segmentation=video and segmentation,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence,
        )

    def detect(self, rgb: np.ndarray) -> PoseDetection | None:
        """The person's pose in ``rgb`` (None when MediaPipe finds nobody)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        result = self._pose.process(np.ascontiguousarray(rgb))
        if result.pose_landmarks is None:
            return None
        pts = np.array([(p.x * w, p.y * h, p.z * w, p.visibility) for p in result.pose_landmarks.landmark],
                       np.float32)
        world = (np.array([(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark], np.float32)
                 if result.pose_world_landmarks is not None else np.zeros((N_POSE_LANDMARKS, 3), np.float32))
        mask = None
        if self.segmentation:
            raw = result.segmentation_mask
            mask = (np.zeros((h, w), np.float32) if raw is None
                    else np.clip(raw, 0.0, 1.0).astype(np.float32, copy=False))
        return PoseDetection(pts, world, mask)

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> "PoseDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class PoseTrack:
    """Pose landmarks of a frame sequence (see :func:`detect_poses`)."""

    landmarks: np.ndarray  # [T, 33, 4] float32, pixels of the frames; zeros where no pose (unless filled)
    valid: np.ndarray  # [T] bool: MediaPipe found a pose in this frame
    filled: np.ndarray  # [T] bool: no pose found, landmarks interpolated from the neighbours (short gap)
    masks: np.ndarray | None = None  # [T, H, W] float32 person masks (segmentation=True)

    @property
    def present(self) -> np.ndarray:
        """[T] bool: landmarks usable (detected or bridged over a short gap)."""
        return self.valid | self.filled


def fill_pose_gaps(landmarks: np.ndarray, valid: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Bridge runs of at most ``max_gap`` invalid frames that lie between two valid ones.

    Args:
        landmarks: ``[T, 33, C]`` per-frame landmarks (rows of invalid frames are ignored).
        valid: ``[T]`` bool.
        max_gap: longest run of invalid frames to interpolate (0: none).

    Returns:
        ``(filled [T, 33, C], bridged [T] bool)``: linear interpolation (every channel,
        visibility included) between the valid frames on either side of each short gap;
        invalid frames at the ends and in longer gaps are left as they were.
    """
    landmarks = np.array(landmarks, copy=True)
    valid = np.asarray(valid, bool)
    if landmarks.shape[0] != valid.shape[0]:
        raise ValueError(f"{landmarks.shape[0]} landmark frames for {valid.shape[0]} valid flags")
    bridged = np.zeros_like(valid)
    good = np.flatnonzero(valid)
    for a, b in zip(good[:-1], good[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            w = (np.arange(1, gap + 1) / (gap + 1)).astype(landmarks.dtype)[:, None, None]
            landmarks[a + 1:b] = (1 - w) * landmarks[a] + w * landmarks[b]
            bridged[a + 1:b] = True
    return landmarks, bridged


def detect_poses(frames: Iterable[np.ndarray], video: bool = True, segmentation: bool = False, max_gap: int = 5,
                 progress: bool = False, total: int | None = None) -> PoseTrack:
    """Pose landmarks of every frame in ``frames`` (``[H, W, 3]`` uint8 RGB images).

    Frames where MediaPipe finds no pose have ``valid`` False; runs of at most ``max_gap``
    such frames between two detections are interpolated (``filled``). With
    ``segmentation=True`` the person mask of every frame comes back too (zeros where no pose),
    and a pose whose visible landmarks mostly lie off that mask is dropped (:func:`mask_support`).
    """
    rows, found, masks = [], [], []  # a pose off its own mask is dropped (mask_support < MIN_MASK_SUPPORT)
    iterable = frames
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        iterable = tqdm(frames, total=total, desc="pose landmarks", unit="frame")
    with PoseDetector(video=video, segmentation=segmentation) as detector:
        for rgb in iterable:
            pose = detector.detect(rgb)
            if pose is not None and segmentation and mask_support(pose.landmarks, pose.mask) < MIN_MASK_SUPPORT:
                pose = None
            found.append(pose is not None)
            rows.append(pose.landmarks if pose is not None else np.zeros((N_POSE_LANDMARKS, 4), np.float32))
            if segmentation:
                masks.append(pose.mask if pose is not None else np.zeros(rgb.shape[:2], np.float32))
    valid = np.array(found, bool)
    landmarks = np.stack(rows) if rows else np.zeros((0, N_POSE_LANDMARKS, 4), np.float32)
    landmarks, filled = fill_pose_gaps(landmarks, valid, max_gap)
    return PoseTrack(landmarks, valid, filled, np.stack(masks) if segmentation and masks else None)

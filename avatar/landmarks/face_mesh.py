"""MediaPipe face mesh (0.10.21, bundled model): 478 landmarks per face with refined irises.

Coordinates are returned in pixels of the image given: x right, y down, z is MediaPipe's
relative depth scaled like x (pixels; smaller = closer to the camera, origin near the
head centre). Faces are sorted largest first (by the area of their landmark box).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

N_LANDMARKS = 478


@dataclass
class FaceDetection:
    landmarks: np.ndarray  # [478, 3] float32, pixels
    box: np.ndarray  # [4] x0, y0, x1, y1 of the landmarks, pixels

    @property
    def size(self) -> float:
        """Side of the landmark box's bounding square, pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes."""
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    return float(inter / union) if union > 0 else 0.0


def distinct_faces(faces: list, max_iou: float = 0.5) -> list:
    """Drop faces overlapping a larger one by more than ``max_iou``: in tracking mode
    MediaPipe sometimes reports a tracked face a second time, slightly shifted."""
    kept = []
    for face in faces:  # largest first
        if all(box_iou(face.box, k.box) <= max_iou for k in kept):
            kept.append(face)
    return kept


class FaceMeshDetector:
    """Thin wrapper over ``mediapipe.solutions.face_mesh.FaceMesh`` with refined landmarks.

    ``video=True`` tracks across consecutive frames (faster, temporally steadier);
    ``video=False`` treats every image independently. Use as a context manager or call
    :meth:`close`. Input images are ``[H, W, 3]`` uint8 RGB.
    """

    def __init__(self, video: bool = True, max_faces: int = 2, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ logging quiet
        import mediapipe as mp  # noqa: PLC0415

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """All distinct faces found in ``rgb``, largest first (empty list when none)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
            box = np.concatenate((pts[:, :2].min(0), pts[:, :2].max(0)))
            faces.append(FaceDetection(pts, box))
        faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return distinct_faces(faces)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceMeshDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

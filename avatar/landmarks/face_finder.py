"""Choosing the face to follow, and finding faces too small for the face mesh's own detector."""

from __future__ import annotations

import os

import numpy as np

from ..geometry.crop import crop_image, square
from .face_mesh import FaceDetection, FaceMeshDetector, box_iou


def choose_face(faces: list, previous_box: np.ndarray | None) -> int:
    """Index of the face to keep: the largest one that continues the previous frame's face
    (box IoU > 0.3), else the largest. ``faces`` are sorted largest first; the previous box
    is in the same pixels. Continuity keeps the crop on one person and off one-frame
    false detections."""
    if previous_box is not None and len(faces) > 1:
        for k, face in enumerate(faces):
            if box_iou(face.box, previous_box) > 0.3:
                return k
    return 0


class SmallFaceFinder:
    """Fallback for faces too small for the face mesh's own detector (below ~15% of the frame).

    MediaPipe's full-range face detector (faces up to ~5 m away) finds the face box: on the
    downscaled frame first, then on a square around the previous frame's face, then on
    overlapping ``tile`` x ``tile`` tiles of the full-resolution frame (the detector sees
    192 px, so on a whole 1080p frame it misses faces under ~100 px; on 480 px tiles it finds
    them down to ~25 px, measured on the synthetic scenes of the tests). The face mesh then
    runs (static mode) on a square crop of ``crop_scale`` times the box, resized to
    ``resolution``. Landmarks come back in the pixels of the image given.
    """

    def __init__(self, min_confidence: float = 0.5, crop_scale: float = 2.2, resolution: int = 256,
                 tile: int = 480):
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp  # noqa: PLC0415

        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_confidence)
        self._mesh = FaceMeshDetector(video=False, max_faces=1)
        self.crop_scale, self.resolution, self.tile = crop_scale, resolution, tile

    def _best(self, image: np.ndarray, x0: float = 0.0, y0: float = 0.0, scale: float = 1.0):
        """``(score, x, y, w, h)`` of the best detection in ``image``, in the pixels of the image
        it was cut from at ``(x0, y0)`` and downscaled by ``scale``; None when there is none."""
        detections = self._detector.process(np.ascontiguousarray(image)).detections
        if not detections:
            return None
        d = max(detections, key=lambda d: d.score[0])
        rel, (h, w) = d.location_data.relative_bounding_box, image.shape[:2]
        return (d.score[0], x0 + rel.xmin * w / scale, y0 + rel.ymin * h / scale, rel.width * w / scale,
                rel.height * h / scale)

    def _tiles(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        side, step = self.tile, self.tile * 3 // 4
        best = None
        for y in range(0, max(1, h - side + step), step):
            for x in range(0, max(1, w - side + step), step):
                y0, x0 = min(y, max(0, h - side)), min(x, max(0, w - side))
                found = self._best(rgb[y0:y0 + side, x0:x0 + side], x0, y0)
                if found is not None and (best is None or found[0] > best[0]):
                    best = found
        return best

    def find(self, rgb: np.ndarray, search: np.ndarray | None = None, near: np.ndarray | None = None) -> list:
        """Faces in ``rgb`` [H, W, 3] uint8; the detector looks at ``search`` (a downscaled
        copy, same aspect) first when given, then around ``near`` (the previous face's box
        ``[x0, y0, x1, y1]`` in ``rgb`` pixels), then tile by tile. Returns at most one face."""
        h, w = rgb.shape[:2]
        found = None
        if search is not None and search.shape[:2] != rgb.shape[:2]:
            found = self._best(search, scale=search.shape[1] / w)
        if found is None and near is not None and np.all(np.isfinite(near)):
            side = max(self.tile, 6 * float(max(near[2] - near[0], near[3] - near[1])))
            crop, A = crop_image(rgb, square(0.5 * (near[:2] + near[2:]), side), min(self.tile, round(side)))
            found = self._best(crop, -A[0, 2] / A[0, 0], -A[1, 2] / A[0, 0], A[0, 0])
        if found is None and max(h, w) > self.tile:
            found = self._tiles(rgb)
        elif found is None:
            found = self._best(rgb)
        if found is None:
            return []
        _, x, y, bw, bh = found
        box = square(np.array([x + bw / 2, y + bh / 2]), self.crop_scale * max(bw, bh))
        crop, A = crop_image(rgb, box, self.resolution)
        faces = self._mesh.detect(crop)
        if not faces:
            return []
        s = A[0, 0]
        lm = faces[0].landmarks.copy()
        lm[:, :2] = (lm[:, :2] - A[:, 2]) / s
        lm[:, 2] /= s
        return [FaceDetection(lm, np.concatenate((lm[:, :2].min(0), lm[:, :2].max(0))))]

    def close(self) -> None:
        self._detector.close()
        self._mesh.close()


def upright_turn(images: list[np.ndarray], margin: float = 0.05) -> tuple[int, dict[int, float]]:
    """How far the frames ``images`` look turned: ``(degrees, scores)``, where turning them
    ``degrees`` counter-clockwise (0, 90, 180, 270) makes the faces upright.

    MediaPipe's short-range face detector scores each image turned each way (``scores``: the
    mean best score per turn). Its score is highest for an upright face (measured on the
    test videos: 0.93-0.98 upright, at most 0.86 turned), and the face mesh still finds a
    sideways face but places its landmarks badly, so a video stored sideways without rotation
    metadata shows here. 0 unless another turn beats upright by ``margin``.
    """
    os.environ.setdefault("GLOG_minloglevel", "2")
    import mediapipe as mp  # noqa: PLC0415

    scores = {turn: 0.0 for turn in (0, 90, 180, 270)}
    if not images:
        return 0, scores
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.1) as detector:
        for image in images:
            for turn in scores:
                found = detector.process(np.ascontiguousarray(np.rot90(image, turn // 90))).detections or []
                scores[turn] += max((d.score[0] for d in found), default=0.0) / len(images)
    best = max(scores, key=scores.get)
    return (best if scores[best] > scores[0] + margin else 0), {k: round(v, 3) for k, v in scores.items()}

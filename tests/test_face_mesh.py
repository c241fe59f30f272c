"""The real MediaPipe face mesh on the public-domain astronaut portrait that scikit-image ships."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.landmarks import FaceMeshDetector

skimage_data = pytest.importorskip("skimage.data")


def test_finds_the_astronaut_face_in_pixels():
    img = skimage_data.astronaut()  # 512x512 RGB
    with FaceMeshDetector(video=False) as det:
        faces = det.detect(img)
        assert len(faces) == 1
        lm = faces[0].landmarks
        assert lm.shape == (478, 3) and lm.dtype == np.float32
        # The face sits in the upper middle of the photo.
        x0, y0, x1, y1 = faces[0].box
        assert 150 < x0 < x1 < 320 and 40 < y0 < y1 < 260 and 60 < faces[0].size < 200
        assert det.detect(np.zeros((64, 64, 3), np.uint8)) == []
        with pytest.raises(ValueError, match="uint8"):
            det.detect(img.astype(np.float32))


def test_duplicate_reports_of_one_face_are_dropped():
    from avatar.landmarks import FaceDetection
    from avatar.landmarks.face_mesh import distinct_faces

    pts = np.zeros((478, 3), np.float32)
    big = FaceDetection(pts, np.array([0.0, 0.0, 100.0, 100.0]))
    shifted = FaceDetection(pts, np.array([5.0, 3.0, 103.0, 101.0]))  # the same face again
    other = FaceDetection(pts, np.array([200.0, 0.0, 260.0, 60.0]))
    assert distinct_faces([big, shifted, other]) == [big, other]

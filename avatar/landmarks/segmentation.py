"""MediaPipe selfie segmentation (0.10.21, bundled models): a soft person mask per image.

The mask covers the person, hair and shoulders included, as MediaPipe's selfie models
see them: float32 in 0..1 (1 = person), the size of the image given.
"""

from __future__ import annotations

import os

import numpy as np

# MediaPipe's two bundled selfie models: 256x256 input ("general") or 144x256 ("landscape").
SEGMENTATION_MODELS = {"general": 0, "landscape": 1}


class SelfieSegmenter:
    """Thin wrapper over ``mediapipe.solutions.selfie_segmentation.SelfieSegmentation``.

    ``model="general"`` suits square crops, ``"landscape"`` 16:9 frames and is slightly
    faster. Use as a context manager or call :meth:`close`. Input images are
    ``[H, W, 3]`` uint8 RGB.
    """

    def __init__(self, model: str = "general"):
        if model not in SEGMENTATION_MODELS:
            raise ValueError(f"unknown selfie segmentation model {model!r}: choose one of {list(SEGMENTATION_MODELS)}")
        os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ logging quiet
        import mediapipe as mp  # noqa: PLC0415

        self.model = model
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=SEGMENTATION_MODELS[model])

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """``[H, W]`` float32 person probability in 0..1 for the ``[H, W, 3]`` uint8 RGB ``rgb``."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        mask = self._seg.process(np.ascontiguousarray(rgb)).segmentation_mask
        if mask is None:  # MediaPipe returns no mask only for an empty graph output
            return np.zeros(rgb.shape[:2], np.float32)
        return np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)

    def close(self) -> None:
        self._seg.close()

    def __enter__(self) -> "SelfieSegmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

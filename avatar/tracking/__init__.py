"""Fitting the head model to landmarks, and tracked sequences (see DESIGN.md).

- :mod:`.landmark_model`: the model restricted to its 478 embedded MediaPipe landmarks;
- :mod:`.fit`: batched fit of a whole sequence (identity, per-frame pose/expression, focal);
- :mod:`.online`: per-frame Gauss-Newton fitter for live driving;
- :mod:`.sequence`: ``tracking.npz`` I/O; :mod:`.track`: the capture-folder pipeline;
  :mod:`.overlay`: ``tracking_overlay.mp4``.
"""

from .fit import FitConfig, FitResult, fit_sequence
from .landmark_model import LandmarkModel, tracking_viewmat
from .online import FrameTracker, OnlineConfig
from avatar.io.tracking import TRACKING_FILE, TrackedSequence, TrackingError, load_tracking

__all__ = [
    "FitConfig", "FitResult", "FrameTracker", "LandmarkModel", "OnlineConfig", "TRACKING_FILE",
    "TrackedSequence", "TrackingError", "fit_sequence", "load_tracking", "tracking_viewmat",
]

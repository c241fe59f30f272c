"""Add MediaPipe pose landmarks and the shoulder state to a copy of an existing capture, without
preprocessing or tracking it again (what ``preprocess.pose=true`` and ``avatar track`` would write).

    python data_tools/add_pose.py SRC_CAPTURE DST_CAPTURE

Copies ``SRC_CAPTURE`` (frames, masks, landmarks, tracking) to ``DST_CAPTURE``, runs the pose
detector on its frames (they are the crops preprocess wrote, so the landmarks are in their pixels,
as preprocess stores them), writes ``pose`` / ``pose_present`` into ``landmarks.npz`` and the
shoulder state into ``tracking.npz``. Prints the shoulder report as JSON.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np


def main(src: str, dst: str) -> int:
    from avatar.io.atomic import atomic_write
    from avatar.io.capture import Capture
    from avatar.io.tracking import load_tracking
    from avatar.landmarks.pose import MIN_MASK_SUPPORT, PoseDetector, fill_pose_gaps, mask_support
    from avatar.tracking.track import with_shoulders
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    if not dst.exists():
        shutil.copytree(src, dst)
    capture = Capture(dst)
    F = capture.n_frames
    pose = np.zeros((F, 33, 4), np.float32)
    found = np.zeros(F, bool)
    with PoseDetector(video=True) as detector:
        for i in tqdm(range(F), desc="pose landmarks", unit="frame"):
            det = detector.detect(capture.load_frame(i))
            if det is not None and mask_support(det.landmarks, capture.load_mask(i)) >= MIN_MASK_SUPPORT:
                pose[i], found[i] = det.landmarks, True
    pose, bridged = fill_pose_gaps(pose, found, 5)
    with np.load(dst / "landmarks.npz", allow_pickle=False) as z:
        arrays = dict(z)
    arrays.update(pose=pose, pose_present=found | bridged)
    atomic_write(dst / "landmarks.npz", lambda f: np.savez(f, **arrays))
    capture = Capture(dst)
    seq, report = with_shoulders(load_tracking(dst), capture)
    seq.save(dst / "tracking.npz")
    print(json.dumps({"pose_detected": int(found.sum()), "pose_bridged": int(bridged.sum()), "shoulders": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

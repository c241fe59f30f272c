"""Body tracking: ONE JSON line per case.

``synthetic``: makes (or reuses) a synthetic Anny body capture (avatar.synthetic.body_capture:
walking in place, arms raised, a full turn; 256x256) and tracks its pose landmarks (the exact
projected landmarks the capture holds, or MediaPipe's on its frames with ``--detect``) and masks
with ``avatar track``'s body fitter. Figures: the median angle between fitted and true local
rotations of the tracked joints (degrees, all valid frames; issue target <= 5), the same per
joint, the global rotation error in camera axes, and the tracking report's mask IoU (target
>= 0.95) and landmark error.

``turnaround``: ``avatar preprocess preprocess.subject=body`` then ``avatar track model=anny``
(no overlay) on ``body_turnaround_512.mp4`` ($AVATAR_TEST_DATA; 65 frames, a full turn on
green), with their wall times (target: preprocess + track <= 60 s on the 2-core CPU) and the
mask IoU of the fitted body against the person mask (target >= 0.9).

Both run the tracking's photometric refinement of the global pose as configured
(``track.body.photometric``); ``--photometric iterations=0`` leaves it out, other ``KEY=VALUE``
pairs set its options, so variants are measured by the same command.

    python benchmarks/track_body.py [--case synthetic|turnaround|all] [--frames 60] [--work DIR] [--detect]
                                    [--resolution 256] [--device cpu] [--photometric KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (degrees) between rotations given as axis-angles ``[..., 3]``."""
    from avatar.geometry.rotations import axis_angle_to_matrix

    ra = axis_angle_to_matrix(torch.as_tensor(a, dtype=torch.float64))
    rb = axis_angle_to_matrix(torch.as_tensor(b, dtype=torch.float64))
    cos = ((ra.transpose(-1, -2) @ rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return np.degrees(np.arccos(cos.clamp(-1, 1).numpy()))


def camera_rotation(rotation: np.ndarray, viewmat: np.ndarray) -> np.ndarray:
    """Global rotations ``[F, 3]`` seen in the camera's axes (axis-angle)."""
    from avatar.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    R = axis_angle_to_matrix(torch.as_tensor(rotation, dtype=torch.float64))
    V = torch.as_tensor(viewmat[:3, :3], dtype=torch.float64)
    return matrix_to_axis_angle(V @ R).numpy()


def detect_into(capture_dir: Path) -> dict:
    """Replace the capture's pose landmarks by MediaPipe's on its frames (``--detect``; frames,
    masks and meta.json stay)."""
    from avatar.io.atomic import atomic_write
    from avatar.io.capture import Capture
    from avatar.landmarks.pose import detect_poses

    cap = Capture(capture_dir)
    track = detect_poses((cap.load_frame(i) for i in range(cap.n_frames)), video=True)
    lm = cap.landmarks
    arrays = {"face": lm.face, "face_present": lm.face_present, "pose": track.landmarks.astype(np.float32),
              "pose_present": track.present}
    atomic_write(cap.root / "landmarks.npz", lambda f: np.savez_compressed(f, **arrays))
    return {"detected": int(track.valid.sum()), "interpolated": int(track.filled.sum())}


def track_config(args):
    """The body tracking options: the defaults, with the ``--photometric KEY=VALUE`` overrides."""
    import dataclasses

    from avatar.tracking.body_track import BodyTrackConfig

    cfg = BodyTrackConfig()
    for item in args.photometric:
        key, _, value = item.partition("=")
        if key not in {f.name for f in dataclasses.fields(cfg.photometric)} or not value:
            raise SystemExit(f"--photometric {item}: expected KEY=VALUE with KEY a field of "
                             "avatar.tracking.body_photometric.BodyPhotometricConfig")
        setattr(cfg.photometric, key, type(getattr(cfg.photometric, key))(float(value)))
    return cfg


def synthetic(args) -> dict:
    from avatar.io.tracking import load_tracking
    from avatar.synthetic.body_capture import BodySyntheticConfig, load_body_ground_truth, make_body_capture
    from avatar.tracking.body_track import track_body_capture
    import avatar.models

    work = Path(args.work or tempfile.mkdtemp(prefix="track_body_"))
    capture = work / f"synthetic_body_{args.frames}_{args.resolution}{'_detect' if args.detect else ''}"
    body = avatar.models.load("anny")
    t0 = time.perf_counter()
    if not (capture / "meta.json").is_file():
        make_body_capture(capture, BodySyntheticConfig(n_frames=args.frames, resolution=args.resolution,
                                                       write_tracking=False), body=body, progress=False)
    make_seconds = time.perf_counter() - t0
    detected = detect_into(capture) if args.detect else None
    t1 = time.perf_counter()
    report = track_body_capture(capture, body, track_config(args), out=work / f"{capture.name}_track",
                                device=args.device, overlay=False)
    track_seconds = time.perf_counter() - t1
    fit = load_tracking(work / f"{capture.name}_track" / "tracking.npz")
    truth = load_body_ground_truth(capture)
    tracked = [truth.joint_names.index(n) for n in body.body_profile.tracked_joints]
    valid = fit.valid
    err = angle_deg(fit.pose[valid][:, tracked], truth.pose[valid][:, tracked])  # [F, Jt]
    moving = np.abs(truth.pose[:, tracked]).max(axis=(0, 2)) > 0.05
    glob = angle_deg(camera_rotation(fit.rotation, fit.viewmat), camera_rotation(truth.rotation, truth.viewmat))
    return {
        "benchmark": "track_body", "case": "synthetic", "frames": args.frames, "resolution": args.resolution,
        "landmarks": "MediaPipe on the frames" if args.detect else "exact projected landmarks of the capture",
        "detected": detected,
        "joint_angle_error_deg": {"median": round(float(np.median(err)), 3),
                                  "mean": round(float(err.mean()), 3),
                                  "median_moving_joints": round(float(np.median(err[:, moving])), 3),
                                  "per_joint_median": {body.body_profile.tracked_joints[j]: round(float(np.median(err[:, j])), 2)
                                                       for j in range(len(tracked))}},
        "global_rotation_error_deg": {"median": round(float(np.median(glob[valid])), 3),
                                      "max": round(float(glob[valid].max()), 3)},
        "mask_iou": report["mask_iou"]["median"], "mask_iou_min": report["mask_iou"]["min"],
        "landmark_error_px": report["reprojection_px"]["median"],
        "photometric": report.get("photometric"),
        "shape_error": round(float(np.abs(fit.shape - truth.shape).max()), 4),
        "targets": {"joint_angle_error_deg": 5.0, "mask_iou": 0.95},
        "seconds": {"synthetic_capture": round(make_seconds, 2), "track": round(track_seconds, 2),
                    "fit": report["fit_seconds"]},
        "device": args.device, "torch_threads": torch.get_num_threads(),
    }


def turnaround(args) -> dict:
    root = Path(os.environ.get("AVATAR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
    video = root / "body_turnaround_512.mp4"
    if not video.is_file():
        return {"benchmark": "track_body", "case": "turnaround", "skipped": f"{video} not found (set AVATAR_TEST_DATA)"}
    from avatar.preprocess import PreprocessConfig
    from avatar.preprocess_body import preprocess_body
    from avatar.tracking.body_track import track_body_capture
    import avatar.models

    work = Path(args.work or tempfile.mkdtemp(prefix="track_body_"))
    capture = work / f"turnaround_{args.resolution}"
    t0 = time.perf_counter()
    pre = preprocess_body(video, capture, PreprocessConfig(subject="body", resolution=args.resolution,
                                                           progress=False, overwrite=True))
    preprocess_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    body = avatar.models.load("anny")
    load_seconds = time.perf_counter() - t1
    report = track_body_capture(capture, body, track_config(args), device=args.device, overlay=False)
    track_seconds = time.perf_counter() - t1
    return {
        "benchmark": "track_body", "case": "turnaround", "video": video.name, "frames": report["frames"],
        "resolution": args.resolution, "mask_iou": report["mask_iou"]["median"],
        "mask_iou_min": report["mask_iou"]["min"], "landmark_error_px": report["reprojection_px"]["median"],
        "poor_frames": len(report["poor_frames"]), "preprocess_flags": len(pre["flagged"]),
        "seconds": {"preprocess": round(preprocess_seconds, 2), "model_load": round(load_seconds, 2),
                    "track": round(track_seconds, 2), "fit": report["fit_seconds"],
                    "photometric": (report.get("photometric") or {}).get("seconds"),
                    "report": report["report_seconds"],
                    "preprocess_plus_track": round(preprocess_seconds + track_seconds, 2)},
        "targets": {"mask_iou": 0.9, "preprocess_plus_track_s": 60.0},
        "device": args.device, "torch_threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("synthetic", "turnaround", "all"), default="all")
    parser.add_argument("--frames", type=int, default=60, help="synthetic capture frames")
    parser.add_argument("--resolution", type=int, default=256, help="capture resolution, pixels")
    parser.add_argument("--work", default=None, help="folder for the captures (default: a temporary one)")
    parser.add_argument("--detect", action="store_true", help="synthetic: track MediaPipe's landmarks on its frames")
    parser.add_argument("--photometric", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the photometric refinement of the global pose (track.body.photometric.*), "
                             "e.g. iterations=0 to leave it out")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    for case in (("synthetic", "turnaround") if args.case == "all" else (args.case,)):
        print(json.dumps(synthetic(args) if case == "synthetic" else turnaround(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

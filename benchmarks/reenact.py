"""Benchmark of reenactment, graded from outside with MediaPipe; prints one JSON line.

    python benchmarks/reenact.py --avatars RUN [RUN ...] [--videos V ...] [--synthetic CAP ...] [--calibration A,W]
        [--size 256] [--max-frames N] [--variants default,range,gain1,linear_lids,mean_face] [--no-fit-check]

Three parts:

1. ``driver_fit``: the per-frame driver fit (``avatar render drive=VIDEO`` and ``avatar live``:
   the driver's identity from its own frames, then frame by frame) against the batched fitter
   (the landmark stage of ``avatar track``) on the same MediaPipe landmarks, for every video;
   on synthetic captures (``data_tools/make_synthetic_capture.py``) also against the truth.
   Head-rotation difference (degrees) and relative depth difference; targets: median <= 3,
   no frame over 15, depth within 10%.
2. ``pairs``: every avatar driven by every video that is not its own (cross identity), and
   by the held-out last 15% of its own video (``self``; with its ``ceiling``: the avatar rendered
   with its own training tracking on its capture's held-out frames, no driver fit and no
   retargeting, graded the same way: what the measures can read on that part of the clip at
   best). The avatar is rendered at ``--size``
   as ``avatar render`` renders it, MediaPipe runs on the renders and on the driver, and
   the measures of :mod:`avatar.landmarks.face_measures` are compared: correlation and
   amplitude ratio (avatar / driver) for eye opening, jaw (inner-lip gap), mouth width,
   brow height, head yaw, pitch and roll. Targets: correlation >= 0.8 on the four expression
   measures and >= 0.9 for yaw and pitch, amplitude 0.6-1.5 (self: correlation >= 0.9).
3. ``response``: per avatar, how far each expression measure moves on its render when the
   blendshapes behind it are fully on (:func:`avatar.drive.reenact_eval.expression_response`:
   lids shut, jaw open, mouth stretched, brows raised, from the avatar's rest at its reference
   pose): what the avatar can show at most, whatever the driver and the retargeting.

Variants (``--variants``): ``default`` (the toolkit's defaults), ``one_sided`` (the One Euro
filter forward only at 1.5 Hz, as live filters), ``range`` (``retarget.range=true``:
per-blendshape gain onto the avatar's trained range), ``gain1`` (``retarget.gain=1``),
``linear_lids`` (``retarget.closure=[]``: blinks through the linear gain), ``mean_face`` (the
driver tracked with the mean face, first frame as neutral, no avatar rest, no antagonists,
gain 1, no closure: the retargeting before this benchmark existed, with today's per-frame
fitter), ``pose_only`` (a control: the driver's head motion, the avatar's face held at its rest;
its expression correlations are what the head's turn alone puts into the measures),
``still_eyes`` (``retarget.eyes=0``: the avatar's eyeballs do not turn with the driver's gaze).
Besides the targets' measures every pair reports ``gaze_x`` / ``gaze_y``: where MediaPipe puts
the irises between the eye corners, on the driver and on the render.

Videos default to every ``*.mp4`` in ``$AVATAR_TEST_DATA`` (or ``../shared/data/real``); an
avatar's own video is read from its run's ``config.yaml`` (capture) and the capture's
``meta.json`` (source).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = 0.15
MIN_FACE_FRAMES = 20  # a video with fewer frames showing a face is no face driver (reported, not graded)


def default_videos() -> list[Path]:
    folder = Path(os.environ.get("AVATAR_TEST_DATA", ROOT.parent / "shared" / "data" / "real"))
    return sorted(folder.glob("*.mp4"))


def batched_fit(lm, points, valid, width, height):
    import torch

    from avatar.tracking.fit import FitConfig, fit_sequence

    res = fit_sequence(lm.to(dtype=torch.float32), torch.as_tensor(np.nan_to_num(points), dtype=torch.float32),
                       torch.as_tensor(valid), width, height, FitConfig())
    return res.rotation.double().numpy(), -res.translation[:, 2].double().numpy()


def timed_track(points, size, fps, source, lm, identity=True):
    from avatar.drive.video_driver import track_landmarks

    t0 = time.perf_counter()
    seq = track_landmarks(points, size, fps, source, lm, identity)
    seconds = time.perf_counter() - t0
    ident_s = seq.info.get("identity", {}).get("seconds", 0.0)
    seq.info["per_frame_ms"] = round((seconds - ident_s) / max(1, len(points)) * 1e3, 2)
    return seq


def driver_fit_video(lm, video: Path, max_frames):
    from avatar.drive.reenact_eval import fit_agreement
    from avatar.drive.video_driver import detect_landmarks

    points, _, fps, size, notes = detect_landmarks(video, max_frames, progress=False)
    valid = np.isfinite(points).all(axis=(1, 2))
    if valid.sum() < MIN_FACE_FRAMES:  # e.g. a full-body clip: too small a face to drive one
        return ({"video": video.name, "frames": len(points), "frames_with_face": int(valid.sum()),
                 "skipped": f"MediaPipe found a face in {int(valid.sum())} of {len(points)} frames only"},
                points, fps, size, None)
    seq = timed_track(points[..., :2], size, fps, str(video), lm)
    rot, depth = batched_fit(lm, points[..., :2], valid, *size)
    out = {"video": video.name, "frames": len(points), "frames_with_face": int(valid.sum()),
           "vs_batched": fit_agreement(seq.rotation, seq.translation, rot, depth, seq.valid & valid),
           "identity": seq.info.get("identity"), "per_frame_ms": seq.info["per_frame_ms"],
           "reinitialisations": seq.info["reinitialisations"], "notes": notes + seq.notes}
    return out, points, fps, size, seq


def driver_fit_synthetic(lm, capture_dir: Path):
    from avatar.io.capture import Capture
    from avatar.synthetic.capture import load_ground_truth
    from avatar.drive.reenact_eval import fit_agreement
    from avatar.tracking.track import capture_targets

    cap = Capture(capture_dir)
    xy, valid = capture_targets(cap)
    points = np.where(valid[:, None, None], xy, np.nan)
    size = (cap.meta.width, cap.meta.height)
    seq = timed_track(points, size, cap.meta.fps, str(capture_dir), lm)
    gt = load_ground_truth(capture_dir)
    V = np.asarray(gt["viewmat"], np.float64)
    flip = np.diag([1.0, -1.0, -1.0])
    t_cam = gt["translation"] @ V[:3, :3].T + V[:3, 3]
    truth = fit_agreement(seq.rotation, seq.translation, gt["rotation"], t_cam[:, 2], seq.valid, flip @ V[:3, :3])
    rot, depth = batched_fit(lm, xy, valid, *size)
    batched_truth = fit_agreement(rot, -depth[:, None] * np.array([0, 0, 1.0]), gt["rotation"], t_cam[:, 2], valid,
                                  flip @ V[:3, :3])
    return {"capture": capture_dir.name, "frames": cap.n_frames, "frames_with_face": int(valid.sum()),
            "vs_truth": truth, "batched_vs_truth": batched_truth,
            "vs_batched": fit_agreement(seq.rotation, seq.translation, rot, depth, seq.valid & valid),
            "identity": seq.info.get("identity"), "per_frame_ms": seq.info["per_frame_ms"]}


def driver_embedding(calibration: str):
    """None (the model's cached embedding) for ``flat,frontal``, else ICT's embedding calibrated
    with those options (a few seconds; see docs/experiments.md for what each gave)."""
    appearance, _, weights = calibration.partition(",")
    weights = weights or "frontal"
    if appearance not in ("flat", "textured") or weights not in ("frontal", "equal"):
        raise SystemExit(f"--calibration must be APPEARANCE,VIEW_WEIGHTS with flat|textured and frontal|equal, "
                         f"got {calibration!r}")
    if (appearance, weights) == ("flat", "frontal"):
        return None
    from avatar import models
    from avatar.synthetic.texture import calibration_look
    from avatar.tracking.embedding import calibrate, part_faces

    model = models.load("ict")
    look = calibration_look(model, part_faces(model)) if appearance == "textured" else None
    return calibrate(model, look=look, view_weights=weights)[0]


def own_video(run: Path) -> Path | None:
    """The video the run was trained on (its capture's source), or None when its capture is gone."""
    from avatar.io.run_folder import run_capture

    capture = run_capture(run)
    meta = capture / "meta.json" if capture is not None else None
    return Path(json.loads(meta.read_text())["source"]) if meta is not None and meta.is_file() else None


def tracked_ceiling(package, run: Path, size: int) -> dict | None:
    """MediaPipe's measures of the avatar rendered with its own training tracking on its held-out
    frames (the trainer's split, the run's ``train.holdout``), against MediaPipe on the capture's
    frames (None without a capture)."""
    from avatar.drive.reenact_eval import detect_sequence
    from avatar.landmarks.face_measures import compare, face_measures
    from avatar.train.data import split_frames

    from avatar.io.run_folder import recorded_config, run_capture

    cfg = recorded_config(run)
    capture = run_capture(run)
    if capture is None or not (capture / "tracking.npz").is_file() or not (capture / "landmarks.npz").is_file():
        return None
    track, faces = np.load(capture / "tracking.npz"), np.load(capture / "landmarks.npz")
    points = faces["face"].astype(np.float64)
    present = faces["face_present"].astype(bool)
    points[~present] = np.nan
    usable = np.flatnonzero(present & track["valid"].astype(bool))
    frames = usable[split_frames(usable, float(cfg.get("train", {}).get("holdout", HOLDOUT)))[1]]
    K, width, height = package.camera(size)
    viewmat = package.state["viewmat"].to(package.device, K.dtype)
    renders = (package.render_frame(track["expression"][i], track["rotation"][i], track["translation"][i],
                                    viewmat, K, width, height)[0] for i in frames)
    per = compare(face_measures(points[frames]), face_measures(detect_sequence(renders)))
    return {k: v["correlation"] for k, v in per.items()}


VARIANTS = {
    "default": ({}, True, None),
    "one_sided": ({"two_sided": False, "min_cutoff": 1.5}, True, None),  # the live filter (and the offline one before)
    "range": ({"range": True}, True, None),
    "gain1": ({"gain": 1.0}, True, None),
    "linear_lids": ({"closure": ()}, True, None),  # the blinks through the linear gain (before closure)
    "mean_face": ({"rest": False, "antagonists": False, "gain": 1.0, "closure": ()}, False, 0),
    # A control: the driver's head motion only, the face held at the avatar's rest. Its expression
    # correlations are what the head's turn alone puts into the measures.
    "pose_only": ({"gain": 1e-9, "closure": ()}, True, None),
    "still_eyes": ({"eyes": 0.0}, True, None),  # the eyeballs as trained (not turned by the driver's gaze)
    "eyes_sideways": ({"eyes_vertical": 0.0}, True, None),  # the eyeballs turned side to side only
    # the head's turn held within the avatar's trained turns plus 10 degrees (retarget.turn_margin_deg)
    "turn_held": ({"turn_margin_deg": 10.0}, True, None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatars", nargs="*", default=[], help="run folders of `avatar train`")
    parser.add_argument("--videos", nargs="*", default=None, help="driver videos (default: every shared real video)")
    parser.add_argument("--synthetic", nargs="*", default=[], help="synthetic capture folders (truth known)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--variants", default="default,range,gain1,linear_lids,mean_face")
    parser.add_argument("--no-fit-check", action="store_true", help="skip the batched-fitter comparison")
    parser.add_argument("--calibration", default="flat,frontal",
                        help="the drivers' landmark embedding: APPEARANCE,VIEW_WEIGHTS of "
                             "avatar.tracking.embedding.calibrate (default: the cached one, flat,frontal)")
    args = parser.parse_args()

    import torch

    from avatar.device import pick_device
    from avatar.drive.animate import AvatarPackage
    from avatar.drive.reenact_eval import expression_response, grade_reenactment
    from avatar.drive.retarget import RetargetConfig
    from avatar.drive.video_driver import landmark_model

    t_start = time.perf_counter()
    lm = landmark_model(embedding=driver_embedding(args.calibration))
    videos = [Path(v) for v in args.videos] if args.videos is not None else default_videos()
    line: dict = {"benchmark": "reenact", "size": args.size, "calibration": args.calibration, "driver_fit": [],
                  "pairs": []}
    drivers = {}
    for video in videos:
        fit, points, fps, size, seq = driver_fit_video(lm, video, args.max_frames)
        if args.no_fit_check:
            fit.pop("vs_batched", None)
        line["driver_fit"].append(fit)
        print(f"driver fit {video.name}: {json.dumps(fit)}", file=sys.stderr)
        if seq is not None:
            drivers[video.resolve()] = (points, fps, size, seq)
    for cap in args.synthetic:
        fit = driver_fit_synthetic(lm, Path(cap))
        line["driver_fit"].append(fit)
        print(f"driver fit {cap}: {json.dumps(fit)}", file=sys.stderr)

    variants = [v for v in args.variants.split(",") if v]
    device = pick_device("auto")
    mean_face = {}
    for run in map(Path, args.avatars):
        package = AvatarPackage.load(run, device)
        response = expression_response(package, args.size)
        line.setdefault("response", {})[run.name] = response
        print(f"response {run.name}: {json.dumps(response)}", file=sys.stderr)
        own = own_video(run)
        own = own.resolve() if own is not None else None
        for video, (points, fps, size, seq) in drivers.items():
            is_self = video == own
            if is_self:  # the held-out last part of its own video
                start = int(round(len(points) * (1 - HOLDOUT)))
                points = points[start:]
                seq = timed_track(points[..., :2], size, fps, str(video), lm)
            for variant in variants if not is_self else ["default"]:
                overrides, identity, neutral_frame = VARIANTS[variant]
                drive = seq
                if not identity:
                    key = (video, is_self)
                    if key not in mean_face:
                        mean_face[key] = timed_track(points[..., :2], size, fps, str(video), lm, identity=False)
                    drive = mean_face[key]
                t0 = time.perf_counter()
                graded = grade_reenactment(package, drive, points, RetargetConfig(**overrides), args.size, neutral_frame)
                result = {"avatar": run.name, "driver": video.name, "kind": "self (held out)" if is_self else "cross",
                          "variant": variant, **graded, "seconds": round(time.perf_counter() - t0, 1)}
                if is_self:
                    result["ceiling"] = tracked_ceiling(package, run, args.size)
                line["pairs"].append(result)
                print(f"pair: {json.dumps(result)}", file=sys.stderr)
    line["summary"] = summary(line)
    line["seconds"] = round(time.perf_counter() - t_start, 1)
    line["torch_threads"] = torch.get_num_threads()
    line["targets"] = {"driver_fit": {"rotation_median_deg": 3, "rotation_max_deg": 15, "depth_rel": 0.1},
                       "cross": {"expression_correlation": 0.8, "yaw_pitch_correlation": 0.9, "amplitude": [0.6, 1.5]},
                       "self": {"expression_correlation": 0.9}}
    print(json.dumps(line))


def summary(line: dict) -> dict:
    """Per kind and variant: the mean and minimum over pairs of each measure's correlation and amplitude,
    and the mean share of the driver's and the avatar's expression readings their head's turn explains."""
    from avatar.landmarks.face_measures import MEASURES

    out = {}
    groups: dict = {}
    for p in line["pairs"]:
        groups.setdefault(f"{p['kind']}/{p['variant']}", []).append(p)
    for key, pairs in groups.items():
        out[key] = {"pairs": len(pairs)}
        for m in MEASURES:
            c = [p["measures"][m]["correlation"] for p in pairs if p["measures"].get(m, {}).get("correlation") is not None]
            a = [p["measures"][m]["amplitude"] for p in pairs if p["measures"].get(m, {}).get("amplitude") is not None]
            out[key][m] = {"correlation_mean": round(float(np.mean(c)), 3) if c else None,
                           "correlation_min": round(float(np.min(c)), 3) if c else None,
                           "amplitude_mean": round(float(np.mean(a)), 3) if a else None,
                           "amplitude_range": [round(float(np.min(a)), 3), round(float(np.max(a)), 3)] if a else None}
            for who in ("driver", "follower"):  # how much of each side's reading the head's turn explains
                r2 = [p["measures"][m][f"pose_r2_{who}"] for p in pairs
                      if p["measures"].get(m, {}).get(f"pose_r2_{who}") is not None]
                if r2:
                    out[key][m][f"pose_r2_{who}_mean"] = round(float(np.mean(r2)), 3)
            top = [p["ceiling"][m] for p in pairs if (p.get("ceiling") or {}).get(m) is not None]
            if top:
                out[key][m]["ceiling_mean"] = round(float(np.mean(top)), 3)
    fits = [f for f in line["driver_fit"] if "vs_batched" in f]
    if fits:
        out["driver_fit"] = {"rotation_median_deg_max": max(f["vs_batched"]["rotation_deg"]["median"] for f in fits),
                             "rotation_max_deg": max(f["vs_batched"]["rotation_deg"]["max"] for f in fits),
                             "depth_rel_max": max(f["vs_batched"]["depth_rel"]["max"] for f in fits)}
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

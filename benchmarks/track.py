"""Benchmark of head tracking on landmarks; prints one JSON line.

    python benchmarks/track.py [--frames 200] [--threads 1] [--capture DIR]

Figures:
- ``embedding``: accuracy of the 478-landmark embedding: MediaPipe on renders of ICT at
  new poses/expressions vs the projected embedding (inner and face-oval points, px at 512);
- ``online_ms``: the per-frame fitter (:class:`avatar.tracking.online.FrameTracker`,
  float32, 3 Gauss-Newton steps, warm start), median/p95 milliseconds per frame over a
  synthetic sequence (ICT landmarks under known motion + 1 px noise), with its rotation
  error and jawOpen correlation;
- ``batched``: :func:`avatar.tracking.fit.fit_sequence` on the same sequence: seconds,
  frames x iterations per second per stage, rotation error;
- ``capture`` (with ``--capture``): the batched fit on a real capture's MediaPipe
  landmarks: seconds and the median / p95 landmark reprojection error in pixels.

The load average is printed too: on a shared 2-core machine other processes change the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def embedding_accuracy(model) -> dict:
    """MediaPipe on 512 px renders at poses/expressions not used for calibration vs the
    projected embedding (the cases of tests/test_embedding.py), pixels."""
    from avatar.tracking import embedding as E

    emb = E.load_embedding(model)
    R = lambda y, p: E.yaw_pitch_to_axis_angle(y, p)[None]  # noqa: E731

    def ex(**v):
        e = torch.zeros(1, model.num_expression)
        for k, x in v.items():
            e[0, model.expression_names.index(k)] = x
        return e

    cases = [dict(rotation=R(0.15, 0.1)), dict(rotation=R(-0.35, -0.1)), dict(expression=ex(jawOpen=0.6)),
             dict(expression=ex(mouthSmile_L=0.7, mouthSmile_R=0.7), rotation=R(0.1, 0.0)),
             dict(rotation=R(0.3, 0.05), expression=ex(jawOpen=0.4)),
             dict(expression=ex(eyeBlink_L=0.8, eyeBlink_R=0.8))]
    res = E.reprojection_errors(model, emb, cases)
    c = emb.contour.numpy()
    inner, contour = res["all"][:, ~c], res["all"][:, c]
    return {"renders": len(cases), "found": int(res["found"].sum()),
            "inner_px_median": round(float(np.nanmedian(inner)), 3),
            "inner_px_p95": round(float(np.nanpercentile(inner, 95)), 3),
            "contour_px_median": round(float(np.nanmedian(contour)), 3),
            "contour_px_p95": round(float(np.nanpercentile(contour, 95)), 3)}


def fit_stages(stats: dict) -> dict:
    """The per-stage entries of :func:`fit_sequence`'s stats (``rigid``, ``full``), without the
    other figures kept beside them (frame counts, ``landmark_offset_mm``)."""
    return {k: stats[k] for k in ("rigid", "full") if k in stats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--capture", type=str, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import avatar.models
    from avatar.tracking.embedding import load_embedding
    from avatar.tracking.fit import FitConfig, fit_sequence, reprojection_errors
    from avatar.tracking.landmark_model import LandmarkModel
    from avatar.tracking.online import FrameTracker
    from test_tracking import FOCAL, W, correlations, rotation_error_deg, synthetic

    model = avatar.models.load("ict")
    lm = LandmarkModel.from_model(model, load_embedding(model))
    s = synthetic(lm, F=args.frames)
    F = args.frames

    tracker = FrameTracker(lm, s["shape"], FOCAL, W, W)
    ms, out = [], []
    for i in range(F):
        t0 = time.perf_counter()
        out.append(tracker(s["target"][i]))
        ms.append((time.perf_counter() - t0) * 1e3)
    rot = torch.stack([o[1] for o in out])
    expr = torch.stack([o[0] for o in out])
    online = {
        "ms_median": round(float(np.median(ms[1:])), 3), "ms_p95": round(float(np.percentile(ms[1:], 95)), 3),
        "first_frame_ms": round(ms[0], 2),
        "rotation_error_deg_median": round(float(rotation_error_deg(s["rotation"], rot).median()), 3),
        "jawOpen_correlation": round(correlations(lm, s["expression"], expr)["jawOpen"], 4),
    }

    t0 = time.perf_counter()
    res = fit_sequence(lm, s["target"], torch.ones(F, dtype=torch.bool), W, W, FitConfig())
    batched = {
        "frames": F, "seconds": round(time.perf_counter() - t0, 3),
        "stages": {k: {"iterations": v["iterations"], "seconds": v["seconds"], "frames_per_second": v["frames_per_second"]}
                   for k, v in fit_stages(res.stats).items()},
        "rotation_error_deg_median": round(float(rotation_error_deg(s["rotation"], res.rotation).median()), 3),
        "rotation_error_deg_max": round(float(rotation_error_deg(s["rotation"], res.rotation).max()), 3),
        "reprojection_px_median": round(float(reprojection_errors(lm, res, s["clean"], W, W).median()), 3),
    }
    line = {"benchmark": "track", "threads": args.threads, "online": online, "batched": batched,
            "embedding": embedding_accuracy(model)}

    if args.capture:
        from avatar.io.capture import Capture
        from avatar.tracking.track import capture_targets

        cap = Capture(args.capture)
        xy, valid = capture_targets(cap)
        target, valid_t = torch.as_tensor(xy), torch.as_tensor(valid)
        F_cap = cap.n_frames
        t0 = time.perf_counter()
        res = fit_sequence(lm, target, valid_t, cap.meta.width, cap.meta.height, FitConfig())
        seconds = time.perf_counter() - t0
        err = reprojection_errors(lm, res, target, cap.meta.width, cap.meta.height)[valid_t]
        errc = reprojection_errors(lm, res, target, cap.meta.width, cap.meta.height, contour=True)[valid_t]
        tracker = FrameTracker(lm, res.shape, res.focal, cap.meta.width, cap.meta.height)
        ms = []
        for i in np.flatnonzero(valid):
            t1 = time.perf_counter()
            tracker(target[i])
            ms.append((time.perf_counter() - t1) * 1e3)
        line["capture"] = {
            "path": str(cap.root), "frames": cap.n_frames, "valid_frames": int(valid.sum()),
            "width": cap.meta.width, "seconds": round(seconds, 3), "frames_per_second": round(F_cap / seconds, 2),
            "stage_seconds": {k: v["seconds"] for k, v in fit_stages(res.stats).items()},
            "focal_px": round(res.focal, 1),
            "reprojection_px_median": round(float(err.median()), 3),
            "reprojection_px_p95": round(float(err.flatten().quantile(0.95)), 3),
            "reprojection_with_contour_px_median": round(float(errc.median()), 3),
            "online_ms_median": round(float(np.median(ms[1:])), 3),
        }
    line["loadavg_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(line))


if __name__ == "__main__":
    main()

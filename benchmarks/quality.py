"""Held-out quality over several subjects with the defaults: prints ONE JSON line.

For every training-worthy video in ``$AVATAR_TEST_DATA`` (default ``../shared/data/real``)
and the synthetic ICT capture, runs the pipeline as the README tells a user to (``avatar
preprocess``, ``avatar track``, then ``avatar train`` with the README's real-video command)
and grades the held-out last 15%:

- per subject: held-out PSNR / SSIM, the same over the frames posed within 5 degrees of a
  training pose (``seen``) and beyond (``novel``), PSNR on a sample of training frames and the
  train-minus-held-out gap, Gaussians, training seconds, and held-out frames left out because
  no face was tracked there;
- where the held-out error is: per region (face, eyes, mouth, head, beyond the mesh, the
  silhouette band, background; ``avatar/train/regions.py``) its PSNR and share of the squared
  error, for seen and novel poses; and the Spearman correlation over held-out frames of PSNR
  with the distance to the training set in head pose and in expression;
- the mean over subjects, the lowest subject, and the issue's targets: mean >= 28.5 dB and
  SSIM >= 0.94, no subject below 27 dB, novel-pose PSNR within 2 dB of seen on every subject.

Every stage is resumable: a work folder keeps captures, tracking and runs, and a stage whose
output is there is not run again (``--work DIR``; a killed training resumes from its last
checkpoint). ``--runs RUN ...`` grades finished run folders instead of running the pipeline.
Arguments after ``--`` go to ``avatar train`` as overrides (e.g. ``train.iterations=300`` for
a smoke run). Videos in which MediaPipe finds a face in too few frames to hold out 15%
(``body_turnaround_512.mp4`` has a face in 3 of 65 frames) are reported with how many frames
are needed, not graded.

    python benchmarks/quality.py [--work DIR] [--videos V ...] [--no-synthetic] [--train-sample 40]
    python benchmarks/quality.py --runs RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The README's command for a real video on a CPU (the defaults this benchmark grades).
README_TRAIN = ["avatar=mesh_gaussians_dynamic", "train.resolution=256", "train.gaussians.uv_resolution=64",
                "train.densify.max_gaussians=20000"]
MIN_HELDOUT = 5  # held-out frames below which a subject's figures mean little
TARGETS = {"mean_psnr": 28.5, "mean_ssim": 0.94, "min_psnr": 27.0, "novel_minus_seen_db": 2.0}


def default_videos() -> list[Path]:
    folder = Path(os.environ.get("AVATAR_TEST_DATA", ROOT.parent / "shared" / "data" / "real"))
    return sorted(folder.glob("*.mp4"))


def avatar_cli(*args: str, log: Path) -> None:
    """``python -m avatar ARGS`` with its output in ``log``; a failure raises with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        proc = subprocess.run([sys.executable, "-m", "avatar", *args], stdout=out, stderr=subprocess.STDOUT,
                              cwd=ROOT, check=False)
    if proc.returncode != 0:
        tail = log.read_text()[-1500:]
        raise RuntimeError(f"avatar {args[0]} exited {proc.returncode}: {tail.strip().splitlines()[-1] if tail else ''}")


def prepare(subject: str, source: Path | None, work: Path, overrides: list[str], holdout: float) -> tuple[Path, dict]:
    """Capture, tracking and trained run of one subject in ``work/subject`` (stages already done are kept)."""
    folder = work / subject
    capture, run = folder / "capture", folder / "run"
    seconds: dict = {}
    t0 = time.perf_counter()
    if not (capture / "meta.json").is_file():
        if source is None:  # the synthetic ICT head: rendered, then tracked like a video
            from avatar.synthetic.capture import SyntheticConfig, make_synthetic_capture

            make_synthetic_capture(capture, SyntheticConfig(n_frames=200), progress=False)
        else:
            avatar_cli("preprocess", f"input={source}", f"out={capture}", log=folder / "preprocess.out")
        seconds["capture"] = round(time.perf_counter() - t0, 1)
    needed = frames_needed(capture, holdout)
    if needed is not None:
        raise ValueError(needed)
    t0 = time.perf_counter()
    if not (capture / "tracking.npz").is_file():
        avatar_cli("track", f"capture={capture}", log=folder / "track.out")
        seconds["track"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    if not (run / "avatar.pt").is_file():
        resume = ["resume=true"] if (run / "checkpoints" / "last.pt").is_file() else []
        avatar_cli("train", f"capture={capture}", f"out={run}", *README_TRAIN, *overrides, *resume,
                   log=folder / "train.out")
        seconds["train_wall"] = round(time.perf_counter() - t0, 1)
    return run, seconds


def frames_needed(capture: Path, holdout: float) -> str | None:
    """A message when the capture has too few frames with a face to hold out ``holdout``."""
    from avatar.io.capture import Capture

    cap = Capture(capture)
    usable = len(cap.valid_frames())
    need = math.ceil(MIN_HELDOUT / holdout)
    if usable < need:
        return (f"{usable} of {cap.n_frames} frames have a face; holding out {holdout:.0%} with at least "
                f"{MIN_HELDOUT} frames needs {need} frames with a face")
    return None


def grade(run: Path, train_sample: int) -> dict:
    """Held-out figures from the run's metrics.json, and PSNR on ``train_sample`` training frames."""
    import torch

    from avatar.train.session import load_run

    metrics = json.loads((run / "metrics.json").read_text())
    torch.manual_seed(0)
    trainer, tracking, _, cfg = load_run(run)
    frames = trainer.frames
    pick = np.linspace(0, len(frames.train) - 1, min(train_sample, len(frames.train))).round().astype(int)
    with torch.no_grad():
        on_train = trainer.evaluate(frames.train[np.unique(pick)])
    # Held-out frames with no tracked face: the capture frames in the held-out span left out.
    ids = np.asarray(frames.frame_ids)
    first_held = int(ids[frames.heldout].min()) if len(frames.heldout) else tracking.n_frames
    excluded = int(np.sum(~np.asarray(tracking.valid, bool)[first_held:]))
    if "by_region" not in metrics or "expression_distance" not in (metrics.get("per_frame") or [{}])[0]:
        with torch.no_grad():  # a run trained before the region split: evaluate its held-out frames again
            metrics.update({k: v for k, v in trainer.evaluate().items() if k in ("by_region", "per_frame")})
    seen, novel = metrics["by_pose"]["seen"], metrics["by_pose"]["novel"]
    gap = on_train["psnr"] - metrics["psnr"] if on_train["psnr"] is not None and metrics["psnr"] is not None else None
    return {
        "heldout_psnr": r(metrics["psnr"]), "heldout_ssim": r(metrics["ssim"], 4),
        "heldout_frames": metrics["heldout_frames"], "heldout_excluded_no_face": excluded,
        "seen": {"frames": seen["frames"], "psnr": r(seen["psnr"]), "ssim": r(seen["ssim"], 4)},
        "novel": {"frames": novel["frames"], "psnr": r(novel["psnr"]), "ssim": r(novel["ssim"], 4)},
        "novel_minus_seen_db": r(novel["psnr"] - seen["psnr"]) if novel["frames"] and seen["frames"] else None,
        "error_by_region": error_regions(metrics.get("by_region")),
        "psnr_correlation": frame_correlations(metrics.get("per_frame") or []),
        "train_psnr": r(on_train["psnr"]), "train_frames_graded": on_train["frames"],
        "train_minus_heldout_db": r(gap),
        "n_gaussians": metrics["n_gaussians"], "iterations": metrics["iterations"],
        "train_seconds": metrics.get("train_seconds"), "resolution": metrics.get("resolution"),
    }


def error_regions(by_region: dict | None) -> dict | None:
    """Per pose group, each region's PSNR and share of the squared error (avatar/train/regions.py)."""
    if not by_region:
        return None
    return {group: {name: [v["psnr"], v["error_share"]] for name, v in regions.items() if v["pixel_share"] >= 1e-3}
            for group, regions in by_region.items() if isinstance(regions, dict)}


def frame_correlations(per_frame: list[dict]) -> dict:
    """Spearman correlation over the held-out frames of PSNR with the distance to the training
    set in head pose and in expression (negative: frames further away are worse)."""
    from scipy.stats import spearmanr

    out = {}
    for key in ("pose_distance_deg", "expression_distance"):
        pairs = [(f["psnr"], f[key]) for f in per_frame if f.get(key) is not None]
        out[key] = r(spearmanr(*zip(*pairs))[0]) if len(pairs) >= 3 and len({p[1] for p in pairs}) > 1 else None
    return out


def r(value, digits: int = 3):
    return None if value is None else round(float(value), digits)


def summarise(subjects: list[dict]) -> dict:
    graded = [s for s in subjects if "heldout_psnr" in s]
    if not graded:
        return {"subjects": 0}
    psnr = [s["heldout_psnr"] for s in graded]
    ssim = [s["heldout_ssim"] for s in graded]
    gaps = [s["novel_minus_seen_db"] for s in graded if s["novel_minus_seen_db"] is not None]
    out = {
        "subjects": len(graded),
        "mean_psnr": r(np.mean(psnr)), "mean_ssim": r(np.mean(ssim), 4), "min_psnr": r(min(psnr)),
        "mean_train_minus_heldout_db": r(np.mean([s["train_minus_heldout_db"] for s in graded])),
        "worst_novel_minus_seen_db": r(min(gaps)) if gaps else None,
    }
    out["meets"] = {
        "mean_psnr": out["mean_psnr"] >= TARGETS["mean_psnr"],
        "mean_ssim": out["mean_ssim"] >= TARGETS["mean_ssim"],
        "min_psnr": out["min_psnr"] >= TARGETS["min_psnr"],
        "novel_within_2db": bool(gaps) and min(gaps) >= -TARGETS["novel_minus_seen_db"],
    }
    return out


def main() -> None:
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "outputs" / "bench_quality"), help="captures and runs (resumable)")
    parser.add_argument("--videos", nargs="*", default=None, help="videos to train on (default: every shared real video)")
    parser.add_argument("--no-synthetic", action="store_true", help="leave out the synthetic ICT capture")
    parser.add_argument("--runs", nargs="*", default=None, help="grade these finished run folders instead")
    parser.add_argument("--train-sample", type=int, default=40, help="training frames graded for the gap")
    parser.add_argument("--holdout", type=float, default=0.15)
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    subjects: list[dict] = []
    if args.runs is not None:
        jobs = [(Path(run).name, None, Path(run)) for run in args.runs]
    else:
        videos = [Path(v) for v in args.videos] if args.videos is not None else default_videos()
        jobs = [(v.stem, v, None) for v in videos] + ([] if args.no_synthetic else [("synthetic_ict", None, None)])
    work = Path(args.work)
    for subject, source, run in jobs:
        entry: dict = {"subject": subject}
        try:
            if run is None:
                run, seconds = prepare(subject, source, work, overrides, args.holdout)
                entry["stage_seconds"] = seconds
            entry["run"] = str(run)
            entry.update(grade(run, args.train_sample))
        except (ValueError, RuntimeError, OSError) as exc:
            entry["skipped"] = " ".join(str(exc).split())
        print(f"quality {subject}: {json.dumps(entry)}", file=sys.stderr, flush=True)
        subjects.append(entry)
    print(json.dumps({"benchmark": "quality", "defaults": README_TRAIN, "overrides": overrides,
                      "subjects": subjects, "summary": summarise(subjects), "targets": TARGETS,
                      "seconds": round(time.perf_counter() - t_start, 1)}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

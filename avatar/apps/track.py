"""``avatar track capture=DIR``: fit the head model to a capture's landmarks.

Writes ``tracking.npz``, ``tracking_report.json`` and ``tracking_overlay.mp4`` to ``out``
(the capture folder by default); see :mod:`avatar.tracking.track`.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> int:
    import avatar.models  # noqa: PLC0415
    from avatar.device import pick_device  # noqa: PLC0415
    from avatar.landmarks.embedding import load_embedding  # noqa: PLC0415
    from avatar.tracking.fit import FitConfig  # noqa: PLC0415
    from avatar.tracking.photometric import PhotometricConfig  # noqa: PLC0415
    from avatar.tracking.track import TrackConfig, track_capture  # noqa: PLC0415

    t = OmegaConf.to_container(cfg.track, resolve=True)
    progress = bool(t.pop("progress", True))
    fit = FitConfig(**t.pop("fit", {}))
    photometric = t.pop("photometric", None) or {}
    if "blur" in photometric:
        photometric["blur"] = tuple(photometric["blur"])
    track_cfg = TrackConfig(fit=fit, photometric=PhotometricConfig(**photometric), **t)
    track_cfg.device = str(pick_device(track_cfg.device))
    if cfg.model != "ict":
        log.error("avatar track: model=%s has no calibrated 478-landmark embedding yet; use model=ict", cfg.model)
        return 2
    model = avatar.models.load(cfg.model)
    embedding = load_embedding(model)
    report = track_capture(cfg.capture, model, embedding, track_cfg, out=cfg.out, progress=progress)
    r = report["reprojection"]
    print(
        f"avatar track: {report['valid_frames']}/{report['frames']} frames fitted in {report['fit_seconds']} s; "
        f"landmark error median {r['median_px']} px, p95 {r['p95_px']} px (focal {report['focal_px']} px)\n"
        + "\n".join(f"  {k}: {v}" for k, v in report["outputs"].items())
    )
    if report.get("photometric"):
        p = report["photometric"]
        print(f"  photometric refinement: {p['iterations']} steps in {p['seconds']} s, head rotation changed by "
              f"{p['rotation_change_deg']['median']} deg (median); landmark error after it "
              f"{p['reprojection_after']['median_px']} px")
    return 0

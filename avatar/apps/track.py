"""``avatar track capture=DIR [model=flame +model_options.model_path=FILE]``: fit the head model
to a capture's landmarks (any model with a tracking profile: ICT, FLAME; one without, such as
SMPL-X, raises :class:`avatar.models.profile.TrackingProfileError` saying what it lacks).

Writes ``tracking.npz``, ``tracking_report.json`` and ``tracking_overlay.mp4`` to ``out``
(the capture folder by default); see :mod:`avatar.tracking.track`.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from ..errors import UsageError, command
from ..tracking.track import TrackConfig
from .schema import register


@dataclass
class TrackOptions(TrackConfig):
    """``track:`` of conf/track.yaml: :class:`TrackConfig` and the app's own switches."""

    progress: bool = True  # tqdm progress bars


@command("avatar track")
def main(cfg: DictConfig) -> int:
    import avatar.models  # noqa: PLC0415
    from avatar.models.profile import require_profile  # noqa: PLC0415
    from avatar.device import pick_device  # noqa: PLC0415
    from avatar.tracking.embedding import load_embedding  # noqa: PLC0415
    from avatar.tracking.track import track_capture  # noqa: PLC0415

    options = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrackOptions), cfg.track))
    options.photometric.blur = tuple(options.photometric.blur)
    options.device = str(pick_device(options.device))
    model_options = OmegaConf.to_container(cfg.model_options, resolve=True) if cfg.get("model_options") else {}
    if _body_capture(cfg.capture) or cfg.model in avatar.models.BODY_MODELS and cfg.model not in ("smpl", "smplx"):
        return _track_body(cfg, options, model_options)
    model = avatar.models.load(cfg.model, **model_options)
    require_profile(model)  # TrackingProfileError: a model that cannot be face-tracked says what it lacks
    embedding = load_embedding(model)
    report = track_capture(cfg.capture, model, embedding, options, out=cfg.out, progress=options.progress)
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


def _body_capture(capture) -> bool:
    """Whether ``capture`` is a body capture (``preprocess.subject=body`` or a synthetic body)."""
    from avatar.io.capture import Capture, CaptureError  # noqa: PLC0415

    try:
        return Capture(capture).is_body
    except CaptureError:  # not a readable capture: the head path checks the model first, then says so
        return False


def _track_body(cfg: DictConfig, options: TrackOptions, model_options: dict) -> int:
    """``avatar track`` of a body capture with a body model (:mod:`avatar.tracking.body_track`)."""
    import avatar.models  # noqa: PLC0415
    from avatar.io.capture import Capture  # noqa: PLC0415
    from avatar.tracking.body_track import track_body_capture  # noqa: PLC0415

    if cfg.model not in avatar.models.BODY_MODELS:
        raise UsageError(f"{cfg.capture} is a body capture: track it with a body model, model=anny "
                         f"(or {', '.join(m for m in avatar.models.BODY_MODELS if m != 'anny')}), not model={cfg.model}")
    if not Capture(cfg.capture).is_body:
        raise UsageError(f"model={cfg.model} is a body model but {cfg.capture} is a head capture: preprocess the video "
                         "with preprocess.subject=body")
    body = avatar.models.load_body(cfg.model, **model_options)
    report = track_body_capture(cfg.capture, body, options.body, out=cfg.out, device=options.device,
                                dtype=options.dtype, overlay=options.overlay, overlay_stride=options.overlay_stride,
                                progress=options.progress)
    r, iou = report["reprojection_px"], report["mask_iou"]
    print(f"avatar track: {report['valid_frames']}/{report['frames']} body frames fitted in {report['fit_seconds']} s; "
          f"landmark error median {r['median']} px, p95 {r['p95']} px; mask IoU median {iou['median']}, "
          f"min {iou['min']}; {len(report['poor_frames'])} frames fit poorly\n"
          + "\n".join(f"  {k}: {v}" for k, v in report["outputs"].items()))
    return 0


register("track")  # conf/track.yaml composes once this module is imported

"""``avatar preprocess input=VIDEO out=CAPTURE_DIR``: video or image folder -> capture folder.

The work is :func:`avatar.preprocess.preprocess` (``preprocess.subject=body``:
:func:`avatar.preprocess_body.preprocess_body`); this app turns the config into its
options and logs a one-line summary. Its errors go through :mod:`avatar.errors`: an input
that cannot be preprocessed exits 1 with one line naming the file (and frame), a bad option
value exits 2.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from avatar.preprocess import REPORT_NAME, PreprocessConfig, preprocess
from avatar.preprocess_body import preprocess_body
from ..errors import UsageError, command
from .schema import register

log = logging.getLogger(__name__)


def config_from(cfg: DictConfig) -> PreprocessConfig:
    """``cfg.preprocess`` as a :class:`PreprocessConfig`; an unknown key or a bad value is a UsageError."""
    options = OmegaConf.to_container(cfg.preprocess, resolve=True)
    known = PreprocessConfig.__dataclass_fields__
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UsageError(f"unknown preprocess option(s) {unknown}; known: {sorted(known)}")
    try:
        return PreprocessConfig(**options)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from err


@command("avatar preprocess")
def main(cfg: DictConfig) -> int:
    options = config_from(cfg)
    if options.subject == "body":
        report = preprocess_body(cfg.input, cfg.out, options)
        pose = report["pose"]
        log.info(f"{report['frames_out']} frames ({options.resolution}x{options.resolution}) -> {cfg.out}; person in "
                 f"{report['person']['found']}, pose in {report['frames_out'] - pose['missing']}, flagged "
                 f"{len(report['flagged'])}; {report['seconds']['total']:.1f} s; report: {REPORT_NAME}")
        return 0
    report = preprocess(cfg.input, cfg.out, options)
    faces = report["faces"]
    summary = (f"{report['frames_out']} frames ({options.resolution}x{options.resolution}) -> {cfg.out}; "
               f"face in {faces['found']}, flagged {len(report['flagged'])}; "
               f"{report['seconds']['total']:.1f} s; report: {REPORT_NAME}")
    log.info(summary)
    return 0


register("preprocess")  # conf/preprocess.yaml composes once this module is imported

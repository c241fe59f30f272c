"""``avatar preprocess input=VIDEO out=CAPTURE_DIR``: video or image folder -> capture folder.

The work is :func:`avatar.data.preprocess.preprocess`; this app turns the config into its
options, logs a one-line summary and maps input errors to exit status 1 (a bad option
value: 2) with one line naming the file (and frame) that was wrong.
"""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig, OmegaConf

from ..data.preprocess import REPORT_NAME, PreprocessConfig, PreprocessError, preprocess
from ..data.video_reader import VideoReadError

log = logging.getLogger(__name__)

EXIT_INPUT = 1  # the input cannot be preprocessed
EXIT_USAGE = 2  # a bad option value


def config_from(cfg: DictConfig) -> PreprocessConfig:
    """``cfg.preprocess`` as a :class:`PreprocessConfig` (unknown keys are an error)."""
    options = OmegaConf.to_container(cfg.preprocess, resolve=True)
    known = PreprocessConfig.__dataclass_fields__
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown preprocess option(s) {unknown}; known: {sorted(known)}")
    return PreprocessConfig(**options)


def main(cfg: DictConfig) -> int:
    try:
        options = config_from(cfg)
    except (ValueError, TypeError) as err:
        print(f"avatar preprocess: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = preprocess(cfg.input, cfg.out, options)
    except (VideoReadError, PreprocessError) as err:
        print(f"avatar preprocess: {err}", file=sys.stderr)
        return EXIT_INPUT
    faces = report["faces"]
    summary = (f"{report['frames_out']} frames ({options.resolution}x{options.resolution}) -> {cfg.out}; "
               f"face in {faces['found']}, flagged {len(report['flagged'])}; "
               f"{report['seconds']['total']:.1f} s; report: {REPORT_NAME}")
    log.info(summary)
    return 0

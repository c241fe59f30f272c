"""Avatar files for tests, written through the one writer (:func:`avatar.io.avatar_file.write_avatar`)."""

from __future__ import annotations

import torch

from avatar.io.avatar_file import write_avatar


def write_test_avatar(path, gaussians, model_name: str = "ict", model_options: dict | None = None, size: int = 64,
                      **entries):
    """An ``avatar.pt`` for ``gaussians`` (any avatar kind) seen by a 64x64 camera half a metre
    in front of the model, with the expression names ``expression_names`` (default: none)."""
    f = 1.4 * size
    defaults = {
        "expression_names": [], "shape": torch.zeros(100), "background": torch.ones(3),
        "K": torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]),
        "viewmat": torch.diag(torch.tensor([1.0, -1, -1, 1])), "width": size, "height": size,
        "reference_rotation": torch.zeros(3), "reference_translation": torch.tensor([0, 0, -0.6]),
    }
    return write_avatar(path, model=model_name, model_options=model_options, kind=gaussians.kind, config={},
                        avatar_state=gaussians.state(), **{**defaults, **entries})

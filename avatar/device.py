"""Choosing the torch device from a config value."""

from __future__ import annotations

import torch


class DeviceUnavailableError(ValueError):
    """The config asks for a device this machine does not have (a usage error: exit 2)."""


def pick_device(name: str | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else goes to ``torch.device``."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device={name} was asked for but no CUDA device is available; use device=cpu or auto")
    return device

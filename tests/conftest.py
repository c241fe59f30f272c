"""Shared pytest setup: the repository root, the ICT assets, and the `cuda` marker's skip rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The source checkout these tests run from."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def ict_assets() -> Path:
    """The ICT-FaceKit folder: $AVATAR_ASSETS, else ../shared/assets/ict-facekit; skips when absent."""
    shared = REPO_ROOT.parent / "shared" / "assets" / "ict-facekit"
    root = Path(os.environ["AVATAR_ASSETS"]) if os.environ.get("AVATAR_ASSETS") else shared
    if not root.is_dir():
        pytest.skip(f"ICT-FaceKit assets not found in $AVATAR_ASSETS or {shared}")
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `cuda` when no CUDA device is there (torch imported only then)."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in cuda_items:
        item.add_marker(skip)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist each worker gets one core's worth of threads: with more runnable
    # threads than cores, OpenMP workers spin and torch slows down many times over.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

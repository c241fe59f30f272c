"""The demo scripts run on a small avatar package (ICT head, untrained UV-grid Gaussians)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_orbit_avatar_renders_a_package(ict_assets, tmp_path):
    import avatar.models
    from avatar.data.video_reader import open_source
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=16, sh_degree=1, init_opacity=0.9))
    package = {"model": "ict", "shape": torch.zeros(100), "faces": g.faces, "binding": g.binding,
               "params": {k: v.detach() for k, v in g.params.items()}, "sh_degree": 1,
               "background": torch.ones(3)}
    torch.save(package, tmp_path / "avatar.pt")
    out = tmp_path / "orbit.mp4"
    env = {**os.environ, "AVATAR_ASSETS": str(ict_assets), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "demos" / "orbit_avatar.py"), str(tmp_path / "avatar.pt"),
                           str(out), "--frames", "3", "--size", "64", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames = [f.image for f in open_source(out).frames()]
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    assert (frames[0] < 200).mean() > 0.05  # the (grey) head is in view, not only the white background

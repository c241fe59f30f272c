"""The demo scripts run on a small avatar package (ICT head, untrained UV-grid Gaussians)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from avatar_files import write_test_avatar

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_orbit_avatar_renders_a_package(ict_assets, tmp_path):
    import avatar.models
    from avatar.io.video_reader import open_source
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=16, sh_degree=1, init_opacity=0.9))
    write_test_avatar(tmp_path / "avatar.pt", g)
    out = tmp_path / "orbit.mp4"
    env = {**os.environ, "AVATAR_ASSETS": str(ict_assets), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "demos" / "orbit_avatar.py"), str(tmp_path / "avatar.pt"),
                           str(out), "--frames", "3", "--size", "64", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames = [f.image for f in open_source(out).frames()]
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    assert (frames[0] < 200).mean() > 0.05  # the (grey) head is in view, not only the white background


@pytest.mark.slow
def test_demo_pipeline_end_to_end(ict_assets, tmp_path, monkeypatch):
    """`avatar demo` with tiny sizes: synthetic capture -> track -> train -> driven video and orbit."""
    import json

    from avatar import cli

    monkeypatch.setenv("AVATAR_ASSETS", str(ict_assets))
    out = tmp_path / "demo"
    assert cli.main(["demo", f"out={out}", "mode=pipeline", "renderer=torch", "pipeline.frames=12",
                     "pipeline.resolution=64", "pipeline.track_iterations=60", "pipeline.train.iterations=40",
                     "pipeline.train.gaussians.uv_resolution=24", "pipeline.drive_frames=6",
                     "pipeline.render_size=64"]) == 0
    report = json.loads((out / "demo_report.json").read_text())
    assert report["mode"] == "pipeline" and report["render"]["frames"] == 6
    assert report["training"]["iterations"] == 40 and report["training"]["psnr"] > 8
    assert report["training"]["heldout_frames"] == 2 and report["training"]["train_frames"] == 10  # the last 15%
    for name in ("driven.mp4", "orbit.mp4", "run/avatar.pt", "capture/tracking.npz", "capture/tracking_overlay.mp4",
                 "summary.png"):
        assert (out / name).is_file(), name
    import cv2

    sheet = cv2.imread(str(out / "summary.png"))
    assert sheet.shape[0] > 5 * 100 and sheet.shape[1] > sheet.shape[0]  # five labelled rows of frames
    from avatar.io.video_reader import open_source

    overlay = [f.image for f in open_source(out / "capture" / "tracking_overlay.mp4").frames()]
    assert len(overlay) == 12 and overlay[0].shape[0] >= 384  # every frame, enlarged from 64 px


def test_demo_falls_back_to_the_procedural_orbit_without_ict(tmp_path, monkeypatch, capsys):
    from avatar import cli
    from avatar.apps import demo_pipeline

    monkeypatch.setattr(demo_pipeline, "ict_available", lambda: None)
    out = tmp_path / "demo"
    args = [f"out={out}", "demo.n_frames=2", "demo.width=32", "demo.height=32", "demo.n_gaussians=500"]
    assert cli.main(["demo", *args]) == 0
    assert "procedural head instead" in capsys.readouterr().out and (out / "orbit.mp4").is_file()
    assert cli.main(["demo", *args, "mode=pipeline"]) == 1  # a missing input: avatar.errors
    assert "needs the ICT-FaceKit head model" in capsys.readouterr().err

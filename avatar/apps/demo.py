"""``avatar demo``: the main job on an embedded default, no downloads.

With the ICT-FaceKit head model (``mode=auto|pipeline``): the whole pipeline on a synthetic
capture (:mod:`avatar.apps.demo_pipeline`). Without it (or ``mode=orbit``): an orbit around a
procedural Gaussian head with the configured rasterization backend, written as
``orbit.mp4``, ``preview.png`` and ``demo_report.json`` to ``out``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from avatar.io.reports import write_json
from avatar.io.video import VideoWriter, to_uint8_rgb

from ..device import pick_device
from ..errors import command
from ..gaussians.procedural import procedural_head
from ..geometry.cameras import intrinsics_from_fov, orbit_viewmats
from ..io.atomic import atomic_write
from ..render import rasterization

log = logging.getLogger(__name__)


def _save_png(path: Path, image: np.ndarray) -> None:
    import cv2  # noqa: PLC0415

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write(path, buf.tobytes())


@command("avatar demo")
def main(cfg: DictConfig) -> int:
    """The full pipeline when the ICT head model is available (``mode=auto|pipeline``), else the orbit."""
    mode = cfg.get("mode", "orbit")
    if mode in ("auto", "pipeline"):
        from .demo_pipeline import ict_available, run_pipeline, summary  # noqa: PLC0415

        model = ict_available()
        if model is not None:
            print(summary(run_pipeline(cfg, model)))
            return 0
        if mode == "pipeline":
            raise FileNotFoundError("mode=pipeline needs the ICT-FaceKit head model: set AVATAR_ASSETS or run "
                                    "python data_tools/fetch_ict.py")
        print("avatar demo: the ICT-FaceKit head model is not on this machine (AVATAR_ASSETS, user cache), so the "
              "demo renders the procedural head instead; python data_tools/fetch_ict.py gets the model")
    return render_orbit(cfg)


def render_orbit(cfg: DictConfig) -> int:
    """Render an orbit around the procedural Gaussian head (no assets needed)."""
    d, r = cfg.demo, cfg.renderer
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.get("device", "auto"))
    scene = procedural_head(d.n_gaussians, sh_degree=d.sh_degree, seed=d.seed, device=device)
    viewmats = orbit_viewmats(d.n_frames, radius=0.62, height=0.06, target=(0.0, -0.02, 0.0), device=device)
    K = intrinsics_from_fov(d.width, d.height, 30.0, device=device)
    background = torch.ones(1, 3, device=device)

    frames, render_s, backend = [], [], None
    video_path = out / "orbit.mp4"
    with VideoWriter(video_path, fps=d.fps) as writer, torch.no_grad():
        for i in tqdm(range(d.n_frames), desc="render orbit", unit="frame"):
            t0 = time.perf_counter()
            img, _, meta = rasterization(
                scene.means, scene.quats, scene.scales, scene.opacities, scene.sh,
                viewmats[i : i + 1], K[None], d.width, d.height,
                sh_degree=d.sh_degree, backgrounds=background, near_plane=r.near_plane,
                eps2d=r.eps2d, tile_size=r.tile_size, backend=r.backend,
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            render_s.append(time.perf_counter() - t0)
            backend = meta["backend"]
            frame = to_uint8_rgb(img[0])
            writer.write(frame)
            if i % max(1, d.n_frames // 4) == 0 and len(frames) < 4:
                frames.append(frame)

    preview = out / "preview.png"
    _save_png(preview, np.concatenate(frames, axis=1))
    ms = np.array(render_s[1:] or render_s) * 1e3
    report = {
        "command": "demo",
        "scene": "procedural_head",
        "n_gaussians": len(scene),
        "frames": d.n_frames,
        "width": d.width,
        "height": d.height,
        "device": str(device),
        "backend": backend,
        "render_ms_median": round(float(np.median(ms)), 2),
        "render_fps": round(1e3 / float(np.median(ms)), 1),
        "outputs": {"video": str(video_path), "preview": str(preview)},
    }
    write_json(out / "demo_report.json", report)
    print(
        f"avatar demo: rendered {d.n_frames} frames of {len(scene)} Gaussians at {d.width}x{d.height} "
        f"on {device} ({backend} backend): {report['render_ms_median']} ms/frame, {report['render_fps']} FPS\n"
        f"  video:   {video_path}\n  preview: {preview}\n  report:  {out / 'demo_report.json'}"
    )
    return 0

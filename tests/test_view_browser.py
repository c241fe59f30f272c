"""``avatar view`` in a real browser: headless Chromium (SwiftShader WebGL) on a tiny test avatar.

One viewer process serves both tests; one browser session does all the checks of the first
(the page shows the avatar where the toolkit renders it, a slider changes the picture,
playback advances frames); the second starts Chromium without WebGL. Skipped, with the reason, when
Chromium or Playwright is missing (.ci/run installs Chromium). Slow: about 35 s on 2 cores with other jobs running.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from avatar_files import write_test_avatar
from browser import AVATAR_SHOWN_JS, avatar_shown_seconds, browser_page, missing_reason

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")]

SIZE = 128
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def avatar_and_drive(tmp_path_factory, ict_assets):
    """An ICT avatar whose Gaussians have random colours (any misplacement shows), and a 40-frame
    parameter file opening the jaw and turning the head."""
    import avatar.models
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=24, sh_degree=0, init_opacity=0.95))
    rgb = torch.rand(len(g), 3, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    with torch.no_grad():
        g.params["sh0"][:] = ((rgb - 0.5) / 0.28209479177387814)[:, None, :]
    root = tmp_path_factory.mktemp("view")
    names = list(model.expression_names)
    path = write_test_avatar(root / "run" / "avatar.pt", g, expression_names=names, size=SIZE)
    n = 40
    expression = np.zeros((n, len(names)), np.float32)
    expression[:, names.index("jawOpen")] = np.linspace(0, 1, n)
    rotation = np.zeros((n, 3), np.float32)
    rotation[:, 1] = np.linspace(0, 0.4, n)
    drive = root / "take.npz"
    np.savez(drive, expression=expression, expression_names=np.array(names), rotation=rotation, fps=np.float32(5.0))
    return path, drive


@pytest.fixture(scope="module")
def viewer(avatar_and_drive):
    """``(url, avatar.pt)`` of one `avatar view` process with the driven sequence, for the module's tests."""
    path, drive = avatar_and_drive
    proc, url = _start_viewer(f"run={path}", f"drive={drive}", cwd=path.parent)
    yield url, path
    proc.terminate()
    proc.wait(timeout=10)


def _start_viewer(*args: str, cwd) -> tuple[subprocess.Popen, str]:
    """`avatar view ARGS` on a free port, started in ``cwd`` (its Hydra records go there)."""
    proc = subprocess.Popen([sys.executable, "-m", "avatar", "view", *args, "view.port=0", "view.seconds=120"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    for line in proc.stdout:
        found = re.search(r" at (http://\S+) ", line)
        if found:
            return proc, found.group(1)
    proc.wait()
    raise AssertionError(f"avatar view exited {proc.returncode} without serving")


def _canvas(page) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(page.locator("canvas").first.screenshot())).convert("RGB")).astype(np.float32)


def _canvas_if(page, test) -> np.ndarray | None:
    image = _canvas(page)
    return image if test(image) else None


def _wait_for(condition, timeout: float = 20.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(every)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / max(float(np.mean((a - b) ** 2)), 1e-9)))


def test_the_page_shows_the_avatar_its_sliders_and_playback(viewer):
    """The browser's picture is compared with the toolkit's own render through the camera the page
    uses (initial camera: the avatar's, looking at the head; the canvas's size), on the head's
    bounding box: PSNR >= 25 dB. Random per-Gaussian colours make that fail for any misplaced,
    mis-sized or mis-coloured splat. Then the jawOpen slider (moved with the keyboard, as a user
    would) must change the picture, and Play must advance the frame number and the picture."""
    from avatar.gaussians.package import AvatarPackage
    from avatar.view.controls import ViewCamera

    url, path = viewer
    with browser_page() as page:
        page.add_init_script(AVATAR_SHOWN_JS)
        page.goto(url)
        page.add_style_tag(content=".mantine-Notifications-root { display: none !important; }")
        avatar_shown_seconds(page, timeout=30)  # raises when the avatar never shows
        time.sleep(1.0)  # the splats' fade-in
        first = _canvas(page)
        height, width = first.shape[:2]

        pkg = AvatarPackage.load(path, torch.device("cpu"))
        e = np.zeros(len(pkg.expression_names), np.float32)
        r, t = pkg.reference_pose_or(np.zeros(3, np.float32), np.zeros(3, np.float32))
        with torch.no_grad():
            centre = pkg.posed_gaussians(*(torch.as_tensor(a[None]) for a in (e, r, t))).means[0].mean(0).numpy()
        K0, _, h0 = pkg.camera()
        cam = ViewCamera.from_opencv(pkg.state["viewmat"], K0, h0, centre)
        ours, _, _ = pkg.render_frame(e, r, t, cam.viewmat(), cam.K(width, height), width, height,
                                      {"backend": "torch"})
        ours = ours.astype(np.float32)
        head = np.argwhere((ours < 245).any(-1))
        (y0, x0), (y1, x1) = head.min(0), head.max(0) + 1
        box = (slice(max(y0 - 4, 0), y1 + 4), slice(max(x0 - 4, 0), x1 + 4))
        psnr = _psnr(first[box], ours[box])
        assert psnr >= 25.0, f"page vs toolkit render: {psnr:.2f} dB on the head"
        shifted = np.roll(ours, 2, axis=1)  # two pixels off: the measure must tell
        assert _psnr(first[box], shifted[box]) < psnr - 3

        page.get_by_text("jawOpen", exact=True).locator(
            "xpath=ancestor::div[.//*[@role='slider']][1]//*[@role='slider']").first.focus()
        page.keyboard.press("End")
        moved = _wait_for(lambda: _canvas_if(page, lambda c: np.abs(c - first)[box].mean() > 1.0))
        assert moved is not None, "moving jawOpen did not change the picture"

        frame_slider = page.get_by_role("slider").first
        frame = lambda: int(frame_slider.get_attribute("aria-valuenow"))  # noqa: E731
        assert frame() == 0
        pictures = []
        for _ in range(2):  # play a few frames, pause (a still page screenshots fast), look
            start = frame()
            page.get_by_role("button", name="Play").click()
            assert _wait_for(lambda: frame() >= start + 3 or None), "playback did not advance the frame number"
            page.get_by_role("button", name="Pause").click()
            time.sleep(0.5)
            pictures.append(_canvas(page))
        assert np.abs(pictures[0] - pictures[1])[box].mean() > 0.5, "playback did not change the picture"


def test_a_browser_without_webgl_is_told_so(viewer, monkeypatch):
    """viser's page itself checks WebGL and says so in a notification; Chromium without WebGL must get it."""
    import browser

    url, _ = viewer
    monkeypatch.setattr(browser, "CHROMIUM_FLAGS", [*browser.CHROMIUM_FLAGS, "--disable-webgl", "--disable-3d-apis"])
    with browser.browser_page() as page:
        page.goto(url)
        page.get_by_text("WebGL unavailable").wait_for(timeout=20000)


def test_the_training_viewer_page_shows_the_pictures_rendered_for_its_view(ict_assets):
    """``train.viewer_mode=image`` in a real page: a stand-in trainer (the avatar with random colours,
    steps called here) renders the page's own view; the canvas must show that picture (PSNR >= 25 dB
    on the head against the toolkit's render for the page's camera), and dragging the view (as a
    user orbits) must bring a new picture of the turned head."""
    from types import SimpleNamespace

    import avatar.models
    from avatar.gaussians.base import FrameState
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig
    from avatar.view.training import TrainingViewer, client_view

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=24, sh_degree=0, init_opacity=0.95))
    rgb = torch.rand(len(g), 3, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    with torch.no_grad():
        g.params["sh0"][:] = ((rgb - 0.5) / 0.28209479177387814)[:, None, :]
        verts = model(shape=torch.zeros(1, 100)).vertices * torch.tensor([1.0, -1, -1]) + torch.tensor([0, 0, 0.6])
    state = FrameState(verts, None, torch.zeros(1, 3))
    frames = SimpleNamespace(train=np.array([0]), viewmat=torch.eye(4), height=256,
                             K=torch.tensor([[[300.0, 0, 128], [0, 300, 128], [0, 0, 1]]]))
    trainer = SimpleNamespace(gaussians=g, frames=frames, step=0, out=Path("run"), sh_degree=lambda: 0,
                              mesh=lambda i: state, background=torch.ones(3))
    viewer = TrainingViewer(trainer, port=0, every=5, max_side=4096)

    def train_until(condition, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            trainer.step += 1
            viewer.step({"loss": 1.0, "psnr": 20.0})
            value = condition()
            if value is not None:
                return value
            time.sleep(0.1)
        return None

    try:
        with browser_page() as page:
            page.add_init_script(AVATAR_SHOWN_JS)
            page.goto(viewer.server.url)
            page.add_style_tag(content=".mantine-Notifications-root { display: none !important; }")
            assert train_until(lambda: page.evaluate("window.__avatarShownAt") or None), "the picture never showed"
            client = next(iter(viewer.server.server.get_clients().values()))

            def camera():
                c = client.camera
                return (tuple(np.round(c.wxyz, 6)), tuple(np.round(c.position, 6)), round(float(c.fov), 6),
                        c.image_width, c.image_height)

            # The page's camera may still move after its first picture (the initial view is set once
            # the avatar is posed): train on until it has kept still for a second and the picture for
            # its last move was rendered, as a running training would. Then the settled canvas.
            seen = {"camera": None, "since": time.monotonic()}

            def settled():
                now = camera()
                if now != seen["camera"]:
                    seen.update(camera=now, since=time.monotonic())
                    return None
                with viewer._lock:
                    pending = bool(viewer._dirty)
                return True if time.monotonic() - seen["since"] > 1.0 and not pending else None

            assert train_until(settled), "the page's camera never settled"
            time.sleep(1.0)
            shown = _canvas(page)
            vm, K, width, height = client_view(client.camera, 4096)
            assert shown.shape[:2] == (height, width)
            with torch.no_grad():
                ours = g(state).render(vm[None], K[None], width, height, 0, backgrounds=torch.ones(1, 3))[0][0]
            ours = ours.clamp(0, 1).numpy() * 255
            head = np.argwhere((ours < 245).any(-1))
            (y0, x0), (y1, x1) = head.min(0), head.max(0) + 1
            box = (slice(max(y0 - 4, 0), y1 + 4), slice(max(x0 - 4, 0), x1 + 4))
            psnr = _psnr(shown[box], ours[box])
            assert psnr >= 25.0, f"page vs toolkit render: {psnr:.2f} dB on the head"
            assert _psnr(shown[box], np.roll(ours, 2, axis=1)[box]) < psnr - 3

            pictures = viewer.pictures
            box_canvas = page.locator("canvas").first.bounding_box()
            cx, cy = box_canvas["x"] + box_canvas["width"] / 2, box_canvas["y"] + box_canvas["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + 120, cy, steps=8)
            page.mouse.up()
            turned = train_until(lambda: _canvas_if(page, lambda c: np.abs(c - shown)[box].mean() > 5.0)
                                 if viewer.pictures > pictures else None)
            assert turned is not None, "orbiting the page did not bring a new picture"
            assert viewer.server.rate.count == 0  # no splats were sent to the page
    finally:
        viewer.close()

"""The viewer on an avatar being trained (``avatar train ... train.viewer=true``).

Two ways to show it (``train.viewer_mode``, switchable on the page):

- ``image`` (the default): the training process renders the avatar from each open page's
  camera with its own rasterizer and sends the picture (JPEG, at most ``max_side`` pixels a
  side) as the page's background, every ``every`` steps and after the page's camera moved
  (at most ``1 / max_rate`` times a second per page). The browser only draws a picture, so
  a page with software WebGL on the same cores takes next to nothing from the training; the
  picture is what training renders, pixel for pixel. As nerfstudio's viewer does for NeRFs.
- ``splats``: the Gaussians posed on the first training frame are sent to the browser, which
  splats them itself (as ``avatar view`` does): smooth orbiting between refreshes, but the
  page's own splatting holds about half a core for 20k Gaussians in software WebGL.

Both run their torch work on the training thread between steps (one forward pass without
gradients): torch work on a second thread beside training starts a second OpenMP team on
the same cores and slowed a 100-step run 2.5x on 2 cores. Loss and PSNR are kept per step
and plotted once a second by a second thread, so the training thread never waits for the
browser.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from ..geometry.rotations import quaternion_to_matrix
from .avatar_viewer import set_initial_camera
from .controls import ViewCamera, intrinsics
from .server import SplatServer
from .splats import pack_world

MODES = {"image": "picture rendered by the training", "splats": "splats drawn by the browser"}


def client_view(camera, max_side: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """``(viewmat [4, 4], K [3, 3], width, height)`` of a viser page's ``camera`` (OpenCV axes:
    its ``wxyz`` / ``position`` are the camera-to-world rotation and centre; ``fov`` vertical),
    for a picture of the page's aspect with at most ``max_side`` pixels a side (fewer when the
    page is smaller)."""
    R = quaternion_to_matrix(torch.as_tensor(np.asarray(camera.wxyz), dtype=torch.float64))
    p = torch.as_tensor(np.asarray(camera.position), dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3] = R.T
    viewmat[:3, 3] = -R.T @ p
    page_w, page_h = max(1, int(camera.image_width)), max(1, int(camera.image_height))
    scale = min(1.0, max_side / max(page_w, page_h))
    width, height = max(8, round(page_w * scale)), max(8, round(page_h * scale))
    K = intrinsics(float(camera.fov), width, height)
    return viewmat.to(device, dtype), K.to(device, dtype), width, height


class TrainingViewer:
    """Serves the avatar a :class:`avatar.train.trainer.Trainer` trains; call :meth:`step` after each step."""

    def __init__(self, trainer, host: str = "127.0.0.1", port: int = 8080, every: int = 100,
                 plot_seconds: float = 5.0, mode: str = "image", max_side: int = 512, max_rate: float = 10.0):
        if mode not in MODES:
            raise ValueError(f"train.viewer_mode={mode!r}: use one of {', '.join(MODES)}")
        self.trainer, self.every = trainer, max(1, int(every))
        self.plot_seconds = float(plot_seconds)
        self.mode, self.max_side, self.min_interval = mode, int(max_side), 1.0 / max(float(max_rate), 1e-6)
        self.server = SplatServer(host, port, host_key="train.viewer_host", port_key="train.viewer_port",
                                  title=f"training {trainer.out.name}")
        self.index = int(trainer.frames.train[0])
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.psnr: list[float] = []
        self.pictures = 0  # pictures sent in image mode
        self.picture_ms: list[float] = []  # milliseconds per picture: render, encode, queue
        gui = self.server.server.gui
        self.status = gui.add_markdown("starting")
        self.mode_control = gui.add_dropdown("show", tuple(MODES.values()), initial_value=MODES[mode])
        self.mode_control.on_update(lambda _: self._set_mode(next(k for k, v in MODES.items()
                                                                   if v == self.mode_control.value)))
        self.plot = None
        self._camera_set = False
        self._lock = threading.Lock()
        self._pages: dict[int, object] = {}  # client id -> client, once its camera is known
        self._dirty: set[int] = set()  # pages whose picture is out of date
        self._last: dict[int, float] = {}  # client id -> when its last picture was rendered
        self._refresh = False  # the mode changed: send at the next step
        self.server.server.on_client_connect(self._connect)
        self.server.server.on_client_disconnect(self._disconnect)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._plot_loop, name="viewer-plots", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- pages (viser's threads)
    def _connect(self, client) -> None:
        def moved(_camera) -> None:
            with self._lock:
                self._pages[client.client_id] = client
                self._dirty.add(client.client_id)
        client.camera.on_update(moved)

    def _disconnect(self, client) -> None:
        with self._lock:
            self._pages.pop(client.client_id, None)
            self._dirty.discard(client.client_id)
            self._last.pop(client.client_id, None)

    def _set_mode(self, mode: str) -> None:
        with self._lock:
            if mode == self.mode:
                return
            self.mode, self._refresh = mode, True
            self._dirty.update(self._pages)
            pages = list(self._pages.values())
        if mode == "splats":
            for client in pages:
                client.scene.set_background_image(None)
        elif self.server.node is not None:
            self.server.node.remove()
            self.server.node = None

    # ---------------------------------------------------------------- the training thread
    def step(self, stats: dict) -> None:
        """Record this step's loss and PSNR; every ``every`` steps (and at step 1) show the avatar
        again; in image mode, also render the pages whose camera moved."""
        t = self.trainer
        self.steps.append(t.step)
        self.loss.append(float(stats.get("loss", float("nan"))))
        self.psnr.append(float(stats.get("psnr", float("nan"))))
        with self._lock:
            refresh = t.step % self.every == 0 or t.step == 1 or self._refresh
            self._refresh = False
            if self.mode == "image":
                if refresh:
                    self._dirty.update(self._pages)
                now = time.perf_counter()
                due = [(i, self._pages[i]) for i in self._dirty
                       if i in self._pages and now - self._last.get(i, -1e9) >= self.min_interval]
                for i, _ in due:
                    self._dirty.discard(i)
                    self._last[i] = now
            mode = self.mode
        if mode == "image":
            if due:
                self._send_pictures(due)  # poses once, and sets the pages' initial camera
            elif refresh and not self._camera_set:
                self._set_camera(self._posed())
            return
        if not refresh:
            return
        w = self._posed()
        self._set_camera(w)
        viewmat, degree = t.frames.viewmat.detach().clone(), t.sh_degree()
        # Packed here, on the training thread (about 20 ms for 20k Gaussians, every `every` steps); the
        # server's thread only sends the bytes.
        buffer = pack_world(w, viewmat, degree)
        self.server.request(lambda: buffer)

    def _posed(self):
        """The Gaussians posed on the first training frame, detached."""
        t = self.trainer
        with torch.no_grad():
            w = t.gaussians(t.mesh(self.index))
            w.means, w.quats, w.scales = w.means.detach().clone(), w.quats.detach().clone(), w.scales.detach().clone()
            w.covars = None if w.covars is None else w.covars.detach().clone()
            w.opacities, w.sh = w.opacities.detach().clone(), w.sh.detach().clone()
        return w

    def _set_camera(self, w) -> None:
        """New pages start at the first training frame's camera, looking at the avatar."""
        if self._camera_set:
            return
        t = self.trainer
        K = t.frames.K[self.index].detach().cpu()
        set_initial_camera(self.server, ViewCamera.from_opencv(t.frames.viewmat.detach().cpu(), K, t.frames.height,
                                                               w.means[0].mean(0).cpu().numpy()))
        self._camera_set = True

    def _send_pictures(self, pages) -> None:
        t = self.trainer
        w = self._posed()
        self._set_camera(w)
        background = getattr(t, "background", None)
        renderer = getattr(t, "renderer", {}) or {}
        for _, client in pages:
            t0 = time.perf_counter()
            try:
                viewmat, K, width, height = client_view(client.camera, self.max_side, w.means.device, w.means.dtype)
                with torch.no_grad():
                    img, _, _ = w.render(viewmat[None], K[None], width, height, t.sh_degree(),
                                         backgrounds=None if background is None else background[None], **renderer)
                picture = (img[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
                client.scene.set_background_image(picture, format="jpeg", jpeg_quality=90)
            except Exception as exc:  # a page that went away mid-render, or a bad camera: say it, train on
                self.server.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            self.pictures += 1
            self.picture_ms.append(1000 * (time.perf_counter() - t0))

    def _status_text(self, x, loss, psnr) -> str:
        text = (f"step **{x[-1]:.0f}** · loss **{loss[-1]:.4f}** · PSNR **{psnr[-1]:.2f}** dB · "
                f"**{len(self.trainer.gaussians):,}** Gaussians · ")
        if self.mode == "image":
            ms = float(np.median(self.picture_ms[-20:])) if self.picture_ms else 0.0
            text += (f"rendered here every {self.every} steps and when the view moves "
                     f"({self.pictures} pictures, {ms:.0f} ms each)")
        else:
            text += f"avatar sent every {self.every} steps ({self.server.rate.count} so far)"
        if self.server.errors:
            text += f"  \n⚠ {self.server.errors[-1]}"
        return text

    def _plot_loop(self) -> None:
        from viser import uplot  # noqa: PLC0415

        while not self._stop.wait(self.plot_seconds):
            n = len(self.steps)
            if n < 2:
                continue
            x = np.asarray(self.steps[:n], np.float64)
            loss, psnr = np.asarray(self.loss[:n]), np.asarray(self.psnr[:n])
            data = (x, np.nan_to_num(loss, nan=0.0), np.nan_to_num(psnr, nan=0.0))
            if self.plot is None:
                gui = self.server.server.gui
                self.plot = gui.add_uplot(
                    data, (uplot.Series(label="step"), uplot.Series(label="loss", stroke="red", scale="loss"),
                           uplot.Series(label="PSNR dB", stroke="blue", scale="psnr")),
                    scales={"x": uplot.Scale(time=False), "loss": uplot.Scale(), "psnr": uplot.Scale()},
                    axes=(uplot.Axis(), uplot.Axis(scale="loss", label="loss"),
                          uplot.Axis(scale="psnr", label="PSNR (dB)", side=1)),
                    title="training", aspect=1.5)
            else:
                self.plot.data = data
            self.status.content = self._status_text(x, loss, psnr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()

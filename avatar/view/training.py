"""The viewer on an avatar being trained (``avatar train ... train.viewer=true``).

Every ``every`` steps the training loop hands over the Gaussians posed on its first training
frame (:meth:`TrainingViewer.step`: one forward pass without gradients, colouring and
packing, about 20 ms for 20k Gaussians); sending happens on the server's worker thread. Loss and PSNR are
kept per step and plotted twice a second by a second thread, so the training thread
never waits for the browser.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from .avatar_viewer import set_initial_camera
from .controls import ViewCamera
from .server import SplatServer
from .splats import pack_world


class TrainingViewer:
    """Serves the avatar a :class:`avatar.train.trainer.Trainer` trains; call :meth:`step` after each step."""

    def __init__(self, trainer, host: str = "127.0.0.1", port: int = 8080, every: int = 100,
                 plot_seconds: float = 0.5):
        self.trainer, self.every = trainer, max(1, int(every))
        self.plot_seconds = float(plot_seconds)
        self.server = SplatServer(host, port, host_key="train.viewer_host", port_key="train.viewer_port",
                                  title=f"training {trainer.out.name}")
        self.index = int(trainer.frames.train[0])
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.psnr: list[float] = []
        gui = self.server.server.gui
        self.status = gui.add_markdown("starting")
        self.plot = None
        self._camera_set = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._plot_loop, name="viewer-plots", daemon=True)
        self._thread.start()

    def step(self, stats: dict) -> None:
        """Record this step's loss and PSNR; every ``every`` steps (and at step 1) send the avatar."""
        t = self.trainer
        self.steps.append(t.step)
        self.loss.append(float(stats.get("loss", float("nan"))))
        self.psnr.append(float(stats.get("psnr", float("nan"))))
        if t.step % self.every and t.step != 1:
            return
        with torch.no_grad():
            w = t.gaussians(t.mesh(self.index))
            w.means, w.quats, w.scales = w.means.detach().clone(), w.quats.detach().clone(), w.scales.detach().clone()
            w.opacities, w.sh = w.opacities.detach().clone(), w.sh.detach().clone()
        viewmat, degree = t.frames.viewmat.detach().clone(), t.sh_degree()
        if not self._camera_set:
            K = t.frames.K[self.index].detach().cpu()
            set_initial_camera(self.server, ViewCamera.from_opencv(viewmat.cpu(), K, t.frames.height,
                                                                   w.means[0].mean(0).cpu().numpy()))
            self._camera_set = True
        # Packed here, on the training thread (about 20 ms for 20k Gaussians, every `every` steps): torch
        # work on a second thread beside training starts a second OpenMP team on the same cores and
        # slowed a 100-step run 2.5x on 2 cores. The server's thread only sends the bytes.
        buffer = pack_world(w, viewmat, degree)
        self.server.request(lambda: buffer)

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
            rate = self.server.rate
            self.status.content = (f"step **{x[-1]:.0f}** · loss **{loss[-1]:.4f}** · PSNR **{psnr[-1]:.2f}** dB · "
                                   f"**{len(self.trainer.gaussians):,}** Gaussians · avatar sent every {self.every} "
                                   f"steps ({rate.count} so far)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()

"""A viser server holding one Gaussian-splat node, fed from a background thread.

Whoever poses the avatar hands :meth:`SplatServer.request` a function that returns the next
splat buffer (:mod:`avatar.view.splats`); a worker thread runs the newest request (older ones
not yet started are dropped), assigns the buffer to the scene node, and counts the frames
pushed (:class:`FrameRate`). Sliders, playback and a training loop therefore never wait for
posing, packing or the network.

The server binds ``127.0.0.1`` by default: the page has no login, so any other address gets
a warning on stderr. A port already in use is an error naming it and a free one (viser itself
would quietly move to the next port).
"""

from __future__ import annotations

import collections
import logging
import socket
import sys
import threading
import time
from typing import Callable

import numpy as np

from .splats import UNITS_PER_METRE

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ViewerError(RuntimeError):
    """The viewer cannot start with these inputs (a port in use, no avatar file): exit 1."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port(host: str, port: int, key: str = "port") -> None:
    """Raise :class:`ViewerError` when ``port`` on ``host`` cannot be bound (in use, or not an
    address of this machine), suggesting a free port; ``key`` is the config key to set."""
    if port == 0:
        return
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except PermissionError:
            raise ViewerError(f"port {port} on {host} needs more privileges: set {key}= to a port above 1023, "
                              f"e.g. {key}={free_port(host)}") from None
        except OSError as exc:
            if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise ViewerError(f"port {port} on {host} is in use (another viewer or server?): set {key}= to "
                                  f"another, e.g. {key}={free_port(host)} (free now), or {key}=0 for any free "
                                  f"one") from None
            raise ViewerError(f"cannot listen on {host}:{port} ({exc.strerror}): is {host} an address of this "
                              f"machine? the default is 127.0.0.1") from None


def warn_if_public(host: str, key: str = "host") -> bool:
    """Print a warning on stderr when ``host`` is not a loopback address; True if it warned."""
    if host in LOCAL_HOSTS:
        return False
    print(f"warning: the viewer listens on {host}, not only on this machine ({key}={host}): anyone who can reach "
          "this address can open the page (it has no login); use {key}=127.0.0.1 and an SSH tunnel to view "
          "from elsewhere", file=sys.stderr)
    return True


class FrameRate:
    """Frames per second over the last ``window`` seconds, and the mean time spent per frame."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self._times: collections.deque[float] = collections.deque()
        self._busy: collections.deque[float] = collections.deque()
        self.count = 0

    def tick(self, busy_seconds: float = 0.0, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self._times.append(now)
        self._busy.append(busy_seconds)
        self.count += 1
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()
            self._busy.popleft()

    def fps(self, now: float | None = None) -> float:
        """Frames in the window over its span (0 with fewer than two frames or none lately)."""
        now = time.perf_counter() if now is None else now
        if len(self._times) < 2 or now - self._times[-1] > self.window:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)

    def busy_ms(self) -> float:
        """Mean milliseconds of work per frame in the window (posing, packing, queueing)."""
        return 1000.0 * float(np.mean(self._busy)) if self._busy else 0.0


class SplatServer:
    """A running viser server with one splat node (``/avatar``) and a push worker."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, host_key: str = "host",
                 port_key: str = "port", title: str = "avatar"):
        warn_if_public(host, host_key)
        check_port(host, port, port_key)
        import viser  # noqa: PLC0415

        self.server = viser.ViserServer(host=host, port=port, label=title, verbose=False)
        if port and self.server.get_port() != port:  # taken between the check and the start
            got = self.server.get_port()
            self.server.stop()
            raise ViewerError(f"port {port} on {host} is in use: set {port_key}= to another, e.g. {port_key}={got}")
        self.host = host
        self.server.gui.configure_theme(show_share_button=False)
        self.server.gui.main_panel.dock_right()  # beside the picture, not over it
        self.node = None
        self.rate = FrameRate()
        self.errors: list[str] = []
        self._job: Callable[[], np.ndarray] | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._worker = threading.Thread(target=self._run, name="splat-push", daemon=True)
        self._worker.start()

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host if ':' not in host else f'[{host}]'}:{self.port}"

    def request(self, make_buffer: Callable[[], np.ndarray]) -> None:
        """Run ``make_buffer`` on the worker and show its splat buffer; replaces a request not started yet."""
        with self._cond:
            self._job = make_buffer
            self._cond.notify()

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is pending or running; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._job is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    _busy = False

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, self._job, self._busy = self._job, None, True
            t0 = time.perf_counter()
            try:
                self.push(job())
                self.rate.tick(time.perf_counter() - t0)
            except Exception as exc:  # a bad frame must not kill the viewer: say it and go on
                log.exception("posing a frame for the viewer failed")
                self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def push(self, buffer: np.ndarray) -> None:
        """Show the splat buffer ``[N, 8] uint32`` (:func:`avatar.view.splats.pack`) now."""
        if self.node is None:
            one = np.zeros((1, 3), np.float32)
            self.node = self.server.scene.add_gaussian_splats(
                "/avatar", centers=one, covariances=np.eye(3, dtype=np.float32)[None] * 1e-4, rgbs=one + 1,
                opacities=np.zeros((1, 1), np.float32), scale=1.0 / UNITS_PER_METRE)
        self.node.buffer = buffer

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._worker.join(timeout=5)
        self.server.stop()

    def __enter__(self) -> "SplatServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The viewer of a trained avatar (``avatar view``): expression and head-pose sliders, a reset
button, playback of a driven sequence with a scrub bar, the capture's frame beside the render,
and the rate of posed frames pushed to the browser.

Every control edits one :class:`avatar.view.controls.Pose`; each change asks the
:class:`avatar.view.server.SplatServer` for a new frame, which poses the avatar
(:meth:`AvatarPackage.posed_gaussians`), packs it (:mod:`avatar.view.splats`) and pushes it on
its worker thread, newest request first. View-dependent colours (spherical harmonics) are shaded
for where the page's camera is, and re-shaded as it orbits (the last page that moved, when
several are open).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
import torch

from ..drive.animate import avatar_rest
from ..gaussians.package import AvatarPackage
from .controls import Pose, ViewCamera, expression_groups, head_rotation
from .server import SplatServer
from .splats import pack_world

POSE_RANGE_DEG = 45.0  # head-pose sliders go from -this to +this


def preview_image(image: np.ndarray, height: int = 240) -> np.ndarray:
    """``image [H, W, 3] uint8`` scaled to ``height`` pixels high (the panel shows it small)."""
    import cv2  # noqa: PLC0415

    if image.shape[0] <= height:
        return image
    width = int(round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class AvatarViewer:
    """The GUI and posing of one trained avatar on a :class:`SplatServer`.

    ``poses``: a driven sequence ``(expression [F, E], rotation [F, 3], translation [F, 3])`` to play
    at ``fps`` (None: no playback); ``frame_image(i)``: the capture's image for driven frame ``i``
    (or, without a sequence, frame 0: the person the avatar was trained on), None: no image.
    """

    def __init__(self, package: AvatarPackage, server: SplatServer,
                 poses: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, fps: float = 25.0,
                 frame_image: Callable[[int], np.ndarray] | None = None, gaze: np.ndarray | None = None):
        self.package, self.server = package, server
        self.poses, self.fps, self.frame_image = poses, float(fps), frame_image
        self.gaze = gaze  # [F, 2, 2] the driven eyeballs' turns per frame (None: as trained)
        self.rest = avatar_rest(package)  # the rest a driven sequence starts from too
        bounds = getattr(getattr(package.model, "tracking_profile", None), "expression_bounds", (0.0, 1.0))
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.ref_r, self.ref_t = package.reference_pose_or(np.zeros(3, np.float32), np.array([0, 0, -0.6], np.float32))
        self.viewmat = package.state["viewmat"].to(package.device, torch.float32)
        self.colour_viewmat = self.viewmat  # the camera view-dependent colours are shaded for: the page's, once known
        self.pose = Pose(self.rest.copy())
        self.playing = False
        self._lock = threading.RLock()
        self._shown_frame: int | None = -1
        self._stop = threading.Event()
        self._build_gui()
        self._set_camera()
        server.server.on_client_connect(self._follow_camera)
        self.refresh()
        self._thread = threading.Thread(target=self._tick, name="viewer-playback", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ posing
    def base_pose(self, frame: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Head rotation and translation of driven ``frame`` (None: the reference pose)."""
        if frame is None or self.poses is None:
            return self.ref_r, self.ref_t
        return self.poses[1][frame], self.poses[2][frame]

    @torch.no_grad()
    def buffer(self, pose: Pose) -> np.ndarray:
        """The splat buffer of ``pose`` (posed on the caller's thread: the server's worker)."""
        rotation, translation = self.base_pose(pose.frame)
        rotation = head_rotation(rotation, pose.yaw, pose.pitch, pose.roll)
        dev = self.package.device
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32)[None], device=dev)  # noqa: E731
        gaze = None if self.gaze is None or pose.frame is None else t(self.gaze[pose.frame])
        world = self.package.posed_gaussians(t(pose.expression), t(rotation), t(translation), gaze=gaze)
        return pack_world(world, self.colour_viewmat, self.package.gaussians.sh_degree)

    def refresh(self) -> None:
        """Ask for a frame of the current pose (and the capture image of its frame)."""
        with self._lock:
            pose = Pose(self.pose.expression.copy(), self.pose.yaw, self.pose.pitch, self.pose.roll, self.pose.frame)

        def job() -> np.ndarray:
            buf = self.buffer(pose)
            self._show_frame_image(pose.frame)
            return buf

        self.server.request(job)

    def _show_frame_image(self, frame: int | None) -> None:
        if self.frame_image is None or self.image is None:
            return
        index = 0 if frame is None or self.poses is None else frame
        if index != self._shown_frame:
            self._shown_frame = index
            self.image.image = preview_image(self.frame_image(index))

    # ------------------------------------------------------------------ actions (GUI and tests)
    def set_expression(self, index: int, value: float) -> None:
        with self._lock:
            self.pose.expression[index] = value
        self.refresh()

    def set_head(self, yaw: float | None = None, pitch: float | None = None, roll: float | None = None) -> None:
        with self._lock:
            for name, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
                if value is not None:
                    setattr(self.pose, name, float(value))
        self.refresh()

    def seek(self, frame: int) -> None:
        """Show driven ``frame``: its expression and head pose (the head-pose offsets stay)."""
        if self.poses is None:
            return
        frame = int(frame) % len(self.poses[0])
        with self._lock:
            self.pose.frame = frame
            self.pose.expression = np.asarray(self.poses[0][frame], np.float32).copy()
        if self.scrub is not None:
            self.scrub.value = frame  # its callback ignores values set from here
        self.refresh()

    def play(self) -> None:
        if self.poses is not None:
            self.playing = True

    def pause(self) -> None:
        self.playing = False
        self._sync_sliders()

    def reset(self) -> None:
        """The avatar's rest expression and reference head pose; playback stops."""
        self.playing = False
        with self._lock:
            self.pose = Pose(self.rest.copy())
        self._sync_sliders()
        if self.scrub is not None:
            self.scrub.value = 0
        self.refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ GUI
    # Callbacks act only on events from a page (``event.client``); values set here come without one.
    def _sync_sliders(self) -> None:
        for i, slider in self.sliders.items():
            slider.value = float(np.clip(round(float(self.pose.expression[i]), 2), *self.bounds))
        for name, slider in self.head.items():
            slider.value = float(getattr(self.pose, name))

    def _build_gui(self) -> None:
        gui = self.server.server.gui
        self.status = gui.add_markdown(self._status_text())
        reset = gui.add_button("Neutral / reset", hint="rest expression, reference head pose; stops playback")
        reset.on_click(lambda _: self.reset())
        self.scrub = None
        if self.poses is not None:
            with gui.add_folder("Playback"):
                play, pause = gui.add_button("Play"), gui.add_button("Pause")
                play.on_click(lambda _: self.play())
                pause.on_click(lambda _: self.pause())
                self.scrub = gui.add_slider("Frame", 0, len(self.poses[0]) - 1, 1, 0)
                self.scrub.on_update(lambda e: None if e.client is None else (self.pause(), self.seek(self.scrub.value)))
        self.image = None
        if self.frame_image is not None:
            with gui.add_folder("Capture"):
                self.image = gui.add_image(preview_image(self.frame_image(0)), label="capture frame", format="jpeg")
                self._shown_frame = 0
        self.head = {}
        with gui.add_folder("Head pose (degrees)"):
            for name in ("yaw", "pitch", "roll"):
                slider = gui.add_slider(name, -POSE_RANGE_DEG, POSE_RANGE_DEG, 1.0, 0.0)
                slider.on_update(self._on_head(name))
                self.head[name] = slider
        self.sliders = {}
        names = self.package.expression_names
        for title, ids in expression_groups(names).items():
            with gui.add_folder(title, expand_by_default=title == "Jaw and mouth"):
                for i in ids:
                    value = float(np.clip(round(float(self.rest[i]), 2), *self.bounds))
                    slider = gui.add_slider(str(names[i]), self.bounds[0], self.bounds[1], 0.01, value)
                    slider.on_update(self._on_expression(i))
                    self.sliders[i] = slider

    def _on_expression(self, index: int):
        def update(event) -> None:
            if event.client is not None:  # a user moved it (not set from here)
                self.set_expression(index, float(event.target.value))
        return update

    def _on_head(self, name: str):
        def update(event) -> None:
            if event.client is not None:
                self.set_head(**{name: float(event.target.value)})
        return update

    def _follow_camera(self, client) -> None:
        """Shade view-dependent colours for where the page's camera is, as it orbits."""

        @client.camera.on_update
        def _(camera) -> None:
            position, look_at = np.asarray(camera.position, np.float64), np.asarray(camera.look_at, np.float64)
            if np.linalg.norm(look_at - position) < 1e-9:
                return
            cam = ViewCamera(position, look_at, np.asarray(camera.up_direction, np.float64), float(camera.fov))
            self.colour_viewmat = cam.viewmat().to(self.package.device)
            if not self.playing:
                self.refresh()

    def _set_camera(self) -> None:
        with torch.no_grad():
            centre = self.package.posed_gaussians(*(torch.as_tensor(np.asarray(a, np.float32)[None], device=self.package.device)
                                                    for a in (self.rest, self.ref_r, self.ref_t))).means[0].mean(0)
        K, _, height = self.package.camera()
        camera = ViewCamera.from_opencv(self.viewmat.cpu(), K.cpu(), height, centre.cpu().numpy())
        set_initial_camera(self.server, camera)

    def _status_text(self) -> str:
        rate = self.server.rate
        text = (f"**{len(self.package.gaussians):,}** Gaussians · pushed **{rate.fps():.1f}** FPS · "
                f"pose + pack **{rate.busy_ms():.0f}** ms/frame")
        if self.server.errors:
            text += f"  \n⚠ {self.server.errors[-1]}"
        return text

    def _tick(self) -> None:
        """Playback (one frame per ``1 / fps`` seconds while playing) and the status line (twice a second)."""
        next_frame = next_status = time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            if self.playing and self.poses is not None and now >= next_frame:
                self.seek((self.pose.frame or 0) + 1 if self.pose.frame is not None else 0)
                next_frame = max(next_frame + 1.0 / self.fps, now)
            if now >= next_status:
                self.status.content = self._status_text()
                next_status = now + 0.5
            self._stop.wait(max(0.001, min(next_frame, next_status) - time.perf_counter()))


def set_initial_camera(server: SplatServer, camera: ViewCamera) -> None:
    """Start new pages (and their Reset View button) at ``camera``; the scene's up is the camera's up."""
    s = server.server
    s.scene.set_up_direction(tuple(float(x) for x in camera.up))
    s.initial_camera.position = tuple(float(x) for x in camera.position)
    s.initial_camera.look_at = tuple(float(x) for x in camera.look_at)
    s.initial_camera.up = tuple(float(x) for x in camera.up)
    s.initial_camera.fov = float(camera.fov)

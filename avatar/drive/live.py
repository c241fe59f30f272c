"""The live loop: webcam (or a video standing in for one) -> landmarks + fit -> rendered avatar.

Three stages run concurrently and hand over only their newest result, so the slowest stage
sets the frame rate and stale frames are dropped instead of queued:

1. capture: reads the camera (a video file is paced at its own frame rate, like a camera);
2. track: MediaPipe face mesh + the per-frame fitter (expression and head pose), on the
   newest frame once the renderer has taken its previous result (so it never computes a
   pose that would not be shown, leaving the CPU to the renderer), timed to finish about when
   the renderer does (``schedule=overlap``) or only once the renderer is done
   (``schedule=sequential``: lower latency, the renderer alone on the cores);
3. render (the calling thread): retarget onto the avatar, rasterize, display and/or record.

Latency is measured from the moment a frame was captured to the moment its avatar frame was
shown or written. Keys (with a window): q quits, r takes the current face as neutral, s saves
a snapshot.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .animate import TURN_NOTE_DEG, AvatarPackage, expression_range, profile_options, turn_beyond, turn_range
from .retarget import LiveGaze, RetargetConfig, Retargeter
from .sources import DriveError


class Latest:
    """A one-slot mailbox: ``put`` overwrites, ``get`` waits for something newer than last time.

    ``wait_taken`` lets a producer wait until its last item was taken, so that it does no
    work that would only be overwritten (backpressure from a slower consumer).
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._item, self._serial, self._taken, self.closed = None, 0, 0, False
        self.taken_at = 0.0  # perf_counter() of the last get() that returned an item

    def put(self, item) -> None:
        with self._cond:
            self._item, self._serial = item, self._serial + 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def get(self, seen: int, timeout: float = 0.5):
        """``(item, serial)`` newer than ``seen``, or ``(None, seen)`` when closed or timed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._serial > seen or self.closed, timeout)
            if self._serial > seen:
                self._taken, self.taken_at = self._serial, time.perf_counter()
                self._cond.notify_all()
                return self._item, self._serial
            return None, seen

    def wait_taken(self, timeout: float = 0.5) -> bool:
        """Wait until the newest item was taken by ``get`` (True), or the timeout / close (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._taken >= self._serial or self.closed, timeout) and not self.closed


def _recent(ms: list, n: int = 8) -> float:
    """Median of the last ``n`` stage timings in ms (0 before any)."""
    return float(np.median(ms[-n:])) if ms else 0.0


@dataclass
class LiveStats:
    # wait: the renderer idle between frames, waiting for a tracked one
    stage_ms: dict = field(default_factory=lambda: {"capture": [], "track": [], "render": [], "wait": []})
    latency_ms: list = field(default_factory=list)
    captured: int = 0
    shown: int = 0
    no_face: int = 0
    several_faces: int = 0
    stop_reason: str = ""
    notes: list = field(default_factory=list)
    identity: object = None  # the BackgroundIdentity of the session, if any
    body: object = None  # the OnlineTorso moving an avatar's shoulders, if any
    turn_beyond_deg: float = 0.0  # how far the shown head turned beyond the avatar's trained turns (not held)
    render_threads: int = 0  # the renderer's thread count (live_render_threads)

    def report(self, seconds: float) -> dict:
        lat = np.array(self.latency_ms) if self.latency_ms else np.zeros(1)
        return {
            "frames_captured": self.captured, "frames_shown": self.shown,
            "frames_dropped": max(0, self.captured - self.shown), "frames_without_face": self.no_face,
            "fps": round(self.shown / max(seconds, 1e-9), 2), "seconds": round(seconds, 2),
            "latency_ms": {"mean": round(float(lat.mean()), 1), "p95": round(float(np.percentile(lat, 95)), 1)},
            "stage_ms": {k: round(float(np.median(v)), 2) if v else None for k, v in self.stage_ms.items()},
            "stop_reason": self.stop_reason,
            "render_threads": self.render_threads,
            "driver_identity": self._identity(),
            "torso": None if self.body is None else {"frames_without_shoulders": self.body.missing,
                                                     "moved": self.body.value is not None},
            "notes": self.notes + ([f"{self.several_faces} frame(s) showed more than one face; the largest drove "
                                    "the avatar"] if self.several_faces else [])
                     + (list(self.identity.notes) if self.identity is not None else [])
                     + ([f"the driver turned the head up to {self.turn_beyond_deg:.0f} degrees beyond the turns the avatar "
                         "was trained on: there its hair, glasses and cheeks may show torn patches; "
                         "retarget.turn_margin_deg=10 holds the turn near the trained ones"]
                        if self.turn_beyond_deg > TURN_NOTE_DEG else []),
        }

    def _identity(self) -> dict | None:
        ident = self.identity
        if ident is None:
            return None
        if ident.result is None:
            return {"estimated": False, "started": ident.started, "frames_collected": len(ident.frames)}
        out = {"estimated": True, "after_face_frames": ident.started_at, **ident.result.summary(),
               "refinements": ident.refinements}
        if ident.refinements:  # the latest estimate above; the first, light one here
            out["first"] = ident.first.summary() if ident.first is not None else None
            out["refined_after_face_frames"] = ident.refined_at[: ident.refinements]
        return out


def open_camera(source):
    """``cv2.VideoCapture`` for a webcam index (int or digit string) or a video file; clear error if it fails."""
    import cv2  # noqa: PLC0415

    is_index = isinstance(source, int) or (isinstance(source, str) and source.isdigit())
    cap = cv2.VideoCapture(int(source) if is_index else str(source))
    if not cap.isOpened():
        what = f"webcam index {source}" if is_index else f"video {source}"
        raise DriveError(f"cannot open {what}: " + ("is a camera connected and free?" if is_index else
                                                     "does the file exist and is it a video?"))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    return cap, (not is_index), fps if fps > 0 else 30.0


SCHEDULES = ("overlap", "sequential")  # run_live's choices


def live_render_threads(setting, schedule: str, device: torch.device, cores: int | None = None) -> int:
    """The renderer's thread count for ``avatar live render_threads=SETTING``: a positive number as
    is; ``auto``: on a CPU with the ``overlap`` schedule one core fewer than the machine has (at least
    one), since the tracker works on the next frame meanwhile and a parallel region whose threads
    share a core with it waits for it (on 2 cores: 1 thread, measured faster and with lower latency,
    see the README); otherwise torch's count (all cores by default)."""
    if setting in (None, "auto"):
        if device.type == "cpu" and schedule == "overlap":
            return max(1, (cores or os.cpu_count() or 1) - 1)
        return torch.get_num_threads()
    try:
        threads = int(setting)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1:
        raise ValueError(f"live render_threads={setting!r}: use a positive number of threads or auto")
    return threads


def run_live(package: AvatarPackage, source, display: bool = True, out: str | None = None, size: int | None = None,
             max_frames: int | None = None, retarget_cfg: RetargetConfig | None = None, snapshot_dir: str = ".",
             renderer: dict | None = None, driver_identity: bool = True, pose_every: int = 3,
             schedule: str = "overlap", render_threads: int | str | None = "auto") -> dict:
    """Run the live loop until the source ends, ``q`` or ``max_frames``; returns the report.

    The driver starts with the mean face; with ``driver_identity`` its own identity is fitted
    in the background from its first usable frames (:class:`BackgroundIdentity`, in a process
    of its own) and swapped in when ready: the fit restarts from that frame, which becomes the
    head-pose reference, and the running neutral starts over. An avatar with a torso follows the
    driver's shoulders, detected (MediaPipe pose) on every ``pose_every``-th tracked frame and held
    between: shoulders move slowly, and the detection costs about three times the face's.

    ``schedule``: when the tracker starts on the next frame. ``sequential``: once the renderer has
    finished the frame it took, so the renderer has every core to itself while it works (its
    parallel loops lose badly to a second busy thread on a small CPU); ``overlap``: already
    while the renderer works, timed to finish about when it does. ``render_threads``: the
    renderer's thread count (:func:`live_render_threads`; ``auto`` leaves a core to the tracker
    under ``overlap`` on a CPU); it is reported as ``render_threads``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"live schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    render_threads = live_render_threads(render_threads, schedule, package.device)
    import cv2  # noqa: PLC0415

    from avatar.io.video import VideoWriter  # noqa: PLC0415
    from ..landmarks import FaceMeshDetector  # noqa: PLC0415
    from avatar.tracking.embedding import load_embedding  # noqa: PLC0415
    from ..tracking.landmark_model import LandmarkModel  # noqa: PLC0415
    from ..tracking.identity import BackgroundIdentity  # noqa: PLC0415
    from ..tracking.online import FrameTracker, ImplausibleFrame  # noqa: PLC0415
    from ..landmarks.pose import PoseDetector  # noqa: PLC0415
    from ..tracking.gaze import lids_open  # noqa: PLC0415
    from .torso import OnlineTorso, TorsoGlide  # noqa: PLC0415

    cap, is_file, fps = open_camera(source)
    stats, stop = LiveStats(), threading.Event()
    rendered = threading.Event()  # sequential schedule: the renderer is done with the frame it took
    frames_box, tracked_box = Latest(), Latest()
    model_cpu = package.model.to("cpu")
    lm = LandmarkModel.from_model(model_cpu, load_embedding(model_cpu)).to(torch.device("cpu"), torch.float64)
    package.model.to(package.device)

    def capture() -> None:
        t_next = time.perf_counter()
        while not stop.is_set() and (max_frames is None or stats.captured < max_frames):
            t0 = time.perf_counter()
            ok, bgr = cap.read()
            if not ok:
                stats.stop_reason = "the video ended" if is_file else "the camera stopped delivering frames (unplugged?)"
                break
            stats.stage_ms["capture"].append((time.perf_counter() - t0) * 1e3)
            stats.captured += 1
            frames_box.put((time.perf_counter(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            if is_file:  # a file stands in for a camera: deliver at its frame rate
                t_next += 1.0 / fps
                time.sleep(max(0.0, t_next - time.perf_counter()))
        else:
            stats.stop_reason = stats.stop_reason or ("max_frames reached" if not stop.is_set() else "quit")
        frames_box.close()

    def track() -> None:
        # The fitter's matrices are tiny: one thread, leaving the other cores' OpenMP threads to
        # the renderer (this sets only this thread's count; the renderer's is already set).
        torch.set_num_threads(1)
        seen, tracker, identity, version, n_tracked = 0, None, None, 0, 0
        body, torso = None, None  # avatars with a torso: the driver's pose (MediaPipe) moves it (OnlineTorso)
        with FaceMeshDetector(video=True, max_faces=2) as detector, \
                (PoseDetector(video=True) if package.has_torso else contextlib.nullcontext()) as poser:
            while not stop.is_set():
                item, seen = frames_box.get(seen)
                if item is None:
                    if frames_box.closed:
                        break
                    continue
                t_cap, rgb = item
                t0 = time.perf_counter()
                if tracker is None:
                    h, w = rgb.shape[:2]
                    tracker = FrameTracker.mean_face(lm, w, h)
                    identity = BackgroundIdentity(lm, w, h) if driver_identity else None
                    stats.identity = identity
                    if poser is not None:
                        body = OnlineTorso(package.gaussians.torso_rest.detach().cpu().numpy(),
                                           float(package.state.get("shoulder_width", 0.36)), w, h)
                        stats.body = body
                if body is not None and n_tracked % max(1, pose_every) == 0:
                    found_pose = poser.detect(rgb)
                    torso = body(None if found_pose is None else found_pose.landmarks)
                n_tracked += 1
                faces = detector.detect(rgb)  # largest first
                result = None
                if len(faces) > 1:
                    stats.several_faces += 1
                if faces:
                    points = faces[0].landmarks[:, :2]
                    target = torch.as_tensor(points, dtype=torch.float64)
                    found = identity.add(points) if identity is not None else None
                    shift = None
                    if found is not None and found.refinement and tracker.R is not None:
                        # A refined identity: the same head, measured a little differently. This
                        # frame fitted both ways gives the shift of its measured position, which
                        # the renderer takes off the head-pose reference: the avatar does not jump.
                        try:
                            shift = -tracker(target)[2].numpy()
                        except ImplausibleFrame:
                            shift = None
                    if found is not None:  # the driver's own face from here on
                        tracker.set_identity(found.shape, found.focal, found.landmark_offset)
                        tracker.reset()
                        if not found.refinement or shift is None:
                            version += 1  # a new identity (or no frame to rebase on): a new reference
                    try:
                        e, r, t = tracker(target)
                        if shift is not None:
                            shift = shift + t.numpy()
                        gaze = None if tracker.gaze is None or not lids_open(points) else tracker.gaze.numpy()
                        result = (e.numpy(), r.numpy(), t.numpy(), version, torso, shift, gaze)
                    except ImplausibleFrame:
                        stats.no_face += 1
                else:
                    stats.no_face += 1
                stats.stage_ms["track"].append((time.perf_counter() - t0) * 1e3)
                rendered.clear()
                tracked_box.put((t_cap, rgb, result))
                if schedule == "sequential":  # the next frame only once this one is on screen
                    while not stop.is_set() and not rendered.wait(0.1) and not tracked_box.closed:
                        pass
                    continue
                # Track the next frame only once the renderer took this one: a result it would
                # never show is wasted CPU that the renderer needs (the capture keeps only the
                # newest frame meanwhile, so nothing queues up). Then wait until the renderer is
                # about a tracking time from done, so the frame tracked next is as fresh as it
                # can be when the renderer takes it (lower latency at the same frame rate).
                while not stop.is_set() and not tracked_box.wait_taken(0.1) and not tracked_box.closed:
                    pass
                ready_at = tracked_box.taken_at + _recent(stats.stage_ms["render"]) / 1e3
                time.sleep(max(0.0, min(0.5, ready_at - 1.2 * _recent(stats.stage_ms["track"]) / 1e3 - time.perf_counter())))
        if identity is not None:
            identity.close()
        tracked_box.close()

    threads = [threading.Thread(target=capture, daemon=True), threading.Thread(target=track, daemon=True)]
    for th in threads:
        th.start()

    ref_r, ref_t = package.reference_pose_or(np.zeros(3, np.float32), np.array([0, 0, -0.5], np.float32))
    trained_turns = turn_range(package)
    holding = retarget_cfg is not None and retarget_cfg.turn_margin_deg is not None
    retargeter = Retargeter(ref_r, ref_t, package.expression_names, retarget_cfg, expression_range(package),
                            **profile_options(package), turn_range=trained_turns if holding else None)
    version = 0
    turn_eyes = bool(retargeter.cfg.eyes) and package.gaze_profile() is not None
    live_gaze = LiveGaze(retargeter.cfg)
    K, width, height = package.camera(size)
    viewmat = package.state["viewmat"].to(package.device, torch.float32)
    last = None
    glide = TorsoGlide(pose_every)
    stats.render_threads = render_threads
    t_start, seen = time.perf_counter(), 0
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, torch.get_num_threads())  # the caller's count back at the end
        torch.set_num_threads(render_threads)
        writer = stack.enter_context(VideoWriter(out, fps=fps)) if out else None
        stack.callback(_shutdown, stop, threads, cap, display)
        t_idle = None
        while True:
            item, seen = tracked_box.get(seen)
            if item is None:
                if tracked_box.closed:
                    break
                continue
            t_cap, rgb, result = item
            t0 = time.perf_counter()
            if t_idle is not None:
                stats.stage_ms["wait"].append((t0 - t_idle) * 1e3)
            if result is None and last is None:
                rendered.set()
                continue  # no face yet: nothing to hold
            if result is None:  # no face: hold the last pose
                result = last[:5] + (None, last[6])
            e, r, t, v, torso, shift, driver_gaze = last = result
            torso = glide(torso)  # between the held detections: no steps
            if v != version:  # a new driver identity: its expressions read differently from here on
                version = v
                retargeter.restart_statistics()
                live_gaze.restart()
            elif shift is not None:  # the same identity refined: where the head is measured moved by shift
                retargeter.shift_reference(shift)
            expression, rotation, translation = retargeter(e, r, t, t_cap - t_start)
            if trained_turns is not None and not holding and stats.shown % 10 == 0:  # for the report's note
                stats.turn_beyond_deg = max(stats.turn_beyond_deg, turn_beyond(rotation, ref_r, trained_turns))
            # While the driver's identity is fitted in its worker process (one core), the renderer runs
            # on one thread: a parallel region whose second thread shares its core with the fit waits
            # for it, and the frame takes longer than on one thread alone.
            threads = 1 if stats.identity is not None and stats.identity.running else render_threads
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            gaze = live_gaze(driver_gaze, t_cap - t_start) if turn_eyes else None
            frame, _, _ = package.render_frame(expression, rotation, translation, viewmat, K, width, height, renderer,
                                               torso=torso, gaze=gaze)
            if writer is not None:
                writer.write(frame)
            stats.stage_ms["render"].append((time.perf_counter() - t0) * 1e3)
            if display:
                cv2.imshow("avatar live (q quit, r neutral, s snapshot)", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                key = cv2.waitKey(1) & 0xFF
                if key == ord("q"):
                    stats.stop_reason = "quit"
                    break
                if key == ord("r"):
                    retargeter.set_neutral(e, r, t)
                    live_gaze.set_neutral(driver_gaze)
                    stats.notes.append(f"neutral taken from the face at frame {stats.shown} (key r)")
                if key == ord("s"):
                    snap = Path(snapshot_dir) / f"snapshot_{int(time.time())}.png"
                    cv2.imwrite(str(snap), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            stats.shown += 1
            stats.latency_ms.append((time.perf_counter() - t_cap) * 1e3)
            rendered.set()
            t_idle = time.perf_counter()
    return stats.report(time.perf_counter() - t_start)


def _shutdown(stop: threading.Event, threads, cap, display: bool) -> None:
    import cv2  # noqa: PLC0415

    stop.set()
    for th in threads:
        th.join(timeout=5)
    cap.release()
    if display:
        cv2.destroyAllWindows()

"""Synthetic ground-truth captures: a textured ICT-FaceKit head (or another head model, flat
coloured) under a scripted performance.

:func:`make_synthetic_capture` writes a capture folder (:mod:`avatar.io.capture`) that
every later stage reads like a real one, plus the parameters that made it:

- ``frames/``: the head (a seeded random identity, the face texture of
  :mod:`avatar.synthetic.texture` for ICT or a flat skin colour for other models such as
  FLAME, Lambert-shaded) rendered with a fixed pinhole camera over a softly textured background;
- ``masks/``: the rendered silhouette (exactly the pixels the mesh covers; with
  ``supersample`` > 1, the share of each pixel it covers);
- ``landmarks.npz``: the *real* MediaPipe face mesh run on every rendered frame (frames
  where it finds nothing have ``face_present = False`` and are flagged "no face");
- ``meta.json``: fps 25, source ``"synthetic:<seed>"``;
- ``ground_truth.npz``: ``model`` ("ict", "flame"), ``parts`` (part names kept), ``shape [S]``,
  ``expression [F, E]``, ``expression_names [E]``, ``rotation [F, 3]`` (axis-angle about
  the model origin, radians), ``translation [F, 3]`` (metres), ``euler_deg [F, 3]`` (yaw,
  pitch, roll: ``R = Ry(yaw) Rx(pitch) Rz(roll)`` in model axes, +y up, +z toward the
  camera; pitch > 0 looks down), ``K [3, 3]``, ``viewmat [4, 4]`` (OpenCV world-to-camera),
  ``landmarks68 [F, 68, 2]`` (the model's iBUG-68 landmarks projected, pixels; ``[F, L, 2]`` with
  the model's own embedding, ``L = 0`` without one), ``fps``,
  ``width``, ``height``, ``valid [F]`` (all True); the mesh of frame i is
  ``model(shape, expression[i], rotation[i], translation[i])`` seen through ``viewmat``/``K``.
  The keys are a superset of ``tracking.npz``'s, so tracking results compare key by key;
- ``synthetic_report.json``: frames, MediaPipe detection rate, timings.

The performance (:func:`scripted_sequence`) is defined on normalised time, so any frame
count plays the whole script: yaw +-30 deg (``yaw_deg``), pitch +-15 deg, a little roll, small
translations, jaw opening, smiles, brow raises, blinks and their combinations, all smooth.
A model without ARKit-named blendshapes plays :data:`COMPONENT_EVENTS` on its first
expression components instead (signed, as PCA components are).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avatar.geometry.cameras import intrinsics, look_at
from avatar.io.capture import CaptureMeta, CaptureWriter, Landmarks
from avatar.io.reports import write_json
from avatar.models.engine import rigid_transform
from avatar.render import render_mesh
from avatar.synthetic.texture import atlas_uvs, load_or_build_texture

log = logging.getLogger(__name__)

GROUND_TRUTH_FILE = "ground_truth.npz"
REPORT_FILE = "synthetic_report.json"

BLINK = ("eyeBlink_L", "eyeBlink_R")
SMILE = ("mouthSmile_L", "mouthSmile_R")
BROWS = ("browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R")

# Expression events on normalised time 0..1: (names, centre, half width, plateau half width, peak).
EXPRESSION_EVENTS: tuple[tuple[tuple[str, ...], float, float, float, float], ...] = (
    (("jawOpen",), 0.17, 0.08, 0.03, 0.8),
    (SMILE, 0.34, 0.08, 0.03, 0.85),
    (BROWS, 0.50, 0.08, 0.03, 0.8),
    (("jawOpen",), 0.68, 0.07, 0.02, 0.5),  # open smile
    (SMILE, 0.68, 0.07, 0.02, 0.6),
    (("jawOpen",), 0.86, 0.06, 0.02, 0.65),  # surprise: jaw and brows
    (BROWS, 0.86, 0.06, 0.02, 0.7),
    (("mouthSmile_L",), 0.94, 0.05, 0.015, 0.7),  # lopsided smile
    (BLINK, 0.08, 0.025, 0.008, 1.0),
    (BLINK, 0.42, 0.025, 0.008, 1.0),
    (BLINK, 0.60, 0.025, 0.008, 0.9),
    (BLINK, 0.78, 0.025, 0.008, 1.0),
)
# Eye movements (SyntheticConfig.gaze; off by default, so the standard captures stay as they
# are): a look to the subject's left, to the right, up and down, between the blinks.
GAZE_EVENTS: tuple[tuple[tuple[str, ...], float, float, float, float], ...] = (
    (("eyeLookOut_L", "eyeLookIn_R"), 0.25, 0.05, 0.02, 0.7),
    (("eyeLookIn_L", "eyeLookOut_R"), 0.51, 0.05, 0.02, 0.7),
    (("eyeLookUp_L", "eyeLookUp_R"), 0.70, 0.04, 0.015, 0.6),
    (("eyeLookDown_L", "eyeLookDown_R"), 0.95, 0.04, 0.015, 0.6),
)
# The same kind of script on expression components by index (models whose expressions are
# unnamed PCA components, e.g. FLAME): (component, centre, half width, plateau, peak); an
# index beyond the model's components wraps around.
COMPONENT_EVENTS: tuple[tuple[int, float, float, float, float], ...] = (
    (0, 0.17, 0.08, 0.03, 0.8),
    (1, 0.34, 0.08, 0.03, 0.8),
    (3, 0.50, 0.08, 0.03, 0.8),
    (0, 0.68, 0.07, 0.02, 0.5),
    (1, 0.68, 0.07, 0.02, 0.6),
    (4, 0.86, 0.06, 0.02, 0.7),
    (1, 0.94, 0.05, 0.015, -0.4),
    (2, 0.08, 0.025, 0.008, 0.9),
    (2, 0.42, 0.025, 0.008, 0.9),
    (5, 0.60, 0.06, 0.02, 0.6),
)
SKIN = (0.80, 0.62, 0.52)  # flat albedo of models without a texture
EYEBALL = (0.90, 0.88, 0.85)


@dataclass
class SyntheticConfig:
    """Options of :func:`make_synthetic_capture`.

    Attributes:
        n_frames: frames to render (the whole script plays whatever the count).
        resolution: width = height in pixels.
        seed: seeds the identity, the background and the texture noise.
        fps: frame rate written to ``meta.json``.
        focal: focal length in image widths.
        distance: camera distance from the model origin, metres (head ~55% of the frame).
        target_y: height (metres, model axes) of the point the camera looks at.
        shape_std: standard deviation of the random identity coefficients (clipped at 2 std).
        ambient, light_dir: Lambert shading; ``light_dir`` in camera axes, toward the light.
        texture_size: texels per atlas tile; cache_dir: texture cache (default: user cache).
        batch_size: frames rendered at once.
        frame_format: "jpg" or "png" frames.
        texture: "photo" (the portrait texture; ICT only), "flat" (:data:`SKIN`, eyeballs
            :data:`EYEBALL` when the model has eyeball parts) or "auto" (photo for ICT, else flat).
        yaw_deg: how far the head turns each way in the script (:func:`scripted_sequence`).
        gaze: also move the eyes (:data:`GAZE_EVENTS`). ICT's ``eyeLook*`` shapes reshape the
            lids but leave the eyeballs still, so each eyeball is also turned about its centre
            by the angles the trackers read from those coefficients
            (:func:`avatar.tracking.landmark_model.gaze_rotations`). ICT only.
        supersample: render ``supersample`` times larger each way and average down, as a
            camera's pixels integrate the light (1: one sample per pixel, the texture aliases
            where it is finer than the pixels).
    """

    n_frames: int = 120
    resolution: int = 512
    seed: int = 0
    fps: float = 25.0
    focal: float = 1.35
    distance: float = 0.5
    target_y: float = 0.01
    shape_std: float = 0.5
    ambient: float = 0.5
    light_dir: tuple[float, float, float] = (-0.3, -0.45, -1.0)
    texture_size: int = 512
    cache_dir: str | None = None
    batch_size: int = 8
    frame_format: str = "jpg"
    texture: str = "auto"
    yaw_deg: float = 30.0
    supersample: int = 1
    gaze: bool = False


@dataclass
class Performance:
    """Per-frame parameters: ``expression [F, E]``, ``rotation [F, 3]`` axis-angle (radians),
    ``translation [F, 3]`` metres, ``euler_deg [F, 3]`` (yaw, pitch, roll)."""

    expression: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    euler_deg: np.ndarray


def _bump(t: np.ndarray, centre: float, half_width: float, plateau: float) -> np.ndarray:
    """1 within ``plateau`` of ``centre``, smoothly 0 at ``half_width``."""
    x = np.clip((np.abs(t - centre) - plateau) / max(half_width - plateau, 1e-6), 0.0, 1.0)
    return 1.0 - x * x * (3 - 2 * x)


def component_events(expression_names: tuple[str, ...]):
    """:data:`COMPONENT_EVENTS` with each component index replaced by its name."""
    if not expression_names:
        raise ValueError("the model has no expressions to script")
    n = len(expression_names)
    return tuple(((expression_names[k % n],), *rest) for k, *rest in COMPONENT_EVENTS)


def scripted_sequence(n_frames: int, expression_names: tuple[str, ...], events=None,
                      yaw_deg: float = 30.0) -> Performance:
    """The scripted performance sampled at ``n_frames`` frames (see the module doc).

    ``events``: ``(names, centre, half width, plateau half width, peak)`` on normalised time;
    default :data:`EXPRESSION_EVENTS` when ``expression_names`` has any ARKit name they use,
    else :func:`component_events`. Overlapping events keep the value of larger magnitude.
    Short sequences widen the events to at least ~1.5 frames so each peak is sampled.
    ``yaw_deg``: the amplitude of the head's turn left and right.
    """
    if n_frames < 2:
        raise ValueError(f"a synthetic sequence needs at least 2 frames, got {n_frames}")
    if events is None:
        arkit = any(n in expression_names for names, *_ in EXPRESSION_EVENTS for n in names)
        events = EXPRESSION_EVENTS if arkit else component_events(tuple(expression_names))
    t = np.linspace(0.0, 1.0, n_frames)
    index = {n: i for i, n in enumerate(expression_names)}
    expression = np.zeros((n_frames, len(expression_names)), np.float32)
    for names, centre, half_width, plateau, peak in events:
        plateau = max(plateau, 0.6 / (n_frames - 1))
        half_width = max(half_width, plateau + 1.5 / (n_frames - 1))
        for name in names:
            if name not in index:
                raise ValueError(f"the model has no expression '{name}'; it has {', '.join(expression_names)}")
            col = index[name]
            value = peak * _bump(t, centre, half_width, plateau)
            expression[:, col] = np.where(np.abs(value) > np.abs(expression[:, col]), value, expression[:, col])
    two_pi = 2 * math.pi
    yaw = yaw_deg * np.sin(two_pi * t)
    pitch = 15.0 * np.sin(2 * two_pi * t + 0.5)
    roll = 6.0 * np.sin(1.5 * two_pi * t + 1.0)
    euler = np.stack((yaw, pitch, roll), axis=1)
    translation = np.stack(
        (0.015 * np.sin(1.5 * two_pi * t), 0.01 * np.sin(2 * two_pi * t + 1.0), 0.02 * np.sin(two_pi * t + 0.5)),
        axis=1,
    )
    return Performance(expression, euler_to_axis_angle(euler), translation.astype(np.float32), euler.astype(np.float32))


def euler_to_axis_angle(euler_deg: np.ndarray) -> np.ndarray:
    """Axis-angle ``[..., 3]`` (radians) of ``R = Ry(yaw) Rx(pitch) Rz(roll)``, angles in degrees."""
    from avatar.geometry.rotations import euler_to_axis_angle as euler_rad_to_axis_angle  # noqa: PLC0415

    e = torch.as_tensor(np.radians(np.asarray(euler_deg, np.float64)))
    return euler_rad_to_axis_angle(e[..., 0], e[..., 1], e[..., 2]).numpy().astype(np.float32)


def camera(config: SyntheticConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``K [3, 3]`` and world-to-camera ``viewmat [4, 4]``: on +z, looking at ``(0, target_y, 0)``."""
    R = config.resolution
    K = intrinsics(config.focal * R, config.focal * R, R / 2, R / 2)
    target = torch.tensor([0.0, config.target_y, 0.0])
    eye = target + torch.tensor([0.0, 0.0, config.distance])
    return K, look_at(eye, target, torch.tensor([0.0, 1.0, 0.0]))


def random_identity(num_shape: int, std: float, seed: int) -> np.ndarray:
    """``[num_shape]`` identity coefficients, normal with ``std``, clipped at 2 std."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.0, std, num_shape), -2 * std, 2 * std).astype(np.float32)


def background_image(resolution: int, seed: int) -> np.ndarray:
    """``[R, R, 3]`` float32 backdrop: a vertical blue-grey gradient with soft blotches."""
    import cv2  # noqa: PLC0415

    rng = np.random.default_rng(seed + 1)
    rows = np.linspace(0.0, 1.0, resolution, dtype=np.float32)[:, None, None]
    top, bottom = np.array([0.62, 0.66, 0.72], np.float32), np.array([0.42, 0.45, 0.50], np.float32)
    image = top * (1 - rows) + bottom * rows
    grey = rng.normal(0, 0.05, (6, 6, 1)) + rng.normal(0, 0.012, (6, 6, 3))  # mostly brightness
    blotches = cv2.resize(grey.astype(np.float32), (resolution, resolution), interpolation=cv2.INTER_CUBIC)
    return np.clip(image + blotches, 0.0, 1.0)


@dataclass
class SyntheticCapture:
    """What :func:`make_synthetic_capture` made: the folder and its report."""

    root: Path
    report: dict = field(default_factory=dict)

    @property
    def detection_rate(self) -> float:
        return float(self.report["mediapipe_detection_rate"])


def flat_colors(model) -> torch.Tensor:
    """``[V, 3]`` albedo of an untextured model: :data:`SKIN`, eyeball parts :data:`EYEBALL`."""
    colors = torch.tensor(SKIN).expand(model.num_vertices, 3).clone()
    for name, part in model.parts.items():
        if "eyeball" in name:
            colors[part.vertices.cpu()] = torch.tensor(EYEBALL)
    return colors


def render_frames(model, config: SyntheticConfig, shape: np.ndarray, perf: Performance,
                  texture: torch.Tensor | None):
    """Yield ``(first index, images [B, R, R, 3] uint8, masks [B, R, R] float32 in 0..1)`` batch
    by batch (masks are 0 or 1 unless ``config.supersample`` > 1); ``texture``: the atlas of
    :mod:`avatar.synthetic.texture`, or None for :func:`flat_colors`."""
    s = max(1, int(config.supersample))
    R = config.resolution
    fine = dataclasses.replace(config, resolution=R * s)  # K scales exactly: pixel centres at k + 0.5
    K, viewmat = camera(fine)
    if texture is not None:
        uvs, uv_faces = atlas_uvs(model)
        albedo = dict(texture=texture, uvs=uvs, uv_faces=uv_faces)
    else:
        albedo = dict(colors=flat_colors(model))
    backdrop = torch.as_tensor(background_image(R * s, config.seed))
    for start in range(0, len(perf.expression), config.batch_size):
        sl = slice(start, start + config.batch_size)
        with torch.no_grad():
            expression, rotation, translation = (torch.as_tensor(x[sl]) for x in
                                                 (perf.expression, perf.rotation, perf.translation))
            if config.gaze:  # the eyes turned in the head's frame, then the head posed
                verts = model(shape=torch.as_tensor(shape)[None], expression=expression).vertices
                verts = rigid_transform(turned_eyes(model, verts, expression), rotation, translation)
            else:
                verts = model(shape=torch.as_tensor(shape)[None], expression=expression, rotation=rotation,
                              translation=translation).vertices
            out = render_mesh(
                verts, model.faces, K, R * s, R * s, viewmat, **albedo,
                ambient=config.ambient, light_dir=config.light_dir,
            )
            image = torch.where(out.mask[..., None], out.image, backdrop)
            mask = out.mask.to(image.dtype)
            if s > 1:  # box filter: each pixel the mean of its s x s samples
                B = image.shape[0]
                image = image.reshape(B, R, s, R, s, 3).mean(dim=(2, 4))
                mask = mask.reshape(B, R, s, R, s).mean(dim=(2, 4))
        yield start, (image * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy(), mask.numpy()


def _gaze_profile(model):
    """The model's tracking profile when it has gaze blendshapes and eyeball parts, else ValueError."""
    from avatar.models.profile import TrackingProfileError, require_profile  # noqa: PLC0415

    try:
        profile = require_profile(model)
    except TrackingProfileError as exc:
        raise ValueError(f"gaze=True needs a model with a tracking profile: {exc}") from exc
    if profile.gaze is None or profile.eyeball_parts is None:
        missing = "gaze blendshapes" if profile.gaze is None else "eyeball parts"
        raise ValueError(f"gaze=True needs gaze blendshapes and eyeball parts; model '{model.name}' has no "
                         f"{missing}: use ICT or gaze=False")
    return profile


def turned_eyes(model, vertices: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
    """``vertices [B, V, 3]`` (model space, unposed) with each eyeball part turned about its
    centre by the gaze the trackers read from ``expression [B, E]``'s ``eyeLook*`` coefficients
    (:func:`avatar.tracking.landmark_model.blendshape_gaze_angles`). ValueError for a model whose
    tracking profile has no gaze blendshapes or no eyeball parts."""
    from avatar.models.eyes import turn_eyeballs  # noqa: PLC0415
    from avatar.tracking.landmark_model import blendshape_gaze_angles  # noqa: PLC0415

    profile = _gaze_profile(model)
    names = list(model.expression_names)
    yaw, pitch = blendshape_gaze_angles(profile.gaze, names.index, expression.to(vertices.dtype))
    return turn_eyeballs(model, profile.eyeball_parts, vertices, torch.stack((yaw, pitch), -1))


def make_synthetic_capture(
    out_dir: str | os.PathLike, config: SyntheticConfig | None = None, model=None, progress: bool = True
) -> SyntheticCapture:
    """Render the scripted performance and write the capture folder (module doc) to ``out_dir``.

    ``model``: the head model (default: ``avatar.models.load("ict")``, found via ``AVATAR_ASSETS``);
    ICT gets the portrait texture, other models (FLAME) a flat skin colour (``config.texture``).
    Returns the folder and the contents of its ``synthetic_report.json``.
    """
    config = config or SyntheticConfig()
    t_start = time.perf_counter()
    if model is None:
        import avatar.models  # noqa: PLC0415

        model = avatar.models.load("ict")
    if config.texture not in ("auto", "photo", "flat"):
        raise ValueError(f"texture must be 'auto', 'photo' or 'flat', got {config.texture!r}")
    photo = config.texture == "photo" or (config.texture == "auto" and model.name == "ict")
    t0 = time.perf_counter()
    head_texture = load_or_build_texture(model, config.cache_dir, config.texture_size) if photo else None
    texture_seconds = time.perf_counter() - t0
    events = None
    if config.gaze:
        _gaze_profile(model)  # refuses a model without gaze blendshapes or eyeballs before any work
        events = EXPRESSION_EVENTS + GAZE_EVENTS
    perf = scripted_sequence(config.n_frames, model.expression_names, events=events, yaw_deg=config.yaw_deg)
    shape = random_identity(model.num_shape, config.shape_std, config.seed)
    F = config.n_frames
    writer = CaptureWriter(out_dir, frame_format=config.frame_format)
    texture = head_texture.as_tensor() if head_texture is not None else None
    landmarks, timings = _render_and_detect(writer, model, config, shape, perf, texture, progress)
    present = landmarks.face_present
    K, viewmat = camera(config)
    _write_ground_truth(Path(out_dir), model, config, shape, perf, K, viewmat)
    meta = CaptureMeta(
        source=f"synthetic:{config.seed}", fps=config.fps, width=config.resolution, height=config.resolution,
        n_frames=F, timestamps=[i / config.fps for i in range(F)],
        flagged={int(i): "no face" for i in np.flatnonzero(~present)},
        extra={"synthetic": True, "model": model.name, "ground_truth": GROUND_TRUTH_FILE,
               "texture": "skimage.data.astronaut (public domain)" if photo else "flat skin colour"},
    )
    writer.finish(meta, landmarks)
    report = {
        "frames": F,
        "resolution": config.resolution,
        "supersample": config.supersample,
        "seed": config.seed,
        "gaze": config.gaze,
        "mediapipe_detected": int(present.sum()),
        "mediapipe_detection_rate": float(present.mean()),
        "missed_frames": np.flatnonzero(~present).tolist(),
        "texture_seconds": round(texture_seconds, 3),
        "texture_from_cache": head_texture.from_cache if head_texture is not None else None,
        "render_seconds_per_frame": round(timings["render"] / F, 4),
        "mediapipe_seconds_per_frame": round(timings["mediapipe"] / F, 4),
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    write_json(Path(out_dir) / REPORT_FILE, report)
    log.info("synthetic capture: %d frames, MediaPipe found %d (%.1f%%), %.1f s", F, present.sum(),
             100 * present.mean(), report["seconds"])
    return SyntheticCapture(Path(out_dir), report)


def _render_and_detect(
    writer: CaptureWriter, model, config: SyntheticConfig, shape, perf: Performance, texture, progress: bool
) -> tuple[Landmarks, dict[str, float]]:
    """Render, write frames and masks, run MediaPipe (video mode) on each frame, in order."""
    from tqdm import tqdm  # noqa: PLC0415

    from avatar.landmarks import FaceMeshDetector  # noqa: PLC0415

    F = config.n_frames
    face = np.zeros((F, 478, 3), np.float32)
    present = np.zeros(F, bool)
    timings = {"render": 0.0, "mediapipe": 0.0}
    with FaceMeshDetector(video=True, max_faces=1) as detector, \
            tqdm(total=F, desc="synthetic capture", unit="frame", disable=not progress) as bar:
        t0 = time.perf_counter()
        for start, images, masks in render_frames(model, config, shape, perf, texture):
            timings["render"] += time.perf_counter() - t0
            for k, (image, mask) in enumerate(zip(images, masks)):
                t1 = time.perf_counter()
                found = detector.detect(image)
                timings["mediapipe"] += time.perf_counter() - t1
                if found:
                    face[start + k], present[start + k] = found[0].landmarks, True
                writer.write_frame(start + k, image)
                writer.write_mask(start + k, (mask * 255.0 + 0.5).astype(np.uint8))
            bar.update(len(images))
            t0 = time.perf_counter()
    return Landmarks(face=face, face_present=present), timings


def _write_ground_truth(root: Path, model, config: SyntheticConfig, shape, perf: Performance, K, viewmat) -> None:
    from avatar.models.assets import atomic_savez  # noqa: PLC0415
    from avatar.synthetic.texture import project  # noqa: PLC0415

    with torch.no_grad():
        out = model(
            shape=torch.as_tensor(shape)[None], expression=torch.as_tensor(perf.expression),
            rotation=torch.as_tensor(perf.rotation), translation=torch.as_tensor(perf.translation),
        )
        if out.landmarks is not None:
            landmarks68 = project(out.landmarks, K, viewmat)[0].numpy()
        else:  # no landmark embedding (e.g. FLAME without its landmark file)
            landmarks68 = np.zeros((len(perf.expression), 0, 2), np.float32)
    atomic_savez(
        root / GROUND_TRUTH_FILE,
        model=np.array(model.name), parts=np.array(model.part_names), shape=shape,
        expression=perf.expression, expression_names=np.array(model.expression_names),
        rotation=perf.rotation, translation=perf.translation, euler_deg=perf.euler_deg,
        K=K.numpy(), viewmat=viewmat.numpy(), landmarks68=landmarks68.astype(np.float32),
        fps=np.float32(config.fps), width=np.array(config.resolution), height=np.array(config.resolution),
        valid=np.ones(len(perf.expression), bool),
    )


def load_ground_truth(root: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of ``ROOT/ground_truth.npz`` (see the module doc)."""
    path = Path(root) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {root} is not a synthetic capture (make one with "
                                "data_tools/make_synthetic_capture.py)")
    with np.load(path, allow_pickle=False) as z:
        return dict(z)


def preview_strip(root: str | os.PathLike, n: int = 5, height: int = 256) -> np.ndarray:
    """``[height, n * height, 3]`` uint8: ``n`` evenly spaced frames with their MediaPipe
    landmarks (green) and, when present, the ground-truth iBUG-68 landmarks (red)."""
    import cv2  # noqa: PLC0415

    from avatar.io.capture import Capture  # noqa: PLC0415

    cap = Capture(root)
    gt = load_ground_truth(root) if (Path(root) / GROUND_TRUTH_FILE).is_file() else None
    tiles = []
    for i in np.linspace(0, cap.n_frames - 1, n).round().astype(int):
        frame = np.ascontiguousarray(cap.load_frame(int(i)))
        s = max(1, frame.shape[0] // 256)
        if cap.landmarks.face_present[i]:
            for x, y, _ in cap.landmarks.face[i]:
                cv2.circle(frame, (int(x), int(y)), s, (0, 255, 0), -1)
        if gt is not None:
            for x, y in gt["landmarks68"][i]:
                cv2.circle(frame, (int(x), int(y)), s + 1, (255, 0, 0), -1)
        cv2.putText(frame, f"#{i}", (8, 24 * s), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * s, (255, 255, 255), s)
        tiles.append(cv2.resize(frame, (height, height), interpolation=cv2.INTER_AREA))
    return np.concatenate(tiles, axis=1)

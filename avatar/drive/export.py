"""A trained avatar's Gaussians at one pose, for splat viewers and engines: a 3DGS PLY
(:mod:`avatar.gaussians.ply`) and a compact ``.spz`` (:mod:`avatar.io.spz`) per pose.

Every exported file is in the frame of the canonical ``avatar.ply``: the model's world with
the head at its canonical pose (no rotation or translation), in metres, +x the subject's
left, +y up, +z out of the face (right-handed; the axes of OpenGL and three.js, which SPZ
uses too). A driven pose keeps the driver's head motion relative to the avatar's reference
pose (:func:`canonical_transform`): the reference pose lands on the canonical one. The
view-dependent colours are turned into world axes (:func:`avatar.render.sh.rotate_sh`), so a
viewer evaluates them as plain 3DGS does.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatar.io.reports import write_json
from ..gaussians.base import WorldGaussians
from ..gaussians.package import AvatarPackage
from ..gaussians.ply import save_ply
from ..geometry.rotations import euler_to_axis_angle, matrix_to_quaternion, quaternion_multiply
from ..io.spz import write_spz
from ..render.sh import rotate_sh

FORMATS = ("ply", "spz")


@dataclass
class Splats:
    """Gaussians of one pose, ready to write: world space, SH in world axes."""

    means: Tensor  # [N, 3] metres
    quats: Tensor  # [N, 4] (w, x, y, z)
    scales: Tensor  # [N, 3] standard deviations, metres
    opacities: Tensor  # [N] 0..1
    sh: Tensor  # [N, K, 3]

    def save(self, stem: str | os.PathLike, formats=FORMATS) -> list[Path]:
        """Write ``stem.ply`` and/or ``stem.spz`` (``formats``); returns the paths."""
        stem = Path(stem)
        written = []
        if "ply" in formats:
            written.append(save_ply(stem.with_name(stem.name + ".ply"), self.means, self.quats, self.scales,
                                    self.opacities, self.sh))
        if "spz" in formats:
            a = [t.detach().cpu().numpy() for t in (self.means, self.quats, self.scales, self.opacities, self.sh)]
            written.append(write_spz(stem.with_name(stem.name + ".spz"), *a))
        return written


def splats_of(world: WorldGaussians, transform: tuple[Tensor, Tensor] | None = None, index: int = 0) -> Splats:
    """Frame ``index`` of ``world`` moved by the rigid ``transform`` ``(A [3, 3], b [3])``
    (``p -> A p + b``; None: as it is), its SH turned from their frame into world axes."""
    means, sh = world.means[index], world.sh
    quats, scales = world.shapes(index)
    frame = None if world.sh_frame is None else world.sh_frame[index]
    if transform is not None:
        A, b = (t.to(means) for t in transform)
        means = means @ A.T + b
        quats = quaternion_multiply(matrix_to_quaternion(A)[None].expand_as(quats), quats)
        frame = A if frame is None else A @ frame
    if frame is not None:
        sh = rotate_sh(sh, frame)
    return Splats(means, quats, scales, world.opacities, sh)


def rigid_fit(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """``(A [3, 3], b [3])``: the rotation and translation taking points ``src [V, 3]`` closest to
    ``dst [V, 3]`` (least squares, Kabsch), ``dst ~ src @ A.T + b``."""
    s, d = src.double(), dst.double()
    cs, cd = s.mean(0), d.mean(0)
    u, _, vt = torch.linalg.svd((d - cd).T @ (s - cs))
    fix = torch.diag(torch.tensor([1.0, 1.0, float(torch.sign(torch.det(u @ vt)))], dtype=s.dtype, device=s.device))
    A = u @ fix @ vt
    return A.to(src.dtype), (cd - cs @ A.T).to(src.dtype)


def canonical_transform(package: AvatarPackage) -> tuple[Tensor, Tensor]:
    """``(A, b)`` taking the model world of the avatar's reference camera onto the canonical frame
    (``p -> A p + b``): the neutral head at the reference pose lands on the canonical head. Fitted on
    the mesh, so it holds for models that turn about a joint as well as about their origin."""
    return _canonical_transform(package.model, package.state, package.device)


def _canonical_transform(model, state: dict, device) -> tuple[Tensor, Tensor]:
    """:func:`canonical_transform` from the model and the avatar file's entries (``shape``, the reference pose)."""
    zero = torch.zeros(3)
    ref_r, ref_t = (torch.as_tensor(state.get(k, zero), dtype=torch.float32, device=device)[None]
                    for k in ("reference_rotation", "reference_translation"))
    shape = torch.as_tensor(state["shape"], dtype=torch.float32, device=device)[None]
    with torch.no_grad():
        canonical = model(shape=shape).vertices[0]
        reference = model(shape=shape, rotation=ref_r, translation=ref_t).vertices[0]
    return rigid_fit(reference, canonical)


def reference_camera(model, state: dict, device=None) -> dict:
    """The avatar's reference (first training) camera in the canonical frame, from its model and the
    avatar file's entries: ``viewmat`` (4 x 4 world-to-camera, OpenCV camera axes: x right, y down,
    z forward), ``K`` (pixels), ``width``, ``height``, as lists (for a report): where to put a
    viewer's camera to see the avatar as it was filmed."""
    A, b = _canonical_transform(model, state, device)
    T = torch.eye(4, dtype=A.dtype, device=A.device)
    T[:3, :3], T[:3, 3] = A, b
    viewmat = torch.as_tensor(state["viewmat"]).to(T) @ torch.linalg.inv(T)
    r = lambda t: [[round(float(x), 6) for x in row] for row in t]  # noqa: E731
    return {"viewmat": r(viewmat), "K": r(torch.as_tensor(state["K"])), "width": int(state["width"]),
            "height": int(state["height"])}


def head_rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Axis-angle ``[3]`` of a head pose given as ARKit's HeadYaw / HeadPitch / HeadRoll, in degrees."""
    angles = (torch.tensor(math.radians(float(a)), dtype=torch.float64) for a in (yaw_deg, pitch_deg, roll_deg))
    return euler_to_axis_angle(*angles).numpy().astype(np.float32)


def posed_splats(package: AvatarPackage, expression, rotation, translation,
                 transform: tuple[Tensor, Tensor] | None = None, pose=None, gaze=None) -> Splats:
    """The avatar at ``expression [E]``, head ``rotation [3]`` (axis-angle) and ``translation [3]``
    (metres) in the model world, moved by ``transform`` (see :func:`splats_of`); a body avatar
    at joint rotations ``pose [J, 3]`` (None: its reference pose); ``gaze [2, 2]``: the eyeballs
    turned (:meth:`AvatarPackage.posed_gaussians`)."""
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32)[None], device=package.device)  # noqa: E731
    with torch.no_grad():
        w = package.posed_gaussians(t(expression), t(rotation), t(translation), None if pose is None else t(pose),
                                    gaze=None if gaze is None else t(gaze))
        return splats_of(w, transform)


def export_sequence(package: AvatarPackage, poses, folder: str | os.PathLike, formats=FORMATS, fps: float = 25.0,
                    source: str = "", first: int = 0, progress: bool = True, gaze: np.ndarray | None = None) -> dict:
    """Each pose of ``poses`` ``(expression [F, E], rotation [F, 3], translation [F, 3])`` (the model
    world of the reference camera, as :func:`avatar.drive.animate.driven_poses` gives them) as
    ``folder/frame_NNNNN.ply`` / ``.spz`` in the canonical frame, then ``folder/sequence.json``
    (frame rate, files, source; written last). ``first``: the driver frame number of pose 0;
    ``gaze [F, 2, 2]``: the eyeballs' turns per pose (None: as trained). Returns what
    ``sequence.json`` holds."""
    folder = Path(folder)
    expr, rot, trans = poses
    transform = canonical_transform(package)
    frames = range(len(expr))
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        frames = tqdm(frames, desc="export", unit="frame")
    t0, files = time.perf_counter(), []
    for i in frames:
        stem = folder / f"frame_{first + i:05d}"
        written = posed_splats(package, expr[i], rot[i], trans[i], transform,
                               gaze=None if gaze is None else gaze[i]).save(stem, formats)
        files.append([p.name for p in written])
    info = {"frames": len(files), "fps": float(fps), "first_frame": first, "source": source,
            "n_gaussians": len(package.gaussians), "formats": list(formats), "files": files,
            "seconds": round(time.perf_counter() - t0, 2)}
    write_json(folder / "sequence.json", info)
    return info

"""Driving a body avatar: motion files in the AMASS / SMPL layout and tracked body captures,
retargeted onto the avatar's skeleton and rendered.

A motion file is an ``.npz`` with::

    poses            [T, 3 * J] axis-angles (radians), SMPL's joint order: J = 24 (SMPL, 72 values),
                     52 (SMPL-H, 156: 22 body joints + 2 x 15 hand joints), 55 (SMPL-X, 165);
                     joint 0 is the pelvis' global orientation
    trans            [T, 3] metres (optional: zeros)
    mocap_framerate  frames per second (also read: mocap_frame_rate, fps; default 30)
    joint_names      [J] (optional): the joints of ``poses`` by name, for other skeletons

AMASS files are Z-up; motion is applied relative to the file's first frame (``relative``), so
the avatar starts in its own reference pose (its first training frame) and turns and moves as
the file does from there.

Retargeting (:func:`retarget_pose`) maps joints by name (:data:`ANNY_FROM_SMPL` for Anny; the
same name for SMPL-named skeletons) and matches bone *directions*, not local angles: SMPL's rest
is a T-pose, Anny's an A-pose, so each mapped joint's world rotation is the source's times a
fixed rest correction (the rotation taking the target's rest bone onto the source's, from
:data:`SMPL_REST_DIRECTIONS`). Target joints without a source joint stay at rest; source
joints the map leaves out (fingers, toes) are listed in the notes. A file whose joints cannot be
mapped at all raises :class:`DriveError` naming them.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_quaternion, quaternion_to_matrix
from ..models.smpl import SMPL_JOINT_NAMES
from .sequence import DriveError

_HAND = tuple(f"{f}{k}" for f in ("index", "middle", "pinky", "ring", "thumb") for k in (1, 2, 3))
SMPLH_JOINT_NAMES = SMPL_JOINT_NAMES[:22] + tuple(f"left_{h}" for h in _HAND) + tuple(f"right_{h}" for h in _HAND)
SMPLX_JOINT_NAMES = SMPL_JOINT_NAMES[:22] + ("jaw", "left_eye_smplhf", "right_eye_smplhf") + SMPLH_JOINT_NAMES[22:]
LAYOUTS = {72: SMPL_JOINT_NAMES, 156: SMPLH_JOINT_NAMES, 165: SMPLX_JOINT_NAMES}

# SMPL joint -> Anny bone.
ANNY_FROM_SMPL = {
    "pelvis": "root", "left_hip": "upperleg01.L", "right_hip": "upperleg01.R", "spine1": "spine05",
    "left_knee": "lowerleg01.L", "right_knee": "lowerleg01.R", "spine2": "spine03", "left_ankle": "foot.L",
    "right_ankle": "foot.R", "spine3": "spine01", "neck": "neck01", "left_collar": "clavicle.L",
    "right_collar": "clavicle.R", "head": "head", "left_shoulder": "upperarm01.L", "right_shoulder": "upperarm01.R",
    "left_elbow": "lowerarm01.L", "right_elbow": "lowerarm01.R", "left_wrist": "wrist.L", "right_wrist": "wrist.R",
}
# Where the bone of a mapped Anny joint points when its SMPL child is not mapped.
ANNY_BONE_END = {"foot.L": "toe3-1.L", "foot.R": "toe3-1.R", "wrist.L": "finger3-1.L", "wrist.R": "finger3-1.R"}
# SMPL's rest (T-pose) bone directions, contract axes (+x the subject's left, +y up, +z forward).
_DOWN, _UP = (0.0, -1.0, 0.0), (0.0, 1.0, 0.0)
SMPL_REST_DIRECTIONS = {
    "left_hip": _DOWN, "right_hip": _DOWN, "left_knee": _DOWN, "right_knee": _DOWN,
    "left_ankle": (0.0, -0.45, 0.89), "right_ankle": (0.0, -0.45, 0.89), "spine1": _UP, "spine2": _UP, "spine3": _UP,
    "neck": _UP, "left_collar": (1.0, 0.0, 0.0), "right_collar": (-1.0, 0.0, 0.0), "left_shoulder": (1.0, 0.0, 0.0),
    "right_shoulder": (-1.0, 0.0, 0.0), "left_elbow": (1.0, 0.0, 0.0), "right_elbow": (-1.0, 0.0, 0.0),
    "left_wrist": (1.0, 0.0, 0.0), "right_wrist": (-1.0, 0.0, 0.0),
}
SMPL_CHILD = {"left_hip": "left_knee", "right_hip": "right_knee", "left_knee": "left_ankle", "right_knee": "right_ankle",
              "left_ankle": "left_foot", "right_ankle": "right_foot", "spine1": "spine2", "spine2": "spine3",
              "spine3": "neck", "neck": "head", "left_collar": "left_shoulder", "right_collar": "right_shoulder",
              "left_shoulder": "left_elbow", "right_shoulder": "right_elbow", "left_elbow": "left_wrist",
              "right_elbow": "right_wrist", "left_wrist": "left_hand", "right_wrist": "right_hand"}
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # AMASS world -> contract axes


@dataclass
class Motion:
    """A motion file's content: ``poses [T, J, 3]`` (joint 0 the global orientation), ``trans [T, 3]``."""

    poses: np.ndarray
    joint_names: tuple[str, ...]
    trans: np.ndarray
    fps: float
    source: str


@dataclass
class BodyDrive:
    """A body driver on the avatar's skeleton: ``pose [F, J, 3]`` local joint rotations (root zero),
    global ``rotation [F, 3]`` and ``translation [F, 3]`` in the avatar's model world."""

    pose: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    fps: float
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return self.pose.shape[0]


def read_motion(path: str | os.PathLike) -> Motion:
    """Read an AMASS/SMPL motion ``.npz`` (module doc); :class:`DriveError` naming the key otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DriveError(f"cannot read motion file {path} ({' '.join(str(exc).split())}); it must be an .npz with "
                         "poses [T, 72 or 156], trans [T, 3], mocap_framerate") from exc
    if "poses" not in arrays:
        raise DriveError(f"{path} has no 'poses' (it holds {sorted(arrays)}): a motion file holds poses [T, 72 or 156] "
                         "axis-angles in SMPL's joint order, trans [T, 3] and mocap_framerate (AMASS layout)")
    poses = np.asarray(arrays["poses"], np.float64)
    if poses.ndim != 2 or poses.shape[0] == 0 or poses.shape[1] % 3:
        raise DriveError(f"{path}: 'poses' must be [frames, 3 x joints], got shape {list(poses.shape)}")
    T, D = poses.shape
    if "joint_names" in arrays:
        names = tuple(str(n) for n in arrays["joint_names"])
        if len(names) * 3 != D:
            raise DriveError(f"{path}: {len(names)} joint_names for {D // 3} joints in 'poses'")
    elif D in LAYOUTS:
        names = LAYOUTS[D]
    else:
        raise DriveError(f"{path}: 'poses' has {D} values per frame; without joint_names it must be SMPL's 72, "
                         f"SMPL-H's 156 or SMPL-X's 165")
    trans = np.asarray(arrays.get("trans", np.zeros((T, 3))), np.float64)
    if trans.shape != (T, 3):
        raise DriveError(f"{path}: 'trans' must be [{T}, 3] (metres, one per pose), got {list(trans.shape)}")
    if not (np.isfinite(poses).all() and np.isfinite(trans).all()):
        raise DriveError(f"{path}: 'poses' or 'trans' holds NaN or infinite values")
    fps = 30.0
    for key in ("mocap_framerate", "mocap_frame_rate", "fps"):
        if key in arrays:
            fps = float(np.asarray(arrays[key]).reshape(-1)[0])
            break
    if not fps > 0:
        raise DriveError(f"{path}: the frame rate must be positive, got {fps}")
    return Motion(poses.reshape(T, -1, 3), names, trans, fps, str(path))


def joint_map(source_names, target_names) -> dict[str, str]:
    """Source joint -> target joint: by name when the target has the source's names (SMPL,
    SMPL-named skeletons), else :data:`ANNY_FROM_SMPL` where the target has Anny's bones."""
    target = set(target_names)
    same = {n: n for n in source_names if n in target}
    anny = {s: a for s, a in ANNY_FROM_SMPL.items() if s in source_names and a in target}
    return same if len(same) >= len(anny) else anny


def _minimal_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[3, 3]`` the smallest rotation taking unit direction ``a`` onto ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis, cos = np.cross(a, b), float(np.clip(a @ b, -1, 1))
    sin = np.linalg.norm(axis)
    if sin < 1e-8:
        return np.eye(3) if cos > 0 else axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi], dtype=torch.float64)).numpy()
    aa = axis / sin * math.atan2(sin, cos)
    return axis_angle_to_matrix(torch.as_tensor(aa)).numpy()


def rest_corrections(mapping: dict[str, str], target_names, rest_joints: np.ndarray) -> dict[str, np.ndarray]:
    """Per mapped target joint, the rotation taking its rest bone onto SMPL's rest direction (the
    identity where either direction is unknown)."""
    index = {n: i for i, n in enumerate(target_names)}
    out = {}
    for s, a in mapping.items():
        direction = SMPL_REST_DIRECTIONS.get(s)
        child = mapping.get(SMPL_CHILD.get(s, ""), ANNY_BONE_END.get(a))
        if direction is None or child is None or child not in index:
            continue
        bone = rest_joints[index[child]] - rest_joints[index[a]]
        if np.linalg.norm(bone) > 1e-6:
            out[a] = _minimal_rotation(bone, np.asarray(direction))
    return out


def retarget_pose(motion: Motion, body) -> tuple[np.ndarray, list[str]]:
    """``([T, J_body, 3] local rotations, notes)``: ``motion``'s joints (not its root) on ``body``'s
    skeleton, matching bone directions (module doc). Raises :class:`DriveError` naming the source
    joints when none can be mapped."""
    names, target = motion.joint_names, tuple(body.joint_names)
    mapping = joint_map(names, target)
    body_joints = [n for n in names[1:] if n in mapping]
    if not body_joints:
        raise DriveError(f"{motion.source}: none of its joints {list(names)[:24]} maps onto the avatar's skeleton "
                         f"({body.name}: {', '.join(target[:12])} ...); give joint_names in SMPL's naming "
                         f"({', '.join(SMPL_JOINT_NAMES[:6])} ...)")
    unmapped = [n for n in names[1:] if n not in mapping]
    notes = [f"motion joints without a joint on the avatar's skeleton, left at rest: {unmapped}"] if unmapped else []
    with torch.no_grad():
        rest = body.rest()[1][0].double().cpu().numpy()
    C = rest_corrections(mapping, target, rest)
    T = motion.poses.shape[0]
    local = axis_angle_to_matrix(torch.as_tensor(motion.poses)).numpy()  # [T, Js, 3, 3]
    src_index = {n: i for i, n in enumerate(names)}
    src_parent = _smpl_parents(names)
    # Source world rotations with the root at identity (the global motion is handled apart).
    world_s = np.zeros_like(local)
    for j, n in enumerate(names):
        p = src_parent[j]
        world_s[:, j] = np.eye(3) if p < 0 else world_s[:, p] @ local[:, j]
    parents = body.parents.cpu().numpy()
    world_t = np.tile(np.eye(3), (T, len(target), 1, 1))
    out = np.tile(np.eye(3), (T, len(target), 1, 1))
    inverse = {a: s for s, a in mapping.items()}
    for j, a in enumerate(target):
        p = parents[j]
        parent_world = np.tile(np.eye(3), (T, 1, 1)) if p < 0 else world_t[:, p]
        s = inverse.get(a)
        if s is None or p < 0:
            world_t[:, j] = parent_world  # unmapped (and the root): local identity
            continue
        world_t[:, j] = world_s[:, src_index[s]] @ C.get(a, np.eye(3))
        out[:, j] = np.swapaxes(parent_world, -1, -2) @ world_t[:, j]
    pose = matrix_to_axis_angle(torch.as_tensor(out).reshape(-1, 3, 3)).reshape(T, len(target), 3).numpy()
    return pose.astype(np.float32), notes


def _smpl_parents(names) -> list[int]:
    """Parents of SMPL/SMPL-H/SMPL-X joints by name (the body tree; hands under their wrists, finger
    joints in chains); joints of other names hang from the root."""
    body = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    index = {n: i for i, n in enumerate(names)}
    out = []
    for j, n in enumerate(names):
        if n in SMPL_JOINT_NAMES and SMPL_JOINT_NAMES.index(n) < len(body):
            p = body[SMPL_JOINT_NAMES.index(n)]
            out.append(index.get(SMPL_JOINT_NAMES[p], 0) if p >= 0 else -1)
        elif n in ("jaw", "left_eye_smplhf", "right_eye_smplhf"):
            out.append(index.get("head", 0))
        elif n.startswith(("left_", "right_")) and n[-1] in "123":
            side = n.split("_")[0]
            prev = n[:-1] + str(int(n[-1]) - 1)
            out.append(index.get(prev, index.get(f"{side}_wrist", 0)) if n[-1] != "1" else index.get(f"{side}_wrist", 0))
        else:
            out.append(0 if j else -1)
    return out


def resample(pose: np.ndarray, rotation: np.ndarray, translation: np.ndarray, fps_in: float, fps_out: float):
    """Frames at ``fps_out`` over the same duration: rotations by normalised quaternion
    interpolation (shortest arc), translations linearly."""
    T = pose.shape[0]
    if T < 2 or abs(fps_in - fps_out) < 1e-6:
        return pose, rotation, translation
    n = max(1, int(math.floor((T - 1) * fps_out / fps_in)) + 1)
    x = np.arange(n) * fps_in / fps_out
    i0 = np.clip(np.floor(x).astype(int), 0, T - 1)
    i1 = np.clip(i0 + 1, 0, T - 1)
    w = torch.as_tensor(x - i0)

    def rot(aa: np.ndarray) -> np.ndarray:
        q = matrix_to_quaternion(axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float64)))
        q0, q1 = q[i0], q[i1]
        q1 = torch.where(((q0 * q1).sum(-1, keepdim=True) < 0), -q1, q1)
        shape = (-1,) + (1,) * (q0.dim() - 1)
        q = q0 * (1 - w.view(shape)) + q1 * w.view(shape)
        return matrix_to_axis_angle(quaternion_to_matrix(q)).numpy().astype(np.float32)

    t = translation[i0] * (1 - w.numpy()[:, None]) + translation[i1] * w.numpy()[:, None]
    return rot(pose), rot(rotation), t.astype(np.float32)


def motion_drive(path: str | os.PathLike, body, reference_rotation: np.ndarray, reference_translation: np.ndarray,
                 fps: float | None = None, relative: bool = True) -> BodyDrive:
    """A motion file (module doc) as a :class:`BodyDrive` on ``body``: joints retargeted, global
    motion relative to the file's first frame placed on the avatar's reference pose
    (``relative``; else the file's own, its Z-up world turned Y-up), resampled to ``fps``
    (None: the file's rate, at most 30)."""
    motion = read_motion(path)
    pose, notes = retarget_pose(motion, body)
    R = axis_angle_to_matrix(torch.as_tensor(motion.poses[:, 0])).numpy()
    if relative:
        R_ref = axis_angle_to_matrix(torch.as_tensor(np.asarray(reference_rotation, np.float64))).numpy()
        to_avatar = R_ref @ R[0].T  # the file's world -> the avatar's: frame 0 lands on the reference
        world = to_avatar @ R
        translation = reference_translation + (motion.trans - motion.trans[0]) @ to_avatar.T
    else:
        world = Z_UP_TO_Y_UP @ R
        translation = motion.trans @ Z_UP_TO_Y_UP.T
        notes.append("relative=false: the file's own global orientation and translation (Z-up turned Y-up)")
    rotation = matrix_to_axis_angle(torch.as_tensor(world)).numpy().astype(np.float32)
    fps_out = float(fps) if fps else min(motion.fps, 30.0)
    pose, rotation, translation = resample(pose, rotation, translation.astype(np.float32), motion.fps, fps_out)
    if abs(fps_out - motion.fps) > 1e-6:
        notes.append(f"resampled from {motion.fps:g} to {fps_out:g} fps")
    return BodyDrive(pose, rotation, translation, fps_out, str(path), notes)


def tracked_body_drive(path: str | os.PathLike, body, reference_rotation, reference_translation,
                       relative: bool = True) -> BodyDrive:
    """A tracked body capture (folder or its ``tracking.npz``) as a :class:`BodyDrive`: its joint
    rotations by joint name, its global motion relative to its first frame (``relative``)."""
    from avatar.io.tracking import BodyTrackedSequence, TrackingError, load_tracking  # noqa: PLC0415

    path = Path(path)
    try:
        seq = load_tracking(path)
    except TrackingError as exc:
        raise DriveError(str(exc)) from None
    if not isinstance(seq, BodyTrackedSequence):
        raise DriveError(f"{path} holds a head's tracking ({seq.model}); this avatar is a body: drive it with a motion "
                         "file (AMASS .npz) or a tracked body capture")
    motion = Motion(np.concatenate((seq.rotation[:, None], seq.pose[:, 1:]), 1).astype(np.float64), seq.joint_names,
                    seq.translation.astype(np.float64), _capture_fps(path), str(path))
    if seq.joint_names == tuple(body.joint_names):  # the same skeleton: joint rotations as tracked
        pose, notes = seq.pose.astype(np.float32).copy(), []
        pose[:, 0] = 0
    else:
        pose, notes = retarget_pose(motion, body)
    R = axis_angle_to_matrix(torch.as_tensor(motion.poses[:, 0])).numpy()
    if relative:
        R_ref = axis_angle_to_matrix(torch.as_tensor(np.asarray(reference_rotation, np.float64))).numpy()
        to_avatar = R_ref @ R[0].T
        world, translation = to_avatar @ R, reference_translation + (motion.trans - motion.trans[0]) @ to_avatar.T
    else:
        world, translation = R, motion.trans
    rotation = matrix_to_axis_angle(torch.as_tensor(world)).numpy().astype(np.float32)
    return BodyDrive(pose, rotation, translation.astype(np.float32), motion.fps, str(path), notes)


def _capture_fps(path: Path) -> float:
    folder = path if path.is_dir() else path.parent
    if (folder / "meta.json").is_file():
        from avatar.io.capture import Capture  # noqa: PLC0415

        return float(Capture(folder).meta.fps) or 25.0
    return 25.0


def is_motion_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a body driver: an ``.npz`` with ``poses`` or a body ``tracking.npz``
    (a folder: its ``tracking.npz``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tracking.npz"
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "poses" in z.files or ("kind" in z.files and str(z["kind"]) == "body")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def load_body_drive(path: str | os.PathLike, package, fps: float | None = None, relative: bool = True) -> BodyDrive:
    """The body driver at ``path`` for the body avatar ``package``: a motion file or a tracked body
    capture; anything else (a head's parameters, an ARKit CSV, a video) is a :class:`DriveError`."""
    path = Path(path)
    if not path.exists():
        raise DriveError(f"driving source {path} does not exist")
    ref_r, ref_t = package.reference_pose_or(np.zeros(3, np.float32), np.zeros(3, np.float32))
    if path.suffix.lower() == ".npz" and is_motion_file(path) and not _is_tracking(path):
        return motion_drive(path, package.model, ref_r, ref_t, fps, relative)
    if is_motion_file(path):
        return tracked_body_drive(path, package.model, ref_r, ref_t, relative)
    raise DriveError(f"{path} cannot drive a body avatar: drive it with a motion file (.npz with poses [T, 72 or 156], "
                     "trans, mocap_framerate: the AMASS layout) or a tracked body capture"
                     + (" (driving a body from a video needs body tracking)" if path.suffix.lower() in
                        (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v") else ""))


def _is_tracking(path: Path) -> bool:
    with np.load(path, allow_pickle=False) as z:
        return "kind" in z.files


def body_frames(package, drive: BodyDrive, camera: str = "tracked", size: int | None = None, renderer: dict | None = None):
    """Yield ``(image [H, W, 3] uint8, backend, rasterization seconds)`` per driver frame through
    ``camera``: tracked (the training camera; the body moves as the driver), fixed (the body
    stays at its reference place and heading, joints move) or orbit (a turntable around it)."""
    from ..geometry.cameras import orbit_viewmats  # noqa: PLC0415

    if camera not in ("tracked", "fixed", "orbit"):
        raise DriveError(f"camera must be tracked, fixed or orbit, got {camera!r}")
    dev = package.device
    rotation, translation = drive.rotation.copy(), drive.translation.copy()
    ref_r, ref_t = package.reference_pose_or(rotation[0], translation[0])
    if camera == "fixed":
        rotation[:], translation[:] = ref_r, ref_t
    K, width, height = package.camera(size)
    viewmat = package.state["viewmat"].to(dev, torch.float32)
    viewmats = viewmat[None].expand(drive.n_frames, 4, 4)
    if camera == "orbit":
        with torch.no_grad():
            root = package.model.rest()[1][0, 0].float().cpu().numpy() + np.asarray(ref_t)
        eye = (-viewmat[:3, :3].T @ viewmat[:3, 3]).cpu().numpy()
        offset = eye - root
        viewmats = orbit_viewmats(drive.n_frames, radius=float(np.hypot(offset[0], offset[2])), height=float(offset[1]),
                                  target=tuple(float(x) for x in root), device=dev)
    return (package.render_frame(None, rotation[i], translation[i], viewmats[i], K, width, height, renderer,
                                 pose=drive.pose[i]) for i in range(drive.n_frames))


def render_body_driven(package, drive: BodyDrive, out: str | os.PathLike, camera: str = "tracked",
                       size: int | None = None, renderer: dict | None = None, progress: bool = True) -> dict:
    """Render ``drive`` on the body avatar ``package`` into the video ``out``; returns the report."""
    import time  # noqa: PLC0415

    from avatar.io.video import VideoWriter  # noqa: PLC0415

    t0 = time.perf_counter()
    _, width, height = package.camera(size)
    frames = body_frames(package, drive, camera, size, renderer)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        frames = tqdm(frames, desc="render", unit="frame", total=drive.n_frames)
    render_s, backend = 0.0, None
    with VideoWriter(out, fps=drive.fps) as video:
        for frame, backend, seconds in frames:
            render_s += seconds
            video.write(frame)
    total = time.perf_counter() - t0
    return {
        "command": "render", "driver": drive.source, "frames": drive.n_frames, "fps": drive.fps, "camera": camera,
        "layout": "avatar", "size": [width, height], "n_gaussians": len(package.gaussians), "backend": backend,
        "device": str(package.device), "render_fps": round(drive.n_frames / max(render_s, 1e-9), 2),
        "end_to_end_fps": round(drive.n_frames / max(total, 1e-9), 2), "seconds": round(total, 2),
        "notes": list(drive.notes), "output": str(out),
    }


__all__ = [
    "ANNY_FROM_SMPL", "BodyDrive", "Motion", "SMPLH_JOINT_NAMES", "joint_map", "load_body_drive", "motion_drive",
    "read_motion", "render_body_driven", "resample", "retarget_pose", "tracked_body_drive",
]

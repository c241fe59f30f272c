"""Training data: a capture's frames and masks with the tracked mesh of every frame.

Frames are held in memory at the training resolution (uint8), posed vertices are computed
once for all frames (the tracking is fixed while training), and the last ``holdout``
fraction of the usable frames is kept out of training for evaluation (INSTA's protocol:
self-reenactment on the end of the video).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatar.io.capture import Capture
from avatar.io.tracking import BodyTrackedSequence, TrackedSequence

log = logging.getLogger(__name__)


class TrainDataError(ValueError):
    """The capture and its tracking cannot be trained on as configured."""


@dataclass
class FrameSet:
    """Everything the trainer reads, on one device."""

    images: Tensor  # [F, H, W, 3] uint8
    masks: Tensor  # [F, H, W] uint8
    vertices: Tensor  # [F, V, 3] posed mesh, model world
    conditions: Tensor  # [F, E] expression coefficients (what a deformer is conditioned on); [F, 0] for a body
    shape: Tensor  # [S] identity coefficients (a body: its shape parameters)
    rotation: Tensor  # [F, 3] tracked head (or body) rotation (axis-angle), for joint refinement
    translation: Tensor  # [F, 3]
    frame_ids: np.ndarray  # [F] index of each frame in the capture
    train: np.ndarray  # indices into the above
    heldout: np.ndarray
    K: Tensor  # [F, 3, 3] per frame, at the training resolution
    viewmat: Tensor  # [4, 4]
    width: int
    height: int
    pose: Tensor | None = None  # [F, J, 3] a body's local joint rotations (None: a head)

    @property
    def is_body(self) -> bool:
        return self.pose is not None
    torso: Tensor | None = None  # [F, 4, 4] torso-to-world per frame (tracked shoulders); None: not tracked
    head_only: np.ndarray | None = None  # [F] bool: mask=person frames trained on the head's mask (shoulders unseen)
    # [F, 2, 2] each frame's eyeball turns (right, left; yaw, pitch radians) in ``vertices``
    # (train.turn_eyes; None: the eyeballs as the model has them)
    gaze: Tensor | None = None
    eyeball_parts: tuple[str, str] | None = None

    def image(self, i: int) -> Tensor:
        return self.images[i].float() / 255.0

    def mask(self, i: int) -> Tensor:
        return self.masks[i].float() / 255.0


def split_frames(usable: np.ndarray, holdout: float, min_train: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(train, heldout)`` into ``usable``: the last ``holdout`` fraction is held out."""
    n = len(usable)
    n_held = int(round(n * holdout))
    if holdout > 0 and n_held == 0:
        n_held = 1
    if n - n_held < min_train:
        raise TrainDataError(
            f"{n} usable frames cannot hold out {holdout:.0%} and keep {min_train} for training; "
            "use a longer capture or set train.holdout=0"
        )
    return np.arange(n - n_held), np.arange(n - n_held, n)


def neck_height(model, neck_below_chin: float | None) -> tuple[Tensor, float] | None:
    """``(height [V], cut)``: each vertex's height on the neutral mesh (the model's up axis, y)
    and the height of the neck cut, ``neck_below_chin`` metres under the chin (the lowest
    landmark). None without a cut (``neck_below_chin`` None) or without landmarks.
    """
    lmk_faces = getattr(model, "lmk_faces", None)
    if neck_below_chin is None or lmk_faces is None or lmk_faces.numel() == 0:
        return None  # a model loaded without its landmark embedding: no chin to cut under
    with torch.no_grad():
        out = model()
        chin = float(model.landmarks(out.vertices)[0, :, 1].min())
    return out.vertices[0, :, 1], chin - neck_below_chin


def head_masks(vertices: Tensor, faces: Tensor, K: Tensor, viewmat: Tensor, width: int, height: int,
               dilate: float, batch: int = 8, neck: tuple[Tensor, float] | None = None, progress: bool = False) -> Tensor:
    """``[F, H, W]`` silhouettes of the tracked head mesh, grown by ``dilate`` x width pixels.

    The person mask times this keeps the head, hair and neck and cuts the torso, which a
    head model cannot represent (the INSTA / FlashAvatar ground truth is cut the same way).
    ``neck`` (see :func:`neck_height`): pixels whose surface point lies below the cut on the
    neutral mesh are body; they and the margin grown around them are cut, so the lower
    edge of the mask is a line on the mesh that moves with the head, not the shirt collar.
    """
    from ..render import rasterize_mesh  # noqa: PLC0415
    from .regions import grow_mask  # noqa: PLC0415

    radius = max(1, int(round(dilate * width)))

    from tqdm.auto import tqdm  # noqa: PLC0415

    out = []
    bar = tqdm(total=vertices.shape[0], desc="head masks", unit="frame", disable=not progress, leave=False)
    with torch.no_grad():
        for i in range(0, vertices.shape[0], batch):
            v = vertices[i : i + batch]
            r = rasterize_mesh(v, faces, K[i : i + batch], width, height, viewmat.expand(v.shape[0], 4, 4))
            head = r.mask
            if neck is not None:
                level, cut = neck
                tri = faces[r.triangle_id.clamp_min(0)]  # [B, H, W, 3]
                y = (level.to(r.bary)[tri] * r.bary).sum(-1)
                body = r.mask & (y < cut)
                head = r.mask & ~body
                keep = grow_mask(head, radius) & ~(grow_mask(body, radius) & ~head)
            else:
                keep = grow_mask(head, radius)
            out.append(keep.float())
            bar.update(v.shape[0])
    bar.close()
    return torch.cat(out)


def pose_body(model, tracking: BodyTrackedSequence, frames: np.ndarray, device: torch.device, dtype: torch.dtype,
              batch: int = 16) -> Tensor:
    """``[len(frames), V, 3]`` the body mesh of the tracked frames, skinned in batches."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    shape = t(tracking.shape)[None]
    out = []
    with torch.no_grad():
        for k in range(0, len(frames), batch):
            ids = frames[k:k + batch]
            out.append(model(shape=shape, pose=t(tracking.pose[ids]), rotation=t(tracking.rotation[ids]),
                             translation=t(tracking.translation[ids])).vertices)
    return torch.cat(out) if out else torch.zeros(0, model.num_vertices, 3, dtype=dtype, device=device)


def load_frames(
    capture: Capture, tracking: TrackedSequence | BodyTrackedSequence, model, resolution: int | None, holdout: float,
    device: torch.device, dtype: torch.dtype = torch.float32, mask: str = "head", head_dilate: float = 0.04,
    neck_below_chin: float | None = None, progress: bool = False, turn_eyes: bool = False,
    turn_eyes_vertical: float = 1.0,
) -> FrameSet:
    """Read the usable frames (not flagged, tracked) at ``resolution`` and pose the mesh for each.

    ``mask``: "person" uses the capture's masks as they are (except in frames whose shoulders the
    tracking's shoulder state did not see: those are cut as "head" does); "head" cuts them to the tracked
    head's silhouette grown by ``head_dilate`` x width (hair), dropping the torso, and cut
    across the neck ``neck_below_chin`` metres under the chin (None: no cut); a body
    (``tracking`` a :class:`BodyTrackedSequence`) always trains on the whole person mask.
    ``progress``: a tqdm bar over the frames read. ``turn_eyes``: each frame's eyeballs turned by the
    gaze read off its irises (:func:`frame_gaze`; heads whose model has eyeballs and gaze blendshapes).
    """
    if mask not in ("person", "head"):
        raise TrainDataError(f"train.mask must be 'person' or 'head', got {mask!r}")
    is_body = isinstance(tracking, BodyTrackedSequence)
    if is_body and not getattr(model, "is_body", False):
        raise TrainDataError(f"the capture was tracked with the body model {tracking.model!r} but the model loaded is "
                             f"{getattr(model, 'name', model)!r}")
    mask_mode = "person" if is_body else mask
    import cv2  # noqa: PLC0415

    if tracking.n_frames != capture.n_frames:
        raise TrainDataError(
            f"tracking has {tracking.n_frames} frames, capture {capture.root} has {capture.n_frames}; "
            f"re-run avatar track capture={capture.root}"
        )
    usable = np.array([i for i in capture.valid_frames() if tracking.valid[i]], dtype=np.int64)
    train, heldout = split_frames(usable, holdout)
    w0, h0 = capture.meta.width, capture.meta.height
    width = resolution or w0
    height = int(round(h0 * width / w0))
    images, masks = [], []
    from tqdm.auto import tqdm  # noqa: PLC0415

    for i in tqdm(usable, desc="load frames", unit="frame", disable=not progress, leave=False):
        img, mask = capture.load_frame(int(i)), capture.load_mask(int(i))
        if (img.shape[1], img.shape[0]) != (width, height):
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)
        images.append(img)
        masks.append((np.clip(mask, 0, 1) * 255 + 0.5).astype(np.uint8))
    sx, sy = width / tracking.width, height / tracking.height
    K = torch.as_tensor(np.array(tracking.intrinsics(usable)), dtype=dtype) * torch.tensor([[sx], [sy], [1.0]], dtype=dtype)
    model = model.to(device=device, dtype=dtype)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    if is_body:
        vertices = pose_body(model, tracking, usable, device, dtype)
        conditions, pose = t(np.zeros((len(usable), 0))), t(tracking.pose[usable])
    else:
        with torch.no_grad():
            shape = t(tracking.shape)[None].expand(len(usable), -1)
            vertices = model(shape=shape, expression=t(tracking.expression[usable]),
                             rotation=t(tracking.rotation[usable]), translation=t(tracking.translation[usable])).vertices
        conditions, pose = t(tracking.expression[usable]), None
    gaze, eyeball_parts = None, None
    if turn_eyes and not is_body:
        found = frame_gaze(capture, tracking, model, usable, train, turn_eyes_vertical)
        if found is None:
            log.info("train.turn_eyes: model %r has no eyeball parts and gaze blendshapes; the eyes stay put",
                     getattr(model, "name", model))
        else:
            gaze, eyeball_parts = t(found[0]), found[1]
            vertices = posed_with_gaze(model, eyeball_parts, t(tracking.shape), conditions, t(tracking.rotation[usable]),
                                       t(tracking.translation[usable]), gaze)
    masks = torch.from_numpy(np.stack(masks)).to(device)
    K = K.to(device)
    viewmat = torch.as_tensor(tracking.viewmat, dtype=dtype, device=device)
    # mask=person on a capture with a shoulder state: frames whose shoulders were not seen (their
    # torso is interpolated) fall back to the head's mask, so the torso learns only from seen ones.
    measured = getattr(tracking, "torso_measured", None)
    head_only = (np.ones(len(usable), bool) if mask_mode == "head" else
                 ~measured[usable] if measured is not None else np.zeros(len(usable), bool))
    if head_only.any():
        sel = torch.as_tensor(np.flatnonzero(head_only), device=device)
        keep = head_masks(vertices[sel], model.faces.to(device), K[sel], viewmat, width, height, head_dilate,
                          neck=neck_height(model, neck_below_chin), progress=progress)
        masks[sel] = (masks[sel].float() * keep).round().to(torch.uint8)
    from ..tracking.shoulders import torso_transforms  # noqa: PLC0415

    torso = None if is_body else torso_transforms(tracking)
    return FrameSet(
        torso=None if torso is None else t(torso[usable]),
        head_only=head_only if mask_mode == "person" else np.zeros(len(usable), bool),
        images=torch.from_numpy(np.stack(images)).to(device),
        masks=masks,
        vertices=vertices.detach(),
        conditions=conditions,
        shape=t(tracking.shape),
        rotation=t(tracking.rotation[usable]),
        translation=t(tracking.translation[usable]),
        frame_ids=usable,
        train=train,
        heldout=heldout,
        K=K,
        viewmat=viewmat,
        width=width,
        height=height,
        pose=pose,
        gaze=gaze,
        eyeball_parts=eyeball_parts,
    )


def posed_with_gaze(model, eyeball_parts, shape: Tensor, expression: Tensor, rotation: Tensor, translation: Tensor,
                    gaze: Tensor) -> Tensor:
    """``[F, V, 3]`` the head model posed (``shape [S]``, ``expression [F, E]``, rigid ``rotation`` /
    ``translation [F, 3]``) with its eyeballs turned by ``gaze [F, 2, 2]`` before the head's pose."""
    from ..models.engine import rigid_transform  # noqa: PLC0415
    from ..models.eyes import turn_eyeballs  # noqa: PLC0415

    local = model(shape=shape[None].expand(expression.shape[0], -1), expression=expression).vertices
    return rigid_transform(turn_eyeballs(model, eyeball_parts, local, gaze), rotation, translation)


def frame_gaze(capture: Capture, tracking, model, usable: np.ndarray, train: np.ndarray, vertical: float = 1.0
               ) -> tuple[np.ndarray, tuple[str, str]] | None:
    """``([F, 2, 2] float32, eyeball parts)``: per usable frame the eyeballs' turn (both eyes the
    mean of the two; radians) that puts each eyeball's front pole on MediaPipe's iris centre at
    the tracked head pose and camera (:func:`avatar.tracking.gaze.gaze_from_rays`; frames whose lids
    hide the irises take their neighbours', :func:`avatar.tracking.gaze.hold_through_blinks`), less the median
    over the training frames (the look the eyeballs keep when nothing turns them), the up-down
    turn times ``vertical``. None for a
    model without eyeball parts or gaze blendshapes, or a capture without iris landmarks."""
    from ..models.eyes import eye_profile, eyeball_geometry  # noqa: PLC0415
    from ..tracking.gaze import IRIS_CENTRES, gaze_from_rays, hold_through_blinks, lids_open  # noqa: PLC0415

    profile = eye_profile(model)
    if profile is None:
        return None
    face = capture.landmarks.face
    if face.shape[1] <= max(IRIS_CENTRES):
        return None
    dt = torch.float64
    p = next(iter(model.buffers()), None)
    with torch.no_grad():
        rest = model(shape=torch.as_tensor(tracking.shape, dtype=p.dtype if p is not None else torch.float32,
                                           device=p.device if p is not None else None)[None]).vertices[0].to("cpu", dt)
    centres, poles = eyeball_geometry(model, profile.eyeball_parts, rest)
    from ..geometry.rotations import axis_angle_to_matrix  # noqa: PLC0415

    R = axis_angle_to_matrix(torch.as_tensor(tracking.rotation[usable], dtype=dt))  # [F, 3, 3]
    tr = torch.as_tensor(tracking.translation[usable], dtype=dt)
    V = torch.as_tensor(tracking.viewmat, dtype=dt)
    K = torch.as_tensor(np.array(tracking.intrinsics(usable)), dtype=dt)
    # Landmarks in the capture's pixels, the intrinsics in the tracking's.
    scale = torch.tensor([tracking.width / capture.meta.width, tracking.height / capture.meta.height], dtype=dt)
    target = torch.as_tensor(face[usable][:, list(IRIS_CENTRES), :2], dtype=dt) * scale

    # Camera rays through the iris pixels, taken into each frame's unposed model space.
    pix = torch.cat((target, torch.ones_like(target[..., :1])), -1)  # [F, 2, 3]
    ray_cam = pix @ torch.linalg.inv(K).transpose(1, 2)
    ray_world = ray_cam @ V[:3, :3]  # V^T applied to each row
    origin_world = -V[:3, :3].T @ V[:3, 3]
    directions = ray_world @ R  # R^T applied to each row
    origins = ((origin_world - tr)[:, None] @ R).expand_as(directions)
    F = len(usable)
    angles = gaze_from_rays(centres.expand(F, 2, 3), poles.expand(F, 2, 3), origins, directions)
    angles = torch.as_tensor(hold_through_blinks(angles.numpy(), lids_open(face[usable])))  # shut lids: neighbours'
    both = angles.mean(1, keepdim=True).expand(F, 2, 2)
    both = (both - both[torch.as_tensor(train)].median(0).values) * torch.tensor([1.0, vertical], dtype=dt)
    return both.float().numpy(), tuple(profile.eyeball_parts)

"""Training data: a capture's frames and masks with the tracked mesh of every frame.

Frames are held in memory at the training resolution (uint8), posed vertices are computed
once for all frames (the tracking is fixed while training), and the last ``holdout``
fraction of the usable frames is kept out of training for evaluation (INSTA's protocol:
self-reenactment on the end of the video).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatar.io.capture import Capture
from avatar.io.tracking import BodyTrackedSequence, TrackedSequence


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

    radius = max(1, int(round(dilate * width)))

    def grow(m: Tensor) -> Tensor:
        return torch.nn.functional.max_pool2d(m.float()[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0

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
                keep = grow(head) & ~(grow(body) & ~head)
            else:
                keep = grow(head)
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
    neck_below_chin: float | None = None, progress: bool = False,
) -> FrameSet:
    """Read the usable frames (not flagged, tracked) at ``resolution`` and pose the mesh for each.

    ``mask``: "person" uses the capture's masks as they are (except in frames whose shoulders the
    tracking's shoulder state did not see: those are cut as "head" does); "head" cuts them to the tracked
    head's silhouette grown by ``head_dilate`` x width (hair), dropping the torso, and cut
    across the neck ``neck_below_chin`` metres under the chin (None: no cut); a body
    (``tracking`` a :class:`BodyTrackedSequence`) always trains on the whole person mask.
    ``progress``: a tqdm bar over the frames read.
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
    )

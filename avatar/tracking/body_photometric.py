"""Photometric refinement of a body tracking's global pose (``track.body.photometric``).

The landmark and silhouette fit (:mod:`.body_fit`) leaves each frame's turn a degree or two
off, and not the same way in every frame: a body seen from the front has a nearly symmetric
outline, and MediaPipe's face and shoulder points move by a pixel or two when it turns by two
degrees. Over a turnaround the error is not shared, so the frames that show the same side of
the body do not agree on where its texture is. An avatar trained on them learns a blur, and
a held-out frame whose turn is off by two degrees from the training frames that show the
same view is drawn shifted: on ``body_turnaround_512.mp4`` aligning each held-out frame's pose
to its image added about 1 dB (``avatar eval pose_steps=20``).

This stage is the body's counterpart of the head's :mod:`.photometric`: it refines each
frame's global rotation and translation so that the body's colours agree across frames.

- a few thousand vertices spread over the body (farthest-point sampling of the rest mesh)
  are posed with each frame's tracked joints, then turned and moved by the frame's
  correction, projected into the (blurred) frame, and the frame is sampled there;
- every vertex has one albedo (RGB) shared by all frames, lit by one second-order
  spherical-harmonics light in camera space (a camera on a stand: the light stays put while
  the body turns);
- the loss is a robust (Charbonnier) difference between the samples and albedo x light over
  the vertices a frame sees (nearest in a z-buffer of the whole body, facing the camera,
  inside the person mask), plus two anchors on what the landmark fit found: the visible
  pose landmarks' reprojection, and the person mask (sampled vertices off the mask, mask
  outline far from every vertex: the fit's own silhouette terms, :mod:`.silhouette`).
  Without the mask anchor the colours traded outline for texture (mask IoU 0.903 -> 0.900
  on the turnaround); with it the outline holds (0.904);
- colours fix the poses relative to each other only (a common turn of every frame is
  matched by the albedo sliding over the body), so the corrections keep zero mean over
  the frames: the sequence's average pose stays the landmark fit's;
- coarse to fine: the frames are blurred less and less; visibility is refreshed now and then.

The joints' rotations, the shape and the focal length stay the landmark fit's.

A frame's rotation turns the body about the root joint's rest position
(:meth:`avatar.models.body.BodyModel.skin`), so a correction ``(dR, dt)`` composes exactly
with the tracked pose: ``posed = dR R (X - root) + root + t + dt``, ``X`` the frame's skinned
body without global motion (skinned once, before the loop).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avatar.io.capture import Capture
from avatar.io.tracking import BodyTrackedSequence
from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..render import rasterize_mesh, vertex_normals
from .body_fit import project
from .body_points import spread_vertices
from .fit import geman_mcclure
from .silhouette import silhouette_targets
from .photometric import ColourModel, _grid, frames_at, pose_optimizer, seen_weights, stage_report


@dataclass
class BodyPhotometricConfig:
    """Options of :func:`refine_body_photometric` (``track.body.photometric``)."""

    iterations: int = 100        # Adam steps; 0 turns the stage off
    resolution: int = 128        # working width of the frames, pixels
    vertices: int = 3000         # body vertices sampled (spread evenly over the rest mesh)
    lr_rotation: float = 0.004   # radians
    lr_translation: float = 0.001  # metres
    lr_albedo: float = 0.02
    lr_light: float = 0.005
    lr_decay: float = 0.1        # learning rates end at this fraction (exponential decay)
    landmark_weight: float = 0.01  # visible pose landmarks, robust px^2 (working pixels) against the colour term
    robust_px: float = 8.0       # Geman-McClure scale of the landmark term, capture pixels
    min_visibility: float = 0.5  # landmarks less visible than this are left out of the anchor
    silhouette_weight: float = 0.03  # the person mask as a second anchor (robust px, working pixels): sampled
    # vertices off the mask and mask outline far from every vertex, as in the landmark fit's last stage
    silhouette_px: float = 1.0   # Huber scale of the silhouette terms, working pixels
    cover_tolerance_px: float = 0.5  # outline points this close to a projected vertex count as covered, working pixels
    outline_points: int = 160    # points taken along each mask's outline for the cover term
    blur: tuple[float, ...] = (2.0, 1.0, 0.5)  # Gaussian blur (working pixels) per equal part of the steps
    visibility_every: int = 25   # recompute which vertices each frame sees every n steps
    depth_tolerance: float = 0.02  # metres behind the z-buffer's nearest surface still counted as seen
    batch: int = 16              # frames skinned / rasterised at once
    seed: int = 0


def refine_body_photometric(capture: Capture, body, seq: BodyTrackedSequence, target: Tensor, valid: Tensor,
                            cfg: BodyPhotometricConfig, progress: bool = False
                            ) -> tuple[BodyTrackedSequence, dict]:
    """Refine ``seq``'s per-frame global rotation and translation photometrically (module doc).

    ``seq`` is in the capture's pixels (per-frame ``K``, the tracking camera); ``target
    [F, 33, 4]`` the capture's pose landmarks in the same pixels (x, y, z, visibility) and
    ``valid [F]`` the frames to use. Returns the refined sequence and a report of the stage."""
    if cfg.iterations <= 0:
        raise ValueError("track.body.photometric.iterations must be > 0 to run the photometric stage")
    t0 = time.perf_counter()
    device, dtype = body.template.device, body.template.dtype
    n_frames = seq.n_frames
    images, masks, K = frames_at(capture, seq, cfg.resolution, dtype, device)
    height, width = images.shape[-2:]
    load_seconds = time.perf_counter() - t0

    t = lambda a: torch.as_tensor(np.array(a), device=device, dtype=dtype)  # noqa: E731
    focal, principal = K[:, 0, 0, None, None], K[:, :2, 2][:, None]
    valid = torch.as_tensor(np.asarray(valid), device=device, dtype=torch.bool)
    target = target.to(device=device, dtype=dtype)
    target_px = target[..., :2] * target.new_tensor([width / seq.width, height / seq.height])
    lm_weight = ((target[..., 3] >= cfg.min_visibility) & valid[:, None]).to(dtype)
    shape, pose = t(seq.shape)[None], t(seq.pose)
    rotation0, translation0 = t(seq.rotation), t(seq.translation)
    R0 = axis_angle_to_matrix(rotation0)
    root = body.rest(shape)[1][0, 0]  # the root joint's rest position: the centre of the global turn
    faces = body.faces.to(device)
    pick = spread_vertices(body.template, cfg.vertices, seed=cfg.seed).to(device)
    viewmat = t(seq.viewmat)
    view_R, view_t = viewmat[:3, :3], viewmat[:3, 3]

    def to_camera(points: Tensor) -> Tensor:  # world -> the sequence's camera (the tracking camera: a flip)
        return points @ view_R.T + view_t

    silhouette = None
    if cfg.silhouette_weight > 0:  # in working pixels: a crop transform of scale 1 at the origin
        silhouette = silhouette_targets([m[0].cpu().numpy() for m in masks], np.ones(n_frames), np.zeros((n_frames, 2)),
                                        size=width, outline_count=cfg.outline_points, device=device, dtype=dtype)
        use_silhouette = (valid & silhouette.has_outline).to(dtype)

    def huber(d: Tensor) -> Tensor:
        return F.huber_loss(d, torch.zeros_like(d), reduction="none", delta=cfg.silhouette_px) * 2

    # Each frame's skinned body without global motion, about the root: the loop only turns and moves it.
    local = torch.empty(n_frames, len(pick), 3, device=device, dtype=dtype)
    normals = torch.empty_like(local)
    local_lm = torch.empty(n_frames, 33, 3, device=device, dtype=dtype)
    with torch.no_grad():
        for s in range(0, n_frames, cfg.batch):
            sl = slice(s, min(n_frames, s + cfg.batch))
            out = body(shape=shape, pose=pose[sl])
            local[sl] = out.vertices[:, pick] - root
            normals[sl] = vertex_normals(out.vertices, faces)[:, pick]
            local_lm[sl] = out.landmarks - root

    def rotations(d_rotation: Tensor) -> Tensor:
        return axis_angle_to_matrix(d_rotation) @ R0

    def posed(points: Tensor, R: Tensor, translation: Tensor) -> Tensor:
        return torch.einsum("bij,bvj->bvi", R, points) + root + translation[:, None]

    def visibility(d_rotation: Tensor, translation: Tensor) -> Tensor:
        """``[F, N]`` weights: 0 where hidden, else how frontally the vertex is seen."""
        out = []
        with torch.no_grad():
            R = rotations(d_rotation)
            for s in range(0, n_frames, cfg.batch):
                sl = slice(s, min(n_frames, s + cfg.batch))
                b = sl.stop - sl.start
                verts = body(shape=shape, pose=pose[sl], rotation=R[sl], translation=translation[sl]).vertices
                r = rasterize_mesh(verts, faces, K[sl], width, height, viewmats=viewmat[None].expand(b, -1, -1))
                depth = torch.where(r.mask, r.depth, torch.full_like(r.depth, 1e6))[:, None]
                cam = to_camera(posed(local[sl], R[sl], translation[sl]))
                n = torch.einsum("bij,bvj->bvi", R[sl], normals[sl]) @ view_R.T
                out.append(seen_weights(depth, masks[sl], cam, project(cam, focal[sl], principal[sl]), n, valid[sl],
                                        cfg.depth_tolerance, width, height))
        return torch.cat(out)

    colours = ColourModel(images, len(pick), cfg.blur, cfg.iterations, "track: body photometric", progress)
    d_rotation, d_translation, opt, decay = pose_optimizer(rotation0, translation0, colours, cfg)
    vis = visibility(d_rotation.detach(), translation0)
    if float(vis.sum()) <= 0:
        raise ValueError(f"{capture.root}: no body vertex is visible inside the person mask in any frame; is the "
                         "capture tracked? Set track.body.photometric.iterations=0 to skip this stage")
    landmark_scale = cfg.robust_px * width / seq.width  # working pixels
    for step in range(cfg.iterations):
        frames = colours.frames(step)
        R = rotations(d_rotation)
        translation = translation0 + d_translation
        if step and step % cfg.visibility_every == 0:
            vis = visibility(d_rotation.detach(), translation.detach())
        cam = to_camera(posed(local, R, translation))
        px = project(cam, focal, principal)
        colour = F.grid_sample(frames, _grid(px, width, height), align_corners=False,
                               padding_mode="border")[..., 0].transpose(1, 2)  # [F, N, 3]
        photo = colours.loss(colour, torch.einsum("bij,bvj->bvi", R, normals) @ view_R.T, vis, step)
        pixels = project(to_camera(posed(local_lm, R, translation)), focal, principal)
        e2 = ((pixels - target_px) ** 2).sum(-1)
        landmarks = (geman_mcclure(e2, landmark_scale) * lm_weight).sum() / lm_weight.sum().clamp_min(1)
        loss = photo + cfg.landmark_weight * landmarks
        if silhouette is not None:
            inside = huber(silhouette.inside_distance(px)).mean(-1)
            cover = huber(silhouette.cover_distance(px, cfg.cover_tolerance_px)).mean(-1)
            loss = loss + cfg.silhouette_weight * ((inside + cover) * use_silhouette).sum() / use_silhouette.sum().clamp_min(1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"track.body.photometric: the loss became {float(loss)} at step {step}; "
                                     "lower track.body.photometric.lr_rotation / lr_translation")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
        with torch.no_grad():  # colours pin poses relative to each other only: keep the landmark fit's mean pose
            for d in (d_rotation, d_translation):
                d.sub_(d[valid].mean(0))
        colours.done_step(photo)
    colour_loss = colours.close()

    with torch.no_grad():
        R = rotations(d_rotation)
        keep = valid[:, None]  # frames without data keep the fit's (interpolated) pose
        rotation = torch.where(keep, matrix_to_axis_angle(R), rotation0)
        # The turn is about the root; the translation is the model's, so it moves with the correction only.
        translation = torch.where(keep, translation0 + d_translation, translation0)
    out = dataclasses.replace(seq, rotation=rotation.cpu().numpy().astype(np.float32),
                              translation=translation.cpu().numpy().astype(np.float32))
    report = stage_report(cfg.iterations, t0, load_seconds, (width, height), len(pick), colour_loss,
                          (rotation0, rotation), (translation0, translation), valid)
    return out, report

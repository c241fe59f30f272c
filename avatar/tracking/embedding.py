"""MediaPipe face-mesh landmarks (478) embedded on a parametric head's surface.

The embedding is calibrated, not hand-made: the neutral head is rendered flat-shaded
(no texture) with :func:`avatar.render.render_mesh` from several yaws and pitches, the
real MediaPipe face mesh runs on each render, and every detected landmark is
back-projected to the visible surface (triangle id + barycentrics at its sub-pixel
position, bilinear over the four nearest pixel centres). Per landmark, the surface points
of all views are averaged with weights favouring views in which that point is seen
frontally (face-oval points: only the near-frontal views, since MediaPipe slides them onto
the silhouette as the head turns), and the average is snapped back to the closest point
of the rendered surface (``calibrate(look=, view_weights=)`` takes a textured head, e.g.
:func:`avatar.synthetic.texture.calibration_look`, and equal view weights instead: measured,
not the default; see docs/experiments.md). The result is ``faces [478]`` + ``bary [478, 3]``.
Exceptions: the two iris centres go to the front poles of the eyeballs, and eye-contour (lid
margin) points that land on an eyeball are moved onto the lid skin (see :data:`EYE_CONTOUR`).

What is rendered and which parts are the eyeballs and the lid skin come from the model's
tracking profile (:class:`avatar.models.profile.TrackingProfile`: ``calibration_parts``,
``eyeball_parts``, ``lid_part``); a model without eyeball parts keeps MediaPipe's iris
centres, one without a lid part its lid points. A profile with an ``embedding_path`` is
read from that file instead of calibrated.

MediaPipe's points also slide over the surface as the head turns (its mesh regresses
toward a frontal face), which biases a fit with fixed surface points: turns and nods come
out smaller than they are, and depth drifts with them. The calibration therefore fits,
per landmark and by weighted least squares over the views, a first-order model of that
sliding: the point at view direction ``d`` (unit vector from the head to the camera, in
the head's frame; ``(0, 0, 1)`` is frontal) is ``p0 + B (d_x, d_y)``, with ``p0`` the
snapped surface point and ``B [3, 2]`` the ``view_offsets`` (a ridge term keeps ``B`` small
where the views do not determine it). Fitters add ``B (d_x, d_y)`` at the current pose.

Cameras are OpenCV (x right, y down, z forward); the model world is +y up, +z toward the
viewer, so the frontal camera sits on +z with a 180-degree turn about x.

The calibrated embedding is cached in the user cache (``~/.cache/avatar/embeddings``),
keyed by a hash of the model's neutral mesh, faces and the rendered parts.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatar.geometry.mesh import face_normals, interpolate_barycentric
from avatar.models.profile import require_profile

log = logging.getLogger(__name__)

N_LANDMARKS = 478
IRIS = tuple(range(468, 478))  # 468 right-iris centre + 4 ring, 473 left-iris centre + 4 ring (MediaPipe order)
# MediaPipe's FACEMESH_FACE_OVAL vertices: the outline of the face; they lie on the
# silhouette, not on a fixed surface point, once the head turns.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
# (yaw, pitch) in radians of the calibration renders.
CALIBRATION_VIEWS = ((0.0, 0.0), (0.25, 0.0), (-0.25, 0.0), (0.45, 0.0), (-0.45, 0.0), (0.0, 0.2), (0.0, -0.2),
                     (0.25, 0.2), (-0.25, 0.2), (0.25, -0.2), (-0.25, -0.2), (0.0, 0.35), (0.0, -0.35))
VIEW_RIDGE = 0.05  # ridge weight on the view offsets (in units of summed view weights x direction^2)
# The iris centres (468 right, 473 left) are not calibrated with MediaPipe when the model
# has eyeball parts (the renders show no iris: its guess lands a few mm toward the nose,
# which would bias the gaze by ~10-20 degrees) but placed at the front pole of each eyeball
# (the profile's ``eyeball_parts``, right then left) at the neutral pose (looking straight
# ahead, +z).
IRIS_CENTRES = (468, 473)
# MediaPipe's eye contours (FACEMESH_RIGHT_EYE, FACEMESH_LEFT_EYE): the lid margins. On the
# untextured renders MediaPipe puts some upper-lid points a few mm too low, onto the
# eyeball, where a blink cannot move them; those are moved to the nearest point of the
# lid skin (the profile's ``lid_part``).
EYE_CONTOUR = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
               249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
EMBEDDING_FORMAT = 4
VIEW_WEIGHTS = ("frontal", "equal")


@dataclass
class LandmarkEmbedding:
    """478 surface points: ``faces [478]`` triangle ids into the model's faces,
    ``bary [478, 3]`` barycentrics, ``contour [478]`` bool (face-oval points), and
    ``view_offsets [478, 3, 2]`` (metres, model space): how each point slides with the view
    direction (see the module doc; None: no sliding)."""

    faces: Tensor
    bary: Tensor
    contour: Tensor
    view_offsets: Tensor | None = None

    def points(self, vertices: Tensor, faces: Tensor) -> Tensor:
        """Landmark positions ``[..., 478, 3]`` on ``vertices [..., V, 3]``."""
        return interpolate_barycentric(vertices, faces, self.faces, self.bary)

    def to(self, device=None, dtype=None) -> "LandmarkEmbedding":
        offsets = None if self.view_offsets is None else self.view_offsets.to(device=device, dtype=dtype)
        return LandmarkEmbedding(self.faces.to(device), self.bary.to(device=device, dtype=dtype), self.contour.to(device),
                                 offsets)


def view_directions(rotation: Tensor, camera_from_head: Tensor) -> Tensor:
    """``[..., 2]``: (x, y) of the unit direction from the head to the camera in the head's
    frame, for head rotations ``[..., 3, 3]`` and ``camera_from_head [..., 3]`` (camera centre
    minus head origin, world). ``(0, 0)`` is a frontal view."""
    d = torch.nn.functional.normalize(camera_from_head, dim=-1)
    return (rotation.transpose(-1, -2) @ d[..., None])[..., :2, 0]


@dataclass
class CalibrationCamera:
    """Fixed frontal pinhole camera for calibration renders (pixels, metres)."""

    width: int = 512
    height: int = 512
    focal: float = 1100.0
    distance: float = 0.75  # camera on +z, looking at the model origin

    def K(self, device=None, dtype=torch.float32) -> Tensor:
        return torch.tensor(
            [[self.focal, 0, self.width / 2], [0, self.focal, self.height / 2], [0, 0, 1]], device=device, dtype=dtype
        )

    def viewmat(self, device=None, dtype=torch.float32) -> Tensor:
        """World (+y up, +z to viewer) -> OpenCV camera: 180 degrees about x, then ``distance`` ahead."""
        return frontal_viewmat(self.distance, device=device, dtype=dtype)


def frontal_viewmat(distance: float, device=None, dtype=torch.float32) -> Tensor:
    """``[4, 4]`` world-to-camera of a camera on the world +z axis at ``distance`` looking at the origin."""
    return torch.tensor(
        [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, distance], [0, 0, 0, 1]], device=device, dtype=dtype
    )


def yaw_pitch_to_axis_angle(yaw: float, pitch: float) -> Tensor:
    """Axis-angle ``[3]`` of R = Ry(yaw) @ Rx(pitch) (head turn, then nod)."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    R = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    angle = math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2)))
    if angle < 1e-9:
        return torch.zeros(3)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * math.sin(angle))
    return torch.tensor(axis * angle, dtype=torch.float32)


def part_faces(model, parts=None) -> Tensor:
    """Indices ``[F']`` of the model's faces belonging to any of ``parts`` (names absent in the model are
    skipped; default: the tracking profile's ``calibration_parts``)."""
    parts = calibration_parts(model, parts)

    def wanted(name: str) -> bool:  # "eyeballs" selects "eyeball_left" and "eyeball_right"
        side = name.rsplit("_", 1)
        return name in parts or (len(side) == 2 and side[1] in ("left", "right") and side[0] + "s" in parts)

    masks = [p.faces for n, p in model.parts.items() if wanted(n)]
    if not masks:
        raise ValueError(f"model '{model.name}' has none of the parts {parts}; it has {tuple(model.parts)}")
    return torch.stack(masks).any(0).nonzero().squeeze(1)


def render_for_mediapipe(vertices: Tensor, faces: Tensor, K: Tensor, viewmat: Tensor, width: int, height: int,
                         look: dict | None = None):
    """Render ``uint8 [H, W, 3]`` and its :class:`MeshRaster` (triangle ids index ``faces``) through
    the pinhole ``K [3, 3]`` / world-to-camera ``viewmat [4, 4]`` (e.g. :class:`CalibrationCamera`'s).
    ``look``: :func:`render_mesh` keywords for the albedo and light (e.g.
    :func:`avatar.synthetic.texture.calibration_look`); None: flat-shaded grey."""
    from avatar.render import render_mesh  # noqa: PLC0415

    out = render_mesh(vertices, faces, K.to(vertices), width, height, viewmat.to(vertices), background=0.0,
                      **(look if look is not None else {"shading": "flat"}))
    image = (out.image[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    return image, out.raster


def backproject(points_px: Tensor, raster, attr: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Per-vertex ``attr [V, C]`` at sub-pixel positions ``points_px [L, 2]`` of one raster.

    Bilinear over the four nearest pixel centres that are covered. Returns values ``[L, C]``
    and ``ok [L]`` (False where none of the four is covered).
    """
    from avatar.render import interpolate  # noqa: PLC0415

    amap = interpolate(attr, faces, raster)[0]  # [H, W, C]
    covered = raster.mask[0]
    H, W = covered.shape
    xy = points_px - 0.5  # pixel centres at integers
    x0, y0 = xy[:, 0].floor().long(), xy[:, 1].floor().long()
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    total = torch.zeros(len(xy), attr.shape[1], dtype=attr.dtype)
    wsum = torch.zeros(len(xy), dtype=attr.dtype)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = (x0 + dx).clamp(0, W - 1), (y0 + dy).clamp(0, H - 1)
        w = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        w = w * covered[yi, xi].to(attr.dtype)
        total += w[:, None] * amap[yi, xi]
        wsum += w
    ok = wsum > 1e-6
    return total / wsum.clamp_min(1e-6)[:, None], ok


def closest_surface_points(points: Tensor, vertices: Tensor, faces: Tensor, k: int = 64) -> tuple[Tensor, Tensor]:
    """Closest points on a triangle mesh: triangle ids ``[P]`` and barycentrics ``[P, 3]``.

    Exact among the ``k`` triangles with the nearest centroids (enough for points that are
    already close to the surface, as here).
    """
    tri = vertices[faces]  # [F, 3, 3]
    cand = torch.cdist(points, tri.mean(1)).topk(min(k, len(faces)), largest=False).indices  # [P, k]
    a, b, c = tri[cand].unbind(-2)  # [P, k, 3]
    p = points[:, None].expand_as(a)
    # Projection on the plane, barycentrics by areas.
    n = torch.linalg.cross(b - a, c - a)
    nn = (n * n).sum(-1).clamp_min(1e-30)
    q = p - ((p - a) * n).sum(-1, keepdim=True) * n / nn[..., None]
    u = (torch.linalg.cross(c - b, q - b) * n).sum(-1) / nn
    v = (torch.linalg.cross(a - c, q - c) * n).sum(-1) / nn
    inside = torch.stack((u, v, 1 - u - v), -1)
    best_bary, best_d = inside, torch.where((inside >= 0).all(-1), ((p - q) ** 2).sum(-1), torch.inf)
    # Else the closest point lies on an edge.
    for i, j in ((0, 1), (1, 2), (2, 0)):
        e0, e1 = (a, b, c)[i], (a, b, c)[j]
        t = (((p - e0) * (e1 - e0)).sum(-1) / ((e1 - e0) ** 2).sum(-1).clamp_min(1e-30)).clamp(0, 1)
        d = ((p - (e0 + t[..., None] * (e1 - e0))) ** 2).sum(-1)
        bary = torch.zeros_like(inside)
        bary[..., i], bary[..., j] = 1 - t, t
        better = d < best_d
        best_d = torch.where(better, d, best_d)
        best_bary = torch.where(better[..., None], bary, best_bary)
    idx = best_d.argmin(1)
    rows = torch.arange(len(points))
    return cand[rows, idx].to(faces.dtype), best_bary[rows, idx]


def calibration_parts(model, parts=None) -> tuple[str, ...]:
    """``parts``, or the model's tracking profile's ``calibration_parts`` when None."""
    return tuple(parts) if parts is not None else require_profile(model).calibration_parts


def calibrate(model, views=CALIBRATION_VIEWS, camera: CalibrationCamera | None = None, parts=None,
              look: dict | None = None, view_weights: str = "frontal") -> tuple[LandmarkEmbedding, dict]:
    """Calibrate the 478-landmark embedding of ``model`` with MediaPipe (see the module doc).

    ``parts``: the parts rendered (default: the tracking profile's). ``look``: None (flat grey;
    the default and what :func:`load_embedding` caches) or :func:`render_mesh` keywords for the
    parts' faces (:func:`avatar.synthetic.texture.calibration_look`: ICT textured).
    ``view_weights``: ``frontal`` (each view weighted by how frontally it sees the point, cos^4)
    or ``equal`` (every view that sees it). Returns the embedding and a report (views used,
    per-view detection, spread of the per-view surface points in mm). Raises
    :class:`~avatar.models.profile.TrackingProfileError` for a model without a profile,
    ValueError for an unknown option.
    """
    if view_weights not in VIEW_WEIGHTS:
        raise ValueError(f"view_weights must be one of {', '.join(VIEW_WEIGHTS)}, got {view_weights!r}")
    from avatar.landmarks.face_mesh import FaceMeshDetector  # noqa: PLC0415

    profile = require_profile(model)
    parts = calibration_parts(model, parts)
    camera = camera or CalibrationCamera()
    K, viewmat = camera.K(), camera.viewmat()
    sub = part_faces(model, parts)
    faces = model.faces[sub]
    with torch.no_grad():
        template = model().vertices[0].float()
        fn_template = face_normals(template[None], model.faces)[0]
    contour = torch.zeros(N_LANDMARKS, dtype=torch.bool)
    contour[list(FACE_OVAL)] = True

    pts, wts, found, dirs = [], [], [], []
    with FaceMeshDetector(video=False, max_faces=1) as det:
        for yaw, pitch in views:
            rot = yaw_pitch_to_axis_angle(yaw, pitch)
            with torch.no_grad():
                posed = turned_about_origin(model, rot[None].to(template))[0].float()
            image, raster = render_for_mediapipe(posed[None], faces, K, viewmat, camera.width, camera.height, look)
            faces_found = det.detect(image)
            found.append(bool(faces_found))
            if not faces_found:
                log.warning("calibration: MediaPipe found no face at yaw %.2f pitch %.2f", yaw, pitch)
                continue
            lmk = torch.from_numpy(faces_found[0].landmarks[:, :2]).float()
            canon, ok = backproject(lmk, raster, template, faces)
            # Frontality of the surface point in this view: normal . direction to the camera.
            tid = raster.triangle_id[0, lmk[:, 1].long().clamp(0, camera.height - 1), lmk[:, 0].long().clamp(0, camera.width - 1)]
            R = _rotation_matrix(rot)
            n_world = fn_template[sub[tid.clamp_min(0)]] @ R.T
            cam_pos = torch.tensor([0.0, 0.0, camera.distance])
            p_world = canon @ R.T
            to_cam = torch.nn.functional.normalize(cam_pos - p_world, dim=-1)
            cos = (n_world * to_cam).sum(-1).clamp_min(0) * (tid >= 0)
            w = cos**4 * ok if view_weights == "frontal" else ((cos > 0) & ok).to(cos)
            # Face-oval points belong to the silhouette: trust only near-frontal views for them.
            if abs(yaw) > 0.3:
                w = torch.where(contour, torch.zeros_like(w), w)
            pts.append(canon)
            wts.append(w)
            dirs.append(view_directions(R, cam_pos))
    if not pts:
        raise RuntimeError(f"MediaPipe found no face on any calibration render of model '{model.name}' "
                           f"(parts {list(parts)}): is it a head seen from the front along +z, in metres?")
    P, Wt = torch.stack(pts), torch.stack(wts)  # [views, L, 3], [views, L]
    if (Wt.sum(0) <= 0).any():
        missing = (Wt.sum(0) <= 0).nonzero().squeeze(1).tolist()
        raise RuntimeError(f"landmarks {missing[:10]}... were not seen on any calibration render")
    mean, offsets = fit_view_model(P, Wt, torch.stack(dirs))
    spread = (((P - mean) ** 2).sum(-1).sqrt() * (Wt > 0)).sum(0) / (Wt > 0).sum(0)
    tri, bary = closest_surface_points(mean, template, faces)
    tri = sub[tri]
    on_lids = lid_points(model, tri, profile.eyeball_parts, profile.lid_part)
    if on_lids is not None and len(on_lids[0]):
        idx = on_lids[0]
        t1, b1 = closest_surface_points(interpolate_barycentric(template, model.faces, tri[idx], bary[idx]),
                                        template, model.faces[on_lids[1]])
        tri[idx], bary[idx] = on_lids[1][t1], b1
    for idx, part in zip(IRIS_CENTRES, profile.eyeball_parts or ()):  # straight-ahead iris: the eyeball's front pole
        if part in model.parts:
            on_part = model.parts[part].faces.nonzero().squeeze(1)
            eye = template[model.parts[part].vertices]
            t1, b1 = closest_surface_points(eye[eye[:, 2].argmax()][None], template, model.faces[on_part])
            tri[idx], bary[idx] = on_part[t1[0]], b1[0]
            offsets[idx] = 0.0
    emb = LandmarkEmbedding(faces=tri, bary=bary, contour=contour, view_offsets=offsets)
    P0 = emb.points(template, model.faces)
    resid = P - (P0 + torch.einsum("lkd,vd->vlk", offsets, torch.stack(dirs)))
    fitted = ((resid.norm(dim=-1) * (Wt > 0)).sum(0) / (Wt > 0).sum(0))
    report = {
        "views": [list(v) for v in views],
        "appearance": "flat" if look is None else "textured",
        "view_weights": view_weights,
        "detected": found,
        "spread_mm_median": round(float(spread.median()) * 1e3, 3),
        "spread_mm_p95": round(float(spread.quantile(0.95)) * 1e3, 3),
        "residual_with_view_model_mm_median": round(float(fitted.median()) * 1e3, 3),
        "view_offset_mm_median": round(float(offsets.norm(dim=1).amax(-1).median()) * 1e3, 3),
    }
    return emb, report


def turned_about_origin(model, rotation: Tensor) -> Tensor:
    """The neutral model's vertices ``[1, V, 3]`` turned by ``rotation [1, 3]`` (axis-angle) about the
    model origin; a skinned model turns about its root joint, so it is moved back by ``R j - j``."""
    out = model(rotation=rotation)
    if out.joints is None:
        return out.vertices
    j = model().joints[:, 0]  # [1, 3] the root joint at rest
    return out.vertices + (_rotation_matrix(rotation[0]) @ j[0] - j[0])


def lid_points(model, tri: Tensor, eyeball_parts, lid_part: str | None) -> tuple[Tensor, Tensor] | None:
    """The :data:`EYE_CONTOUR` landmarks whose triangle ``tri [478]`` lies on one of ``eyeball_parts``,
    and the triangles of ``lid_part`` to move them onto; None when the model has no such parts."""
    parts = getattr(model, "parts", None) or {}
    eyeballs = [parts[n].faces for n in eyeball_parts or () if n in parts]
    if not eyeballs or lid_part not in parts:
        return None
    on_eyeball = torch.stack(eyeballs).any(0)
    contour = torch.tensor(EYE_CONTOUR, device=tri.device)
    return contour[on_eyeball[tri[contour]]], parts[lid_part].faces.nonzero().squeeze(1)


def fit_view_model(P: Tensor, W: Tensor, dirs: Tensor, ridge: float = VIEW_RIDGE) -> tuple[Tensor, Tensor]:
    """Per landmark, weighted least squares ``P[v] ~ p0 + B dirs[v]`` over the views.

    ``P [V, L, 3]`` surface points per view, ``W [V, L]`` weights, ``dirs [V, 2]``.
    Returns ``p0 [L, 3]`` and ``B [L, 3, 2]``; the ridge ``ridge * sum(W)`` on ``B`` keeps it
    near 0 where the weighted views do not spread in direction.
    """
    X = torch.cat((torch.ones_like(dirs[:, :1]), dirs), -1).to(P)  # [V, 3]
    A = torch.einsum("vl,vi,vj->lij", W, X, X)  # [L, 3, 3]
    reg = torch.diag(X.new_tensor([0.0, 1.0, 1.0]))
    A = A + ridge * W.sum(0)[:, None, None] * reg + 1e-9 * torch.eye(3, dtype=P.dtype)
    rhs = torch.einsum("vl,vi,vlk->lik", W, X, P)  # [L, 3, 3]
    beta = torch.linalg.solve(A, rhs)  # [L, 3 (1, dx, dy), 3 (xyz)]
    return beta[:, 0], beta[:, 1:].transpose(-1, -2)


def _rotation_matrix(axis_angle: Tensor) -> Tensor:
    from avatar.geometry.rotations import axis_angle_to_matrix  # noqa: PLC0415

    return axis_angle_to_matrix(axis_angle[None])[0]


def model_key(model, parts=None) -> str:
    """16 hex digits identifying a model's neutral mesh, faces and the calibration parts
    (default: the tracking profile's)."""
    parts = calibration_parts(model, parts)
    h = hashlib.sha256()
    h.update(f"{model.name}:{EMBEDDING_FORMAT}:{','.join(parts)}:{CALIBRATION_VIEWS}".encode())
    with torch.no_grad():
        h.update(np.ascontiguousarray(model().vertices[0].float().cpu().numpy()).round(6).tobytes())
    h.update(np.ascontiguousarray(model.faces.cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


def embedding_path(model, cache_dir: str | Path | None = None) -> Path:
    from avatar.models.assets import user_cache_dir  # noqa: PLC0415

    folder = Path(cache_dir).expanduser() if cache_dir else user_cache_dir() / "embeddings"
    return folder / f"mediapipe478-{model.name}-{model_key(model)}.npz"


def load_embedding(model, cache_dir: str | Path | None = None, recalibrate: bool = False) -> LandmarkEmbedding:
    """The model's 478-landmark embedding, calibrated once (a few seconds) then read from the cache;
    or read from the tracking profile's ``embedding_path`` when it names one (see
    :func:`read_embedding`).

    Raises :class:`~avatar.models.profile.TrackingProfileError` for a model without a profile.
    """
    from avatar.models.assets import atomic_savez  # noqa: PLC0415

    profile = require_profile(model)
    if profile.embedding_path:
        emb = read_embedding(profile.embedding_path, model.faces.shape[0])
        return emb.to(model.faces.device, model.template.dtype if hasattr(model, "template") else None)
    path = embedding_path(model, cache_dir)
    if recalibrate or not path.exists():
        emb, report = calibrate(model)
        atomic_savez(path, faces=emb.faces.numpy(), bary=emb.bary.numpy(), contour=emb.contour.numpy(),
                     view_offsets=emb.view_offsets.numpy())
        log.info("calibrated the MediaPipe landmark embedding of %s -> %s (%s)", model.name, path, report)
    with np.load(path, allow_pickle=False) as z:
        emb = LandmarkEmbedding(torch.from_numpy(z["faces"]).long(), torch.from_numpy(z["bary"]).float(),
                                torch.from_numpy(z["contour"]).bool(), torch.from_numpy(z["view_offsets"]).float())
    device = model.faces.device
    return emb.to(device, model.template.dtype if hasattr(model, "template") else None)


def read_embedding(path: str | Path, num_faces: int) -> LandmarkEmbedding:
    """A 478-landmark embedding from a file: an ``.npz`` with ``faces [478]`` + ``bary [478, 3]``
    (optional ``contour [478]``, ``view_offsets [478, 3, 2]``; what :func:`load_embedding` caches),
    or any file with a face-index / barycentric key pair that
    :func:`avatar.models.flame.read_landmark_embedding` reads. ``num_faces``: the model's
    triangle count (indices are checked against it)."""
    from avatar.models.flame import read_landmark_embedding  # noqa: PLC0415
    from avatar.models.restricted_pickle import load_arrays  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark embedding file not found: {path}")
    data = load_arrays(path)
    if "faces" in data and "bary" in data:
        faces = np.asarray(data["faces"], np.int64).reshape(-1)
        bary = np.asarray(data["bary"], np.float32).reshape(-1, 3)
    else:
        faces, bary = read_landmark_embedding(path)
    if len(faces) != N_LANDMARKS or len(bary) != N_LANDMARKS:
        raise ValueError(f"{path}: a MediaPipe embedding needs {N_LANDMARKS} points, found {len(faces)} faces and "
                         f"{len(bary)} barycentrics")
    if faces.min() < 0 or faces.max() >= num_faces:
        raise ValueError(f"{path}: triangle indices {faces.min()}..{faces.max()} outside the model's {num_faces}")
    contour = np.zeros(N_LANDMARKS, bool)
    contour[list(FACE_OVAL)] = True
    contour = np.asarray(data.get("contour", contour), bool).reshape(-1)
    offsets = data.get("view_offsets")
    return LandmarkEmbedding(torch.from_numpy(faces), torch.from_numpy(bary), torch.from_numpy(contour),
                             None if offsets is None else torch.from_numpy(np.asarray(offsets, np.float32)))


def reprojection_errors(model, emb: LandmarkEmbedding, cases, camera: CalibrationCamera | None = None,
                        parts=None, look: dict | None = None) -> dict[str, np.ndarray]:
    """Pixel distance between MediaPipe on renders of ``model`` (``look`` as in :func:`calibrate`)
    and the projected embedding.

    ``cases``: list of dicts of model inputs (``rotation [1, 3]``, ``expression [1, E]``,
    ``shape``...). Returns ``{"all": [n, 478] px (NaN where no face), "found": [n] bool}``.
    """
    from avatar.landmarks.face_mesh import FaceMeshDetector  # noqa: PLC0415

    camera = camera or CalibrationCamera()
    sub = part_faces(model, parts)
    K, vm = camera.K(), camera.viewmat()
    errors, found = [], []
    with FaceMeshDetector(video=False, max_faces=1) as det, torch.no_grad():
        for case in cases:
            verts = model(**case).vertices.float()
            image, _ = render_for_mediapipe(verts, model.faces[sub], K, vm, camera.width, camera.height, look)
            dets = det.detect(image)
            found.append(bool(dets))
            if not dets:
                errors.append(np.full(N_LANDMARKS, np.nan))
                continue
            p = emb.points(verts[0], model.faces)
            if emb.view_offsets is not None and "rotation" in case:
                R = _rotation_matrix(torch.as_tensor(case["rotation"]).reshape(3).float())
                centre = -(vm[:3, :3].T @ vm[:3, 3])  # camera centre, world
                d = view_directions(R, centre - torch.as_tensor(case.get("translation", torch.zeros(1, 3))).reshape(3).float())
                p = p + torch.einsum("lkd,d->lk", emb.view_offsets.float(), d) @ R.T
            p = p @ vm[:3, :3].T + vm[:3, 3]
            px = (p @ K.T)[:, :2] / p[:, 2:]
            errors.append(np.linalg.norm(px.numpy() - dets[0].landmarks[:, :2], axis=1))
    return {"all": np.stack(errors), "found": np.array(found)}

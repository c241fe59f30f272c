"""A face texture for the ICT-FaceKit head, projected from a public-domain portrait.

MediaPipe only finds faces that look like faces; a flat-shaded head is found at small
angles, a textured one across the poses a synthetic capture needs. The texture comes
from ``skimage.data.astronaut()`` (NASA portrait, public domain):

1. MediaPipe face mesh on the photo; the ICT head is fitted to it (:func:`fit_photo`:
   rotation and translation seen by a pinhole camera with a long focal, i.e. near weak
   perspective, plus the first identity modes and jaw/smile expressions, regularised) on a
   dozen corresponding points (eye corners, nasion, nose tip, subnasale, mouth corners,
   lips, chin: :data:`FIT_CORRESPONDENCES`).
2. Every texel of the atlas gets its surface point on the fitted mesh (the UV layout is
   rasterized with the mesh rasterizer), which is projected into the photo; texels that are visible there
   (depth test, facing the camera) and inside the MediaPipe face outline take the photo's
   colour, feathered at the outline and at grazing angles. Texels seen only through
   their mirror point (x -> -x on the model) take that colour.
3. Everything else is filled: skin sampled from the cheeks with mild low-frequency noise,
   dark hair on the back and top of the head, a dark mouth socket, pink gums and tongue,
   off-white teeth, and eyeballs with a sclera, iris and pupil.

Atlas layout: ICT's UVs put each group of parts in its own unit tile along ``u`` (tile 0:
face; 1: head and neck, mouth socket, eye sockets; 2: gums and tongue; 3: teeth) and both
eyeballs in tile 0, on top of the face. The atlas is a row of :data:`N_TILES` square tiles
of ``tile_size`` texels: tiles 0-3 are ICT's, tile 4 the left eyeball, tile 5 the right
one. :func:`atlas_uvs` gives per-corner UVs (OBJ convention, 0..1 over the whole atlas)
for :func:`avatar.render.render_mesh` with ``texture_wrap="clamp"``.

Building takes a few seconds; :func:`load_or_build_texture` caches the atlas as a PNG
(atomic write) keyed by the model source, the photo and the tile size.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avatar.geometry.cameras import intrinsics, look_at
from avatar.geometry.rotations import axis_angle_to_matrix
from avatar.io.atomic import atomic_write
from avatar.models.assets import user_cache_dir
from avatar.render import interpolate, rasterize_mesh, vertex_normals

log = logging.getLogger(__name__)

TEXTURE_VERSION = 3
N_TILES = 6  # ICT tiles 0-3, then eyeball_left, eyeball_right
EYEBALL_TILES = {"eyeball_left": 4, "eyeball_right": 5}

# (iBUG-68 index on the ICT model, MediaPipe face-mesh index) of the same anatomical point.
FIT_CORRESPONDENCES: tuple[tuple[int, int], ...] = (
    (36, 33),  # right eye outer corner (image left)
    (39, 133),  # right eye inner corner
    (42, 362),  # left eye inner corner
    (45, 263),  # left eye outer corner
    (27, 168),  # nasion
    (30, 1),  # nose tip
    (33, 2),  # subnasale
    (48, 61),  # right mouth corner
    (54, 291),  # left mouth corner
    (51, 0),  # upper lip, top centre
    (57, 17),  # lower lip, bottom centre
    (8, 152),  # chin
)
FIT_SHAPE_MODES = 10  # identity modes refined in the photo fit
FIT_EXPRESSIONS = ("jawOpen", "mouthSmile_L", "mouthSmile_R")  # the portrait smiles
CHEEK_LANDMARKS = (50, 280, 101, 330)  # MediaPipe points on both cheeks (skin samples)

# Fill albedos (RGB 0..1) of the parts the photo never shows.
HAIR = (0.23, 0.16, 0.11)
MOUTH_SOCKET = (0.30, 0.10, 0.10)
GUMS_AND_TONGUE = (0.66, 0.30, 0.30)
TEETH = (0.90, 0.88, 0.82)
EYE_SOCKET = (0.55, 0.33, 0.30)
SCLERA = (0.90, 0.88, 0.85)
IRIS = (0.33, 0.22, 0.13)
PUPIL = (0.04, 0.03, 0.03)
PHOTO_FOCAL = 2.0  # the photo camera's focal, in image widths (near weak perspective)


@dataclass
class HeadTexture:
    """An atlas ``[T, N_TILES * T, 3]`` uint8 for the ICT head (layout in the module doc).

    Attributes:
        atlas: the texture image (row 0 is ``v = 1``).
        path: the cache file it was read from or written to (None when not cached).
        from_cache: True when it was read from the cache rather than built.
    """

    atlas: np.ndarray
    path: Path | None = None
    from_cache: bool = False

    def as_tensor(self, device=None, dtype=torch.float32) -> Tensor:
        """``[T, N_TILES * T, 3]`` in 0..1 for :func:`avatar.render.render_mesh`."""
        return torch.as_tensor(self.atlas, device=device).to(dtype) / 255.0


def face_tiles(model) -> Tensor:
    """``[F]`` atlas tile of each face: ICT's UV tile, or 4/5 for the eyeballs."""
    uv = model.uvs[model.uv_faces]  # [F, 3, 2]
    tile = torch.floor(uv[..., 0].mean(1)).long().clamp(0, 3)
    for name, t in EYEBALL_TILES.items():
        if name in model.parts:
            tile = torch.where(model.parts[name].faces, torch.full_like(tile, t), tile)
    return tile


def atlas_uvs(model) -> tuple[Tensor, Tensor]:
    """Per-corner atlas UVs ``[F * 3, 2]`` and ``uv_faces [F, 3]`` (``arange``) of an ICT model."""
    tile = face_tiles(model)
    uv = model.uvs[model.uv_faces].clone()  # [F, 3, 2]
    home = torch.floor(uv[..., 0].mean(1, keepdim=True))  # ICT tile the face lies in
    uv[..., 0] = (tile[:, None] + uv[..., 0] - home) / N_TILES
    F = uv.shape[0]
    return uv.reshape(F * 3, 2), torch.arange(F * 3, device=uv.device).reshape(F, 3)


# ---------------------------------------------------------------------------------------
# Fitting the neutral head to the photo


def photo_camera(width: int, height: int) -> tuple[Tensor, Tensor]:
    """``K [3, 3]`` and ``viewmat [4, 4]`` of the photo: the camera on +z looking at the origin."""
    f = PHOTO_FOCAL * width
    distance = 1.0  # metres; the fitted translation moves the head to the right depth
    K = intrinsics(f, f, width / 2, height / 2)
    viewmat = look_at(torch.tensor([0.0, 0.0, distance]), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))
    return K, viewmat


def project(points: Tensor, K: Tensor, viewmat: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels ``[..., 2]`` and camera depth ``[...]`` of world points ``[..., 3]``."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    xy = cam @ K.T
    return xy[..., :2] / xy[..., 2:3], cam[..., 2]


@dataclass
class PhotoFit:
    """The ICT head fitted to the photo: ``rotation [3]`` axis-angle, ``translation [3]``
    metres, ``shape [S]`` and ``expression [E]`` coefficients, ``rms`` pixel error."""

    rotation: np.ndarray
    translation: np.ndarray
    shape: np.ndarray
    expression: np.ndarray
    rms: float


def fit_photo(
    model,
    points2d: np.ndarray,  # [N, 2] pixels of FIT_CORRESPONDENCES' MediaPipe points
    K: Tensor,
    viewmat: Tensor,
    num_shape: int = FIT_SHAPE_MODES,
    expressions: tuple[str, ...] = FIT_EXPRESSIONS,
    shape_weight: float = 4.0,
    expression_weight: float = 2.0,
) -> PhotoFit:
    """Fit pose, the first ``num_shape`` identity modes and a few ``expressions`` (in 0..1)
    so that the model's :data:`FIT_CORRESPONDENCES` points project onto ``points2d``.

    The points are linear in the coefficients (barycentric landmarks), so their basis is
    evaluated once; the coefficients are regularised toward 0 (``*_weight`` pixels per
    unit coefficient).
    """
    from scipy.optimize import least_squares  # noqa: PLC0415

    ict_idx = [i for i, _ in FIT_CORRESPONDENCES]
    n_expr = len(expressions)
    basis_shape = torch.zeros(1 + num_shape + n_expr, model.num_shape)
    basis_expr = torch.zeros(1 + num_shape + n_expr, model.num_expression)
    basis_shape[1 : 1 + num_shape, :num_shape] = torch.eye(num_shape)
    for k, name in enumerate(expressions):
        basis_expr[1 + num_shape + k, model.expression_names.index(name)] = 1.0
    with torch.no_grad():
        lmk = model(shape=basis_shape, expression=basis_expr).landmarks[:, ict_idx].double().numpy()
    rest, dirs = lmk[0], lmk[1:] - lmk[:1]  # [N, 3], [C, N, 3]
    target = np.asarray(points2d, dtype=np.float64)
    K64, vm64 = K.double(), viewmat.double()
    weights = np.concatenate((np.full(num_shape, shape_weight), np.full(n_expr, expression_weight)))

    def residuals(x: np.ndarray) -> np.ndarray:
        points = torch.as_tensor(rest + np.tensordot(x[6:], dirs, axes=1))
        xt = torch.as_tensor(x[:6])
        posed = points @ axis_angle_to_matrix(xt[:3]).T + xt[3:]
        reprojection = (project(posed, K64, vm64)[0].numpy() - target).ravel()
        return np.concatenate((reprojection, weights * x[6:]))

    # Initial depth from the span of the outer eye corners, in pixels vs metres.
    span3d = float(np.linalg.norm(rest[3] - rest[0]))
    span2d = float(np.linalg.norm(target[3] - target[0]))
    depth = float(K[0, 0]) * span3d / max(span2d, 1.0)
    eye_z = float(torch.linalg.inv(viewmat)[2, 3])
    x0 = np.concatenate(([0.0, 0.0, 0.0, 0.0, 0.0, eye_z - depth], np.zeros(num_shape + n_expr)))
    lower = np.concatenate((np.full(6, -np.inf), np.full(num_shape, -3.0), np.zeros(n_expr)))
    upper = np.concatenate((np.full(6, np.inf), np.full(num_shape, 3.0), np.ones(n_expr)))
    sol = least_squares(residuals, x0, bounds=(lower, upper), method="trf")
    reprojection = sol.fun[: 2 * len(target)].reshape(-1, 2)
    shape = np.zeros(model.num_shape, np.float32)
    shape[:num_shape] = sol.x[6 : 6 + num_shape]
    expression = np.zeros(model.num_expression, np.float32)
    for k, name in enumerate(expressions):
        expression[model.expression_names.index(name)] = sol.x[6 + num_shape + k]
    return PhotoFit(sol.x[:3], sol.x[3:6], shape, expression, float(np.sqrt((reprojection**2).sum(1).mean())))


# ---------------------------------------------------------------------------------------
# Per-texel surface samples


@dataclass
class TexelSurface:
    """Surface samples of the atlas texels covered by the UV layout.

    ``texel [P]`` flat atlas indices; ``position``/``normal [P, 3]`` on the neutral model;
    ``fitted``/``fitted_normal [P, 3]`` on the given rest mesh (unposed; e.g. the photo
    fit's identity and expression); ``part [P]`` index into ``model.part_names``; ``tile [P]``."""

    texel: Tensor
    position: Tensor
    normal: Tensor
    fitted: Tensor
    fitted_normal: Tensor
    part: Tensor
    tile: Tensor


def texel_surface(model, tile_size: int, fitted_vertices: Tensor | None = None) -> TexelSurface:
    """Rasterize the atlas UV layout (UV plane as a camera-space mesh at depth 1, ``K = I``)
    and interpolate the neutral mesh and ``fitted_vertices [V, 3]`` (default: neutral) at each texel."""
    T, W = tile_size, tile_size * N_TILES
    uv, uv_faces = atlas_uvs(model)
    plane = torch.stack((uv[:, 0] * W, (1.0 - uv[:, 1]) * T, torch.ones_like(uv[:, 0])), dim=-1)
    raster = rasterize_mesh(plane, uv_faces, torch.eye(3), W, T)
    neutral = model().vertices[0]
    fitted = neutral if fitted_vertices is None else fitted_vertices
    corners = model.faces.reshape(-1)
    per_vertex = (neutral, vertex_normals(neutral, model.faces), fitted, vertex_normals(fitted, model.faces))
    attrs = torch.cat([v[corners] for v in per_vertex], dim=-1)  # [F * 3, 12]
    values = interpolate(attrs, uv_faces, raster)[0].reshape(T * W, 12)
    tid = raster.triangle_id.reshape(-1)
    texel = (tid >= 0).nonzero().squeeze(1)
    values, face = values[texel], tid[texel]
    part_of_face = model.part_face_masks.float().argmax(0)  # [F]
    unit = torch.nn.functional.normalize
    return TexelSurface(
        texel=texel, position=values[:, :3], normal=unit(values[:, 3:6], dim=-1),
        fitted=values[:, 6:9], fitted_normal=unit(values[:, 9:12], dim=-1),
        part=part_of_face[face], tile=face_tiles(model)[face],
    )


# ---------------------------------------------------------------------------------------
# Photo projection and fill


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample ``image [H, W, C]`` at pixel positions ``xy [P, 2]`` (pixel centres at +0.5)."""
    H, W = image.shape[:2]
    grid = torch.as_tensor(xy, dtype=torch.float32) / torch.tensor([W, H]) * 2.0 - 1.0
    img = torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]
    out = torch.nn.functional.grid_sample(img, grid[None, None], align_corners=False, padding_mode="border")
    return out[0, :, 0].T.numpy()


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def photo_weights(
    surf_points: Tensor,  # [P, 3] posed (world) surface points
    surf_normals: Tensor,  # [P, 3] posed normals
    posed_vertices: Tensor,  # [V, 3]
    faces: Tensor,
    K: Tensor,
    viewmat: Tensor,
    face_region: np.ndarray,  # [H, W] float32 distance inside the face outline, pixels
    feather_px: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions ``[P, 2]`` of the points in the photo and their blend weights ``[P]``
    (visible by the depth test, facing the camera, inside the face outline; feathered)."""
    H, W = face_region.shape
    raster = rasterize_mesh(posed_vertices, faces, K, W, H, viewmat)
    depth_map = raster.depth[0].numpy()
    xy, z = project(surf_points, K, viewmat)
    xy, z = xy.numpy(), z.numpy()
    col = np.clip(np.floor(xy[:, 0]).astype(int), 0, W - 1)
    row = np.clip(np.floor(xy[:, 1]).astype(int), 0, H - 1)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
    visible = inside & (depth_map[row, col] > 0) & (z <= depth_map[row, col] + 0.003)
    eye = torch.linalg.inv(viewmat)[:3, 3]
    view = torch.nn.functional.normalize(eye - surf_points, dim=-1)
    facing = (surf_normals * view).sum(-1).numpy()
    weight = visible * _smoothstep(facing, 0.25, 0.55) * _smoothstep(face_region[row, col], 0.0, feather_px)
    return xy, weight.astype(np.float32)


def face_region_distance(landmarks: np.ndarray, height: int, width: int, erode_px: float = 2.0) -> np.ndarray:
    """``[H, W]`` float32 distance (pixels) inside the convex hull of the face landmarks, 0 outside."""
    import cv2  # noqa: PLC0415

    hull = cv2.convexHull(landmarks[:, :2].astype(np.float32)).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    return np.maximum(dist - erode_px, 0.0).astype(np.float32)


def skin_colour(photo: np.ndarray, landmarks: np.ndarray, radius: int = 5) -> np.ndarray:
    """Median RGB (0..1) of patches around the cheek landmarks."""
    patches = []
    for i in CHEEK_LANDMARKS:
        x, y = np.round(landmarks[i, :2]).astype(int)
        patches.append(photo[max(y - radius, 0) : y + radius + 1, max(x - radius, 0) : x + radius + 1].reshape(-1, 3))
    return np.median(np.concatenate(patches), axis=0) / 255.0


def fill_albedo(
    surf: TexelSurface, part_names: tuple[str, ...], skin: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``[P, 3]`` procedural albedo (0..1) per texel: skin with noise, hair, mouth, teeth, eyes."""
    pos = surf.position.numpy()
    names = np.array(part_names)[surf.part.numpy()]
    # Low-frequency skin noise: a random smooth field of the 3D position (few sinusoids).
    freqs = rng.normal(0.0, 25.0, size=(6, 3))
    phases = rng.uniform(0, 2 * np.pi, size=6)
    noise = np.sin(pos @ freqs.T + phases).mean(1, keepdims=True) * 0.06
    albedo = np.clip(skin[None] * (1.0 + noise), 0.0, 1.0)
    # Hair: top and back of the head.
    is_head = np.isin(names, ("head_and_neck", "face"))
    hair = np.maximum(
        _smoothstep(pos[:, 1], 0.045, 0.07),  # above the hairline, all around
        _smoothstep(pos[:, 1], -0.01, 0.04) * _smoothstep(-pos[:, 2], 0.0, 0.03),  # back of the head
    ) * is_head
    albedo = albedo * (1 - hair[:, None]) + np.array(HAIR) * (1 + noise) * hair[:, None]
    for part, colour in (
        ("mouth_socket", MOUTH_SOCKET), ("gums_and_tongue", GUMS_AND_TONGUE), ("teeth", TEETH),
        ("eye_socket_left", EYE_SOCKET), ("eye_socket_right", EYE_SOCKET),
    ):
        albedo[names == part] = colour
    for part in EYEBALL_TILES:
        sel = names == part
        if sel.any():
            centre = pos[sel].mean(0)
            radius = np.linalg.norm(pos[sel] - centre, axis=1).max()
            # Angle from the eye's forward axis (+z), via the distance from that axis.
            off_axis = np.linalg.norm((pos[sel] - centre)[:, :2], axis=1) / radius
            front = pos[sel, 2] > centre[2]
            colour = np.where((front & (off_axis < 0.42))[:, None], IRIS, SCLERA)
            colour = np.where((front & (off_axis < 0.18))[:, None], PUPIL, colour)
            albedo[sel] = colour
    return albedo.astype(np.float32)


def _dilate(atlas: np.ndarray, covered: np.ndarray, iterations: int = 6) -> np.ndarray:
    """Grow covered texels into their uncovered neighbours (so filtering at UV borders is clean)."""
    import cv2  # noqa: PLC0415

    atlas, covered = atlas.copy(), covered.astype(np.float32)
    for _ in range(iterations):
        summed = cv2.blur(atlas * covered[..., None], (3, 3))
        count = cv2.blur(covered, (3, 3))
        grow = (covered == 0) & (count > 0)
        atlas[grow] = summed[grow] / count[grow, None]
        covered = np.maximum(covered, grow.astype(np.float32))
    return atlas


def build_texture(model, photo: np.ndarray | None = None, tile_size: int = 512, seed: int = 0) -> np.ndarray:
    """The atlas ``[T, N_TILES * T, 3]`` uint8 of ``model`` (an ICT model) from ``photo``
    (default: ``skimage.data.astronaut()``). Raises ValueError when MediaPipe finds no face."""
    from avatar.landmarks import FaceMeshDetector  # noqa: PLC0415

    if photo is None:
        from skimage import data as skdata  # noqa: PLC0415

        photo = skdata.astronaut()
    H, W = photo.shape[:2]
    with FaceMeshDetector(video=False, max_faces=1) as detector:
        faces = detector.detect(photo)
    if not faces:
        raise ValueError("MediaPipe found no face in the texture photo; pass a frontal portrait")
    lmk = faces[0].landmarks
    K, viewmat = photo_camera(W, H)
    fit = fit_photo(model, lmk[[mp for _, mp in FIT_CORRESPONDENCES], :2], K, viewmat)
    log.info("texture photo fit: rms %.1f px", fit.rms)
    with torch.no_grad():
        rest = model(shape=torch.as_tensor(fit.shape)[None], expression=torch.as_tensor(fit.expression)[None])
        rest = rest.vertices[0]
        R = axis_angle_to_matrix(torch.as_tensor(fit.rotation, dtype=torch.float32))
        t = torch.as_tensor(fit.translation, dtype=torch.float32)
        surf = texel_surface(model, tile_size, rest)
        region = face_region_distance(lmk, H, W)
        photo_f = photo.astype(np.float32) / 255.0
        posed = rest @ R.T + t
        xy, w = photo_weights(surf.fitted @ R.T + t, surf.fitted_normal @ R.T, posed, model.faces, K, viewmat, region)
        flip = torch.tensor([-1.0, 1.0, 1.0])  # the mirror point (ICT is nearly left-right symmetric)
        xy_m, w_m = photo_weights(
            (surf.fitted * flip) @ R.T + t, (surf.fitted_normal * flip) @ R.T, posed, model.faces, K, viewmat, region
        )
    rng = np.random.default_rng(seed)
    fill = fill_albedo(surf, model.part_names, skin_colour(photo, lmk), rng)
    mirrored = w_m[:, None] * _bilinear(photo_f, xy_m) + (1 - w_m[:, None]) * fill
    colour = w[:, None] * _bilinear(photo_f, xy) + (1 - w[:, None]) * mirrored
    atlas = np.zeros((tile_size * tile_size * N_TILES, 3), np.float32)
    covered = np.zeros(tile_size * tile_size * N_TILES, np.float32)
    atlas[surf.texel.numpy()] = colour
    covered[surf.texel.numpy()] = 1.0
    shape = (tile_size, tile_size * N_TILES)
    atlas = _dilate(atlas.reshape(*shape, 3), covered.reshape(shape))
    return (np.clip(atlas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Cache


def texture_cache_path(cache_dir: str | os.PathLike | None, model_key: str, tile_size: int) -> Path:
    """Where the atlas of a model (``model_key``: e.g. its asset fingerprint) is cached."""
    folder = Path(cache_dir).expanduser() if cache_dir else user_cache_dir() / "synthetic"
    return folder / f"ict-astronaut-texture-v{TEXTURE_VERSION}-{model_key}-{tile_size}.png"


def _atomic_write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2  # noqa: PLC0415

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode the {rgb.shape} texture as PNG")
    atomic_write(path, buf.tobytes())


def ict_model_key(asset_path: str | None = None) -> str:
    """A short key of the ICT source the model was built from (its fingerprint)."""
    from avatar.models.assets import fingerprint  # noqa: PLC0415
    from avatar.models.ict import find_source  # noqa: PLC0415

    return fingerprint(find_source(asset_path))


def load_or_build_texture(
    model, cache_dir: str | os.PathLike | None = None, tile_size: int = 512, model_key: str | None = None
) -> HeadTexture:
    """The astronaut atlas of an ICT ``model``, from the cache or built and cached.

    ``cache_dir`` defaults to the user cache's ``synthetic/``; ``model_key`` (default: the
    fingerprint of the ICT source found via ``AVATAR_ASSETS``) keys the file.
    """
    import cv2  # noqa: PLC0415

    path = texture_cache_path(cache_dir, model_key or ict_model_key(), tile_size)
    if path.is_file():
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None and image.shape[:2] == (tile_size, tile_size * N_TILES):
            return HeadTexture(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), path, from_cache=True)
        log.warning("ignoring unreadable texture cache %s; rebuilding it", path)
    t0 = time.perf_counter()
    atlas = build_texture(model, tile_size=tile_size)
    _atomic_write_png(path, atlas)
    log.info("built the ICT face texture in %.1f s -> %s", time.perf_counter() - t0, path)
    return HeadTexture(atlas, path, from_cache=False)


# Lambert shading of textured landmark-calibration renders (as the synthetic captures').
CALIBRATION_AMBIENT = 0.5
CALIBRATION_LIGHT = (-0.3, -0.45, -1.0)


def calibration_look(model, faces_index: Tensor, cache_dir: str | os.PathLike | None = None) -> dict:
    """:func:`avatar.render.render_mesh` keywords that render the ICT ``model``'s faces
    ``faces_index`` with the astronaut atlas (:func:`load_or_build_texture`), Lambert-shaded: the
    ``look`` of :func:`avatar.tracking.embedding.calibrate` for a textured calibration. ValueError
    for a model other than ICT (the atlas is laid out on ICT's UVs)."""
    if model.name != "ict":
        raise ValueError(f"no face texture for model '{model.name}' (only ICT has one); calibrate it flat-grey")
    uvs, uv_faces = atlas_uvs(model)
    dev = model.faces.device
    return {"texture": load_or_build_texture(model, cache_dir).as_tensor().to(dev), "uvs": uvs.to(dev),
            "uv_faces": uv_faces[faces_index.to(uv_faces.device)].to(dev), "ambient": CALIBRATION_AMBIENT,
            "light_dir": CALIBRATION_LIGHT}

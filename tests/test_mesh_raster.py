"""Tests of the mesh rasterizer (avatar.render.mesh, mesh_shade), on both CPU z-buffers.

References are independent: a float64 numpy point-in-triangle test, analytic ray/plane and
ray/sphere intersections, and per-triangle renders for watertightness.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar.geometry.primitives import uv_ellipsoid
from avatar.render.mesh import interpolate, rasterize_mesh
from avatar.render.mesh_shade import (
    face_normals,
    lambert_shade,
    render_mesh,
    sample_texture,
    vertex_normals,
)



@pytest.fixture(autouse=True, params=["torch", "compiled"])
def zbuffer_path(request, monkeypatch):
    """Every test runs on both CPU z-buffers: the torch code and the compiled (numba) loop."""
    from avatar.render import cpu_kernels

    if request.param == "compiled":
        if not cpu_kernels.mesh_zbuffer_available():
            pytest.skip("numba is not installed or AVATAR_NO_NUMBA is set")
    else:
        monkeypatch.setattr(cpu_kernels, "mesh_zbuffer_available", lambda: False)
    return request.param


# Camera-space vertices at z = 1 with K = I project to pixel coordinates (x, y) exactly.
K_PIXELS = torch.eye(3)


def pinhole(f: float, width: int, height: int) -> torch.Tensor:
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def uv_sphere(n_lat: int, n_lon: int, radius: float = 1.0):
    """Closed UV sphere (outward normals): vertices [V, 3], faces [F, 3]."""
    return uv_ellipsoid(n_lat, n_lon, (radius,) * 3)


def reference_coverage(tri_xy: np.ndarray, width: int, height: int):
    """Float64 screen barycentrics of every pixel centre (solve of a 2x2 system)."""
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    p = np.stack([jj, ii], -1)
    a, b, c = tri_xy
    m = np.stack([b - a, c - a], -1)  # columns
    l12 = np.linalg.solve(m, (p - a)[..., None])[..., 0]
    return np.concatenate([1 - l12.sum(-1, keepdims=True), l12], -1)  # [H, W, 3]


def bilinear_reference(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Texel centres at ((c + 0.5) / Wt, 1 - (r + 0.5) / Ht), clamped at the borders."""
    Ht, Wt = tex.shape[:2]
    cx, cy = u * Wt - 0.5, (1 - v) * Ht - 0.5
    c0, r0 = np.floor(cx).astype(int), np.floor(cy).astype(int)
    fx, fy = (cx - c0)[:, None], (cy - r0)[:, None]

    def at(r, c):
        return tex[np.clip(r, 0, Ht - 1), np.clip(c, 0, Wt - 1)]

    top = at(r0, c0) * (1 - fx) + at(r0, c0 + 1) * fx
    bottom = at(r0 + 1, c0) * (1 - fx) + at(r0 + 1, c0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def triangle_mesh(tri_xy, z=1.0):
    xy = torch.as_tensor(tri_xy, dtype=torch.float32)
    return torch.cat([xy, torch.full((3, 1), z)], 1), torch.tensor([[0, 1, 2]])


@pytest.mark.parametrize("seed", range(6))
def test_single_triangle_matches_bruteforce(seed):
    rng = np.random.default_rng(seed)
    W, H = 13, 11
    tri = rng.uniform([-2, -2], [W + 2, H + 2], size=(3, 2))
    verts, faces = triangle_mesh(tri)
    r = rasterize_mesh(verts, faces, K_PIXELS, W, H)
    lam = reference_coverage(tri, W, H)
    decided = np.abs(lam).min(-1) > 1e-6  # pixel centres on an edge follow the tie rule
    expected = (lam > 0).all(-1)
    assert np.array_equal(r.mask[0].numpy()[decided], expected[decided])
    assert torch.equal(r.triangle_id[0][r.mask[0]], torch.zeros(int(r.mask.sum()), dtype=torch.long))
    # z constant: perspective-correct barycentrics equal the screen-space ones.
    np.testing.assert_allclose(r.bary[0].numpy()[expected], lam[expected], atol=1e-5)
    assert torch.allclose(r.depth[0][r.mask[0]], torch.tensor(1.0)) and (r.depth[0][~r.mask[0]] == 0).all()
    assert (r.bary[0][~r.mask[0]] == 0).all() and (r.triangle_id[0][~r.mask[0]] == -1).all()


def coverage_count(verts, faces, W, H):
    return sum(rasterize_mesh(verts, faces[k : k + 1], K_PIXELS, W, H).mask[0].int() for k in range(len(faces)))


@pytest.mark.parametrize("flip", [False, True])
def test_top_left_rule_on_pixel_centres(flip):
    # A square with corners on pixel centres, split along a diagonal through pixel centres.
    W = H = 8
    verts = torch.tensor([[1.5, 1.5, 1], [5.5, 1.5, 1], [5.5, 5.5, 1], [1.5, 5.5, 1]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    if flip:
        faces = faces.flip(1)
    count = coverage_count(verts, faces, W, H)
    expected = torch.zeros(H, W, dtype=torch.int)
    expected[1:5, 1:5] = 1  # top and left edges in, bottom and right edges out
    assert torch.equal(count, expected)
    # A lone triangle: its top edge is in, its right edge out.
    left = rasterize_mesh(verts, faces[:1], K_PIXELS, W, H).mask[0]  # upper-right half
    assert left[1, 1:5].all() and not left[1:5, 5].any()


@pytest.mark.parametrize("seed", range(3))
def test_watertight_fan_and_jittered_grid(seed):
    W = H = 12
    rng = np.random.default_rng(seed)
    # Fan of 7 triangles around a vertex on a pixel centre, rim on pixel centres too.
    angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
    rim = np.round(np.stack([6 + 5 * np.cos(angles), 6 + 5 * np.sin(angles)], -1) * 2) / 2 + 0.5
    xy = np.concatenate([[[6.5, 6.5]], rim])
    verts = torch.cat([torch.tensor(xy, dtype=torch.float32), torch.ones(8, 1)], 1)
    faces = torch.tensor([[0, 1 + k, 1 + (k + 1) % 7] for k in range(7)])
    count = coverage_count(verts, faces, W, H)
    assert count.max() == 1 and count[6, 6] == 1
    # A jittered grid of 3x3 quads: every pixel inside covered exactly once.
    g = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0)), -1) * 3 + 1.5
    g[1:-1, 1:-1] += rng.uniform(-1, 1, (2, 2, 2))
    verts = torch.cat([torch.tensor(g.reshape(-1, 2), dtype=torch.float32), torch.ones(16, 1)], 1)
    quads = [(r * 4 + c, r * 4 + c + 1, r * 4 + c + 5, r * 4 + c + 4) for r in range(3) for c in range(3)]
    faces = torch.tensor([f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))])
    count = coverage_count(verts, faces, W, H)
    assert count.max() == 1 and (count[1:10, 1:10] == 1).all()


@pytest.mark.parametrize("seed", range(3))
def test_triangle_soup_matches_bruteforce_zbuffer(seed):
    rng = np.random.default_rng(100 + seed)
    W, H, n = 24, 20, 40
    K = pinhole(20.0, W, H)
    centres = rng.uniform([-0.6, -0.5, 1.5], [0.6, 0.5, 3.0], size=(n, 1, 3))
    verts = (centres + rng.normal(0, 0.25, size=(n, 3, 3))).reshape(-1, 3)
    faces = np.arange(3 * n).reshape(n, 3)
    r = rasterize_mesh(torch.tensor(verts, dtype=torch.float32), torch.tensor(faces), K, W, H, max_candidates=64)
    # Reference: every pixel against every triangle in float64, nearest interpolated depth.
    proj = verts @ K.double().numpy().T
    xy = proj[:, :2] / proj[:, 2:]
    lam = np.stack([reference_coverage(xy[f], W, H) for f in faces])  # [n, H, W, 3]
    inside = (lam > 0).all(-1)
    depth = 1 / (lam / verts[faces][:, None, None, :, 2]).sum(-1)
    depth = np.where(inside, depth, np.inf)
    nearest = np.where(inside.any(0), depth.argmin(0), -1)
    ranked = np.sort(depth, axis=0)
    with np.errstate(invalid="ignore"):  # inf - inf where fewer than two triangles cover
        clear = (np.abs(lam).min(-1) > 1e-5).all(0) & ~(ranked[1] - ranked[0] < 1e-4)
    assert clear.mean() > 0.9
    assert np.array_equal(r.triangle_id[0].numpy()[clear], nearest[clear])
    covered = nearest >= 0
    np.testing.assert_allclose(r.depth[0].numpy()[clear & covered], ranked[0][clear & covered], rtol=1e-5)


def test_zbuffer_nearest_wins_in_either_order():
    W = H = 16
    K = pinhole(16.0, W, H)
    near = torch.tensor([[-1.0, -1, 2], [1, -1, 2], [0, 1, 2]])
    far = torch.tensor([[-1.0, -0.5, 3], [1, -0.5, 3], [0, 1.5, 3]]) * torch.tensor([1.5, 1.5, 1])
    verts = torch.cat([near, far])
    for faces, near_id in ((torch.tensor([[0, 1, 2], [3, 4, 5]]), 0), (torch.tensor([[3, 4, 5], [0, 1, 2]]), 1)):
        r = rasterize_mesh(verts, faces, K, W, H)
        both = rasterize_mesh(near, torch.tensor([[0, 1, 2]]), K, W, H).mask
        assert (r.triangle_id[both] == near_id).all()
        assert torch.allclose(r.depth[both], torch.tensor(2.0))
        assert ((r.triangle_id == 1 - near_id) == (r.mask & ~both)).all() and (~both & r.mask).any()


def test_bary_reproduce_pixel_positions():
    verts, faces = uv_sphere(12, 16, radius=0.5)
    verts = verts + torch.tensor([0.1, -0.05, 2.0])
    W, H = 40, 30
    K = torch.tensor([[50.0, 3.0, 19.0], [0.0, 45.0, 16.0], [0.0, 0.0, 1.0]])  # skewed on purpose
    r = rasterize_mesh(verts, faces, K, W, H)
    assert r.mask.sum() > 300
    assert torch.allclose(r.bary.sum(-1)[r.mask], torch.tensor(1.0), atol=1e-6)
    assert (r.bary[r.mask] > -1e-4).all()
    pos = interpolate(verts, faces, r)[r.mask]  # [P, 3] camera-space points
    proj = pos @ K.T
    proj = proj[:, :2] / proj[:, 2:]
    ii, jj = torch.nonzero(r.mask[0], as_tuple=True)
    assert torch.allclose(proj, torch.stack([jj, ii], -1) + 0.5, atol=1e-3)
    assert torch.allclose(pos[:, 2], r.depth[r.mask], rtol=1e-5)


def test_perspective_correct_on_tilted_plane():
    # Plane z = z0 + a x seen at a grazing-ish angle; analytic depth along each ray.
    W, H, z0, a = 32, 24, 2.0, 0.8
    K = pinhole(30.0, W, H)
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    verts = torch.cat([corners, (z0 + a * corners[:, :1])], 1)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    r = rasterize_mesh(verts, faces, K, W, H)
    ii, jj = torch.nonzero(r.mask[0], as_tuple=True)
    dx = (jj + 0.5 - K[0, 2]) / K[0, 0]
    dy = (ii + 0.5 - K[1, 2]) / K[1, 1]
    z = z0 / (1 - a * dx)
    assert r.mask.sum() > 200
    assert torch.allclose(r.depth[0][ii, jj], z, rtol=1e-5)
    pos = interpolate(verts, faces, r)[0][ii, jj]
    assert torch.allclose(pos, torch.stack([z * dx, z * dy, z], -1), atol=1e-5)
    # Affine (not perspective-correct) interpolation would be far off here.
    affine_err = (verts[:, 2].mean() - z).abs().max()
    assert affine_err > 0.1


def test_sphere_mask_and_depth_vs_analytic():
    W = H = 64
    radius, dist, f = 0.5, 2.0, 60.0
    verts, faces = uv_sphere(48, 64, radius)
    verts = verts + torch.tensor([0.0, 0.0, dist])
    r = rasterize_mesh(verts, faces, pinhole(f, W, H), W, H)
    ii, jj = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    rad = ((jj - W / 2) ** 2 + (ii - H / 2) ** 2).sqrt()
    silhouette = f * radius / math.sqrt(dist**2 - radius**2)
    assert r.mask[0][rad < silhouette - 1.0].all()
    assert not r.mask[0][rad > silhouette + 0.5].any()
    # Depth: nearest root of |t d - c|^2 = r^2 along the ray d = (x, y, 1).
    dx, dy = (jj - W / 2) / f, (ii - H / 2) / f
    dd = dx**2 + dy**2 + 1
    disc = (dist**2 - dd * (dist**2 - radius**2)).clamp_min(0)
    z = (dist - disc.sqrt()) / dd
    inner = rad < silhouette - 2.0
    assert (r.depth[0][inner] - z[inner]).abs().max() < 0.01 * radius
    assert (r.depth[0][~r.mask[0]] == 0).all()


def test_batch_with_different_cameras_matches_single_renders():
    verts, faces = uv_sphere(10, 14, radius=0.4)
    K = torch.stack([pinhole(30.0, 24, 20), pinhole(40.0, 24, 20)])
    viewmats = torch.eye(4).repeat(2, 1, 1)
    viewmats[0, :3, 3] = torch.tensor([0.0, 0.0, 2.0])
    c, s = math.cos(0.4), math.sin(0.4)
    viewmats[1, :3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    viewmats[1, :3, 3] = torch.tensor([0.2, 0.1, 2.5])
    batch = rasterize_mesh(verts, faces, K, 24, 20, viewmats)
    assert batch.mask.shape == (2, 20, 24) and not torch.equal(batch.mask[0], batch.mask[1])
    for b in range(2):
        single = rasterize_mesh(verts, faces, K[b], 24, 20, viewmats[b])
        assert torch.equal(single.triangle_id[0], batch.triangle_id[b])
        assert torch.allclose(single.bary[0], batch.bary[b]) and torch.allclose(single.depth[0], batch.depth[b])
        cam = verts @ viewmats[b, :3, :3].T + viewmats[b, :3, 3]
        in_cam = rasterize_mesh(cam, faces, K[b], 24, 20)
        assert torch.equal(in_cam.triangle_id[0], batch.triangle_id[b])


def test_dtype_and_device_follow_inputs():
    verts, faces = uv_sphere(8, 10, radius=0.4)
    verts = (verts + torch.tensor([0, 0, 2.0])).double()
    r = rasterize_mesh(verts, faces.int(), pinhole(20.0, 16, 16), 16, 16)
    assert r.bary.dtype == r.depth.dtype == torch.float64 and r.triangle_id.dtype == torch.int64
    assert r.mask.dtype == torch.bool and r.mask.any()
    out = render_mesh(verts, faces, pinhole(20.0, 16, 16), 16, 16)
    assert out.image.dtype == torch.float64 and out.image.device == verts.device


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    verts, faces = uv_sphere(16, 20, radius=0.4)
    verts = verts + torch.tensor([0, 0, 2.0])
    K = pinhole(40.0, 32, 32)
    cpu = rasterize_mesh(verts, faces, K, 32, 32)
    gpu = rasterize_mesh(verts.cuda(), faces.cuda(), K.cuda(), 32, 32)
    assert gpu.bary.is_cuda and torch.equal(gpu.triangle_id.cpu(), cpu.triangle_id)


def test_empty_and_behind_camera_give_background():
    K = pinhole(20.0, 10, 8)
    for verts, faces in (
        (torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long)),
        (torch.tensor([[0.0, 0, 1], [1, 0, 1], [0, 1, 1]]), torch.zeros(0, 3, dtype=torch.long)),
        (torch.tensor([[-1.0, -1, -1], [1, -1, -1], [0, 1, -1]]), torch.tensor([[0, 1, 2]])),
        # one vertex behind the near plane: the whole triangle is dropped (no clipping)
        (torch.tensor([[-1.0, -1, 1], [1, -1, 1], [0, 1, 0.005]]), torch.tensor([[0, 1, 2]])),
    ):
        r = rasterize_mesh(verts, faces, K, 10, 8)
        assert not r.mask.any() and (r.triangle_id == -1).all() and (r.depth == 0).all()
        img = render_mesh(verts, faces, K, 10, 8, background=(0.1, 0.2, 0.3)).image
        assert torch.allclose(img, torch.tensor([0.1, 0.2, 0.3]).expand(1, 8, 10, 3))


def test_chunking_gives_identical_results():
    verts, faces = uv_sphere(20, 24, radius=0.5)
    verts = verts + torch.tensor([0, 0, 1.5])
    # add a big triangle larger than the chunk budget
    verts = torch.cat([verts, torch.tensor([[-3.0, -3, 3], [3, -3, 3], [0, 3, 3]])])
    faces = torch.cat([faces, torch.tensor([[len(verts) - 3, len(verts) - 2, len(verts) - 1]])])
    K = pinhole(40.0, 48, 40)
    full = rasterize_mesh(verts, faces, K, 48, 40)
    for budget in (20, 50, 777):
        chunked = rasterize_mesh(verts, faces, K, 48, 40, max_candidates=budget)
        assert torch.equal(full.triangle_id, chunked.triangle_id)
        assert torch.equal(full.bary, chunked.bary) and torch.equal(full.depth, chunked.depth)


def test_backface_culling():
    verts, faces = uv_sphere(16, 20, radius=0.5)
    verts = verts + torch.tensor([0, 0, 2.0])
    K = pinhole(40.0, 32, 32)
    both = rasterize_mesh(verts, faces, K, 32, 32)
    culled = rasterize_mesh(verts, faces, K, 32, 32, cull_backfaces=True)
    assert torch.equal(both.triangle_id, culled.triangle_id)  # closed convex mesh
    inside_out = rasterize_mesh(verts, faces.flip(1), K, 32, 32, cull_backfaces=True)
    assert inside_out.mask.sum() == both.mask.sum()  # now only the far side is drawn
    assert (inside_out.depth >= both.depth).all() and inside_out.depth[0, 16, 16] > 2.45


def test_bary_gradients_match_finite_differences():
    verts = torch.tensor([[-0.5, -0.4, 2.0], [0.6, -0.3, 2.5], [0.0, 0.5, 1.8]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    K = pinhole(10.0, 8, 8).double()
    weights = torch.linspace(0.1, 1.0, 8 * 8 * 4, dtype=torch.float64).reshape(1, 8, 8, 4)

    def loss(v):
        r = rasterize_mesh(v, faces, K, 8, 8)
        return (torch.cat([r.bary, r.depth[..., None]], -1) * weights).sum()

    v = verts.clone().requires_grad_(True)
    loss(v).backward()
    eps, numeric = 1e-6, torch.zeros_like(verts)
    for idx in np.ndindex(3, 3):
        d = torch.zeros_like(verts)
        d[idx] = eps
        numeric[idx] = (loss(verts + d) - loss(verts - d)) / (2 * eps)
    assert torch.allclose(v.grad, numeric, rtol=1e-4, atol=1e-6)


def test_texture_checkerboard_across_uv_seam():
    # Two quads sharing an edge in 3D, but the right quad's UVs restart at u = 0 (a seam):
    # shared vertices have two UV coordinates, so uv_faces differ from faces.
    verts = torch.tensor([[-1.0, -0.5, 2], [0, -0.5, 2], [1, -0.5, 2], [-1, 0.5, 2], [0, 0.5, 2], [1, 0.5, 2]])
    faces = torch.tensor([[0, 4, 1], [0, 3, 4], [1, 5, 2], [1, 4, 5]])
    # u over [0, 1] across each quad; v up (OBJ): image-bottom vertices (y = 0.5) get v = 0.
    uvs = torch.tensor([[0.0, 1], [1, 1], [0, 0], [1, 0]])
    uv_faces = torch.tensor([[0, 3, 1], [0, 2, 3], [0, 3, 1], [0, 2, 3]])
    n = 4  # 4x4 checker texels, 2 colours; texel (0, 0) = top-left is white
    checker = ((torch.arange(n)[:, None] + torch.arange(n)[None]) % 2 == 0).float()
    texture = torch.stack([checker, 1 - checker, torch.zeros_like(checker)], -1)
    W, H = 64, 32
    f = 56.0
    out = render_mesh(verts, faces, pinhole(f, W, H), W, H, texture=texture, uvs=uvs, uv_faces=uv_faces, shading="none")
    ii, jj = torch.nonzero(out.mask[0], as_tuple=True)
    x = (jj + 0.5 - W / 2) / f * 2.0  # z = 2
    y = (ii + 0.5 - H / 2) / f * 2.0
    u, v = (x + 1) % 1.0, 0.5 - y  # u restarts at the seam x = 0
    expected = bilinear_reference(texture.numpy(), u.numpy(), v.numpy())
    assert len(ii) > 1500
    np.testing.assert_allclose(out.image[0][ii, jj].numpy(), expected, atol=1e-4)
    assert ((expected[:, 0] > 0.99) & (expected[:, 1] < 0.01)).sum() > 50  # pure texels hit
    # Bilinear: halfway between texel centres the value is the average.
    uv = torch.tensor([[[[0.25, 1 - 0.125]]]])  # between texel columns 0 and 1, row 0
    assert torch.allclose(sample_texture(texture, uv), torch.tensor([0.5, 0.5, 0.0]))
    shifted = uv + torch.tensor([2.0, -1.0])
    assert torch.allclose(sample_texture(texture, shifted, wrap="repeat"), sample_texture(texture, uv))
    assert torch.allclose(sample_texture(texture, shifted), texture[-1, -1])  # clamp: border texel


def test_normals_and_shading():
    verts, faces = uv_sphere(16, 24)
    vn = vertex_normals(verts, faces)
    assert ((vn * verts).sum(-1) > 0.995).all() and torch.allclose(vn.norm(dim=-1), torch.tensor(1.0))
    # Area weighting: a big +z face (area 2) and a small +x face (area 0.5) share vertex 0.
    bent = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 1, 0], [0, 0, 1]])
    vn = vertex_normals(bent, torch.tensor([[0, 1, 2], [0, 3, 4]]))
    assert torch.allclose(vn[0], torch.nn.functional.normalize(torch.tensor([0.5, 0, 2.0]), dim=0))
    assert torch.allclose(vn[1], torch.tensor([0.0, 0, 1])) and torch.allclose(vn[4], torch.tensor([1.0, 0, 0]))
    fn = face_normals(verts, faces)
    centres = verts[faces].mean(1)
    assert ((fn * centres).sum(-1) > 0).all()  # outward
    n = torch.tensor([[0.0, 0, -1], [0, 0, 1], [1, 0, 0]])
    shade = lambert_shade(n, (0, 0, -2.0), ambient=0.25)
    assert torch.allclose(shade[:, 0], torch.tensor([1.0, 0.25, 0.25]))


def test_render_mesh_colours_and_background():
    verts, faces = uv_sphere(16, 24, radius=0.5)
    verts = torch.stack([verts, verts]) + torch.tensor([0, 0, 2.0])
    K = pinhole(40.0, 32, 32)
    flat = render_mesh(verts, faces, K, 32, 32, colors=(1.0, 0.5, 0.0), background=torch.tensor([[0, 0, 1.0], [0, 1.0, 0]]))
    assert flat.image.shape == (2, 32, 32, 3) and flat.image.min() >= 0 and flat.image.max() <= 1
    assert torch.equal(flat.image[1][~flat.mask[1]], torch.tensor([0, 1.0, 0]).expand(int((~flat.mask[1]).sum()), 3))
    centre = flat.image[0, 16, 16]  # facing the headlight: full albedo
    assert torch.allclose(centre, torch.tensor([1.0, 0.5, 0.0]), atol=2e-2)
    edge = flat.image[0][flat.mask[0]][:, 0].min()
    assert edge < 0.6  # grazing light at the silhouette
    per_vertex = render_mesh(verts[0], faces, K, 32, 32, colors=torch.rand(len(verts[0]), 3), shading="flat")
    assert per_vertex.image.shape == (1, 32, 32, 3) and per_vertex.mask.sum() == flat.mask[0].sum()
    plain = render_mesh(verts[0], faces, K, 32, 32, colors=(0.2, 0.4, 0.6), shading="none")
    assert torch.allclose(plain.image[plain.mask], torch.tensor([0.2, 0.4, 0.6]))


def test_render_mesh_is_differentiable():
    verts, faces = uv_sphere(8, 12, radius=0.5)
    verts = (verts + torch.tensor([0, 0, 2.0])).requires_grad_(True)
    colors = torch.rand(len(verts), 3, requires_grad=True)
    out = render_mesh(verts, faces, pinhole(20.0, 16, 16), 16, 16, colors=colors)
    (out.image * torch.rand_like(out.image)).sum().backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
    assert torch.isfinite(colors.grad).all() and colors.grad.abs().sum() > 0


def test_half_precision_inputs():
    verts, faces = uv_sphere(8, 10, radius=0.4)
    verts = verts + torch.tensor([0, 0, 2.0])
    ref = rasterize_mesh(verts, faces, pinhole(20.0, 16, 16), 16, 16)
    half = rasterize_mesh(verts.bfloat16(), faces, pinhole(20.0, 16, 16), 16, 16)
    assert half.bary.dtype == torch.bfloat16 and half.mask.sum() > 50
    assert (half.mask != ref.mask).sum() <= 4  # vertex rounding moves a few edge pixels

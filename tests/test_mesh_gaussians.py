"""Mesh-bound Gaussians: UV-grid initialisation, following the mesh, densification that keeps bindings, PLY."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from avatar.gaussians.base import FrameState
from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig, uv_samples
from avatar.gaussians.ply import load_ply, save_ply
from avatar.gaussians.strategy import DensifyConfig, DensifyStrategy
from avatar.geometry import axis_angle_to_matrix, quaternion_to_matrix
from avatar.models.engine import Part
from avatar.render import rasterization


class PlaneModel(torch.nn.Module):
    """A 10 cm square in the z = 0 plane (n x n quads), UVs = its xy normalised to 0..1."""

    def __init__(self, n: int = 6):
        super().__init__()
        g = torch.linspace(0, 1, n + 1)
        y, x = torch.meshgrid(g, g, indexing="ij")
        self.register_buffer("verts", torch.stack((x, y, torch.zeros_like(x)), -1).reshape(-1, 3) * 0.1)
        i = torch.arange(n)
        a = (i[:, None] * (n + 1) + i[None, :]).reshape(-1)
        quads = torch.stack((a, a + 1, a + n + 2, a + n + 1), -1)
        self.faces = torch.cat((quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]))
        self.uvs = torch.stack((x, y), -1).reshape(-1, 2)
        self.uv_faces = self.faces.clone()
        half = torch.zeros(len(self.faces), dtype=torch.bool)
        half[: len(self.faces) // 2] = True
        vmask = torch.ones(len(self.verts), dtype=torch.bool)
        self.parts = {"lower": Part(vmask, half), "upper": Part(vmask, ~half)}

    def forward(self):
        return SimpleNamespace(vertices=self.verts[None])


REST = torch.zeros(1, 3)  # the plane's head rotation (axis-angle): none


def test_uv_samples_cover_the_chart_once():
    model = PlaneModel()
    face, bary = uv_samples(model.uvs, model.uv_faces, torch.ones(len(model.faces), dtype=torch.bool), 20)
    assert face.numel() == 400  # a 20 x 20 grid on the unit UV square, each cell once
    uv = (model.uvs[model.uv_faces[face]] * bary[..., None]).sum(-2)
    cells = torch.round(uv * 20 - 0.5)
    assert torch.unique(cells[:, 1] * 20 + cells[:, 0]).numel() == 400
    torch.testing.assert_close(bary.sum(-1), torch.ones(400))
    # no face selected (a part wholly inside one listed before it): no samples, not an error
    face, bary = uv_samples(model.uvs, model.uv_faces, torch.zeros(len(model.faces), dtype=torch.bool), 20)
    assert face.shape == (0,) and bary.shape == (0, 3)


def test_init_puts_gaussians_on_the_surface_with_parts_and_resolutions():
    model = PlaneModel()
    cfg = MeshGaussiansConfig(uv_resolution=20, part_uv_resolution={"upper": 10}, sh_degree=1)
    g = MeshGaussians.from_uv_grid(model, cfg)
    lower = model.parts["lower"].faces[g.binding]
    assert int(lower.sum()) in range(180, 221) and int((~lower).sum()) in range(45, 56)
    w = g(FrameState(model().vertices, rotation=REST))
    assert w.means.shape == (1, len(g), 3) and w.sh.shape == (len(g), 4, 3)
    assert w.means[..., 2].abs().max() < 1e-7  # on the plane
    assert (w.means[..., :2] >= 0).all() and (w.means[..., :2] <= 0.1 + 1e-6).all()
    # Initial std ~ init_scale x UV spacing on the surface (0.1 m / 20 or / 10 per sample).
    expected = torch.where(lower, 0.6 * 0.1 / 20, 0.6 * 0.1 / 10)
    torch.testing.assert_close(w.scales[0, :, 0], expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(w.opacities, torch.full((len(g),), 0.1))
    with pytest.raises(KeyError, match="no part 'hair'"):
        MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(parts=("hair",)))


def test_gaussians_follow_rigid_and_non_rigid_motion():
    model = PlaneModel()
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=12))
    with torch.no_grad():  # give them non-trivial local rotations, offsets and anisotropic scales
        g.params["local_quat"].copy_(torch.randn(len(g), 4))
        g.params["local_xyz"][:, 2] += 0.05
        g.params["log_scale"][:, 0] += 0.3
    v = model().vertices
    base = g(FrameState(v, rotation=REST))
    aa = torch.tensor([0.3, -0.5, 0.2])
    rot = axis_angle_to_matrix(aa)
    shift = torch.tensor([0.01, 0.02, 0.5])
    moved = g(FrameState(v @ rot.T + shift, rotation=aa))
    torch.testing.assert_close(moved.sh_frame[0], rot)
    torch.testing.assert_close(moved.means, base.means @ rot.T + shift, atol=1e-6, rtol=0)
    torch.testing.assert_close(moved.scales, base.scales, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(
        quaternion_to_matrix(moved.quats), rot @ quaternion_to_matrix(base.quats), atol=1e-5, rtol=0
    )
    grown = g(FrameState(v * 2.0, rotation=REST))  # a uniformly scaled mesh scales positions and sizes
    torch.testing.assert_close(grown.means, base.means * 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(grown.scales, base.scales * 2, atol=1e-7, rtol=1e-5)


def base_covars_are_absent(w) -> bool:
    return w.covars is None


def test_stretch_keeps_barycentric_places_and_carries_the_covariance():
    """``stretch=True``: under a similarity nothing changes; a mesh stretched along y carries each
    Gaussian to the same barycentric place of its triangle (the plain frame does not) and its
    covariance by the same map; the renderer draws that covariance."""
    model = PlaneModel()
    plain = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=12))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=12, stretch=True))
    assert g.stretch and not plain.stretch and g.canonical_vertices is not None
    with torch.no_grad():
        for m in (plain, g):
            m.params["local_quat"].copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(m), 4))
            m.params["log_scale"].copy_(torch.log(torch.tensor([0.3, 0.1, 0.02])).expand(len(m), 3))
    v = model().vertices
    aa = torch.tensor([0.3, -0.5, 0.2])
    moved = v * 1.7 @ axis_angle_to_matrix(aa).T + torch.tensor([0.01, 0.02, 0.5])
    for verts in (v, moved):  # a similarity: the two agree
        a, b = plain(FrameState(verts, rotation=aa[None])), g(FrameState(verts, rotation=aa[None]))
        torch.testing.assert_close(b.means, a.means, atol=1e-6, rtol=0)
        torch.testing.assert_close(b.scales, a.scales, atol=1e-7, rtol=1e-4)
    stretched = v * torch.tensor([1.0, 3.0, 1.0])
    start = g(FrameState(v, rotation=REST)).means[0]
    tri = v[0][model.faces[g.binding]]  # barycentric coordinates of each Gaussian on the flat mesh
    e1, e2, d = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], start - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    w1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
    w2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
    bary = torch.stack((1 - w1 - w2, w1, w2), -1)
    expected = (stretched[0][model.faces[g.binding]] * bary[..., None]).sum(-2)
    out = g(FrameState(stretched, rotation=REST))
    torch.testing.assert_close(out.means[0], expected, atol=1e-6, rtol=0)
    assert (plain(FrameState(stretched, rotation=REST)).means[0] - expected).norm(dim=-1).max() > 1e-3
    # The covariance is carried by the map exactly: along y three times the standard deviation,
    # along x the same, across the surface sqrt(3) times (thickness follows the square root of the
    # area), whatever the Gaussian's orientation in its triangle.
    assert out.covars is not None and base_covars_are_absent(plain(FrameState(stretched, rotation=REST)))
    before = g(FrameState(v, rotation=REST)).covars[0]
    A = torch.diag(torch.tensor([1.0, 3.0, math.sqrt(3.0)]))
    torch.testing.assert_close(out.covars[0], A @ before @ A, atol=1e-10, rtol=1e-4)
    # shapes(): rotation and sizes that make the same covariances, the third axis still across the
    # surface (these Gaussians are flat on it)
    q, sc = out.shapes()
    R = quaternion_to_matrix(q)
    torch.testing.assert_close(R @ torch.diag_embed(sc**2) @ R.transpose(-1, -2), out.covars[0], atol=1e-10, rtol=1e-4)
    assert (R[:, 2, 2].abs() > 0.999).all() and torch.allclose(torch.linalg.det(R), torch.ones(len(g)), atol=1e-5)
    K = torch.tensor([[300.0, 0, 24], [0, 300.0, 24], [0, 0, 1]])[None]
    view = torch.eye(4)[None]
    view[0, :3, 3] = torch.tensor([-0.05, -0.15, 0.4])
    img = out.render(view, K, 48, 48, g.sh_degree, backgrounds=torch.ones(1, 3))[0]
    ref = rasterization(out.means[0], q, sc, out.opacities, out.sh, view, K, 48, 48, sh_degree=g.sh_degree,
                        backgrounds=torch.ones(1, 3))[0]
    torch.testing.assert_close(img, ref, atol=1e-5, rtol=0)
    # training through it: gradients reach every shape parameter, finite, with isotropic Gaussians too
    # (the eigendecomposition is never differentiated)
    with torch.no_grad():
        g.params["log_scale"][::2] = math.log(0.2)
    g.zero_grad()
    img = g(FrameState(stretched, rotation=REST)).render(view, K, 48, 48, g.sh_degree, backgrounds=torch.ones(1, 3))[0]
    img.sum().backward()
    for name in ("local_xyz", "local_quat", "log_scale"):
        grad = g.params[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # saved and loaded with it; older states (no key) load without it
    again = MeshGaussians.from_state(g.state())
    torch.testing.assert_close(again(FrameState(stretched, rotation=REST)).means, out.means)
    state = g.state()
    del state["stretch"]
    assert not MeshGaussians.from_state(state).stretch
    # the compacted sub-mesh (what the live renderer draws) stretches the same way
    vidx, sub = g.compact()
    torch.testing.assert_close(sub(FrameState(stretched[:, vidx], rotation=REST)).means, out.means, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="stretch needs canonical_vertices"):
        MeshGaussians(g.faces, g.binding, {k: v.detach() for k, v in g.params.items()}, 0, stretch=True)
    # a triangle degenerate on the canonical mesh keeps the plain frame (finite, no stretch)
    canon = v[0].clone()
    f0 = model.faces[g.binding[0]]
    canon[f0[2]] = canon[f0[0]]  # the first Gaussian's triangle collapsed to a segment
    odd = MeshGaussians(g.faces, g.binding, {k: v.detach() for k, v in g.params.items()}, 0,
                        canonical_vertices=canon, stretch=True)
    assert bool(odd.canonical_flat[g.binding[0]]) and int(odd.canonical_flat.sum()) < len(model.faces)
    posed = odd(FrameState(stretched, rotation=REST))
    assert torch.isfinite(posed.means).all() and torch.isfinite(posed.covars).all()
    # the kinds that do not stretch say so instead of ignoring it
    from avatar.gaussians.portrait import PortraitGaussians  # noqa: PLC0415
    from avatar.gaussians.skinned_gaussians import SkinnedGaussians  # noqa: PLC0415

    for kind in (PortraitGaussians, SkinnedGaussians):
        with pytest.raises(ValueError, match="stretch=false"):
            kind.initialise(model, MeshGaussiansConfig(stretch=True))


def test_normal_extent_is_the_posed_gaussians_width_across_its_triangle():
    """``normal_extents`` (what ``train.flat_weight`` penalises) is the standard deviation of the
    posed Gaussian along its triangle's normal, in triangle sizes, whatever its own rotation."""
    model = PlaneModel()
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=6))
    with torch.no_grad():
        g.params["log_scale"].copy_(torch.log(torch.tensor([0.4, 0.3, 0.02])).expand(len(g), 3))
        g.params["local_quat"].copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(g), 4))
    torch.testing.assert_close(g.normal_extents(), torch.full((len(g),), 0.02))  # a disc on the plane
    with torch.no_grad():  # stood up: a quarter turn about its own first axis puts the 0.3 axis on the normal
        g.params["local_quat"].copy_(torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4), 0, 0]).expand(len(g), 4))
        g.params["local_quat"][::2] *= 3.0  # stored unnormalised: the same rotation
    torch.testing.assert_close(g.normal_extents(), torch.full((len(g),), 0.3))
    with torch.no_grad():
        g.params["local_quat"].copy_(torch.randn(len(g), 4))
    w = g(FrameState(model().vertices, rotation=REST))
    R = quaternion_to_matrix(w.quats)  # world covariance R S^2 R^T; the plane's normal is z
    across = (w.scales * R[..., 2, :]).norm(dim=-1)
    spacing = 0.1 / 6 * (2 + math.sqrt(2)) / 3  # the mean edge of the plane's triangles
    torch.testing.assert_close(across.reshape(-1), g.normal_extents() * spacing, atol=1e-6, rtol=1e-4)


def _render_plane(g: MeshGaussians, model, rotation: Tensor, viewmat: Tensor) -> Tensor:
    """The plane turned by ``rotation`` (axis-angle, about the origin) seen by ``viewmat``."""
    verts = model().vertices @ axis_angle_to_matrix(rotation).T
    w = g(FrameState(verts, rotation=rotation[None]))
    K = torch.tensor([[300.0, 0, 24], [0, 300.0, 24], [0, 0, 1]])[None]
    img, _, _ = w.render(viewmat[None], K, 48, 48, g.sh_degree, backgrounds=torch.ones(1, 3))
    return img[0]


@pytest.mark.parametrize("sh_frame", ["head", "world"])
def test_head_frame_colours_turn_with_the_head(sh_frame):
    """Turning the head in front of a camera shows what turning the camera the other way
    round the still head shows: with SH taken in the head's frame, colours and all; with
    world SH (plain 3DGS) the view-dependent colours differ between the two."""
    torch.manual_seed(0)
    model = PlaneModel()
    cfg = MeshGaussiansConfig(uv_resolution=16, sh_degree=2, sh_frame=sh_frame, init_opacity=0.8, init_scale=1.0)
    g = MeshGaussians.from_uv_grid(model, cfg)
    with torch.no_grad():
        g.params["shN"].normal_(0.0, 0.4)  # strongly view-dependent colours
    aa = torch.tensor([0.15, -0.5, 0.1])
    viewmat = torch.eye(4)
    viewmat[:3, 3] = torch.tensor([-0.05, -0.05, 0.3])
    turned = _render_plane(g, model, aa, viewmat)
    head_to_world = torch.eye(4)
    head_to_world[:3, :3] = axis_angle_to_matrix(aa)
    still = _render_plane(g, model, torch.zeros(3), viewmat @ head_to_world)  # the camera turned the other way
    assert (turned < 0.99).any(dim=-1).float().mean() > 0.2  # the plane fills a good part of the image
    diff = (turned - still).abs().max()
    if sh_frame == "head":
        assert diff < 1e-4
    else:
        assert diff > 0.05


def test_head_frame_needs_the_rotation():
    g = MeshGaussians.from_uv_grid(PlaneModel(), MeshGaussiansConfig(uv_resolution=8, sh_frame="head"))
    with pytest.raises(ValueError, match="head rotation"):
        g(FrameState(PlaneModel()().vertices))
    with pytest.raises(ValueError, match="sh_frame must be one of"):
        MeshGaussians.from_uv_grid(PlaneModel(), MeshGaussiansConfig(uv_resolution=8, sh_frame="camera"))


def test_packages_from_before_sh_frame_load_with_world_colours():
    g = MeshGaussians.from_uv_grid(PlaneModel(), MeshGaussiansConfig(uv_resolution=8, sh_frame="head"))
    state = g.state()
    assert state["sh_frame"] == "head"
    del state["sh_frame"]
    assert MeshGaussians.from_state(state, torch.device("cpu")).sh_frame == "world"  # no key: trained in world axes
    back = MeshGaussians.from_state({**state, "sh_frame": "head"}, torch.device("cpu"))
    assert back.sh_frame == "head" and torch.equal(back.binding, g.binding)
    torch.testing.assert_close(back.params["local_xyz"], g.params["local_xyz"])


def _optimizer(g: MeshGaussians) -> torch.optim.Adam:
    return torch.optim.Adam([{"params": [p], "name": n} for n, p in g.params.items()], lr=1e-3)


def _render_step(g, model, opt, strategy, step):
    w = g(FrameState(model().vertices, rotation=REST))
    K = torch.tensor([[200.0, 0, 32], [0, 200.0, 32], [0, 0, 1]])[None]
    viewmat = torch.eye(4)[None]
    viewmat[0, :3, 3] = torch.tensor([-0.05, -0.05, 0.4])
    img, alpha, meta = rasterization(w.means[0], w.quats[0], w.scales[0], w.opacities, w.sh, viewmat, K, 64, 64,
                                     sh_degree=g.sh_degree)
    strategy.step_pre_backward(meta)
    loss = (img - 0.8).abs().mean() + (1 - alpha).mean()
    opt.zero_grad()
    loss.backward()
    changed = strategy.step_post_backward(g, opt, meta, step)
    opt.step()
    return changed, meta


def test_densify_clone_split_prune_keep_bindings_and_optimizer_state():
    torch.manual_seed(0)
    model = PlaneModel()
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=10, sh_degree=1))
    with torch.no_grad():
        g.params["log_scale"][::2] += math.log(8.0)  # every other Gaussian is "large": splits
        g.params["opacity_logit"][:5] = -10.0  # nearly transparent: pruned
        g.params["sh0"][:, 0, 0] = torch.arange(len(g), dtype=torch.float32)  # an id that children inherit
    opt = _optimizer(g)
    strategy = DensifyStrategy(DensifyConfig(refine_start=2, refine_every=2, grad_threshold=0.0, split_scale=0.5,
                                             prune_opacity=0.005, reset_opacity_every=0))
    n0, binding0 = len(g), g.binding.clone()
    w0 = g(FrameState(model().vertices, rotation=REST))
    _render_step(g, model, opt, strategy, 1)
    changed, _ = _render_step(g, model, opt, strategy, 2)
    visible = changed["cloned"] + changed["split"]
    assert changed["split"] > 0 and changed["cloned"] > 0 and changed["pruned"] >= 5
    assert len(g) == n0 + visible - changed["pruned"]
    for name, p in g.params.items():
        assert p.shape[0] == len(g), name
        state = opt.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape, name
    assert g.binding.shape == (len(g),)
    # Every Gaussian, parent or child, is still bound to its original triangle.
    ids = torch.round(g.params["sh0"][:, 0, 0].detach()).long()
    assert torch.equal(g.binding, binding0[ids])
    assert torch.bincount(ids, minlength=n0).max() == 2  # split and cloned parents have one child
    assert not (ids < 5).any()  # the transparent ones were pruned
    # Placed on the mesh after densifying: a clone sits where its parent was (two Adam steps of
    # 1e-3 triangle sizes away at most); the two children of a split sit apart, near their parent.
    w1 = g(FrameState(model().vertices, rotation=REST))
    assert w1.means.shape[1] == len(g)
    count = torch.bincount(ids, minlength=n0)
    twice = count[ids] == 2
    cloned = twice & (ids % 2 == 1)  # the small ones (odd ids) were cloned
    split = twice & (ids % 2 == 0)  # the large ones split
    assert cloned.any() and split.any()
    torch.testing.assert_close(w1.means[0, cloned], w0.means[0, ids[cloned]], atol=1e-4, rtol=0)
    parent_size = w0.scales[0].max(-1).values
    offset = (w1.means[0, split] - w0.means[0, ids[split]]).norm(dim=-1)
    assert (offset < 4 * parent_size[ids[split]]).all() and offset.median() > 1e-4
    # The optimizer keeps working on the resized parameters.
    _render_step(g, model, opt, strategy, 3)


def test_densify_respects_the_cap():
    model = PlaneModel()
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=10, sh_degree=0))
    opt = _optimizer(g)
    n0 = len(g)
    strategy = DensifyStrategy(DensifyConfig(refine_start=1, refine_every=1, grad_threshold=0.0,
                                             max_gaussians=n0 + 7, prune_opacity=0.0, reset_opacity_every=0))
    _render_step(g, model, opt, strategy, 1)
    assert len(g) == n0 + 7


def test_ply_round_trip(tmp_path):
    torch.manual_seed(1)
    n = 50
    means, quats = torch.randn(n, 3), torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    scales, opac, sh = torch.rand(n, 3) * 0.01 + 1e-4, torch.rand(n) * 0.9 + 0.05, torch.randn(n, 16, 3)
    path = save_ply(tmp_path / "avatar.ply", means, quats, scales, opac, sh)
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "f_rest_44" in header and "property float opacity" in header
    back = load_ply(path)
    for key, ref in (("means", means), ("quats", quats), ("scales", scales), ("opacities", opac), ("sh", sh)):
        torch.testing.assert_close(back[key], ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not a PLY"):
        (tmp_path / "bad.ply").write_text("hello")
        load_ply(tmp_path / "bad.ply")


def test_deformer_starts_as_identity_and_follows_the_condition():
    model = PlaneModel()
    cfg = MeshGaussiansConfig(uv_resolution=10, sh_degree=0)
    plain = MeshGaussians.from_uv_grid(model, cfg)
    dyn = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=10, sh_degree=0, deform=True),
                                     n_condition=5)
    v = model().vertices
    cond = torch.rand(1, 5)
    torch.testing.assert_close(dyn(FrameState(v, cond, REST)).means, plain(FrameState(v, rotation=REST)).means)  # zero-initialised last layer
    with torch.no_grad():
        dyn.deformer.mlp[-1].weight.normal_(0, 0.05)
    a, b = dyn(FrameState(v, cond, REST)), dyn(FrameState(v, torch.zeros(1, 5), REST))
    assert (a.means - b.means).abs().max() > 1e-5  # offsets depend on the expression
    with pytest.raises(ValueError, match="n_condition"):
        MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=10, deform=True))


def test_the_linear_deformer_sums_one_offset_per_blendshape():
    """deform_model=linear: no offset at zero expression, offsets linear in the coefficients (the
    sum of each blendshape's at full strength, times its coefficient), and the model survives
    saving: the MLP of a saved avatar would give other offsets."""
    from avatar.gaussians.deform import BlendshapeDeformer

    model = PlaneModel()
    cfg = MeshGaussiansConfig(uv_resolution=10, sh_degree=0, deform=True, deform_model="linear")
    g = MeshGaussians.from_uv_grid(model, cfg, n_condition=3)
    assert isinstance(g.deformer, BlendshapeDeformer)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in g.deformer.parameters():
            p.normal_(0, 0.1)
    positions = g.canonical_positions()
    c = torch.tensor([[0.3, -0.5, 0.8]])
    parts = [g.deformer(positions, torch.eye(3)[i:i + 1] * c[0, i]) for i in range(3)]
    for whole, *pieces in zip(g.deformer(positions, c), *parts):
        torch.testing.assert_close(whole, sum(pieces))
    assert g.deformer(positions, c)[0].abs().max() > 1e-4
    assert all(d.abs().max() == 0 for d in g.deformer(positions, torch.zeros(1, 3)))
    v = model().vertices
    back = MeshGaussians.from_state(g.state())
    assert isinstance(back.deformer, BlendshapeDeformer)
    torch.testing.assert_close(back(FrameState(v, c, REST)).means, g(FrameState(v, c, REST)).means)
    with pytest.raises(ValueError, match="deformer model 'cubic'"):
        MeshGaussians.from_uv_grid(model, dataclasses.replace(cfg, deform_model="cubic"), n_condition=3)


def test_no_opacity_reset_near_the_end_of_training():
    model = PlaneModel()
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=8, sh_degree=0, init_opacity=0.9))
    opt = _optimizer(g)
    strategy = DensifyStrategy(DensifyConfig(refine_start=10_000, reset_opacity_every=100, reset_steps_left=50))
    meta = {"means2d": torch.zeros(1, len(g), 2), "radii": torch.ones(1, len(g), 2), "width": 8, "height": 8}
    strategy.step_post_backward(g, opt, meta, step=100, total_steps=120)  # 20 steps left: no reset
    assert torch.sigmoid(g.params["opacity_logit"]).min() > 0.89
    strategy.step_post_backward(g, opt, meta, step=100, total_steps=1000)
    assert torch.sigmoid(g.params["opacity_logit"]).max() < 0.011


@pytest.mark.skipif(not __import__("avatar.render.cpu_kernels", fromlist=["x"]).available(),
                    reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_only_posing_takes_the_compiled_loop_with_the_same_result(monkeypatch, dtype):
    """Posed without gradients on a CPU (live, render), the Gaussians are placed by one compiled
    loop: the tensor ops' means, scales and rotations, for frames turned every way (each of the
    four quaternion branches)."""
    from avatar.render import cpu_kernels

    calls = []
    real = cpu_kernels.place_gaussians
    monkeypatch.setattr(cpu_kernels, "place_gaussians", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = PlaneModel()
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=12))
    g = g.to(dtype)
    with torch.no_grad():
        g.params["local_quat"].copy_(torch.randn(len(g), 4, generator=torch.Generator().manual_seed(3)))
        g.params["local_xyz"][:, 2] += 0.05
        g.params["log_scale"][:, 0] += 0.3
    v = model().vertices.to(dtype)
    tol = {"atol": 1e-12, "rtol": 1e-12} if dtype == torch.float64 else {"atol": 1e-6, "rtol": 1e-5}
    for aa in ([0.0, 0.0, 0.0], [3.1, 0.0, 0.0], [0.0, 3.1, 0.0], [0.0, 0.0, 3.1], [0.3, -0.5, 0.2]):
        rot = axis_angle_to_matrix(torch.tensor(aa, dtype=dtype))
        state = FrameState(v @ rot.T + torch.tensor([0.01, 0.02, 0.5], dtype=dtype), rotation=torch.tensor([aa], dtype=dtype))
        ref = g(state)  # the parameters want gradients: tensor ops
        n_calls = len(calls)
        with torch.no_grad():
            got = g(state)
        assert len(calls) == n_calls + 1
        torch.testing.assert_close(got.means, ref.means.detach(), **tol)
        torch.testing.assert_close(got.scales, ref.scales.detach(), **tol)
        torch.testing.assert_close(got.quats, ref.quats.detach(), **tol)
    assert len(calls) == 5

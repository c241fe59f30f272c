"""The blendshape + skinning engine and mesh frames, on small synthetic models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar.geometry.mesh import (
    face_areas,
    face_normals,
    interpolate_barycentric,
    sample_barycentric,
    triangle_frames,
    vertex_normals,
)
from avatar.geometry.rotations import axis_angle_to_matrix
from avatar.models.engine import (
    BlendshapeModel,
    ModelData,
    Skeleton,
    blend,
    evaluate_landmarks,
    vertex_landmark_embedding,
)


def grid_mesh(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """An n x n vertex grid in the z=0 plane, triangles facing +z."""
    xs, ys = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="xy")
    verts = np.stack((xs.ravel(), ys.ravel(), np.zeros(n * n)), axis=-1)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [(a, b, e), (a, e, d)]
    return verts, np.array(faces)


def synthetic_data(skeleton: bool = False, seed: int = 0) -> ModelData:
    rng = np.random.default_rng(seed)
    verts, faces = grid_mesh()
    V = len(verts)
    sk = None
    if skeleton:
        J = 3
        weights = rng.random((V, J))
        weights /= weights.sum(1, keepdims=True)
        regressor = rng.random((J, V))
        regressor /= regressor.sum(1, keepdims=True)
        sk = Skeleton(
            parents=np.array([-1, 0, 1]),
            joint_regressor=regressor,
            weights=weights,
            posedirs=rng.normal(size=((J - 1) * 9, V * 3)) * 0.01,
            joint_names=("root", "a", "b"),
        )
    lmk_faces = np.array([0, 3, 5])
    lmk_bary = rng.dirichlet(np.ones(3), size=3).astype(np.float32)
    return ModelData(
        name="toy",
        template=verts,
        shapedirs=rng.normal(size=(V, 3, 4)) * 0.1,
        exprdirs=rng.normal(size=(V, 3, 2)) * 0.1,
        faces=faces,
        uvs=verts[:, :2],
        uv_faces=faces,
        parts={"left": verts[:, 0] < 0.5, "right": verts[:, 0] >= 0.5},
        lmk_faces=lmk_faces,
        lmk_bary=lmk_bary,
        expression_names=("smile", "frown"),
        skeleton=sk,
    )


@pytest.fixture(params=[False, True], ids=["rigid", "skinned"])
def model(request) -> BlendshapeModel:
    return BlendshapeModel(synthetic_data(skeleton=request.param))


def test_zero_inputs_give_template(model):
    out = model()
    assert out.vertices.shape == (1, model.num_vertices, 3)
    torch.testing.assert_close(out.vertices[0], model.template)
    assert out.landmarks.shape == (1, 3, 3)
    assert (out.joints is None) == (not model.has_skeleton)


def test_blendshapes_are_linear(model):
    g = torch.Generator().manual_seed(1)
    s1, s2 = torch.randn(2, 1, 4, generator=g)
    e1, e2 = torch.randn(2, 1, 2, generator=g)
    base = model().vertices
    d1 = model(shape=s1, expression=e1).vertices - base
    d2 = model(shape=s2, expression=e2).vertices - base
    d12 = model(shape=s1 + 2 * s2, expression=e1 + 2 * e2).vertices - base
    torch.testing.assert_close(d12, d1 + 2 * d2)
    expected = torch.einsum("vck,bk->bvc", model.shapedirs, s1) + torch.einsum("vck,bk->bvc", model.exprdirs, e1)
    torch.testing.assert_close(d1, expected)


def test_fewer_coefficients_pad_with_zeros(model):
    s = torch.tensor([[0.5, -0.3]])
    full = torch.cat((s, torch.zeros(1, 2)), 1)
    torch.testing.assert_close(model(shape=s).vertices, model(shape=full).vertices)
    with pytest.raises(ValueError, match="shape must be"):
        model(shape=torch.zeros(1, 5))


def test_batch_inferred_and_broadcast(model):
    expr = torch.randn(5, 2)
    out = model(shape=torch.randn(1, 4), expression=expr)
    assert out.vertices.shape[0] == 5 and out.landmarks.shape[0] == 5
    with pytest.raises(ValueError, match="batch size"):
        model(shape=torch.zeros(2, 4), expression=torch.zeros(3, 2))


def test_dtype_follows_buffers_and_mismatch_is_explained(model):
    model = model.double()
    out = model(expression=torch.zeros(2, 2, dtype=torch.float64))
    assert out.vertices.dtype == torch.float64
    with pytest.raises(ValueError, match="float32"):
        model(expression=torch.zeros(2, 2))


def test_gradients_flow(model):
    shape = torch.zeros(2, 4, requires_grad=True)
    rot = torch.zeros(2, 3, requires_grad=True)
    trans = torch.zeros(2, 3, requires_grad=True)
    kwargs = {}
    if model.has_skeleton:
        kwargs["pose"] = torch.zeros(2, 2, 3, requires_grad=True)
    out = model(shape=shape, rotation=rot, translation=trans, **kwargs)
    (out.vertices.square().sum() + out.landmarks.sum()).backward()
    for t in [shape, rot, trans, *kwargs.values()]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_global_rotation_and_translation_are_rigid(model):
    aa = torch.tensor([[0.3, -0.2, 0.5]])
    t = torch.tensor([[0.1, 0.2, -0.3]])
    t0 = t[0]
    rest = model().vertices
    out = model(rotation=aa, translation=t)
    R = axis_angle_to_matrix(aa)[0]
    if model.has_skeleton:  # rotation about the root joint
        root = model().joints[0, 0]
        expected = (rest[0] - root) @ R.T + root + t0
        torch.testing.assert_close(out.joints[0, 0], root + t0)
    else:  # rotation about the origin
        expected = rest[0] @ R.T + t0
    torch.testing.assert_close(out.vertices[0], expected, atol=1e-6, rtol=1e-5)


def test_skinning_identity_at_zero_pose_and_moves_otherwise():
    model = BlendshapeModel(synthetic_data(skeleton=True))
    assert model.num_joints == 3 and model.joint_names == ("root", "a", "b")
    rest = model()
    torch.testing.assert_close(rest.vertices[0], model.template)
    torch.testing.assert_close(rest.joints[0], model.joint_regressor @ model.template)
    posed = model(pose=torch.tensor([[0.0, 0.0, 0.4, 0.2, 0.0, 0.0]]))
    assert (posed.vertices - rest.vertices).abs().max() > 1e-3
    torch.testing.assert_close(posed.joints[0, :2], rest.joints[0, :2])  # parents of the moved joints stay


def test_pose_rejected_without_skeleton():
    model = BlendshapeModel(synthetic_data())
    with pytest.raises(ValueError, match="no skeleton"):
        model(pose=torch.zeros(1, 3))


def test_common_interface():
    data = synthetic_data()
    model = BlendshapeModel(data)
    assert model.faces.dtype == torch.long and model.faces.shape == (len(data.faces), 3)
    assert model.uvs.shape == (model.num_vertices, 2) and model.uv_faces.shape == model.faces.shape
    assert model.expression_names == ("smile", "frown")
    parts = model.parts
    assert set(parts) == {"left", "right"}
    assert parts["left"].vertices.sum() + parts["right"].vertices.sum() == model.num_vertices
    assert parts["left"].faces.dtype == torch.bool and parts["left"].faces.shape == (len(data.faces),)


def test_landmarks_are_barycentric_combinations():
    model = BlendshapeModel(synthetic_data())
    v = model(expression=torch.tensor([[1.0, -1.0]])).vertices
    lm = model.landmarks(v)
    f, b = model.faces[model.lmk_faces], model.lmk_bary
    expected = (v[0, f] * b[..., None]).sum(1)
    torch.testing.assert_close(lm[0], expected)
    torch.testing.assert_close(evaluate_landmarks(v, model.faces, model.lmk_faces, model.lmk_bary), lm)


def test_vertex_landmark_embedding_reproduces_vertices():
    verts, faces = grid_mesh()
    ids = np.array([0, 5, 15, 6])
    lf, lb = vertex_landmark_embedding(faces, ids)
    v = torch.as_tensor(verts)[None]
    out = interpolate_barycentric(v, torch.as_tensor(faces), torch.as_tensor(lf), torch.as_tensor(lb))
    torch.testing.assert_close(out[0], v[0, ids])


def test_blend_function_shapes():
    t, d = torch.zeros(6, 3), torch.randn(6, 3, 4)
    assert blend(t, d, torch.randn(7, 2)).shape == (7, 6, 3)


# ---- mesh operations --------------------------------------------------------------------


def random_mesh(B: int = 3, seed: int = 0, dtype=torch.float32):
    verts, faces = grid_mesh(5)
    g = torch.Generator().manual_seed(seed)
    v = torch.as_tensor(verts, dtype=dtype) + 0.05 * torch.randn(B, len(verts), 3, generator=g, dtype=dtype)
    return v, torch.as_tensor(faces)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triangle_frames_orthonormal_right_handed(dtype):
    v, f = random_mesh(dtype=dtype)
    origin, rot, scale = triangle_frames(v, f)
    assert origin.shape == (3, len(f), 3) and rot.shape == (3, len(f), 3, 3) and scale.shape == (3, len(f))
    assert rot.dtype == dtype
    eye = torch.eye(3, dtype=dtype).expand_as(rot)
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones_like(scale), atol=1e-5, rtol=0)
    torch.testing.assert_close(rot[..., 2], face_normals(v, f))  # third axis = normal
    torch.testing.assert_close(origin, v[:, f].mean(-2))
    edges = v[:, f] - v[:, f].roll(1, dims=-2)
    torch.testing.assert_close(scale, edges.norm(dim=-1).mean(-1))


def test_triangle_frames_follow_rigid_motion():
    v, f = random_mesh()
    R = axis_angle_to_matrix(torch.tensor([0.4, -1.1, 0.7]))
    t = torch.tensor([0.3, -0.2, 1.5])
    o1, r1, s1 = triangle_frames(v, f)
    o2, r2, s2 = triangle_frames(v @ R.T + t, f)
    torch.testing.assert_close(o2, o1 @ R.T + t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r2, R @ r1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s2, s1, atol=1e-5, rtol=1e-5)
    # so a point bound in local coordinates moves with the mesh
    local = torch.tensor([0.2, 0.1, 0.05])
    p1 = o1 + s1[..., None] * (r1 @ local)
    p2 = o2 + s2[..., None] * (r2 @ local)
    torch.testing.assert_close(p2, p1 @ R.T + t, atol=1e-5, rtol=1e-5)


def test_normals_areas_and_sampling():
    verts, faces = grid_mesh(3)
    v, f = torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces)
    torch.testing.assert_close(face_normals(v, f), torch.tensor([0.0, 0, 1]).expand(len(f), 3))
    torch.testing.assert_close(vertex_normals(v, f), torch.tensor([0.0, 0, 1]).expand(len(v), 3))
    assert math.isclose(face_areas(v, f).sum().item(), 1.0, rel_tol=1e-6)
    idx, bary = sample_barycentric(1000, f, face_areas(v, f), generator=torch.Generator().manual_seed(0))
    assert idx.shape == (1000,) and bary.shape == (1000, 3)
    assert (bary >= 0).all() and torch.allclose(bary.sum(-1), torch.ones(1000))
    pts = interpolate_barycentric(v, f, idx, bary)
    assert (pts[:, :2] >= 0).all() and (pts[:, :2] <= 1).all()
    assert abs(pts[:, 0].mean().item() - 0.5) < 0.05  # uniform over the square

"""The body-model contract (avatar.models.body) on a tiny synthetic body, the SMPL adapter on a
tiny SMPL file, and (slow) the real Anny model."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from avatar.geometry.rotations import axis_angle_to_matrix
from avatar.geometry.skeleton import POSE_LANDMARK_NAMES, forward_kinematics, kinematic_levels
from avatar.models.body import BodyData, BodyModel, BodyTrackingProfile, triangle_atlas_uvs


def tiny_body_data(seed: int = 0, shape_map=None) -> BodyData:
    """A 4-joint chain (root, spine, left arm, right arm) over a random 40-vertex mesh."""
    rng = np.random.default_rng(seed)
    V, J, K = 40, 4, 3
    template = rng.normal(size=(V, 3)) * 0.3
    joints = np.array([[0, 0, 0], [0, 0.3, 0], [0.2, 0.5, 0], [-0.2, 0.5, 0]], float)
    weights = rng.random((V, J)) ** 4
    weights[: V // 2, 2] = 0  # half the mesh does not follow the left arm
    weights /= weights.sum(1, keepdims=True)
    faces = np.stack([np.arange(V - 2), np.arange(1, V - 1), np.arange(2, V)], 1)
    reg = rng.random((33, V))
    return BodyData(
        name="tiny", template=template, shapedirs=rng.normal(size=(V, 3, K)) * 0.01, joint_template=joints,
        joint_shapedirs=rng.normal(size=(J, 3, K)) * 0.01, faces=faces, parents=np.array([-1, 0, 1, 1]),
        joint_names=("root", "spine", "arm.L", "arm.R"), weights=weights, landmark_regressor=reg / reg.sum(1, keepdims=True),
        shape_names=("a", "b", "c"), default_shape=np.zeros(K),
        tracking_profile=BodyTrackingProfile(tracked_joints=("spine", "arm.L", "arm.R"), shape_bounds=(-3, 3)),
        shape_map=shape_map,
    )


@pytest.fixture
def body() -> BodyModel:
    return BodyModel(tiny_body_data())


def test_forward_shapes_and_rest_identity(body):
    out = body()
    assert out.vertices.shape == (1, 40, 3) and out.joints.shape == (1, 4, 3)
    assert out.landmarks.shape == (1, len(POSE_LANDMARK_NAMES), 3) and out.transforms.shape == (1, 4, 4, 4)
    # zero pose, no global motion: the rest mesh, identity transforms
    torch.testing.assert_close(out.vertices, out.rest_vertices)
    torch.testing.assert_close(out.transforms, torch.eye(4).expand(1, 4, 4, 4))
    torch.testing.assert_close(body(pose=body.zero_pose(5)).vertices, out.vertices.expand(5, -1, -1))
    assert body.uvs is not None and body.uv_faces.shape == body.faces.shape  # atlas UVs when the data has none


def test_rotation_turns_about_root_and_translation_adds(body):
    aa = torch.tensor([[0.0, 0.7, 0.0]])
    t = torch.tensor([[0.1, -0.2, 0.3]])
    out, rest = body(rotation=aa, translation=t), body()
    R = axis_angle_to_matrix(aa)[0]
    root = rest.rest_joints[0, 0]
    expected = (rest.vertices[0] - root) @ R.T + root + t[0]
    torch.testing.assert_close(out.vertices[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.joints[0, 0], root + t[0])
    # the same as the root joint's own pose
    pose = body.zero_pose()
    pose[0, 0] = aa[0]
    torch.testing.assert_close(body(pose=pose, translation=t).vertices, out.vertices)


def test_joint_rotation_moves_only_its_subtree(body):
    pose = body.zero_pose()
    pose[0, 2] = torch.tensor([0.0, 0.0, 1.0])  # arm.L
    out = body(pose=pose)
    rest = body()
    torch.testing.assert_close(out.joints[:, [0, 1, 3]], rest.joints[:, [0, 1, 3]])
    torch.testing.assert_close(out.joints[:, 2], rest.joints[:, 2])  # a joint turns about itself
    untouched = body.lbs_weights[:, 2] == 0
    moved = (out.vertices[0] - rest.vertices[0]).norm(dim=-1)
    assert moved[untouched].max() < 1e-6 and moved[~untouched].max() > 1e-3


def test_matrices_and_axis_angles_agree_and_gradients_flow(body):
    pose = (torch.randn(3, 4, 3) * 0.3).requires_grad_()
    shape = torch.zeros(3, 3, requires_grad=True)
    out = body(shape=shape, pose=pose)
    torch.testing.assert_close(body(shape=shape, pose=axis_angle_to_matrix(pose)).vertices, out.vertices)
    (out.vertices.square().sum() + out.landmarks.sum()).backward()
    assert pose.grad.abs().sum() > 0 and shape.grad.abs().sum() > 0


def test_device_dtype_follow_the_model(body):
    b64 = body.to(torch.float64)
    assert b64(pose=torch.zeros(1, 4, 3, dtype=torch.float64)).vertices.dtype == torch.float64
    with pytest.raises(ValueError, match="float32 on cpu but the body model is torch.float64"):
        b64(pose=torch.zeros(1, 4, 3))


def test_bad_shapes_are_named(body):
    with pytest.raises(ValueError, match=r"shape must be \(B, 3\) \(a, b, c\)"):
        body(shape=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="disagree on the batch size"):
        body(pose=torch.zeros(2, 4, 3), translation=torch.zeros(3, 3))
    with pytest.raises(KeyError, match="no joints"):
        body.joint_index(["spine", "tail"])


def test_forward_kinematics_matches_a_per_joint_loop():
    torch.manual_seed(0)
    parents = torch.tensor([-1, 0, 1, 1, 3, 0])
    rest = torch.randn(2, 6, 3)
    rots = axis_angle_to_matrix(torch.randn(2, 6, 3))
    posed, T = forward_kinematics(rest, parents, rots, kinematic_levels(parents))
    world = [None] * 6
    pos = [None] * 6
    for j in range(6):
        p = int(parents[j])
        world[j] = rots[:, j] if p < 0 else world[p] @ rots[:, j]
        pos[j] = rest[:, j] if p < 0 else pos[p] + (world[p] @ (rest[:, j] - rest[:, p])[..., None])[..., 0]
    torch.testing.assert_close(posed, torch.stack(pos, 1))
    # each transform maps its joint's rest position to its posed one
    mapped = (T[..., :3, :3] @ rest[..., None])[..., 0] + T[..., :3, 3]
    torch.testing.assert_close(mapped, posed)


def test_triangle_atlas_cells_do_not_overlap():
    uvs, uv_faces = triangle_atlas_uvs(7)
    assert uv_faces.shape == (7, 3) and uvs.min() >= 0 and uvs.max() <= 1
    centres = uvs[uv_faces].mean(1)
    assert len(np.unique(centres.round(6), axis=0)) == 7


def test_smpl_file_fills_the_body_contract(tmp_path):
    from test_models_flame_smpl import SMPL_PARENTS, skinning_arrays

    from avatar import models

    rng = np.random.default_rng(0)
    data = skinning_arrays(rng, J=24, n_shape=10, parents=SMPL_PARENTS)
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    smpl = models.load("smpl", model_path=str(path))
    body = models.load_body("smpl", model_path=str(path))
    assert isinstance(body, BodyModel) and body.num_joints == 24 and body.joint_names[16] == "left_shoulder"
    betas = torch.randn(2, 10) * 0.5
    pose = torch.randn(2, 24, 3) * 0.3
    ref = smpl(shape=betas, rotation=pose[:, 0], pose=pose[:, 1:].reshape(2, -1))
    out = body(shape=betas, pose=pose)
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.joints, ref.joints[:, :24], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_anny_fills_the_contract_and_rests_where_anny_does():
    """The real Anny model (a minute the first time on a machine: ``anny`` builds its cache)."""
    anny = pytest.importorskip("anny")
    from avatar import models
    from avatar.models.anny_body import BLENDER_TO_BODY

    body = models.load("anny")
    assert isinstance(body, BodyModel) and body.num_vertices == 13718 and body.faces.shape == (27420, 3)
    assert body.shape_names == ("gender", "age", "muscle", "weight", "height", "proportions")
    assert set(body.body_profile.tracked_joints) <= set(body.joint_names)
    ref = anny.Anny(skinning_method="lbs").to(torch.float64)
    phenotype = torch.tensor([[0.2, 0.6, 0.4, 0.7, 0.3, 0.5]])
    rest = ref(phenotype_kwargs=phenotype.double())["rest_vertices"][0].float() @ torch.as_tensor(BLENDER_TO_BODY).float().T
    out = body(shape=phenotype)
    torch.testing.assert_close(out.vertices[0], rest, atol=1e-4, rtol=0)
    # upright, facing +Z, left toward +X
    lm = dict(zip(POSE_LANDMARK_NAMES, out.landmarks[0]))
    assert lm["nose"][1] > lm["left_hip"][1] > lm["left_ankle"][1]
    assert lm["left_shoulder"][0] > 0 > lm["right_shoulder"][0] and lm["nose"][2] > lm["left_ear"][2]


def test_sparse_skinning_matches_dense():
    from avatar.geometry.skeleton import linear_blend_skinning

    torch.manual_seed(1)
    T = torch.eye(4).repeat(2, 5, 1, 1)
    T[:, :, :3, :] += torch.randn(2, 5, 3, 4) * 0.2
    w = torch.rand(7, 5) * (torch.rand(7, 5) > 0.5)
    w[:, 0] += 0.1
    w = w / w.sum(1, keepdim=True)
    top = torch.topk(w, 3, dim=1)
    w_sparse = torch.zeros_like(w).scatter(1, top.indices, top.values)
    pts = torch.randn(2, 7, 3)
    dense, _ = linear_blend_skinning(pts, w_sparse, T)
    sparse, _ = linear_blend_skinning(pts, top.values, T, top.indices)
    torch.testing.assert_close(sparse, dense)


def test_missing_anny_says_how_to_install_it(monkeypatch):
    import sys

    from avatar import models
    from avatar.models.assets import AssetNotFoundError

    monkeypatch.setitem(sys.modules, "anny", None)  # import anny -> ImportError
    with pytest.raises(AssetNotFoundError, match="pip install anny"):
        models.load_body("anny")


def test_missing_smpl_file_names_where_to_get_it(tmp_path, monkeypatch):
    from avatar import models
    from avatar.models.assets import AssetNotFoundError

    monkeypatch.setenv("AVATAR_ASSETS", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(AssetNotFoundError, match="smpl.is.tue.mpg.de") as info:
        models.load_body("smpl")
    assert str(tmp_path / "SMPL_NEUTRAL.pkl") in str(info.value)  # it says where it looked
    with pytest.raises(ValueError, match="available: anny, smpl, smplx"):
        models.load_body("flame")


def _random_rigid(B: int, J: int, seed: int = 0) -> torch.Tensor:
    from avatar.geometry.rotations import axis_angle_to_matrix

    g = torch.Generator().manual_seed(seed)
    T = torch.eye(4).repeat(B, J, 1, 1)
    T[:, :, :3, :3] = axis_angle_to_matrix(torch.randn(B, J, 3, generator=g))
    T[:, :, :3, 3] = torch.randn(B, J, 3, generator=g)
    return T


def test_dual_quaternion_skinning_agrees_with_linear_where_one_joint_moves_a_point():
    from avatar.geometry.skeleton import dual_quaternion_skinning, linear_blend_skinning

    B, J, N = 2, 5, 9
    T = _random_rigid(B, J)
    points = torch.randn(B, N, 3, generator=torch.Generator().manual_seed(1))
    one = torch.zeros(N, J)
    one[torch.arange(N), torch.arange(N) % J] = 1.0
    torch.testing.assert_close(dual_quaternion_skinning(points, one, T)[0], linear_blend_skinning(points, one, T)[0],
                               atol=1e-5, rtol=1e-5)
    # sparse weights (each point's joints, heaviest first) give what the dense ones give
    w = torch.rand(N, J, generator=torch.Generator().manual_seed(2))
    w = w / w.sum(1, keepdim=True)
    top = torch.topk(w, 3, dim=1)
    dense = torch.zeros_like(w).scatter(1, top.indices, top.values / top.values.sum(1, keepdim=True))
    sparse_out, blended = dual_quaternion_skinning(points, top.values / top.values.sum(1, keepdim=True), T, top.indices)
    torch.testing.assert_close(sparse_out, dual_quaternion_skinning(points, dense, T)[0], atol=1e-5, rtol=1e-5)
    R = blended[..., :3]  # rigid: the blended rotations stay rotations
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5, rtol=1e-5)


def test_dual_quaternions_keep_a_twisted_joint_from_collapsing():
    """Half way between a joint at rest and one twisted by 160 degrees, linear blending pulls a
    point 1 from the axis to 0.17 of it (the candy wrapper); dual quaternions keep it at 1."""
    from avatar.geometry.rotations import axis_angle_to_matrix
    from avatar.geometry.skeleton import dual_quaternion_skinning, linear_blend_skinning

    T = torch.eye(4).repeat(1, 2, 1, 1)
    T[0, 1, :3, :3] = axis_angle_to_matrix(torch.tensor([np.radians(160.0), 0.0, 0.0]))
    point, half = torch.tensor([[[0.0, 1.0, 0.0]]]), torch.tensor([[0.5, 0.5]])
    assert float(linear_blend_skinning(point, half, T)[0].norm()) < 0.2
    assert float(dual_quaternion_skinning(point, half, T)[0].norm()) == pytest.approx(1.0, abs=1e-5)


def test_a_body_model_skins_with_dual_quaternions_when_asked():
    from avatar.models.body import BodyModel
    from avatar.models.toy_body import toy_body, toy_body_data

    lbs, dqs = toy_body(), BodyModel(toy_body_data(), skinning="dqs")
    pose = torch.zeros(1, lbs.num_joints, 3)
    torch.testing.assert_close(dqs(pose=pose).vertices, lbs(pose=pose).vertices)  # at rest they agree
    pose[0, 1:] = 0.6
    moved_lbs, moved_dqs = lbs(pose=pose).vertices, dqs(pose=pose).vertices
    assert not torch.allclose(moved_lbs, moved_dqs, atol=1e-4)
    with pytest.raises(ValueError, match="skinning='cubic'"):
        BodyModel(toy_body_data(), skinning="cubic")

"""The skinned body avatar kind (avatar.gaussians.skinned_gaussians) and the trainer's body
case, on the toy body model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avatar.gaussians.base import FrameState
from avatar.gaussians.config import MeshGaussiansConfig
from avatar.gaussians.registry import avatar_from_state
from avatar.gaussians.skinned_gaussians import SkinnedGaussians
from avatar.geometry.rotations import axis_angle_to_matrix
from avatar.models.toy_body import toy_body

CFG = MeshGaussiansConfig(kind="skinned_gaussians", uv_resolution=24, sh_degree=1)


@pytest.fixture(scope="module")
def body():
    return toy_body()


def posed(body, pose=None, rotation=None, translation=None):
    out = body(pose=pose, rotation=rotation, translation=translation)
    return FrameState(out.vertices, None, rotation if rotation is not None else torch.zeros(1, 3), pose)


def test_forward_shapes_and_rigid_motion(body):
    g = SkinnedGaussians.initialise(body, CFG)
    assert len(g) > 50 and g.kind == "skinned_gaussians"
    pose = torch.zeros(1, body.num_joints, 3)
    pose[0, body.joint_names.index("left_elbow")] = torch.tensor([0.0, 0.0, 0.8])
    w0 = g(posed(body, pose))
    assert w0.means.shape == (1, len(g), 3) and w0.quats.shape == (1, len(g), 4) and w0.scales.shape == (1, len(g), 3)
    # the whole body turned and moved: every Gaussian turns and moves with it
    aa, t = torch.tensor([[0.0, 1.2, 0.3]]), torch.tensor([[0.2, 0.0, -1.0]])
    w1 = g(posed(body, pose, aa, t))
    root = body().joints[0, 0]
    R = axis_angle_to_matrix(aa)[0]
    torch.testing.assert_close(w1.means[0], (w0.means[0] - root) @ R.T + root + t[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w1.scales, w0.scales, atol=1e-6, rtol=1e-5)


def test_state_round_trip_with_pose_offsets(body):
    g = SkinnedGaussians.initialise(body, dataclasses.replace(CFG, deform=True, deform_hidden=16, deform_layers=1))
    pose = torch.randn(1, body.num_joints, 3) * 0.3
    state = posed(body, pose)
    before = g(state).means
    torch.nn.init.normal_(g.deformer.mlp[-1].weight, std=0.1)  # a trained deformer moves Gaussians with the pose
    moved = g(state).means
    assert (moved - before).abs().max() > 1e-4
    back = avatar_from_state("skinned_gaussians", g.state())
    assert isinstance(back, SkinnedGaussians) and back.pose_joints.tolist() == g.pose_joints.tolist()
    torch.testing.assert_close(back(state).means, moved)
    # the offsets depend on the pose: relative to the plain skinned avatar they differ between poses
    plain = SkinnedGaussians.initialise(body, CFG)
    other = posed(body, pose * 0)
    assert not torch.allclose(g(other).means - plain(other).means, moved - plain(state).means, atol=1e-5)
    with pytest.raises(ValueError, match="deform_model='linear'"):  # per-blendshape offsets are for heads
        SkinnedGaussians.initialise(body, dataclasses.replace(CFG, deform=True, deform_model="linear"))


def test_subset_and_compact_keep_the_kind(body):
    g = SkinnedGaussians.initialise(body, CFG)
    sub = g.subset(torch.arange(10))
    assert isinstance(sub, SkinnedGaussians) and len(sub) == 10
    vidx, compact = sub.compact()
    full = sub(posed(body)).means
    torch.testing.assert_close(compact(FrameState(body().vertices[:, vidx], None, torch.zeros(1, 3))).means, full)


def test_a_head_model_is_refused():
    from avatar.models.body import BodyModel  # noqa: F401

    class Head(torch.nn.Module):
        name = "ict"

    with pytest.raises(ValueError, match="needs a body model"):
        SkinnedGaussians.initialise(Head(), CFG)


def test_trainer_reads_a_body_capture(tmp_path, body):
    from avatar.io.capture import Capture
    from avatar.io.tracking import load_tracking
    from avatar.synthetic.body_capture import BodySyntheticConfig, make_body_capture
    from avatar.train.data import load_frames
    from avatar.train.session import export_ply
    from avatar.train.trainer import TrainConfig, Trainer, init_gaussians

    root = make_body_capture(tmp_path / "cap", BodySyntheticConfig(n_frames=6, resolution=32, supersample=1),
                             body=body, progress=False)
    cap, tracking = Capture(root), load_tracking(root)
    frames = load_frames(cap, tracking, body, 32, 0.2, torch.device("cpu"), mask="head")
    assert frames.is_body and frames.pose.shape == (6, body.num_joints, 3) and frames.conditions.shape == (6, 0)
    # mask=head is a head's option: a body keeps the whole person
    assert torch.equal(frames.masks[0], torch.from_numpy((np.clip(cap.load_mask(0), 0, 1) * 255 + 0.5).astype(np.uint8)))
    cfg = TrainConfig(iterations=3, resolution=32, gaussians=CFG, preview_every=0, checkpoint_every=0)
    trainer = Trainer(cfg, frames, init_gaussians(body, cfg.gaussians, frames), tmp_path / "run", model=body)
    trainer.run(progress=False)
    assert trainer.step == 3 and not trainer.skipped_steps
    metrics = trainer.evaluate()
    assert metrics["frames"] == 1 and np.isfinite(metrics["psnr"])
    ply = export_ply(trainer, tracking, body, tmp_path / "avatar.ply")
    assert ply.stat().st_size > 0
    with pytest.raises(ValueError, match="refine_tracking is for heads"):
        Trainer(dataclasses.replace(cfg, refine_tracking=True), frames, trainer.gaussians, tmp_path / "run2", model=body)


def test_a_pose_beyond_the_training_frames_reads_the_offsets_of_the_nearest_trained_one(body):
    """The deformer's condition is bounded by the training frames' range (recorded at
    initialisation, kept in the state): a squat an A-pose turnaround never showed gets the
    offsets of the most bent pose it did show, not an MLP's extrapolation."""
    from types import SimpleNamespace

    cfg = dataclasses.replace(CFG, deform=True, deform_hidden=16, deform_layers=1)
    joint = body.joint_names.index("left_elbow")
    train_pose = torch.zeros(6, body.num_joints, 3)
    train_pose[:, joint, 2] = torch.linspace(0.0, 0.4, 6)  # the elbow bent up to 0.4 rad in training
    frames = SimpleNamespace(pose=train_pose, train=np.arange(5))  # the last frame held out
    g = SkinnedGaussians.initialise(body, cfg, frames=frames)
    assert g.pose_range is not None and g.pose_range.shape == (2, 9 * len(g.pose_joints))
    torch.nn.init.normal_(g.deformer.mlp[-1].weight, std=0.1)
    torch.nn.init.normal_(g.deformer.mlp[0].weight, std=1.0)

    def bent(angle: float) -> torch.Tensor:
        pose = torch.zeros(1, body.num_joints, 3)
        pose[0, joint, 2] = angle
        return pose

    def means(model, mesh_bend: float, condition_bend: float) -> torch.Tensor:
        """Gaussians on the mesh bent by ``mesh_bend``, the deformer told ``condition_bend``."""
        out = body(pose=bent(mesh_bend))
        return model(FrameState(out.vertices, None, torch.zeros(1, 3), bent(condition_bend))).means

    unbounded = avatar_from_state("skinned_gaussians", {k: v for k, v in g.state().items() if k != "pose_range"})
    assert unbounded.pose_range is None  # files written before keep their behaviour
    edge = 0.32  # the most bent training frame (frame 4 of 0..5)
    torch.testing.assert_close(means(g, 1.5, 1.5), means(unbounded, 1.5, edge), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(means(unbounded, 1.5, 1.5), means(unbounded, 1.5, edge), atol=1e-4)
    torch.testing.assert_close(means(g, 0.2, 0.2), means(unbounded, 0.2, 0.2))  # within the range: as trained
    back = avatar_from_state("skinned_gaussians", g.state())
    torch.testing.assert_close(back.pose_range, g.pose_range)

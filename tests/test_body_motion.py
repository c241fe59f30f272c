"""Driving body avatars (avatar.drive.body_motion): AMASS/SMPL motion files, retargeting by
joint name and bone direction, resampling, the errors, and rendering through each camera."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.drive.body_motion import (
    BodyDrive,
    body_frames,
    load_body_drive,
    motion_drive,
    read_motion,
    resample,
    retarget_pose,
)
from avatar.drive.sequence import DriveError
from avatar.geometry.rotations import axis_angle_to_matrix
from avatar.models.toy_body import toy_body


@pytest.fixture(scope="module")
def body():
    return toy_body()


def motion_file(path, T=12, D=72, fps=60.0, **extra):
    poses = np.zeros((T, D))
    poses[:, 16 * 3 + 2] = np.linspace(0, -1.0, T)  # left shoulder lowers the arm from the T-pose
    np.savez(path, poses=poses, trans=np.zeros((T, 3)), mocap_framerate=fps, **extra)
    return path


def test_rest_motion_puts_the_arms_in_smpls_t_pose(tmp_path, body):
    motion = read_motion(motion_file(tmp_path / "m.npz", D=156))
    assert motion.poses.shape == (12, 52, 3) and motion.fps == 60
    pose, notes = retarget_pose(motion, body)
    assert pose.shape == (12, body.num_joints, 3)
    assert any("left_index1" in n for n in notes)  # SMPL-H fingers: no joint on the toy skeleton
    out = body(pose=torch.as_tensor(pose))
    j = {n: out.joints[:, i] for i, n in enumerate(body.joint_names)}
    arm = torch.nn.functional.normalize(j["left_elbow"] - j["left_shoulder"], dim=-1)
    # frame 0: the source rests in a T-pose, so the target's upper arm points along +x (its left)
    torch.testing.assert_close(arm[0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4, rtol=0)
    # last frame: lowered by 1 rad about -z, as the source's
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(arm[-1], R @ torch.tensor([1.0, 0.0, 0.0]), atol=1e-4, rtol=0)


def test_global_motion_is_relative_to_the_first_frame_and_resampled(tmp_path, body):
    path = tmp_path / "m.npz"
    T = 31
    from avatar.geometry.rotations import matrix_to_axis_angle

    poses = np.zeros((T, 72))
    upright = axis_angle_to_matrix(torch.tensor([np.pi / 2, 0.0, 0.0], dtype=torch.float64))  # AMASS: Z up
    turn = axis_angle_to_matrix(torch.stack([torch.zeros(T), torch.zeros(T), torch.linspace(0, np.pi / 2, T)], 1).double())
    poses[:, :3] = matrix_to_axis_angle(turn @ upright).numpy()  # turning about the (Z) vertical
    trans = np.zeros((T, 3))
    trans[:, 0] = np.linspace(0, 1.0, T)
    np.savez(path, poses=poses, trans=trans, mocap_framerate=30.0)
    ref_r, ref_t = np.array([0.0, 0.3, 0.0]), np.array([0.0, 0.0, 2.0])
    drive = motion_drive(path, body, ref_r, ref_t, fps=15.0)
    assert drive.n_frames == 16 and drive.fps == 15 and any("resampled" in n for n in drive.notes)
    np.testing.assert_allclose(drive.rotation[0], ref_r, atol=1e-5)
    np.testing.assert_allclose(drive.translation[0], ref_t, atol=1e-5)
    # the turn about the file's vertical is a turn about the avatar's (y): 90 degrees on top of the reference
    R = axis_angle_to_matrix(torch.as_tensor(drive.rotation[-1], dtype=torch.float64))
    expected = axis_angle_to_matrix(torch.tensor([0.0, 0.3 + np.pi / 2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(R, expected, atol=1e-4, rtol=0)
    assert abs(np.linalg.norm(drive.translation[-1] - ref_t) - 1.0) < 1e-4


def test_resample_interpolates_halfway():
    pose = np.zeros((2, 1, 3), np.float32)
    pose[1, 0, 2] = 1.0
    out, _, t = resample(pose, np.zeros((2, 3), np.float32), np.array([[0, 0, 0], [1, 0, 0]], np.float32), 1.0, 2.0)
    assert out.shape == (3, 1, 3)
    np.testing.assert_allclose(out[1, 0], [0, 0, 0.5], atol=1e-5)
    np.testing.assert_allclose(t[1], [0.5, 0, 0], atol=1e-6)


def test_bad_motion_files_are_named(tmp_path, body):
    np.savez(tmp_path / "a.npz", trans=np.zeros((3, 3)))
    with pytest.raises(DriveError, match="has no 'poses'"):
        read_motion(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", poses=np.zeros((3, 51)))
    with pytest.raises(DriveError, match="without joint_names it must be SMPL's 72"):
        read_motion(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", poses=np.zeros((3, 6)), joint_names=np.array(["Hips", "LeftUpLeg"]))
    with pytest.raises(DriveError, match=r"none of its joints \['Hips', 'LeftUpLeg'\] maps"):
        retarget_pose(read_motion(tmp_path / "c.npz"), body)
    np.savez(tmp_path / "d.npz", poses=np.zeros((3, 72)), trans=np.zeros((2, 3)))
    with pytest.raises(DriveError, match=r"'trans' must be \[3, 3\]"):
        read_motion(tmp_path / "d.npz")


class _Package:
    """What the body driver reads of an avatar package, around a real skinned avatar."""

    def __init__(self, body):
        from avatar.gaussians.config import MeshGaussiansConfig
        from avatar.gaussians.package import AvatarPackage
        from avatar.gaussians.skinned_gaussians import SkinnedGaussians
        from avatar.geometry.cameras import intrinsics, look_at

        g = SkinnedGaussians.initialise(body, MeshGaussiansConfig(kind="skinned_gaussians", uv_resolution=16, sh_degree=0))
        state = {"shape": torch.zeros(1), "K": intrinsics(40.0, 40.0, 16.0, 16.0),
                 "viewmat": look_at(torch.tensor([0.0, 0.0, 3.0]), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0])),
                 "width": 32, "height": 32, "background": torch.ones(3), "body": True,
                 "reference_rotation": torch.zeros(3), "reference_translation": torch.zeros(3)}
        self.pkg = AvatarPackage(state, g, body, torch.device("cpu"))


def test_every_camera_renders_the_driven_body(tmp_path, body):
    pkg = _Package(body).pkg
    drive = motion_drive(motion_file(tmp_path / "m.npz", T=4, fps=30.0), body, np.zeros(3), np.zeros(3))
    images = {}
    for camera in ("tracked", "fixed", "orbit"):
        frames = list(body_frames(pkg, drive, camera))
        assert len(frames) == 4 and frames[0][0].shape == (32, 32, 3)
        images[camera] = np.stack([f[0] for f in frames])
    assert (images["tracked"][0] < 200).any()  # the body shows on the white background
    assert not np.array_equal(images["orbit"][2], images["tracked"][2])  # the orbit camera has moved round
    with pytest.raises(DriveError, match="camera must be"):
        next(iter(body_frames(pkg, drive, "side")))


def test_a_head_driver_cannot_drive_a_body(tmp_path, body):
    pkg = _Package(body).pkg
    csv = tmp_path / "take.csv"
    csv.write_text("Timecode,BlendShapeCount\n")
    with pytest.raises(DriveError, match="cannot drive a body avatar: drive it with a motion file"):
        load_body_drive(csv, pkg)
    head = tmp_path / "head.npz"
    np.savez(head, expression=np.zeros((2, 3)), expression_names=np.array(["a", "b", "c"]), rotation=np.zeros((2, 3)))
    with pytest.raises(DriveError, match="cannot drive a body avatar"):
        load_body_drive(head, pkg)
    assert isinstance(load_body_drive(motion_file(tmp_path / "m.npz"), pkg), BodyDrive)


def test_the_novel_motion_file_reads_and_retargets(tmp_path, body):
    from avatar.synthetic.body_capture import amass_motion

    np.savez(tmp_path / "novel.npz", **amass_motion(20, 30.0))
    motion = read_motion(tmp_path / "novel.npz")
    assert motion.poses.shape == (20, 24, 3) and motion.fps == 30
    drive = motion_drive(tmp_path / "novel.npz", body, np.zeros(3), np.zeros(3))
    assert drive.n_frames == 20 and np.isfinite(drive.pose).all()
    assert np.abs(drive.pose).max() > 0.5  # it moves


def _body_avatar_file(path, body):
    from avatar.gaussians.config import MeshGaussiansConfig
    from avatar.gaussians.skinned_gaussians import SkinnedGaussians
    from avatar.geometry.cameras import intrinsics, look_at
    from avatar.io import avatar_file

    g = SkinnedGaussians.initialise(body, MeshGaussiansConfig(kind="skinned_gaussians", uv_resolution=16, sh_degree=0))
    return avatar_file.write_avatar(
        path, model="toy_body", model_options={}, kind=g.kind, config={}, avatar_state=g.state(), expression_names=[],
        shape=torch.zeros(1), K=intrinsics(40.0, 40.0, 16.0, 16.0),
        viewmat=look_at(torch.tensor([0.0, 0.0, 3.0]), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0])),
        width=32, height=32, background=torch.ones(3), body=True, reference_rotation=torch.zeros(3),
        reference_translation=torch.zeros(3), joint_names=list(body.joint_names),
        reference_pose=torch.zeros(body.num_joints, 3))


@pytest.mark.slow
def test_render_cli_drives_a_body_and_refuses_a_head_driver(tmp_path, body, capsys):
    from avatar import cli

    avatar = _body_avatar_file(tmp_path / "avatar.pt", body)
    motion = motion_file(tmp_path / "m.npz", T=4, fps=30.0)
    assert cli.main(["render", f"run={avatar}", f"drive={motion}", f"out={tmp_path / 'out.mp4'}", "camera=orbit"]) == 0
    assert (tmp_path / "out.mp4").stat().st_size > 0
    csv = tmp_path / "take.csv"
    csv.write_text("Timecode,BlendShapeCount\n0,52\n")
    capsys.readouterr()
    assert cli.main(["render", f"run={avatar}", f"drive={csv}", f"out={tmp_path / 'x.mp4'}"]) == 1
    err = capsys.readouterr().err
    assert "cannot drive a body avatar" in err and "Traceback" not in err

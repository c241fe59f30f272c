"""Body tracking (avatar.tracking.body_*): fast posed points, yaw search, silhouette terms, the fit,
and ``avatar track`` on a synthetic body capture, all on the toy body model (a few hundred vertices)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avatar.geometry.rotations import axis_angle_to_matrix
from avatar.models.toy_body import toy_body
from avatar.tracking.body_fit import (
    CAMERA_FLIP, BodyFitConfig, fit_body_sequence, initial_yaw, project, to_camera, yaw_matrix,
)
from avatar.tracking.body_points import BodyPoints, spread_vertices
from avatar.tracking.silhouette import mask_iou, outline_points, silhouette_targets

FAST_FIT = dict(global_iterations=30, torso_iterations=30, limb_iterations=40, silhouette_vertices=120)


@pytest.fixture(scope="module")
def body():
    return toy_body()


def _random_motion(body, F: int, seed: int = 0, amount: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    tracked = body.joint_index(body.body_profile.tracked_joints)
    pose = torch.zeros(F, body.num_joints, 3)
    pose[:, tracked] = (torch.rand(F, len(tracked), 3, generator=g) - 0.5) * 2 * amount
    return pose


def _folded(pose: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    R = axis_angle_to_matrix(pose).clone()
    R[:, 0] = axis_angle_to_matrix(rotation) @ R[:, 0]
    return R


def test_body_points_match_the_model(body):
    F = 5
    pose = _random_motion(body, F, amount=0.8)
    rotation = torch.randn(F, 3, generator=torch.Generator().manual_seed(1))
    translation = torch.randn(F, 3, generator=torch.Generator().manual_seed(2))
    shape = body.default_shape + 0.3
    out = body(shape=shape[None], pose=pose, rotation=rotation, translation=translation)
    ids = spread_vertices(body.template, 50)
    assert len(set(ids.tolist())) == 50
    lm, verts, joints = BodyPoints(body, ids)(shape, _folded(pose, rotation), translation)
    torch.testing.assert_close(lm, out.landmarks, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(verts, out.vertices[:, ids], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joints, out.joints, atol=1e-5, rtol=1e-5)
    lm2, none, _ = BodyPoints(body)(shape, _folded(pose, rotation), translation, vertices=False)
    torch.testing.assert_close(lm2, lm) and none.shape == (F, 0, 3)


def _seen(body, pose, rotation, translation, focal=300.0, size=256):
    """Pose landmarks [F, 33, 4] (pixels, visibility 1) of the body seen by the tracking camera."""
    with torch.no_grad():
        out = body(pose=pose, rotation=rotation, translation=translation)
        px = project(to_camera(out.landmarks), torch.tensor(focal), torch.tensor([size / 2, size / 2]))
    lm = torch.ones(pose.shape[0], 33, 4)
    lm[..., :2] = px
    lm[..., 2] = 0.0
    return lm, out


def test_initial_yaw_follows_a_full_turn(body):
    F = 24
    yaw = torch.linspace(0, 2 * np.pi, F + 1)[:-1] + 0.1
    rotation = torch.stack((torch.zeros(F), yaw, torch.zeros(F)), -1)  # axis-angle about +Y
    translation = torch.tensor([0.0, 0.0, -3.0]).expand(F, 3)
    lm, _ = _seen(body, body.zero_pose(F), rotation, translation)
    rest = BodyPoints(body)(body.default_shape, torch.eye(3).expand(1, body.num_joints, 3, 3), torch.zeros(1, 3),
                            vertices=False)[0][0]
    valid = np.ones(F, bool)
    valid[5] = False  # no data: bridged
    found = initial_yaw(lm.numpy(), valid, rest.numpy())
    offset = found - yaw.numpy()
    offset -= 2 * np.pi * np.round(offset[0] / (2 * np.pi))
    assert np.abs(offset).max() < np.radians(25), np.degrees(offset)  # within a step of the search
    assert np.all(np.diff(found) >= 0) and found[-1] - found[0] > np.radians(270)  # one turn, no jump back


def test_yaw_matrix_is_a_turn_about_y():
    a = torch.tensor([0.3, -2.0])
    torch.testing.assert_close(yaw_matrix(a), axis_angle_to_matrix(torch.stack((0 * a, a, 0 * a), -1)))


def test_silhouette_distances():
    H = 64
    mask = np.zeros((H, H), np.float32)
    mask[16:48, 16:48] = 1.0
    scale, origin = np.array([0.5]), np.array([[10.0, 20.0]])  # capture px = (source px - origin) * 0.5
    sil = silhouette_targets([mask], scale, origin, size=64, outline_count=64)
    src = lambda cap: torch.tensor(cap, dtype=torch.float32)[None] / 0.5 + torch.tensor([10.0, 20.0])  # noqa: E731
    d = sil.inside_distance(src([[32.0, 32.0], [8.0, 32.0], [32.0, 60.0], [-8.0, 32.0]]))[0]
    assert d[0] == 0.0
    np.testing.assert_allclose(d[1:3].numpy(), [2 * 8.0, 2 * 12.0], atol=2 * 1.5)  # source px, 2 per capture px
    assert d[3] > d[1] + 2 * 10  # off the frame: still growing
    cover = sil.cover_distance(src([[32.0, 32.0]]), 0.0)[0]  # one point in the middle: outline ~16 px away
    assert 2 * 15 < cover.min() and cover.max() < 2 * 23.5
    assert sil.cover_distance(src([[16.0, 16.0]]), 1e6).max() == 0.0  # tolerance
    assert outline_points(np.zeros((8, 8), bool), 10) is None
    assert mask_iou(mask > 0, mask > 0) == 1.0 and mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_fit_recovers_a_toy_motion(body):
    F, size, focal = 8, 256, 300.0
    pose = _random_motion(body, F, seed=3, amount=0.25)
    pose = torch.cumsum(pose * 0.2, 0) + pose[:1]  # smooth in time
    rotation = torch.stack((torch.zeros(F), torch.linspace(0.2, 1.0, F), torch.zeros(F)), -1)
    translation = torch.tensor([0.1, -0.05, -3.0]).expand(F, 3)
    lm, out = _seen(body, pose, rotation, translation, focal, size)
    valid = torch.ones(F, dtype=torch.bool)
    valid[4] = False
    cfg = BodyFitConfig(**FAST_FIT, focal=focal)
    result = fit_body_sequence(body, lm, valid, size, size, cfg=cfg)
    with torch.no_grad():
        fit = body(shape=result.shape[None], pose=result.pose, rotation=result.rotation, translation=result.translation)
        px = project(to_camera(fit.landmarks), torch.tensor(focal), torch.tensor([size / 2, size / 2]))
    err = (px - lm[..., :2]).norm(dim=-1)
    assert err[valid].median() < 2.0, err.median()  # pixels, of a ~150 px tall body
    assert err[4].median() < 6.0  # the frame without data is interpolated
    assert result.stats["limbs"]["iterations"] == FAST_FIT["limb_iterations"]
    assert result.pose.shape == (F, body.num_joints, 3) and result.rotation.shape == (F, 3)
    untracked = [i for i, n in enumerate(body.joint_names) if n not in body.body_profile.tracked_joints]
    assert (result.pose[:, untracked] == 0).all()
    with pytest.raises(ValueError, match="no frame"):
        fit_body_sequence(body, lm, torch.zeros(F, dtype=torch.bool), size, size, cfg=cfg)


@pytest.fixture(scope="module")
def body_capture(body, tmp_path_factory):
    from avatar.synthetic.body_capture import BodySyntheticConfig, make_body_capture

    root = tmp_path_factory.mktemp("body") / "cap"
    make_body_capture(root, BodySyntheticConfig(n_frames=6, resolution=96, supersample=1), body=body, progress=False)
    (root / "tracking.npz").unlink(missing_ok=True)
    return root


def test_track_body_capture_writes_tracking_report_and_overlay(body, body_capture, tmp_path):
    from avatar.io.tracking import BodyTrackedSequence, load_tracking
    from avatar.tracking.body_track import BodyTrackConfig, track_body_capture

    cfg = BodyTrackConfig(fit=BodyFitConfig(**FAST_FIT), iou_size=64)
    report = track_body_capture(body_capture, body, cfg, out=tmp_path / "track")
    seq = load_tracking(tmp_path / "track" / "tracking.npz", model="toy_body")
    assert isinstance(seq, BodyTrackedSequence) and seq.n_frames == 6 and seq.K.shape == (6, 3, 3)
    np.testing.assert_array_equal(seq.viewmat, np.diag(CAMERA_FLIP + (1.0,)))
    assert seq.mask_iou.shape == (6,) and seq.landmark_error_px.shape == (6,)
    saved = json.loads((tmp_path / "track" / "tracking_report.json").read_text())
    assert saved["mask_iou"]["median"] == report["mask_iou"]["median"] > 0.6
    assert report["reprojection_px"]["median"] < 3.0  # the capture's landmarks are the exact truth
    assert (tmp_path / "track" / "tracking_overlay.mp4").stat().st_size > 0
    assert set(report["stages"]) == {"global", "torso", "limbs"}
    assert report["photometric"]["iterations"] == cfg.photometric.iterations  # the colour stage ran


def test_track_body_capture_refuses_a_capture_without_pose(body, tmp_path):
    from avatar.io.capture import CaptureError, CaptureMeta, CaptureWriter, Landmarks
    from avatar.tracking.body_track import track_body_capture

    writer = CaptureWriter(tmp_path / "head")
    writer.write_frame(0, np.zeros((16, 16, 3), np.uint8))
    writer.write_mask(0, np.zeros((16, 16), np.uint8))
    writer.finish(CaptureMeta(source="x", fps=25.0, width=16, height=16, n_frames=1),
                  Landmarks(face=np.zeros((1, 478, 3), np.float32), face_present=np.ones(1, bool)))
    with pytest.raises(CaptureError, match="subject=body"):
        track_body_capture(tmp_path / "head", body)


@pytest.mark.slow
def test_cli_tracks_a_body_capture_and_refuses_a_head_model(body_capture, tmp_path):
    """``avatar track`` picks body tracking for a body capture (two subprocesses, ~10 s)."""
    import subprocess
    import sys

    fast = [f"track.body.fit.{k}={v}" for k, v in FAST_FIT.items()]
    run = subprocess.run([sys.executable, "-m", "avatar", "track", f"capture={body_capture}", f"out={tmp_path / 't'}",
                          "model=toy_body", "track.progress=false", "track.overlay=false", *fast],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "body frames fitted" in run.stdout and (tmp_path / "t" / "tracking.npz").is_file()
    bad = subprocess.run([sys.executable, "-m", "avatar", "track", f"capture={body_capture}", f"out={tmp_path / 'u'}",
                          "model=ict"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "model=anny" in bad.stderr, bad.stderr


def test_body_motion_from_landmarks_keeps_the_avatar_shape(body):
    from avatar.drive.body_video import BodyMotion, body_motion_from_landmarks
    from avatar.drive.sequence import DriveError

    F, size = 6, 256
    pose = _random_motion(body, F, seed=5, amount=0.2)
    rotation = torch.stack((torch.zeros(F), torch.linspace(0.0, 0.5, F), torch.zeros(F)), -1)
    lm, _ = _seen(body, pose, rotation, torch.tensor([0.0, 0.0, -3.0]).expand(F, 3), 300.0, size)
    shape = body.default_shape + 0.2  # the avatar's build, not the driver's
    cfg = BodyFitConfig(**FAST_FIT, fit_shape=False)
    motion = body_motion_from_landmarks(body, shape, lm.numpy(), np.ones(F, bool), size, size, 30.0, cfg=cfg)
    assert isinstance(motion, BodyMotion) and motion.n_frames == F and motion.fps == 30.0
    assert motion.pose.shape == (F, body.num_joints, 3) and motion.valid.all() and motion.focal > 0
    with torch.no_grad():  # the avatar's shape, posed, lands on the driver's landmarks
        out = body(shape=shape[None], pose=torch.as_tensor(motion.pose), rotation=torch.as_tensor(motion.rotation),
                   translation=torch.as_tensor(motion.translation))
        px = project(to_camera(out.landmarks), torch.tensor(motion.focal), torch.tensor([size / 2, size / 2]))
    assert (px - lm[..., :2]).norm(dim=-1).median() < 4.0
    with pytest.raises(DriveError, match="no frame shows a person"):
        body_motion_from_landmarks(body, shape, lm.numpy(), np.zeros(F, bool), size, size, 30.0, cfg=cfg)


def test_render_body_driven_follows_the_driver(body, tmp_path):
    """A toy body avatar driven by a driver's motion retargeted in front of its camera: tracked
    follows the driver's sideways move, fixed keeps the avatar in place."""
    import av
    from avatar_files import write_test_avatar

    from avatar.drive.animate import AvatarPackage
    from avatar.drive.body_motion import BodyDrive, render_body_driven
    from avatar.drive.body_video import BodyMotion, retarget_body_motion
    from avatar.gaussians.config import MeshGaussiansConfig
    from avatar.gaussians.skinned_gaussians import SkinnedGaussians

    g = SkinnedGaussians.initialise(body, MeshGaussiansConfig(kind="skinned_gaussians", uv_resolution=8, sh_degree=0))
    write_test_avatar(tmp_path / "avatar.pt", g, model_name="toy_body", shape=body.default_shape.clone(),
                      background=torch.zeros(3), reference_translation=torch.tensor([0.0, 0.0, -3.0]))
    package = AvatarPackage.load(tmp_path / "avatar.pt", torch.device("cpu"))
    F = 3
    shift = torch.linspace(0.0, 0.6, F)  # the driver walks to its left (image right) by 0.6 m
    motion = BodyMotion(pose=np.zeros((F, body.num_joints, 3), np.float32), rotation=np.zeros((F, 3), np.float32),
                        translation=torch.stack((shift, 0 * shift, 0 * shift - 4.0), -1).numpy(), fps=10.0,
                        source="test", valid=np.ones(F, bool))
    pose, rotation, translation = retarget_body_motion(package, motion)
    np.testing.assert_allclose(translation[0], [0.0, 0.0, -3.0], atol=1e-5)  # starts at the avatar's reference
    np.testing.assert_allclose(translation[-1, 0], 0.6 * 3.0 / 4.0, atol=0.02)  # scaled by the depth ratio

    def centroids(camera):
        out = tmp_path / f"{camera}.mp4"
        drive = BodyDrive(pose, rotation, translation, motion.fps, motion.source)
        report = render_body_driven(package, drive, out, camera=camera, progress=False)
        assert report["frames"] == F
        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24").sum(-1) > 60 for f in c.decode(video=0)]
        assert len(frames) == F and all(f.any() for f in frames)
        return [np.nonzero(f)[1].mean() for f in frames]

    tracked, fixed = centroids("tracked"), centroids("fixed")
    assert tracked[-1] - tracked[0] > 5 and abs(fixed[-1] - fixed[0]) < 1.5
    with pytest.raises(Exception, match="camera must be"):
        render_body_driven(package, BodyDrive(pose, rotation, translation, 10.0, "t"), tmp_path / "x.mp4",
                           camera="dolly")


def test_body_targets_keep_frames_cut_by_the_frame_edge(body_capture, tmp_path):
    import shutil

    from avatar.io.capture import Capture
    from avatar.io.reports import write_json
    from avatar.tracking.body_track import body_targets

    root = tmp_path / "cap"
    shutil.copytree(body_capture, root)
    meta = json.loads((root / "meta.json").read_text())
    meta["flagged"] = {"1": "body partly out of frame (left_ankle, bottom edge)", "2": "2 people (kept the one tracked)"}
    write_json(root / "meta.json", meta)
    target, valid, scale, origin, size = body_targets(Capture(root))
    assert valid.tolist() == [True, True, False, True, True, True]
    assert target.shape == (6, 33, 4) and (scale == 1).all() and size == (96, 96)

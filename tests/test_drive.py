"""Driving: ARKit CSV / parameter sources, One Euro filter, retargeting, and `avatar render` end to end."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from avatar_files import write_test_avatar

from avatar.drive.retarget import RetargetConfig, retarget
from avatar.drive.sources import (
    ARKIT_BLENDSHAPES,
    ARKIT_OTHER,
    DriveError,
    DriveSequence,
    arkit_to_model,
    from_arkit_csv,
    load_drive,
)
from avatar.gaussians.base import FrameState
from avatar.landmarks.filters import OneEuroFilter
from avatar.models.ict import EXPRESSION_NAMES

REPO = Path(__file__).resolve().parents[1]


def _write_csv(path: Path, n: int = 10, drop: str | None = None, extra: str | None = None) -> Path:
    header = [h for h in ("Timecode", "BlendShapeCount", *ARKIT_BLENDSHAPES, *ARKIT_OTHER[2:]) if h != drop]
    header += [extra] if extra else []
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(n):
            row = {h: 0.0 for h in header}
            row["Timecode"], row["BlendShapeCount"] = f"00:00:00:{i:02d}.000", 52
            row["JawOpen"] = i / (n - 1)
            row["EyeBlinkLeft"] = 1.0
            row["BrowInnerUp"] = 0.5
            row["HeadYaw"] = 0.3 * i / (n - 1)
            w.writerow([row[h] for h in header])
    return path


def test_arkit_names_map_onto_ict():
    assert arkit_to_model("EyeBlinkLeft", EXPRESSION_NAMES) == ["eyeBlink_L"]
    assert arkit_to_model("JawOpen", EXPRESSION_NAMES) == ["jawOpen"]
    assert arkit_to_model("BrowInnerUp", EXPRESSION_NAMES) == ["browInnerUp_L", "browInnerUp_R"]
    assert arkit_to_model("TongueOut", EXPRESSION_NAMES) == []
    covered = {t for s in ARKIT_BLENDSHAPES for t in arkit_to_model(s, EXPRESSION_NAMES)}
    assert covered == set(EXPRESSION_NAMES)  # every ICT expression is driven by some ARKit shape


def test_arkit_csv_reads_expressions_and_head_pose(tmp_path):
    seq = from_arkit_csv(_write_csv(tmp_path / "take.csv"), EXPRESSION_NAMES)
    names = list(EXPRESSION_NAMES)
    assert seq.n_frames == 10 and seq.expression.shape == (10, 53)
    np.testing.assert_allclose(seq.expression[:, names.index("jawOpen")], np.linspace(0, 1, 10), atol=1e-6)
    assert (seq.expression[:, names.index("eyeBlink_L")] == 1).all() and (seq.expression[:, names.index("eyeBlink_R")] == 0).all()
    assert (seq.expression[:, names.index("browInnerUp_R")] == 0.5).all()
    np.testing.assert_allclose(seq.rotation[:, 1], np.linspace(0, 0.3, 10), atol=1e-6)  # yaw about +y
    assert any("TongueOut" in n for n in seq.notes)


def test_arkit_csv_missing_or_unknown_columns_are_named(tmp_path):
    with pytest.raises(DriveError, match=r"missing blendshape column\(s\) \['JawOpen'\]"):
        from_arkit_csv(_write_csv(tmp_path / "a.csv", drop="JawOpen"), EXPRESSION_NAMES)
    with pytest.raises(DriveError, match=r"unknown column\(s\) \['Smirk'\]"):
        from_arkit_csv(_write_csv(tmp_path / "b.csv", extra="Smirk"), EXPRESSION_NAMES)
    with pytest.raises(DriveError, match="does not exist"):
        load_drive(tmp_path / "nope.csv", EXPRESSION_NAMES)
    with pytest.raises(DriveError, match="cannot drive from"):
        (tmp_path / "x.txt").write_text("hi")
        load_drive(tmp_path / "x.txt", EXPRESSION_NAMES)


def test_one_euro_filter_smooths_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 30.0
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    noisy = 0.5 + rng.normal(0, 0.05, 200)
    out = np.array([f(x, ti) for x, ti in zip(noisy, t)])
    assert out[50:].std() < 0.4 * noisy[50:].std()
    g = OneEuroFilter(min_cutoff=1.0, beta=5.0)
    ramp = np.array([g(x, ti) for x, ti in zip(2 * t, t)])
    assert abs(ramp[-1] - 2 * t[-1]) < 0.2  # fast motion passes with little lag


def test_retarget_is_relative_to_a_chosen_neutral_frame_and_its_pose():
    from avatar.geometry import axis_angle_to_matrix

    F, E = 5, 53
    expr = np.full((F, E), 0.2, np.float32)
    expr[:, 26] = np.linspace(0.2, 0.9, F)
    rot = np.zeros((F, 3), np.float32)
    rot[:, 1] = np.linspace(0.5, 0.8, F)  # the driver starts turned
    drive = DriveSequence(expr, rot, np.zeros((F, 3), np.float32), 25.0, "test")
    ref_r, ref_t = np.array([0.1, 0, 0], np.float32), np.array([0, 0, -0.5], np.float32)
    e, r, t = retarget(drive, ref_r, ref_t, cfg=RetargetConfig(min_cutoff=None, gain=1.0), neutral_frame=0)
    np.testing.assert_allclose(e[:, 26], np.linspace(0, 0.7, F), atol=1e-6)
    assert e[:, :26].max() == 0  # the driver's resting 0.2 is its neutral
    np.testing.assert_allclose(r[0], ref_r, atol=1e-6)  # first frame: the avatar's reference pose
    delta = axis_angle_to_matrix(torch.as_tensor(r[-1], dtype=torch.float64)) @ axis_angle_to_matrix(torch.as_tensor(ref_r, dtype=torch.float64)).T
    assert abs(float(torch.arccos((delta.trace() - 1) / 2)) - 0.3) < 1e-5  # then the driver's 0.3 rad turn
    np.testing.assert_allclose(t, np.tile(ref_t, (F, 1)), atol=1e-6)


@pytest.fixture(scope="module")
def package(tmp_path_factory, ict_assets):
    root = ict_assets
    import avatar.models
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig

    model = avatar.models.load("ict", asset_path=str(root))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=16, sh_degree=0, init_opacity=0.9))
    return write_test_avatar(tmp_path_factory.mktemp("avatar") / "avatar.pt", g,
                             expression_names=list(model.expression_names))


@pytest.mark.slow
@pytest.mark.parametrize("camera", ["tracked", "fixed", "orbit"])
def test_render_command_from_an_arkit_csv(package, tmp_path, camera):
    from avatar import cli
    from avatar.io.video_reader import open_source

    take = _write_csv(tmp_path / "take.csv", n=6)
    out = tmp_path / "out" / "anim.mp4"
    assert cli.main(["render", f"run={package}", f"drive={take}", f"out={out}", f"camera={camera}", "renderer=torch"]) == 0
    frames = [f.image for f in open_source(out).frames()]
    assert len(frames) == 6 and frames[0].shape == (64, 64, 3)
    assert (frames[0] < 200).mean() > 0.05  # the head is in view
    report = json.loads((out.parent / "render_report.json").read_text())
    assert report["frames"] == 6 and report["render_fps"] > 0 and report["end_to_end_fps"] > 0
    assert report["camera"] == camera


@pytest.mark.slow
def test_render_errors_name_the_problem(package, tmp_path, capsys):
    from avatar import cli

    take = _write_csv(tmp_path / "take.csv", n=3)
    assert cli.main(["render", f"run={tmp_path / 'nothing'}", f"drive={take}", f"out={tmp_path / 'a.mp4'}"]) == 1
    assert "train an avatar first" in capsys.readouterr().err
    assert cli.main(["render", f"run={package}", f"drive={take}", f"out={tmp_path / 'a.mp4'}", "layout=side_by_side"]) == 1
    assert "needs driver frames" in capsys.readouterr().err
    import av

    noise = tmp_path / "noise.mp4"
    with av.open(str(noise), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(5):
            for p in s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert cli.main(["render", f"run={package}", f"drive={noise}", f"out={tmp_path / 'b.mp4'}"]) == 1
    assert "no face found in any frame" in capsys.readouterr().err


def _real_video(name: str) -> Path:
    root = Path(os.environ.get("AVATAR_TEST_DATA", REPO.parent / "shared" / "data" / "real"))
    path = root / name
    if not path.is_file():
        pytest.skip(f"real test video {path} not found (set AVATAR_TEST_DATA)")
    return path


@pytest.mark.slow
def test_live_from_a_video_standing_in_for_a_webcam(package, tmp_path, monkeypatch):
    from avatar import cli
    from avatar.io.video_reader import open_source

    video = _real_video("drive_expressive_512.mp4")
    monkeypatch.chdir(tmp_path)  # live's Hydra folder goes under ./outputs
    rec, report_path = tmp_path / "rec.mp4", tmp_path / "live_report.json"
    assert cli.main(["live", f"run={package}", f"source={video}", "display=false", f"out={rec}", "max_frames=15",
                     f"report={report_path}", "renderer=torch"]) == 0
    report = json.loads(report_path.read_text())
    assert report["frames_captured"] == 15 and report["stop_reason"] == "max_frames reached"
    assert 1 <= report["frames_shown"] <= 15 and report["frames_without_face"] == 0
    assert report["latency_ms"]["p95"] >= report["latency_ms"]["mean"] > 0
    assert set(report["stage_ms"]) == {"capture", "track", "render", "wait"}
    assert report["render_threads"] >= 1
    assert report["expression_mlp_dtype"] is None  # no expression MLP in this avatar: nothing to fix
    assert len(list(open_source(rec).frames())) == report["frames_shown"]


@pytest.mark.slow
def test_live_errors(package, tmp_path, capsys, monkeypatch):
    from avatar import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["live", f"run={package}", "source=7", "display=false", f"report={tmp_path / 'r.json'}"]) == 1
    assert "cannot open webcam index 7" in capsys.readouterr().err
    assert cli.main(["live", f"run={tmp_path}", "source=0", "display=false", f"report={tmp_path / 'r.json'}"]) == 1
    assert "train an avatar first" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_scripts_drive_from_csv_and_video(package, tmp_path, ict_assets):
    import subprocess
    import sys

    env = {**os.environ, "AVATAR_ASSETS": str(ict_assets), "PYTHONPATH": str(REPO)}
    take = _write_csv(tmp_path / "take.csv", n=4)
    proc = subprocess.run([sys.executable, str(REPO / "demos" / "drive_from_arkit_csv.py"), str(package), str(take),
                           str(tmp_path / "csv.mp4"), "--camera", "fixed"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["frames"] == 4
    video = _real_video("drive_expressive_512.mp4")
    proc = subprocess.run([sys.executable, str(REPO / "demos" / "drive_from_video.py"), str(package), str(video),
                           str(tmp_path / "vid.mp4"), "--side-by-side", "--max-frames", "5"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["frames"] == 5


@pytest.mark.slow
def test_limit_gaussians_keeps_the_ones_that_show(package):
    from avatar.drive.animate import AvatarPackage

    full = AvatarPackage.load(package, torch.device("cpu"))
    n = len(full.gaussians)
    pkg = AvatarPackage.load(package, torch.device("cpu"))
    assert pkg.limit_gaussians(n // 3, size=64) == n and len(pkg.gaussians) == n // 3
    assert pkg.limit_gaussians(n) == n // 3  # no more than it has: nothing to do
    K, w, h = full.camera()
    vm = full.state["viewmat"]
    args = (np.zeros(len(full.expression_names), np.float32), np.zeros(3, np.float32), np.array([0, 0, -0.6], np.float32),
            vm, K, w, h)
    a, _, _ = full.render_frame(*args)
    b, _, _ = pkg.render_frame(*args)
    random = AvatarPackage.load(package, torch.device("cpu"))
    random.gaussians = random.gaussians.subset(torch.randperm(n, generator=torch.Generator().manual_seed(0))[: n // 3])
    c, _, _ = random.render_frame(*args)
    err = lambda x: float(np.abs(x.astype(np.float32) - a).mean())  # noqa: E731
    # The third that shows most reproduces the full avatar far better than a random third.
    assert err(b) < 0.5 * err(c), (err(b), err(c))


@pytest.mark.slow
def test_posing_only_the_bound_part_of_the_mesh_matches_the_full_model(package):
    from avatar.drive.animate import AvatarPackage

    pkg = AvatarPackage.load(package, torch.device("cpu"))
    pkg.limit_gaussians(len(pkg.gaussians) // 2, size=32)  # leaves parts of the mesh without Gaussians
    e = torch.zeros(1, len(pkg.expression_names))
    e[0, pkg.expression_names.index("jawOpen")] = 0.7
    r, t = torch.tensor([[0.1, 0.3, 0.0]]), torch.tensor([[0.01, 0.0, -0.6]])
    fast = pkg.posed_gaussians(e, r, t)
    with torch.no_grad():
        verts = pkg.model(shape=pkg.state["shape"][None].float(), expression=e, rotation=r, translation=t).vertices
        full = pkg.gaussians(FrameState(verts, e, r))
    for name in ("means", "quats", "scales", "opacities", "sh", "sh_frame"):
        torch.testing.assert_close(getattr(fast, name), getattr(full, name), rtol=1e-4, atol=1e-6)


def test_eyeballs_turn_as_the_synthetic_captures_turn_them_and_nothing_else_moves(package):
    from avatar.drive.animate import AvatarPackage
    from avatar.models.engine import rigid_transform
    from avatar.synthetic.capture import turned_eyes
    from avatar.tracking.landmark_model import blendshape_gaze_angles

    pkg = AvatarPackage.load(package, torch.device("cpu"))
    assert pkg.gaze_profile() is not None and pkg._eyeballs() is not None
    names = list(pkg.expression_names)
    e = torch.zeros(1, len(names))
    e[0, names.index("eyeLookIn_R")] = e[0, names.index("eyeLookOut_L")] = 0.6  # both look to the model's +x
    e[0, names.index("eyeLookDown_R")] = e[0, names.index("eyeLookDown_L")] = 0.3
    r, t = torch.tensor([[0.05, 0.2, 0.0]]), torch.tensor([[0.0, 0.01, -0.6]])
    yaw, pitch = blendshape_gaze_angles(pkg.gaze_profile().gaze, names.index, e)
    gaze = torch.stack((yaw, pitch), -1)  # [1, 2, 2]
    turned = pkg.posed_gaussians(e, r, t, gaze=gaze)
    with torch.no_grad():
        shape = pkg.state["shape"][None].float()
        local = turned_eyes(pkg.model, pkg.model(shape=shape, expression=e).vertices, e)
        full = pkg.gaussians(FrameState(rigid_transform(local, r, t), e, r))
    torch.testing.assert_close(turned.means, full.means, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(turned.quats, full.quats, rtol=1e-4, atol=1e-5)
    still = pkg.posed_gaussians(e, r, t)
    moved = (turned.means - still.means).norm(dim=-1)[0] > 1e-6
    assert 0 < int(moved.sum()) < len(moved)  # the eyeballs' Gaussians only (this test avatar covers the whole mesh)
    torch.testing.assert_close(pkg.posed_gaussians(e, r, t, gaze=torch.zeros(1, 2, 2)).means, still.means)


def test_driven_eyes_follow_the_drivers_irises_from_its_usual_gaze():
    from avatar.drive.retarget import LiveGaze, driver_gaze

    F = 50
    look = np.zeros((F, 2, 2), np.float32)
    look[:, :, 0] = 0.1  # the driver usually looks 0.1 rad off (where its screen is)
    look[20:30, 0, 0], look[20:30, 1, 0] = 0.5, 0.4  # then both eyes turn further (the left eye reads less)
    drive = DriveSequence(np.zeros((F, 53), np.float32), np.zeros((F, 3), np.float32),
                          np.zeros((F, 3), np.float32), 25.0, "test", gaze=look)
    assert driver_gaze(drive, RetargetConfig(eyes=0.0)) is None  # eyes=0: as trained
    turn = driver_gaze(drive, RetargetConfig(eyes=2.0, min_cutoff=None, eyes_max_deg=60))
    assert turn.shape == (F, 2, 2)
    np.testing.assert_allclose(turn[:20], 0.0, atol=1e-6)  # its usual gaze is the avatar's
    np.testing.assert_allclose(turn[25], [[0.7, 0.0], [0.7, 0.0]], atol=1e-6)  # both eyes: the mean, times 2
    held = driver_gaze(drive, RetargetConfig(eyes=2.0, min_cutoff=None))  # at most 30 degrees by default
    np.testing.assert_allclose(held[25, :, 0], math.radians(30), atol=1e-6)
    smooth = driver_gaze(drive, RetargetConfig(eyes=1.0))
    assert 0 < smooth[20, 0, 0] < 0.35 and abs(smooth[25, 0, 0] - 0.35) < 0.05
    assert driver_gaze(DriveSequence(drive.expression, drive.rotation, drive.translation, 25.0, "csv"),
                       RetargetConfig(eyes=1.0)) is None  # no gaze read: none turned here
    live = LiveGaze(RetargetConfig(eyes=1.0, min_cutoff=None))
    out = [live(g, i / 25.0) for i, g in enumerate(look)]
    assert abs(out[10][0, 0]) < 1e-6 and out[25][0, 0] == pytest.approx(0.35, abs=1e-6)
    assert live(None, 1.5) is out[-1]  # no reading (shut lids): the last turn is held
    live.set_neutral(look[25])  # r: this is straight ahead
    assert abs(live(look[25], 2.0)[0, 0]) < 1e-6
    assert LiveGaze(RetargetConfig(eyes=0.0))(look[25], 0.0) is None


def test_parameter_drivers_turn_the_eyes_by_their_gaze_blendshapes(package):
    from avatar.drive.animate import AvatarPackage, avatar_rest, eye_turns

    pkg = AvatarPackage.load(package, torch.device("cpu"))
    names = list(pkg.expression_names)
    e = np.tile(avatar_rest(pkg), (2, 1))
    e[1, names.index("eyeLookIn_R")] += 0.5  # the right eye looks toward the nose: +x, 15 degrees
    e[1, names.index("eyeLookDown_L")] += 0.4  # the left eye looks down 10 degrees
    turns = eye_turns(pkg, e, 1.0)
    np.testing.assert_allclose(turns[0], 0.0, atol=1e-6)  # the avatar's rest: as trained
    np.testing.assert_allclose(np.degrees(turns[1]), [[15.0, 0.0], [0.0, 10.0]], atol=1e-4)
    np.testing.assert_allclose(np.degrees(eye_turns(pkg, e, 3.0, limit_deg=30.0)[1]), [[30.0, 0.0], [0.0, 30.0]], atol=1e-4)
    assert eye_turns(pkg, e, 0.0) is None
    np.testing.assert_allclose(np.degrees(eye_turns(pkg, e, 1.0, vertical=0.0)[1]), [[15.0, 0.0], [0.0, 0.0]], atol=1e-4)


def test_driven_turn_is_held_near_the_avatars_trained_turns(package):
    """``retarget.turn_margin_deg`` holds a driven head turn within the avatar's trained turns (its
    file's ``turn_range``) plus the margin; without the avatar's turns it is not held, and says so."""
    from avatar.drive.animate import AvatarPackage, driven_poses, turn_range
    from avatar.geometry.rotations import axis_angle_to_matrix, turn_angles

    pkg = AvatarPackage.load(package, torch.device("cpu"))
    assert turn_range(pkg) is None  # a test file without them, and no run folder to read them from
    F = 6
    yaw = np.radians([0.0, 3.0, 20.0, 60.0, 60.0, -60.0])
    rotation = np.stack([np.zeros(F), yaw, np.zeros(F)], -1).astype(np.float32)
    drive = DriveSequence(np.zeros((F, 53), np.float32), rotation, np.zeros((F, 3), np.float32), 25.0, "params")
    cfg = RetargetConfig(min_cutoff=None, turn_margin_deg=10.0)

    def yaws(r):
        return np.degrees(turn_angles(axis_angle_to_matrix(torch.as_tensor(r, dtype=torch.float64)).numpy(), np.eye(3))[:, 0])

    notes = []
    _, free, _ = driven_poses(pkg, drive, cfg, neutral_frame=0, notes=notes)
    assert any("turn_margin_deg" in n for n in notes)
    np.testing.assert_allclose(yaws(free), np.degrees(yaw), atol=1e-3)  # not held
    pkg.state["turn_range"] = torch.tensor(np.radians([[-5.0, 5.0], [-3.0, 3.0]]))
    _, held, _ = driven_poses(pkg, drive, cfg, neutral_frame=0)
    got = yaws(held)
    np.testing.assert_allclose(got[:2], np.degrees(yaw[:2]), atol=1e-3)  # within the trained turns: as driven
    assert 10.0 < got[3] <= 15.0 + 1e-4 and -15.0 - 1e-4 <= got[5] < -10.0 and got[2] < got[3]  # within 5 + 10 degrees
    notes = []
    driven_poses(pkg, drive, RetargetConfig(min_cutoff=None), neutral_frame=0, notes=notes)  # not held: said
    assert any("55 degrees beyond the turns the avatar was trained on" in n for n in notes), notes
    notes = []
    driven_poses(pkg, drive, cfg, neutral_frame=0, notes=notes)
    assert not any("beyond the turns" in n for n in notes)


def test_an_older_avatar_reads_its_rest_and_turns_from_its_training_tracking(package, tmp_path, monkeypatch):
    """An avatar file without the stored expression statistics and trained turns reads both from the
    tracking of the capture its run folder names (its first ``train.holdout`` frames for the turns),
    loading that tracking once; without a run folder, neither."""
    import shutil

    from omegaconf import OmegaConf

    import avatar.io.tracking as io_tracking
    from avatar.drive.animate import AvatarPackage, expression_range, turn_range
    from avatar.geometry.rotations import training_turn_range
    from avatar.io.tracking import TrackedSequence

    F = 20
    rng = np.random.default_rng(0)
    rotation = (rng.normal(size=(F, 3)) * 0.1).astype(np.float32)
    rotation[16:] = [0.0, 0.8, 0.0]  # the held-out end turns far: not in the trained turns
    expression = rng.uniform(0, 0.3, size=(F, 53)).astype(np.float32)
    capture = tmp_path / "capture"
    capture.mkdir()
    pkg0 = AvatarPackage.load(package, torch.device("cpu"))
    TrackedSequence("ict", np.zeros(100, np.float32), expression, tuple(pkg0.expression_names), rotation,
                    np.zeros((F, 3), np.float32), np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32), 64, 64,
                    np.ones(F, bool)).save(capture / "tracking.npz")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(package, run / "avatar.pt")
    (run / "config.yaml").write_text(OmegaConf.to_yaml({"capture": str(capture), "train": {"holdout": 0.2}}))
    loads = []
    real_load = io_tracking.load_tracking
    monkeypatch.setattr(io_tracking, "load_tracking", lambda *a, **k: loads.append(a) or real_load(*a, **k))

    pkg = AvatarPackage.load(run / "avatar.pt", torch.device("cpu"))
    assert "turn_range" not in pkg.state and "expression_range" not in pkg.state
    rest = expression_range(pkg)
    np.testing.assert_allclose(rest.median, np.median(expression, axis=0), atol=1e-6)
    ref = np.asarray(pkg.state["reference_rotation"], np.float64)
    np.testing.assert_allclose(turn_range(pkg), training_turn_range(rotation[:16], ref))  # the first 80%
    assert len(loads) == 1  # read once for both
    assert turn_range(pkg0) is None and expression_range(pkg0) is None  # no run folder beside it


def test_the_gaze_behind_shut_lids_is_its_neighbours():
    from avatar.tracking.gaze import hold_through_blinks, lids_open

    points = np.zeros((5, 478, 2))
    for (a, b), lids in (((33, 133), ((159, 145), (158, 153), (160, 144))),
                         ((362, 263), ((386, 374), (385, 380), (387, 373)))):
        points[:, a], points[:, b] = (0.0, 0.0), (30.0, 0.0)  # eyes 30 px wide
        for i, j in lids:
            points[:, i] = (15.0, -4.5)
            points[:, j] = (15.0, 4.5)  # 9 px apart: open (0.3)
    points[2, [145, 153, 144, 374, 380, 373], 1] = -3.5  # frame 2: lids 1 px apart, a blink
    points[4] = np.nan
    np.testing.assert_array_equal(lids_open(points), [True, True, False, True, False])
    gaze = np.zeros((5, 2, 2), np.float32)
    gaze[:, :, 0] = np.array([0.1, 0.2, 0.9, 0.4, 0.5])[:, None]  # the blink's reading is off
    held = hold_through_blinks(gaze, lids_open(points))
    np.testing.assert_allclose(held[:, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.4], atol=1e-6)  # between its neighbours; the end held
    np.testing.assert_array_equal(hold_through_blinks(gaze, np.zeros(5, bool)), gaze)


@pytest.mark.slow
def test_stored_visibility_is_used_and_matches_a_fresh_computation(package, tmp_path):
    from avatar.drive.animate import AvatarPackage

    pkg = AvatarPackage.load(package, torch.device("cpu"))
    fresh = pkg.visibility(size=64)
    g = pkg.gaussians
    order = torch.arange(len(fresh)).float()
    path = write_test_avatar(tmp_path / "avatar.pt", g, expression_names=list(pkg.expression_names), visibility=order)
    state = {"visibility": order}
    stored = AvatarPackage.load(path, torch.device("cpu"))
    assert torch.equal(stored.visibility(size=64), state["visibility"])  # read, not recomputed
    stored.limit_gaussians(10)
    assert torch.equal(stored.gaussians.binding, pkg.gaussians.binding[-10:])  # the 10 highest scores


@pytest.mark.slow
def test_live_detects_the_drivers_pose_every_nth_frame_for_an_avatar_with_a_torso(package, monkeypatch):
    """avatar live with a torso: the (costly) pose detection runs on every ``pose_every``-th
    tracked frame only, the face on every one."""
    import torch

    import avatar.landmarks
    import avatar.landmarks.pose
    from avatar.drive.animate import AvatarPackage
    from avatar.drive.live import run_live

    calls = {"face": 0, "pose": 0}
    face_cls = avatar.landmarks.FaceMeshDetector

    class CountingFaces(face_cls):
        def detect(self, rgb):
            calls["face"] += 1
            return super().detect(rgb)

    class CountingPose:
        def __init__(self, video=True):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def detect(self, rgb):
            calls["pose"] += 1
            return None  # no body found: the torso stays at rest

    monkeypatch.setattr(avatar.landmarks, "FaceMeshDetector", CountingFaces)
    monkeypatch.setattr(avatar.landmarks.pose, "PoseDetector", CountingPose)
    monkeypatch.setattr(AvatarPackage, "has_torso", property(lambda self: True))
    pkg = AvatarPackage.load(package, torch.device("cpu"))
    pkg.gaussians.torso_rest = torch.eye(4)
    # 6 s of video: enough tracked frames to tell every 3rd from every one even on a loaded machine
    report = run_live(pkg, str(_real_video("drive_expressive_512.mp4")), display=False, max_frames=150,
                      driver_identity=False, pose_every=3, renderer={"backend": "torch"})
    assert report["frames_captured"] == 150 and calls["face"] >= 4
    assert calls["pose"] == -(-calls["face"] // 3)  # frames 0, 3, 6, ... of those tracked


def test_live_render_threads_setting():
    """auto leaves a core to the tracker under the overlap schedule on a CPU; numbers as given; bad
    values refused with the key named."""
    import pytest
    import torch

    from avatar.drive.live import live_render_threads

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert live_render_threads("auto", "overlap", cpu, cores=2) == 1
    assert live_render_threads("auto", "overlap", cpu, cores=8) == 7
    assert live_render_threads("auto", "overlap", cpu, cores=1) == 1
    assert live_render_threads(None, "sequential", cpu, cores=2) == torch.get_num_threads()
    assert live_render_threads("auto", "overlap", cuda, cores=2) == torch.get_num_threads()
    assert live_render_threads(3, "overlap", cpu) == 3 and live_render_threads("2", "sequential", cpu) == 2
    for bad in (0, "-1", "many"):
        with pytest.raises(ValueError, match="render_threads"):
            live_render_threads(bad, "overlap", cpu)


def test_live_renders_on_its_render_threads_and_gives_the_count_back(package, monkeypatch):
    import torch

    from avatar.drive.animate import AvatarPackage
    from avatar.drive.live import run_live

    seen = []
    real_render = AvatarPackage.render_frame

    def counting_render(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_render(self, *args, **kwargs)

    monkeypatch.setattr(AvatarPackage, "render_frame", counting_render)
    pkg = AvatarPackage.load(package, torch.device("cpu"))
    before = torch.get_num_threads()
    report = run_live(pkg, str(_real_video("drive_expressive_512.mp4")), display=False, max_frames=20,
                      driver_identity=False, renderer={"backend": "torch"}, render_threads=1)
    assert report["render_threads"] == 1 and seen and set(seen) == {1}
    assert torch.get_num_threads() == before


def test_live_sequential_schedule_never_tracks_while_the_renderer_works(package, monkeypatch):
    """schedule=sequential: the tracker starts on a frame only once the renderer is done with the
    one it took, so MediaPipe never runs inside a render (the renderer has the cores to itself);
    an unknown schedule is refused before anything opens."""
    import threading
    import time

    import pytest
    import torch

    import avatar.landmarks
    from avatar.drive.animate import AvatarPackage
    from avatar.drive.live import run_live

    spans = {"face": [], "render": []}
    lock = threading.Lock()
    face_cls = avatar.landmarks.FaceMeshDetector

    class TimedFaces(face_cls):
        def detect(self, rgb):
            t0 = time.perf_counter()
            out = super().detect(rgb)
            with lock:
                spans["face"].append((t0, time.perf_counter()))
            return out

    real_render = AvatarPackage.render_frame

    def timed_render(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = real_render(self, *args, **kwargs)
        with lock:
            spans["render"].append((t0, time.perf_counter()))
        return out

    monkeypatch.setattr(avatar.landmarks, "FaceMeshDetector", TimedFaces)
    monkeypatch.setattr(AvatarPackage, "render_frame", timed_render)
    pkg = AvatarPackage.load(package, torch.device("cpu"))
    with pytest.raises(ValueError, match="schedule"):
        run_live(pkg, str(_real_video("drive_expressive_512.mp4")), display=False, max_frames=5, schedule="eager")
    report = run_live(pkg, str(_real_video("drive_expressive_512.mp4")), display=False, max_frames=60,
                      driver_identity=False, renderer={"backend": "torch"}, schedule="sequential")
    assert report["frames_shown"] >= 3 and len(spans["face"]) >= 3
    overlaps = [(f, r) for f in spans["face"] for r in spans["render"] if f[0] < r[1] and r[0] < f[1]]
    assert not overlaps, f"{len(overlaps)} face detections ran during a render"

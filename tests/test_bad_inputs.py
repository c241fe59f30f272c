"""Bad inputs a new user meets: each gives one line naming the file, frame, row, column or key,
with what to do, and the exit status the README documents (1 an input cannot be used)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_drive import _write_csv

from avatar.drive.sources import ARKIT_BLENDSHAPES, DriveError, from_arkit_csv, from_params
from avatar.models.ict import EXPRESSION_NAMES

NAMES = list(EXPRESSION_NAMES)


# --- ARKit CSVs -----------------------------------------------------------------------------

def _edit_csv(path: Path, edit) -> Path:
    rows = list(csv.reader(path.open(newline="")))
    edit(rows)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.mark.parametrize("column", ["JawOpen", "HeadPitch"])
@pytest.mark.parametrize("cell", ["nan", "", "abc", "inf"])
def test_csv_cell_that_is_not_a_number_names_line_and_column(tmp_path, column, cell):
    take = _write_csv(tmp_path / "take.csv", n=6)
    _edit_csv(take, lambda rows: rows[4].__setitem__(rows[0].index(column), cell))
    with pytest.raises(DriveError) as err:
        from_arkit_csv(take, NAMES)
    assert f"{take}: line 5 (frame 3), column {column}" in str(err.value) and "fix or delete" in str(err.value)


def test_csv_without_head_pose_says_the_pose_stays_neutral(tmp_path):
    take = _write_csv(tmp_path / "take.csv", n=4)
    for name in ("HeadYaw", "HeadPitch", "HeadRoll"):
        _edit_csv(take, lambda rows: [row.pop(rows[0].index(name)) for row in rows[::-1]])
    seq = from_arkit_csv(take, NAMES)
    assert np.all(seq.rotation == 0)
    assert any("HeadYaw/HeadPitch/HeadRoll" in n and "head pose stays neutral" in n for n in seq.notes), seq.notes


def test_csv_with_bom_lower_case_names_and_semicolons_is_read(tmp_path):
    reference = from_arkit_csv(_write_csv(tmp_path / "take.csv", n=5), NAMES)
    rows = list(csv.reader((tmp_path / "take.csv").open(newline="")))
    rows[0] = [h[0].lower() + h[1:] for h in rows[0]]  # ARKit's own spelling: eyeBlinkLeft, headYaw
    other = tmp_path / "excel.csv"
    with other.open("w", newline="", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8" in a ;-locale
        csv.writer(f, delimiter=";").writerows(rows)
    seq = from_arkit_csv(other, NAMES)
    np.testing.assert_array_equal(seq.expression, reference.expression)
    np.testing.assert_array_equal(seq.rotation, reference.rotation)


# --- parameter files ------------------------------------------------------------------------

def _params(F: int = 4, E: int = 3, **arrays) -> dict:
    base = {"expression": np.full((F, E), 0.5, np.float32), "expression_names": np.array(NAMES[:E]),
            "rotation": np.zeros((F, 3), np.float32), "translation": np.zeros((F, 3), np.float32)}
    base.update(arrays)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(("arrays", "words"), [
    (dict(expression=np.zeros(4, np.float32)), "'expression' must be [frames, expressions], got shape [4]"),
    (dict(rotation=np.zeros((5, 3), np.float32)), "'rotation' must be [4, 3]"),
    (dict(translation=np.zeros((4, 2), np.float32)), "'translation' must be [4, 3]"),
    (dict(expression_names=np.array(NAMES[:2])), "'expression_names' must be [3]"),
    (dict(expression=np.array([["a", "b", "c"]] * 4)), "'expression' must be numbers, got <U1 values"),
    (dict(expression=np.zeros((0, 3), np.float32), rotation=np.zeros((0, 3), np.float32),
          translation=np.zeros((0, 3), np.float32)), "'expression' must be at least one frame"),
    (dict(rotation=None), "lacks ['rotation']"),
    (dict(expression=np.array([[0.1, np.nan, 0.2]] * 4, np.float32)), "'expression' holds NaN"),
])
def test_wrongly_shaped_parameter_file_names_file_and_key(tmp_path, arrays, words):
    path = tmp_path / "params.npz"
    np.savez(path, **_params(**arrays))
    with pytest.raises(DriveError) as err:
        from_params(path, NAMES)
    assert str(path) in str(err.value) and words in str(err.value), str(err.value)


def test_unreadable_parameter_files_are_named(tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    objects = tmp_path / "objects.npz"
    np.savez(objects, **_params(expression=np.array([[0.5, None, 0.1]] * 4, dtype=object)))
    for path in (empty, objects):
        with pytest.raises(DriveError, match=f"cannot read parameter file {path}"):
            from_params(path, NAMES)


def test_parameter_file_whose_names_match_nothing_is_an_error(tmp_path):
    path = tmp_path / "flame.npz"
    np.savez(path, **_params(expression_names=np.array(["expr_0", "expr_1", "expr_2"])))
    with pytest.raises(DriveError, match=r"none of the 3 expression names of .*flame\.npz \(expr_0, expr_1, expr_2\)"):
        from_params(path, NAMES)
    np.savez(path, **_params(expression_names=np.array(["expr_0", NAMES[1], "expr_2"])))
    assert "['expr_0', 'expr_2']" in from_params(path, NAMES).notes[0]  # some match: a note, not an error


# --- capture folders and their tracking ------------------------------------------------------

def _tracking(n: int, capture_id: str):
    from avatar.io.tracking import TrackedSequence

    return TrackedSequence(
        model="ict", shape=np.zeros(3, np.float32), expression=np.zeros((n, 2), np.float32),
        expression_names=("a", "b"), rotation=np.zeros((n, 3), np.float32), translation=np.zeros((n, 3), np.float32),
        K=np.eye(3, dtype=np.float32), viewmat=np.eye(4, dtype=np.float32), width=64, height=64,
        valid=np.ones(n, bool), capture_id=capture_id)


def test_preprocess_refuses_a_folder_holding_another_videos_capture(tmp_path):
    from test_preprocess import FAST, _moving
    from test_video_reader import write_test_video

    from avatar.io.capture import Capture
    from avatar.io.tracking import TrackingError, load_tracking
    from avatar.preprocess import PreprocessConfig, PreprocessError, preprocess

    first = write_test_video(tmp_path / "first.mp4", _moving(3))
    second = write_test_video(tmp_path / "second.mp4", _moving(4, scale=0.7))
    cap = tmp_path / "cap"
    preprocess(first, cap, PreprocessConfig(**FAST))
    old = Capture(cap).meta
    assert len(old.capture_id) == 16
    _tracking(3, old.capture_id).save(cap / "tracking.npz")  # as `avatar track` leaves it
    with pytest.raises(PreprocessError) as err:
        preprocess(second, cap, PreprocessConfig(**FAST))
    assert f"{cap} already holds a capture of another video, {first}" in str(err.value)
    assert "tracking.npz" in str(err.value) and "preprocess.overwrite=true" in str(err.value)
    assert Capture(cap).meta.capture_id == old.capture_id  # nothing was touched
    preprocess(second, cap, PreprocessConfig(overwrite=True, **FAST))
    new = Capture(cap).meta
    assert new.n_frames == 4 and new.capture_id != old.capture_id
    with pytest.raises(TrackingError, match=r"tracked from other frames than those in .*cap now.*avatar track capture="):
        load_tracking(cap, capture_id=new.capture_id)
    assert load_tracking(cap, capture_id=old.capture_id).n_frames == 3


def test_train_refuses_a_tracking_made_from_other_frames(tmp_path, capsys):
    from avatar import cli
    from avatar.io.capture import Capture, CaptureMeta, CaptureWriter, Landmarks

    writer = CaptureWriter(tmp_path / "cap", frame_format="png")
    for i in range(3):
        writer.write_frame(i, np.full((32, 32, 3), 40 * i, np.uint8))
    writer.finish(CaptureMeta(source="synthetic", fps=25.0, width=32, height=32, n_frames=3),
                  Landmarks(face=np.zeros((3, 478, 3), np.float32), face_present=np.ones(3, bool)))
    assert Capture(tmp_path / "cap").meta.capture_id
    _tracking(3, "0123456789abcdef").save(tmp_path / "cap" / "tracking.npz")
    status = cli.main(["train", f"capture={tmp_path / 'cap'}", f"out={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "tracked from other frames" in err and f"avatar track capture={tmp_path / 'cap'}" in err
    assert not (tmp_path / "run").exists()


def test_truncated_or_misshapen_landmarks_name_the_file(tmp_path):
    from avatar.io.capture import Capture, CaptureError, CaptureMeta, CaptureWriter, Landmarks

    writer = CaptureWriter(tmp_path / "cap", frame_format="png")
    writer.finish(CaptureMeta(source="synthetic", fps=25.0, width=32, height=32, n_frames=2),
                  Landmarks(face=np.zeros((2, 478, 3), np.float32), face_present=np.ones(2, bool)))
    path = tmp_path / "cap" / "landmarks.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaptureError, match=f"{path} cannot be read .*re-run avatar preprocess for {tmp_path / 'cap'}"):
        Capture(tmp_path / "cap").landmarks
    np.savez(path, face=np.zeros((2, 68, 2), np.float32), face_present=np.ones(2, bool))
    with pytest.raises(CaptureError, match=rf"{path}: face landmarks must be \[F, 478, 3\], got \(2, 68, 2\).*re-run"):
        Capture(tmp_path / "cap").landmarks


def test_track_with_every_frame_showing_two_faces_does_not_advise_preprocessing_again(tmp_path):
    from avatar.io.capture import Capture, CaptureError, CaptureMeta, CaptureWriter, Landmarks
    from avatar.tracking.track import capture_targets

    writer = CaptureWriter(tmp_path / "cap", frame_format="png")
    flagged = {i: "2 faces (kept the largest)" for i in range(4)}
    writer.finish(CaptureMeta(source="two.mp4", fps=25.0, width=32, height=32, n_frames=4, flagged=flagged),
                  Landmarks(face=np.ones((4, 478, 3), np.float32), face_present=np.ones(4, bool)))
    with pytest.raises(CaptureError) as err:
        capture_targets(Capture(tmp_path / "cap"))
    line = str(err.value)
    assert "4 flagged '2 faces' (0-3)" in line and "Preprocess kept the largest face" in line
    assert "record the subject alone" in line and "re-run avatar preprocess" not in line


# --- resuming a run ---------------------------------------------------------------------------

def test_resume_with_another_capture_or_config_is_refused(tmp_path, capsys):
    from omegaconf import OmegaConf

    from avatar import cli
    from avatar.train.session import RunError, resume_config

    run, cap = tmp_path / "run", tmp_path / "cap"
    argv = ["train", f"capture={cap}", f"out={run}"]
    assert cli.main([*argv, "--cfg", "job", "--resolve"]) == 0
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(capsys.readouterr().out)
    (run / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    saved = (run / "config.yaml").read_text()
    status = cli.main(["train", f"capture={tmp_path / 'other'}", f"out={run}", "resume=true", "train.seed=3"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert f"capture: {cap} -> {tmp_path / 'other'}" in err and "train.seed: 0 -> 3" in err
    assert "train into a new out=" in err and (run / "config.yaml").read_text() == saved
    assert cli.main([*argv, "resume=true", "avatar=mesh_gaussians_dynamic"]) == 1  # a group sets train.gaussians.*
    assert "train.gaussians.deform: False -> True" in capsys.readouterr().err
    assert cli.main([*argv, "resume=true", "train.iterations=5000"]) == 1  # allowed: then the missing capture
    assert "capture folder" in capsys.readouterr().err and (run / "config.yaml").read_text() == saved
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.resume, cfg.train.iterations, cfg.train.seed, cfg.device = True, 5000, 7, "cuda"
    merged, changes = resume_config(run, cfg, given=lambda key: key == "train.iterations")
    assert changes == ["train.iterations: 3000 -> 5000"]  # extending a run is fine
    assert merged.train.iterations == 5000 and merged.train.seed == 0  # not set on this command line: the run's
    merged, changes = resume_config(run, cfg, given=lambda key: False)
    assert changes == [] and merged.train.iterations == 3000 and merged.device == "auto"  # defaults: the run keeps its own
    # a run recorded before captures were absolute (capture and out as typed in tmp_path),
    # resumed from another directory with the capture's full path: the same capture
    old_style = OmegaConf.load(run / "config.yaml")
    old_style.capture, old_style.out = "cap", "run"
    (run / "config.yaml").write_text(OmegaConf.to_yaml(old_style))
    cfg.capture = str(cap)
    cap.mkdir()
    _, changes = resume_config(run, cfg, given=lambda key: key == "capture")
    assert changes == []
    # a run recorded before train.eyeball_weight existed resumes as it was trained (off), not with today's default
    del old_style.train["eyeball_weight"]
    (run / "config.yaml").write_text(OmegaConf.to_yaml(old_style))
    merged, changes = resume_config(run, cfg, given=lambda key: False)
    assert changes == [] and merged.train.eyeball_weight == 0.0 and cfg.train.eyeball_weight == 1.0
    with pytest.raises(RunError, match=r"train.eyeball_weight: 0.0 -> 1.0"):
        resume_config(run, cfg, given=lambda key: key == "train.eyeball_weight")


# --- stopping -------------------------------------------------------------------------------

def test_stop_request_notes_the_first_signal_and_raises_on_the_second():
    import os
    import signal

    from avatar.errors import StopRequest, Terminated

    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert isinstance(stop.error, Terminated)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_interrupted_training_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import os
    import signal
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from avatar.apps import train as train_app

    class Trainer:
        cfg, out, step = SimpleNamespace(iterations=3000, viewer=False), tmp_path / "run", 0

        def run(self, stop, on_step=None):
            self.step = 120
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step 120: it finishes, then the run stops
            assert stop()

    monkeypatch.setattr(train_app, "setup", lambda cfg, given: (Trainer(), None, None))
    monkeypatch.setattr(train_app, "finish", lambda *a: pytest.fail("a stopped run is not finished"))
    status = train_app.main(OmegaConf.create({"capture": "cap", "out": str(tmp_path / "run")}))
    err = capsys.readouterr().err
    assert status == 130 and "avatar train: interrupted at step 120 of 3000; checkpoint saved in" in err
    assert f"go on with: avatar train capture=cap out={tmp_path / 'run'} resume=true" in err


def test_failed_live_and_render_leave_no_folders(tmp_path, capsys, monkeypatch):
    from avatar import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["live", f"run={tmp_path / 'none'}", "display=false"]) == 1
    assert f"{tmp_path / 'none'} does not exist: train an avatar first (avatar train ... out={tmp_path / 'none'})" \
        in capsys.readouterr().err
    assert cli.main(["render", "run=none", "drive=take.csv", "out=renders/a.mp4"]) == 1
    assert list(tmp_path.iterdir()) == []  # no outputs/live/<time>/, no renders/ with .hydra or a log


# --- avatar render end to end -------------------------------------------------------------------

@pytest.fixture(scope="module")
def package(tmp_path_factory, ict_assets):
    from avatar_files import write_test_avatar

    import avatar.models
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=8, sh_degree=0, init_opacity=0.9))
    return write_test_avatar(tmp_path_factory.mktemp("avatar") / "avatar.pt", g, size=32,
                             expression_names=list(model.expression_names))


def test_render_bad_csv_cell_exits_1_naming_row_and_column(package, tmp_path, capsys):
    from avatar import cli

    take = _edit_csv(_write_csv(tmp_path / "take.csv", n=3), lambda rows: rows[2].__setitem__(5, "nan"))
    out = tmp_path / "out" / "a.mp4"
    assert cli.main(["render", f"run={package}", f"drive={take}", f"out={out}", "renderer=torch"]) == 1
    err = capsys.readouterr().err
    assert err == f"avatar render: {take}: line 3 (frame 1), column {ARKIT_BLENDSHAPES[3]} holds 'nan', not a finite " \
                  "number; fix or delete that line\n"
    assert not out.parent.exists()


def test_render_notes_and_a_second_render_keep_the_first_report(package, tmp_path, capsys):
    from avatar import cli

    take = _write_csv(tmp_path / "take.csv", n=3)
    no_pose = _edit_csv(_write_csv(tmp_path / "no_pose.csv", n=3), lambda rows: [r.__delitem__(slice(-9, None))
                                                                                 for r in rows])
    first, second = tmp_path / "out" / "a.mp4", tmp_path / "out" / "b.mp4"
    assert cli.main(["render", f"run={package}", f"drive={take}", f"out={first}", "renderer=torch"]) == 0
    capsys.readouterr()
    assert cli.main(["render", f"run={package}", f"drive={no_pose}", f"out={second}", "renderer=torch"]) == 0
    out, err = capsys.readouterr()
    assert "avatar render: note: no_pose.csv has no HeadYaw/HeadPitch/HeadRoll column(s): head pose stays neutral" in err
    assert "b.render_report.json" in out and "describes another video" in err
    reports = {p.name: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")}
    assert reports["render_report.json"]["output"] == str(first) and reports["b.render_report.json"]["output"] == str(second)
    assert any("head pose stays neutral" in n for n in reports["b.render_report.json"]["notes"])


def test_a_full_disk_is_one_line_naming_the_file(package, tmp_path, capsys, monkeypatch):
    import errno
    import os

    from avatar import cli
    from avatar.io import atomic

    def full(tmp, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "commit", full)
    take = _write_csv(tmp_path / "take.csv", n=3)
    out = tmp_path / "out" / "a.mp4"
    assert cli.main(["render", f"run={package}", f"drive={take}", f"out={out}", "renderer=torch"]) == 1
    line = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert line == f"avatar render: {out.parent / 'render_report.json'}: no space left on device; free some space " \
                   "or choose another out="
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".") and "partial" in p.name]  # no half file


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, capsys, monkeypatch):
    import errno
    import os

    from avatar import cli

    (tmp_path / "file").write_text("not a folder\n")
    argv = ["render", "run=r", "drive=d.csv"]
    assert cli.main([*argv, f"out={tmp_path / 'file' / 'sub' / 'a.mp4'}"]) == 1
    assert capsys.readouterr().err == f"avatar render: {tmp_path / 'file' / 'sub'}: not a directory\n"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name == "ro":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert cli.main([*argv, f"out={tmp_path / 'ro' / 'a.mp4'}"]) == 1
    assert capsys.readouterr().err == f"avatar render: {tmp_path / 'ro'}: read-only file system; choose an out= on a " \
                                      "writable disk\n"


# --- what preprocess sees in the video ----------------------------------------------------------

def test_sideways_video_without_rotation_metadata_suggests_preprocess_rotate(tmp_path):
    from test_preprocess import FAST
    from test_video_reader import astronaut_scene, write_test_video

    from avatar.io.capture import Capture
    from avatar.preprocess import PreprocessConfig, PreprocessError, preprocess

    upright = [astronaut_scene(272, 480, [(0.5, 0.45 - 0.01 * i, 0.8)]) for i in range(3)]
    left = write_test_video(tmp_path / "left.mp4", [np.ascontiguousarray(np.rot90(f, 1)) for f in upright])
    report = preprocess(left, tmp_path / "cap", PreprocessConfig(**FAST))  # found, but with poor landmarks
    assert report["orientation"]["looks_upright_after_turning_deg"] == 270
    assert any("look sideways" in n and "preprocess.rotate=270" in n for n in report["notes"]), report["notes"]
    report = preprocess(left, tmp_path / "fixed", PreprocessConfig(rotate=270, **FAST))
    face = Capture(tmp_path / "fixed").landmarks.face
    assert not report["notes"] and np.all(face[:, 10, 1] < face[:, 152, 1])  # forehead above chin
    right = write_test_video(tmp_path / "right.mp4", [np.ascontiguousarray(np.rot90(f, 3)) for f in upright])
    with pytest.raises(PreprocessError, match=r"turned 90 degrees counter-clockwise.*add preprocess\.rotate=90"):
        preprocess(right, tmp_path / "cap2", PreprocessConfig(**FAST))


@pytest.mark.parametrize(("where", "scale"), [((0.5, 0.5), 0.57), ((0.07, 0.15), 0.92)], ids=["57px-centred", "92px-corner"])
def test_small_face_in_a_1080p_frame_is_found(tmp_path, where, scale):
    from test_video_reader import astronaut_scene

    from avatar.landmarks import FaceMeshDetector
    from avatar.landmarks.face_finder import SmallFaceFinder
    from avatar.preprocess import _detect_full_frame

    frame = astronaut_scene(1920, 1080, [(*where, scale)])  # the face's landmark box: ~60 px / ~100 px
    small = SmallFaceFinder()
    try:
        with FaceMeshDetector(video=False, max_faces=2) as detector:
            faces = _detect_full_frame(detector, small, frame, 640)
    finally:
        small.close()
    assert len(faces) == 1
    centre, side = 0.5 * (faces[0].box[:2] + faces[0].box[2:]), faces[0].box[2] - faces[0].box[0]
    assert np.abs(centre - np.array(where) * [1920, 1080]).max() < 0.5 * side and 40 < side < 130


# --- values out of range, named by the config layer ---------------------------------------------


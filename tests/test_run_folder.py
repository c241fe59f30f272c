"""Where a run's training capture is found (avatar.io.run_folder), from any working directory."""

from pathlib import Path

from omegaconf import OmegaConf

from avatar.io.run_folder import resolve_capture, run_capture


def _run(tmp_path: Path, capture: str, out: str) -> Path:
    run = tmp_path / out
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"capture": capture, "out": out})))
    return run


def test_absolute_capture_is_returned_as_recorded(tmp_path):
    run = _run(tmp_path, str(tmp_path / "gone"), "run")
    assert run_capture(run) == tmp_path / "gone"  # not there: the caller says so, naming it


def test_relative_capture_is_read_from_where_training_ran(tmp_path, monkeypatch):
    (tmp_path / "work" / "cap").mkdir(parents=True)
    run = _run(tmp_path / "work", "cap", "runs/me")  # trained in work/ with out=runs/me
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_capture(run) == tmp_path / "work" / "cap"
    # the same relative name beside the current directory does not win over the training directory
    (elsewhere / "cap").mkdir()
    assert run_capture(run) == tmp_path / "work" / "cap"


def test_relative_capture_falls_back_to_the_current_directory(tmp_path, monkeypatch):
    run = _run(tmp_path / "a", "cap", "moved")  # the run folder was renamed: out no longer matches
    run.rename(tmp_path / "a" / "renamed")
    (tmp_path / "b" / "cap").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "b")
    assert run_capture(tmp_path / "a" / "renamed") == tmp_path / "b" / "cap"
    assert resolve_capture(tmp_path / "a" / "renamed", "nowhere", "moved") == Path("nowhere")


def test_no_config_no_capture(tmp_path):
    assert run_capture(tmp_path) is None

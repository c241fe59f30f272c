"""The `avatar` command: subcommands, Hydra configs, exit statuses, multirun, wheel."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import yaml

from avatar import cli
from avatar.apps import schema

REPO_ROOT = Path(__file__).resolve().parent.parent

# Keys every primary config must have, and whether `renderer` is composed in.
EXPECTED = {
    "preprocess": ({"input": "???", "out": "???"}, False),
    "track": ({"capture": "???", "model": "ict"}, False),
    "train": ({"capture": "???", "out": "???", "resume": False}, True),
    "render": ({"run": "???", "drive": "???", "out": "???", "camera": "tracked"}, True),
    "live": ({"run": "???", "source": 0, "out": None, "display": True}, True),
    "demo": ({"out": "outputs/demo"}, True),
    "export": ({"run": "???"}, False),
    "eval": ({"run": "???"}, True),
}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`avatar ARGV...` in this process: (exit status, stdout, stderr)."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_module(*argv: str, cwd: Path, pythonpath: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """`python -m avatar ARGV...` in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath), HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, "-m", "avatar", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(autouse=True)
def restore_logging():
    """Hydra points logging at the streams of the moment; in-process runs must undo that."""
    loggers = [logging.getLogger(), logging.getLogger("hydra")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder so that stray outputs would show."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fake_demo(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Point `avatar demo` at a recording stand-in; returns the configs it was run with."""
    from omegaconf import OmegaConf

    calls: list[dict] = []

    def main(cfg):
        """+demo.write=NAME: write out/NAME first; +demo.fail=input|interrupt|bug: then raise."""
        calls.append({"cfg": OmegaConf.to_container(cfg, resolve=True), "cwd": os.getcwd()})
        if cfg.demo.get("write"):
            (Path(cfg.out) / cfg.demo.write).write_text("output\n")
        if cfg.demo.get("fail") == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a job scheduler would
        failure = {"input": FileNotFoundError(f"capture folder {cfg.out}/cap not found: run avatar preprocess"),
                   "interrupt": KeyboardInterrupt(), "bug": RuntimeError("a bug")}.get(cfg.demo.get("fail"))
        if failure is not None:
            raise failure
        return cfg.demo.get("status")

    module = types.ModuleType("fake_avatar_demo")
    module.main = main
    monkeypatch.setitem(sys.modules, "fake_avatar_demo", module)
    summary = cli.SUBCOMMANDS["demo"].summary
    monkeypatch.setitem(cli.SUBCOMMANDS, "demo", cli.Subcommand(summary, "fake_avatar_demo:main"))
    return calls


def test_help_lists_every_subcommand(tmp_path: Path) -> None:
    result = run_module("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert set(cli.SUBCOMMANDS) <= listed
    assert set(cli.SUBCOMMANDS) == {
        "preprocess", "track", "train", "render", "live", "demo", "export", "eval", "view",
    }


def test_short_help_and_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "-h")
    assert status == 0 and "demo" in out
    status, out, err = run_cli(capsys)
    assert status == 2 and out == "" and "subcommands:" in err


def test_every_target_names_a_module_and_function() -> None:
    for sub in cli.SUBCOMMANDS.values():
        assert sub.summary and "\n" not in sub.summary
        if sub.target is not None:
            module, _, function = sub.target.partition(":")
            assert module and function


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cfg_job_prints_the_composed_config(
    name: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(capsys, name, "--cfg", "job")
    assert status == 0, err
    cfg = yaml.safe_load(out)
    keys, renders = EXPECTED[name]
    assert {k: cfg[k] for k in keys} == keys
    if renders:
        assert cfg["renderer"] == {
            "backend": "auto", "tile_size": None, "eps2d": 0.3, "near_plane": 0.01,
        }
    else:
        assert "renderer" not in cfg
    assert list(in_tmp.iterdir()) == []  # --cfg writes nothing


def test_config_values(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "demo", "--cfg", "job")
    assert yaml.safe_load(out)["demo"] == {
        "width": 256, "height": 256, "n_frames": 48, "fps": 24, "n_gaussians": 20000, "seed": 0, "sh_degree": 3,
    }
    _, out, _ = run_cli(capsys, "preprocess", "--cfg", "job")
    pre = yaml.safe_load(out)["preprocess"]
    assert {k: pre[k] for k in ("max_frames", "fps", "resolution", "crop")} == {
        "max_frames": None, "fps": None, "resolution": 512, "crop": "follow",
    }


def test_dataclasses_give_the_defaults(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from avatar.gaussians.mesh_gaussians import MeshGaussiansConfig
    from avatar.train.trainer import TrainConfig

    def plain(value):  # tuples as YAML lists
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value

    expected = plain(dataclasses.asdict(TrainConfig()))
    # conf/avatar/mesh_gaussians.yaml: fewer samples on ICT's large eye, mouth and teeth charts, on purpose
    expected["gaussians"]["part_uv_resolution"] = {"eyeball_left": 24, "eyeball_right": 24,
                                                   "gums_and_tongue": 48, "teeth": 64}
    status, out, err = run_cli(capsys, "train", "--cfg", "job")
    assert status == 0, err
    assert yaml.safe_load(out)["train"] == expected
    _, out, _ = run_cli(capsys, "train", "--cfg", "job", "avatar=mesh_gaussians_dynamic")
    assert yaml.safe_load(out)["train"] == {**expected, "gaussians": {**expected["gaussians"], "deform": True}}
    # A body kind also caps densification (conf/avatar/body.yaml); body_dynamic inherits the
    # rest and caps lower, below the count it starts with (no growth).
    for kind, deform, cap in (("body", False, 16000), ("body_dynamic", True, 10000)):
        _, out, _ = run_cli(capsys, "train", "--cfg", "job", f"avatar={kind}")
        train = yaml.safe_load(out)["train"]
        assert train["gaussians"]["kind"] == "skinned_gaussians" and train["gaussians"]["deform"] is deform
        assert train["gaussians"]["init_color_frames"] == 12, kind
        assert train["densify"]["max_gaussians"] == cap < expected["densify"]["max_gaussians"]
    # The YAML picks and overrides only: no dataclass value is written twice.
    for name, paths in schema.SCHEMAS.items():
        primary = yaml.safe_load((REPO_ROOT / "conf" / f"{name}.yaml").read_text())
        assert not set(paths) & set(primary), name
    defaults = dataclasses.asdict(MeshGaussiansConfig())
    for path in (REPO_ROOT / "conf" / "avatar").glob("*.yaml"):
        text = path.read_text()
        data = yaml.safe_load(text)
        if "# @package _global_" in text:  # a kind that also sets train keys (portrait: train.mask)
            data = data["train"]["gaussians"]
        for key, value in data.items():
            assert key == "defaults" or plain(defaults[key]) != value, (path.name, key)


@pytest.mark.parametrize(("argv", "line"), [
    (["train", "capture=c", "out=r", "train.iterations=abc"], "train.iterations=abc: expected an integer >= 0"),
    (["train", "capture=c", "out=r", "train.iterations=-5"], "train.iterations=-5: expected an integer >= 0"),
    (["train", "capture=c", "out=r", "train.holdout=1.5"], "train.holdout=1.5: expected a number in [0, 1)"),
    (["train", "capture=c", "out=r", "train.background=[a,1,1]"],
     "train.background=[a,1,1]: expected a list of 3 numbers"),
    (["train", "capture=c", "out=r", "resume=maybe"], "resume=maybe: expected true or false"),
    (["train", "capture=c", "out=r", "+train.colour=1"], "unknown key 'train.colour'"),
    (["preprocess", "input=v.mp4", "out=r", "preprocess.max_frames=abc"],
     "preprocess.max_frames=abc: expected an integer >= 1 or null"),
    (["preprocess", "input=v.mp4", "out=r", "preprocess.crop=wobbly"], "preprocess.crop must be one of"),
    (["render", "run=a", "drive=d.csv", "out=r/o.mp4", "max_frames=abc"],
     "max_frames=abc: expected an integer >= 1 or null"),
    (["render", "run=a", "drive=d.csv", "out=r/o.mp4", "camera=top"], "camera=top: expected one of tracked, fixed"),
    (["track", "capture=r", "track.fit.full_iterations=abc"], "track.fit.full_iterations=abc: expected an integer"),
    (["live", "run=a", "max_gaussians=lots"], "max_gaussians=lots: expected an integer >= 1, auto or null"),
    (["live", "run=a", "body_warp_downscale=0"], "body_warp_downscale=0: expected an integer >= 1"),
    (["live", "run=a", "render_threads=many"], "render_threads=many: expected an integer >= 1, auto"),
    (["train", "capture=c", "out=r", "train.gaussians.neck_blend=-0.1"],
     "train.gaussians.neck_blend=-0.1: expected a number >= 0"),
    (["demo", "out=r", "demo.fps=fast"], "demo.fps=fast: expected an integer"),
    (["demo", "--cfg", "job", "renderer.eps2d=-1"], "renderer.eps2d=-1: expected a number >= 0"),
    # impossible ranges (counts, learning rates, focal length, JPEG quality, rotation)
    (["track", "capture=c", "track.fit.full_iterations=-5"], "track.fit.full_iterations=-5: expected an integer >= 0"),
    (["track", "capture=c", "track.overlay_stride=0"], "track.overlay_stride=0: expected an integer >= 1"),
    (["track", "capture=c", "track.fit.focal=-3"], "track.fit.focal=-3.0: expected a number >= 1e-06 or null"),
    (["train", "capture=c", "out=r", "train.densify.refine_every=0"],
     "train.densify.refine_every=0: expected an integer >= 1"),
    (["train", "capture=c", "out=r", "train.checkpoint_every=-1"], "train.checkpoint_every=-1: expected an integer >= 0"),
    (["train", "capture=c", "out=r", "train.lr_xyz=-1"], "train.lr_xyz=-1.0: expected a number >= 0"),
    (["preprocess", "input=v.mp4", "out=o", "preprocess.jpeg_quality=500"],
     "preprocess.jpeg_quality=500: expected an integer in [0, 100]"),
    (["preprocess", "input=v.mp4", "out=o", "preprocess.rotate=45"], "preprocess.rotate must be one of (0, 90, 180, 270)"),
])
def test_a_bad_value_exits_2_naming_the_key(
    argv: list[str], line: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith(f"avatar {argv[0]}: {line}") and err.count("\n") == 1, err
    assert list(in_tmp.iterdir()) == []  # before any work: no output folder, no .hydra, no log


def test_overrides_change_the_printed_config(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(
        capsys, "demo", "--cfg", "job", "demo.n_frames=7", "renderer=torch", "+demo.extra=x"
    )
    assert status == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["demo"]["n_frames"] == 7 and cfg["demo"]["extra"] == "x"
    assert cfg["renderer"]["backend"] == "torch" and cfg["renderer"]["tile_size"] is None


def test_subprocess_cfg_job_with_override(tmp_path: Path) -> None:
    result = run_module("eval", "--cfg", "job", "--resolve", "run=runs/a", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["run"] == "runs/a" and cfg["out"] == "runs/a/eval"
    assert list(tmp_path.iterdir()) == []


def test_subcommand_help_lists_keys_with_docs(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping: one line per key
    status, out, _ = run_cli(capsys, "train", "--help")
    assert status == 0
    assert out.startswith(f"avatar train: {cli.SUBCOMMANDS['train'].summary}")
    assert "usage: avatar train capture=CAPTURE_DIR out=RUN_DIR" in out
    assert re.search(r"^  renderer +auto\*, gsplat, torch$", out, re.M)
    lines = out.splitlines()
    # key, value and doc on one line: from a YAML comment, a dataclass field's comment, a group's YAML
    assert re.search(r"^  capture +\?\?\? +tracked capture folder", out, re.M)
    assert re.search(r"^  train\.resolution +256 +training width in pixels", out, re.M)
    assert re.search(r"^  train\.densify\.grad_threshold +0\.0002 +mean \|d loss", out, re.M)
    assert re.search(r"^  renderer\.eps2d +0\.3 +2D blur", out, re.M)
    assert "train  (avatar.train.config.TrainConfig):" in lines
    assert any(line.startswith("train.gaussians  (avatar=mesh_gaussians;") for line in lines)
    status, out, _ = run_cli(capsys, "train", "--help", "avatar=mesh_gaussians_dynamic", "train.iterations=7")
    assert status == 0 and re.search(r"^  train\.iterations +7 +training steps", out, re.M)
    assert re.search(r"^  train\.gaussians\.deform +true ", out, re.M)
    status, out, _ = run_cli(capsys, "track", "--help")
    assert re.search(r"^  track\.progress +true +tqdm progress bars", out, re.M)
    status, out, _ = run_cli(capsys, "render", "--help")
    assert re.search(r"^  max_frames +null +render at most this many driver frames", out, re.M)
    assert re.search(r"^  retarget\.gain +null +one gain on the driver's deviations .* parameter files", out, re.M)
    assert "retarget  (how the driver's expressions map onto the avatar" in out
    status, out, _ = run_cli(capsys, "train", "--hydra-help")
    assert status == 0 and "--multirun" in out
    status, _, err = run_cli(capsys, "train", "--help", "train.iteration=3")
    assert status == 2 and "unknown key 'train.iteration'" in err
    assert list(in_tmp.iterdir()) == []


def test_unknown_subcommand_suggests_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(capsys, "trian")
    assert status == 2 and out == ""
    assert err.strip() == err.strip().splitlines()[0]
    assert "unknown subcommand 'trian'" in err and "did you mean 'train'" in err


def test_unknown_key_is_named(tmp_path: Path) -> None:
    result = run_module("demo", "demo.nframes=3", cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert "unknown key 'demo.nframes'" in line and "+demo.nframes=" in line
    assert "did you mean 'demo.n_frames'" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override", ["demo.n_frames=[1", "demo.n_frames", "a b=c", "=3"])
def test_unparsable_override_is_quoted(
    override: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "demo", override)
    assert status == 2
    assert f"cannot parse override '{override}'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["/home/zoë/my runs/a", "clip (1).mp4", "vidéo#1!.mp4", "it's & ü\\"])
def test_paths_hydra_cannot_read_unquoted_are_quoted_for_it(value: str, tmp_path: Path) -> None:
    """A path with letters beyond ASCII, brackets or symbols works as typed (no quotes needed)."""
    result = run_module("eval", "--cfg", "job", "--resolve", f"run={value}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["run"] == value and cfg["out"] == f"{value}/eval"


def test_only_unparsable_plain_values_are_quoted() -> None:
    from avatar.apps.check import quote_values

    given = ["a=1", "a=[1,2]", "a=x,y", "a=${b}", "a='x y'", "~a", "a=[1", "a=zoë,b", "+a.b=ü"]
    assert quote_values(given) == [*given[:-1], "+a.b='ü'"]


def test_other_composition_errors_exit_2(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "demo", "renderer=vulkan")
    assert status == 2 and "renderer/vulkan" in err and "auto, gsplat, torch" in err
    status, _, err = run_cli(capsys, "demo", "demo.n_frames=2,3")
    assert status == 2 and "-m" in err
    status, _, err = run_cli(capsys, "demo", "--cfg", "job", "nokey=1")
    assert status == 2 and "unknown key 'nokey'" in err


def test_missing_required_key_is_named(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "preprocess", "out=cap")
    assert status == 2
    assert "missing required key 'input': pass input=" in err
    status, _, err = run_cli(capsys, "render", "run=r")
    assert status == 2 and "missing required keys 'drive', 'out'" in err
    status, _, err = run_cli(capsys, "export")  # out: ${run}/export must not break the check
    assert status == 2 and "missing required key 'run'" in err
    assert list(in_tmp.iterdir()) == []


def test_missing_keys_are_fine_for_show_only_options(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for option in (["--cfg", "job"], ["--help"], ["--info", "defaults"]):
        status, _, err = run_cli(capsys, "train", *option)
        assert status == 0, (option, err)


def test_not_built_subcommand_exits_2_after_checking(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every subcommand is built now; the "not built yet" path stays for new ones.
    planned = cli.Subcommand("a planned stage", None)
    monkeypatch.setitem(cli.SUBCOMMANDS, "live", planned)
    status, _, err = run_cli(capsys, "live", "run=r")
    assert status == 2
    assert err.strip() == "avatar live: not built yet (planned: a planned stage). Nothing was run."
    assert list(in_tmp.iterdir()) == []
    status, _, err = run_cli(capsys, "live", "run=r", "sorce=1")  # checked first
    assert status == 2 and "unknown key 'sorce'" in err


def test_job_runs_with_its_config_and_status(
    fake_demo: list[dict], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "demo", "demo.n_frames=5", "out=run1", "+demo.status=0")
    assert status == 0, err
    (call,) = fake_demo
    assert call["cfg"]["demo"]["n_frames"] == 5 and call["cfg"]["out"] == "run1"
    assert call["cwd"] == str(in_tmp)  # hydra.job.chdir is false
    assert (in_tmp / "run1" / ".hydra" / "demo" / "config.yaml").is_file()
    assert (in_tmp / "run1" / "demo.log").is_file()
    assert sorted(p.name for p in in_tmp.iterdir()) == ["run1"]
    status, _, err = run_cli(capsys, "demo", "out=run2", "+demo.status=3", "+demo.write=result.txt")
    assert status == 3, err  # the job's own status; what it wrote stays, with the records
    assert {p.name for p in (in_tmp / "run2").iterdir()} == {".hydra", "demo.log", "result.txt"}


@pytest.mark.parametrize(("fail", "status", "line"), [
    ("input", 1, "avatar demo: capture folder run/a/cap not found: run avatar preprocess"),
    ("interrupt", 130, "avatar demo: interrupted"),
    ("sigterm", 143, "avatar demo: stopped by SIGTERM"),
])
def test_a_job_failing_before_work_leaves_no_folder(
    fail: str, status: int, line: str,
    fake_demo: list[dict], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "demo", "out=run/a", f"+demo.fail={fail}")
    assert code == status and err.strip() == line and "Traceback" not in out + err
    assert list(in_tmp.iterdir()) == []  # not run/a, nor run, nor their .hydra and demo.log


def test_a_failing_job_removes_only_what_it_added(
    fake_demo: list[dict], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "kept").mkdir()
    (in_tmp / "kept" / "frames.txt").write_text("the capture\n")
    assert run_cli(capsys, "demo", "out=kept", "+demo.fail=input")[0] == 1
    assert [p.name for p in (in_tmp / "kept").iterdir()] == ["frames.txt"]
    assert run_cli(capsys, "demo", "out=kept", "+demo.status=0")[0] == 0
    assert run_cli(capsys, "demo", "out=kept", "+demo.fail=input")[0] == 1
    assert (in_tmp / "kept" / ".hydra" / "demo" / "config.yaml").is_file()  # an earlier run's records stay
    assert (in_tmp / "kept" / "demo.log").is_file()


def test_a_job_failing_after_writing_keeps_its_folder(
    fake_demo: list[dict], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "demo", "out=run", "+demo.write=half.txt", "+demo.fail=input")
    assert status == 1 and err.count("\n") == 1
    assert {p.name for p in (in_tmp / "run").iterdir()} == {".hydra", "demo.log", "half.txt"}


def test_multirun_runs_the_job_per_value(
    fake_demo: list[dict], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "demo", "-m", "demo.n_frames=2,3", "out=sweep")
    assert status == 0, err
    assert [c["cfg"]["demo"]["n_frames"] for c in fake_demo] == [2, 3]
    assert [c["cfg"]["out"] for c in fake_demo] == [
        str(in_tmp / "sweep" / "multirun" / str(i)) for i in (0, 1)
    ]
    assert (in_tmp / "sweep" / "multirun" / "multirun.yaml").is_file()


def test_multirun_checks_its_first_job(
    fake_demo: list[dict], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "demo", "-m", "demo.n_frames=2,3", "demo.sed=1")
    assert status == 2 and "unknown key 'demo.sed'" in err
    status, _, err = run_cli(capsys, "train", "-m", "capture=a,b")
    assert status == 2 and "missing required key 'out'" in err
    status, _, err = run_cli(capsys, "eval", "-m", "run=a,b")
    assert status == 2 and "hydra.sweep.dir" in err
    assert fake_demo == [] and list(in_tmp.iterdir()) == []


def test_config_dir_is_found() -> None:
    conf = cli.find_conf_dir()
    assert conf == REPO_ROOT / "conf"
    for name in cli.SUBCOMMANDS:
        assert (conf / f"{name}.yaml").is_file()


@pytest.mark.slow
def test_configs_resolve_from_an_installed_wheel(tmp_path: Path) -> None:
    # Build from a copy of what the wheel is made of, so that a half-edited tree
    # elsewhere in the project cannot break this test.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "avatar", src / "avatar", ignore=ignore)
    shutil.copytree(REPO_ROOT / "conf", src / "conf", ignore=ignore)
    shutil.copy(REPO_ROOT / "pyproject.toml", src)
    readme = REPO_ROOT / "README.md"
    (src / "README.md").write_text(readme.read_text() if readme.is_file() else "avatar\n")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("splat_avatar-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    assert (site / "avatar" / "conf" / "demo.yaml").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = run_module("--help", cwd=elsewhere, pythonpath=site)
    assert shown.returncode == 0, shown.stderr
    assert f"config folder: {site / 'avatar' / 'conf'}" in shown.stdout
    result = run_module("demo", "--cfg", "job", "demo.seed=5", cwd=elsewhere, pythonpath=site)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["demo"]["seed"] == 5 and cfg["demo"]["n_gaussians"] == 20000
    assert cfg["renderer"]["backend"] == "auto"
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
def test_a_sweep_runs_in_parallel_through_the_joblib_launcher(tmp_path: Path) -> None:
    """Hydra's joblib launcher (PyPI) runs the jobs in worker processes; the summary still
    collects every job's status and report, and the command exits with the failing job's status."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="hydra-joblib-launcher is not installed")
    import torch

    result = run_module("demo", "-m", "mode=orbit", "demo.n_frames=2", "demo.width=32", "demo.height=32",
                        "demo.n_gaussians=200", "device=cpu,cuda", "out=sweep", "hydra/launcher=joblib",
                        "hydra.launcher.n_jobs=2", cwd=tmp_path)
    cuda = torch.cuda.is_available()
    assert result.returncode == (0 if cuda else 2), result.stderr
    summary = json.loads((tmp_path / "sweep" / "multirun" / "summary.json").read_text())
    assert [job["status"] for job in summary["jobs"]] == [0, 0 if cuda else 2]
    assert summary["jobs"][0]["figures"]["n_gaussians"] == 200
    assert "device=cuda" in summary["jobs"][1]["overrides"]
    assert "sweep summary:" in result.stdout

"""The ``avatar`` command: one Hydra app per pipeline stage.

    avatar SUBCOMMAND [key=value | +key=value | ~key ...] [--cfg job] [-m] [--help]

Each subcommand composes ``conf/<subcommand>.yaml`` with Hydra, so everything Hydra
offers works: overrides, ``--cfg job``, ``--info``, ``--hydra-help`` and ``-m`` sweeps.
The config's keys, types and defaults come from dataclasses where the library has them
(:mod:`avatar.apps.schema` registers them; the YAML picks groups and sets what differs).
Before Hydra runs, the command line is checked here so that mistakes exit with status 2
and one line naming the problem (an unknown key, an override that does not parse, a value
of the wrong type or out of range, a required ``???`` value not given) before any work
and before any output folder exists. ``--help`` lists every key with its value and doc
(:mod:`avatar.apps.help`); ``--shell-completion install=bash|zsh`` prints a completion
script (:mod:`avatar.apps.completion`).

A subcommand's implementation is a function ``main(cfg: DictConfig) -> int | None``
(the return value is the exit status; ``None`` means 0), named in ``SUBCOMMANDS`` as
``"module:function"`` and imported only when that subcommand runs. ``None`` there
means "not built yet": the config is still composed and checked, then the command
exits 2 saying so. Exit statuses and error lines: :mod:`avatar.errors` (0 done, 1 an
input cannot be used, 2 a usage error, 130 interrupted, 143 SIGTERM); a job that fails before writing
anything leaves no folder behind (:mod:`avatar.apps.run_folder`).

The config folder is ``<package>/conf`` in an installed wheel, else ``<package>/../conf``
in a source checkout or an editable install.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from avatar import __version__, errors
from avatar.apps.check import PROG, VERSION_BASE
from avatar.errors import EXIT_USAGE, UsageError

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass(frozen=True)
class Subcommand:
    summary: str  # one line: `avatar --help` and the "not built yet" message show it
    target: str | None  # "module:function" of its main(cfg); None = not built yet


SUBCOMMANDS: dict[str, Subcommand] = {
    "preprocess": Subcommand("video -> capture folder: frames, masks, landmarks", "avatar.apps.preprocess:main"),
    "track": Subcommand("fit FLAME/ICT to the capture's landmarks -> tracking.npz", "avatar.apps.track:main"),
    "train": Subcommand("train a Gaussian avatar on a tracked capture -> run folder", "avatar.apps.train:main"),
    "render": Subcommand("render a trained avatar driven by a video or parameter file", "avatar.apps.render:main"),
    "live": Subcommand("drive a trained avatar in real time from a webcam or video", "avatar.apps.live:main"),
    "demo": Subcommand(
        "render a synthetic Gaussian-splat animation (no inputs needed)",
        "avatar.apps.demo:main",
    ),
    "export": Subcommand("export a trained avatar: 3DGS .ply and compact .spz, posed or driven", "avatar.apps.export:main"),
    "eval": Subcommand("measure a trained avatar on held-out frames -> metrics", "avatar.apps.eval:main"),
    "view": Subcommand("show a trained avatar in a web browser: sliders, playback", "avatar.apps.view:main"),
}

# Hydra options that only show things: required keys may stay missing for them.
_SHOW_ONLY = ("help", "hydra_help", "cfg", "info", "shell_completion")


class ConfigDirNotFound(RuntimeError):
    """Neither ``<package>/conf`` nor ``<package>/../conf`` exists."""


def find_conf_dir() -> Path:
    """The folder holding the primary configs (``demo.yaml`` ...) and groups."""
    package_dir = Path(__file__).resolve().parent
    candidates = (package_dir / "conf", package_dir.parent / "conf")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise ConfigDirNotFound(
        f"config folder not found (looked in {looked}); reinstall the avatar package "
        "or run from a source checkout"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``avatar`` and ``python -m avatar``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return EXIT_USAGE
    name, rest = args[0], args[1:]
    if name in ("-h", "--help"):
        print(usage())
        return 0
    if name == "--version":
        print(f"{PROG} {__version__}")
        return 0
    if name in ("-sc", "--shell-completion"):
        return _completion_script(rest)
    if name not in SUBCOMMANDS:
        print(_unknown_subcommand(name), file=sys.stderr)
        return EXIT_USAGE
    _register_resolvers()
    try:  # the errors of the check, of Hydra and of the job: one line and a status (avatar.errors)
        with errors.sigterm_raises():
            return errors.run(f"{PROG} {name}", _run_subcommand, name, rest)
    except SystemExit as exc:  # Hydra and argparse exit on --hydra-help and on their errors
        return _exit_status(exc)
    except BrokenPipeError:  # `avatar demo --help | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet exit flush
        return 141


def _register_resolvers() -> None:
    """Config helpers: ``${dirname:PATH}`` (the folder of a file path, e.g. render's out=OUT.mp4)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("dirname"):
        OmegaConf.register_new_resolver("dirname", lambda path: str(Path(str(path)).parent))


def usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [
        f"usage: {PROG} SUBCOMMAND [key=value ...] [--cfg job] [-m] [--help]",
        "",
        "Phone video -> animatable 3D Gaussian-splatting avatar.",
        "",
        "subcommands:",
    ]
    for name, sub in SUBCOMMANDS.items():
        todo = "" if sub.target else "  (not built yet)"
        lines.append(f"  {name:<{width}}  {sub.summary}{todo}")
    try:
        conf = str(find_conf_dir())
    except ConfigDirNotFound:
        conf = "not found"
    lines += [
        "",
        f"Each subcommand is a Hydra app over conf/<subcommand>.yaml (config folder: {conf}):",
        f"  {PROG} SUBCOMMAND key=value +new.key=value   change or add config values",
        f"  {PROG} SUBCOMMAND --cfg job                  print the composed config, run nothing",
        f"  {PROG} SUBCOMMAND -m key=a,b                 run once per value (multirun)",
        f"  {PROG} SUBCOMMAND --help                     its keys with their values and docs, its groups",
        "",
        "Shell completion: eval \"$(avatar --shell-completion install=bash)\" (or install=zsh).",
        "Exit status: 0 done, 1 an input cannot be used, 2 a mistake on the command line, 130 interrupted, 143 SIGTERM.",
    ]
    return "\n".join(lines)


def _completion_script(argv: list[str]) -> int:
    """``avatar --shell-completion install=bash|zsh`` (or uninstall=...): print the script."""
    from avatar.apps import completion

    request = completion.parse_request(argv)
    if request is None or request[0] == "query":
        shells = ", ".join(completion.SHELLS)
        print(f"{PROG}: --shell-completion takes install=SHELL or uninstall=SHELL ({shells})", file=sys.stderr)
        return EXIT_USAGE
    print(completion.script(*request, list(SUBCOMMANDS)))
    return 0


def _unknown_subcommand(name: str) -> str:
    close = difflib.get_close_matches(name, list(SUBCOMMANDS), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(SUBCOMMANDS)}"
    return f"{PROG}: unknown subcommand '{name}': {hint} (see '{PROG} --help')"


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _run_subcommand(name: str, argv: list[str]) -> int:
    from hydra._internal.utils import get_args_parser

    from avatar.apps import check, schema

    conf_dir = find_conf_dir()
    prog = f"{PROG} {name}"
    parser = get_args_parser()
    parser.prog = prog
    args = parser.parse_args(argv)

    modes = {
        "--run": args.run,
        "--multirun": args.multirun,
        "--cfg": args.cfg is not None,
        "--info": args.info is not None,
        "--shell-completion": args.shell_completion,
        "--help": args.help,
    }
    if sum(modes.values()) > 1:
        chosen = " and ".join(flag for flag, on in modes.items() if on)
        raise UsageError(f"{prog}: {chosen} do not go together; pick one")
    if args.resolve and not args.cfg:
        raise UsageError(f"{prog}: --resolve only goes with --cfg")

    schema.register(name)  # the YAML places the subcommand's dataclasses
    if args.shell_completion:
        return _shell_completion(name, conf_dir, args.overrides)
    # -cp/-cn/-cd and reruns change which configs Hydra sees: leave those to Hydra.
    expert = any((args.config_path, args.config_name, args.config_dir, args.experimental_rerun))
    show_only = any(getattr(args, flag) for flag in _SHOW_ONLY)
    quoted = check.quote_values(args.overrides)
    if quoted != args.overrides:  # Hydra reads sys.argv itself: hand it the quoted values too
        fixed = dict(zip(args.overrides, quoted))
        argv = [fixed.get(a, a) for a in argv]
        args.overrides = quoted
    overrides = check.parse_overrides(name, args.overrides)
    if not (expert or args.hydra_help):
        composed = check.check_config(
            name, conf_dir, overrides, multirun=args.multirun, check_missing=not show_only
        )
        if args.help:
            from avatar.apps import help as help_page

            print(help_page.page(name, SUBCOMMANDS[name].summary, conf_dir, *composed))
            return 0

    target = SUBCOMMANDS[name].target
    job: Callable[[DictConfig], int | None] | None = None
    if not show_only:
        if target is None:
            if not expert:
                print(_not_built(name), file=sys.stderr)
                return EXIT_USAGE
        else:
            job = load_target(target)

    out_swept = any(o.is_sweep_override() and o.key_or_group == "out" for o in overrides)
    return _run_hydra(name, conf_dir, argv, job, out_swept=out_swept)


def _shell_completion(name: str, conf_dir: Path, overrides: list[str]) -> int:
    """``--shell-completion install=bash`` prints the script for the whole ``avatar``
    command; ``query=bash`` (what the script runs) answers from Hydra's completion."""
    from avatar.apps import completion

    request = completion.parse_request(overrides)
    if request is None:
        raise UsageError(
            f"{PROG} {name}: --shell-completion takes install=SHELL, uninstall=SHELL or query=SHELL "
            f"({', '.join(completion.SHELLS)})"
        )
    action, shell = request
    if action != "query":
        print(completion.script(action, shell, list(SUBCOMMANDS)))
        return 0
    completion.prepare_query(name)
    return _run_hydra(name, conf_dir, ["--shell-completion", f"query={shell}"], None)


def load_target(target: str) -> Callable[[DictConfig], int | None]:
    """Import ``"package.module:function"`` and return the function."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _not_built(name: str) -> str:
    return (
        f"{PROG} {name}: not built yet (planned: {SUBCOMMANDS[name].summary}). "
        "Nothing was run."
    )


def _run_hydra(
    name: str,
    conf_dir: Path,
    argv: list[str],
    job: Callable[[DictConfig], int | None] | None,
    *,
    out_swept: bool = False,
) -> int:
    """Hand the command line to ``hydra.main``; return the first failing job's status."""
    import hydra

    statuses: list[int] = []

    def task(cfg: DictConfig) -> int:
        statuses.append(_run_job(name, job, cfg, out_swept=out_swept))
        return statuses[-1]  # the run-folder callback reads it (avatar.apps.run_folder)

    from avatar.apps import sweep

    app = hydra.main(config_path=str(conf_dir), config_name=name, version_base=VERSION_BASE)(task)
    saved, sys.argv = sys.argv, [f"{PROG} {name}", *argv]  # hydra.main parses sys.argv
    sweep.reset()
    try:
        app()
    finally:
        sys.argv = saved
    # A launcher that runs jobs in other processes (joblib, submitit) leaves `statuses` empty:
    # the sweep summary read every job's status from its folder.
    swept = sweep.sweep_statuses()
    return next((s for s in [*statuses, *(swept or [])] if s != 0), 0)


def _run_job(
    name: str,
    job: Callable[[DictConfig], int | None] | None,
    cfg: DictConfig,
    *,
    out_swept: bool = False,
) -> int:
    """One Hydra job: check the config, point a sweep job's `out` at its folder, run.

    In a multirun every job gets its own folder, ``<sweep dir>/<job number>``, and its
    ``out`` is set to that folder, unless the sweep itself sets ``out``. The job's errors
    become its exit status and one line on stderr (:mod:`avatar.errors`).
    """
    return errors.run(f"{PROG} {name}", _checked_job, name, job, cfg, out_swept)


def _checked_job(
    name: str, job: Callable[[DictConfig], int | None] | None, cfg: DictConfig, out_swept: bool
) -> int | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from avatar.apps import check

    check.raise_if_missing(name, cfg)
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise UsageError(f"{PROG} {name}: cannot resolve the config: {' '.join(str(err).split())}") from err

    hydra_cfg = HydraConfig.get()
    # An `out` made from other keys (track's ${capture}, eval's ${run}/eval) already differs per
    # job; a file (render's video) goes into the job's folder under its own name.
    if (hydra_cfg.mode == RunMode.MULTIRUN and "out" in cfg and not out_swept
            and not OmegaConf.is_interpolation(cfg, "out")):
        folder = Path(hydra_cfg.runtime.output_dir)
        with open_dict(cfg):
            cfg.out = str(folder / Path(str(cfg.out)).name) if Path(str(cfg.out)).suffix else str(folder)

    if job is None:  # only reached with -cp/-cn/-cd, which skip the early check
        raise UsageError(_not_built(name))
    return job(cfg)

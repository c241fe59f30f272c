"""The ``avatar`` command: one Hydra app per pipeline stage.

    avatar SUBCOMMAND [key=value | +key=value | ~key ...] [--cfg job] [-m] [--help]

Each subcommand composes ``conf/<subcommand>.yaml`` with Hydra, so everything Hydra
offers works: overrides, ``--cfg job``, ``--info``, ``--help``/``--hydra-help`` and
``-m`` sweeps. Before Hydra runs, the command line is checked here so that mistakes
exit with status 2 and one line naming the problem (an unknown key, an override that
does not parse, a required ``???`` value not given) instead of Hydra's traceback.

A subcommand's implementation is a function ``main(cfg: DictConfig) -> int | None``
(the return value is the exit status; ``None`` means 0), named in ``SUBCOMMANDS`` as
``"module:function"`` and imported only when that subcommand runs. ``None`` there
means "not built yet": the config is still composed and checked, then the command
exits 2 saying so.

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
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from avatar import __version__

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from omegaconf import DictConfig

PROG = "avatar"
VERSION_BASE = "1.3"
EXIT_USAGE = 2


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
    "export": Subcommand("export a trained avatar (3DGS .ply for splat viewers)", "avatar.apps.export:main"),
    "eval": Subcommand("measure a trained avatar on held-out frames -> metrics", "avatar.apps.eval:main"),
}

# Hydra options that only show things: required keys may stay missing for them.
_SHOW_ONLY = ("help", "hydra_help", "cfg", "info", "shell_completion")


class UsageError(Exception):
    """A mistake on the command line: ``main`` prints the message and exits 2."""


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
    _register_resolvers()
    try:
        if name not in SUBCOMMANDS:
            raise UsageError(_unknown_subcommand(name))
        return _run_subcommand(name, rest)
    except UsageError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    except ConfigDirNotFound as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    except SystemExit as exc:  # Hydra and argparse exit on --help and on their errors
        return _exit_status(exc)
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted", file=sys.stderr)
        return 130
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
        f"  {PROG} SUBCOMMAND --help                     its config, options and groups",
    ]
    return "\n".join(lines)


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
    }
    if sum(modes.values()) > 1:
        chosen = " and ".join(flag for flag, on in modes.items() if on)
        raise UsageError(f"{prog}: {chosen} do not go together; pick one")
    if args.resolve and not (args.cfg or args.help):
        raise UsageError(f"{prog}: --resolve only goes with --cfg or --help")

    # -cp/-cn/-cd and reruns change which configs Hydra sees: leave those to Hydra.
    expert = any((args.config_path, args.config_name, args.config_dir, args.experimental_rerun))
    show_only = any(getattr(args, flag) for flag in _SHOW_ONLY)
    overrides = _parse_overrides(name, args.overrides)
    if not (expert or args.hydra_help or args.shell_completion):
        check_config(
            name, conf_dir, overrides, multirun=args.multirun, check_missing=not show_only
        )

    target = SUBCOMMANDS[name].target
    job: Callable[[DictConfig], int | None] | None = None
    if not show_only:
        if target is None:
            if not expert:
                print(_not_built(name), file=sys.stderr)
                return EXIT_USAGE
        else:
            job = load_target(target)

    if args.help:  # put the one-line summary at the top of Hydra's help page
        header = f"{prog}: {SUBCOMMANDS[name].summary}\n".replace('"', "'")
        argv = [f'hydra.help.header="{header}"', *argv]
    out_swept = any(o.is_sweep_override() and o.key_or_group == "out" for o in overrides)
    return _run_hydra(name, conf_dir, argv, job, out_swept=out_swept)


def load_target(target: str) -> Callable[[DictConfig], int | None]:
    """Import ``"package.module:function"`` and return the function."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _not_built(name: str) -> str:
    return (
        f"{PROG} {name}: not built yet (planned: {SUBCOMMANDS[name].summary}). "
        "Nothing was run."
    )


def check_config(
    name: str,
    conf_dir: Path,
    parsed: list[Override],
    *,
    multirun: bool = False,
    check_missing: bool = True,
) -> None:
    """Compose ``conf/<name>.yaml`` with the parsed overrides as Hydra would.

    Raises UsageError naming the problem: an unknown key or config option, a sweep
    without ``-m``, or (when ``check_missing``) a required ``???`` value not given.

    For a multirun, the first job of the sweep is checked (the first value of each
    swept key). Sweeps that cannot be listed (``interval(...)`` for optimizing
    sweepers) are left to Hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [o.input_line for o in parsed]
    if multirun:
        first = _first_job(parsed)
        if first is None:
            return
        overrides = first
    error: Exception | None = None
    with initialize_config_dir(config_dir=str(conf_dir), version_base=VERSION_BASE, job_name=name):
        try:
            cfg = compose(config_name=name, overrides=overrides)
        except (HydraException, OmegaConfBaseException, ValueError) as err:
            error = err
    if error is not None:  # described outside the `with`: the description composes again
        raise UsageError(f"{PROG} {name}: {_describe_composition(name, error)}") from error
    if check_missing:
        _raise_if_missing(name, cfg)
    if multirun:
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        _check_sweep_dir(name, conf_dir, fixed)


def _check_sweep_dir(name: str, conf_dir: Path, fixed_overrides: list[str]) -> None:
    """Hydra places a sweep before applying swept values: its folder must not need them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    with initialize_config_dir(config_dir=str(conf_dir), version_base=VERSION_BASE, job_name=name):
        cfg = compose(config_name=name, overrides=fixed_overrides, return_hydra_config=True)
        task_cfg = compose(config_name=name, overrides=fixed_overrides)
    try:
        str(cfg.hydra.sweep.dir)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as err:
        raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["dir"]
        needs = missing_keys(task_cfg)
        raise UsageError(
            f"{PROG} {name}: the sweep folder hydra.sweep.dir={raw} needs "
            f"{', '.join(repr(k) for k in needs)}, which only the swept jobs set: "
            "pass a fixed value or hydra.sweep.dir=DIR"
        ) from err


def _parse_overrides(name: str, overrides: list[str]) -> list[Override]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as err:
            raise UsageError(
                f"{PROG} {name}: cannot parse override '{text}': {_parse_reason(err.message)} "
                "(expected key=value, +key=value or ~key)"
            ) from err
        if not parsed[-1].key_or_group:
            raise UsageError(f"{PROG} {name}: cannot parse override '{text}': the key is empty")
    return parsed


def _parse_reason(message: str) -> str:
    lines = [line.strip() for line in (message or "").splitlines()]
    noise = ("Error parsing override", "See https://")
    lines = [line for line in lines if line.strip("^") and not line.startswith(noise)]
    if not lines:
        return "syntax error"
    if lines[0].startswith("LexerNoViableAltException"):
        return "unexpected character (quote values that hold spaces or symbols)"
    return lines[0]


def _first_job(parsed: list[Override]) -> list[str] | None:
    overrides = []
    for override in parsed:
        if not override.is_sweep_override():
            overrides.append(override.input_line)
            continue
        try:
            first = next(iter(override.sweep_string_iterator()))
        except Exception:  # glob() needs Hydra's loader, interval() cannot be listed
            return None
        overrides.append(f"{override.get_key_element()}={first}")
    return overrides


def _describe_composition(name: str, err: Exception) -> str:
    from hydra.errors import MissingConfigException

    if isinstance(err, MissingConfigException):
        return _describe_missing_config(err)
    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if key and "Could not override" in str(err):
        hint = _close_key(name, key)
        did_you_mean = f"did you mean '{hint}'? " if hint else ""
        return f"unknown key '{key}' ({did_you_mean}use +{key}=VALUE to add a new key)"
    text = str(err)
    if text.startswith("Ambiguous value for argument"):
        arg = text.splitlines()[0].removeprefix("Ambiguous value for argument ")
        return (
            f"ambiguous value in {arg}: add -m to sweep over it, "
            "write key=[a,b] for a list or key='a,b' for a string"
        )
    return " ".join(text.split())


def _describe_missing_config(err: Exception) -> str:
    lines = str(err).split("\nConfig search path")[0].splitlines()
    options = [line.strip() for line in lines if line.startswith("\t")]
    text = lines[0].strip()
    text = text.split(": ", 1)[1] if text.startswith("In '") else text
    if options:
        text += f" (available: {', '.join(options)})"
    return text


def _close_key(name: str, key: str) -> str | None:
    """The existing config key nearest to ``key``, for a did-you-mean hint."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(
            config_dir=str(find_conf_dir()), version_base=VERSION_BASE, job_name=name
        ):
            keys = [key for key, _ in _flat_items(compose(config_name=name))]
    except Exception:
        return None
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return close[0] if close else None


def _flat_items(cfg: Any) -> list[tuple[str, Any]]:
    """(dotted key, unresolved value) of every node and leaf, in config order."""
    from omegaconf import OmegaConf

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            path = f"{prefix}{key}"
            yield path, value
            if isinstance(value, (dict, list)):
                yield from walk(value, f"{path}.")

    return list(walk(OmegaConf.to_container(cfg, resolve=False), ""))


def missing_keys(cfg: Any) -> list[str]:
    """Keys whose value is ``???``, in config order, without resolving anything.

    (``OmegaConf.missing_keys`` resolves interpolations on the way and fails on
    ``out: ${run}/eval`` while ``run`` is still missing.)
    """
    return [key for key, value in _flat_items(cfg) if value == "???"]


def _raise_if_missing(name: str, cfg: DictConfig) -> None:
    keys = missing_keys(cfg)
    if not keys:
        return
    plural = "s" if len(keys) > 1 else ""
    quoted = ", ".join(f"'{k}'" for k in keys)
    example = " ".join(f"{k}=VALUE" for k in keys)
    raise UsageError(f"{PROG} {name}: missing required key{plural} {quoted}: pass {example}")


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

    def task(cfg: DictConfig) -> None:
        statuses.append(_run_job(name, job, cfg, out_swept=out_swept))

    app = hydra.main(config_path=str(conf_dir), config_name=name, version_base=VERSION_BASE)(task)
    saved, sys.argv = sys.argv, [f"{PROG} {name}", *argv]  # hydra.main parses sys.argv
    try:
        app()
    finally:
        sys.argv = saved
    return next((s for s in statuses if s != 0), 0)


def _run_job(
    name: str,
    job: Callable[[DictConfig], int | None] | None,
    cfg: DictConfig,
    *,
    out_swept: bool = False,
) -> int:
    """One Hydra job: check the config, point a sweep job's `out` at its folder, run.

    In a multirun every job gets its own folder, ``<sweep dir>/<job number>``, and its
    ``out`` is set to that folder, unless the sweep itself sets ``out``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    try:
        _raise_if_missing(name, cfg)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except UsageError as err:
        print(err, file=sys.stderr)
        sys.exit(EXIT_USAGE)  # SystemExit passes through Hydra's error reporting
    except OmegaConfBaseException as err:
        print(f"{PROG} {name}: cannot resolve the config: {' '.join(str(err).split())}",
              file=sys.stderr)
        sys.exit(EXIT_USAGE)

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and "out" in cfg and not out_swept:
        with open_dict(cfg):
            cfg.out = hydra_cfg.runtime.output_dir

    if job is None:  # only reached with -cp/-cn/-cd, which skip the early check
        print(_not_built(name), file=sys.stderr)
        sys.exit(EXIT_USAGE)
    status = job(cfg)
    return 0 if status is None else int(status)

"""The check of an ``avatar SUBCOMMAND`` command line before Hydra runs anything.

:func:`check_config` composes ``conf/<subcommand>.yaml`` with the overrides as Hydra will,
and turns every problem into a :class:`~avatar.errors.UsageError` whose message is the one
line to print (exit 2): an override that does not parse, an unknown key or group option, a
value of the wrong type or out of range (:mod:`avatar.apps.schema`), a sweep without ``-m``
or one whose folder needs a swept value, a required ``???`` value not given. Nothing is
written: the output folder does not exist yet when these errors are found.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import UsageError
from . import schema

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from omegaconf import DictConfig

PROG = "avatar"
VERSION_BASE = "1.3"


def check_config(
    name: str,
    conf_dir: Path,
    parsed: list[Override],
    *,
    multirun: bool = False,
    check_missing: bool = True,
) -> tuple[DictConfig, dict[str, str]]:
    """Compose ``conf/<name>.yaml`` with the parsed overrides as Hydra would.

    Raises UsageError naming the problem: an unknown key or config option, a value of the
    wrong type or out of range (:func:`avatar.apps.schema.check`), a sweep without ``-m``,
    or (when ``check_missing``) a required ``???`` value not given. Returns the composed
    config (task keys only) and the config groups' choices.

    For a multirun, the first job of the sweep is checked (the first value of each
    swept key). Sweeps that cannot be listed (``interval(...)`` for optimizing
    sweepers) are checked without the swept keys.
    """
    from omegaconf import OmegaConf, open_dict

    overrides = [o.input_line for o in parsed]
    if multirun:
        first = _first_job(parsed)
        overrides = first if first is not None else [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = _compose(name, conf_dir, overrides)
    choices = {k: v for k, v in OmegaConf.to_container(cfg.hydra.runtime.choices).items() if "/" not in k}
    defaults = _compose(name, conf_dir, []) if overrides else cfg
    for composed in (cfg, defaults):
        with open_dict(composed):
            composed.pop("hydra", None)
    try:
        schema.check(name, cfg, defaults)
    except UsageError as err:
        raise UsageError(f"{PROG} {name}: {err}") from None
    if check_missing:
        raise_if_missing(name, cfg)
    if multirun:
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        _check_sweep_dir(name, conf_dir, fixed)
    return cfg, choices


def _compose(name: str, conf_dir: Path, overrides: list[str]) -> DictConfig:
    """``conf/<name>.yaml`` composed with ``overrides`` (and the hydra node); UsageError if it fails."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    error: Exception | None = None
    with initialize_config_dir(config_dir=str(conf_dir), version_base=VERSION_BASE, job_name=name):
        try:
            cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException, ValueError) as err:
            error = err
    if error is not None:  # described outside the `with`: the description composes again
        raise UsageError(f"{PROG} {name}: {_describe_composition(name, conf_dir, error)}") from error
    return cfg


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


# ``key=`` of a plain override (``+key=``, ``++key=``, ``~key=``; dotted keys, group paths).
_PLAIN_KEY = re.compile(r"^(\+{1,2}|~)?[A-Za-z_][\w.\-/@]*=")


def quote_values(overrides: list[str]) -> list[str]:
    """``overrides`` with each value Hydra's grammar cannot read unquoted put in single quotes:
    a path with letters beyond ASCII (``out=/home/zoë/run``), brackets (``drive=clip (1).mp4``),
    ``&``, ``#`` or ``!``. Only a ``key=value`` that does not parse as given and parses quoted is
    changed, and never one that looks like Hydra syntax (a list, dict, sweep, interpolation or a
    value already quoted), so a valid command line means what it meant before."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()

    def parses(text: str) -> bool:
        try:
            parser.parse_overrides([text])
        except OverrideParseException:
            return False
        return True

    out = []
    for text in overrides:
        match = _PLAIN_KEY.match(text)
        value = text[match.end():] if match else ""
        if (match and value and value[0] not in "[{'\"" and "," not in value and "${" not in value
                and not parses(text)):
            # Inside quotes Hydra reads a backslash as itself except before a quote (or the end).
            escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
            quoted = text[:match.end()] + "'" + escaped + "'"
            if parses(quoted):
                text = quoted
        out.append(text)
    return out


def parse_overrides(name: str, overrides: list[str]) -> list[Override]:
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


def _describe_composition(name: str, conf_dir: Path, err: Exception) -> str:
    from hydra.errors import MissingConfigException

    if isinstance(err, MissingConfigException):
        return _describe_missing_config(err)
    from omegaconf.errors import ValidationError

    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if key and "Could not override" in str(err):
        hint = _close_key(name, conf_dir, key)
        did_you_mean = f"did you mean '{hint}'? " if hint else ""
        return f"unknown key '{key}' ({did_you_mean}use +{key}=VALUE to add a new key)"
    if key and isinstance(cause, ValidationError):  # a value the dataclass's type refuses
        given = str(err).removeprefix("Error merging override ").strip()
        where = given if "=" in given else key
        return f"{where}: expected {schema.expected(name, key)}"
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


def _close_key(name: str, conf_dir: Path, key: str) -> str | None:
    """The existing config key nearest to ``key``, for a did-you-mean hint."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(
            config_dir=str(conf_dir), version_base=VERSION_BASE, job_name=name
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


def raise_if_missing(name: str, cfg: DictConfig) -> None:
    keys = missing_keys(cfg)
    if not keys:
        return
    plural = "s" if len(keys) > 1 else ""
    quoted = ", ".join(f"'{k}'" for k in keys)
    example = " ".join(f"{k}=VALUE" for k in keys)
    raise UsageError(f"{PROG} {name}: missing required key{plural} {quoted}: pass {example}")

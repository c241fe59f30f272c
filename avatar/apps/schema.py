"""The typed schema of each subcommand's config: dataclasses, and rules for the other keys.

Defaults live in the dataclasses: a config node that a dataclass describes (``train`` is
:class:`avatar.train.config.TrainConfig`) gets its keys, types and default values from
it. :func:`register` puts those dataclasses into Hydra's ConfigStore under their class
names, and the subcommand's YAML places them with a defaults-list entry
(``- TrainConfig@train``), so the YAML only picks groups and sets what differs on purpose.
Hydra then refuses a value of the wrong type for those keys while composing.

Keys that no dataclass describes (``capture``, ``out``, ``max_frames`` of render ...)
keep their default, type and comment in the YAML: a value there must have its default's
type (int, float or bool; strings and nulls say nothing), unless :data:`RULES` says
more. :data:`RULES` also holds ranges and choices that a type alone lets through
(``train.iterations=-5``, ``train.holdout=1.5``); :data:`NAMED_RANGES` gives the dataclass
fields it does not name a range from their names (counts of steps >= 0, strides >= 1,
learning rates and weights >= 0). :func:`check` applies both, and builds
each dataclass once so that its own ``__post_init__`` checks run before any work.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..gaussians.config import DEFORM_MODELS
from ..gaussians.registry import AVATAR_KINDS

# Subcommand -> {config path: "module:Class"} of the dataclasses its config nodes follow.
SCHEMAS: dict[str, dict[str, str]] = {
    "preprocess": {"preprocess": "avatar.preprocess:PreprocessConfig"},
    "track": {"track": "avatar.apps.track:TrackOptions"},
    "train": {"train": "avatar.train.config:TrainConfig"},
    "view": {"view": "avatar.view.config:ViewConfig"},
    "demo": {"pipeline.train": "avatar.train.config:TrainConfig"},  # the demo trains with train's config
}


@dataclass(frozen=True)
class Rule:
    """What a value may be beyond its type. Bounds are inclusive unless ``open_high``."""

    kind: str | None = None  # "int", "number", "bool", "text" or "int|text"; None: the schema's type
    null: bool = False  # null is allowed too
    low: float | None = None
    high: float | None = None
    open_high: bool = False  # the value must stay below ``high``
    choices: tuple[str, ...] = ()  # the strings allowed ("text"), or also allowed ("int": e.g. auto)

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.null
        if isinstance(value, str) and value in self.choices:
            return True
        if not _is_kind(value, self.kind):
            return False
        if self.kind == "text" and self.choices:
            return str(value) in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        above = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return (self.low is None or value >= self.low) and above

    def describe(self, schema_type: str | None = None) -> str:
        """``an integer >= 1 or null``, ``a number in [0, 1)``, ``one of tracked, fixed, orbit``."""
        if self.kind == "text" and self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            text = _KIND_WORDS.get(self.kind or "", schema_type or "a value")
            if self.low is not None and self.high is not None:
                text += f" in [{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
            elif self.low is not None:
                text += f" >= {self.low:g}"
            elif self.high is not None:
                text += f" {'<' if self.open_high else '<='} {self.high:g}"
            if self.choices:
                text += ", " + ", ".join(self.choices)
        return text + (" or null" if self.null else "")


_KIND_WORDS = {"int": "an integer", "number": "a number", "bool": "true or false", "text": "a string",
               "int|text": "an integer or a string"}


def _is_kind(value: Any, kind: str | None) -> bool:
    if kind is None:
        return True
    if isinstance(value, bool):
        return kind == "bool"
    return {
        "int": isinstance(value, int),
        "number": isinstance(value, (int, float)),
        "bool": False,
        "text": isinstance(value, (str, int, float)),  # `out=2024` is a folder name too
        "int|text": isinstance(value, (int, str)),
    }[kind]


def integer(low: float | None = None, high: float | None = None, *, null: bool = False,
            choices: tuple[str, ...] = ()) -> Rule:
    return Rule("int", null, low, high, choices=choices)


def number(low: float | None = None, high: float | None = None, *, null: bool = False,
           open_high: bool = False) -> Rule:
    return Rule("number", null, low, high, open_high)


def text(*choices: str, null: bool = False) -> Rule:
    return Rule("text", null, choices=choices)


_RENDERER = {
    "renderer.backend": text("auto", "torch", "gsplat"),
    "renderer.tile_size": integer(1, null=True),
    "renderer.eps2d": number(0),
    "renderer.near_plane": number(0),
}
_DRIVING = {
    "size": integer(16, null=True),
    "max_frames": integer(1, null=True),
    "retarget.gain": number(1e-6, null=True),
    "retarget.closure_gain_max": number(1e-6),
    "smoothing.min_cutoff": number(0, null=True),
    "smoothing.beta": number(0),
}
RULES: dict[str, dict[str, Rule]] = {
    "preprocess": {"input": text(), "out": text(), "preprocess.max_frames": integer(1, null=True),
                   "preprocess.resolution": integer(16)},
    "track": {"capture": text(), "out": text(), "model": text()},
    "train": {
        **_RENDERER,
        "model": text(null=True),
        "train.iterations": integer(0),
        "train.resolution": integer(16, null=True),
        "train.holdout": number(0, 1, open_high=True),
        "train.mask": text("head", "person"),
        "train.neck_below_chin": number(0, null=True),
        "train.gaussians.sh_degree": integer(0, 3),
        "train.gaussians.sh_frame": text("head", "world"),
        "train.gaussians.kind": text(*AVATAR_KINDS),
        "train.gaussians.deform_model": text(*DEFORM_MODELS),
        "train.gaussians.uv_resolution": number(1e-6),
        "train.gaussians.init_color_frames": integer(0),
        "train.gaussians.neck_blend": number(0),
        "train.densify.max_gaussians": integer(1),
        "train.viewer_every": integer(1),
        "train.viewer_port": integer(0, 65535),
        "train.viewer_mode": text("image", "splats"),
        "train.viewer_max_side": integer(16),
        "train.viewer_plot_seconds": number(0.1),
    },
    "render": {
        **_RENDERER, **_DRIVING,
        "camera": text("tracked", "fixed", "orbit"),
        "layout": text("avatar", "side_by_side"),
        "max_gaussians": integer(1, null=True),
        "neutral_frame": integer(0, null=True),
        "fps": number(1e-6, null=True),
    },
    "live": {
        **_RENDERER, **_DRIVING,
        "source": Rule("int|text"),
        "out": text(null=True),
        "max_gaussians": integer(1, null=True, choices=("auto",)),
        "pose_every": integer(1),
        "schedule": text("overlap", "sequential"),
        "render_threads": integer(1, choices=("auto",)),
        "body_warp_downscale": integer(1),
        "deformer_dtype": text("auto", "float32", "bfloat16"),
    },
    "eval": {**_RENDERER, "pose_steps": integer(0, null=True), "pose_downscale": integer(1)},
    "export": {**_DRIVING, "drive": text(null=True), "frame": integer(0, null=True),
               "neutral_frame": integer(0, null=True)},
    "view": {"run": text(), "drive": text(null=True), "neutral_frame": integer(0, null=True),
             "retarget.gain": number(1e-6, null=True), "retarget.closure_gain_max": number(1e-6),
             "smoothing.min_cutoff": number(0, null=True),
             "smoothing.beta": number(0), "view.port": integer(0, 65535), "view.fps": number(1e-6, null=True),
             "view.max_gaussians": integer(1, null=True), "view.seconds": number(0, null=True),
             "view.deformer_dtype": text("auto", "float32", "bfloat16")},
    "demo": {**_RENDERER, "mode": text("auto", "pipeline", "orbit")},
}
# The demo's training (pipeline.train) follows avatar train's rules.
RULES["demo"].update({f"pipeline.{key}": rule for key, rule in RULES["train"].items() if key.startswith("train.")})


# Ranges that a dataclass field's name implies, for the fields no RULES entry names (the
# last part of the key, as a regular expression; first match wins): counts of steps are not
# negative, strides and sizes are at least 1, learning rates and weights not negative.
NAMED_RANGES: tuple[tuple[str, Rule], ...] = (
    (r"(refine|sh_increase|weights|visibility)_every", integer(1)),  # a step modulo them
    (r"(.*_)?(iterations|steps|every|start|stop|steps_left)|seed|vertices", integer(0)),
    (r".*(stride|downscale|resolution|_hidden|_layers|_frequencies)|max_gaussians|max_faces|max_frames", integer(1)),
    (r"jpeg_quality", integer(0, 100)),
    (r"fov_deg", number(1e-6, 180, open_high=True)),
    (r"focal|.*_fps", number(1e-6)),
    (r"(lr|w)_.*|.*_(weight|prior|threshold|factor|smoothing)|min_face_size|robust_px|init_opacity", number(0)),
)


def named_range(name: str, key: str) -> Rule | None:
    """The :data:`NAMED_RANGES` rule of the int or float dataclass field ``key`` of subcommand
    ``name`` (e.g. ``track.fit.full_iterations``), null allowed when the field is optional;
    None for a key no pattern matches or that is no such field."""
    found = dataclass_at(name, key)
    if found is None:
        return None
    args = typing.get_args(_field_types(found[0])[found[1]]) or (_field_types(found[0])[found[1]],)
    if not any(a in (int, float) for a in args):
        return None
    leaf = key.rsplit(".", 1)[-1]
    rule = next((rule for pattern, rule in NAMED_RANGES if re.fullmatch(pattern, leaf)), None)
    return None if rule is None else dataclasses.replace(rule, null=type(None) in args)


def schema_classes(name: str) -> dict[str, type]:
    """{config path: dataclass} of subcommand ``name`` (imports their modules)."""
    classes = {}
    for path, target in SCHEMAS.get(name, {}).items():
        module_name, _, attr = target.partition(":")
        classes[path] = getattr(importlib.import_module(module_name), attr)
    return classes


def register(name: str) -> None:
    """Store subcommand ``name``'s dataclasses in Hydra's ConfigStore under their class names
    (the YAML's defaults list places them: ``- TrainConfig@train``)."""
    from hydra.core.config_store import ConfigStore  # noqa: PLC0415

    store = ConfigStore.instance()
    for cls in schema_classes(name).values():
        store.store(name=cls.__name__, node=cls)


def dataclass_at(name: str, key: str) -> tuple[type, str] | None:
    """(dataclass, field name) that describes ``key`` (e.g. ``train.gaussians.sh_degree``)."""
    for path, cls in schema_classes(name).items():
        if key.startswith(path + "."):
            *nodes, leaf = key[len(path) + 1:].split(".")
            for node in nodes:
                cls = _field_types(cls).get(node)
                if not dataclasses.is_dataclass(cls):
                    return None
            return (cls, leaf) if leaf in _field_types(cls) else None
    return None


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def describe_type(annotation: Any) -> str:
    """``int | None`` -> ``an integer or null``; ``tuple[float, float, float]`` -> ``a list of 3 numbers``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        words = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or null" if type(None) in args else "")
    if origin in (tuple, list):
        items = [a for a in args if a is not Ellipsis]
        item = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(items[0] if items else None,
                                                                                         "values")
        count = f"{len(args)} " if args and Ellipsis not in args and len(set(args)) == 1 else ""
        return f"a list of {count}{item}"
    if annotation is dict or origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def expected(name: str, key: str) -> str:
    """What ``key`` of subcommand ``name`` takes, in words (its rule, else its dataclass type)."""
    key = key.split("[", 1)[0]  # train.background[0] -> train.background
    found = dataclass_at(name, key)
    schema_type = describe_type(_field_types(found[0])[found[1]]) if found else None
    rule = RULES.get(name, {}).get(key) or named_range(name, key)
    if rule is not None:
        return rule.describe(schema_type)
    return schema_type or "a value of another type"


def check(name: str, cfg: Any, defaults: Any) -> None:
    """Raise UsageError naming the first key of ``cfg`` whose value breaks its rule or the
    type of its default in ``defaults``; then build each dataclass node (its own checks)."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    under_schema = tuple(f"{path}." for path in SCHEMAS.get(name, {}))
    inferred = {}
    for key, default in _leaves(defaults):
        kind = _inferred_kind(default)
        if kind is not None and key not in RULES.get(name, {}) and not key.startswith(under_schema):
            inferred[key] = Rule(kind)
    named = {key: rule for key, _ in _leaves(cfg) if key.startswith(under_schema) and key not in RULES.get(name, {})
             and (rule := named_range(name, key)) is not None}
    for key, rule in {**RULES.get(name, {}), **inferred, **named}.items():
        found, value = _value(cfg, key)
        if found and not rule.accepts(value):
            wanted = rule.describe() if key in inferred else expected(name, key)
            raise UsageError(f"{key}={_show(value)}: expected {wanted}")
    for path, cls in schema_classes(name).items():
        node = OmegaConf.select(cfg, path)
        if node is not None:
            _build(name, path, cls, node)


def _build(name: str, path: str, cls: type, node: Any) -> None:
    """Build dataclass ``cls`` from config ``node`` at ``path``; UsageError for a key it has no
    field for (``+train.colour=1`` composes) or a value its ``__post_init__`` refuses."""
    from omegaconf import OmegaConf  # noqa: PLC0415
    from omegaconf.errors import OmegaConfBaseException  # noqa: PLC0415

    for key, owner in _unknown_keys(OmegaConf.to_container(node, resolve=False), cls, f"{path}."):
        parent, leaf = key.rsplit(".", 1)
        close = difflib.get_close_matches(leaf, list(_field_types(owner)), n=1, cutoff=0.6)
        hint = f"did you mean '{parent}.{close[0]}'? " if close else ""
        raise UsageError(f"unknown key '{key}': {owner.__module__}.{owner.__qualname__} has no such field "
                         f"({hint}see avatar {name} --help)")
    try:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node))
    except OmegaConfBaseException as err:
        key = f"{path}.{err.full_key}" if getattr(err, "full_key", "") else path
        raise UsageError(f"{key}: {str(err).splitlines()[0]}") from err
    except (ValueError, TypeError) as err:
        raise UsageError(" ".join(str(err).split())) from err


def _unknown_keys(tree: dict, cls: type, prefix: str) -> list[tuple[str, type]]:
    """(dotted key, dataclass) of the keys in ``tree`` that dataclass ``cls`` has no field for."""
    hints = _field_types(cls)
    unknown = []
    for key, value in tree.items():
        if key not in hints:
            unknown.append((f"{prefix}{key}", cls))
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            unknown += _unknown_keys(value, hints[key], f"{prefix}{key}.")
    return unknown


def _inferred_kind(default: Any) -> str | None:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "number"
    return None


def _leaves(cfg: Any) -> list[tuple[str, Any]]:
    """(dotted key, unresolved value) of every leaf that is not a list or a mapping."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    def walk(node: dict, prefix: str):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            elif not isinstance(value, list):
                yield f"{prefix}{key}", value

    return list(walk(OmegaConf.to_container(cfg, resolve=False), ""))


def _value(cfg: Any, key: str) -> tuple[bool, Any]:
    """(found, resolved value) of ``key``; not found when absent, ``???`` or unresolvable."""
    from omegaconf import OmegaConf  # noqa: PLC0415
    from omegaconf.errors import OmegaConfBaseException  # noqa: PLC0415

    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True, default=_ABSENT)
    except (OmegaConfBaseException, ValueError):
        return False, None
    if value is _ABSENT or OmegaConf.is_config(value):
        return False, None
    return True, value


_ABSENT = object()


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

"""``avatar SUBCOMMAND --help``: every config key with its value and one-line doc, grouped.

The docs come from where each key is defined: the trailing ``# comment`` of a dataclass
field (or the comment block right above a field that has none), else the comment beside
the key in ``conf/`` (continued on comment-only lines below it).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import shutil
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any

from . import schema

PROG = "avatar"


def field_docs(cls: type) -> dict[str, str]:
    """{field: doc} of a dataclass (and the dataclasses it derives from), read from its source."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base) and base is not object:
            try:
                docs.update(_own_field_docs(base))
            except (OSError, TypeError):  # no source (a frozen install): no docs
                pass
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    source = textwrap.dedent(inspect.getsource(cls))
    (node,) = ast.parse(source).body
    fields = [(s.target.id, s.lineno, s.end_lineno) for s in node.body
              if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    trailing: dict[int, str] = {}
    alone: dict[int, str] = {}  # comment-only lines
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            before = tok.line[: tok.start[1]]
            (alone if not before.strip() else trailing)[tok.start[0]] = text
    docs: dict[str, str] = {}
    previous: tuple[str, int] | None = None  # (name, end line) of the field before, if it has a trailing comment
    for name, start, end in fields:
        own = next((trailing[row] for row in range(start, end + 1) if row in trailing), None)
        block = _block_above(alone, start)
        if own is not None:
            docs[name] = own
            if block and previous is not None and block[0] == previous[1] + 1:
                docs[previous[0]] += " " + " ".join(block[1])  # the comment of the field before goes on
        elif block:
            docs[name] = " ".join(block[1])  # the block right above documents the field
        previous = (name, end) if own is not None else None
    return docs


def _block_above(alone: dict[int, str], row: int) -> tuple[int, list[str]] | None:
    """(first row, lines) of the comment-only lines right above ``row``."""
    lines = []
    while row - 1 in alone:
        row -= 1
        lines.insert(0, alone[row])
    return (row, lines) if lines else None


_KEY = re.compile(r"^(\s*)([\w.\-]+):(.*)$")


def yaml_docs(path: Path, prefix: str = "") -> tuple[list[str], dict[str, str]]:
    """(header comment lines, {dotted key: doc}) of a conf/ YAML file; keys get ``prefix``."""
    header: list[str] = []
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    last: tuple[str, int] | None = None  # (key, comment column) a comment-only line may continue
    in_header = True
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if in_header and not text.startswith("@package"):
                header.append(text)
            elif last is not None and line.index("#") == last[1]:
                docs[last[0]] += " " + text
            continue
        in_header = False
        match = _KEY.match(line)
        if not match:
            last = None
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = prefix + ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        column = _comment_column(rest)
        last = None
        if column is not None:
            docs[dotted] = rest[column:].lstrip("#").strip()
            last = (dotted, len(line) - len(rest) + column)
    return header, {k: v for k, v in docs.items() if not k.startswith(("defaults", "hydra"))}


def _comment_column(text: str) -> int | None:
    """Where a ``#`` comment starts in a YAML value (outside quotes), or None."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return i
    return None


def group_package(conf_dir: Path, group: str, option: str) -> str:
    """The package a group option fills: its ``# @package`` header, else the group's name."""
    path = conf_dir / group / f"{option}.yaml"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("# @package"):
                return line.split(None, 2)[2].strip()
    return group


def page(name: str, summary: str, conf_dir: Path, cfg: Any, choices: dict[str, str]) -> str:
    """The help page of subcommand ``name`` for the composed ``cfg`` (task keys only) and the
    group ``choices`` it was composed with."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    header, docs = yaml_docs(conf_dir / f"{name}.yaml")
    groups = {g: o for g, o in choices.items() if o and (conf_dir / g).is_dir()}
    titles: dict[str, str] = {}
    for group, option in groups.items():
        package = group_package(conf_dir, group, option)
        titles[package] = f"{group}={option}"
        for path in sorted((conf_dir / group).glob("*.yaml"), key=lambda p: p.stem != option):
            for key, doc in yaml_docs(path, f"{package}.")[1].items():
                docs.setdefault(key, doc)
    for path, cls in schema.schema_classes(name).items():
        docs.update(_dataclass_docs(cls, f"{path}."))
        titles[path] = _join(titles.get(path), f"{cls.__module__}.{cls.__qualname__}")
        for sub, sub_cls in _nested_dataclasses(cls, f"{path}."):
            titles[sub] = _join(titles.get(sub), f"{sub_cls.__module__}.{sub_cls.__qualname__}")

    lines = [f"{PROG} {name}: {summary}", ""]
    if header and header[0].startswith(f"{PROG} {name}"):
        lines.append(f"usage: {header[0]} [KEY=VALUE ...]")
        header = header[1:]
    lines += header
    if groups:
        lines += ["", "groups (GROUP=OPTION, * the one in use):"]
        width = max(len(g) for g in groups)
        for group, option in groups.items():
            options = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
            listed = ", ".join(f"{o}*" if o == option else o for o in options)
            lines.append(f"  {group:<{width}}  {listed}")
    for section, rows in _sections(name, OmegaConf.to_container(cfg, resolve=False)).items():
        title = "keys (KEY=VALUE, ??? must be given)" if not section else section
        about = [t for t in (titles.get(section), docs.get(section)) if t]
        if about:
            title += f"  ({'; '.join(about)})"
        lines += ["", f"{title}:", *_rows(rows, docs)]
    more = {f"{PROG} {name} --cfg job": "the composed config as YAML (with your overrides)",
            f"{PROG} {name} --hydra-help": "Hydra's own options: sweeps (-m), --info, launchers",
            f"{PROG} --help": "all subcommands, shell completion, exit statuses"}
    width = max(len(k) for k in more)
    lines += ["", *(f"  {k:<{width}}  {v}" for k, v in more.items())]
    return "\n".join(lines)


def _join(first: str | None, second: str) -> str:
    return second if first is None else f"{first}; {second}"


def _dataclass_docs(cls: type, prefix: str) -> dict[str, str]:
    docs = {prefix + k: v for k, v in field_docs(cls).items()}
    for sub, sub_cls in _nested_dataclasses(cls, prefix):
        docs.update({f"{sub}.{k}": v for k, v in field_docs(sub_cls).items()})
    return docs


def _nested_dataclasses(cls: type, prefix: str) -> list[tuple[str, type]]:
    """(dotted path, class) of the dataclass-typed fields of ``cls``, recursively."""
    found = []
    for field, annotation in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(annotation):
            found.append((prefix + field, annotation))
            found += _nested_dataclasses(annotation, f"{prefix}{field}.")
    return found


def _sections(name: str, tree: dict) -> dict[str, list[tuple[str, Any]]]:
    """{section path ("" for the top level): [(dotted key, value)]}, in config order."""
    sections: dict[str, list[tuple[str, Any]]] = {}

    def walk(node: dict, path: str) -> None:
        rows = sections.setdefault(path, [])
        for key, value in node.items():
            dotted = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict) and value and not _is_mapping_value(name, dotted):
                walk(value, dotted)
            else:
                rows.append((dotted, value))

    walk(tree, "")
    return {path: rows for path, rows in sections.items() if rows}


def _is_mapping_value(name: str, key: str) -> bool:
    """A dataclass field typed as a plain dict: one value, not a group of keys."""
    found = schema.dataclass_at(name, key)
    return found is not None and not dataclasses.is_dataclass(typing.get_type_hints(found[0])[found[1]])


def _rows(rows: list[tuple[str, Any]], docs: dict[str, str]) -> list[str]:
    key_width = min(max(len(k) for k, _ in rows), 34)
    shown = [(k, _show(v), docs.get(k, "")) for k, v in rows]
    value_width = min(max(len(v) for _, v, _ in shown), 16)
    total = max(shutil.get_terminal_size((100, 24)).columns, 60)
    lines = []
    for key, value, doc in shown:
        start = f"  {key:<{key_width}}  {value:<{value_width}}"
        if not doc:
            lines.append(start.rstrip())
            continue
        indent = " " * min(len(start) + 2, 2 + key_width + 2 + value_width + 2)
        wrapped = textwrap.wrap(doc, width=max(total - len(indent), 30)) or [""]
        lines.append(f"{start}  {wrapped[0]}")
        lines += [indent + more for more in wrapped[1:]]
    return lines


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)

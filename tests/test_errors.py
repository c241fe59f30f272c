"""avatar.errors: the one table from the toolkit's error types to exit statuses and stderr lines."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from avatar import errors

PACKAGE = Path(__file__).resolve().parent.parent / "avatar"


def _error_classes() -> list[str]:
    """"module:Class" of every ``class SomethingError(...)`` defined in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and re.fullmatch(r"\w+Error", node.name):
                found.append(f"{module}:{node.name}")
    return found


def test_every_error_class_of_the_toolkit_has_its_exit_status() -> None:
    listed = set(errors.INPUT_ERRORS) | set(errors.USAGE_ERRORS)
    unlisted = [name for name in _error_classes() if name not in listed]
    assert not unlisted, f"add these to avatar.errors.INPUT_ERRORS or USAGE_ERRORS: {unlisted}"


@pytest.mark.parametrize("name", errors.INPUT_ERRORS + errors.USAGE_ERRORS)
def test_every_listed_error_exists(name: str) -> None:
    module, _, attr = name.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    assert issubclass(cls, Exception)


def test_statuses_and_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from avatar.train.session import RunError

    def fails(exc: BaseException):
        def main() -> None:
            raise exc
        return main

    assert errors.run("avatar x", fails(RunError("runs/a is not a trained run; run avatar train out=runs/a"))) == 1
    assert capsys.readouterr().err == "avatar x: runs/a is not a trained run; run avatar train out=runs/a\n"
    assert errors.run("avatar x", fails(FileNotFoundError(2, "No such file or directory", "cap/landmarks.npz"))) == 1
    assert capsys.readouterr().err == "avatar x: cap/landmarks.npz: no such file or directory\n"
    assert errors.run("avatar x", fails(errors.UsageError("avatar x: k=v: expected an integer"))) == 2
    assert capsys.readouterr().err == "avatar x: k=v: expected an integer\n"
    assert errors.run("avatar x", fails(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "avatar x: interrupted\n"
    with pytest.raises(RuntimeError):  # a bug is not an input error: its traceback is the report
        errors.run("avatar x", fails(RuntimeError("bug")))
    assert errors.run("avatar x", lambda: None) == 0 and errors.run("avatar x", lambda: 3) == 3


def test_every_app_goes_through_the_table() -> None:
    from avatar.cli import SUBCOMMANDS, load_target

    for sub in SUBCOMMANDS.values():
        main = load_target(sub.target)
        assert main.__module__.startswith("avatar.apps.") and hasattr(main, "__wrapped__"), sub.target

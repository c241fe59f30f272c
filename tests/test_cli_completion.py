"""Shell completion of `avatar`: the generated scripts, run in a real bash (and zsh when installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avatar import cli
from avatar.apps import completion

REPO_ROOT = Path(__file__).resolve().parent.parent


def _shell_env(tmp_path: Path) -> dict[str, str]:
    """An environment where `avatar` is this checkout's command (a wrapper first on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "avatar"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m avatar "$@"\n')
    wrapper.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO_ROOT),
                HOME=str(tmp_path), HYDRA_FULL_ERROR="0")


# Sets COMP_WORDS the way bash splits a line (its COMP_WORDBREAKS make `=` a word of its own).
_BASH_COMPLETE = r"""
eval "$(avatar train --shell-completion install=bash)"
complete -p avatar
complete_line() {
    COMP_LINE=$1
    COMP_POINT=${#COMP_LINE}
    COMP_WORDS=("${@:2}")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    _avatar_completion
    printf '<%s>' "${COMPREPLY[@]}"
    echo
}
complete_line "avatar tr" avatar tr
complete_line "avatar train train.iter" avatar train train.iter
complete_line "avatar train renderer=t" avatar train renderer = t
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_subcommands_keys_and_groups(tmp_path: Path) -> None:
    result = subprocess.run(["bash", "--norc", "-c", _BASH_COMPLETE], env=_shell_env(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    registered, subcommands, key, group = result.stdout.splitlines()
    assert registered == "complete -o default -o nospace -F _avatar_completion avatar"
    assert subcommands == "<track ><train >"
    assert key == "<train.iterations=>"
    assert group == "<torch>"  # bash replaces only its own word, the part after `=`
    assert list(tmp_path.iterdir()) == [tmp_path / "bin"]


_ZSH_COMPLETE = r"""
compdef() { print -r -- "compdef $*" }
compadd() { local a; for a in "$@"; do [[ $a == -* || -z $a ]] || print -rn -- "<$a>"; done; print }
eval "$(avatar train --shell-completion install=zsh)"
words=(avatar tr); CURRENT=2; _avatar
words=(avatar train train.iter); CURRENT=3; _avatar
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (apt-get install zsh)")
def test_zsh_completes_subcommands_and_keys(tmp_path: Path) -> None:
    # compadd and compdef are zsh's completion builtins: stand-ins print what they are given.
    result = subprocess.run(["zsh", "-f", "-c", _ZSH_COMPLETE], env=_shell_env(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    registered, subcommands, key = result.stdout.splitlines()
    assert registered == "compdef _avatar avatar"
    assert subcommands == "".join(f"<{name}>" for name in cli.SUBCOMMANDS)
    assert key == "<train.iterations=>"


def test_scripts_and_requests(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--shell-completion", "install=zsh"]) == 0
    zsh = capsys.readouterr().out
    assert "compdef _avatar avatar" in zsh and "--shell-completion query=zsh" in zsh
    assert cli.main(["demo", "--shell-completion", "uninstall=bash"]) == 0
    assert capsys.readouterr().out.strip() == completion.script("uninstall", "bash", [])
    assert cli.main(["demo", "--shell-completion", "install=fish"]) == 2
    assert "install=SHELL" in capsys.readouterr().err
    assert completion.query_line("train", "avatar train train.iter") == "avatar train.iter"
    assert completion.query_line("train", "/opt/bin/avatar  train ") == "/opt/bin/avatar  "

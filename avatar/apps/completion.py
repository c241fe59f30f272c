"""Shell completion of ``avatar``: subcommands, then each subcommand's config keys and groups.

    eval "$(avatar --shell-completion install=bash)"    # or: avatar train --shell-completion ...
    eval "$(avatar --shell-completion install=zsh)"

Hydra's own script registers the completion for the first word only and calls the program
back as ``avatar -sc query=bash``, which our ``avatar SUBCOMMAND`` wrapper cannot take. These
scripts complete the subcommand themselves, and for the words after it call
``avatar SUBCOMMAND --shell-completion query=bash`` with the line up to the cursor; the
command then drops the subcommand from that line and hands it to Hydra's completion, which
knows the subcommand's keys (from its dataclasses and YAML) and groups.
"""

from __future__ import annotations

import os
import re

SHELLS = ("bash", "zsh")

_BASH = r"""# avatar: bash completion of subcommands, config keys and groups
_avatar_completion()
{
    local line=${COMP_LINE:0:COMP_POINT}
    local cur=${line##*[[:space:]]}          # the word being completed, as typed
    local part=${COMP_WORDS[COMP_CWORD]}     # bash's part of it (it breaks words at = and :)
    [[ $part == [=:] ]] && part=""
    local prefix=${cur%"$part"}
    local -a found
    if (( COMP_CWORD <= 1 )); then
        found=($(compgen -W "@SUBCOMMANDS@ --help --version" -- "$cur"))
        found=("${found[@]/%/ }")
    else
        local choices
        choices=$(COMP_LINE="$line" COMP_POINT=${#line} "${COMP_WORDS[0]}" "${COMP_WORDS[1]}" \
                  --shell-completion query=bash 2>/dev/null)
        found=($(compgen -W "$choices" -- "$cur"))
    fi
    COMPREPLY=("${found[@]#"$prefix"}")
}
complete -o nospace -o default -F _avatar_completion avatar
"""

_ZSH = r"""# avatar: zsh completion of subcommands, config keys and groups
_avatar() {
    if (( CURRENT == 2 )); then
        compadd -- @SUBCOMMANDS@ --help --version
        return
    fi
    local line="${(j: :)words[1,CURRENT]}"
    local -a choices
    choices=(${="$(COMP_LINE=$line COMP_POINT=${#line} ${words[1]} ${words[2]} \
                   --shell-completion query=zsh 2>/dev/null)"})
    if (( ${#choices} )); then
        compadd -S '' -- $choices
    elif [[ $PREFIX == *=* ]]; then
        compset -P '*='
        _files
    fi
}
if ! (( $+functions[compdef] )); then
    autoload -Uz compinit && compinit
fi
compdef _avatar avatar
"""

_UNINSTALL = {
    "bash": "complete -r avatar 2> /dev/null; unset -f _avatar_completion",
    "zsh": "compdef -d avatar 2> /dev/null; unfunction _avatar 2> /dev/null",
}


def script(action: str, shell: str, subcommands: list[str]) -> str:
    """The shell code for ``install=SHELL`` or ``uninstall=SHELL``."""
    if action == "uninstall":
        return _UNINSTALL[shell]
    text = _BASH if shell == "bash" else _ZSH
    return text.replace("@SUBCOMMANDS@", " ".join(subcommands))


def parse_request(overrides: list[str]) -> tuple[str, str] | None:
    """(action, shell) of ``--shell-completion install=bash`` and the like; None when malformed."""
    if len(overrides) != 1 or "=" not in overrides[0]:
        return None
    action, shell = overrides[0].split("=", 1)
    if action not in ("install", "uninstall", "query") or shell not in SHELLS:
        return None
    return action, shell


def query_line(name: str, line: str) -> str:
    """``avatar train train.iter`` -> ``avatar train.iter``: the line Hydra's completion expects
    (the program, then the subcommand's arguments)."""
    return re.sub(rf"^(\s*\S+\s+){re.escape(name)}(\s|$)", r"\1", line, count=1)


def prepare_query(name: str) -> None:
    """Rewrite ``COMP_LINE`` for Hydra's query (see :func:`query_line`)."""
    line = os.environ.get("COMP_LINE", "")
    os.environ["COMP_LINE"] = query_line(name, line)

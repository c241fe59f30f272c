"""The library's layers: imports (also those inside functions) only go down, and no module
cycle exists. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "avatar"

# What each part of the library may import (besides itself). Bottom first.
ALLOWED: dict[str, set[str]] = {
    "io": set(),
    "errors": set(),
    "device": set(),
    "geometry": {"io"},
    "models": {"geometry", "io"},
    "render": {"geometry", "io"},
    "landmarks": {"geometry", "io"},
    "tracking": {"geometry", "models", "landmarks", "render", "io"},
    "gaussians": {"geometry", "models", "render", "io"},
    "synthetic": {"geometry", "models", "landmarks", "render", "tracking", "io"},
    "preprocess": {"geometry", "landmarks", "io"},  # the module avatar/preprocess.py
    "preprocess_body": {"geometry", "landmarks", "io", "preprocess"},  # the module avatar/preprocess_body.py
    "train": {"geometry", "models", "tracking", "render", "gaussians", "io", "device"},
    "drive": {"geometry", "models", "landmarks", "tracking", "render", "gaussians", "io", "device"},
    "view": {"geometry", "models", "tracking", "render", "gaussians", "drive", "io", "device"},
    "apps": {"geometry", "models", "landmarks", "tracking", "render", "gaussians", "train", "drive", "synthetic",
             "preprocess", "preprocess_body", "io", "device", "errors", "view"},
    "cli": {"apps", "errors"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ``avatar.*`` modules ``path`` imports anywhere in its body (functions included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                if node.module:
                    found.add(f"{prefix}.{node.module}")
                else:
                    found.update(f"{prefix}.{a.name}" for a in node.names)
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m == "avatar" or m.startswith("avatar.")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # `from avatar.x import y`: y may be a module or a name in avatar.x
            while imported not in modules and "." in imported:
                imported = imported.rpartition(".")[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_every_part_of_the_library_has_a_place_in_the_layers():
    parts = {_part(m) for m in _graph()}
    assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED (and to the README's layout)"


def test_imports_only_go_down_the_layers():
    wrong = sorted(f"{m} imports {t}" for m, targets in _graph().items() for t in targets
                   if _part(t) != _part(m) and _part(t) not in ALLOWED.get(_part(m), set()) and _part(t) != "__init__")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # A package's __init__ re-exporting its modules is not a cycle of the design.
    cycles = [c for c in cycles if not any(part.count(".") == 1 and Path(REPO, *part.split(".")).is_dir()
                                           for part in c.split(" -> "))]
    assert not cycles, "\n".join(cycles)


def test_the_library_never_imports_the_scripts_around_it():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            wrong += [f"{path.relative_to(REPO)}: {n}" for n in names
                      if n.split(".")[0] in ("conf", "demos", "data_tools", "benchmarks", "tests")]
    assert not wrong, wrong

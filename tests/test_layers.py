"""The package's modules import only downward: a layer may use the layers below it, never above, and nothing
imports in a circle (imports inside functions and under TYPE_CHECKING count too). And the daemon does not load
its tools."""

from __future__ import annotations

import ast
from pathlib import Path

import oscbridge

PACKAGE = Path(oscbridge.__file__).parent

# Bottom to top. A module may import modules of its own layer or a lower one.
LAYERS: list[tuple[str, ...]] = [
    ("oscbridge", "oscbridge.typedefs", "oscbridge.protocol", "oscbridge.clock", "oscbridge.backoff",
     "oscbridge.ratelimit", "oscbridge.redact", "oscbridge.private", "oscbridge.logs", "oscbridge.watchdog",
     "oscbridge.storable", "oscbridge.tasks", "oscbridge.jsontext"),
    ("oscbridge.osc",),
    ("oscbridge.config", "oscbridge.flags"),
    ("oscbridge.store", "oscbridge.embed"),
    ("oscbridge.projects",),
    ("oscbridge.plugins", "oscbridge.memory"),
    ("oscbridge.api",),
    ("oscbridge.router", "oscbridge.web", "oscbridge.mcp"),
    ("oscbridge.app",),
    ("oscbridge.cli", "oscbridge.client", "oscbridge.__main__", "oscbridge.tools"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, found = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found >= 0, f"{module} is in no layer: add it to LAYERS"
    return found


def imports_of(path: Path) -> set[str]:
    """Every oscbridge module `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("oscbridge"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("oscbridge"):
            for alias in node.names:  # `from oscbridge.tools import doctor` imports a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / candidate.replace(".", "/")).is_dir() else node.module)
    return found


GRAPH = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


# `serve --record` loads the recorder, a tool, inside the function that needs it, only when asked for.
ALLOWED_UPWARD = {("oscbridge.app", "oscbridge.tools.recording")}


def test_every_module_imports_only_its_own_layer_or_below() -> None:
    upward = [f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
              for module, targets in GRAPH.items() for target in targets
              if layer_of(target) > layer_of(module) and (module, target) not in ALLOWED_UPWARD]
    assert upward == []


def test_no_module_imports_in_a_circle() -> None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if target == module or target not in GRAPH:
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    # A package's __init__ importing its own submodules is not a cycle worth reporting.
    assert [c for c in cycles if not all(m.startswith(c[0]) for m in c)] == []


def test_the_daemon_imports_none_of_its_tools() -> None:
    """What `oscbridge serve` loads: the CLI and the app, and everything they import at module level."""
    seen: set[str] = set()
    todo = ["oscbridge.cli", "oscbridge.app"]
    while todo:
        module = todo.pop()
        if module in seen or module not in GRAPH:
            continue
        seen.add(module)
        tree = ast.parse(Path(PACKAGE.parent / module.replace(".", "/")).with_suffix(".py").read_text()
                         if not (PACKAGE.parent / module.replace(".", "/")).is_dir()
                         else (PACKAGE.parent / module.replace(".", "/") / "__init__.py").read_text())
        for node in tree.body:  # module level only: a tool imported inside a function loads when it runs
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("oscbridge"):
                todo.extend(f"{node.module}.{a.name}" for a in node.names)
                todo.append(node.module)
            elif isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names if a.name.startswith("oscbridge"))
    assert sorted(m for m in seen if m.startswith("oscbridge.tools")) == []

"""The package layout rule of docs/architecture.md, checked on the source.

Every module of ``streaming``, ``sketches`` and ``benchmarks`` is parsed (not
imported), and every import in it, at the top or inside a function, counts:

* a package imports only the packages its row of :data:`ALLOWED` names (``cli``
  imports everything, nothing imports ``cli``; the engine imports neither the
  Kafka tools nor the log tools);
* no module imports another module's private (``_``) names;
* no import cycle between modules (an import under ``if TYPE_CHECKING:``, for
  annotations only, runs never and does not count here);
* no module is longer than :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streaming", "sketches", "benchmarks")
MAX_LINES = 500

#: the parts of ``streaming`` and what each may import from the others
#: (``base`` is the top-level modules: errors and units)
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "spec": {"base"},
    "runtime": {"base"},
    "engine": {"base", "spec"},
    "kafka": {"base", "spec", "runtime"},
    "logs": {"base", "spec", "engine", "kafka"},
    "observability": {"base", "spec", "engine"},
    "query": {"base", "spec", "runtime", "engine"},
    "cli": {"base", "spec", "runtime", "engine", "kafka", "logs", "observability", "query"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = modules()


def imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every import of a project module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:  # ``from package import module``
                    found.append((sub, None, node.lineno))
                else:
                    found.append((base, a.name, node.lineno))
    return [(m, n, line) for m, n, line in found if m.split(".")[0] in PACKAGES]


def resolve(module: str) -> str:
    """The project module an import names (a package resolves to its ``__init__``)."""
    while module not in MODULES and "." in module:
        module = module.rpartition(".")[0]
    return module


def part(module: str) -> str:
    """The part of ``streaming`` a module belongs to (see :data:`ALLOWED`)."""
    pieces = module.split(".")
    if len(pieces) > 2 or (len(pieces) == 2 and pieces[1] in ALLOWED):
        return pieces[1]
    return "base"


def type_only_lines(path: Path) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {line for node in ast.walk(tree) if isinstance(node, ast.If)
            and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            for line in range(node.lineno, node.end_lineno + 1)}


GRAPH = {name: {resolve(m) for m, _, line in imports(name, path)
                if line not in type_only_lines(path)} - {name}
         for name, path in MODULES.items()}


def test_every_part_of_streaming_has_a_row():
    parts = {part(m) for m in MODULES if m.startswith("streaming.")}
    assert parts == set(ALLOWED), parts ^ set(ALLOWED)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("streaming.")))
def test_imports_follow_the_layout(name):
    mine = part(name)
    wrong = [f"line {line}: {m}" for m, _, line in imports(name, MODULES[name])
             if m.startswith("streaming.") and resolve(m) != "streaming"
             and part(resolve(m)) not in ALLOWED[mine] | {mine}]
    assert not wrong, f"{name} ({mine}) may import only {sorted(ALLOWED[mine])}: {wrong}"


def test_library_code_imports_neither_benchmarks_nor_tests():
    wrong = [(name, m) for name, path in MODULES.items() if not name.startswith("benchmarks")
             for m, _, _ in imports(name, path) if m.split(".")[0] == "benchmarks"]
    assert not wrong


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_from_other_modules(name):
    private = [f"line {line}: {m}.{n}" for m, n, line in imports(name, MODULES[name])
               if n is not None and n.startswith("_") and not n.startswith("__")
               and resolve(m) != name]
    assert not private, f"{name} imports private names: {private}"


def test_no_import_cycles():
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_the_limit(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (at most {MAX_LINES}); split it"


def test_the_checks_see_what_they_check():
    """The parser finds this file's own imports and a cycle when there is one."""
    me = Path(__file__)
    assert ("pytest", None) not in [(m, n) for m, n, _ in imports("tests.test_layout", me)]
    assert GRAPH["streaming.cli.main"], "cli.main imports nothing?"
    assert part("streaming.engine.pipeline") == "engine" and part("streaming.errors") == "base"
    assert "streaming.engine.decode" in GRAPH["streaming.observability.metrics"]
    assert "streaming.engine.pipeline" not in GRAPH["streaming.observability.metrics"], \
        "an import under TYPE_CHECKING counted as a runtime import"

"""The layout's rules hold: no import cycles between durapipe's modules, no module over 700 lines.

Imports are read from the source (every `import`, including those under `TYPE_CHECKING` and inside
functions), so a cycle hidden behind a lazy import still counts.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from durapipe._errors import ErrorType

PACKAGE = Path(__file__).resolve().parent.parent / "durapipe"
MAX_LINES = 700


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports. A package's `__init__` re-exporting its own
    children, and a child reaching its parent package, are not edges (Python resolves them)."""
    edges: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node.level, node.module)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in found:
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                if found[target].name == "__init__.py" and name.startswith(target + "."):
                    continue
                if is_package and target.startswith(name + "."):
                    continue
                edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def test_no_import_cycles() -> None:
    found = cycles(import_graph(modules()))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    # The check itself: a two-module cycle through a function-level import is found.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import g\n")
    (package / "b.py").write_text("def g():\n    from pkg import a\n")
    assert cycles(import_graph(modules(package))) == [["pkg.a", "pkg.b"]]


def test_packages_depend_one_way() -> None:
    # Folders too: spec <- runtime <- stores <- adapters <- activities/workflows <- worker <- client.
    edges: dict[str, set[str]] = {}
    for module, targets in import_graph(modules()).items():
        source = _folder(module)
        edges.setdefault(source, set())
        edges[source] |= {_folder(t) for t in targets} - {source}
    found = cycles(edges)
    assert not found, "folders importing each other: " + "; ".join(" <-> ".join(c) for c in found)


def _folder(module: str) -> str:
    """``durapipe.runtime._calls`` -> ``durapipe.runtime``; a root module stands for itself."""
    return ".".join(module.split(".")[:2])


def test_no_module_over_700_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by what they do): {long}"


def test_error_type_names_are_written_only_in_the_registry() -> None:
    # `"durapipe.X"` type names are a user contract (``non_retryable``): one place spells them.
    literal = re.compile(r"""["']durapipe\.[A-Z]\w*["']""")
    allowed = {"durapipe.DurapipePlugin"}  # the plugin's name, not an error type
    found = {
        f"{path.relative_to(PACKAGE.parent)}:{n}: {m.group(0)}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "_errors.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for m in literal.finditer(line)
        if m.group(0).strip("\"'") not in allowed
    }
    assert not found, f"use durapipe._errors.ErrorType instead of literals: {sorted(found)}"
    assert all(t.value == f"durapipe.{t.value.split('.')[1]}" for t in ErrorType)
    assert (
        ErrorType.TIMEOUT == "durapipe.Timeout" and f"{ErrorType.REJECTED}" == "durapipe.Rejected"
    )


def test_the_spec_layer_reads_no_environment() -> None:
    readers = [
        str(path.relative_to(PACKAGE.parent))
        for path in (PACKAGE / "spec").rglob("*.py")
        if "os.environ" in (text := path.read_text()) or "getenv" in text
    ]
    assert not readers, f"the spec layer must not read the environment: {readers}"


def test_test_modules_import_helpers_from_support_not_from_each_other() -> None:
    tests = PACKAGE.parent / "tests"
    crossing = sorted(
        f"{path.relative_to(tests.parent)}: {node.module}"
        for path in tests.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("tests.")
        and (node.module or "").rpartition(".")[2].startswith("test_")
    )
    assert not crossing, f"import shared helpers from tests.support: {crossing}"

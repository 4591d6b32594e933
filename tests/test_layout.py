"""Layout rules for src/convbert, checked on the source with `ast` (nothing is imported).

- the import graph of convbert modules (module- and function-level imports) has no cycles;
- no private name (`_x`, not a dunder) is imported from another module;
- no module is over MAX_MODULE_LINES lines, no function or method over MAX_FUNCTION_LINES lines,
  except the allow-listed ones (each with its reason).

Every test reports all its offenders at once.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "convbert"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

# path (relative to src/convbert) -> why one concept needs the length
LONG_MODULES: dict[str, str] = {
    "model.py": "the whole model in one readable file (embeddings, mixed attention, FFN, every head), as nanoGPT",
}
# "path:qualified.name" -> why it cannot be split
LONG_FUNCTIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}
TREES: dict[str, ast.Module] = {name: ast.parse(p.read_text(encoding="utf-8"), str(p)) for name, p in MODULES.items()}


def _rel(path: Path) -> str:
    return path.relative_to(SRC / PACKAGE).as_posix()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name a `from ... import` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owning_module(name: str) -> str | None:
    """The longest prefix of a dotted name that is a convbert module."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return None


def _imports(module: str) -> list[tuple[int, str, str | None]]:
    """(line, source module, imported name or None) for every import in the module, at any depth,
    whose source is a convbert module; `from pkg import sub` gives the submodule pkg.sub."""
    found = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owning_module(alias.name)
                if target:
                    found.append((node.lineno, target, None))
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:
                    found.append((node.lineno, sub, None))
                elif (target := _owning_module(source)) is not None:
                    found.append((node.lineno, target, alias.name))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(c), c[0]) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside a strongly connected component (breadth first)."""
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in no cycle")


def test_import_graph_has_no_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    where: dict[tuple[str, str], int] = {}
    for module in MODULES:
        for line, target, _ in _imports(module):
            graph[module].add(target)
            where.setdefault((module, target), line)
    cycles = _cycles(graph)
    report = [
        " -> ".join(f"{a} ({_rel(MODULES[a])}:{where[a, b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
        for c in cycles
    ]
    assert not report, "import cycles:\n" + "\n".join(report)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_names_imported() -> None:
    offenders = [
        f"{_rel(MODULES[module])}:{line}: {name} from {source}"
        for module in MODULES
        for line, source, name in _imports(module)
        if source != module and any(_private(part) for part in ([name] if name else source.split(".")))
    ]
    assert not offenders, "private names imported from other modules:\n" + "\n".join(offenders)


def test_module_length() -> None:
    lengths = {_rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()}
    offenders = [
        f"{path}: {n} lines" for path, n in lengths.items() if n > MAX_MODULE_LINES and path not in LONG_MODULES
    ]
    stale = [path for path in LONG_MODULES if lengths.get(path, 0) <= MAX_MODULE_LINES]
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)
    assert not stale, f"allow-listed modules no longer over {MAX_MODULE_LINES} lines: {stale}"


def _functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function, method and nested function."""
    found = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def test_function_length() -> None:
    lengths = {
        f"{_rel(MODULES[module])}:{name}": node.end_lineno - node.lineno + 1
        for module, tree in TREES.items()
        for name, node in _functions(tree)
    }
    offenders = [
        f"{key}: {n} lines" for key, n in lengths.items() if n > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS
    ]
    stale = [key for key in LONG_FUNCTIONS if lengths.get(key, 0) <= MAX_FUNCTION_LINES]
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)
    assert not stale, f"allow-listed functions no longer over {MAX_FUNCTION_LINES} lines: {stale}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("convbert.pretraining.recipe", "from ..model import x", "convbert.model"),
        ("convbert.pretraining", "from . import recipe", "convbert.pretraining.recipe"),
        ("convbert.pretraining", "from .recipe import pretrain", "convbert.pretraining.recipe"),
        ("convbert.model", "from . import counter_rng", "convbert.counter_rng"),
        ("convbert.model", "import convbert.hub", "convbert.hub"),
        ("convbert.model", "from convbert import ConvBertConfig", "convbert"),
    ],
)
def test_import_resolution(module: str, source: str, expected: str) -> None:
    saved = TREES[module]
    TREES[module] = ast.parse(source)
    try:
        assert [target for _, target, _ in _imports(module)] == [expected]
    finally:
        TREES[module] = saved

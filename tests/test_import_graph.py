"""The package's imports point one way, read from the source (the AST), imports inside functions included.

A prompt goes down the layers and its answer comes back as return values: the front doors (magics,
widgets, bench, cli, batch) call the registry, the registry the provider, the provider the factory, the
factory the loaders, the loaders the host functions. ``wire`` and ``config`` are leaves. Here a cycle, an
import up the call path, a core module reaching for a front door, or a front door reaching past the public
API fails, naming the file and line. Imports under ``if TYPE_CHECKING:`` are for annotations only and are
left out: they never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import querymt_jupyter

PACKAGE = Path(querymt_jupyter.__file__).parent
ROOT = "querymt_jupyter"

# The call path, top first: an import between two of these must point down it.
CALL_PATH = [
    {"registry"},
    {"provider"},
    {"factory"},
    {"loaders.wasm", "loaders.native"},
    {"host"},
    {"loaders.base", "loaders._native_abi"},
]
LEAVES = {"wire": set(), "errors": set(), "config": {"errors", "keys", "tinyllm"}}
FRONT_DOORS = ("magics", "widgets", "bench", "cli", "batch", "extension", "comm", "session", "usage")
BELOW_THE_REGISTRY = ("loaders", "host")  # what a front door reaches only through the registry and factory


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, without the package prefix ("bench.ops")
    target: str  # the imported module ("registry")
    names: tuple[str, ...]  # the names taken from it (from-imports)
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _annotation_only(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for inner in ast.walk(node)}
    return skipped


def _ours(name: str) -> str | None:
    """The package module ``name`` (dotted, absolute) lives in, without the prefix; None if not ours."""
    if name != ROOT and not name.startswith(ROOT + "."):
        return None
    name = name[len(ROOT) + 1 :]
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _targets(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[tuple[str, tuple[str, ...]]]:
    if isinstance(node, ast.Import):
        return [(t, ()) for alias in node.names if (t := _ours(alias.name)) is not None]
    if node.level:
        base = ([ROOT] + module.split(".") if module else [ROOT])[: None if is_package else -1]
        base = base[: len(base) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    owner = _ours(name)
    if owner is None:
        return []
    submodules = [f"{owner}.{a.name}".lstrip(".") for a in node.names if f"{owner}.{a.name}".lstrip(".") in MODULES]
    if len(submodules) == len(node.names):  # "from . import session": the submodules, not the package
        return [(s, ()) for s in submodules]
    return [(owner, tuple(a.name for a in node.names))]


def _imports() -> list[Import]:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        skipped = _annotation_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
                for target, names in _targets(module, node, path.name == "__init__.py"):
                    if target != module:
                        found.append(Import(module, target, names, node.lineno))
    return found


IMPORTS = _imports()


def _within(module: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for edge in IMPORTS:
        graph[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_graph_is_read_from_every_module() -> None:
    assert {"registry", "provider", "factory", "loaders.wasm", "host", "wire", "magics", "bench.ops"} <= set(MODULES)
    assert any(str(e).startswith("registry -> provider") for e in IMPORTS)  # a known edge, so the reader works
    assert any(e.source == "magics" and e.target == "oci.commands" for e in IMPORTS)  # one inside a function


def test_no_import_cycles() -> None:
    cycles = _cycles()
    detail = [[str(e) for e in IMPORTS if e.source in group and e.target in group] for group in cycles]
    assert cycles == [], f"import cycles: {detail}"


def test_the_call_path_points_down() -> None:
    rank = {module: level for level, modules in enumerate(CALL_PATH) for module in modules}
    upward = [str(e) for e in IMPORTS if e.source in rank and e.target in rank and rank[e.target] <= rank[e.source]]
    assert upward == []


def test_wire_and_config_are_leaves() -> None:
    extra = [str(e) for e in IMPORTS if e.source in LEAVES and not _within(e.target, LEAVES[e.source])]
    assert extra == []


def test_the_core_never_imports_a_front_door() -> None:
    core = {m for m in MODULES if not _within(m, FRONT_DOORS) and m not in ("", "loopback", "__main__")}
    reaching_up = [str(e) for e in IMPORTS if e.source in core and _within(e.target, FRONT_DOORS)]
    assert reaching_up == []


def test_front_doors_use_the_public_api() -> None:
    doors = [e for e in IMPORTS if _within(e.source, FRONT_DOORS)]
    below = [str(e) for e in doors if _within(e.target, BELOW_THE_REGISTRY)]
    private = [
        f"{e}: {', '.join(n for n in e.names if _private(n))}"
        for e in doors
        if e.target.split(".")[0] != e.source.split(".")[0] and any(_private(n) for n in e.names)
    ]
    private_modules = [str(e) for e in doors if any(_private(part) for part in e.target.split("."))
                       and e.target.split(".")[0] != e.source.split(".")[0]]
    assert below == [] and private == [] and private_modules == []

"""The package's layout rules (docs/architecture.md): library, commands and paths each in one place,
imports in one direction."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "labkit"


def _modules() -> dict[str, Path]:
    """labkit module name -> its file (a package is its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, leaving out `if TYPE_CHECKING:` blocks (imports for annotations only)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path) -> set[str]:
    """The labkit modules a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
    out = set()
    for name in found:
        while name.startswith("labkit") and name not in MODULES:
            name = name.rsplit(".", 1)[0]
        if name.startswith("labkit"):
            out.add(name)
    return out


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}  # labkit itself imports nothing


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules importing it runs: each target and the packages above it (their
    __init__ runs first), except the importer's own packages, which are already running."""
    graph = {}
    for name, path in MODULES.items():
        running = _ancestors(name) | {name, "labkit"}
        graph[name] = {t for target in _imports(path) for t in _ancestors(target) | {target}
                       if t not in running}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_imports_go_one_way() -> None:
    """No cycle, not even through an import deferred into a function."""
    assert _cycles(_import_graph()) == []


def test_the_cycle_check_sees_a_deferred_import() -> None:
    graph = {"labkit.a": {"labkit.b"}, "labkit.b": set()}
    assert _cycles(graph) == []
    graph["labkit.b"] = {"labkit.a"}
    assert _cycles(graph) == [["labkit.a", "labkit.b", "labkit.a"]]


def test_the_library_never_imports_the_commands() -> None:
    library = {n: p for n, p in MODULES.items()
               if not n.startswith("labkit.commands") and n != "labkit.__main__"}
    offenders = [n for n, p in library.items() if any(t.startswith("labkit.commands") for t in _imports(p))]
    assert offenders == []


def _calls(path: Path, function: str) -> list[int]:
    return [node.lineno for node in _nodes(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function]


def test_only_commands_print() -> None:
    """The library reports through logging or return values. check() shows feedback in the
    student's notebook: printing is what it is for."""
    allowed = {"labkit/grading/check.py"}
    printing = {_relative(p): lines for name, p in MODULES.items()
                if not name.startswith("labkit.commands") and _relative(p) not in allowed
                and (lines := _calls(p, "print"))}
    assert printing == {}


def test_only_commands_and_the_config_parser_use_argparse() -> None:
    users = {_relative(p) for name, p in MODULES.items() if "argparse" in _imports_any(p)}
    assert users <= {_relative(PACKAGE / "config.py")} | {_relative(p) for n, p in MODULES.items()
                                                            if n.startswith("labkit.commands")}


def _imports_any(path: Path) -> set[str]:
    names: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_paths_computes_where_the_kit_is() -> None:
    users = {_relative(p) for p in MODULES.values() if "Path(__file__)" in p.read_text(encoding="utf-8")}
    assert users == {"labkit/paths.py"}


def test_pyproject_packages_are_labkits_and_the_data_folders() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    data = ROOT / config["package-dir"]["labkit.shipped"]
    folders = {"labkit.shipped." + ".".join(p.relative_to(data).parts) for p in data.rglob("*")
               if p.is_dir() and all(part.isidentifier() for part in p.relative_to(data).parts)}
    assert listed == packages | {"labkit.shipped"} | folders


def test_architecture_doc_names_every_module() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    # the exercise bank's lesson modules (l00.py, l01.py, ...) are named by their pattern
    named = {p.stem for p in MODULES.values()} if "bank/lNN.py" in doc else set()
    unnamed = [name for name, path in MODULES.items()
               if path.name != "__init__.py" and f"{path.stem}.py" not in doc
               and not (name.startswith("labkit.grading.bank.l") and path.stem in named)]
    assert unnamed == []

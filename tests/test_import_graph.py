"""The import graph of crsbench, its plugins and its tasks, read from the source with ``ast``.

Every import counts, including those inside functions: a function-level import only moves a
cycle to run time (and hides it from the reader). ``plugins/`` installs as ``crsbench_plugins``
and ``tasks/`` as ``crsbench_tasks`` (pyproject.toml), so both spellings name the same module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source directory -> the package name it installs as
PACKAGES = {"crsbench": "crsbench", "plugins": "crsbench_plugins", "tasks": "crsbench_tasks"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Installed module name -> source file, for every module under the three packages."""
    out = {}
    for directory, package in PACKAGES.items():
        for path in sorted((root / directory).rglob("*.py")):
            parts = list(path.relative_to(root / directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:``: never executed, so no edge."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _known(name: str, modules) -> str | None:
    """``name`` or its longest prefix that is one of our modules (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import in the file, at any depth.
    The imported name is set for ``from X import name`` when ``name`` is not itself a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _type_checking_only(tree)
    package = module if _is_package(path) else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target:
                    out.append((target, "", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:  # from package import submodule
                    out.append((f"{base}.{alias.name}", "", node.lineno))
                else:
                    target = _known(base, modules)
                    if target:
                        out.append((target, alias.name, node.lineno))
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {m: {target for target, _, _ in imports_of(m, p, modules) if target != m}
            for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None. Iterative DFS."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            for child in children:
                if colour.get(child, BLACK) == GREY:
                    return path[path.index(child):] + [child]
                if colour.get(child) == WHITE:
                    colour[child] = GREY
                    path.append(child)
                    stack.append((child, iter(sorted(graph[child]))))
                    break
            else:
                colour[node] = BLACK
                path.pop()
                stack.pop()
    return None


def owner(module: str) -> str:
    """The unit a module belongs to: the core (``crsbench``), one plugin package or one task package."""
    parts = module.split(".")
    return parts[0] if parts[0] == "crsbench" else ".".join(parts[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(root: Path = ROOT) -> list[str]:
    """``from X import _name`` and ``X._name`` (X an imported module) where X belongs to another
    unit (core, a plugin package, a task package) than the importing module."""
    modules = module_files(root)
    found = []
    for module, path in modules.items():
        rel = path.relative_to(root)
        for target, name, line in imports_of(module, path, modules):
            if name and _private(name) and owner(target) != owner(module):
                found.append(f"{rel}:{line}: from {target} import {name}")
        # module objects bound by imports: ``from crsbench.metrics import generation`` or ``import x as y``
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {}
        package = module if _is_package(path) else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in modules:
                        bound[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        bound[alias.asname or alias.name] = f"{base}.{alias.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and owner(bound[node.value.id]) != owner(module)):
                found.append(f"{rel}:{node.lineno}: {bound[node.value.id]}.{node.attr}")
    return found


def test_the_walk_sees_every_package_and_function_level_imports():
    modules = module_files()
    assert {"crsbench.cli", "crsbench_plugins.ecr.pipeline", "crsbench_tasks.redial.kg"} <= set(modules)
    edges = {m: {t for t, _, _ in imports_of(m, p, modules)} for m, p in modules.items()}
    # cli imports the runner only inside its command functions
    assert "crsbench.runner" in edges["crsbench.cli"]
    # relative and installed-name imports both resolve to our modules
    assert any(t.startswith("crsbench_plugins.ecr.") for t in edges["crsbench_plugins.ecr.plugin"])


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_cycle_between_packages():
    """The core, each plugin package and each task package, as units: a plugin may build on
    another (ecr-rl on ecr and the rewards), never both ways, and the core imports no plugin."""
    units: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        units.setdefault(owner(module), set()).update(owner(t) for t in targets if owner(t) != owner(module))
    cycle = find_cycle(units)
    assert cycle is None, "packages import each other: " + " -> ".join(cycle)
    assert units["crsbench"] == set(), f"the core imports plugin or task packages: {sorted(units['crsbench'])}"
    assert units["crsbench_plugins.rewards"] <= {"crsbench", "crsbench_plugins.ecr"}  # not ecr_rl: it imports us


def test_only_the_cli_imports_the_runner():
    graph = import_graph()
    assert sorted(m for m, targets in graph.items() if "crsbench.runner" in targets) == ["crsbench.cli"]


def test_no_private_name_across_packages():
    found = private_imports()
    assert not found, "private names used across packages:\n" + "\n".join(found)


@pytest.fixture
def tiny_tree(tmp_path):
    for directory in PACKAGES:
        (tmp_path / directory).mkdir()
        (tmp_path / directory / "__init__.py").write_text("")
    (tmp_path / "plugins" / "p").mkdir()
    (tmp_path / "plugins" / "p" / "__init__.py").write_text("")
    return tmp_path


def test_a_cycle_through_a_function_level_import_is_found(tiny_tree):
    (tiny_tree / "crsbench" / "a.py").write_text("from crsbench import b\n")
    (tiny_tree / "plugins" / "p" / "m.py").write_text("from crsbench.a import x\n")
    (tiny_tree / "crsbench" / "b.py").write_text("def f():\n    from crsbench_plugins.p import m\n")
    assert find_cycle(import_graph(tiny_tree)) == ["crsbench.a", "crsbench.b", "crsbench_plugins.p.m", "crsbench.a"]
    (tiny_tree / "crsbench" / "b.py").write_text("def f():\n    pass\n")
    assert find_cycle(import_graph(tiny_tree)) is None


def test_relative_imports_resolve(tiny_tree):
    (tiny_tree / "plugins" / "p" / "m.py").write_text("from .n import y\nfrom . import n\n")
    (tiny_tree / "plugins" / "p" / "n.py").write_text("def g():\n    from ..p.m import z\n")
    assert find_cycle(import_graph(tiny_tree)) == ["crsbench_plugins.p.m", "crsbench_plugins.p.n",
                                                   "crsbench_plugins.p.m"]


def test_private_names_across_packages_are_found(tiny_tree):
    (tiny_tree / "crsbench" / "g.py").write_text("def _tokens(s):\n    return s.split()\n")
    (tiny_tree / "plugins" / "p" / "m.py").write_text(
        "from crsbench.g import _tokens\nfrom crsbench import g\ng._tokens('a')\n")
    (tiny_tree / "plugins" / "p" / "n.py").write_text("from .m import _same_package_is_fine\n")
    assert private_imports(tiny_tree) == ["plugins/p/m.py:1: from crsbench.g import _tokens",
                                          "plugins/p/m.py:3: crsbench.g._tokens"]

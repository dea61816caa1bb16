"""The package's import graph has no cycle, counting every import of its own modules, those
inside functions too (a lazy import hides a cycle; it does not remove it). An import of a
submodule (``from audit.report import plots``) depends on that submodule, not on the package
around it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _graph() -> dict[str, set[str]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets += [t for t in subs if t in modules]
                if any(t not in modules for t in subs):
                    targets.append(node.module)
            elif isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle():
    graph = _graph()
    assert len(graph) > 50 and "audit.stats.cox" in graph["audit.survival.analysis"]
    assert _cycles(graph) == []


def _imports(path: Path):
    """(node, inside_a_function) for every import statement of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, id(node) not in top


def _module_names(node) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [a.name for a in node.names]


# What may stay lazy: Prefect (heavy, and it reads its settings at import; the CLI sets them
# first) and the demo's training script.
LAZY_ALLOWED = {"audit.orchestrate.prefect_flows"}


def test_the_library_never_imports_flows_and_imports_its_own_modules_at_the_top():
    hidden = []
    for path in SRC.rglob("*.py"):
        if path.name == "train.py":
            continue
        for node, inside in _imports(path):
            for name in _module_names(node):
                assert name.split(".")[0] != "flows", f"{path}: the library imports {name}"
                if (
                    inside
                    and name.startswith("audit")
                    and name not in LAZY_ALLOWED
                    and path.name != "__init__.py"
                ):
                    hidden.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    assert hidden == []


def test_every_subpackage_has_an_init_whose_exports_resolve():
    import importlib

    packages = sorted({p.parent for p in (SRC / "audit").rglob("*.py")})
    assert len(packages) >= 12
    for folder in packages:
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder}: no __init__.py"
        name = ".".join(folder.relative_to(SRC).parts)
        module = importlib.import_module(name)
        assert module.__all__, name
        for export in module.__all__:
            assert getattr(module, export) is not None, f"{name}.{export}"

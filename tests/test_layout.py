"""The package's layout: the import graph between its modules has no cycle (function-level imports included), the
model and the op never import the tooling or the library adapters, and the installed package carries every
subpackage.

Read from the source with ``ast``, so an import that only runs inside a function counts as much as one at the top.
"""
import ast
import os
import re

#: The checkout's source (the tests may run against an installed copy, which lacks pyproject.toml and would lack
#: any subpackage pyproject forgot).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "swin_fused")


def _modules():
    found = {}
    for directory, _, files in os.walk(PACKAGE, followlinks=True):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _imports(modules):
    """module -> the package's modules it imports (``from X import y`` counts as ``X.y`` when that is a module,
    else as ``X``; a package's ``__init__`` counts only when nothing more specific is named)."""
    graph = {}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                named = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
                edges.update(named or ([target] if target in modules else []))
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
        graph[module] = {target for target in edges if target != module}
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None (package __init__ -> its own submodules excluded: a
    package importing what it contains is not a cycle)."""
    def edges(module):
        return {t for t in graph[module] if not (t.startswith(module + ".") or module.startswith(t + "."))}

    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in edges(module):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None

    for module in graph:
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _imports(_modules())
    assert "swin_fused.interop._checkpoints" in graph and "swin_fused.tools.cli" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_model_and_the_op_import_neither_the_adapters_nor_the_tools():
    graph = _imports(_modules())
    core = [m for m in graph if not m.startswith(("swin_fused.tools", "swin_fused.interop"))
            and m not in ("swin_fused", "swin_fused.__main__")]
    for module in core:
        bad = {t for t in graph[module] if t.startswith(("swin_fused.tools", "swin_fused.interop"))}
        assert not bad, f"{module} imports {sorted(bad)}"
    interop = [m for m in graph if m.startswith("swin_fused.interop")]
    for module in interop:
        assert not {t for t in graph[module] if t.startswith("swin_fused.tools")}, module


def test_every_subpackage_is_installed():
    """pyproject.toml's explicit package list must name every package directory (an omitted one imports from a
    checkout and is missing from an installed copy)."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        listed = set(re.search(r"^packages = \[(.*?)\]", f.read(), re.M).group(1).replace('"', "").replace(" ", "")
                     .split(","))
    packages = {m for m, path in _modules().items() if path.endswith("__init__.py")}
    assert packages <= listed, f"not installed: {sorted(packages - listed)}"

"""The package's import graph: layers in one direction, no circles.

Every ``import`` / ``from ... import`` between ramlab's modules (top level and inside functions)
is read with :mod:`ast`. The layers, lowest first::

    constants, errors, checks               (shared by all; checks: argument validation)
    wire, xbzrle, io, sparse                bytes <-> events, reading and writing files
    model, trace, data                      what QEMU's two sides hold and do; per-pass arrays; bundled data
    plots                                   bokeh figures and reductions, no ipywidgets
    widgets                                 thin ipywidgets shells
    migration, simulate, report, lab, provenance, live   the front doors and what sits on them
    cli, capture                            processes, files and sockets

A module may import its own layer or lower ones, never a higher one; and no module below ``widgets``
imports the notebook's widget libraries (``ipywidgets``, ``jupyter_bokeh``, ``IPython``), so the
report and a script can draw with ``plots`` without them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ramlab"

RANK = {
    "constants": 0, "errors": 0, "checks": 0, "__init__": 9, "__main__": 9,
    "wire": 1, "xbzrle": 1, "io": 1, "sparse": 1,
    "model": 2, "trace": 2, "data": 2,
    "plots": 3,
    "widgets": 4,
    "migration": 5, "simulate": 5, "report": 5, "lab": 5, "provenance": 5, "live": 5,
    "cli": 6, "capture": 6,
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """ramlab modules that ``name`` imports (resolved to the deepest existing module)."""
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                head = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "ramlab" or node.module.startswith("ramlab.")):
                head = node.module.removeprefix("ramlab").lstrip(".")
            else:
                continue
            targets = [f"{head}.{a.name}".lstrip(".") for a in node.names] + [head]
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("ramlab.") for a in node.names if a.name.startswith("ramlab.")]
        for t in targets:
            while t and t not in modules:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and not name.startswith(t + "."):  # not its own package's __init__
                found.add(t)
    return found


def _rank(module: str) -> int:
    return RANK[module.split(".")[0]]


def test_every_top_level_module_has_a_layer():
    missing = {m.split(".")[0] for m in _modules()} - set(RANK)
    assert not missing, f"give these a layer in RANK: {sorted(missing)}"


def test_no_import_goes_up_a_layer():
    modules = _modules()
    up = [(a, b) for a, p in modules.items() for b in _imports(a, p, modules)
          if a.split(".")[0] not in ("__init__", "__main__") and _rank(b) > _rank(a)]
    assert not up, "imports back up a layer: " + ", ".join(f"{a} -> {b}" for a, b in sorted(up))


def test_no_import_circle():
    modules = _modules()
    graph = {a: _imports(a, p, modules) for a, p in modules.items()}
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(a: str, path: list[str]) -> None:
        seen[a] = 1
        for b in sorted(graph[a]):
            if seen.get(b) == 1:
                cycles.append(path[path.index(b):] + [b])
            elif b not in seen:
                visit(b, path + [b])
        seen[a] = 2

    for a in sorted(graph):
        if a not in seen:
            visit(a, [a])
    cycles = [c for c in cycles if "__init__" not in c]  # ramlab/__init__ re-exports the front doors
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


#: the notebook's widget libraries: only ``widgets`` and the layers above it may import them
WIDGET_LIBRARIES = ("ipywidgets", "jupyter_bokeh", "IPython")


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path`` (top level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_plots_and_lower_layers_do_not_import_widget_libraries():
    bad = [(name, lib) for name, path in _modules().items()
           if name.split(".")[0] not in ("__init__", "__main__") and _rank(name) < RANK["widgets"]
           for lib in sorted(_third_party_imports(path) & set(WIDGET_LIBRARIES))]
    assert any(name.startswith("plots.") for name in _modules())  # the check sees the plots modules
    assert not bad, "widget libraries below widgets/: " + ", ".join(f"{a} imports {b}" for a, b in bad)

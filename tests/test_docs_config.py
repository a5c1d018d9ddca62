"""docs/conf.py settings that the docs build relies on, checked without building the site.

* The API reference builds from the ``docs`` extra alone: with numba absent, every module of the
  package imports under conf.py's ``autodoc_mock_imports`` (``ramlab.xbzrle.numba_kernels`` imports
  numba at the top; autosummary failed on it).
* The notebook pages render the widgets' static pictures: with conf.py's
  ``nb_mime_priority_overrides``, myst-nb's HTML priority has no widget view, so a widget output
  renders its ``text/html`` (the picture), and no CDN widget manager is added.

The built pages themselves are checked by ``scripts/check_docs_figures.py`` after ``scripts/docs``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "docs" / "conf.py"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def conf_value(name: str):
    """The literal value docs/conf.py assigns to ``name`` (read with ``ast``: conf.py is not run)."""
    for node in ast.parse(CONF.read_text()).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"docs/conf.py does not set {name}")


# a meta-path finder placed first: numba and its submodules cannot be imported (as without ramlab[fast])
NO_NUMBA = """
import sys
class NoNumba:
    def find_spec(self, name, path=None, target=None):
        if name == "numba" or name.startswith("numba."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoNumba())
"""

IMPORT_ALL = NO_NUMBA + """
import importlib, pkgutil
from sphinx.ext.autodoc.mock import mock
import ramlab
names = [i.name for i in pkgutil.walk_packages(ramlab.__path__, prefix="ramlab.")
         if not any(p.startswith("_") for p in i.name.split("."))]
assert "ramlab.xbzrle.numba_kernels" in names
failed = []
with mock(MOCKS):
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(f"{name}: {exc!r}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _import_all(mocks: list[str]) -> subprocess.CompletedProcess:
    code = IMPORT_ALL.replace("MOCKS", repr(mocks))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_api_modules_import_without_numba_under_the_docs_mocks():
    pytest.importorskip("sphinx")
    mocks = conf_value("autodoc_mock_imports")
    assert "numba" in mocks
    r = _import_all(mocks)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    unmocked = _import_all([])  # the failure the mock avoids (so this test does test something)
    assert unmocked.returncode == 1 and "ramlab.xbzrle.numba_kernels" in unmocked.stdout, unmocked.stdout


def test_notebook_pages_prefer_the_static_picture_to_the_widget_view():
    render = pytest.importorskip("myst_nb.core.render")
    overrides = conf_value("nb_mime_priority_overrides")
    for builder in ("html", "dirhtml", "singlehtml"):
        base = render.get_mime_priority(builder, [])
        assert base.index(WIDGET_VIEW) < base.index("text/html")  # myst-nb's own order: the widget view first
        priority = render.get_mime_priority(builder, overrides)
        assert WIDGET_VIEW not in priority and "text/html" in priority, (builder, priority)
        assert priority.index("text/html") < priority.index("text/plain")
    assert conf_value("nb_ipywidgets_js") == {}  # no CDN widget manager on the pages

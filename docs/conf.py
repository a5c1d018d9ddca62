"""Sphinx configuration of ramlab's documentation (PyData theme, MyST + myst-nb, numpydoc).

Build: ``.venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``scripts/docs``). Generated at build time, never committed (``docs/_generated``): the API
module list (every module of the installed ``ramlab`` package, found by walking it), the CLI
help of every command, and a copy of the student notebooks (``notebooks/*.ipynb``).
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import sys
from pathlib import Path

import ramlab

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
GENERATED = DOCS / "_generated"

project = "ramlab"
author = "The ramlab developers"
copyright = "2026, The ramlab developers"
release = ramlab.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.napoleon",  # Google-style "Args:"/"Fields:" sections, before numpydoc
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_generated/cli.md"]  # cli.md is included by cli.md
templates_path = ["_templates"]

# --- API reference: numpydoc sections, one page per module, members in source order
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures show them; numpydoc renders the parameter sections
autodoc_default_options = {"members": True, "show-inheritance": True}
# ramlab.xbzrle.numba_kernels (the optional ``ramlab[fast]`` backend) imports numba at the top. Mocked, not
# added to the docs extra: only the docstrings are needed, and numba (with llvmlite, ~200 MB installed) lags
# new Python releases by months, which would tie the docs build to numba's wheels. The mock applies to the
# modules autodoc imports only (the notebooks run in their own kernel, with numba if it is installed).
autodoc_mock_imports = ["numba"]
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
numpydoc_xref_param_type = False
napoleon_numpy_docstring = False  # numpydoc renders numpy sections; napoleon only the Google ones
napoleon_google_docstring = True
napoleon_custom_sections = [("Fields", "params_style")]

# --- notebooks: executed once and cached (jupyter-cache in docs/_build/.jupyter_cache): a rebuild
# re-executes only the notebooks that changed. RAMLAB_DOCS_EXECUTE=off renders them unexecuted.
nb_execution_mode = os.environ.get("RAMLAB_DOCS_EXECUTE", "cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True  # a notebook that fails fails the build (cells tagged raises-exception may)
nb_execution_show_tb = True
nb_merge_streams = True
# Widget outputs: every ramlab widget's bundle carries its own static picture (text/html, class
# ramlab-static, no script). nbclient stores the widget state in the executed notebook, and myst-nb then
# prefers application/vnd.jupyter.widget-view+json, which needs the @jupyter-widgets/html-manager from a
# CDN (blank offline, and the bokeh views need more than it has). The widget view is dropped for every
# builder (priority None), so the static picture is rendered, and the CDN scripts are not added.
nb_mime_priority_overrides = [("*", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js: dict[str, dict[str, str]] = {}
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

# --- HTML: the PyData theme, no external resources needed to read it
html_theme = "pydata_sphinx_theme"
html_title = f"ramlab {release}"
html_theme_options = {
    "github_url": "https://github.com/ramlab/ramlab",
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"changelog": []}
# bokeh's notebook loader outputs (JavaScript for a live kernel) have no meaning in a static page
suppress_warnings = ["mystnb.unknown_mime_type"]


def _write_if_changed(path: Path, text: str) -> None:
    """Keep unchanged generated files untouched so incremental builds stay incremental."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _api_modules() -> list[str]:
    """Every public module of the ramlab package (no ``_private`` ones, no ``__main__`` entry points)."""
    names = ["ramlab"]
    for info in pkgutil.walk_packages(ramlab.__path__, prefix="ramlab."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _generate_api() -> None:
    shutil.rmtree(GENERATED / "api", ignore_errors=True)  # autosummary rewrites the module pages
    lines = [
        "# API reference", "",
        "Every module of the `ramlab` package, from its docstrings (the list is made at build time).",
        "The layers run one way: `wire` (bytes, sans-IO) → `model` → `trace` → `plots`, `widgets`,",
        "`report`, `cli`, `lab`.", "",
        "```{eval-rst}", ".. autosummary::", "   :toctree: api", "",
    ]
    lines += [f"   {name}" for name in _api_modules()]
    lines += ["```", ""]
    _write_if_changed(GENERATED / "api.md", "\n".join(lines))


def _generate_cli() -> None:
    from ramlab.capture.run import build_parser as capture_parser
    from ramlab.cli import build_parser

    parser = build_parser()
    out = ["<!-- generated by docs/conf.py from ramlab.cli.build_parser(); do not edit -->", "",
           "## `ramlab`", "", "```text", parser.format_help().rstrip(), "```", ""]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        text = capture_parser().format_help() if name == "capture" else p.format_help()
        if name == "watch":
            from ramlab.cli.watch import build_parser as watch_parser

            text = watch_parser().format_help()
        out += [f"## `ramlab {name}`", "", "```text", text.rstrip(), "```", ""]
    _write_if_changed(GENERATED / "cli.md", "\n".join(out))


def _copy_notebooks() -> None:
    target = GENERATED / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in sorted((REPO / "notebooks").glob("*.ipynb"))}
    for old in target.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for name, src in wanted.items():
        dst = target / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
    toc = ["# Notebooks", "",
           "The course notebooks as shipped (`ramlab notebooks DIR` copies them out of an installed",
           "ramlab; `jupyter lab` runs them). They are executed when this site is built.", "",
           "```{toctree}", ":maxdepth: 1", ""]
    toc += [f"notebooks/{Path(n).stem}" for n in wanted]
    toc += ["```", ""]
    _write_if_changed(GENERATED / "notebooks.md", "\n".join(toc))


def _write_bokehjs() -> str:
    """The BokehJS bundles of the installed bokeh as one static file (the figures that the notebooks
    ``show()`` are embedded as BokehJS documents; in JupyterLab ramlab's loader supplies BokehJS, here
    the notebook pages load this file). Its name carries the version, which must match bokeh's."""
    from bokeh.resources import Resources

    from ramlab.plots.bokehjs import COMPONENTS, bokehjs_version

    name = f"bokehjs-{bokehjs_version()}.js"
    source = "\n".join(Resources(mode="inline", components=list(COMPONENTS)).js_raw)
    _write_if_changed(GENERATED / "_static" / name, source)
    return name


def _bokehjs_on_notebook_pages(app, pagename, templatename, context, doctree) -> None:  # noqa: ANN001
    if pagename.startswith("_generated/notebooks/"):
        app.add_js_file(BOKEHJS, priority=100)


def setup(app) -> None:  # noqa: ANN001
    app.connect("html-page-context", _bokehjs_on_notebook_pages)


_generate_api()
_generate_cli()
_copy_notebooks()
BOKEHJS = _write_bokehjs()
html_static_path = [str(GENERATED / "_static")]
sys.path.insert(0, str(DOCS))

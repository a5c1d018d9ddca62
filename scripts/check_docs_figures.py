"""After the docs build (scripts/docs): the notebook pages show the widgets' static pictures.

Each ramlab widget's output carries a static picture (``text/html``, ``class='ramlab-static'``).
The executed notebooks also hold the widget state, and myst-nb would otherwise render the
``application/vnd.jupyter.widget-view+json`` view instead: a script for the CDN widget manager,
blank offline. For every notebook page of docs/_build/html this checks that

* it has at least as many static pictures as its executed notebook has widget outputs carrying one
  (every ramlab view; not the invisible BokehJS loader widget),
* it has no widget-view script and loads no script from the network,
* it loads the site's BokehJS file when its notebook shows bokeh figures (``show()``: they are
  embedded as BokehJS documents and stay blank without it),

and that the site has at least one widget output at all (else the notebooks were not executed).
Exit 1 with the reasons when a check fails.

    python scripts/check_docs_figures.py [docs/_build]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BOKEH_EXEC = "application/vnd.bokehjs_exec.v0+json"
BOKEHJS_SCRIPT = re.compile(r"""<script[^>]*\ssrc=['"][^'"]*_static/bokehjs-[0-9][^'"]*\.js""")
PICTURE = re.compile(r"""class=['"]ramlab-static['"]""")
EXTERNAL_SCRIPT = re.compile(r"""<script[^>]*\ssrc=['"](https?:)?//""")


def widget_outputs(notebook: Path) -> int:
    """Outputs of ``notebook`` that are a widget view with a static picture beside it."""
    nb = json.loads(notebook.read_text())
    return sum(WIDGET_VIEW in out.get("data", {}) and "text/html" in out.get("data", {})
               for cell in nb["cells"] for out in cell.get("outputs", []))


def bokeh_figures(notebook: Path) -> int:
    """Outputs of ``notebook`` that embed a bokeh figure (``bokeh.plotting.show``)."""
    nb = json.loads(notebook.read_text())
    return sum(BOKEH_EXEC in out.get("data", {}) for cell in nb["cells"] for out in cell.get("outputs", []))


def check(build: Path) -> list[str]:
    pages = sorted((build / "html" / "_generated" / "notebooks").glob("*.html"))
    executed = build / "jupyter_execute" / "_generated" / "notebooks"
    if not pages:
        return [f"no notebook pages in {build / 'html' / '_generated' / 'notebooks'}"]
    problems, total = [], 0
    for page in pages:
        html = page.read_text()
        nb = executed / f"{page.stem}.ipynb"
        widgets = widget_outputs(nb) if nb.exists() else 0
        figures = bokeh_figures(nb) if nb.exists() else 0
        if figures and not BOKEHJS_SCRIPT.search(html):
            problems.append(f"{page.name}: {figures} bokeh figures but no BokehJS script (they would be blank)")
        total += widgets
        pictures = len(PICTURE.findall(html))
        views = html.count(f'type="{WIDGET_VIEW}"')
        external = EXTERNAL_SCRIPT.findall(html)
        print(f"{page.name}: {pictures} static pictures for {widgets} widget outputs, "
              f"{views} widget-view scripts, {len(external)} network scripts")
        if pictures < widgets:
            problems.append(f"{page.name}: {pictures} static pictures for {widgets} widget outputs")
        if views:
            problems.append(f"{page.name}: {views} {WIDGET_VIEW} scripts (blank without the CDN widget manager)")
        if external:
            problems.append(f"{page.name}: loads {len(external)} scripts from the network")
    if total == 0:
        problems.append(f"no widget outputs in {executed}: were the notebooks executed?")
    return problems


def main(argv: list[str]) -> int:
    build = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "docs" / "_build"
    problems = check(build)
    for p in problems:
        print(f"check_docs_figures: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""nbconvert of an executed notebook shows the widgets' static pictures, with the commands the README gives.

nbclient stores the widget state in the notebook it executes (``store_widget_state=True``); nbconvert's
HTML exporter then renders the widget view (a script for a CDN widget manager, blank offline) instead of
the ``text/html`` picture each ramlab widget carries. README.md (and docs/install.md) give two ways
around it; both are run here on ``notebooks/00-tour.ipynb``:

* executing with ``--ExecutePreprocessor.store_widget_state=False``;
* converting a notebook executed by nbclient (widget state stored) with ``text/html`` first in
  ``--NbConvertBase.display_data_priority``.

The HTML must hold a ``ramlab-static`` picture per widget output and no widget-view script; with
Debian's Chromium (through Playwright) the pictures are visible with every network request blocked.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOUR = REPO / "notebooks" / "00-tour.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
VIEW_SCRIPT = f'<script type="{WIDGET_VIEW}">'
CHROMIUM = "/usr/bin/chromium"


def documented_commands(doc: Path = REPO / "README.md") -> list[list[str]]:
    """The ``jupyter nbconvert`` commands of ``doc``'s code blocks (continuation lines joined)."""
    text = doc.read_text().replace("\\\n", " ")
    return [shlex.split(line.strip()) for line in text.splitlines() if line.strip().startswith("jupyter nbconvert")]


def _jupyter() -> str:
    exe = Path(sys.executable).with_name("jupyter")
    return str(exe) if exe.exists() else "jupyter"


def _widget_outputs(nb) -> int:
    """Widget outputs carrying a static picture (every ramlab view; not the invisible BokehJS loader)."""
    return sum(WIDGET_VIEW in o.get("data", {}) and "text/html" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))


def _convert(argv: list[str], folder: Path) -> str:
    r = subprocess.run([_jupyter(), *argv[1:]], cwd=folder, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return (folder / "00-tour.html").read_text()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    """``{"executed": nb, "plain": html, "store_widget_state": html, "priority": html}``."""
    commands = documented_commands()
    assert len(commands) == 2, commands
    execute = next(c for c in commands if "--execute" in c)
    priority = next(c for c in commands if "--execute" not in c)
    assert "--ExecutePreprocessor.store_widget_state=False" in execute
    assert any(a.startswith("--NbConvertBase.display_data_priority=['text/html'") for a in priority)
    assert documented_commands(REPO / "docs" / "install.md") == commands  # the docs site gives the same

    root = tmp_path_factory.mktemp("nbconvert-static")
    out: dict = {}
    # 1. executed by nbclient with its defaults (the widget state is stored), then converted
    done = root / "executed"
    done.mkdir()
    nb = nbformat.read(TOUR, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(done)}}).execute()
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert state, "nbclient stored no widget state: the case this test is about is gone"
    nbformat.write(nb, str(done / "00-tour.ipynb"))
    out["executed"] = nb
    out["plain"] = _convert(["jupyter", "nbconvert", "--to", "html", "00-tour.ipynb"], done)
    out["priority"] = _convert(priority, done)
    shutil.copyfile(done / "00-tour.html", root / "priority.html")
    # 2. executed by nbconvert without storing the widget state
    fresh = root / "fresh"
    fresh.mkdir()
    shutil.copyfile(TOUR, fresh / "00-tour.ipynb")
    out["store_widget_state"] = _convert(execute, fresh)
    out["files"] = {"priority": root / "priority.html", "store_widget_state": fresh / "00-tour.html"}
    return out


def test_plain_nbconvert_of_an_executed_notebook_shows_the_widget_view(converted):
    """The problem the documented commands avoid (if nbconvert changes this, the README can be simpler)."""
    assert VIEW_SCRIPT in converted["plain"] and "ramlab-static" not in converted["plain"]


@pytest.mark.parametrize("way", ["store_widget_state", "priority"])
def test_documented_nbconvert_shows_the_static_pictures(converted, way):
    html = converted[way]
    widgets = _widget_outputs(converted["executed"])
    assert widgets >= 1
    assert html.count('class="ramlab-static"') + html.count("class='ramlab-static'") >= widgets
    assert VIEW_SCRIPT not in html
    assert "data:image/png;base64," in html and "<svg" in html  # the pass map and the bars


@pytest.mark.browser
@pytest.mark.parametrize("way", ["store_widget_state", "priority"])
def test_static_pictures_are_visible_offline_in_chromium(converted, way):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs {CHROMIUM}")
    page_file = converted["files"][way]
    blocked: list[str] = []
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu",
                                           "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:"))
                       else (blocked.append(r.request.url), r.abort()))
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            pictures = page.evaluate("""() => [...document.querySelectorAll('.ramlab-static')].map(fig => {
                const box = fig.getBoundingClientRect();
                const imgs = [...fig.querySelectorAll('img')];
                return {w: box.width, h: box.height, visible: fig.checkVisibility(),
                        imgs: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                        rects: fig.querySelectorAll('svg rect').length}; })""")
        finally:
            browser.close()
    widgets = _widget_outputs(converted["executed"])
    assert len(pictures) >= widgets, pictures
    for pic in pictures:
        assert pic["visible"] and pic["w"] > 100 and pic["h"] > 100, pic
        assert pic["imgs"] >= 1 and pic["decoded"] == pic["imgs"], pic  # the PNGs decode without any network
        assert pic["rects"] >= 3, pic
    assert all(not u.startswith("file:") for u in blocked)

"""Real-browser check of MigrationPlayer: JupyterLab + Debian's headless Chromium via Playwright.

Starts JupyterLab on 127.0.0.1 (token, free port, isolated config/settings/workspace dirs),
opens a notebook generated into a temp dir that builds a ``MigrationPlayer``, runs all cells
through ``window.jupyterapp.commands``, presses ArrowRight on the focused pass slider and
checks that the bokeh canvases' pixels change, that a box zoom re-renders from Python, and
that no error output appears.  Screenshots go to ``artifacts/screenshots/`` (git-ignored).
See shared/recipes/jupyterlab-browser-check/README.md for the traps this avoids.

The notebook decodes a bundled REAL capture (``data/xbzrle``, QEMU 7.2) with ``ramlab.open``
and shows ``m.player()``; pass other code to :func:`make_player_notebook` to change it.
``test_widgets_browser.py`` renders the other widgets with the same fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"

#: notebook code that defines ``m`` (a decoded migration) and ``trace``: a bundled REAL capture
TRACE_SOURCE = """\
import ramlab, ramlab.data
m = ramlab.open(ramlab.data.data_path("xbzrle"))   # real QEMU 7.2 capture with XBZRLE
trace = m.trace
m
"""

# Hash of every <canvas> reachable through (open) shadow roots: bokeh 3 draws inside shadow DOM.
CANVAS_HASH_JS = """
() => {
  const out = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.width > 100) {
        const d = el.getContext('2d').getImageData(0, 0, el.width, el.height).data;
        let h = 0;
        for (let i = 0; i < d.length; i += 97) { h = (h * 31 + d[i]) | 0; }
        out.push(h);
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return out.join(',');
}
"""

# Bounding box (page coordinates) of the largest canvas whose width is about the bitmap's.
BITMAP_CANVAS_BOX_JS = """
() => {
  let best = null;
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS') {
        const r = el.getBoundingClientRect();
        if (r.width > 300 && r.height > 300 && (!best || r.left < best.x)) {
          best = {x: r.left, y: r.top, width: r.width, height: r.height};
        }
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return best;
}
"""

KERNEL_IDLE_JS = """
() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
}
"""

ERRORS_JS = """
() => [...document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], .jupyter-widgets-error-widget')]
  .map(e => e.innerText.slice(0, 2000))
"""


def make_player_notebook(path: Path, trace_source: str = TRACE_SOURCE) -> Path:
    """Write the test notebook: setup, ``trace`` from ``trace_source``, then a MigrationPlayer."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# ramlab MigrationPlayer browser check"),
        new_code_cell("from ramlab.widgets import MigrationPlayer, setup\nsetup()"),
        new_code_cell(trace_source),
        new_code_cell("player = m.player() if 'm' in globals() else MigrationPlayer(trace)\nplayer"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server serving ``tmp_path/nbroot``; yields (url, token, root, log path)."""
    root = tmp_path / "nbroot"
    root.mkdir()
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), f"ramlab-{os.getpid()}-{time.time_ns()}"
    env = dict(os.environ)
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        PYTHONPATH=os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p),
    )
    log = tmp_path / "lab.log"
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter) if jupyter.exists() else "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.port_retries=0", "--allow-root", "--LabApp.news_url=None",
           "--LabApp.expose_app_in_browser=True"]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield url, token, root, log
    finally:
        proc.terminate()  # the server shuts its kernels down
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we created for this server only
            proc.wait(timeout=5)


@contextlib.contextmanager
def run_notebook_in_lab(sync_api, lab, notebook: str, viewport: dict, timings: dict, failure_png: str):
    """Open ``notebook`` in the running JupyterLab in Chromium and run all its cells.

    Yields ``(page, console)``; on an exception saves ``failure_png`` and prints the browser
    console and the server log. ``timings`` gets ``lab_open_s``.
    """
    url, token, _root, log = lab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=viewport)
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        try:
            t0 = time.perf_counter()
            page.goto(f"{url}/lab/tree/{notebook}?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
            page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000)
            timings["lab_open_s"] = round(time.perf_counter() - t0, 1)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            yield page, console
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / failure_png))
            print("console:\n" + "\n".join(console[-40:]))
            print("lab log:\n" + log.read_text()[-3000:])
            raise
        finally:
            browser.close()


def test_player_in_jupyterlab(jupyter_lab):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); never `playwright install`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    url, token, root, log = jupyter_lab
    make_player_notebook(root / "player.ipynb")
    timings: dict[str, float] = {}
    with run_notebook_in_lab(sync_api, jupyter_lab, "player.ipynb", {"width": 1400, "height": 1000},
                             timings, "player-failure.png") as (page, console):
        t0 = time.perf_counter()
        handle = page.locator(".jp-OutputArea-output .widget-slider .noUi-handle").first
        handle.wait_for(state="visible", timeout=60_000)
        page.wait_for_function(f"({CANVAS_HASH_JS})().split(',').length >= 3", timeout=60_000)
        page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000)
        page.wait_for_timeout(800)  # let bokeh finish painting
        timings["run_all_to_widget_s"] = round(time.perf_counter() - t0, 1)
        out = page.locator(".jp-OutputArea-output:has(.widget-slider)").first
        out.scroll_into_view_if_needed()
        out.screenshot(path=str(SCREENSHOTS / "player-pass0.png"))
        assert page.evaluate(ERRORS_JS) == []

        # keyboard: focus the slider, ArrowRight -> pass 1 -> canvas pixels change
        h0 = page.evaluate(CANVAS_HASH_JS)
        handle.focus()
        t0 = time.perf_counter()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"({CANVAS_HASH_JS})() !== {json.dumps(h0)}", polling="raf",
                               timeout=30_000)
        timings["key_to_canvas_change_ms"] = round((time.perf_counter() - t0) * 1e3)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output .widget-readout')]"
            ".some(e => e.innerText.trim() === '1')", timeout=10_000)
        page.wait_for_timeout(500)
        out.screenshot(path=str(SCREENSHOTS / "player-pass1.png"))
        h1 = page.evaluate(CANVAS_HASH_JS)
        assert h1 != h0
        assert "pass 1" in out.inner_text()

        # box zoom on the page map: the RangesUpdate event reaches Python, which re-renders
        box = page.evaluate(BITMAP_CANVAS_BOX_JS)
        assert box is not None, "bitmap canvas not found"
        x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 60, y0 + 40, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output .widget-html')]"
            ".some(e => e.innerText.includes('full resolution') && e.innerText.includes('rows'))",
            timeout=30_000)
        page.wait_for_timeout(500)
        out.screenshot(path=str(SCREENSHOTS / "player-zoomed.png"))
        assert page.evaluate(CANVAS_HASH_JS) != h1
        errors = page.evaluate(ERRORS_JS)
        assert errors == [], errors
    print("browser timings:", json.dumps(timings))
    page_errors = [c for c in console if c.startswith("pageerror")]
    assert page_errors == [], page_errors

"""JupyterLab + Debian's headless Chromium, driven by Playwright: shared by the browser tests and
``benchmarks/bench_browser.py``.

* :class:`LabServer` starts JupyterLab on 127.0.0.1 (token, free port, isolated config / settings /
  workspace folders, ``expose_app_in_browser`` so JupyterLab is driven through its command registry,
  news and update checks off) serving a folder of notebooks written by :func:`write_notebook`, and
  stops it by its process group.
* :func:`lab_page` opens a notebook in Chromium, **offline**: every request that is not to the
  local server is aborted and recorded (so a CDN dependency fails the test).
* :data:`MONITOR_JS` instruments a page: a ``requestAnimationFrame`` loop hashes the canvases of a
  target each frame (bokeh 3 draws inside shadow DOM), a capture-phase ``keydown`` listener stamps
  key presses, and a ``longtask`` observer records blocking tasks.  Key press -> first frame with
  changed pixels, repaints per change and frame gaps are read from it.

See shared/recipes/jupyterlab-browser-check/README.md for the traps this avoids.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"

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

#: ``(selector) -> {found, canvases, drawn, hash}``: canvases below an element (through shadow roots);
#: ``drawn`` counts those with more than two colours.
WIDGET_CANVASES_JS = """
(sel) => {
  const host = document.querySelector(sel);
  if (!host) return {found: false, canvases: 0, drawn: 0, hash: ''};
  let canvases = 0, drawn = 0, h = 0;
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.width > 50 && el.height > 20) {
        canvases++;
        const d = el.getContext('2d').getImageData(0, 0, el.width, el.height).data;
        const distinct = new Set();
        for (let i = 0; i < d.length; i += 4 * 53) { distinct.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
                                                     h = (h * 31 + d[i]) | 0; }
        if (distinct.size > 2) drawn++;
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(host);
  return {found: true, canvases, drawn, hash: String(h)};
}
"""

#: ``(selector) -> str``: the text below an element, shadow roots included (bokeh 3 renders its Divs
#: inside shadow DOM, which ``innerText`` does not enter)
TEXT_JS = """
(sel) => { const host = document.querySelector(sel); if (!host) return ''; const out = [];
  const walk = (root) => { for (const n of root.childNodes) {
      if (n.nodeType === 3) out.push(n.textContent);
      else if (n.nodeType === 1 && !['STYLE', 'SCRIPT'].includes(n.tagName)) {
        if (n.shadowRoot) walk(n.shadowRoot);
        walk(n); } } };
  walk(host); return out.join(' ').replace(/\\s+/g, ' '); }
"""


#: ``(selector) -> JSON``: geometry of a widget and of each of its plots and text boxes (page coordinates,
#: rounded); the player's and the live view's layout tests compare it across updates
GEOMETRY_JS = """
(sel) => { const host = document.querySelector(sel); const r = host.getBoundingClientRect();
  const boxes = [[Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height)]];
  const walk = (root) => { for (const el of root.querySelectorAll('*')) {
      // every canvas, and the box of every text (the host of a bokeh Div, not its content)
      const box = el.tagName === 'CANVAS' ? el
        : (el.classList && el.classList.contains('bk-clearfix')) ? el.getRootNode().host : null;
      if (box) {
        const b = box.getBoundingClientRect();
        boxes.push([Math.round(b.left), Math.round(b.top), Math.round(b.width), Math.round(b.height)]); }
      if (el.shadowRoot) walk(el.shadowRoot); } };
  walk(host);
  return JSON.stringify(boxes); }
"""

#: ``(selector) -> [str]``: text that does not show: boxes whose content overflows them (clipped or hidden
#: behind a scroll), text outside the widget, and the output area cutting the widget (horizontal overflow)
CLIPPED_JS = """
(sel) => { const host = document.querySelector(sel); const hr = host.getBoundingClientRect(); const bad = [];
  const out = host.closest('.jp-OutputArea-output');
  if (out && out.scrollWidth > out.clientWidth + 1) bad.push(`output cut: ${out.scrollWidth} > ${out.clientWidth}`);
  const walk = (root) => { for (const el of root.querySelectorAll('*')) {
      const text = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
      if (text) {
        const r = el.getBoundingClientRect();
        const out = r.left < hr.left - 1 || r.right > hr.right + 1 || r.top < hr.top - 1 || r.bottom > hr.bottom + 1;
        if (r.width && out)
          bad.push(`outside: ${el.textContent.slice(0, 40)}`);
      }
      const st = getComputedStyle(el);
      if (!el.textContent.trim() || el.tagName === 'STYLE') { if (el.shadowRoot) walk(el.shadowRoot); continue; }
      if (el.clientHeight && ['hidden', 'auto', 'scroll', 'clip'].includes(st.overflowY)
          && el.scrollHeight > el.clientHeight + 2) bad.push(`clipped (${el.scrollHeight} > ${el.clientHeight}): `
                                                            + el.textContent.slice(0, 60));
      if (el.clientWidth && ['hidden', 'auto', 'scroll', 'clip'].includes(st.overflowX)
          && el.scrollWidth > el.clientWidth + 2) bad.push(`clipped sideways: ${el.textContent.slice(0, 60)}`);
      if (el.shadowRoot) walk(el.shadowRoot); } };
  walk(host);
  return bad; }
"""


def text_of(page: Any, sel: str) -> str:
    return page.evaluate(f"({TEXT_JS})({json.dumps(sel)})")


def wait_text(page: Any, sel: str, text: str, present: bool = True, timeout_ms: int = 30_000) -> None:
    """Wait until the text below ``sel`` (shadow roots included) contains ``text`` (or no longer does)."""
    check = f"({TEXT_JS})({json.dumps(sel)}).includes({json.dumps(text)})"
    page.wait_for_function(f"() => {'' if present else '!'}{check}", timeout=timeout_ms)


#: Installs ``window.__rlmon`` watching the target ``sel`` (re-resolved every frame, so it may appear
#: later).  Until every plot below the target is drawn it reads one pixel row through the middle of
#: each canvas (cheap: it must not slow the render it measures); after, it hashes every frame what
#: ``pick`` says: ``"largest"`` the canvases of the largest plot (the page map), ``"all"`` every canvas,
#: ``"dom"`` the target's text (widgets without a canvas).  ``changes`` are the frames whose hash moved.
#: (``"largest"`` hashes the plot's primary canvas layer: bokeh draws a box-zoom band or a tooltip
#: target on its overlay layer, which is not a repaint of the map.)
MONITOR_JS = """
([sel, pick]) => {
  const mon = {frames: [], changes: [], keys: [], longtasks: [], drawnAt: null, allDrawnAt: null, foundAt: null,
               t0: performance.now(), last: null, stop: false};
  window.__rlmon = mon;
  const canvasesOf = (host, which) => {
    const out = [];
    const walk = (root) => {
      for (const el of root.querySelectorAll('*')) {
        if (el.tagName === 'CANVAS' && el.width > 50 && el.height > 20) out.push(el);
        if (el.shadowRoot) walk(el.shadowRoot);
      }
    };
    walk(host);
    if (which !== 'largest' || !out.length) return out;
    const area = (c) => { const r = c.getBoundingClientRect(); return r.width * r.height; };
    const key = (c) => { const r = c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height].join(); };
    const best = out.reduce((a, b) => area(b) > area(a) ? b : a);
    return out.filter(c => key(c) === key(best)).slice(0, 1);  // its primary layer (not the overlays)
  };
  // every plot drawn: one of its layers (bokeh stacks a mostly empty overlay canvas) has > 2 colours
  // on the pixel row through its middle
  const drawn = (host) => {
    if (pick === 'dom') return host.innerText.length > 0;
    const plots = new Map();
    for (const c of canvasesOf(host, 'all')) {
      const r = c.getBoundingClientRect(), key = [r.left, r.top, r.width, r.height].join();
      const d = c.getContext('2d').getImageData(0, Math.floor(c.height / 2), c.width, 1).data;
      const distinct = new Set();
      for (let i = 0; i < d.length && distinct.size < 4; i += 4) distinct.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
      plots.set(key, (plots.get(key) || false) || distinct.size > 2);
    }
    return plots.size > 0 && [...plots.values()].every(v => v);
  };
  const digest = (host) => {
    let h = 0;
    if (pick === 'dom') {
      const t = host.innerText;
      for (let i = 0; i < t.length; i++) h = (h * 31 + t.charCodeAt(i)) | 0;
      return h;
    }
    for (const c of canvasesOf(host, pick)) {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4 * 13) h = (h * 31 + d[i] + 3 * d[i + 1] + 7 * d[i + 2]) | 0;
    }
    return h;
  };
  document.addEventListener('keydown', (e) => mon.keys.push({t: e.timeStamp, key: e.key}), true);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) mon.longtasks.push({t: e.startTime, d: e.duration});
    }).observe({entryTypes: ['longtask']});
  } catch (e) {}
  const tick = (t) => {
    if (mon.stop) return;
    mon.frames.push(t);
    if (mon.frames.length > 20000) mon.frames.splice(0, 10000);
    const host = document.querySelector(sel);
    if (host) {
      if (mon.foundAt === null) mon.foundAt = t;
      if (mon.allDrawnAt === null) {
        if (drawn(host)) mon.drawnAt = mon.allDrawnAt = t;
      } else {
        const hash = digest(host);
        if (mon.last !== null && hash !== mon.last) mon.changes.push(t);
        mon.last = hash;
      }
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  return true;
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str], title: str = "ramlab browser check") -> Path:
    """A notebook of a markdown title and one code cell per string of ``cells``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.cells = [new_markdown_cell(f"# {title}")] + [new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


class LabServer:
    """A JupyterLab server on 127.0.0.1 serving ``workdir/nbroot`` (``root``); a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.root = self.workdir / "nbroot"
        self.log = self.workdir / "lab.log"
        self.port = free_port()
        self.token = f"ramlab-{os.getpid()}-{time.time_ns()}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LabServer:
        self.root.mkdir(parents=True, exist_ok=True)
        settings = self.workdir / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ)
        env.update(
            JUPYTERLAB_SETTINGS_DIR=str(self.workdir / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.workdir / "ws"),
            JUPYTER_CONFIG_DIR=str(self.workdir / "config"),
            JUPYTER_RUNTIME_DIR=str(self.workdir / "runtime"),
            PYTHONPATH=os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p),
        )
        jupyter = Path(sys.executable).with_name("jupyter")
        cmd = [str(jupyter) if jupyter.exists() else "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--ServerApp.port_retries=0", "--allow-root",
               "--LabApp.news_url=None", "--LabApp.expose_app_in_browser=True"]
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2).read()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"jupyter lab did not start:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.3)

    def __exit__(self, *exc: Any) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()  # the server shuts its kernels down
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group started for this server only
            proc.wait(timeout=5)

    def notebook_url(self, name: str) -> str:
        """The notebook alone in JupyterLab (``reset``: no tabs restored from an earlier page)."""
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        """Stop every kernel of the server (REST API), e.g. between notebooks that hold large traces."""
        kernels = json.loads(urllib.request.urlopen(f"{self.url}/api/kernels?token={self.token}", timeout=10).read())
        for k in kernels:
            req = urllib.request.Request(f"{self.url}/api/kernels/{k['id']}?token={self.token}", method="DELETE")
            urllib.request.urlopen(req, timeout=30).read()


def launch_browser(pw: Any) -> Any:
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def offline_context(browser: Any, server: LabServer, viewport: dict[str, int], blocked: list[str]) -> Any:
    """A browser context that reaches only the local server: other requests are aborted into ``blocked``."""
    ctx = browser.new_context(viewport=viewport)
    local = (f"http://127.0.0.1:{server.port}/", f"ws://127.0.0.1:{server.port}/")

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(local) or url.startswith(("data:", "blob:", "about:")):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    ctx.route("**/*", route)
    return ctx


def open_notebook(page: Any, server: LabServer, name: str, timeout_ms: int = 90_000) -> None:
    """Open ``name`` in JupyterLab and wait for its kernel to be idle (left sidebar collapsed)."""
    page.goto(server.notebook_url(name))
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook", timeout=timeout_ms)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)
    page.evaluate("""() => { const s = window.jupyterapp.shell;
        if (!s.leftCollapsed) s.collapseLeft(); if (!s.rightCollapsed) s.collapseRight(); }""")


def run_all(page: Any) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def run_cell(page: Any, index: int) -> float:
    """Run code cell ``index`` (0 = the first cell of the notebook); returns the page time (ms) of the request."""
    return page.evaluate("""(i) => { const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = i; const t = performance.now();
        window.jupyterapp.commands.execute('notebook:run-cell'); return t; }""", index)


def wait_idle(page: Any, timeout_ms: int = 120_000) -> None:
    page.wait_for_timeout(200)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)


def save(page: Any) -> None:
    """Save the current notebook and wait until JupyterLab says it is clean."""
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)


@contextlib.contextmanager
def lab_page(pw: Any, server: LabServer, notebook: str, viewport: dict[str, int], failure_png: str,
             ) -> Iterator[tuple[Any, list[str], list[str]]]:
    """Open ``notebook`` offline; yields ``(page, console, blocked_urls)``. On an exception: a screenshot
    ``failure_png`` in ``artifacts/screenshots`` and the console / server log printed."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser = launch_browser(pw)
    console: list[str] = []
    blocked: list[str] = []
    try:
        ctx = offline_context(browser, server, viewport, blocked)
        page = ctx.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        try:
            open_notebook(page, server, notebook)
            yield page, console, blocked
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(SCREENSHOTS / failure_png))
            print("console:\n" + "\n".join(console[-40:]))
            print("blocked requests:", blocked[:20])
            print("lab log:\n" + server.log.read_text()[-3000:])
            raise
    finally:
        browser.close()


def page_errors(console: list[str]) -> list[str]:
    return [c for c in console if c.startswith("pageerror")]

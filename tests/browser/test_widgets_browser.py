"""Real-browser checks of all five ramlab widgets on bundled REAL captures (JupyterLab + Chromium, offline).

One notebook (generated into a temp dir) renders MigrationPlayer and BitmapView (``data/xbzrle``),
XbzrleDeltaView on a real XBZRLE page of it, PostcopyDiscardView on ``data/postcopy-hugepages`` (the
stream's own discards) and on a discard plan, and StreamInspector on a truncated copy of ``data/plain``.
The browser reaches nothing but the local server (a CDN dependency would fail).  The tests:

* every widget draws, no error output; keyboard on the player (one repaint a key), the XBZRLE strip's
  widen keys, a step chosen in the postcopy view (both maps in one repaint), a box zoom and reset on
  the bitmap, the inspector's "jump to error"; one small PNG per widget in ``artifacts/screenshots/``
  (and ``docs/images/`` with ``RAMLAB_UPDATE_DOCS=1``);
* the notebook saved by JupyterLab is small (< 1.5 MB, no BokehJS inside);
* reopen-safe: the saved notebook opened in a new browser, and that page reloaded, on the live kernel,
  renders every widget again (at the pass the kernel is on), and a new widget made there renders too;
* static fallback: ``jupyter nbconvert --to html`` of the saved notebook, opened in Chromium from a file,
  shows a picture of each widget (image pixels, not only text).

    RAMLAB_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/browser/test_widgets_browser.py
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _labharness import (
    ERRORS_JS,
    KERNEL_IDLE_JS,
    MONITOR_JS,
    REPO,
    SCREENSHOTS,
    WIDGET_CANVASES_JS,
    LabServer,
    lab_page,
    launch_browser,
    page_errors,
    run_all,
    run_cell,
    save,
    text_of,
    wait_idle,
    wait_text,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_IMAGES = REPO / "docs" / "images"
MAX_PNG_BYTES = 120_000
MAX_SAVED_BYTES = 1_500_000

#: widget name -> notebook code that builds it (``w``); each output gets the class ``shot-<name>``
WIDGET_CELLS: dict[str, str] = {
    "migration_player": "w = m.player()",
    "bitmap_view": "w = m.bitmap(1)",
    "xbzrle_delta_view": """\
# a real XBZRLE page of the capture: the first one whose delta has several runs
pages = np.argwhere(m.trace.classes == PageClass.XBZRLE)[:200].tolist()
best = max(pages, key=lambda pg: len(analyze_delta(*m.trace.page_bytes(*pg)).tokens))
w = m.xbzrle_delta(*best)""",
    "postcopy_discard_view": """\
mh = ramlab.open(ramlab.data.data_path("postcopy-hugepages"))   # 2 MiB host pages
w = PostcopyDiscardView.from_migration(mh)""",
    "postcopy_discard_plan": """\
rng = np.random.default_rng(7)
dirty = rng.random(1024) < 0.03                    # re-dirtied target pages
unsent = np.zeros(1024, bool); unsent[700:] = True; unsent[rng.integers(0, 700, 5)] = True
w = PostcopyDiscardView((dirty, unsent), host_ratio=32, block="m0")
w.show_step(0)                                     # the seed's unsent pass, its fix-ups outlined""",
    "stream_inspector": """\
raw = read_stream(ramlab.data.data_path("plain") / "stream.bin.zst")
mt = ramlab.open(bytes(raw[: len(raw) * 2 // 3]))  # a damaged (truncated) capture
w = mt.inspector()""",
}

#: the bokeh-based widgets must have drawn canvases
CANVAS_WIDGETS = ("migration_player", "bitmap_view", "xbzrle_delta_view", "postcopy_discard_view",
                  "postcopy_discard_plan")

SETUP = """\
import numpy as np
import ramlab, ramlab.data
from ramlab.io import read_stream
from ramlab.trace import PageClass
from ramlab.widgets import PostcopyDiscardView, setup
from ramlab.widgets.xbzrle_view import analyze_delta
setup()
m = ramlab.open(ramlab.data.data_path("xbzrle"))   # real QEMU 7.2 capture with XBZRLE
m"""

VIEWPORT = {"width": 1500, "height": 1900}


#: the labs draw plain bokeh figures with show(): after setup() they land in the notebook
SHOW = """\
from bokeh.plotting import figure, show
f = figure(width=320, height=160, title="shown with bokeh.plotting.show")
f.line([0, 1, 2, 3], [3, 1, 4, 1], line_width=3)
show(f)"""


def _cells() -> list[str]:
    return [SETUP] + [f"{code}\nw.add_class('shot-{name}')\nw" for name, code in WIDGET_CELLS.items()] + [SHOW]


def _drawn(page, name: str) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate(f"({WIDGET_CANVASES_JS})('.shot-{name}')")


def _wait_all_drawn(page, timeout_ms: int = 90_000) -> None:  # type: ignore[no-untyped-def]
    for name in WIDGET_CELLS:
        page.wait_for_selector(f".shot-{name}", state="attached", timeout=timeout_ms)
    for name in CANVAS_WIDGETS:
        page.locator(f".shot-{name}").first.scroll_into_view_if_needed()
        page.wait_for_function(f"({WIDGET_CANVASES_JS})('.shot-{name}').drawn >= 1", timeout=timeout_ms)


def _small_png(png: bytes, limit: int = MAX_PNG_BYTES) -> bytes:
    """The screenshot as is if it fits ``limit``, else a 256-colour palette PNG, scaled down until it fits."""
    from PIL import Image

    if len(png) <= limit:
        return png
    img = Image.open(io.BytesIO(png)).convert("RGB")
    scale = 1.0
    while True:
        im = img if scale == 1.0 else img.resize((int(img.width * scale), int(img.height * scale)),
                                                 Image.LANCZOS)
        buf = io.BytesIO()
        im.quantize(colors=256, method=Image.FASTOCTREE, dither=Image.NONE).save(buf, "PNG", optimize=True)
        if buf.tell() <= limit or scale < 0.3:
            return buf.getvalue()
        scale *= 0.8


def _shoot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    loc = page.locator(f".shot-{name}").first
    loc.scroll_into_view_if_needed()
    page.mouse.move(2, 2)  # no tooltip in the picture
    page.wait_for_timeout(300)
    out = SCREENSHOTS / f"{name}.png"
    out.write_bytes(_small_png(loc.screenshot()))
    return out


@pytest.fixture(scope="module")
def playwright(playwright):  # type: ignore[no-untyped-def]
    """The shared fixture (conftest.py), and pillow to keep the screenshots small."""
    pytest.importorskip("PIL", reason="pillow is needed to keep the screenshots small")
    return playwright


@pytest.fixture(scope="module")
def lab(tmp_path_factory, playwright):
    with LabServer(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="module")
def executed(lab, playwright):
    """The widgets notebook run in JupyterLab, driven (player at pass 2), screenshotted and saved."""
    write_notebook(lab.root / "widgets.ipynb", _cells(), title="ramlab widgets on real captures")
    info: dict = {"timings": {}}
    with lab_page(playwright, lab, "widgets.ipynb", VIEWPORT, "widgets-failure.png") as (page, console, blocked):
        t0 = time.perf_counter()
        run_all(page)
        _wait_all_drawn(page)
        wait_idle(page)
        info["timings"]["run_all_to_widgets_s"] = round(time.perf_counter() - t0, 1)
        last = ".jp-Notebook .jp-Cell:last-child .jp-OutputArea"
        page.locator(last).first.scroll_into_view_if_needed()
        page.wait_for_function(f"({WIDGET_CANVASES_JS})('{last}').drawn >= 1", timeout=90_000)
        info["errors"] = page.evaluate(ERRORS_JS)
        info["texts"] = {name: text_of(page, f".shot-{name}") for name in WIDGET_CELLS}
        info["interactions"] = _interact(page, info["timings"])
        info["shots"] = {name: _shoot(page, name) for name in WIDGET_CELLS}
        info["errors_after"] = page.evaluate(ERRORS_JS)
        save(page)
        info["console"], info["blocked"] = list(console), list(blocked)
    info["saved"] = lab.root / "widgets.ipynb"
    print("browser timings:", json.dumps(info["timings"]))
    return info


def _interact(page, timings: dict) -> dict:  # type: ignore[no-untyped-def]
    """Drive each widget; returns what was observed (asserted by the test)."""
    seen: dict = {}
    # player: keys on the player (it takes the focus on a click); the page map repaints once a key
    player = page.locator(".shot-migration_player").first
    player.scroll_into_view_if_needed()
    page.evaluate(MONITOR_JS, [".shot-migration_player", "largest"])
    keys = player.locator("[data-ramlab-keys]").first
    keys.focus()
    repaints, latencies = [], []
    for key in ("ArrowRight", "ArrowRight", "ArrowLeft", "End", "Home", "ArrowRight", "ArrowRight"):
        n0 = page.evaluate("() => window.__rlmon.changes.length")
        k0 = page.evaluate("() => window.__rlmon.keys.length")
        page.keyboard.press(key)
        page.wait_for_function(f"() => window.__rlmon.changes.length > {n0}", timeout=30_000)
        page.wait_for_timeout(400)
        mon = page.evaluate(f"() => ({{c: window.__rlmon.changes.slice({n0}), k: window.__rlmon.keys[{k0}]}})")
        repaints.append(len(mon["c"]))
        latencies.append(round(mon["c"][0] - mon["k"]["t"]))
    timings["player_key_to_pixels_ms"] = latencies
    seen["player_repaints"] = repaints
    wait_text(page, ".shot-migration_player", "pass 2 of")
    # space plays, space again pauses
    page.keyboard.press("Space")
    wait_text(page, ".shot-migration_player", "pass 4 of")
    page.keyboard.press("Space")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")  # leave it at pass 2 (the reopen test expects it)
    wait_text(page, ".shot-migration_player", "pass 2 of")
    seen["played"] = True

    # bitmap: box zoom (Python re-renders at full resolution), then reset -> whole RAM again
    bm = page.locator(".shot-bitmap_view").first
    bm.scroll_into_view_if_needed()
    h0 = _drawn(page, "bitmap_view")["hash"]
    box = page.evaluate("""() => { let best = null; const walk = (root) => {
        for (const el of root.querySelectorAll('*')) { if (el.tagName === 'CANVAS') {
          const r = el.getBoundingClientRect();
          if (!best || r.width * r.height > best.width * best.height) best = {x: r.left, y: r.top, width: r.width,
                                                                              height: r.height}; }
          if (el.shadowRoot) walk(el.shadowRoot); } };
        walk(document.querySelector('.shot-bitmap_view')); return best; }""")
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 80, y0 + 40, steps=8)
    page.mouse.up()
    wait_text(page, ".shot-bitmap_view", "zoomed on rows")
    page.wait_for_function(f"({WIDGET_CANVASES_JS})('.shot-bitmap_view').hash !== {json.dumps(h0)}",
                           timeout=30_000)
    seen["zoom_full_resolution"] = "1 pixel = 1 page" in text_of(page, ".shot-bitmap_view")
    reset = page.evaluate("""() => { const walk = (root) => { for (const el of root.querySelectorAll('*')) {
          if (el.classList && [...el.classList].some(c => c.includes('reset'))) {
            const r = el.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; }
          if (el.shadowRoot) { const f = walk(el.shadowRoot); if (f) return f; } } return null; };
        return walk(document.querySelector('.shot-bitmap_view')); }""")
    page.mouse.click(reset["x"], reset["y"])
    wait_text(page, ".shot-bitmap_view", "zoomed", present=False)

    # XBZRLE strip: opens on the change; "w" shows the whole page, "0" the change again
    dv = page.locator(".shot-xbzrle_delta_view").first
    dv.scroll_into_view_if_needed()
    hd0 = _drawn(page, "xbzrle_delta_view")["hash"]
    dv.locator("[data-ramlab-keys]").first.focus()
    page.keyboard.press("w")
    page.wait_for_function(f"({WIDGET_CANVASES_JS})('.shot-xbzrle_delta_view').hash !== {json.dumps(hd0)}",
                           timeout=10_000)
    page.keyboard.press("0")
    page.wait_for_function(f"({WIDGET_CANVASES_JS})('.shot-xbzrle_delta_view').hash === {json.dumps(hd0)}",
                           timeout=10_000)
    seen["delta_keys"] = True

    # postcopy plan: a step chosen in the page is shown by the page, both maps in one repaint
    page.evaluate("() => { window.__rlmon.stop = true; }")  # the player's monitor
    pc = page.locator(".shot-postcopy_discard_plan").first
    pc.scroll_into_view_if_needed()
    page.evaluate(MONITOR_JS, [".shot-postcopy_discard_plan", "all"])
    page.wait_for_function("() => window.__rlmon.allDrawnAt !== null", timeout=30_000)
    page.wait_for_timeout(400)
    step_repaints, step_latencies = [], []
    for index, label in ((1, "2. dirty_pass"), (3, "4. send_runs"), (0, "1. unsent_pass")):
        n0 = page.evaluate("() => window.__rlmon.changes.length")
        t0 = page.evaluate("() => performance.now()")
        pc.locator("select").first.select_option(index=index)
        page.wait_for_function(f"() => window.__rlmon.changes.length > {n0}", timeout=10_000)
        pc.locator("b", has_text=label).first.wait_for(state="attached", timeout=10_000)  # the summary
        page.wait_for_timeout(400)
        changes = page.evaluate(f"() => window.__rlmon.changes.slice({n0})")
        step_repaints.append(len(changes))
        step_latencies.append(round(changes[0] - t0))
    page.evaluate("() => { window.__rlmon.stop = true; }")
    timings["postcopy_step_to_pixels_ms"] = step_latencies
    seen["postcopy_step_repaints"] = step_repaints

    # inspector: pick another row, then "jump to error" selects the ERROR row again
    ins = page.locator(".shot-stream_inspector").first
    ins.scroll_into_view_if_needed()
    ins.locator(".widget-select select").first.select_option(index=3)
    error_shown = "() => /row \\d+: ERROR/.test(document.querySelector('.shot-stream_inspector').innerText)"
    page.wait_for_function(f"() => !({error_shown})()", timeout=10_000)
    ins.get_by_role("button", name="jump to error").click()
    page.wait_for_function(error_shown, timeout=10_000)
    seen["inspector_rows"] = ins.locator(".widget-select select option").count()
    return seen


def test_widgets_render_and_respond_offline(executed):
    info = executed
    assert info["errors"] == [] and info["errors_after"] == [], info["errors"] + info["errors_after"]
    assert info["blocked"] == [], f"requests beyond the local server: {info['blocked'][:5]}"
    assert page_errors(info["console"]) == []
    seen = info["interactions"]
    assert seen["player_repaints"] == [1] * len(seen["player_repaints"]), seen["player_repaints"]
    assert seen["zoom_full_resolution"] and seen["delta_keys"] and seen["played"]
    assert seen["postcopy_step_repaints"] == [1, 1, 1], seen["postcopy_step_repaints"]
    assert seen["inspector_rows"] >= 10
    t = info["texts"]
    assert "records)" in t["stream_inspector"] and "decoding stopped" in t["stream_inspector"]
    assert "POSTCOPY_RAM_DISCARD" in t["postcopy_discard_view"] and "agree" in t["postcopy_discard_view"]
    assert "encoded" in t["xbzrle_delta_view"] and "shown below" in t["xbzrle_delta_view"]
    sizes = {name: p.stat().st_size for name, p in info["shots"].items()}
    print("screenshot bytes:", json.dumps(sizes))
    assert all(size <= MAX_PNG_BYTES for size in sizes.values()), sizes
    if os.environ.get("RAMLAB_UPDATE_DOCS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        for name, p in info["shots"].items():
            shutil.copyfile(p, DOCS_IMAGES / f"{name}.png")


def test_saved_notebook_is_small(executed):
    saved = executed["saved"]
    size = saved.stat().st_size
    text = saved.read_text()
    print(f"saved notebook: {size:,} bytes")
    assert size < MAX_SAVED_BYTES, size
    assert "BEGIN bokeh.min.js" not in text and "BEGIN bokeh-widgets.min.js" not in text  # BokehJS is not in it
    nb = json.loads(text)
    mimes = [m for c in nb["cells"] for o in c.get("outputs", []) for m in o.get("data", {})]
    assert mimes.count("application/vnd.jupyter.widget-view+json") == 1 + len(WIDGET_CELLS)  # setup + widgets
    assert "application/vnd.bokehjs_exec.v0+json" in mimes  # the figure drawn with show()


def test_reopen_in_a_new_browser_and_reload(executed, lab, playwright):
    """The notebook opened again (another browser: nothing of the first page) on the running kernel."""
    with lab_page(playwright, lab, "widgets.ipynb", VIEWPORT, "reopen-failure.png") as (page, console, blocked):
        _wait_all_drawn(page)
        wait_text(page, ".shot-migration_player", "pass 2 of")
        assert page.evaluate(ERRORS_JS) == []
        h_reopen = _drawn(page, "migration_player")["hash"]
        page.reload()
        page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000)
        _wait_all_drawn(page)
        wait_text(page, ".shot-migration_player", "pass 2 of")
        # a widget made in this page, on the kernel that ran setup() already, renders too
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:insert-cell-below')")
        cells = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length")
        page.evaluate(f"""() => {{ const nb = window.jupyterapp.shell.currentWidget.content;
            nb.activeCellIndex = {cells - 1};
            nb.activeCell.model.sharedModel.setSource("w2 = m.bitmap(2)\\nw2.add_class('shot-new')\\nw2"); }}""")
        run_cell(page, cells - 1)
        wait_idle(page)
        page.wait_for_function(f"({WIDGET_CANVASES_JS})('.shot-new').drawn >= 1", timeout=60_000)
        assert page.evaluate(ERRORS_JS) == []
        assert blocked == [] and page_errors(console) == []
        assert h_reopen  # the player drew in the reopened page


def test_static_fallback_after_nbconvert(executed, tmp_path, playwright):
    """``jupyter nbconvert --to html`` of the saved notebook shows a picture of every widget."""
    jupyter = Path(sys.executable).with_name("jupyter")
    out = tmp_path / "widgets.html"
    subprocess.run([str(jupyter) if jupyter.exists() else "jupyter", "nbconvert", "--to", "html",
                    "--output", str(out), str(executed["saved"])], check=True, capture_output=True, timeout=300)
    html = out.read_text()
    assert html.count("ramlab-static") >= len(WIDGET_CELLS)
    browser = launch_browser(playwright)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        blocked: list[str] = []
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:"))
                   else (blocked.append(r.request.url), r.abort()))
        page.goto(out.as_uri())
        page.wait_for_timeout(1500)
        pictures = page.evaluate("""() => [...document.querySelectorAll('.ramlab-static')].map(fig => {
            const imgs = [...fig.querySelectorAll('img')].map(img => {
              const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
              if (!c.width) return 0;
              const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
              const d = ctx.getImageData(0, 0, c.width, c.height).data; const colours = new Set();
              for (let i = 0; i < d.length; i += 4 * 7) colours.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
              return colours.size; });
            const svgs = [...fig.querySelectorAll('svg rect')].length;
            return {imgs, svgs, text: fig.innerText.slice(0, 80)}; })""")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "nbconvert-static.png"), full_page=True)
    finally:
        browser.close()
    assert len(pictures) >= len(WIDGET_CELLS), pictures
    for pic in pictures:
        drawn = any(n >= 2 for n in pic["imgs"]) or pic["svgs"] >= 10 or "Stream inspector" in pic["text"]
        assert drawn, pic
    player = next(p for p in pictures if p["text"].startswith("Migration player"))
    assert max(player["imgs"]) >= 3 and player["svgs"] >= 10  # the page map and the bars

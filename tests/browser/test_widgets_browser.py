"""Real-browser check of all five ramlab widgets on bundled REAL captures (JupyterLab + Chromium).

One notebook renders MigrationPlayer and BitmapView (``data/xbzrle``), XbzrleDeltaView on a real
XBZRLE page of it, PostcopyDiscardView on ``data/postcopy-hugepages`` (the stream's own discards)
and on a discard plan, and StreamInspector on a truncated copy of ``data/plain``.  The test runs
all cells, asserts no error output, that every widget rendered (bokeh canvas pixels drawn, table
rows present), moves the player's pass slider with the keyboard and checks the canvas pixels
change, clicks the inspector's "jump to error", and saves one small PNG per widget into
``artifacts/screenshots/``.  With ``RAMLAB_UPDATE_DOCS=1`` the PNGs are also copied to
``docs/images/<widget>.png`` (committed, referenced by README.md).

    RAMLAB_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/browser/test_widgets_browser.py
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from test_player_browser import (  # noqa: F401  (jupyter_lab is a fixture used below)
    CANVAS_HASH_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    ERRORS_JS,
    KERNEL_IDLE_JS,
    REPO,
    SCREENSHOTS,
    jupyter_lab,
    run_notebook_in_lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_IMAGES = REPO / "docs" / "images"
MAX_PNG_BYTES = 120_000

#: widget name -> notebook code that builds it (``w``) ; each output gets the class ``shot-<name>``
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

# canvases (with something drawn: not all one colour) below an element, through shadow roots
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
        let distinct = new Set();
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


def make_widgets_notebook(path: Path) -> Path:
    """Write the notebook: setup + one cell per widget (output tagged ``shot-<name>``)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.cells = [new_markdown_cell("# ramlab widgets on real captures"), new_code_cell(SETUP)]
    for name, code in WIDGET_CELLS.items():
        nb.cells.append(new_code_cell(f"{code}\nw.add_class('shot-{name}')\nw"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


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
    page.wait_for_timeout(300)
    out = SCREENSHOTS / f"{name}.png"
    out.write_bytes(_small_png(loc.screenshot()))
    return out


def test_all_widgets_in_jupyterlab(jupyter_lab):  # noqa: F811 - the imported fixture
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); never `playwright install`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    pytest.importorskip("PIL", reason="pillow is needed to keep the screenshots small")
    url, token, root, log = jupyter_lab
    make_widgets_notebook(root / "widgets.ipynb")
    timings: dict[str, float] = {}
    shots: dict[str, Path] = {}
    with run_notebook_in_lab(sync_api, jupyter_lab, "widgets.ipynb", {"width": 1500, "height": 1900},
                             timings, "widgets-failure.png") as (page, console):
        t0 = time.perf_counter()
        for name in WIDGET_CELLS:
            page.wait_for_selector(f".shot-{name}", state="attached", timeout=90_000)
        page.wait_for_function(KERNEL_IDLE_JS, timeout=90_000)
        for name in CANVAS_WIDGETS:
            page.locator(f".shot-{name}").first.scroll_into_view_if_needed()
            page.wait_for_function(f"({WIDGET_CANVASES_JS})('.shot-{name}').drawn >= 1", timeout=30_000)
        timings["run_all_to_widgets_s"] = round(time.perf_counter() - t0, 1)
        errors = page.evaluate(ERRORS_JS)
        assert errors == [], errors

        # every bokeh widget drew pixels; the inspector lists rows and shows the error
        for name in CANVAS_WIDGETS:
            info = page.evaluate(f"({WIDGET_CANVASES_JS})('.shot-{name}')")
            assert info["found"] and info["drawn"] >= 1, (name, info)
        ins = page.locator(".shot-stream_inspector").first
        n_options = ins.locator(".widget-select select option").count()  # the record list (a window)
        assert n_options >= 10, n_options
        assert "records)" in ins.inner_text()
        assert "decoding stopped" in ins.inner_text()
        assert "jump to error" in ins.inner_text()
        plan = page.locator(".shot-postcopy_discard_plan").first
        assert plan.locator("table tr").count() >= 2  # the command table
        assert "POSTCOPY_RAM_DISCARD" in page.locator(".shot-postcopy_discard_view").first.inner_text()
        assert "agree" in page.locator(".shot-postcopy_discard_view").first.inner_text()
        assert "encoded" in page.locator(".shot-xbzrle_delta_view").first.inner_text()

        # player: keyboard on the pass slider -> the canvases below the player change
        player = page.locator(".shot-migration_player").first
        player.scroll_into_view_if_needed()
        h0 = page.evaluate(f"({WIDGET_CANVASES_JS})('.shot-migration_player')")["hash"]
        handle = player.locator(".widget-slider .noUi-handle").first
        handle.focus()
        t0 = time.perf_counter()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            f"({WIDGET_CANVASES_JS})('.shot-migration_player').hash !== {json.dumps(h0)}",
            polling="raf", timeout=30_000)
        timings["key_to_canvas_change_ms"] = round((time.perf_counter() - t0) * 1e3)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.shot-migration_player .widget-readout')]"
            ".some(e => e.innerText.trim() === '1')", timeout=10_000)
        page.wait_for_timeout(400)
        assert "pass 1" in player.inner_text()

        # bitmap: box zoom (Python re-renders at full resolution), then the reset tool -> whole RAM again
        bm = page.locator(".shot-bitmap_view").first
        bm.scroll_into_view_if_needed()
        hb0 = page.evaluate(f"({WIDGET_CANVASES_JS})('.shot-bitmap_view')")["hash"]
        box = bm.locator(".bk-Canvas, .bk-canvas").first.bounding_box() or bm.bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 80, y0 + 40, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "() => document.querySelector('.shot-bitmap_view').innerText.includes('rows ')", timeout=30_000)
        page.wait_for_function(
            f"({WIDGET_CANVASES_JS})('.shot-bitmap_view').hash !== {json.dumps(hb0)}", timeout=30_000)
        hb1 = page.evaluate(f"({WIDGET_CANVASES_JS})('.shot-bitmap_view')")["hash"]
        reset = page.evaluate("""() => {  // where bokeh's reset tool is (inside shadow DOM)
          const walk = (root) => { for (const el of root.querySelectorAll('*')) {
              if (el.classList && [...el.classList].some(c => c.includes('reset'))) {
                const r = el.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; }
              if (el.shadowRoot) { const f = walk(el.shadowRoot); if (f) return f; } } return null; };
          return walk(document.querySelector('.shot-bitmap_view')); }""")
        assert reset is not None, "reset tool not found"
        page.mouse.click(reset["x"], reset["y"])
        page.mouse.move(5, 5)  # no tooltip in the screenshot
        page.wait_for_function(
            "() => document.querySelector('.shot-bitmap_view').innerText.includes('all RAM')", timeout=30_000)
        page.wait_for_function(
            f"({WIDGET_CANVASES_JS})('.shot-bitmap_view').hash !== {json.dumps(hb1)}", timeout=30_000)

        # inspector: pick another row, then "jump to error" selects the ERROR row again
        ins.scroll_into_view_if_needed()
        ins.locator(".widget-select select").first.select_option(index=3)
        error_shown = "() => /row \\d+: ERROR/.test(document.querySelector('.shot-stream_inspector').innerText)"
        page.wait_for_function(f"() => !({error_shown})()", timeout=10_000)
        ins.get_by_role("button", name="jump to error").click()
        page.wait_for_function(error_shown, timeout=10_000)

        for name in WIDGET_CELLS:
            shots[name] = _shoot(page, name)
        assert page.evaluate(ERRORS_JS) == []
    sizes = {name: p.stat().st_size for name, p in shots.items()}
    print("browser timings:", json.dumps(timings), "screenshot bytes:", json.dumps(sizes))
    print("console errors:\n" + "\n".join(c for c in console if c.startswith(("error", "pageerror"))))
    assert all(size <= MAX_PNG_BYTES for size in sizes.values()), sizes
    if os.environ.get("RAMLAB_UPDATE_DOCS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        for name, p in shots.items():
            shutil.copyfile(p, DOCS_IMAGES / f"{name}.png")
    page_errors = [c for c in console if c.startswith("pageerror")]
    assert page_errors == [], page_errors

"""LiveMigration's layout holds still while the migration goes on (JupyterLab + headless Chromium,
offline, no QEMU): the bundled ``steer`` capture (12 passes, QEMU's samples, a ``downtime-limit``
rescue) replayed through the live path at a third of its recorded pace, once at each of 1024, 1400
and 1920 px wide.

From the first drawn page map to the last update after ``completed``, while the map, its legend, the
per-pass bars, the convergence curve, the status line and QEMU's counters change ten times a second:

* the view keeps its size, and every plot's canvas, every plot's frame (its data area, read from
  BokehJS's views) and every text box of the view keep their place (relative to the view) and size;
* no text of the view is clipped or outside it, and the output area does not cut the view.

(Before the first chunk the map is a one-line placeholder: its size depends on the RAM block list.)
The view at the end of each width goes to ``artifacts/screenshots/live-layout-<width>.png``.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from _labharness import (
    CLIPPED_JS,
    ERRORS_JS,
    GEOMETRY_JS,
    SCREENSHOTS,
    WIDGET_CANVASES_JS,
    LabServer,
    lab_page,
    page_errors,
    run_cell,
    wait_idle,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTHS = (1024, 1400, 1920)
SPEED = 0.33  # the recording spans 3.5 s: about 11 s of updates a width
CELLS = [
    "from ramlab.widgets import setup\nsetup()",
    "import ramlab, ramlab.live\nfrom ramlab.widgets.live import LiveMigration",
    # one cell a width, each view with its own class (an earlier view stays on the page, finished)
    *(f"view = LiveMigration(ramlab.live.replay(ramlab.data_path('steer'), speed={SPEED}))\n"
      f"view.add_class('shot-live-{w}')\nview" for w in WIDTHS),
]

#: ``(selector) -> JSON``: the view's size, then the boxes of :data:`GEOMETRY_JS` (canvases, bokeh Divs),
#: of the ipywidgets' text boxes and of every plot's frame, relative to the view's top left corner (the
#: notebook may scroll while the view updates: that is not the view moving)
LAYOUT_JS = f"""
(sel) => {{ const host = document.querySelector(sel); const hr = host.getBoundingClientRect();
  const [view, ...boxes] = JSON.parse(({GEOMETRY_JS})(sel));
  const rel = ([l, t, w, h]) => [l - Math.round(hr.left), t - Math.round(hr.top), w, h];
  const out = {{view: [view[2], view[3]], boxes: boxes.map(rel), text: [], frames: []}};
  for (const el of host.querySelectorAll('.widget-html, .widget-box')) {{
    const b = el.getBoundingClientRect();
    out.text.push(rel([Math.round(b.left), Math.round(b.top), Math.round(b.width), Math.round(b.height)])); }}
  const inside = (el) => {{ for (let n = el; n; n = n.parentNode || n.host) if (n === host) return true;
                            return false; }};
  for (const v of window.Bokeh.index.query(v => v.frame != null && v.el != null && v.el.isConnected)) {{
    if (!inside(v.el)) continue;
    const f = v.frame.bbox, r = v.el.getBoundingClientRect();
    out.frames.push(rel([Math.round(r.left + f.x), Math.round(r.top + f.y), Math.round(f.width),
                         Math.round(f.height)])); }}
  out.frames.sort();
  return JSON.stringify(out); }}
"""

#: the view's status line (``<name> — replay of a recorded capture: <status>, t = …, <n> passes, …``)
STATUS_JS = """
(sel) => [...document.querySelectorAll(`${sel} .widget-html`)].map(e => e.innerText).find(t => t.includes(' — '))
         || ''
"""



def test_live_view_layout_holds_still_while_it_updates(tmp_path, playwright) -> None:  # type: ignore[no-untyped-def]
    report = {}
    with LabServer(tmp_path) as lab:
        write_notebook(lab.root / "live.ipynb", CELLS, title="LiveMigration, steer replayed")
        with lab_page(playwright, lab, "live.ipynb", {"width": WIDTHS[0], "height": 1300},
                      "live-layout-failure.png") as (page, console, blocked):
            for i in (1, 2):
                run_cell(page, i)
                wait_idle(page)
            for k, width in enumerate(WIDTHS):
                sel = f".shot-live-{width}"
                page.set_viewport_size({"width": width, "height": 1300})
                page.wait_for_timeout(600)
                run_cell(page, 3 + k)
                page.wait_for_selector(sel, state="attached", timeout=60_000)
                page.locator(sel).first.scroll_into_view_if_needed()
                page.wait_for_function(f"({WIDGET_CANVASES_JS})('{sel} .ramlab-live-map').drawn >= 1",
                                       timeout=60_000)
                layouts: dict[str, int] = {}
                clipped: set[str] = set()
                passes: set[int] = set()
                maps: set[str] = set()
                done_at = None
                deadline = time.monotonic() + 90
                while done_at is None or time.monotonic() < done_at + 1.5:  # the view's last update, then stop
                    assert time.monotonic() < deadline, f"{width} px: the replay did not complete"
                    status = page.evaluate(f"({STATUS_JS})('{sel}')")
                    layout = page.evaluate(f"({LAYOUT_JS})('{sel}')")
                    layouts[layout] = layouts.get(layout, 0) + 1
                    clipped |= set(page.evaluate(f"({CLIPPED_JS})('{sel}')"))
                    maps.add(page.evaluate(f"({WIDGET_CANVASES_JS})('{sel} .ramlab-live-map').hash"))
                    if m := re.search(r"(\d+) passes", status):
                        passes.add(int(m.group(1)))
                    if done_at is None and ": completed" in status:
                        done_at = time.monotonic()
                    page.wait_for_timeout(100)
                page.locator(sel).first.screenshot(path=str(SCREENSHOTS / f"live-layout-{width}.png"))
                assert len(passes) >= 4 and len(maps) >= 4, f"{width} px: too few updates seen: {passes}, {len(maps)}"
                assert len(layouts) == 1, f"{width} px: the layout moved while updating:\n" + "\n".join(
                    f"{n} x {lay}" for lay, n in layouts.items())
                assert not clipped, f"{width} px: {sorted(clipped)}"
                first = json.loads(next(iter(layouts)))
                report[width] = {"view": first["view"], "frames": first["frames"],
                                 "samples": sum(layouts.values()), "passes seen": len(passes)}
                wait_idle(page)
            assert page.evaluate(ERRORS_JS) == [] and page_errors(console) == [] and blocked == []
            assert not [c for c in console if "inconsistent lengths" in c]
    print("live view per viewport width:", json.dumps(report))

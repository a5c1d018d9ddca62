"""MigrationPlayer in a real browser (JupyterLab + headless Chromium, offline), on a 1 M-page trace:

* the layout holds still: at 1024, 1400 and 1920 px wide, the player's bounding box (and every plot's)
  stays the same on every pass, the player fits its output area (no horizontal cut), and no text of it
  is clipped (every text box shows all its text) or outside the player;
* keyboard: ``Right`` / ``Left`` step with one repaint of the page map each, ``End`` / ``Home`` jump,
  ``Space`` plays and pauses;
* the hover on the page map names the class of the page under the mouse.
"""

from __future__ import annotations

import json

import pytest
from _labharness import (
    CLIPPED_JS,
    ERRORS_JS,
    GEOMETRY_JS,
    MONITOR_JS,
    SCREENSHOTS,
    WIDGET_CANVASES_JS,
    LabServer,
    lab_page,
    page_errors,
    run_all,
    text_of,
    wait_idle,
    wait_text,
    write_notebook,
)

from ramlab.trace import CLASS_NAMES

pytestmark = [pytest.mark.browser, pytest.mark.slow]

N_PASSES = 12
CELLS = [
    "from ramlab.widgets import MigrationPlayer, setup\nsetup()",
    f"from ramlab.trace import synthetic_trace\n"
    f"trace = synthetic_trace(n_pages=1 << 20, n_passes={N_PASSES}, seed=1, with_page_bytes=False)",
    "w = MigrationPlayer(trace)\nw.add_class('shot-big')\nw",
]
SEL = ".shot-big"


def _step(page, key: str) -> int:  # type: ignore[no-untyped-def]
    """Press ``key``; wait until the page map repainted and settled; returns the number of repaints."""
    n0 = page.evaluate("() => window.__rlmon.changes.length")
    page.keyboard.press(key)
    page.wait_for_function(f"() => window.__rlmon.changes.length > {n0}", timeout=30_000)
    page.wait_for_timeout(250)
    return page.evaluate(f"() => window.__rlmon.changes.length - {n0}")


def test_player_layout_holds_still_and_keyboard(tmp_path, playwright):
    with LabServer(tmp_path) as lab:
        write_notebook(lab.root / "player.ipynb", CELLS, title="MigrationPlayer, 1 M pages")
        with lab_page(playwright, lab, "player.ipynb", {"width": 1400, "height": 1100},
                      "player-failure.png") as (page, console, blocked):
            run_all(page)
            page.wait_for_selector(SEL, state="attached", timeout=120_000)
            page.wait_for_function(f"({WIDGET_CANVASES_JS})('{SEL}').drawn >= 4", timeout=120_000)
            wait_idle(page)
            assert page.evaluate(ERRORS_JS) == []
            page.evaluate(MONITOR_JS, [SEL, "largest"])
            keys = page.locator(f"{SEL} [data-ramlab-keys]").first
            repaints: list[int] = []
            report = {}
            for width in (1024, 1400, 1920):
                page.set_viewport_size({"width": width, "height": 1100})
                page.wait_for_timeout(600)
                page.locator(SEL).first.scroll_into_view_if_needed()
                keys.focus()
                page.keyboard.press("Home")
                wait_text(page, SEL, f"pass 0 of {N_PASSES - 1}")
                page.wait_for_timeout(300)
                geometry = {page.evaluate(f"({GEOMETRY_JS})('{SEL}')")}
                clipped = set(page.evaluate(f"({CLIPPED_JS})('{SEL}')"))
                for p in range(1, N_PASSES):
                    repaints.append(_step(page, "ArrowRight"))
                    wait_text(page, SEL, f"pass {p} of {N_PASSES - 1}")
                    geometry.add(page.evaluate(f"({GEOMETRY_JS})('{SEL}')"))
                    clipped |= set(page.evaluate(f"({CLIPPED_JS})('{SEL}')"))
                page.locator(SEL).first.screenshot(path=str(SCREENSHOTS / f"player-{width}.png"))
                report[width] = json.loads(next(iter(geometry)))[0]
                assert len(geometry) == 1, f"{width} px: the layout moved between passes: {geometry}"
                assert not clipped, f"{width} px: {sorted(clipped)}"
            print("player box per viewport width:", json.dumps(report))
            assert repaints == [1] * len(repaints), repaints  # one repaint of the map per key press

            # Left steps back, End / Home jump, Space plays then pauses
            assert _step(page, "ArrowLeft") == 1
            wait_text(page, SEL, f"pass {N_PASSES - 2} of")
            page.keyboard.press("Home")
            wait_text(page, SEL, "pass 0 of")
            page.keyboard.press("End")
            wait_text(page, SEL, f"pass {N_PASSES - 1} of")
            page.keyboard.press("Home")
            wait_text(page, SEL, "pass 0 of")
            page.keyboard.press("Space")
            wait_text(page, SEL, "pass 2 of", timeout_ms=20_000)
            page.keyboard.press("Space")
            page.wait_for_timeout(1500)
            paused = text_of(page, SEL)
            page.wait_for_timeout(1500)
            assert text_of(page, SEL) == paused, "still playing after the second Space"

            # the hover names the class of the page under the mouse
            box = page.evaluate(f"""() => {{ let best = null; const walk = (root) => {{
                for (const el of root.querySelectorAll('*')) {{ if (el.tagName === 'CANVAS') {{
                  const r = el.getBoundingClientRect();
                  if (!best || r.width * r.height > best.width * best.height)
                    best = {{x: r.left, y: r.top, width: r.width, height: r.height}}; }}
                  if (el.shadowRoot) walk(el.shadowRoot); }} }};
                walk(document.querySelector('{SEL}')); return best; }}""")
            for i in range(4):  # bokeh puts its tooltip in the page's body
                page.mouse.move(box["x"] + box["width"] * (0.45 + 0.02 * i), box["y"] + box["height"] * 0.5, steps=2)
                page.wait_for_timeout(150)
            label = page.get_by_text("block + offset").first
            label.wait_for(timeout=10_000)
            tip = label.evaluate("e => e.closest('.bk-tooltip-content').innerText")
            assert "class:" in tip and tip.split("class:")[1].split()[0] in CLASS_NAMES, tip
            assert page.evaluate(ERRORS_JS) == [] and page_errors(console) == [] and blocked == []

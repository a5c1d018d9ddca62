"""Browser benchmark of the widgets: JupyterLab + Debian's headless Chromium (as the browser tests).

For each case a notebook is generated in a temp folder, opened in JupyterLab (offline: only the local
server is reachable) and run cell by cell.  In the page, a ``requestAnimationFrame`` loop hashes the
canvases of the widget's main plot every frame and a capture-phase listener stamps each key press
(``tests/browser/_labharness.py``).  Printed per case:

* **initial render**: from "run cell" to the first frame where every canvas of the widget is drawn
  (target < 500 ms), and the longest blocking task meanwhile;
* **key press -> first changed pixel** of the main plot: median and max over ``--changes`` key presses
  x ``--series`` series (targets at 1 M pages: median < 100 ms, max < 200 ms);
* **repaints per change**: distinct pixel states of the main plot after each key press until it settles
  (target: 1, no intermediate frame);
* **frame gaps**: longest interval between two animation frames while a change is handled (a long gap
  = a frozen page).

Cases: ``player-1m`` (MigrationPlayer, synthetic 1 M-page trace of 20 passes: Right / Left keys),
``player-real`` (``data/xbzrle``, a real QEMU 7.2 capture), and the other widgets' main interaction:
``bitmap-zoom`` (BitmapView, 1 M pages: a box zoom, then the reset tool, in turn; a zoom shows the
stretched map at once and the sharp region from Python after: "last repaint"), ``xbzrle``
(XbzrleDeltaView on a real page: the ``-`` / ``=`` keys), ``postcopy`` (PostcopyDiscardView: choose a
step), ``inspector`` (StreamInspector: choose a record; text, not canvas).

    python benchmarks/bench_browser.py [--cases player-1m,player-real] [--changes 20] [--series 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))

from _labharness import (  # noqa: E402  (the harness lives with the browser tests)
    CHROMIUM,
    ERRORS_JS,
    MONITOR_JS,
    WIDGET_CANVASES_JS,
    LabServer,
    lab_page,
    page_errors,
    run_cell,
    wait_idle,
    write_notebook,
)

SETUP = """\
import numpy as np
import ramlab, ramlab.data
from ramlab.trace import synthetic_trace, PageClass
from ramlab.widgets import BitmapView, MigrationPlayer, PostcopyDiscardView, XbzrleDeltaView, setup
setup()"""

#: focusable element that takes the keys of each widget (first match wins; Playwright CSS pierces shadow DOM)
PASS_CONTROL = ["[data-ramlab-keys]", ".widget-slider .noUi-handle"]


@dataclass
class Case:
    name: str
    data: str  # cell that builds the inputs (run before the measured cell)
    widget: str  # cell that builds ``w`` (measured: initial render)
    pick: str = "largest"  # what the monitor hashes: the largest plot, every canvas, or the text
    keys: tuple[str, ...] = ("ArrowRight",)  # key presses of one change
    back: tuple[str, ...] = ("ArrowLeft",)  # the reverse change (a series goes forth then back)
    focus: list[str] = field(default_factory=lambda: PASS_CONTROL)
    drag: bool = False  # the change is a box-zoom drag on the main plot, not keys
    select: str | None = None  # the change is choosing option i of this <select> (JupyterLab takes the
    #: arrow keys from a focused <select>: in command mode they move between cells)


CASES = {
    "player-1m": Case(
        "player-1m",
        "trace = synthetic_trace(n_pages=1 << 20, n_passes=20, seed=1, with_page_bytes=False)",
        "w = MigrationPlayer(trace)"),
    "player-real": Case(
        "player-real",
        "m = ramlab.open(ramlab.data.data_path('xbzrle'))   # real QEMU 7.2 capture",
        "w = m.player()"),
    "bitmap-zoom": Case(
        "bitmap-zoom",
        "trace = synthetic_trace(n_pages=1 << 20, n_passes=20, seed=1, with_page_bytes=False)",
        "w = BitmapView(trace, 3)", drag=True),
    "xbzrle": Case(
        "xbzrle",
        "m = ramlab.open(ramlab.data.data_path('xbzrle'))\n"
        "from ramlab.widgets.xbzrle_view import analyze_delta\n"
        "pages = np.argwhere(m.trace.classes == PageClass.XBZRLE)[:200].tolist()\n"
        "best = max(pages, key=lambda pg: len(analyze_delta(*m.trace.page_bytes(*pg)).tokens))",
        "w = m.xbzrle_delta(*best)", keys=("-",), back=("=",)),
    "postcopy": Case(
        "postcopy",
        "rng = np.random.default_rng(7)\n"
        "dirty = rng.random(1 << 16) < 0.03\n"
        "unsent = np.zeros(1 << 16, bool); unsent[40000:] = True",
        "w = PostcopyDiscardView((dirty, unsent), host_ratio=512, block='pc.ram')",
        pick="all", select="select"),
    "inspector": Case(
        "inspector",
        "m = ramlab.open(ramlab.data.data_path('xbzrle'))",
        "w = m.inspector()", pick="dom", select=".widget-select select"),
}

SETTLE_MS = 350  # a change is over when the plot did not change for this long
TIMEOUT_MS = 4000


def _one_change(page, keys: tuple[str, ...], drag_box: dict | None, step: int,  # type: ignore[no-untyped-def]
                select: str | None = None) -> dict:
    """Press ``keys`` (or drag a zoom box, or pick option ``step`` of ``select``); returns latency /
    repaints / frame gap of this change."""
    start = page.evaluate("() => { const m = window.__rlmon; return {k: m.keys.length, c: m.changes.length}; }")
    t_press = None
    if select is not None:
        loc = page.locator(f".bench-target {select}").first
        n = loc.locator("option").count()
        t_press = page.evaluate("() => performance.now()")
        loc.select_option(index=(step + 1) % max(n, 1) if n > 1 else 0)
    elif drag_box is not None and step % 2 == 1:  # every other change: the reset tool, back to all RAM
        t_press = page.evaluate("() => performance.now()")
        page.mouse.click(drag_box["reset"]["x"], drag_box["reset"]["y"])
    elif drag_box is not None:
        b = drag_box
        x0 = b["x"] + b["width"] * (0.2 + 0.05 * (step % 5))
        y0 = b["y"] + b["height"] * (0.2 + 0.05 * (step % 3))
        page.mouse.move(x0, y0)
        t_press = page.evaluate("() => performance.now()")
        page.mouse.down()
        page.mouse.move(x0 + 50, y0 + 40, steps=4)
        t_press = page.evaluate("() => performance.now()")  # the zoom starts when the button is released
        page.mouse.up()
    else:
        for k in keys:
            page.keyboard.press(k)
    deadline = time.monotonic() + TIMEOUT_MS / 1e3
    while True:
        page.wait_for_timeout(60)
        st = page.evaluate("""([k, c]) => { const m = window.__rlmon;
            return {keys: m.keys.slice(k), changes: m.changes.slice(c), now: performance.now()}; }""",
                           [start["k"], start["c"]])
        t0 = t_press if t_press is not None else (st["keys"][0]["t"] if st["keys"] else None)
        ch = [t for t in st["changes"] if t0 is not None and t >= t0]
        if ch and st["now"] - ch[-1] > SETTLE_MS:
            break
        if time.monotonic() > deadline:
            break
    if t0 is None or not ch:
        return {"latency": None, "repaints": 0, "gap": None, "settled": None}
    gaps = page.evaluate("""([a, b]) => { const f = window.__rlmon.frames.filter(t => t >= a && t <= b);
        let g = 0; for (let i = 1; i < f.length; i++) g = Math.max(g, f[i] - f[i - 1]); return g; }""",
                         [t0, ch[-1] + 50])
    return {"latency": ch[0] - t0, "repaints": len(ch), "gap": gaps, "settled": ch[-1] - t0}


def run_case(pw, server: LabServer, case: Case, a: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    nb = f"bench-{case.name}.ipynb"
    write_notebook(server.root / nb, [SETUP, case.data, f"{case.widget}\nw.add_class('bench-target')\nw"],
                   title=f"bench {case.name}")
    res: dict = {"case": case.name}
    with lab_page(pw, server, nb, {"width": a.width, "height": 1100}, f"bench-{case.name}-fail.png") as (
            page, console, blocked):
        run_cell(page, 1)
        wait_idle(page)
        run_cell(page, 2)
        wait_idle(page)
        page.evaluate(MONITOR_JS, [".bench-target", case.pick])
        t_run = run_cell(page, 3)
        try:
            page.wait_for_function("() => window.__rlmon.allDrawnAt !== null", timeout=120_000)
        except Exception:
            print("not drawn:", page.evaluate(f"({WIDGET_CANVASES_JS})('.bench-target')"), page.evaluate(ERRORS_JS))
            raise
        wait_idle(page)
        page.wait_for_timeout(800)
        mon = page.evaluate("""() => { const m = window.__rlmon;
            return {drawn: m.allDrawnAt, found: m.foundAt, longtasks: m.longtasks}; }""")
        res["initial_ms"] = mon["drawn"] - t_run
        res["initial_output_ms"] = mon["found"] - t_run  # kernel + transfer: the widget's element exists
        res["initial_longest_task_ms"] = max([lt["d"] for lt in mon["longtasks"] if lt["t"] >= t_run] or [0])
        errors = page.evaluate(ERRORS_JS)
        if errors:
            raise RuntimeError(f"{case.name}: error output {errors}")
        target = page.locator(".bench-target").first
        target.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        drag_box = None
        if case.select:
            pass
        elif case.drag:
            drag_box = page.evaluate("""() => { let best = null; const walk = (root) => {
                for (const el of root.querySelectorAll('*')) { if (el.tagName === 'CANVAS') {
                  const r = el.getBoundingClientRect();
                  if (!best || r.width * r.height > best.width * best.height)
                    best = {x: r.left, y: r.top, width: r.width, height: r.height}; }
                  if (el.shadowRoot) walk(el.shadowRoot); } };
                walk(document.querySelector('.bench-target')); return best; }""")
            drag_box["reset"] = page.evaluate("""() => { const walk = (root) => {  // bokeh's reset tool
                for (const el of root.querySelectorAll('*')) {
                  if (el.classList && [...el.classList].some(c => c.includes('reset'))) {
                    const r = el.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; }
                  if (el.shadowRoot) { const f = walk(el.shadowRoot); if (f) return f; } } return null; };
                return walk(document.querySelector('.bench-target')); }""")
        else:
            for sel in case.focus:
                loc = page.locator(f".bench-target {sel}").first
                if loc.count():
                    loc.focus()
                    break
            else:
                raise RuntimeError(f"{case.name}: nothing to focus among {case.focus}")
        series = []
        forth = True
        for _s in range(a.series):
            changes = []
            while len(changes) < a.changes:
                i = len(changes)
                if case.drag or case.select:
                    changes.append(_one_change(page, (), drag_box, i, case.select))
                    continue
                c = _one_change(page, case.keys if forth else case.back, None, i)
                if c["latency"] is None and c["repaints"] == 0:  # at the end: turn around
                    forth = not forth
                    c = _one_change(page, case.keys if forth else case.back, None, i)
                changes.append(c)
            series.append(changes)
        res["series"] = series
        res["blocked"] = blocked
        res["page_errors"] = page_errors(console)
    return res


def summarize(res: dict) -> dict:
    allc = [c for s in res["series"] for c in s]
    lat = [c["latency"] for c in allc if c["latency"] is not None]
    rep = [c["repaints"] for c in allc]
    gaps = [c["gap"] for c in allc if c["gap"] is not None]
    settled = [c["settled"] for c in allc if c.get("settled") is not None]
    per_series = [
        (round(statistics.median(ls)), round(max(ls))) if ls else None
        for ls in ([c["latency"] for c in s if c["latency"] is not None] for s in res["series"])
    ]
    return {
        "case": res["case"],
        "initial_ms": round(res["initial_ms"]),
        "initial_longest_task_ms": round(res["initial_longest_task_ms"]),
        "initial_output_ms": round(res["initial_output_ms"]),
        "changes": len(allc),
        "missed": len(allc) - len(lat),
        "latency_median_ms": round(statistics.median(lat)) if lat else None,
        "latency_max_ms": round(max(lat)) if lat else None,
        "settled_median_ms": round(statistics.median(settled)) if settled else None,
        "series_median_max_ms": per_series,
        "repaints_per_change_mean": round(statistics.mean(rep), 2) if rep else None,
        "repaints_per_change_max": max(rep) if rep else None,
        "changes_with_1_repaint": sum(1 for r in rep if r == 1),
        "frame_gap_max_ms": round(max(gaps)) if gaps else None,
        "frame_gap_median_ms": round(statistics.median(gaps)) if gaps else None,
        "blocked_requests": len(res["blocked"]),
        "page_errors": res["page_errors"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--changes", type=int, default=20, help="changes per series")
    ap.add_argument("--series", type=int, default=3)
    ap.add_argument("--width", type=int, default=1400, help="browser viewport width")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    a = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    out = []
    with tempfile.TemporaryDirectory(prefix="ramlab-bench-") as tmp, LabServer(Path(tmp)) as server, \
            sync_playwright() as pw:
        for name in a.cases.split(","):
            res = run_case(pw, server, CASES[name], a)
            server.shutdown_kernels()  # free the memory of its trace
            s = summarize(res)
            out.append((s, res))
            print(f"{s['case']:>12}: initial render {s['initial_ms']} ms (output element after "
                  f"{s['initial_output_ms']} ms, longest task {s['initial_longest_task_ms']} ms); "
                  f"key/drag -> first changed pixel median {s['latency_median_ms']} ms, "
                  f"max {s['latency_max_ms']} ms over {s['changes']} changes "
                  f"(per series median/max {s['series_median_max_ms']}, {s['missed']} without a change); "
                  f"last repaint median {s['settled_median_ms']} ms; "
                  f"repaints per change mean {s['repaints_per_change_mean']} max {s['repaints_per_change_max']} "
                  f"({s['changes_with_1_repaint']}/{s['changes']} with one); frame gap max "
                  f"{s['frame_gap_max_ms']} ms (median {s['frame_gap_median_ms']}); "
                  f"offline: {s['blocked_requests']} blocked requests; page errors {len(s['page_errors'])}",
                  flush=True)
    targets = {s["case"]: s for s, _ in out}
    if "player-1m" in targets:
        s = targets["player-1m"]
        ok = (s["latency_median_ms"] is not None and s["latency_median_ms"] < 100 and s["latency_max_ms"] < 200
              and s["initial_ms"] < 500 and s["repaints_per_change_max"] == 1)
        print(f"targets at 1 M pages (median < 100 ms, max < 200 ms, initial < 500 ms, one repaint): "
              f"{'MET' if ok else 'NOT MET'}")
    if a.json:
        a.json.write_text(json.dumps([{"summary": s, "raw": r} for s, r in out], indent=1))


if __name__ == "__main__":
    main()

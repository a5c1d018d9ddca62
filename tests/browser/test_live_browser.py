"""Real-browser check of the steer lab (``10-steer-a-migration``, solutions filled in) in JupyterLab +
headless Chromium (offline, ``_labharness``) while QEMU migrates.

The lab starts a migration of the test guest that cannot converge (4 MiB/s, 100 ms downtime limit,
nothing relaxes it) and shows its ``LiveMigration`` view. The test runs the cells above the rescue
cell — one of them blocks the kernel while ten passes go by — and meanwhile watches the page-map
canvas: its pixels must change at least three times while the status says the migration is running
(the view is fed from a background thread: a busy kernel does not stop it). It types a new
max-bandwidth (still too little to converge) into the widget and clicks "set parameters": the widget
then shows what QEMU's ``query-migrate-parameters`` reports, which must be the new value. Then it runs
the rest of the lab: the rescue (computed from the bandwidth QEMU now has) makes the migration
complete, the capture's control log holds the bandwidth change, and the view's counters show QEMU and
ramlab agreeing. Without QEMU the lab replays its bundled recording instead: the map must change while
it replays, the controls are disabled, and the lab completes. Screenshots go to
``artifacts/screenshots/`` (and the last one to ``docs/images/live_migration.png`` with
``RAMLAB_UPDATE_DOCS=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from _labharness import ERRORS_JS, KERNEL_IDLE_JS, REPO, SCREENSHOTS, LabServer, lab_page, page_errors

from ramlab.capture import qemu_available

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAB = REPO / "notebooks" / "source" / "10-steer-a-migration" / "10-steer-a-migration.ipynb"
VIEW = ".ramlab-live"

#: hash of the canvases of the live view's page map
MAP_HASH_JS = """
() => {
  const host = document.querySelector('.ramlab-live-map');
  if (!host) return null;
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.width > 100) found.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(host);
  if (!found.length) return null;
  let h = 0;
  for (const el of found) {
    const d = el.getContext('2d').getImageData(0, 0, el.width, el.height).data;
    for (let i = 0; i < d.length; i += 13) { h = (h * 31 + d[i]) | 0; }
  }
  return String(h);
}
"""

STATUS_JS = """
() => [...document.querySelectorAll('.ramlab-live .widget-html')].map(e => e.innerText)
        .find(t => t.includes(' — ')) || ''
"""


def rescue_cell_index() -> int:
    import nbformat

    nb = nbformat.read(LAB, as_version=4)
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "rescue_ms =" in c.source)


def _ran_above(page, index: int) -> bool:  # type: ignore[no-untyped-def]
    """Whether every code cell above ``index`` has run (has an execution count) and the kernel is idle."""
    return bool(page.evaluate(f"""() => {{
      const cells = window.jupyterapp.shell.currentWidget.content.widgets.slice(0, {index});
      return cells.every(c => c.model.type !== 'code' || c.model.executionCount !== null);
    }}""")) and bool(page.evaluate(KERNEL_IDLE_JS))


def _run_from(page, index: int, command: str) -> None:  # type: ignore[no-untyped-def]
    """Make cell ``index`` active and run ``command`` without waiting for the cells (we watch meanwhile)."""
    page.evaluate(f"""() => {{ window.jupyterapp.shell.currentWidget.content.activeCellIndex = {index};
                       window.jupyterapp.commands.execute('{command}'); }}""")


def _shot(page, locator, name: str) -> None:  # type: ignore[no-untyped-def]
    """Screenshot of ``locator``'s box (the live view never stops moving: no stability wait)."""
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    box = locator.bounding_box()
    if box:
        page.screenshot(path=str(SCREENSHOTS / name), clip=box)



def test_live_view_in_jupyterlab(tmp_path, playwright) -> None:  # type: ignore[no-untyped-def]
    live = qemu_available()
    rescue = rescue_cell_index()
    timings: dict[str, float] = {}
    with LabServer(tmp_path) as lab:
        shutil.copy(LAB, lab.root / "steer.ipynb")
        with lab_page(playwright, lab, "steer.ipynb", {"width": 1500, "height": 1200},
                      "live-failure.png") as (page, console, blocked):
            _run_from(page, rescue, "notebook:run-all-above")
            page.wait_for_function(f"({MAP_HASH_JS})() !== null", timeout=120_000)
            # the page map changes while the migration runs
            hashes: list[str] = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60 and len(hashes) < 4:
                h = page.evaluate(MAP_HASH_JS)
                status = page.evaluate(STATUS_JS)
                running = ("migrating" in status.split("—")[-1]) if live else ("replaying" in status)
                if running and h is not None and (not hashes or h != hashes[-1]):
                    hashes.append(h)
                page.wait_for_timeout(150)
            timings["map_changes"] = len(hashes) - 1
            timings["map_changes_s"] = round(time.monotonic() - t0, 1)
            out = page.locator(f".jp-OutputArea-output:has({VIEW})").first
            _shot(page, out, "live-view.png")
            assert len(hashes) - 1 >= 3, f"the page map changed {len(hashes) - 1} times while running"
            assert page.evaluate(ERRORS_JS) == []

            deadline = time.monotonic() + 120
            while not _ran_above(page, rescue):  # the widget's clicks must reach an idle kernel
                assert time.monotonic() < deadline, "the cells above the rescue did not finish"
                page.wait_for_timeout(200)
            if live:
                # a bandwidth change made in the widget reaches QEMU (6 MiB/s: still too little to converge)
                field = page.locator(".widget-inline-hbox:has(label:text('max-bandwidth MiB/s')) input").first
                field.fill("6")
                field.press("Enter")
                page.wait_for_timeout(300)
                page.locator("button:has-text('set parameters')").first.click()
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.ramlab-live .widget-html')]"
                    ".some(e => e.innerText.includes(\"query-migrate-parameters now: max-bandwidth = 6,291,456\"))",
                    timeout=30_000)
                timings["bandwidth_change_seen"] = round(time.monotonic() - t0, 1)
                _shot(page, out, "live-view-steered.png")
            else:
                assert page.locator("button:has-text('set parameters')").first.is_disabled()

            _run_from(page, rescue, "notebook:run-all-below")
            page.wait_for_function(  # the last cell's output, or an error (JupyterLab stops running cells there)
                "() => [...document.querySelectorAll('.jp-OutputArea-output')].some(e => e.innerText.includes("
                "'capture folder:') || e.dataset.mimeType === 'application/vnd.jupyter.stderr')", timeout=150_000)
            page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000)
            assert page.evaluate(ERRORS_JS) == [], page.evaluate(ERRORS_JS)
            texts = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert any("status: completed after" in t for t in texts), texts[-8:]
            if live:
                folder = Path([t for t in texts if "capture folder:" in t][0].split("capture folder:", 1)[1].strip())
                meta = json.loads((folder / "meta.json").read_text())
                changes = [e for e in meta["control_commands"] if e["event"] == "migrate-set-parameters"
                           and "error" not in e]
                assert any(e["arguments"].get("max-bandwidth") == 6 << 20 for e in changes), meta["control_commands"]
            page.wait_for_timeout(1500)  # the view's last update
            _shot(page, out, "live-view-final.png")
            assert "completed" in page.evaluate(STATUS_JS)
            view_text = page.locator(VIEW).first.inner_text()
            assert "✓" in view_text and "≠" not in view_text  # QEMU's counters agree with ramlab's
    print("browser timings:", json.dumps(timings))
    if live and os.environ.get("RAMLAB_UPDATE_DOCS") == "1":  # README's picture of the view
        shutil.copyfile(SCREENSHOTS / "live-view-final.png", REPO / "docs" / "images" / "live_migration.png")
    assert blocked == [], blocked  # offline: nothing but the local server
    # the browser's copy of every data source stayed whole (no lost or reordered update)
    assert not [c for c in console if "inconsistent lengths" in c]
    assert page_errors(console) == [], page_errors(console)

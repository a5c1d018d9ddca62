"""A standalone HTML report of one decoded migration (``ramlab report STREAM -o report.html``).

The page is self-contained: BokehJS is inlined (:data:`ramlab.plots.bokehjs.COMPONENTS`), no server, no CDN,
so it opens from ``file://`` on a machine without network. It shows

* the decoding error first, in red, with its byte offset and the last events decoded before it
  (everything before the damage is still reported);
* the summary table of :meth:`ramlab.migration.Migration.summary`;
* the player of the notebooks (:class:`ramlab.plots.player.PlayerLayout`: play / step / slide through
  the passes, page-class map of each pass reduced in numpy with
  :func:`ramlab.plots.reduce.reduce_classes`, pages per class, bytes and dirty pages left per pass),
  every pass's map embedded so it runs in the browser alone;
* a per-pass table with the same numbers.

    >>> import ramlab, tempfile, pathlib                                   # doctest: +SKIP
    >>> m = ramlab.open(ramlab.data.data_path("plain"))                    # doctest: +SKIP
    >>> write_report(m, pathlib.Path(tempfile.mkdtemp()) / "r.html")       # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np
from bokeh.embed import components
from bokeh.resources import Resources

from ramlab.plots.bokehjs import COMPONENTS
from ramlab.plots.palette import swatch
from ramlab.plots.player import PlayerLayout
from ramlab.plots.reduce import class_counts, page_grid, reduce_classes
from ramlab.trace import CLASS_NAMES, N_CLASSES, Trace

__all__ = ["write_report", "report_html", "pass_images"]

#: widest page map in the report, in pixels
MAX_MAP_PX = 512
#: total pixels of all passes' maps embedded in the page (keeps the HTML small for long migrations)
PIXEL_BUDGET = 6_000_000


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 3px; }
table.rl { border-collapse: collapse; font-size: 13px; }
table.rl th, table.rl td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
table.rl th { background: #f6f6f6; }
table.num td { text-align: right; }
.error { border: 2px solid #b00; background: #fff0f0; padding: 10px 14px; margin: 14px 0; }
.error h2 { color: #b00; margin-top: 0; border: none; }
.ok { border: 1px solid #2a2; background: #f2fff2; padding: 6px 12px; margin: 14px 0; }
.sw { display: inline-block; width: 11px; height: 11px; margin-right: 4px; border: 1px solid #999; }
.legend span.item { margin-right: 14px; white-space: nowrap; font-size: 13px; }
.muted { color: #666; font-size: 12px; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def pass_images(
    trace: Trace, max_px: int = MAX_MAP_PX, pixel_budget: int = PIXEL_BUDGET
) -> tuple[list[np.ndarray], tuple[int, int], tuple[int, int]]:
    """Reduced page-class maps of every pass: ``(images, grid, (fy, fx))``.

    The pages are laid out as :func:`~ramlab.plots.reduce.page_grid` (``None`` width: about
    square), then each pass is reduced to at most ``max_px`` pixels per side (smaller when
    ``n_passes`` maps would exceed ``pixel_budget`` pixels in all). Pixel ``(i, j)`` covers
    grid rows ``i*fy..`` and columns ``j*fx..``; its value is a class code (``NO_PAGE`` past
    the end of RAM), chosen with the "rarest class sent" rule against that pass's counts.

    >>> from ramlab.trace import synthetic_trace
    >>> imgs, grid, f = pass_images(synthetic_trace(n_pages=1 << 16, n_passes=3), max_px=64)
    >>> len(imgs), imgs[0].shape, grid, f
    (3, (64, 64), (256, 256), (4, 4))
    """
    grid = page_grid(trace.n_pages, None)
    side = int(max_px)
    n = max(trace.n_passes, 1)
    while side > 32 and n * side * side > pixel_budget:
        side //= 2
    counts = class_counts(trace.classes)
    images = []
    factors = (1, 1)
    for p in range(trace.n_passes):
        dom, _ = reduce_classes(trace.classes[p], grid, (side, side), reference_counts=counts[p])
        images.append(dom)
    if trace.n_passes:
        factors = (-(-grid[0] // images[0].shape[0]), -(-grid[1] // images[0].shape[1]))
    return images, grid, factors


def _summary_table(s: dict[str, Any]) -> str:
    rows = [
        ("stream", f"{_e(s['name'])} ({s['stream_bytes']:,} bytes)"),
        ("machine", _e(s["machine_type"])),
        ("target page size", f"{s['target_page_size']} bytes"),
        ("RAM blocks", "<br>".join(
            f"<code>{_e(b['name'])}</code> {b['length']:,} bytes ({b['length'] / 2**20:.2f} MiB), "
            f"page {b['page_size']:,}" for b in s["blocks"]) or "none decoded"),
        ("page records", ", ".join(f"{k} {v:,}" for k, v in s["records"].items())),
        ("passes", f"{s['passes']} ({_e(', '.join(s['pass_kinds']))})"),
        ("sections", _e(", ".join(f"{k} {v}" for k, v in s["sections"].items()) or "none")),
        ("commands", _e(", ".join(f"{k} {v}" for k, v in s["commands"].items()) or "none")),
        ("device sections", str(s["devices"])),
        ("multifd channels", str(s["channels"]) if s["channels"] else "none"),
        ("postcopy", f"{s['discards']} discard ranges ({s['discarded_pages']:,} pages), "
                     f"{s['page_requests']} page requests" if (s["discards"] or s["page_requests"]) else "no"),
        ("capabilities", _e(", ".join(s["capabilities"]) or "none announced")),
        ("status", "complete" if s["complete"] else "<b style='color:#b00'>damaged</b>"),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='rl'>{body}</table>"


def _pass_table(trace: Trace, counts: np.ndarray, nbytes: np.ndarray) -> str:
    used = [k for k in range(1, N_CLASSES) if counts[:, k].any()]
    head = "".join(f"<th>{swatch(k, CLASS_NAMES[k])}</th>" for k in used)
    kinds = trace.pass_kinds
    body = "".join(
        f"<tr><td>{p}</td><td style='text-align:left'>{_e(kinds[p])}</td>"
        + "".join(f"<td>{int(counts[p, k]):,}</td>" for k in used)
        + f"<td>{int(nbytes[p]):,}</td></tr>"
        for p in range(trace.n_passes)
    )
    return (f"<table class='rl num'><tr><th>pass</th><th>kind</th>{head}<th>bytes of page records</th></tr>"
            f"{body}</table>")


def _error_box(migration: Any) -> str:
    err = migration.error
    if err is None:
        return "<div class='ok'>The stream decoded completely, from the first byte to the last.</div>"
    total = len(migration.data)
    offset = getattr(err, "offset", None)
    where = ""
    if offset is not None and total:
        where = (f"<p>Byte offset <b>{offset:,}</b> (0x{offset:x}) of {total:,} bytes: "
                 f"{100.0 * offset / total:.1f}% of the stream decoded before the damage.</p>")
    before = [e for e in migration.events if offset is None or e.offset <= offset][-6:]
    rows = "".join(
        f"<tr><td>{e.offset:,}</td><td>{_e(type(e).__name__)}</td><td>{_e(_event_brief(e))}</td></tr>"
        for e in before
    )
    table = (f"<p>Last events decoded before it:</p><table class='rl'><tr><th>offset</th><th>event</th>"
             f"<th>detail</th></tr>{rows}</table>") if rows else ""
    return (f"<div class='error'><h2>Decoding error</h2><p><code>{_e(type(err).__name__)}</code>: "
            f"<b>{_e(err)}</b></p>{where}<p>Everything below is what was decoded before the damage.</p>"
            f"{table}</div>")


def _event_brief(e: Any) -> str:
    name = type(e).__name__
    if name == "RamPages":
        kind = "ZERO" if e.kind == 0x02 else "PAGE"
        return f"{len(e)} {kind} record(s) of {e.block} from +0x{int(e.page_offsets[0]):x}"
    if name in ("RamXbzrle", "RamCompressed"):
        return f"{e.block} +0x{e.page_offset:x}, {len(e.data)} bytes"
    if name == "SectionHeader":
        return f"{e.type_name} {e.idstr} (id {e.section_id})"
    if name == "Command":
        return e.name
    if name == "DeviceState":
        return e.idstr
    return ""


def report_html(migration: Any, *, title: str | None = None) -> str:
    """The report of ``migration`` (a :class:`ramlab.migration.Migration`) as one HTML string."""
    trace: Trace = migration.trace
    s = migration.summary()
    title = title or f"ramlab report: {s['name']}"
    parts = [f"<h1>{_e(title)}</h1>",
             f"<div class='muted'>QEMU RAM migration stream decoded by ramlab; "
             f"{s['stream_bytes']:,} bytes, {s['passes']} passes.</div>",
             _error_box(migration),
             "<h2>Summary</h2>", _summary_table(s)]
    script = div = ""
    if trace.n_passes and trace.n_pages:
        counts = class_counts(trace.classes)
        nbytes = trace.bytes_per_pass()
        player = PlayerLayout(trace, map_size=MAX_MAP_PX, chart_width=420, pixel_budget=PIXEL_BUDGET,
                              python=False)
        player.page_map.fill_overviews()
        script, div = components(player.layout)
        parts += ["<h2>Passes</h2>",
                  "<p class='muted'>Play, step (keyboard: space, left, right) or slide through the passes. "
                  "Hover the map for the block, offset and class of a page.</p>", div,
                  "<h2>Page classes and bytes per pass</h2>", _pass_table(trace, counts, nbytes)]
    else:
        parts.append("<p><b>No pass was decoded</b> (no RAM block list before the damage).</p>")
    body = "\n".join(parts)
    bokehjs = Resources(mode="inline", components=list(COMPONENTS)).render()
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n{bokehjs}\n</head>\n"
        f"<body>\n{body}\n{script}\n"
        f"<p class='muted'>Generated by ramlab. Page classes: "
        f"{_e(', '.join(CLASS_NAMES))}.</p>\n</body>\n</html>\n"
    )


def write_report(migration: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write the standalone HTML report of ``migration`` to ``path``; returns the path."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(report_html(migration, title=title), encoding="utf-8")
    return p

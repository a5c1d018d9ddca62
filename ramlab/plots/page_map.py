"""The hover tool of a page-class map: which block and offset is under the mouse, and its class.

A page-class map is an image whose pixel ``(x, y)`` covers global page ``y * cols + x`` (at full
resolution). The hover runs in the browser, so the block lookup is a few lines of JavaScript
with the block starts baked in; the widgets and the HTML report share it.
"""

from __future__ import annotations

import json

from bokeh.models import CustomJSHover, HoverTool

from ramlab.trace import CLASS_NAMES, Trace

__all__ = ["page_map_hover"]

_PAGE_JS = """
const cols = %(cols)d, n = %(n)d, tps = %(tps)d;
const starts = %(starts)s, names = %(names)s;
const x = Math.floor(special_vars.x), y = Math.floor(special_vars.y);
if (x < 0 || x >= cols || y < 0) return "-";
const g = y * cols + x;
if (g >= n) return "(past the end of RAM)";
let b = 0;
while (b + 1 < starts.length && starts[b + 1] <= g) b++;
return names[b] + " +0x" + ((g - starts[b]) * tps).toString(16) + "  (page " + g + ")";
"""

_CLASS_JS = """
const names = %(names)s;
const v = Math.round(value);
return (v >= 0 && v < names.length) ? names[v] : String(value);
"""


def page_map_hover(trace: Trace, cols: int, renderer, extra: tuple[tuple[str, str], ...] = ()) -> HoverTool:  # type: ignore[no-untyped-def]
    """A :class:`~bokeh.models.HoverTool` for ``renderer`` (an image of class codes, ``cols`` pages a row).

    Tooltips: block + offset (and global page), class name, the pass (``@pass_``), then ``extra``.
    """
    starts = [b.offset for b in trace.blocks] or [0]
    names = [b.name for b in trace.blocks] or ["ram"]
    page_fmt = CustomJSHover(
        code=_PAGE_JS % dict(cols=cols, n=trace.n_pages, tps=trace.target_page_size,
                             starts=json.dumps(starts), names=json.dumps(names))
    )
    class_fmt = CustomJSHover(code=_CLASS_JS % dict(names=json.dumps([*CLASS_NAMES, "NO_PAGE"])))
    return HoverTool(
        renderers=[renderer],
        tooltips=[("block + offset", "$x{custom}"), ("class", "@image{custom}"), ("pass", "@pass_"), *extra],
        formatters={"$x": page_fmt, "@image": class_fmt},
    )

"""``XbzrleDeltaView``: what XBZRLE does with one page (old vs new bytes, runs, encoded fields)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import numpy as np
from bokeh.models import ColumnDataSource, HoverTool, LinearColorMapper, Range1d
from bokeh.palettes import Greys256
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

from ramlab.errors import RamlabError
from ramlab.trace import CLASS_NAMES, Trace
from ramlab.widgets._common import setup

__all__ = ["XbzrleDeltaView", "DeltaAnalysis", "analyze_delta"]

_ZERO_COLOR = "#c7e9c0"
_CHANGED_COLOR = "#d62728"
_FIELD_COLORS = {"zrun": "#1f77b4", "nzrun": "#ff7f0e", "data": "#444444"}
_CHECK_TEXT = {
    "A": "check (A) before a zero run: d + 2 > dlen",
    "B": "check (B) after a zero-run length: d + 2 > dlen",
    "C": "check (C) after a changed-run length: d + n > dlen",
}


@dataclass
class DeltaAnalysis:
    """Everything the view shows, computed with ``ramlab.xbzrle`` (pure data, no widgets)."""

    old: np.ndarray
    new: np.ndarray
    dlen: int
    encoded: bytes | None  # b"" unchanged, None overflow
    runs: list[Any]  # ramlab.xbzrle.Run (kind 'zero'|'changed', offset, length)
    tokens: list[Any]  # ramlab.xbzrle.Token (kind 'zrun'|'nzrun'|'data', offset, size, value, page_offset)
    overflow: Any | None  # ramlab.xbzrle.OverflowCheck or None

    @property
    def outcome(self) -> str:
        """``'unchanged'``, ``'overflow'`` or ``'encoded'``."""
        if self.encoded is None:
            return "overflow"
        return "unchanged" if len(self.encoded) == 0 else "encoded"

    @property
    def changed_bytes(self) -> int:
        """Number of bytes that differ."""
        return int(sum(r.length for r in self.runs if r.kind == "changed"))


def analyze_delta(old: Any, new: Any, dlen: int | None = None) -> DeltaAnalysis:
    """Run the XBZRLE kernels of :mod:`ramlab.xbzrle` on one page pair.

    >>> old = np.zeros(4096, np.uint8); new = old.copy(); new[4095] = 1
    >>> a = analyze_delta(old, new)
    >>> a.outcome, a.encoded.hex(), [t.kind for t in a.tokens]
    ('encoded', 'ff1f0101', ['zrun', 'nzrun', 'data'])
    """
    from ramlab import xbzrle  # lazy: the kernels are a separate module

    o = np.ascontiguousarray(np.frombuffer(bytes(old), np.uint8) if isinstance(old, (bytes, bytearray))
                             else np.asarray(old, np.uint8).ravel())
    n = np.ascontiguousarray(np.frombuffer(bytes(new), np.uint8) if isinstance(new, (bytes, bytearray))
                             else np.asarray(new, np.uint8).ravel())
    if o.shape != n.shape:
        raise RamlabError(f"old and new pages differ in size ({o.size} != {n.size})")
    dlen = int(n.size if dlen is None else dlen)
    encoded = xbzrle.encode_page(o.tobytes(), n.tobytes(), dlen)
    runs = list(xbzrle.runs(o.tobytes(), n.tobytes()))
    tokens = list(xbzrle.parse_encoded(encoded, dlen)) if encoded else []
    ovf = None
    if encoded is None and hasattr(xbzrle, "overflow_check"):
        ovf = xbzrle.overflow_check(o.tobytes(), n.tobytes(), dlen)
    return DeltaAnalysis(o, n, dlen, encoded, runs, tokens, ovf)


class XbzrleDeltaView(W.VBox):
    """Old and new bytes of a page side by side (heat strips + hex), zero and changed runs,
    the encoded bytes with every ULEB128 length and literal run annotated, and the encoded
    size against the page size, or which overflow check failed.

    From a trace (``trace.page_bytes(pass, page)`` gives the contents before / after the
    pass) or from raw arrays with :meth:`from_arrays`.

    >>> old = np.zeros(4096, np.uint8); new = old.copy(); new[100:110] = 7
    >>> view = XbzrleDeltaView.from_arrays(old, new)
    >>> view.analysis.outcome, len(view.analysis.encoded)
    ('encoded', 12)
    """

    def __init__(
        self,
        trace: Trace | None = None,
        pass_index: int | None = None,
        page: int | None = None,
        *,
        old: Any = None,
        new: Any = None,
        dlen: int | None = None,
        width: int = 900,
        title: str | None = None,
    ) -> None:
        setup()
        where = title
        if trace is not None:
            if pass_index is None or page is None:
                raise RamlabError("XbzrleDeltaView(trace, pass_index, page): give a pass and a global page")
            if trace.page_bytes is None:
                raise RamlabError("this trace has no page contents (trace.page_bytes is None)")
            old, new = trace.page_bytes(int(pass_index), int(page))
            if old is None or new is None:
                raise RamlabError(f"contents of page {page} around pass {pass_index} are not known")
            block, pib = trace.block_of(int(page))
            cls = CLASS_NAMES[int(trace.classes[pass_index, page])]
            where = where or (f"pass {pass_index}, page {page} = {block.name} "
                              f"+0x{pib * trace.target_page_size:x} (sent as {cls})")
        if old is None or new is None:
            raise RamlabError("XbzrleDeltaView needs a trace + pass + page, or old= and new=")
        self.analysis = analyze_delta(old, new, dlen)
        self.title = where or "XBZRLE delta"
        self.summary = W.HTML(self._summary_html())
        self.strip = self._build_strip(width)
        self.plot = BokehModel(self.strip)
        self.hex = W.HTML(_scroll(self._hex_html()))
        self.encoded = W.HTML(_scroll(self._encoded_html()))
        tabs = W.Tab(children=[self.hex, self.encoded])
        tabs.set_title(0, "old | new (hex)")
        tabs.set_title(1, "encoded bytes")
        super().__init__([self.summary, self.plot, tabs])

    @classmethod
    def from_arrays(cls, old: Any, new: Any, *, dlen: int | None = None, **kwargs: Any) -> XbzrleDeltaView:
        """View of the delta between two raw pages (``bytes`` or uint8 arrays)."""
        return cls(old=old, new=new, dlen=dlen, **kwargs)

    # ------------------------------------------------------------------ pieces
    def _summary_html(self) -> str:
        a = self.analysis
        size = a.new.size
        n_runs = sum(1 for r in a.runs if r.kind == "changed")
        head = (f"<b>{html.escape(self.title)}</b><br>"
                f"{a.changed_bytes} of {size} bytes changed in {n_runs} run(s). ")
        if a.outcome == "unchanged":
            body = ("Identical to the cached copy: encoder returns 0, <b>nothing is sent</b> "
                    "(XBZRLE_UNCHANGED).")
        elif a.outcome == "encoded":
            n = len(a.encoded)
            body = (f"Encoded in <b>{n} bytes</b> = {100 * n / size:.1f}% of {size} "
                    f"(dlen {a.dlen}); record on the wire: 8-byte header + 3 + {n} = {n + 11} bytes "
                    f"instead of {size + 8}.")
        else:
            o = a.overflow
            why = ""
            if o is not None:
                why = (f" The encoder gives up at {_CHECK_TEXT.get(o.check, o.check)}: after run pair "
                       f"{o.run}, d = {o.d} bytes written, needs {o.need} &gt; dlen = {o.dlen}.")
            body = (f"<b style='color:#b00'>Overflow</b>: the encoding would not fit in "
                    f"dlen = {a.dlen} bytes "
                    f"(encoder returns -1).{why} The page is sent as a plain PAGE record "
                    f"({size + 8} bytes; XBZRLE_OVERFLOW).")
        return f"<div style='font-size:12px;line-height:1.6'>{head}{body}</div>"

    def _build_strip(self, width: int) -> Any:
        a = self.analysis
        size = a.new.size
        fig = figure(width=width, height=190, x_range=Range1d(0, size, bounds=(0, size)),
                     y_range=Range1d(0, 3.2), tools="xbox_zoom,xpan,xwheel_zoom,reset,save",
                     title="bytes of the page: old (top), new (middle), runs (bottom)",
                     x_axis_label="byte offset in the page", toolbar_location="above")
        fig.yaxis.ticker = [0.5, 1.5, 2.5]
        fig.yaxis.major_label_overrides = {0.5: "runs", 1.5: "new", 2.5: "old"}
        fig.ygrid.visible = False
        mapper = LinearColorMapper(palette=list(reversed(Greys256)), low=0, high=255)
        img_src = ColumnDataSource(
            dict(image=[a.old[None, :], a.new[None, :]], y=[2.05, 1.05], name=["old", "new"])
        )
        img = fig.image(image="image", x=0, y="y", dw=size, dh=0.9, source=img_src, color_mapper=mapper)
        fig.add_tools(HoverTool(renderers=[img], tooltips=[("", "@name"), ("offset", "$x{0}"),
                                                           ("value", "@image")]))
        kinds = [r.kind for r in a.runs]
        run_src = ColumnDataSource(dict(
            left=[r.offset for r in a.runs], right=[r.offset + r.length for r in a.runs],
            kind=kinds, offset=[r.offset for r in a.runs], length=[r.length for r in a.runs],
            color=[_CHANGED_COLOR if k == "changed" else _ZERO_COLOR for k in kinds],
        ))
        q = fig.quad(left="left", right="right", bottom=0.1, top=0.9, color="color", source=run_src,
                     line_color=None)
        fig.add_tools(HoverTool(renderers=[q], tooltips=[("run", "@kind"), ("offset", "@offset"),
                                                         ("length", "@length")]))
        return fig

    def _hex_html(self, context: int = 1, max_rows: int = 160) -> str:
        a = self.analysis
        size = a.new.size
        nrow = -(-size // 16)
        pad = nrow * 16 - size
        old = np.concatenate([a.old, np.zeros(pad, np.uint8)]).reshape(nrow, 16)
        new = np.concatenate([a.new, np.zeros(pad, np.uint8)]).reshape(nrow, 16)
        diff = old != new
        rows_changed = diff.any(axis=1)
        show = rows_changed.copy()
        for s in range(1, context + 1):
            show[:-s] |= rows_changed[s:]
            show[s:] |= rows_changed[:-s]
        if not rows_changed.any():
            show[: min(4, nrow)] = True
        out = ["<pre style='font-size:11px;line-height:1.25;margin:0'>"
               "offset  old                                              | new</pre>"]
        lines, skipped, shown = [], 0, 0
        for r in range(nrow):
            if not show[r] or shown >= max_rows:
                skipped += 1
                continue
            if skipped:
                lines.append(f"<span style='color:#999'>        ... {skipped} identical row(s) ...</span>")
                skipped = 0
            shown += 1
            o = " ".join(_hexbyte(v, d, "#fdd") for v, d in zip(old[r], diff[r]))
            n = " ".join(_hexbyte(v, d, "#f88") for v, d in zip(new[r], diff[r]))
            lines.append(f"{r * 16:06x}  {o} | {n}")
        if skipped:
            lines.append(f"<span style='color:#999'>        ... {skipped} row(s) not shown ...</span>")
        out.append("<pre style='font-size:11px;line-height:1.25;margin:0'>" + "\n".join(lines) + "</pre>")
        return "".join(out)

    def _encoded_html(self, max_tokens: int = 400) -> str:
        a = self.analysis
        if a.outcome != "encoded":
            return "<i>no encoded bytes: " + ("the page is unchanged" if a.outcome == "unchanged"
                                              else "the encoding overflowed") + "</i>"
        enc = a.encoded
        rows = []
        for t in a.tokens[:max_tokens]:
            raw = enc[t.offset: t.offset + t.size]
            shown = raw[:24].hex(" ") + (" ..." if len(raw) > 24 else "")
            if t.kind == "zrun":
                meaning = f"ULEB128 zero run: {t.value} equal bytes (page {t.page_offset}..)"
            elif t.kind == "nzrun":
                meaning = f"ULEB128 changed run: {t.value} bytes follow"
            else:
                meaning = f"literal new bytes for page {t.page_offset}..{t.page_offset + t.value - 1}"
            color = _FIELD_COLORS.get(t.kind, "#000")
            rows.append(f"<tr><td>{t.offset}</td><td style='color:{color}'>{html.escape(t.kind)}</td>"
                        f"<td><code>{shown}</code></td><td>{html.escape(meaning)}</td></tr>")
        more = f"<tr><td colspan=4>... {len(a.tokens) - max_tokens} more fields</td></tr>" \
            if len(a.tokens) > max_tokens else ""
        return (f"<div style='font-size:12px'>{len(enc)} encoded bytes, grammar (zrun nzrun data)+, "
                f"no trailing zero run</div><table style='font-size:11px'><tr><th>at</th><th>field</th>"
                f"<th>bytes</th><th>meaning</th></tr>{''.join(rows)}{more}</table>")


def _scroll(inner: str, max_height: int = 380) -> str:
    return f"<div style='max-height:{max_height}px;overflow:auto'>{inner}</div>"


def _hexbyte(v: int, changed: bool, bg: str) -> str:
    return f"<span style='background:{bg}'>{int(v):02x}</span>" if changed else f"{int(v):02x}"

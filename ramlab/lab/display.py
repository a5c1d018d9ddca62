"""Small display helpers for the labs (plain HTML, no extra dependencies).

    >>> "<th" in str(table([(1, "a")], ["n", "s"]))
    True
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["HTML", "table", "hexdump", "describe_event", "events_table"]


class HTML:
    """A piece of HTML that a notebook displays (``str()`` gives the HTML source)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _repr_html_(self) -> str:
        return self.source

    def __str__(self) -> str:
        return self.source


_TD = "style='border:1px solid #ddd;padding:2px 8px;text-align:left;font-family:monospace;font-size:12px'"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], caption: str | None = None) -> HTML:
    """An HTML table of ``rows`` (cells are escaped; ints get thousands separators).

    >>> "<th" in str(table([(1, "a")], ["n", "s"]))
    True
    """
    def cell(v: Any) -> str:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return f"{int(v):,}"
        if isinstance(v, (float, np.floating)):
            return f"{float(v):,.3g}"
        return html.escape(str(v))

    head = "".join(f"<th {_TD}>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td {_TD}>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return HTML(f"<table style='border-collapse:collapse'>{cap}<tr>{head}</tr>{body}</table>")


def hexdump(data: bytes | memoryview, start: int, length: int = 64, *, mark: tuple[int, int] | None = None,
            width: int = 16) -> HTML:
    """Hex + ASCII dump of ``data[start:start+length]``; bytes in ``mark = (offset, n)`` are highlighted.

    >>> "51 45 56 4d" in str(hexdump(b"QEVM", 0, 4))
    True
    """
    lines = []
    lo = max(0, start - start % width)
    hi = min(len(data), start + length)
    for row in range(lo, hi, width):
        chunk = bytes(data[row : min(row + width, hi)])
        hexes, text = [], []
        for i, b in enumerate(chunk):
            at = row + i
            h, c = f"{b:02x}", (chr(b) if 32 <= b < 127 else ".")
            if at < start:
                h, c = "  ", " "
            elif mark and mark[0] <= at < mark[0] + mark[1]:
                h = f"<b style='background:#ffd54f'>{h}</b>"
                c = f"<b style='background:#ffd54f'>{html.escape(c)}</b>"
            else:
                c = html.escape(c)
            hexes.append(h)
            text.append(c)
        lines.append(f"{row:08x}  {' '.join(hexes):<{width * 3}}  {''.join(text)}")
    return HTML("<pre style='font-size:12px;line-height:1.3'>" + "\n".join(lines) + "</pre>")


def describe_event(e: Any) -> str:
    """One line saying what a decoder event is on the wire."""
    name = type(e).__name__
    if name == "FileHeader":
        return f"magic QEVM, version {e.version}"
    if name == "Configuration":
        return f"configuration: machine {e.machine_type}"
    if name == "SectionHeader":
        return f"section {e.type_name} id {e.section_id} ({e.idstr})"
    if name == "SectionFooter":
        return f"footer 0x7e, section id {e.section_id}"
    if name == "RamMemSize":
        return f"MEM_SIZE: {len(e.blocks)} blocks, total 0x{e.total:x} bytes"
    if name == "RamPages":
        kind = "ZERO" if e.kind == 0x02 else "PAGE"
        first = int(e.page_offsets[0]) if len(e) else 0
        named = f"named {e.block}" if e.named else f"CONTINUE ({e.block})"
        return f"{len(e)} x {kind}, first +0x{first:x}, {named}"
    if name == "RamXbzrle":
        return f"XBZRLE +0x{e.page_offset:x} of {e.block}, {len(e.data)} encoded bytes"
    if name == "RamCompressed":
        return f"COMPRESS_PAGE +0x{e.page_offset:x} of {e.block}, clen {len(e.data)}"
    if name == "RamEos":
        return "EOS: end of this RAM section body"
    if name == "Command":
        v = f" {e.value}" if e.value is not None else ""
        return f"command {e.name}{v} ({len(e.payload)} payload bytes)"
    if name == "DeviceState":
        return f"device state of {e.idstr} ({len(e.body)} bytes)"
    if name == "EndOfFile":
        return "EOF"
    if name == "VmDescription":
        return f"vmdesc JSON trailer ({len(e.json_bytes):,} bytes)"
    return name


def events_table(events: Sequence[Any], data: bytes | memoryview | None = None, *, start: int = 0, n: int = 20,
                 around: int | None = None, peek: int = 12) -> HTML:
    """A table of decoder events: byte offset, event, meaning, and the first ``peek`` bytes at the offset.

    ``around=offset`` shows the ``n`` events ending at the last one that starts at or before it.
    """
    evs = list(events)
    if around is not None:
        idx = max((i for i, e in enumerate(evs) if e.offset <= around), default=0)
        start = max(0, idx - n + 2)
    rows = []
    for e in evs[start : start + n]:
        raw = bytes(data[e.offset : e.offset + peek]).hex(" ") if data is not None else ""
        rows.append((e.offset, f"0x{e.offset:x}", type(e).__name__, describe_event(e), raw))
    return table(rows, ["offset", "hex", "event", "meaning", f"first {peek} bytes" if data is not None else ""])

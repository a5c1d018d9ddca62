"""The colour of each page class, shared by every view (widgets and the HTML report).

    >>> from ramlab.trace import PageClass
    >>> class_color(PageClass.ZERO) == CLASS_COLORS[PageClass.ZERO]
    True
    >>> class_name(99)
    'NO_PAGE'
"""

from __future__ import annotations

import html

from ramlab.trace import CLASS_NAMES, N_CLASSES, PageClass

__all__ = ["CLASS_COLORS", "NO_PAGE_COLOR", "PALETTE", "class_color", "class_name", "swatch"]

#: colour of each PageClass (index = code), then NO_PAGE (past the end of RAM)
CLASS_COLORS: dict[PageClass, str] = {
    PageClass.NOT_SENT: "#eeeeee",
    PageClass.ZERO: "#9ecae1",
    PageClass.NORMAL: "#d62728",
    PageClass.XBZRLE: "#2ca02c",
    PageClass.XBZRLE_UNCHANGED: "#b5e3a8",
    PageClass.XBZRLE_OVERFLOW: "#ff7f0e",
    PageClass.COMPRESSED: "#9467bd",
    PageClass.DISCARDED: "#555555",
    PageClass.REQUESTED: "#e377c2",
    PageClass.POSTCOPY: "#8c564b",
}
NO_PAGE_COLOR = "#ffffff"
PALETTE: list[str] = [CLASS_COLORS[PageClass(k)] for k in range(N_CLASSES)] + [NO_PAGE_COLOR]


def class_color(code: int) -> str:
    """Colour of a class code (``NO_PAGE`` -> white)."""
    return PALETTE[int(code)] if 0 <= int(code) < len(PALETTE) else NO_PAGE_COLOR


def swatch(code: int, text: str) -> str:
    """An inline HTML colour swatch followed by ``text`` (escaped)."""
    return (
        f"<span style='display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:middle;"
        f"border:1px solid #999;background:{class_color(code)}'></span>{html.escape(text)}"
    )


def class_name(code: int) -> str:
    """Name of a class code, ``'NO_PAGE'`` past the end."""
    return CLASS_NAMES[code] if 0 <= code < N_CLASSES else "NO_PAGE"

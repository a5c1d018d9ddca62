"""The colour of each page class, shared by every view (widgets, HTML report, static pictures).

Colour-blind safe: the sent classes use the Okabe-Ito palette (Okabe & Ito 2008, "Color Universal
Design"), chosen so that every pair of classes stays apart for deuteranopes and protanopes too
(``tests/test_palette.py`` simulates both with the Machado 2009 matrices and checks the CIEDE2000
distance of every pair; the same for the series of the live view's convergence curve, which draw from
:data:`OKABE_ITO` too).  Colour is never the only cue: hover text and legends name the class, and
the curve's series differ by line dash and marker as well.

    >>> from ramlab.trace import PageClass
    >>> class_color(PageClass.ZERO) == CLASS_COLORS[PageClass.ZERO]
    True
    >>> class_name(99)
    'NO_PAGE'
"""

from __future__ import annotations

import html

from ramlab.trace import CLASS_NAMES, N_CLASSES, PageClass

__all__ = ["CLASS_COLORS", "NO_PAGE_COLOR", "OKABE_ITO", "PALETTE", "class_color", "class_name", "swatch",
           "legend_html", "rgb", "text_height"]

#: the eight Okabe-Ito colours by name: the page classes below and the views' other series (the live
#: view's convergence curve) draw from them
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#e69f00",
    "sky blue": "#56b4e9",
    "bluish green": "#009e73",
    "yellow": "#f0e442",
    "blue": "#0072b2",
    "vermillion": "#d55e00",
    "reddish purple": "#cc79a7",
}

#: colour of each PageClass (index = code), then NO_PAGE (past the end of RAM)
CLASS_COLORS: dict[PageClass, str] = {
    PageClass.NOT_SENT: "#e8e8e8",  # light grey: the background of a pass
    PageClass.ZERO: "#56b4e9",  # sky blue
    PageClass.NORMAL: "#d55e00",  # vermillion
    PageClass.XBZRLE: "#009e73",  # bluish green
    PageClass.XBZRLE_UNCHANGED: "#f0e442",  # yellow
    PageClass.XBZRLE_OVERFLOW: "#e69f00",  # orange
    PageClass.COMPRESSED: "#cc79a7",  # reddish purple
    PageClass.DISCARDED: "#000000",  # black
    PageClass.REQUESTED: "#0072b2",  # blue
    PageClass.POSTCOPY: "#7a4a1a",  # brown (the eighth Okabe-Ito colour, black, is DISCARDED)
}
NO_PAGE_COLOR = "#ffffff"
PALETTE: list[str] = [CLASS_COLORS[PageClass(k)] for k in range(N_CLASSES)] + [NO_PAGE_COLOR]


def class_color(code: int) -> str:
    """Colour of a class code (``NO_PAGE`` -> white)."""
    return PALETTE[int(code)] if 0 <= int(code) < len(PALETTE) else NO_PAGE_COLOR


def rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> ``(r, g, b)``.

    >>> rgb("#d55e00")
    (213, 94, 0)
    """
    h = color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def swatch(code: int, text: str) -> str:
    """An inline HTML colour swatch followed by ``text`` (escaped)."""
    return (
        f"<span style='display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:middle;"
        f"border:1px solid #999;background:{class_color(code)}'></span>{html.escape(text)}"
    )


def legend_html(counts: dict[int, int] | None = None, codes: list[int] | None = None) -> str:
    """The class legend as HTML items that wrap inside their box: swatch, name and (if given) count.

    ``codes`` default to the classes with a count, else all classes.

    >>> "XBZRLE" in legend_html({3: 5})
    True
    """
    if codes is None:
        codes = [k for k in range(N_CLASSES) if counts and counts.get(k)] if counts else list(range(N_CLASSES))
    items = []
    for k in codes:
        n = f" {counts.get(k, 0):,}" if counts is not None else ""
        items.append(f"<span style='white-space:nowrap;margin-right:10px;display:inline-block'>"
                     f"{swatch(k, CLASS_NAMES[k])}{n}</span>")
    return "".join(items)


def class_name(code: int) -> str:
    """Name of a class code, ``'NO_PAGE'`` past the end."""
    return CLASS_NAMES[code] if 0 <= code < N_CLASSES else "NO_PAGE"


def text_height(htmls: list[str], width: int, font_px: float = 12, line_height: float = 1.6) -> int:
    """Pixels a fixed-size text box needs to show the longest of ``htmls`` at ``width`` pixels (estimate:
    0.6 em a character, ``<br>`` / ``<div>`` / a table row start lines, a row as tall as a line of text,
    i.e. cells without vertical padding; one spare line).  Boxes keep their size whatever the text, so a
    layout never moves; this keeps them from cutting their text.

    >>> text_height(["a<br>b"], 300), text_height(["<table><tr><td>a</td></tr><tr><td>b</td></tr></table>"], 300)
    (62, 62)
    """
    import re

    per_line = max(1, int(width / (0.6 * font_px)))
    worst = 1
    for h in htmls:
        parts = re.split(r"<br\s*/?>|</div>|</p>|</tr>", h)
        lines = 0
        for part in parts:
            text = html.unescape(re.sub(r"<[^>]+>", "", part))
            extra = 2 * part.count("<span style='display:inline-block;width:11px")  # a swatch ~ two characters
            if text.strip() or extra:
                lines += max(1, -(-(len(text) + extra) // per_line))
        worst = max(worst, lines)
    return int(round((worst + 1) * font_px * line_height + 4))

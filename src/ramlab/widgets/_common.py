"""Shared bits of the widgets: the one-time BokehJS setup, class colours, small HTML helpers."""

from __future__ import annotations

import html

from ramlab.trace import CLASS_NAMES, N_CLASSES, PageClass

__all__ = ["setup", "CLASS_COLORS", "PALETTE", "class_color", "swatch"]

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

_state = {"done": False}


def setup(force: bool = False) -> bool:
    """Load BokehJS into the notebook page once (INLINE resources: no CDN needed).

    Every ramlab widget calls it before creating its first ``BokehModel``; calling it
    yourself at the top of a notebook is harmless.  Outside an IPython kernel it does
    nothing and returns ``False``.

    >>> setup()        # in a plain interpreter: nothing to load into
    False
    """
    if _state["done"] and not force:
        return True
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return False
    if get_ipython() is None:
        return False
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(resources=INLINE, hide_banner=True)
    _state["done"] = True
    return True


def class_color(code: int) -> str:
    """Colour of a class code (``NO_PAGE`` -> white)."""
    return PALETTE[int(code)] if 0 <= int(code) < len(PALETTE) else NO_PAGE_COLOR


def swatch(code: int, text: str) -> str:
    """An inline HTML colour swatch followed by ``text`` (escaped)."""
    return (
        f"<span style='display:inline-block;width:11px;height:11px;margin-right:4px;"
        f"border:1px solid #999;background:{class_color(code)}'></span>{html.escape(text)}"
    )


def class_name(code: int) -> str:
    """Name of a class code, ``'NO_PAGE'`` past the end."""
    return CLASS_NAMES[code] if 0 <= code < N_CLASSES else "NO_PAGE"

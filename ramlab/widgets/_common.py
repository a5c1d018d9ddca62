"""The one-time BokehJS setup shared by the widgets."""

from __future__ import annotations

__all__ = ["setup"]

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

"""What every ramlab widget shares: BokehJS in the page (offline, reopen-safe, not in the saved
notebook) and a static picture for front ends without a widget manager.

**BokehJS.**  The ``jupyter_bokeh`` views need ``window.Bokeh`` before they are built.  It comes from
:func:`ramlab.plots.bokehjs.loader_js` (the installed bokeh's own files, no CDN) by two routes:

* the page that runs the first ramlab cell: :func:`setup` displays the loader as JavaScript and at once
  replaces that output by an empty one, so it runs in the page but is not saved in the notebook;
* a page that *restores* widgets (the notebook reopened in another tab, or reloaded, on a live kernel):
  every ramlab widget's first child is the one :class:`BokehJSLoader`, an ``Output`` widget whose
  output is the loader.  Output widgets render their outputs as trusted, in order, before the
  widget's bokeh views are built, so BokehJS is there in time.  Its state is empty when the widget is
  created (what ``nbclient`` records into a notebook's metadata stays small) and holds the loader
  whenever a front end asks for the state of existing widgets (JupyterLab does when it connects).

**Static fallback.**  :class:`ViewBox` adds ``text/html`` (a picture of the current state, see
:mod:`ramlab.plots.static`) and a one-line ``text/plain`` to the widget's mime bundle: ``nbconvert``,
nbviewer and GitHub show those; JupyterLab shows the live widget.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W
from traitlets import Tuple

from ramlab.plots.bokehjs import loader_js

__all__ = ["setup", "BokehJSLoader", "bokehjs_loader", "ViewBox"]

_state: dict[str, Any] = {"page": False, "loader": None}


def _loader_outputs(value: Any, widget: BokehJSLoader) -> list[dict[str, Any]]:
    """``to_json`` of :attr:`BokehJSLoader.outputs`: empty the first time (the widget opening), the
    loader after (a front end restoring widgets)."""
    if not widget.__dict__.get("_opened"):
        widget.__dict__["_opened"] = True
        return []
    return [{"output_type": "display_data", "data": {"application/javascript": loader_js()}, "metadata": {}}]


class BokehJSLoader(W.Output):
    """The invisible first child of every ramlab widget: loads BokehJS into a page that restores the
    widget (see the module docstring).  One instance per kernel: :func:`bokehjs_loader`."""

    outputs = Tuple(help="the loader, sent to front ends that restore widgets").tag(
        sync=True, to_json=_loader_outputs)

    def __init__(self) -> None:
        super().__init__(layout=W.Layout(display="none"))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = ""
        return data


def bokehjs_loader() -> BokehJSLoader:
    """The kernel's :class:`BokehJSLoader` (created on first use)."""
    if _state["loader"] is None:
        _state["loader"] = BokehJSLoader()
    return _state["loader"]


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return False
    return get_ipython() is not None and getattr(get_ipython(), "kernel", None) is not None


def setup(force: bool = True) -> bool:
    """Load BokehJS into this notebook page (offline: bokeh's own files; nothing kept in the saved file).

    Calling it at the top of a notebook loads BokehJS early and makes ``bokeh.plotting.show(fig)``
    draw in the notebook; the widgets call it themselves with ``force=False`` (once per kernel), and
    carry a :class:`BokehJSLoader` for pages that reopen the notebook.  Outside a Jupyter kernel it
    does nothing and returns ``False``.

    >>> setup()        # in a plain interpreter: nothing to load into
    False
    """
    if not _in_kernel():
        return False
    from bokeh.io.state import curstate
    from IPython.display import display

    # bokeh.plotting.show() draws into the notebook (not into an HTML file) from now on; BokehJS is the
    # loader's, not output_notebook()'s (which would embed it in the notebook, twice)
    curstate().output_notebook()
    if force or not _state["page"]:
        handle = display({"application/javascript": loader_js()}, raw=True, display_id=True)
        if handle is not None:
            handle.update({"text/plain": ""}, raw=True)
        _state["page"] = True
    if force:
        display(bokehjs_loader())
    return True


class ViewBox(W.VBox):
    """Base of the ramlab widgets: a ``VBox`` of the :class:`BokehJSLoader` then ``children``, whose
    mime bundle carries a static picture (``text/html``) and a one-line ``text/plain``.

    Subclasses implement :meth:`static_html` (and may override :meth:`summary_text`); those without
    bokeh figures set ``uses_bokeh = False`` (no loader).
    """

    uses_bokeh = True

    def __init__(self, children: list[W.Widget], **kwargs: Any) -> None:
        if self.uses_bokeh:
            setup(force=False)
            children = [bokehjs_loader(), *children]
        super().__init__(children, **kwargs)

    def static_html(self) -> str:
        """Standalone HTML of the current state (no script): what nbconvert / nbviewer / GitHub show."""
        return ""

    def summary_text(self) -> str:
        """One line saying what the widget shows."""
        return type(self).__name__

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = self.summary_text()
        html = self.static_html()
        if html:
            data["text/html"] = html
        return data

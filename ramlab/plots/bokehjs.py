"""BokehJS for a notebook page: the JavaScript that loads bokeh's own files, offline and at most once a page.

The widgets draw with BokehJS, which the ``jupyter_bokeh`` front end expects to find as ``window.Bokeh``
(its lab extension does not ship it).  ``bokeh.io.output_notebook(INLINE)`` puts the 4 MB of every
BokehJS bundle *twice* into the saved notebook; a CDN needs the network.  Instead the widgets
(:mod:`ramlab.widgets._common`) run :func:`loader_js`: the bundles the views need (``bokeh`` and
``bokeh-widgets``, 1.6 MB, read from the installed ``bokeh`` package through its public
``Resources`` API) as one JavaScript string that is evaluated only when the page has no BokehJS of
this version yet.

    >>> js = loader_js()
    >>> js.startswith("(function () {") and '"3.' in js and len(js) > 1_000_000
    True
"""

from __future__ import annotations

import functools
import json

__all__ = ["COMPONENTS", "bokehjs_version", "loader_js"]

#: BokehJS bundles the views use: the core and the widgets (sliders, buttons, text panels)
COMPONENTS = ("bokeh", "bokeh-widgets")

_LOADER = """(function () {
  const B = window.Bokeh;
  if (B && B.version === %(version)s && B.Widgets) return;
  const s = document.createElement("script");
  s.setAttribute("data-ramlab-bokehjs", %(version)s);
  s.textContent = %(source)s;
  document.head.appendChild(s);
})();"""


def bokehjs_version() -> str:
    """The version of the installed bokeh (Python and BokehJS must match)."""
    import bokeh

    return str(bokeh.__version__)


@functools.cache
def loader_js() -> str:
    """JavaScript that loads BokehJS (:data:`COMPONENTS`) into the page unless this version is there.

    Appending a ``<script>`` whose text is the bundles runs them at once, at global scope, so
    ``window.Bokeh`` exists when the statement returns; the source travels as a JSON string,
    which the browser scans quickly and parses as code only when it is needed.
    """
    from bokeh.resources import Resources

    source = "\n".join(Resources(mode="inline", components=list(COMPONENTS)).js_raw)
    version = json.dumps(bokehjs_version())
    return _LOADER % {"version": version, "source": json.dumps(source)}

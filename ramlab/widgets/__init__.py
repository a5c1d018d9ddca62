"""Interactive notebook views of a :class:`ramlab.trace.Trace` (ipywidgets + bokeh).

Every view is a thin ``ipywidgets.VBox`` (:class:`~ramlab.widgets._common.ViewBox`) around bokeh
layouts built in :mod:`ramlab.plots` (shared with the HTML report) and shown through
``jupyter_bokeh.BokehModel``; data preparation is pure numpy in :mod:`ramlab.plots.reduce`.  Each
view's mime bundle also carries a static picture for nbconvert, nbviewer and GitHub.

    >>> from ramlab.trace import synthetic_trace
    >>> from ramlab.widgets import MigrationPlayer, setup
    >>> _ = setup()                      # loads BokehJS into the page (offline, not saved in the notebook)
    >>> player = MigrationPlayer(synthetic_trace(n_pages=2048, n_passes=4))
"""

from __future__ import annotations

from ramlab.plots.palette import CLASS_COLORS, PALETTE
from ramlab.widgets._common import setup
from ramlab.widgets.bitmap import BitmapView
from ramlab.widgets.inspector import StreamInspector
from ramlab.widgets.player import MigrationPlayer
from ramlab.widgets.postcopy_view import PostcopyDiscardView
from ramlab.widgets.xbzrle_view import XbzrleDeltaView

__all__ = [
    "setup",
    "BitmapView",
    "MigrationPlayer",
    "XbzrleDeltaView",
    "PostcopyDiscardView",
    "StreamInspector",
    "CLASS_COLORS",
    "PALETTE",
]

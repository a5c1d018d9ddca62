"""Bokeh figures and numpy reductions shared by the widgets and the HTML report (no ipywidgets).

- :mod:`ramlab.plots.reduce`: page grids and the per-pixel class histogram (pure numpy)
- :mod:`ramlab.plots.palette`: the colour of each page class
- :mod:`ramlab.plots.page_map`: the page-class map whose pass changes happen in the browser, its hover tool
- :mod:`ramlab.plots.passes`: the per-pass bar charts
- :mod:`ramlab.plots.player`: the migration player's layout (map, charts, controls)
- :mod:`ramlab.plots.postcopy`: the postcopy discard maps, step by step, and the data behind them
- :mod:`ramlab.plots.live`: the figures of a migration followed as it happens
- :mod:`ramlab.plots.delta_strip`, :mod:`ramlab.plots.static`, :mod:`ramlab.plots.bokehjs`: an XBZRLE
  page's changed bytes, static pictures for nbconvert, BokehJS for a notebook page
"""

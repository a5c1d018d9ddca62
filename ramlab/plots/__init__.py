"""Bokeh figures and numpy reductions shared by the widgets and the HTML report (no ipywidgets).

- :mod:`ramlab.plots.reduce`: page grids and the per-pixel class histogram (pure numpy)
- :mod:`ramlab.plots.palette`: the colour of each page class
- :mod:`ramlab.plots.page_map`: the hover tool of a page-class map
- :mod:`ramlab.plots.passes`: the per-pass bar charts
"""

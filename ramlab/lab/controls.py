"""Let students vary an experiment: ipywidgets controls that re-run a function and show its output.

    >>> import ipywidgets as W
    >>> seen = []
    >>> box = explore(lambda bandwidth, xbzrle: seen.append((bandwidth, xbzrle)),
    ...               bandwidth=W.IntSlider(value=16, min=4, max=64, description="MiB/s"),
    ...               xbzrle=W.Checkbox(value=False, description="XBZRLE"))
    >>> box.controls["bandwidth"].value = 32
    >>> seen                       # run with the initial values, then on each change
    [(16, False), (32, False)]

The function may ``display()`` anything (a table, a bokeh figure via ``bokeh.plotting.show``);
it lands in the box's output area, cleared before each run. With ``auto=True`` (default) every
change of a control re-runs it; ``auto=False`` adds a Run button for slow experiments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W

__all__ = ["Explorer", "explore"]


class Explorer(W.VBox):
    """Controls above an output area; :meth:`run` calls the function with the controls' values."""

    def __init__(self, fn: Callable[..., Any], controls: dict[str, W.ValueWidget], *, auto: bool = True,
                 title: str | None = None) -> None:
        self.fn = fn
        self.controls = controls
        self.out = W.Output()
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.button.on_click(lambda _b: self.run())
        header = [W.HTML(f"<b>{title}</b>")] if title else []
        row = W.HBox(list(controls.values()) + ([] if auto else [self.button]),
                     layout=W.Layout(flex_flow="row wrap"))
        super().__init__(header + [row, self.out])
        if auto:
            for c in controls.values():
                c.observe(lambda _change: self.run(), names="value")

    def values(self) -> dict[str, Any]:
        """The controls' current values, by parameter name."""
        return {k: c.value for k, c in self.controls.items()}

    def run(self) -> Any:
        """Clear the output area and call the function with the current values."""
        if _in_kernel():  # outside a kernel clear_output would print terminal escapes
            self.out.clear_output(wait=True)
        with self.out:
            return self.fn(**self.values())


def _in_kernel() -> bool:
    from IPython import get_ipython

    return get_ipython() is not None


def explore(fn: Callable[..., Any], *, auto: bool = True, title: str | None = None,
            **controls: W.ValueWidget) -> Explorer:
    """An :class:`Explorer` over ``fn``, run once with the initial values."""
    box = Explorer(fn, controls, auto=auto, title=title)
    box.run()
    return box

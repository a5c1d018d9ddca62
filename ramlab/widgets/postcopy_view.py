"""``PostcopyDiscardView``: how the postcopy discard bitmap is computed and what goes on the wire.

Target pages are laid out on a grid whose rows are whole host pages (or several host pages
when they are small), with the host-page boundaries drawn.  A step selector walks through
``plan.steps`` (seed: unsent pass, dirty pass, ``unsent |= dirty``, send runs; modern:
canonicalise, send runs): the maps before and after the step side by side, the host pages
the step fixed up outlined, and the ranges it sent hatched (duplicated ranges in magenta).
Below, the POSTCOPY_RAM_DISCARD commands exactly as QEMU batches them (<= 12 ranges each),
with byte offsets / lengths and the payload hex of
:func:`ramlab.wire.commands.encode_discard_payload`.

A thin ipywidgets shell: the maps, the step control and the summary box are the bokeh
:class:`~ramlab.plots.postcopy.DiscardLayout` (whose step change happens in the browser), and the
data preparation is the numpy of :mod:`ramlab.plots.postcopy` (re-exported here), which the HTML
report can use without ipywidgets.  This module adds the seed / modern toggle, the legend and the
table of commands, and keeps the plan or capture the steps come from.

    >>> import numpy as np
    >>> d = np.zeros(64, bool); d[[3, 17, 18]] = True
    >>> view = PostcopyDiscardView((d, np.zeros(64, bool)), host_ratio=8, algorithm="modern")
    >>> [s.name for s in view.steps], view.step_select.value, view.client
    (['canonicalise', 'send_runs'], 1, True)
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np
from jupyter_bokeh import BokehModel

from ramlab.constants import TARGET_PAGE_SIZE
from ramlab.errors import RamlabError
from ramlab.model.postcopy_plan import DiscardPlan, plan_discards
from ramlab.plots.postcopy import (
    STATE_COLORS,
    CaptureDiscards,
    DiscardLayout,
    StepSelect,
    ViewStep,
    capture_discards,
    capture_view_steps,
    command_rows,
    commands_html,
    covered_twice,
    discard_legend_html,
    grid_image,
    host_grid,
    host_page_rects,
    plan_commands,
    plan_view_steps,
    range_segments,
    state_codes,
    step_summary_html,
)
from ramlab.plots.static import class_map_img, figure_html
from ramlab.widgets._common import ViewBox

__all__ = [
    "PostcopyDiscardView",
    "StepSelect",
    "ViewStep",
    "host_grid",
    "state_codes",
    "grid_image",
    "host_page_rects",
    "range_segments",
    "plan_view_steps",
    "command_rows",
    "capture_discards",
]


class PostcopyDiscardView(ViewBox):
    """The postcopy discard computation of one RAM block, step by step, and its wire commands.

    ``plan_or_bitmaps`` is a :class:`~ramlab.model.postcopy_plan.DiscardPlan`, or ``(dirty, unsent)``
    bool arrays (one entry per target page; ``unsent`` may be ``None`` for ``"modern"``) with
    ``host_ratio`` = host page size / target page size.  From bitmaps the seed / modern toggle
    recomputes the plan; from a plan alone the toggle is disabled (the input maps are not
    part of a plan) and the maps before the first step are not shown.
    Use :meth:`from_migration` for the real discards of a decoded postcopy capture.

    :attr:`step_select` (a :class:`StepSelect`) is the step shown; :attr:`fixup_source`,
    :attr:`sent_source`, :attr:`image_sources` and ``summary.value`` hold that step's data, whether
    it was chosen in the page or from Python.

    >>> import numpy as np
    >>> d = np.zeros(64, bool); d[[3, 17, 18]] = True
    >>> u = np.zeros(64, bool); u[40:] = True; u[13] = True
    >>> view = PostcopyDiscardView((d, u), host_ratio=8, block="m0")
    >>> view.step_select.value = 0                      # the unsent pass
    >>> view.fixup_source.data["host_page"]             # host page 1 was partly sent
    [1]
    >>> view.set_algorithm("modern"); [c["series"] for c in view.commands]
    ['final']
    """

    def __init__(
        self,
        plan_or_bitmaps: DiscardPlan | tuple[np.ndarray, np.ndarray | None] | np.ndarray,
        host_ratio: int | None = None,
        algorithm: str = "seed",
        block: str = "pc.ram",
        *,
        unsent: np.ndarray | None = None,
        target_page_size: int = TARGET_PAGE_SIZE,
        width: int = 820,
        max_cols: int = 512,
        title: str | None = None,
    ) -> None:
        self.block = block
        self.target_page_size = int(target_page_size)
        self.capture: CaptureDiscards | None = None
        self.dirty: np.ndarray | None = None
        self.unsent: np.ndarray | None = None
        if isinstance(plan_or_bitmaps, DiscardPlan):
            self.plan: DiscardPlan | None = plan_or_bitmaps
            self.host_ratio = plan_or_bitmaps.host_ratio
            self.algorithm = plan_or_bitmaps.algorithm
            n = plan_or_bitmaps.dirty.size
        elif isinstance(plan_or_bitmaps, CaptureDiscards):
            self.plan = None
            self.capture = plan_or_bitmaps
            self.host_ratio = plan_or_bitmaps.host_ratio
            self.algorithm = "capture"
            self.block = plan_or_bitmaps.block
            self.target_page_size = plan_or_bitmaps.target_page_size
            n = plan_or_bitmaps.n_pages
        else:
            if isinstance(plan_or_bitmaps, tuple):
                self.dirty, self.unsent = plan_or_bitmaps[0], plan_or_bitmaps[1]
            else:
                self.dirty, self.unsent = plan_or_bitmaps, unsent
            self.dirty = np.asarray(self.dirty, bool)
            self.unsent = None if self.unsent is None else np.asarray(self.unsent, bool)
            if host_ratio is None:
                raise RamlabError("PostcopyDiscardView(dirty, unsent): give host_ratio")
            self.host_ratio = int(host_ratio)
            self.algorithm = algorithm
            self.plan = plan_discards(self.dirty, self.unsent, self.host_ratio, algorithm)  # type: ignore[arg-type]
            n = self.dirty.size
        self.n_pages = int(n)
        self.grid = host_grid(self.n_pages, self.host_ratio, max_cols)
        self.steps: list[ViewStep] = []
        self.commands: list[dict[str, Any]] = []
        #: the bokeh side (:class:`~ramlab.plots.postcopy.DiscardLayout`): the step control, the summary
        #: box and the two maps; its sources, figures and step control are this view's attributes too
        self.layout_models = DiscardLayout(self.grid, host_ratio=self.host_ratio, n_pages=self.n_pages,
                                           target_page_size=self.target_page_size, width=width,
                                           capture=self.capture is not None)
        lm = self.layout_models
        self.figures = lm.figures
        self.image_sources = lm.image_sources
        self.fixup_source = lm.fixup_source
        self.sent_source = lm.sent_source
        self.step_select = lm.step_select
        self.summary = lm.summary
        self.summary_div = lm.summary_div
        self.legend = W.HTML(discard_legend_html(capture=self.capture is not None))
        self.algorithm_toggle = W.ToggleButtons(options=["seed", "modern"],
                                                value=self.algorithm if self.algorithm != "capture" else "seed",
                                                description="algorithm",
                                                tooltips=["QEMU ~3.0 (unsent map, chunk passes)",
                                                          "QEMU >= 4.2 (dirty map only)"])
        self.algorithm_toggle.style.button_width = "80px"
        self.algorithm_toggle.disabled = self.dirty is None
        self.wire = W.HTML()
        self.algorithm_toggle.observe(lambda ch: self.set_algorithm(ch["new"]), names="value")
        head = title or (f"postcopy discards of block {block!r}" if not self.capture
                         else f"postcopy discards in the capture, block {self.block!r}")
        controls: list[W.Widget] = [] if self.capture else [self.algorithm_toggle]
        self._rebuild()  # fill the figures before the BokehModel snapshots them
        self.plot = BokehModel(lm.layout)
        self.plot.add_class("ramlab-bokeh")
        point = ("At the switch to postcopy the source tells the destination which pages to drop: those dirtied "
                 "after they were sent, rounded out to whole host pages (a huge page is placed in one piece). "
                 "Each step below shows the page map before and after it; the table shows the bytes on the wire.")
        super().__init__([W.HTML(f"<b>{html.escape(head)}</b><div style='font-size:12px;max-width:{width}px'>"
                                 f"{point}</div>"), *controls, self.plot, self.legend, self.wire])
        self.add_class("ramlab-postcopy")

    def summary_text(self) -> str:
        return f"PostcopyDiscardView: block {self.block!r}, {len(self.steps)} steps, {len(self.commands)} commands"

    def static_html(self) -> str:
        i = self.step_select.value
        if i is None or not self.steps:
            return ""
        s = self.steps[int(i)]
        rows, cols, _ = self.grid
        width = min(760, cols * max(1, 760 // max(cols, 1)))
        row_px = max(1, min(24, 240 // max(rows, 1)))  # a few rows: tall enough to see
        imgs = []
        for label, d, u in (("before", s.before_dirty, s.before_unsent), ("after", s.after_dirty, s.after_unsent)):
            if d is None:
                continue
            img = np.repeat(grid_image(state_codes(d, u), self.grid), row_px, axis=0)
            imgs.append(f"<div style='font-size:12px;margin-top:4px'>{label}</div>"
                        + class_map_img(img, width=width, alt=f"{label}: page states", palette=STATE_COLORS))
        return figure_html(f"postcopy discards of block {self.block!r} (static picture)",
                           self.summary.value + "".join(imgs) + self.legend.value + self.wire.value)

    @property
    def client(self) -> bool:
        """Whether a step chosen in the page is shown by the page (all the steps' images fit
        :data:`~ramlab.plots.postcopy.STEP_PIXEL_BUDGET`); else Python sends each step's images."""
        return self.layout_models.client

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_migration(cls, m: Any, block: str | None = None, **kwargs: Any) -> PostcopyDiscardView:
        """The real discards of a decoded postcopy capture (``ramlab.open(...)``) on the block's
        host-page grid: one step per POSTCOPY_RAM_DISCARD command of the stream, the pages
        sent before the switch, the trace's DISCARDED pages, and the commands' real payloads
        (checked byte-exact against :func:`~ramlab.wire.commands.encode_discard_payload`).

        >>> import ramlab                                            # doctest: +SKIP
        >>> m = ramlab.open(ramlab.data.data_path("postcopy-hugepages"))   # doctest: +SKIP
        >>> PostcopyDiscardView.from_migration(m)                    # doctest: +SKIP
        """
        return cls(capture_discards(m, block), **kwargs)

    # ------------------------------------------------------------------ API
    def set_algorithm(self, algorithm: str) -> None:
        """Recompute the plan with ``"seed"`` or ``"modern"`` (needs the input bitmaps)."""
        if self.dirty is None:
            raise RamlabError("the seed/modern toggle needs the dirty/unsent bitmaps, not only a plan")
        if algorithm == self.algorithm and self.steps:
            return
        self.algorithm = algorithm
        self.plan = plan_discards(self.dirty, self.unsent, self.host_ratio, algorithm)  # type: ignore[arg-type]
        if self.algorithm_toggle.value != algorithm:
            self.algorithm_toggle.value = algorithm
        self._rebuild()

    def show_step(self, index: int) -> None:
        """Select step ``index`` of :attr:`steps`."""
        self.step_select.value = int(index)

    # ------------------------------------------------------------------ internals
    def _rebuild(self) -> None:
        """The steps and commands of the plan (or capture), handed to the maps; the table of commands."""
        if self.capture is not None:
            self.steps, self.commands = capture_view_steps(self.capture)
            duplicated = covered_twice([r for _, rs, _ in self.capture.commands for r in rs])
        else:
            assert self.plan is not None
            self.steps = plan_view_steps(self.plan, self.dirty, self.unsent)
            self.commands = plan_commands(self.plan, self.block, self.target_page_size)
            duplicated = list(self.plan.duplicated_ranges)  # seed: every chunk-pass range
        summaries = [step_summary_html(s, capture=self.capture, plan=self.plan, algorithm=self.algorithm,
                                       n_commands=len(self.commands)) for s in self.steps]
        self.layout_models.set_steps(self.steps, summaries, duplicated=duplicated)
        self.wire.value = commands_html(self.commands, self.block, self.target_page_size,
                                        from_capture=self.capture is not None)

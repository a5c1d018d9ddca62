"""Splitting the page records of a migration into passes (laps of the sender's dirty scan).

The sender scans blocks in MEM_SIZE order and pages in increasing offset, so within one
lap the (block, offset) position of successive records only grows. A new pass starts when
the position goes back (the scan wrapped) or when a page comes again in the same pass.
Multi-threaded compression reorders records a little (worker buffers are flushed late), so
a ``reorder_window`` of pages tolerates small backward steps. The RAM END section (the VM is
stopped, every remaining dirty page goes out) is one 'complete' pass of its own: there the
caller sets ``split_on_wrap = False``, as the simulator counts it.

    >>> import numpy as np
    >>> from ramlab.trace import BlockInfo, PageClass
    >>> t = PassTracker((BlockInfo("ram", 8 * 4096, 4096, 0),))
    >>> t.add(0, np.array([0, 1, 5]), PageClass.ZERO, np.full(3, 9))
    >>> t.add(0, np.array([2, 3]), PageClass.NORMAL, np.full(2, 4104))
    >>> trace = t.to_trace(source="capture")
    >>> trace.n_passes, trace.classes[1, :4].tolist()
    (2, [0, 0, 2, 2])
"""

from __future__ import annotations

import numpy as np

from ramlab.trace import BlockInfo, PageClass, Trace


class PassTracker:
    """Accumulates per-pass page classes and wire bytes on the global page axis."""

    def __init__(self, blocks: tuple[BlockInfo, ...], target_page_size: int = 4096, reorder_window: int = 0):
        self.blocks = blocks
        self.target_page_size = target_page_size
        self.n_pages = sum(b.n_pages(target_page_size) for b in blocks)
        self.reorder_window = reorder_window
        self.classes: list[np.ndarray] = []
        self.wire_bytes: list[np.ndarray] = []
        self.kinds: list[str] = []
        self.last_pass = np.full(self.n_pages, -1, dtype=np.int32)
        self.last_pos = -1
        self.counters: list[dict[str, int]] = []
        self.kind_for_new = "bulk"
        self._forced_kind: str | None = None
        self.split_on_wrap = True  # False: only a repeated page starts a pass (completion stage)

    @property
    def current(self) -> int:
        return len(self.classes) - 1

    def new_pass(self, kind: str | None = None) -> int:
        """Start a pass (``kind``: 'bulk', 'precopy', 'complete', 'postcopy')."""
        if kind is None:
            kind = self._forced_kind or ("bulk" if not self.classes else "precopy")
        self.classes.append(np.zeros(self.n_pages, np.uint8))
        self.wire_bytes.append(np.zeros(self.n_pages, np.uint32))
        self.kinds.append(kind)
        self.counters.append({})
        self.last_pos = -1
        return self.current

    def start_complete_pass(self) -> None:
        """Start the 'complete' pass (the RAM END section: the VM is stopped and every remaining
        dirty page goes out): a pass of its own, which a wrap of the scan does not split."""
        if self._forced_kind == "complete":
            return
        self.new_pass("complete")
        self.force_kind("complete")
        self.split_on_wrap = False

    def force_kind(self, kind: str | None) -> None:
        """Passes started from now on get this kind (e.g. 'postcopy' after the switch)."""
        self._forced_kind = kind

    def count(self, name: str, n: int) -> None:
        if not self.classes:
            self.new_pass()
        c = self.counters[-1]
        c[name] = c.get(name, 0) + int(n)

    def add(self, block_index: int, pages: np.ndarray, cls: int | np.ndarray, nbytes: np.ndarray) -> None:
        """Record pages of one block (target-page indices, in wire order)."""
        g = pages.astype(np.int64) + self.blocks[block_index].offset
        cls_arr = np.broadcast_to(np.asarray(cls, dtype=np.uint8), g.shape)
        start = 0
        n = len(g)
        if not self.classes:
            self.new_pass()
        while start < n:
            cur = self.current
            seg = g[start:]
            prev = np.empty(len(seg), np.int64)
            prev[0] = self.last_pos
            prev[1:] = seg[:-1]
            back = seg < prev - self.reorder_window if self.reorder_window else seg <= prev
            if self.reorder_window:
                back[0] = seg[0] < self.last_pos - self.reorder_window
            else:
                back[0] = self.last_pos >= 0 and seg[0] <= self.last_pos
            rep = self.last_pass[seg] == cur
            # a page repeated inside this very segment also starts a new pass
            brk = (back | rep) if self.split_on_wrap else rep.copy()
            if len(seg) > 1:
                order = np.argsort(seg, kind="stable")
                s = seg[order]
                dup = np.zeros(len(seg), bool)
                dup[order[1:][s[1:] == s[:-1]]] = True
                brk |= dup
            if self.last_pos < 0:
                brk[0] = brk[0] and bool(rep[0])
            stop = int(np.argmax(brk)) if brk.any() else len(seg)
            if stop == 0:
                self.new_pass()
                continue
            part = seg[:stop]
            self.classes[cur][part] = cls_arr[start : start + stop]
            self.wire_bytes[cur][part] = nbytes[start : start + stop]
            self.last_pass[part] = cur
            self.last_pos = int(part.max()) if self.reorder_window else int(part[-1])
            start += stop

    def add_global(self, g: np.ndarray, cls: np.ndarray, nbytes: np.ndarray) -> None:
        """Record pages given on the global page axis (sorted), block by block."""
        starts = np.array([b.offset for b in self.blocks])
        bi = np.searchsorted(starts, g, side="right") - 1
        cuts = np.flatnonzero(np.diff(bi)) + 1
        for seg in np.split(np.arange(len(g)), cuts):
            if len(seg):
                i = int(bi[seg[0]])
                self.add(i, g[seg] - starts[i], cls[seg], nbytes[seg])

    def mark(self, block_index: int, pages: np.ndarray, cls: int) -> None:
        """Set the class of pages in the current pass without affecting pass boundaries."""
        if not self.classes:
            self.new_pass()
        g = pages.astype(np.int64) + self.blocks[block_index].offset
        self.classes[-1][g] = cls

    def to_trace(self, *, source: str, meta: dict | None = None, events: list | None = None,
                 error: str | None = None) -> Trace:
        n = len(self.classes)
        classes = np.stack(self.classes) if n else np.zeros((0, self.n_pages), np.uint8)
        wire = np.stack(self.wire_bytes) if n else np.zeros((0, self.n_pages), np.uint32)
        names = sorted({k for c in self.counters for k in c})
        counters = {k: np.array([c.get(k, 0) for c in self.counters], dtype=np.int64) for k in names}
        counts = np.zeros((n, len(PageClass)), np.int64)
        if n:
            flat = (np.arange(n)[:, None] * len(PageClass) + classes).ravel()
            counts = np.bincount(flat, minlength=n * len(PageClass)).reshape(n, len(PageClass))
        counters.setdefault("duplicate", counts[:, PageClass.ZERO])
        counters.setdefault("normal", counts[:, PageClass.NORMAL] + counts[:, PageClass.REQUESTED]
                            + counts[:, PageClass.POSTCOPY])
        counters.setdefault("xbzrle_pages", counts[:, PageClass.XBZRLE])
        counters.setdefault("compressed", counts[:, PageClass.COMPRESSED])
        counters.setdefault("transferred", wire.sum(axis=1, dtype=np.int64))
        return Trace(
            blocks=self.blocks,
            target_page_size=self.target_page_size,
            classes=classes,
            wire_bytes=wire,
            dirty=None,
            counters=counters,
            pass_kind=list(self.kinds),
            source=source,
            meta=dict(meta or {}),
            events=list(events or []),
            error=error,
        )

"""Splitting the page records of a migration into passes (laps of the sender's dirty scan).

The sender scans blocks in MEM_SIZE order and pages in increasing offset, so within one
lap the (block, offset) position of successive records only grows. A new pass starts when
the position goes back (the scan wrapped) or when a page comes again in the same pass.
Multi-threaded compression reorders records a little (worker buffers are flushed late), so
a ``reorder_window`` of pages tolerates small backward steps. The RAM END section (the VM is
stopped, every remaining dirty page goes out) is one 'complete' pass of its own: there the
caller sets ``split_on_wrap = False``, as the simulator counts it.

Memory: each pass holds 5 bytes per target page (class + record bytes), so a stream whose scan
wraps after every few records would grow the trace with passes x pages. At most ``max_passes``
(default :data:`MAX_TRACE_PASSES`) passes are kept apart: after that, further laps are merged into
the last pass (kind ``"merged"``, a page sent again overwrites its entry) and :attr:`PassTracker.merged`
is set. Explicitly started passes (the postcopy switch, the completion stage: a handful) are always
kept apart. So a trace costs at most ``5 * pages * (max_passes + 3)`` bytes, and adding records
costs time linear in the records.

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

from ramlab.trace import BlockInfo, PageClass, Trace, class_counts

#: passes a trace keeps apart before merging further laps into its last pass (see the module doc)
MAX_TRACE_PASSES = 512


class PassTracker:
    """Accumulates per-pass page classes and wire bytes on the global page axis."""

    def __init__(self, blocks: tuple[BlockInfo, ...], target_page_size: int = 4096, reorder_window: int = 0,
                 max_passes: int = MAX_TRACE_PASSES):
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
        self._forced_kind: str | None = None
        self.split_on_wrap = True  # False: only a repeated page starts a pass (completion stage)
        self.max_passes = max_passes
        self.merged = False  # laps beyond max_passes were merged into the last pass

    @property
    def current(self) -> int:
        return len(self.classes) - 1

    def new_pass(self, kind: str | None = None) -> int:
        """Start a pass (``kind``: 'bulk', 'precopy', 'complete', 'postcopy'); a lap found by
        :meth:`add` (``kind=None``) beyond ``max_passes`` is merged into the last pass instead."""
        if kind is None:
            if len(self.classes) >= self.max_passes:
                self.merged = True
                self.kinds[-1] = "merged"
                self.last_pos = -1
                return self.current
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
        if self.merged:  # past the cap: no more laps to find
            self._write(g, cls_arr, nbytes)
            return
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
                if self.merged:
                    self._write(seg, cls_arr[start:], nbytes[start:])
                    return
                continue
            self._write(seg[:stop], cls_arr[start : start + stop], nbytes[start : start + stop])
            start += stop

    def _write(self, part: np.ndarray, cls: np.ndarray, nbytes: np.ndarray) -> None:
        if not len(part):
            return
        cur = self.current
        self.classes[cur][part] = cls
        self.wire_bytes[cur][part] = nbytes
        self.last_pass[part] = cur
        self.last_pos = int(part.max()) if self.reorder_window else int(part[-1])

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
        counts = class_counts(classes)
        counters.setdefault("duplicate", counts[:, PageClass.ZERO])
        counters.setdefault("normal", counts[:, PageClass.NORMAL] + counts[:, PageClass.REQUESTED]
                            + counts[:, PageClass.POSTCOPY])
        counters.setdefault("xbzrle_pages", counts[:, PageClass.XBZRLE])
        counters.setdefault("compressed", counts[:, PageClass.COMPRESSED])
        counters.setdefault("transferred", wire.sum(axis=1, dtype=np.int64))
        meta = dict(meta or {})
        if self.merged:
            meta["passes_merged_after"] = self.max_passes
        return Trace(
            blocks=self.blocks,
            target_page_size=self.target_page_size,
            classes=classes,
            wire_bytes=wire,
            dirty=None,
            counters=counters,
            pass_kind=list(self.kinds),
            source=source,
            meta=meta,
            events=list(events or []),
            error=error,
        )

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
passes are kept apart (default :func:`trace_pass_limit`: :data:`MAX_TRACE_PASSES`, fewer for a
large guest so that they fit in :data:`TRACE_BUDGET_BYTES`): after that, further laps are merged into
the last pass (kind ``"merged"``, a page sent again overwrites its entry) and :attr:`PassTracker.merged`
is set. Explicitly started passes (the postcopy switch, the completion stage: a handful) are always
kept apart. So a trace costs at most ``5 * pages * (max_passes + 3)`` bytes, and adding records
costs time linear in the records. The passes are rows of one preallocated, lazily zeroed array (rows
never written cost no memory), so the finished trace is that array's first rows, not a second copy.

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

import mmap

import numpy as np

from ramlab.trace import BlockInfo, PageClass, Trace, class_counts

#: passes a trace keeps apart before merging further laps into its last pass (see the module doc) ...
MAX_TRACE_PASSES = 512
#: ... and fewer if these would not hold them: 1 GiB of passes (5 bytes per page and pass) keeps all
#: 512 passes of a guest up to 1.6 GiB, 204 of a 4 GiB guest, 51 of a 16 GiB guest; a budget as
#: large as the RAM images of a 1 GiB guest, and at most 2 % of the images of a larger one
#: (:data:`MIN_TRACE_PASSES`: 80 bytes a page)
TRACE_BUDGET_BYTES = 1 << 30
#: ... but never fewer than this (the passes of a real migration: a few to a few dozen)
MIN_TRACE_PASSES = 16
#: trace bytes per target page and pass: the class (uint8) and the record bytes (uint32)
TRACE_BYTES_PER_PAGE = 5


def trace_pass_limit(n_pages: int) -> int:
    """Passes a trace of ``n_pages`` target pages keeps apart: :data:`MAX_TRACE_PASSES`, or as many as
    fit in :data:`TRACE_BUDGET_BYTES`, but at least :data:`MIN_TRACE_PASSES`.

    >>> trace_pass_limit(4096), trace_pass_limit(1 << 20), trace_pass_limit(1 << 24)
    (512, 204, 16)
    """
    fit = TRACE_BUDGET_BYTES // (TRACE_BYTES_PER_PAGE * max(n_pages, 1))
    return min(MAX_TRACE_PASSES, max(MIN_TRACE_PASSES, fit))


#: passes started explicitly (postcopy switch, completion stage, ...) beyond ``max_passes``, foreseen
_EXPLICIT_PASSES = 4


def _lazy_zeros(shape: tuple[int, int], dtype: type) -> np.ndarray:
    """A zero array whose pages cost memory only once written: anonymous memory, in 4 KiB pages (numpy
    asks for 2 MiB huge pages for large arrays, so a pass writing a few scattered pages would cost
    2 MiB for each, and time to find them)."""
    nbytes = shape[0] * shape[1] * np.dtype(dtype).itemsize
    if nbytes < 1 << 20:
        return np.zeros(shape, dtype)
    mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # (shared memory is not lazy)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        mm.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(mm, dtype).reshape(shape)


class PassTracker:
    """Accumulates per-pass page classes and wire bytes on the global page axis."""

    def __init__(self, blocks: tuple[BlockInfo, ...], target_page_size: int = 4096, reorder_window: int = 0,
                 max_passes: int | None = None):
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
        self.max_passes = trace_pass_limit(self.n_pages) if max_passes is None else max_passes
        self.merged = False  # laps beyond max_passes were merged into the last pass
        # the passes' rows, lazily zeroed (_lazy_zeros): rows not written cost nothing
        try:
            self._alloc(min(self.max_passes, MAX_TRACE_PASSES) + _EXPLICIT_PASSES)
        except (MemoryError, OSError):  # a huge guest: reserve less address space, grow when needed
            self._alloc(_EXPLICIT_PASSES)

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
        n = len(self.classes)
        if n == self._rows:  # more explicit passes than foreseen: grow (copies the rows once)
            self._grow()
        self.classes.append(self._cls[n])
        self.wire_bytes.append(self._wire[n])
        self.kinds.append(kind)
        self.counters.append({})
        self.last_pos = -1
        return self.current

    def _alloc(self, rows: int) -> None:
        self._cls = _lazy_zeros((rows, self.n_pages), np.uint8)
        self._wire = _lazy_zeros((rows, self.n_pages), np.uint32)
        self._rows = rows

    def _grow(self) -> None:
        old_cls, old_wire, n = self._cls, self._wire, len(self.classes)
        self._alloc(2 * self._rows)
        self._cls[:n] = old_cls[:n]
        self._wire[:n] = old_wire[:n]
        self.classes[:] = list(self._cls[:n])
        self.wire_bytes[:] = list(self._wire[:n])

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
                 error: str | None = None, copy: bool = True) -> Trace:
        """The :class:`~ramlab.trace.Trace` of the passes so far. ``copy=False`` when no record will
        be added any more: the trace then shares the tracker's arrays (no second copy of the passes)."""
        n = len(self.classes)
        classes, wire = self._cls[:n], self._wire[:n]
        if copy:
            classes, wire = classes.copy(), wire.copy()
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

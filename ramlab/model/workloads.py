"""Guest workloads: what the simulated VM writes to its RAM while it is being migrated.

A :class:`Workload` dirties ``pc.ram`` (or another block) at a rate in bytes per second of
simulated time. :meth:`Workload.step` is called by the sender with the time elapsed since
the previous call and the auto-converge CPU throttle; it writes the pages (vectorised numpy
on :attr:`Guest.mem`) and returns their global page indices: the dirty log that the next
``migration_bitmap_sync`` folds into the migration bitmap. Everything is deterministic given
the seed (one ``np.random.Generator`` per workload).

Workloads (``name``: what it is good for):

* ``uniform``: a few random 8-byte words in pages picked uniformly (small XBZRLE deltas).
* ``hotset``: like ``uniform`` but ``hot_prob`` of the writes go to a hot set of
  ``hot_fraction`` of the pages: the classic "does it converge" case.
* ``sweep``: a sequential sweep through memory, stamping ``span`` bytes of each page.
* ``counters``: per-page counters incremented in place (XBZRLE's best case: 1-2 changed bytes).
* ``zero``: pages zeroed (or refilled with data, ``refill``): data→zero transitions, the
  zero-page path and ``xbzrle_cache_zero_page``.
* ``random``: pages rewritten with random bytes (XBZRLE overflow: sent as normal pages).
* ``replay``: the per-pass page sets of a decoded capture (``capture=`` path, Migration or
  Trace), replayed in order at the given rate, each page getting a counter increment.

    >>> from ramlab.model.guest import Guest
    >>> g = Guest.from_sizes([("pc.ram", 64 * 4096)])
    >>> w = make_workload("hotset", dirty_rate=16 * 4096, seed=1)
    >>> w.attach(g)
    >>> pages = w.step(g, dt=1.0)
    >>> len(pages) <= 16, bool((np.diff(pages) > 0).all())
    (True, True)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ramlab import checks
from ramlab.errors import SimulationError
from ramlab.model.guest import MAIN_BLOCK, TARGET_PAGE_SIZE, Guest

_POOL_PAGES = 64
_WORDS = TARGET_PAGE_SIZE // 8
#: the largest dirty rate (1 PiB/s): keeps page counts exact in float64
MAX_DIRTY_RATE = 1 << 50
#: page writes per step at most, as a multiple of the block's pages: beyond it practically every
#: page is written anyway (a uniform pick misses a page with probability e**-16), and a slow link
#: (long steps) times a high rate would otherwise draw billions of random pages per step
MAX_WRITES_PER_PAGE = 16
E = SimulationError


def _fraction(value: object, name: str, lo: float = 0.0, hi: float = 1.0) -> float:
    return checks.number(value, name, E, min=lo, max=hi)


class Workload:
    """Base class: rate bookkeeping, the initial fill and the page-picking/writing hooks.

    ``dirty_rate``: bytes per second of simulated time (one dirtied page = 4096 bytes);
    ``fill``: fraction of the block's pages given non-zero content at :meth:`attach`;
    ``block``: the block written (default ``pc.ram``).
    """

    name: ClassVar[str] = "base"

    def __init__(self, dirty_rate: float = 8 << 20, seed: int | np.random.Generator = 0, *,
                 block: str = MAIN_BLOCK, fill: float = 0.5, **params: Any) -> None:
        if params:
            raise SimulationError(f"workload {self.name!r}: unknown parameters {sorted(params)}")
        self.dirty_rate = checks.number(dirty_rate, "dirty_rate (bytes/s)", E, min=0, max=MAX_DIRTY_RATE)
        if isinstance(seed, np.random.Generator):
            self.rng = seed
        else:
            self.rng = np.random.default_rng(checks.integer(seed, "seed", E, min=0, max=(1 << 128) - 1))
        if not isinstance(block, str):
            raise SimulationError(f"block must be a RAM block name, found {checks.describe(block)}")
        self.block_name = block
        self.fill = _fraction(fill, "fill")
        self._carry = 0.0
        self.start = 0
        self.n = 0
        self.steps = 0
        self._pool: np.ndarray | None = None

    # ------------------------------------------------------------------ setup
    def attach(self, guest: Guest) -> None:
        """Bind to ``guest`` and write the initial content (``fill`` of the block's pages)."""
        b = guest.block(self.block_name) if self.block_name in {x.name for x in guest.blocks} else guest.main
        self.start, self.n = b.start, b.n_pages
        self._pool = self.rng.integers(1, 256, (_POOL_PAGES, TARGET_PAGE_SIZE), dtype=np.uint8)
        k = int(round(self.fill * self.n))
        if k:
            pages = np.sort(self.rng.choice(self.n, size=k, replace=False)) if k < self.n else np.arange(self.n)
            self._fill_data(guest, pages + self.start)
        self.setup(guest)

    def setup(self, guest: Guest) -> None:
        """Per-workload state after the initial fill (hot sets, cursors...)."""

    def _fill_data(self, guest: Guest, pages: np.ndarray, chunk: int = 16384) -> None:
        """Give ``pages`` (global indices) distinct non-zero content: a pool page + an index stamp."""
        assert self._pool is not None
        m64 = guest.mem.view(np.uint64)
        for s in range(0, pages.size, chunk):
            p = pages[s : s + chunk]
            guest.mem[p] = self._pool[p % _POOL_PAGES]
            m64[p, 0] = p.astype(np.uint64) + np.uint64(1)

    # ------------------------------------------------------------------ running
    def pages_for(self, dt: float, throttle: float = 0.0) -> int:
        """How many page writes ``dt`` seconds allow at the throttled rate (fractions carried), at
        most :data:`MAX_WRITES_PER_PAGE` times the block's pages."""
        x = self._carry + self.dirty_rate * max(0.0, 1.0 - throttle / 100.0) * max(dt, 0.0) / TARGET_PAGE_SIZE
        cap = MAX_WRITES_PER_PAGE * max(self.n, 1)
        if not x < cap:  # NaN included
            self._carry = 0.0
            return cap
        k = int(x)
        self._carry = x - k
        return k

    def step(self, guest: Guest, dt: float, throttle: float = 0.0) -> np.ndarray:
        """Run the guest for ``dt`` simulated seconds under ``throttle`` % CPU throttling.

        Writes the pages and returns their sorted unique global indices (the dirty log).
        """
        k = self.pages_for(dt, throttle)
        if k <= 0 or self.n == 0:
            return np.zeros(0, np.int64)
        pages = _unique(self.pick(k), self.n) + self.start
        self.write(guest, pages)
        self.steps += 1
        return pages

    def pick(self, k: int) -> np.ndarray:
        """``k`` page indices inside the block (repeats allowed)."""
        return self.rng.integers(0, self.n, k)

    def write(self, guest: Guest, pages: np.ndarray) -> None:
        """Change the content of ``pages`` (global indices, sorted, unique)."""
        _poke_words(guest, pages, 4, self.rng)


def _unique(idx: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique values of ``idx`` (all in ``0..n-1``): a bitmap pass, cheaper than a sort."""
    if idx.size * 16 < n:
        return np.unique(idx.astype(np.int64))
    mask = np.zeros(n, bool)
    mask[idx] = True
    return np.flatnonzero(mask)


def _poke_words(guest: Guest, pages: np.ndarray, per_page: int, rng: np.random.Generator) -> None:
    """Write ``per_page`` random 8-byte words at random aligned offsets of each page."""
    m64 = guest.mem.view(np.uint64)
    rows = np.repeat(pages, per_page)
    cols = rng.integers(0, _WORDS, rows.size)
    m64[rows, cols] = rng.integers(1, 1 << 63, rows.size, dtype=np.uint64)


class UniformWorkload(Workload):
    """Random 8-byte writes (``writes_per_page``) to pages picked uniformly over the block."""

    name = "uniform"

    def __init__(self, dirty_rate: float = 8 << 20, seed: int | np.random.Generator = 0, *,
                 writes_per_page: int = 4, **kw: Any) -> None:
        super().__init__(dirty_rate, seed, **kw)
        self.writes_per_page = checks.integer(writes_per_page, "writes_per_page", E, min=1, max=_WORDS)

    def write(self, guest: Guest, pages: np.ndarray) -> None:
        _poke_words(guest, pages, self.writes_per_page, self.rng)


class HotsetWorkload(UniformWorkload):
    """``hot_prob`` of the writes go to a random hot set of ``hot_fraction`` of the pages."""

    name = "hotset"

    def __init__(self, dirty_rate: float = 8 << 20, seed: int | np.random.Generator = 0, *,
                 hot_fraction: float = 0.05, hot_prob: float = 0.95, **kw: Any) -> None:
        super().__init__(dirty_rate, seed, **kw)
        self.hot_fraction = _fraction(hot_fraction, "hot_fraction")
        if self.hot_fraction <= 0:
            raise SimulationError("hot_fraction must be > 0 (a fraction of the pages in (0, 1])")
        self.hot_prob = _fraction(hot_prob, "hot_prob")
        self.hot = np.zeros(0, np.int64)

    def setup(self, guest: Guest) -> None:
        n_hot = max(1, int(self.n * self.hot_fraction))
        self.hot = np.sort(self.rng.choice(self.n, size=n_hot, replace=False))
        self._fill_data(guest, self.hot + self.start)  # the hot set is in use: non-zero

    def pick(self, k: int) -> np.ndarray:
        is_hot = self.rng.random(k) < self.hot_prob
        out = self.rng.integers(0, self.n, k)
        nh = int(is_hot.sum())
        out[is_hot] = self.hot[self.rng.integers(0, self.hot.size, nh)]
        return out


class SweepWorkload(Workload):
    """A sequential sweep: consecutive pages, each stamped with ``span`` bytes of the sweep number."""

    name = "sweep"

    def __init__(self, dirty_rate: float = 8 << 20, seed: int | np.random.Generator = 0, *,
                 span: int = 256, **kw: Any) -> None:
        super().__init__(dirty_rate, seed, **kw)
        self.span = min(checks.integer(span, "span", E, min=1), TARGET_PAGE_SIZE)
        self.cursor = 0
        self.sweep = 0

    def pick(self, k: int) -> np.ndarray:
        idx = (self.cursor + np.arange(min(k, self.n), dtype=np.int64)) % self.n
        self.cursor = (self.cursor + k) % self.n
        return idx

    def write(self, guest: Guest, pages: np.ndarray) -> None:
        self.sweep += 1
        guest.mem[pages, : self.span] = np.uint8(1 + self.sweep % 255)


class CounterWorkload(Workload):
    """Per-page counters: ``counters_per_page`` u64 counters incremented in each picked page of a
    working set (``working_set`` fraction of the block): 1-2 changed bytes per page."""

    name = "counters"

    def __init__(self, dirty_rate: float = 8 << 20, seed: int | np.random.Generator = 0, *,
                 working_set: float = 0.25, counters_per_page: int = 2, **kw: Any) -> None:
        super().__init__(dirty_rate, seed, **kw)
        self.working_set = _fraction(working_set, "working_set")
        if self.working_set <= 0:
            raise SimulationError("working_set must be in (0, 1]")
        self.counters_per_page = checks.integer(counters_per_page, "counters_per_page", E, min=1, max=_WORDS - 8)
        self.ws = np.zeros(0, np.int64)

    def setup(self, guest: Guest) -> None:
        n_ws = max(1, int(self.n * self.working_set))
        self.ws = np.sort(self.rng.choice(self.n, size=n_ws, replace=False))
        self._fill_data(guest, self.ws + self.start)

    def pick(self, k: int) -> np.ndarray:
        return self.ws[self.rng.integers(0, self.ws.size, k)]

    def write(self, guest: Guest, pages: np.ndarray) -> None:
        m64 = guest.mem.view(np.uint64)
        cols = 8 + 64 * np.arange(self.counters_per_page) % (_WORDS - 8)
        m64[pages[:, None], cols[None, :]] += np.uint64(1)


class ZeroingWorkload(Workload):
    """Picked pages are zeroed, or (probability ``refill``) refilled with data."""

    name = "zero"

    def __init__(self, dirty_rate: float = 8 << 20, seed: int | np.random.Generator = 0, *,
                 refill: float = 0.5, **kw: Any) -> None:
        super().__init__(dirty_rate, seed, **kw)
        self.refill = _fraction(refill, "refill")

    def write(self, guest: Guest, pages: np.ndarray) -> None:
        data = self.rng.random(pages.size) < self.refill
        guest.mem[pages[~data]] = 0
        if data.any():
            self._fill_data(guest, pages[data])
            _poke_words(guest, pages[data], 1, self.rng)


class RandomRewriteWorkload(Workload):
    """Picked pages are rewritten with random bytes: every XBZRLE hit overflows."""

    name = "random"

    def write(self, guest: Guest, pages: np.ndarray) -> None:
        raw = np.frombuffer(self.rng.bytes(pages.size * TARGET_PAGE_SIZE), np.uint8)
        guest.mem[pages] = raw.reshape(pages.size, TARGET_PAGE_SIZE)


class ReplayWorkload(Workload):
    """Replays the per-pass page sets of a decoded capture (``capture=``: path, Migration or Trace).

    Pass ``p >= 1`` of the capture's trace (the bulk pass is skipped) contributes the pages
    sent in it (``classes != NOT_SENT``), mapped by block name and offset onto the guest;
    the sets are dirtied in order at the workload's rate, looping. Each page gets a counter
    increment (a small delta).
    """

    name = "replay"

    def __init__(self, dirty_rate: float = 8 << 20, seed: int | np.random.Generator = 0, *,
                 capture: Any = None, loop: bool = True, **kw: Any) -> None:
        super().__init__(dirty_rate, seed, **kw)
        if capture is None:
            raise SimulationError("the replay workload needs capture=<a Trace>")
        self.capture = capture
        self.loop = checks.flag(loop, "loop", E)
        self.sequence = np.zeros(0, np.int64)  # global guest pages, pass after pass
        self.pass_bounds = np.zeros(1, np.int64)
        self.pos = 0

    def setup(self, guest: Guest) -> None:
        from ramlab.trace import PageClass, Trace

        cap = self.capture
        if not isinstance(cap, Trace):
            raise SimulationError("the replay workload replays a Trace (e.g. ramlab.open(path).trace)")
        sets = []
        names = {b.name for b in guest.blocks}
        for p in range(1, cap.n_passes):
            sent = np.flatnonzero(cap.classes[p] != PageClass.NOT_SENT)
            out = []
            for b in cap.blocks:
                lo, hi = b.offset, b.offset + b.n_pages(cap.target_page_size)
                sel = sent[(sent >= lo) & (sent < hi)] - lo
                if b.name in names:
                    gb = guest.block(b.name)
                    sel = sel[sel < gb.n_pages]
                    out.append(sel + gb.start)
            sets.append(np.concatenate(out) if out else np.zeros(0, np.int64))
        if not sets or not sum(s.size for s in sets):
            raise SimulationError("the capture has no pages sent after its bulk pass to replay")
        self.sequence = np.concatenate(sets)
        self.pass_bounds = np.concatenate(([0], np.cumsum([s.size for s in sets])))
        self._fill_data(guest, np.unique(self.sequence))

    def step(self, guest: Guest, dt: float, throttle: float = 0.0) -> np.ndarray:
        k = self.pages_for(dt, throttle)
        if k <= 0:
            return np.zeros(0, np.int64)
        n = self.sequence.size
        if not self.loop:
            k = min(k, n - self.pos)
            if k <= 0:
                return np.zeros(0, np.int64)
        idx = (self.pos + np.arange(k, dtype=np.int64)) % n
        self.pos = (self.pos + k) % n if self.loop else self.pos + k
        pages = _unique(self.sequence[idx], guest.n_pages)
        m64 = guest.mem.view(np.uint64)
        m64[pages, 1] += np.uint64(1)
        self.steps += 1
        return pages


WORKLOADS: dict[str, type[Workload]] = {
    w.name: w
    for w in (UniformWorkload, HotsetWorkload, SweepWorkload, CounterWorkload, ZeroingWorkload,
              RandomRewriteWorkload, ReplayWorkload)
}
WORKLOADS["sequential"] = SweepWorkload
WORKLOADS["idle"] = Workload


def make_workload(name: str | Workload, dirty_rate: float | None = None, seed: int | np.random.Generator = 0,
                  **params: Any) -> Workload:
    """A workload by name (see the module docstring); ``params`` go to its constructor.

    >>> make_workload("counters", dirty_rate=1 << 20, working_set=0.5).working_set
    0.5
    """
    if isinstance(name, Workload):
        return name
    cls = WORKLOADS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise SimulationError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}")
    if dirty_rate is not None:
        params["dirty_rate"] = dirty_rate
    if cls is Workload and "dirty_rate" not in params:
        params["dirty_rate"] = 0
    return cls(seed=seed, **params)

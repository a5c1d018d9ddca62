"""The source side of RAM migration, modelled on the seed ``migration/ram.c`` (QEMU ~3.0) and
framed like QEMU 7.2: it produces the stream (``ramlab.wire`` events) and a
:class:`~ramlab.trace.Trace`.

What is modelled, under QEMU's names (``docs/reference/algorithms.md`` §1-§9):

* the migration bitmap ``bmap`` (one bool per target page on the global page axis) and
  ``migration_dirty_pages``; the guest's dirty log, folded in by ``migration_bitmap_sync``
  (``dirty_sync_count``, ``num_dirty_pages_period``, ``dirty_pages_rate`` once per second of
  simulated time, auto-converge with the seed's rule: the period's dirtied bytes
  ``> (transferred - bytes_xfer_prev) / 2`` twice (not necessarily in a row) starts or raises
  the CPU throttle);
* the page search: ``last_seen_block``/``last_page``, the bulk stage's "start + 1",
  ``complete_round`` and the give-up after one lap, the wrap (ends the bulk stage; with
  XBZRLE on it flushes compressed data), host pages sent whole (``ram_save_host_page``: the
  rate limit is only checked between host pages, so a huge page never spans two sections);
* the per-page chain of ``ram_save_target_page``/``ram_save_page``: zero page -> ZERO record
  (+ ``xbzrle_cache_zero_page`` after the bulk stage); XBZRLE (not in the bulk stage) with the
  page cache: miss -> insert + PAGE, hit -> XBZRLE record, unchanged -> nothing sent,
  overflow -> PAGE + cache update, and the last-stage rules (cache untouched); multi-threaded
  zlib compression (``compress``: in the bulk stage only when XBZRLE is on; a page that
  changes ``last_sent_block`` goes out uncompressed from the main thread);
* ``save_page_header``'s CONTINUE logic (``last_sent_block``);
* the migration thread: 100 ms rate-limit windows of ``max-bandwidth / 10`` bytes
  (``qemu_file_rate_limit``: stop once *more* than that was written), ``ram_save_pending``
  (sync when ``remaining < threshold``) and completion when ``pending < bandwidth x
  downtime-limit`` (QEMU tests ``<``, not ``<=``), then ``ram_save_complete``.

Simulated time is bytes written / ``max-bandwidth`` (the link runs exactly at the limit). The
guest runs between iterations (once per rate-limit window) for the elapsed time, and stops at
completion. Modelling choices (not QEMU facts): compression workers finish instantly, so
worker 0 is always the one reused (records come out one page late, interleaved with ZERO
records, as in a real stream); ``MAX_WAIT`` (50 ms of CPU time per iteration) is not
modelled; ``max_passes`` bounds the passes *as the trace counts them* (laps of the page
search plus the extra passes started when a page comes again within a lap, see
:meth:`RamSender._repeat_pass`): when ``max_passes - 1`` precopy passes are done and another
one would start, the migration is forced to complete (``converged`` is then False), like
raising ``downtime-limit``, so a forced run has exactly ``max_passes`` trace passes (the last
one ``complete``) and a converged one at most that many. The budgets ``max_time_s`` (simulated
seconds) and ``max_pages`` (pages handled) force the completion the same way, checked before
each rate-limit window, so such a run may have fewer passes; ``SenderResult.reason`` says which
limit ended precopy.

Seed vs QEMU 7.2 (the seed is followed; 7.2 destinations accept both):

* 7.2 counts every XBZRLE cache hit in ``xbzrle pages`` (also unchanged and overflowed
  pages) and adds TPS to ``xbzrle bytes`` on overflow; the seed counts sent XBZRLE records
  only. ``xbzrle_unchanged`` is reported separately here.
* the seed counts compressed pages in ``normal`` (``compressed`` is reported too); 7.2 has
  separate compression counters and, in its workers, detects zero pages itself (its ZERO
  records then come from worker buffers); the seed detects them on the main thread.
* the seed copies the live page into the cache on overflow (7.2 the snapshot): identical here
  because the guest does not run while a window is being sent.
* ``xbzrle_cache_miss_rate`` is per ``iterations`` (seed), not per target page (7.2).

Vectorised: pages are handled in chunks (the dirty pages from the search position on): zero
detection on a 2-D batch, ``ramlab.xbzrle.encode_batch`` for cache hits, the page cache is
the project's QEMU-exact :class:`ramlab.model.page_cache.PageCache` (its batch ``lookup_batch`` /
``insert_batch``, and its :class:`~ramlab.model.page_cache.XbzrleCounters` mirrored into the counters).
A chunk never holds two pages of one cache slot (it is cut before the
first repeat), so its decisions are those of the sequential algorithm; the rate limit cut is
found with a cumulative sum, and only that prefix is committed.

    >>> from ramlab.model.guest import Guest
    >>> from ramlab.model.workloads import make_workload
    >>> g = Guest.from_sizes([("pc.ram", 1024 * 4096)])
    >>> w = make_workload("counters", dirty_rate=256 * 4096, seed=0)
    >>> w.attach(g)
    >>> r = RamSender(g, w, MigrationParams(bandwidth=2 << 20, xbzrle=True)).run()
    >>> r.converged, r.trace.pass_kinds[0], int(r.counters["xbzrle_pages"]) > 0
    (True, 'bulk', True)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ramlab import checks
from ramlab.constants import (
    ENCODING_FLAG_XBZRLE,
    QEMU_VM_SECTION_END,
    QEMU_VM_SECTION_PART,
    QEMU_VM_SECTION_START,
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
)
from ramlab.errors import SimulationError
from ramlab.model.guest import TARGET_PAGE_SIZE, Guest
from ramlab.model.page_cache import MAX_CACHE_SIZE, PageCache
from ramlab.model.workloads import Workload
from ramlab.trace import PageClass, Trace
from ramlab.wire import events as ev
from ramlab.wire.fields import RAM_HEADER_SIZE, cstr8_size, event_size, ram_record_size
from ramlab.xbzrle import encode_batch

TPS = TARGET_PAGE_SIZE
_ZERO_SIZE = ram_record_size(RAM_SAVE_FLAG_ZERO, TPS)  # record sizes without a block name
_PAGE_SIZE = ram_record_size(RAM_SAVE_FLAG_PAGE, TPS)
_XBZRLE_HEAD = ram_record_size(RAM_SAVE_FLAG_XBZRLE, TPS)  # + the delta
_COMP_HEAD = ram_record_size(RAM_SAVE_FLAG_COMPRESS_PAGE, TPS)  # + the zlib stream
SNAPSHOT_BYTES = 64 << 20  # page snapshots kept for XbzrleDeltaView
XFER_LIMIT_RATIO = 10  # migration.c: rate limit = max-bandwidth / 10 per 100 ms window
_PART_HEADER = 5  # bytes of a QEMU_VM_SECTION_PART header
CPU_THROTTLE_PCT_MIN, CPU_THROTTLE_PCT_MAX = 1, 99
MAX_RUN = 8192  # events: largest RamPages run (the decoder's default max_run)
_CHUNK_MAX = 16384

# record kinds in the window buffer
_K_ZERO, _K_PAGE, _K_XBZRLE, _K_COMP = 0, 1, 2, 3
_K_FLAG = (RAM_SAVE_FLAG_ZERO, RAM_SAVE_FLAG_PAGE, RAM_SAVE_FLAG_XBZRLE, RAM_SAVE_FLAG_COMPRESS_PAGE)

LIMITED, DONE, FORCED = "limited", "done", "forced"

#: cumulative counters (per pass: the increase during the pass); the others are gauges
CUMULATIVE = (
    "transferred", "duplicate", "normal", "normal_bytes", "xbzrle_pages", "xbzrle_bytes",
    "xbzrle_cache_miss", "xbzrle_overflow", "xbzrle_unchanged", "compressed", "compressed_size",
    "iterations", "pages_handled", "discarded", "requested", "postcopy_requests", "postcopy_bytes",
    "faults", "released",
)
GAUGES = ("dirty_sync_count", "dirty_pages_rate", "remaining", "cpu_throttle_percentage", "time_ms",
          "xbzrle_cache_miss_rate", "xbzrle_cache_items")


#: QEMU's MAX_MIGRATE_DOWNTIME: ``downtime-limit`` is 0..2000 s
MAX_DOWNTIME_MS = 2_000_000
#: the model's largest ``max-bandwidth`` (1 PiB/s; QEMU allows up to SIZE_MAX): keeps byte counts in int64
MAX_BANDWIDTH = 1 << 50
#: the model's largest ``max_passes`` (the trace keeps 5-6 bytes per page per pass)
MAX_PASSES = 1000


def check_window_budget(bandwidth: int, name: str) -> None:
    """QEMU's rate limit is ``bandwidth / 10`` bytes per 100 ms window (0: no limit). A limit of
    1..4 bytes is below a RAM section header (5 bytes, written before the first page is
    considered), so no page would ever be sent: QEMU would spin forever; refused here."""
    limit = bandwidth // XFER_LIMIT_RATIO
    if 0 < limit < _PART_HEADER:
        raise SimulationError(f"{name} of {bandwidth} B/s allows {limit} byte(s) per 100 ms window, less than a "
                              f"{_PART_HEADER}-byte section header: no page would ever be sent (use >= "
                              f"{_PART_HEADER * XFER_LIMIT_RATIO} B/s, or < {XFER_LIMIT_RATIO} B/s for no limit)")


@dataclass
class MigrationParams:
    """Migration capabilities and parameters (QEMU's defaults unless noted).

    ``bandwidth`` is ``max-bandwidth`` in bytes/s (QEMU default 32 MiB/s; here 1 .. 2**50);
    ``downtime_limit_ms`` is ``downtime-limit`` (QEMU default 300, range 0 .. 2 000 000);
    ``xbzrle_cache_size`` must be a power-of-two multiple of 4096 (QEMU >= 2.11; a cache larger
    than the guest is accepted, as QEMU >= 2.11 does, and only the slots the guest can use are
    kept); ``cpu_throttle_initial`` / ``cpu_throttle_increment`` are 1..99 like QEMU's.

    The run's budgets (modelling limits, not QEMU parameters): ``max_passes`` (2 .. 1000) bounds
    the trace's passes, the completion pass included; ``max_time_s`` the simulated seconds and
    ``max_pages`` the pages handled before precopy is forced to complete. A run stopped by a
    budget ends quickly with ``converged=False`` and says which budget in ``reason``: a hopeless
    configuration (``bandwidth=1``, a guest dirtying faster than the link) costs bounded wall time.
    :meth:`validate` checks every field (types too: no bools, NaN or infinity where numbers are
    expected) and normalises numbers to Python ints/floats.
    """

    bandwidth: int = 32 << 20
    downtime_limit_ms: float = 300.0
    xbzrle: bool = False
    xbzrle_cache_size: int = 64 << 20
    compress: bool = False
    compress_level: int = 1
    auto_converge: bool = False
    cpu_throttle_initial: int = 20
    cpu_throttle_increment: int = 10
    max_passes: int = 30  # bound on the trace's passes, the completion pass included
    max_time_s: float = 1200.0  # budget: simulated seconds of precopy (12 000 rate-limit windows)
    max_pages: int = 1 << 24  # budget: pages handled in precopy (16 Mi pages = 64 GiB sent)

    def validate(self) -> MigrationParams:
        E = SimulationError
        self.bandwidth = checks.integer(self.bandwidth, "bandwidth (max-bandwidth, bytes/s)", E, min=1,
                                        max=MAX_BANDWIDTH)
        self.downtime_limit_ms = checks.number(self.downtime_limit_ms, "downtime_limit_ms", E, min=0,
                                               max=MAX_DOWNTIME_MS)
        self.xbzrle = checks.flag(self.xbzrle, "xbzrle", E)
        self.compress = checks.flag(self.compress, "compress", E)
        self.auto_converge = checks.flag(self.auto_converge, "auto_converge", E)
        self.xbzrle_cache_size = checks.integer(self.xbzrle_cache_size, "xbzrle_cache_size", E, min=0,
                                                max=MAX_CACHE_SIZE)
        n = self.xbzrle_cache_size // TPS
        if self.xbzrle and (self.xbzrle_cache_size < TPS or n & (n - 1) or self.xbzrle_cache_size % TPS):
            raise E("xbzrle cache size must be a power of two >= 4096 bytes (QEMU >= 2.11)")
        self.compress_level = checks.integer(self.compress_level, "compress_level", E, min=0, max=9)
        self.cpu_throttle_initial = checks.integer(self.cpu_throttle_initial, "cpu_throttle_initial", E, min=1,
                                                   max=99)
        self.cpu_throttle_increment = checks.integer(self.cpu_throttle_increment, "cpu_throttle_increment", E,
                                                     min=1, max=99)
        check_window_budget(self.bandwidth, "bandwidth (max-bandwidth)")
        self.max_passes = checks.integer(self.max_passes, "max_passes", E, min=2, max=MAX_PASSES)
        self.max_time_s = checks.number(self.max_time_s, "max_time_s", E, min=0)
        self.max_pages = checks.integer(self.max_pages, "max_pages", E, min=1)
        return self


@dataclass
class SenderResult:
    """What :meth:`RamSender.run` produced."""

    events: list[ev.Event]
    trace: Trace
    counters: dict[str, float]
    converged: bool
    time_s: float
    final_ram: dict[str, np.ndarray]  # views of the guest's memory (the guest has stopped)
    log: list[dict] = field(default_factory=list)
    #: why precopy ended: "converged", "max_passes", "max_time_s", "max_pages", "switchover" (the
    #: hook completed it) or "postcopy" (the postcopy model switched)
    reason: str = "converged"


class _LazyRows:
    """Rows ``mem[cand]`` gathered only where needed (``rows[idx]`` copies those rows)."""

    def __init__(self, mem: np.ndarray, cand: np.ndarray) -> None:
        self.mem, self.cand = mem, cand

    def zero(self) -> np.ndarray:
        """``buffer_is_zero`` per page: the first word rules most data pages out cheaply."""
        m64 = self.mem.view(np.uint64)
        zero = m64[self.cand, 0] == 0
        maybe = np.flatnonzero(zero)
        if maybe.size:
            zero[maybe] = ~m64[self.cand[maybe]].any(axis=1)
        return zero

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, slice):
            return _LazyRows(self.mem, self.cand[idx])
        return self.mem[self.cand[idx]]


class _Records:
    """RAM records of one section body, grouped into events at the end (like the decoder)."""

    def __init__(self) -> None:
        self.kind: list[np.ndarray] = []
        self.block: list[np.ndarray] = []
        self.page: list[np.ndarray] = []
        self.named: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.blobs: list[bytes] = []

    def add(self, kind: np.ndarray, block: np.ndarray, page: np.ndarray, named: np.ndarray,
            rows: np.ndarray | None = None, blobs: Sequence[bytes] = ()) -> None:
        if kind.size == 0:
            return
        self.kind.append(kind.astype(np.int8))
        self.block.append(block.astype(np.int32))
        self.page.append(page.astype(np.int64))
        self.named.append(named.astype(bool))
        if rows is not None and rows.shape[0]:
            self.rows.append(rows)
        self.blobs.extend(blobs)

    def to_events(self, guest: Guest, pos: int) -> tuple[list[ev.Event], int]:
        """Events of the records starting at stream offset ``pos``; returns (events, end pos)."""
        if not self.kind:
            return [], pos
        kind = np.concatenate(self.kind)
        block = np.concatenate(self.block)
        page = np.concatenate(self.page)
        named = np.concatenate(self.named)
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, TPS), np.uint8)
        names = [b.name for b in guest.blocks]
        extra = np.array([cstr8_size(n) for n in names], np.int64)
        single = (kind == _K_XBZRLE) | (kind == _K_COMP)
        blob_len = np.zeros(kind.size, np.int64)
        if single.any():
            blob_len[single] = [len(b) for b in self.blobs]
        size = np.select([kind == _K_ZERO, kind == _K_PAGE, kind == _K_XBZRLE, kind == _K_COMP],
                         [_ZERO_SIZE, _PAGE_SIZE, _XBZRLE_HEAD + blob_len, _COMP_HEAD + blob_len]).astype(np.int64)
        size += np.where(named, extra[block], 0)
        offs = pos + np.concatenate(([0], np.cumsum(size)[:-1]))
        n = kind.size
        brk = np.ones(n, bool)
        if n > 1:
            brk[1:] = named[1:] | single[1:] | single[:-1] | named[:-1] | (kind[1:] != kind[:-1])
        starts = np.flatnonzero(brk)
        ends = np.append(starts[1:], n)
        row_at = np.cumsum(kind == _K_PAGE) - 1
        blob_at = np.cumsum(single) - 1
        out: list[ev.Event] = []
        for s0, e0 in zip(starts.tolist(), ends.tolist()):
            for s in range(s0, e0, MAX_RUN if not named[s0] else 1):
                e = min(e0, s + MAX_RUN)
                k = int(kind[s])
                name = names[int(block[s])]
                nm = bool(named[s])
                if k == _K_XBZRLE:
                    out.append(ev.RamXbzrle(name, nm, int(page[s]) * TPS, self.blobs[blob_at[s]],
                                            offset=int(offs[s]), xh_flags=ENCODING_FLAG_XBZRLE))
                elif k == _K_COMP:
                    out.append(ev.RamCompressed(name, nm, int(page[s]) * TPS, self.blobs[blob_at[s]],
                                                offset=int(offs[s])))
                else:
                    po = page[s:e] * TPS
                    flags = _K_FLAG[k] | (0 if nm else RAM_SAVE_FLAG_CONTINUE)
                    if k == _K_ZERO:
                        out.append(ev.RamPages(RAM_SAVE_FLAG_ZERO, name, nm, po, fill=np.zeros(e - s, np.uint8),
                                               offset=int(offs[s]), first_flags=flags))
                    else:
                        r0 = int(row_at[s])
                        out.append(ev.RamPages(RAM_SAVE_FLAG_PAGE, name, nm, po, data=rows[r0 : r0 + e - s],
                                               offset=int(offs[s]), first_flags=flags))
        return out, pos + int(size.sum())


class RamSender:
    """One simulated precopy migration of ``guest`` while ``workload`` runs (see module docs).

    ``prologue``/``epilogue``: template events placed before the RAM setup section (file
    header, configuration) and after the RAM END section (device sections, EOF, vmdesc);
    ``emit``: build stream events (off: trace and counters only, faster);
    ``record_dirty``: fill ``trace.dirty``; ``ram_section_id``: the RAM section id (2 in 7.2).
    ``switchover``: optional hook ``f(sender) -> bool`` asked before every iteration; True
    completes now (the postcopy model, :class:`ramlab.model.postcopy_sender.PostcopySender`,
    switches to postcopy instead). Its hooks here: ``unsent`` (the seed's ``unsentmap``),
    ``in_postcopy`` (no XBZRLE, POSTCOPY/REQUESTED classes), :meth:`_serve_queue`,
    :meth:`_pass_limit`, :meth:`_mem_size_record`.
    """

    def __init__(self, guest: Guest, workload: Workload | None, params: MigrationParams, *,
                 prologue: Sequence[ev.Event] = (), epilogue: Sequence[ev.Event] = (), emit: bool = True,
                 record_dirty: bool = True, ram_section_id: int = 2,
                 switchover: Callable[[RamSender], bool] | None = None, meta: dict | None = None) -> None:
        self.guest = guest
        self.workload = workload
        self.p = params.validate()
        self.prologue = list(prologue)
        self.epilogue = list(epilogue)
        self.emit = emit
        self.record_dirty = record_dirty
        self.section_id = ram_section_id
        self.switchover = switchover
        self.meta = dict(meta or {})
        #: (pass, page) -> (cached old page, new page) of XBZRLE cache hits, for the delta view
        self.snapshots: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.snapshot_budget = SNAPSHOT_BYTES
        n = guest.n_pages
        self.n = n
        self.block_of = np.repeat(np.arange(len(guest.blocks), dtype=np.int32), [b.n_pages for b in guest.blocks])
        self.block_end = np.array([b.end for b in guest.blocks], np.int64)
        self.block_start = np.array([b.start for b in guest.blocks], np.int64)
        self._body_pos = 0
        self.ratio = np.array([b.page_size // TPS for b in guest.blocks], np.int64)
        self.name_extra = np.array([cstr8_size(b.name) for b in guest.blocks], np.int64)
        # RAMState
        self.bmap = np.ones(n, bool)
        self.unsent = np.ones(n, bool)  # the seed's unsentmap: never processed by the page search
        self.in_postcopy = False  # set by the postcopy model at the switch (no XBZRLE, POSTCOPY classes)
        self._serving_request = False  # the chunk being saved is a page request's host page
        self.dlog = np.zeros(n, bool)
        self.migration_dirty_pages = n
        self.ram_bulk_stage = True
        self.last_seen = 0  # global index of (last_seen_block, last_page)
        self.pss = 0
        self.complete_round = False
        self.last_sent_block = -1
        self.dirty_rate_high_cnt = 0
        self.time_last_bitmap_sync: int | None = None
        self.bytes_xfer_prev = 0
        self.num_dirty_pages_period = 0
        self.iterations_prev = 0
        self.xbzrle_cache_miss_prev = 0
        self.throttle = 0
        # the cache serves the guest's ram_addr_t space only: it keeps no more slots than that has pages
        max_addr = (int(guest.ram_page.max()) + 1) * TPS if n else TPS
        self.cache = PageCache(self.p.xbzrle_cache_size, TPS, strict=True, max_addr=max_addr) \
            if self.p.xbzrle else None
        self.comp_pending: tuple[int, int, bytes] | None = None  # worker 0's buffer: (block, page, zlib)
        # counters (QEMU names, underscores)
        self.c: dict[str, float] = {k: 0 for k in CUMULATIVE + GAUGES}
        # file position / time / rate limit
        self.pos = 0
        self.window_used = 0
        self.windows = 0
        self.t_guest = 0.0
        self.budget = self.p.bandwidth // XFER_LIMIT_RATIO
        self.threshold = 0.0  # set at the first rate-limit window update, like s->threshold_size
        self.lap = 0
        self.forced = False
        self.reason = "converged"  # see SenderResult.reason
        self._completing = False
        self.repeats = 0  # passes started because a page came again within a lap
        self._stopping = False  # the pass limit stopped the current chunk
        # outputs
        self.events: list[ev.Event] = []
        self.records = _Records()
        self._passes: list[dict[str, Any]] = []
        self._new_pass = True
        self._pass_kind_next = "bulk"
        self.log: list[dict] = []

    # ------------------------------------------------------------------ time and output
    @property
    def now(self) -> float:
        """Simulated seconds since the migration started (bytes written / max-bandwidth)."""
        return self.pos / self.p.bandwidth

    def _now_ms(self) -> int:
        return int(self.pos * 1000 // self.p.bandwidth)

    def _write(self, e: ev.Event | None, size: int) -> None:
        if e is not None and self.emit:
            self.events.append(replace(e, offset=self.pos))  # type: ignore[type-var]
        self.pos += size
        self.window_used += size

    def _flush_records(self) -> None:
        if self.emit:
            evs, end = self.records.to_events(self.guest, self._body_pos)
            if end != self.pos:
                raise SimulationError(f"internal: RAM records end at {end}, file position is {self.pos}")
            self.events.extend(evs)
        self.records = _Records()

    def _account(self, nbytes: int) -> None:
        """Bytes of RAM records written now (added to the file position and the window)."""
        self.pos += nbytes
        self.window_used += nbytes

    # ------------------------------------------------------------------ passes / trace
    def _open_pass_if_needed(self) -> dict[str, Any]:
        if not self._new_pass and self._passes:
            return self._passes[-1]
        self._close_pass()
        kind = self._pass_kind_next
        d = {
            "kind": kind,
            "classes": np.zeros(self.n, np.uint8),
            "wire": np.zeros(self.n, np.uint32),
            "dirty": self.bmap.copy() if self.record_dirty else None,
            "start": dict(self.c),
            "counters": None,
        }
        self._passes.append(d)
        self._new_pass = False
        self._pass_kind_next = "postcopy" if self.in_postcopy else "precopy"
        return d

    def _close_pass(self) -> None:
        if not self._passes or self._passes[-1]["counters"] is not None:
            return
        d = self._passes[-1]
        self._gauges()
        d["counters"] = {k: (self.c[k] - d["start"][k]) if k in CUMULATIVE else self.c[k] for k in self.c}

    def _gauges(self) -> None:
        self.c["remaining"] = self.migration_dirty_pages
        self.c["cpu_throttle_percentage"] = self.throttle
        self.c["time_ms"] = self._now_ms()
        self.c["xbzrle_cache_items"] = self.cache.num_items if self.cache is not None else 0

    # ------------------------------------------------------------------ guest and sync
    def _guest_run(self) -> None:
        t = self.now
        if self.workload is not None and t > self.t_guest:
            pages = self.workload.step(self.guest, t - self.t_guest, self.throttle)
            if pages.size:
                self.dlog[pages] = True
        self.t_guest = max(self.t_guest, t)

    def migration_bitmap_sync(self) -> int:
        """Fold the dirty log into the migration bitmap (returns the newly dirty page count)."""
        self.c["dirty_sync_count"] += 1
        now = self._now_ms()
        if self.time_last_bitmap_sync is None:
            self.time_last_bitmap_sync = now
        new = int(np.count_nonzero(self.dlog & ~self.bmap))
        self.bmap |= self.dlog
        self.dlog[:] = False
        self.migration_dirty_pages += new
        self.num_dirty_pages_period += new
        end = self._now_ms()
        if end > self.time_last_bitmap_sync + 1000:
            self.c["dirty_pages_rate"] = self.num_dirty_pages_period * 1000 // (end - self.time_last_bitmap_sync)
            xfer_now = int(self.c["transferred"])
            if self.p.auto_converge:
                if self.num_dirty_pages_period * TPS > (xfer_now - self.bytes_xfer_prev) // 2:
                    self.dirty_rate_high_cnt += 1
                    if self.dirty_rate_high_cnt >= 2:
                        self.dirty_rate_high_cnt = 0
                        self._throttle_down()
            if self.p.xbzrle:
                it = int(self.c["iterations"])
                if self.iterations_prev != it and self.cache is not None:
                    self.cache.counters.cache_miss_rate = (
                        self.c["xbzrle_cache_miss"] - self.xbzrle_cache_miss_prev) / (it - self.iterations_prev)
                    self._xbzrle_counters_to_c()
                self.iterations_prev = it
                self.xbzrle_cache_miss_prev = int(self.c["xbzrle_cache_miss"])
            self.time_last_bitmap_sync = end
            self.num_dirty_pages_period = 0
            self.bytes_xfer_prev = xfer_now
        self.log.append({"pass": max(len(self._passes) - 1, 0), "kind": "sync",
                         "dirty_sync_count": int(self.c["dirty_sync_count"]), "new_dirty": new,
                         "remaining": self.migration_dirty_pages, "time_ms": end})
        return new

    def _xbzrle_counters_to_c(self) -> None:
        """Mirror the cache's :class:`~ramlab.model.page_cache.XbzrleCounters` into the counter dict."""
        xc = self.cache.counters  # type: ignore[union-attr]
        c = self.c
        c["xbzrle_cache_miss"], c["xbzrle_overflow"] = xc.cache_miss, xc.overflow
        c["xbzrle_pages"], c["xbzrle_bytes"], c["xbzrle_cache_miss_rate"] = xc.pages, xc.bytes, xc.cache_miss_rate

    def _throttle_down(self) -> None:
        pct = self.p.cpu_throttle_initial if self.throttle == 0 else self.throttle + self.p.cpu_throttle_increment
        self.throttle = int(min(max(pct, CPU_THROTTLE_PCT_MIN), CPU_THROTTLE_PCT_MAX))
        self.log.append({"pass": max(len(self._passes) - 1, 0), "kind": "throttle", "pct": self.throttle,
                         "time_ms": self._now_ms()})

    def ram_save_pending(self) -> int:
        """Bytes still dirty; syncs first when that is below the threshold (seed rule)."""
        remaining = self.migration_dirty_pages * TPS
        if remaining < self.threshold:
            self.migration_bitmap_sync()
            remaining = self.migration_dirty_pages * TPS
        return remaining

    # ------------------------------------------------------------------ the migration thread
    def run(self) -> SenderResult:
        """Setup, iterate until the completion rule holds (or max_passes), complete."""
        for e in self.prologue:
            self._write(e, event_size(e))
        self._setup()
        converged = True
        while True:
            self._guest_run()
            pending = self.ram_save_pending()
            if pending == 0 or pending < self.threshold:
                break
            self._check_budgets()
            if self.forced or (self.switchover is not None and self.switchover(self)):
                converged = not self.forced and pending < self.threshold
                if not self.forced:
                    self.reason = "switchover"
                break
            self._iterate()
            if self.window_used > self.budget:  # migration_rate_limit: the 100 ms window is over
                self.window_used = 0
                self.windows += 1
                self.threshold = self.p.bandwidth * self.p.downtime_limit_ms / 1000.0
        self.log.append({"pass": len(self._passes), "kind": "switchover", "time_ms": self._now_ms(),
                         "converged": converged, "pending": self.migration_dirty_pages * TPS})
        self._complete()
        for e in self.epilogue:
            self._write(e, event_size(e))
        return SenderResult(self.events, self._trace(), self._final_counters(), converged, self.now,
                            self.guest.ram(copy=False), self.log, self.reason)

    def _check_budgets(self) -> None:
        """Before each iteration: past ``max_time_s`` simulated seconds or ``max_pages`` pages
        handled, precopy is forced to complete (``converged=False``; ``reason`` names the budget)."""
        if self.forced:
            return
        if self.now > self.p.max_time_s:
            self.reason = "max_time_s"
        elif self.c["pages_handled"] >= self.p.max_pages:
            self.reason = "max_pages"
        else:
            return
        self.forced = True
        self.log.append({"pass": len(self._passes), "kind": "budget", "budget": self.reason,
                         "time_ms": self._now_ms(), "pages_handled": int(self.c["pages_handled"])})

    def _mem_size_record(self) -> ev.RamMemSize:
        """The ``MEM_SIZE`` record of the setup section (the postcopy model adds page sizes)."""
        return self.guest.mem_size()

    def _section(self, stype: int) -> None:
        if stype == QEMU_VM_SECTION_START:
            header = ev.SectionHeader(stype, self.section_id, "ram", 0, 4)
            self._write(header, event_size(header))
            ms = self._mem_size_record()
            self._write(ms, event_size(ms))
        else:
            header = ev.SectionHeader(stype, self.section_id, "ram")
            self._write(header, event_size(header))
        self._body_pos = self.pos

    def _end_section(self, count_eos: bool) -> None:
        self._flush_records()
        self._write(ev.RamEos(), RAM_HEADER_SIZE)
        if count_eos:
            self.c["transferred"] += RAM_HEADER_SIZE
        footer = ev.SectionFooter(self.section_id)
        self._write(footer, event_size(footer))

    def _setup(self) -> None:
        self._section(QEMU_VM_SECTION_START)
        self.dlog[:] = False  # dirty logging starts now; bmap is all ones
        self.migration_bitmap_sync()
        self._end_section(count_eos=False)

    def _iterate(self) -> str:
        self._section(QEMU_VM_SECTION_PART)
        status = self._save_loop(last_stage=False)
        self._flush_compressed()
        self._end_section(count_eos=True)
        return status

    def _complete(self) -> None:
        self._section(QEMU_VM_SECTION_END)
        self._completing = True
        self.migration_bitmap_sync()
        self._new_pass = True
        self._pass_kind_next = "complete"
        self._open_pass_if_needed()
        self._save_loop(last_stage=True)
        self._flush_compressed()
        self._end_section(count_eos=False)
        self._close_pass()

    # ------------------------------------------------------------------ page search
    def _host_end(self, g: np.ndarray) -> np.ndarray:
        """Global index of the last target page of the host page holding each page."""
        b = self.block_of[g]
        start = self.block_start[b]
        r = self.ratio[b]
        return np.minimum(start + ((g - start) // r + 1) * r, self.block_end[b]) - 1

    def _next_dirty(self, start: int, stop: int, k: int) -> np.ndarray:
        out: list[np.ndarray] = []
        got = 0
        span = max(4096, k * 4)
        s = start
        while s < stop and got < k:
            e = min(stop, s + span)
            f = np.flatnonzero(self.bmap[s:e]) + s
            if f.size:
                out.append(f[: k - got])
                got += min(f.size, k - got)
            s = e
            span *= 4
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def _save_loop(self, last_stage: bool) -> str:
        """``while !rate_limited: ram_find_and_save_block()``, a chunk of pages at a time."""
        while True:
            if not last_stage and self._rate_limited():
                return LIMITED
            if self._serve_queue(last_stage):
                continue
            g = self.pss
            start = g
            if self.ram_bulk_stage and g < self.n and g > self.block_start[self.block_of[g]]:
                start = g + 1  # bulk stage: "start + 1", no bitmap search
            stop = self.last_seen if self.complete_round else self.n
            left = max(self.budget - self.window_used, 0)
            k = _CHUNK_MAX if last_stage or not self.budget else int(min(_CHUNK_MAX, max(256, 2 * left // TPS + 64)))
            cand = self._next_dirty(min(start, self.n), stop, k)
            if cand.size and self.ratio[self.block_of[cand[-1]]] > 1:
                # ram_save_host_page sends the rest of the last host page without a rate-limit check
                last = int(cand[-1])
                he = int(self._host_end(cand[-1:])[0])
                if he > last:
                    cand = np.concatenate((cand, np.flatnonzero(self.bmap[last + 1 : he + 1]) + last + 1))
            if cand.size == 0:
                if not self.complete_round:
                    if not last_stage and self._pass_limit_reached():
                        return self._stop_status()
                    self._wrap()
                    continue
                # one lap without finding anything: give up, leaving the search in the start block
                found = self.n
                if self.last_seen < self.n:
                    b_end = int(self.block_end[self.block_of[self.last_seen]])
                    f = self._next_dirty(self.last_seen, b_end, 1)
                    found = int(f[0]) if f.size else b_end
                self.pss = self.last_seen = found
                self.complete_round = False
                return DONE
            use_comp = self.p.compress and (self.ram_bulk_stage or not self.p.xbzrle)
            if use_comp:
                self._save_compressed(cand, last_stage)
            else:
                self._save_chunk(cand, last_stage)
            if self._stopping:
                return self._stop_status()

    def _serve_queue(self, last_stage: bool) -> bool:
        """``get_queued_page``: send a requested host page first (postcopy); True if one was sent."""
        return False

    def _rate_limited(self) -> bool:
        """``qemu_file_rate_limit``: more than the window's budget written; a budget of 0 (a
        bandwidth below 10 B/s) means no limit, as in QEMU."""
        return 0 < self.budget < self.window_used

    def _pass_limit(self) -> int:
        """Precopy passes (trace count) after which no further one may start: ``max_passes - 1``."""
        return self.p.max_passes - 1

    def _pass_limit_reached(self) -> bool:
        return len(self._passes) >= self._pass_limit()

    def _stop_status(self) -> str:
        """The iteration ends because the pass limit is reached: forced completion."""
        self._stopping = False
        self.forced = True
        self.reason = "max_passes"
        return FORCED

    def _would_repeat(self, g: int, last_stage: bool) -> bool:
        """Page ``g`` would start a repeat pass that the pass limit forbids: stop instead."""
        if last_stage or self._new_pass or not self._passes or not self._passes[-1]["classes"][g]:
            return False
        if self._pass_limit_reached():
            self._stopping = True
            return True
        return False

    def _repeat_pass(self) -> dict[str, Any]:
        """The page at the search position was re-dirtied and is sent again in the same lap
        (post-bulk the search includes ``last_page``): like the decoder, start a new pass."""
        self._new_pass = True
        self.repeats += 1
        self._pass_kind_next = "complete" if self._completing else ("postcopy" if self.in_postcopy else "precopy")
        self.log.append({"pass": len(self._passes), "kind": "repeat", "time_ms": self._now_ms()})
        return self._open_pass_if_needed()

    def _wrap(self) -> None:
        self.pss = 0
        self.complete_round = True
        self.ram_bulk_stage = False
        if self.p.xbzrle:
            self._flush_compressed()  # seed: only with XBZRLE on
        self.lap += 1
        self._new_pass = not self._completing  # the completion stage is one pass, wraps or not
        self.log.append({"pass": len(self._passes), "kind": "wrap", "lap": self.lap, "time_ms": self._now_ms()})

    # ------------------------------------------------------------------ the decision chain
    def _cut(self, cand: np.ndarray, nbytes: np.ndarray, last_stage: bool) -> int:
        """Pages processed before ``qemu_file_rate_limit`` stops the loop (whole host pages)."""
        if last_stage or not self.budget:
            return cand.size
        before = self.window_used + np.cumsum(nbytes) - nbytes
        fail = before > self.budget
        if not fail.any():
            return cand.size
        if (self.ratio == 1).all():
            return int(np.argmax(fail))
        hp = self._host_end(cand)
        first = np.ones(cand.size, bool)
        first[1:] = hp[1:] != hp[:-1]
        stop = fail & first
        return int(np.argmax(stop)) if stop.any() else cand.size

    def _named(self, blocks: np.ndarray) -> np.ndarray:
        """Which of these sent records carry the block name (``save_page_header``)."""
        if blocks.size == 0:
            return np.zeros(0, bool)
        prev = np.empty_like(blocks)
        prev[0] = self.last_sent_block
        prev[1:] = blocks[:-1]
        return blocks != prev

    def save_pages(self, pages: np.ndarray | list[int], *, last_stage: bool = False) -> dict[str, Any]:
        """Dirty ``pages`` (global page indices) and send them in a pass of their own, in scan order,
        each through ``ram_save_target_page``'s chain (zero page, XBZRLE hit / miss / overflow /
        unchanged, compressed, normal page). Returns the pass record: ``classes`` and ``wire``
        (bytes of each page's record) on the global page axis, and ``kind``.

        This is the seam to check the sender's per-page decisions without running a migration.
        """
        cand = np.unique(np.asarray(pages, dtype=np.int64))
        if cand.size and (cand[0] < 0 or cand[-1] >= self.n):
            raise SimulationError(f"pages must lie in 0..{self.n - 1}")
        self.migration_dirty_pages += int((~self.bmap[cand]).sum())
        self.bmap[cand] = True
        self._new_pass = True
        while (left := cand[self.bmap[cand]]).size:  # a chunk stops before a repeated cache slot
            self._save_chunk(left, last_stage)
        return self._passes[-1]

    def _save_chunk(self, cand: np.ndarray, last_stage: bool) -> None:
        """Zero / XBZRLE / PAGE decisions for dirty pages ``cand`` (in search order), vectorised."""
        use_xbzrle = self.p.xbzrle and not self.ram_bulk_stage and not self.in_postcopy
        age = int(self.c["dirty_sync_count"])
        cache = self.cache
        if use_xbzrle:
            assert cache is not None
            addr = self.guest.ram_page[cand] * TPS  # ram_addr_t of each page: the cache key
            slot = cache.slot_of(addr)
            if cand.size > 1:  # cut before the first page that reuses a slot of this chunk
                order = np.argsort(slot, kind="stable")
                s = slot[order]
                dup = s[1:] == s[:-1]
                if dup.any():
                    m = int(order[1:][dup].min())
                    if self.ratio[self.block_of[cand[m]]] > 1:  # huge pages: cut at a host page start
                        hs = np.flatnonzero(self._host_end(cand[:m]) != self._host_end(cand[m : m + 1])[0])
                        m = int(hs[-1]) + 1 if hs.size else m  # (a cache smaller than a host page: as is)
                    cand, addr, slot = cand[:m], addr[:m], slot[:m]
        c0 = int(cand[0])
        if int(cand[-1]) - c0 + 1 == cand.size:  # contiguous: a view, rows are copied only when kept
            data = self.guest.mem[c0 : c0 + cand.size]
            zero = ~data.view(np.uint64).any(axis=1)
        else:
            data = _LazyRows(self.guest.mem, cand)
            zero = data.zero()
        cls = np.where(zero, PageClass.ZERO, PageClass.NORMAL).astype(np.uint8)
        nbytes = np.where(zero, _ZERO_SIZE, _PAGE_SIZE).astype(np.int64)
        blobs: list[bytes] = []
        if use_xbzrle:
            hit = ~zero & (cache.addr[slot] == addr)
            hit_i = np.flatnonzero(hit)
            ret = np.zeros(0, np.int64)
            if hit_i.size:
                enc = encode_batch(cache.data[slot[hit_i]], data[hit_i])
                ret = enc.ret
                cls[hit_i[ret == 0]] = PageClass.XBZRLE_UNCHANGED
                cls[hit_i[ret < 0]] = PageClass.XBZRLE_OVERFLOW
                xb = hit_i[ret > 0]
                cls[xb] = PageClass.XBZRLE
                nbytes[hit_i[ret == 0]] = 0
                nbytes[xb] = _XBZRLE_HEAD + ret[ret > 0]
        sent = cls != PageClass.XBZRLE_UNCHANGED
        bidx = self.block_of[cand]
        sent_i = np.flatnonzero(sent)
        named_sent = self._named(bidx[sent_i])
        nbytes[sent_i[named_sent]] += self.name_extra[bidx[sent_i[named_sent]]]
        k = self._cut(cand, nbytes, last_stage)
        if k == 0 or self._would_repeat(int(cand[0]), last_stage):
            return
        # ---- commit the first k pages
        d = self._open_pass_if_needed()
        if d["classes"][cand[0]]:
            d = self._repeat_pass()
        cand, cls, nbytes, zero, data, bidx = cand[:k], cls[:k], nbytes[:k], zero[:k], data[:k], bidx[:k]
        self.bmap[cand] = False
        self.unsent[cand] = False
        self.migration_dirty_pages -= k
        c = self.c
        n_zero = int(zero.sum())
        n_norm = int(np.count_nonzero((cls == PageClass.NORMAL) | (cls == PageClass.XBZRLE_OVERFLOW)))
        c["duplicate"] += n_zero
        c["normal"] += n_norm
        c["normal_bytes"] += n_norm * TPS
        c["pages_handled"] += k
        if use_xbzrle:
            addr, slot = addr[:k], slot[:k]
            hit_k = hit[:k]
            if self.snapshot_budget > 0:
                self._snapshot(np.flatnonzero(hit_k & ~zero), cand, slot, data)
            miss = ~zero & ~hit_k
            # the chunk's slots are distinct, so these batches decide as the sequential calls would
            zi = np.flatnonzero(zero)
            if zi.size:  # xbzrle_cache_zero_page: cache_insert of the zero page
                cache.insert_batch(addr[zi], np.zeros((zi.size, TPS), np.uint8), age)
            cache.lookup_batch(addr[~zero], age)  # cache_is_cached: a hit refreshes the slot's age
            xb_k = cls == PageClass.XBZRLE
            ov_k = cls == PageClass.XBZRLE_OVERFLOW
            xc = cache.counters
            xc.cache_miss += int(miss.sum())
            xc.overflow += int(ov_k.sum())
            xc.pages += int(xb_k.sum())
            xc.bytes += int(nbytes[xb_k].sum())
            c["xbzrle_unchanged"] += int(np.count_nonzero(cls == PageClass.XBZRLE_UNCHANGED))
            self._xbzrle_counters_to_c()
            if not last_stage:
                mi = np.flatnonzero(miss)
                if mi.size:
                    cache.insert_batch(addr[mi], data[mi], age)
                upd = np.flatnonzero(xb_k | ov_k)
                cache.data[slot[upd]] = data[upd]  # the encoder's new page replaces the cached one
            if xb_k.any():
                # payloads of the committed XBZRLE records, in page order
                pos_in_hits = np.searchsorted(hit_i, np.flatnonzero(xb_k))
                blobs = [enc[int(j)] for j in pos_in_hits]  # type: ignore[misc]
        c["transferred"] += int(nbytes.sum())
        self._account(int(nbytes.sum()))
        # iterations: calls of ram_find_and_save_block that returned pages (one per host page)
        counted = cls != PageClass.XBZRLE_UNCHANGED
        if not last_stage and counted.any():
            hp = self._host_end(cand[counted])
            c["iterations"] += int(np.count_nonzero(np.diff(hp))) + 1
        # search state
        self.pss = int(self._host_end(cand[-1:])[0])
        if counted.any():
            self.last_seen = int(self._host_end(cand[np.flatnonzero(counted)[-1:]])[0])
            self.complete_round = False
            sent_b = bidx[counted]
            named = self._named(sent_b)
            self.last_sent_block = int(sent_b[-1])
        if self.in_postcopy:  # classes as the decoder gives them: requested host pages, background PAGEs
            if self._serving_request:
                cls = np.full(k, PageClass.REQUESTED, np.uint8)
                c["requested"] += k
            else:
                cls = np.where(cls == PageClass.NORMAL, PageClass.POSTCOPY, cls).astype(np.uint8)
            c["postcopy_bytes"] += int(nbytes.sum())
        # trace
        d["classes"][cand] = cls
        d["wire"][cand] = nbytes
        if self.emit and counted.any():
            si = np.flatnonzero(counted)
            kind = np.where(zero[si], _K_ZERO, np.where(cls[si] == PageClass.XBZRLE, _K_XBZRLE, _K_PAGE))
            is_page = kind == _K_PAGE
            self.records.add(kind, bidx[si], cand[si] - self.block_start[bidx[si]], named,
                             rows=data[si[is_page]], blobs=blobs)

    # ------------------------------------------------------------------ compression
    def _emit_one(self, kind: int, b: int, page_in_block: int, g: int, named: bool,
                  row: np.ndarray | None = None, blob: bytes = b"") -> None:
        self.records.add(np.array([kind]), np.array([b]), np.array([page_in_block]), np.array([named]),
                         rows=row[None, :] if row is not None else None, blobs=[blob] if kind >= _K_XBZRLE else ())

    def _flush_compressed(self) -> None:
        """``flush_compressed_data``: worker 0's finished record goes into the stream."""
        if self.comp_pending is None:
            return
        b, p, blob = self.comp_pending
        self.comp_pending = None
        n = _COMP_HEAD + len(blob)
        self.c["transferred"] += n
        self._account(n)
        if self.emit:
            self._emit_one(_K_COMP, b, p, -1, False, blob=blob)

    def _save_compressed(self, cand: np.ndarray, last_stage: bool) -> None:
        """The chain while compression is in use (sequential: one zlib stream per page)."""
        c = self.c
        level = self.p.compress_level
        d = self._open_pass_if_needed()
        hp = self._host_end(cand)
        for i in range(cand.size):
            g = int(cand[i])
            first_of_host = i == 0 or hp[i] != hp[i - 1]
            if not last_stage and first_of_host and self._rate_limited():
                return
            b = int(self.block_of[g])
            bstart = int(self.block_start[b])
            if self._would_repeat(g, last_stage):
                return
            if d["classes"][g]:
                d = self._repeat_pass()
            self.bmap[g] = False
            self.unsent[g] = False
            self.migration_dirty_pages -= 1
            c["pages_handled"] += 1
            if b != self.last_sent_block:
                self._flush_compressed()
            page = self.guest.mem[g]
            named = b != self.last_sent_block
            extra = int(self.name_extra[b]) if named else 0
            if not page.view(np.uint64).any():
                n = _ZERO_SIZE + extra
                c["duplicate"] += 1
                cls = PageClass.ZERO
                if self.emit:
                    self._emit_one(_K_ZERO, b, g - bstart, g, named)
                self.last_sent_block = b
            elif b == self.last_sent_block:
                self._flush_compressed()  # worker 0 is reused: its previous record goes out first
                co = zlib.compressobj(level)
                blob = co.compress(page.tobytes()) + co.flush()
                self.comp_pending = (b, g - bstart, blob)
                c["normal"] += 1
                c["compressed"] += 1
                c["compressed_size"] += len(blob)
                cls = PageClass.COMPRESSED
                d["classes"][g] = cls
                d["wire"][g] = _COMP_HEAD + len(blob)
                n = 0
            else:
                n = _PAGE_SIZE + extra
                c["normal"] += 1
                c["normal_bytes"] += TPS
                cls = PageClass.NORMAL
                if self.emit:
                    self._emit_one(_K_PAGE, b, g - bstart, g, named, row=page.copy())
                self.last_sent_block = b
            if cls != PageClass.COMPRESSED:
                d["classes"][g] = cls
                d["wire"][g] = n
                c["transferred"] += n
                self._account(n)
            if not last_stage and hp[i] == g:
                c["iterations"] += 1
            self.pss = int(hp[i])
            self.last_seen = self.pss
            self.complete_round = False

    # ------------------------------------------------------------------ results
    def _final_counters(self) -> dict[str, float]:
        self._gauges()
        out = dict(self.c)
        out["xbzrle_cache_size"] = self.p.xbzrle_cache_size if self.p.xbzrle else 0
        out["total"] = sum(b.used_length for b in self.guest.blocks)
        out["windows"] = self.windows
        out["laps"] = self.lap
        return out

    def _snapshot(self, take: np.ndarray, cand: np.ndarray, slot: np.ndarray, data: Any) -> None:
        """Keep (cache copy, new page) of XBZRLE hits before the cache is updated (bounded)."""
        take = take[: self.snapshot_budget // (2 * TPS)]
        if not take.size:
            return
        p = len(self._passes) - 1
        olds = self.cache.data[slot[take]].copy()
        news = np.array(data[take], dtype=np.uint8, copy=True)
        for j, i in enumerate(take):
            self.snapshots[(p, int(cand[i]))] = (olds[j], news[j])
        self.snapshot_budget -= 2 * TPS * take.size

    def _trace(self) -> Trace:
        self._close_pass()
        ps = self._passes
        n = len(ps)
        trace = Trace.allocate(self.guest.block_infos(), 0, source="simulation", with_dirty=self.record_dirty)
        trace.classes = np.stack([d["classes"] for d in ps]) if n else np.zeros((0, self.n), np.uint8)
        trace.wire_bytes = np.stack([d["wire"] for d in ps]) if n else np.zeros((0, self.n), np.uint32)
        if self.record_dirty:
            trace.dirty = np.stack([d["dirty"] for d in ps]) if n else np.zeros((0, self.n), bool)
        trace.pass_kind = [d["kind"] for d in ps]
        trace.counters = {
            k: np.array([d["counters"][k] for d in ps], dtype=np.float64 if k == "xbzrle_cache_miss_rate" else np.int64)
            for k in self.c
        }
        p = self.p
        trace.meta = {
            "name": self.meta.get("name", "simulation"),
            "bandwidth": p.bandwidth,
            "downtime_limit": p.downtime_limit_ms / 1000.0,
            "capabilities": [x for x, on in (("xbzrle", p.xbzrle), ("compress", p.compress),
                                              ("auto-converge", p.auto_converge)) if on],
            "xbzrle_cache_size": p.xbzrle_cache_size,
            "compress_level": p.compress_level,
            **self.meta,
        }
        trace.events = list(self.log)
        if self.snapshots:
            snaps = self.snapshots
            trace.page_bytes = lambda p, g: snaps.get((p, g), (None, None))
        return trace

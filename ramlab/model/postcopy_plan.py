"""Postcopy RAM: discard planning, page requests, destination placement, recovery.

Pure models of the postcopy parts of QEMU's ``migration/ram.c`` (the seed, QEMU ~3.0,
and where noted QEMU >= 4.2 / 7.2), working on boolean numpy arrays with one entry per
*target* page of ONE RAM block (``True`` = bit set).

Why: when the operator switches to postcopy, the source tells the destination which
pages to throw away (POSTCOPY_RAM_DISCARD); afterwards the destination faults pages in
(REQ_PAGES on the return path) and places whole host pages atomically. These functions
reproduce exactly what QEMU computes and puts on the wire, so a widget can show the
steps and a decoder can check a real capture.

    >>> import numpy as np
    >>> dirty = np.zeros(8, bool); dirty[3] = True          # one target page re-dirtied
    >>> unsent = np.zeros(8, bool)                          # everything sent once
    >>> plan_discards(dirty, unsent, host_ratio=4).ranges   # host pages of 4 target pages
    Ranges([(0, 4), (0, 4)])

The seed discards host page 0 twice: once from the chunking pass (it was sent, then
partly re-dirtied) and once as a run of the final map (see :func:`plan_discards`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ramlab import checks
from ramlab.constants import MAX_DISCARDS_PER_COMMAND, TARGET_PAGE_SIZE
from ramlab.errors import PostcopyError
from ramlab.wire.recv_bitmap import decode_recv_bitmap, encode_recv_bitmap, recv_bitmap_size

__all__ = [
    "DiscardPlan",
    "PlanStep",
    "Ranges",
    "plan_discards",
    "bitmap_runs",
    "discard_batches",
    "RequestQueue",
    "QueuedPage",
    "PostcopyPlacer",
    "Placement",
    "recv_bitmap_size",
    "recv_bitmap_to_dirty",
]

Range = tuple[int, int]


def run_pairs(bits: np.ndarray) -> np.ndarray:
    """Maximal runs of ``True`` in a 1-D bool array as an ``[n_runs, 2]`` int64 array of
    ``(start, length)`` rows.

    Memory: the result (16 bytes per run) plus one byte per bit for the edges; the run
    boundaries are found once and the lengths computed in place, so a bitmap of tens of
    millions of bits with millions of runs needs no per-run Python object.

    >>> run_pairs(np.array([0, 1, 1, 0, 1], bool)).tolist()
    [[1, 2], [4, 1]]
    """
    if bits.size == 0:
        return np.zeros((0, 2), np.int64)
    b = bits.view(np.int8)
    change = np.empty(bits.size + 1, bool)  # change[i]: bit i-1 != bit i (outside the map: clear)
    change[0] = b[0] != 0
    change[-1] = b[-1] != 0
    np.not_equal(b[1:], b[:-1], out=change[1:-1])
    pairs = np.flatnonzero(change).reshape(-1, 2)  # starts and ends alternate
    pairs[:, 1] -= pairs[:, 0]
    return pairs


def _as_bitmap(a: object, name: str) -> np.ndarray:
    return checks.bits(a, name, PostcopyError)


#: the largest host page ratio accepted: 2**30 target pages (4 TiB host pages of 4 KiB target
#: pages; QEMU's largest host pages are 16 GiB)
MAX_HOST_RATIO = 1 << 30


# ----------------------------------------------------------------------------------
# discard ranges, held as numpy arrays
# ----------------------------------------------------------------------------------


class Ranges:
    """Discard ranges ``(start, length)`` in target pages, held as one ``[n, 2]`` int64 array.

    Why not a list of tuples: a plan over tens of millions of pages can have millions of
    ranges, and a Python tuple per range costs ~100 bytes; here a range costs 16. It behaves
    like the list it replaces: ``len``, iteration and indexing give ``(start, length)`` tuples
    of Python ints, slicing gives ``Ranges``, ``==`` compares with another ``Ranges`` or with
    any sequence of pairs, ``+`` concatenates, ``np.asarray(r)`` is the ``[n, 2]`` array.
    :attr:`start` and :attr:`length` are its columns (read-only views).

        >>> r = Ranges.from_pairs([(0, 4), (8, 2)])
        >>> r, len(r), r[1], r.start.tolist(), r == [(0, 4), (8, 2)]
        (Ranges([(0, 4), (8, 2)]), 2, (8, 2), [0, 8], True)
    """

    __slots__ = ("pairs",)

    def __init__(self, pairs: np.ndarray | None = None) -> None:
        a = np.zeros((0, 2), np.int64) if pairs is None else pairs
        if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.ndim != 2 or a.shape[1] != 2:
            raise PostcopyError(f"Ranges needs an [n, 2] int64 array, found {checks.describe(pairs)}")
        if a.flags.writeable:
            a = a.view()
            a.flags.writeable = False
        self.pairs = a

    @classmethod
    def from_pairs(cls, pairs: object, name: str = "ranges") -> Ranges:
        """Ranges from ``(start, length)`` pairs (a ``Ranges``, a sequence of pairs or an
        ``[n, 2]`` integer array); starts must be >= 0 and lengths >= 1."""
        if isinstance(pairs, Ranges):
            return pairs
        try:
            a = np.asarray(pairs) if isinstance(pairs, np.ndarray | list | tuple) else None
        except (TypeError, ValueError, OverflowError):
            a = None
        if a is not None and a.size == 0:
            return cls()
        if a is None or a.ndim != 2 or a.shape[1] != 2 or a.dtype.kind not in "iu":
            raise PostcopyError(f"{name} must be (start, length) pairs of integers, found {checks.describe(pairs)}")
        if a.dtype == np.uint64 and int(a.max()) > checks.MAX_INT:
            raise PostcopyError(f"{name} holds {int(a.max())}, beyond int64")
        a = a.astype(np.int64)
        bad = (a[:, 0] < 0) | (a[:, 1] < 1) | (a[:, 0] > checks.MAX_INT - a[:, 1])
        if bad.any():
            i = int(np.argmax(bad))
            raise PostcopyError(f"{name}[{i}] must have start >= 0 and length >= 1, found {tuple(a[i].tolist())}")
        return cls(a)

    @classmethod
    def _host_pages(cls, hosts: tuple[np.ndarray, ...], ratio: int) -> Ranges:
        """One range per host page of the index arrays ``hosts``, in order (no temporary copy)."""
        a = np.empty((sum(h.size for h in hosts), 2), np.int64)
        at = 0
        for h in hosts:
            np.multiply(h, ratio, out=a[at : at + h.size, 0])
            at += h.size
        a[:, 1] = ratio
        return cls(a)

    @property
    def start(self) -> np.ndarray:
        """First target page of each range (int64, read-only)."""
        return self.pairs[:, 0]

    @property
    def length(self) -> np.ndarray:
        """Target pages of each range (int64, read-only)."""
        return self.pairs[:, 1]

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    def __iter__(self) -> Iterator[Range]:
        return (tuple(p) for p in self.pairs.tolist()) if len(self) <= 4096 else self._iter_chunks()

    def _iter_chunks(self) -> Iterator[Range]:
        for k in range(0, len(self), 4096):
            yield from (tuple(p) for p in self.pairs[k : k + 4096].tolist())

    def __getitem__(self, i: int | slice) -> Range | Ranges:
        if isinstance(i, slice):
            return Ranges(self.pairs[i])
        k = checks.integer(i, "range index", PostcopyError)
        if not -len(self) <= k < len(self):
            raise PostcopyError(f"range index {i} outside 0..{len(self) - 1}")
        s, n = self.pairs[k].tolist()
        return s, n

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        return self.pairs if dtype is None else self.pairs.astype(dtype)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ranges):
            try:
                other = Ranges.from_pairs(other)
            except PostcopyError:
                return NotImplemented
        return bool(np.array_equal(self.pairs, other.pairs))

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: object) -> Ranges:
        return Ranges(np.concatenate((self.pairs, Ranges.from_pairs(other).pairs)))

    def __radd__(self, other: object) -> Ranges:
        return Ranges(np.concatenate((Ranges.from_pairs(other).pairs, self.pairs)))

    def __repr__(self) -> str:
        shown = ", ".join(f"({s}, {n})" for s, n in self.pairs[:8].tolist())
        return f"Ranges([{shown}{', ...' if len(self) > 8 else ''}])" + (f" ({len(self)} ranges)"
                                                                         if len(self) > 8 else "")

    def tolist(self) -> list[Range]:
        """As a list of ``(start, length)`` tuples (for small plans: one Python object per range)."""
        return list(self)

    def scaled(self, factor: int) -> Ranges:
        """Every start and length multiplied by ``factor`` (e.g. the target page size: bytes)."""
        factor = checks.integer(factor, "factor", PostcopyError, min=1)
        if len(self) and int(self.pairs.max()) > checks.MAX_INT // factor:
            raise PostcopyError(f"ranges times {factor} exceed int64")
        return Ranges(self.pairs * factor)


def bitmap_runs(bits: np.ndarray) -> Ranges:
    """Maximal runs of set bits as ``(start, length)`` pairs, in ascending order.

    This is the loop of ``postcopy_send_discard_bm_ram`` (find_next_bit /
    find_next_zero_bit), vectorised (:func:`run_pairs`).
    ``bits``: a 1-D bool or 0/1 integer array.

        >>> bitmap_runs(np.array([0, 1, 1, 0, 1], bool))
        Ranges([(1, 2), (4, 1)])
    """
    return Ranges(run_pairs(_as_bitmap(bits, "bits")))


# ----------------------------------------------------------------------------------
# discard planning
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanStep:
    """One step of the discard computation, for display.

    ``name`` is one of ``"unsent_pass"``, ``"dirty_pass"`` (seed chunk passes),
    ``"canonicalise"`` (modern single pass), ``"or"`` (seed: ``unsentmap |= bmap``) and
    ``"send_runs"`` (``postcopy_send_discard_bm_ram``). ``fixups`` are the host page
    indices whose bitmaps the step rewrote, ascending (the order the loop visited them), as an
    int64 array; ``sent`` the :class:`Ranges` (target pages) this step put on the wire;
    ``dirty`` / ``unsent`` the maps after the step (``unsent`` is ``None`` for the modern
    algorithm). Steps that leave a map unchanged share the array (all are read-only).
    """

    name: str
    fixups: np.ndarray
    sent: Ranges
    dirty: np.ndarray
    unsent: np.ndarray | None


@dataclass(frozen=True)
class DiscardPlan:
    """What ``ram_postcopy_send_discard_bitmap`` does to ONE RAM block.

    * ``ranges``: every ``(start_page, n_pages)`` discard range in wire order
      (= ``chunk_ranges + final_ranges``), in target pages. Multiply by the target page
      size for the byte offsets of the POSTCOPY_RAM_DISCARD payload (:meth:`ranges_bytes`).
    * ``chunk_ranges``: ranges sent by the seed's chunking passes (unsent pass, then
      dirty pass). QEMU batches them in their own commands (``postcopy_chunk_hostpages``
      has its own init/finish), and the seed sends ALL blocks' chunk commands before
      ANY block's final ranges. Always empty for ``algorithm="modern"``.
    * ``final_ranges``: the maximal runs of ``discard_map``.
    * ``dirty``: the dirty bitmap (``bmap``) after the host-page fix-ups.
    * ``unsent``: seed: ``unsentmap`` after the fix-ups, *before* the final
      ``unsentmap |= bmap``; modern (no unsent map in QEMU >= 4.2, where a never-sent
      page is simply still dirty): the same map as ``dirty``.
    * ``discard_map``: the map whose runs are sent (seed: ``unsent | dirty``, which is
      also the seed's ``unsentmap`` afterwards; modern: ``dirty``).
    * ``steps``: :class:`PlanStep` list for widgets.
    * ``host_ratio``, ``algorithm``: the inputs.

    Ranges are :class:`Ranges` (numpy-held), the maps read-only bool arrays: a plan over
    ``n`` target pages with ``R`` ranges holds at most 5 ``n`` bytes of maps and 16 ``R`` bytes
    of ranges (see :func:`plan_discards` for the peak while planning).
    """

    chunk_ranges: Ranges
    final_ranges: Ranges
    dirty: np.ndarray
    unsent: np.ndarray
    discard_map: np.ndarray
    steps: tuple[PlanStep, ...]
    host_ratio: int
    algorithm: str

    @property
    def ranges(self) -> Ranges:
        """``chunk_ranges + final_ranges``: every range in wire order (a new array per call)."""
        return self.chunk_ranges + self.final_ranges if len(self.chunk_ranges) else self.final_ranges

    def ranges_bytes(self, target_page_size: int = TARGET_PAGE_SIZE) -> Ranges:
        """``ranges`` as the ``(start, length)`` byte pairs the DISCARD payload carries."""
        return self.ranges.scaled(checks.power_of_two(target_page_size, "target_page_size", PostcopyError))

    @property
    def duplicated_ranges(self) -> Ranges:
        """Chunk-pass ranges that the final runs discard again (seed: all of them).

        The final runs are disjoint and ascending, so the run that could hold a chunk range
        is the last one starting at or before it (one binary search per chunk range).
        """
        c, f = self.chunk_ranges, self.final_ranges
        if not len(c) or not len(f):
            return Ranges()
        k = np.searchsorted(f.start, c.start, side="right") - 1
        kk = np.maximum(k, 0)
        inside = (k >= 0) & (c.start + c.length <= f.start[kk] + f.length[kk])
        return Ranges(c.pairs[inside])


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only (plans are frozen); ``a`` must be an array the planner owns."""
    a.flags.writeable = False
    return a


def _no_fixups() -> np.ndarray:
    return _frozen(np.zeros(0, np.int64))


def plan_discards(
    dirty: np.ndarray,
    unsent: np.ndarray | None,
    host_ratio: int,
    algorithm: Literal["seed", "modern"] = "seed",
) -> DiscardPlan:
    """Compute the discard ranges QEMU sends for one RAM block at the postcopy switch.

    ``dirty`` is the block's migration bitmap after the last sync (``bmap``), ``unsent``
    the seed's ``unsentmap`` (1 = never sent), both one bool (or 0/1 integer) per target
    page; ``host_ratio`` = block page size / target page size: a power of two (1, 2, 4, ...,
    512; QEMU's host page sizes are powers of two, so 2.5, 3, ``True``, NaN or infinity are a
    :class:`~ramlab.errors.PostcopyError`, never rounded). The block length must be a whole
    number of host pages (QEMU's hugepage blocks always are).

    Seed (QEMU ~3.0) ``algorithm="seed"``:

    1. ``postcopy_chunk_hostpages_pass(unsent_pass=True)`` (skipped when
       ``host_ratio == 1``): every *partly sent* host page (some target pages sent,
       some not) is sent as a discard ``(host_start, host_ratio)`` and marked wholly
       unsent and wholly dirty.
    2. ``postcopy_chunk_hostpages_pass(unsent_pass=False)``: every *partly dirty* host
       page is marked wholly dirty and wholly unsent; it is sent as a discard only if
       its first target page was sent (after pass 1, host pages are uniform in
       ``unsentmap``, so that means "the host page had been fully sent").
    3. ``unsentmap |= bmap`` and every maximal run of the result is sent
       (``postcopy_send_discard_bm_ram``).

    Quirk kept (it is what the wire carries): every host page sent in 1 or 2 is, after
    the fix-up, unsent, so it lies inside a run of step 3 and is discarded a second
    time -- as the identical range when its neighbour host pages are not in the final
    map, otherwise inside a longer run. Nothing is sent twice *within* steps 1-2, and
    steps 1-2 send nothing when ``host_ratio == 1``.

    Modern (QEMU >= 4.2, checked against 7.2) ``algorithm="modern"``: no unsent map
    (``unsent`` is ignored and may be ``None``); one canonicalisation pass marks every
    partly dirty host page wholly dirty and sends nothing; the discards are the maximal
    runs of the dirty map.

    Memory, ``n`` target pages and ``R`` ranges: the plan's maps (at most 5 ``n`` bytes) and
    ranges (16 ``R`` bytes) plus about 2 ``n`` bytes of temporaries -- no Python object per
    range or page (``tests/test_postcopy_api.py`` holds a 64 Mi-page plan to its budget).

        >>> d = np.array([0, 0, 1, 0,  0, 0, 0, 0], bool)
        >>> u = np.array([0, 0, 0, 0,  0, 1, 1, 1], bool)
        >>> plan_discards(d, u, 4).ranges      # pass 1: hp 1; pass 2: hp 0; runs: [0, 8)
        Ranges([(4, 4), (0, 4), (0, 8)])
        >>> plan_discards(d, u, 4, "modern").ranges
        Ranges([(0, 4)])
    """
    algorithm = checks.choice(algorithm, "algorithm", ("seed", "modern"), PostcopyError)  # type: ignore[assignment]
    r = checks.power_of_two(host_ratio, "host_ratio", PostcopyError, max=MAX_HOST_RATIO)
    d0 = _as_bitmap(dirty, "dirty")
    n = d0.size
    if algorithm == "seed":
        if unsent is None:
            raise PostcopyError("the seed algorithm needs the unsent bitmap")
        u0 = _as_bitmap(unsent, "unsent")
        if u0.size != n:
            raise PostcopyError(f"dirty and unsent differ in length ({n} != {u0.size})")
    if n % r:
        raise PostcopyError(f"block of {n} target pages is not a whole number of host pages of {r}")
    hp = n // r

    if algorithm == "modern":
        d = d0.reshape(hp, r).copy()
        steps: list[PlanStep] = []
        if r > 1:
            partial = _partly_set(d)
            d |= partial[:, None]
            steps.append(PlanStep("canonicalise", _frozen(np.flatnonzero(partial)), Ranges(), _frozen(d.ravel()),
                                  None))
        dmap = _frozen(d.ravel())
        final = Ranges(run_pairs(dmap))
        steps.append(PlanStep("send_runs", _no_fixups(), final, dmap, None))
        return DiscardPlan(Ranges(), final, dmap, dmap, dmap, tuple(steps), r, algorithm)

    # --- seed ------------------------------------------------------------------------
    steps = []
    chunk = Ranges()
    if r > 1:
        d = d0.reshape(hp, r).copy()
        u = u0.reshape(hp, r).copy()
        # pass 1: partly sent host pages -> discard, whole host page unsent + dirty
        partial_sent = _partly_set(u)
        u |= partial_sent[:, None]
        d |= partial_sent[:, None]
        h1 = np.flatnonzero(partial_sent)
        del partial_sent
        d1, u1 = _frozen(d.ravel().copy()), _frozen(u.ravel().copy())
        # pass 2: partly dirty host pages -> whole host page dirty + unsent;
        # discard only those whose first target page was sent (uniform after pass 1)
        partial_dirty = _partly_set(d)
        h2 = np.flatnonzero(partial_dirty)
        sent2 = h2[~u[h2, 0]]
        u |= partial_dirty[:, None]
        d |= partial_dirty[:, None]
        del partial_dirty
        # the chunk ranges in wire order; each pass's ranges are a view of them
        chunk = Ranges._host_pages((h1, sent2), r)
        del sent2
        steps.append(PlanStep("unsent_pass", _frozen(h1), chunk[: h1.size], d1, u1))  # type: ignore[arg-type]
        steps.append(PlanStep("dirty_pass", _frozen(h2), chunk[h1.size :], _frozen(d.ravel()),  # type: ignore[arg-type]
                              _frozen(u.ravel())))
        dflat, uflat = steps[-1].dirty, steps[-1].unsent
    else:  # no chunk passes: the maps are the inputs (read-only copies)
        dflat, uflat = _frozen(d0.copy()), _frozen(u0.copy())
    dmap = _frozen(uflat | dflat)
    steps.append(PlanStep("or", _no_fixups(), Ranges(), dflat, dmap))
    final = Ranges(run_pairs(dmap))
    steps.append(PlanStep("send_runs", _no_fixups(), final, dflat, dmap))
    return DiscardPlan(chunk, final, dflat, uflat, dmap, tuple(steps), r, algorithm)  # type: ignore[arg-type]


def _partly_set(m: np.ndarray) -> np.ndarray:
    """Rows (host pages) of the C-contiguous bool array ``m`` with some but not all bits set.

    A row of 2, 4 or 8k bools is read as 16/32/64-bit words (a bool is the byte 0 or 1), so
    the test is one comparison per word instead of a reduction over a short axis.
    """
    r = m.shape[1]
    if r % 8 == 0:
        words, full = m.view(np.uint64), np.uint64(0x0101010101010101)
    elif r in (2, 4):
        words, full = m.view(np.uint16 if r == 2 else np.uint32), 0x0101 if r == 2 else 0x01010101
    else:
        return m.any(axis=1) & ~m.all(axis=1)
    if words.shape[1] == 1:
        w = words[:, 0]
        return (w != 0) & (w != full)
    return (words != 0).any(axis=1) & ~(words == full).all(axis=1)


def discard_batches(
    ranges: Sequence[Range] | Ranges | DiscardPlan, max_per_command: int = MAX_DISCARDS_PER_COMMAND
) -> list[Ranges]:
    """Split discard ranges into POSTCOPY_RAM_DISCARD commands as QEMU batches them.

    ``postcopy_discard_send_range`` queues a range and ships a command as soon as
    ``max_per_command`` (12) are queued; ``postcopy_discard_send_finish`` ships the
    remainder (1..11); no ranges, no command. Given a plain list (or :class:`Ranges`), it is one
    init/finish series. Given a :class:`DiscardPlan`, the seed's chunk ranges and
    final ranges are two separate series (two init/finish pairs), so a command never
    mixes them; remember that with several blocks the seed sends every block's chunk
    commands first, then every block's final commands (7.2 sends block by block).
    Each batch is a :class:`Ranges` view of the input (no copy of the ranges).

        >>> [len(b) for b in discard_batches([(i, 1) for i in range(25)])]
        [12, 12, 1]
    """
    k = checks.integer(max_per_command, "max_per_command", PostcopyError, min=1)
    if isinstance(ranges, DiscardPlan):
        return discard_batches(ranges.chunk_ranges, k) + discard_batches(ranges.final_ranges, k)
    items = Ranges.from_pairs(ranges)
    return [items[i : i + k] for i in range(0, len(items), k)]  # type: ignore[misc]


def _block_name(name: object) -> str:
    if not isinstance(name, str):
        raise PostcopyError(f"RAM block names must be strings, found {checks.describe(name)}")
    return name


# ----------------------------------------------------------------------------------
# source: page requests (ram_save_queue_pages / unqueue_page / get_queued_page)
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedPage:
    """A queued page that ``get_queued_page`` returned: the new search position.

    ``block`` and ``page`` are the new ``pss->block`` / ``pss->page`` (the background
    scan continues from here); ``offset`` is the byte offset in the block.
    """

    block: str
    offset: int
    page: int


@dataclass
class _Request:
    block: str
    offset: int
    length: int


class RequestQueue:
    """The source's queue of destination page requests (seed semantics).

    ``blocks`` maps block name -> ``used_length`` in bytes.

    * :meth:`ram_save_queue_pages` = ``ram_save_queue_pages``: counts the request in
      ``postcopy_requests`` *first* (so rejected requests are counted too, like
      QEMU's ``postcopy-requests`` counter), resolves a ``None`` name to the previous
      request's block (``last_req_rb``; error if none), checks the block exists and
      ``start + length <= used_length`` (no alignment check), then appends.
    * :meth:`unqueue_page` = ``unqueue_page``: takes ONE target page off the head
      request (offset += TPS, len -= TPS while len > TPS; the request is dropped when
      len <= TPS). A zero-length request therefore still yields one page, and a length
      that is not a multiple of TPS is rounded up.
    * :meth:`get_queued_page` = ``get_queued_page``: unqueues pages, silently
      skipping those already sent (clean in the dirty bitmap; each skip is recorded in
      ``skipped``), and returns the first still-dirty one, or ``None`` when the queue
      runs dry. When it returns a page it ends the bulk stage (``ram_bulk_stage =
      False``: the bulk stage assumes every page is dirty, no longer true once pages go
      out of order) and the background scan position moves to that page. It does not
      clear the dirty bit (sending does). Seed quirk: ``complete_round`` is NOT
      cleared when the position moves (modern code clears it).

        >>> q = RequestQueue({"pc.ram": 4 * 4096})
        >>> q.ram_save_queue_pages("pc.ram", 0, 2 * 4096)
        >>> dirty = {"pc.ram": np.array([0, 1, 1, 1], bool)}
        >>> q.get_queued_page(dirty)          # page 0 already sent: skipped
        QueuedPage(block='pc.ram', offset=4096, page=1)
        >>> q.ram_bulk_stage, q.postcopy_requests
        (False, 1)
    """

    def __init__(self, blocks: Mapping[str, int], target_page_size: int = TARGET_PAGE_SIZE) -> None:
        if not isinstance(blocks, Mapping):
            raise PostcopyError(f"blocks must map block names to used_length, found {checks.describe(blocks)}")
        self.blocks = {_block_name(k): checks.integer(v, f"blocks[{k!r}]", PostcopyError, min=0)
                       for k, v in blocks.items()}
        self.target_page_size = checks.power_of_two(target_page_size, "target_page_size", PostcopyError)
        self.queue: deque[_Request] = deque()
        self.last_req_rb: str | None = None
        self.postcopy_requests = 0
        self.ram_bulk_stage = True
        self.skipped: list[tuple[str, int]] = []

    def __len__(self) -> int:
        return len(self.queue)

    def ram_save_queue_pages(self, rbname: str | None, start: int, length: int) -> None:
        """Queue a request ``(rbname, start, length)`` (bytes); ``None`` = previous block."""
        self.postcopy_requests += 1
        start = checks.integer(start, "start", PostcopyError)
        length = checks.integer(length, "length", PostcopyError)
        if rbname is None:
            if self.last_req_rb is None:
                raise PostcopyError("ram_save_queue_pages no previous block")
            name = self.last_req_rb
        else:
            if not isinstance(rbname, str) or rbname not in self.blocks:
                raise PostcopyError(f"ram_save_queue_pages no block {rbname!r}")
            name = rbname
            self.last_req_rb = rbname
        if start < 0 or length < 0:
            raise PostcopyError(f"negative request start={start} len={length}")
        if start + length > self.blocks[name]:
            raise PostcopyError(
                f"ram_save_queue_pages request overrun start={start:#x} len={length:#x} "
                f"blocklen={self.blocks[name]:#x}"
            )
        self.queue.append(_Request(name, int(start), int(length)))

    def unqueue_page(self) -> tuple[str, int] | None:
        """Take one target page off the head request: ``(block, offset)`` or ``None``."""
        if not self.queue:
            return None
        e = self.queue[0]
        block, offset = e.block, e.offset
        if e.length > self.target_page_size:
            e.length -= self.target_page_size
            e.offset += self.target_page_size
        else:
            self.queue.popleft()
        return block, offset

    def get_queued_page(self, dirty: Mapping[str, np.ndarray]) -> QueuedPage | None:
        """The next queued page still dirty in ``dirty[block]``, or ``None`` (see class doc)."""
        while True:
            got = self.unqueue_page()
            if got is None:
                return None
            block, offset = got
            page = offset // self.target_page_size
            if not isinstance(dirty, Mapping) or block not in dirty:
                raise PostcopyError(f"dirty must map every block to its dirty bitmap; no bitmap for {block!r}")
            bmap = _as_bitmap(dirty[block], f"dirty[{block!r}]")
            if page >= len(bmap):
                # The seed checks start + len <= used_length only, so a zero-length
                # request at used_length reads a bit past the bitmap.
                raise PostcopyError(f"queued page {page} is past the end of block {block!r}")
            if bool(bmap[page]):
                self.ram_bulk_stage = False
                return QueuedPage(block, offset, page)
            self.skipped.append((block, offset))


# ----------------------------------------------------------------------------------
# destination: placing pages (ram_load_postcopy)
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """A host page placed atomically: ``data`` is ``None`` for a zero-page placement."""

    block: str
    host_offset: int
    size: int
    data: bytes | None

    @property
    def zero(self) -> bool:
        return self.data is None


class PostcopyPlacer:
    """Destination page placement during postcopy, after the seed's ``ram_load_postcopy``.

    ``blocks`` maps block name -> ``(used_length, page_size)`` in bytes. Feed page
    records in stream order with :meth:`zero_page` / :meth:`page`; call
    :meth:`end_section` at the RAM EOS of each section.

    Rules (violations raise :class:`~ramlab.errors.PostcopyError`, the load fails):

    * unknown block, or offset outside ``used_length`` ("Illegal RAM offset");
    * a target page that is not the first of its host page must directly follow the
      previous record's page ("Non-sequential target page"). The previous page is a
      local of ``ram_load_postcopy``, i.e. per RAM section: a host page cannot span
      sections. Seed quirk: starting a new host page while the previous one is
      unfinished is *not* detected; the partial temp page is silently abandoned
      (reported in ``abandoned``);
    * the host page is assembled in a temporary page and placed when its last target
      page arrives; if every record of it was ZERO with fill 0 it is placed as a zero
      page (``Placement.data is None``), else copied;
    * placement sets the ``received`` bits of the whole host page; placing onto a host
      page with any received bit set fails (UFFDIO_COPY/ZEROPAGE -> EEXIST).

        >>> p = PostcopyPlacer({"m0": (4 * 4096, 2 * 4096)})
        >>> p.zero_page("m0", 0) is None            # first half of host page 0
        True
        >>> p.zero_page("m0", 4096)                 # second half: placed as zero
        Placement(block='m0', host_offset=0, size=8192, data=None)
        >>> p.received["m0"].tolist()
        [True, True, False, False]
    """

    def __init__(
        self,
        blocks: Mapping[str, tuple[int, int]],
        received: Mapping[str, np.ndarray] | None = None,
        target_page_size: int = TARGET_PAGE_SIZE,
    ) -> None:
        self.tps = checks.power_of_two(target_page_size, "target_page_size", PostcopyError)
        self.blocks: dict[str, tuple[int, int]] = {}
        self.received: dict[str, np.ndarray] = {}
        if not isinstance(blocks, Mapping) or (received is not None and not isinstance(received, Mapping)):
            raise PostcopyError("blocks (and received) must be mappings keyed by block name")
        for name, spec in blocks.items():
            name = _block_name(name)
            if not isinstance(spec, tuple | list) or len(spec) != 2:
                raise PostcopyError(f"blocks[{name!r}] must be (used_length, page_size), found {checks.describe(spec)}")
            used = checks.integer(spec[0], f"used_length of {name!r}", PostcopyError, min=0)
            psize = checks.power_of_two(spec[1], f"page_size of {name!r}", PostcopyError, max=1 << 40)
            if psize < self.tps or psize % self.tps or used % psize:
                raise PostcopyError(f"block {name!r}: bad used_length/page_size {used:#x}/{psize:#x}")
            self.blocks[name] = (int(used), int(psize))
            npages = used // self.tps
            if received is not None and name in received:
                rec = _as_bitmap(received[name], f"received[{name!r}]").copy()
                if rec.size != npages:
                    raise PostcopyError(f"received[{name!r}] has {rec.size} bits, block has {npages}")
            else:
                rec = np.zeros(npages, bool)
            self.received[name] = rec
        self.placements: list[Placement] = []
        self.abandoned: list[tuple[str, int]] = []
        self._last: tuple[str, int] | None = None
        self._tmp = bytearray()
        self._tmp_owner: tuple[str, int] | None = None
        self._filled = 0
        self._all_zero = False

    def end_section(self) -> None:
        """RAM_SAVE_FLAG_EOS: ``ram_load_postcopy`` returns, forgetting the last page."""
        self._last = None

    def zero_page(self, block: str, offset: int, fill: int = 0) -> Placement | None:
        """A ZERO record (page filled with ``fill``); returns the placement it completes."""
        fill = checks.integer(fill, "fill", PostcopyError)
        if not 0 <= fill <= 255:
            raise PostcopyError(f"zero page fill byte out of range: {fill}")
        return self._record(block, offset, None, fill)

    def page(self, block: str, offset: int, data: bytes) -> Placement | None:
        """A PAGE record; returns the placement it completes, if any."""
        raw = checks.buffer(data, "data", PostcopyError)
        if raw.size != self.tps:
            raise PostcopyError(f"page data must be {self.tps} bytes, got {raw.size}")
        return self._record(block, offset, raw.tobytes(), 0)

    def _record(self, block: str, offset: int, data: bytes | None, fill: int) -> Placement | None:
        offset = checks.integer(offset, "offset", PostcopyError)
        if not isinstance(block, str) or block not in self.blocks:
            raise PostcopyError(f"unknown RAM block {block!r}")
        used, psize = self.blocks[block]
        if offset < 0 or offset >= used or offset % self.tps:
            raise PostcopyError(f"Illegal RAM offset {offset:#x} in block {block!r}")
        in_host = offset % psize
        host_start = offset - in_host
        if in_host == 0:
            if self._tmp_owner is not None and self._filled:
                self.abandoned.append(self._tmp_owner)
            self._all_zero = True
            self._tmp = bytearray(psize)
            self._tmp_owner = (block, host_start)
            self._filled = 0
        else:
            if self._last != (block, offset - self.tps):
                last = "none" if self._last is None else f"{self._last[0]}@{self._last[1]:#x}"
                raise PostcopyError(f"Non-sequential target page {block}@{offset:#x}/{last}")
        self._last = (block, offset)
        if data is None:
            self._tmp[in_host : in_host + self.tps] = bytes([fill]) * self.tps
            if fill:
                self._all_zero = False
        else:
            self._tmp[in_host : in_host + self.tps] = data
            self._all_zero = False
        self._filled += 1
        if (offset + self.tps) % psize:
            return None
        first, count = host_start // self.tps, psize // self.tps
        rec = self.received[block]
        if rec[first : first + count].any():
            raise PostcopyError(f"host page {block}@{host_start:#x} already populated (EEXIST)")
        placement = Placement(block, host_start, psize, None if self._all_zero else bytes(self._tmp))
        rec[first : first + count] = True
        self.placements.append(placement)
        self._tmp_owner = None
        self._filled = 0
        return placement


# ----------------------------------------------------------------------------------
# recovery: the received bitmap
# ----------------------------------------------------------------------------------


def recv_bitmap_to_dirty(received: np.ndarray, *, seed_blob_rounding: bool = False) -> np.ndarray:
    """The source's new dirty bitmap after ``ram_dirty_bitmap_reload``: NOT received.

    Pages the destination lacks become dirty (sent again when postcopy resumes), pages
    it has become clean. With ``seed_blob_rounding=True`` the seed's blob size
    (``roundup8(floor(nbits/8))``) is modelled: when ``nbits % 64`` is 1..7 the last
    bits never cross the wire, read back as "not received" and so come out dirty
    (harmless extra resends; seed<->modern recovery instead fails on the size check).

        >>> rec = np.ones(65, bool)
        >>> int(recv_bitmap_to_dirty(rec).sum())
        0
        >>> int(recv_bitmap_to_dirty(rec, seed_blob_rounding=True).sum())
        1
    """
    rec = _as_bitmap(received, "received")
    if checks.flag(seed_blob_rounding, "seed_blob_rounding", PostcopyError):
        rec, _ = decode_recv_bitmap(encode_recv_bitmap(rec, "seed"), rec.size, "seed")
    return ~rec

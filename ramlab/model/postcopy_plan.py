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
    [(0, 4), (0, 4)]

The seed discards host page 0 twice: once from the chunking pass (it was sent, then
partly re-dirtied) and once as a run of the final map (see :func:`plan_discards`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ramlab.constants import MAX_DISCARDS_PER_COMMAND, TARGET_PAGE_SIZE
from ramlab.errors import PostcopyError
from ramlab.wire.recv_bitmap import decode_recv_bitmap, encode_recv_bitmap, recv_bitmap_size

__all__ = [
    "DiscardPlan",
    "PlanStep",
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


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy, so frozen plan objects stay frozen."""
    out = np.array(a, dtype=bool, copy=True)
    out.flags.writeable = False
    return out


def _as_bitmap(a: object, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise PostcopyError(f"{name} must be a 1-D bitmap (one entry per target page), got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise PostcopyError(f"{name} must be boolean (0/1)")
        arr = arr.astype(bool)
    return arr


def bitmap_runs(bits: np.ndarray) -> list[Range]:
    """Maximal runs of set bits as ``(start, length)`` pairs, in ascending order.

    This is the loop of ``postcopy_send_discard_bm_ram`` (find_next_bit /
    find_next_zero_bit), vectorised.

        >>> bitmap_runs(np.array([0, 1, 1, 0, 1], bool))
        [(1, 2), (4, 1)]
    """
    b = np.asarray(bits, dtype=bool)
    if b.size == 0:
        return []
    edges = np.diff(np.concatenate(([0], b.view(np.int8), [0])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


# ----------------------------------------------------------------------------------
# discard planning
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanStep:
    """One step of the discard computation, for display.

    ``name`` is one of ``"unsent_pass"``, ``"dirty_pass"`` (seed chunk passes),
    ``"canonicalise"`` (modern single pass), ``"or"`` (seed: ``unsentmap |= bmap``) and
    ``"send_runs"`` (``postcopy_send_discard_bm_ram``). ``fixups`` are the host page
    indices whose bitmaps the step rewrote (in the order the loop visited them),
    ``sent`` the ranges (target pages) this step put on the wire, ``dirty`` / ``unsent``
    the maps after the step (``unsent`` is ``None`` for the modern algorithm).
    """

    name: str
    fixups: tuple[int, ...]
    sent: tuple[Range, ...]
    dirty: np.ndarray
    unsent: np.ndarray | None


@dataclass(frozen=True)
class DiscardPlan:
    """What ``ram_postcopy_send_discard_bitmap`` does to ONE RAM block.

    * ``ranges``: every ``(start_page, n_pages)`` discard range in wire order
      (= ``chunk_ranges + final_ranges``), in target pages. Multiply by the target page
      size for the byte offsets of the POSTCOPY_RAM_DISCARD payload.
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
    """

    ranges: list[Range]
    chunk_ranges: list[Range]
    final_ranges: list[Range]
    dirty: np.ndarray
    unsent: np.ndarray
    discard_map: np.ndarray
    steps: tuple[PlanStep, ...]
    host_ratio: int
    algorithm: str

    def ranges_bytes(self, target_page_size: int = TARGET_PAGE_SIZE) -> list[Range]:
        """``ranges`` as the ``(start, length)`` byte pairs the DISCARD payload carries."""
        return [(s * target_page_size, n * target_page_size) for s, n in self.ranges]

    @property
    def duplicated_ranges(self) -> list[Range]:
        """Chunk-pass ranges that the final runs discard again (seed: all of them)."""
        out = []
        for s, n in self.chunk_ranges:
            if any(fs <= s and s + n <= fs + fn for fs, fn in self.final_ranges):
                out.append((s, n))
        return out


def _host_range_list(mask: np.ndarray, r: int) -> list[Range]:
    return [(int(h) * r, r) for h in np.flatnonzero(mask)]


def plan_discards(
    dirty: np.ndarray,
    unsent: np.ndarray | None,
    host_ratio: int,
    algorithm: Literal["seed", "modern"] = "seed",
) -> DiscardPlan:
    """Compute the discard ranges QEMU sends for one RAM block at the postcopy switch.

    ``dirty`` is the block's migration bitmap after the last sync (``bmap``), ``unsent``
    the seed's ``unsentmap`` (1 = never sent), both one bool per target page;
    ``host_ratio`` = block page size / target page size (1, 2, 4, ..., 512). The block
    length must be a whole number of host pages (QEMU's hugepage blocks always are).

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

        >>> d = np.array([0, 0, 1, 0,  0, 0, 0, 0], bool)
        >>> u = np.array([0, 0, 0, 0,  0, 1, 1, 1], bool)
        >>> plan_discards(d, u, 4).ranges      # pass 1: hp 1; pass 2: hp 0; runs: [0, 8)
        [(4, 4), (0, 4), (0, 8)]
        >>> plan_discards(d, u, 4, "modern").ranges
        [(0, 4)]
    """
    if algorithm not in ("seed", "modern"):
        raise PostcopyError(f"unknown discard algorithm {algorithm!r} (use 'seed' or 'modern')")
    r = int(host_ratio)
    if r < 1 or (r & (r - 1)):
        raise PostcopyError(f"host_ratio must be a power of two >= 1, got {host_ratio}")
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
            any_d = d.any(axis=1)
            partial = any_d & ~d.all(axis=1)
            d[partial] = True
            steps.append(
                PlanStep(
                    "canonicalise",
                    tuple(int(h) for h in np.flatnonzero(partial)),
                    (),
                    _frozen(d.ravel()),
                    None,
                )
            )
        dmap = d.ravel()
        final = bitmap_runs(dmap)
        steps.append(PlanStep("send_runs", (), tuple(final), _frozen(dmap), None))
        fd = _frozen(dmap)
        return DiscardPlan(list(final), [], list(final), fd, fd, fd, tuple(steps), r, algorithm)

    # --- seed ------------------------------------------------------------------------
    d = d0.reshape(hp, r).copy()
    u = u0.reshape(hp, r).copy()
    steps = []
    chunk: list[Range] = []
    if r > 1:
        # pass 1: partly sent host pages -> discard, whole host page unsent + dirty
        partial_sent = u.any(axis=1) & ~u.all(axis=1)
        sent1 = _host_range_list(partial_sent, r)
        u[partial_sent] = True
        d[partial_sent] = True
        chunk += sent1
        steps.append(
            PlanStep(
                "unsent_pass",
                tuple(int(h) for h in np.flatnonzero(partial_sent)),
                tuple(sent1),
                _frozen(d.ravel()),
                _frozen(u.ravel()),
            )
        )
        # pass 2: partly dirty host pages -> whole host page dirty + unsent;
        # discard only those whose first target page was sent (uniform after pass 1)
        partial_dirty = d.any(axis=1) & ~d.all(axis=1)
        send2 = partial_dirty & ~u[:, 0]
        sent2 = _host_range_list(send2, r)
        u[partial_dirty] = True
        d[partial_dirty] = True
        chunk += sent2
        steps.append(
            PlanStep(
                "dirty_pass",
                tuple(int(h) for h in np.flatnonzero(partial_dirty)),
                tuple(sent2),
                _frozen(d.ravel()),
                _frozen(u.ravel()),
            )
        )
    dflat = d.ravel()
    uflat = u.ravel()
    dmap = uflat | dflat
    steps.append(PlanStep("or", (), (), _frozen(dflat), _frozen(dmap)))
    final = bitmap_runs(dmap)
    steps.append(PlanStep("send_runs", (), tuple(final), _frozen(dflat), _frozen(dmap)))
    return DiscardPlan(
        chunk + final, chunk, final, _frozen(dflat), _frozen(uflat), _frozen(dmap), tuple(steps), r, algorithm
    )


def discard_batches(
    ranges: Sequence[Range] | DiscardPlan, max_per_command: int = MAX_DISCARDS_PER_COMMAND
) -> list[list[Range]]:
    """Split discard ranges into POSTCOPY_RAM_DISCARD commands as QEMU batches them.

    ``postcopy_discard_send_range`` queues a range and ships a command as soon as
    ``max_per_command`` (12) are queued; ``postcopy_discard_send_finish`` ships the
    remainder (1..11); no ranges, no command. Given a plain list, it is one
    init/finish series. Given a :class:`DiscardPlan`, the seed's chunk ranges and
    final ranges are two separate series (two init/finish pairs), so a command never
    mixes them; remember that with several blocks the seed sends every block's chunk
    commands first, then every block's final commands (7.2 sends block by block).

        >>> [len(b) for b in discard_batches([(i, 1) for i in range(25)])]
        [12, 12, 1]
    """
    if max_per_command < 1:
        raise PostcopyError(f"max_per_command must be >= 1, got {max_per_command}")
    if isinstance(ranges, DiscardPlan):
        return discard_batches(ranges.chunk_ranges, max_per_command) + discard_batches(
            ranges.final_ranges, max_per_command
        )
    items = [(int(s), int(n)) for s, n in ranges]
    return [items[i : i + max_per_command] for i in range(0, len(items), max_per_command)]


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
        self.blocks = dict(blocks)
        self.target_page_size = int(target_page_size)
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
        if rbname is None:
            if self.last_req_rb is None:
                raise PostcopyError("ram_save_queue_pages no previous block")
            name = self.last_req_rb
        else:
            if rbname not in self.blocks:
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
            bmap = dirty[block]
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
        self.tps = int(target_page_size)
        self.blocks: dict[str, tuple[int, int]] = {}
        self.received: dict[str, np.ndarray] = {}
        for name, (used, psize) in blocks.items():
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
        if not 0 <= fill <= 255:
            raise PostcopyError(f"zero page fill byte out of range: {fill}")
        return self._record(block, offset, None, fill)

    def page(self, block: str, offset: int, data: bytes) -> Placement | None:
        """A PAGE record; returns the placement it completes, if any."""
        if len(data) != self.tps:
            raise PostcopyError(f"page data must be {self.tps} bytes, got {len(data)}")
        return self._record(block, offset, bytes(data), 0)

    def _record(self, block: str, offset: int, data: bytes | None, fill: int) -> Placement | None:
        if block not in self.blocks:
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
    if seed_blob_rounding:
        rec, _ = decode_recv_bitmap(encode_recv_bitmap(rec, "seed"), rec.size, "seed")
    return ~rec

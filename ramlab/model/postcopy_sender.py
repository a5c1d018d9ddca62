"""Postcopy in the simulator: the switch, discards, page requests, huge pages and recovery.

:class:`PostcopySender` is a :class:`~ramlab.model.sender.RamSender` with the ``postcopy-ram``
capability. It writes the stream QEMU 7.2 writes (shape checked against the real captures
``postcopy-faults`` and ``postcopy-hugepages``) and the return path the destination writes:

* before RAM START: ``OPEN_RETURN_PATH``, ``PING 1``, ``POSTCOPY_ADVISE`` (``ram_pagesize_summary``
  = OR of every block's page size, then the target page size); ``MEM_SIZE`` carries the per-block
  ``page_size`` field for blocks whose page size is not the host's 4 KiB;
* ``after_passes`` precopy passes (as the trace counts them; XBZRLE allowed, compression is
  refused like QEMU 7.2 refuses ``compress`` + ``postcopy-ram``);
* the switch (``postcopy_start``): the source guest stops, ``ram_postcopy_send_discard_bitmap``:
  the last ``migration_bitmap_sync``, ``last_seen_block``/``last_sent_block``/``last_page``
  reset (so the first postcopy page record carries the block name), per block
  :func:`~ramlab.model.postcopy_plan.plan_discards` on the dirty map and the seed's ``unsentmap`` (pages the
  bulk stage has not reached yet), the host-page fix-ups written back into ``bmap``,
  POSTCOPY_RAM_DISCARD commands of at most 12 byte ranges (``"seed"``: every block's chunk
  commands, then every block's final runs; ``"modern"``: block by block, runs only), ``PING 2``,
  ``PACKAGED {POSTCOPY_LISTEN, the template's device FULL sections, PING 3, POSTCOPY_RUN}``,
  ``PING 4``;
* postcopy proper: RAM PART sections, one per rate-limit window of ``max-postcopy-bandwidth``
  / 10 bytes (QEMU's 0 = unlimited is modelled as ``max-bandwidth``). Each
  ``ram_find_and_save_block`` first asks :class:`~ramlab.model.postcopy_plan.RequestQueue`
  (``get_queued_page``: skips pages already sent, ends the bulk stage, moves the search to the
  requested page) and sends that whole host page (``ram_save_host_page``), else continues the
  background scan of the dirty map from there. No XBZRLE after the switch. When nothing is dirty:
  RAM END with only EOS, EOF, no vmdesc.

The destination model: a received map (pages loaded in precopy, minus the discards, plus the
host pages placed in postcopy; a window's pages arrive at its end). From POSTCOPY_RUN on, the
workload stands for the *destination's* guest: the pages it picks in each window (its dirty
log) are the pages the running guest accesses; a page not received faults, and the fault
thread requests its whole host page once (``REQ_PAGES_ID`` when the block differs from the
previous request's, else ``REQ_PAGES``), which the source queues
(``ram_save_queue_pages``) at the next window. The guest's writes on the destination are not
modelled (the source's memory is not touched after the switch): ``final_ram`` is what the
stream delivers, which is the source's memory at the switch.

Recovery (``pause_after=K``): when the postcopy windows have sent K target pages, the RAM
section of that window is lost (written by the source, never delivered: the channel broke);
stream 1 ends after the last delivered section. The source then runs QEMU's recovery on a new
channel (stream 2, no file header): ``RECV_BITMAP`` (command 10) per block, each answered on the
return path by MIG_RP_MSG_RECV_BITMAP + the received-bitmap blob
(:func:`ramlab.wire.recv_bitmap.encode_recv_bitmap`, 7.2 rounding); ``ram_dirty_bitmap_reload``
makes the dirty map the complement (:func:`~ramlab.model.postcopy_plan.recv_bitmap_to_dirty`), so the lost
pages are dirty again; the request queue is dropped; ``POSTCOPY_RESUME``, answered by
``RESUME_ACK 1``, after which the destination re-sends its pending requests
(``migrate_send_rp_req_pages_pending``) and postcopy continues to the END section and EOF.
:attr:`PostcopyOutcome.streams` / :attr:`~PostcopyOutcome.return_paths` hold the two channels;
their concatenations are single well-formed streams (stream 2 starts with commands at top
level), which is what ``ramlab.open`` decodes.

Modelling choices (not QEMU facts): the pause takes no simulated time; PONGs come back in ping
order (a real destination may answer PING 4 before PING 3, as in the captures); a page is
requested at most once while it is in flight; ``release-ram`` only counts the source pages it
would free (``released``).

    >>> from ramlab.model.guest import Guest
    >>> from ramlab.model.workloads import make_workload
    >>> from ramlab.model.sender import MigrationParams
    >>> g = Guest.from_sizes([("pc.ram", 512 * 4096)])
    >>> w = make_workload("uniform", dirty_rate=8 << 20, seed=0)
    >>> w.attach(g)
    >>> pc = PostcopyParams(after_passes=1, bandwidth=1 << 20)
    >>> out = PostcopySender(g, w, MigrationParams(bandwidth=4 << 20, downtime_limit_ms=10), pc).run()
    >>> out.switched, out.result.trace.pass_kinds[:2], out.result.counters["requested"] > 0
    (True, ['bulk', 'postcopy'], True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ramlab import checks
from ramlab.constants import (
    MIG_CMD_OPEN_RETURN_PATH,
    MIG_CMD_PING,
    MIG_CMD_POSTCOPY_ADVISE,
    MIG_CMD_POSTCOPY_LISTEN,
    MIG_CMD_POSTCOPY_RAM_DISCARD,
    MIG_CMD_POSTCOPY_RESUME,
    MIG_CMD_POSTCOPY_RUN,
    MIG_CMD_RECV_BITMAP,
    QEMU_VM_SECTION_END,
)
from ramlab.errors import SimulationError
from ramlab.model.guest import TARGET_PAGE_SIZE, Guest
from ramlab.model.postcopy_plan import (
    DiscardPlan,
    RequestQueue,
    discard_batches,
    plan_discards,
    recv_bitmap_to_dirty,
)
from ramlab.model.sender import (
    MAX_BANDWIDTH,
    MigrationParams,
    RamSender,
    SenderResult,
    check_window_budget,
)
from ramlab.model.workloads import Workload, _unique
from ramlab.trace import PageClass
from ramlab.wire import events as ev
from ramlab.wire.commands import (
    encode_advise_payload,
    encode_discard_payload,
    encode_ping_payload,
    encode_recv_bitmap_payload,
)
from ramlab.wire.encoder import encode_stream, packaged
from ramlab.wire.events import Pong, RecvBitmap, ReqPages, ResumeAck, ReturnPathEvent, Shut
from ramlab.wire.fields import event_size
from ramlab.wire.recv_bitmap import encode_recv_bitmap
from ramlab.wire.return_path import encode_return_path

TPS = TARGET_PAGE_SIZE
HOST_PAGE_SIZE = 4096  # qemu_host_page_size of the modelled x86-64 host

__all__ = ["PostcopyParams", "PostcopySender", "PostcopyOutcome", "ram_pagesize_summary", "device_sections"]


@dataclass
class PostcopyParams:
    """The postcopy side of a simulated migration.

    ``after_passes``: precopy passes (trace count) before ``migrate-start-postcopy`` takes
    effect (0: right after the setup); ``discard_algorithm``: ``"seed"`` (QEMU ~3.0, with
    the unsent map and the duplicated chunk ranges) or ``"modern"`` (QEMU >= 4.2, 7.2);
    ``bandwidth``: ``max-postcopy-bandwidth`` in bytes/s (0: as ``max-bandwidth``);
    ``release_ram``: the ``release-ram`` capability (counted only); ``pause_after``: pause
    postcopy after this many sent target pages and recover (see the module docs);
    ``device_events``: the device FULL sections put in the PACKAGED blob.
    """

    after_passes: int = 1
    discard_algorithm: Literal["seed", "modern"] = "seed"
    bandwidth: int = 0
    release_ram: bool = False
    pause_after: int | None = None
    device_events: Sequence[ev.Event] = ()

    def validate(self, p: MigrationParams) -> PostcopyParams:
        E = SimulationError
        self.after_passes = checks.integer(self.after_passes, "postcopy after_passes", E, min=0)
        self.discard_algorithm = checks.choice(self.discard_algorithm, "discard_algorithm",  # type: ignore[assignment]
                                               ("seed", "modern"), E)
        self.bandwidth = checks.integer(self.bandwidth, "max-postcopy-bandwidth (bytes/s)", E, min=0,
                                        max=MAX_BANDWIDTH)
        check_window_budget(self.bandwidth, "max-postcopy-bandwidth")
        self.release_ram = checks.flag(self.release_ram, "release_ram", E)
        if self.pause_after is not None:
            self.pause_after = checks.integer(self.pause_after, "pause_after (pages)", E, min=1)
        if p.compress:
            raise SimulationError("QEMU 7.2 refuses compress together with postcopy-ram")
        return self


@dataclass
class PostcopyOutcome:
    """What :meth:`PostcopySender.run` produced.

    ``result``: the sender result (``events`` = the events of ``stream``, offsets in that
    concatenation); ``switched``: False when precopy converged (or was forced) before the
    switch, the stream then being an ordinary precopy stream with the postcopy commands at the
    start; ``streams``/``return_paths``: the channels' bytes (two of each after a recovery);
    ``return_path_events``: the destination's messages; ``plans``: the discard plan per block;
    ``destination_received``: the destination's received map at the end (global page axis).
    """

    result: SenderResult
    switched: bool
    streams: list[bytes]
    return_paths: list[bytes]
    return_path_events: list[ReturnPathEvent]
    plans: dict[str, DiscardPlan] = field(default_factory=dict)
    destination_received: np.ndarray | None = None
    paused: bool = False

    @property
    def stream(self) -> bytes:
        """The forward channels concatenated."""
        return b"".join(self.streams)

    @property
    def return_path(self) -> bytes:
        """The return-path channels concatenated."""
        return b"".join(self.return_paths)


def ram_pagesize_summary(guest: Guest) -> int:
    """``ram_pagesize_summary``: the OR of every block's page size (the ADVISE payload's first word).

    >>> ram_pagesize_summary(Guest.from_sizes([("m0", 2 << 20, 2 << 20), ("vga", 4096)]))
    2101248
    """
    out = 0
    for b in guest.blocks:
        out |= b.page_size
    return out


def device_sections(events: Sequence[ev.Event]) -> list[ev.Event]:
    """The device FULL sections of a template stream (header, state, footer), wherever they are
    (after RAM END in a precopy capture, inside the PACKAGED blob in a postcopy one)."""
    out: list[ev.Event] = []
    open_id: int | None = None
    for e in events:
        if isinstance(e, ev.SectionHeader) and e.section_type == 4:
            open_id = e.section_id
            out.append(e)
        elif open_id is not None and isinstance(e, ev.DeviceState | ev.OpaqueSection):
            out.append(e)
        elif open_id is not None and isinstance(e, ev.SectionFooter) and e.section_id == open_id:
            out.append(e)
            open_id = None
    return out


class PostcopySender(RamSender):
    """A migration with ``postcopy-ram`` (see the module docstring).

    ``prologue`` should hold only the file header and configuration; ``epilogue`` (device
    sections, EOF, vmdesc) is used as is when precopy completes before the switch.
    """

    def __init__(self, guest: Guest, workload: Workload | None, params: MigrationParams,
                 postcopy: PostcopyParams, **kw: Any) -> None:
        super().__init__(guest, workload, params, **kw)
        self.pc = postcopy.validate(self.p)
        self.queue = RequestQueue({b.name: b.used_length for b in guest.blocks})
        self.rp_events: list[ReturnPathEvent] = []
        self.dst_received = np.zeros(self.n, bool)
        self.dst_pending = np.zeros(self.n, bool)  # host pages (first target page) requested, in flight
        self._dst_last_rb: str | None = None
        self._switch_pending = False
        self._t_switch = 0.0
        self._pos_switch = 0
        self._pc_bw = self.p.bandwidth
        self._window_pages: list[np.ndarray] = []
        self._postcopy_sent = 0
        self.plans: dict[str, DiscardPlan] = {}
        self._views = {b.name: self.bmap[b.start : b.end] for b in guest.blocks}
        self._block_index = {b.name: i for i, b in enumerate(guest.blocks)}
        for k in ("released", "faults"):
            self.c.setdefault(k, 0)

    # ------------------------------------------------------------------ time
    @property
    def now(self) -> float:
        if not self.in_postcopy:
            return super().now
        return self._t_switch + (self.pos - self._pos_switch) / self._pc_bw

    def _now_ms(self) -> int:
        return int(self.now * 1000)

    # ------------------------------------------------------------------ hooks of RamSender
    def _mem_size_record(self) -> ev.RamMemSize:
        """7.2 ``ram_save_setup``: with postcopy-ram, blocks whose page size differs from the
        host's carry it (be64 after ``used_length``)."""
        ms = self.guest.mem_size()
        blocks = tuple(dataclasses.replace(e, page_size=b.page_size if b.page_size != HOST_PAGE_SIZE else None)
                       for e, b in zip(ms.blocks, self.guest.blocks))
        return dataclasses.replace(ms, blocks=blocks)

    def _pass_limit(self) -> int:
        if self.in_postcopy:
            return 1 << 62
        return min(super()._pass_limit(), self.pc.after_passes)

    def _stop_status(self) -> str:
        if not self.in_postcopy and len(self._passes) >= self.pc.after_passes and \
                self.pc.after_passes <= self.p.max_passes - 1:
            self._stopping = False
            self._switch_pending = True
            return "switch"
        return super()._stop_status()

    def _serve_queue(self, last_stage: bool) -> bool:
        if not self.in_postcopy or not len(self.queue):
            return False
        q = self.queue.get_queued_page(self._views)
        if q is None:
            return False
        self.ram_bulk_stage = False
        g = self.guest.block(q.block).start + q.page
        hend = int(self._host_end(np.array([g]))[0])
        cand = np.flatnonzero(self.bmap[g : hend + 1]) + g
        self._serving_request = True
        try:
            self._save_chunk(cand, last_stage)
        finally:
            self._serving_request = False
        self._window_pages.append(cand)
        self.pss = self.last_seen = hend
        return True

    def _save_chunk(self, cand: np.ndarray, last_stage: bool) -> None:
        before = self.c["pages_handled"]
        super()._save_chunk(cand, last_stage)
        if self.in_postcopy and not self._serving_request:
            k = int(self.c["pages_handled"] - before)
            if k:
                self._window_pages.append(cand[:k])

    # ------------------------------------------------------------------ output helpers
    def _cmd(self, cmd: int, payload: bytes = b"") -> None:
        self._write(ev.Command(cmd, payload), 5 + len(payload))

    def _ping(self, value: int) -> None:
        self._cmd(MIG_CMD_PING, encode_ping_payload(value))
        self.rp_events.append(Pong(value))

    # ------------------------------------------------------------------ the migration
    def run(self) -> PostcopyOutcome:  # type: ignore[override]
        """Setup with the postcopy commands, precopy passes, the switch, postcopy, completion."""
        for e in self.prologue:
            self._write(e, event_size(e))
        self._cmd(MIG_CMD_OPEN_RETURN_PATH)
        self._ping(1)
        self._cmd(MIG_CMD_POSTCOPY_ADVISE, encode_advise_payload(ram_pagesize_summary(self.guest), TPS))
        self._setup()
        converged = True
        switched = False
        while True:
            self._guest_run()
            pending = self.ram_save_pending()
            if pending == 0 or pending < self.threshold:
                break
            if self._switch_pending or self.pc.after_passes == 0 or (
                    self.switchover is not None and self.switchover(self)):
                switched = True
                self.reason = "postcopy"
                break
            self._check_budgets()
            if self.forced:
                converged = False
                break
            self._iterate()
            self._end_window()
        if not switched:
            self.log.append({"pass": len(self._passes), "kind": "switchover", "time_ms": self._now_ms(),
                             "converged": converged, "pending": self.migration_dirty_pages * TPS})
            self._complete()
            for e in self.epilogue:
                self._write(e, event_size(e))
            self.rp_events.append(Shut(0))
            res = SenderResult(self.events, self._trace(), self._final_counters(), converged, self.now,
                               self.guest.ram(copy=False), self.log, self.reason)
            data = encode_stream(res.events) if self.emit else b""
            return PostcopyOutcome(res, False, [data], [encode_return_path(self.rp_events)], list(self.rp_events),
                                   destination_received=~self.unsent)
        return self._postcopy()

    def _end_window(self) -> None:
        if self.window_used > self.budget:  # migration_rate_limit: the 100 ms window is over (or no limit)
            self.window_used = 0
            self.windows += 1
            self.threshold = self.p.bandwidth * self.p.downtime_limit_ms / 1000.0

    # ------------------------------------------------------------------ the switch
    def _switch(self) -> None:
        """``postcopy_start``: stop the source, discards, PING 2, the package, PING 4."""
        self._guest_run()  # the source guest runs until it is stopped
        self.log.append({"pass": len(self._passes), "kind": "switchover", "time_ms": self._now_ms(),
                         "converged": False, "pending": self.migration_dirty_pages * TPS, "postcopy": True})
        self.migration_bitmap_sync()  # "This should be our last sync, the src is now paused"
        self.last_seen = self.pss = 0
        self.last_sent_block = -1
        self.complete_round = False
        # destination: every page processed in precopy was loaded
        self.dst_received[:] = ~self.unsent
        algo = self.pc.discard_algorithm
        for b in self.guest.blocks:
            sl = slice(b.start, b.end)
            plan = plan_discards(self.bmap[sl], self.unsent[sl], b.page_size // TPS, algo)
            self.plans[b.name] = plan
            self.bmap[sl] = plan.dirty
            if algo == "seed":
                self.unsent[sl] = plan.discard_map  # unsentmap |= bmap
        self.migration_dirty_pages = int(np.count_nonzero(self.bmap))
        # the discard pass
        self._new_pass = True
        self._pass_kind_next = "postcopy"
        self.in_postcopy = True
        self._t_switch, self._pos_switch = self.pos / self.p.bandwidth, self.pos  # time runs on at max-bandwidth
        d = self._open_pass_if_needed()
        if algo == "seed":  # every block's chunk commands, then every block's final runs
            series = [(b, self.plans[b.name].chunk_ranges) for b in self.guest.blocks]
            series += [(b, self.plans[b.name].final_ranges) for b in self.guest.blocks]
        else:
            series = [(b, self.plans[b.name].final_ranges) for b in self.guest.blocks]
        for b, ranges in series:
            for batch in discard_batches(ranges):
                rb = [(s * TPS, n * TPS) for s, n in batch]
                self._cmd(MIG_CMD_POSTCOPY_RAM_DISCARD, encode_discard_payload(b.name, rb))
                for s, n in batch:
                    d["classes"][b.start + s : b.start + s + n] = PageClass.DISCARDED
                    self.dst_received[b.start + s : b.start + s + n] = False
                    self.c["discarded"] += n
                self.log.append({"pass": len(self._passes) - 1, "kind": "discard", "block": b.name,
                                 "ranges": [[int(s), int(n)] for s, n in rb], "time_ms": self._now_ms()})
        self._new_pass = True
        self._ping(2)
        inner = [ev.Command(MIG_CMD_POSTCOPY_LISTEN, b""), *self.pc.device_events,
                 ev.Command(MIG_CMD_PING, encode_ping_payload(3)), ev.Command(MIG_CMD_POSTCOPY_RUN, b"")]
        for e in packaged(inner):
            self._write(e, event_size(e))
        self.rp_events.append(Pong(3))
        self._ping(4)
        if self.pc.release_ram:  # ram_postcopy_migrated_memory_release: every clean page
            self.c["released"] += int(np.count_nonzero(~self.bmap))
        self._t_switch, self._pos_switch = self.now, self.pos  # from here on at max-postcopy-bandwidth
        self._pc_bw = self.pc.bandwidth or self.p.bandwidth
        self.budget = self._pc_bw // 10
        self.window_used = 0
        self.t_guest = self._t_switch  # the destination guest starts at POSTCOPY_RUN

    # ------------------------------------------------------------------ the destination
    def _dest_run(self) -> None:
        """The destination guest runs for the time since its last run; faults become requests."""
        t = self.now
        dt = t - self.t_guest
        self.t_guest = max(self.t_guest, t)
        w = self.workload
        if w is None or dt <= 0 or w.n == 0:
            return
        k = w.pages_for(dt, 0.0)
        if k <= 0:
            return
        touched = _unique(w.pick(k), w.n) + w.start
        miss = touched[~self.dst_received[touched]]
        if not miss.size:
            return
        self.c["faults"] += int(miss.size)
        hs = np.unique(self._host_start(miss))
        hs = hs[~self.dst_pending[hs]]
        for g in hs.tolist():
            self._request(int(g))

    def _host_start(self, g: np.ndarray) -> np.ndarray:
        b = self.block_of[g]
        start = self.block_start[b]
        r = self.ratio[b]
        return start + (g - start) // r * r

    def _request(self, g: int, force_named: bool = False) -> None:
        """``postcopy_request_page`` -> ``migrate_send_rp_req_pages``: one whole host page."""
        bi = int(self.block_of[g])
        b = self.guest.blocks[bi]
        start = (g - b.start) * TPS
        named = force_named or b.name != self._dst_last_rb
        self._dst_last_rb = b.name
        self.rp_events.append(ReqPages(b.name, start, b.page_size, named))
        self.dst_pending[g] = True
        self.queue.ram_save_queue_pages(b.name if named else None, start, b.page_size)
        self.c["postcopy_requests"] = self.queue.postcopy_requests
        self.log.append({"pass": len(self._passes) - 1, "kind": "request", "block": b.name, "start": start,
                         "length": b.page_size, "named": named, "time_ms": self._now_ms()})

    def _deliver(self, pages: np.ndarray) -> None:
        """Pages of a delivered window: placed (whole host pages) on the destination."""
        if pages.size:
            self.dst_received[pages] = True
            self.dst_pending[self._host_start(pages)] = False

    # ------------------------------------------------------------------ postcopy proper
    def _postcopy(self) -> PostcopyOutcome:
        self._switch()
        streams: list[bytes] = []
        rps: list[bytes] = []
        ev_offset = 0
        all_events: list[ev.Event] = []
        paused = False
        pause_at = self.pc.pause_after
        while self.migration_dirty_pages > 0:
            if self.budget and self.now > self.p.max_time_s:
                # time budget spent: the rate limit is lifted, the rest goes in one window
                self.budget = 0
                self.reason = "max_time_s"
                self.log.append({"pass": len(self._passes) - 1, "kind": "budget", "budget": "max_time_s",
                                 "time_ms": self._now_ms(), "remaining": self.migration_dirty_pages})
            self._dest_run()
            mark = (len(self.events), self.pos)
            self._window_pages = []
            self._iterate()
            self._end_window()
            sent = np.concatenate(self._window_pages) if self._window_pages else np.zeros(0, np.int64)
            self._postcopy_sent += int(sent.size)
            if self.pc.release_ram:
                self.c["released"] += int(sent.size)
            if pause_at is not None and not paused and self._postcopy_sent >= pause_at:
                paused = True
                # the window's section never arrives: stream 1 ends before it
                lost = self.events[mark[0]:]
                del self.events[mark[0]:]
                s1 = encode_stream(self.events) if self.emit else b""
                if self.emit and len(s1) != mark[1] - ev_offset:
                    raise SimulationError("internal: stream 1 length mismatch")
                streams.append(s1)
                all_events.extend(self.events)
                rps.append(encode_return_path(self.rp_events))
                self._all_rp = list(self.rp_events)
                self.rp_events = []
                self.log.append({"pass": len(self._passes) - 1, "kind": "pause", "time_ms": self._now_ms(),
                                 "lost_pages": int(sent.size), "lost_bytes": self.pos - mark[1]})
                del lost
                self.events = []
                ev_offset = self.pos
                self._recover()
                continue
            self._deliver(sent)
        # completion: qemu_savevm_state_complete_postcopy
        self._section(QEMU_VM_SECTION_END)
        self._end_section(count_eos=False)
        self._write(ev.EndOfFile(), 1)
        self.rp_events.append(Shut(0))
        self._close_pass()
        if ev_offset:  # stream 2: offsets from its own start
            self.events = [dataclasses.replace(e, offset=e.offset - ev_offset) for e in self.events]  # type: ignore
        s_last = encode_stream(self.events) if self.emit else b""
        streams.append(s_last)
        rps.append(encode_return_path(self.rp_events))
        rp_all = (getattr(self, "_all_rp", []) if paused else []) + self.rp_events
        if paused:
            base = len(streams[0])
            all_events.extend(dataclasses.replace(e, offset=e.offset + base) for e in self.events)  # type: ignore
        else:
            all_events = self.events
        res = SenderResult(all_events, self._trace(), self._final_counters(), False, self.now,
                           self.guest.ram(copy=False), self.log, self.reason)
        res.trace.meta["postcopy"] = True
        return PostcopyOutcome(res, True, streams, rps, rp_all, dict(self.plans), self.dst_received.copy(), paused)

    def _recover(self) -> None:
        """Postcopy recovery on a new channel: RECV_BITMAP per block, reload, RESUME / RESUME_ACK."""
        self.queue.queue.clear()  # the source's queue does not survive the broken channel
        for b in self.guest.blocks:
            self._cmd(MIG_CMD_RECV_BITMAP, encode_recv_bitmap_payload(b.name))
            rec = self.dst_received[b.start : b.end]
            blob = encode_recv_bitmap(rec, "modern")  # be64 size, bitmap, end mark
            self.rp_events.append(RecvBitmap(b.name, blob[8:-8]))
            self.bmap[b.start : b.end] = recv_bitmap_to_dirty(rec)  # ram_dirty_bitmap_reload
        self.migration_dirty_pages = int(np.count_nonzero(self.bmap))
        # ram_state_resume_prepare
        self.last_seen = self.pss = 0
        self.last_sent_block = -1
        self.complete_round = False
        self._cmd(MIG_CMD_POSTCOPY_RESUME)
        self.rp_events.append(ResumeAck(1))
        self.log.append({"pass": len(self._passes) - 1, "kind": "resume", "time_ms": self._now_ms(),
                         "dirty": self.migration_dirty_pages})
        self._new_pass = True
        self._pass_kind_next = "postcopy"
        # migrate_send_rp_req_pages_pending: the destination asks again for what it waits for
        self._dst_last_rb = None
        pend = np.flatnonzero(self.dst_pending)
        self.dst_pending[:] = False
        for g in pend.tolist():
            self._request(int(g))

"""Decoding a migration while it happens: each connection's bytes in, a trace that grows pass by pass.

:class:`LiveDecoder` is what :func:`ramlab.open` does, turned around: instead of reading whole
files it takes the chunks of every connection in the order they crossed the wire — the main
channel, the multifd channels, the postcopy return path — and hands each event to the same
:class:`~ramlab.model.loader.RamLoader` at once. It does no IO and starts no thread (the callers in
:mod:`ramlab.live.run` do); it keeps no event list and no stream bytes, only what the loader keeps
(the RAM images and the per-pass arrays). Fed a capture in any chunking, it ends with the trace and
RAM that :func:`ramlab.open` gives for the same files (``tests/test_live_decoder.py``)::

    >>> import ramlab
    >>> from ramlab.data import capture_files
    >>> from ramlab.io import read_stream
    >>> [main], _ = capture_files(ramlab.data_path("plain"))
    >>> data = bytes(read_stream(main))
    >>> live = LiveDecoder()
    >>> done = []
    >>> for i in range(0, len(data), 1 << 16):       # 64 KiB at a time, as a socket gives them
    ...     done += live.receive(("fwd", 0), data[i : i + (1 << 16)], t=i / 1e6)
    >>> [p.index for p in done]                       # passes seen complete while the stream came in
    [0, 1, 2, 3]
    >>> done += live.finish(t=1.0)
    >>> live.to_trace().n_passes, sum(p.pages["normal"] for p in done) == live.records["page"]
    (5, True)

Connections are named ``(direction, n)`` as the recorder names its files: ``("fwd", 0)`` is the
main channel (``stream.bin``, ``channel-0.bin`` or ``fwd-0.bin``), ``("fwd", n)`` multifd channel
``n`` (``channel-n.bin``), ``("ret", 0)`` the postcopy return path (``ret-0.bin``).

A pass is *complete* once the next one has begun (or the input ended): its pages never change after
that, so :meth:`LiveDecoder.receive` returns a :class:`PassSummary` for it then. Multifd pages
arrive epoch by epoch (:class:`~ramlab.model.multifd_loader.MultifdLoader`), so a multifd pass is
seen once every channel has synced past it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramlab.constants import TARGET_PAGE_SIZE
from ramlab.errors import RamlabError, StreamError
from ramlab.model.loader import RamLoader
from ramlab.model.multifd_loader import MultifdLoader
from ramlab.trace import N_CLASSES, BlockInfo, PageClass, Trace
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.multifd import MultifdChannelDecoder
from ramlab.wire.return_path import ReturnPathDecoder

__all__ = ["LiveDecoder", "LiveSnapshot", "PassSummary", "pass_pages", "multifd_flush_epochs", "MODES"]

#: a connection: ("fwd" | "ret", connection number in accept order)
Key = tuple[str, int]
MODES = ("precopy", "multifd", "postcopy")
#: bytes of a multifd channel kept while the main channel has not declared its RAM blocks yet
MAX_EARLY_CHANNEL_BYTES = 64 << 20


def pass_pages(classes: np.ndarray, wire_bytes: np.ndarray, page_size: int) -> dict[str, int]:
    """Page records of one pass by kind, as ``ramlab inspect --json`` counts ``records``.

    ``normal`` is QEMU's normal pages (``RAM_SAVE_FLAG_PAGE`` and multifd pages, postcopy pages
    included); a REQUESTED page is a zero or a normal record by its size on the wire.

    >>> cls = np.array([1, 2, 8, 8, 3, 0], np.uint8); size = np.array([9, 4104, 9, 4104, 60, 0], np.uint32)
    >>> pass_pages(cls, size, 4096)
    {'zero': 2, 'normal': 2, 'xbzrle': 1, 'compressed': 0}
    """
    c = np.asarray(classes)
    req = c == PageClass.REQUESTED
    small = np.asarray(wire_bytes) < page_size
    return {
        "zero": int(np.count_nonzero(c == PageClass.ZERO) + np.count_nonzero(req & small)),
        "normal": int(np.count_nonzero((c == PageClass.NORMAL) | (c == PageClass.POSTCOPY))
                      + np.count_nonzero(req & ~small)),
        "xbzrle": int(np.count_nonzero(c == PageClass.XBZRLE)),
        "compressed": int(np.count_nonzero(c == PageClass.COMPRESSED)),
    }


def multifd_flush_epochs(machine_type: str | None) -> bool | None:
    """Whether multifd epochs end at MULTIFD_FLUSH records, from the stream's machine type.

    QEMU 8.1 stopped syncing the channels at every RAM section; machine types of 8.0 and older
    keep the old behaviour (``hw_compat_8_0`` sets ``multifd-flush-after-each-section``).
    ``None`` when the machine type has no version (decided later, from the stream).

    >>> multifd_flush_epochs("pc-i440fx-7.2"), multifd_flush_epochs("pc-q35-10.0"), multifd_flush_epochs("microvm")
    (False, True, None)
    """
    m = re.search(r"-(\d+)\.(\d+)$", machine_type or "")
    if m is None:
        return None
    return (int(m.group(1)), int(m.group(2))) >= (8, 1)


@dataclass(frozen=True)
class PassSummary:
    """One complete pass: what ``ramlab watch`` prints per line.

    ``t``: seconds since the migration started when the pass was seen complete (the time of the
    chunk that began the next pass); ``pages``: records by kind (:func:`pass_pages`); ``bytes``:
    bytes of its page records; ``counts``: pages per :class:`~ramlab.trace.PageClass`.
    """

    index: int
    kind: str
    t: float
    pages: dict[str, int]
    bytes: int
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"pass": self.index, "kind": self.kind, "t": round(self.t, 4), "pages": dict(self.pages),
                "bytes": self.bytes}


@dataclass
class LiveSnapshot:
    """What a live view needs at one moment, small whatever the guest size (reduced arrays only).

    ``counts`` ``[n_passes, N_CLASSES]`` and ``bytes`` ``[n_passes]`` cover every pass so far (the
    last one still growing unless ``finished``); ``current`` is the page-class map of the last pass
    (``uint8 [n_pages]``, a copy). ``samples`` are QEMU's ``query-migrate`` samples (filled by
    :class:`~ramlab.live.run.LiveRun`, with the migration ``parameters`` as last set).
    """

    t: float
    blocks: tuple[BlockInfo, ...]
    target_page_size: int
    pass_kinds: list[str]
    counts: np.ndarray
    bytes: np.ndarray
    current: np.ndarray | None
    records: dict[str, int]
    phase: str
    error: str | None
    finished: bool
    decoded_bytes: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    status: str = ""
    version: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n_passes(self) -> int:
        return len(self.pass_kinds)

    @property
    def n_pages(self) -> int:
        return sum(b.n_pages(self.target_page_size) for b in self.blocks)


class LiveDecoder:
    """Decode a migration's connections chunk by chunk into a :class:`~ramlab.model.loader.RamLoader`.

    ``mode``: ``"precopy"`` (one stream), ``"multifd"`` (the main channel and ``multifd_channels``
    channels) or ``"postcopy"`` (forward stream and return path). ``capabilities`` (QEMU's names,
    as configured) set what :func:`ramlab.open` infers from a whole stream: ``compress`` reorders
    records (a 4096-page tolerance when splitting passes). ``by_flush``: multifd epoch marks
    (``None``: from the stream's machine type, :func:`multifd_flush_epochs`).

    Not thread-safe: one thread feeds it (see :class:`~ramlab.live.run.LiveRun`).
    """

    def __init__(
        self,
        mode: str = "precopy",
        *,
        capabilities: Iterable[str] = (),
        multifd_channels: int | None = None,
        page_size: int | None = None,
        by_flush: bool | None = None,
        memmap_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise RamlabError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.capabilities = tuple(capabilities)
        self.multifd_channels = multifd_channels
        self.by_flush = by_flush
        self.memmap_dir = memmap_dir
        self.decoder = StreamDecoder(page_size=page_size)
        self.return_path = ReturnPathDecoder() if mode == "postcopy" else None
        self.return_path_events: list[ev.ReturnPathEvent] = []
        self.loader: RamLoader | None = None
        self.error: StreamError | None = None
        self.t = 0.0
        self.decoded_bytes = 0
        self.finished = False
        self.completed: list[PassSummary] = []
        self._load_failed = False
        self._ended: set[Key] = set()
        self._channels: dict[int, MultifdChannelDecoder] = {}
        self._early: dict[int, list[bytes]] = {}  # channel bytes before the RAM block list
        self._early_bytes = 0
        self._early_requests: list[ev.ReqPages] = []

    def warm_up(self) -> None:
        """Load now what the first records would load mid-migration (numba's XBZRLE kernel: ~1 s)."""
        if "xbzrle" in self.capabilities:
            from ramlab.xbzrle import decode_batch

            decode_batch([bytes.fromhex("0101ff")], np.zeros((1, TARGET_PAGE_SIZE), np.uint8))

    # ------------------------------------------------------------------ feeding
    def receive(self, key: Key, data: bytes, t: float) -> list[PassSummary]:
        """One chunk of connection ``key`` at ``t`` s; returns the passes it completed."""
        if self.finished:
            raise RamlabError("the live decoder has finished; it takes no more data")
        if not data:
            return self.end(key, t)
        self.t = max(self.t, float(t))
        self.decoded_bytes += len(data)
        direction, conn = key
        if direction == "ret":
            self._return_path(data)
        elif conn == 0:
            self._main(data)
        elif self.mode == "multifd":
            self._channel(conn, data)
        else:
            raise RamlabError(f"a {self.mode} migration has no connection {key}")
        return self._completed_passes()

    def end(self, key: Key, t: float) -> list[PassSummary]:
        """Connection ``key`` ended (its sender closed it)."""
        self.t = max(self.t, float(t))
        if key in self._ended or self.finished:
            return []
        self._ended.add(key)
        direction, conn = key
        if direction == "ret":
            self._return_path(b"")
        elif conn == 0:
            self._main(b"")
        elif self.mode == "multifd":
            self._channel(conn, b"")
        return self._completed_passes()

    def finish(self, t: float | None = None) -> list[PassSummary]:
        """Every input ended: apply what is queued; returns the passes not reported yet (all the rest)."""
        if self.finished:
            return []
        if t is not None:
            self.t = max(self.t, float(t))
        keys = [("fwd", 0), *(("fwd", c) for c in self._channels), *(("fwd", c) for c in self._early)]
        if self.return_path is not None:
            keys.append(("ret", 0))
        for key in dict.fromkeys(keys):
            self.end(key, self.t)
        loader = self.loader
        if loader is not None:
            try:
                loader.finish()
            except StreamError as err:
                self._fail(err)
            if loader.request_error is not None:
                self._fail(loader.request_error)
        self.finished = True
        return self._completed_passes(final=True)

    # ------------------------------------------------------------------ results
    @property
    def records(self) -> Counter[str]:
        """Page records applied so far, by kind (as :attr:`ramlab.Migration.records`)."""
        return self.loader.records if self.loader is not None else Counter()

    @property
    def phase(self) -> str:
        return self.loader.phase.value if self.loader is not None else "setup"

    @property
    def page_size(self) -> int:
        return self.decoder.page_size

    @property
    def requests(self) -> list[ev.ReqPages]:
        return [e for e in self.return_path_events if isinstance(e, ev.ReqPages)]

    def to_trace(self, meta: dict[str, Any] | None = None) -> Trace:
        """The :class:`~ramlab.trace.Trace` so far (a copy: it does not grow)."""
        if self.loader is None:
            return Trace.allocate((), 0, source="capture", meta=meta)
        return self.loader.to_trace(meta=meta, error=str(self.error) if self.error else None)

    def ram(self, block: str = "pc.ram") -> np.ndarray:
        """The destination's RAM block so far (the live image: it changes as pages arrive)."""
        if self.loader is None or self.loader.destination is None:
            raise RamlabError("no RAM block list was decoded yet")
        return self.loader.destination.ram(block)

    def snapshot(self) -> LiveSnapshot:
        """The reduced state for a view (see :class:`LiveSnapshot`)."""
        loader = self.loader
        tracker = loader.tracker if loader is not None else None
        n = len(tracker.classes) if tracker is not None else 0
        counts = np.zeros((n, N_CLASSES), np.int64)
        nbytes = np.zeros(n, np.int64)
        for s in self.completed:
            counts[s.index] = s.counts
            nbytes[s.index] = s.bytes
        current = None
        if tracker is not None:
            for p in range(len(self.completed), n):
                counts[p] = np.bincount(tracker.classes[p], minlength=N_CLASSES)[:N_CLASSES]
                nbytes[p] = int(tracker.wire_bytes[p].sum(dtype=np.int64))
            if n:
                current = tracker.classes[n - 1].copy()
        return LiveSnapshot(
            t=self.t,
            blocks=tracker.blocks if tracker is not None else (),
            target_page_size=self.page_size,
            pass_kinds=list(tracker.kinds) if tracker is not None else [],
            counts=counts,
            bytes=nbytes,
            current=current,
            records=dict(self.records),
            phase=self.phase,
            error=str(self.error) if self.error else None,
            finished=self.finished,
            decoded_bytes=self.decoded_bytes,
        )

    # ------------------------------------------------------------------ internals
    def _fail(self, err: StreamError) -> None:
        if self.error is None:
            self.error = err

    def _ensure_loader(self) -> RamLoader:
        if self.loader is None:
            caps = self.capabilities
            self.loader = RamLoader(self.decoder.page_size, memmap_dir=self.memmap_dir,
                                    reorder_window=4096 if "compress" in caps else 0)
            if self.mode == "multifd":
                self.loader.multifd = MultifdLoader(self.loader, by_flush=self.by_flush,
                                                    expected_channels=self.multifd_channels)
            if self._early_requests:
                self.loader.add_requests(self._early_requests)
                self._early_requests = []
        return self.loader

    def _main(self, data: bytes) -> None:
        dec = self.decoder
        if dec.error is not None:
            return
        dec.receive_data(data)
        try:
            for e in dec.events():
                self._load(e)
        except StreamError as err:
            self._fail(err)
        loader = self.loader
        if loader is not None and loader.multifd is not None:
            if not data:
                loader.multifd.end_main()
            self._open_early_channels()
            loader.multifd.apply_ready()

    def _load(self, e: ev.Event) -> None:
        if self._load_failed:
            return
        loader = self._ensure_loader()
        if isinstance(e, ev.Configuration) and loader.multifd is not None and loader.multifd.by_flush is None:
            loader.multifd.by_flush = multifd_flush_epochs(e.machine_type)
        try:
            loader.load(e)
        except StreamError as err:
            self._fail(err)
            self._load_failed = True

    def _channel(self, conn: int, data: bytes) -> None:
        loader = self.loader
        if loader is None or loader.destination is None or self._load_failed:
            if data:  # too early: the channel's page size and blocks are not known yet
                self._early_bytes += len(data)
                if self._early_bytes > MAX_EARLY_CHANNEL_BYTES:
                    self._fail(StreamError(
                        "multifd channel data before the main channel's RAM block list", section="multifd",
                        expected=f"at most {MAX_EARLY_CHANNEL_BYTES} bytes", found=f"{self._early_bytes} bytes"))
                    self._early.clear()
                    return
            self._early.setdefault(conn, []).append(data)
            return
        self._channel_data(conn, data)

    def _open_early_channels(self) -> None:
        loader = self.loader
        if not self._early or loader is None or loader.destination is None or self._load_failed:
            return
        early, self._early = self._early, {}
        for conn in sorted(early):
            for chunk in early[conn]:
                self._channel_data(conn, chunk)

    def _channel_data(self, conn: int, data: bytes) -> None:
        loader = self.loader
        assert loader is not None and loader.multifd is not None
        mf = loader.multifd
        while len(mf.channels) < conn:  # channels in connection order, as ramlab.open files them
            idx = mf.open_channel()
            self._channels[idx + 1] = MultifdChannelDecoder(page_size=self.page_size)
        dec = self._channels[conn]
        if dec.error is None:
            dec.receive_data(data)
            try:
                for e in dec.events():
                    mf.channel_event(conn - 1, e)
            except StreamError as err:
                self._fail(StreamError(f"multifd channel {conn}: {err.message}", offset=err.offset,
                                       section=f"multifd channel {conn}", expected=err.expected, found=err.found))
        if not data:
            mf.end_channel(conn - 1)
        mf.apply_ready()

    def _return_path(self, data: bytes) -> None:
        rp = self.return_path
        if rp is None:
            raise RamlabError(f"a {self.mode} migration has no return path")
        if rp.error is not None:
            return
        rp.receive_data(data)
        new: list[ev.ReturnPathEvent] = []
        try:
            for e in rp.events():
                new.append(e)  # type: ignore[arg-type]
        except StreamError as err:
            self._fail(err)
        self.return_path_events.extend(new)
        reqs = [e for e in new if isinstance(e, ev.ReqPages)]
        if reqs:
            if self.loader is None:
                self._early_requests.extend(reqs)
            else:
                self.loader.add_requests(reqs)

    def _completed_passes(self, final: bool = False) -> list[PassSummary]:
        loader = self.loader
        if loader is None:
            return []
        tracker = loader.tracker
        n = len(tracker.classes)
        last = n if final else n - 1
        out = []
        for p in range(len(self.completed), last):
            cls, wire = tracker.classes[p], tracker.wire_bytes[p]
            counts = np.bincount(cls, minlength=N_CLASSES)[:N_CLASSES]
            s = PassSummary(p, tracker.kinds[p], self.t, pass_pages(cls, wire, self.page_size),
                            int(wire.sum(dtype=np.int64)), tuple(int(c) for c in counts))
            self.completed.append(s)
            out.append(s)
        return out


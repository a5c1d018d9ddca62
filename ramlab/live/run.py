"""A migration followed while it runs: :class:`LiveRun`, fed by a capture (QEMU) or a :func:`replay`.

Data go one way, through one queue::

    source (threads of its own)                 decode thread                    views, CLI
    ─────────────────────────────               ──────────────────────────       ─────────────────
    a real migration (ramlab.capture.live):     LiveDecoder: the wire decoders   LiveRun.snapshot()
      recorder pumps: chunk in file  ──note──►  and a RamLoader, as              on_pass(callback)
      QMP loop: query-migrate sample ──note──►  ramlab.open, chunk by chunk      wait_for(...)
    or a replay: the notes of a capture folder
      at their recorded times

A source tells the run what happens with :meth:`LiveRun.begin`, :meth:`LiveRun.chunk_in_file` (or
:meth:`LiveRun.chunk`), :meth:`LiveRun.note_sample`, :meth:`LiveRun.note_status` and
:meth:`LiveRun.end_of_input`, then :meth:`LiveRun.source_finished`; they only queue a note, so the
source never waits for decoding. The decode thread reads a real migration's bytes back from the
recorder's files (the page cache), so falling behind costs the notes only, never the bytes. Views
poll :meth:`LiveRun.snapshot` (reduced arrays: a few kilobytes for a small guest) and steer through
the run's ``control`` (a :class:`~ramlab.capture.control.MigrationControl` for a real migration,
none for a replay).

    >>> import ramlab
    >>> run = replay(ramlab.data_path("postcopy"), speed=50)
    >>> run.wait(timeout=60).status, [p.index for p in run.passes]
    ('completed', [0, 1, 2, 3])
    >>> run.trace.n_passes == ramlab.open(ramlab.data_path("postcopy")).trace.n_passes
    True
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ramlab.errors import CaptureError, RamlabError
from ramlab.live.decoder import Key, LiveDecoder, LiveSnapshot, PassSummary
from ramlab.live.recording import capture_layout, recorded_chunks, recorded_samples
from ramlab.trace import Trace

__all__ = ["LiveRun", "replay", "QEMU_SUBSET", "READ_LIMIT"]

#: the query-migrate fields a pass line carries (``ramlab watch --json``)
QEMU_SUBSET = ("status", "ram.dirty-sync-count", "ram.remaining", "ram.dirty-pages-rate", "ram.mbps",
               "expected-downtime", "ram.transferred", "ram.normal", "ram.duplicate", "xbzrle-cache.pages",
               "xbzrle-cache.overflow", "compression.pages", "ram.postcopy-requests", "cpu-throttle-percentage")
#: most bytes the decode thread reads from a stream file at once
READ_LIMIT = 4 << 20
_OVER = ("completed", "cancelled", "failed", "stopped")
_RUNNING = ("active", "postcopy-active", "device", "pre-switchover", "postcopy-paused", "postcopy-recover")


class LiveRun:
    """One migration decoded while it happens (a real one, or a capture replayed).

    Made by :func:`ramlab.capture.live.watch` (QEMU) or :func:`replay`. Attributes: ``status``
    (``"starting"``, ``"ready"`` (waiting for :meth:`migrate`), ``"migrating"`` or ``"replaying"``,
    then QEMU's final ``"completed"`` / ``"cancelled"``, or ``"failed"`` / ``"stopped"``), ``passes``
    (:class:`~ramlab.live.decoder.PassSummary` of each complete pass), ``samples`` (QEMU's
    ``query-migrate`` samples and the capture's actions), ``parameters`` (the migration parameters as
    last set; ``initial_parameters``: when ``migrate`` was sent), ``folder`` (the capture folder,
    written when the capture ends), ``meta`` (its ``meta.json``), ``replay`` (True for a replay),
    ``control`` (what steers it, ``None`` for a replay), ``error`` (what stopped it).
    """

    def __init__(self, decoder: LiveDecoder, *, name: str, folder: Path | None, is_replay: bool,
                 control: Any = None, parameters: Mapping[str, Any] | None = None) -> None:
        self.decoder = decoder
        self.name = name
        self.folder = folder
        self.replay = is_replay
        self.control = control
        self.status = "starting"
        self.samples: list[dict[str, Any]] = []
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.initial_parameters: dict[str, Any] = dict(parameters or {})
        self.meta: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.version = 0  # bumps at every change a view could show
        self.t0: float | None = None
        self.speed = 1.0  # replay: recorded seconds per wall second
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._files_lock = threading.Lock()
        self._fds: dict[Key, int] = {}
        self._readers: dict[Key, Callable[[int, int], bytes]] = {}
        self._pass_callbacks: list[Callable[[dict[str, Any]], None]] = []
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()  # the decode thread is warm: the migration may start
        self._decode_done = threading.Event()
        self._source_done = threading.Event()
        self._final_trace: Trace | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ reading it
    @property
    def passes(self) -> list[PassSummary]:
        with self._lock:
            return list(self.decoder.completed)

    @property
    def finished(self) -> bool:
        """The input is decoded and the capture (or replay) is over."""
        return self._decode_done.is_set() and self._source_done.is_set()

    @property
    def trace(self) -> Trace:
        """The trace so far (a copy); the whole migration's once decoding has finished."""
        if self._final_trace is not None:
            return self._final_trace
        with self._lock:
            return self.decoder.to_trace(meta=self._trace_meta())

    def snapshot(self) -> LiveSnapshot:
        """What a view shows now (see :class:`~ramlab.live.decoder.LiveSnapshot`); cheap."""
        with self._lock:
            snap = self.decoder.snapshot()
            snap.samples = list(self.samples)
            snap.status = self.status
            snap.version = self.version
            snap.parameters = dict(self.parameters)
            return snap

    def on_pass(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(line)`` (in the decode thread) for every complete pass: ``line`` is the
        ``ramlab watch --json`` object (``pass``, ``t``, ``pages``, ``bytes``, ``decoded_at``, ``qemu``)."""
        self._pass_callbacks.append(callback)

    def wait_change(self, version: int, timeout: float) -> int:
        """Block until :attr:`version` differs from ``version`` (or ``timeout`` s); returns it."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != version or self.finished, timeout)
            return self.version

    def wait_for(self, *, passes: int | None = None, timeout: float = 60.0) -> bool:
        """Block until ``passes`` passes are complete or the migration is over (completed,
        cancelled, failed; with ``passes=None``, only that); ``False`` if neither happened
        within ``timeout`` s."""
        def done() -> bool:
            if passes is not None and len(self.decoder.completed) >= passes:
                return True
            return self.status in _OVER or self.finished

        with self._changed:
            return bool(self._changed.wait_for(done, timeout))

    def wait(self, timeout: float | None = None) -> LiveRun:
        """Wait until the migration, the decoding and the capture's files are done; returns ``self``.

        Raises :class:`~ramlab.errors.CaptureError` if QEMU failed (the decoded part stays available).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise CaptureError(f"the live migration is still running after {timeout}s")
        if self.error is not None:
            raise self.error if isinstance(self.error, RamlabError) else CaptureError(repr(self.error))
        return self

    def stop(self) -> None:
        """End it now: cancel a real migration (``migrate_cancel``), stop a replay."""
        self._stop.set()
        if self.control is not None and self.status in ("starting", "ready", "migrating"):
            with contextlib.suppress(RamlabError):
                self.control.cancel()

    # ------------------------------------------------------------------ steering (QEMU only)
    def _control(self) -> Any:
        if self.control is None:
            raise RamlabError("this is a replay of a recorded capture: it cannot be steered "
                              "(install QEMU to run a migration live)")
        return self.control

    def set_parameters(self, **params: Any) -> Any:
        """``migrate-set-parameters`` on the source (``downtime_limit=300``, ``max_bandwidth=32 << 20``)."""
        out = self._control().set_parameters(**params)
        with self._changed:
            self.parameters.update({k.replace("_", "-"): v for k, v in params.items()})
            self._bump()
        return out

    def set_capabilities(self, **caps: bool) -> Any:
        """``migrate-set-capabilities`` (``auto_converge=True``): only before :meth:`migrate`."""
        return self._control().set_capabilities(**caps)

    def start_postcopy(self) -> Any:
        """``migrate-start-postcopy`` (the migration needs the postcopy-ram capability)."""
        return self._control().start_postcopy()

    def cancel(self) -> Any:
        """``migrate_cancel``: the migration ends ``cancelled`` (its files are kept)."""
        return self._control().cancel()

    def migrate(self) -> None:
        """Start the migration of a run made with ``autostart=False``."""
        self._control().migrate()

    def query(self, command: str = "query-migrate-parameters", arguments: dict[str, Any] | None = None) -> Any:
        """Any QMP command on the source while the migration runs (default ``query-migrate-parameters``)."""
        return self._control().execute(command, arguments)

    # ------------------------------------------------------------------ the notebook
    def widget(self, **kwargs: Any):  # type: ignore[no-untyped-def]
        """The :class:`~ramlab.widgets.live.LiveMigration` view of this run."""
        from ramlab.widgets.live import LiveMigration

        return LiveMigration(self, **kwargs)

    def _repr_html_(self) -> str:
        s = self.snapshot()
        what = "replay of " if self.replay else ""
        return (f"<b>ramlab live</b>: {what}{self.name} — {s.status}, {s.n_passes} passes, "
                f"{s.decoded_bytes:,} bytes decoded" + (f", <b>error</b>: {s.error}" if s.error else ""))

    def __repr__(self) -> str:
        return f"<LiveRun {self.name!r} {'replay ' if self.replay else ''}{self.status}: {len(self.passes)} passes>"

    # ------------------------------------------------------------------ what sources call
    def begin(self, t0: float, parameters: Mapping[str, Any] | None = None, *, wait_ready: float = 60.0) -> None:
        """The migration starts now (``t0``: ``time.monotonic()``, the origin of every ``t``); waits
        until the decoder is warm (at most ``wait_ready`` s) so that the first chunks are not late."""
        self._ready.wait(wait_ready)
        with self._changed:
            self.t0 = t0
            if parameters:
                self.parameters.update(parameters)
                self.initial_parameters = dict(parameters)
            self.status = "replaying" if self.replay else "migrating"
            self._bump()

    def chunk(self, key: Key, offset: int, length: int, t: float) -> None:
        """Bytes ``offset .. offset+length`` of connection ``key`` arrived at ``t`` (``length == 0``:
        the connection ended); the decode thread reads them with the connection's reader."""
        self._queue.put(("chunk", key, offset, length, t) if length else ("end", key, t))

    def chunk_in_file(self, key: Key, path: Path, offset: int, length: int, t: float) -> None:
        """:meth:`chunk`, for bytes the source wrote to ``path``: the file is opened at its first
        chunk (from the caller's thread, so it can be read even after the source removes it)."""
        with self._files_lock:
            if key not in self._fds:
                fd = os.open(path, os.O_RDONLY)
                self._fds[key] = fd
                self._readers[key] = lambda off, n, fd=fd: os.pread(fd, n, off)
        self.chunk(key, offset, length, t)

    def add_reader(self, key: Key, reader: Callable[[int, int], bytes]) -> None:
        """How the decode thread reads connection ``key``: ``reader(offset, length) -> bytes``."""
        self._readers[key] = reader

    def note_sample(self, sample: dict[str, Any]) -> None:
        """A ``query-migrate`` sample (or an ``"event"`` of the capture: a parameter change...)."""
        self._queue.put(("sample", sample))

    def note_status(self, status: str) -> None:
        self._queue.put(("status", status))

    def end_of_input(self) -> None:
        """Every chunk has been noted: the decoder may finish (the source may go on with its files)."""
        self._queue.put(("done",))

    def source_finished(self, *, meta: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        """The source is over (after :meth:`end_of_input`, or failing before it)."""
        with self._changed:
            if meta is not None:
                self.meta = meta
            if error is not None:
                self.error = error
                self.status = "failed"
            self._bump()
        self._queue.put(("done",))  # if the source failed before its end of input
        self._source_done.set()
        with self._changed:
            self._bump()

    def start(self, source: Callable[[], None], name: str) -> LiveRun:
        """Start the decode thread and the source's thread (``source()`` runs the source)."""
        self._start_thread(self._decode_loop, "ramlab-live-decode")
        self._start_thread(source, name)
        return self

    # ------------------------------------------------------------------ plumbing
    def _trace_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "live": True}
        bw, dl = self.parameters.get("max-bandwidth"), self.parameters.get("downtime-limit")
        if bw:
            meta["bandwidth"] = float(bw)
        if dl is not None:
            meta["downtime_limit"] = float(dl) / 1000.0
        return meta

    def _bump(self) -> None:
        self.version += 1
        self._changed.notify_all()

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _decode_loop(self) -> None:
        try:
            try:
                self.decoder.warm_up()
            finally:
                self._ready.set()
            while True:
                batch = [self._queue.get()]
                with contextlib.suppress(queue.Empty):
                    while len(batch) < 256:
                        batch.append(self._queue.get_nowait())
                lines = self._process(batch)
                for line in lines:
                    for cb in self._pass_callbacks:
                        cb(line)
                if any(item[0] == "done" for item in batch):
                    break
        except Exception as exc:  # a bug here must not hang wait(): say it
            with self._changed:
                self.error = self.error or exc
                self.status = "failed"
                self._bump()
        finally:
            with self._files_lock:
                for fd in self._fds.values():
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._fds.clear()
            with self._changed:
                self._final_trace = self.decoder.to_trace(meta=self._trace_meta()) if self.decoder.finished else None
                self._decode_done.set()
                self._bump()

    def _process(self, batch: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Apply a batch of notes in order; contiguous chunks of one connection are read at once."""
        lines: list[dict[str, Any]] = []
        i = 0
        while i < len(batch):
            item = batch[i]
            kind = item[0]
            if kind == "chunk":
                _, key, off, n, t = item
                j = i + 1
                while (j < len(batch) and batch[j][0] == "chunk" and batch[j][1] == key
                       and batch[j][2] == off + n and n < READ_LIMIT):
                    n += batch[j][3]
                    t = batch[j][4]
                    j += 1
                data = self._readers[key](off, n)
                with self._changed:
                    lines += self._lines(self.decoder.receive(key, data, t))
                    self._bump()
                i = j
                continue
            with self._changed:
                if kind == "end":
                    lines += self._lines(self.decoder.end(item[1], item[2]))
                elif kind == "sample":
                    self._sample(item[1])
                elif kind == "status":
                    self.status = item[1]
                elif kind == "done":
                    lines += self._lines(self.decoder.finish())
                self._bump()
            i += 1
        return lines

    def _sample(self, s: dict[str, Any]) -> None:
        self.samples.append(s)
        if "event" in s and "error" not in s and s.get("arguments"):
            if s["event"] in ("migrate-set-parameters", "relaxed downtime-limit"):
                self.parameters.update(s["arguments"])
        status = s.get("status")
        if status in _RUNNING or status in ("setup",):
            self.status = "replaying" if self.replay else "migrating"
        elif self.replay and status in _OVER:
            self.status = status

    def _lines(self, done: list[PassSummary]) -> list[dict[str, Any]]:
        last = next((s for s in reversed(self.samples) if "event" not in s), {})
        qemu = {k: last[k] for k in QEMU_SUBSET if k in last}
        now = round((time.monotonic() - self.t0) * self.speed, 4) if self.t0 is not None else None
        return [{**p.to_dict(), "decoded_at": now, "qemu": qemu} for p in done]


# ---------------------------------------------------------------------- replays

def replay(folder: str | os.PathLike[str], *, speed: float = 1.0, name: str | None = None) -> LiveRun:
    """Replay a capture folder through the live path at its recorded pace (``speed`` x faster).

    Chunks come at the times of ``chunks.jsonl`` (or interpolated from ``meta.json``, see
    :mod:`ramlab.live.recording`), QEMU's samples at theirs; nothing can be steered.
    """
    if speed <= 0:
        raise RamlabError(f"speed must be > 0, not {speed}")
    layout = capture_layout(folder)
    params = layout.meta.get("migrate_parameters_src") or {}
    run = LiveRun(LiveDecoder(layout.mode, capabilities=layout.capabilities,
                              multifd_channels=layout.multifd_channels),
                  name=name or Path(folder).name, folder=Path(folder), is_replay=True, parameters=params)
    run.meta = layout.meta
    run.speed = float(speed)
    datas = {k: bytes(layout.data(k)) for k in layout.files}
    for key, data in datas.items():
        run.add_reader(key, lambda off, n, d=data: d[off : off + n])
    timeline: list[tuple[float, int, Callable[[], None]]] = []
    for t, key, off, n in recorded_chunks(layout):
        timeline.append((t, 1, lambda k=key, o=off, n=n, t=t: run.chunk(k, o, n, t)))
    for s in recorded_samples(layout):
        timeline.append((float(s["t"]), 0, lambda s=s: run.note_sample(s)))
    timeline.sort(key=lambda x: (x[0], x[1]))
    end_t = timeline[-1][0] if timeline else 0.0

    def source() -> None:
        run.begin(time.monotonic(), params)
        t_start = run.t0 or time.monotonic()
        try:
            for t, _, note in timeline:
                delay = t_start + t / speed - time.monotonic()
                if delay > 0 and run._stop.wait(delay):
                    run.note_status("stopped")
                    return
                note()
            for key in datas:
                run.chunk(key, len(datas[key]), 0, end_t)
        finally:
            run.end_of_input()
            run.source_finished()

    return run.start(source, "ramlab-live-replay")

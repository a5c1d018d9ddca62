"""Watching and steering a capture while QEMU migrates: the hooks a capture calls, the commands it takes.

:func:`ramlab.capture.run.capture` runs QEMU from one thread (its QMP client is not shared). Other
threads take part through two objects given to it:

- a :class:`CaptureObserver` hears what happens, from the capture's own threads: the migration
  started (``t0``), a chunk of a stream reached its file (from the recorder's pump threads), a
  stream ended, a ``query-migrate`` sample was taken (a timer, plus every change of status or of
  the dirty-sync count), the recording stopped;
- a :class:`MigrationControl` carries QMP commands to the capture loop, which runs them on the
  source between two samples and hands the reply (or QEMU's error) back to the caller::

      control = MigrationControl(autostart=False)   # configure first, migrate on demand
      threading.Thread(target=capture, args=("out",), kwargs={"control": control}).start()
      control.set_parameters(max_bandwidth=32 << 20)  # blocks until QEMU answered
      control.migrate()                               # the capture sends 'migrate' now
      control.start_postcopy(); control.cancel()

Nothing here parses the stream: the observer gets file offsets, :mod:`ramlab.live` decodes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from ramlab.errors import CaptureError

__all__ = ["CaptureObserver", "MigrationControl"]

class CaptureObserver:
    """Hooks called by :func:`~ramlab.capture.run.capture`; every one does nothing here.

    Called from the capture's threads: keep them quick (hand the note to your own thread).
    """

    def started(self, t0: float, mode: str, channels: int, parameters: dict[str, Any]) -> None:
        """The QMP ``migrate`` is about to be sent; ``t0`` is the time origin (``time.monotonic()``)
        of every later ``t``; ``mode``: ``"precopy"``, ``"multifd"`` or ``"postcopy"``;
        ``channels``: multifd channels (0 otherwise); ``parameters``: ``query-migrate-parameters``."""

    def chunk(self, direction: str, conn: int, path: Path, offset: int, length: int, t: float) -> None:
        """Bytes ``offset .. offset+length`` of connection ``conn`` (``direction`` ``"fwd"``: what the
        source sent, ``"ret"``: the return path) are in ``path``; ``length == 0``: that stream ended."""

    def sample(self, sample: dict[str, Any]) -> None:
        """A :func:`~ramlab.live.samples.qmp_sample` of the source's ``query-migrate`` (``"event"`` samples mark the
        capture's own actions: a parameter change, the postcopy switch)."""

    def stopped(self, status: str) -> None:
        """The migration is over (``status``: QEMU's final status) and the recorder has stopped:
        every chunk has been reported. The capture goes on (RAM dump, replay, files)."""


class MigrationControl:
    """QMP commands for a running capture, from any thread (see the module docstring).

    ``autostart=False``: the capture configures QEMU and then waits for :meth:`migrate` (so that
    capabilities, which QEMU refuses to change during a migration, can still be set).
    """

    def __init__(self, *, autostart: bool = True) -> None:
        self._queue: queue.Queue[tuple[str, dict[str, Any] | None, Future[Any]]] = queue.Queue()
        self._go = threading.Event()
        if autostart:
            self._go.set()
        self._closed: str | None = None
        self.cancel_requested = False
        self.postcopy_requested = False
        self.log: list[dict[str, Any]] = []  # commands run: {"t", "command", "arguments", "error"}

    # ------------------------------------------------------------------ for the caller
    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
        """Have the capture run ``command`` on the source; returns QEMU's reply, raises its error
        (:class:`~ramlab.capture.qmp.QMPError`) or :class:`CaptureError` if the capture is over."""
        if self._closed is not None:
            raise CaptureError(f"cannot run {command!r}: {self._closed}")
        fut: Future[Any] = Future()
        self._queue.put((command, arguments, fut))
        try:
            return fut.result(timeout)
        except FutureTimeout:
            raise CaptureError(f"{command!r} was not run within {timeout}s (is the capture running?)") from None

    def set_parameters(self, **params: Any) -> Any:
        """``migrate-set-parameters``; keyword names use ``_`` for QEMU's ``-``
        (``max_bandwidth=32 << 20``, ``downtime_limit=300``, ``xbzrle_cache_size=8 << 20``)."""
        return self.execute("migrate-set-parameters", {k.replace("_", "-"): v for k, v in params.items()})

    def set_capabilities(self, **caps: bool) -> Any:
        """``migrate-set-capabilities`` (``auto_converge=True``); QEMU refuses during a migration."""
        arg = [{"capability": k.replace("_", "-"), "state": bool(v)} for k, v in caps.items()]
        return self.execute("migrate-set-capabilities", {"capabilities": arg})

    def start_postcopy(self) -> Any:
        """``migrate-start-postcopy`` (the migration needs the postcopy-ram capability)."""
        return self.execute("migrate-start-postcopy")

    def cancel(self) -> Any:
        """``migrate_cancel``: the capture ends with status ``cancelled`` instead of failing."""
        self.cancel_requested = True
        if not self._go.is_set():  # not migrating yet: nothing for QEMU to cancel
            self._go.set()
            return {}
        return self.execute("migrate_cancel")

    def migrate(self) -> None:
        """Let an ``autostart=False`` capture send ``migrate``."""
        self._go.set()

    @property
    def closed(self) -> str | None:
        """Why commands are no longer taken (``None`` while the capture runs)."""
        return self._closed

    # ------------------------------------------------------------------ for the capture loop
    def wait_go(self, timeout: float, run: Callable[[], None]) -> bool:
        """Wait up to ``timeout`` s for :meth:`migrate`, calling ``run()`` (pending commands) meanwhile."""
        deadline = time.monotonic() + timeout
        while not self._go.wait(0.01):
            run()
            if time.monotonic() > deadline:
                return False
        run()
        return True

    def run_pending(self, qmp: Any, t: float) -> list[dict[str, Any]]:
        """Run the queued commands on ``qmp``; returns their log entries (the capture's samples)."""
        done = []
        while True:
            try:
                command, arguments, fut = self._queue.get_nowait()
            except queue.Empty:
                return done
            entry: dict[str, Any] = {"t": round(t, 4), "event": command}
            if arguments:
                entry["arguments"] = arguments
            try:
                result = qmp.execute(command, arguments)
            except CaptureError as exc:
                entry["error"] = str(exc)
                fut.set_exception(exc)
            else:
                if command == "migrate-start-postcopy":
                    self.postcopy_requested = True
                fut.set_result(result)
            self.log.append(entry)
            done.append(entry)

    def close(self, reason: str) -> None:
        """No more commands: pending and later ones fail with ``reason``."""
        self._closed = reason
        self._go.set()
        while True:
            try:
                command, _, fut = self._queue.get_nowait()
            except queue.Empty:
                return
            fut.set_exception(CaptureError(f"cannot run {command!r}: {reason}"))

"""A minimal, blocking QMP client over a unix socket.

QMP (the QEMU Machine Protocol) is newline-delimited JSON: the server greets with
``{"QMP": {...}}``, the client must send ``qmp_capabilities`` first, then every
command gets exactly one ``{"return": ...}`` or ``{"error": {...}}`` reply carrying
the ``id`` it was sent with; asynchronous ``{"event": ...}`` messages can arrive at
any time and are collected in :attr:`QMPClient.events`.

Every blocking call has a timeout; every failure raises :class:`ramlab.errors.CaptureError`
(or its subclass :class:`QMPError` for an ``{"error": ...}`` reply)::

    with QMPClient("qmp-src.sock", timeout=10) as qmp:     # connects, negotiates
        qmp.execute("query-status")                        # -> {"status": "running", ...}
        qmp.hmp("info ramblock")                           # HMP through QMP -> str
        qmp.wait_event("STOP", timeout=5)                  # -> the event dict
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from pathlib import Path
from typing import Any

from ramlab.errors import CaptureError

__all__ = ["QMPClient", "QMPError"]


class QMPError(CaptureError):
    """QEMU answered a QMP command with ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QMP command {command!r} failed: {error_class}: {desc}")


class QMPClient:
    """Blocking QMP client for one unix socket.

    ``path`` is the socket QEMU listens on (``-qmp unix:PATH,server=on,wait=off``).
    ``timeout`` (seconds) is the default for connecting and for each reply.
    Not thread-safe: use one client per thread.
    """

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = float(timeout)
        self.greeting: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buf = b""
        self._ids = itertools.count(1)

    # --- connection ------------------------------------------------------------------
    def connect(self, timeout: float | None = None) -> dict[str, Any]:
        """Connect (retrying while QEMU has not created the socket yet), read the
        greeting and negotiate capabilities. Returns the greeting's ``"QMP"`` object."""
        limit = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + limit
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                sock.connect(self.path)
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise CaptureError(f"cannot connect to QMP socket {self.path}: {exc}") from exc
                time.sleep(0.02)
        self._sock = sock
        self._buf = b""
        try:
            msg = self._read_message(deadline)
            while "QMP" not in msg:
                if "event" in msg:
                    self.events.append(msg)
                    msg = self._read_message(deadline)
                    continue
                raise CaptureError(f"QMP {self.path}: expected a greeting, got {msg!r}")
            self.greeting = msg["QMP"]
            self.execute("qmp_capabilities", timeout=max(0.05, deadline - time.monotonic()))
        except BaseException:
            self.close()
            raise
        return self.greeting

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> QMPClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # --- commands --------------------------------------------------------------------
    def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> Any:
        """Run one QMP command and return its ``"return"`` value.

        Raises :class:`QMPError` on an error reply and :class:`CaptureError` on a
        timeout or a closed connection. Events read meanwhile go to :attr:`events`.

        >>> qmp.execute("migrate-set-parameters", {"max-bandwidth": 32 << 20})  # doctest: +SKIP
        {}
        """
        if self._sock is None:
            raise CaptureError(f"QMP {self.path}: not connected")
        cmd_id = f"ramlab-{next(self._ids)}"
        msg: dict[str, Any] = {"execute": command, "id": cmd_id}
        if arguments:
            msg["arguments"] = arguments
        deadline = time.monotonic() + (self.timeout if timeout is None else float(timeout))
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise CaptureError(f"QMP {self.path}: sending {command!r} failed: {exc}") from exc
        while True:
            reply = self._read_message(deadline, what=command)
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != cmd_id:
                continue  # a stale reply to an earlier, timed-out command
            if "error" in reply:
                err = reply["error"]
                raise QMPError(command, str(err.get("class", "?")), str(err.get("desc", err)))
            if "return" not in reply:
                raise CaptureError(f"QMP {self.path}: malformed reply to {command!r}: {reply!r}")
            return reply["return"]

    def hmp(self, command_line: str, *, timeout: float | None = None) -> str:
        """Run a human-monitor command (e.g. ``"info ramblock"``) and return its text."""
        out = self.execute("human-monitor-command", {"command-line": command_line}, timeout=timeout)
        return str(out)

    # --- events ----------------------------------------------------------------------
    def poll_events(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Read whatever events arrive within ``timeout`` seconds; return all collected so far."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._read_message(deadline, what="events", quiet_timeout=True)
            except TimeoutError:
                break
            if msg is not None and "event" in msg:
                self.events.append(msg)
        return list(self.events)

    def wait_event(self, name: str, *, timeout: float | None = None,
                   predicate: Any = None) -> dict[str, Any]:
        """Wait for (and consume from :attr:`events`) the first event called ``name``
        for which ``predicate(event)`` is true."""
        deadline = time.monotonic() + (self.timeout if timeout is None else float(timeout))
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name and (predicate is None or predicate(ev)):
                    return self.events.pop(i)
            try:
                msg = self._read_message(deadline, what=f"event {name}", quiet_timeout=True)
            except TimeoutError:
                raise CaptureError(f"QMP {self.path}: no {name} event within the timeout") from None
            if "event" in msg:
                self.events.append(msg)

    # --- wire ------------------------------------------------------------------------
    def _read_message(self, deadline: float, *, what: str = "greeting",
                      quiet_timeout: bool = False) -> dict[str, Any]:
        if self._sock is None:
            raise CaptureError(f"QMP {self.path}: not connected")
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                if quiet_timeout:
                    raise TimeoutError
                raise CaptureError(f"QMP {self.path}: timed out waiting for the reply to {what}")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise CaptureError(f"QMP {self.path}: connection error while waiting for {what}: {exc}") \
                    from exc
            if not chunk:
                self.close()
                raise CaptureError(f"QMP {self.path}: QEMU closed the connection while waiting for {what}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self._read_message(deadline, what=what, quiet_timeout=quiet_timeout)
        try:
            msg = json.loads(line)
        except ValueError as exc:
            raise CaptureError(f"QMP {self.path}: not JSON: {line[:200]!r}") from exc
        if not isinstance(msg, dict):
            raise CaptureError(f"QMP {self.path}: not a JSON object: {line[:200]!r}")
        return msg

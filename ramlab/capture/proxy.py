"""Unix-socket recorders for migrations that need sockets (multifd, postcopy).

:class:`Recorder` listens on a unix socket and, in *sink* mode, just stores each accepted
connection's bytes (``channel-N.bin``, N in accept order: 0 is QEMU's main channel);
in *proxy* mode it also connects each accepted connection to a destination socket and
copies bytes both ways, recording the forward (``fwd-N.bin``) and return-path
(``ret-N.bin``) directions and a chunk log (direction, connection, offset, length, time)::

    rec = Recorder(folder / "proxy.sock", folder, target=folder / "dst.sock")
    rec.start()
    ...  # source QEMU: migrate unix:proxy.sock; destination: migrate-incoming unix:dst.sock
    rec.stop()
    rec.chunks   # [{"dir": "fwd", "conn": 0, "offset": 0, "len": 65536, "t": 0.0012}, ...]

A ``listener`` sees every chunk as soon as its bytes are in the file (this is how a migration is
decoded while it runs, see :mod:`ramlab.live`): ``listener(direction, conn, path, offset, length,
t)``, then once more with ``length == 0`` when that direction of the connection has ended. It runs
in the pump thread, so it must be quick (queue a note, never decode there); an exception it raises
is kept in :attr:`Recorder.errors` and does not stop the recording.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ramlab.errors import CaptureError

__all__ = ["Recorder", "ChunkListener"]

#: ``listener(direction, conn, path, offset, length, t)``; ``length == 0``: the end of that stream
ChunkListener = Callable[[str, int, Path, int, int, float], None]


class Recorder:
    """Accept connections on ``listen_path``; record (and, with ``target``, forward) them.

    Files are written into ``folder``: sink mode ``{prefix}-N.bin`` (prefix ``channel``; with
    ``single=True`` the one connection is ``{prefix}.bin``, e.g. ``stream.bin``), proxy mode
    ``fwd-N.bin`` and ``ret-N.bin``. ``t0`` is the time origin of the chunk log
    (``time.monotonic()``; set it when the migration starts). ``listener``: see the module docstring.
    """

    def __init__(self, listen_path: str | Path, folder: str | Path, *, target: str | Path | None = None,
                 prefix: str = "channel", max_connections: int = 16, single: bool = False,
                 listener: ChunkListener | None = None) -> None:
        self.listen_path = Path(listen_path)
        self.folder = Path(folder)
        self.target = Path(target) if target is not None else None
        self.prefix = prefix
        self.single = single
        self.listener = listener
        self.max_connections = 1 if single else max_connections
        self.t0 = time.monotonic()
        self.chunks: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._accept_thread: threading.Thread | None = None
        self._stopping = False
        self._socks: list[socket.socket] = []

    # --- files -------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """Recorded files, connection order (proxy mode: fwd-0, ret-0, fwd-1, ...)."""
        out = []
        for i in range(self.connections):
            if self.target is None:
                out.append(self._sink_path(i))
            else:
                out += [self.folder / f"fwd-{i}.bin", self.folder / f"ret-{i}.bin"]
        return out

    def _sink_path(self, idx: int) -> Path:
        return self.folder / (f"{self.prefix}.bin" if self.single else f"{self.prefix}-{idx}.bin")

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> Recorder:
        with contextlib.suppress(FileNotFoundError):
            self.listen_path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(self.listen_path))
        s.listen(self.max_connections)
        s.settimeout(0.1)
        self._listener = s
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True, name="ramlab-accept")
        self._accept_thread.start()
        return self

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.settimeout(None)
            if self.single and self.connections:
                self.errors.append("a second connection to a single-stream recorder: refused")
                conn.close()
                continue
            idx = self.connections
            self.connections += 1
            self._socks.append(conn)
            if self.target is None:
                path = self._sink_path(idx)
                t = threading.Thread(target=self._pump, args=(conn, None, path, "fwd", idx), daemon=True)
                t.start()
                self._threads.append(t)
                continue
            out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                out.connect(str(self.target))
            except OSError as exc:
                self.errors.append(f"connection {idx}: cannot connect to {self.target}: {exc}")
                conn.close()
                continue
            self._socks.append(out)
            for args in ((conn, out, self.folder / f"fwd-{idx}.bin", "fwd", idx),
                         (out, conn, self.folder / f"ret-{idx}.bin", "ret", idx)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket | None, path: Path, direction: str,
              idx: int) -> None:
        offset = 0
        listener = self.listener
        with open(path, "wb") as f:
            try:
                while True:
                    chunk = src.recv(1 << 16)
                    if not chunk:
                        break
                    t = time.monotonic() - self.t0
                    f.write(chunk)
                    if dst is not None:
                        dst.sendall(chunk)
                    with self._lock:
                        self.chunks.append({"dir": direction, "conn": idx, "offset": offset,
                                            "len": len(chunk), "t": round(t, 6)})
                    if listener is not None:
                        f.flush()  # the listener's reader must find the bytes in the file
                        self._notify(direction, idx, path, offset, len(chunk), t)
                    offset += len(chunk)
            except OSError as exc:
                if not self._stopping:
                    self.errors.append(f"{direction}-{idx}: {exc}")
            finally:
                f.flush()
                if dst is not None:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                if listener is not None:
                    self._notify(direction, idx, path, offset, 0, time.monotonic() - self.t0)

    def _notify(self, direction: str, idx: int, path: Path, offset: int, length: int, t: float) -> None:
        assert self.listener is not None
        try:
            self.listener(direction, idx, path, offset, length, t)
        except Exception as exc:  # a listener's bug must not break the migration it watches
            self.errors.append(f"listener on {direction}-{idx}: {exc!r}")

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every connection reached end of file in both directions (True) or timeout."""
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        return all(not t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` for the pumps to drain, then close everything."""
        self.wait_idle(timeout)
        self._stopping = True
        if self._listener is not None:
            self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        if self._accept_thread is not None:
            self._accept_thread.join(2.0)
        for t in self._threads:
            t.join(2.0)
        with contextlib.suppress(FileNotFoundError):
            self.listen_path.unlink()
        if self.errors and not self.chunks:
            raise CaptureError("recorder failed: " + "; ".join(self.errors))

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=0.5)

"""Tests of ramlab.capture: the QMP client (against a fake server), the guest build,
and one real end-to-end capture with QEMU (marked ``qemu``)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ramlab.capture.build import GUEST_ELF, binutils_available, build_guest
from ramlab.capture.qmp import QMPClient, QMPError
from ramlab.capture.run import parse_size
from ramlab.errors import CaptureError, RamlabError

GREETING = {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": ["oob"]}}


class FakeQMP:
    """A one-connection fake QMP server: ``handler(msg, send)`` answers each command
    (returning ``False`` closes the connection)."""

    def __init__(self, path: Path, handler: Callable[[dict[str, Any], Callable[[Any], None]], bool | None],
                 greeting: Any = GREETING) -> None:
        self.path = path
        self.handler = handler
        self.greeting = greeting
        self.received: list[dict[str, Any]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            def send(obj: Any) -> None:
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\r\n"
                conn.sendall(data)

            if self.greeting is not None:
                send(self.greeting)
            buf = b""
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    self.received.append(msg)
                    if self.handler(msg, send) is False:
                        return  # the handler asked to drop the connection

    def close(self) -> None:
        self.sock.close()


def ok_handler(msg: dict[str, Any], send: Callable[[Any], None]) -> None:
    cmd = msg["execute"]
    if cmd == "qmp_capabilities":
        send({"return": {}, "id": msg["id"]})
    elif cmd == "query-status":
        send({"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 0}})
        send({"return": {"status": "running", "running": True}, "id": msg["id"]})
    elif cmd == "human-monitor-command":
        send({"return": "echo: " + msg["arguments"]["command-line"] + "\r\n", "id": msg["id"]})
    elif cmd == "migrate":
        send({"error": {"class": "GenericError", "desc": "migration already running"}, "id": msg["id"]})
    elif cmd == "emit-stop":
        send({"return": {}, "id": msg["id"]})
        send({"event": "STOP", "timestamp": {"seconds": 2, "microseconds": 0}})
    elif cmd == "hang":
        pass
    else:
        send({"error": {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"},
              "id": msg["id"]})


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "qmp.sock"


def test_qmp_greeting_and_commands(sock_path: Path) -> None:
    server = FakeQMP(sock_path, ok_handler)
    try:
        with QMPClient(sock_path, timeout=5) as qmp:
            assert qmp.greeting is not None and qmp.greeting["version"]["qemu"]["major"] == 7
            assert server.received[0]["execute"] == "qmp_capabilities"
            assert qmp.execute("query-status")["status"] == "running"
            assert [e["event"] for e in qmp.events] == ["RESUME"]
            assert qmp.hmp("info ramblock") == "echo: info ramblock\r\n"
            ids = [m["id"] for m in server.received]
            assert len(set(ids)) == len(ids)  # every command has its own id
            qmp.execute("emit-stop")
            ev = qmp.wait_event("STOP", timeout=2)
            assert ev["timestamp"]["seconds"] == 2
    finally:
        server.close()


def test_qmp_error_reply(sock_path: Path) -> None:
    server = FakeQMP(sock_path, ok_handler)
    try:
        with QMPClient(sock_path, timeout=5) as qmp:
            with pytest.raises(QMPError) as info:
                qmp.execute("migrate", {"uri": "exec:cat > x"})
            assert info.value.error_class == "GenericError"
            assert "migration already running" in str(info.value)
            assert isinstance(info.value, CaptureError) and isinstance(info.value, RamlabError)
            with pytest.raises(QMPError, match="CommandNotFound"):
                qmp.execute("no-such-command")
            assert qmp.execute("query-status")["status"] == "running"  # still usable
    finally:
        server.close()


def test_qmp_command_timeout(sock_path: Path) -> None:
    server = FakeQMP(sock_path, ok_handler)
    try:
        with QMPClient(sock_path, timeout=5) as qmp:
            t0 = time.monotonic()
            with pytest.raises(CaptureError, match="timed out"):
                qmp.execute("hang", timeout=0.3)
            assert time.monotonic() - t0 < 2
            with pytest.raises(CaptureError, match="no STOP event"):
                qmp.wait_event("STOP", timeout=0.2)
    finally:
        server.close()


def test_qmp_no_greeting_times_out(sock_path: Path) -> None:
    server = FakeQMP(sock_path, ok_handler, greeting=None)
    try:
        qmp = QMPClient(sock_path, timeout=0.5)
        with pytest.raises(CaptureError, match="timed out"):
            qmp.connect()
        assert not qmp.connected
    finally:
        server.close()


def test_qmp_bad_greeting_and_garbage(sock_path: Path) -> None:
    server = FakeQMP(sock_path, ok_handler, greeting=b"this is not json\r\n")
    try:
        with pytest.raises(CaptureError, match="not JSON"):
            QMPClient(sock_path, timeout=2).connect()
    finally:
        server.close()


def test_qmp_no_socket(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(CaptureError, match="cannot connect"):
        QMPClient(tmp_path / "missing.sock", timeout=0.3).connect()
    assert time.monotonic() - t0 < 3


def test_qmp_server_closes(sock_path: Path) -> None:
    def closing(msg: dict[str, Any], send: Callable[[Any], None]) -> bool:
        if msg["execute"] == "qmp_capabilities":
            send({"return": {}, "id": msg["id"]})
            return True
        return False  # the server closes the connection instead of answering

    server = FakeQMP(sock_path, closing)
    try:
        with QMPClient(sock_path, timeout=2) as qmp:
            with pytest.raises(CaptureError, match="closed the connection"):
                qmp.execute("quit")
    finally:
        server.close()


def test_parse_size() -> None:
    assert parse_size("16M") == 16 << 20
    assert parse_size("4MiB") == 4 << 20
    assert parse_size("512k") == 512 << 10
    assert parse_size(4096) == 4096
    with pytest.raises(RamlabError):
        parse_size("lots")


def test_guest_elf_committed() -> None:
    data = GUEST_ELF.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1  # ELF32
    magic = (0x1BADB002).to_bytes(4, "little")
    assert magic in data[:8192 + 0x1000]  # multiboot header within the first 8 KiB of the image


@pytest.mark.skipif(not binutils_available(), reason="GNU binutils (as, ld) not installed")
def test_guest_build_reproducible() -> None:
    first = build_guest()
    assert first == build_guest()
    assert first == GUEST_ELF.read_bytes(), "committed guest.elf is stale: python -m ramlab.capture.build"


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                    reason="qemu-system-x86_64 not installed (Debian: qemu-system-x86)")
def test_capture_plain_end_to_end(tmp_path: Path) -> None:
    import zstandard

    from ramlab.capture.qemu import MachineSpec, load_stream_into_qemu
    from ramlab.capture.run import capture

    t0 = time.monotonic()
    meta = capture(tmp_path / "plain", ram_mib=16, relax_after_syncs=3, timeout=60)
    assert meta["replay"]["matched"], meta["replay"]
    assert meta["query_migrate_final"]["status"] == "completed"
    stream = zstandard.ZstdDecompressor().decompress((tmp_path / "plain" / "stream.bin.zst").read_bytes())
    assert stream[:8] == b"QEVM\x00\x00\x00\x03"
    assert len(stream) == meta["files"]["stream.bin"]["bytes"]
    ram = zstandard.ZstdDecompressor().decompress((tmp_path / "plain" / "guest-ram.bin.zst").read_bytes())
    assert ram[0x300000:0x300008] == b"RAMLAB01"
    assert json.loads((tmp_path / "plain" / "meta.json").read_text())["cmdline_src"].startswith(
        "qemu-system-x86_64 -machine pc,accel=tcg -m 16")

    # ramlab decodes the fresh capture: QEMU's counters and the RAM dump
    import numpy as np

    import ramlab

    m = ramlab.open(tmp_path / "plain")
    assert m.error is None
    assert m.records["page"] == meta["query_migrate_final"]["ram"]["normal"]
    assert m.records["zero"] == meta["query_migrate_final"]["ram"]["duplicate"]
    diff = np.flatnonzero(m.ram("pc.ram") != np.frombuffer(ram, np.uint8))
    assert not ((diff < 0xA0000) | (diff >= 0x100000)).any()

    # the loader check, used directly, and its error on a damaged stream
    (tmp_path / "s.bin").write_bytes(stream)
    assert load_stream_into_qemu(tmp_path / "s.bin", MachineSpec(ram_mib=16)) == ram
    (tmp_path / "bad.bin").write_bytes(stream[:8] + b"\xff" * 64)
    with pytest.raises(CaptureError, match="failed"):
        load_stream_into_qemu(tmp_path / "bad.bin", MachineSpec(ram_mib=16), timeout=20)
    assert time.monotonic() - t0 < 60

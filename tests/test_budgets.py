"""Hostile inputs of issue #13: ``ramlab.open`` never raises, keeps the prefix, and stays within its
stated budgets (docs: "Resource budgets"). Memory is measured as the peak resident set of a child
process (``VmHWM``) that does nothing but open the input, so the numbers are the decoder's own.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zstandard
from _shared import DATA

import ramlab
from ramlab.errors import InternalError, StreamError
from ramlab.model.passes import MAX_TRACE_PASSES
from ramlab.wire import events as ev
from ramlab.wire.encoder import encode_stream
from ramlab.wire.return_path import encode_return_path

MiB = 1 << 20
HDR = b"QEVM" + struct.pack(">I", 3)
CONF = b"\x07" + struct.pack(">I", 4) + b"test"
RAM_START = b"\x01" + struct.pack(">I", 2) + b"\x03ram" + struct.pack(">II", 0, 4)
END = struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 2) + b"\x00"


def mem_size(*blocks: tuple[str, int]) -> bytes:
    out = struct.pack(">Q", sum(n for _, n in blocks) | 0x04)
    for name, n in blocks:
        out += bytes([len(name)]) + name.encode() + struct.pack(">Q", n)
    return out


def zero_records(offsets: np.ndarray) -> bytes:
    """ZERO records of pc.ram: the first names the block, the others have CONTINUE."""
    first = struct.pack(">Q", int(offsets[0]) | 0x02) + b"\x06pc.ram\x00"
    rest = np.zeros((len(offsets) - 1, 9), np.uint8)
    rest[:, :8] = (offsets[1:].astype(np.uint64) | np.uint64(0x22)).astype(">u8").view(np.uint8).reshape(-1, 8)
    return first + rest.tobytes()


def open_in_child(tmp_path: Path, *args: Path, **kwargs: object) -> dict:
    """Run ``ramlab.open`` in a fresh interpreter: its peak RSS (MiB), error and a few results."""
    script = textwrap.dedent(f"""
        import json, resource, time, ramlab
        from pathlib import Path
        t = time.perf_counter()
        m = ramlab.open(*[Path(a) for a in {[str(a) for a in args]!r}], **{kwargs!r})
        wall = time.perf_counter() - t
        hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
        print(json.dumps(dict(mib=hwm / 1024, wall=wall, error=str(m.error) if m.error else None,
                              error_type=type(m.error).__name__, passes=m.trace.n_passes,
                              records=dict(m.records), warnings=m.warnings)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_pass_explosion_is_capped(tmp_path):
    """A valid stream whose records alternate between two pages: one pass per two records. Uncapped,
    20 000 passes x 65 536 pages (a 256 MiB block) would need 6.5 GB of trace."""
    n = 40_000
    offsets = np.tile(np.array([0, 0x1000]), n // 2)
    data = HDR + CONF + RAM_START + mem_size(("pc.ram", 256 * MiB)) + zero_records(offsets) + END
    (tmp_path / "s.bin").write_bytes(data)
    got = open_in_child(tmp_path, tmp_path / "s.bin")
    assert got["error"] is None
    assert got["records"]["zero"] == n
    assert got["passes"] <= MAX_TRACE_PASSES + 3
    assert any("merged" in w for w in got["warnings"])
    # budget: the RAM image is lazily zero (untouched), the trace <= 5 B x 65 536 pages x 515 passes
    assert got["mib"] < 200 + 5 * 65536 * (MAX_TRACE_PASSES + 3) / MiB


def test_page_requests_outside_the_block_are_refused(tmp_path):
    """QEMU's ram_save_queue_pages refuses a request past the block; 64 of length 0xfffff000 used to
    cost 1.6 GB. The main stream still decodes whole."""
    folder = tmp_path / "pc"
    folder.mkdir()
    for f in ("fwd-0.bin.zst",):
        (folder / f).write_bytes((DATA / "postcopy" / f).read_bytes())
    bad = [ev.ReqPages("pc.ram", 0, 0xFFFFF000, True)] * 64
    (folder / "ret-0.bin").write_bytes(encode_return_path(bad))
    got = open_in_child(tmp_path, folder)
    assert "page request outside the RAM block" in got["error"] and "return path" in got["error"]
    clean = ramlab.open(DATA / "postcopy")
    assert got["records"] == {k: v for k, v in clean.records.items() if v}  # the main stream: all of it
    assert got["mib"] < 400


def test_zstd_bomb_of_garbage_stops_at_the_first_chunk(tmp_path):
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(2 << 30))  # 2 GiB of zeros, ~64 KB
    (tmp_path / "bomb.bin.zst").write_bytes(bomb)
    got = open_in_child(tmp_path, tmp_path / "bomb.bin.zst")
    assert "not a QEMU migration stream at byte 0" in got["error"]
    assert got["mib"] < 250  # one 16 MiB chunk was inflated, not 2 GiB


def test_zstd_input_is_cut_at_its_expansion_limit(monkeypatch):
    """A valid stream that expands past its limit: decoded up to the limit, the error says so."""
    import ramlab.migration as mig

    offsets = np.arange(4096, dtype=np.int64) * 0x1000  # 4096 ZERO records, 36 KiB
    data = HDR + CONF + RAM_START + mem_size(("pc.ram", 16 * MiB)) + zero_records(offsets) + END
    monkeypatch.setattr(mig, "MIN_EXPANSION_LIMIT", 20_000)
    monkeypatch.setattr(mig, "EXPANSION_PER_RAM_BYTE", 0)
    m = ramlab.open(zstandard.ZstdCompressor().compress(data))
    assert "decompresses to more than 20,000 bytes" in str(m.error)
    assert m.error.offset == 20_000
    assert 0 < m.records["zero"] < 4096  # the records before the cut


def test_huge_mem_size_is_an_error_not_a_crash(tmp_path):
    data = HDR + CONF + RAM_START + mem_size(("pc.ram", 1 << 50)) + END  # a 1 PiB block
    (tmp_path / "s.bin").write_bytes(data)
    got = open_in_child(tmp_path, tmp_path / "s.bin")
    assert "cannot hold the RAM images" in got["error"] and "at byte 34" in got["error"]
    assert got["mib"] < 250


def test_deeply_nested_vmdesc_is_an_error(tmp_path):
    body = b"[" * 200_000 + b"]" * 200_000
    data = HDR + CONF + b"\x00" + b"\x06" + struct.pack(">I", len(body)) + body
    m = ramlab.open(data)
    assert isinstance(m.error, StreamError) and "vmdesc is not valid JSON" in str(m.error)


def test_bad_discard_keeps_the_prefix():
    """Issue #13's reproducer: 8 bytes of the first discard range overwritten in data/postcopy."""
    clean = ramlab.open(DATA / "postcopy")
    disc = next(e for e in clean.events if isinstance(e, ev.Command) and e.name == "POSTCOPY_RAM_DISCARD")
    raw = bytearray(clean.data)
    name_len = disc.payload[1]
    at = disc.offset + 5 + 3 + name_len  # the first range's start
    raw[at : at + 8] = b"\xff" * 8
    m = ramlab.open(bytes(raw))
    assert isinstance(m.error, StreamError) and not isinstance(m.error, InternalError)
    assert m.error.offset == disc.offset
    assert m.records["page"] > 0 and m.trace.n_passes >= 1  # everything before the discard


def test_a_folder_with_two_kinds_of_capture_is_refused(tmp_path):
    for f in ("channel-0.bin.zst", "channel-1.bin.zst"):
        (tmp_path / f).write_bytes((DATA / "multifd-zstd" / f).read_bytes())
    (tmp_path / "stream.bin.zst").write_bytes((DATA / "plain" / "stream.bin.zst").read_bytes())
    with pytest.raises(ramlab.RamlabError, match="holds more than one capture .*stream.bin.zst.*channel-0"):
        ramlab.open(tmp_path)


def test_simulated_stream_still_round_trips():
    """The budget machinery changes nothing for an ordinary stream."""
    r = ramlab.simulate(ram="16M", workload="hotset", bandwidth="16M", dirty_rate="1M", seed=1, stream=True,
                        template=False)
    m = ramlab.open(r.stream)
    assert m.error is None and not m.warnings
    assert encode_stream(m.events) == r.stream

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
import ramlab.migration as mig
from ramlab.errors import InternalError, StreamError
from ramlab.model.destination import Images
from ramlab.model.passes import MAX_TRACE_PASSES, trace_pass_limit
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


def zero_record_bomb(path: Path, records: int, ram: int = 16 * MiB) -> None:
    """A small .zst of a valid stream: ``records`` ZERO records alternating between two pages."""
    block = zero_records(np.tile(np.array([0x1000, 0]), 1 << 19))[16:]  # 1 Mi CONTINUE records
    head = HDR + CONF + RAM_START + mem_size(("pc.ram", ram)) + zero_records(np.array([0]))
    with path.open("wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as w:
        w.write(head)
        for _ in range((records - 1) >> 20):
            w.write(block)


def test_zero_record_bomb_stops_at_the_records_budget(tmp_path):
    """Issue #13's zstd record bomb, scaled down: 24 Mi ZERO records (216 MB inflated, a 23 KB file)
    on a 16 MiB guest. Decoding stops at the records budget (the minimum, 4 Mi records: 64 x 4096
    declared pages is less), so what is kept is bounded: 8 bytes of page offset a record kept
    (32 MiB) + the inflated input decoded so far, mapped (38 MB) + the trace (512 passes x 4096
    pages x 5 B = 10 MiB). Measured: 112 MiB peak. Before the budget all 24 Mi records were kept:
    445 MiB peak (192 MiB of offsets, 216 MB of input touched)."""
    zero_record_bomb(tmp_path / "bomb.bin.zst", 24 << 20)
    assert (tmp_path / "bomb.bin.zst").stat().st_size < 1 * MiB
    got = open_in_child(tmp_path, tmp_path / "bomb.bin.zst")
    budget = mig.MIN_RECORDS_BUDGET
    assert got["records"] == {"zero": budget}
    assert "more page records than the records budget" in got["error"] and "section 'ram'" in got["error"]
    assert f"at most {budget:,} page records (the minimum budget" in got["error"] and "robustness.md" in got["error"]
    assert f"at byte {len(HDR + CONF + RAM_START + mem_size(('pc.ram', 16 * MiB))) + 16 + 9 * (budget - 1)}" \
        in got["error"]
    assert got["passes"] == MAX_TRACE_PASSES
    # the interpreter with numpy (~45 MiB) + offsets and input as above, with 60 % to spare
    assert got["mib"] < 45 + 1.6 * (8 * budget + 9 * budget + 5 * 4096 * MAX_TRACE_PASSES) / MiB
    assert got["wall"] < 8


def test_records_budget_keeps_the_exact_prefix(monkeypatch):
    """The run that crosses the budget is cut at the record: events, RAM, trace and counts are those
    of the stream cut there, and the error names that record's byte."""
    monkeypatch.setattr(mig, "MIN_RECORDS_BUDGET", 1000)
    monkeypatch.setattr(mig, "RECORDS_PER_PAGE", 1)
    offsets = np.arange(3000, dtype=np.int64) % 2048 * 0x1000  # 4096 declared pages: budget 4096
    head = HDR + CONF + RAM_START + mem_size(("pc.ram", 16 * MiB))
    body = zero_records(offsets)
    fill = np.arange(3000) % 251 + 1
    raw = np.frombuffer(body[16:], np.uint8).reshape(-1, 9).copy()
    raw[:, 8] = fill[1:]
    body = body[:15] + bytes([fill[0]]) + raw.tobytes()
    data = head + body + body[16:] + END  # 5999 records, 3 laps: the budget (4096) ends inside the second run
    m = ramlab.open(data)
    at = len(head) + 16 + 9 * 4095
    assert isinstance(m.error, StreamError) and m.error.offset == at and m.error.section == "ram"
    assert "found page record 4,097" in str(m.error) and "64 per page" not in str(m.error)
    assert m.records["zero"] == 4096 and sum(len(e) for e in m.events if isinstance(e, ev.RamPages)) == 4096
    cut = ramlab.open(data[:at])  # the same stream, cut at that record
    assert np.array_equal(m.ram(), cut.ram()) and m.ram()[4095 % 2048 * 4096] != 0
    assert np.array_equal(m.trace.classes, cut.trace.classes) and m.trace.n_passes == 3
    rows = m.records_table()
    assert rows[-2]["offset"] + rows[-2]["length"] == at and rows[-1]["kind"] == "ERROR"


def test_records_budget_counts_multifd_packets(monkeypatch):
    """Multifd page entries count too: the budget ends in a channel, named in the error, and the
    packets before it are applied."""
    clean = ramlab.open(DATA / "multifd-zstd")
    main = sum(v for k, v in clean.records.items())
    pkts = [p for p in clean.multifd_packets[0] if isinstance(p, ev.MultifdPacket)]
    monkeypatch.setattr(mig, "MIN_RECORDS_BUDGET", clean.records["zero"] + 300)
    monkeypatch.setattr(mig, "RECORDS_PER_PAGE", 0)
    m = ramlab.open(DATA / "multifd-zstd")
    assert main > clean.records["zero"] + 300
    assert m.error.section == "multifd channel 1" and "records budget" in str(m.error)
    n, kept = 0, 0
    for p in pkts:  # the first packet that does not fit whole
        if n + p.normal_pages > 300:
            break
        n += p.normal_pages
        kept += 1
    assert m.error.offset == pkts[kept].offset
    assert len([p for p in m.multifd_packets[0] if isinstance(p, ev.MultifdPacket)]) == kept
    assert kept and 0 < m.records["page"] <= 300


def test_trace_budget_caps_the_passes_of_a_large_guest(tmp_path):
    """An 8 GiB guest (2 Mi pages, 10 MiB a pass): the trace keeps ramlab.model.passes.trace_pass_limit
    (102) passes apart, not 512 (5.4 GB); the records and the RAM stay exact."""
    n = 1000
    offsets = np.tile(np.array([0, 0x1000]), n // 2)
    data = HDR + CONF + RAM_START + mem_size(("pc.ram", 8 << 30)) + zero_records(offsets) + END
    (tmp_path / "s.bin").write_bytes(data)
    limit = trace_pass_limit((8 << 30) // 4096)
    assert limit == 102
    m = ramlab.open(tmp_path / "s.bin", images=Images(keep=False))
    assert m.error is None and m.records["zero"] == n
    assert m.trace.n_passes == limit and m.loader.tracker.merged
    assert any(f"more than {limit} passes" in w for w in m.warnings)
    assert m.trace.classes[: limit - 1].sum() == 2 * (limit - 1)  # two pages a pass, then the merged lap


def test_trace_passes_are_not_copied():
    """The finished trace is the tracker's own rows (no second copy of the passes)."""
    m = ramlab.open(DATA / "plain")
    assert np.shares_memory(m.trace.classes, m.loader.tracker.classes[0])
    assert np.shares_memory(m.trace.wire_bytes, m.loader.tracker.wire_bytes[-1])


def test_multifd_packets_keep_no_page_copies():
    """ramlab.open keeps the compressed payloads of a zstd channel, not its inflated pages (they are
    inflated again while applied), and the RAM is the same."""
    from ramlab.wire.multifd import ChannelInflater, MultifdChannelDecoder

    m = ramlab.open(DATA / "multifd-zstd")
    pkts = [p for p in m.multifd_packets[0] if isinstance(p, ev.MultifdPacket) and p.normal_pages]
    assert pkts and all(p.pages.shape == (0, 4096) for p in pkts)
    dec = MultifdChannelDecoder()
    dec.receive_data(m.channel_data[0])
    full = [p for p in dec.events() if isinstance(p, ev.MultifdPacket) and p.normal_pages]
    inflater = ChannelInflater()
    assert all(np.array_equal(inflater.pages(p), f.pages) for p, f in zip(pkts, full, strict=True))
    ram = ramlab.data_path("multifd-zstd") / "guest-ram.bin.zst"
    want = np.frombuffer(zstandard.ZstdDecompressor().decompress(ram.read_bytes(), max_output_size=1 << 30),
                         np.uint8)
    got = m.ram()
    outside_vga = np.r_[0:0xA0000, 0x100000 : len(want)]
    assert np.array_equal(got[outside_vga], want[outside_vga])


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


def test_records_budget_is_capped_by_the_machine_whatever_the_block_list_claims(monkeypatch):
    """A MEM_SIZE list claiming a petabyte would give 64 records a page; the machine cap keeps the
    offsets within MACHINE_SHARE_FOR_RECORDS of its memory (here a machine of 80 MiB: the floor)."""
    monkeypatch.setattr(mig, "MIN_RECORDS_BUDGET", 1000)
    monkeypatch.setattr(mig, "memory_limit", lambda: 64_000)  # x 1/8 / 8 B = 1000 records
    head = HDR + CONF + RAM_START + mem_size(("pc.ram", 1 << 50))
    data = head + zero_records(np.arange(1500, dtype=np.int64) * 0x1000) + END
    m = ramlab.open(data)
    assert isinstance(m.error, StreamError) and m.error.offset == len(head) + 16 + 9 * 999
    assert "at most 1,000 page records (the page offsets they keep" in str(m.error)
    assert sum(len(e) for e in m.events if isinstance(e, ev.RamPages)) == 1000


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

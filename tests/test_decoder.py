"""The savevm stream decoder and the destination model against real QEMU captures."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
from _shared import CAPTURES, CAPTURES_Q10, DATA, decode_all, guest_ram, needs_shared, outside_vga, read_zst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ramlab
from ramlab.errors import StreamError, TruncatedStream, UnsupportedFeature
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder

PRECOPY = ["idle-bios", "precopy-plain", "precopy-xbzrle", "precopy-compress"]


def meta(folder):
    return json.loads((folder / "meta.json").read_text())


CLEAN = read_zst(CAPTURES / "idle-bios" / "stream.bin.zst")[:200_000] if CAPTURES.is_dir() else b""


def located_records(events, end):
    """(kind, page offset, payload, start, end) per wire record (runs split), for prefix comparisons."""
    out = []
    ends = [e.offset for e in events[1:]] + [end]
    for e, stop in zip(events, ends):
        if isinstance(e, ev.RamPages):
            arr = e.data if e.data is not None else e.fill
            size = (stop - e.offset) // len(e) if not e.named else stop - e.offset
            for k in range(len(e)):
                start = e.offset + k * size
                out.append((e.kind, int(e.page_offsets[k]), bytes(arr[k]), start, start + size))
        else:
            out.append((type(e).__name__, e, stop - e.offset, e.offset, stop))
    return out


def flatten(events):
    """Per-record view of the events (runs split), to compare decodings with different runs."""
    flat = []
    for e in events:
        if isinstance(e, ev.RamPages):
            arr = e.data if e.data is not None else e.fill
            for i in range(len(e)):
                flat.append(("pages", e.kind, e.block, int(e.page_offsets[i]), bytes(arr[i])))
        else:
            flat.append(e)
    return flat


@pytest.mark.parametrize("name", PRECOPY)
@needs_shared
def test_precopy_counts_match_qemu(name):
    folder = CAPTURES / name
    m = ramlab.open(folder)
    assert m.error is None
    ram = meta(folder)["query_migrate_final"]["ram"]
    assert m.records["page"] == ram["normal"]
    if name == "precopy-compress":
        # QEMU 7.2 over-counts with compression: its counters bump at every worker flush.
        comp = meta(folder)["query_migrate_final"]["compression"]["pages"]
        assert 0 < ram["duplicate"] - m.records["zero"] <= 64
        assert 0 < comp - m.records["compressed"] <= 32
    else:
        assert m.records["zero"] == ram["duplicate"]
    if name == "precopy-xbzrle":
        x = meta(folder)["query_migrate_final"]["xbzrle-cache"]
        # cache hits include unchanged and overflowed pages that were not sent as XBZRLE
        assert m.records["xbzrle"] <= x["pages"]
        assert x["pages"] - m.records["xbzrle"] <= x["overflow"] + m.trace.n_passes * 4096


@pytest.mark.parametrize("name", PRECOPY + ["postcopy-faults"])
@needs_shared
def test_final_ram_equals_guest_dump(name):
    folder = CAPTURES / name
    m = ramlab.open(folder)
    ram = m.ram("pc.ram")
    g = guest_ram(folder)
    assert len(ram) == len(g)
    diff = np.flatnonzero(ram != g)
    assert len(outside_vga(diff)) == 0


@needs_shared
def test_postcopy_hugepages_block_list_and_ram():
    folder = CAPTURES / "postcopy-hugepages"
    m = ramlab.open(folder)
    assert m.error is None
    blocks = {b.name: b for b in m.blocks}
    assert blocks["m0"].page_size == 0x200000
    assert all(b.page_size is None for n, b in blocks.items() if n != "m0")
    assert m.discards == [("m0", 0, 0xC00000)]
    diff = np.flatnonzero(m.ram("m0") != guest_ram(folder))
    assert len(outside_vga(diff)) == 0
    r = meta(folder)["query_migrate_final"]["ram"]
    assert (m.records["page"], m.records["zero"]) == (r["normal"], r["duplicate"])


@needs_shared
def test_postcopy_faults_structure():
    folder = CAPTURES / "postcopy-faults"
    m = ramlab.open(folder)
    names = [e.name for e in m.events if isinstance(e, ev.Command)]
    assert names[:3] == ["OPEN_RETURN_PATH", "PING", "POSTCOPY_ADVISE"]
    assert names[3:] == ["POSTCOPY_RAM_DISCARD", "PING", "PACKAGED", "POSTCOPY_LISTEN", "PING",
                         "POSTCOPY_RUN", "PING"]
    pings = [e.value for e in m.events if isinstance(e, ev.Command) and e.name == "PING"]
    assert pings == [1, 2, 3, 4]
    # device sections sit inside the package, which ends right after POSTCOPY_RUN
    i_pkg = next(i for i, e in enumerate(m.events) if isinstance(e, ev.Command) and e.name == "PACKAGED")
    i_end = next(i for i, e in enumerate(m.events) if isinstance(e, ev.PackagedEnd))
    inner = m.events[i_pkg + 1 : i_end]
    assert sum(isinstance(e, ev.DeviceState) for e in inner) == 33
    assert m.events[i_end].offset == m.events[i_pkg].offset + 9 + m.events[i_pkg].value
    assert not any(isinstance(e, ev.VmDescription) for e in m.events)
    assert sum(n for _, _, n in m.discards) // 4096 == 1666
    assert m.trace.class_counts()[:, ramlab.trace.PageClass.DISCARDED].sum() == 1666
    r = meta(folder)["query_migrate_final"]["ram"]
    assert (m.records["page"], m.records["zero"]) == (r["normal"], r["duplicate"])


@needs_shared
def test_q10_plain_switchover_and_ram():
    folder = CAPTURES_Q10 / "q10-precopy-plain"
    m = ramlab.open(folder)
    assert m.error is None
    assert m.commands["SWITCHOVER_START"] == 1
    r = meta(folder)["query_migrate_final"]["ram"]
    assert (m.records["page"], m.records["zero"]) == (r["normal"], r["duplicate"])
    diff = np.flatnonzero(m.ram("pc.ram") != guest_ram(folder))
    assert len(outside_vga(diff)) == 0


@needs_shared
def test_chunked_feeding_gives_same_events():
    data = read_zst(CAPTURES / "precopy-xbzrle" / "stream.bin.zst")
    whole, err = decode_all(data)
    assert err is None
    rng = random.Random(1)
    chunks = [rng.choice([1, 7, 4096, 4104, 65536, 1 << 20]) for _ in range(200)]
    parts, err = decode_all(data, chunks=chunks)
    assert err is None
    assert parts == whole


@needs_shared
def test_byte_at_a_time_equals_whole():
    data = read_zst(CAPTURES / "idle-bios" / "stream.bin.zst")
    whole, err = decode_all(data)
    assert err is None
    dec = StreamDecoder()
    got = []
    for i in range(len(data)):
        dec.receive_data(data[i : i + 1])
        got.extend(dec.events())
    dec.close()
    got.extend(dec.events())
    assert got == whole


@needs_shared
def test_max_run_changes_grouping_not_records():
    data = read_zst(CAPTURES / "precopy-plain" / "stream.bin.zst")
    a, _ = decode_all(data)
    b, _ = decode_all(data, max_run=3)
    assert len(b) > len(a)
    assert flatten(a) == flatten(b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=10**9))
@needs_shared
def test_truncated_stream_yields_prefix(seed):
    data = read_zst(CAPTURES / "idle-bios" / "stream.bin.zst")
    whole, _ = decode_all(data)
    cut = seed % len(data)
    part, err = decode_all(data[:cut])
    assert isinstance(err, TruncatedStream)
    assert err.offset is not None and err.offset <= cut
    # everything decoded before the cut is what the whole decode has, record for record
    fp, fw = flatten(part), flatten(whole)
    assert fp == fw[: len(fp)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=255))
@needs_shared
def test_damaged_stream_raises_only_stream_errors(pos, xor):
    data = bytearray(CLEAN)
    i = pos % len(data)
    data[i] ^= xor
    m = ramlab.open(bytes(data))  # must not raise
    clean = ramlab.open(bytes(CLEAN))
    # every record that ends before the damaged byte is decoded exactly as in the clean stream
    before = [r for r in located_records(clean.events, clean.decoder.position) if r[-1] <= i]
    assert located_records(m.events, m.decoder.position)[: len(before)] == before
    if m.error is not None and before:
        assert m.error.offset is not None and m.error.offset >= before[-1][-1]


# ------------------------------------------------------------------ hand-made error cases
HDR = b"QEVM" + struct.pack(">I", 3)
CONF = b"\x07" + struct.pack(">I", 4) + b"test"
RAM_START = b"\x01" + struct.pack(">I", 2) + b"\x03ram" + struct.pack(">II", 0, 4)
FOOT = b"\x7e" + struct.pack(">I", 2)


def memsize(*blocks):
    total = sum(n for _, n in blocks)
    out = struct.pack(">Q", total | 0x04)
    for name, n in blocks:
        out += bytes([len(name)]) + name.encode() + struct.pack(">Q", n)
    return out


def ram_stream(records: bytes) -> bytes:
    return HDR + CONF + RAM_START + memsize(("pc.ram", 0x4000)) + records


def first_error(data: bytes) -> StreamError:
    _, err = decode_all(data)
    assert err is not None
    return err


@pytest.mark.parametrize(
    "data, message",
    [
        (b"QEVX" + b"\0" * 4, "not a QEMU migration stream"),
        (b"QEVM" + struct.pack(">I", 2), "version 2"),
        (b"QEVM" + struct.pack(">I", 4), "unsupported stream version"),
        (HDR + CONF + b"\x09", "unknown savevm section type"),
        (HDR + CONF + b"\x02" + struct.pack(">I", 9), "unknown section id"),
        (HDR + CONF + b"\x08" + struct.pack(">HH", 2, 3) + b"abc", "bad command length"),
        (HDR + CONF + b"\x08" + struct.pack(">HH", 0, 0), "unknown QEMU_VM_COMMAND"),
        (ram_stream(struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 3)), "mismatched section id"),
        (ram_stream(struct.pack(">Q", 0x10) + b"\x00"), "missing section footer"),
        (ram_stream(struct.pack(">Q", 0x22) + b"\x00"), "CONTINUE before any block name"),
        (ram_stream(struct.pack(">Q", 0x02) + b"\x03foo" + b"\x00"), "Unknown ramblock"),
        (ram_stream(struct.pack(">Q", 0x4002) + b"\x06pc.ram" + b"\x00"), "Illegal RAM offset"),
        (ram_stream(struct.pack(">Q", 0x40) + b"\x06pc.ram" + b"\x02" + struct.pack(">H", 1)),
         "bad XBZRLE encoding flag"),
        (ram_stream(struct.pack(">Q", 0x40) + b"\x06pc.ram" + b"\x01" + struct.pack(">H", 4097)),
         "XBZRLE length too large"),
        (ram_stream(struct.pack(">Q", 0x100) + b"\x06pc.ram" + struct.pack(">I", 4111)),
         "compressed page too long"),
        (ram_stream(struct.pack(">Q", 0x0A) + b"\x06pc.ram"), "Unknown combination of migration flags"),
        (ram_stream(struct.pack(">Q", 0x01)), "Unknown combination of migration flags"),
    ],
)
def test_invalid_streams_are_rejected_with_offsets(data, message):
    err = first_error(data)
    assert message in str(err)
    assert err.offset is not None and 0 <= err.offset < len(data)


def test_rdma_hook_is_unsupported():
    err = first_error(ram_stream(struct.pack(">Q", 0x80)))
    assert isinstance(err, UnsupportedFeature)


def test_zero_fill_byte_is_applied_and_page_offsets_scattered():
    page = bytes(range(256)) * 16
    records = (
        struct.pack(">Q", 0x1008) + b"\x06pc.ram" + page
        + struct.pack(">Q", 0x3028) + page
        + struct.pack(">Q", 0x1022) + b"\xab"        # ZERO with fill 0xab replaces the data
        + struct.pack(">Q", 0x3022) + b"\x00"        # ZERO with fill 0 clears it
        + struct.pack(">Q", 0x10) + FOOT + b"\x00"
    )
    m = ramlab.open(ram_stream(records))
    assert m.error is None
    ram = m.ram("pc.ram").reshape(-1, 4096)
    assert (ram[1] == 0xAB).all() and (ram[3] == 0).all() and (ram[0] == 0).all()
    assert m.destination.received("pc.ram").tolist() == [False, True, False, True]


@needs_shared
def test_truncated_capture_keeps_ram_decoded_so_far():
    data = read_zst(CAPTURES / "precopy-plain" / "stream.bin.zst")
    m = ramlab.open(data[: len(data) // 2])
    assert isinstance(m.error, TruncatedStream)
    assert m.records["page"] > 1000
    assert m.trace.error is not None


@pytest.mark.parametrize("which", [0.1, 0.5, 0.9])
def test_bad_xbzrle_record_keeps_everything_before_it(which):
    """A damaged XBZRLE record stops the load exactly where the stream cut before it would."""
    data = bytearray(read_zst(DATA / "xbzrle" / "stream.bin.zst"))
    records = [e for e in decode_all(bytes(data))[0] if isinstance(e, ev.RamXbzrle)]
    bad = records[int(len(records) * which)]
    start = bad.offset + 8 + (1 + len(bad.block) if bad.named else 0) + 3
    assert bytes(data[start : start + len(bad.data)]) == bad.data and len(bad.data) >= 2
    data[start : start + len(bad.data)] = bytes(len(bad.data))  # zero run 0, then an empty changed run
    damaged = ramlab.open(bytes(data))
    assert isinstance(damaged.error, StreamError) and "empty changed run" in str(damaged.error)
    assert damaged.error.offset == bad.offset
    cut = ramlab.open(bytes(data[: bad.offset]))
    assert isinstance(cut.error, TruncatedStream)
    assert np.array_equal(damaged.ram(bad.block), cut.ram(bad.block))
    whole = ramlab.open(DATA / "xbzrle")
    assert not np.array_equal(cut.ram(bad.block), whole.ram(bad.block))


@needs_shared
def test_memmap_images_equal_in_memory_images(tmp_path):
    from ramlab.model.destination import Images

    folder = CAPTURES / "precopy-plain"
    a = ramlab.open(folder)
    b = ramlab.open(folder, images=Images(folder=tmp_path, min_bytes=1 << 20))
    assert isinstance(b.destination.blocks["pc.ram"].pages, np.memmap)
    assert (tmp_path / "pc.ram.ramlab-image").stat().st_size == 64 << 20
    assert np.array_equal(a.ram("pc.ram"), b.ram("pc.ram"))


def test_offset_with_top_bit_set_inside_a_run_is_illegal():
    page = bytes(4096)
    records = (struct.pack(">Q", 0x0008) + b"\x06pc.ram" + page
               + struct.pack(">Q", 0x0022) + b"\x00"
               + struct.pack(">Q", 0x1022) + b"\x00"
               + struct.pack(">Q", (1 << 63) | 0x2022) + b"\x00"
               + struct.pack(">Q", 0x10) + FOOT + b"\x00")
    err = first_error(ram_stream(records))
    assert "Illegal RAM offset" in str(err) and "0x8000000000002000" in str(err)
    assert err.offset == len(HDR + CONF + RAM_START + memsize(("pc.ram", 0x4000))) + 8 + 7 + 4096 + 18


def test_xbzrle_after_postcopy_listen_is_rejected():
    listen = b"\x08" + struct.pack(">HH", 4, 0)
    advise = b"\x08" + struct.pack(">HHQQ", 3, 16, 0x1000, 0x1000)
    part = b"\x02" + struct.pack(">I", 2)
    xb = struct.pack(">Q", 0x40) + b"\x06pc.ram" + b"\x01" + struct.pack(">H", 2) + b"\x01\x01"
    stream = (HDR + CONF + advise + RAM_START + memsize(("pc.ram", 0x4000)) + struct.pack(">Q", 0x10) + FOOT
              + listen + part + xb)
    err = first_error(stream)
    assert "XBZRLE page while postcopy is running" in str(err)
    ok = stream[: -len(xb)] + struct.pack(">Q", 0x02) + b"\x06pc.ram" + b"\x00" + struct.pack(">Q", 0x10) + FOOT
    _, err = decode_all(ok + b"\x00")
    assert err is None


@pytest.mark.parametrize("damage,message", [
    ("name", "discard for an unknown RAM block"),
    ("unaligned", "Unaligned start address/length in postcopy discard"),
    ("past-end", "postcopy discard past the end of the block"),
])
def test_a_bad_discard_ends_in_m_error_naming_the_command(damage, message):
    """A POSTCOPY_RAM_DISCARD that QEMU's loader refuses stops the decode there: the error gives the
    command's byte offset and names it; everything before it stays (issue #13, item 1)."""
    data = bytearray(read_zst(DATA / "postcopy" / "fwd-0.bin.zst"))
    good = ramlab.open(bytes(data))
    cmd = next(e for e in good.events if isinstance(e, ev.Command) and e.name == "POSTCOPY_RAM_DISCARD")
    payload = cmd.offset + 5  # u8 section type, be16 command, be16 length
    name_len = data[payload + 1]
    first = payload + 2 + name_len + 1  # version, cstr8 name, u8 0, then be64 start / be64 length pairs
    if damage == "name":
        data[payload + 2] ^= 0x20
    elif damage == "unaligned":
        data[first + 7] |= 1
    else:
        data[first : first + 8] = struct.pack(">Q", 1 << 40)
    m = ramlab.open(bytes(data))
    assert isinstance(m.error, StreamError) and m.error.message == message
    assert m.error.offset == cmd.offset and m.error.section == "POSTCOPY_RAM_DISCARD"
    assert f"at byte {cmd.offset} in section 'POSTCOPY_RAM_DISCARD'" in str(m.error)
    before = [e for e in good.events if e.offset < cmd.offset]
    assert m.events[: len(before)] == before
    pages_before = {k: sum(len(e) for e in before if isinstance(e, ev.RamPages) and e.kind == flag)
                    for k, flag in (("zero", 0x02), ("page", 0x08))}
    assert pages_before["page"] > 0
    assert {k: m.records[k] for k in pages_before} == pages_before  # the RAM before the command was applied

"""QEMU 10 streams: real captures (shared ones and ``data/q10``), mapped-ram, version-aware details.

Every capture must decode with the record counts QEMU reported, give the source's RAM
(``pmemsave``) outside the VGA window, and re-encode byte for byte.
"""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
from _shared import CAPTURES_Q10, DATA, decode_all, guest_ram, outside_vga, read_zst

import ramlab
from ramlab.cli import main
from ramlab.errors import RamlabError, StreamError, UnsupportedFeature
from ramlab.model.destination import Destination
from ramlab.model.mapped_ram import apply_mapped_ram_area, area_pages
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.encoder import encode_event, encode_events, encode_stream, mem_size_record

Q10 = DATA / "q10"
MAPPED = Q10 / "q10-mapped-ram"
XBZRLE = Q10 / "q10-xbzrle"
POSTCOPY = Q10 / "q10-postcopy"
OURS = [MAPPED, XBZRLE, POSTCOPY]
SHARED_Q10 = [CAPTURES_Q10 / "q10-precopy-plain", CAPTURES_Q10 / "q10-multifd-zstd"]
TPS = 4096


def meta(folder):
    return json.loads((folder / "meta.json").read_text())


def qm_ram(folder):
    return meta(folder)["query_migrate_final"]["ram"]


def need(folder):
    if not folder.exists():
        pytest.skip(f"{folder} missing")


def main_stream(folder):
    for name in ("stream.bin.zst", "fwd-0.bin.zst", "channel-0.bin.zst"):
        if (folder / name).exists():
            return read_zst(folder / name)
    raise FileNotFoundError(folder)


def decode(data, chunks=None):
    events, err = decode_all(data, chunks)
    if err is not None:
        raise err
    return events


@pytest.fixture(scope="module")
def mapped_data():
    need(MAPPED)
    return read_zst(MAPPED / "stream.bin.zst")


# ---------------------------------------------------------------- every QEMU 10 capture
@pytest.mark.parametrize("folder", OURS + SHARED_Q10, ids=lambda p: p.name)
def test_ram_equals_pmemsave(folder):
    need(folder)
    m = ramlab.open(folder)
    assert m.error is None
    assert m.machine_type == "pc-i440fx-10.0"
    ram = m.ram("pc.ram")
    truth = guest_ram(folder)
    assert len(outside_vga(np.flatnonzero(ram != truth))) == 0


@pytest.mark.parametrize("folder", OURS + SHARED_Q10, ids=lambda p: p.name)
def test_round_trips_byte_exact(folder):
    need(folder)
    data = main_stream(folder)
    assert encode_stream(decode(data)) == data


@pytest.mark.parametrize("folder", [MAPPED, POSTCOPY, XBZRLE], ids=lambda p: p.name)
def test_cli_reencode(folder, tmp_path):
    need(folder)
    out = tmp_path / "out.bin"
    assert main(["reencode", str(folder), "-o", str(out), "-q"]) == 0
    assert out.read_bytes() == main_stream(folder)


def test_xbzrle_counts_equal_qemu():
    need(XBZRLE)
    m = ramlab.open(XBZRLE)
    ram, q = qm_ram(XBZRLE), meta(XBZRLE)["query_migrate_final"]["xbzrle-cache"]
    assert m.records["page"] == ram["normal"]
    assert m.records["zero"] == ram["duplicate"]
    assert m.records["xbzrle"] > 0
    # xbzrle-cache.pages also counts overflowing pages (sent as normal pages) and unchanged
    # pages (delta of length 0: nothing is sent), so the records are a lower bound
    assert m.records["xbzrle"] + q["overflow"] <= q["pages"]
    assert q["pages"] - m.records["xbzrle"] - q["overflow"] <= m.trace.n_passes * 4096


def test_postcopy_counts_equal_qemu():
    need(POSTCOPY)
    m = ramlab.open(POSTCOPY)
    ram = qm_ram(POSTCOPY)
    assert m.records["page"] == ram["normal"]
    assert m.records["zero"] == ram["duplicate"]
    assert len(m.requests) == ram["postcopy-requests"] > 0
    assert m.commands["SWITCHOVER_START"] == 1
    assert m.commands["POSTCOPY_RAM_DISCARD"] >= 1 and m.vmdesc is None
    names = [e.name for e in m.events if isinstance(e, ev.Command)]
    # QEMU 10 sends SWITCHOVER_START right after ADVISE, before the discards and the package
    assert names.index("SWITCHOVER_START") < names.index("PACKAGED")


def test_plain_counts_equal_qemu():
    folder = SHARED_Q10[0]
    need(folder)
    m = ramlab.open(folder)
    ram = qm_ram(folder)
    assert (m.records["page"], m.records["zero"]) == (ram["normal"], ram["duplicate"])


def test_shared_multifd_opens_with_zero_pages():
    folder = SHARED_Q10[1]
    need(folder)
    m = ramlab.open(folder)
    assert m.error is None and len(m.channel_data) == 2
    packets = [p for chan in m.multifd_packets for p in chan]
    zero = sum(getattr(p, "zero_pages", 0) for p in packets)
    assert zero == qm_ram(folder)["duplicate"]
    assert any(isinstance(e, ev.RamMultifdFlush) for e in m.events)
    assert not any(isinstance(e, ev.RamPages) and e.kind == 0x02 for e in m.events)


# ---------------------------------------------------------------- configuration + vmdesc (QEMU 10)
def test_configuration_capabilities_subsection():
    """10.0 lists the capabilities it validates on both ends: mapped-ram is one, xbzrle is not."""
    need(MAPPED)
    conf = next(e for e in ramlab.open(MAPPED).events if isinstance(e, ev.Configuration))
    assert conf.capabilities == ("mapped-ram",)
    assert [s[0] for s in conf.subsections] == ["configuration/capabilities"]
    assert conf.body.endswith(b"\x00\x00\x00\x01\x0amapped-ram")
    for folder in (XBZRLE, POSTCOPY, *SHARED_Q10):
        if folder.exists():
            conf = next(e for e in ramlab.open(folder).events if isinstance(e, ev.Configuration))
            assert conf.capabilities == () and conf.subsections == ()


@pytest.mark.parametrize("folder", [MAPPED, XBZRLE, SHARED_Q10[0]], ids=lambda p: p.name)
def test_vmdesc_describes_configuration(folder):
    need(folder)
    m = ramlab.open(folder)
    assert m.vmdesc["configuration"]["vmsd_name"] == "configuration"


@pytest.mark.parametrize("folder", [MAPPED, XBZRLE, POSTCOPY], ids=lambda p: p.name)
def test_switchover_start_has_no_payload(folder):
    need(folder)
    cmds = [e for e in ramlab.open(folder).events if isinstance(e, ev.Command) and e.cmd == 11]
    assert len(cmds) == 1 and cmds[0].payload == b"" and cmds[0].name == "SWITCHOVER_START"


# ---------------------------------------------------------------- mapped-ram
def test_mapped_ram_counts_equal_qemu(mapped_data):
    """Guest paused: each page scanned once; normal = bits set, duplicate = bits clear."""
    m = ramlab.open(MAPPED)
    ram = qm_ram(MAPPED)
    areas = [e for e in m.events if isinstance(e, ev.MappedRamArea)]
    assert [a.block for a in areas] == [b.name for b in m.blocks]
    present = sum(int(a.present().sum()) for a in areas)
    total_pages = sum(b.used_length for b in m.blocks) // TPS
    assert m.records["mapped"] == present == ram["normal"]
    assert total_pages - present == ram["duplicate"]
    assert m.records["page"] == m.records["zero"] == 0
    assert m.summary()["records"]["mapped"] == present


def test_mapped_ram_layout(mapped_data):
    """Header, bitmap straight after it (64-bit words), 1 MiB aligned page area, stream resumes after it."""
    events = decode(mapped_data)
    ms = next(e for e in events if isinstance(e, ev.RamMemSize))
    areas = [e for e in events if isinstance(e, ev.MappedRamArea)]
    i = events.index(ms)
    assert events[i + 1 : i + 1 + len(areas)] == areas  # the areas follow the list
    for b, a in zip(ms.blocks, areas, strict=True):
        version, psize, bitmap_off, pages_off = b.mapped_ram
        assert (version, psize) == (1, TPS)
        assert a.bitmap_offset == bitmap_off == a.offset  # right after the 28-byte header
        assert pages_off % (1 << 20) == 0 and pages_off >= bitmap_off + 8 * -(-b.used_length // TPS // 64)
        assert len(a.bitmap) == -(-b.used_length // TPS // 8)
        assert bytes(a.region[: len(a.bitmap)]) == a.bitmap
        assert isinstance(a.region, memoryview) and len(a.region) == a.end - a.offset
    # the next entry (or the EOS) starts where the previous area ends
    eos = events[i + 1 + len(areas)]
    assert isinstance(eos, ev.RamEos) and eos.offset == areas[-1].end


def test_mapped_ram_pages_are_views(mapped_data):
    events = decode(mapped_data)
    area = next(e for e in events if isinstance(e, ev.MappedRamArea) and e.block == "pc.ram")
    pages = area_pages(area, mapped_data)
    assert pages.shape == (area.n_pages, TPS) and not pages.flags.owndata and not pages.flags.writeable
    truth = guest_ram(MAPPED).reshape(-1, TPS)
    idx = np.flatnonzero(area.present())
    idx = idx[(idx < 0xA0) | (idx >= 0x100)]
    assert np.array_equal(pages[idx], truth[idx])
    # a page whose bit is clear is all zero at the source (the dump reads VGA at 0xA0000-0xBFFFF)
    clear = np.flatnonzero(~area.present())
    clear = clear[(clear < 0xA0) | (clear >= 0x100)]
    assert not truth[clear].any()


def test_mapped_ram_chunked_feed_bounded_memory(mapped_data):
    """Fed in 64 KiB chunks, the decoder keeps only bitmaps: same events, no region views."""
    whole = decode(mapped_data)
    dec = StreamDecoder()
    got, peak, chunk = [], 0, 1 << 16
    for i in range(0, len(mapped_data), chunk):
        dec.receive_data(mapped_data[i : i + chunk])
        peak = max(peak, len(dec._buf) - dec._pos)
        got.extend(dec.events())
    dec.close()
    got.extend(dec.events())
    assert peak <= 2 * chunk
    assert len(got) == len(whole)
    for a, b in zip(got, whole, strict=True):
        assert a == b
    areas = [e for e in got if isinstance(e, ev.MappedRamArea)]
    assert areas and all(a.region is None for a in areas)
    with pytest.raises(RamlabError, match="source="):
        encode_stream(got)
    assert b"".join(encode_events(got, source=mapped_data)) == mapped_data


def test_mapped_ram_random_chunks(mapped_data):
    rng = random.Random(7)
    chunks = [rng.choice([1, 7, 28, 4096, 300000, 1 << 20]) for _ in range(200)]
    got = decode(mapped_data, chunks)
    assert got == decode(mapped_data)


def test_mapped_ram_file_is_mmapped_and_reencodes(tmp_path):
    """An uncompressed file is an mmap: the areas are views of it, nothing is read whole."""
    need(MAPPED)
    path = tmp_path / "stream.bin"
    path.write_bytes(read_zst(MAPPED / "stream.bin.zst"))
    import ramlab.migration as mig

    m = mig.Migration(path, progress=False)
    assert m.error is None and isinstance(m.data, memoryview)
    areas = [e for e in m.events if isinstance(e, ev.MappedRamArea)]
    assert all(isinstance(a.region, memoryview) for a in areas)
    assert b"".join(encode_events(m.events)) == path.read_bytes()


def _patched(data: bytes, block_index: int, field_off: int, fmt: str, value: int) -> tuple[bytes, int]:
    events = decode(data)
    ms = next(e for e in events if isinstance(e, ev.RamMemSize))
    areas = [e for e in events if isinstance(e, ev.MappedRamArea)]
    b = ms.blocks[block_index]
    hdr = areas[block_index].offset - 28 if block_index < len(areas) else None
    assert hdr is not None and data[hdr : hdr + 4] == b"\x00\x00\x00\x01"
    at = hdr + field_off
    raw = bytearray(data)
    raw[at : at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    assert b.name
    return bytes(raw), at


@pytest.mark.parametrize(
    "field_off, fmt, value, message",
    [
        (0, ">I", 2, "version not supported"),
        (4, ">Q", 8192, "page size"),
        (20, ">Q", 0x100000 + 512, "bad alignment"),
        (20, ">Q", 0, "before the end of its header"),
    ],
)
def test_mapped_ram_header_validation(mapped_data, field_off, fmt, value, message):
    data, at = _patched(mapped_data, 0, field_off, fmt, value)
    dec = StreamDecoder()
    dec.receive_data(data)
    with pytest.raises(StreamError, match=message) as info:
        dec.close()
        list(dec.events())
    assert info.value.offset == at and info.value.section == "ram"


def test_mapped_ram_bitmap_out_of_reach(mapped_data):
    data, at = _patched(mapped_data, 0, 12, ">Q", 16)  # bitmap inside the file header: already read
    m = ramlab.open(data)
    assert isinstance(m.error, UnsupportedFeature) and m.error.offset == at


def test_mapped_ram_truncated_in_area(mapped_data):
    m = ramlab.open(mapped_data[: 0x180000])
    assert isinstance(m.error, StreamError)
    assert m.error.offset == 0x180000 and "ends inside a mapped-ram area" in str(m.error)
    assert "the area of 'pc.ram' up to offset" in str(m.error)


# ---------------------------------------------------------------- hand-made mapped-ram streams
def _config_body(machine: str, caps: tuple[str, ...]) -> bytes:
    body = struct.pack(">I", len(machine)) + machine.encode()
    if caps:
        name = b"configuration/capabilities"
        body += bytes([5, len(name)]) + name + struct.pack(">II", 1, len(caps))
        body += b"".join(bytes([len(c)]) + c.encode() for c in caps)
    return body


def _handmade(stale: bool = True, ignored_block: bool = False) -> tuple[bytes, bytes]:
    """Block ``a`` (4 pages, pages 1 and 3 present, page 2 stale) and ``b`` (1 page, present)."""
    caps = ("x-ignore-shared", "mapped-ram") if ignored_block else ("mapped-ram",)
    head = [
        ev.FileHeader(3),
        ev.Configuration("pc-i440fx-10.0", _config_body("pc-i440fx-10.0", caps), caps),
        ev.SectionHeader(1, 2, "ram", 0, 4),
    ]
    prefix = encode_stream(head)
    blocks_plain = [("a", 4 * TPS), ("b", TPS)] + ([("shared", 2 * TPS)] if ignored_block else [])
    pos = len(prefix) + 8
    entries, areas, regions = [], [], []
    page_a = [bytes([i + 1]) * TPS for i in range(4)]
    for name, used in blocks_plain:
        pos += 1 + len(name) + 8 + (8 if ignored_block else 0) + 28
        mr = 0x100000 if ignored_block else None
        if name == "shared":
            entries.append(ev.RamBlockEntry(name, used, None, mr, (1, TPS, 0, 0)))
            continue
        n = used // TPS
        bitmap_off = pos
        pages_off = -(-(bitmap_off + 8) // 0x10000) * 0x10000
        bits = 0b1010 if name == "a" else 0b1
        region = bytearray(pages_off + used - pos)
        region[0] = bits
        for i in range(n):
            page = page_a[i] if name == "a" else b"\x42" * TPS
            if bits >> i & 1 or (stale and i == 2):
                region[pages_off - pos + i * TPS : pages_off - pos + (i + 1) * TPS] = page
        entries.append(ev.RamBlockEntry(name, used, None, mr, (1, TPS, bitmap_off, pages_off)))
        areas.append(ev.MappedRamArea(name, TPS, bitmap_off, pages_off, bytes([bits]), used, pos,
                                      region=bytes(region)))
        regions.append(bytes(region))
        pos = pages_off + used
    total = sum(u for _, u in blocks_plain)
    tail = [ev.RamEos(), ev.SectionFooter(2), ev.EndOfFile()]
    events = [*head, ev.RamMemSize(total, tuple(entries)), *areas, *tail]
    data = encode_stream(events)
    assert data.startswith(prefix)
    return data, mem_size_record(entries, total, areas)


@pytest.mark.parametrize("ignored_block", [False, True])
def test_handmade_mapped_ram(ignored_block):
    data, _ = _handmade(ignored_block=ignored_block)
    events = decode(data)
    assert encode_stream(events) == data
    m = ramlab.open(data)
    assert m.error is None
    a = m.ram("a").reshape(-1, TPS)
    assert a[1, 0] == 2 and a[3, 0] == 4
    assert not a[0].any() and not a[2].any()  # page 2 has stale bytes in the file but its bit is clear
    assert m.ram("b")[0] == 0x42
    assert list(m.destination.received("a")) == [False, True, False, True]
    areas = [e for e in events if isinstance(e, ev.MappedRamArea)]
    assert [x.block for x in areas] == ["a", "b"]
    if ignored_block:
        assert m.blocks[-1].mapped_ram == (1, TPS, 0, 0) and m.blocks[-1].mr_addr == 0x100000
        assert not m.ram("shared").any()


def test_encoder_needs_the_areas():
    data, _ = _handmade()
    events = decode(data)
    ms = next(e for e in events if isinstance(e, ev.RamMemSize))
    with pytest.raises(RamlabError, match="encode_events"):
        encode_event(ms)
    with pytest.raises(RamlabError, match="needs 2 MappedRamArea events, got 0"):
        encode_stream([ms])
    with pytest.raises(RamlabError, match="MappedRamArea"):
        encode_stream([e for e in events if not isinstance(e, ev.MappedRamArea)])


def test_apply_area_rejects_mismatch():
    dst = Destination([ev.RamBlockEntry("a", 2 * TPS)])
    area = ev.MappedRamArea("a", TPS, 0, 0, b"\x01", 4 * TPS, 0, region=bytes(4 * TPS))
    with pytest.raises(StreamError, match="does not match"):
        apply_mapped_ram_area(dst, area)
    short = ev.MappedRamArea("a", TPS, 0, TPS, b"\x03", 2 * TPS, 0)
    with pytest.raises(StreamError, match="past the end"):
        apply_mapped_ram_area(dst, short, bytes(2 * TPS))


def test_module_doctests():
    import doctest
    import importlib

    for name in ("ramlab.model.mapped_ram", "ramlab.provenance"):
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0 and result.attempted > 0

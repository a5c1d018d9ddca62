"""Tests of the multifd channel codec (ramlab.wire.multifd) against real QEMU captures.

Captures: ``shared/captures/multifd-zstd`` (QEMU 7.2, 2 channels, zstd) and
``shared/captures-qemu10/q10-multifd-zstd`` (QEMU 10.0, zero pages in the packets), which
skip where the shared captures are absent; and ramlab's own ``ramlab/data/multifd-zstd``
(QEMU 7.2, 2 channels, zstd), present in every checkout: the chunking, truncation, damage and
fuzzing tests use it, so they run anywhere.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import zstandard
from _shared import DATA, SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramlab.constants import MULTIFD_FLAG_SYNC, MULTIFD_FLAG_ZLIB, MULTIFD_FLAG_ZSTD
from ramlab.errors import RamlabError, StreamError, TruncatedStream, UnsupportedFeature
from ramlab.wire.multifd import (
    MULTIFD_MAX_PAYLOAD,
    MultifdChannelDecoder,
    MultifdChannelEncoder,
    MultifdDeviceState,
    MultifdHandshake,
    MultifdPacket,
    decode_channel,
    encode_device_state,
    encode_handshake,
    encode_packet,
    epochs,
    packet_header_size,
)

Q72 = SHARED / "captures" / "multifd-zstd"
Q10 = SHARED / "captures-qemu10" / "q10-multifd-zstd"
BUNDLED = DATA / "multifd-zstd"  # channel-1 holds id 0, channel-2 id 1
HDR = packet_header_size(4096)
LEGACY = range(0xA0000 // 4096, 0x100000 // 4096)  # VGA / BIOS window: pmemsave does not read RAM

needs_72 = pytest.mark.skipif(not Q72.is_dir(), reason="multifd-zstd capture not available")
needs_10 = pytest.mark.skipif(not Q10.is_dir(), reason="q10-multifd-zstd capture not available")


@cache
def _load(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())


@cache
def _meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


@cache
def _decoded(folder: Path, ch: int) -> tuple:
    return tuple(decode_channel(_load(folder / f"channel-{ch}.bin.zst")))


def _packets(folder: Path, ch: int) -> list[MultifdPacket]:
    return [e for e in _decoded(folder, ch) if isinstance(e, MultifdPacket)]


def _drain(dec: MultifdChannelDecoder) -> tuple[list, StreamError | None]:
    out: list = []
    dec.close()
    try:
        for ev in dec.events():
            out.append(ev)
    except StreamError as exc:
        return out, exc
    return out, None


# --- real QEMU 7.2 channels -----------------------------------------------------------


@needs_72
@pytest.mark.parametrize("ch, channel_id", [(1, 0), (2, 1)])
def test_q72_handshake(ch: int, channel_id: int) -> None:
    hs = _decoded(Q72, ch)[0]
    assert isinstance(hs, MultifdHandshake)
    assert (hs.magic, hs.version, hs.uuid, hs.channel_id, hs.offset) == (
        0x11223344,
        1,
        bytes(16),
        channel_id,
        0,
    )
    assert _decoded(Q72, ch)[1].offset == 64


@needs_72
@pytest.mark.parametrize("ch", [1, 2])
def test_q72_sync_count_equals_ram_eos(ch: int) -> None:
    ram_eos = _meta(Q72)["stream_walk"]["ram_flags"]["0x010"]
    assert ram_eos == 21
    packets = _packets(Q72, ch)
    assert sum(p.sync for p in packets) == ram_eos
    assert packets[0].sync and packets[0].normal_pages == 0  # setup sync: empty SYNC first
    assert packets[-1].sync or (packets[-1].flags == 0 and packets[-2].flags & MULTIFD_FLAG_SYNC)
    assert {p.pages_alloc for p in packets} == {128}


@needs_72
def test_q72_page_counts_against_qemu_counters() -> None:
    normal = _meta(Q72)["query_migrate_final"]["ram"]["normal"]
    keys: list[tuple[int, str, int]] = []
    for ch in (1, 2):
        for epoch, p in epochs(_decoded(Q72, ch)):
            assert p.zero_pages == 0 and p.zero_offsets.size == 0
            keys += [(epoch, p.ramblock, int(o)) for o in p.normal_offsets]
    assert len(set(keys)) == normal == 11745
    assert len(keys) == 6079 + 5734 == normal + 68  # 68 duplicate pages (7.2 sender bug)


@needs_72
def test_q72_duplicate_pages_have_the_known_shape() -> None:
    """A duplicate is the last page of a full packet, repeated first in a later packet."""
    where: dict[tuple, list[tuple[int, int]]] = defaultdict(list)  # key -> (position, count)
    for ch in (1, 2):
        for epoch, p in epochs(_decoded(Q72, ch)):
            for i, o in enumerate(p.normal_offsets):
                where[(epoch, p.ramblock, int(o))].append((i, p.normal_pages))
    dups = {k: v for k, v in where.items() if len(v) > 1}
    assert len(dups) == 68
    for copies in dups.values():
        assert len(copies) == 2
        assert sorted(copies)[0][0] == 0  # one copy opens a packet
        assert (127, 128) in copies  # the other closes a full packet


@needs_72
@pytest.mark.parametrize("ch", [1, 2])
def test_q72_stale_fields_and_payloads(ch: int) -> None:
    packets = _packets(Q72, ch)
    empty = [p for p in packets if p.normal_pages == 0]
    assert all(p.payload_len == 0 and p.payload == b"" for p in empty)
    assert sum(p.next_packet_size != 0 for p in empty) >= len(empty) - 1  # stale size, no payload
    assert packets[0].ramblock == "" and all(p.ramblock for p in empty[1:])  # stale names
    flags = Counter(p.flags for p in packets)
    assert flags[0x5] == flags[0x0] == 3  # SYNC riding on data, then an empty flags-0 packet
    assert set(flags) == {0x1, 0x4, 0x5, 0x0}
    data = [p for p in packets if p.normal_pages]
    assert all(p.payload_len == p.next_packet_size for p in data)
    assert data[0].payload[:4] == b"\x28\xb5\x2f\xfd"  # one zstd frame per channel
    assert all(p.payload[:4] != b"\x28\xb5\x2f\xfd" for p in data[1:])
    assert any(p.stale_offsets.any() for p in packets)  # offsets left over from earlier packets
    for p in packets:
        assert p.pages.shape == (p.normal_pages, 4096) and p.pages.dtype == np.uint8
        assert p.normal_offsets.dtype == np.int64
        assert p.end == p.offset + HDR + p.payload_len


@needs_72
def test_q72_rebuilt_pc_ram_matches_guest_ram() -> None:
    """For each pc.ram page, its copy from the last epoch it was sent in equals guest RAM,
    except pages zeroed afterwards by a main-stream ZERO record (guest page all zero now)
    and the legacy 0xA0000-0xFFFFF window. Pages of the final epoch must match strictly."""
    guest = np.frombuffer(_load(Q72 / "guest-ram.bin.zst"), np.uint8).reshape(-1, 4096)
    last: dict[int, tuple[int, list[np.ndarray]]] = {}
    final = 0
    for ch in (1, 2):
        for epoch, p in epochs(_decoded(Q72, ch)):
            if p.ramblock != "pc.ram":
                continue
            final = max(final, epoch if p.normal_pages else 0)
            for o, page in zip(p.normal_offsets, p.pages):
                k = int(o) // 4096
                if k not in last or last[k][0] < epoch:
                    last[k] = (epoch, [page])
                elif last[k][0] == epoch:
                    last[k][1].append(page)  # duplicate-page bug: either copy may apply
    matched = zeroed_later = final_pages = 0
    for k, (epoch, copies) in last.items():
        if k in LEGACY:
            continue
        ok = any(np.array_equal(c, guest[k]) for c in copies)
        if epoch == final:
            assert ok, f"final-epoch page {k * 4096:#x} differs from guest RAM"
            final_pages += 1
        if ok:
            matched += 1
        else:
            assert not guest[k].any(), f"page {k * 4096:#x} (epoch {epoch}) differs from guest RAM"
            zeroed_later += 1
    assert final == 20
    assert matched == 1962 and zeroed_later == 251 and final_pages == 1158


# --- real QEMU 10.0 channels ----------------------------------------------------------


@needs_10
@pytest.mark.parametrize("ch", [1, 2])
def test_q10_syncs_and_header_only_sync_packets(ch: int) -> None:
    walk = _meta(Q10)["stream_walk"]
    packets = _packets(Q10, ch)
    syncs = [p for p in packets if p.sync]
    assert len(syncs) == walk["ram_flags"]["0x200"] == walk["ram_flags"]["0x010"] == 16
    assert all(p.pages_alloc == 0 and p.normal_pages == p.zero_pages == 0 for p in syncs)
    assert all(p.ramblock == "" and p.next_packet_size == 0 and p.flags == 0x1 for p in syncs)
    assert _decoded(Q10, ch)[0].channel_id == ch - 1


@needs_10
def test_q10_page_counts_against_qemu_counters() -> None:
    ram = _meta(Q10)["query_migrate_final"]["ram"]
    normal: list[tuple] = []
    zero: list[tuple] = []
    per_channel = []
    for ch in (1, 2):
        packets = _packets(Q10, ch)
        per_channel.append((sum(p.normal_pages for p in packets), sum(p.zero_pages for p in packets)))
        for epoch, p in epochs(_decoded(Q10, ch)):
            normal += [(epoch, p.ramblock, int(o)) for o in p.normal_offsets]
            zero += [(epoch, p.ramblock, int(o)) for o in p.zero_offsets]
            assert p.pages.shape == (p.normal_pages, 4096)
            if p.zero_pages and not p.normal_pages:
                assert p.payload_len == 0 and p.flags == MULTIFD_FLAG_ZSTD
    assert per_channel == [(6488, 12159), (6736, 8570)]
    # QEMU 10: `normal` = normal pages in packets, `duplicate` = zero pages in packets.
    assert len(normal) == len(set(normal)) == ram["normal"] == 13224
    assert len(zero) == len(set(zero)) == ram["duplicate"] == 20729


@needs_10
def test_q10_rebuilt_pc_ram_equals_guest_ram() -> None:
    """QEMU 10 sends every page (normal or zero) on the channels: rebuild pc.ram from them."""
    guest = np.frombuffer(_load(Q10 / "guest-ram.bin.zst"), np.uint8).reshape(-1, 4096)
    by_epoch: dict[int, list[MultifdPacket]] = defaultdict(list)
    for ch in (1, 2):
        for epoch, p in epochs(_decoded(Q10, ch)):
            by_epoch[epoch].append(p)
    ram = np.zeros_like(guest)
    seen = np.zeros(len(guest), bool)
    for epoch in sorted(by_epoch):
        for p in by_epoch[epoch]:
            if p.ramblock != "pc.ram":
                continue
            idx = p.normal_offsets // 4096
            ram[idx] = p.pages
            ram[p.zero_offsets // 4096] = 0
            seen[idx] = seen[p.zero_offsets // 4096] = True
    assert seen.all()
    differ = np.flatnonzero((ram != guest).any(axis=1))
    assert [int(k) for k in differ if k not in LEGACY] == []


@needs_10
def test_q10_forced_72_layout_ignores_zero_pages() -> None:
    raw = _load(Q10 / "channel-1.bin.zst")
    events = decode_channel(raw, layout="7.2")
    packets = [e for e in events if isinstance(e, MultifdPacket)]
    assert all(p.zero_pages == 0 for p in packets)
    assert sum(p.normal_pages for p in packets) == 6488
    assert MultifdChannelEncoder().encode_events(events) == raw


# --- byte-exact re-encoding, chunking, truncation, damage -----------------------------

CHANNELS = [pytest.param(BUNDLED, 1, id="bundled-1"), pytest.param(BUNDLED, 2, id="bundled-2")]
CHANNELS += [pytest.param(Q72, 1, marks=needs_72), pytest.param(Q72, 2, marks=needs_72)]
CHANNELS += [pytest.param(Q10, 1, marks=needs_10), pytest.param(Q10, 2, marks=needs_10)]


@pytest.mark.parametrize("folder, ch", CHANNELS)
def test_reencode_is_byte_exact(folder: Path, ch: int) -> None:
    raw = _load(folder / f"channel-{ch}.bin.zst")
    events = _decoded(folder, ch)
    assert MultifdChannelEncoder().encode_events(events) == raw
    assert events[-1].end == len(raw)


def _prefix(folder: Path, ch: int, n_packets: int) -> bytes:
    packets = _packets(folder, ch)
    return _load(folder / f"channel-{ch}.bin.zst")[: packets[n_packets - 1].end]


@pytest.mark.parametrize("folder, ch", CHANNELS)
def test_byte_at_a_time_equals_whole(folder: Path, ch: int) -> None:
    data = _prefix(folder, ch, 4)
    whole = decode_channel(data)
    dec = MultifdChannelDecoder()
    got = []
    for i in range(len(data)):
        dec.receive_data(data[i : i + 1])
        got.extend(dec.events())
    dec.close()
    assert len(got) == len(whole) == 5
    assert got == whole


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_random_chunks_equal_whole(cuts: list[int]) -> None:
    data = _prefix(BUNDLED, 2, 6)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    dec = MultifdChannelDecoder()
    got = []
    for a, b in zip(points, points[1:]):
        dec.receive_data(bytearray(data[a:b]))  # bytearray: must be copied, not kept
        got.extend(dec.events())
    dec.close()
    assert got == decode_channel(data)


@pytest.mark.parametrize("where", ["handshake", "header", "payload"])
def test_truncated_channel(where: str) -> None:
    raw = _load(BUNDLED / "channel-1.bin.zst")
    packets = _packets(BUNDLED, 1)
    target = packets[3]
    assert target.normal_pages and target.payload_len > 17
    cut = {"handshake": 30, "header": target.offset + 100, "payload": target.payload_offset + 17}[where]
    dec = MultifdChannelDecoder()
    dec.receive_data(raw[:cut])
    events, err = _drain(dec)
    assert isinstance(err, TruncatedStream)
    if where == "handshake":
        assert err.offset == 0 and events == []
    else:
        assert err.offset == target.offset
        assert events == list(_decoded(BUNDLED, 1)[:4])  # handshake + the 3 packets before
    with pytest.raises(TruncatedStream):
        dec.next_event()  # the decoder stays failed


def _damaged(raw: bytes, at: int, value: bytes) -> bytes:
    return raw[:at] + value + raw[at + len(value) :]


@pytest.mark.parametrize(
    "field, rel, value, exc, err_rel",
    [
        ("magic", 0, b"\0\0\0\0", StreamError, 0),
        ("version", 4, struct.pack(">I", 2), StreamError, 4),
        ("flags zlib in a zstd channel", 8, struct.pack(">I", MULTIFD_FLAG_ZLIB), StreamError, 8),
        ("flags qpl", 8, struct.pack(">I", 0x8), UnsupportedFeature, 8),
        ("flags unknown method", 8, struct.pack(">I", 0x6), StreamError, 8),
        ("pages_alloc", 12, struct.pack(">I", 129), StreamError, 12),
        ("normal_pages", 16, struct.pack(">I", 200), StreamError, 16),
        ("zero_pages", 32, struct.pack(">I", 1), StreamError, 32),
        ("next_packet_size huge", 20, struct.pack(">I", MULTIFD_MAX_PAYLOAD + 1), StreamError, 20),
        ("unaligned offset", 320 + 8 * 5 + 7, b"\x01", StreamError, 320 + 40),
        ("payload", HDR, b"\xff\xff\xff\xff\xff\xff", StreamError, HDR),
    ],
)
def test_damaged_packet(field: str, rel: int, value: bytes, exc: type, err_rel: int) -> None:
    raw = _load(BUNDLED / "channel-1.bin.zst")
    packets = _packets(BUNDLED, 1)
    target = packets[3]  # a full zstd data packet, after the channel's first payload
    assert (target.flags, target.normal_pages) == (MULTIFD_FLAG_ZSTD, 128)
    if field == "payload":
        target = packets[1]  # the first payload: corrupt the zstd frame header
        assert target.payload[:4] == b"\x28\xb5\x2f\xfd"
    dec = MultifdChannelDecoder()
    dec.receive_data(_damaged(raw[: packets[6].end], target.offset + rel, value))
    events, err = _drain(dec)
    assert type(err) is exc, (field, err)
    assert err.offset == target.offset + err_rel, (field, str(err))
    before = [e for e in _decoded(BUNDLED, 1) if e.offset < target.offset]
    assert events == before


def test_damaged_next_packet_size_is_caught_downstream() -> None:
    raw = _load(BUNDLED / "channel-1.bin.zst")
    target = _packets(BUNDLED, 1)[3]
    assert target.normal_pages
    bad = _damaged(raw, target.offset + 20, struct.pack(">I", target.next_packet_size - 3))
    dec = MultifdChannelDecoder()
    dec.receive_data(bad)
    events, err = _drain(dec)
    assert isinstance(err, StreamError)
    assert err.offset >= target.offset
    assert len(events) >= 3


def test_bad_handshake() -> None:
    raw = _load(BUNDLED / "channel-1.bin.zst")
    for at, value, off in [(0, b"QEVM", 0), (4, struct.pack(">I", 7), 4)]:
        dec = MultifdChannelDecoder()
        dec.receive_data(_damaged(raw[:200], at, value))
        with pytest.raises(StreamError) as info:
            dec.next_event()
        assert info.value.offset == off
        assert "handshake" in str(info.value)


# --- fuzzing --------------------------------------------------------------------------


def _synthetic_channel(compression: str, layout: str = "7.2") -> bytes:
    rng = np.random.default_rng(1)
    enc = MultifdChannelEncoder(compression=compression, layout=layout)
    out = [enc.handshake(channel_id=1), enc.sync_packet()]
    for i in range(4):
        pages = rng.integers(0, 4, size=(3 + i, 4096), dtype=np.uint8)
        zero = [0x100000 + 0x1000 * j for j in range(i)] if layout != "7.2" else []
        out.append(
            enc.packet("pc.ram", [0x1000 * (j + 8 * i) for j in range(3 + i)], pages, zero_offsets=zero)
        )
        if i == 1:
            out.append(enc.sync_packet())
    out.append(enc.sync_packet())
    return b"".join(out)


FUZZ_INPUTS = {
    "zlib": _synthetic_channel("zlib"),
    "zstd": _synthetic_channel("zstd"),
    "none": _synthetic_channel("none"),
    "zstd-10": _synthetic_channel("zstd", "10.0"),
    "device": encode_handshake() + encode_device_state("vfio", 0, b"x" * 40) + encode_packet(flags=1),
}


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(FUZZ_INPUTS)),
    edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 10**7)),
    chunk=st.sampled_from([0, 1, 7, 1000]),
)
def test_fuzz_only_ramlab_errors(name: str, edits: list, cut: int | None, chunk: int) -> None:
    data = bytearray(FUZZ_INPUTS[name])
    for at, value in edits:
        data[at % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    dec = MultifdChannelDecoder()
    events: list = []
    try:
        if chunk:
            for i in range(0, len(data), chunk):
                dec.receive_data(bytes(data[i : i + chunk]))
                events.extend(dec.events())
        else:
            dec.receive_data(bytes(data))
            events.extend(dec.events())
        dec.close()
    except StreamError as exc:  # anything else (IndexError, zlib.error, ZstdError...) fails the test
        assert exc.offset is not None and 0 <= exc.offset <= len(data)
        assert all(e.offset < exc.offset for e in events)  # everything before the damage came out
    for ev in events:
        if isinstance(ev, MultifdPacket):
            assert ev.pages.shape == (ev.normal_pages, 4096)


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_real_prefix(edits: list) -> None:
    data = bytearray(_prefix(BUNDLED, 1, 5))
    for at, value in edits:
        data[at % len(data)] = value
    dec = MultifdChannelDecoder()
    dec.receive_data(bytes(data))
    events, err = _drain(dec)
    if err is not None and err.offset is not None:
        assert all(e.offset < err.offset for e in events)


def test_zstd_bomb_is_refused_early() -> None:
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(256 << 20))
    pkt = encode_packet(flags=MULTIFD_FLAG_ZSTD, normal_offsets=[0], ramblock="pc.ram", payload=bomb)
    dec = MultifdChannelDecoder()
    dec.receive_data(encode_handshake() + pkt)
    events, err = _drain(dec)
    assert len(events) == 1 and isinstance(err, StreamError)
    assert "more than its pages" in str(err) and err.offset == 64 + HDR


def test_zlib_bomb_and_short_payload() -> None:
    bomb = zlib.compress(bytes(64 << 20), 9)
    for payload, text in [(bomb, "more than"), (zlib.compress(bytes(100)), "wrong decompressed size")]:
        pkt = encode_packet(flags=MULTIFD_FLAG_ZLIB, normal_offsets=[0], ramblock="pc.ram", payload=payload)
        dec = MultifdChannelDecoder()
        dec.receive_data(encode_handshake() + pkt)
        _, err = _drain(dec)
        assert isinstance(err, StreamError) and text in str(err)


# --- encoder round trips --------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "zlib", "zstd"])
@pytest.mark.parametrize("layout", ["7.2", "10.0"])
def test_encoder_round_trip(compression: str, layout: str) -> None:
    wire = _synthetic_channel(compression, layout)
    events = decode_channel(wire, compression=compression, layout="auto")
    packets = [p for _, p in epochs(events)]
    assert [e for e, _ in epochs(events)] == [0, 1, 1, 1, 2, 2, 2]
    rng = np.random.default_rng(1)
    data = [p for p in packets if p.normal_pages]
    for i, p in enumerate(data):
        assert np.array_equal(p.pages, rng.integers(0, 4, size=(3 + i, 4096), dtype=np.uint8))
        assert p.zero_pages == (i if layout != "7.2" else 0)
    assert MultifdChannelEncoder().encode_events(events) == wire
    syncs = [p for p in packets if p.sync]
    if layout == "7.2":
        assert syncs[1].ramblock == "pc.ram" and syncs[1].payload_len == 0  # stale name
        assert syncs[1].next_packet_size == data[1].next_packet_size  # stale size
        assert syncs[1].stale_offsets[:3].tolist() == data[1].normal_offsets[:3].tolist()
    else:
        assert all(s.pages_alloc == 0 and s.ramblock == "" for s in syncs)
    if compression == "zlib":
        assert data[0].payload[:2] == b"\x78\x01"
        assert all(p.payload.endswith(b"\x00\x00\xff\xff") for p in data)


def test_sync_riding_on_data_and_epochs() -> None:
    enc = MultifdChannelEncoder(compression="zstd")
    pages = np.ones((2, 4096), np.uint8)
    wire = encode_handshake() + enc.packet("pc.ram", [0, 4096], pages, sync=True, packet_num=5)
    wire += encode_packet(flags=0, ramblock="pc.ram", packet_num=5, next_packet_size=99)  # empty, flags 0
    wire += enc.packet("pc.ram", [8192], pages[:1])
    events = decode_channel(wire)
    assert [(e, p.sync, p.normal_pages) for e, p in epochs(events)] == [
        (0, True, 2),
        (1, False, 0),
        (1, False, 1),
    ]
    assert events[2].payload_len == 0 and events[2].next_packet_size == 99


def test_device_state_packets() -> None:
    wire = (
        encode_handshake() + encode_device_state("0000:00:05.0/vfio", 3, b"state!") + encode_packet(flags=1)
    )
    events = decode_channel(wire)
    ds = events[1]
    assert isinstance(ds, MultifdDeviceState)
    assert (ds.idstr, ds.instance_id, ds.payload, ds.payload_offset) == (
        "0000:00:05.0/vfio",
        3,
        b"state!",
        64 + 276,
    )
    assert events[2].offset == 64 + 276 + 6
    assert MultifdChannelEncoder().encode_events(events) == wire
    dec = MultifdChannelDecoder(max_device_state_size=4)
    dec.receive_data(wire)
    _, err = _drain(dec)
    assert isinstance(err, StreamError) and err.offset == 64 + 272


def test_close_keeps_undrained_events_and_clean_eof() -> None:
    wire = encode_handshake() + encode_packet(flags=MULTIFD_FLAG_SYNC) * 2
    dec = MultifdChannelDecoder()
    dec.receive_data(wire)
    dec.close()
    assert len(list(dec.events())) == 3
    with pytest.raises(RamlabError):
        dec.receive_data(b"x")


def test_bad_arguments() -> None:
    with pytest.raises(RamlabError):
        MultifdChannelDecoder(page_size=3000)
    with pytest.raises(RamlabError):
        MultifdChannelDecoder(layout="8.0")  # type: ignore[arg-type]
    with pytest.raises(RamlabError):
        MultifdChannelDecoder(compression="lz4")  # type: ignore[arg-type]
    with pytest.raises(RamlabError):
        encode_packet(flags=0, zero_offsets=[0], layout="7.2")


def test_other_page_sizes() -> None:
    enc = MultifdChannelEncoder(page_size=65536, compression="zlib")
    pages = np.arange(2 * 65536, dtype=np.uint32).astype(np.uint8).reshape(2, 65536)
    wire = encode_handshake() + enc.packet("m0", [0, 65536], pages) + enc.sync_packet()
    events = decode_channel(wire, page_size=65536)
    assert events[1].pages_alloc == 8 and np.array_equal(events[1].pages, pages)
    assert len(events[1].raw_header) == packet_header_size(65536) == 384
    dec = MultifdChannelDecoder(page_size=4096)
    dec.receive_data(wire)
    _, err = _drain(dec)
    assert isinstance(err, StreamError)  # wrong page size: misframed


def test_module_doctests() -> None:
    import doctest

    import ramlab.wire.multifd as mod

    result = doctest.testmod(mod)
    assert result.failed == 0 and result.attempted > 20

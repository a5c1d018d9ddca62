"""Tests of ramlab.wire.commands and ramlab.wire.return_path on the real QEMU 7.2 postcopy captures and by fuzzing."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
from _shared import CAPTURES  # noqa: E402
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramlab.errors import RamlabError, StreamError, TruncatedStream
from ramlab.wire.commands import (
    decode_advise_payload,
    decode_discard_payload,
    decode_packaged_payload,
    decode_ping_payload,
    decode_recv_bitmap_payload,
    encode_advise_payload,
    encode_discard_payload,
    encode_packaged_payload,
    encode_ping_payload,
    encode_recv_bitmap_payload,
)
from ramlab.wire.contract import END
from ramlab.wire.events import Pong, RecvBitmap, ReqPages, ResumeAck, Shut, SwitchoverAck
from ramlab.wire.return_path import ReturnPathDecoder, decode_return_path, encode_return_path

POSTCOPY = ["postcopy-faults", "postcopy-hugepages"]


def _load(name: str, file: str) -> bytes:
    path = CAPTURES / name / file
    if not path.exists():
        pytest.skip(f"capture {path} not available")
    import zstandard

    with path.open("rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh).read()


def _meta(name: str) -> dict:
    path = CAPTURES / name / "meta.json"
    if not path.exists():
        pytest.skip(f"capture {path} not available")
    return json.loads(path.read_text())


def _by_kind(events):
    out: dict[str, int] = {}
    for ev in events:
        kind = type(ev).__name__
        if isinstance(ev, ReqPages):
            kind = "REQ_PAGES_ID" if ev.named else "REQ_PAGES"
        out[kind] = out.get(kind, 0) + 1
    return out


# ----------------------------------------------------------------------------------
# real return paths
# ----------------------------------------------------------------------------------


def test_postcopy_faults_return_path():
    data = _load("postcopy-faults", "ret-0.bin.zst")
    meta = _meta("postcopy-faults")
    events = decode_return_path(data)
    # PONGs come back 1, 2, 4, 3 (PING 3 is inside the package, answered later)
    assert [ev.value for ev in events if isinstance(ev, Pong)] == [1, 2, 4, 3]
    reqs = [ev for ev in events if isinstance(ev, ReqPages)]
    # This capture's bytes (meta.json is the truth for its folder): one named request
    # then unnamed ones, 100 in all = QEMU's postcopy-requests counter.
    assert reqs[0] == ReqPages("pc.ram", 0x833000, 0x1000, True, offset=32)
    assert all(not r.named and r.block == "pc.ram" and r.length == 0x1000 for r in reqs[1:])
    assert len(reqs) == meta["query_migrate_final"]["ram"]["postcopy-requests"] == 100
    counts = _by_kind(events)
    assert counts == {"Pong": 4, "REQ_PAGES_ID": 1, "REQ_PAGES": 99, "Shut": 1}
    rp = meta["stream_walk"]["return_path"]["rp_counts"]
    assert counts["REQ_PAGES"] == rp["REQ_PAGES"] and counts["REQ_PAGES_ID"] == rp["REQ_PAGES_ID"]
    assert events[-1] == Shut(0, offset=len(data) - 8)
    assert sum(r.length for r in reqs) == meta["stream_walk"]["return_path"]["req_bytes_total"]


def test_postcopy_hugepages_return_path():
    data = _load("postcopy-hugepages", "ret-0.bin.zst")
    meta = _meta("postcopy-hugepages")
    events = decode_return_path(data)
    # stream-format.md §9.1: PONG 1, 2, 4, REQ_PAGES_ID(0x0, 0x200000, "m0"), PONG 3,
    # three REQ_PAGES of 0x200000, SHUT 0
    assert events == [
        Pong(1, offset=0),
        Pong(2, offset=8),
        Pong(4, offset=16),
        ReqPages("m0", 0, 0x200000, True, offset=24),
        Pong(3, offset=43),
        ReqPages("m0", 0x400000, 0x200000, False, offset=51),
        ReqPages("m0", 0x600000, 0x200000, False, offset=67),
        events[7],
        Shut(0, offset=99),
    ]
    assert isinstance(events[7], ReqPages) and events[7].length == 0x200000 and not events[7].named
    assert events[7].offset == 83
    n_req = sum(isinstance(ev, ReqPages) for ev in events)
    assert n_req == meta["query_migrate_final"]["ram"]["postcopy-requests"] == 4


@pytest.mark.parametrize("name", POSTCOPY)
@pytest.mark.parametrize("file", ["ret-0.bin.zst", "ret-replay.bin.zst"])
def test_return_path_reencode_and_byte_at_a_time(name, file):
    data = _load(name, file)
    events = decode_return_path(data)
    assert encode_return_path(events) == data
    dec = ReturnPathDecoder()
    got = []
    for i in range(len(data)):
        dec.receive_data(data[i : i + 1])
        got.extend(dec.events())
    dec.close()
    assert got == events  # offsets included


@pytest.mark.parametrize("name", POSTCOPY)
def test_return_path_truncated(name):
    data = _load(name, "ret-0.bin.zst")
    events = decode_return_path(data)
    boundaries = {e.offset for e in events} | {len(data)}
    for cut in range(1, len(data)):
        dec = ReturnPathDecoder()
        dec.receive_data(data[:cut])
        list(dec.events())
        dec.close()
        if cut in boundaries:
            assert dec.next_event() is END
        else:
            with pytest.raises(TruncatedStream):
                dec.next_event()


def test_return_path_validation_errors():
    cases = {
        "type 0": bytes.fromhex("0000 0000"),
        "type 8": bytes.fromhex("0008 0000"),
        "SHUT len 3": bytes.fromhex("0001 0003 000000"),
        "PONG len 5": bytes.fromhex("0002 0005 0000000000"),
        "REQ_PAGES len 13": bytes.fromhex("0004 000d") + bytes(13),
        "RESUME_ACK len 0": bytes.fromhex("0006 0000"),
        "REQ_PAGES_ID short": bytes.fromhex("0003 000c") + bytes(12),
        "REQ_PAGES_ID name mismatch": bytes.fromhex("0003 0010") + bytes(12) + b"\x02ab\x00",
        "over 512": bytes.fromhex("0003 0201") + bytes(513),
        "REQ_PAGES no previous": bytes.fromhex("0004 000c") + bytes(12),
        "RECV_BITMAP empty": bytes.fromhex("0005 0000"),
        "RECV_BITMAP size odd": bytes.fromhex("0005 0002 0161") + struct.pack(">Q", 3) + bytes(3) + bytes(8),
        "RECV_BITMAP end mark": bytes.fromhex("0005 0002 0161") + struct.pack(">Q", 8) + bytes(8) + bytes(8),
        "RECV_BITMAP huge": bytes.fromhex("0005 0002 0161") + struct.pack(">Q", 1 << 60),
    }
    for what, data in cases.items():
        with pytest.raises(StreamError) as ei:
            decode_return_path(data)
        assert not isinstance(ei.value, TruncatedStream), what
        assert ei.value.offset is not None, what
        # the same error byte by byte
        dec = ReturnPathDecoder()
        with pytest.raises(StreamError) as ej:
            for i in range(len(data)):
                dec.receive_data(data[i : i + 1])
                list(dec.events())
            dec.close()
            list(dec.events())
        assert str(ej.value) == str(ei.value), what
        # the decoder stays failed
        with pytest.raises(StreamError):
            list(dec.events())
    # a strict 7.2 source rejects SWITCHOVER_ACK
    with pytest.raises(StreamError):
        decode_return_path(bytes.fromhex("0007 0000"), max_type=7)
    # size checked against the block when known
    end = struct.pack(">Q", 0x0123456789ABCDEF)
    blob = bytes.fromhex("0005 0002 0161") + struct.pack(">Q", 8) + bytes(8) + end
    assert decode_return_path(blob) == [RecvBitmap("a", bytes(8), offset=0)]
    with pytest.raises(StreamError, match="size mismatch"):
        decode_return_path(blob, block_bitmap_sizes={"a": 16})


def test_return_path_all_event_kinds_round_trip():
    events = [
        Pong(0xFFFFFFFF),
        ReqPages("pc.ram", 0xBE7000, 0x1000, True),
        ReqPages("pc.ram", 0xBE8000, 0x1000, False),
        RecvBitmap("pc.ram", bytes(range(16))),
        RecvBitmap("x" * 255, b""),
        ResumeAck(1),
        SwitchoverAck(),
        ReqPages("", 0, 0, True),
        Shut(1),
        Pong(5),  # decoding continues after SHUT (QEMU would stop reading)
    ]
    data = encode_return_path(events)
    assert decode_return_path(data) == _located(events)
    assert encode_return_path(decode_return_path(data)) == data
    with pytest.raises(RamlabError):
        encode_return_path([Pong(1 << 32)])
    with pytest.raises(RamlabError):
        encode_return_path([ReqPages("y" * 256, 0, 0, True)])


def _located(events):
    """The events with the offsets a decoder gives them: where each one's bytes start."""
    out, at = [], 0
    for e in events:
        out.append(dataclasses.replace(e, offset=at))
        at += len(encode_return_path([e]))
    return out


_events = st.one_of(
    st.builds(Shut, st.integers(0, 2**32 - 1)),
    st.builds(Pong, st.integers(0, 2**32 - 1)),
    st.builds(ResumeAck, st.integers(0, 2**32 - 1)),
    st.builds(SwitchoverAck),
    st.builds(
        ReqPages, st.text(max_size=20), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.just(True)
    ),
    st.builds(RecvBitmap, st.text(min_size=1, max_size=10), st.binary(max_size=4).map(lambda b: b * 8)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_events, max_size=8), st.data())
def test_return_path_round_trip_fuzz(events, data):
    # an unnamed request reuses the previous named block
    fixed = []
    last = None
    for ev in events:
        if isinstance(ev, ReqPages):
            if last is not None and data.draw(st.booleans()):
                ev = ReqPages(last, ev.start, ev.length, False)
            else:
                last = ev.block
        fixed.append(ev)
    raw = encode_return_path(fixed)
    fixed = _located(fixed)
    assert decode_return_path(raw) == fixed
    # random chunking gives the same events
    dec = ReturnPathDecoder()
    got = []
    pos = 0
    while pos < len(raw):
        step = data.draw(st.integers(1, 9))
        dec.receive_data(raw[pos : pos + step])
        pos += step
        got.extend(dec.events())
    dec.close()
    assert got == fixed


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(1, 7))
def test_return_path_garbage_only_stream_errors(blob, step):
    dec = ReturnPathDecoder()
    try:
        for i in range(0, len(blob), step):
            dec.receive_data(blob[i : i + step])
            list(dec.events())
        dec.close()
        list(dec.events())
    except StreamError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_return_path_damaged_capture(data):
    raw = bytearray(_load("postcopy-hugepages", "ret-0.bin.zst"))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        events = decode_return_path(bytes(raw[:cut]))
    except StreamError:
        return
    assert encode_return_path(events) == bytes(raw[:cut])


# ----------------------------------------------------------------------------------
# forward-stream command payloads
# ----------------------------------------------------------------------------------


def find_commands(stream: bytes, cmd: int):
    """Locate ``0x08 be16 cmd be16 len payload`` items by pattern (verified by decoding later)."""
    pat = bytes([0x08]) + struct.pack(">H", cmd)
    out = []
    i = stream.find(pat)
    while i != -1:
        (length,) = struct.unpack_from(">H", stream, i + 3)
        if 20 <= length <= 3 + 255 + 16 * 12 and i + 5 + length <= len(stream):
            out.append((i, stream[i + 5 : i + 5 + length]))
        i = stream.find(pat, i + 1)
    return out


def _discards(name: str):
    stream = _load(name, "fwd-0.bin.zst")
    meta = _meta(name)
    blocks = {b["idstr"]: b["used_length"] for b in meta["stream_walk"]["mem_size"]["blocks"]}
    found = []
    for at, payload in find_commands(stream, 6):
        try:
            block, ranges = decode_discard_payload(payload, offset=at + 5)
        except StreamError:
            continue
        if block in blocks and ranges and all(s + n <= blocks[block] for s, n in ranges):
            found.append((at, block, ranges, payload))
    return stream, meta, found


def test_discard_command_postcopy_faults():
    stream, meta, found = _discards("postcopy-faults")
    assert len(found) == 1
    at, block, ranges, payload = found[0]
    assert at == 16787179 and len(payload) == 73 == 3 + 6 + 64
    assert block == "pc.ram"
    assert ranges == [(0x101000, 0x1000), (0x300000, 0x1000), (0x400000, 0x480000), (0xA00000, 0x200000)]
    assert sum(n for _, n in ranges) // 4096 == 1666
    assert encode_discard_payload(block, ranges) == payload
    walk = meta["stream_walk"]["discard_commands"][0]
    assert walk["at"] == at and [tuple(r) for r in walk["ranges"]] == ranges


def test_discard_command_postcopy_hugepages():
    stream, meta, found = _discards("postcopy-hugepages")
    assert len(found) == 1
    at, block, ranges, payload = found[0]
    assert block == "m0" and ranges == [(0, 0xC00000)] and len(payload) == 21
    assert all(s % 0x200000 == 0 and n % 0x200000 == 0 for s, n in ranges)
    assert encode_discard_payload(block, ranges) == payload
    assert at == meta["stream_walk"]["discard_commands"][0]["at"]


@pytest.mark.parametrize("name,summary", [("postcopy-faults", 0x1000), ("postcopy-hugepages", 0x201000)])
def test_advise_and_pings_in_real_streams(name, summary):
    stream = _load(name, "fwd-0.bin.zst")
    # @26 OPEN_RETURN_PATH, @31 PING 1, @40 ADVISE
    assert stream[26:31] == bytes.fromhex("0800010000")
    assert stream[31:36] == bytes.fromhex("0800020004")
    assert decode_ping_payload(stream[36:40], 36) == 1
    assert stream[40:45] == bytes.fromhex("0800030010")
    assert decode_advise_payload(stream[45:61], 45) == (summary, 0x1000)
    assert encode_advise_payload(summary) == stream[45:61]
    i = stream.find(bytes.fromhex("0800070004"))
    assert decode_packaged_payload(stream[i + 5 : i + 9]) == 14940


def test_discard_payload_validation():
    good = encode_discard_payload("pc.ram", [(0, 4096)])
    assert decode_discard_payload(good) == ("pc.ram", [(0, 4096)])
    bad = {
        "short": good[:19],
        "version": b"\x01" + good[1:],
        "empty name": b"\x00\x00" + bytes(18),
        "name past end": b"\x00\xff" + bytes(18),
        "nil": good[:8] + b"\x01" + good[9:],
        "length": good + b"\x00",
        "NUL in name": b"\x00\x02a\x00\x00" + bytes(16),
    }
    for what, payload in bad.items():
        with pytest.raises(StreamError) as ei:
            decode_discard_payload(payload, offset=1000)
        assert ei.value.offset is not None and ei.value.offset >= 1000, what
    # QEMU's 20-byte minimum lets a 17-byte name through with zero ranges
    assert decode_discard_payload(b"\x00\x11" + b"n" * 17 + b"\x00") == ("n" * 17, [])
    with pytest.raises(RamlabError):
        encode_discard_payload("a", [])  # would be 4 bytes: rejected
    with pytest.raises(RamlabError):
        encode_discard_payload("", [(0, 1)])
    with pytest.raises(RamlabError):
        encode_discard_payload("a" * 256, [(0, 1)])


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), min_size=1, max_size=12),
)
def test_discard_payload_round_trip(name, ranges):
    name = name.replace(b"\0", b"x")[:255]
    payload = encode_discard_payload(name, ranges)
    block, got = decode_discard_payload(payload)
    assert got == ranges
    assert encode_discard_payload(block, got) == payload


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_command_payload_decoders_only_raise_stream_error(blob):
    for fn in (
        decode_discard_payload,
        decode_advise_payload,
        decode_ping_payload,
        decode_packaged_payload,
        decode_recv_bitmap_payload,
    ):
        try:
            fn(blob)
        except StreamError:
            pass


def test_small_command_payloads():
    assert decode_advise_payload(b"") is None
    assert encode_advise_payload(None) == b""
    with pytest.raises(StreamError):
        decode_advise_payload(bytes(8))
    assert decode_ping_payload(encode_ping_payload(7)) == 7
    with pytest.raises(StreamError):
        decode_ping_payload(bytes(5))
    assert decode_packaged_payload(encode_packaged_payload(14940)) == 14940
    with pytest.raises(StreamError):
        decode_packaged_payload(struct.pack(">I", (1 << 24) + 1), max_size=1 << 24)
    assert decode_recv_bitmap_payload(encode_recv_bitmap_payload("pc.ram")) == "pc.ram"
    for bad in (b"", b"\x00", b"\x03ab", b"\x01ab"):
        with pytest.raises(StreamError):
            decode_recv_bitmap_payload(bad)

"""Encoder–decoder pair: real captures round-trip byte for byte; random event streams too."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from _shared import CAPTURES, CAPTURES_Q10, needs_shared, read_zst
from hypothesis import given, settings
from hypothesis import strategies as st

from ramlab.cli import main
from ramlab.errors import RamlabError
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.encoder import encode_stream, packaged

MAIN_STREAMS = [
    CAPTURES / "idle-bios" / "stream.bin.zst",
    CAPTURES / "precopy-plain" / "stream.bin.zst",
    CAPTURES / "precopy-xbzrle" / "stream.bin.zst",
    CAPTURES / "precopy-compress" / "stream.bin.zst",
    CAPTURES / "multifd-zstd" / "channel-0.bin.zst",
    CAPTURES / "postcopy-faults" / "fwd-0.bin.zst",
    CAPTURES / "postcopy-hugepages" / "fwd-0.bin.zst",
    CAPTURES_Q10 / "q10-precopy-plain" / "stream.bin.zst",
    CAPTURES_Q10 / "q10-multifd-zstd" / "channel-0.bin.zst",
]


def decode(data: bytes) -> list:
    d = StreamDecoder()
    d.receive_data(data)
    d.close()
    return list(d.events())


@pytest.mark.parametrize("path", MAIN_STREAMS, ids=lambda p: p.parent.name)
def test_capture_round_trips_byte_exact(path):
    if not path.exists():
        pytest.skip(f"{path} missing")
    data = read_zst(path)
    assert encode_stream(decode(data)) == data


@pytest.mark.parametrize("folder", [CAPTURES / "precopy-xbzrle", CAPTURES / "multifd-zstd"], ids=lambda p: p.name)
@needs_shared
def test_cli_reencode_equals_input(folder, tmp_path):
    out = tmp_path / "out.bin"
    assert main(["reencode", str(folder), "-o", str(out), "-q"]) == 0
    files = sorted(folder.glob("stream.bin.zst")) or sorted(folder.glob("channel-*.bin.zst"))
    assert out.read_bytes() == read_zst(files[0])
    for i, f in enumerate(files[1:], start=1):
        assert (tmp_path / f"out.bin.channel-{i}").read_bytes() == read_zst(f)


# ---------------------------------------------------------------- generated streams
BLOCKS = (ev.RamBlockEntry("pc.ram", 16 * 4096), ev.RamBlockEntry("pc.bios", 4 * 4096))


@st.composite
def ram_records(draw):
    """A RAM body as QEMU's sender would write it: CONTINUE iff the block did not change."""
    out = []
    last = None
    for _ in range(draw(st.integers(0, 12))):
        block = draw(st.sampled_from(BLOCKS))
        off = draw(st.integers(0, block.used_length // 4096 - 1)) * 4096
        named = block.name != last
        last = block.name
        kind = draw(st.sampled_from(["zero", "page", "xbzrle", "compressed"]))
        if kind == "zero":
            fill = np.array([draw(st.integers(0, 255))], np.uint8)
            out.append(ev.RamPages(0x02, block.name, named, np.array([off]), fill=fill,
                                   first_flags=0x02 if named else 0x22))
        elif kind == "page":
            seed = draw(st.integers(0, 2**32 - 1))
            data = np.random.default_rng(seed).integers(0, 256, (1, 4096), dtype=np.uint8)
            out.append(ev.RamPages(0x08, block.name, named, np.array([off]), data=data,
                                   first_flags=0x08 if named else 0x28))
        elif kind == "xbzrle":
            out.append(ev.RamXbzrle(block.name, named, off, draw(st.binary(max_size=64))))
        else:
            out.append(ev.RamCompressed(block.name, named, off, draw(st.binary(max_size=64))))
    return out


def stream_of(bodies):
    events = [ev.FileHeader(3), ev.Configuration("pc-test", struct.pack(">I", 7) + b"pc-test")]
    events += [ev.SectionHeader(1, 2, "ram", 0, 4), ev.RamMemSize(sum(b.used_length for b in BLOCKS), BLOCKS),
               ev.RamEos(), ev.SectionFooter(2)]
    for i, body in enumerate(bodies):
        events += [ev.SectionHeader(2 if i < len(bodies) - 1 else 3, 2, "ram"), *body, ev.RamEos(),
                   ev.SectionFooter(2)]
    events += packaged([ev.Command(4, b""), ev.Command(2, struct.pack(">I", 3))])
    events += [ev.EndOfFile()]
    return events


def normalise(events):
    """Offsets aside, split runs of RamPages into single records for comparison."""
    out = []
    for e in events:
        if isinstance(e, ev.RamPages):
            arr = e.fill if e.fill is not None else e.data
            for i in range(len(e)):
                out.append(("pages", e.kind, e.block, e.named and i == 0, int(e.page_offsets[i]), bytes(arr[i])))
        elif hasattr(e, "offset"):
            fields = {k: getattr(e, k) for k in e.__dataclass_fields__ if k != "offset"}
            out.append((type(e).__name__, repr(sorted(fields.items()))))
        else:
            out.append(e)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(ram_records(), min_size=1, max_size=4))
def test_generated_events_round_trip(bodies):
    events = stream_of(bodies)
    wire = encode_stream(events)
    back = decode(wire)
    assert normalise(back) == normalise(events)
    assert encode_stream(back) == wire


def test_block_names_are_utf8_on_every_path():
    """One codec for block names: a non-ASCII name leaves the encoder as UTF-8, decodes back to the
    same ``str`` on the main stream, and the sizes the sender counts with agree with the bytes."""
    from ramlab.model.guest import Guest
    from ramlab.wire.fields import cstr8_size, event_size

    name = "ré.ram"
    blocks = (ev.RamBlockEntry(name, 4 * 4096),)
    page = ev.RamPages(0x08, name, True, np.array([4096]), data=np.full((1, 4096), 7, np.uint8), first_flags=0x08)
    events = [ev.FileHeader(3), ev.SectionHeader(1, 2, "ram", 0, 4), ev.RamMemSize(4 * 4096, blocks), ev.RamEos(),
              ev.SectionFooter(2), ev.SectionHeader(3, 2, "ram"), page, ev.RamEos(), ev.SectionFooter(2),
              ev.EndOfFile()]
    wire = encode_stream(events)
    assert b"\x07r\xc3\xa9.ram" in wire  # cstr8: length 7, then UTF-8
    back = decode(wire)
    assert [e.block for e in back if isinstance(e, ev.RamPages)] == [name]
    assert [b.name for e in back if isinstance(e, ev.RamMemSize) for b in e.blocks] == [name]
    assert event_size(page) == len(encode_stream([page])) == 8 + cstr8_size(name) + 4096
    Guest([(name, 4 * 4096, 4096)])  # accepted: 7 bytes
    with pytest.raises(RamlabError, match="more than 255 bytes"):
        Guest([("é" * 128, 4 * 4096, 4096)])  # 128 characters, 256 bytes

"""The wire decoders as a specification: tables of (bytes -> events) and (bytes -> error), hand-written.

Every row is checked twice: fed whole, and fed one byte at a time. Both must give exactly the
listed events (offsets included: an event is a located wire item) followed by ``END``, or the listed
events and then the listed error (class, byte offset, message), which stays raised afterwards.
The bytes are written out field by field; nothing here is computed by the code under test, and
nothing needs the shared captures.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from _shared import decode_checked

from ramlab.errors import StreamError, TruncatedStream
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.multifd import MultifdChannelDecoder
from ramlab.wire.return_path import ReturnPathDecoder


def h(text: str) -> bytes:
    """Hex with spaces allowed."""
    return bytes.fromhex(text.replace(" ", ""))


def check(make, data, want_events, want_error=None):
    for byte_at_a_time in (False, True):
        got, err = decode_checked(make, data, range(1, len(data)) if byte_at_a_time else [])
        assert got == want_events, f"byte_at_a_time={byte_at_a_time}"
        if want_error is None:
            assert err is None, f"unexpected {err!r}"
        else:
            cls, offset, text = want_error
            assert type(err) is cls, f"byte_at_a_time={byte_at_a_time}: {err!r}"
            assert err.offset == offset and text in err.message, f"{err}"


# ============================================================================ the savevm stream

HDR = h("5145564d 00000003")  # QEVM, version 3
EOF = h("00")
RAM_START = h("01 00000002 03 72616d 00000000 00000004")  # START, id 2, "ram", instance 0, version 4
MEM_SIZE = h("0000000000004004 06 70632e72616d 0000000000004000")  # 0x4000 | MEM_SIZE, "pc.ram" 0x4000
EOS = h("0000000000000010")
FOOT = h("7e 00000002")
PAGE = bytes([0xAB]) * 4096
ZLIB = zlib.compress(bytes(4096))

START_EV = ev.SectionHeader(1, 2, "ram", 0, 4, offset=8)
MEM_EV = ev.RamMemSize(0x4000, (ev.RamBlockEntry("pc.ram", 0x4000),), offset=25)


def zero(offset, named, page_offset, fill, flags):
    return ev.RamPages(0x02, "pc.ram", named, np.array([page_offset]), fill=np.array([fill], np.uint8),
                       offset=offset, first_flags=flags)


STREAM_ROWS = {
    "header and EOF": (HDR + EOF, [ev.FileHeader(3, offset=0), ev.EndOfFile(offset=8)]),
    "vmdesc trailer": (
        HDR + EOF + h("06 00000002 7b7d"),
        [ev.FileHeader(3, offset=0), ev.EndOfFile(offset=8), ev.VmDescription(b"{}", offset=9)],
    ),
    "configuration": (
        HDR + h("07 00000004 74657374") + EOF,
        [ev.FileHeader(3, offset=0), ev.Configuration("test", h("00000004 74657374"), offset=8),
         ev.EndOfFile(offset=17)],
    ),
    "PING command": (
        HDR + h("08 0002 0004 00000001") + EOF,
        [ev.FileHeader(3, offset=0), ev.Command(2, h("00000001"), offset=8), ev.EndOfFile(offset=17)],
    ),
    "PACKAGED blob": (
        HDR + h("08 0007 0004 00000005") + h("08 0001 0000") + EOF,
        [ev.FileHeader(3, offset=0), ev.Command(7, h("00000005"), offset=8), ev.Command(1, b"", offset=17),
         ev.PackagedEnd(offset=22), ev.EndOfFile(offset=22)],
    ),
    "device section": (
        HDR + h("04 00000003 05 74696d6572 00000000 00000002") + h("0102") + h("7e 00000003") + EOF,
        [ev.FileHeader(3, offset=0), ev.SectionHeader(4, 3, "timer", 0, 2, offset=8),
         ev.DeviceState(3, "timer", 0, 2, h("0102"), offset=27), ev.SectionFooter(3, offset=29),
         ev.EndOfFile(offset=34)],
    ),
    "ZERO, ZERO, PAGE records": (
        HDR + RAM_START + MEM_SIZE
        + h("0000000000000002 06 70632e72616d 00")  # ZERO, named, page 0, fill 0
        + h("0000000000001022 05")  # ZERO | CONTINUE, page 0x1000, fill 5
        + h("0000000000002028") + PAGE  # PAGE | CONTINUE, page 0x2000
        + EOS + FOOT + EOF,
        [ev.FileHeader(3, offset=0), START_EV, MEM_EV, zero(48, True, 0, 0, 0x02), zero(64, False, 0x1000, 5, 0x22),
         ev.RamPages(0x08, "pc.ram", False, np.array([0x2000]), data=np.frombuffer(PAGE, np.uint8)[None],
                     offset=73, first_flags=0x28),
         ev.RamEos(offset=4177), ev.SectionFooter(2, offset=4185), ev.EndOfFile(offset=4190)],
    ),
    "a run of CONTINUE records is one event": (
        HDR + RAM_START + MEM_SIZE + h("0000000000000002 06 70632e72616d 00")
        + h("0000000000001022 00") + h("0000000000002022 00") + h("0000000000003022 07") + EOS + FOOT + EOF,
        [ev.FileHeader(3, offset=0), START_EV, MEM_EV, zero(48, True, 0, 0, 0x02),
         ev.RamPages(0x02, "pc.ram", False, np.array([0x1000, 0x2000, 0x3000]),
                     fill=np.array([0, 0, 7], np.uint8), offset=64, first_flags=0x22),
         ev.RamEos(offset=91), ev.SectionFooter(2, offset=99), ev.EndOfFile(offset=104)],
    ),
    "XBZRLE and COMPRESS_PAGE records": (
        HDR + RAM_START + MEM_SIZE
        + h("0000000000000040 06 70632e72616d 01 0004 ff1f0101")  # XBZRLE, named, 4 bytes of delta
        + h("0000000000001120") + struct.pack(">I", len(ZLIB)) + ZLIB  # COMPRESS_PAGE | CONTINUE
        + EOS + FOOT + EOF,
        [ev.FileHeader(3, offset=0), START_EV, MEM_EV, ev.RamXbzrle("pc.ram", True, 0, h("ff1f0101"), offset=48),
         ev.RamCompressed("pc.ram", False, 0x1000, ZLIB, offset=70),
         ev.RamEos(offset=82 + len(ZLIB)), ev.SectionFooter(2, offset=90 + len(ZLIB)),
         ev.EndOfFile(offset=95 + len(ZLIB))],
    ),
    "MULTIFD_FLUSH, then PART and END sections": (
        HDR + RAM_START + MEM_SIZE + h("0000000000000200") + EOS + FOOT
        + h("02 00000002") + EOS + FOOT + h("03 00000002") + EOS + FOOT + EOF,
        [ev.FileHeader(3, offset=0), START_EV, MEM_EV, ev.RamMultifdFlush(offset=48), ev.RamEos(offset=56),
         ev.SectionFooter(2, offset=64), ev.SectionHeader(2, 2, "ram", offset=69), ev.RamEos(offset=74),
         ev.SectionFooter(2, offset=82), ev.SectionHeader(3, 2, "ram", offset=87), ev.RamEos(offset=92),
         ev.SectionFooter(2, offset=100), ev.EndOfFile(offset=105)],
    ),
}

RAM_PREFIX = HDR + RAM_START + MEM_SIZE
PREFIX_EVENTS = [ev.FileHeader(3, offset=0), START_EV, MEM_EV]

STREAM_ERRORS = {
    "bad magic": (h("51455658 00000003"), [], (StreamError, 0, "not a QEMU migration stream")),
    "version 2": (h("5145564d 00000002"), [], (StreamError, 4, "version 2 (compat)")),
    "unknown item": (HDR + h("09"), [ev.FileHeader(3, offset=0)], (StreamError, 8, "unknown savevm section type")),
    "PART before START": (HDR + h("02 00000009"), [ev.FileHeader(3, offset=0)],
                          (StreamError, 9, "unknown section id")),
    "garbage after EOF": (HDR + EOF + h("41"), [ev.FileHeader(3, offset=0), ev.EndOfFile(offset=8)],
                          (StreamError, 9, "unexpected byte after EOF")),
    "data after vmdesc": (
        HDR + EOF + h("06 00000002 7b7d 00"),
        [ev.FileHeader(3, offset=0), ev.EndOfFile(offset=8), ev.VmDescription(b"{}", offset=9)],
        (StreamError, 16, "data after the vmdesc trailer"),
    ),
    "cut before EOF": (HDR, [ev.FileHeader(3, offset=0)], (TruncatedStream, 8, "stream ends before QEMU_VM_EOF")),
    "cut inside an item": (HDR + h("01 0000"), [ev.FileHeader(3, offset=0)],
                           (TruncatedStream, 8, "stream ends in the middle of an item")),
    "unknown block": (RAM_PREFIX + h("0000000000000002 03 666f6f 00"), PREFIX_EVENTS,
                      (StreamError, 56, "Unknown ramblock")),
    "offset past the block": (RAM_PREFIX + h("0000000000004002 06 70632e72616d 00"), PREFIX_EVENTS,
                              (StreamError, 48, "Illegal RAM offset")),
    "CONTINUE first": (RAM_PREFIX + h("0000000000000022 00"), PREFIX_EVENTS,
                       (StreamError, 48, "CONTINUE before any block name")),
    "bad XBZRLE flag": (RAM_PREFIX + h("0000000000000040 06 70632e72616d 02 0001 00"), PREFIX_EVENTS,
                        (StreamError, 63, "bad XBZRLE encoding flag")),
    "two page kinds": (RAM_PREFIX + h("000000000000000a 06 70632e72616d"), PREFIX_EVENTS,
                       (StreamError, 48, "Unknown combination of migration flags")),
    "missing footer": (RAM_PREFIX + EOS + h("00"), [*PREFIX_EVENTS, ev.RamEos(offset=48)],
                       (StreamError, 56, "missing section footer")),
}


@pytest.mark.parametrize("name", list(STREAM_ROWS))
def test_stream_table(name):
    data, events = STREAM_ROWS[name]
    check(StreamDecoder, data, events)


@pytest.mark.parametrize("name", list(STREAM_ERRORS))
def test_stream_errors_table(name):
    data, events, error = STREAM_ERRORS[name]
    check(StreamDecoder, data, events, error)


# ============================================================================ a multifd channel

MAGIC_VERSION = h("11223344 00000001")
UUID = bytes(range(16))
HANDSHAKE = MAGIC_VERSION + UUID + h("01") + bytes(39)  # channel id 1, then reserved bytes


def ram_packet(flags, pages_alloc, normal, nps, num, block, offsets, payload):
    """A 7.2 MultiFDPacket_t (4 KiB pages: 128 offsets), written field by field."""
    head = struct.pack(">IIIIIIQ", 0x11223344, 1, flags, pages_alloc, normal, nps, num) + bytes(32)
    name = block.encode() + bytes(256 - len(block))
    table = b"".join(struct.pack(">Q", o) for o in offsets) + bytes(8 * (128 - len(offsets)))
    return head + name + table, payload


def packet_event(offset, header, payload, flags, normal, nps, num, block, offsets, sync):
    pages = np.frombuffer(payload, np.uint8).reshape(normal, 4096)
    return ev.MultifdPacket(offset, flags, 128, normal, 0, nps, num, block, np.array(offsets, np.int64),
                            np.zeros(0, np.int64), pages, sync, offset + 1344, len(payload), header, payload)


PKT1_HEAD, PKT1_PAYLOAD = ram_packet(0, 128, 1, 4096, 0, "pc.ram", [0x3000], bytes([0x5A]) * 4096)
SYNC_HEAD, _ = ram_packet(1, 128, 0, 0, 1, "pc.ram", [0x3000], b"")


def test_multifd_table():
    hs = ev.MultifdHandshake(0x11223344, 1, UUID, 1, 0, HANDSHAKE)
    data = HANDSHAKE + PKT1_HEAD + PKT1_PAYLOAD + SYNC_HEAD
    want = [hs,
            packet_event(64, PKT1_HEAD, PKT1_PAYLOAD, 0, 1, 4096, 0, "pc.ram", [0x3000], False),
            packet_event(64 + 1344 + 4096, SYNC_HEAD, b"", 1, 0, 0, 1, "pc.ram", [], True)]
    check(MultifdChannelDecoder, data, want)


def test_multifd_seed_handshake_table():
    """The seed's (QEMU 2.11-3.0) packed handshake: 25 bytes, and the channel carries nothing else."""
    seed = MAGIC_VERSION + UUID + h("02")
    want = [ev.MultifdHandshake(0x11223344, 1, UUID, 2, 0, seed)]
    check(MultifdChannelDecoder, seed, want)
    assert want[0].seed_layout
    check(lambda: MultifdChannelDecoder(layout="3.0"), seed + h("00"), want,
          (StreamError, 25, "data after a seed-era multifd handshake"))


MULTIFD_ERRORS = {
    "bad handshake magic": (h("11223345 00000001") + bytes(56), (StreamError, 0, "bad multifd handshake magic")),
    "bad packet magic": (HANDSHAKE + h("11223345") + bytes(1340), (StreamError, 64, "bad multifd packet magic")),
    "pages_alloc too big": (HANDSHAKE + ram_packet(0, 129, 0, 0, 0, "pc.ram", [], b"")[0],
                            (StreamError, 76, "pages_alloc exceeds the packet size")),
    "normal_pages > pages_alloc": (HANDSHAKE + ram_packet(0, 1, 2, 0, 0, "pc.ram", [], b"")[0],
                                   (StreamError, 80, "normal_pages exceeds pages_alloc")),
    "unaligned page offset": (HANDSHAKE + b"".join(ram_packet(0, 128, 1, 4096, 0, "pc.ram", [0x3001], bytes(4096))),
                              (StreamError, 64 + 320, "not page aligned")),
    "cut inside a header": (HANDSHAKE + PKT1_HEAD[:100], (TruncatedStream, 64, "multifd channel ends inside an item")),
    "cut inside a payload": (HANDSHAKE + PKT1_HEAD + PKT1_PAYLOAD[:10],
                             (TruncatedStream, 64, "multifd channel ends inside an item")),
}


@pytest.mark.parametrize("name", list(MULTIFD_ERRORS))
def test_multifd_errors_table(name):
    data, error = MULTIFD_ERRORS[name]
    events = [] if error[1] == 0 else [ev.MultifdHandshake(0x11223344, 1, UUID, 1, 0, HANDSHAKE)]
    check(MultifdChannelDecoder, data, events, error)


# ============================================================================ the return path

RP_ROWS = [
    (h("0002 0004 00000001"), ev.Pong(1)),
    (h("0001 0004 00000000"), ev.Shut(0)),
    (h("0003 0013 0000000000833000 00001000 06 70632e72616d"), ev.ReqPages("pc.ram", 0x833000, 0x1000, True)),
    (h("0004 000c 0000000000834000 00001000"), ev.ReqPages("pc.ram", 0x834000, 0x1000, False)),
    (h("0005 0007 06 70632e72616d 0000000000000008 ffffffffffffffff 0123456789abcdef"),
     ev.RecvBitmap("pc.ram", b"\xff" * 8)),
    (h("0006 0004 00000001"), ev.ResumeAck(1)),
    (h("0007 0000"), ev.SwitchoverAck()),
]


def test_return_path_table():
    data, want, at = b"", [], 0
    for raw, e in RP_ROWS:
        data += raw
        want.append(type(e)(*[getattr(e, f) for f in e.__dataclass_fields__ if f != "offset"], offset=at))
        at += len(raw)
    check(ReturnPathDecoder, data, want)


RP_ERRORS = {
    "type 0": (h("0000 0000"), [], (StreamError, 0, "RP: Received invalid message")),
    "SHUT of 3 bytes": (h("0001 0003 000000"), [], (StreamError, 2, "incorrect length")),
    "REQ_PAGES first": (h("0004 000c 0000000000000000 00001000"), [], (StreamError, 0, "no previous block")),
    "bitmap end mark": (h("0005 0002 01 61 0000000000000008") + bytes(16), [],
                        (StreamError, 22, "end mark incorrect")),
    "cut message": (h("0002 0004 00000001 0002 00"), [ev.Pong(1, offset=0)],
                    (TruncatedStream, 8, "return path ends inside a message")),
}


@pytest.mark.parametrize("name", list(RP_ERRORS))
def test_return_path_errors_table(name):
    data, events, error = RP_ERRORS[name]
    check(ReturnPathDecoder, data, events, error)


def test_receive_after_end_is_refused_and_close_twice_is_harmless():
    from ramlab.errors import RamlabError

    for make in (StreamDecoder, MultifdChannelDecoder, ReturnPathDecoder):
        dec = make()
        dec.close()
        dec.close()
        with pytest.raises(RamlabError, match="after the end of input"):
            dec.receive_data(b"\x00")

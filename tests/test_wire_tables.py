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

from ramlab.errors import StreamError, TruncatedStream, UnsupportedFeature
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.encoder import encode_stream
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
    # ram_load_precopy masks the address bits off before it switches on the flags, and CONTINUE
    # means nothing to EOS: the words are kept as sent so that the stream re-encodes byte for byte
    "EOS and MULTIFD_FLUSH with stray address bits": (
        HDR + RAM_START + MEM_SIZE + h("0000000000005200") + h("0000000000003030") + FOOT + EOF,
        [ev.FileHeader(3, offset=0), START_EV, MEM_EV, ev.RamMultifdFlush(offset=48, word=0x5200),
         ev.RamEos(offset=56, word=0x3030), ev.SectionFooter(2, offset=64), ev.EndOfFile(offset=69)],
    ),
}

# mapped-ram (QEMU >= 9.0, file: migrations; ram.c mapped_ram_setup_ramblock / parse_ramblock_mapped_ram):
# the configuration section lists the capability, and each MEM_SIZE entry is followed by a
# MappedRamHeader and the block's area (bitmap, then the pages at fixed file offsets).
CAPS_BODY = h("00000001 0a") + b"mapped-ram"  # caps_count 1, then u8 length + name of each
CONFIG_MAPPED = (
    h("07 0000000d") + b"pc-i440fx-9.0"  # 8: QEMU_VM_CONFIGURATION, be32 length + machine type
    + h("05 1a") + b"configuration/capabilities" + h("00000001")  # 26: subsection, name, version 1
    + CAPS_BODY  # 58
)
MAPPED_HEAD = (
    HDR + CONFIG_MAPPED
    + h("01 00000002 03 72616d 00000000 00000004")  # 73: START, id 2, "ram", instance 0, version 4
    + h("0000000000002004")  # 90: MEM_SIZE word: total 0x2000 | RAM_SAVE_FLAG_MEM_SIZE
    + h("06 70632e72616d 0000000000002000")  # 98: "pc.ram", used_length 0x2000 (2 pages)
    + h("00000001")  # 113: MappedRamHeader.version 1
    + h("0000000000001000")  # 117: page_size 4096
    + h("000000000000008d")  # 125: bitmap_offset 141, right after this header (as QEMU puts it)
)
MAPPED_RAM = (
    MAPPED_HEAD
    + h("0000000000001000")  # 133: pages_offset 0x1000 (QEMU rounds up to 1 MiB; its loader wants page alignment)
    + h("0200000000000000")  # 141: the bitmap, one little-endian long: page 1 written, page 0 not (zero)
    + bytes(0x1000 - 149)  # up to pages_offset
    + bytes(4096)  # 0x1000: page 0's slot, never written
    + PAGE  # 0x2000: page 1
    + EOS + FOOT + EOF  # 0x3000: the stream goes on at pages_offset + used_length
)
MAPPED_EVENTS = [
    ev.FileHeader(3, offset=0),
    ev.Configuration("pc-i440fx-9.0", CONFIG_MAPPED[1:], ("mapped-ram",), None,
                     (("configuration/capabilities", 1, CAPS_BODY),), offset=8),
    ev.SectionHeader(1, 2, "ram", 0, 4, offset=73),
]
STREAM_ROWS["mapped-ram block list and area"] = (
    MAPPED_RAM,
    [*MAPPED_EVENTS,
     ev.RamMemSize(0x2000, (ev.RamBlockEntry("pc.ram", 0x2000, None, None, (1, 0x1000, 141, 0x1000)),), offset=90),
     ev.MappedRamArea("pc.ram", 0x1000, 141, 0x1000, h("02"), 0x2000, offset=141),  # bitmap: ceil(2 / 8) bytes
     ev.RamEos(offset=0x3000), ev.SectionFooter(2, offset=0x3008), ev.EndOfFile(offset=0x300D)],
)

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
    "mapped-ram header version 2": (MAPPED_HEAD[:113] + h("00000002") + MAPPED_RAM[117:], MAPPED_EVENTS,
                                    (StreamError, 113, "mapped-ram capability version not supported")),
    "mapped-ram pages_offset not page aligned": (
        MAPPED_HEAD + h("0000000000001001"), MAPPED_EVENTS,
        (StreamError, 133, "region has bad alignment"),
    ),
    "cut inside a mapped-ram area": (MAPPED_RAM[:0x2000], MAPPED_EVENTS,
                                     (TruncatedStream, 0x2000, "stream ends inside a mapped-ram area")),
}


@pytest.mark.parametrize("name", list(STREAM_ROWS))
def test_stream_table(name):
    data, events = STREAM_ROWS[name]
    check(StreamDecoder, data, events)


def test_stray_address_bits_re_encode_byte_for_byte():
    data, events = STREAM_ROWS["EOS and MULTIFD_FLUSH with stray address bits"]
    assert encode_stream(events) == data


@pytest.mark.parametrize("name", list(STREAM_ERRORS))
def test_stream_errors_table(name):
    data, events, error = STREAM_ERRORS[name]
    check(StreamDecoder, data, events, error)


# ============================================================================ a multifd channel

MAGIC_VERSION = h("11223344 00000001")
UUID = bytes(range(16))
HANDSHAKE = MAGIC_VERSION + UUID + h("01") + bytes(39)  # channel id 1, then reserved bytes
HS_EV = ev.MultifdHandshake(0x11223344, 1, UUID, 1, 0, HANDSHAKE)
HDR_SIZE = 1344  # MultiFDPacket_t for 4 KiB pages: 64 bytes of fields, ramblock[256], offset[128]


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


def header(fields: str, block: str = "", offsets=()) -> bytes:
    """A RAM packet header: its first 64 bytes written out in hex, then ``ramblock[256]`` (NUL
    padded) and ``offset[128]`` (be64; the entries not given are zero)."""
    head = h(fields)
    assert len(head) == 64
    table = b"".join(struct.pack(">Q", o) for o in offsets)
    return head + block.encode().ljust(256, b"\0") + table.ljust(8 * 128, b"\0")


def packet(offset, head, payload=b"", pages=b"", *, flags, alloc, nps, num, block, normal=(), zero=(), sync=False):
    """The expected event of a RAM packet at ``offset``: ``pages`` are the normal pages as loaded."""
    return ev.MultifdPacket(offset, flags, alloc, len(normal), len(zero), nps, num, block,
                            np.array(normal, np.int64), np.array(zero, np.int64),
                            np.frombuffer(pages, np.uint8).reshape(-1, 4096), sync,
                            offset + HDR_SIZE, len(payload), head, payload)


PKT1_HEAD, PKT1_PAYLOAD = ram_packet(0, 128, 1, 4096, 0, "pc.ram", [0x3000], bytes([0x5A]) * 4096)
SYNC_HEAD, _ = ram_packet(1, 128, 0, 0, 1, "pc.ram", [0x3000], b"")
PAGE_5A, PAGE_11, PAGE_22 = bytes([0x5A]) * 4096, bytes([0x11]) * 4096, bytes([0x22]) * 4096

# 7.2 (layout of MultiFDPacket_t before 9.0: bytes 32..63 are unused[4]). The sender never
# clears its header, so an empty packet keeps the previous name, offsets and next_packet_size.
STALE_EMPTY = header(
    "11223344 00000001"  # magic, version
    "00000000 00000080 00000000"  # flags 0, pages_alloc 128, normal_pages 0
    "00001000 0000000000000003"  # next_packet_size 4096 (stale: no payload follows), packet_num 3
    + "00" * 32,  # unused[4]
    "pc.ram", (0x3000,))  # stale name and offset[0]
STALE_SYNC = header("11223344 00000001 00000001 00000080 00000000 00001000 0000000000000004" + "00" * 32,
                    "pc.ram", (0x3000,))  # SYNC, as stale

# >= 9.0: zero_pages (u32) and unused32 take bytes 32..39; offset[] lists the normal pages,
# then the zero pages; the sender clears the header first (multifd_send_fill_packet).
MIXED_HEAD = header(
    "11223344 00000001"  # MultiFDPacketHdr_t: magic, version
    "00000000"  # flags: nocomp
    "00000080 00000001"  # pages_alloc 128, normal_pages 1
    "00001000"  # next_packet_size: the one normal page
    "0000000000000007"  # packet_num 7
    "00000002 00000000"  # zero_pages 2, unused32
    + "00" * 24,  # unused64[3]
    "pc.ram", (0x3000, 0x4000, 0x5000))  # offset[]: the normal page, then the two zero pages
ZERO_ONLY_HEAD = header(
    "11223344 00000001 00000000 00000080"  # magic, version, flags 0, pages_alloc 128
    "00000000 00000000"  # normal_pages 0, next_packet_size 0: no payload
    "0000000000000008 00000001 00000000" + "00" * 24,  # packet_num 8, zero_pages 1, unused
    "pc.ram", (0x6000,))
SYNC10_HEAD = header(
    "11223344 00000001 00000001"  # magic, version, flags SYNC
    "00000000 00000000 00000000"  # pages_alloc 0 (10.0 fills no RAM fields in a sync), normal 0, size 0
    "0000000000000009" + "00" * 32)  # packet_num 9; zero_pages 0; no name, no offsets

# 10.0 device state: MultiFDPacketDeviceState_t (multifd.h), 276 bytes, then the opaque data.
DEVICE_STATE_HEAD = (
    h("11223344 00000001 00000040")  # MultiFDPacketHdr_t: magic, version, flags DEVICE_STATE (1 << 6)
    + b"0000:00:05.0/vfio".ljust(256, b"\0")  # idstr[256]
    + h("00000002")  # instance_id 2
    + h("00000008")  # next_packet_size: 8 bytes of device data follow, uncompressed
)
DEVICE_DATA = h("0102030405060708")

# zlib (multifd-zlib.c): one deflate stream per channel, never finished; each payload ends with
# Z_SYNC_FLUSH (an empty stored block). Here the deflate blocks are stored (uncompressed) ones.
ZLIB_1 = (h("7801")  # zlib header (CM 8, 32 KiB window): on the channel's first payload only
          + h("00 0010 ffef") + PAGE_11  # stored block, not final: LEN 4096, NLEN, the page
          + h("00 0000 ffff"))  # Z_SYNC_FLUSH
ZLIB_2 = h("00 0010 ffef") + PAGE_22 + h("00 0000 ffff")  # the same stream goes on: no header
ZLIB_HEAD_1 = header("11223344 00000001 00000002 00000080 00000001"  # flags ZLIB, 128, 1 page
                     "0000100c 0000000000000001" + "00" * 32,  # next_packet_size 4108, packet_num 1
                     "pc.ram", (0x1000,))
ZLIB_HEAD_2 = header("11223344 00000001 00000002 00000080 00000001 0000100a 0000000000000002" + "00" * 32,
                     "pc.ram", (0x2000,))  # next_packet_size 4106

# zstd (multifd-zstd.c): one zstd frame per channel that never ends; a flush ends each payload.
ZSTD_1 = (h("28b52ffd")  # frame magic: on the channel's first payload only
          + h("00")  # frame header descriptor: no content size, not single segment, no checksum
          + h("48")  # window descriptor: 2 ** (10 + 9) = 512 KiB
          + h("008000") + PAGE_11)  # block header (24 bits LE): not last, raw, 4096 bytes (4096 << 3)
ZSTD_2 = h("008000") + PAGE_22  # the frame goes on: the next block
ZSTD_HEAD_1 = header("11223344 00000001 00000004 00000080 00000001"  # flags ZSTD, 128, 1 page
                     "00001009 0000000000000001" + "00" * 32,  # next_packet_size 4105, packet_num 1
                     "pc.ram", (0x1000,))
ZSTD_HEAD_2 = header("11223344 00000001 00000004 00000080 00000001 00001003 0000000000000002" + "00" * 32,
                     "pc.ram", (0x2000,))  # next_packet_size 4099

# bytes 32..35 = 1: zero_pages for >= 9.0, reserved (ignored) for 7.2; offset[1] = 0x7000
RESERVED_HEAD = header("11223344 00000001 00000000 00000080 00000001 00001000 0000000000000004"
                       "00000001 00000000" + "00" * 24, "pc.ram", (0x3000, 0x7000))

P2 = 64 + HDR_SIZE + 4096  # the second packet, after one carrying one raw page
Z2, S2 = 64 + HDR_SIZE + len(ZLIB_1), 64 + HDR_SIZE + len(ZSTD_1)

MULTIFD_ROWS = {
    "7.2: a nocomp packet, then an empty SYNC": (
        MultifdChannelDecoder, HANDSHAKE + PKT1_HEAD + PKT1_PAYLOAD + SYNC_HEAD,
        [HS_EV, packet_event(64, PKT1_HEAD, PKT1_PAYLOAD, 0, 1, 4096, 0, "pc.ram", [0x3000], False),
         packet_event(P2, SYNC_HEAD, b"", 1, 0, 0, 1, "pc.ram", [], True)],
    ),
    "7.2: empty packets keep stale fields and carry no payload": (
        MultifdChannelDecoder, HANDSHAKE + STALE_EMPTY + STALE_SYNC,
        [HS_EV, packet(64, STALE_EMPTY, flags=0, alloc=128, nps=4096, num=3, block="pc.ram"),
         packet(64 + HDR_SIZE, STALE_SYNC, flags=1, alloc=128, nps=4096, num=4, block="pc.ram", sync=True)],
    ),
    "9.0: normal and zero pages, zero pages only, then a 10.0 SYNC": (
        MultifdChannelDecoder, HANDSHAKE + MIXED_HEAD + PAGE_5A + ZERO_ONLY_HEAD + SYNC10_HEAD,
        [HS_EV,
         packet(64, MIXED_HEAD, PAGE_5A, PAGE_5A, flags=0, alloc=128, nps=4096, num=7, block="pc.ram",
                normal=[0x3000], zero=[0x4000, 0x5000]),
         packet(P2, ZERO_ONLY_HEAD, flags=0, alloc=128, nps=0, num=8, block="pc.ram", zero=[0x6000]),
         packet(P2 + HDR_SIZE, SYNC10_HEAD, flags=1, alloc=0, nps=0, num=9, block="", sync=True)],
    ),
    "10.0: a device-state packet between RAM packets": (
        MultifdChannelDecoder, HANDSHAKE + DEVICE_STATE_HEAD + DEVICE_DATA + SYNC10_HEAD,
        [HS_EV,
         ev.MultifdDeviceState(64, 0x40, "0000:00:05.0/vfio", 2, 8, 64 + 276, DEVICE_DATA, DEVICE_STATE_HEAD),
         packet(64 + 276 + 8, SYNC10_HEAD, flags=1, alloc=0, nps=0, num=9, block="", sync=True)],
    ),
    "zlib: one stream across the channel's packets": (
        MultifdChannelDecoder, HANDSHAKE + ZLIB_HEAD_1 + ZLIB_1 + ZLIB_HEAD_2 + ZLIB_2,
        [HS_EV,
         packet(64, ZLIB_HEAD_1, ZLIB_1, PAGE_11, flags=2, alloc=128, nps=4108, num=1, block="pc.ram",
                normal=[0x1000]),
         packet(Z2, ZLIB_HEAD_2, ZLIB_2, PAGE_22, flags=2, alloc=128, nps=4106, num=2, block="pc.ram",
                normal=[0x2000])],
    ),
    "zstd: one frame across the channel's packets": (
        MultifdChannelDecoder, HANDSHAKE + ZSTD_HEAD_1 + ZSTD_1 + ZSTD_HEAD_2 + ZSTD_2,
        [HS_EV,
         packet(64, ZSTD_HEAD_1, ZSTD_1, PAGE_11, flags=4, alloc=128, nps=4105, num=1, block="pc.ram",
                normal=[0x1000]),
         packet(S2, ZSTD_HEAD_2, ZSTD_2, PAGE_22, flags=4, alloc=128, nps=4099, num=2, block="pc.ram",
                normal=[0x2000])],
    ),
    "layout 9.0+: bytes 32..35 are zero_pages": (
        MultifdChannelDecoder, HANDSHAKE + RESERVED_HEAD + PAGE_5A,
        [HS_EV, packet(64, RESERVED_HEAD, PAGE_5A, PAGE_5A, flags=0, alloc=128, nps=4096, num=4, block="pc.ram",
                       normal=[0x3000], zero=[0x7000])],
    ),
    "layout 7.2: bytes 32..35 are reserved": (
        lambda: MultifdChannelDecoder(layout="7.2"), HANDSHAKE + RESERVED_HEAD + PAGE_5A,
        [HS_EV, packet(64, RESERVED_HEAD, PAGE_5A, PAGE_5A, flags=0, alloc=128, nps=4096, num=4, block="pc.ram",
                       normal=[0x3000])],
    ),
}


@pytest.mark.parametrize("name", list(MULTIFD_ROWS))
def test_multifd_table(name):
    make, data, events = MULTIFD_ROWS[name]
    check(make, data, events)


def test_multifd_seed_handshake_table():
    """The seed's (QEMU 2.11-3.0) packed handshake: 25 bytes, and the channel carries nothing else."""
    seed = MAGIC_VERSION + UUID + h("02")
    want = [ev.MultifdHandshake(0x11223344, 1, UUID, 2, 0, seed)]
    check(MultifdChannelDecoder, seed, want)
    assert want[0].seed_layout
    check(lambda: MultifdChannelDecoder(layout="3.0"), seed + h("00"), want,
          (StreamError, 25, "data after a seed-era multifd handshake"))


def one_page_head(flags: str, counts: str = "00000080 00000001 00001000", zero: str = "00000000") -> bytes:
    """A header with pages_alloc, normal_pages, next_packet_size = ``counts`` (hex), packet_num 1."""
    return header(f"11223344 00000001 {flags} {counts} 0000000000000001 {zero} 00000000" + "00" * 24,
                  "pc.ram", (0x1000,))


ZSTD_EV = packet(64, ZSTD_HEAD_1, ZSTD_1, PAGE_11, flags=4, alloc=128, nps=4105, num=1, block="pc.ram",
                 normal=[0x1000])

MULTIFD_ERRORS = {
    "bad handshake magic": (h("11223345 00000001") + bytes(56), [], (StreamError, 0, "bad multifd handshake magic")),
    "bad packet magic": (HANDSHAKE + h("11223345") + bytes(1340), [HS_EV],
                         (StreamError, 64, "bad multifd packet magic")),
    "bad packet version": (HANDSHAKE + h("11223344 00000002") + PKT1_HEAD[8:] + PKT1_PAYLOAD, [HS_EV],
                           (StreamError, 68, "bad multifd packet version")),
    "pages_alloc too big": (HANDSHAKE + ram_packet(0, 129, 0, 0, 0, "pc.ram", [], b"")[0], [HS_EV],
                            (StreamError, 76, "pages_alloc exceeds the packet size")),
    "normal_pages > pages_alloc": (HANDSHAKE + ram_packet(0, 1, 2, 0, 0, "pc.ram", [], b"")[0], [HS_EV],
                                   (StreamError, 80, "normal_pages exceeds pages_alloc")),
    "normal_pages 2**32 - 1": (HANDSHAKE + one_page_head("00000000", "00000080 ffffffff 00001000"), [HS_EV],
                               (StreamError, 80, "normal_pages exceeds pages_alloc")),
    "zero_pages > pages_alloc - normal_pages": (
        HANDSHAKE + one_page_head("00000000", zero="ffffffff"), [HS_EV],
        (StreamError, 96, "zero_pages exceeds pages_alloc - normal_pages"),
    ),
    # A full 7.2 packet has no room for zero pages: nonzero reserved bytes there are damage.
    "zero_pages in a full 7.2 packet": (HANDSHAKE + one_page_head("00000004", "00000080 00000080 00001009", "00000001"),
                                        [HS_EV], (StreamError, 96, "zero_pages exceeds")),
    "next_packet_size over 1 MiB": (HANDSHAKE + one_page_head("00000002", "00000080 00000001 00100001"), [HS_EV],
                                    (StreamError, 84, "next_packet_size too large")),
    "unaligned page offset": (HANDSHAKE + b"".join(ram_packet(0, 128, 1, 4096, 0, "pc.ram", [0x3001], bytes(4096))),
                              [HS_EV], (StreamError, 64 + 320, "not page aligned")),
    "qpl compression (9.1)": (HANDSHAKE + one_page_head("00000008"), [HS_EV],
                              (UnsupportedFeature, 72, "multifd compression qpl is not supported")),
    "uadk compression (9.1)": (HANDSHAKE + one_page_head("00000010"), [HS_EV],
                               (UnsupportedFeature, 72, "multifd compression uadk is not supported")),
    "qatzip compression (9.2)": (HANDSHAKE + one_page_head("00000020"), [HS_EV],
                                 (UnsupportedFeature, 72, "multifd compression qatzip is not supported")),
    "unknown compression bits": (HANDSHAKE + one_page_head("00000006"), [HS_EV],
                                 (StreamError, 72, "unknown multifd compression flags")),
    "qpl bits in the 7.2 layout": (HANDSHAKE + one_page_head("00000008"), [HS_EV],
                                   (StreamError, 72, "unknown multifd compression flags"), {"layout": "7.2"}),
    "zlib packet in a zstd channel": (
        HANDSHAKE + ZSTD_HEAD_1 + ZSTD_1 + ZLIB_HEAD_2 + ZLIB_2, [HS_EV, ZSTD_EV],
        (StreamError, S2 + 8, "compression differs from the channel's"),
    ),
    "zlib packet, zstd configured": (HANDSHAKE + ZLIB_HEAD_1 + ZLIB_1, [HS_EV],
                                     (StreamError, 72, "compression differs"), {"compression": "zstd"}),
    "zlib payload short of its pages": (
        HANDSHAKE + one_page_head("00000002", "00000080 00000001 00000070") + h("7801 00 6400 9bff")
        + bytes(100) + h("00 0000 ffff"), [HS_EV],  # a stored block of 100 bytes, not 4096
        (StreamError, 64 + HDR_SIZE, "wrong decompressed size"),
    ),
    "device-state payload over the limit": (HANDSHAKE + DEVICE_STATE_HEAD + DEVICE_DATA, [HS_EV],
                                            (StreamError, 64 + 272, "device-state payload too large"),
                                            {"max_device_state_size": 4}),
    "cut inside a device-state payload": (HANDSHAKE + DEVICE_STATE_HEAD + DEVICE_DATA[:3], [HS_EV],
                                          (TruncatedStream, 64, "multifd channel ends inside an item")),
    "cut inside a header": (HANDSHAKE + PKT1_HEAD[:100], [HS_EV],
                            (TruncatedStream, 64, "multifd channel ends inside an item")),
    "cut inside a payload": (HANDSHAKE + PKT1_HEAD + PKT1_PAYLOAD[:10], [HS_EV],
                             (TruncatedStream, 64, "multifd channel ends inside an item")),
}


@pytest.mark.parametrize("name", list(MULTIFD_ERRORS))
def test_multifd_errors_table(name):
    data, events, error, *options = MULTIFD_ERRORS[name]
    kw = options[0] if options else {}
    check(lambda: MultifdChannelDecoder(**kw), data, events, error)


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

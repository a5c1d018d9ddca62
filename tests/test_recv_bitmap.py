"""The received-bitmap blob of postcopy recovery (``ramblock_recv_bitmap_send`` /
``ram_dirty_bitmap_reload``), its argument checks, and the run finder the discard planner
uses on every bitmap.

A bad argument is a :class:`~ramlab.errors.BitmapError`; a damaged blob is stream damage (a
:class:`~ramlab.errors.StreamError` that names the byte).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from _junk import call_or_ramlab_error, junk
from hypothesis import given, settings
from hypothesis import strategies as st

from ramlab.constants import RAMBLOCK_RECV_BITMAP_ENDING
from ramlab.errors import BitmapError, RamlabError, StreamError, TruncatedStream
from ramlab.model.postcopy_plan import bitmap_runs
from ramlab.wire.recv_bitmap import decode_recv_bitmap, encode_recv_bitmap, recv_bitmap_size


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), max_size=300))
def test_bitmap_runs_are_the_maximal_runs_of_set_bits(bits):
    want, start = [], None
    for i, b in enumerate([*bits, False]):
        if b and start is None:
            start = i
        elif not b and start is not None:
            want.append([start, i - start])
            start = None
    got = bitmap_runs(np.array(bits, bool)).pairs
    assert got.dtype == np.int64 and got.shape == (len(want), 2)
    assert got.tolist() == want
    assert bitmap_runs(np.array(bits, np.uint8)).pairs.tolist() == want




def test_blob_size_rounding():
    assert [recv_bitmap_size(n, "seed") for n in (0, 7, 8, 63, 64, 65, 71, 72, 128, 129)] == \
        [0, 0, 8, 8, 8, 8, 8, 16, 16, 16]
    assert [recv_bitmap_size(n, "modern") for n in (0, 1, 8, 63, 64, 65, 71, 72, 128, 129)] == \
        [0, 8, 8, 8, 8, 16, 16, 16, 16, 24]


@pytest.mark.parametrize("nbits", [0, 1, 7, 8, 63, 64, 65, 70, 71, 72, 100, 128, 129, 135, 136, 1000, 4096])
@pytest.mark.parametrize("rounding", ["seed", "modern"])
def test_blob_round_trip(nbits, rounding):
    bits = np.random.default_rng(nbits).random(nbits) < 0.5
    blob = encode_recv_bitmap(bits, rounding)
    size = recv_bitmap_size(nbits, rounding)
    assert blob[:8] == struct.pack(">Q", size)
    assert blob[8 + size :] == struct.pack(">Q", RAMBLOCK_RECV_BITMAP_ENDING)
    got, used = decode_recv_bitmap(blob + b"trailing", nbits, rounding)
    assert used == 16 + size
    lost = nbits % 64 if (rounding == "seed" and 1 <= nbits % 64 <= 7) else 0
    kept = nbits - lost
    assert np.array_equal(got[:kept], bits[:kept])
    assert not got[kept:].any()  # lost bits read back as "not received"
    # the bitmap bytes are QEMU's little-endian words, padding bits clear
    body = blob[8 : 8 + size]
    assert all(((body[k // 8] >> (k % 8)) & 1) == bits[k] for k in range(min(kept, size * 8)))
    assert all(((body[k // 8] >> (k % 8)) & 1) == 0 for k in range(kept, size * 8))


def test_seed_rounding_loses_the_tail_bits():
    bits = np.ones(70, bool)
    got, _ = decode_recv_bitmap(encode_recv_bitmap(bits, "seed"), 70, "seed")
    assert got[:64].all() and not got[64:].any()
    got, _ = decode_recv_bitmap(encode_recv_bitmap(bits, "modern"), 70, "modern")
    assert got.all()
    bits = np.ones(72, bool)  # nbits % 64 == 8: nothing lost
    assert decode_recv_bitmap(encode_recv_bitmap(bits, "seed"), 72, "seed")[0].all()


def test_blob_errors():
    bits = np.ones(65, bool)
    seed_blob = encode_recv_bitmap(bits, "seed")
    with pytest.raises(StreamError, match="size mismatch at byte 0 .*expected 0x10, found 0x8"):
        decode_recv_bitmap(seed_blob, 65, "modern")  # seed <-> modern do not interoperate
    with pytest.raises(TruncatedStream, match="truncated at byte 0 .*expected 8 bytes of size, found 3 bytes"):
        decode_recv_bitmap(seed_blob[:3], 65, "seed")
    with pytest.raises(TruncatedStream, match="truncated at byte 8 .*expected 8 bytes of bitmap, found 4 bytes"):
        decode_recv_bitmap(seed_blob[:12], 65, "seed")
    with pytest.raises(TruncatedStream, match="truncated at byte 16 .*expected the 8-byte end mark, found 4 bytes"):
        decode_recv_bitmap(seed_blob[:20], 65, "seed")
    bad = seed_blob[:16] + b"\x01" * 8
    with pytest.raises(StreamError, match="end mark incorrect at byte 16"):
        decode_recv_bitmap(bad, 65, "seed")
    with pytest.raises(BitmapError):
        encode_recv_bitmap(bits, "other")


@pytest.mark.parametrize("bits,message", [
    (np.array([0, 2, 1]), "must hold only 0 and 1, found values 0..2"),
    (np.array([1.0, np.nan]), "bits must be a 1-D array of bools or 0/1 integers, found array of float64"),
    (None, "found None"),
    (np.zeros((2, 2), bool), r"found array of bool, shape \(2, 2\)"),
    (np.True_, r"found np.True_"),
    ("0101", "found '0101'"),
    ([0, 1, -1], "found values -1..1"),
    ([[0], [1, 1]], r"found \[\[0\], \[1, 1\]\]"),
])
def test_encode_recv_bitmap_refuses_what_is_not_a_bitmap(bits, message):
    with pytest.raises(BitmapError, match=message):
        encode_recv_bitmap(bits, "modern")


def test_recv_bitmap_blob_accepts_bools_and_0_1_integers():
    want = encode_recv_bitmap(np.array([True, False, True]), "modern")
    assert want.hex() == "0000000000000008" "0500000000000000" "0123456789abcdef"
    for same in ([1, 0, 1], np.array([1, 0, 1], np.uint8), np.array([1, 0, 1], np.int64), (True, False, True)):
        assert encode_recv_bitmap(same, "modern") == want
    with pytest.raises(BitmapError, match="rounding must be one of 'seed', 'modern', found 'new'"):
        encode_recv_bitmap([1], "new")
    with pytest.raises(BitmapError, match="nbits must be an integer, found nan"):
        decode_recv_bitmap(want, float("nan"), "modern")
    with pytest.raises(BitmapError, match="nbits must be >= 0"):
        recv_bitmap_size(-8)
    with pytest.raises(BitmapError, match="data must be bytes-like"):
        decode_recv_bitmap(want.hex(), 3, "modern")
    bits, used = decode_recv_bitmap(bytearray(want), np.int64(3), "modern")
    assert bits.tolist() == [True, False, True] and used == 24


@settings(max_examples=100, deadline=None)
@given(junk())
def test_encode_recv_bitmap_junk(value):
    r = call_or_ramlab_error(encode_recv_bitmap, value, "seed")
    if not isinstance(r, RamlabError):  # accepted: then it was a 1-D bool / 0-1 integer array
        a = np.asarray(value)
        assert a.ndim == 1 and (a.size == 0 or a.dtype == bool or (a.dtype.kind in "iu" and set(a.tolist()) <= {0, 1}))
        assert len(r) == 16 + recv_bitmap_size(a.size, "seed")
    else:
        assert isinstance(r, BitmapError)

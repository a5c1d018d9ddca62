"""Bad arguments to QEMU's bitmap type and the received-bitmap blob give a BitmapError (issue #13, item 4).

The issue's reproducer: ``encode_recv_bitmap`` accepted 2, NaN, None and 2-D input (and wrote
a blob for them). Then hypothesis throws junk at every public method and function.
"""

from __future__ import annotations

import numpy as np
import pytest
from _junk import arg, call_or_ramlab_error, junk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramlab.errors import BitmapError, RamlabError, StreamError
from ramlab.model.bitmap import MAX_BITS, Bitmap
from ramlab.wire.recv_bitmap import decode_recv_bitmap, encode_recv_bitmap, recv_bitmap_size


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


def test_bitmap_checks_like_qemu_asserts():
    bm = Bitmap(10)
    cases = [
        (lambda: Bitmap(-1), "nbits must be >= 0"),
        (lambda: Bitmap(2.5), "nbits must be an integer, found 2.5"),
        (lambda: Bitmap(True), "nbits must be an integer, found True"),
        (lambda: Bitmap(MAX_BITS + 1), f"nbits must be <= {MAX_BITS}"),
        (lambda: Bitmap(bits=[True]), "bits must be a 1-D bool numpy array"),
        (lambda: Bitmap(3, bits=np.zeros(4, bool)), "nbits 3 differs from the 4 bits given"),
        (lambda: Bitmap.from_bits([0, 3]), "only 0 and 1"),
        (lambda: Bitmap.from_bits(np.zeros((2, 2))), "bits must be a 1-D array"),
        (lambda: bm.set_bit(10), "bit 10 outside bitmap of 10 bits"),
        (lambda: bm.set_bit(-1), "bit -1 outside"),
        (lambda: bm.test_bit(float("nan")), "bit number must be an integer, found nan"),
        (lambda: bm.test_and_clear_bit("3"), "bit number must be an integer, found '3'"),
        (lambda: bm.set(8, 3), r"bit range \[8, 11\) outside"),
        (lambda: bm.clear(0, 1.5), "nr must be an integer"),
        (lambda: bm.find_next_bit(11, 0), "search size 11 exceeds"),
        (lambda: bm.find_next_bit(10, -1), "start must be >= 0"),
        (lambda: bm.find_next_zero_bit(None, 0), "size must be an integer, found None"),
        (lambda: bm.or_(np.zeros(10, bool)), "expected a Bitmap, found array of bool"),
        (lambda: bm.and_(Bitmap(9)), r"bitmap sizes differ \(10 != 9\)"),
        (lambda: Bitmap.from_words([1.5], 3), "words must be a 1-D array of 64-bit words"),
        (lambda: Bitmap.from_words([-1], 3), "unsigned 64-bit values, found -1"),
        (lambda: Bitmap.from_words([1], 65), "1 words hold fewer than 65 bits"),
        (lambda: Bitmap.from_words([[1]], 1), "words must be a 1-D array"),
        (lambda: bm.dump_text(expected=2), "expected must be True or False"),
        (lambda: bm.dump_text(pages=11), "pages 11 outside"),
    ]
    for fn, message in cases:
        with pytest.raises(BitmapError, match=message):
            fn()
    assert bm.count() == 0  # nothing was written by the refused calls
    assert Bitmap.from_words([2**64 - 1], 64).count() == 64
    assert Bitmap(np.int32(5)).nbits == 5 and Bitmap(4.0).nbits == 4


METHODS = ["test_bit", "set_bit", "clear_bit", "test_and_clear_bit", "set", "clear", "find_next_bit",
           "find_next_zero_bit", "find_first_bit", "count", "complement", "or_", "and_", "runs", "to_words",
           "to_le_bytes", "dump_text", "copy"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_only_bitmap_errors_escape(data):
    draw = data.draw
    n = draw(st.integers(0, 70))
    bm = Bitmap.from_bits(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    what = draw(st.sampled_from(METHODS + ["new", "from_bits", "from_words", "encode", "decode", "size"]))
    small = st.integers(-3, n + 3)
    if what == "new":
        r = call_or_ramlab_error(Bitmap, draw(arg(small)), draw(arg(None, np.zeros(n, bool))))
    elif what == "from_bits":
        r = call_or_ramlab_error(Bitmap.from_bits, draw(arg(bm.bits, bm.bits.astype(np.uint8))))
    elif what == "from_words":
        r = call_or_ramlab_error(Bitmap.from_words, draw(arg(bm.to_words(), [1, 2])), draw(arg(small)))
    elif what == "encode":
        r = call_or_ramlab_error(encode_recv_bitmap, draw(arg(bm.bits)), draw(arg("seed", "modern")))
    elif what == "decode":  # a damaged blob is stream damage (StreamError); bad arguments a BitmapError
        blob = encode_recv_bitmap(bm.bits, "modern")
        r = call_or_ramlab_error(decode_recv_bitmap, draw(arg(blob, blob[:-1])), draw(arg(n, small)),
                                 draw(arg("modern", "seed")))
        if isinstance(r, StreamError):
            return
    elif what == "size":
        r = call_or_ramlab_error(recv_bitmap_size, draw(arg(small)), draw(arg("seed", "modern")))
    else:
        nargs = {"find_first_bit": 1, "or_": 1, "and_": 1, "dump_text": 2, "set": 2, "clear": 2,
                 "find_next_bit": 2, "find_next_zero_bit": 2}.get(what, 0)
        if what in ("test_bit", "set_bit", "clear_bit", "test_and_clear_bit"):
            nargs = 1
        valid = {"or_": Bitmap(n), "and_": Bitmap(n), "dump_text": False}
        args = [draw(arg(valid.get(what, small))) for _ in range(nargs)]
        r = call_or_ramlab_error(getattr(bm, what), *args)
    assert not isinstance(r, RamlabError) or isinstance(r, BitmapError)


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

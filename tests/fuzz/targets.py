"""Fuzz targets: each takes arbitrary bytes and fails (raises) only when ramlab misbehaves.

Misbehaving means: an exception that is not a :class:`~ramlab.errors.RamlabError` escaping a
decoder, an :class:`~ramlab.errors.InternalError` (ramlab's own bug) in ``ramlab.open``, a decoder
that breaks its contract (an event after the error, ``END`` before the input ended), chunked
decoding that differs from whole decoding, or an encoder that does not give back the bytes it was
decoded from. Budgets (time and memory per input) are enforced by the fuzzer (``-timeout``,
``-rss_limit_mb``: see ``run.py``).

Each target is a plain function, so a crash the fuzzer finds is replayed by calling it on the
saved input (``tests/test_fuzz.py`` does that for every file under ``tests/fuzz/regressions/``).
"""

from __future__ import annotations

import numpy as np
from _shared import decode_checked

import ramlab
from ramlab.errors import InternalError, RamlabError, StreamError, XbzrleError
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.encoder import encode_events
from ramlab.wire.multifd import MultifdChannelDecoder
from ramlab.wire.return_path import ReturnPathDecoder, encode_return_path
from ramlab.xbzrle import decode_batch

__all__ = ["TARGETS"]


def _cuts(data: bytes) -> list[int]:
    """Two cut points taken from the input itself, so the fuzzer explores chunkings too."""
    if len(data) < 4:
        return []
    a = int.from_bytes(data[:2], "little") % len(data)
    b = int.from_bytes(data[2:4], "little") % len(data)
    return sorted({a, b} - {0})


def _same_both_ways(make, data: bytes) -> tuple[list, StreamError | None]:
    whole, err = decode_checked(make, data, [])
    pieces, err2 = decode_checked(make, data, _cuts(data))
    assert pieces == whole, "chunked decoding differs from whole decoding"
    assert (err is None) == (err2 is None) and (err is None or str(err) == str(err2)), (err, err2)
    return whole, err


def stream(data: bytes) -> None:
    """The savevm stream decoder; a stream decoded without error re-encodes to its bytes."""
    events, err = _same_both_ways(StreamDecoder, data)
    if err is None:
        assert b"".join(encode_events(events)) == data, "re-encoding differs"


def multifd(data: bytes) -> None:
    """One multifd channel (auto layout)."""
    _same_both_ways(MultifdChannelDecoder, data)


def return_path(data: bytes) -> None:
    """The postcopy return path; a clean one re-encodes to its bytes."""
    events, err = _same_both_ways(ReturnPathDecoder, data)
    if err is None:
        assert encode_return_path(events) == data, "re-encoding differs"


def xbzrle(data: bytes) -> None:
    """XBZRLE batch decoding of pieces of the input onto pages of 256 bytes; only XbzrleError."""
    if len(data) < 2:
        return
    n = data[0] % 8 + 1
    body = data[1:]
    step = max(1, len(body) // n)
    encoded = [body[i * step : (i + 1) * step] for i in range(n)]
    pages = np.zeros((n, 256), np.uint8)
    try:
        decode_batch(encoded, pages, errors="report" if data[0] & 0x80 else "raise")
    except XbzrleError:
        pass


def open_bytes(data: bytes) -> None:
    """``ramlab.open`` on the input as a main stream: never raises, never an internal error."""
    m = ramlab.open(data)
    assert not isinstance(m.error, InternalError), m.error
    m.summary()


def open_channels(data: bytes) -> None:
    """``ramlab.open`` with the input split into a main stream, a multifd channel and a return path."""
    a, b = _cuts(data) + [len(data)] * (2 - len(_cuts(data)))
    try:
        m = ramlab.open(data[4:a] if a > 4 else b"", data[a:b], return_path=data[b:])
    except RamlabError as exc:  # only "the capture cannot be read" kinds of errors may escape
        raise AssertionError(f"open raised {exc!r}") from exc
    assert not isinstance(m.error, InternalError), m.error


TARGETS = {f.__name__: f for f in (stream, multifd, return_path, xbzrle, open_bytes, open_channels)}

"""Where the shared real captures are: ``$RAMLAB_SHARED``, else ``../shared`` beside the repo."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAMLAB_SHARED", REPO.parent / "shared"))
CAPTURES = SHARED / "captures"
CAPTURES_Q10 = SHARED / "captures-qemu10"
DATA = REPO / "ramlab" / "data"
VGA_WINDOW = (0xA0000, 0x100000)

# For tests that read the shared captures: they skip, saying why, where those are absent.
needs_shared = pytest.mark.skipif(not CAPTURES.is_dir() or not CAPTURES_Q10.is_dir(),
                                  reason=f"shared captures not found at {SHARED} (set $RAMLAB_SHARED)")


@functools.lru_cache(maxsize=8)
def read_zst(path: Path) -> bytes:
    import zstandard

    with open(path, "rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()


def guest_ram(folder: Path, name: str = "guest-ram.bin") -> np.ndarray:
    p = folder / (name + ".zst")
    data = read_zst(p) if p.exists() else (folder / name).read_bytes()
    return np.frombuffer(data, dtype=np.uint8)


def outside_vga(diff_offsets: np.ndarray) -> np.ndarray:
    lo, hi = VGA_WINDOW
    return diff_offsets[(diff_offsets < lo) | (diff_offsets >= hi)]


def decode_all(data, chunks=None, **kw):
    """Decode ``data`` fed whole or in ``chunks`` (sizes); returns ``(events, error or None)``."""
    from ramlab.errors import StreamError
    from ramlab.wire.decoder import StreamDecoder

    dec = StreamDecoder(**kw)
    out = []
    if chunks is None:
        dec.receive_data(data)
    else:
        pos = 0
        for n in chunks:
            dec.receive_data(data[pos : pos + n])
            out.extend(dec.events())
            pos += n
        dec.receive_data(data[pos:])
    try:
        dec.close()
        out.extend(dec.events())
    except StreamError as err:
        return out, err
    return out, None


def decode_checked(make, data: bytes, cuts) -> tuple[list, object]:
    """Decode ``data`` with a new ``make()`` decoder, fed in pieces cut at ``cuts``, checking the
    contract of ``ramlab.wire.contract`` on the way: ``END`` only after the input ended,
    ``NEED_DATA`` only before, and an error that stays raised. Returns ``(events, error or None)``."""
    from ramlab.errors import StreamError
    from ramlab.wire.contract import END, NEED_DATA

    dec = make()
    events: list = []
    err = None
    try:
        prev = 0
        for c in [*cuts, len(data)]:
            if c > prev:  # (an empty piece would end the input)
                dec.receive_data(data[prev:c])
            prev = c
            while (e := dec.next_event()) is not NEED_DATA:
                assert e is not END, "END before the input ended"
                events.append(e)
        dec.close()
        while (e := dec.next_event()) is not END:
            assert e is not NEED_DATA, "NEED_DATA after the input ended"
            events.append(e)
    except StreamError as exc:
        err = exc
        try:
            dec.next_event()
        except StreamError as again:
            assert again is exc and dec.error is exc, "the error is not sticky"
        else:
            raise AssertionError("the decoder went on after its error") from None
    return events, err

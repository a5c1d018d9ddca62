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

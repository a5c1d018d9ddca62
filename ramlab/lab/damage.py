"""Deterministic damaged copies of a real capture, for lab 06 (debugging a capture).

    >>> len(damaged("truncated")) == TRUNCATE_AT
    True
"""

from __future__ import annotations

import functools

from ramlab.errors import RamlabError
from ramlab.lab.refwalk import RefWalk, ref_walk
from ramlab.lab.samples import stream_bytes

__all__ = ["TRUNCATE_AT", "DAMAGES", "damaged", "flipped_offset"]

#: the kinds of damage :func:`damaged` makes
DAMAGES = ("truncated", "flipped", "renamed", "unknown-block")


@functools.lru_cache(maxsize=4)
def _walk_sample(name: str) -> RefWalk:
    return ref_walk(stream_bytes(name))


#: how long the truncated stream of exercise ``debug.truncated-offset`` is
TRUNCATE_AT = 3_000_000


def damaged(kind: str, name: str = "plain") -> bytes:
    """A deterministic damaged copy of a capture's stream, as used in notebook 06.

    ``"truncated"``: the first :data:`TRUNCATE_AT` bytes. ``"flipped"``: bit 0x40 flipped in the
    low flag byte of the 5th ZERO-with-CONTINUE record of the first long run of ZERO records.
    ``"renamed"``: the first page record's block name ``pc.ram`` overwritten with ``pc.rom``.
    ``"unknown-block"``: the same name overwritten with ``pc.raX``.
    """
    data = stream_bytes(name)
    walk = _walk_sample(name)
    if kind == "truncated":
        return data[:TRUNCATE_AT]
    if kind == "flipped":
        at = _flip_target(walk)
        b = bytearray(data)
        b[at + 7] ^= 0x40
        return bytes(b)
    if kind in ("renamed", "unknown-block"):
        first = walk.records[0][0]
        start = first + 9  # header word, then the cstr8 length byte
        old = data[start : start + 6]
        if old != b"pc.ram":
            raise RamlabError(f"the first page record names {old!r}, not pc.ram")
        b = bytearray(data)
        b[start : start + 6] = b"pc.rom" if kind == "renamed" else b"pc.raX"
        return bytes(b)
    raise ValueError(f"unknown damage {kind!r}: use truncated, flipped, renamed or unknown-block")


def _flip_target(walk: RefWalk) -> int:
    recs = walk.records
    for i in range(len(recs) - 6):
        if all(recs[i + k][1] == 0x02 for k in range(6)) and recs[i + 5][0] - recs[i + 1][0] == 36:
            return recs[i + 5][0]
    raise RamlabError("no run of ZERO records to damage")


def flipped_offset(name: str = "plain") -> int:
    """Byte offset of the record whose flag byte :func:`damaged` ``("flipped")`` changes."""
    return _flip_target(_walk_sample(name))

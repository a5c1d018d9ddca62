"""Exercises for the ramlab notebooks: ask a question, check an answer, explain it once it is right.

    >>> from ramlab import lab
    >>> r = lab.check("xbzrle.identical", 4096)
    >>> r.correct, r.explanation is None          # wrong: a hint, and the answer is not revealed
    (False, True)
    >>> lab.check("xbzrle.identical", 0).correct
    True

Every exercise computes its expected answer **when it is checked**, from one of three sources,
never from a number typed in here:

* a value the reference publishes (``docs/reference/algorithms.md``, ``stream-format.md``):
  XBZRLE edge cases (§6.1), the record sizes and flag table, ``compressBound``, the page-cache age
  rule, the auto-converge rule, the discard algorithms (transcribed below from §10 pseudocode,
  independently of :mod:`ramlab.model.postcopy_plan`);
* QEMU's own counters in a capture's ``meta.json`` (``query_migrate_final``);
* the capture's bytes, walked by :func:`ref_walk`, a small RAM-record walker written straight
  from ``stream-format.md`` §2-3 and independent of :mod:`ramlab.wire`.

A wrong answer gets a hint that does not give the answer away; the explanation (with the answer)
comes with a right answer, or with ``check(..., reveal=True)``.

:func:`sample` finds the bundled captures (``ramlab.data.data_path``) and falls back to the shared
captures (``$RAMLAB_SHARED/captures``, else ``../shared/captures`` beside the repository).
"""

from __future__ import annotations

import functools
import html
import json
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ramlab.errors import RamlabError

__all__ = [
    "Exercise",
    "Result",
    "RefWalk",
    "EXERCISES",
    "check",
    "ask",
    "exercises",
    "sample",
    "shared_captures",
    "ref_walk",
    "ref_discards",
    "damaged",
    "table",
    "hexdump",
    "events_table",
    "describe_event",
]

# ----------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------

#: bundled capture name -> folder of the shared captures holding the same kind of migration
SHARED_NAMES = {
    "plain": "precopy-plain",
    "xbzrle": "precopy-xbzrle",
    "compress": "precopy-compress",
    "multifd-zstd": "multifd-zstd",
    "postcopy": "postcopy-faults",
    "postcopy-hugepages": "postcopy-hugepages",
}


def shared_captures() -> Path:
    """``$RAMLAB_SHARED/captures``, else ``shared/captures`` next to the repository checkout."""
    from ramlab.data import shared_dir

    return shared_dir() / "captures"


def sample(name: str) -> Path:
    """Folder of a capture for the notebooks: ``ramlab.data.data_path(name)``, else the shared one.

    ``name`` is a bundled name (``plain``, ``xbzrle``, ``compress``, ``multifd-zstd``, ``postcopy``,
    ``postcopy-hugepages``) or a shared folder name (``precopy-plain``, ``idle-bios``, ...).
    """
    from ramlab.data import data_path

    try:
        return data_path(name)
    except RamlabError:
        pass
    folder = shared_captures() / SHARED_NAMES.get(name, name)
    if folder.is_dir():
        return folder
    raise RamlabError(f"no capture {name!r}: not in ramlab.data.data_dir() and not in {shared_captures()}")


def meta(name: str) -> dict:
    """The ``meta.json`` of a capture (QEMU's command lines, counters, ...)."""
    return json.loads((sample(name) / "meta.json").read_text())


def _qemu_ram_counter(name: str, key: str) -> int:
    return int(meta(name)["query_migrate_final"]["ram"][key])


@functools.lru_cache(maxsize=8)
def stream_bytes(name: str, stem: str = "stream") -> bytes:
    """The (decompressed) bytes of ``<stem>.bin[.zst]`` of a capture."""
    from ramlab.io import read_stream

    folder = sample(name)
    for suffix in (".bin", ".bin.zst"):
        p = folder / (stem + suffix)
        if p.exists():
            return bytes(read_stream(p))
    raise RamlabError(f"{folder}: no {stem}.bin[.zst]")


# ----------------------------------------------------------------------------------
# an independent reference walker of RAM records (stream-format.md §2-3)
# ----------------------------------------------------------------------------------

#: the flag table of stream-format.md §3.1
SPEC_FLAGS = {
    0x01: "FULL", 0x02: "ZERO", 0x04: "MEM_SIZE", 0x08: "PAGE", 0x10: "EOS", 0x20: "CONTINUE",
    0x40: "XBZRLE", 0x80: "HOOK", 0x100: "COMPRESS_PAGE", 0x200: "MULTIFD_FLUSH",
}
_KIND_BITS = 0x02 | 0x08 | 0x40 | 0x100


class _Cut(Exception):
    pass


class _Unsupported(Exception):
    pass


@dataclass
class RefWalk:
    """What :func:`ref_walk` found: RAM ``records`` ``(offset, kind_flag, block, page_offset)``, the
    MEM_SIZE ``blocks`` ``{name: used_length}`` in list order, where the stream was ``cut`` (start
    of the item that runs past the end, or ``None``) and where RAM ``stopped`` (first non-RAM item).
    """

    records: list[tuple[int, int, str, int]] = field(default_factory=list)
    blocks: dict[str, int] = field(default_factory=dict)
    cut: int | None = None
    stopped: int | None = None

    def passes(self) -> list[int]:
        """Pass number of each record: a new lap starts where (block order, offset) decreases."""
        order = {name: i for i, name in enumerate(self.blocks)}
        out, p, prev = [], 0, (-1, -1)
        for _, _, block, addr in self.records:
            key = (order.get(block, -1), addr)
            if key < prev:
                p += 1
            prev = key
            out.append(p)
        return out


def ref_walk(data: bytes, tps: int = 4096) -> RefWalk:
    """Walk the RAM records of a precopy stream exactly as ``stream-format.md`` §2-3 describes them.

    Header, configuration, then RAM START/PART/END sections (MEM_SIZE list, ZERO, PAGE, XBZRLE,
    COMPRESS_PAGE records, EOS, footer) until the first device section. Deliberately tiny and
    independent of :mod:`ramlab.wire`, so exercises and tests can check the decoder against it.

    >>> w = ref_walk(bytes.fromhex("5145564d00000003") + b"\\x00")
    >>> w.records, w.cut
    ([], None)
    """
    w = RefWalk()
    pos = 0
    item = 0

    def need(n: int) -> None:
        if pos + n > len(data):
            raise _Cut

    def u(n: int) -> int:
        nonlocal pos
        need(n)
        v = int.from_bytes(data[pos : pos + n], "big")
        pos += n
        return v

    def cstr8() -> str:
        nonlocal pos
        n = u(1)
        need(n)
        s = data[pos : pos + n].decode("latin-1")
        pos += n
        return s

    try:
        if u(4) != 0x5145564D or u(4) != 3:
            raise _Unsupported("not a version-3 QEVM stream")
        if pos < len(data) and data[pos] == 0x07:
            item = pos
            pos += 1
            n = u(4)
            pos += n
        ram_sid = None
        block = ""
        while True:
            item = pos
            t = u(1)
            if t == 0x08:  # command: skip (a PACKAGED blob would need more: stop there)
                cmd, ln = u(2), u(2)
                need(ln)
                pos += ln
                if cmd == 7:
                    w.stopped = item
                    return w
                continue
            if t in (0x01, 0x04):
                sid = u(4)
                name = cstr8()
                u(4), u(4)
                if name != "ram":
                    w.stopped = item
                    return w
                ram_sid = sid
            elif t in (0x02, 0x03):
                sid = u(4)
                if sid != ram_sid:
                    w.stopped = item
                    return w
            else:
                w.stopped = item
                return w
            while True:  # RAM section body
                item = pos
                word = u(8)
                flags, addr = word & (tps - 1), word & ~(tps - 1)
                if flags & 0x04:
                    total, have = addr, 0
                    while have < total:
                        name = cstr8()
                        used = u(8)
                        w.blocks[name] = used
                        have += used
                    continue
                if flags == 0x10:
                    break
                kind = flags & ~0x20
                if flags & 0x20 == 0:
                    block = cstr8()
                if kind == 0x02:
                    u(1)
                elif kind == 0x08:
                    need(tps)
                    pos += tps
                elif kind == 0x40:
                    u(1)
                    n = u(2)
                    need(n)
                    pos += n
                elif kind == 0x100:
                    n = u(4)
                    need(n)
                    pos += n
                else:
                    raise _Unsupported(f"flags {flags:#x} at byte {item}")
                w.records.append((item, kind, block, addr))
            item = pos
            if u(1) != 0x7E:
                raise _Unsupported(f"no section footer at byte {item}")
            u(4)
    except _Cut:
        w.cut = item
    return w


@functools.lru_cache(maxsize=4)
def _walk_sample(name: str) -> RefWalk:
    return ref_walk(stream_bytes(name))


# ----------------------------------------------------------------------------------
# damaged streams for notebook 06 (deterministic)
# ----------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------
# reference models (transcribed from algorithms.md)
# ----------------------------------------------------------------------------------


def _next_one(bits: list[int], n: int, s: int) -> int:
    for i in range(s, n):
        if bits[i]:
            return i
    return n


def _next_zero(bits: list[int], n: int, s: int) -> int:
    for i in range(s, n):
        if not bits[i]:
            return i
    return n


def _runs(bits: list[int]) -> list[tuple[int, int]]:
    n, cur, out = len(bits), 0, []
    while cur < n:
        one = _next_one(bits, n, cur)
        if one >= n:
            break
        zero = _next_zero(bits, n, one + 1)
        out.append((one, min(zero, n) - one))
        cur = one + (min(zero, n) - one)
    return out


def ref_discards(dirty: Sequence[int], unsent: Sequence[int] | None, r: int, algorithm: str) -> list[tuple[int, int]]:
    """Discard ranges (target pages, wire order) straight from algorithms.md §10.1-10.4 pseudocode.

    >>> ref_discards([0, 0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0], 4, "modern")
    [(0, 4)]
    """
    bmap = [int(bool(x)) for x in dirty]
    n = len(bmap)
    sent: list[tuple[int, int]] = []
    if algorithm == "modern":
        if r > 1:
            s = _next_one(bmap, n, 0)
            while s < n:
                if s % r == 0:
                    s = _next_zero(bmap, n, s + 1)
                if s % r:
                    fix = s - s % r
                    s = fix + r
                    for p in range(fix, fix + r):
                        bmap[p] = 1
                s = _next_one(bmap, n, s)
        return _runs(bmap)
    assert unsent is not None
    um = [int(bool(x)) for x in unsent]

    def chunk_pass(unsent_pass: bool) -> None:
        def first(s: int) -> int:
            return _next_zero(um, n, s) if unsent_pass else _next_one(bmap, n, s)

        def endrun(s: int) -> int:
            return _next_one(um, n, s) if unsent_pass else _next_zero(bmap, n, s)

        run_start = first(0)
        while run_start < n:
            fix = None
            if run_start % r:
                fix = run_start - run_start % r
                run_start = fix + r
            else:
                run_end = endrun(run_start + 1)
                if run_end % r:
                    fix = run_end - run_end % r
                    run_start = fix + r
                else:
                    run_start = run_end + 1
            if fix is not None:
                if unsent_pass or not um[fix]:
                    sent.append((fix, r))
                for p in range(fix, fix + r):
                    um[p] = 1
                    bmap[p] = 1
            run_start = first(run_start)

    if r > 1:
        chunk_pass(True)
        chunk_pass(False)
    um = [a | b for a, b in zip(um, bmap)]
    return sent + _runs(um)


def compress_bound(n: int) -> int:
    """zlib's ``compressBound`` (stream-format.md §3.7: 4110 for 4096)."""
    return n + (n >> 12) + (n >> 14) + (n >> 25) + 13


def geometric_passes(ram: float, bandwidth: float, dirty_rate: float, downtime: float, limit: int = 1000) -> int | None:
    """Iterative passes (bulk included) until what is left fits in ``bandwidth * downtime``.

    The simplest precopy model: a pass sends everything dirty, taking ``remaining / bandwidth``
    seconds, while the guest dirties ``dirty_rate`` bytes per second of pages not yet dirty.
    ``None`` when it never fits (``dirty_rate >= bandwidth`` and the first pass did not fit).
    """
    remaining = ram
    for p in range(1, limit + 1):
        remaining = remaining / bandwidth * dirty_rate
        if remaining <= bandwidth * downtime:
            return p
        if dirty_rate >= bandwidth:
            return None
    return None


def throttle_after(high_periods: int, initial: int = 20, increment: int = 10, max_throttle: int = 99) -> int:
    """CPU throttle (%) after ``high_periods`` "dirty rate high" sync periods (algorithms.md §3).

    ``dirty_rate_high_cnt`` counts high periods; when it reaches 2 it is reset and
    ``throttle_down()`` fires: ``initial`` the first time, then ``+increment``, capped.
    """
    cnt, throttle = 0, 0
    for _ in range(high_periods):
        cnt += 1
        if cnt >= 2:
            cnt = 0
            throttle = initial if throttle == 0 else min(throttle + increment, max_throttle)
    return throttle


def _ref_xbzrle(old: bytes, new: bytes, dlen: int | None = None) -> bytes | int:
    """``xbzrle_encode`` of algorithms.md §6.1, byte by byte (returns bytes, 0 or -1)."""
    slen = len(old)
    dlen = slen if dlen is None else dlen
    i = d = 0
    out = bytearray()

    def uleb(v: int) -> bytes:
        return bytes([v]) if v < 0x80 else bytes([(v & 0x7F) | 0x80, v >> 7])

    while i < slen:
        if d + 2 > dlen:
            return -1
        z = 0
        while i + z < slen and old[i + z] == new[i + z]:
            z += 1
        i += z
        if z == slen:
            return 0
        if i == slen:
            return bytes(out)
        out += uleb(z)
        d += len(uleb(z))
        if d + 2 > dlen:
            return -1
        n = 0
        while i + n < slen and old[i + n] != new[i + n]:
            n += 1
        out += uleb(n)
        d += len(uleb(n))
        if d + n > dlen:
            return -1
        out += new[i : i + n]
        d += n
        i += n
    return bytes(out)


def example_xbzrle_pages() -> tuple[bytes, bytes]:
    """The page pair of stream-format.md §12: all 0x5a, then "QEMU" at 0x10 and 0xab at 0x800."""
    old = bytes([0x5A]) * 4096
    new = bytearray(old)
    new[0x10:0x14] = b"QEMU"
    new[0x800] = 0xAB
    return old, bytes(new)


# ----------------------------------------------------------------------------------
# answers: parsing and comparing
# ----------------------------------------------------------------------------------


def _int(a: Any) -> int | None:
    if isinstance(a, bool) or a is None:
        return None
    if isinstance(a, (int, np.integer)):
        return int(a)
    if isinstance(a, (float, np.floating)) and float(a).is_integer():
        return int(a)
    if isinstance(a, str):
        s = a.strip().replace(",", "").replace("_", "")
        try:
            return int(s, 0)
        except ValueError:
            return None
    return None


def _bytes(a: Any) -> bytes | None:
    if isinstance(a, (bytes, bytearray, memoryview)):
        return bytes(a)
    if isinstance(a, np.ndarray) and a.dtype == np.uint8:
        return a.tobytes()
    if isinstance(a, str):
        s = re.sub(r"[\s:]", "", a.lower().removeprefix("0x"))
        try:
            return bytes.fromhex(s)
        except ValueError:
            return None
    return None


def _ranges(a: Any) -> list[tuple[int, int]] | None:
    if hasattr(a, "ranges") and not isinstance(a, (list, tuple)):
        a = a.ranges
    try:
        out = [(int(s), int(n)) for s, n in a]
    except (TypeError, ValueError):
        return None
    return out


def _choice(a: Any, options: Sequence[str]) -> int | None:
    if isinstance(a, str):
        s = a.strip()
        if len(s) == 1 and s.upper() in "ABCDEFGH"[: len(options)]:
            return "ABCDEFGH".index(s.upper())
        low = s.lower().rstrip(".")
        for i, o in enumerate(options):
            if low and (low == o.lower() or low in o.lower()):
                return i
    n = _int(a)
    return n if n is not None and 0 <= n < len(options) else None


def _direction(a: int, e: int) -> str:
    return "too high" if a > e else "too low"


# ----------------------------------------------------------------------------------
# exercises
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``solve()`` computes the expected answer at check time; ``compare(answer,
    expected)`` decides; ``hint(answer, expected)`` helps without revealing; ``explain(expected)``
    says why (it may state the answer)."""

    id: str
    notebook: str
    question: str
    form: str
    solve: Callable[[], Any]
    compare: Callable[[Any, Any], bool]
    hint: Callable[[Any, Any], str]
    explain: Callable[[Any], str]
    source: str = ""

    def _repr_markdown_(self) -> str:
        return (f"**Exercise `{self.id}`** — {self.question}\n\n*Answer form:* {self.form}. "
                f"Check it with `lab.check({self.id!r}, answer)`.")

    def __repr__(self) -> str:
        return f"Exercise({self.id!r}): {self.question} [answer: {self.form}]"


EXERCISES: dict[str, Exercise] = {}


def _register(ex: Exercise) -> Exercise:
    if ex.id in EXERCISES:
        raise ValueError(f"duplicate exercise id {ex.id!r}")
    EXERCISES[ex.id] = ex
    return ex


def _int_exercise(id: str, notebook: str, question: str, solve: Callable[[], int], hint: str,
                  explain: Callable[[int], str], *, source: str, form: str = "an integer",
                  tolerance: int = 0, directional: bool = True,
                  traps: Callable[[], dict[int, str]] | None = None) -> Exercise:
    def compare(a: Any, e: Any) -> bool:
        v = _int(a) if tolerance == 0 else (round(float(a)) if isinstance(a, (int, float, np.number)) else _int(a))
        return v is not None and abs(v - int(e)) <= tolerance

    def hinter(a: Any, e: Any) -> str:
        v = _int(a)
        if v is None and isinstance(a, (float, np.floating)):
            v = round(float(a))
        if v is None:
            return f"I could not read {a!r} as {form}. {hint}"
        if traps:
            for value, text in traps().items():
                if v == value and v != e:
                    return text
        return (f"{v:,} is {_direction(v, int(e))}. " if directional else "") + hint

    return _register(Exercise(id, notebook, question, form, solve, compare, hinter, explain, source))


def _choice_exercise(id: str, notebook: str, question: str, options: Sequence[str], solve: Callable[[], int],
                     hint: str, explain: Callable[[int], str], *, source: str) -> Exercise:
    letters = "ABCDEFGH"
    text = question + "  " + "  ".join(f"({letters[i]}) {o}" for i, o in enumerate(options))

    def compare(a: Any, e: Any) -> bool:
        return _choice(a, options) == e

    def hinter(a: Any, e: Any) -> str:
        c = _choice(a, options)
        if c is None:
            return f"Answer with a letter A-{letters[len(options) - 1]} or the text of an option. {hint}"
        return f"Not ({letters[c]}). {hint}"

    return _register(Exercise(id, notebook, text, f"a letter A-{letters[len(options) - 1]}", solve, compare,
                              hinter, explain, source))


# ---- 00 tour ------------------------------------------------------------------------

_int_exercise(
    "tour.zero-records", "00-tour",
    "How many ZERO records (a page sent as 'this page is all zero bytes') does the whole `plain` capture carry?",
    lambda: _qemu_ram_counter("plain", "duplicate"),
    "Look at `m.records` or `m.summary()['records']`: every kind of page record is counted there.",
    lambda e: (f"{e:,}: QEMU's own counter `duplicate` in meta.json says the same. Each ZERO record is 9 bytes "
               f"on the wire instead of 4104 for a PAGE record: {e * (4104 - 9) / 2**20:.1f} MiB not sent."),
    source="meta.json query_migrate_final.ram.duplicate",
    traps=lambda: {_qemu_ram_counter("plain", "normal"): "That is the number of PAGE records, not ZERO records."},
)

_int_exercise(
    "tour.bulk-zero", "00-tour",
    "How many ZERO records are in pass 0 (the bulk stage: the first lap over all of RAM) of `plain`?",
    lambda: sum(1 for (_, k, _, _), p in zip(_walk_sample("plain").records, _walk_sample("plain").passes())
                if p == 0 and k == 0x02),
    "Pass 0 is row 0 of `m.trace.classes`; count its entries equal to `PageClass.ZERO` "
    "(or use `m.trace.class_counts()`).",
    lambda e: (f"{e:,}. In the bulk stage every page of RAM is sent once; most of a freshly booted guest is "
               "zero, so most of the bulk stage is 9-byte ZERO records. Later passes send only the pages "
               "the guest dirtied since the previous bitmap sync."),
    source="ref_walk of the stream bytes (a new pass starts where the (block, offset) order decreases)",
    traps=lambda: {_qemu_ram_counter("plain", "duplicate"): "That is every ZERO record of the migration; "
                   "the question asks about pass 0 only."},
)

# ---- 01 stream format ---------------------------------------------------------------

_int_exercise(
    "format.first-record", "01-stream-format",
    "At which byte offset does the first RAM page record (ZERO or PAGE) of the `plain` stream start?",
    lambda: _walk_sample("plain").records[0][0],
    "Walk the events: the first `RamPages` event after the MEM_SIZE list and the first EOS + footer + "
    "PART header; every event has an `.offset`.",
    lambda e: (f"Byte {e}: 8 (QEVM, version) + the configuration section + the RAM START section with the "
               "MEM_SIZE block list + EOS (8) + footer (5) + the first PART header (5). That record carries "
               "the block name, because it is the first page record of the migration."),
    source="ref_walk of the stream bytes",
)


def _parse_header_answer(a: Any) -> tuple[int, frozenset[str]] | None:
    try:
        off, flags = a
    except (TypeError, ValueError):
        return None
    o = _int(off)
    if o is None:
        return None
    if isinstance(flags, (int, np.integer)) and not isinstance(flags, bool):
        names = frozenset(SPEC_FLAGS[b] for b in SPEC_FLAGS if int(flags) & b)
    elif isinstance(flags, str):
        names = frozenset(x.strip().upper() for x in re.split(r"[|,+ ]+", flags) if x.strip())
    else:
        try:
            names = frozenset(str(x).strip().upper().removeprefix("RAM_SAVE_FLAG_") for x in flags)
        except TypeError:
            return None
    return o, names


def _solve_header() -> tuple[int, frozenset[str]]:
    word = int.from_bytes(bytes.fromhex("0000000000001028"), "big")
    tps = 4096
    return word & ~(tps - 1), frozenset(SPEC_FLAGS[b] for b in SPEC_FLAGS if word & (tps - 1) & b)


def _header_hint(a: Any, e: Any) -> str:
    p = _parse_header_answer(a)
    if p is None:
        return "Answer `(offset, {'FLAG', ...})`, e.g. `(0x2000, {'ZERO'})`."
    off, names = p
    if off != e[0]:
        return ("The offset is wrong: the word is big-endian, and the offset is the word with its low 12 bits "
                "(the flags, since TPS = 4096) cleared.")
    return "The offset is right; the flags are the low 12 bits: look each set bit up in the flag table."


_register(Exercise(
    "format.header-word", "01-stream-format",
    "A RAM record starts with the header word `00 00 00 00 00 00 10 28` (TPS = 4096). "
    "Which page offset and which flags does it carry?",
    "a tuple `(offset, {'FLAG', ...})` (flags as names, or as the integer of the flag bits)",
    _solve_header,
    lambda a, e: _parse_header_answer(a) == e,
    _header_hint,
    lambda e: (f"Offset 0x{e[0]:x}, flags {' | '.join(sorted(e[1]))}: a full page of data for the page at "
               "+0x1000 of the block named by the previous record (CONTINUE: no name follows)."),
    "stream-format.md §3 header word and §3.1 flag table",
))

_int_exercise(
    "format.record-bytes", "01-stream-format",
    "How many bytes do these RAM records take on the wire (TPS 4096): a PAGE record that names block "
    "`pc.ram`, then 3 ZERO records with CONTINUE, then EOS?",
    lambda: (8 + 1 + len("pc.ram") + 4096) + 3 * (8 + 1) + 8,
    "A header word is 8 bytes; a name is a cstr8 (length byte + bytes, no NUL); ZERO carries one fill byte; "
    "PAGE a whole page; EOS is a bare header word.",
    lambda e: (f"{e:,} = (8 + 1 + 6 + 4096) + 3 x 9 + 8. Build it with `page_record`, `zero_record` and "
               "count `len(...)` to see it."),
    source="stream-format.md §1, §3.4, §3.5, §3.8",
    traps=lambda: {4096 + 3 + 8: "Every record starts with an 8-byte header word."},
)

# ---- 02 dirty tracking and convergence ------------------------------------------------

_int_exercise(
    "convergence.threshold", "02-dirty-tracking-and-convergence",
    "With `max-bandwidth` 32 MiB/s and `downtime-limit` 300 ms, how many dirty 4 KiB pages may at most "
    "remain for QEMU to stop the guest and send the rest (round down)?",
    lambda: int(32 * 2**20 * 0.300 // 4096),
    "QEMU completes when the pending bytes are below bandwidth x downtime limit; convert bytes to pages.",
    lambda e: (f"{e:,} pages: 32 MiB/s x 0.3 s = 9.6 MiB can be sent while the guest is stopped; that is "
               f"{e:,} pages of 4 KiB. This is the dashed line of the player's convergence chart."),
    source="algorithms.md §9 (pending vs bandwidth x downtime-limit)", tolerance=1,
)

_int_exercise(
    "convergence.passes", "02-dirty-tracking-and-convergence",
    "Model: a 1 GiB guest, a 100 MiB/s link, downtime limit 300 ms; while a pass runs the guest dirties "
    "20 MiB/s of pages that are not dirty yet; each pass sends everything dirty at its start. How many "
    "passes, the bulk pass included, run before what is left fits in the downtime?",
    lambda: int(geometric_passes(2**30, 100 * 2**20, 20 * 2**20, 0.300) or -1),
    "After a pass of T seconds, the next pass has dirty_rate x T bytes to send: remaining shrinks by "
    "dirty_rate / bandwidth each pass. Stop at the first pass after which remaining <= bandwidth x downtime.",
    lambda e: (f"{e}: 1 GiB -> 204.8 MiB -> 41 MiB -> 8.2 MiB; 8.2 MiB <= 30 MiB, so after pass {e} QEMU stops the "
               "guest and sends the rest in the downtime. With a dirty rate close to the bandwidth the ratio is "
               "close to 1 and this never happens: that is what auto-converge (throttling) or postcopy is for."),
    source="geometric model of algorithms.md §9",
)

_int_exercise(
    "convergence.throttle", "02-dirty-tracking-and-convergence",
    "Auto-converge with the defaults (`cpu-throttle-initial` 20, `cpu-throttle-increment` 10): after how "
    "many 'dirty rate high' sync periods is the guest throttled at 40%?",
    lambda: next(k for k in range(1, 100) if throttle_after(k) == 40),
    "`dirty_rate_high_cnt` must reach 2 before `throttle_down()` fires, and it is reset when it fires.",
    lambda e: (f"{e}: the throttle fires at the 2nd high period (20%), the 4th (30%) and the 6th (40%). The "
               "counter is never reset by a period that is not high, so the high periods need not be "
               "consecutive."),
    source="algorithms.md §3 (bitmap_sync, throttle_down)",
)

# ---- 03 xbzrle ------------------------------------------------------------------------


def _xbzrle_last_byte() -> bytes:
    old = bytes(4096)
    new = bytearray(old)
    new[4095] = 1
    out = _ref_xbzrle(old, bytes(new))
    assert isinstance(out, bytes)
    return out


def _bytes_hint(a: Any, e: Any) -> str:
    b = _bytes(a)
    if b is None:
        return "Answer with the encoded bytes (a `bytes` object or a hex string such as `'0a0b'`)."
    if len(b) != len(e):
        return (f"Your encoding has {len(b)} bytes; think about how many ULEB128 bytes a length of 4095 needs "
                "(one byte holds 0..127) and whether a trailing zero run is written.")
    return "Right length, wrong bytes: ULEB128 puts the low 7 bits first, with bit 7 set when a second byte follows."


_register(Exercise(
    "xbzrle.last-byte", "03-xbzrle",
    "`old` is a zero page, `new` differs only in its last byte (`new[4095] = 1`). What is the XBZRLE encoding?",
    "bytes or a hex string",
    _xbzrle_last_byte,
    lambda a, e: _bytes(a) == e,
    _bytes_hint,
    lambda e: (f"`{e.hex(' ')}`: zrun 4095 (ULEB128 `ff 1f`), nzrun 1 (`01`), the new byte `01`. 4 bytes "
               "instead of 4096."),
    "algorithms.md §6.1 edge case",
))


def _outcome(a: Any) -> int | None:
    if a is None:
        return None
    if isinstance(a, str) and a.strip().lower() in ("overflow", "none", "-1"):
        return -1
    if isinstance(a, (bytes, bytearray)) and len(a) == 0:
        return 0
    return _int(a)


_register(Exercise(
    "xbzrle.alternating", "03-xbzrle",
    "`old` is a zero page and `new[2k] = 1` for k < 2047 (every other byte changed). What does "
    "`xbzrle_encode_buffer` return: the length of the encoding, 0 or -1?",
    "an integer (length, 0 or -1)",
    lambda: (lambda r: r if isinstance(r, int) else len(r))(
        _ref_xbzrle(bytes(4096), bytes((1 if (i % 2 == 0 and i < 4094) else 0) for i in range(4096)))),
    lambda a, e: _outcome(a) == e,
    lambda a, e: ("Count the bytes: each changed byte is its own run, and each run costs a zrun length, an "
                  "nzrun length and the byte. Compare with dlen = 4096."),
    lambda e: ("-1: overflow. 2047 runs of 1 byte cost 3 bytes each (zrun 1, nzrun 1, byte): more than the 4096 "
               "bytes of the page. QEMU then sends a plain PAGE record (and counts an overflow)."),
    "algorithms.md §6.1 edge case",
))

_register(Exercise(
    "xbzrle.identical", "03-xbzrle",
    "`old` and `new` are identical pages. What does `xbzrle_encode_buffer` return?",
    "an integer (length, 0 or -1)",
    lambda: (lambda r: r if isinstance(r, int) else len(r))(_ref_xbzrle(bytes(4096), bytes(4096))),
    lambda a, e: _outcome(a) == e,
    lambda a, e: "It is neither an encoding that gets sent nor an overflow: what is there to send at all?",
    lambda e: ("0: the page is unchanged and nothing is sent at all; its dirty bit stays cleared. "
               "(`ramlab.xbzrle.encode_page` returns `b''` for this case.)"),
    "algorithms.md §6.1 edge case",
))

_int_exercise(
    "xbzrle.example", "03-xbzrle",
    "The cached page is all `0x5a`; the new page has `b'QEMU'` at 0x10..0x13 and `0xab` at 0x800. How many "
    "bytes is the XBZRLE encoding?",
    lambda: len(_ref_xbzrle(*example_xbzrle_pages())),  # type: ignore[arg-type]
    "Two changed runs: each costs a zrun length (1 or 2 ULEB128 bytes), an nzrun length and its bytes.",
    lambda e: (f"{e}: `10` (zrun 16) `04 'QEMU'` (nzrun 4) `ec 0f` (zrun 2028 needs two ULEB128 bytes) "
               "`01 ab`. No trailing zero run is written."),
    source="stream-format.md §12 (annotated example, XBZRLE record of length 10)",
)

_int_exercise(
    "xbzrle.cache-age", "03-xbzrle",
    "The XBZRLE cache slot of page A was last filled (or hit) at `dirty_sync_count` 5. Page B maps to the "
    "same slot. At which `dirty_sync_count` can inserting B first replace A?",
    lambda: next(age for age in range(5, 50) if not (5 + 2 > age)),  # CACHED_PAGE_LIFETIME = 2
    "`cache_insert` refuses to evict a different page while `slot_age + CACHED_PAGE_LIFETIME > current_age`.",
    lambda e: (f"{e}: with CACHED_PAGE_LIFETIME = 2 a page touched at sync 5 is protected during syncs 5 and 6. "
               "A too-small cache therefore makes hot pages fight for slots and become cache misses."),
    source="algorithms.md §7",
)

# ---- 04 compression and multifd -------------------------------------------------------

_int_exercise(
    "compress.bound", "04-compression-and-multifd",
    "What is the largest COMPRESS_PAGE payload length (`clen`) a QEMU 7.2 destination accepts with 4 KiB pages?",
    lambda: compress_bound(4096),
    "zlib's compressBound(n) = n + n>>12 + n>>14 + n>>25 + 13.",
    lambda e: (f"{e}: an incompressible page grows a little (stored deflate blocks + header + Adler-32). "
               "Larger is rejected."),
    source="stream-format.md §3.7",
)

_int_exercise(
    "compress.ff-page", "04-compression-and-multifd",
    "A page of 4096 bytes of `0xff` is not a zero page. How many bytes does zlib level 1 (QEMU's default "
    "`compress-level`) make of it, i.e. the `clen` of its COMPRESS_PAGE record?",
    lambda: len(zlib.compress(b"\xff" * 4096, 1)),
    "Try it: `len(zlib.compress(page, 1))`.",
    lambda e: (f"{e} bytes, against 4104 for a PAGE record: compression pays off for pages that are not zero but "
               "regular (the 0xFF region of the guest); for random pages it costs CPU and saves nothing."),
    source="zlib, computed at check time",
)

_int_exercise(
    "multifd.main-zero", "04-compression-and-multifd",
    "With multifd, which page records stay on the main channel? Count them: how many ZERO records does "
    "`channel-0` of `multifd-zstd` carry?",
    lambda: _qemu_ram_counter("multifd-zstd", "duplicate"),
    "Open the capture and look at `m.records` (page records of the main channel) and `m.summary()`.",
    lambda e: (f"{e:,}, QEMU's `duplicate` counter: in 7.2 zero pages are detected by the migration thread and "
               "sent as ZERO records on the main channel; only non-zero pages travel in multifd packets."),
    source="meta.json query_migrate_final.ram.duplicate",
    traps=lambda: {_qemu_ram_counter("multifd-zstd", "normal"): "That is the non-zero pages: they are in the "
                   "multifd channels, not on the main channel."},
)

# ---- 05 postcopy ----------------------------------------------------------------------

#: the bitmaps of the discard exercises (one bool per 4 KiB target page; host pages of 4 target pages)
DISCARD_DIRTY = (0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1)
DISCARD_UNSENT = (0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
DISCARD_RATIO = 4


def _ranges_hint(algorithm: str) -> Callable[[Any, Any], str]:
    def hint(a: Any, e: Any) -> str:
        r = _ranges(a)
        if r is None:
            return "Answer a list of `(start, n_pages)` pairs in target pages, in wire order."
        other = ref_discards(DISCARD_DIRTY, DISCARD_UNSENT, DISCARD_RATIO,
                             "modern" if algorithm == "seed" else "seed")
        if r == other:
            return (f"That is what the {'modern' if algorithm == 'seed' else 'seed'} algorithm sends; "
                    f"this question asks about the {algorithm} one.")
        if sorted(r) == sorted(e):
            return "The right ranges, in the wrong order: give them in the order they go on the wire."
        if any(n % DISCARD_RATIO or s % DISCARD_RATIO for s, n in r):
            return "Every range must cover whole host pages (4 target pages): the destination refuses others."
        if algorithm == "seed":
            return ("Run the two chunk passes first (partly sent host pages, then partly dirty host pages that "
                    "were sent), then send every run of `unsent | dirty`: some host pages go out twice.")
        return "Mark every partly dirty host page wholly dirty, then send the maximal runs of the dirty map."
    return hint


for _alg in ("seed", "modern"):
    _register(Exercise(
        f"postcopy.{_alg}-ranges", "05-postcopy",
        f"Host pages are 4 target pages. `dirty = {list(DISCARD_DIRTY)}`, `unsent = {list(DISCARD_UNSENT)}`. "
        f"Which discard ranges does the {'seed (QEMU ~3.0)' if _alg == 'seed' else 'modern (QEMU >= 4.2)'} "
        "algorithm send, in wire order?",
        "a list of (start, n_pages) pairs in target pages",
        functools.partial(ref_discards, DISCARD_DIRTY, DISCARD_UNSENT, DISCARD_RATIO, _alg),
        lambda a, e: _ranges(a) == e,
        _ranges_hint(_alg),
        (lambda e: f"{e}: host page 1 was partly sent (pass 1 discards it), host pages 0 and 3 partly dirty "
                   "and sent (pass 2 discards them); then every run of unsent|dirty is sent: host pages 0, 1 "
                   "and 3 are discarded twice. Harmless (discard is idempotent), but it is on the wire.")
        if _alg == "seed" else
        (lambda e: f"{e}: QEMU >= 4.2 only canonicalises (partly dirty host page -> wholly dirty) and sends "
                   "the runs of the dirty map once; no duplicates."),
        "algorithms.md §10.1-10.4 (reference pseudocode, transcribed in ramlab.lab.ref_discards)",
    ))

_int_exercise(
    "postcopy.requests", "05-postcopy",
    "How many page requests (REQ_PAGES / REQ_PAGES_ID) did the running destination of `postcopy` send on "
    "the return path?",
    lambda: _qemu_ram_counter("postcopy", "postcopy-requests"),
    "Open the capture folder (the return path `ret-0.bin` is picked up) and look at `m.requests`.",
    lambda e: (f"{e}: QEMU's `postcopy-requests` counter agrees. Each request is a page fault of the running "
               "destination guest on a page it does not have yet (discarded or never received)."),
    source="meta.json query_migrate_final.ram.postcopy-requests",
)


def _huge_page_size() -> int:
    for line in meta("postcopy-hugepages")["info_ramblock_src"].splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[0] == "m0":
            num, unit = float(cols[1]), cols[2]
            return int(num * {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit])
    raise RamlabError("block m0 not found in info_ramblock_src")


_int_exercise(
    "postcopy.huge-request", "05-postcopy",
    "In `postcopy-hugepages` the guest RAM block `m0` lives on 2 MiB huge pages. How many bytes does each page "
    "request of its return path ask for?",
    _huge_page_size,
    "A destination asks for whole host pages of the faulting block; look at `r.length` of `m.requests`.",
    lambda e: (f"{e:,} bytes (0x{e:x}): a huge page must be placed atomically, so the destination asks for the "
               "whole host page and the source sends all its target pages back to back."),
    source="meta.json info_ramblock_src (page size of block m0)",
    traps=lambda: {4096: "4096 is the target page size; the request unit is the block's host page."},
)

# ---- 06 debugging ---------------------------------------------------------------------

_int_exercise(
    "debug.truncated-offset", "06-debugging-a-capture",
    f"`lab.damaged('truncated')` is `plain` cut after {TRUNCATE_AT:,} bytes. At which byte offset does the "
    "item that was cut in the middle start?",
    lambda: int(ref_walk(damaged("truncated")).cut),  # type: ignore[arg-type]
    "Open the bytes with `ramlab.open` and read `m.error`: it says where the unfinished item starts.",
    lambda e: (f"Byte {e:,}: everything before it decoded; QEMU would fail reading this record "
               "(an I/O error on the incoming stream, 'Failed to load ram' / the migration stays incomplete)."),
    source="ref_walk of the truncated bytes",
    traps=lambda: {TRUNCATE_AT: "That is where the data ends; the question asks where the item that was cut starts."},
)

_ERROR_OPTIONS = (
    "Illegal RAM offset",
    "Unknown combination of migration flags",
    "Unknown ramblock",
    "missing section footer",
)


def _solve_flip() -> int:
    data = damaged("flipped")
    at = flipped_offset()
    flags = int.from_bytes(data[at : at + 8], "big") & 0xFFF
    kinds = flags & ~0x20 & 0x3FF
    if bin(kinds & _KIND_BITS).count("1") > 1:
        return 1
    return 0


_choice_exercise(
    "debug.flipped", "06-debugging-a-capture",
    "`lab.damaged('flipped')` has one bit flipped in the flag byte of a `ZERO | CONTINUE` record (0x22). "
    "Which error does QEMU's loader (and ramlab) report there?",
    _ERROR_OPTIONS, _solve_flip,
    "XOR the flag byte 0x22 with the flipped bit 0x40 and look the result up in the flag table: how many "
    "'page kind' bits are set?",
    lambda e: ("(B): 0x22 ^ 0x40 = 0x62 = ZERO | XBZRLE | CONTINUE. The loader switches on the kind bits and a "
               "record with two kinds is 'Unknown combination of migration flags'. Everything before that "
               "record is intact."),
    source="stream-format.md §3 and §5 (unknown flag combination)",
)


def _solve_rename(kind: str) -> int:
    w = ref_walk(stream_bytes("plain"))
    new = "pc.rom" if kind == "renamed" else "pc.raX"
    if new not in w.blocks:
        return 2
    used = w.blocks[new]
    first_block = w.records[0][2]
    for _, _, block, addr in w.records:
        if block != first_block:
            break
        if addr >= used:
            return 0
    return 3


_choice_exercise(
    "debug.renamed", "06-debugging-a-capture",
    "`lab.damaged('renamed')` has the block name of the first page record changed from `pc.ram` to `pc.rom` "
    "(a real block of 128 KiB). Which error does the loader report?",
    _ERROR_OPTIONS, functools.partial(_solve_rename, "renamed"),
    "Is `pc.rom` in the MEM_SIZE list? Then the records that follow (CONTINUE) land in `pc.rom`: do their "
    "offsets fit in 128 KiB?",
    lambda e: ("(A): `pc.rom` exists, so the name is accepted and the following CONTINUE records are read as "
               "pages of pc.rom until one has an offset >= its used length 0x20000: 'Illegal RAM offset'. "
               "Worse, the pages before that went silently into the wrong block."),
    source="stream-format.md §3.2 and §5",
)

_choice_exercise(
    "debug.unknown-block", "06-debugging-a-capture",
    "`lab.damaged('unknown-block')` has the first page record's block name changed to `pc.raX`. Which error?",
    _ERROR_OPTIONS, functools.partial(_solve_rename, "unknown-block"),
    "Look the name up in the MEM_SIZE block list of the setup section.",
    lambda e: "(C): no block of that name was announced in MEM_SIZE: 'Unknown ramblock', at that very record.",
    source="stream-format.md §3.2 and §5",
)


# ----------------------------------------------------------------------------------
# API
# ----------------------------------------------------------------------------------


@dataclass
class Result:
    """The verdict of :func:`check`. Truthy when right; shows as a coloured box in a notebook."""

    exercise: str
    correct: bool
    message: str
    hint: str | None = None
    explanation: str | None = None
    answer: Any = None

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        parts = [f"[{self.exercise}] {self.message}"]
        if self.hint:
            parts.append(f"Hint: {self.hint}")
        if self.explanation:
            parts.append(f"Why: {self.explanation}")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        color, bg, mark = ("#176317", "#eefbee", "&#10004;") if self.correct else ("#8a4b00", "#fff6e8", "&#10008;")
        rows = [f"<b>{mark} {html.escape(self.message)}</b> <span style='color:#777'>({html.escape(self.exercise)})"
                "</span>"]
        if self.hint:
            rows.append(f"<i>Hint:</i> {html.escape(self.hint)}")
        if self.explanation:
            rows.append(f"<i>Why:</i> {html.escape(self.explanation)}")
        return (f"<div style='border-left:4px solid {color};background:{bg};padding:6px 10px;margin:4px 0'>"
                + "<br>".join(rows) + "</div>")


def exercises(notebook: str | None = None) -> list[Exercise]:
    """The registered exercises, optionally only those of one notebook (e.g. ``"03-xbzrle"``)."""
    return [e for e in EXERCISES.values() if notebook is None or e.notebook == notebook]


def ask(exercise_id: str) -> Exercise:
    """The exercise (displays its question in a notebook)."""
    try:
        return EXERCISES[exercise_id]
    except KeyError:
        raise KeyError(f"no exercise {exercise_id!r}; known: {sorted(EXERCISES)}") from None


def check(exercise_id: str, answer: Any, *, reveal: bool = False) -> Result:
    """Check ``answer`` to an exercise: right or wrong and why, without giving the answer away.

    A wrong answer gets a hint; the explanation (which may state the answer) comes with a right
    answer, or with ``reveal=True``. ``answer=None`` (or ``...``) means "not answered yet".
    """
    ex = ask(exercise_id)
    if answer is None or answer is Ellipsis:
        res = Result(exercise_id, False, "No answer yet.",
                     hint=f"Put your answer ({ex.form}) in `answer` and run the cell again.", answer=answer)
    else:
        expected = ex.solve()
        try:
            ok = bool(ex.compare(answer, expected))
        except Exception:  # noqa: BLE001 - any unreadable answer is simply wrong
            ok = False
        if ok:
            return Result(exercise_id, True, "Right.", explanation=ex.explain(expected), answer=answer)
        try:
            hint = ex.hint(answer, expected)
        except Exception:  # noqa: BLE001
            hint = f"Expected {ex.form}."
        res = Result(exercise_id, False, "Not right yet.", hint=hint, answer=answer)
    if reveal:
        res.explanation = ex.explain(ex.solve())
    return res


# ----------------------------------------------------------------------------------
# small display helpers for the notebooks (plain HTML, no extra dependencies)
# ----------------------------------------------------------------------------------


class HTML:
    """A piece of HTML that a notebook displays (``str()`` gives the HTML source)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _repr_html_(self) -> str:
        return self.source

    def __str__(self) -> str:
        return self.source


_TD = "style='border:1px solid #ddd;padding:2px 8px;text-align:left;font-family:monospace;font-size:12px'"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], caption: str | None = None) -> HTML:
    """An HTML table of ``rows`` (cells are escaped; ints get thousands separators).

    >>> "<th" in str(table([(1, "a")], ["n", "s"]))
    True
    """
    def cell(v: Any) -> str:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return f"{int(v):,}"
        if isinstance(v, (float, np.floating)):
            return f"{float(v):,.3g}"
        return html.escape(str(v))

    head = "".join(f"<th {_TD}>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td {_TD}>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return HTML(f"<table style='border-collapse:collapse'>{cap}<tr>{head}</tr>{body}</table>")


def hexdump(data: bytes | memoryview, start: int, length: int = 64, *, mark: tuple[int, int] | None = None,
            width: int = 16) -> HTML:
    """Hex + ASCII dump of ``data[start:start+length]``; bytes in ``mark = (offset, n)`` are highlighted.

    >>> "51 45 56 4d" in str(hexdump(b"QEVM", 0, 4))
    True
    """
    lines = []
    lo = max(0, start - start % width)
    hi = min(len(data), start + length)
    for row in range(lo, hi, width):
        chunk = bytes(data[row : min(row + width, hi)])
        hexes, text = [], []
        for i, b in enumerate(chunk):
            at = row + i
            h, c = f"{b:02x}", (chr(b) if 32 <= b < 127 else ".")
            if at < start:
                h, c = "  ", " "
            elif mark and mark[0] <= at < mark[0] + mark[1]:
                h = f"<b style='background:#ffd54f'>{h}</b>"
                c = f"<b style='background:#ffd54f'>{html.escape(c)}</b>"
            else:
                c = html.escape(c)
            hexes.append(h)
            text.append(c)
        lines.append(f"{row:08x}  {' '.join(hexes):<{width * 3}}  {''.join(text)}")
    return HTML("<pre style='font-size:12px;line-height:1.3'>" + "\n".join(lines) + "</pre>")


def describe_event(e: Any) -> str:
    """One line saying what a decoder event is on the wire."""
    name = type(e).__name__
    if name == "FileHeader":
        return f"magic QEVM, version {e.version}"
    if name == "Configuration":
        return f"configuration: machine {e.machine_type}"
    if name == "SectionHeader":
        return f"section {e.type_name} id {e.section_id} ({e.idstr})"
    if name == "SectionFooter":
        return f"footer 0x7e, section id {e.section_id}"
    if name == "RamMemSize":
        return f"MEM_SIZE: {len(e.blocks)} blocks, total 0x{e.total:x} bytes"
    if name == "RamPages":
        kind = "ZERO" if e.kind == 0x02 else "PAGE"
        first = int(e.page_offsets[0]) if len(e) else 0
        named = f"named {e.block}" if e.named else f"CONTINUE ({e.block})"
        return f"{len(e)} x {kind}, first +0x{first:x}, {named}"
    if name == "RamXbzrle":
        return f"XBZRLE +0x{e.page_offset:x} of {e.block}, {len(e.data)} encoded bytes"
    if name == "RamCompressed":
        return f"COMPRESS_PAGE +0x{e.page_offset:x} of {e.block}, clen {len(e.data)}"
    if name == "RamEos":
        return "EOS: end of this RAM section body"
    if name == "Command":
        v = f" {e.value}" if e.value is not None else ""
        return f"command {e.name}{v} ({len(e.payload)} payload bytes)"
    if name == "DeviceState":
        return f"device state of {e.idstr} ({len(e.body)} bytes)"
    if name == "EndOfFile":
        return "EOF"
    if name == "VmDescription":
        return f"vmdesc JSON trailer ({len(e.json_bytes):,} bytes)"
    return name


def events_table(events: Sequence[Any], data: bytes | memoryview | None = None, *, start: int = 0, n: int = 20,
                 around: int | None = None, peek: int = 12) -> HTML:
    """A table of decoder events: byte offset, event, meaning, and the first ``peek`` bytes at the offset.

    ``around=offset`` shows the ``n`` events ending at the last one that starts at or before it.
    """
    evs = list(events)
    if around is not None:
        idx = max((i for i, e in enumerate(evs) if e.offset <= around), default=0)
        start = max(0, idx - n + 2)
    rows = []
    for e in evs[start : start + n]:
        raw = bytes(data[e.offset : e.offset + peek]).hex(" ") if data is not None else ""
        rows.append((e.offset, f"0x{e.offset:x}", type(e).__name__, describe_event(e), raw))
    return table(rows, ["offset", "hex", "event", "meaning", f"first {peek} bytes" if data is not None else ""])

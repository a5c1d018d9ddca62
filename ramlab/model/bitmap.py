"""QEMU's page bitmaps (``include/qemu/bitmap.h``, ``util/bitmap.c``) on a numpy bool array.

Storage is one ``bool`` per bit (``Bitmap.bits``): simple to slice, mask and count with
numpy, 8x larger than QEMU's ``unsigned long`` words, which :meth:`Bitmap.to_words` /
:meth:`Bitmap.from_words` convert to and from (64-bit words, bit ``i`` is bit ``i % 64`` of
word ``i // 64``; the padding bits of the last word are zero). Methods keep QEMU's names
and argument order, e.g. ``find_next_bit(size, start)`` and ``set(start, nr)``.

    >>> bm = Bitmap(200)
    >>> bm.set(3, 5); bm.set_bit(130)
    >>> bm.find_next_bit(200, 8), bm.count(), bm.runs()
    (130, 6, (array([  3, 130]), array([5, 1])))

Arguments are checked where QEMU asserts or would index out of bounds: sizes, bit numbers
and ranges must be integers inside the map (not bools, floats or NaN), search sizes at most
the map's size, bitmaps combined must have the same size; a violation is a
:class:`~ramlab.errors.BitmapError`. Sizes are capped at :data:`MAX_BITS` (one byte per bit).
"""

from __future__ import annotations

import numpy as np

from ramlab import checks
from ramlab.errors import BitmapError

__all__ = ["BITS_PER_LONG", "MAX_BITS", "Bitmap", "run_pairs"]

BITS_PER_LONG = 64
DUMP_LINE_PAGES = 128  # ram_debug_dump_bitmap's line length
#: the largest bitmap: 2**36 bits = 256 TiB of RAM in 4 KiB pages (64 GiB of bools, allocated lazily)
MAX_BITS = 1 << 36


def run_pairs(bits: np.ndarray) -> np.ndarray:
    """Maximal runs of ``True`` in a 1-D bool array as an ``[n_runs, 2]`` int64 array of
    ``(start, length)`` rows.

    Memory: the result (16 bytes per run) plus one byte per bit for the edges; the run
    boundaries are found once and the lengths computed in place, so a bitmap of tens of
    millions of bits with millions of runs needs no per-run Python object.

    >>> run_pairs(np.array([0, 1, 1, 0, 1], bool)).tolist()
    [[1, 2], [4, 1]]
    """
    if bits.size == 0:
        return np.zeros((0, 2), np.int64)
    b = bits.view(np.int8)
    change = np.empty(bits.size + 1, bool)  # change[i]: bit i-1 != bit i (outside the map: clear)
    change[0] = b[0] != 0
    change[-1] = b[-1] != 0
    np.not_equal(b[1:], b[:-1], out=change[1:-1])
    pairs = np.flatnonzero(change).reshape(-1, 2)  # starts and ends alternate
    pairs[:, 1] -= pairs[:, 0]
    return pairs


def _nbits(value: object, name: str = "nbits") -> int:
    return checks.integer(value, name, BitmapError, min=0, max=MAX_BITS)


def _zeros(nbits: int) -> np.ndarray:
    try:
        return np.zeros(nbits, bool)
    except MemoryError:
        raise BitmapError(f"cannot allocate a bitmap of {nbits} bits") from None


class Bitmap:
    """A fixed-size bitmap of ``nbits`` bits, all clear (``bitmap_new``) unless ``bits`` given.

    >>> Bitmap.from_bits([1, 0, 1]).to_words().tolist()
    [5]
    """

    __slots__ = ("bits",)

    def __init__(self, nbits: int = 0, bits: np.ndarray | None = None) -> None:
        nbits = _nbits(nbits)
        if bits is None:
            bits = _zeros(nbits)
        elif not isinstance(bits, np.ndarray) or bits.dtype != bool or bits.ndim != 1:
            raise BitmapError(f"bits must be a 1-D bool numpy array (used as the storage), "
                              f"found {checks.describe(bits)}")
        elif nbits not in (0, bits.size):
            raise BitmapError(f"nbits {nbits} differs from the {bits.size} bits given")
        elif bits.size > MAX_BITS:
            raise BitmapError(f"bitmap of {bits.size} bits exceeds MAX_BITS ({MAX_BITS})")
        self.bits = bits

    @classmethod
    def from_bits(cls, bits) -> Bitmap:
        """Copy of a 1-D array-like of bools or 0/1 integers."""
        return cls(bits=np.array(checks.bits(bits, "bits", BitmapError), dtype=bool))

    @property
    def nbits(self) -> int:
        return int(self.bits.size)

    def __len__(self) -> int:
        return self.nbits

    def copy(self) -> Bitmap:
        return Bitmap(bits=self.bits.copy())

    def _range(self, start: int, nr: int) -> slice:
        start = checks.integer(start, "start", BitmapError)
        nr = checks.integer(nr, "nr", BitmapError)
        if start < 0 or nr < 0 or start + nr > self.nbits:
            raise BitmapError(f"bit range [{start}, {start + nr}) outside bitmap of {self.nbits} bits")
        return slice(start, start + nr)

    def _bit(self, nr: int) -> int:
        nr = checks.integer(nr, "bit number", BitmapError)
        if not 0 <= nr < self.nbits:
            raise BitmapError(f"bit {nr} outside bitmap of {self.nbits} bits")
        return nr

    # --- single bits (test_bit, set_bit, clear_bit, test_and_clear_bit) ---------------

    def test_bit(self, nr: int) -> bool:
        return bool(self.bits[self._bit(nr)])

    def set_bit(self, nr: int) -> None:
        self.bits[self._bit(nr)] = True

    def clear_bit(self, nr: int) -> None:
        self.bits[self._bit(nr)] = False

    def test_and_clear_bit(self, nr: int) -> bool:
        """Clear bit ``nr`` and return its previous value."""
        nr = self._bit(nr)
        old = bool(self.bits[nr])
        self.bits[nr] = False
        return old

    # --- ranges (bitmap_set, bitmap_clear) --------------------------------------------

    def set(self, start: int, nr: int) -> None:
        """``bitmap_set(map, start, nr)``: set bits ``start .. start+nr-1``."""
        self.bits[self._range(start, nr)] = True

    def clear(self, start: int, nr: int) -> None:
        """``bitmap_clear(map, start, nr)``: clear bits ``start .. start+nr-1``."""
        self.bits[self._range(start, nr)] = False

    # --- searching (find_next_bit, find_next_zero_bit, find_first_bit) --------------

    def find_next_bit(self, size: int, start: int) -> int:
        """First set bit at or after ``start`` and below ``size``; ``size`` if none.

        >>> Bitmap.from_bits([0, 1, 0, 1]).find_next_bit(4, 2), Bitmap(4).find_next_bit(4, 0)
        (3, 4)
        """
        return self._find(size, start, True)

    def find_next_zero_bit(self, size: int, start: int) -> int:
        """First clear bit at or after ``start`` and below ``size``; ``size`` if none."""
        return self._find(size, start, False)

    def find_first_bit(self, size: int) -> int:
        """``find_first_bit(addr, size)`` = ``find_next_bit(size, 0)``."""
        return self._find(size, 0, True)

    def _find(self, size: int, start: int, value: bool) -> int:
        size = checks.integer(size, "size", BitmapError, min=0)
        start = checks.integer(start, "start", BitmapError, min=0)
        if size > self.nbits:
            raise BitmapError(f"search size {size} exceeds bitmap of {self.nbits} bits")
        if start >= size:
            return size
        window = self.bits[start:size]
        k = int(np.argmax(window) if value else np.argmin(window))
        return start + k if window[k] == value else size

    # --- whole-map operations ----------------------------------------------------------

    def count(self) -> int:
        """``bitmap_count_one(map, nbits)``."""
        return int(np.count_nonzero(self.bits))

    def complement(self) -> Bitmap:
        """``bitmap_complement`` into a new bitmap (padding bits stay clear)."""
        return Bitmap(bits=~self.bits)

    def or_(self, other: Bitmap) -> Bitmap:
        """``bitmap_or`` into a new bitmap."""
        return Bitmap(bits=self.bits | self._same_size(other).bits)

    def and_(self, other: Bitmap) -> Bitmap:
        """``bitmap_and`` into a new bitmap."""
        return Bitmap(bits=self.bits & self._same_size(other).bits)

    def _same_size(self, other: Bitmap) -> Bitmap:
        if not isinstance(other, Bitmap):
            raise BitmapError(f"expected a Bitmap, found {checks.describe(other)}")
        if other.nbits != self.nbits:
            raise BitmapError(f"bitmap sizes differ ({self.nbits} != {other.nbits})")
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bitmap):
            return NotImplemented
        return self.nbits == other.nbits and bool(np.array_equal(self.bits, other.bits))

    __hash__ = None  # type: ignore[assignment]

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """Maximal runs of set bits: ``(starts, lengths)`` int64 arrays, in order.

        The loop of QEMU's ``find_next_bit`` / ``find_next_zero_bit`` pairs (as in
        ``postcopy_send_discard_bm_ram``), vectorised; see :func:`run_pairs`.

        >>> Bitmap.from_bits([1, 1, 0, 1]).runs()
        (array([0, 3]), array([2, 1]))
        """
        pairs = run_pairs(self.bits)
        return pairs[:, 0], pairs[:, 1]

    # --- QEMU's word layout ------------------------------------------------------------

    def to_words(self) -> np.ndarray:
        """The ``BITS_TO_LONGS(nbits)`` 64-bit words QEMU stores (uint64, padding clear)."""
        nwords = -(-self.nbits // BITS_PER_LONG)
        packed = np.zeros(nwords * 8, np.uint8)
        packed[: -(-self.nbits // 8)] = np.packbits(self.bits, bitorder="little")
        return packed.view("<u8").astype(np.uint64)

    @classmethod
    def from_words(cls, words, nbits: int) -> Bitmap:
        """Bits ``0 .. nbits-1`` of QEMU words (padding bits beyond ``nbits`` are ignored).

        ``words``: a 1-D array-like of integers in ``0 .. 2**64-1``.
        """
        nbits = _nbits(nbits)
        try:
            w = words if isinstance(words, np.ndarray) else np.asarray(words)
        except (TypeError, ValueError, OverflowError):
            w = None
        if w is None or w.ndim != 1 or (w.size and w.dtype.kind not in "iu"):
            raise BitmapError(f"words must be a 1-D array of 64-bit words, found {checks.describe(words)}")
        if w.size and w.dtype.kind == "i" and w.min() < 0:
            raise BitmapError(f"words must be unsigned 64-bit values, found {int(w.min())}")
        w = w.astype("<u8")
        if w.size * BITS_PER_LONG < nbits:
            raise BitmapError(f"{w.size} words hold fewer than {nbits} bits")
        bits = np.unpackbits(w.view(np.uint8), count=nbits, bitorder="little").astype(bool)
        return cls(bits=bits)

    def to_le_bytes(self) -> bytes:
        """The words as little-endian bytes (``bitmap_to_le``), as sent on the wire."""
        return self.to_words().astype("<u8").tobytes()

    # --- ram_debug_dump_bitmap -----------------------------------------------------------

    def dump_text(self, expected: bool = False, pages: int | None = None) -> str:
        """What the seed's ``ram_debug_dump_bitmap(map, expected, pages)`` prints.

        Lines of 128 pages (``1`` set, ``.`` clear) prefixed ``0x%08x : `` with the first
        page number; lines whose every bit equals ``expected`` are skipped.

        >>> bm = Bitmap(300); bm.set_bit(129)
        >>> bm.dump_text()[:16], len(bm.dump_text().splitlines())
        ('0x00000080 : .1.', 1)
        """
        expected = checks.flag(expected, "expected", BitmapError)
        pages = self.nbits if pages is None else checks.integer(pages, "pages", BitmapError)
        if not 0 <= pages <= self.nbits:
            raise BitmapError(f"pages {pages} outside bitmap of {self.nbits} bits")
        lines = []
        chars = np.where(self.bits[:pages], ord("1"), ord(".")).astype(np.uint8)
        differs = self.bits[:pages] != expected
        for cur in np.flatnonzero(np.add.reduceat(differs, np.arange(0, pages, DUMP_LINE_PAGES)) if pages else []):
            start = int(cur) * DUMP_LINE_PAGES
            line = chars[start : start + DUMP_LINE_PAGES].tobytes().decode()
            lines.append(f"0x{start:08x} : {line}\n")
        return "".join(lines)

    def __repr__(self) -> str:
        return f"Bitmap(nbits={self.nbits}, count={self.count()})"

"""The destination side: RAM images that RAM records are applied to, as QEMU's loader does.

:class:`Destination` holds one numpy array per RAM block (``[n_pages, page_size]`` uint8,
zero-filled lazily by the OS, or an ``np.memmap`` file: see :class:`Images`) and QEMU's received
bitmap. It applies decoded events exactly as ``ram_load`` does: ZERO
fills the page with its fill byte, PAGE copies it, XBZRLE patches the current content,
COMPRESS_PAGE inflates one zlib stream, postcopy discards drop pages.

    >>> from ramlab.wire.events import RamBlockEntry, RamPages
    >>> import numpy as np
    >>> dst = Destination([RamBlockEntry("pc.ram", 2 * 4096)])
    >>> page = np.full((1, 4096), 7, np.uint8)
    >>> dst.apply_pages(RamPages(0x08, "pc.ram", True, np.array([4096]), data=page))
    >>> int(dst.ram("pc.ram")[4096]), int(dst.received("pc.ram").sum())
    (7, 1)
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramlab.constants import RAM_SAVE_FLAG_ZERO, TARGET_PAGE_SIZE
from ramlab.errors import RamlabError, StreamError
from ramlab.wire import events as ev

MEMMAP_THRESHOLD = 1 << 30
#: runs of consecutive pages stored with ``pwrite`` into a file-backed image are copied through a
#: buffer of this many pages (8 MiB: stays in the CPU's cache)
PWRITE_CHUNK_PAGES = 2048


def block_file_name(block: str) -> str:
    """The file a block's image is written to by ``ramlab extract``: ``/`` becomes ``_``.

    >>> block_file_name("0000:00:02.0/vga.vram")
    '0000:00:02.0_vga.vram.bin'
    """
    return block.replace("/", "_") + ".bin"


@dataclass(frozen=True)
class Images:
    """Where a :class:`Destination` keeps its RAM images.

    * ``Images()``: in memory (lazily zero: untouched pages cost nothing);
    * ``Images(folder=d)``: blocks of at least ``min_bytes`` (1 GiB) as ``np.memmap`` scratch files in
      ``d`` (guests larger than memory);
    * ``Images.files(d)``: every block as its final file ``d/<block>.bin`` (what ``ramlab extract``
      writes): the loader writes the pages straight into the files, which stay sparse where the
      guest's pages were never written;
    * ``Images(keep=False)``: no images at all: records are checked as QEMU checks them and the
      received bitmaps kept, but no page is stored (``ramlab inspect``).
    """

    folder: str | os.PathLike[str] | None = None
    min_bytes: int = MEMMAP_THRESHOLD
    final_names: bool = False
    keep: bool = True

    @classmethod
    def files(cls, folder: str | os.PathLike[str]) -> Images:
        return cls(folder=folder, min_bytes=0, final_names=True)

    def path(self, block: str) -> Path | None:
        """The file of ``block``'s image, or ``None`` for an image in memory."""
        if self.folder is None:
            return None
        return Path(self.folder) / (block_file_name(block) if self.final_names
                                    else block.replace("/", "_") + ".ramlab-image")


@dataclass
class BlockImage:
    """One RAM block at the destination: its pages and QEMU's receivedmap."""

    name: str
    used_length: int
    page_size: int  # host page size of the block (huge pages: 2 MiB)
    pages: np.ndarray | None  # [n_pages, target_page_size] uint8; None: images not kept
    received: np.ndarray  # [n_pages] bool
    written: np.ndarray  # [n_pages] bool: page may hold non-zero bytes
    path: Path | None = None  # the file behind ``pages`` when it is an np.memmap

    @property
    def n_pages(self) -> int:
        return self.received.shape[0]


class Destination:
    """Per-block RAM images and received bitmaps, updated record by record.

    ``images`` says where the images live (:class:`Images`; ``memmap_dir`` is the short form of
    ``Images(folder=memmap_dir)``). Images start all zero, like fresh guest RAM.
    """

    def __init__(
        self,
        blocks: list[ev.RamBlockEntry] | tuple[ev.RamBlockEntry, ...],
        target_page_size: int = TARGET_PAGE_SIZE,
        memmap_dir: str | os.PathLike[str] | None = None,
        *,
        images: Images | None = None,
    ) -> None:
        self.target_page_size = target_page_size
        self.images = images or Images(folder=memmap_dir)
        self.blocks: dict[str, BlockImage] = {}
        for entry in blocks:
            n = entry.used_length // target_page_size
            self.blocks[entry.name] = BlockImage(
                entry.name,
                entry.used_length,
                entry.page_size or target_page_size,
                self._image(entry.name, n, entry.used_length),
                np.zeros(n, dtype=bool),
                np.zeros(n, dtype=bool),
            )
            if isinstance(self.blocks[entry.name].pages, np.memmap):
                self.blocks[entry.name].path = self.images.path(entry.name)

    def _image(self, name: str, n: int, nbytes: int) -> np.ndarray | None:
        if not self.images.keep:
            return None
        path = self.images.path(name)
        if path is None or nbytes < self.images.min_bytes:
            return np.zeros((n, self.target_page_size), dtype=np.uint8)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if n == 0:
                path.write_bytes(b"")
                return np.zeros((0, self.target_page_size), dtype=np.uint8)
            return np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, self.target_page_size))
        except OSError as exc:
            raise RamlabError(f"cannot create the RAM image {path}: {exc.strerror or exc}") from exc

    # -------------------------------------------------------------- accessors
    def ram(self, name: str) -> np.ndarray:
        """The block's bytes as a flat uint8 array (a view)."""
        pages = self.blocks[name].pages
        if pages is None:
            raise RamlabError("the RAM images were not kept (Images(keep=False)): open the capture with them")
        return pages.reshape(-1)

    def received(self, name: str) -> np.ndarray:
        """QEMU's receivedmap of the block: one bool per target page."""
        return self.blocks[name].received

    # -------------------------------------------------------------- applying records
    def apply_pages(self, event: ev.RamPages) -> None:
        """Apply a run of ZERO or PAGE records (vectorised)."""
        if event.kind == RAM_SAVE_FLAG_ZERO:
            fill = event.fill
            assert fill is not None
            if not fill.any():
                self.apply_zero_offsets(event.block, event.page_offsets)
                return
            img = self.blocks[event.block]
            idx = event.page_offsets // self.target_page_size
            if img.pages is not None:
                img.pages[idx] = fill[:, None]
            img.written[idx] = fill != 0
            img.received[idx] = True
        else:
            assert event.data is not None
            self.apply_page_data(event.block, event.page_offsets, event.data)

    def apply_zero_offsets(self, block: str, page_offsets: np.ndarray) -> None:
        """Zero pages (fill 0; also those inside multifd packets of QEMU >= 9.0).

        QEMU skips the memset when the page is already zero: untouched pages stay free.
        """
        img = self.blocks[block]
        idx = page_offsets // self.target_page_size
        hit = idx[img.written[idx]]
        if len(hit):
            if img.pages is not None:
                img.pages[hit] = 0
            img.written[hit] = False
        img.received[idx] = True

    def apply_page_data(self, block: str, page_offsets: np.ndarray, data: np.ndarray) -> None:
        """Normal pages from a multifd packet."""
        self._store(self.blocks[block], page_offsets // self.target_page_size, data)

    @staticmethod
    def _store(img: BlockImage, idx: np.ndarray, data: np.ndarray) -> None:
        """Pages ``idx`` of a block image get ``data`` and count as written and received."""
        if img.pages is not None and not (img.path is not None and _pwrite_runs(img.path, idx, data)):
            img.pages[idx] = data
        img.written[idx] = True
        img.received[idx] = True

    def apply_xbzrle(self, event: ev.RamXbzrle) -> int:
        """Decode an XBZRLE delta onto the current page content (QEMU's ``load_xbzrle``)."""
        from ramlab.xbzrle import decode_page

        img = self.blocks[event.block]
        i = event.page_offset // self.target_page_size
        page = img.pages[i] if img.pages is not None else np.zeros(self.target_page_size, np.uint8)
        try:
            covered = decode_page(event.data, page)
        except Exception as exc:  # XbzrleError: re-raise with the stream position
            raise _xbzrle_error(exc, event) from exc
        img.written[i] = True
        img.received[i] = True
        return covered

    def apply_xbzrle_batch(self, block: str, events: list[ev.RamXbzrle]) -> tuple[np.ndarray, np.ndarray]:
        """Decode many XBZRLE records of one block at once (pages must be distinct).

        Returns ``(before, after)`` copies of the pages, ``[n, page_size]``, for delta views.
        An invalid record raises :class:`~ramlab.errors.StreamError` after the records
        before it have been applied, as QEMU's loader would have applied them.
        """
        from ramlab.errors import XbzrleError
        from ramlab.xbzrle import decode_batch

        img = self.blocks[block]
        idx = np.fromiter((e.page_offset for e in events), np.int64, len(events)) // self.target_page_size
        # without images the deltas are still checked, on zero pages
        before = img.pages[idx] if img.pages is not None else np.zeros((len(idx), self.target_page_size), np.uint8)
        after = before.copy()
        try:
            decode_batch([e.data for e in events], after)
        except XbzrleError as exc:
            k = exc.page  # type: ignore[attr-defined]
            self._store(img, idx[:k], after[:k])
            raise _xbzrle_error(exc, events[k]) from exc
        self._store(img, idx, after)
        return before, after

    def apply_compressed(self, event: ev.RamCompressed) -> None:
        """Inflate a COMPRESS_PAGE record into its page; the zlib stream must end cleanly."""
        img = self.blocks[event.block]
        i = event.page_offset // self.target_page_size
        tps = self.target_page_size
        d = zlib.decompressobj()
        try:
            out = d.decompress(event.data, tps)
            ok = d.eof and not d.unconsumed_tail and not d.unused_data
        except zlib.error as exc:
            out, ok = b"", False
            reason = str(exc)
        else:
            reason = "the zlib stream does not end exactly at the record's end"
        if not ok:
            raise StreamError(
                f"Failed to decompress page: {reason}", offset=event.offset, section="ram",
                expected="one complete zlib stream inflating to at most one page",
                found=f"{len(event.data)} bytes for page 0x{event.page_offset:x} of {event.block!r}",
            )
        if img.pages is not None:
            img.pages[i, : len(out)] = np.frombuffer(out, dtype=np.uint8)
        img.written[i] = True
        img.received[i] = True

    def discard(self, block: str, start: int, length: int, offset: int | None = None) -> np.ndarray:
        """Postcopy discard of a byte range: clear the received bits and drop the memory.

        Returns the target-page indices discarded. Start and length must be aligned to the
        block's host page size, else QEMU fails with "Unaligned start address/length".
        """
        img = self.blocks.get(block)
        if img is None:
            raise StreamError("discard for an unknown RAM block", offset=offset, found=repr(block))
        if start % img.page_size or length % img.page_size:
            raise StreamError(
                "Unaligned start address/length in postcopy discard", offset=offset,
                expected=f"multiples of the host page size 0x{img.page_size:x}",
                found=f"start 0x{start:x} length 0x{length:x}",
            )
        if start + length > img.used_length:
            raise StreamError(
                "postcopy discard past the end of the block", offset=offset,
                expected=f"<= 0x{img.used_length:x}", found=f"0x{start + length:x}",
            )
        tps = self.target_page_size
        idx = np.arange(start // tps, (start + length) // tps)
        dropped = idx[img.written[idx]]  # like madvise(DONTNEED): only pages that hold data change
        if img.pages is not None and len(dropped):
            img.pages[dropped] = 0
        img.written[idx] = False
        img.received[idx] = False
        return idx


def _pwrite_runs(path: Path, idx: np.ndarray, data: np.ndarray) -> bool:
    """Write ``data[i]`` to page ``idx[i]`` of the image file ``path`` with ``pwrite``, run by run.

    Why: storing through the file's shared mapping costs a page fault per page written (a few
    microseconds each: most of ``ramlab extract``'s time on a page-heavy stream); ``pwrite`` copies
    into the same page cache without faults, and the mapping sees the result. Pays off for runs of
    consecutive pages (a bulk pass); scattered pages return ``False`` and go through the mapping.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "img"
    >>> _ = f.write_bytes(bytes(40 * 4096))
    >>> _pwrite_runs(f, np.arange(4, 36), np.full((32, 4096), 9, np.uint8))
    True
    >>> f.read_bytes()[4 * 4096 - 1 : 4 * 4096 + 1].hex(), f.stat().st_size == 40 * 4096
    ('0009', True)
    """
    n, page = data.shape
    if n < 16:
        return False
    starts = np.flatnonzero(np.diff(idx) != 1) + 1
    if len(starts) * 16 > n:  # runs shorter than 16 pages on average
        return False
    bounds = np.concatenate(([0], starts, [n])).tolist()
    buf = None if data.flags.c_contiguous else np.empty((min(n, PWRITE_CHUNK_PAGES), page), np.uint8)
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise RamlabError(f"cannot write the RAM image {path}: {exc.strerror or exc}") from exc
    try:
        for a, b in zip(bounds[:-1], bounds[1:]):
            for s in range(a, b, PWRITE_CHUNK_PAGES):
                k = min(PWRITE_CHUNK_PAGES, b - s)
                chunk = data[s : s + k]
                if buf is not None:
                    np.copyto(buf[:k], chunk)
                    chunk = buf[:k]
                want, at = k * page, int(idx[s]) * page
                if os.pwrite(fd, memoryview(chunk).cast("B"), at) != want:
                    raise OSError(0, "short write (disk full?)")
    except OSError as exc:
        raise RamlabError(f"cannot write the RAM image {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return True


def _xbzrle_error(exc: Exception, event: ev.RamXbzrle) -> StreamError:
    """QEMU's "Failed to load XBZRLE page", at the record's stream position."""
    return StreamError(
        f"Failed to load XBZRLE page: {exc}", offset=event.offset, section="ram",
        found=f"page 0x{event.page_offset:x} of {event.block!r}",
    )

"""Reading capture files: plain files are memory-mapped, ``.zst`` files are decompressed as a stream.

This is the only module that opens stream files; the wire decoders are fed what it returns.

    >>> data = read_stream(b"QEVM\\x00\\x00\\x00\\x03")   # bytes pass through unchanged
    >>> bytes(data[:4])
    b'QEVM'

Compressed input is bounded: it is decompressed chunk by chunk, kept in memory up to
:data:`SPOOL_IN_MEMORY` bytes and beyond that written to an unlinked temporary file that is
memory-mapped (the page cache holds it, not the heap), and it may expand to at most ``limit``
bytes (:data:`DEFAULT_MAX_DECOMPRESSED` unless the caller knows better: ``ramlab.open`` allows
64 times the RAM a stream's block list declares). Past the limit :class:`InputCut` is
raised, carrying the bytes that came before it, so a decompression bomb costs at most ``limit``
bytes of temporary file and the time to inflate them. Damaged compressed data raises the same
:class:`InputCut` with what decompressed before the damage.
"""

from __future__ import annotations

import mmap
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ramlab.errors import RamlabError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: decompressed bytes kept in memory; beyond that they go to a memory-mapped temporary file
SPOOL_IN_MEMORY = 64 << 20
#: what a compressed input may expand to when the caller sets no limit
DEFAULT_MAX_DECOMPRESSED = 4 << 30
#: decompressed bytes read at a time (the first chunk is what a ``limit`` callable sees)
CHUNK = 16 << 20

Source = str | os.PathLike[str] | bytes | bytearray | memoryview
Limit = int | Callable[[bytes], int] | None


class InputCut(RamlabError):
    """A compressed input could be read only in part: it is damaged, or it expands past its limit.
    ``data`` holds the part before the cut (``len(data)`` bytes: the cut's offset)."""

    def __init__(self, message: str, data: bytes | memoryview) -> None:
        super().__init__(message)
        self.data = data


def read_stream(source: Source, *, limit: Limit = None) -> bytes | memoryview:
    """Return the bytes of a stream: ``bytes`` as given, a file via mmap, ``.zst`` decompressed.

    Zstandard input is recognised by its magic number, whatever the file name. ``limit`` bounds
    its decompressed size: a number of bytes, or a function given the first decompressed chunk
    that returns the bound (so it can read the stream's header first). Pipes and other
    non-regular files (``<(zstd -dc s.zst)``, ``/dev/stdin``) are read to their end.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source) if isinstance(source, bytearray) else source
        if bytes(data[:4]) == ZSTD_MAGIC:
            import io as _io

            return _decompress(_io.BytesIO(data), "<bytes>", limit)
        return data
    path = Path(source)
    try:
        st = path.stat()
        size = st.st_size
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            # a pipe, /dev/stdin, a character device: no size to map, read it to its end
            with path.open("rb") as fh:
                return read_stream(fh.read(), limit=limit)
        with path.open("rb") as fh:
            head = fh.read(4)
            if head == ZSTD_MAGIC:
                fh.seek(0)
                return _decompress(fh, str(path), limit)
            if size == 0:  # empty, or a file that reports no size (/proc, sysfs): read what it gives
                return read_stream(head + fh.read(), limit=limit) if head else b""
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise RamlabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return memoryview(mm)


def _decompress(fh: IO[bytes], name: str, limit: Limit) -> bytes | memoryview:
    import zstandard

    parts: list[bytes] = []
    spool: IO[bytes] | None = None
    total = 0
    bound = limit if isinstance(limit, int) else DEFAULT_MAX_DECOMPRESSED
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        while True:
            chunk = reader.read(CHUNK)
            if not chunk:
                break
            if total == 0 and callable(limit):
                bound = int(limit(chunk))
            if total + len(chunk) > bound:
                chunk = chunk[: bound - total]
                _append(parts, spool, chunk)
                total += len(chunk)
                raise InputCut(f"{name}: decompresses to more than {bound:,} bytes (the limit for this input)",
                               _collect(parts, spool))
            if spool is None and total + len(chunk) > SPOOL_IN_MEMORY:
                spool = tempfile.TemporaryFile()
                for p in parts:
                    spool.write(p)
                parts = []
            _append(parts, spool, chunk)
            total += len(chunk)
    except zstandard.ZstdError as exc:
        raise InputCut(f"{name}: damaged zstd data after {total:,} decompressed bytes ({exc})",
                       _collect(parts, spool)) from None
    except OSError as exc:
        raise RamlabError(f"{name}: cannot spool the decompressed stream: {exc.strerror or exc}") from exc
    return _collect(parts, spool)


def _append(parts: list[bytes], spool: IO[bytes] | None, chunk: bytes) -> None:
    if spool is None:
        parts.append(chunk)
    else:
        spool.write(chunk)


def _collect(parts: list[bytes], spool: IO[bytes] | None) -> bytes | memoryview:
    if spool is None:
        return b"".join(parts)
    spool.flush()
    mm = mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ)
    spool.close()  # the mapping keeps the (unlinked) file's pages
    return memoryview(mm)

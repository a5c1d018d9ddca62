"""Reading capture files: plain files are memory-mapped, ``.zst`` files are decompressed.

This is the only module that opens stream files; the wire decoders are fed what it returns.

    >>> data = read_stream(b"QEVM\\x00\\x00\\x00\\x03")   # bytes pass through unchanged
    >>> bytes(data[:4])
    b'QEVM'
"""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

from ramlab.errors import RamlabError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_DECOMPRESSED = 64 << 30


def read_stream(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> bytes | memoryview:
    """Return the bytes of a stream: ``bytes`` as given, a file via mmap, ``.zst`` decompressed.

    Zstandard input is recognised by its magic number, whatever the file name. Pipes and other
    non-regular files (``<(zstd -dc s.zst)``, ``/dev/stdin``) are read to their end.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source) if isinstance(source, bytearray) else source
        if bytes(data[:4]) == ZSTD_MAGIC:
            return _unzstd(data, "<bytes>")
        return data
    path = Path(source)
    try:
        st = path.stat()
        size = st.st_size
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            # a pipe, /dev/stdin, a character device: no size to map, read it to its end
            with path.open("rb") as fh:
                return read_stream(fh.read())
        with path.open("rb") as fh:
            head = fh.read(4)
            if head == ZSTD_MAGIC:
                fh.seek(0)
                return _unzstd_file(fh, str(path))
            if size == 0:
                return b""
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise RamlabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return memoryview(mm)


def _unzstd(data: bytes | memoryview, name: str) -> bytes:
    import zstandard

    try:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = dobj.decompress(data)
    except zstandard.ZstdError as exc:
        raise RamlabError(f"{name}: damaged zstd data: {exc}") from exc
    return out


def _unzstd_file(fh, name: str) -> bytes:  # type: ignore[no-untyped-def]
    import zstandard

    try:
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        chunks = []
        total = 0
        while True:
            chunk = reader.read(16 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_DECOMPRESSED:
                raise RamlabError(f"{name}: decompresses to more than {MAX_DECOMPRESSED} bytes")
            chunks.append(chunk)
    except zstandard.ZstdError as exc:
        raise RamlabError(f"{name}: damaged zstd data: {exc}") from exc
    return b"".join(chunks)

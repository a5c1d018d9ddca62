"""Sample data for the labs: bundled captures first, the shared captures beside a checkout second.

    >>> sample("plain").name
    'plain'
    >>> sorted(meta("plain")["query_migrate_final"]["ram"])[:2]
    ['dirty-pages-rate', 'dirty-sync-count']

Names are the bundled folder names (``plain``, ``xbzrle``, ``compress``, ``multifd-zstd``,
``postcopy``, ``postcopy-hugepages``, ``q35-plain``, ``q10/q10-xbzrle``...) or the folder names of
the shared captures (``precopy-plain``, ``idle-bios``...). A student install has only the
bundled ones; labs never need the shared ones.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ramlab.errors import RamlabError

__all__ = ["SHARED_NAMES", "shared_captures", "sample", "meta", "stream_bytes", "trace", "migration"]

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
    """Folder of a capture: ``ramlab.data.data_path(name)``, else the shared capture of that name."""
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
    """The ``meta.json`` of a capture (QEMU's command lines, counters, progress samples...)."""
    return json.loads((sample(name) / "meta.json").read_text())


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


@functools.lru_cache(maxsize=8)
def migration(name: str):  # type: ignore[no-untyped-def]
    """``ramlab.open`` of a capture, decoded once per kernel (the labs reuse it)."""
    import ramlab

    return ramlab.open(sample(name))


def trace(name: str):  # type: ignore[no-untyped-def]
    """The :class:`~ramlab.trace.Trace` of a capture: the precomputed one when bundled, else decoded."""
    from ramlab.data import load_trace

    try:
        return load_trace(name)
    except RamlabError:
        return migration(name).trace

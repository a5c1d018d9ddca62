"""Where the bundled captures live, and how a capture folder maps to stream files.

A capture folder (as written by ``ramlab capture`` and in ``data/``) holds ``stream.bin[.zst]``
(precopy), or ``channel-0.bin[.zst]`` ... (multifd: main channel first), or ``fwd-0.bin[.zst]``
with ``ret-0.bin[.zst]`` (postcopy forward stream and return path), plus ``meta.json``.

    >>> from pathlib import Path
    >>> data_dir().name
    'data'
"""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path

from ramlab.errors import RamlabError


def data_dir() -> Path:
    """The bundled captures: the package's ``data/`` folder (``$RAMLAB_DATA`` overrides it)."""
    env = os.environ.get("RAMLAB_DATA")
    return Path(env) if env else Path(str(files("ramlab") / "data"))


def shared_dir() -> Path:
    """The project's shared captures and references: ``$RAMLAB_SHARED``, else ``shared/`` beside a
    source checkout (it is not part of an installed package; callers treat it as optional)."""
    env = os.environ.get("RAMLAB_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def data_path(name: str) -> Path:
    """Path of a bundled capture folder, e.g. ``data_path("plain")``."""
    p = data_dir() / name
    if not p.exists():
        have = sorted(d.name for d in data_dir().iterdir() if d.is_dir()) if data_dir().exists() else []
        raise RamlabError(f"no bundled capture {name!r} in {data_dir()}; available: {have}")
    return p


def load_trace(name: str):  # type: ignore[no-untyped-def]
    """The precomputed :class:`~ramlab.trace.Trace` of a bundled capture (``data/traces/<name>.npz``).

    Loads instantly; ``ramlab.open(data_path(name)).trace`` computes the same (without the
    XBZRLE page snapshots, which are not saved).
    """
    from ramlab.trace import Trace

    p = data_dir() / "traces" / f"{name}.npz"
    if not p.exists():
        raise RamlabError(f"no precomputed trace {p}; run scripts/make_traces.py")
    return Trace.load(p)


def _pick(folder: Path, stem: str) -> Path | None:
    for suffix in (".bin", ".bin.zst"):
        p = folder / (stem + suffix)
        if p.exists():
            return p
    return None


def capture_files(folder: str | os.PathLike[str]) -> tuple[list[Path], Path | None]:
    """The stream files of a capture folder: ``(channels, return_path)``, main channel first.

    A folder holds one kind of capture; one holding several (say ``stream.bin`` and
    ``channel-0.bin``) is refused, naming the files, rather than decoded from one of them.
    """
    folder = Path(folder)
    kinds = {
        "precopy": [p for p in [_pick(folder, "stream")] if p],
        "postcopy": [p for p in [_pick(folder, "fwd-0")] if p],
        "multifd": sorted(
            (p for p in folder.iterdir() if re.fullmatch(r"channel-\d+\.bin(\.zst)?", p.name)),
            key=lambda p: int(p.name.split("-")[1].split(".")[0]),
        ) if folder.is_dir() else [],
    }
    found = {k: v for k, v in kinds.items() if v}
    if len(found) > 1:
        names = ", ".join(p.name for v in found.values() for p in v)
        raise RamlabError(f"{folder}: holds more than one capture ({names}); open the files you mean")
    if "precopy" in found:
        return found["precopy"], None
    if "postcopy" in found:
        return found["postcopy"], _pick(folder, "ret-0")
    if "multifd" in found:
        return found["multifd"], None
    raise RamlabError(f"{folder}: no stream.bin, fwd-0.bin or channel-N.bin (optionally .zst) found")

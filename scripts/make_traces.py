"""Precompute the traces of the bundled captures (data/traces/<name>.npz) for instant loading.

    python scripts/make_traces.py

tests/test_data_traces.py checks that every file equals a fresh decode of its capture.
"""

from __future__ import annotations

import ramlab
from ramlab.data import data_dir

CAPTURES = ["plain", "q35-plain", "xbzrle", "compress", "multifd-zstd", "postcopy", "postcopy-hugepages", "steer"]


def main() -> None:
    out = data_dir() / "traces"
    out.mkdir(exist_ok=True)
    for name in CAPTURES:
        m = ramlab.open(ramlab.data_path(name))
        path = out / f"{name}.npz"
        m.trace.save(path)
        print(f"{path}: {m.trace.n_passes} passes, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

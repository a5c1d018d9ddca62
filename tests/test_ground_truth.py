"""Every real capture we have — shared (QEMU 7.2 and 10) and bundled in data/ — against its ground truth.

For each capture folder with a ``meta.json``: the records in the stream equal QEMU's own
``query-migrate`` counters (``normal`` = PAGE records or unique multifd pages, ``duplicate`` =
ZERO records or multifd zero pages; with ``compress`` QEMU over-counts, see the decoder tests),
the decoded main RAM block equals the ``pmemsave`` dump outside the legacy VGA/ROM window, and the
main channel re-encodes byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _shared import CAPTURES, CAPTURES_Q10, DATA, guest_ram, outside_vga, read_zst

import ramlab
from ramlab.data import capture_files
from ramlab.wire.encoder import encode_stream


def capture_dirs() -> list[Path]:
    roots = [CAPTURES, CAPTURES_Q10, DATA, DATA / "q10", DATA / "q52"]
    found = []
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.iterdir() if (p / "meta.json").exists())
    return found


DIRS = capture_dirs()


def test_there_are_captures_to_check():
    assert any(d.parent == DATA for d in DIRS), "data/ has no bundled captures"


@pytest.mark.parametrize("folder", DIRS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_matches_ground_truth(folder):
    meta = json.loads((folder / "meta.json").read_text())
    m = ramlab.open(folder)
    assert m.error is None, m.error
    final = meta.get("query_migrate_final") or {}
    ram = final.get("ram", {})
    caps = {c["capability"] if isinstance(c, dict) else c for c in meta.get("capabilities", [])
            if not isinstance(c, dict) or c.get("state", True)}
    if ram:
        if "mapped-ram" in caps:
            # no page records: pages present are bits of the per-block bitmaps, the rest read as zero
            assert m.records["mapped"] == ram["normal"]
            assert sum(b.used_length for b in m.blocks) // 4096 - m.records["mapped"] == ram["duplicate"]
        elif "compress" in caps:
            assert 0 <= ram["duplicate"] - m.records["zero"] <= 256
            assert ram["normal"] == m.records["page"]
        else:
            assert m.records["page"] == ram["normal"]
            assert m.records["zero"] == ram["duplicate"]
    block = m.blocks[0].name  # pc.ram, or the memory backend (m0)
    if (folder / "guest-ram.bin.zst").exists() or (folder / "guest-ram.bin").exists():
        g = guest_ram(folder)
        r = m.ram(block)
        n = min(len(g), len(r))
        diff = np.flatnonzero(r[:n] != g[:n])
        assert len(outside_vga(diff)) == 0, f"{len(outside_vga(diff))} bytes differ outside the VGA window"


@pytest.mark.parametrize("folder", DIRS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_reencodes_byte_exact(folder):
    files, _ = capture_files(folder)
    data = read_zst(files[0]) if files[0].suffix == ".zst" else files[0].read_bytes()
    m = ramlab.open(data)
    assert encode_stream(m.events) == data


XBZRLE_DIRS = [d for d in DIRS if "xbzrle" in json.loads((d / "meta.json").read_text()).get("capabilities", [])
               or "xbzrle" in d.name]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("folder", XBZRLE_DIRS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_xbzrle_captures_decode_to_ground_truth_with_each_backend(folder, backend, monkeypatch):
    """The real XBZRLE pages go through the chosen batch decoder (auto picks numba when installed)."""
    from ramlab import xbzrle
    from ramlab.xbzrle import codec

    if backend == "numba" and codec._numba_kernels() is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(codec, "_backend_choice", backend)
    assert xbzrle.backend() == backend
    calls = []
    real = xbzrle.decode_batch
    monkeypatch.setattr(xbzrle, "decode_batch", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    m = ramlab.open(folder)
    assert m.error is None, m.error
    assert sum(calls) == m.records["xbzrle"] > 0
    g, r = guest_ram(folder), m.ram(m.blocks[0].name)
    n = min(len(g), len(r))
    assert len(outside_vga(np.flatnonzero(r[:n] != g[:n]))) == 0

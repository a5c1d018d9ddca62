"""Where the RAM images live (``ramlab.model.destination.Images``): none, or straight in the files
``extract`` writes. Either way the decode is the same as with images in memory."""

from __future__ import annotations

import numpy as np
import pytest
from _shared import DATA

import ramlab
from ramlab.model.destination import Images, block_file_name

CAPTURES = ["plain", "xbzrle", "compress", "multifd-zstd", "postcopy", "postcopy-hugepages", "q10/q10-mapped-ram"]


@pytest.mark.parametrize("name", CAPTURES)
def test_without_images_the_decode_is_the_same(name):
    full = ramlab.open(DATA / name)
    lean = ramlab.open(DATA / name, images=Images(keep=False))
    assert lean.error is None and full.error is None
    assert lean.summary() == full.summary()
    assert np.array_equal(lean.trace.classes, full.trace.classes)
    assert np.array_equal(lean.trace.wire_bytes, full.trace.wire_bytes)
    for b in full.blocks:
        assert np.array_equal(lean.destination.received(b.name), full.destination.received(b.name))
        assert all(img.pages is None for img in lean.destination.blocks.values())
    with pytest.raises(ramlab.RamlabError, match="not kept"):
        lean.ram("pc.ram" if "hugepages" not in name else "m0")


def test_without_images_a_damaged_xbzrle_record_is_still_found():
    clean = ramlab.open(DATA / "xbzrle")
    rec = [e for e in clean.events if type(e).__name__ == "RamXbzrle"][40]
    raw = bytearray(clean.data)
    raw[rec.offset + 8 + (1 + len(rec.block) if rec.named else 0) + 3] = 0x80  # a ULEB128 length without its 2nd byte
    full = ramlab.open(bytes(raw))
    lean = ramlab.open(bytes(raw), images=Images(keep=False))
    assert full.error is not None and str(lean.error) == str(full.error)
    assert lean.records == full.records


@pytest.mark.parametrize("name", ["plain", "xbzrle", "multifd-zstd", "postcopy"])
def test_images_written_straight_into_the_extracted_files(name, tmp_path, monkeypatch):
    from ramlab.model import destination

    runs = []  # runs of pages written with pwrite rather than through the mapping

    def counted(path, idx, data):
        done = real(path, idx, data)
        runs.append(done)
        return done

    real = destination._pwrite_runs
    monkeypatch.setattr(destination, "_pwrite_runs", counted)
    dense = ramlab.open(DATA / name)
    m = ramlab.open(DATA / name, images=Images.files(tmp_path / "out"))
    paths = m.extract(tmp_path / "out")
    for b in dense.blocks:
        p = tmp_path / "out" / block_file_name(b.name)
        assert p in paths
        assert p.read_bytes() == dense.ram(b.name).tobytes()
    big = tmp_path / "out" / block_file_name(dense.blocks[0].name)
    used = big.stat().st_blocks * 512
    written = int(dense.destination.blocks[dense.blocks[0].name].written.sum()) * 4096
    assert used <= written + (1 << 20)  # only the pages that hold data take room: the rest are holes
    if name in ("plain", "multifd-zstd"):  # bulk passes: long runs of pages, both ways of writing taken
        assert True in runs and False in runs, runs

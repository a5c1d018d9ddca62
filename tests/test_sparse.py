"""The sparse RAM-image writer: byte-identical to the dense image, holes where pages are zero."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from _shared import CAPTURES, CAPTURES_Q10, DATA, guest_ram, outside_vga
from hypothesis import given, settings
from hypothesis import strategies as st

import ramlab
from ramlab.errors import RamlabError
from ramlab.sparse import nonzero_pages, page_runs, write_sparse


def holes_supported(folder: Path) -> bool:
    """Whether ``folder``'s filesystem stores a file extended by ftruncate without blocks."""
    probe = folder / "hole-probe"
    with open(probe, "wb") as fh:
        fh.truncate(8 << 20)
    blocks = os.stat(probe).st_blocks
    probe.unlink()
    return blocks * 512 < (1 << 20)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@st.composite
def images(draw):
    """A RAM image: pages that are zero, data, zero but for one late byte, or zero in the first word only."""
    page = draw(st.sampled_from([4096, 64, 24, 12]))
    kinds = draw(st.lists(st.sampled_from(["zero", "data", "late-byte", "lead-zero"]), min_size=0, max_size=40))
    tail = draw(st.integers(0, page - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    img = np.zeros(len(kinds) * page + tail, np.uint8)
    pages = img[: len(kinds) * page].reshape(len(kinds), page)
    for i, kind in enumerate(kinds):
        if kind == "data":
            pages[i] = rng.integers(1, 256, page)
        elif kind == "late-byte":
            pages[i, page - 1] = 0x80
        elif kind == "lead-zero":
            pages[i, 8:] = rng.integers(0, 256, page - 8)
    if tail and draw(st.booleans()):
        img[-1] = 1
    return img, page


@settings(max_examples=150, deadline=None)
@given(images(), st.integers(0, 3), st.booleans())
def test_file_equals_the_dense_image(tmp_path_factory, image, merge_gap, hint):
    img, page = image
    path = tmp_path_factory.mktemp("sparse") / "block.bin"
    n = img.size // page
    may = None
    if hint:  # a loader's "written" map: every non-zero page and some zero ones
        pages = img[: n * page].reshape(n, page)
        may = pages.any(axis=1) | (np.arange(n) % 3 == 0)
    w = write_sparse(path, img, page_size=page, may_be_nonzero=may, merge_gap=merge_gap)
    assert path.read_bytes() == img.tobytes()
    assert w.size == img.size == path.stat().st_size and w.sparse
    n_nonzero_pages = int(img[: n * page].reshape(n, page).any(axis=1).sum()) if n else 0
    assert n_nonzero_pages * page <= w.data_bytes <= img.size


def test_nonzero_pages_checks_the_whole_page_not_only_its_first_word():
    pages = np.zeros((5, 4096), np.uint8)
    pages[1, 0] = 1          # first byte
    pages[2, 4095] = 1       # last byte, first word zero
    pages[4, 8:16] = 0xFF    # second word
    assert nonzero_pages(pages).tolist() == [1, 2, 4]
    assert nonzero_pages(pages, np.array([False, True, False, False, True])).tolist() == [1, 4]
    odd = np.zeros((3, 12), np.uint8)  # a page size that is not a multiple of 8
    odd[2, 11] = 5
    assert nonzero_pages(odd).tolist() == [2]


def test_page_runs_merge_only_short_gaps():
    idx = np.array([0, 1, 3, 7, 8, 20])
    assert [r.tolist() for r in page_runs(idx, 0)] == [[0, 3, 7, 20], [2, 4, 9, 21]]
    assert [r.tolist() for r in page_runs(idx, 1)] == [[0, 7, 20], [4, 9, 21]]
    assert [r.tolist() for r in page_runs(np.array([], np.int64), 1)] == [[], []]


def test_zero_pages_are_holes(tmp_path):
    if not holes_supported(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} does not keep holes")
    img = np.zeros((16384, 4096), np.uint8)  # 64 MiB
    img[5000, 17] = 1
    img[16383, 4095] = 2
    path = tmp_path / "pc.ram.bin"
    w = write_sparse(path, img)
    assert (w.data_bytes, w.runs) == (2 * 4096, 2)
    assert path.stat().st_size == img.nbytes
    assert allocated(path) <= 64 * 4096  # two pages plus filesystem metadata, not 64 MiB
    with open(path, "rb") as fh:
        fd = fh.fileno()
        assert os.lseek(fd, 0, os.SEEK_DATA) == 5000 * 4096
        assert os.lseek(fd, 5000 * 4096, os.SEEK_HOLE) == 5001 * 4096
    assert np.array_equal(np.fromfile(path, np.uint8), img.reshape(-1))


def test_an_older_larger_file_leaves_nothing_behind(tmp_path):
    path = tmp_path / "pc.ram.bin"
    path.write_bytes(b"\xff" * (1 << 20))
    img = np.zeros(64 * 4096, np.uint8)
    img[4096 * 3 : 4096 * 3 + 5] = 9
    write_sparse(path, img)
    assert path.read_bytes() == img.tobytes()


def test_a_pipe_gets_every_byte_in_order(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    img = np.zeros(300 * 4096 + 5, np.uint8)
    img[7 * 4096] = 1
    img[-1] = 3
    got = bytearray()

    def reader() -> None:
        with open(fifo, "rb") as fh:
            while chunk := fh.read(1 << 16):
                got.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    w = write_sparse(fifo, img)
    t.join(timeout=30)
    assert not w.sparse and w.data_bytes == img.size
    assert bytes(got) == img.tobytes()


def test_bad_targets_and_arrays_raise_ramlab_errors(tmp_path):
    img = np.zeros(4096, np.uint8)
    with pytest.raises(RamlabError, match="missing"):
        write_sparse(tmp_path / "missing" / "x.bin", img)
    with pytest.raises(RamlabError, match=str(tmp_path.name)):
        write_sparse(tmp_path, img)  # a directory
    with pytest.raises(RamlabError, match="uint8"):
        write_sparse(tmp_path / "x.bin", np.zeros(4, np.int32))
    with pytest.raises(RamlabError, match="contiguous"):
        write_sparse(tmp_path / "x.bin", np.zeros((8, 8), np.uint8)[:, ::2])
    with pytest.raises(RamlabError, match="mask of 1 pages"):
        write_sparse(tmp_path / "x.bin", img, may_be_nonzero=np.zeros(1, np.int8))


def extract_dirs() -> list[Path]:
    found = [DATA / "plain", DATA / "xbzrle", DATA / "multifd-zstd", DATA / "postcopy", DATA / "compress"]
    for root in (CAPTURES, CAPTURES_Q10):
        if root.is_dir():
            found += sorted(p for p in root.iterdir() if (p / "meta.json").exists())
    return found


@pytest.mark.parametrize("folder", extract_dirs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_extract_equals_the_dense_write_and_the_guest_memory(folder, tmp_path):
    m = ramlab.open(folder)
    assert m.error is None, m.error
    dense = tmp_path / "dense"
    dense.mkdir()
    (tmp_path / "sparse").mkdir()
    (tmp_path / "sparse" / "pc.ram.bin").write_bytes(b"\xee" * (1 << 16))  # stale content to replace
    paths = m.extract(tmp_path / "sparse")
    assert len(paths) == len(m.destination.blocks)
    for name, path in zip(m.destination.blocks, paths):
        reference = dense / path.name
        m.ram(name).tofile(reference)  # the dense writer extract used before
        assert path.read_bytes() == reference.read_bytes(), name
    main = m.blocks[0].name
    g = guest_ram(folder)
    r = np.fromfile(tmp_path / "sparse" / (main.replace("/", "_") + ".bin"), np.uint8)
    n = min(len(g), len(r))
    assert len(outside_vga(np.flatnonzero(r[:n] != g[:n]))) == 0

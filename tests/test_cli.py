"""The ``ramlab`` command line: the contract relied on by checks outside the repository."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _shared import CAPTURES, CAPTURES_Q10, DATA, guest_ram, needs_shared, outside_vga, read_zst

from ramlab.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_without_arguments_reads_the_bundled_capture(capsys):
    code, out, _ = run(capsys, "inspect", "-q")
    assert code == 0
    assert "pc.ram" in out and "passes:" in out and "status: complete" in out


def test_inspect_json_contract(capsys):
    meta = json.loads((DATA / "plain" / "meta.json").read_text())
    code, out, _ = run(capsys, "inspect", str(DATA / "plain" / "stream.bin.zst"), "--json", "-q")
    assert code == 0
    s = json.loads(out)
    assert {"name": "pc.ram", "length": 16 << 20, "page_size": 4096} in s["blocks"]
    assert set(s["records"]) >= {"zero", "page", "xbzrle", "compressed"}
    assert s["records"]["page"] == meta["query_migrate_final"]["ram"]["normal"]
    assert s["records"]["zero"] == meta["query_migrate_final"]["ram"]["duplicate"]
    assert s["passes"] >= 1 and s["devices"] > 0 and s["sections"]["FULL"] == s["devices"]


def test_inspect_multifd_channels_count_as_pages(capsys):
    folder = DATA / "multifd-zstd"
    chans = sorted(folder.glob("channel-*.bin.zst"))
    code, out, _ = run(capsys, "inspect", *map(str, chans), "--json", "-q")
    assert code == 0
    s = json.loads(out)
    ram = json.loads((folder / "meta.json").read_text())["query_migrate_final"]["ram"]
    assert s["records"]["page"] == ram["normal"] and s["channels"] == len(chans) - 1


@needs_shared
def test_extract_writes_block_files(capsys, tmp_path):
    folder = CAPTURES / "precopy-plain"
    code, out, _ = run(capsys, "extract", str(folder / "stream.bin.zst"), "-o", str(tmp_path), "-q")
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "pc.ram.bin" in names and "0000:00:02.0_vga.vram.bin" in names and "_rom@etc_acpi_tables.bin" in names
    ram = np.fromfile(tmp_path / "pc.ram.bin", dtype=np.uint8)
    assert len(outside_vga(np.flatnonzero(ram != guest_ram(folder)))) == 0


@pytest.mark.parametrize(
    "folder",
    [CAPTURES / "precopy-plain", CAPTURES / "precopy-xbzrle", CAPTURES / "multifd-zstd",
     CAPTURES_Q10 / "q10-precopy-plain"],
    ids=lambda p: p.name,
)
@needs_shared
def test_dump_equals_analyze_migration(capsys, folder):
    files = sorted(folder.glob("stream.bin.zst")) or sorted(folder.glob("channel-0.bin.zst"))
    code, out, _ = run(capsys, "dump", str(files[0]), "-q")
    assert code == 0
    expected = read_zst(folder / "analyze-state.json.zst").decode()
    assert json.loads(out) == json.loads(expected)


@needs_shared
def test_dump_of_postcopy_stream_with_vmdesc_from_a_precopy_capture(capsys, tmp_path):
    vmdesc = tmp_path / "vmdesc.json"
    vmdesc.write_bytes(read_zst(CAPTURES / "precopy-plain" / "vmdesc.json.zst"))
    code, out, _ = run(capsys, "dump", str(CAPTURES / "postcopy-faults" / "fwd-0.bin.zst"),
                       "--vmdesc", str(vmdesc), "-q")
    assert code == 0
    state = json.loads(out)
    assert len(state) == 34  # ram + 33 devices, where analyze-migration.py cannot parse the stream
    assert "cpu (" in " ".join(state)


def test_damaged_stream_prints_what_came_before_and_fails(capsys, tmp_path):
    data = read_zst(DATA / "plain" / "stream.bin.zst")
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 3])
    code, out, err = run(capsys, "inspect", str(cut), "-q")
    assert code == 1
    assert "DAMAGED" in out and "pc.ram" in out
    assert "at byte" in err


def test_unreadable_file_is_a_clean_error(capsys, tmp_path):
    code, _, err = run(capsys, "inspect", str(tmp_path / "missing.bin"), "-q")
    assert code == 1 and "cannot read" in err


@needs_shared
def test_dump_of_hugepage_postcopy_stream_lists_block_sizes(capsys, tmp_path):
    vmdesc = tmp_path / "vmdesc.json"
    vmdesc.write_bytes(read_zst(CAPTURES / "precopy-plain" / "vmdesc.json.zst"))
    code, out, _ = run(capsys, "dump", str(CAPTURES / "postcopy-hugepages" / "fwd-0.bin.zst"),
                       "--vmdesc", str(vmdesc), "-q")
    assert code == 0
    sizes = json.loads(out)["ram (2)"]["section sizes"]
    assert sizes["m0"] == f"0x{64 << 20:016x}"

"""Provenance: the QEMU version range a stream's features imply, on real 7.2 and 10.0 captures."""

from __future__ import annotations

import pytest
from _shared import CAPTURES, CAPTURES_Q10, DATA

import ramlab
from ramlab.cli import main
from ramlab.provenance import _parse, machine_type_version, provenance

Q72 = [CAPTURES / n for n in ("idle-bios", "precopy-plain", "precopy-xbzrle", "precopy-compress", "multifd-zstd",
                              "postcopy-faults", "postcopy-hugepages")]
Q72 += [DATA / n for n in ("plain", "xbzrle", "compress", "multifd-zstd", "postcopy", "postcopy-hugepages")]
Q10 = [CAPTURES_Q10 / "q10-precopy-plain", CAPTURES_Q10 / "q10-multifd-zstd"]
Q10 += [DATA / "q10" / n for n in ("q10-mapped-ram", "q10-xbzrle", "q10-postcopy")]


def _open(folder):
    if not folder.exists():
        pytest.skip(f"{folder} missing")
    return ramlab.open(folder)


def features(p):
    return {e["feature"] for e in p["evidence"]}


@pytest.mark.parametrize("folder", Q72, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_qemu72_range_contains_72_excludes_10(folder):
    p = _open(folder).summary()["provenance"]
    assert p["machine_type"] == "pc-i440fx-7.2"
    assert p["min"] == "7.2"
    assert p["max"] is not None and _parse(p["max"]) < (10, 0)
    assert not p["conflict"]
    assert "SWITCHOVER_START" not in features(p)


@pytest.mark.parametrize("folder", Q10, ids=lambda p: p.name)
def test_qemu10_range_starts_at_10(folder):
    p = provenance(_open(folder))
    assert p["min"] == "10.0" and p["max"] is None
    assert p["certain"] == {"min": "10.0", "max": None}
    assert "SWITCHOVER_START" in features(p)
    reasons = " | ".join(e["reason"] for e in p["evidence"])
    assert "SWITCHOVER_START ⇒ QEMU ≥ 10.0" in reasons
    assert "machine type pc-i440fx-10.0 ⇒ QEMU ≥ 10.0" in reasons


def test_feature_reasons():
    cases = {
        CAPTURES_Q10 / "q10-multifd-zstd": {"MULTIFD_FLUSH": "8.1", "multifd zero pages": "9.0",
                                            "vmdesc configuration": "8.2"},
        DATA / "q10" / "q10-mapped-ram": {"mapped-ram": "9.0"},
    }
    for folder, want in cases.items():
        p = provenance(_open(folder))
        got = {e["feature"]: e["min"] for e in p["evidence"]}
        for k, v in want.items():
            assert got[k] == v
    p = provenance(_open(CAPTURES / "precopy-compress"))
    comp = next(e for e in p["evidence"] if e["feature"] == "COMPRESS_PAGE")
    assert comp["max"] == "9.0" and comp["certain"]
    assert p["certain"]["max"] == "8.1"  # vmdesc without configuration is the tighter bound


def test_postcopy_72_upper_bound_is_assumed():
    """Without a vmdesc only the missing SWITCHOVER_START bounds a 7.2 postcopy stream (assumed)."""
    p = provenance(_open(CAPTURES / "postcopy-faults"))
    assert p["certain"] == {"min": "7.2", "max": None}
    item = next(e for e in p["evidence"] if e["feature"] == "no SWITCHOVER_START")
    assert item["certain"] is False and item["used"] is True and p["max"] == "9.2"


def test_machine_type_version():
    assert machine_type_version("pc-q35-10.0") == "10.0"
    assert machine_type_version("pc-i440fx-2.12") == "2.12"
    assert machine_type_version("pc") is None and machine_type_version(None) is None


def test_inspect_prints_provenance(capsys):
    folder = DATA / "q10" / "q10-mapped-ram"
    if not folder.exists():
        pytest.skip("no capture")
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "written by: QEMU 10.0 or newer" in out and "SWITCHOVER_START" in out


def test_seed_multifd_handshake_is_shown_and_dates_the_stream():
    """The seed's multifd (QEMU 2.11-3.0): channels open with the packed 25-byte MultiFDInit_t and
    carry nothing; the pages travel on the main channel."""
    from ramlab.wire.events import MultifdHandshake
    from ramlab.wire.multifd import encode_handshake

    main = ramlab.open(DATA / "plain")
    m = ramlab.open(bytes(main.data), encode_handshake(channel_id=0, seed=True),
                    encode_handshake(channel_id=1, seed=True))
    assert m.error is None
    assert [[type(e).__name__, e.channel_id, e.seed_layout] for c in m.multifd_packets for e in c
            if isinstance(e, MultifdHandshake)] == [["MultifdHandshake", 0, True], ["MultifdHandshake", 1, True]]
    assert (m.ram("pc.ram") == main.ram("pc.ram")).all()
    item = next(i for i in m.summary()["provenance"]["evidence"] if i["feature"] == "seed multifd handshake")
    assert (item["min"], item["max"], item["certain"]) == ("2.11", "3.0", True)

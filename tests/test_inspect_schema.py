"""``ramlab inspect --json`` is a versioned contract: every bundled capture's output validates
against the JSON Schema shipped in the package, and its per-pass figures add up to QEMU's own
counters (``query_migrate_final`` in each capture's ``meta.json``)."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest
from _shared import DATA

from ramlab.cli import main

jsonschema = pytest.importorskip("jsonschema")

CAPTURES = sorted(p.parent for p in DATA.rglob("meta.json"))
SCHEMA = json.loads((files("ramlab") / "schemas" / "inspect.schema.json").read_text())
# captures whose page counters QEMU reports in the same units as the per-pass pages (not: 2 MiB
# host pages, mapped-ram's zero pages that are never written, compress threads' zero detection)
SAME_UNITS = {"plain", "xbzrle", "multifd-zstd", "postcopy", "q35-plain", "q10-xbzrle", "q10-postcopy"}


def inspect_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["inspect", *argv, "--json", "-q"])
    return code, json.loads(capsys.readouterr().out)


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["schema_version"] == {"const": 1, "description": "Version of this contract."}


@pytest.mark.parametrize("folder", CAPTURES, ids=lambda p: p.name)
def test_every_bundled_capture_validates(capsys, folder):
    code, s = inspect_json(capsys, str(folder))
    assert code == 0
    jsonschema.Draft202012Validator(SCHEMA).validate(s)
    assert s["schema_version"] == 1 and s["complete"] is True and s["error"] is None
    assert s["passes"] == len(s["per_pass"]) >= 1
    assert [p["kind"] for p in s["per_pass"]] == s["pass_kinds"]
    assert [p["index"] for p in s["per_pass"]] == list(range(s["passes"]))
    for key in ("xbzrle", "compressed"):
        assert sum(p["pages"][key] for p in s["per_pass"]) == s["records"][key]
    if folder.name in SAME_UNITS:
        ram = json.loads((folder / "meta.json").read_text())["query_migrate_final"]["ram"]
        assert sum(p["pages"]["zero"] for p in s["per_pass"]) == ram["duplicate"]
        sent = sum(p["pages"]["normal"] + p["pages"]["postcopy"] + p["pages"]["requested"] for p in s["per_pass"])
        assert sent == ram["normal"]
        assert sum(p["counters"]["duplicate"] for p in s["per_pass"]) == ram["duplicate"]


def test_a_damaged_stream_validates_too(capsys, tmp_path):
    from _shared import read_zst

    cut = tmp_path / "cut.bin"
    cut.write_bytes(read_zst(DATA / "xbzrle" / "stream.bin.zst")[:700_000])
    code, s = inspect_json(capsys, str(cut))
    assert code == 1
    jsonschema.Draft202012Validator(SCHEMA).validate(s)
    assert s["complete"] is False and "at byte" in s["error"]


def test_the_schema_rejects_what_breaks_the_contract(capsys):
    _, s = inspect_json(capsys, str(DATA / "plain"))
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for broken in ({**s, "schema_version": 2}, {k: v for k, v in s.items() if k != "per_pass"},
                   {**s, "per_pass": [{**s["per_pass"][0], "kind": "warp"}]},
                   {**s, "records": {**s["records"], "zero": -1}}):
        assert not validator.is_valid(broken)

"""ramlab.wire.vmstate against QEMU's analyze-migration.py output for the real captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _devsections import (
    CAPTURE_DIRS,
    SHARED,
    find_device_sections,
    find_ram_start,
    load_json_zst,
    main_stream,
    read_zst,
)
from _shared import needs_shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramlab.errors import StreamError, TruncatedStream
from ramlab.wire.vmstate import (
    TOOL_10,
    TOOL_72,
    DeviceSection,
    configuration_capabilities,
    device_state_json,
    parse_configuration,
    parse_vmstate,
    ram_section_sizes,
    tool_for_vmdesc,
)

ANALYZED = [p for p in CAPTURE_DIRS if (p / "analyze-state.json.zst").exists()]
POSTCOPY = [p for p in CAPTURE_DIRS if (p / "fwd-0.bin.zst").exists()]
PLAIN = SHARED / "captures" / "precopy-plain"
Q10_PLAIN = SHARED / "captures-qemu10" / "q10-precopy-plain"


def tool_text(state: dict) -> str:
    """The text analyze-migration.py prints (its encoder settings, plus print's newline)."""
    return json.dumps(state, indent=4, separators=(",", ": ")) + "\n"


def capture_sections(capture: Path, vmdesc: dict, tool: str | None = None) -> list[DeviceSection]:
    stream = main_stream(capture)
    return [find_ram_start(stream, vmdesc)] + find_device_sections(stream, vmdesc, tool=tool)


@pytest.fixture(scope="module")
def plain() -> tuple[dict, list[DeviceSection]]:
    if not PLAIN.is_dir():
        pytest.skip(f"shared capture {PLAIN} not found")
    vmdesc = load_json_zst(PLAIN / "vmdesc.json.zst")
    return vmdesc, find_device_sections(main_stream(PLAIN), vmdesc)


# --- equality with the real tool ------------------------------------------------------------

@needs_shared
def test_captures_present() -> None:
    assert len(ANALYZED) >= 7 and len(POSTCOPY) >= 2


@pytest.mark.parametrize("capture", ANALYZED, ids=lambda p: p.name)
def test_matches_analyze_migration_text(capture: Path) -> None:
    vmdesc = load_json_zst(capture / "vmdesc.json.zst")
    expected = read_zst(capture / "analyze-state.json.zst").decode()
    state = device_state_json(capture_sections(capture, vmdesc), vmdesc)
    assert state == json.loads(expected)
    assert tool_text(state) == expected  # same keys, same order, same text


@pytest.mark.parametrize("capture", ANALYZED, ids=lambda p: p.name)
def test_section_count_and_order(capture: Path) -> None:
    vmdesc = load_json_zst(capture / "vmdesc.json.zst")
    sections = capture_sections(capture, vmdesc)
    assert [s.idstr for s in sections[1:]] == [d["name"] for d in vmdesc["devices"]]
    assert sections[0].idstr == "ram"


@needs_shared
def test_tool_autodetect() -> None:
    assert tool_for_vmdesc(load_json_zst(PLAIN / "vmdesc.json.zst")) == TOOL_72
    assert tool_for_vmdesc(load_json_zst(Q10_PLAIN / "vmdesc.json.zst")) == TOOL_10


@pytest.mark.parametrize("capture", [p for p in ANALYZED if "qemu10" not in str(p)], ids=lambda p: p.name)
def test_72_vmdesc_gives_same_output_with_both_tools(capture: Path) -> None:
    vmdesc = load_json_zst(capture / "vmdesc.json.zst")
    sections = capture_sections(capture, vmdesc)
    assert device_state_json(sections, vmdesc, tool=TOOL_10) == device_state_json(sections, vmdesc,
                                                                                   tool=TOOL_72)


@needs_shared
def test_q10_vmdesc_needs_the_10_tool() -> None:
    # QEMU 10's vmdesc puts "index" on the first array element only; 7.2's reading of it
    # lets the second element overwrite the list.
    vmdesc = load_json_zst(Q10_PLAIN / "vmdesc.json.zst")
    sections = capture_sections(Q10_PLAIN, vmdesc)
    new = device_state_json(sections, vmdesc, tool=TOOL_10)
    old = device_state_json(sections, vmdesc, tool=TOOL_72)
    assert isinstance(new["0000:00:01.1/ide (14)"]["bmdma"], list)
    assert isinstance(old["0000:00:01.1/ide (14)"]["bmdma"], dict)


# --- postcopy: device state inside the PACKAGED blob ---------------------------------------

@pytest.mark.parametrize("capture", POSTCOPY, ids=lambda p: p.name)
def test_postcopy_packaged_devices_parse(capture: Path, plain: tuple[dict, list[DeviceSection]]) -> None:
    vmdesc, plain_sections = plain
    stream = main_stream(capture)
    sections = find_device_sections(stream, vmdesc)  # every footer verified on the way
    assert [(s.section_id, s.idstr, s.instance_id, s.version_id) for s in sections] == [
        (s.section_id, s.idstr, s.instance_id, s.version_id) for s in plain_sections
    ]
    # The sections lie inside the PACKAGED command's blob: 08, be16 7, be16 4, be32 length.
    cmd = stream.rfind(b"\x08\x00\x07\x00\x04", 0, sections[0].offset)
    assert cmd >= 0
    blob_start = cmd + 9
    blob_end = blob_start + int.from_bytes(stream[cmd + 5:cmd + 9], "big")
    last = sections[-1]
    assert blob_start < sections[0].offset and last.offset + len(last.body) + 5 <= blob_end
    state = device_state_json(sections, vmdesc)
    assert list(state) == [k for k in load_json_zst(PLAIN / "analyze-state.json.zst") if k != "ram (2)"]


def test_postcopy_ram_block_list(plain: tuple[dict, list[DeviceSection]]) -> None:
    vmdesc, _ = plain
    stream = main_stream(SHARED / "captures" / "postcopy-faults")
    state = device_state_json([find_ram_start(stream, vmdesc)], vmdesc)
    expected = load_json_zst(PLAIN / "analyze-state.json.zst")["ram (2)"]
    assert state == {"ram (2)": expected}


# --- configuration section --------------------------------------------------------------

@needs_shared
def test_configuration_with_and_without_description() -> None:
    q10 = main_stream(Q10_PLAIN)
    desc = load_json_zst(Q10_PLAIN / "vmdesc.json.zst")["configuration"]
    assert q10[8] == 0x07
    value, end = parse_configuration(q10, 9, desc)
    assert value == {"len": "0x0000000e", "name": b"pc-i440fx-10.0".hex(" ")}
    assert parse_configuration(q10, 9) == (value, end)
    old = main_stream(PLAIN)
    assert parse_configuration(old, 9) == ({"len": "0x0000000d", "name": b"pc-i440fx-7.2".hex(" ")}, 26)


@pytest.mark.parametrize("caps", [["x-ignore-shared"], ["x-ignore-shared", "mapped-ram"], []])
def test_configuration_capabilities_fallback_matches_description(caps: list[str]) -> None:
    sub = b"configuration/capabilities"
    body = (3).to_bytes(4, "big") + b"pcx" + b"\x05" + bytes([len(sub)]) + sub + (1).to_bytes(4, "big")
    body += len(caps).to_bytes(4, "big") + b"".join(bytes([len(c)]) + c.encode() for c in caps)
    cap_field = {"name": "capabilities", "type": "capability", "size": 8}
    if len(caps) > 1:
        cap_field["array_len"] = len(caps)
    desc = {
        "vmsd_name": "configuration", "version": 1,
        "fields": [{"name": "len", "type": "uint32", "size": 4},
                   {"name": "name", "type": "buffer", "size": 3}],
        "subsections": [{"vmsd_name": "configuration/capabilities", "version": 1,
                         "fields": [{"name": "caps_count", "type": "uint32", "size": 4}]
                         + ([cap_field] if caps else [])}],
    }
    described = parse_configuration(body, 0, desc)
    assert parse_configuration(body, 0) == described
    assert described[1] == len(body)
    assert configuration_capabilities(described[0]) == caps


# --- field types ----------------------------------------------------------------------------

def _one(ftype: str, raw: bytes, tool: str = TOOL_10, **extra: object) -> object:
    desc = {"fields": [{"name": "f", "type": ftype, "size": len(raw), **extra}]}
    value, end = parse_vmstate(raw, 0, desc, tool=tool)
    assert end == len(raw)
    return value["f"]


@pytest.mark.parametrize(
    ("ftype", "raw", "expected"),
    [
        ("uint8", b"\xff", "0xff"),
        ("uint16", b"\x80\x00", "0x8000"),
        ("uint32 equal", b"\xff\xff\xff\xff", "0xffffffff"),
        ("uint64", b"\xff" * 8, "0xffffffffffffffff"),
        ("int8", b"\x80", "0x80 (-128)"),
        ("int16", b"\x7f\xff", "0x7fff"),
        ("int32", b"\xff\xff\xff\xfe", "0xfffffffe (-2)"),
        ("int32 le", b"\xff\xff\xff\xff", "0xffffffff (-1)"),
        ("int64 equal", b"\x00" * 7 + b"\x01", "0x0000000000000001"),
        ("uint8 equal", b"\xff", "0xff (-1)"),  # the tool shows the "equal" unsigned types signed
        ("uint16 equal", b"\x00\x05", "0x0005"),
        ("bool", b"\x00", False),
        ("bool", b"\x02", True),
        ("buffer", b"\x01\xab", "01 ab"),
        ("unused_buffer", b"", ""),
        ("timer", b"\x00" * 8, "00 00 00 00 00 00 00 00"),
        ("float64", b"\x3f\xf0" + b"\x00" * 6, "3f f0 00 00 00 00 00 00"),
        ("pci config", b"\x86\x80", "86 80"),
        ("some future type", b"\x01", "01"),
    ],
)
def test_field_types(ftype: str, raw: bytes, expected: object) -> None:
    assert _one(ftype, raw) == expected
    assert _one(ftype, raw, TOOL_72) == expected


def test_nullptr_marker() -> None:
    assert _one("nullptr", b"0") == "nullptr"
    assert _one("nullptr", b"0", TOOL_72) == "30"  # 7.2's tool did not know the type
    with pytest.raises(StreamError, match="NULL-pointer"):
        _one("nullptr", b"1")


def test_capability_field() -> None:
    desc = {"fields": [{"name": "c", "type": "capability", "size": 8}]}
    assert parse_vmstate(b"\x03abc", 0, desc) == ({"c": "abc"}, 4)


def test_array_shapes() -> None:
    one = {"fields": [{"name": "a", "array_len": 1, "type": "uint8", "size": 1}]}
    assert parse_vmstate(b"\x07", 0, one, tool=TOOL_72)[0] == {"a": ["0x07"]}
    assert parse_vmstate(b"\x07", 0, one, tool=TOOL_10)[0] == {"a": "0x07"}
    empty = {"fields": [{"name": "a", "array_len": 0, "type": "uint8", "size": 1}]}
    assert parse_vmstate(b"", 0, empty) == ({}, 0)
    structs = {"fields": [{"name": "s", "array_len": 2, "type": "struct", "size": 1,
                           "struct": {"fields": [{"name": "x", "type": "uint8", "size": 1}]}}]}
    assert parse_vmstate(b"\x01\x02", 0, structs)[0] == {"s": [{"x": "0x01"}, {"x": "0x02"}]}
    bad_index = {"fields": [{"name": "a", "index": 1, "type": "uint8", "size": 1}]}
    with pytest.raises(StreamError, match="out of order"):
        parse_vmstate(b"\x00", 0, bad_index, tool=TOOL_72)


def test_offsets_and_base() -> None:
    desc = {"fields": [{"name": "a", "type": "uint16", "size": 2}]}
    assert parse_vmstate(b"xx\x00\x01yy", 2, desc) == ({"a": "0x0001"}, 4)
    with pytest.raises(TruncatedStream) as info:
        parse_vmstate(b"xx\x00", 2, desc, section_name="dev", base=1000)
    assert info.value.offset == 1002 and info.value.section == "dev"


def test_subsection_errors(plain: tuple[dict, list[DeviceSection]]) -> None:
    vmdesc, sections = plain
    cpu = next(s for s in sections if s.idstr == "cpu")
    desc = next(d for d in vmdesc["devices"] if d["name"] == "cpu")
    _, end = parse_vmstate(cpu.body, 0, desc)
    assert end == len(cpu.body)
    # Damage the first subsection marker.
    no_subs = dict(desc, subsections=[])
    _, fields_end = parse_vmstate(cpu.body, 0, no_subs)
    assert cpu.body[fields_end] == 0x05
    bad = bytearray(cpu.body)
    bad[fields_end] = 0x06
    with pytest.raises(StreamError, match="subsection") as info:
        device_state_json([cpu._replace(body=bytes(bad))], vmdesc)
    assert info.value.offset == cpu.offset + fields_end and info.value.section == "cpu"
    # A subsection name the description does not know.
    bad = bytearray(cpu.body)
    bad[fields_end + 2] ^= 0x20
    with pytest.raises(StreamError, match="not in the vmdesc"):
        device_state_json([cpu._replace(body=bytes(bad))], vmdesc)


def test_section_level_errors(plain: tuple[dict, list[DeviceSection]]) -> None:
    vmdesc, sections = plain
    timer = sections[0]
    with pytest.raises(StreamError, match="bytes left"):
        device_state_json([timer._replace(body=timer.body + b"\x00")], vmdesc)
    with pytest.raises(StreamError, match="not described"):
        device_state_json([timer._replace(idstr="nosuch")], vmdesc)
    with pytest.raises(StreamError, match="RAM section version"):
        device_state_json([DeviceSection(2, "ram", 0, 3, b"", 0)], vmdesc)
    assert device_state_json([tuple(timer)], vmdesc) == device_state_json([timer], vmdesc)
    assert device_state_json([DeviceSection(7, "spapr/htab", 0, 1, b"", 0)], vmdesc) == {"spapr/htab (7)": ""}


def test_ram_section_sizes_errors() -> None:
    assert ram_section_sizes((0x10).to_bytes(8, "big")) == {}
    short = (0x2000 | 4).to_bytes(8, "big") + b"\x02pc" + (0x1000).to_bytes(8, "big")
    with pytest.raises(TruncatedStream):
        ram_section_sizes(short)
    zero = (0x2000 | 4).to_bytes(8, "big") + (b"\x02pc" + bytes(8)) * 4
    with pytest.raises(StreamError, match="does not fit"):
        ram_section_sizes(zero)


# --- robustness -------------------------------------------------------------------------------

def test_every_truncation_is_a_stream_error(plain: tuple[dict, list[DeviceSection]]) -> None:
    vmdesc, sections = plain
    for section in sections:
        step = max(1, len(section.body) // 64)
        for cut in range(0, len(section.body), step):
            with pytest.raises(TruncatedStream) as info:
                device_state_json([section._replace(body=section.body[:cut])], vmdesc)
            assert info.value.section == section.idstr
            assert section.offset <= info.value.offset <= section.offset + cut


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_bodies_never_crash(plain: tuple[dict, list[DeviceSection]], data: st.DataObject) -> None:
    vmdesc, sections = plain
    section = data.draw(st.sampled_from(sections))
    body = bytearray(section.body)
    for _ in range(data.draw(st.integers(1, 4))):
        if not body:
            break
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    try:
        device_state_json([section._replace(body=bytes(body[:cut]))], vmdesc)
    except StreamError:
        pass


_leaf_types = st.sampled_from(["uint8", "int16", "uint32", "int64", "bool", "buffer", "nullptr",
                               "capability", "int32 le", "uint8 equal", "mystery"])
_names = st.sampled_from(["a", "b", "c", "configuration/x"])


def _field_strategy(children: st.SearchStrategy) -> st.SearchStrategy:
    base = st.fixed_dictionaries(
        {"name": _names, "type": _leaf_types, "size": st.one_of(st.integers(0, 9), st.just("x"))},
        optional={"array_len": st.integers(0, 3), "index": st.integers(0, 2)},
    )
    struct = st.fixed_dictionaries(
        {"name": _names, "type": st.just("struct"), "size": st.integers(0, 9), "struct": children},
        optional={"array_len": st.integers(0, 3), "index": st.integers(0, 2)},
    )
    return st.one_of(base, struct)


_descs = st.recursive(
    st.fixed_dictionaries({"fields": st.lists(_field_strategy(st.nothing()), max_size=3)}),
    lambda inner: st.fixed_dictionaries(
        {"fields": st.lists(_field_strategy(inner), max_size=4)},
        optional={"subsections": st.lists(
            st.fixed_dictionaries({"vmsd_name": _names, "version": st.just(1),
                                   "fields": st.lists(_field_strategy(inner), max_size=2)}), max_size=2)},
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(desc=_descs, raw=st.binary(max_size=64), tool=st.sampled_from([TOOL_72, TOOL_10]))
def test_random_descriptions_and_bytes(desc: dict, raw: bytes, tool: str) -> None:
    try:
        value, end = parse_vmstate(raw, 0, desc, tool=tool)
    except StreamError:
        return
    assert 0 <= end <= len(raw)
    json.dumps(value)


def test_description_is_not_modified(plain: tuple[dict, list[DeviceSection]]) -> None:
    vmdesc, sections = plain
    before = json.dumps(vmdesc)
    device_state_json(sections, vmdesc)
    assert json.dumps(vmdesc) == before


def test_decoder_device_state_events_are_accepted(plain: tuple[dict, list[DeviceSection]]) -> None:
    events = pytest.importorskip("ramlab.wire.events")
    vmdesc, sections = plain
    as_events = [events.DeviceState(s.section_id, s.idstr, s.instance_id, s.version_id, bytes(s.body),
                                    offset=s.offset) for s in sections]
    assert device_state_json(as_events, vmdesc) == device_state_json(sections, vmdesc)


def test_docstring_examples() -> None:
    import doctest

    import ramlab.wire.vmstate as module

    result = doctest.testmod(module)
    assert result.attempted > 5 and result.failed == 0

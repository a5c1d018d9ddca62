"""Test helpers: find the device sections of a real capture without the stream decoder.

The FULL device sections come after the RAM END section, in the order of the vmdesc
``devices`` list. Rather than decoding every RAM record, :func:`find_device_sections`
looks for the header of the first described device (``0x04``, be32 id, cstr8 idstr, be32
instance) and from there walks the whole chain with the vmstate parser, checking every
header against the vmdesc and every footer (``0x7e`` + be32 id). A coincidental match in
page data fails that walk and the next candidate is tried.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zstandard
from _shared import SHARED  # noqa: E402

from ramlab.constants import (
    QEMU_VM_COMMAND,
    QEMU_VM_CONFIGURATION,
    QEMU_VM_FILE_MAGIC,
    QEMU_VM_SECTION_FOOTER,
    QEMU_VM_SECTION_FULL,
    QEMU_VM_SECTION_START,
)
from ramlab.errors import StreamError
from ramlab.wire.vmstate import DeviceSection, parse_configuration, parse_vmstate, tool_for_vmdesc

CAPTURE_DIRS = sorted(
    [p for p in (SHARED / "captures").glob("*") if p.is_dir()]
    + [p for p in (SHARED / "captures-qemu10").glob("*") if p.is_dir()]
)


def read_zst(path: Path) -> bytes:
    with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        return reader.read()


def load_json_zst(path: Path) -> Any:
    return json.loads(read_zst(path))


def main_stream(capture: Path) -> bytes:
    for name in ("stream.bin.zst", "channel-0.bin.zst", "fwd-0.bin.zst"):
        if (capture / name).exists():
            return read_zst(capture / name)
    raise FileNotFoundError(f"no main stream in {capture}")


def _be32(buf: bytes, pos: int) -> int:
    return int.from_bytes(buf[pos:pos + 4], "big")


def _walk_chain(stream: bytes, start: int, devices: list[dict], tool: str) -> list[DeviceSection]:
    """Read len(devices) FULL sections back to back from ``start``; StreamError on any mismatch."""
    pos = start
    found: list[DeviceSection] = []
    for dev in devices:
        name = dev["name"].encode()
        header = 1 + 4 + 1 + len(name) + 8
        if stream[pos:pos + 1] != bytes([QEMU_VM_SECTION_FULL]) or pos + header > len(stream):
            raise StreamError("no FULL section", offset=pos, section=dev["name"])
        section_id = _be32(stream, pos + 1)
        if stream[pos + 5] != len(name) or stream[pos + 6:pos + 6 + len(name)] != name:
            raise StreamError("idstr differs from the vmdesc", offset=pos, section=dev["name"])
        p = pos + 6 + len(name)
        instance_id, version_id = _be32(stream, p), _be32(stream, p + 4)
        if instance_id != dev["instance_id"]:
            raise StreamError("instance differs from the vmdesc", offset=p, section=dev["name"])
        body_at = p + 8
        _, end = parse_vmstate(stream, body_at, dev, section_name=dev["name"], tool=tool)
        footer = stream[end:end + 5]
        if footer != bytes([QEMU_VM_SECTION_FOOTER]) + section_id.to_bytes(4, "big"):
            raise StreamError("bad footer", offset=end, section=dev["name"],
                              expected=f"7e {section_id:08x}", found=footer.hex(" "))
        found.append(DeviceSection(section_id, dev["name"], instance_id, version_id,
                                   stream[body_at:end], body_at))
        pos = end + 5
    return found


def find_device_sections(stream: bytes, vmdesc: dict, *, tool: str | None = None) -> list[DeviceSection]:
    """The FULL sections of every vmdesc device, in stream order, with verified footers."""
    tool = tool or tool_for_vmdesc(vmdesc)
    devices = vmdesc["devices"]
    first = devices[0]
    needle = bytes([len(first["name"])]) + first["name"].encode() + first["instance_id"].to_bytes(4, "big")
    errors = []
    at = len(stream)
    while True:
        at = stream.rfind(needle, 0, at)
        if at < 0:
            break
        start = at - 5
        if start >= 0 and stream[start] == QEMU_VM_SECTION_FULL:
            try:
                return _walk_chain(stream, start, devices, tool)
            except StreamError as exc:
                errors.append(exc)
    raise AssertionError(f"device sections not found; candidates failed with {errors[:3]}")


def find_ram_start(stream: bytes, vmdesc: dict) -> DeviceSection:
    """The RAM START section near the head of the stream (body runs to the end of ``stream``)."""
    assert _be32(stream, 0) == QEMU_VM_FILE_MAGIC
    pos = 8
    if stream[pos] == QEMU_VM_CONFIGURATION:
        _, pos = parse_configuration(stream, pos + 1, vmdesc.get("configuration"))
    while stream[pos] == QEMU_VM_COMMAND:
        pos += 5 + int.from_bytes(stream[pos + 3:pos + 5], "big")
    assert stream[pos] == QEMU_VM_SECTION_START, f"no START section at {pos}"
    section_id = _be32(stream, pos + 1)
    n = stream[pos + 5]
    idstr = stream[pos + 6:pos + 6 + n].decode()
    p = pos + 6 + n
    body_at = p + 8
    return DeviceSection(section_id, idstr, _be32(stream, p), _be32(stream, p + 4),
                         memoryview(stream)[body_at:], body_at)

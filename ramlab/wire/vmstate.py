"""Device state from the vmdesc description, as QEMU's ``analyze-migration.py -d state`` shows it.

A FULL (or START) device section body is a *vmstate*: the device's fields back to back,
big-endian, with no names or lengths on the wire, then its subsections
(``0x05`` + cstr8 name + be32 version + body). Only the vmdesc JSON trailer (§11 of the
stream-format reference) says how to cut the bytes into fields. This module walks a body
with that description and returns exactly the values QEMU's
``scripts/analyze-migration.py -d state`` prints for it:

* integer types -> ``"0x"`` + zero-padded hex of the field width; negative values of the
  signed types get their decimal value appended: ``"0xffffffff (-1)"``;
* ``bool`` -> ``True``/``False``;
* ``struct`` -> a dict (field name -> value), subsections keyed by their wire name;
* any other type (``buffer``, ``unused_buffer``, ``timer``, ``float64``, ``pci config``,
  ``tmp``...) -> the bytes as space-separated lowercase hex pairs;
* repeated field names (arrays) -> lists.

Everything is pure: bytes in, plain ``dict``/``list``/``str``/``bool`` out, no file IO.
Bad input raises :class:`~ramlab.errors.StreamError` (:class:`~ramlab.errors.TruncatedStream`
when the bytes end early) with the absolute offset and the section name.

    >>> desc = {"name": "timer", "instance_id": 0, "vmsd_name": "timer", "version": 2,
    ...         "fields": [{"name": "ticks", "type": "int64", "size": 8},
    ...                    {"name": "on", "type": "bool", "size": 1}]}
    >>> parse_vmstate(bytes.fromhex("ffffffffffffffff01"), 0, desc)
    ({'ticks': '0xffffffffffffffff (-1)', 'on': True}, 9)

Two generations of the tool differ in how they build arrays, chosen with ``tool``:

``"7.2"`` (QEMU 7.2 .. 9.2)
    a field that carries an ``index`` (or is unfolded from ``array_len``) is appended to
    a list, which must grow 0, 1, 2...; a field without ``index`` replaces any earlier
    value of the same name.
``"10.0"`` (QEMU >= 10.0)
    the first value of a name is stored as is, a second one turns it into a two-element
    list, later ones are appended; ``index`` is ignored. The 10.0 vmdesc writer puts
    ``index`` on the first element of an array only, which is why the tool changed.

Deliberate differences from the tool, where it crashes or misbehaves (documented so a
reader of both outputs is not surprised):

* ``capability`` values (configuration section) are their string; the tool's JSON encoder
  cannot serialise them.
* ``array_len: 0`` reads no element (the tool reads one).
* A missing or malformed description, a ``nullptr`` field that is not the byte ``'0'``,
  a ``bool`` of size 0, a block list that does not add up: StreamError instead of
  ``KeyError``/``AssertionError``/``IndexError``/an endless loop.
* Subsections are matched to their description by name (the tool takes the described
  subsections in list order and trusts that the wire has the same order; QEMU writes
  both in the same order, so the output is the same).
* ``"int32 le"`` is QEMU's "int32, loaded value must be <= the current one" check: it is
  big-endian on the wire like every other integer. The tool also reads it big-endian
  (its little-endian dtype is never used), so nothing differs.
* ``"uint8 equal"``/``"uint16 equal"`` are shown signed (``"0xff (-1)"``), as the tool does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from ramlab.constants import QEMU_VM_SUBSECTION, RAM_SAVE_FLAG_MEM_SIZE
from ramlab.errors import StreamError, TruncatedStream

__all__ = [
    "TOOL_72",
    "TOOL_10",
    "DeviceSection",
    "parse_vmstate",
    "parse_configuration",
    "configuration_capabilities",
    "ram_section_sizes",
    "device_state_json",
    "tool_for_vmdesc",
]

TOOL_72 = "7.2"
TOOL_10 = "10.0"
_TOOLS = (TOOL_72, TOOL_10)

_SIGNED_TYPES = frozenset(
    {"int8", "int16", "int32", "int32 equal", "int32 le", "int64", "int64 equal",
     "uint8 equal", "uint16 equal"}
)
_UNSIGNED_TYPES = frozenset({"uint8", "uint16", "uint32", "uint32 equal", "uint64"})

# Sections the tool knows without a vmdesc entry and shows as an empty string.
_OPAQUE_SECTIONS = frozenset({("spapr/htab", 0), ("s390-storage_attributes", 0)})

_MAX_DEPTH = 64
# Array lengths above this must be backed by at least one remaining byte per element,
# so a hostile vmdesc with zero-size elements cannot spin forever.
_FREE_ARRAY_LEN = 1 << 16

Value = Any  # str | bool | dict[str, Value] | list[Value]


class DeviceSection(NamedTuple):
    """One FULL/START section as :func:`device_state_json` needs it.

    ``body`` holds the section body (for ``ram``: at least its first record), ``offset``
    the absolute stream offset of ``body[0]``. The decoder's ``DeviceState`` event has the
    same attributes and can be passed instead.
    """

    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    body: bytes | memoryview
    offset: int = 0


class _Reader:
    """Cursor over a buffer; every read is bounds-checked and reports absolute offsets."""

    __slots__ = ("buf", "pos", "base", "section")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int, base: int, section: str | None):
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
        self.pos = pos
        self.base = base
        self.section = section

    def error(self, message: str, *, at: int | None = None, expected: str | None = None,
              found: str | None = None) -> StreamError:
        pos = self.pos if at is None else at
        return StreamError(message, offset=self.base + pos, section=self.section,
                           expected=expected, found=found)

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise TruncatedStream(
                f"stream ends inside {what}", offset=self.base + self.pos, section=self.section,
                expected=f"{n} bytes", found=f"{len(self.buf) - self.pos} bytes",
            )
        raw = bytes(self.buf[self.pos:end])
        self.pos = end
        return raw

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def be32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def be64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "big")

    def text(self, n: int, what: str) -> str:
        at = self.pos
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not UTF-8", at=at, found=raw.hex(" ")) from None


# --- value formatting --------------------------------------------------------------------

def _hex_bytes(raw: bytes) -> str:
    return " ".join(f"{b:02x}" for b in raw)


def _int_text(raw: bytes, signed: bool) -> str:
    unsigned = int.from_bytes(raw, "big")
    text = f"0x{unsigned:0{2 * len(raw)}x}"
    if signed and raw and raw[0] & 0x80:
        return f"{text} ({unsigned - (1 << (8 * len(raw)))})"
    return text


# --- description access ------------------------------------------------------------------

def _desc_int(r: _Reader, field: Mapping[str, Any], key: str, path: str) -> int:
    value = field.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise r.error(f"vmdesc field {path!r} has no usable {key!r}", expected="an integer",
                      found=repr(value))
    try:
        number = int(value)
    except ValueError:
        raise r.error(f"vmdesc field {path!r} has no usable {key!r}", expected="an integer",
                      found=repr(value)) from None
    if number < 0:
        raise r.error(f"vmdesc field {path!r} has a negative {key!r}", expected=">= 0",
                      found=str(number))
    return number


def _fields_of(r: _Reader, desc: object, path: str) -> list[Mapping[str, Any]]:
    fields = desc.get("fields") if isinstance(desc, Mapping) else None
    if not isinstance(fields, list) or not all(isinstance(f, Mapping) for f in fields):
        raise r.error(f"vmdesc entry {path!r} has no field list", expected="'fields': [...]",
                      found=type(fields).__name__)
    return fields


# --- the walker --------------------------------------------------------------------------

def _read_field(r: _Reader, field: Mapping[str, Any], path: str, depth: int, tool: str) -> Value:
    ftype = field.get("type")
    if ftype == "struct":
        return _read_struct(r, field.get("struct"), path, depth + 1, tool)
    if ftype == "capability":
        return r.text(r.u8(f"{path} length"), path)
    size = _desc_int(r, field, "size", path)
    at = r.pos
    raw = r.take(size, f"field {path!r}")
    if ftype in _UNSIGNED_TYPES:
        return _int_text(raw, signed=False)
    if ftype in _SIGNED_TYPES:
        return _int_text(raw, signed=True)
    if ftype == "bool":
        if not raw:
            raise r.error(f"bool field {path!r} has size 0", at=at, expected="size >= 1")
        return raw[0] != 0
    if ftype == "nullptr" and tool == TOOL_10:
        if raw != b"0":
            raise r.error(f"bad NULL-pointer marker in {path!r}", at=at, expected="30",
                          found=_hex_bytes(raw))
        return "nullptr"
    return _hex_bytes(raw)


def _store(r: _Reader, out: dict[str, Value], name: str, value: Value, index: int | None,
           tool: str, path: str) -> None:
    if tool == TOOL_10:
        if name not in out:
            out[name] = value
        elif type(out[name]) is _Array:
            out[name].append(value)
        else:
            out[name] = _Array((out[name], value))
        return
    if index is None:
        out[name] = value
        return
    current = out.setdefault(name, _Array())
    if type(current) is not _Array or len(current) != index:
        have = len(current) if type(current) is _Array else "a scalar"
        raise r.error(f"vmdesc array {path!r} out of order", expected=f"index {have}",
                      found=f"index {index}")
    current.append(value)


class _Array(list):
    """A list built from repeated field names (told apart from values while parsing)."""


def _read_struct(r: _Reader, desc: object, path: str, depth: int, tool: str) -> dict[str, Value]:
    if depth > _MAX_DEPTH:
        raise r.error(f"vmdesc nesting deeper than {_MAX_DEPTH} at {path!r}")
    out: dict[str, Value] = {}
    for field in _fields_of(r, desc, path):
        name = field.get("name")
        if not isinstance(name, str):
            raise r.error(f"vmdesc field without a name in {path!r}", found=repr(name))
        fpath = f"{path}.{name}" if path else name
        if "array_len" in field:
            count = _desc_int(r, field, "array_len", fpath)
            if count > _FREE_ARRAY_LEN and count > len(r.buf) - r.pos:
                raise r.error(f"vmdesc array {fpath!r} longer than the data left",
                              expected=f"<= {len(r.buf) - r.pos} elements", found=str(count))
            for i in range(count):
                value = _read_field(r, field, f"{fpath}[{i}]", depth, tool)
                _store(r, out, name, value, i, tool, fpath)
        else:
            index = field.get("index")
            if index is not None:
                index = _desc_int(r, field, "index", fpath)
            value = _read_field(r, field, fpath, depth, tool)
            _store(r, out, name, value, index, tool, fpath)
    subsections = desc.get("subsections") if isinstance(desc, Mapping) else None
    if subsections is not None:
        if not isinstance(subsections, list):
            raise r.error(f"vmdesc subsections of {path!r} are not a list")
        by_name = {s.get("vmsd_name"): s for s in subsections if isinstance(s, Mapping)}
        for _ in subsections:
            at = r.pos
            marker = r.u8("subsection marker")
            if marker != QEMU_VM_SUBSECTION:
                raise r.error(f"subsection of {path or 'section'!r} missing", at=at,
                              expected=f"0x{QEMU_VM_SUBSECTION:02x}", found=f"0x{marker:02x}")
            name_at = r.pos
            sub_name = r.text(r.u8("subsection name length"), "subsection name")
            r.be32(f"version of subsection {sub_name!r}")
            sub_desc = by_name.get(sub_name)
            if not sub_desc:
                raise r.error("subsection not in the vmdesc", at=name_at,
                              expected=" or ".join(repr(n) for n in by_name) or "no subsection",
                              found=repr(sub_name))
            out[sub_name] = _read_struct(r, sub_desc, sub_name, depth + 1, tool)
    return out


def _plain(value: Value) -> Value:
    """Replace the internal list subclass by plain lists (recursively)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _check_tool(tool: str) -> None:
    if tool not in _TOOLS:
        raise ValueError(f"tool must be one of {_TOOLS}, not {tool!r}")


def parse_vmstate(
    buf: bytes | bytearray | memoryview,
    offset: int,
    desc: Mapping[str, Any],
    *,
    section_name: str | None = None,
    base: int = 0,
    tool: str = TOOL_10,
) -> tuple[dict[str, Value], int]:
    """Parse one vmstate body at ``buf[offset:]`` as the vmdesc entry ``desc`` describes it.

    Returns the analyze-migration-shaped dict and the offset just past the body (fields
    and all described subsections). ``base`` is the absolute stream offset of ``buf[0]``
    and, with ``section_name``, only feeds error messages. ``tool`` picks the array
    semantics of analyze-migration ``"7.2"`` or ``"10.0"`` (see the module docstring).

        >>> desc = {"fields": [{"name": "r", "array_len": 2, "type": "uint16", "size": 2}],
        ...         "subsections": [{"vmsd_name": "x/y", "version": 1,
        ...                          "fields": [{"name": "b", "type": "buffer", "size": 2}]}]}
        >>> body = bytes.fromhex("00010002") + b"\\x05\\x03x/y\\x00\\x00\\x00\\x01" + b"\\xca\\xfe"
        >>> parse_vmstate(body, 0, desc)
        ({'r': ['0x0001', '0x0002'], 'x/y': {'b': 'ca fe'}}, 15)
    """
    _check_tool(tool)
    if not 0 <= offset <= len(buf):
        raise StreamError("vmstate offset outside the buffer", offset=base + offset,
                          section=section_name, expected=f"0..{len(buf)}", found=str(offset))
    r = _Reader(buf, offset, base, section_name)
    data = _read_struct(r, desc, "", 0, tool)
    return _plain(data), r.pos


# --- configuration section -----------------------------------------------------------------

_CONFIG_SUBSECTIONS_72 = ("configuration/target-page-bits", "configuration/capabilities",
                          "configuration/uuid")


def parse_configuration(
    buf: bytes | bytearray | memoryview,
    offset: int,
    desc: Mapping[str, Any] | None = None,
    *,
    base: int = 0,
    tool: str = TOOL_10,
) -> tuple[dict[str, Value], int]:
    """Parse the configuration section body (after its ``0x07`` byte).

    With ``desc`` (the vmdesc ``"configuration"`` entry, QEMU >= 8.2) the body is walked like
    any vmstate. Without it (older vmdescs) the body is read the way QEMU lays it out:
    be32 length + machine name, then the optional ``target-page-bits``, ``capabilities`` and
    ``uuid`` subsections, and returned in the shape QEMU's description gives (one
    capability is a string, several a list, none leaves the key out).
    analyze-migration reads this section but does not print it.

        >>> body = b"\\x00\\x00\\x00\\x02pc"
        >>> parse_configuration(body, 0)
        ({'len': '0x00000002', 'name': '70 63'}, 6)
    """
    _check_tool(tool)
    if desc is not None:
        return parse_vmstate(buf, offset, desc, section_name="configuration", base=base, tool=tool)
    if not 0 <= offset <= len(buf):
        raise StreamError("configuration offset outside the buffer", offset=base + offset,
                          section="configuration")
    r = _Reader(buf, offset, base, "configuration")
    length = r.take(4, "machine name length")
    out: dict[str, Value] = {"len": _int_text(length, signed=False)}
    out["name"] = _hex_bytes(r.take(int.from_bytes(length, "big"), "machine name"))
    while r.pos < len(r.buf) and r.buf[r.pos] == QEMU_VM_SUBSECTION:
        start = r.pos
        r.pos += 1
        name = r.text(r.u8("subsection name length"), "subsection name")
        if name not in _CONFIG_SUBSECTIONS_72:
            # Not one of ours: the 0x05 belongs to whatever follows.
            r.pos = start
            break
        r.be32(f"version of subsection {name!r}")
        if name == "configuration/target-page-bits":
            out[name] = {"target_page_bits": _int_text(r.take(4, "target_page_bits"), False)}
        elif name == "configuration/capabilities":
            count_raw = r.take(4, "caps_count")
            count = int.from_bytes(count_raw, "big")
            if count > len(r.buf) - r.pos:
                raise r.error("more capabilities than bytes left", expected=f"<= {len(r.buf) - r.pos}",
                              found=str(count))
            caps = [r.text(r.u8("capability length"), "capability") for _ in range(count)]
            entry: dict[str, Value] = {"caps_count": _int_text(count_raw, False)}
            if caps:
                entry["capabilities"] = caps[0] if len(caps) == 1 else caps
            out[name] = entry
        else:
            out[name] = {"uuid": [_int_text(r.take(1, "uuid"), False) for _ in range(16)]}
    return out, r.pos


def configuration_capabilities(config: Mapping[str, Value]) -> list[str]:
    """The capability names of a parsed configuration section (empty when none were sent).

        >>> configuration_capabilities({"configuration/capabilities":
        ...     {"caps_count": "0x00000001", "capabilities": "x-ignore-shared"}})
        ['x-ignore-shared']
    """
    sub = config.get("configuration/capabilities")
    if not isinstance(sub, Mapping):
        return []
    caps = sub.get("capabilities", [])
    return [caps] if isinstance(caps, str) else [str(c) for c in caps]


# --- the RAM section's block list ----------------------------------------------------------

def ram_section_sizes(
    body: bytes | bytearray | memoryview,
    *,
    page_size: int = 4096,
    base: int = 0,
    ignore_shared: bool = False,
) -> dict[str, str]:
    """The ``"section sizes"`` analyze-migration shows for the RAM START section.

    Reads only the first record of ``body`` (the MEM_SIZE block list): block name ->
    ``"0x%016x"`` used length. A first record without MEM_SIZE gives ``{}``.
    ``ignore_shared`` skips the be64 ``mr_addr`` each entry has with x-ignore-shared.
    Postcopy streams whose blocks carry an extra page-size field are not supported (the
    tool cannot read them either).

        >>> body = (0x2000 | 4).to_bytes(8, "big") + b"\\x02pc" + (0x2000).to_bytes(8, "big")
        >>> ram_section_sizes(body)
        {'pc': '0x0000000000002000'}
    """
    if page_size <= 0 or page_size & (page_size - 1):
        raise ValueError(f"page_size must be a power of two, not {page_size}")
    r = _Reader(body, 0, base, "ram")
    first = r.be64("RAM record header")
    sizes: dict[str, str] = {}
    if not first & (page_size - 1) & RAM_SAVE_FLAG_MEM_SIZE:
        return sizes
    remaining = first & ~(page_size - 1)
    while remaining > 0:
        name = r.text(r.u8("block name length"), "block name")
        at = r.pos
        length = r.be64(f"length of block {name!r}")
        if length == 0 or length > remaining:
            raise r.error(f"block {name!r} does not fit the MEM_SIZE total", at=at,
                          expected=f"1..{remaining:#x}", found=f"{length:#x}")
        remaining -= length
        sizes[name] = f"0x{length:016x}"
        if ignore_shared:
            r.be64(f"mr_addr of block {name!r}")
    return sizes


# --- whole-stream output ---------------------------------------------------------------------

def tool_for_vmdesc(vmdesc: Mapping[str, Any]) -> str:
    """Guess which analyze-migration generation matches a vmdesc.

    A ``"configuration"`` entry (QEMU >= 8.2) selects ``"10.0"``; on the fully indexed
    vmdescs of 8.2 .. 9.2 both generations print the same thing except for one-element
    arrays. Pass ``tool=`` explicitly when that matters.

        >>> tool_for_vmdesc({"page_size": 4096, "devices": []})
        '7.2'
    """
    return TOOL_10 if "configuration" in vmdesc else TOOL_72


def _section_fields(item: object) -> tuple[int, str, int, int, bytes | memoryview, int]:
    if all(hasattr(item, a) for a in ("section_id", "idstr", "instance_id", "version_id", "body")):
        return (item.section_id, item.idstr, item.instance_id,  # type: ignore[attr-defined]
                item.version_id, item.body, getattr(item, "offset", 0))  # type: ignore[attr-defined]
    if isinstance(item, Sequence) and len(item) in (5, 6):
        return (*item, 0)[:6]  # type: ignore[return-value]
    raise TypeError(f"not a device section: {item!r}")


def device_state_json(
    sections: Iterable[object],
    vmdesc: Mapping[str, Any],
    *,
    tool: str | None = None,
    ignore_shared: bool = False,
) -> dict[str, Value]:
    """What ``analyze-migration.py -d state`` prints, as a dict (``json.dumps(..., indent=4)``
    of it is the tool's text).

    ``sections`` are the START/FULL sections in stream order: :class:`DeviceSection`, the
    decoder's ``DeviceState`` events, or tuples ``(section_id, idstr, instance_id,
    version_id, body, offset)``. Keys are ``"<idstr> (<section_id>)"``. A ``ram`` section
    (instance 0, version 4) gives ``{"section sizes": ...}`` from its MEM_SIZE record and
    may carry more than its first record; every other body is looked up in
    ``vmdesc["devices"]`` by (idstr, instance_id) and must be consumed exactly.
    A section id seen twice keeps its first position and the later value, as in the tool.

        >>> vmdesc = {"page_size": 4096, "devices": [{"name": "timer", "instance_id": 0,
        ...     "vmsd_name": "timer", "version": 2,
        ...     "fields": [{"name": "unused", "type": "unused_buffer", "size": 2}]}]}
        >>> device_state_json([DeviceSection(0, "timer", 0, 2, b"\\x00\\x01", 100)], vmdesc)
        {'timer (0)': {'unused': '00 01'}}
    """
    if tool is None:
        tool = tool_for_vmdesc(vmdesc)
    _check_tool(tool)
    devices = vmdesc.get("devices") if isinstance(vmdesc, Mapping) else None
    if not isinstance(devices, list):
        raise StreamError("vmdesc has no device list", expected="'devices': [...]")
    known: dict[tuple[str, int], Mapping[str, Any]] = {}
    for dev in devices:
        if isinstance(dev, Mapping):
            known[(dev.get("name"), dev.get("instance_id"))] = dev  # type: ignore[index]
    page_size = vmdesc.get("page_size", 4096)

    out: dict[str, Value] = {}
    for item in sections:
        section_id, idstr, instance_id, version_id, body, offset = _section_fields(item)
        key = f"{idstr} ({section_id})"
        if (idstr, instance_id) == ("ram", 0):
            if version_id != 4:
                raise StreamError("unknown RAM section version", offset=offset, section="ram",
                                  expected="4", found=str(version_id))
            out[key] = {"section sizes": ram_section_sizes(
                body, page_size=page_size, base=offset, ignore_shared=ignore_shared)}
            continue
        desc = known.get((idstr, instance_id))
        if desc is None:
            if (idstr, instance_id) in _OPAQUE_SECTIONS:
                out[key] = ""
                continue
            raise StreamError("section not described by the vmdesc", offset=offset, section=idstr,
                              expected="a device of vmdesc['devices']",
                              found=f"{idstr!r} instance {instance_id}")
        value, end = parse_vmstate(body, 0, desc, section_name=idstr, base=offset, tool=tool)
        if end != len(body):
            raise StreamError("bytes left after the described vmstate", offset=offset + end,
                              section=idstr, expected=f"end of body ({len(body)} bytes)",
                              found=f"{len(body) - end} more bytes")
        out[key] = value
    return out

"""Which QEMU versions could have written a stream: the range its features imply, with reasons.

:func:`provenance` looks at what a decoded :class:`~ramlab.migration.Migration` contains and
turns each telling feature into a bound on the QEMU version of the *sender*:

======================================================  ==========  =====================================
feature                                                 bound       why
======================================================  ==========  =====================================
machine type ``pc-i440fx-X.Y`` (any ``...-X.Y`` name)   >= X.Y      a QEMU knows no newer machine types
``QEMU_VM_COMMAND`` 11 SWITCHOVER_START                 >= 10.0     new command in 10.0
multifd packets carrying zero pages                     >= 9.0      packet field added in 9.0
multifd channels open with a 25-byte handshake          2.11..3.0   multifd's first form (the seed's)
mapped-ram (MEM_SIZE headers, capability in config)     >= 9.0      capability added in 9.0
vmdesc JSON describes the configuration section         >= 8.2      JSON writer change in 8.2
RAM_SAVE_FLAG_MULTIFD_FLUSH (0x200)                     >= 8.1      record added in 8.1
COMPRESS_PAGE records (0x100)                           <= 9.0      compression removed in 9.1
vmdesc *without* the configuration section              <= 8.1      the converse of the 8.2 change
no SWITCHOVER_START though the switchover happened      <= 9.2 (*)  sent from 10.0 on
multifd without MULTIFD_FLUSH records                   <= 8.0 (*)  flushes are records from 8.1 on
======================================================  ==========  =====================================

(*) *assumed* bounds: a newer QEMU running an old machine type turns these features off for
compatibility (``hw_compat_9_2`` sets ``send-switchover-start=off``, ``hw_compat_8_0`` sets
``multifd-flush-after-each-section=on``), so they hold only when the machine type is as new as
the QEMU, which is what ``-machine pc`` gives. They are used only if they do not contradict the
certain bounds; ``certain`` gives the range from certain evidence alone.

    >>> _parse("10.0") > _parse("9.2"), _fmt((8, 1))
    (True, '8.1')
    >>> machine_type_version("pc-i440fx-7.2"), machine_type_version("pc"), machine_type_version("virt-9.0")
    ('7.2', None, '9.0')
"""

from __future__ import annotations

import re
from typing import Any

from ramlab.constants import QEMU_VM_SECTION_END
from ramlab.wire import events as ev

MIG_CMD_SWITCHOVER_START = 11

Version = tuple[int, int]

_MACHINE_VERSION = re.compile(r"-(\d+)\.(\d+)$")


def _parse(text: str) -> Version:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _fmt(v: Version | None) -> str | None:
    return None if v is None else f"{v[0]}.{v[1]}"


def machine_type_version(machine_type: str | None) -> str | None:
    """``"X.Y"`` from a versioned machine type name (``pc-q35-9.2`` -> ``9.2``), else ``None``."""
    if not machine_type:
        return None
    m = _MACHINE_VERSION.search(machine_type)
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


def _item(feature: str, reason: str, *, lo: str | None = None, hi: str | None = None,
          certain: bool = True) -> dict[str, Any]:
    return {"feature": feature, "min": lo, "max": hi, "certain": certain, "reason": reason}


def evidence(migration: Any) -> list[dict[str, Any]]:
    """The version bounds implied by the features of ``migration`` (a decoded Migration)."""
    events: list[ev.Event] = migration.events
    out: list[dict[str, Any]] = []
    mt = migration.machine_type
    mtv = machine_type_version(mt)
    if mtv is not None:
        out.append(_item("machine type", f"machine type {mt} ⇒ QEMU ≥ {mtv}", lo=mtv))
    commands = {e.cmd for e in events if isinstance(e, ev.Command)}
    switched = any(
        (isinstance(e, ev.SectionHeader) and e.idstr == "ram" and e.section_type == QEMU_VM_SECTION_END)
        for e in events
    ) or bool(migration.commands.get("POSTCOPY_LISTEN"))
    if MIG_CMD_SWITCHOVER_START in commands:
        out.append(_item("SWITCHOVER_START", "QEMU_VM_COMMAND 11 SWITCHOVER_START ⇒ QEMU ≥ 10.0", lo="10.0"))
    elif switched and (mtv is None or _parse(mtv) < (10, 0)):
        out.append(_item(
            "no SWITCHOVER_START",
            "no SWITCHOVER_START at the switchover ⇒ QEMU ≤ 9.2 (unless a newer QEMU ran this old machine "
            "type: hw_compat_9_2 turns it off)", hi="9.2", certain=False,
        ))
    has_flush = any(isinstance(e, ev.RamMultifdFlush) for e in events)
    if has_flush:
        out.append(_item("MULTIFD_FLUSH", "RAM_SAVE_FLAG_MULTIFD_FLUSH (0x200) ⇒ QEMU ≥ 8.1", lo="8.1"))
    packets = [p for chan in migration.multifd_packets for p in chan]
    if any(isinstance(p, ev.MultifdHandshake) and p.seed_layout for p in packets):
        out.append(_item("seed multifd handshake", "multifd channels open with the packed 25-byte MultiFDInit_t "
                         "and carry no pages ⇒ QEMU 2.11 .. 3.0", lo="2.11", hi="3.0"))
    if any(getattr(p, "zero_pages", 0) for p in packets):
        out.append(_item("multifd zero pages", "multifd packets carry zero pages ⇒ QEMU ≥ 9.0", lo="9.0"))
    if migration.channel_data and not has_flush and switched and (mtv is None or _parse(mtv) < (8, 1)):
        out.append(_item(
            "multifd without MULTIFD_FLUSH",
            "multifd stream without MULTIFD_FLUSH records ⇒ QEMU ≤ 8.0 (unless a newer QEMU ran this old "
            "machine type: hw_compat_8_0 flushes after each section)", hi="8.0", certain=False,
        ))
    if any(isinstance(e, ev.MappedRamArea) for e in events) or "mapped-ram" in migration.decoder.capabilities:
        out.append(_item("mapped-ram", "mapped-ram block headers / capability ⇒ QEMU ≥ 9.0", lo="9.0"))
    if any(isinstance(e, ev.RamCompressed) for e in events):
        out.append(_item("COMPRESS_PAGE", "COMPRESS_PAGE records (multi-thread compression) ⇒ QEMU ≤ 9.0",
                         hi="9.0"))
    if migration.vmdesc is not None:
        if "configuration" in migration.vmdesc:
            out.append(_item("vmdesc configuration", "vmdesc describes the configuration section ⇒ QEMU ≥ 8.2",
                             lo="8.2"))
        elif any(isinstance(e, ev.Configuration) for e in events):
            out.append(_item("vmdesc without configuration",
                             "vmdesc does not describe the configuration section ⇒ QEMU ≤ 8.1", hi="8.1"))
    return out


def _intersect(items: list[dict[str, Any]], lo: Version | None, hi: Version | None) -> tuple[
        Version | None, Version | None]:
    for it in items:
        if it["min"] is not None:
            v = _parse(it["min"])
            lo = v if lo is None or v > lo else lo
        if it["max"] is not None:
            v = _parse(it["max"])
            hi = v if hi is None or v < hi else hi
    return lo, hi


def provenance(migration: Any) -> dict[str, Any]:
    """``{"min", "max", "machine_type", "evidence", "certain", "conflict"}`` for a Migration.

    ``min``/``max`` (``"X.Y"`` or ``None`` for unbounded) intersect the certain bounds and the
    assumed ones that agree with them; ``certain`` is the range from certain bounds alone;
    ``conflict`` is true when certain bounds contradict each other (a hand-made stream).
    Each evidence item has ``feature``, ``min``, ``max``, ``certain`` and a human ``reason``.
    """
    items = evidence(migration)
    lo, hi = _intersect([i for i in items if i["certain"]], None, None)
    conflict = lo is not None and hi is not None and lo > hi
    c_lo, c_hi = lo, hi
    for it in items:
        if it["certain"] or conflict:
            continue
        n_lo, n_hi = _intersect([it], lo, hi)
        if n_lo is None or n_hi is None or n_lo <= n_hi:
            lo, hi = n_lo, n_hi
            it["used"] = True
        else:
            it["used"] = False
    return {
        "min": _fmt(lo),
        "max": _fmt(hi),
        "machine_type": migration.machine_type,
        "evidence": items,
        "certain": {"min": _fmt(c_lo), "max": _fmt(c_hi)},
        "conflict": conflict,
    }

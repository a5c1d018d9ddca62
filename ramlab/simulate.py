"""Simulate a QEMU migration: :func:`simulate` (notebooks) and ``ramlab simulate`` (CLI).

A guest (:mod:`ramlab.model.guest`) runs a workload (:mod:`ramlab.model.workloads`) while the
modelled sender (:mod:`ramlab.model.sender`) migrates it. The result has the same
:class:`~ramlab.trace.Trace` as a decoded capture (plus the dirty bitmaps and XBZRLE
unchanged/overflow classes), QEMU's counters per pass, and, with ``stream=True``, a complete
savevm stream that a real QEMU 7.2 loads: header and configuration, the RAM START/PART.../END
sections, then the template capture's device sections, EOF and vmdesc, spliced verbatim.

Why a template: a destination QEMU only accepts a stream whose RAM block list (VGA RAM,
ROMs, ACPI tables...) and device sections match its machine. The default template is the
bundled capture ``data/plain`` (``pc`` machine, QEMU 7.2); the simulated ``pc.ram`` gets the
requested size, every other block the template's size and final content.

Postcopy (``postcopy=True``, :mod:`ramlab.model.postcopy_sender`): after ``postcopy_after``
precopy passes the migration switches to postcopy; the result then also has the return path
(``return_path``: PONGs, page requests, SHUT) and ``postcopy`` (discard plans, the destination's
received map, the channels). ``hugepages=True`` gives the main block the name ``m0`` and 2 MiB
pages (host ratio 512), like the ``postcopy-hugepages`` capture, whose block list and device
sections are then the default template. ``postcopy_pause_after=K`` models a broken channel
and postcopy recovery: ``streams``/``return_paths`` hold the two channels, ``stream`` and
``return_path`` their concatenations (what ``ramlab.open`` decodes).

``max_passes`` bounds the passes as the trace counts them (see :mod:`ramlab.model.sender`): a
run forced to complete has exactly ``max_passes`` passes, the last one ``complete``.

    >>> r = simulate(ram="4M", workload="counters", xbzrle=True, cache_size="1M",
    ...              bandwidth="4M", template=False, seed=1)
    >>> r.converged, r.trace.pass_kinds[0], r.trace.pass_kinds[-1]
    (True, 'bulk', 'complete')
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ramlab import checks
from ramlab.data import shared_dir
from ramlab.errors import SimulationError
from ramlab.model.guest import HUGE_BLOCK, HUGE_PAGE_SIZE, MAIN_BLOCK, TARGET_PAGE_SIZE, Guest, memory_limit
from ramlab.model.postcopy_sender import PostcopyOutcome, PostcopyParams, PostcopySender, device_sections
from ramlab.model.sender import MAX_DOWNTIME_MS, MAX_PASSES, MigrationParams, RamSender
from ramlab.model.workloads import Workload, make_workload
from ramlab.trace import Trace
from ramlab.wire import events as ev

__all__ = ["SimulationResult", "simulate", "parse_size", "default_template"]

#: fallback template: the shared captures beside the repository ($RAMLAB_SHARED overrides)
SHARED_TEMPLATE = shared_dir() / "captures" / "precopy-plain"

#: columns of the per-pass table (trace counter names)
TABLE_COLUMNS = ("duplicate", "normal", "xbzrle_pages", "xbzrle_unchanged", "xbzrle_overflow",
                 "xbzrle_cache_miss", "compressed", "transferred", "dirty_sync_count", "remaining",
                 "cpu_throttle_percentage", "time_ms")
#: extra columns of postcopy runs
POSTCOPY_COLUMNS = ("discarded", "requested", "postcopy_requests")


def parse_size(value: int | float | str, name: str = "size") -> int:
    """``"64M"`` -> 67108864 (binary suffixes K, M, G, T, P; plain numbers are bytes).

    NaN, infinity, negative values, bools and sizes beyond 2**62 are a
    :class:`~ramlab.errors.SimulationError` naming ``name``.

    >>> parse_size("64M"), parse_size(4096), parse_size("1.5k")
    (67108864, 4096, 1536)
    """
    return checks.size(value, name, SimulationError)


def _check_arguments(a: dict[str, Any]) -> dict[str, Any]:
    """Every argument of :func:`simulate` checked and normalised in one place (types, NaN,
    infinity, ranges); the migration parameters are checked by ``MigrationParams.validate``."""
    E = SimulationError
    out = dict(a)
    for k in ("xbzrle", "compress", "auto_converge", "stream", "record_dirty", "postcopy", "hugepages",
              "release_ram"):
        out[k] = checks.flag(a[k], k, E)
    out["ram"] = parse_size(a["ram"], "ram")
    if out["ram"] < TARGET_PAGE_SIZE or out["ram"] % TARGET_PAGE_SIZE:
        raise E(f"ram must be a positive multiple of 4096 bytes, found {out['ram']}")
    out["cache_size"] = parse_size(a["cache_size"], "cache_size")
    out["bandwidth"] = parse_size(a["bandwidth"], "bandwidth")
    out["postcopy_bandwidth"] = parse_size(a["postcopy_bandwidth"], "postcopy_bandwidth")
    out["dirty_rate"] = None if a["dirty_rate"] is None else parse_size(a["dirty_rate"], "dirty_rate")
    out["downtime_ms"] = checks.number(a["downtime_ms"], "downtime_ms", E, min=0, max=MAX_DOWNTIME_MS)
    out["compress_level"] = checks.integer(a["compress_level"], "compress_level", E, min=0, max=9)
    out["max_passes"] = checks.integer(a["max_passes"], "max_passes", E, min=2, max=MAX_PASSES)
    out["seed"] = checks.integer(a["seed"], "seed", E, min=0, max=(1 << 128) - 1)
    out["postcopy_after"] = checks.integer(a["postcopy_after"], "postcopy_after", E, min=0)
    if a["postcopy_pause_after"] is not None:
        out["postcopy_pause_after"] = checks.integer(a["postcopy_pause_after"], "postcopy_pause_after", E, min=1)
    out["discard_algorithm"] = checks.choice(a["discard_algorithm"], "discard_algorithm", ("seed", "modern"), E)
    out["max_time_s"] = checks.number(a["max_time_s"], "max_time_s", E, min=0)
    out["max_pages"] = checks.integer(a["max_pages"], "max_pages", E, min=1)
    if not isinstance(a["workload"], str | Workload):
        raise E(f"workload must be a workload name or a Workload, found {checks.describe(a['workload'])}")
    _check_memory(out["ram"], out["max_passes"], out["record_dirty"])
    return out


def _check_memory(ram: int, max_passes: int, record_dirty: bool) -> None:
    """Refuse a run that could not be held: the guest's RAM (lazily backed, but a workload may
    touch all of it) plus the trace (per pass and page: class, wire bytes and the dirty bit)
    must fit in :func:`ramlab.model.guest.memory_limit` (80 % of the machine's memory)."""
    pages = ram // TARGET_PAGE_SIZE
    need = ram + pages * max_passes * (5 + int(record_dirty))
    limit = memory_limit()
    if need > limit:
        raise SimulationError(
            f"simulating {ram:,} bytes of RAM over up to {max_passes} passes needs about {need:,} bytes "
            f"(the guest plus {5 + int(record_dirty)} bytes per page per pass of trace); the limit is {limit:,} "
            f"bytes, 80% of this machine's memory: use a smaller ram or max_passes")


def default_template() -> Path | None:
    """The bundled ``data/plain`` capture, else the shared ``precopy-plain``, else None."""
    from ramlab.data import data_dir

    for p in (data_dir() / "plain", SHARED_TEMPLATE):
        if p.is_dir():
            return p
    return None


@dataclass
class SimulationResult:
    """A simulated migration: ``trace``, ``stream`` (bytes or None), ``events`` (None unless a
    stream was asked for), ``final_ram`` (``{block: flat uint8}`` at completion = what the
    destination must hold), ``counters`` (final, QEMU names), ``converged`` (False when
    ``max_passes`` forced the completion), ``params``, ``time_s`` (simulated seconds)."""

    trace: Trace
    stream: bytes | None
    events: list[ev.Event] | None
    final_ram: dict[str, np.ndarray]
    counters: dict[str, float]
    converged: bool
    params: dict[str, Any]
    time_s: float
    log: list[dict] = field(default_factory=list)
    return_path: bytes | None = None
    streams: list[bytes] | None = None
    return_paths: list[bytes] | None = None
    postcopy: PostcopyOutcome | None = None
    #: why precopy ended (see :class:`ramlab.model.sender.SenderResult`): "converged", "max_passes",
    #: "max_time_s", "max_pages" or "postcopy"
    reason: str = "converged"

    def pass_table(self) -> list[dict[str, Any]]:
        """One row per pass: kind and the per-pass counters of :data:`TABLE_COLUMNS`."""
        rows = []
        for i, kind in enumerate(self.trace.pass_kinds):
            row: dict[str, Any] = {"pass": i, "kind": kind}
            cols = TABLE_COLUMNS + (POSTCOPY_COLUMNS if self.postcopy is not None else ())
            for k in cols:
                if k in self.trace.counters:
                    row[k] = int(self.trace.counters[k][i])
            rows.append(row)
        return rows

    def format_table(self) -> str:
        """The per-pass table as fixed-width text (what ``ramlab simulate`` prints)."""
        rows = self.pass_table()
        if not rows:
            return "(no passes)"
        cols = list(rows[0])
        short = {"xbzrle_pages": "xbzrle", "postcopy_requests": "reqs", "discarded": "discard",
                 "requested": "req_pg", "xbzrle_unchanged": "xb_same", "xbzrle_overflow": "xb_ovfl",
                 "xbzrle_cache_miss": "xb_miss", "dirty_sync_count": "syncs", "cpu_throttle_percentage": "thr%",
                 "transferred": "bytes"}
        heads = [short.get(c, c) for c in cols]
        cells = [[str(r[c]) for c in cols] for r in rows]
        widths = [max(len(h), *(len(x[j]) for x in cells)) for j, h in enumerate(heads)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths))]
        lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    @property
    def status(self) -> str:
        """How the run ended, in words: converged, or which limit stopped it."""
        p = self.params
        return "converged" if self.converged else {
            "max_passes": f"did not converge in {p.get('max_passes')} passes",
            "max_time_s": f"stopped by the time budget ({p.get('max_time_s')} s simulated)",
            "max_pages": f"stopped by the page budget ({p.get('max_pages')} pages)",
            "postcopy": "switched to postcopy"}.get(self.reason, self.reason)

    def _repr_html_(self) -> str:
        rows = self.pass_table()
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in (rows[0] if rows else {}))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows
        )
        p = self.params
        status = self.status
        size = f", stream {len(self.stream):,} bytes" if self.stream is not None else ""
        return (
            f"<div><b>ramlab simulation</b>: {html.escape(str(p.get('workload')))} on "
            f"{p.get('ram', 0) >> 20} MiB, {p.get('bandwidth', 0) >> 20} MiB/s, {status}, "
            f"{self.time_s:.2f} s simulated{size}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )

    def save(self, path: str | os.PathLike[str], return_path: str | os.PathLike[str] | None = None) -> Path:
        """Write the stream (needs ``stream=True``) to ``path``, and the return path (postcopy)
        to ``return_path`` when given."""
        if self.stream is None:
            raise SimulationError("no stream: run simulate(..., stream=True)")
        p = Path(path)
        p.write_bytes(self.stream)
        if return_path is not None:
            if self.return_path is None:
                raise SimulationError("no return path: only postcopy runs have one")
            Path(return_path).write_bytes(self.return_path)
        return p


def _split_template(events: list[ev.Event]) -> tuple[list[ev.Event], list[ev.Event], int]:
    """(events before the RAM START section, events after the RAM END section, RAM section id)."""
    start = end = None
    sid = 2
    for i, e in enumerate(events):
        if isinstance(e, ev.SectionHeader) and e.idstr == "ram":
            if e.section_type == 1 and start is None:
                start, sid = i, e.section_id
            elif e.section_type == 3:
                end = i
    if start is None or end is None:
        raise SimulationError("the template has no RAM START/END sections (is it a precopy capture?)")
    j = end + 1
    while j < len(events) and not (isinstance(events[j], ev.SectionFooter) and events[j].section_id == sid):
        j += 1
    return list(events[:start]), list(events[j + 1 :]), sid


def _postcopy_template(events: list[ev.Event]) -> tuple[list[ev.Event], list[ev.Event], list[ev.Event], int]:
    """(header + configuration, device FULL sections, precopy epilogue, RAM section id) of any
    capture, precopy or postcopy (whose device sections sit inside the PACKAGED blob)."""
    pro, epi, sid = _split_template(events)
    pro = [e for e in pro if not isinstance(e, ev.Command)]
    devices = device_sections(events)
    if not any(isinstance(e, ev.DeviceState) for e in epi):
        epi = [*devices, ev.EndOfFile()]
    return pro, devices, epi, sid


def _as_migration(template: object):  # type: ignore[no-untyped-def]
    """A template or replay capture: a :class:`~ramlab.Migration`, or what :func:`ramlab.open` takes."""
    from ramlab.migration import Migration
    from ramlab.migration import open as open_migration

    if isinstance(template, Migration):
        return template
    if isinstance(template, str | os.PathLike | bytes | bytearray | memoryview):
        return open_migration(template)
    raise SimulationError(f"cannot use {type(template).__name__} as a template capture")


def default_hugepage_template() -> Path | None:
    """The bundled ``data/postcopy-hugepages`` capture (block ``m0`` in 2 MiB pages), else None."""
    from ramlab.data import data_dir

    p = data_dir() / "postcopy-hugepages"
    return p if p.is_dir() else None


def _bare_prologue() -> list[ev.Event]:
    name = b"pc-i440fx-7.2"
    body = len(name).to_bytes(4, "big") + name
    return [ev.FileHeader(3), ev.Configuration("pc-i440fx-7.2", body)]


def simulate(
    ram: int | str = "64M",
    workload: str = "hotset",
    xbzrle: bool = False,
    cache_size: int | str = "64M",
    compress: bool = False,
    compress_level: int = 1,
    bandwidth: int | str = "32M",
    downtime_ms: float = 300,
    auto_converge: bool = False,
    max_passes: int = 30,
    seed: int = 0,
    template: Any = None,
    stream: bool = False,
    dirty_rate: int | str | None = None,
    record_dirty: bool = True,
    postcopy: bool = False,
    postcopy_after: int = 1,
    hugepages: bool = False,
    discard_algorithm: str = "seed",
    postcopy_bandwidth: int | str = 0,
    release_ram: bool = False,
    postcopy_pause_after: int | None = None,
    max_time_s: float = 1200.0,
    max_pages: int = 1 << 24,
    **workload_params: Any,
) -> SimulationResult:
    """Simulate migrating a guest of ``ram`` bytes running ``workload``.

    ``bandwidth`` is ``max-bandwidth`` (bytes/s), ``downtime_ms`` ``downtime-limit``;
    ``xbzrle``/``cache_size``, ``compress``/``compress_level`` and ``auto_converge`` are the
    capabilities and their parameters. ``dirty_rate`` (bytes/s) and ``workload_params`` go to
    the workload (:func:`ramlab.model.workloads.make_workload`). ``template``: capture folder,
    stream path, bytes or :class:`~ramlab.Migration` giving the block list and device
    sections (``None``: :func:`default_template`, an error when there is none; ``False``: a
    bare guest with only ``pc.ram`` and no device sections, which QEMU cannot load). ``stream=True`` also builds
    the savevm stream. Deterministic for a given ``seed``.

    ``max_passes``: the most passes the trace may have (the completion pass included, 2..1000);
    when precopy does not converge, the run is forced to complete with exactly that many.
    ``max_time_s`` (simulated seconds) and ``max_pages`` (pages handled) are budgets: past either,
    precopy is forced to complete (postcopy: the rate limit is lifted), so a hopeless run ends
    quickly with ``converged=False`` and ``reason`` naming the budget.

    Arguments are checked before anything runs: sizes are bytes or strings like ``"64M"``; NaN,
    infinity, negative numbers, bools for numbers and non-bools for flags are a
    :class:`~ramlab.errors.SimulationError`, as are ``downtime_ms`` above QEMU's 2 000 000 and a
    run whose guest and trace (about ``ram`` + 6 bytes per page per pass) would not fit in 80 % of
    the machine's memory. An XBZRLE ``cache_size`` larger than the guest is accepted (QEMU >= 2.11
    does) but only the cache slots the guest can use are kept.

    Postcopy: ``postcopy`` turns on ``postcopy-ram``; the switch comes after ``postcopy_after``
    precopy passes (trace count; 0 = at once), unless precopy converges first.
    ``discard_algorithm`` is ``"seed"`` (QEMU ~3.0) or ``"modern"`` (QEMU >= 4.2);
    ``postcopy_bandwidth`` is ``max-postcopy-bandwidth`` (0: the link, ``bandwidth``);
    ``release_ram`` the ``release-ram`` capability; ``postcopy_pause_after`` pauses postcopy
    after that many pages and recovers (two channels). ``hugepages``: main block ``m0`` in
    2 MiB pages (``ram`` must be a multiple of 2 MiB).

        >>> r = simulate(ram="8M", workload="uniform", dirty_rate="16M", bandwidth="8M", template=False,
        ...              postcopy=True, postcopy_after=1, postcopy_bandwidth="2M", stream=True)
        >>> r.trace.pass_kinds[:2], r.counters["requested"] > 0, r.return_path[-8:].hex()
        (['bulk', 'postcopy'], True, '0001000400000000')
    """
    a = _check_arguments(locals())
    ram_b, rate = a["ram"], a["dirty_rate"]
    xbzrle, compress, auto_converge, stream, record_dirty = (a[k] for k in (
        "xbzrle", "compress", "auto_converge", "stream", "record_dirty"))
    postcopy, hugepages, release_ram, seed = a["postcopy"], a["hugepages"], a["release_ram"], a["seed"]
    postcopy_after, postcopy_pause_after, discard_algorithm = (a[k] for k in (
        "postcopy_after", "postcopy_pause_after", "discard_algorithm"))
    params = MigrationParams(
        bandwidth=a["bandwidth"], downtime_limit_ms=a["downtime_ms"], xbzrle=xbzrle,
        xbzrle_cache_size=a["cache_size"], compress=compress, compress_level=a["compress_level"],
        auto_converge=auto_converge, max_passes=a["max_passes"], max_time_s=a["max_time_s"],
        max_pages=a["max_pages"],
    ).validate()
    if template is None:
        template = (default_hugepage_template() if hugepages else None) or default_template()
        if template is None:
            raise SimulationError(
                "no template capture: the bundled data/plain is missing (RAMLAB_DATA points elsewhere?); "
                "pass template=PATH, or template=False for a bare guest (pc.ram only) that QEMU cannot load")
    prologue: list[ev.Event]
    epilogue: list[ev.Event]
    devices: list[ev.Event] = []
    sid = 2
    tname = None
    if hugepages and ram_b % HUGE_PAGE_SIZE:
        raise SimulationError("with hugepages the RAM size must be a multiple of 2 MiB")
    if template is None or template is False:
        guest = (Guest.from_sizes([(HUGE_BLOCK, ram_b, HUGE_PAGE_SIZE)]) if hugepages
                 else Guest.from_sizes([(MAIN_BLOCK, ram_b)]))
        prologue, epilogue = _bare_prologue(), [ev.EndOfFile()]
    else:
        mig = _as_migration(template)
        tname = getattr(mig, "name", None)
        if mig.destination is None:
            raise SimulationError(f"template {tname!r} has no RAM block list (MEM_SIZE)")
        guest = Guest.from_template(mig.destination, ram_b, hugepages=hugepages)
        if postcopy or hugepages or any(b.name == HUGE_BLOCK for b in mig.blocks):
            prologue, devices, epilogue, sid = _postcopy_template(mig.events)
        else:
            prologue, epilogue, sid = _split_template(mig.events)
    if "block" not in workload_params and guest.main.name != MAIN_BLOCK:
        workload_params["block"] = guest.main.name
    if workload == "replay" and "capture" not in workload_params:
        if template is None or template is False:
            raise SimulationError("the replay workload needs capture=... (or a template capture to replay)")
        workload_params["capture"] = mig  # replay the template's own passes
    if workload == "replay" and not isinstance(workload_params["capture"], Trace):
        workload_params["capture"] = _as_migration(workload_params["capture"]).trace
    rng = np.random.default_rng(seed)
    wl = make_workload(workload, rate, seed=rng, **workload_params)
    wl.attach(guest)
    meta = {"name": f"simulate {getattr(wl, 'name', workload)}", "template": tname, "seed": seed}
    outcome: PostcopyOutcome | None = None
    if postcopy:
        pcp = PostcopyParams(after_passes=postcopy_after, discard_algorithm=discard_algorithm,  # type: ignore
                             bandwidth=a["postcopy_bandwidth"], release_ram=release_ram,
                             pause_after=postcopy_pause_after, device_events=devices)
        psender = PostcopySender(guest, wl, params, pcp, prologue=prologue, epilogue=epilogue, emit=stream,
                                 record_dirty=record_dirty, ram_section_id=sid, meta=meta)
        outcome = psender.run()
        res = outcome.result
        caps = res.trace.meta.setdefault("capabilities", [])
        caps += ["postcopy-ram"] + (["release-ram"] if release_ram else [])
    else:
        if release_ram or postcopy_pause_after is not None:
            raise SimulationError("release_ram and postcopy_pause_after need postcopy=True")
        sender = RamSender(guest, wl, params, prologue=prologue, epilogue=epilogue, emit=stream,
                           record_dirty=record_dirty, ram_section_id=sid, meta=meta)
        res = sender.run()
    data = None
    if stream:
        from ramlab.wire.encoder import encode_events

        data = outcome.stream if outcome is not None else b"".join(encode_events(res.events))
    info = {"ram": ram_b, "workload": getattr(wl, "name", workload), "xbzrle": params.xbzrle,
            "cache_size": params.xbzrle_cache_size, "compress": params.compress,
            "compress_level": params.compress_level, "bandwidth": params.bandwidth,
            "downtime_ms": params.downtime_limit_ms, "auto_converge": params.auto_converge,
            "max_passes": params.max_passes, "max_time_s": params.max_time_s, "max_pages": params.max_pages,
            "seed": seed, "dirty_rate": wl.dirty_rate, "template": tname,
            "postcopy": postcopy, "hugepages": hugepages, "reason": res.reason,
            **({"postcopy_after": postcopy_after, "discard_algorithm": discard_algorithm,
                "postcopy_bandwidth": a["postcopy_bandwidth"], "release_ram": release_ram,
                "postcopy_pause_after": postcopy_pause_after, "switched": outcome.switched}
               if outcome is not None else {}),
            **workload_params}
    res.trace.meta.update({k: v for k, v in info.items() if isinstance(v, int | float | str | bool | None)})
    if outcome is None:
        return SimulationResult(res.trace, data, res.events if stream else None, res.final_ram, res.counters,
                                res.converged, info, res.time_s, res.log, reason=res.reason)
    return SimulationResult(res.trace, data, res.events if stream else None, res.final_ram, res.counters,
                            res.converged, info, res.time_s, res.log,
                            return_path=outcome.return_path, streams=list(outcome.streams) if stream else None,
                            return_paths=list(outcome.return_paths), postcopy=outcome, reason=res.reason)

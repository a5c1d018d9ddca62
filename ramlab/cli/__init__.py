"""The ``ramlab`` command line.

    ramlab inspect STREAM... [--json] [--return-path FILE]
    ramlab extract STREAM... -o DIR
    ramlab dump STREAM... [--json] [--vmdesc FILE]
    ramlab reencode STREAM... -o OUT
    ramlab simulate --ram 256M --workload hotset --xbzrle --cache-size 16M --bandwidth 100M -o out.mig
    ramlab report STREAM... -o report.html
    ramlab capture OUT_DIR [options]

Several STREAM arguments are the channels of one migration, main channel first. With no
STREAM, ``inspect`` reads the bundled capture ``data/plain``. Inputs ending in ``.zst`` are
decompressed transparently. Exit status: 0 on success, 1 when the stream is damaged
(everything before the damage is still reported), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ramlab.errors import RamlabError


def _size(text: str) -> int:
    """Parse sizes like ``256M``, ``4k``, ``1G``, ``4096`` (argparse type)."""
    from ramlab.errors import SimulationError
    from ramlab.simulate import parse_size

    try:
        return parse_size(text)
    except SimulationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ramlab.migration import open as open_migration

    streams = args.streams or [_default_stream()]
    return open_migration(
        streams[0], *streams[1:], return_path=getattr(args, "return_path", None),
        memmap_dir=getattr(args, "memmap_dir", None),
        progress=not getattr(args, "quiet", False) and sys.stderr.isatty(),
    )


def _default_stream() -> str:
    from ramlab.data import data_path

    return str(data_path("plain"))


def _report_error(m) -> int:  # type: ignore[no-untyped-def]
    if m.error is not None:
        print(f"ramlab: error: {m.error}", file=sys.stderr)
        return 1
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    m = _open(args)
    s = m.summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return _report_error(m)
    print(f"{s['name']}: {s['stream_bytes']:,} bytes, machine {s['machine_type']}, "
          f"target page {s['target_page_size']}")
    print("RAM blocks:")
    for b in s["blocks"]:
        print(f"  {b['name']:<28} {b['length']:>12,} bytes  page {b['page_size']}")
    r = s["records"]
    print(f"records: {r['zero']:,} zero, {r['page']:,} page, {r['xbzrle']:,} xbzrle, "
          f"{r['compressed']:,} compressed")
    print(f"sections: {s['sections']}  commands: {s['commands'] or 'none'}  devices: {s['devices']}")
    if s["channels"]:
        print(f"multifd channels: {s['channels']}")
    if s["discards"] or s["page_requests"]:
        print(f"postcopy: {s['discards']} discard ranges ({s['discarded_pages']} pages), "
              f"{s['page_requests']} page requests")
    t = m.trace
    counts = t.class_counts()
    from ramlab.trace import PageClass

    print(f"passes: {t.n_passes}")
    print(f"  {'pass':>4} {'kind':<9} {'zero':>8} {'normal':>8} {'xbzrle':>8} {'compr':>8} {'bytes':>12}")
    for i in range(t.n_passes):
        normal = counts[i, PageClass.NORMAL] + counts[i, PageClass.POSTCOPY] + counts[i, PageClass.REQUESTED]
        print(f"  {i:>4} {t.pass_kinds[i]:<9} {counts[i, PageClass.ZERO]:>8} {normal:>8} "
              f"{counts[i, PageClass.XBZRLE]:>8} {counts[i, PageClass.COMPRESSED]:>8} "
              f"{int(t.bytes_per_pass()[i]):>12,}")
    prov = s.get("provenance")
    if prov:
        lo, hi = prov.get("min") or "?", prov.get("max")
        print(f"written by: QEMU {lo}" + (f" .. {hi}" if hi else " or newer")
              + f" (machine type {prov.get('machine_type')})")
        for item in prov.get("evidence", []):
            mark = "" if item.get("certain", True) else " (assumed)"
            print(f"  - {item['reason']}{mark}")
    print("status: complete" if s["complete"] else f"status: DAMAGED: {s['error']}")
    return _report_error(m)


def cmd_extract(args: argparse.Namespace) -> int:
    m = _open(args)
    if m.destination is None:
        print(f"ramlab: error: no RAM block list decoded: {m.error}", file=sys.stderr)
        return 1
    for p in m.extract(args.output):
        print(p)
    return _report_error(m)


def cmd_dump(args: argparse.Namespace) -> int:
    m = _open(args)
    vmdesc = json.loads(Path(args.vmdesc).read_text()) if args.vmdesc else None
    state = m.device_state(vmdesc)
    print(json.dumps(state, indent=4))
    return _report_error(m)


def cmd_reencode(args: argparse.Namespace) -> int:
    from ramlab.wire.encoder import encode_events

    m = _open(args)
    if m.error is not None:
        print(f"ramlab: error: cannot re-encode a damaged stream: {m.error}", file=sys.stderr)
        return 1
    out = Path(args.output)
    with out.open("wb") as fh:
        for chunk in encode_events(m.events, page_size=m.page_size):
            fh.write(chunk)
    if len(m.channel_data):
        from ramlab.wire.multifd import MultifdChannelEncoder

        for i, packets in enumerate(m.multifd_packets):
            p = out.with_name(f"{out.name}.channel-{i + 1}")
            p.write_bytes(MultifdChannelEncoder(page_size=m.page_size).encode_events(packets))
            print(p)
    print(out)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ramlab.cli.simulate import simulate_cli

    return simulate_cli(args)


def cmd_report(args: argparse.Namespace) -> int:
    from ramlab.report import write_report

    m = _open(args)
    write_report(m, args.output)
    print(args.output)
    return _report_error(m)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ramlab", description="See QEMU live migration.")
    sub = parser.add_subparsers(dest="command", required=True)

    def streams(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("streams", nargs="+" if required else "*", metavar="STREAM",
                       help="migration stream(s): main channel first, then multifd channels")
        p.add_argument("--return-path", metavar="FILE", help="postcopy return path (destination -> source)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.add_argument("--memmap-dir", metavar="DIR",
                       help="keep RAM blocks of 1 GiB or more in np.memmap files in DIR (guests larger than memory)")

    p = sub.add_parser("inspect", help="summarise a stream")
    streams(p, required=False)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("extract", help="write the final content of each RAM block")
    streams(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("dump", help="device state as analyze-migration.py -d state")
    streams(p)
    p.add_argument("--json", action="store_true", help="JSON output (the default and only format)")
    p.add_argument("--vmdesc", metavar="FILE", help="vmdesc JSON for streams without a trailer")
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("reencode", help="write the stream again from its decoded events")
    streams(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.set_defaults(func=cmd_reencode)

    p = sub.add_parser("report", help="standalone HTML report")
    streams(p)
    p.add_argument("-o", "--output", required=True, metavar="HTML")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("simulate", help="simulate a migration and write its stream")
    p.add_argument("--ram", type=_size, default=_size("64M"))
    p.add_argument("--workload", default="hotset")
    p.add_argument("--xbzrle", action="store_true")
    p.add_argument("--cache-size", type=_size, default=_size("64M"))
    p.add_argument("--compress", action="store_true")
    p.add_argument("--compress-level", type=int, default=1)
    p.add_argument("--bandwidth", type=_size, default=_size("32M"), help="max-bandwidth in bytes/s")
    p.add_argument("--downtime-ms", type=float, default=300.0)
    p.add_argument("--dirty-rate", type=_size, default=None, help="bytes/s the workload dirties")
    p.add_argument("--auto-converge", action="store_true")
    p.add_argument("--max-passes", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", metavar="STREAM", help="capture whose device sections are spliced in")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", default=[],
                   help="workload parameter, repeatable (e.g. --param hot_fraction=0.1 --param fill=1)")
    p.add_argument("--postcopy", action="store_true", help="postcopy-ram: switch to postcopy")
    p.add_argument("--postcopy-after", type=int, default=1, metavar="N",
                   help="precopy passes before the switch to postcopy (default 1)")
    p.add_argument("--hugepages", action="store_true", help="main block m0 in 2 MiB huge pages")
    p.add_argument("--discard-algorithm", choices=("seed", "modern"), default="seed",
                   help="postcopy discard planning: seed (QEMU ~3.0) or modern (QEMU >= 4.2)")
    p.add_argument("--postcopy-bandwidth", type=_size, default=0,
                   help="max-postcopy-bandwidth in bytes/s (0: as --bandwidth)")
    p.add_argument("--release-ram", action="store_true", help="release-ram capability (postcopy)")
    p.add_argument("--postcopy-pause-after", type=int, default=None, metavar="PAGES",
                   help="break the channel after PAGES postcopy pages and recover")
    p.add_argument("--return-path", metavar="FILE", help="postcopy: where to write the return path "
                   "(default OUT.ret)")
    p.add_argument("-o", "--output", metavar="OUT")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("capture", help="record a real QEMU migration (needs qemu-system-x86_64)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ramlab`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "capture":
        from ramlab.capture.run import capture_main

        return capture_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RamlabError as exc:
        print(f"ramlab: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())

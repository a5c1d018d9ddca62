"""The ``ramlab`` command line (also ``python -m ramlab``).

    ramlab inspect [STREAM...] [--json] [--return-path FILE]
    ramlab extract STREAM... -o DIR [--force]
    ramlab dump STREAM... [--vmdesc FILE]
    ramlab reencode STREAM... -o OUT [--force]
    ramlab report STREAM... -o report.html [--force]
    ramlab simulate --ram 256M --workload hotset --xbzrle --cache-size 16M --bandwidth 100M -o out.mig
    ramlab notebooks DIR [--force]
    ramlab capture OUT_DIR [options]
    ramlab watch [capture options] [--json] [-o DIR]

Several STREAM arguments are the channels of one migration, main channel first. With no
STREAM, ``inspect`` reads the bundled capture ``plain``. ``-`` reads standard input; ``.zst``
input (by file name or by magic number, standard input too) is decompressed transparently.
Exit status: 0 on success, 1 when the input is damaged or unreadable (everything before the
damage is still reported), 2 on bad usage (unknown option, bad value, an output that exists
without ``--force``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ramlab.cli.args import (
    EXIT_DAMAGED,
    EXIT_OK,
    EXIT_USAGE,
    STDIN,
    UsageError,
    check_output_dir,
    check_output_file,
    count_arg,
    positive_float_arg,
    size_arg,
    stdin_bytes,
    writing,
)
from ramlab.errors import RamlabError

__all__ = ["main", "build_parser"]


def _source(arg: str):  # type: ignore[no-untyped-def]
    return stdin_bytes() if arg == STDIN else arg


def _open(args: argparse.Namespace, images=None):  # type: ignore[no-untyped-def]
    """``ramlab.open`` on the command's inputs; ``images``: where the RAM images go (default: memory)."""
    from ramlab.migration import open as open_migration

    streams = args.streams or [_default_stream()]
    return_path = getattr(args, "return_path", None)
    if [*streams, return_path].count(STDIN) > 1:
        raise UsageError("only one input can be '-' (standard input)")
    sources = [_source(s) for s in streams]
    m = open_migration(
        sources[0], *sources[1:], return_path=_source(return_path) if return_path else None,
        memmap_dir=getattr(args, "memmap_dir", None),
        progress=not getattr(args, "quiet", False) and sys.stderr.isatty(),
        images=images,
    )
    if streams[0] == STDIN:
        m.name = "<stdin>"
    return m


def _default_stream() -> str:
    from ramlab.data import data_path

    return str(data_path("plain"))


def _report_error(m) -> int:  # type: ignore[no-untyped-def]
    if m.error is not None:
        print(f"ramlab: error: {m.error}", file=sys.stderr)
        return EXIT_DAMAGED
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from ramlab.model.destination import Images

    m = _open(args, images=Images(keep=False))  # a summary needs no RAM images: none are built
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
    print(f"passes: {s['passes']}")
    print(f"  {'pass':>4} {'kind':<9} {'zero':>8} {'normal':>8} {'xbzrle':>8} {'compr':>8} {'bytes':>12}")
    for p in s["per_pass"]:
        n = p["pages"]
        normal = n["normal"] + n["postcopy"] + n["requested"]
        print(f"  {p['index']:>4} {p['kind']:<9} {n['zero']:>8} {normal:>8} {n['xbzrle']:>8} "
              f"{n['compressed']:>8} {p['record_bytes']:>12,}")
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
    from ramlab.model.destination import Images

    check_output_dir(args.output, args.force)
    with writing(args.output):
        Path(args.output).mkdir(parents=True, exist_ok=True)
        m = _open(args, images=Images.files(args.output))  # the loader writes straight into the files
    if m.destination is None:
        print(f"ramlab: error: no RAM block list decoded: {m.error}", file=sys.stderr)
        return EXIT_DAMAGED
    with writing(args.output):
        paths = m.extract(args.output)
    for p in paths:
        print(p)
    return _report_error(m)


def _read_vmdesc(path: str) -> dict:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise RamlabError(f"cannot read --vmdesc {path}: {exc.strerror or exc}") from exc
    try:
        desc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RamlabError(f"--vmdesc {path}: not a vmdesc JSON document ({exc})") from exc
    if not isinstance(desc, dict) or not isinstance(desc.get("devices"), list):
        raise RamlabError(f"--vmdesc {path}: not a vmdesc (expected a JSON object with a 'devices' list)")
    return desc


def cmd_dump(args: argparse.Namespace) -> int:
    vmdesc = _read_vmdesc(args.vmdesc) if args.vmdesc else None
    m = _open(args)
    if vmdesc is None and m.vmdesc is None and m.error is not None:
        print(f"ramlab: error: cannot dump the device state of a damaged stream: {m.error}", file=sys.stderr)
        return EXIT_DAMAGED
    try:
        state = m.device_state(vmdesc)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise RamlabError(f"the vmdesc does not describe this stream's devices: {exc!r}") from exc
    print(json.dumps(state, indent=4))
    return _report_error(m)


def cmd_reencode(args: argparse.Namespace) -> int:
    from ramlab.wire.encoder import encode_events

    out = check_output_file(args.output, args.force)
    m = _open(args)
    if m.error is not None:
        print(f"ramlab: error: cannot re-encode a damaged stream: {m.error}", file=sys.stderr)
        return EXIT_DAMAGED
    channel_paths = [out.with_name(f"{out.name}.channel-{i + 1}") for i in range(len(m.multifd_packets))]
    for p in channel_paths:
        check_output_file(p, args.force, option="channel file")
    with writing(out), out.open("wb") as fh:
        for chunk in encode_events(m.events, page_size=m.page_size):
            fh.write(chunk)
    if len(m.channel_data):
        from ramlab.wire.multifd import MultifdChannelEncoder

        for p, packets in zip(channel_paths, m.multifd_packets):
            with writing(p):
                p.write_bytes(MultifdChannelEncoder(page_size=m.page_size).encode_events(packets))
            print(p)
    print(out)
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from ramlab.cli.simulate import simulate_cli
    from ramlab.errors import SimulationError

    if args.output:
        check_output_file(args.output, args.force)
        if args.postcopy:
            check_output_file(args.return_path or f"{args.output}.ret", args.force, option="--return-path")
    elif args.return_path:
        raise UsageError("--return-path needs -o OUT (the stream it belongs to)")
    try:
        with writing(args.output or "the output"):
            return simulate_cli(args)
    except SimulationError as exc:
        raise UsageError(str(exc)) from exc


def cmd_report(args: argparse.Namespace) -> int:
    from ramlab.report import write_report

    check_output_file(args.output, args.force)
    m = _open(args)
    with writing(args.output):
        write_report(m, args.output)
    print(args.output)
    return _report_error(m)


def cmd_notebooks(args: argparse.Namespace) -> int:
    from ramlab.cli.notebooks import copy_notebooks

    for p in copy_notebooks(args.directory, force=args.force):
        print(p)
    return EXIT_OK


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples printed as written; meaningful defaults shown after the help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if d in (None, False, [], argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: {d})"


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``ramlab`` argument parser (``capture`` has its own, in :mod:`ramlab.capture.run`)."""
    from ramlab import __version__
    from ramlab.model.workloads import WORKLOADS

    parser = argparse.ArgumentParser(
        prog="ramlab", formatter_class=_Formatter,
        description="See QEMU live migration: decode, check, re-encode and simulate QEMU's RAM migration stream.",
        epilog=_examples(
            "ramlab inspect                          # the bundled capture 'plain'",
            "ramlab inspect my-capture/ --json       # a capture folder, as JSON",
            "zstd -dc stream.bin.zst | ramlab inspect -",
            "ramlab simulate --ram 64M --xbzrle -o sim.mig",
            "ramlab notebooks ~/ramlab-notebooks      # copy the course notebooks",
        ) + "\n\nexit status: 0 ok, 1 damaged or unreadable input, 2 bad usage. "
            "'ramlab COMMAND -h' describes a command.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"ramlab {__version__}",
                        help="print ramlab's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, examples: Sequence[str]) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".",
                              epilog=_examples(*examples), formatter_class=_Formatter)

    def streams(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("streams", nargs="+" if required else "*", metavar="STREAM",
                       help="migration stream file (.zst ok), capture folder, or '-' for standard input; "
                            "several: main channel first, then the multifd channels"
                            + ("" if required else " (default: the bundled capture 'plain')"))
        p.add_argument("--return-path", metavar="FILE",
                       help="postcopy return path (destination -> source), '-' for standard input")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.add_argument("--memmap-dir", metavar="DIR",
                       help="keep RAM blocks of 1 GiB or more in np.memmap files in DIR (guests larger than memory)")

    def force(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("-f", "--force", action="store_true", help=f"overwrite {what}")

    p = command("inspect", "summarise a stream: blocks, records, passes, provenance", [
        "ramlab inspect",
        "ramlab inspect stream.bin.zst --json",
        "ramlab inspect channel-0.bin channel-1.bin channel-2.bin",
        "ramlab inspect fwd-0.bin --return-path ret-0.bin",
        "ramlab inspect - --json < stream.bin.zst",
    ])
    streams(p, required=False)
    p.add_argument("--json", action="store_true",
                   help="one JSON object (schema: ramlab/schemas/inspect.schema.json)")
    p.set_defaults(func=cmd_inspect)

    p = command("extract", "write the final content of each RAM block as DIR/<block>.bin", [
        "ramlab extract stream.bin.zst -o ram/",
        "ramlab extract big.mig -o ram/        # pages go straight into sparse files: no image in memory",
    ])
    streams(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output directory: created (its parent must exist), or empty")
    force(p, "files in a non-empty DIR")
    p.set_defaults(func=cmd_extract)

    p = command("dump", "print the device state as QEMU's analyze-migration.py -d state does", [
        "ramlab dump stream.bin.zst",
        "ramlab dump fwd-0.bin --vmdesc vmdesc.json   # postcopy streams carry no vmdesc",
    ])
    streams(p)
    p.add_argument("--json", action="store_true", help="JSON output (the default and only format)")
    p.add_argument("--vmdesc", metavar="FILE",
                   help="vmdesc JSON (from a precopy capture of the same machine) for streams without a trailer")
    p.set_defaults(func=cmd_dump)

    p = command("reencode", "write the stream again from its decoded events (byte-identical)", [
        "ramlab reencode stream.bin -o again.bin && cmp stream.bin again.bin",
        "ramlab reencode channel-0.bin channel-1.bin -o out.bin   # + out.bin.channel-1",
    ])
    streams(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output stream; multifd channels go to OUT.channel-N")
    force(p, "existing output files")
    p.set_defaults(func=cmd_reencode)

    p = command("report", "write a standalone HTML report (no server, no network)", [
        "ramlab report stream.bin.zst -o report.html",
    ])
    streams(p)
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="output HTML file")
    force(p, "an existing HTML file")
    p.set_defaults(func=cmd_report)

    p = command("simulate", "simulate a migration, print its passes and write its stream", [
        "ramlab simulate --ram 256M --workload hotset --xbzrle --cache-size 16M --bandwidth 100M -o out.mig",
        "ramlab simulate --ram 64M --postcopy --postcopy-after 2 --hugepages -o pc.mig   # + pc.mig.ret",
        "ramlab simulate --workload uniform --dirty-rate 64M --auto-converge",
        "ramlab simulate --param hot_fraction=0.1 --param fill=1",
    ])
    p.add_argument("--ram", type=size_arg, default="64M", metavar="SIZE", help="guest RAM (pc.ram, or m0)")
    p.add_argument("--workload", default="hotset", choices=sorted(WORKLOADS),
                   help="what the guest does while it migrates")
    p.add_argument("--xbzrle", action="store_true", help="xbzrle capability")
    p.add_argument("--cache-size", type=size_arg, default="64M", metavar="SIZE", help="xbzrle-cache-size")
    p.add_argument("--compress", action="store_true", help="compress capability (zlib pages)")
    p.add_argument("--compress-level", type=int, default=1, choices=range(10), metavar="0-9",
                   help="compress-level (zlib)")
    p.add_argument("--bandwidth", type=size_arg, default="32M", metavar="SIZE", help="max-bandwidth in bytes/s")
    p.add_argument("--downtime-ms", type=positive_float_arg, default=300.0, metavar="MS",
                   help="downtime-limit in milliseconds")
    p.add_argument("--dirty-rate", type=size_arg, default=None, metavar="SIZE",
                   help="bytes/s the workload dirties (default: the workload's own)")
    p.add_argument("--auto-converge", action="store_true", help="auto-converge capability (CPU throttling)")
    p.add_argument("--max-passes", type=count_arg, default=30, metavar="N",
                   help="force completion after N passes (the completion pass included)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the run is deterministic for a seed)")
    p.add_argument("--template", metavar="STREAM",
                   help="capture whose block list and device sections are used (default: the bundled 'plain', "
                        "or 'postcopy-hugepages' with --hugepages)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", default=[],
                   help="workload parameter, repeatable (e.g. --param hot_fraction=0.1 --param fill=1)")
    p.add_argument("--postcopy", action="store_true", help="postcopy-ram: switch to postcopy")
    p.add_argument("--postcopy-after", type=count_arg, default=1, metavar="N",
                   help="precopy passes before the switch to postcopy")
    p.add_argument("--hugepages", action="store_true", help="main block m0 in 2 MiB huge pages")
    p.add_argument("--discard-algorithm", choices=("seed", "modern"), default="seed",
                   help="postcopy discard planning: seed (QEMU ~3.0) or modern (QEMU >= 4.2)")
    p.add_argument("--postcopy-bandwidth", type=size_arg, default="0", metavar="SIZE",
                   help="max-postcopy-bandwidth in bytes/s (0: as --bandwidth)")
    p.add_argument("--release-ram", action="store_true", help="release-ram capability (postcopy)")
    p.add_argument("--postcopy-pause-after", type=count_arg, default=None, metavar="PAGES",
                   help="break the channel after PAGES postcopy pages and recover")
    p.add_argument("--return-path", metavar="FILE", help="postcopy: where to write the return path "
                   "(default: OUT.ret)")
    p.add_argument("-o", "--output", metavar="OUT", help="write the simulated stream to OUT (QEMU loads it)")
    force(p, "existing output files")
    p.set_defaults(func=cmd_simulate)

    p = command("notebooks", "copy the course notebooks into a directory", [
        "ramlab notebooks ramlab-notebooks && jupyter lab ramlab-notebooks/00-tour.ipynb",
    ])
    p.add_argument("directory", metavar="DIR", help="where to copy them (created if its parent exists)")
    force(p, "notebooks of the same names in DIR")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("capture", help="record a real QEMU migration (needs qemu-system-x86_64; "
                                       "'ramlab capture -h' for its options)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=None)
    p = sub.add_parser("watch", help="migrate the test guest in QEMU and print each pass as it completes "
                                     "('ramlab watch -h' for its options)", add_help=False,
                       epilog=_examples("ramlab watch --ram 16M --xbzrle --json -o my-capture",
                                        "ramlab watch --replay my-capture --speed 2"))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="ramlab capture's options, --json, -o DIR, --replay DIR")
    return parser


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "capture":
        from ramlab.capture.run import capture_main

        return capture_main(argv[1:])
    if argv and argv[0] == "watch":
        from ramlab.cli.watch import watch_main

        return watch_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"ramlab {args.command}: error: {exc}\n")
    except RamlabError as exc:
        print(f"ramlab: error: {exc}", file=sys.stderr)
    except BrokenPipeError:
        raise
    except MemoryError:
        print("ramlab: error: out of memory (a smaller size, or --memmap-dir for large guests)", file=sys.stderr)
    except OSError as exc:
        if exc.errno == 12:  # ENOMEM from mmap
            print(f"ramlab: error: out of memory ({exc.strerror}): try a smaller size", file=sys.stderr)
        else:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"ramlab: error: {where}{exc.strerror or exc}", file=sys.stderr)
    return EXIT_DAMAGED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ramlab`` console script and ``python -m ramlab``; returns the exit status."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: -h, --version (0) and usage errors (2)
        return EXIT_OK if exc.code is None else exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except BrokenPipeError:  # `ramlab inspect | head`: stop quietly, as other filters do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

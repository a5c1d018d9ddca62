"""``ramlab watch``: migrate the test guest in a real QEMU and print each pass as it completes.

Takes ``ramlab capture``'s options (without ``OUT_DIR``) and prints one line per pass while QEMU
migrates — text, or JSON lines with ``--json``::

    {"pass": 0, "kind": "bulk", "t": 1.02, "pages": {"zero": 7793, "normal": 545, "xbzrle": 0,
     "compressed": 0}, "bytes": 2306944, "decoded_at": 1.03, "qemu": {"status": "active",
     "ram.dirty-sync-count": 2, "ram.remaining": 1613824, ...}}

``t``: seconds since ``migrate`` when the pass was complete on the wire (the chunk that began the
next pass arrived); ``decoded_at``: when ramlab had decoded it; ``qemu``: QEMU's last
``query-migrate`` sample (QEMU's names). ``-o DIR`` keeps the capture folder, the same as
``ramlab capture DIR`` writes (open it later with ``ramlab inspect DIR``); without it the capture
goes to a temporary folder that is removed at the end. ``--replay DIR`` replays a capture folder at
its recorded pace instead (no QEMU needed). With ``--json`` the pass lines are the only output on
standard output; the rest goes to standard error.

Unlike ``ramlab capture``, the default ``--bandwidth`` is RAM/8 per second (2 MiB/s for 16 MiB) and
the downtime limit is relaxed after 8 dirty syncs, not 4, and postcopy starts after 4, not 2: slow
enough, and passes enough, to watch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ramlab.errors import RamlabError

__all__ = ["watch_main", "build_parser", "format_line"]

#: dirty syncs before the downtime limit is relaxed (ramlab capture: 4): a few more passes to watch
WATCH_RELAX_AFTER = 8
#: dirty syncs before the switch to postcopy (ramlab capture: 2): a few precopy passes first
WATCH_POSTCOPY_AFTER = 4


def build_parser() -> argparse.ArgumentParser:
    from ramlab.capture.run import build_parser as capture_parser
    from ramlab.cli.args import seconds_arg

    p = capture_parser(
        prog="ramlab watch", out_dir=False,
        description="Migrate ramlab's test guest in a real QEMU and print each pass as it completes "
                    "(ramlab capture's options; needs qemu-system-x86_64).",
        epilog="examples: ramlab watch --ram 16M --xbzrle --json -o my-capture | "
               "ramlab watch --multifd 2 | ramlab watch --postcopy | ramlab watch --replay DIR --speed 2",
    )
    p.set_defaults(relax_after=WATCH_RELAX_AFTER, postcopy_after=WATCH_POSTCOPY_AFTER)
    for action in p._actions:  # the defaults that differ from ramlab capture's
        if action.dest == "bandwidth":
            action.help = "max-bandwidth in bytes/s (default RAM/8, e.g. 2M for 16M: slow enough to watch)"
        elif action.dest == "postcopy_after":
            action.help = f"send migrate-start-postcopy after this many dirty syncs (default {WATCH_POSTCOPY_AFTER})"
        elif action.dest == "relax_after":
            action.help = (f"raise downtime-limit to 10 s after this many syncs (default {WATCH_RELAX_AFTER}; "
                           "0: never, steer it yourself)")
        elif action.dest == "exec":
            action.help = "not with watch: a live migration is recorded through the recorder's socket"
    p.add_argument("-o", "--output", metavar="DIR", help="keep the capture folder here (as ramlab capture writes it)")
    p.add_argument("--json", action="store_true", help="one JSON object per pass on standard output")
    p.add_argument("--replay", metavar="DIR", help="replay a capture folder at its recorded pace instead of QEMU")
    p.add_argument("--speed", type=seconds_arg, default=1.0, metavar="X",
                   help="replay: this many times faster, > 0 (default 1)")
    p.add_argument("--sample-interval", type=seconds_arg, default=0.1, metavar="S",
                   help="seconds between two query-migrate samples (default 0.1)")
    return p


def _mb(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**20:.2f} MiB"


def format_line(line: dict[str, Any]) -> str:
    """The text form of a pass line.

    >>> format_line({"pass": 0, "kind": "bulk", "t": 1.5, "pages": {"zero": 9, "normal": 2, "xbzrle": 0,
    ...              "compressed": 0}, "bytes": 8300, "qemu": {"ram.dirty-sync-count": 2}})
    'pass   0 bulk     t=  1.500s  zero      9 normal      2 xbzrle      0 compr      0    0.01 MiB | QEMU sync 2'
    """
    p = line["pages"]
    q = line.get("qemu") or {}
    text = (f"pass {line['pass']:>3} {line['kind']:<8} t={line['t']:>7.3f}s  zero {p['zero']:>6} "
            f"normal {p['normal']:>6} xbzrle {p['xbzrle']:>6} compr {p['compressed']:>6} "
            f"{line['bytes'] / 2**20:>7.2f} MiB")
    parts = []
    if "ram.dirty-sync-count" in q:
        parts.append(f"sync {q['ram.dirty-sync-count']}")
    if "ram.remaining" in q:
        parts.append(f"remaining {_mb(q['ram.remaining'])}")
    if "ram.dirty-pages-rate" in q:
        parts.append(f"dirty {q['ram.dirty-pages-rate']} pages/s")
    if "ram.mbps" in q:
        parts.append(f"{q['ram.mbps']:.1f} Mbit/s")
    if "expected-downtime" in q:
        parts.append(f"expected downtime {q['expected-downtime']} ms")
    return text + (" | QEMU " + ", ".join(parts) if parts else "")


def watch_main(argv: Sequence[str] | None = None) -> int:
    """``ramlab watch [options]``; returns the exit status (0 ok, 1 failed or damaged, 2 replay mismatch)."""
    from ramlab.capture.live import start_capture
    from ramlab.capture.run import capture_kwargs, parse_size
    from ramlab.live.run import replay

    parser = build_parser()
    args = parser.parse_args(argv)  # bad sizes and numbers: a usage error (exit 2) before any QEMU starts
    if args.exec and not args.replay:
        parser.error("--exec: a live migration is recorded through the recorder's socket")
    json_mode = args.json
    info = sys.stderr if json_mode else sys.stdout

    def emit(line: dict[str, Any]) -> None:
        print(json.dumps(line) if json_mode else format_line(line), flush=True)

    temp: Path | None = None
    try:
        if args.replay:
            run = replay(args.replay, speed=args.speed)
        else:
            kwargs = capture_kwargs(args)
            if args.bandwidth is None:  # slow enough to watch: RAM/8 per second
                kwargs["max_bandwidth"] = max(1, (parse_size(args.ram, "--ram") >> 20) // 8) << 20
            kwargs["sample_interval"] = args.sample_interval
            if args.output:
                folder = Path(args.output)
            else:
                temp = Path(tempfile.mkdtemp(prefix="ramlab-watch-"))
                folder = temp / "capture"
            run = start_capture(folder, kwargs)
        run.on_pass(emit)
        t0 = time.monotonic()
        try:
            run.wait()
        except KeyboardInterrupt:
            run.stop()
            print("ramlab watch: interrupted: migration cancelled", file=sys.stderr)
            return 130
        except RamlabError as exc:
            print(f"ramlab watch: error: {exc}", file=sys.stderr)
            return 1
        snap = run.snapshot()
        meta = run.meta or {}
        final = (meta.get("query_migrate_final") or {}).get("ram", {})
        records = snap.records
        print(f"{run.status}: {snap.n_passes} passes in {time.monotonic() - t0:.1f} s; ramlab decoded "
              f"zero {records.get('zero', 0)}, page {records.get('page', 0)}, xbzrle {records.get('xbzrle', 0)}, "
              f"compressed {records.get('compressed', 0)}; QEMU normal {final.get('normal')}, "
              f"duplicate {final.get('duplicate')}", file=info)
        if args.output:
            print(f"capture folder: {args.output} (ramlab inspect {args.output})", file=info)
        if snap.error:
            print(f"ramlab watch: error: {snap.error}", file=sys.stderr)
            return 1
        if "replay" in meta and not args.replay and not meta["replay"]["matched"]:
            print("ramlab watch: the recorded stream did not load into a second QEMU identically", file=sys.stderr)
            return 2
        return 0
    except RamlabError as exc:
        print(f"ramlab watch: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

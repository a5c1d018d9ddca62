"""``ramlab simulate``: run :func:`ramlab.simulate` from the command line and print its table."""

from __future__ import annotations

import argparse
from typing import Any

from ramlab.errors import SimulationError
from ramlab.simulate import parse_size, simulate

__all__ = ["simulate_cli", "parse_params"]


def simulate_cli(args: argparse.Namespace) -> int:
    """``ramlab simulate``: run :func:`simulate`, write ``--output`` (the stream), print the table."""
    out = getattr(args, "output", None)
    postcopy = bool(getattr(args, "postcopy", False))
    r = simulate(
        ram=args.ram, workload=args.workload, xbzrle=args.xbzrle, cache_size=args.cache_size,
        compress=args.compress, compress_level=args.compress_level, bandwidth=args.bandwidth,
        downtime_ms=args.downtime_ms, auto_converge=args.auto_converge, max_passes=args.max_passes,
        seed=args.seed, template=args.template, stream=bool(out), dirty_rate=args.dirty_rate,
        postcopy=postcopy, postcopy_after=getattr(args, "postcopy_after", 1),
        hugepages=bool(getattr(args, "hugepages", False)),
        discard_algorithm=getattr(args, "discard_algorithm", "seed"),
        postcopy_bandwidth=getattr(args, "postcopy_bandwidth", 0) or 0,
        release_ram=bool(getattr(args, "release_ram", False)),
        postcopy_pause_after=getattr(args, "postcopy_pause_after", None),
        **parse_params(getattr(args, "param", None) or []),
    )
    print(r.format_table())
    c = r.counters
    if r.postcopy is not None and r.postcopy.switched:
        verdict = (f"switched to postcopy after {r.params['postcopy_after']} passes: "
                   f"{int(c['discarded']):,} pages discarded, {int(c['postcopy_requests'])} page requests"
                   + (", paused and recovered" if r.postcopy.paused else ""))
    else:
        verdict = r.status
    print(f"{verdict}: {r.time_s:.3f} s simulated, {int(c['transferred']):,} bytes, "
          f"{int(c['dirty_sync_count'])} syncs, throttle {int(c['cpu_throttle_percentage'])}%")
    if out:
        rp = None
        if r.return_path is not None:
            rp = getattr(args, "return_path", None) or f"{out}.ret"
        r.save(out, rp)
        print(f"wrote {out} ({len(r.stream or b''):,} bytes)" + (f" and return path {rp}" if rp else ""))
    return 0


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["hot_fraction=0.1", "fill=1", "loop=false"]`` -> workload parameters (numbers, booleans,
    sizes with a suffix such as ``4M``, else strings).

    >>> parse_params(["hot_fraction=0.1", "span=512", "loop=false", "capture=x.bin", "rate=4M"])
    {'hot_fraction': 0.1, 'span': 512, 'loop': False, 'capture': 'x.bin', 'rate': 4194304}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise SimulationError(f"--param wants KEY=VALUE, got {item!r}")
        v = raw.strip()
        val: Any = v
        if v.lower() in ("true", "yes", "on"):
            val = True
        elif v.lower() in ("false", "no", "off"):
            val = False
        else:
            for conv in (int, float):
                try:
                    val = conv(v)
                    break
                except ValueError:
                    pass
            else:
                if v[:1].isdigit() and v[-1:].upper() in "KMGT":
                    try:
                        val = parse_size(v)
                    except SimulationError:
                        pass
        out[key] = val
    return out

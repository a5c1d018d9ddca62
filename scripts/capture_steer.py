"""Record the bundled capture ``data/steer``: a migration that cannot converge, then rescued live.

The test guest (16 MiB) rewrites a working set of about 394 pages (1.5 MiB) every ~2 ms. Migrated at
``max-bandwidth`` 4 MiB/s with a ``downtime-limit`` of 100 ms, only 4 MiB/s x 0.1 s = 0.4 MiB (about
100 pages) fit in the allowed downtime: every pass finds the whole working set dirty again and QEMU
never stops the VM. After ``--passes`` passes (watched live with :func:`ramlab.capture.watch`) the script
raises the downtime limit to 500 ms (2 MiB: the working set fits) and the migration completes. The
capture folder is what ``ramlab capture`` writes, with the chunk log (``chunks.jsonl``) that lets
:func:`ramlab.live.replay` show it at its recorded pace where no QEMU is installed (the steer lab's
fallback); ``meta.json``'s ``control_commands`` holds the rescue.

    python scripts/capture_steer.py [OUT_DIR] [--passes 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
from pathlib import Path

from ramlab.capture import watch
from ramlab.data import data_dir

BANDWIDTH = "4M"
DOWNTIME_MS = 100
RESCUE_DOWNTIME_MS = 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default=str(data_dir() / "steer"))
    ap.add_argument("--passes", type=int, default=10, help="passes before the rescue (default 10)")
    a = ap.parse_args()
    out = Path(a.out_dir)
    if out.exists():
        shutil.rmtree(out)
    enough = threading.Event()
    run = watch(out, bandwidth=BANDWIDTH, downtime_ms=DOWNTIME_MS, validate=True, timeout=120,
                            note=f"cannot converge at {BANDWIDTH}/s and {DOWNTIME_MS} ms; after {a.passes} passes "
                                 f"downtime-limit {RESCUE_DOWNTIME_MS} ms rescues it (scripts/capture_steer.py)")
    run.on_pass(lambda line: print(json.dumps(line)) or (line["pass"] + 1 >= a.passes and enough.set()))
    if not enough.wait(120):
        run.cancel()
        raise SystemExit("the migration did not make the passes asked for")
    run.set_parameters(downtime_limit=RESCUE_DOWNTIME_MS)
    run.wait(180)
    meta = run.meta or {}
    print(f"{out}: {run.status}, {len(run.passes)} passes, replay matched: {meta['replay']['matched']}, "
          f"{sum(f['zst_bytes'] for f in meta['files'].values()):,} bytes (zstd)")
    if not meta["replay"]["matched"]:
        raise SystemExit("the recorded stream does not load identically into a second QEMU")


if __name__ == "__main__":
    main()

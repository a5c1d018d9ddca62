"""Following a migration while it happens (issue 16): decoding as the bytes come, a growing trace.

- :mod:`ramlab.live.decoder` — :class:`LiveDecoder`: chunks of each connection in, the same loader
  as :func:`ramlab.open`, a trace that grows pass by pass (no IO, no threads)
- :mod:`ramlab.live.run` — :class:`LiveRun`: a decode thread fed by a source, QEMU's
  ``query-migrate`` samples beside the trace, snapshots for the views; :func:`replay` is the source
  that plays a capture folder at its recorded pace
- :mod:`ramlab.live.recording` — a capture folder's connections and recorded timing (``chunks.jsonl``)
- :mod:`ramlab.live.samples` — ``query-migrate`` replies as flat samples

A *real* migration is the capture layer's job (it runs QEMU): :func:`ramlab.capture.watch` records
one through the recorder and feeds a :class:`LiveRun` as it goes. In a notebook::

    from ramlab.capture import watch, watch_or_replay
    run = watch(ram="16M", xbzrle=True)                # QEMU migrates; returns at once
    run.widget()                                       # the LiveMigration view
    run.set_parameters(downtime_limit=300)             # steer it
    run.wait().trace                                   # the whole migration, once it is over

    import ramlab, ramlab.live
    run = ramlab.live.replay(ramlab.data_path("steer"))          # no QEMU: a capture at its recorded pace
    run = watch_or_replay("steer", bandwidth="4M", downtime_ms=100)   # whichever is possible here
"""

from __future__ import annotations

from ramlab.live.decoder import LiveDecoder, LiveSnapshot, PassSummary, pass_pages
from ramlab.live.run import LiveRun, replay

__all__ = ["LiveDecoder", "LiveSnapshot", "PassSummary", "pass_pages", "LiveRun", "replay"]

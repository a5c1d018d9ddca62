"""Generate the course notebooks (outputs stripped) from the cell lists below.

    .venv/bin/python notebooks/build.py            # writes notebooks/NN-*.ipynb

Edit the text here, not in the .ipynb files. Cells are ``md(...)`` or ``code(...)``; the
notebooks find their data with ``ramlab.lab.sample(name)`` (bundled ``data/`` first, then the
shared captures), never with absolute paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def exercises(*ids: str) -> list:
    cells = [md("## Exercises\n\nEach exercise prints its question; put your answer in `answer` and run the "
                "check. A wrong answer gets a hint, never the answer; `lab.check(id, answer, reveal=True)` "
                "explains it if you are stuck.")]
    for ex in ids:
        cells += [code(f"lab.ask({ex!r})"),
                  code(f"answer = None   # your answer\nlab.check({ex!r}, answer)")]
    return cells


SETUP = """
import numpy as np
import ramlab
from ramlab import lab
from ramlab.trace import PageClass, CLASS_NAMES
from ramlab.widgets import setup
setup()   # loads BokehJS into the page (inline, no network)
"""

# ---------------------------------------------------------------------------------------------
NB00 = [
    md("""
# 00 · A tour of a real QEMU live migration

Live migration moves a running VM from one host to another. The guest keeps running while its RAM is
copied, so QEMU copies it **iteratively**: first every page (the *bulk stage*), then again every page
the guest wrote meanwhile, pass after pass, until what is left is small enough to send while the guest
is paused for a moment (the *downtime*). Everything QEMU sends goes into one byte stream.

This notebook opens a **real stream** recorded from QEMU 7.2 (a 16 MiB guest running ramlab's test
program, which writes memory in known patterns) and looks at it from the top: what is in it, how RAM is
cut into blocks and pages, what each pass sent and how.
"""),
    code(SETUP),
    md("""
`ramlab.open` decodes a whole capture folder (or a stream file, or bytes). It never raises on a damaged
stream; the summary says whether it decoded to the end.
"""),
    code("""
m = ramlab.open(lab.sample("plain"))
m
"""),
    md("""
## Sections, blocks, pages

The stream is a sequence of **sections**. The RAM handler (`"ram"`) is *iterative*: it opens with a
`START` section (the list of RAM blocks), then sends pages in many `PART` sections, and closes with an
`END` section while the guest is stopped. Then every device (CPU, timers, disk controllers...) is sent
once in a `FULL` section.

Guest memory is a set of **RAM blocks**: `pc.ram` is the guest's RAM, the others are video memory and
firmware ROMs. Each block is cut into 4 KiB **target pages**, the unit of everything below.
"""),
    code("""
s = m.summary()
lab.table([(b["name"], b["length"], b["length"] // s["target_page_size"]) for b in s["blocks"]],
          ["block", "bytes", "pages"])
"""),
    code("""
print("sections:", s["sections"])
print("page records:", s["records"])
print("device sections:", s["devices"], "  machine:", s["machine_type"])
"""),
    md("""
## Passes and page classes

`m.trace` is a numpy view of the migration: for every **pass** (one lap of the dirty-page scan over all
blocks) and every page, how it was sent (its *class*) and how many bytes its record took. A **ZERO**
record says "this page is all zero" in 9 bytes; a **NORMAL** page is sent whole (4104 bytes);
**NOT_SENT** pages were clean in that pass.
"""),
    code("""
t = m.trace
counts = t.class_counts()
used = [k for k in range(1, len(CLASS_NAMES)) if counts[:, k].any()]
lab.table([(p, t.pass_kinds[p], *counts[p, used], int(t.bytes_per_pass()[p])) for p in range(t.n_passes)],
          ["pass", "kind", *[CLASS_NAMES[k] for k in used], "bytes"])
"""),
    md("""
Pass 0 is the bulk stage: every page once, mostly zero pages. Later passes send only what the guest
dirtied: its counter region (1 MiB = 256 pages), the random region, the status page, and the
*alternating* region, which is data on odd passes and all zero on even ones (watch NORMAL turn into
ZERO). The last passes are `complete`: the guest is stopped and the rest goes out.

## Step through it

The player shows the page map of each pass (one pixel per page here, 128 pages per row; hover for the
block and offset), pages per class and bytes per pass. Press play or drag the slider.
"""),
    code("""
m.player()
"""),
    md("""
## Is it right? QEMU's own counters

The capture folder's `meta.json` holds what QEMU itself reported at the end (`query-migrate`). Its
`normal` counter is the number of PAGE records and `duplicate` the number of ZERO records: ramlab's
decode agrees exactly.
"""),
    code("""
ram = lab.meta("plain")["query_migrate_final"]["ram"]
lab.table([("ZERO records", ram["duplicate"], m.records["zero"]),
           ("PAGE records", ram["normal"], m.records["page"])], ["", "QEMU says", "ramlab decoded"])
"""),
    *exercises("tour.zero-records", "tour.bulk-zero"),
]

# ---------------------------------------------------------------------------------------------
NB01 = [
    md("""
# 01 · The stream format, byte by byte

Everything big-endian, no padding, no lengths for most things: a reader must know each item's layout
to find the next one. That is why one flipped byte can make the rest unreadable (notebook 06).

```
stream   := "QEVM" be32(3)  configuration  item*  EOF(0x00)  [vmdesc JSON]
item     := section | command(0x08)
START    := 0x01 be32 section_id cstr8 idstr be32 instance be32 version  body  footer
PART/END := 0x02/0x03 be32 section_id  body  footer          footer := 0x7e be32 section_id
```
A RAM section body is a list of **records**, each starting with a `be64` *header word*: the page's
byte offset inside its block with **flags** in the low 12 bits (ZERO 0x02, MEM_SIZE 0x04, PAGE 0x08,
EOS 0x10, CONTINUE 0x20, XBZRLE 0x40, COMPRESS_PAGE 0x100). Without CONTINUE a block name (`cstr8`:
length byte + bytes) follows; with it, the record uses the block of the previous record.
"""),
    code(SETUP),
    code("""
m = ramlab.open(lab.sample("plain"))
data = lab.stream_bytes("plain")
lab.hexdump(data, 0, 64, mark=(0, 8))
"""),
    md("""
`51 45 56 4d` is "QEVM", then version 3. Byte 8 is `0x07`, the configuration section: a be32 length
(13) and the machine type `pc-i440fx-7.2`. At byte 26 the RAM `START` section begins. Here are the
first decoded items with the byte offset where each starts:
"""),
    code("""
lab.events_table(m.events, data, n=14)
"""),
    md("""
The `START` section carries the `MEM_SIZE` record: its header word holds the **total** RAM size
(flag 0x04 in the low bits), then each block as `cstr8 name, be64 used_length` until the lengths add up.
Then `EOS`, the footer, and the first `PART` section with the first page record. Let's read that
record's header word by hand:
"""),
    code("""
first = next(e for e in m.events if type(e).__name__ == "RamPages")
word = int.from_bytes(data[first.offset:first.offset + 8], "big")
flags, offset = word & 0xfff, word & ~0xfff
names = [name for bit, name in lab.SPEC_FLAGS.items() if flags & bit]
print(f"header word 0x{word:016x}: page offset 0x{offset:x}, flags 0x{flags:x} = {names}")
lab.hexdump(data, first.offset, 32, mark=(first.offset, 8))
"""),
    md("""
No CONTINUE bit, so the block name follows: `06 "pc.ram"`. Every later record of that block has
CONTINUE and no name; a name appears again only when the block changes. Runs of records of one kind are
grouped by the decoder into one `RamPages` event (the offsets are numpy arrays):
"""),
    code("""
ev = m.events[8]
print(type(ev).__name__, "at byte", ev.offset, "- records:", len(ev), "- page offsets:", ev.page_offsets[:6])
"""),
    md("""
## The stream inspector

`m.inspector()` is the same walk as an interactive table: filter by record kind, section or block,
click a row and every field of its bytes is annotated in the hex view (header word, flags, name, data).
"""),
    code("""
m.inspector()
"""),
    md("""
## Build a stream by hand and decode it back

The encoder has helpers for single records; the framing is a few `struct.pack` calls. This builds a
stream with one 3-page block: page 0 zero, page 1 full of `0x5a`, page 2 zero — then decodes it.
"""),
    code("""
import struct
from ramlab.wire.encoder import zero_record, page_record, cstr8
from ramlab.wire.decoder import StreamDecoder

def section(kind, sid, name=None):
    head = struct.pack(">BI", kind, sid)
    return head + (cstr8(name) + struct.pack(">II", 0, 4) if name else b"")

footer = lambda sid: struct.pack(">BI", 0x7e, sid)
EOS = struct.pack(">Q", 0x10)
size = 3 * 4096
stream = (b"QEVM" + struct.pack(">I", 3)
          + section(0x01, 2, "ram") + struct.pack(">Q", size | 0x04) + cstr8("pc.ram") + struct.pack(">Q", size)
          + EOS + footer(2)
          + section(0x02, 2)
          + zero_record("pc.ram", 0x0000, named=True)
          + page_record("pc.ram", 0x1000, named=False, data=b"\\x5a" * 4096)
          + zero_record("pc.ram", 0x2000, named=False)
          + EOS + footer(2) + b"\\x00")
print(len(stream), "bytes")
dec = StreamDecoder()
dec.receive_data(stream)
dec.close()
lab.events_table(list(dec.events()), stream, n=20)
"""),
    code("""
tiny = ramlab.open(stream)
ram = tiny.ram("pc.ram")
print(tiny.error, tiny.records, "page 1 starts with", bytes(ram[0x1000:0x1004]))
"""),
    md("""
The reverse also holds: re-encoding a decoded real stream gives back the same bytes (that is what
`ramlab reencode` checks).
"""),
    *exercises("format.first-record", "format.header-word", "format.record-bytes"),
]

# ---------------------------------------------------------------------------------------------
NB02 = [
    md("""
# 02 · Dirty tracking and convergence

QEMU keeps a **dirty bitmap** per RAM block, one bit per page. At the start every bit is set, so the
first lap sends everything (the *bulk stage*). A page's bit is cleared just *before* it is sent; if the
guest writes it again, the next **bitmap sync** (pulling KVM/TCG's dirty log) sets it again.

QEMU repeats laps while the remaining dirty memory is too big. Each time it asks "how much is left?"
(`ram_save_pending`) it compares the answer with **bandwidth × downtime-limit**: the amount it can send
while the guest is paused. Below it, QEMU stops the guest, syncs one last time and sends the rest.
Whether that ever happens depends on one ratio: **how fast the guest dirties memory vs how fast the link
sends it.**
"""),
    code(SETUP),
    md("""
## A real capture

Our `plain` capture was recorded at `max-bandwidth` 8 MiB/s with a 1 ms downtime limit: far too little
for the ~400 pages the guest writes per pass, so it would never converge; the recorder raised the limit
to 10 s after 4 syncs (the *relax rule*) to let it finish. `meta.json` has the parameters and QEMU's
progress at each dirty sync.
"""),
    code("""
meta = lab.meta("plain")
params = meta["migrate_parameters_src"]
print({k: params[k] for k in ("max-bandwidth", "downtime-limit") if k in params})
print("relax rule:", meta.get("relax_rule"))
rows = [(smp["t"], smp.get("status"), smp["dirty-sync-count"], smp["remaining"], smp["transferred"])
        for smp in meta["progress_samples"] if smp.get("dirty-sync-count")]
lab.table(rows, ["time (s)", "status", "dirty syncs", "remaining bytes", "transferred bytes"],
          caption="QEMU's progress samples (query-migrate)")
"""),
    md("""
## The simplest model: a geometric series

Suppose each pass sends everything dirty at its start, and while it runs the guest dirties `D` bytes/s
of new pages. With bandwidth `B`, a pass that sends `R` bytes takes `R/B` s, so the next pass has
`R·D/B` bytes: the remaining amount shrinks by the ratio `D/B` each pass. If `D < B` it converges
geometrically; if `D ≥ B` it never does.
"""),
    code("""
from bokeh.plotting import figure, show
from bokeh.models import Span

GiB, MiB = 2**30, 2**20
B, downtime = 100 * MiB, 0.300
f = figure(width=640, height=300, y_axis_type="log", x_axis_label="pass", y_axis_label="MiB left after the pass",
           title="1 GiB guest, 100 MiB/s: remaining dirty memory per pass")
for D, color in [(10 * MiB, "#2ca02c"), (50 * MiB, "#1f77b4"), (90 * MiB, "#ff7f0e"), (110 * MiB, "#d62728")]:
    rem = [GiB * (D / B) ** k / MiB for k in range(1, 16)]
    f.line(list(range(1, 16)), rem, color=color, line_width=2, legend_label=f"dirty {D // MiB} MiB/s")
    print(f"dirty {D // MiB:>3} MiB/s: converges after {lab.geometric_passes(GiB, B, D, downtime)} passes")
f.add_layout(Span(location=B * downtime / MiB, dimension="width", line_dash="dashed", line_color="black"))
f.legend.location = "bottom_left"
show(f)
"""),
    md("""
The dashed line is bandwidth × downtime (30 MiB). Real guests are kinder than this model — they rewrite
the same *hot* pages, so the dirty set saturates at the working-set size — and crueller: a busy guest
can dirty GB/s.

## Simulating it

`ramlab.simulate` runs QEMU's sender algorithm (the same bitmap, search and page-saving rules as
`migration/ram.c`) against a synthetic guest workload, and records a trace like a real capture.
Here a 64 MiB guest with a hot set, at three link speeds:
"""),
    code("""
from ramlab.simulate import simulate

runs = {}
for bw in (4 * MiB, 16 * MiB, 64 * MiB):
    r = simulate(ram=64 * MiB, workload="hotset", dirty_rate=8 * MiB, bandwidth=bw, downtime_ms=300,
                 max_passes=15, seed=1)
    runs[bw] = r
    print(f"bandwidth {bw // MiB:>2} MiB/s: converged={r.converged}, passes={r.trace.n_passes}, "
          f"bytes={int(r.trace.bytes_per_pass().sum()):,}")
"""),
    md("""
With the link slower than the dirty rate the remaining set never drops below the threshold: the
migration only ends because the simulator forces the completion (`max_passes`), with a downtime far
above the limit — what a real QEMU would do is keep going forever, or until an operator cancels it,
throttles the guest or switches to postcopy. The player's bottom chart shows remaining dirty pages
against the green threshold line:
"""),
    code("""
from ramlab.widgets import MigrationPlayer
MigrationPlayer(runs[16 * MiB].trace)
"""),
    md("""
## Auto-converge

If the guest outruns the link, QEMU can **throttle its vCPUs** (`auto-converge`). At each sync (at most
once a second) it checks whether the guest dirtied more than half of what was sent in the period; after
two such "high" periods it throttles (20% first, then +10% each time), slowing the guest until the
migration converges. It trades guest performance for a migration that ends.
"""),
    code("""
for ac in (False, True):
    r = simulate(ram=64 * MiB, workload="hotset", dirty_rate=8 * MiB, bandwidth=4 * MiB, downtime_ms=300,
                 max_passes=30, auto_converge=ac, seed=1)
    thr = r.trace.counters.get("cpu_throttle_percentage")
    print(f"auto-converge={ac}: converged={r.converged}, passes={r.trace.n_passes}, "
          f"final CPU throttle={int(thr[-1]) if thr is not None else 0}%")
"""),
    *exercises("convergence.threshold", "convergence.passes", "convergence.throttle"),
]

# ---------------------------------------------------------------------------------------------
NB03 = [
    md("""
# 03 · XBZRLE: sending only what changed

When a page is sent again, often only a few bytes differ (a counter, a timestamp). With the `xbzrle`
capability the source keeps a **cache** of pages it sent and, on the next visit, sends the **delta**:
XOR the old and new page, and encode the runs.

```
encoding := (zrun nzrun)+          zrun  := uleb(n_equal_bytes)
                                   nzrun := uleb(n_changed) new_bytes[n_changed]
```
ULEB128 lengths take 1 byte below 128, else 2. No trailing zero run is written. If the encoding would
not fit in a page, the encoder gives up (**overflow**) and the page goes out whole.
"""),
    code(SETUP),
    code("""
from ramlab import xbzrle

old = np.zeros(4096, np.uint8)
new = old.copy(); new[4095] = 1
enc = xbzrle.encode_page(old, new)
print("last byte changed ->", enc.hex(" "))
for tok in xbzrle.parse_encoded(enc):
    print(f"  {tok.kind:5} at encoded byte {tok.offset}, {tok.size} byte(s), value {tok.value}")
"""),
    md("""
`ff 1f` is 4095 in ULEB128: low 7 bits `0x7f` with the continuation bit (`0xff`), then `4095 >> 7 = 0x1f`.
Three outcomes to know: identical pages give `b""` (QEMU returns 0: nothing is sent), a too-dense
change gives `None` (QEMU returns -1: overflow), anything else the bytes.
"""),
    code("""
dense = old.copy(); dense[0:4094:2] = 1
print("identical:", xbzrle.encode_page(old, old), " every other byte:", xbzrle.encode_page(old, dense))
"""),
    md("""
## The runs, visually

`XbzrleDeltaView` shows both pages, the changed runs, and every field of the encoding. Here the example
of the format reference: a page of `0x5a` where "QEMU" is written at 0x10 and `0xab` at 0x800.
"""),
    code("""
from ramlab.widgets import XbzrleDeltaView
o, n = lab.example_xbzrle_pages()
XbzrleDeltaView.from_arrays(np.frombuffer(o, np.uint8), np.frombuffer(n, np.uint8), title="stream-format.md §12")
"""),
    md("""
## In a real capture

The `xbzrle` capture's guest increments one dword per page in a 1 MiB region every pass: the best case.
ramlab keeps the page before and after each XBZRLE record, so we can look at one:
"""),
    code("""
m = ramlab.open(lab.sample("xbzrle"))
counts = m.trace.class_counts()
print("XBZRLE records per pass:", counts[:, PageClass.XBZRLE].tolist(), " NORMAL:", counts[:, PageClass.NORMAL].tolist())
p, g = map(int, np.argwhere(m.trace.classes == PageClass.XBZRLE)[0])
XbzrleDeltaView(m.trace, p, g)
"""),
    code("""
xb = m.trace.classes == PageClass.XBZRLE
sizes = m.trace.wire_bytes[xb]
print(f"{xb.sum()} XBZRLE records, {sizes.min()}..{sizes.max()} bytes each (a PAGE record is 4104)")
"""),
    md("""
## The page cache and its age rule

The cache is **direct-mapped**: page address → slot `(addr / 4096) mod n_slots`. A different page may
only evict a slot's page when that page is *stale*: not inserted or hit during the last 2 bitmap syncs
(`CACHED_PAGE_LIFETIME = 2`). Ages are the sync counter, so two hot pages that collide keep each other
out, and the loser is sent whole (a cache miss).
"""),
    code("""
from ramlab.model.page_cache import PageCache
cache = PageCache(4 * 4096)            # 4 slots
page = np.zeros(4096, np.uint8)
print("slot of 0x1000 and 0x5000:", cache.slot_of(0x1000), cache.slot_of(0x5000))
print("insert 0x1000 at sync 5:", cache.insert(0x1000, page, age=5))
for age in (5, 6, 7):
    print(f"insert 0x5000 at sync {age}:", cache.insert(0x5000, page, age=age))
"""),
    md("""
## What it buys: change density and cache size

First the encoder alone: pages with *k* changed bytes, scattered at random or in one block. Scattered
changes cost 3 bytes each (a zrun, an nzrun, the byte) and overflow near 1365 changes; contiguous
changes cost about one byte each.
"""),
    code("""
from bokeh.plotting import figure, show
rng = np.random.default_rng(0)
ks = np.unique(np.geomspace(1, 4096, 40).astype(int))
size = {"scattered": [], "contiguous": []}
for k in ks:
    olds = rng.integers(0, 256, (16, 4096), dtype=np.uint8)
    news = olds.copy()
    for i in range(16):
        pos = rng.choice(4096, k, replace=False)
        news[i, pos] ^= 0xff
    scat = xbzrle.encode_batch(olds, news).ret
    cont = olds.copy(); cont[:, :k] ^= 0xff
    size["scattered"].append(np.where(scat < 0, 4096, scat).mean())
    size["contiguous"].append(np.where((r := xbzrle.encode_batch(olds, cont).ret) < 0, 4096, r).mean())
f = figure(width=640, height=300, x_axis_type="log", x_axis_label="changed bytes in the page",
           y_axis_label="bytes sent (overflow = 4096)", title="XBZRLE encoding size vs change density")
f.line(ks, size["scattered"], line_width=2, color="#d62728", legend_label="scattered changes")
f.line(ks, size["contiguous"], line_width=2, color="#2ca02c", legend_label="one contiguous run")
f.legend.location = "top_left"
show(f)
"""),
    md("""
Now the cache: a guest with a hot set of 2048 pages (8 MiB) spread over 64 MiB, each dirtying a counter
per pass. One bitmap sync per pass. With a cache smaller than the hot set, slot collisions and the age
rule turn hits into misses, and misses cost a full page.
"""),
    code("""
def pass_bytes(cache_bytes, hot=2048, ram_pages=16384, passes=6, seed=0):
    rng = np.random.default_rng(seed)
    addrs = np.sort(rng.choice(ram_pages, hot, replace=False)) * 4096
    pages = rng.integers(0, 256, (hot, 4096), dtype=np.uint8)
    cache, total = PageCache(cache_bytes), []
    for age in range(1, passes + 1):
        pages[:, 16] += 1                          # the guest bumps a counter in each hot page
        hit = cache.lookup_batch(addrs, age)
        nbytes = 0
        if hit.any():
            old = np.stack([cache.get_cached_data(int(a)) for a in addrs[hit]])
            ret = xbzrle.encode_batch(old, pages[hit]).ret
            nbytes += int(np.where(ret < 0, 4104, 8 + 3 + ret).sum())
            for a, pg in zip(addrs[hit], pages[hit]):
                cache.get_cached_data(int(a))[:] = pg
        miss = ~hit
        cache.insert_batch(addrs[miss], pages[miss], age)
        nbytes += int(miss.sum()) * 4104
        total.append(nbytes)
    return total

sizes_mib = [1, 2, 4, 8, 16, 32]
f = figure(width=640, height=300, x_axis_label="pass", y_axis_label="MiB sent", title="hot set 8 MiB, bytes per pass")
from bokeh.palettes import Viridis6
for mib, color in zip(sizes_mib, Viridis6):
    f.line(list(range(1, 7)), np.array(pass_bytes(mib * 2**20)) / 2**20, color=color, line_width=2,
           legend_label=f"cache {mib} MiB")
f.legend.location = "top_right"
show(f)
"""),
    md("""
Pass 1 is all misses whatever the size (the cache starts empty — in QEMU it stays empty during the bulk
stage). With a cache at least the size of the hot set, every later pass is a few bytes per page; below
it, most pages still go out whole. Sizing `xbzrle-cache-size` to the working set is the whole game.
"""),
    *exercises("xbzrle.last-byte", "xbzrle.alternating", "xbzrle.identical", "xbzrle.example", "xbzrle.cache-age"),
]

# ---------------------------------------------------------------------------------------------
NB04 = [
    md("""
# 04 · Compression and multifd

Two other ways to use more CPU (or more connections) for fewer bytes or more throughput:

* **compress** (removed in QEMU 9.1): worker threads deflate each page with zlib and send a
  `COMPRESS_PAGE` record (flag 0x100: `be32 clen` + a complete zlib stream). Zero pages are still ZERO
  records. Because workers finish in any order, records are **not in page order**.
* **multifd**: *N* extra connections carry the page data in packets (optionally zstd or zlib
  compressed per channel), while the main channel keeps the control, the zero pages and the devices.
"""),
    code(SETUP),
    code("""
import zlib
from ramlab.wire import events as ev
mc = ramlab.open(lab.sample("compress"))
clen = np.array([len(e.data) for e in mc.events if isinstance(e, ev.RamCompressed)])
print(mc.records)
print(f"clen: min {clen.min()}, median {int(np.median(clen))}, max {clen.max()} (a PAGE would be 4096)")
"""),
    code("""
from bokeh.plotting import figure, show
hist, edges = np.histogram(clen, bins=40)
f = figure(width=640, height=260, title="COMPRESS_PAGE payload sizes (real capture)", x_axis_label="clen (bytes)",
           y_axis_label="records")
f.quad(top=hist, bottom=0, left=edges[:-1], right=edges[1:], color="#9467bd")
show(f)
"""),
    md("""
Two populations: the guest's regular pages (counters, patterns, 0xFF) shrink to tens or hundreds of
bytes; its random region does not compress at all and even grows a little (up to `compressBound`).
Zlib vs XBZRLE on the same kinds of pages:
"""),
    code("""
from ramlab import xbzrle
rng = np.random.default_rng(1)
regular = (np.arange(4096) // 4).astype(np.uint8)
randpage = rng.integers(0, 256, 4096, dtype=np.uint8)
bumped = regular.copy(); bumped[16] += 1
rows = []
for name, old, new in [("counter bumped (regular page)", regular, bumped),
                       ("0xFF page, first send", None, np.full(4096, 0xff, np.uint8)),
                       ("random page rewritten", randpage, rng.integers(0, 256, 4096, dtype=np.uint8))]:
    z = len(zlib.compress(new.tobytes(), 1))
    x = xbzrle.encode_page(old, new) if old is not None else None
    rows.append((name, z, "n/a (not cached)" if old is None else ("overflow" if x is None else len(x))))
lab.table(rows, ["page", "zlib level 1 bytes", "XBZRLE bytes"])
"""),
    md("""
Zlib helps pages with structure, XBZRLE pages with *small changes*; random data defeats both. In the
capture, compression also reorders records, which ramlab's trace tolerates with a reorder window.

## Multifd with zstd

The `multifd-zstd` capture is three files: `channel-0` is the main stream, `channel-1/2` the multifd
channels in connection order. Each channel starts with a 64-byte handshake, then packets: a header
listing page offsets, then the pages' data, here zstd-compressed per channel.
"""),
    code("""
mm = ramlab.open(lab.sample("multifd-zstd"))
s = mm.summary()
print("channels:", s["channels"], " bytes per file:", [len(mm.data)] + [len(c) for c in mm.channel_data])
print("main-channel page records:", s["records"])
"""),
    code("""
rows = []
for ch, packets in enumerate(mm.multifd_packets, start=1):
    pk = [p for p in packets if type(p).__name__ == "MultifdPacket"]
    data_pk = [p for p in pk if p.normal_pages]
    rows.append((ch, len(pk), sum(p.sync for p in pk), len(data_pk), sum(p.normal_pages for p in pk),
                 sum(p.payload_len for p in pk)))
lab.table(rows, ["channel", "packets", "SYNC packets", "with pages", "pages", "compressed payload bytes"])
"""),
    md("""
Pages in all packets add up to a few more than QEMU's `normal` counter: 7.2 sometimes sends the last
page of a full packet again at the start of a later packet (QEMU counts it once; ramlab keeps one).
The main channel carries only ZERO records: zero detection happens in the migration thread before a
page is queued for a channel.
"""),
    code("""
ram = lab.meta("multifd-zstd")["query_migrate_final"]["ram"]
print("QEMU normal:", ram["normal"], " duplicate:", ram["duplicate"], " multifd-bytes:", ram["multifd-bytes"])
mm.player()
"""),
    *exercises("compress.bound", "compress.ff-page", "multifd.main-zero"),
]

# ---------------------------------------------------------------------------------------------
NB05 = [
    md("""
# 05 · Postcopy

Precopy may never converge. **Postcopy** flips the order: after a few precopy passes the source stops
the guest, sends the device state, and the guest **resumes on the destination** right away with some of
its memory still missing. A page the guest touches that is not there yet **faults**; the destination
asks the source for it over the **return path**, while the source keeps pushing the rest in the
background. Downtime is small and bounded; the price is that a network failure now loses a running VM.

At the switch, the destination may hold *stale* copies of pages that were re-dirtied after they were
sent. The source tells it to throw those away: the **discard** commands.
"""),
    code(SETUP),
    code("""
m = ramlab.open(lab.sample("postcopy"))   # fwd-0.bin + the return path ret-0.bin
data = m.data
cmds = [e for e in m.events if type(e).__name__ == "Command"]
lab.events_table(cmds, data, n=len(cmds))
"""),
    md("""
The sequence at the switch: `POSTCOPY_RAM_DISCARD` (block name + up to 12 `(start, length)` byte
ranges per command), `PING 2`, then one `PACKAGED` command whose blob is a small stream of its own —
`LISTEN`, every device's state, `PING 3`, `RUN` — so the destination can read it in one go before
starting the guest. After that, RAM pages keep flowing in the outer stream.
"""),
    code("""
lab.table([(b, f"0x{s:x}", n, n // 4096) for b, s, n in m.discards], ["block", "start", "bytes", "pages"],
          caption="discarded ranges")
"""),
    code("""
req = m.requests
print(len(req), "page requests; first ones:")
lab.table([(r.block, f"0x{r.start:x}", r.length, "REQ_PAGES_ID" if r.named else "REQ_PAGES") for r in req[:6]],
          ["block", "start", "length", "message"])
"""),
    md("""
In the player, pass 2 is the discard (DISCARDED pages), pass 3 the postcopy phase: pages pushed in the
background (POSTCOPY) and pages sent because the running destination asked for them (REQUESTED).
"""),
    code("""
m.player()
"""),
    md("""
## Huge pages: whole host pages or nothing

A destination backed by 2 MiB huge pages can only place (and drop) **whole host pages**, atomically.
So before discarding, the source rounds every partly dirty host page to a wholly dirty one
(*canonicalisation*). The seed algorithm (QEMU ~3.0) does it in two passes with an extra `unsent` map
and sends some ranges twice; QEMU ≥ 4.2 does one pass and sends each run once. `plan_discards` does both
and records the steps:
"""),
    code("""
from ramlab.model.postcopy_plan import plan_discards
dirty = np.array(lab.DISCARD_DIRTY, bool)
unsent = np.array(lab.DISCARD_UNSENT, bool)
for algorithm in ("seed", "modern"):
    plan = plan_discards(dirty, unsent, host_ratio=4, algorithm=algorithm)
    print(f"{algorithm:6}: {[(st.name, st.sent) for st in plan.steps]}")
"""),
    md("""
`PostcopyDiscardView` walks through the same steps on the host-page grid (rows of one host page): the
maps before and after each step, the host pages it fixed up, the ranges it sent (duplicates in
magenta), and the POSTCOPY_RAM_DISCARD commands with their payload bytes. Switch seed/modern to compare.
"""),
    code("""
from ramlab.widgets import PostcopyDiscardView
PostcopyDiscardView((dirty, unsent), host_ratio=4, block="pc.ram")
"""),
    md("""
The real `postcopy-hugepages` capture (block `m0` on 2 MiB pages) shows the rule on the wire: discards
are whole 2 MiB ranges, and every page request asks for a whole huge page. Rounding matters: a single
dirty 4 KiB page costs a 2 MiB discard and a 2 MiB re-send.
"""),
    code("""
mh = ramlab.open(lab.sample("postcopy-hugepages"))
print("blocks:", [(b.name, b.page_size) for b in mh.blocks][:2])
print("discards:", [(b, hex(s), hex(n)) for b, s, n in mh.discards])
print("requests:", [(r.block, hex(r.start), hex(r.length)) for r in mh.requests])
PostcopyDiscardView.from_migration(mh)
"""),
    code("""
# what if pc.ram of the 4 KiB capture had been on 2 MiB pages? Its discarded pages are the dirty map at the switch
tps = m.page_size
dirty4k = np.zeros(m.blocks[0].used_length // tps, bool)
for b, s, n in m.discards:
    dirty4k[s // tps:(s + n) // tps] = True
huge = plan_discards(dirty4k, None, host_ratio=512, algorithm="modern")
print(f"4 KiB pages: {dirty4k.sum()} pages discarded; 2 MiB pages: {huge.discard_map.sum()} pages "
      f"in {len(huge.ranges)} ranges {huge.ranges_bytes()}")
"""),
    *exercises("postcopy.seed-ranges", "postcopy.modern-ranges", "postcopy.requests", "postcopy.huge-request"),
]

# ---------------------------------------------------------------------------------------------
NB06 = [
    md("""
# 06 · Debugging a damaged capture

A capture from a failed migration, a truncated pcap, a disk with a bad sector: QEMU's loader stops at the
first thing it cannot parse with a terse message (`Unknown combination of migration flags`,
`Illegal RAM offset`, ...) and throws everything away. ramlab stops at the same place but **keeps
everything decoded before it** and tells you the byte offset.

We damage the real `plain` stream three ways and find each problem.
"""),
    code(SETUP),
    code("""
good = lab.stream_bytes("plain")
print(len(good), "bytes in the intact stream")
"""),
    md("""
## 1. Truncated

The recording stopped early. The error names the item that runs past the end and where it starts.
"""),
    code("""
cut = lab.damaged("truncated")
m = ramlab.open(cut)
print(type(m.error).__name__, "-", m.error)
print("offset:", m.error.offset)
lab.events_table(m.events, cut, around=m.error.offset, n=5)
"""),
    md("""
The inspector jumps to the error: the red row is where decoding stopped, and the hex view shows the
bytes around it.
"""),
    code("""
ins = m.inspector()
ins.jump_to_error()
ins
"""),
    md("""
Everything before the damage is usable: the trace covers the passes seen so far, and the RAM image has
every page received. Which pages of `pc.ram` did we get at least once?
"""),
    code("""
t = m.trace
received = (t.classes != PageClass.NOT_SENT).any(axis=0)
blk = t.blocks[0]
print(f"{t.n_passes} passes decoded; {received[blk.offset:blk.offset + blk.n_pages()].sum()} of {blk.n_pages()} "
      f"pages of {blk.name} received")
ram = m.ram("pc.ram")
print("status page:", bytes(ram[0x300000:0x300008]), " pass counter:", int.from_bytes(ram[0x300008:0x30000c], "little"))
"""),
    md("""
## 2. One flipped bit

A single bit flipped in a record's flag byte. The record is still the right size, so the reader gets
there in step — and finds a flag combination that cannot exist.
"""),
    code("""
flip = lab.damaged("flipped")
m2 = ramlab.open(flip)
print(m2.error)
at = m2.error.offset
lab.hexdump(flip, at - 18, 48, mark=(at, 8))
"""),
    code("""
word = int.from_bytes(flip[at:at + 8], "big")
print(f"flags 0x{word & 0xfff:03x} =", [n for b, n in lab.SPEC_FLAGS.items() if word & 0xfff & b],
      "  (intact:", f"0x{int.from_bytes(good[at:at + 8], 'big') & 0xfff:03x})")
"""),
    md("""
A flip in a *length* or *page data* would be worse: in page data nothing notices (the guest gets a
corrupted page; only comparing RAM finds it), and in a length the reader loses step and reports
something unrelated further on. The offset where the error is found is then only an upper bound.

## 3. A wrong block name

The first page record's name is changed. If the new name is not a block at all, the loader fails on the
spot; if it is another real block, it silently writes pages into the wrong block until an offset no
longer fits.
"""),
    code("""
for kind in ("unknown-block", "renamed"):
    d = lab.damaged(kind)
    mk = ramlab.open(d)
    print(f"{kind:14} -> {mk.error}")
"""),
    code("""
mr = ramlab.open(lab.damaged("renamed"))
lab.events_table(mr.events, lab.damaged("renamed"), start=6, n=6)
"""),
    md("""
## Recovering what is there

`m.extract(dir)` writes each block's RAM as decoded so far, and `ramlab.report` writes a standalone
HTML report with the error first. The same from a shell: `ramlab inspect`, `ramlab extract`,
`ramlab report broken.bin -o report.html`.
"""),
    code("""
import tempfile, pathlib
from ramlab.report import write_report
out = pathlib.Path(tempfile.mkdtemp())
paths = m.extract(out / "ram")
print([p.name for p in paths][:3], "...")
print(write_report(m, out / "report.html"), "written")
"""),
    *exercises("debug.truncated-offset", "debug.flipped", "debug.renamed", "debug.unknown-block"),
]

NOTEBOOKS = {
    "00-tour": NB00,
    "01-stream-format": NB01,
    "02-dirty-tracking-and-convergence": NB02,
    "03-xbzrle": NB03,
    "04-compression-and-multifd": NB04,
    "05-postcopy": NB05,
    "06-debugging-a-capture": NB06,
}


def build(out_dir: Path = HERE) -> list[Path]:
    """Write every notebook (no outputs, no execution counts) to ``out_dir``."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        for i, c in enumerate(nb.cells):
            c["id"] = f"{name[:2]}-{i:03d}"
        path = out_dir / f"{name}.ipynb"
        nbformat.validate(nb)
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)

"""Lab 08: delta compression / XBZRLE (Svärd et al., VEE 2011)."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "08-delta-compression"

CELLS = [
    md("""
    # 08 · Delta compression — reproducing Svärd et al., VEE 2011

    > P. Svärd, B. Hudzia, J. Tordsson, E. Elmroth. *Evaluation of Delta Compression Techniques for
    > Efficient Live Migration of Large Virtual Machines.* VEE 2011, pp. 111–120.

    The paper that brought XBZRLE into QEMU (QEMU's `docs/xbzrle.txt` describes the same scheme: XOR with
    the cached previous version of the page, run-length encode the zero runs, ULEB128 lengths; a page
    cache on the source). Its claims, from the abstract:

    1. migrating VMs with *high workloads* over *low-bandwidth* links risks long downtimes, because pages
       are dirtied faster than they can be sent;
    2. delta compression of re-sent pages *increases migration throughput and thus reduces downtime*,
       with *"a significant decrease in migration downtime in all test cases"*;
    3. *"In a benchmark scenario the downtime is reduced by a factor of 100"*, and a streaming video server
       migrated *"with no perceivable downtime"*.

    The paper's body evaluates compression ratio, cache hits and migration time against cache size and
    workload; we measure the same quantities on QEMU's algorithm (ramlab's simulator, with QEMU's
    direct-mapped page cache and its age rule), and on two real QEMU captures of the same guest, with and
    without XBZRLE. **You will** compute the compression ratio and the cache hit rate of a migration,
    predict what the cache size and the workload do, and measure the CPU cost. **Time** (planning figure, see TEACHING.md): about 60 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    md("""
    ## 1. A guest that outruns the link

    `counters` increments counters in a working set of a quarter of RAM: every dirty page differs from its
    previous version by a few bytes — the paper's favourable case (an in-memory database, a busy server).
    64 MiB guest, 48 MiB/s of writes, a 16 MiB/s link, at most 20 passes.
    """),
    code("""
    MiB = 1 << 20

    def migrate(workload="counters", xbzrle=False, cache_mib=64, ram_mib=64, dirty_mib=48, bw_mib=16, seed=1, **kw):
        return ramlab.simulate(ram=ram_mib * MiB, workload=workload, dirty_rate=dirty_mib * MiB, bandwidth=bw_mib * MiB,
                               xbzrle=xbzrle, cache_size=cache_mib * MiB, max_passes=20, seed=seed,
                               template=False, record_dirty=False, **kw)

    def downtime_ms(r):
        return 1000 * float(r.trace.bytes_per_pass()[-1]) / r.params["bandwidth"]

    plain_run = migrate(xbzrle=False)
    print(f"without XBZRLE: converged={plain_run.converged}, passes={plain_run.trace.n_passes}, "
          f"downtime {downtime_ms(plain_run):.0f} ms, total {plain_run.time_s:.1f} s, "
          f"{plain_run.counters['transferred'] / MiB:.0f} MiB sent")
    """),
    md("""
    It does not converge: the simulator forces the stop after 20 passes, with the whole remaining working
    set to send while the guest is paused. Now the cache.
    """),
    *exercise(
        "delta-cache", kind="predict", points=1, title="a cache smaller than the working set",
        question="""
        The working set is 16 MiB. Predict the downtime with XBZRLE and a **4 MiB** cache compared with a
        **16 MiB** cache:

        * (A) about the same: any cache catches the few pages that change between two rounds
        * (B) much longer with 4 MiB: most pages miss the cache or lose their slot, and go out whole
        * (C) shorter with 4 MiB: a small cache is faster to search, so every round is shorter

        Set `answer_delta_cache` to a letter, then run the sweep.
        """,
        answer='"B"',
        check="""lab.choice("delta-cache", answer_delta_cache, "ABC")""",
        hidden="""assert lab.same_choice(answer_delta_cache, "B")
        """,
    ),
    code("""
    caches = [1, 2, 4, 8, 16, 32, 64]
    runs = {c: migrate(xbzrle=True, cache_mib=c) for c in caches}
    rows = []
    for c, r in runs.items():
        k = r.counters
        rows.append((c, r.converged, r.trace.n_passes, f"{downtime_ms(r):.0f}", f"{r.time_s:.1f}",
                     f"{k['transferred'] / MiB:.0f}", k["xbzrle_pages"], k["xbzrle_cache_miss"]))
    lab.table(rows, ["cache MiB", "converged", "passes", "downtime ms", "total s", "MiB sent", "XBZRLE records",
                     "cache misses"], caption="counters guest with XBZRLE, by cache size")
    """),
    code("""
    from bokeh.plotting import figure, show
    from bokeh.models import Span
    f = figure(width=660, height=300, x_axis_type="log", x_axis_label="XBZRLE cache (MiB)", y_axis_label="downtime (ms)",
               title="Downtime vs cache size (simulated counters guest); dashed: without XBZRLE")
    f.line(caches, [downtime_ms(r) for r in runs.values()], line_width=2, color="#0072b2")
    f.scatter(caches, [downtime_ms(r) for r in runs.values()], size=7, color="#0072b2")
    f.add_layout(Span(location=downtime_ms(plain_run), dimension="width", line_dash="dashed", line_color="#d55e00"))
    show(f)
    """),
    md("""
    Two numbers summarise what XBZRLE did in a run: how much smaller its records were than whole pages, and
    how often the cache had the page.
    """),
    *exercise(
        "delta-ratio", kind="code", points=2, title="the compression ratio",
        question="""
        Write `xbzrle_ratio(trace)`: the bytes the XBZRLE records of a migration would have taken as PAGE
        records (4104 bytes each: an 8-byte header word and the page) divided by the bytes they actually took
        (`trace.wire_bytes` of the pages of class `PageClass.XBZRLE`), as a float; `None` when the trace has no
        XBZRLE record. Graded on new simulations and real captures.
        """,
        scaffold='''
        def xbzrle_ratio(trace):
            """(4104 x number of XBZRLE records) / their wire bytes, or None without XBZRLE records."""
        ''',
        solution="""
        xb = trace.classes == PageClass.XBZRLE
        n = int(xb.sum())
        return None if n == 0 else 4104 * n / float(trace.wire_bytes[xb].sum(dtype=np.int64))
        """,
        check="""
        lab.function("delta-ratio", xbzrle_ratio, 1)
        assert xbzrle_ratio(plain_run.trace) is None, "a run without XBZRLE has no ratio"
        got = xbzrle_ratio(runs[16].trace)
        assert isinstance(got, float) and got > 1, f"XBZRLE records are smaller than pages: got {got!r}"
        print(f"16 MiB cache: XBZRLE records are {got:.0f} times smaller than pages")
        """,
        hidden="""
        def _ref_ratio(tr):
            n, b = 0, 0
            for p in range(tr.n_passes):
                sel = tr.classes[p] == int(PageClass.XBZRLE)
                n += int(np.count_nonzero(sel))
                b += int(tr.wire_bytes[p][sel].astype(np.int64).sum())
            return None if n == 0 else 4104 * n / b
        _g = lab.fresh.rng()
        _cases = [lab.fresh.simulation(_g, xbzrle=True, cache_size=int(_g.choice([1, 4, 16])) << 20,
                                       workload=str(_g.choice(["counters", "hotset", "uniform"]))).trace for _ in range(3)]
        _cases += [lab.trace("xbzrle"), lab.trace("plain")]
        lab.fresh.compare(xbzrle_ratio, _ref_ratio, _cases, name="xbzrle_ratio",
                          same=lambda a, e: (a is None and e is None) or (a is not None and e is not None
                                                                          and abs(float(a) - e) <= 1e-9 * e),
                          describe=lambda tr: tr.meta.get("name"))
        """,
    ),
    *exercise(
        "delta-hit-rate", kind="code", points=2, title="the cache hit rate",
        question="""
        Write `cache_hit_rate(trace)` for a simulated migration: its `trace.counters` hold, per pass, QEMU's
        `xbzrle_pages` (XBZRLE records sent), `xbzrle_unchanged` (cache hits on an unchanged page: nothing sent),
        `xbzrle_overflow` (cache hits whose delta overflowed) and `xbzrle_cache_miss`. Return the fraction of
        cache lookups that hit (`hits / (hits + misses)`, summed over all passes) as a float, or `None` when
        there was no lookup.
        """,
        scaffold='''
        def cache_hit_rate(trace):
            """Fraction of XBZRLE cache lookups that found the page (float), or None."""
        ''',
        solution="""
        c = trace.counters
        hits = sum(int(np.sum(c[k])) for k in ("xbzrle_pages", "xbzrle_unchanged", "xbzrle_overflow"))
        total = hits + int(np.sum(c["xbzrle_cache_miss"]))
        return None if total == 0 else hits / total
        """,
        check="""
        lab.function("delta-hit-rate", cache_hit_rate, 1)
        assert cache_hit_rate(plain_run.trace) is None, "no XBZRLE, no lookups"
        rates = {c: cache_hit_rate(r.trace) for c, r in runs.items()}
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in rates.values()), f"rates must be floats in [0, 1]: {rates}"
        print({c: round(v, 2) for c, v in rates.items()})
        """,
        hidden="""
        def _ref_rate(tr):
            h = m = 0
            for p in range(tr.n_passes):
                h += int(tr.counters["xbzrle_pages"][p]) + int(tr.counters["xbzrle_unchanged"][p])
                h += int(tr.counters["xbzrle_overflow"][p])
                m += int(tr.counters["xbzrle_cache_miss"][p])
            return None if h + m == 0 else h / (h + m)
        _g = lab.fresh.rng()
        _cases = [lab.fresh.simulation(_g, xbzrle=True, cache_size=int(_g.choice([1, 2, 8])) << 20,
                                       workload=str(_g.choice(["counters", "hotset", "random"]))).trace for _ in range(4)]
        _cases.append(lab.fresh.simulation(_g, xbzrle=False).trace)
        lab.fresh.compare(cache_hit_rate, _ref_rate, _cases, name="cache_hit_rate",
                          same=lambda a, e: (a is None and e is None) or (a is not None and e is not None
                                                                          and abs(float(a) - e) <= 1e-12),
                          describe=lambda tr: f"a simulation ({tr.meta.get('workload')}, cache {tr.meta.get('cache_size')})")
        """,
    ),
    md("""
    ## 2. Why a small cache fails: slots

    QEMU's cache is **direct-mapped**: page `p` can only live in slot `p mod n_slots`. Two hot pages with the
    same slot evict each other (within the age rule of lab 03), so a cache the size of the working set can
    still miss when the working set is scattered.
    """),
    *exercise(
        "delta-slots", kind="code", points=2, title="pages that share a slot",
        question="""
        Write `colliding_pages(pages, n_slots)`: `pages` is an array of distinct page indices; return how many
        of them share their slot (`page % n_slots`) with at least one other page of the array (an int).
        """,
        scaffold='''
        def colliding_pages(pages, n_slots):
            """Number of pages whose slot (page % n_slots) holds another page of the array too."""
        ''',
        solution="""
        slots = np.asarray(pages, np.int64) % n_slots
        _, inverse, counts = np.unique(slots, return_inverse=True, return_counts=True)
        return int((counts[inverse] > 1).sum())
        """,
        check="""
        lab.function("delta-slots", colliding_pages, 2)
        got = colliding_pages(np.array([0, 4, 5, 6]), 4)
        assert lab.same_int(got, 2), f"pages 0 and 4 share slot 0 of 4: got {got!r}"
        """,
        hidden="""
        def _ref_colliding(pages, n):
            from collections import Counter
            c = Counter(int(p) % n for p in pages)
            return sum(1 for p in pages if c[int(p) % n] > 1)
        _g = lab.fresh.rng()
        _cases = []
        for _ in range(100):
            _ram = int(_g.integers(1, 1 << 16))
            _k = int(_g.integers(0, min(_ram, 3000)))
            _cases.append((_g.choice(_ram, _k, replace=False), int(_g.integers(1, 4096))))
        lab.fresh.compare(colliding_pages, _ref_colliding, _cases, star=True, name="colliding_pages",
                          same=lambda a, e: lab.same_int(a, e), describe=lambda c: f"{len(c[0])} pages, {c[1]} slots")
        """,
    ),
    code("""
    rng = np.random.default_rng(0)
    ws = rng.choice(16384, 4096, replace=False)          # a working set of 16 MiB scattered in 64 MiB
    for cache_mib in (4, 16, 64):
        n_slots = cache_mib * MiB // 4096
        print(f"{cache_mib:2} MiB cache ({n_slots} slots): {colliding_pages(ws, n_slots)} of {ws.size} pages share a slot")
    """),
    md("""
    ## 3. Workloads: where XBZRLE does not help
    """),
    *exercise(
        "delta-random", kind="predict", points=1, title="XBZRLE on random writes",
        question="""
        The `random` workload rewrites whole pages with random bytes. With XBZRLE and a cache as large as RAM,
        what happens to the dirty pages the cache holds a previous copy of?

        * (A) most encode to a few bytes: the cache holds their previous copy, so only deltas go out
        * (B) most are found unchanged and not sent: the cache compares them before encoding
        * (C) most overflow and go out whole: nearly every byte changed, the delta outgrows the page

        Set `answer_delta_random` to a letter, then run the comparison.
        """,
        answer='"C"',
        check="""lab.choice("delta-random", answer_delta_random, "ABC")""",
        hidden="""assert lab.same_choice(answer_delta_random, "C")
        """,
    ),
    code("""
    rows = []
    for wl, extra in (("counters", {}), ("hotset", {"hot_fraction": 0.1}), ("random", {"dirty_mib": 16})):
        for xb in (False, True):
            r = migrate(workload=wl, xbzrle=xb, **extra)
            k = r.counters
            rows.append((wl, xb, r.converged, f"{downtime_ms(r):.0f}", f"{r.time_s:.1f}", f"{k['transferred'] / MiB:.0f}",
                         k["xbzrle_pages"], k["xbzrle_overflow"], k["xbzrle_unchanged"]))
    lab.table(rows, ["workload", "XBZRLE", "converged", "downtime ms", "total s", "MiB sent", "XBZRLE records",
                     "overflows", "unchanged"], caption="64 MiB cache")
    """),
    md("""
    Vary it yourself: workload, dirty rate, link, XBZRLE and its cache size (each run takes a second or two).
    """),
    code("""
    import ipywidgets as W

    def run(workload, dirty_rate, bandwidth, xbzrle, cache_mib):
        r = migrate(workload=workload, xbzrle=xbzrle, cache_mib=cache_mib, dirty_mib=dirty_rate, bw_mib=bandwidth)
        k = r.counters
        hits = int(k["xbzrle_pages"] + k["xbzrle_unchanged"] + k["xbzrle_overflow"])
        display(lab.table([(r.converged, r.trace.n_passes, f"{downtime_ms(r):.0f}", f"{r.time_s:.1f}",
                            f"{k['transferred'] / MiB:.0f}", hits, int(k["xbzrle_cache_miss"]), int(k["xbzrle_overflow"]))],
                          ["converged", "passes", "downtime ms", "total s", "MiB sent", "cache hits", "misses", "overflows"]))

    lab.explore(run, auto=False, title="64 MiB guest",
                workload=W.Dropdown(options=["counters", "hotset", "uniform", "random", "sweep"], value="counters"),
                dirty_rate=W.IntSlider(value=48, min=1, max=128, description="dirty MiB/s"),
                bandwidth=W.IntSlider(value=16, min=2, max=128, description="MiB/s"),
                xbzrle=W.Checkbox(value=True, description="XBZRLE"),
                cache_mib=W.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64], value=16, description="cache MiB"))
    """),
    md("""
    ## 4. The CPU cost

    The paper's trade: CPU on the source for bytes on the wire. Here is ramlab's encoder on this machine
    (the README's performance table compares it with QEMU's C encoder; `benchmarks/bench_xbzrle.py`).
    Timings vary from run to run and machine to machine: they are not graded.
    """),
    code("""
    import time
    from ramlab import xbzrle
    rng = np.random.default_rng(2)
    old = rng.integers(0, 256, (2048, 4096), dtype=np.uint8)
    sparse = old.copy(); sparse[:, rng.integers(0, 4096, 16)] ^= 1
    dense = rng.integers(0, 256, (2048, 4096), dtype=np.uint8)
    for name, new in (("16 changed bytes per page", sparse), ("random rewrite (overflows)", dense)):
        t0 = time.perf_counter(); xbzrle.encode_batch(old, new); dt = time.perf_counter() - t0
        print(f"{name:28}: {2048 * 4096 / dt / MiB:7.0f} MiB/s of pages encoded, "
              f"{dt / (2048 * 4096) * 2**30:.2f} CPU s per GiB")
    """),
    md("""
    ## 5. Real captures: the same guest with and without XBZRLE

    `plain` and `xbzrle` are the same guest program, recorded with the same bandwidth and downtime rules;
    `xbzrle` had the capability on with a 4 MiB cache.
    """),
    code("""
    tp, tx = lab.trace("plain"), lab.trace("xbzrle")
    lab.table([(p, int(tp.bytes_per_pass()[p]), int(tx.bytes_per_pass()[p])) for p in range(min(tp.n_passes, tx.n_passes))],
              ["pass", "plain: bytes", "xbzrle: bytes"])
    """),
    code("""
    q = lab.meta("xbzrle")["query_migrate_final"]
    print("QEMU's xbzrle-cache counters:", q["xbzrle-cache"])
    print("downtime (ms): plain", lab.meta("plain")["query_migrate_final"]["downtime"], " xbzrle", q["downtime"])
    """),
    md("""
    ## Ours beside the paper's

    The paper reports downtime reduced *by a factor of 100* in a benchmark scenario. Our factor for the
    counters guest depends on the cache size (and is infinite when XBZRLE makes the last pass empty):
    """),
    code("""
    base = downtime_ms(plain_run)
    rows = [("Svärd et al., benchmark scenario (abstract)", "×100")]
    for c in (4, 16, 32):
        d = downtime_ms(runs[c])
        rows.append((f"ramlab, counters guest, {c} MiB cache", f"×{base / d:.0f}" if d > 0 else "no downtime left"))
    lab.table(rows, ["migration", "downtime without XBZRLE / with"])
    """),
    md("""
    **Reproduced:** a guest that cannot migrate without delta compression converges with it; downtime and
    total time fall by large factors when the cache holds the working set; a cache smaller than the
    working set (or a workload of dense rewrites) loses most of the gain. **Different from the paper:** its
    cache design and workloads (SAP ERP benchmarks, video streaming) differ from QEMU's direct-mapped cache
    and our synthetic guests, so only the shapes and orders of magnitude compare.

    ## Discussion

    * When is XBZRLE's CPU cost worth paying? Compare the encoder's throughput with the link's bandwidth.
    * Why does QEMU not use XBZRLE in the bulk pass?
    """),
]

"""Lab 02: dirty tracking and convergence (simulator + the `plain` capture's progress samples)."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "02-dirty-tracking-and-convergence"

CELLS = [
    md("""
    # 02 · Dirty tracking and convergence

    QEMU keeps a **dirty bitmap** per RAM block, one bit per page. At the start every bit is set, so the
    first lap sends everything (the *bulk stage*). A page's bit is cleared just *before* it is sent; if the
    guest writes it again, the next **bitmap sync** (pulling KVM/TCG's dirty log) sets it again.

    QEMU repeats laps while the remaining dirty memory is too big. Each time it asks "how much is left?"
    (`ram_save_pending`) it compares the answer with **bandwidth × downtime-limit**: the amount it can send
    while the guest is paused. Strictly below it, QEMU stops the guest, syncs one last time and sends the
    rest. Whether that ever happens depends on one ratio: **how fast the guest dirties memory vs how fast
    the link sends it.**

    **You will** compute the stop threshold, implement the simplest convergence model and QEMU's
    auto-converge rule, predict and then explore (with sliders) when a simulated migration converges, and
    explain a real capture's parameters. **Time** (planning figure, see TEACHING.md): about 60 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    *exercise(
        "conv-threshold", kind="predict", points=1, title="the stop threshold in pages",
        question="""
        With `max-bandwidth` 32 MiB/s and `downtime-limit` 300 ms (QEMU's defaults), how many dirty 4 KiB
        pages may *at most* remain for QEMU to stop the guest and send the rest? (QEMU compares bytes:
        `pending < bandwidth × downtime`.) Set `answer_conv_threshold` to an int.
        """,
        answer="2457",
        check="""lab.integer("conv-threshold", answer_conv_threshold, minimum=1)""",
        hidden="""
        _limit = 32 * 2**20 * 0.300
        assert lab.same_int(answer_conv_threshold, max(p for p in range(100000) if p * 4096 < _limit))
        """,
    ),
    md("""
    ## The simplest model: a geometric series

    Suppose each pass sends everything dirty at its start, and while it runs the guest dirties `D` bytes/s
    of pages not dirty yet. With bandwidth `B`, a pass that sends `R` bytes takes `R/B` s, so the next pass
    has `R·D/B` bytes: the remaining amount shrinks by the ratio `D/B` each pass. If `D < B` it converges
    geometrically; if `D ≥ B` it never does.
    """),
    code("""
    from bokeh.plotting import figure, show
    from bokeh.models import Span

    GiB, MiB = 2**30, 2**20
    B, downtime = 100 * MiB, 0.300
    f = figure(width=640, height=300, y_axis_type="log", x_axis_label="pass", y_axis_label="MiB left after the pass",
               title="1 GiB guest, 100 MiB/s: remaining dirty memory per pass (model)")
    for D, color in [(10 * MiB, "#009e73"), (50 * MiB, "#0072b2"), (90 * MiB, "#e69f00"), (110 * MiB, "#d55e00")]:
        f.line(list(range(1, 16)), [GiB * (D / B) ** k / MiB for k in range(1, 16)], color=color, line_width=2,
               legend_label=f"dirty {D // MiB} MiB/s")
    f.add_layout(Span(location=B * downtime / MiB, dimension="width", line_dash="dashed", line_color="black"))
    f.legend.location = "bottom_left"
    show(f)
    """),
    *exercise(
        "conv-geometric", kind="code", points=2, title="passes until the rest fits",
        question="""
        Write `geometric_passes(ram, bandwidth, dirty_rate, downtime, limit=1000)` for this model: start with
        `remaining = ram` bytes; each pass sends `remaining` (taking `remaining / bandwidth` s) while the guest
        dirties `dirty_rate` bytes/s, which become the next `remaining`. Return the number of passes (the bulk
        pass included) after which `remaining <= bandwidth * downtime`; return `None` if that never happens
        (as soon as a pass did not fit and `dirty_rate >= bandwidth`, or after `limit` passes).
        """,
        scaffold='''
        def geometric_passes(ram, bandwidth, dirty_rate, downtime, limit=1000):
            """Passes (bulk included) until what is left fits in bandwidth x downtime, or None."""
        ''',
        solution="""
        remaining = ram
        for p in range(1, limit + 1):
            remaining = remaining / bandwidth * dirty_rate
            if remaining <= bandwidth * downtime:
                return p
            if dirty_rate >= bandwidth:
                return None
        return None
        """,
        check="""
        lab.function("conv-geometric", geometric_passes, 4)
        assert geometric_passes(1000, 10, 20, 1) is None, "a guest dirtying faster than the link never fits"
        assert geometric_passes(100, 100, 1, 1) == 1, "100 bytes at 100 B/s: after the bulk pass 1 byte is left"
        """,
        hidden="""
        def _ref_passes(ram, bandwidth, dirty_rate, downtime, limit=1000):
            remaining, p = float(ram), 0
            while p < limit:
                p += 1
                remaining = remaining * dirty_rate / bandwidth
                if remaining <= bandwidth * downtime:
                    return p
                if dirty_rate >= bandwidth:
                    return None
            return None
        _g = lab.fresh.rng()
        _cases = [(int(2 ** _g.uniform(20, 36)), int(2 ** _g.uniform(20, 30)), int(2 ** _g.uniform(16, 31)),
                   float(_g.uniform(0.001, 1))) for _ in range(300)]
        _cases = [c for c in _cases if abs(c[2] / c[1] - 1) > 1e-9]
        lab.fresh.compare(geometric_passes, _ref_passes, _cases, star=True, name="geometric_passes")
        """,
    ),
    md("""
    The dashed line is bandwidth × downtime (30 MiB). Real guests are kinder than this model — they rewrite
    the same *hot* pages, so the dirty set saturates at the working-set size — and crueller: a busy guest
    can dirty GB/s.

    ## Simulating it

    `ramlab.simulate` runs QEMU's sender algorithm (the same bitmap, search and page-saving rules as
    `migration/ram.c`) against a synthetic guest workload and records a trace like a real capture. The
    `hotset` workload sends 95% of its writes to a hot set of 5% of the pages.
    """),
    *exercise(
        "conv-converge", kind="predict", points=1, title="will it converge?",
        question="""
        A 64 MiB guest runs `hotset` at a dirty rate of 8 MiB/s (its hot set is 5% of 64 MiB = 3.2 MiB).
        The link is limited to 4 MiB/s, the downtime limit is 300 ms, and we allow at most 15 passes.
        Predict:

        * (A) it converges after a few passes: the hot set is small, so each pass leaves less to send than the
          one before
        * (B) it converges, but only once the bulk pass has been sent twice and the cold pages are done
        * (C) it does not converge: the hot set alone exceeds bandwidth × downtime and is rewritten faster
          than sent

        Set `answer_conv_converge` to a letter, then run the experiment below.
        """,
        answer='"C"',
        check="""lab.choice("conv-converge", answer_conv_converge, "ABC")""",
        hidden="""assert lab.same_choice(answer_conv_converge, "C")
        """,
    ),
    code("""
    from ramlab.widgets import MigrationPlayer

    r = ramlab.simulate(ram="64M", workload="hotset", dirty_rate="8M", bandwidth="4M", downtime_ms=300,
                        max_passes=15, seed=1)
    print(f"converged: {r.converged}, passes: {r.trace.n_passes}, simulated time: {r.time_s:.1f} s")
    MigrationPlayer(r.trace)
    """),
    md("""
    When precopy does not converge, the simulator forces the completion at `max_passes`, with a downtime
    far above the limit — a real QEMU would keep going until an operator cancels it, throttles the guest or
    switches to postcopy. Try it yourself: the controls re-run the simulation (each run takes well under a
    second). Find the bandwidth at which this guest starts to converge, and what the hot-set size changes.
    """),
    code("""
    import ipywidgets as W

    def run(bandwidth, dirty_rate, hot_fraction, downtime_ms, auto_converge):
        r = ramlab.simulate(ram="64M", workload="hotset", dirty_rate=dirty_rate * MiB, bandwidth=bandwidth * MiB,
                            downtime_ms=downtime_ms, hot_fraction=hot_fraction, auto_converge=auto_converge,
                            max_passes=20, seed=1, record_dirty=False)
        rem = r.trace.counters["remaining"]
        thr = r.trace.counters.get("cpu_throttle_percentage", np.zeros(1))
        display(lab.table([(p, r.trace.pass_kinds[p], int(rem[p]), int(thr[p])) for p in range(r.trace.n_passes)],
                          ["pass", "kind", "dirty pages left", "CPU throttle %"],
                          caption=f"converged: {r.converged}; QEMU stops below "
                                  f"{bandwidth * MiB * downtime_ms / 1000 / 4096:.0f} pages; {r.time_s:.1f} s simulated"))

    lab.explore(run, auto=False, title="hotset guest, 64 MiB",
                bandwidth=W.IntSlider(value=4, min=1, max=64, description="MiB/s"),
                dirty_rate=W.IntSlider(value=8, min=1, max=64, description="dirty MiB/s"),
                hot_fraction=W.FloatSlider(value=0.05, min=0.01, max=0.5, step=0.01, description="hot fraction"),
                downtime_ms=W.IntSlider(value=300, min=10, max=2000, step=10, description="downtime ms"),
                auto_converge=W.Checkbox(value=False, description="auto-converge"))
    """),
    md("""
    ## Auto-converge

    If the guest outruns the link, QEMU can **throttle its vCPUs** (`auto-converge`). At each bitmap sync
    (at most once a second) it checks whether the guest dirtied more than half of what was sent in the
    period. Each such "high" period increments `dirty_rate_high_cnt`; when it reaches 2, it is reset and
    `throttle_down()` fires: the throttle becomes `cpu-throttle-initial` (20%) the first time, then
    grows by `cpu-throttle-increment` (10) each time, capped at 99. A period that is not high does not
    reset the counter.
    """),
    *exercise(
        "conv-throttle", kind="code", points=2, title="QEMU's throttle rule",
        question="""
        Write `throttle_after(high_periods, initial=20, increment=10, max_throttle=99)`: the CPU throttle (%)
        after `high_periods` "dirty rate high" periods, following the rule above (0 before it first fires).
        """,
        scaffold='''
        def throttle_after(high_periods, initial=20, increment=10, max_throttle=99):
            """CPU throttle (%) after that many 'dirty rate high' sync periods."""
        ''',
        solution="""
        cnt, throttle = 0, 0
        for _ in range(high_periods):
            cnt += 1
            if cnt >= 2:
                cnt = 0
                throttle = initial if throttle == 0 else min(throttle + increment, max_throttle)
        return throttle
        """,
        check="""
        lab.function("conv-throttle", throttle_after, 1)
        assert throttle_after(0) == 0 and throttle_after(1) == 0, "no throttle before the rule first fires"
        """,
        hidden="""
        def _ref_throttle(k, initial=20, increment=10, max_throttle=99):
            fires = k // 2
            if fires == 0:
                return 0
            return min(initial + (fires - 1) * increment, max_throttle)
        _g = lab.fresh.rng()
        _cases = [(k,) for k in range(0, 40)]
        _cases += [(int(_g.integers(0, 60)), int(_g.integers(1, 60)), int(_g.integers(1, 30)), int(_g.integers(60, 100)))
                   for _ in range(200)]
        _cases = [c for c in _cases if len(c) == 1 or c[1] <= c[3]]
        lab.fresh.compare(throttle_after, _ref_throttle, _cases, star=True, name="throttle_after")
        """,
    ),
    code("""
    for ac in (False, True):
        r = ramlab.simulate(ram="64M", workload="hotset", dirty_rate="8M", bandwidth="4M", downtime_ms=300,
                            max_passes=30, auto_converge=ac, seed=1, record_dirty=False)
        thr = r.trace.counters["cpu_throttle_percentage"]
        print(f"auto-converge={ac}: converged={r.converged}, passes={r.trace.n_passes}, "
              f"throttle per pass={thr.tolist()}")
    """),
    md("""
    ## A real capture

    Our `plain` capture (lab 00) was recorded with QEMU 7.2 and these parameters; `meta.json` also has QEMU's
    own progress samples (`query-migrate`) at each dirty sync.
    """),
    code("""
    meta = lab.meta("plain")
    params = meta["migrate_parameters_src"]
    print({k: params[k] for k in ("max-bandwidth", "downtime-limit")}, " relax rule:", meta.get("relax_rule"))
    rows = [(smp["t"], smp.get("status"), smp["dirty-sync-count"], smp["remaining"], smp["transferred"])
            for smp in meta["progress_samples"] if smp.get("dirty-sync-count")]
    lab.table(rows, ["time (s)", "status", "dirty syncs", "remaining bytes", "transferred bytes"],
              caption="QEMU's progress samples (query-migrate)")
    """),
    *exercise(
        "conv-relax", kind="explain", points=2, title="why the recorder relaxed the limit",
        question="""
        The guest of `plain` rewrites about 400 pages per pass (lab 00). The recorder started with a 1 ms
        downtime limit and raised it to 10 s after 4 dirty syncs. Using the parameters and samples above,
        why was that needed for the migration to finish?

        * (A) the link was too fast: QEMU cannot stop the guest while a pass is still being sent
        * (B) QEMU needs at least 4 dirty syncs before it may stop, whatever the downtime limit
        * (C) the guest stopped writing after 4 syncs, so only then could the last pass be short
        * (D) 8 MiB/s × 1 ms is two pages: `pending < bandwidth × downtime` could never hold

        Set `answer_conv_relax` to a letter.
        """,
        answer='"D"',
        check="""lab.choice("conv-relax", answer_conv_relax, "ABCD")""",
        hidden="""assert lab.same_choice(answer_conv_relax, "D")
        """,
    ),
    md("""
    ## What to remember

    * QEMU stops when `pending < max-bandwidth × downtime-limit`: a handful of pages for a low limit;
    * convergence is a race between the dirty rate of the *working set* and the link: more passes do not
      help once the remaining set is the working set (lab 07);
    * auto-converge wins the race by slowing the guest; postcopy (lab 05, 09) by not racing at all.
    """),
]

"""Lab 09: pre-copy vs post-copy (Hines & Gopalan, VEE 2009)."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "09-precopy-vs-postcopy"

CELLS = [
    md("""
    # 09 · Pre-copy vs post-copy — reproducing Hines & Gopalan, VEE 2009

    > M. R. Hines, K. Gopalan. *Post-Copy Based Live Virtual Machine Migration Using Adaptive Pre-Paging
    > and Dynamic Self-Ballooning.* VEE 2009, pp. 51–60.

    Post-copy sends the CPU and device state *first* and the memory after, on demand (network faults) and
    in the background (*active push*, improved by *pre-paging* around the faulting pages). The paper
    compares it with pre-copy on four metrics — pages transferred, total migration time, downtime and
    network faults — and adds pre-paging and *dynamic self-ballooning* to post-copy. Its claims are quoted
    in section 2, once you have predicted the outcome yourself.

    We compare QEMU's pre-copy and post-copy (ramlab's simulator, whose postcopy sends requested pages first
    and pushes the rest in the background), model post-copy *without* background push ourselves, and look at
    two real QEMU captures of the same guest. **You will** count pages transferred, compute network faults
    of pure demand paging, and predict the trade-offs. **Time** (planning figure, see TEACHING.md): about 55 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    md("""
    ## 1. Pages transferred

    Hines & Gopalan count the **pages transferred**: page data sent over the network. In a trace those are
    the records that carry a page's contents (or a delta of them): classes NORMAL, XBZRLE, XBZRLE_OVERFLOW,
    COMPRESSED, REQUESTED and POSTCOPY. ZERO records (9 bytes, no data), DISCARDED pages and unchanged
    XBZRLE pages carry none.
    """),
    *exercise(
        "pvp-transferred", kind="code", points=2, title="count the pages transferred",
        question="""
        Write `pages_transferred(trace)`: the number (an int) of page records of the migration that carry page
        data, as defined above, over all passes. Graded on new simulations (pre-copy and post-copy) and on real
        captures.
        """,
        scaffold='''
        def pages_transferred(trace):
            """Number of page records carrying page data (NORMAL, XBZRLE*, COMPRESSED, REQUESTED, POSTCOPY)."""
        ''',
        solution="""
        data = [PageClass.NORMAL, PageClass.XBZRLE, PageClass.XBZRLE_OVERFLOW, PageClass.COMPRESSED,
                PageClass.REQUESTED, PageClass.POSTCOPY]
        return int(np.isin(trace.classes, data).sum())
        """,
        check="""
        lab.function("pvp-transferred", pages_transferred, 1)
        from ramlab.trace import Trace
        tiny = Trace.from_classes(np.array([[1, 2, 2, 1], [0, 7, 9, 8]], np.uint8))
        got = pages_transferred(tiny)
        assert lab.same_int(got, 4), f"ZERO, NORMAL, NORMAL, ZERO then -, DISCARDED, POSTCOPY, REQUESTED: got {got!r}"
        """,
        hidden="""
        def _ref_transferred(tr):
            keep = {2, 3, 5, 6, 8, 9}
            return int(sum(np.count_nonzero(tr.classes == k) for k in keep))
        _g = lab.fresh.rng()
        _cases = [lab.fresh.simulation(_g, postcopy=bool(i % 2), postcopy_after=1, template=None,
                                       workload=str(_g.choice(["uniform", "counters", "hotset"])),
                                       dirty_rate=int(_g.integers(8, 32)) << 20, bandwidth=16 << 20).trace
                  for i in range(4)]
        _cases += [lab.trace("postcopy"), lab.trace("xbzrle"), lab.trace("compress")]
        lab.fresh.compare(pages_transferred, _ref_transferred, _cases, name="pages_transferred",
                          same=lambda a, e: lab.same_int(a, e), describe=lambda tr: tr.meta.get("name"))
        """,
    ),
    md("""
    ## 2. The comparison on the simulator

    A 64 MiB guest, a 32 MiB/s link, QEMU's default 300 ms downtime limit, and four workloads writing
    24 MiB/s. Post-copy switches after the bulk pass (`postcopy_after=1`). The **downtime** is, for
    pre-copy, the last pass's bytes over the bandwidth; for post-copy, the time from stopping the source to
    the destination's `POSTCOPY_RUN` (discards and device state), from the simulator's log.
    """),
    code("""
    MiB = 1 << 20

    def migrate(workload, postcopy, dirty_mib=24, postcopy_after=1, seed=1, **kw):
        return ramlab.simulate(ram=64 * MiB, workload=workload, dirty_rate=dirty_mib * MiB, bandwidth=32 * MiB,
                               postcopy=postcopy, postcopy_after=postcopy_after, max_passes=20, seed=seed, **kw)

    def downtime_ms(r):
        if r.postcopy is not None and r.postcopy.switched:
            stop = next(e["time_ms"] for e in r.log if e["kind"] == "switchover")
            return float(r.trace.counters["time_ms"][r.trace.pass_kinds.index("postcopy")] - stop)
        return 1000 * float(r.trace.bytes_per_pass()[-1]) / r.params["bandwidth"]
    """),
    *exercise(
        "pvp-pages", kind="predict", points=1, title="which sends fewer pages?",
        question="""
        For the `uniform` workload (writes spread over all of RAM at 24 MiB/s, on a 32 MiB/s link), which
        migration transfers fewer pages?

        * (A) post-copy: after the switch each page goes once; pre-copy resends what each round rewrote
        * (B) pre-copy: it sends pages before the guest needs them, so no page ever has to be requested
        * (C) the same: every page must be sent once either way, whatever the order

        Set `answer_pvp_pages` to a letter, then run the comparison.
        """,
        answer='"A"',
        check="""lab.choice("pvp-pages", answer_pvp_pages, "ABC")""",
        hidden="""assert lab.same_choice(answer_pvp_pages, "A")
        """,
    ),
    code("""
    results = {}
    rows = []
    for wl, extra in (("uniform", {}), ("counters", {}), ("sweep", {}), ("hotset", {"hot_fraction": 0.1})):
        for pc in (False, True):
            r = migrate(wl, pc, **extra)
            results[wl, pc] = r
            rows.append((wl, "post-copy" if pc else "pre-copy", r.converged or (r.postcopy is not None and r.postcopy.switched),
                         pages_transferred(r.trace), f"{r.time_s:.2f}", f"{downtime_ms(r):.0f}", int(r.counters["faults"])))
    lab.table(rows, ["workload", "scheme", "completed", "pages transferred", "total time (s)", "downtime (ms)",
                     "network faults"])
    """),
    code("""
    from bokeh.plotting import figure, show
    from bokeh.layouts import row
    from bokeh.transform import dodge
    from bokeh.models import ColumnDataSource
    wls = ["uniform", "counters", "sweep", "hotset"]
    src = ColumnDataSource({"wl": wls,
                            "pre_pages": [pages_transferred(results[w, False].trace) for w in wls],
                            "post_pages": [pages_transferred(results[w, True].trace) for w in wls],
                            "pre_time": [results[w, False].time_s for w in wls],
                            "post_time": [results[w, True].time_s for w in wls]})
    figs = []
    for key, label in (("pages", "pages transferred"), ("time", "total migration time (s)")):
        f = figure(x_range=wls, width=380, height=280, title=label)
        f.vbar(x=dodge("wl", -0.17, range=f.x_range), top=f"pre_{key}", width=0.3, source=src, color="#0072b2",
               legend_label="pre-copy")
        f.vbar(x=dodge("wl", 0.17, range=f.x_range), top=f"post_{key}", width=0.3, source=src, color="#e69f00",
               legend_label="post-copy")
        f.legend.location = "bottom_right"
        figs.append(f)
    show(row(*figs))
    """),
    md("""
    The paper's claims, from its abstract:

    1. compared with pre-copy, post-copy improves *"pages transferred, total migration time and network
       overhead"*: each page is sent (at most) once, so a write-heavy guest no longer makes the source resend
       its working set round after round;
    2. pre-paging *"eliminate[s] all duplicate page transmissions"* and reduces *"the number of network-bound
       page faults to within 21% of the VM's working set for large workloads"* (the later journal version
       reports 17%);
    3. dynamic self-ballooning avoids sending free pages (QEMU's counterpart: free pages are zero pages, sent
       as 9-byte ZERO records).

    Where pre-copy converges after one or two passes (a light or well-localised load), both schemes do the
    same: there is nothing left to post-copy. Where the guest keeps rewriting pages, post-copy sends fewer
    pages, finishes sooner and stops the guest for milliseconds — at the price of **network faults**: the
    running destination waits on the network for every page it touches before it arrives.

    ## 3. How long to pre-copy before switching?
    """),
    *exercise(
        "pvp-after", kind="predict", points=1, title="more pre-copy before the switch",
        question="""
        Keep `uniform` at 24 MiB/s, but switch to post-copy after 1, 2, 3 then 4 pre-copy passes
        (`postcopy_after`). As the switch comes later:

        * (A) more faults and more pages: each extra pre-copy pass dirties pages that fault later
        * (B) fewer faults, more pages: more is on the destination at the switch, some of it sent twice
        * (C) no change: post-copy sends every page once anyway, whenever the switch comes

        Set `answer_pvp_after` to a letter, then run the sweep.
        """,
        answer='"B"',
        check="""lab.choice("pvp-after", answer_pvp_after, "ABC")""",
        hidden="""assert lab.same_choice(answer_pvp_after, "B")
        """,
    ),
    code("""
    rows = []
    for after in (1, 2, 3, 4):
        r = migrate("uniform", True, postcopy_after=after)
        rows.append((after, bool(r.postcopy.switched), int(r.counters["faults"]), pages_transferred(r.trace),
                     f"{r.time_s:.2f}"))
    lab.table(rows, ["pre-copy passes before the switch", "switched", "network faults", "pages transferred", "total s"])
    """),
    md("""
    Vary it yourself: workload, dirty rate, when to switch, and the postcopy bandwidth cap
    (`max-postcopy-bandwidth`, 0 = the link).
    """),
    code("""
    import ipywidgets as W

    def run(workload, dirty_rate, postcopy, postcopy_after, postcopy_mib):
        r = migrate(workload, postcopy, dirty_mib=dirty_rate, postcopy_after=postcopy_after,
                    postcopy_bandwidth=postcopy_mib * MiB)
        switched = r.postcopy is not None and r.postcopy.switched
        display(lab.table([(switched, pages_transferred(r.trace), f"{r.time_s:.2f}", f"{downtime_ms(r):.0f}",
                            int(r.counters["faults"]))],
                          ["switched to post-copy", "pages transferred", "total s", "downtime ms", "network faults"]))

    lab.explore(run, auto=False, title="64 MiB guest, 32 MiB/s link",
                workload=W.Dropdown(options=["uniform", "counters", "sweep", "hotset"], value="uniform"),
                dirty_rate=W.IntSlider(value=24, min=1, max=96, description="dirty MiB/s"),
                postcopy=W.Checkbox(value=True, description="post-copy"),
                postcopy_after=W.IntSlider(value=1, min=0, max=8, description="switch after"),
                postcopy_mib=W.IntSlider(value=0, min=0, max=32, description="pc MiB/s"))
    """),
    md("""
    ## 4. Post-copy without background push

    The simulator's post-copy always pushes the remaining pages in the background. Without any push (pure
    *demand paging*), a page moves only when the destination guest touches it: each first touch of a page
    that is not there is a **network fault**, and pages the guest never touches stay on the source — the
    *residual dependency* the paper's pre-paging removes.
    """),
    *exercise(
        "pvp-demand", kind="code", points=3, title="faults of pure demand paging",
        question="""
        Write `demand_faults(touches, resident)`: `touches` is the destination guest's page accesses over time, a
        list of integer arrays (one per time step, in order); `resident` a bool array, `True` for the pages the
        destination already has at the switch. Pure demand paging: the first access to a non-resident page is a
        fault and makes it resident. Return the number of faults (an int).
        """,
        scaffold='''
        def demand_faults(touches, resident):
            """Network faults of pure demand paging: first touches of non-resident pages."""
        ''',
        solution="""
        have = np.array(resident, bool)
        faults = 0
        for step in touches:
            pages = np.unique(np.asarray(step, np.int64))
            miss = pages[~have[pages]]
            faults += miss.size
            have[miss] = True
        return int(faults)
        """,
        check="""
        lab.function("pvp-demand", demand_faults, 2)
        got = demand_faults([np.array([0, 1, 1]), np.array([1, 2])], np.array([True, False, False]))
        assert lab.same_int(got, 2), f"pages 1 and 2 fault once each: got {got!r}"
        """,
        hidden="""
        def _ref_faults(touches, resident):
            have = set(np.flatnonzero(resident).tolist())
            n = 0
            for step in touches:
                for p in step:
                    if int(p) not in have:
                        have.add(int(p))
                        n += 1
            return n
        _g = lab.fresh.rng()
        _cases = []
        for _ in range(60):
            _n = int(_g.integers(1, 3000))
            _res = _g.random(_n) < _g.random()
            _t = [_g.integers(0, _n, int(_g.integers(0, 100))) for _ in range(int(_g.integers(0, 40)))]
            _cases.append((_t, _res))
        lab.fresh.compare(demand_faults, _ref_faults, _cases, star=True, name="demand_faults",
                          same=lambda a, e: lab.same_int(a, e), describe=lambda c: f"{len(c[0])} steps over {len(c[1])} pages")
        """,
    ),
    md("""
    Now compare the simulated post-copy (with background push) with pure demand paging over the same time.
    At the switch the destination lacks the pages discarded then; the guest's accesses come from the same
    workload (a new run of it: the simulator's own stream of accesses is internal).
    """),
    code("""
    from ramlab.model.guest import Guest
    from ramlab.model.workloads import make_workload

    r = results["uniform", True]
    discarded = (r.trace.classes == PageClass.DISCARDED).any(axis=0)
    resident = ~discarded
    seconds = r.time_s - next(e["time_ms"] for e in r.log if e["kind"] == "switchover") / 1000
    guest = Guest.from_sizes([(b.name, b.length) for b in r.trace.blocks])
    w = make_workload("uniform", dirty_rate=24 * MiB, seed=7)
    w.attach(guest)
    touches = [w.step(guest, 0.01) for _ in range(int(seconds / 0.01))]
    touched = np.unique(np.concatenate(touches))
    no_push = demand_faults(touches, resident)
    print(f"missing at the switch: {discarded.sum()} pages; postcopy phase: {seconds:.2f} s")
    lab.table([("with background push (simulator)", int(r.counters["faults"]), 0),
               ("pure demand paging (this model)", no_push, int((discarded & ~np.isin(np.arange(discarded.size), touched)).sum()))],
              ["post-copy", "network faults", "pages still on the source at the end"])
    """),
    md("""
    The paper's second claim in our terms: faults as a fraction of the pages the guest touched after the
    switch (its working set over that period). Theirs is *within 21%* with adaptive pre-paging; plain
    background push in QEMU's order is not pre-paging (it does not push the neighbours of a fault first),
    so expect a larger fraction, but far below demand paging's.
    """),
    code("""
    ws = int(np.isin(touched, np.flatnonzero(discarded)).sum())
    lab.table([("Hines & Gopalan, adaptive pre-paging (abstract)", "≤ 21%"),
               ("ramlab simulator, background push", f"{100 * r.counters['faults'] / max(ws, 1):.0f}%"),
               ("pure demand paging (this model)",
                f"{100 * no_push / max(ws, 1):.0f}%" if no_push is not None else "(write demand_faults above)")],
              ["post-copy", "network faults / working set touched after the switch"])
    """),
    md("""
    ## 5. Real captures of the same guest

    `plain` (pre-copy) and `postcopy` were recorded with the same guest program and link limit (8 MiB/s;
    post-copy at `max-postcopy-bandwidth` 1 MiB/s, switched after 2 dirty syncs). QEMU's own counters give the
    total time and downtime; the page requests came back on the return path.
    """),
    code("""
    rows = []
    for name in ("plain", "postcopy"):
        q = lab.meta(name)["query_migrate_final"]
        rows.append((name, pages_transferred(lab.trace(name)), q["total-time"], q["downtime"],
                     q["ram"]["postcopy-requests"]))
    lab.table(rows, ["capture", "pages transferred", "total time (ms)", "downtime (ms)", "page requests"])
    """),
    md("""
    Post-copy transferred fewer pages (after the switch each page went once), but took *longer*: its
    background push was limited to 1 MiB/s (`max-postcopy-bandwidth`) while pre-copy had 8 MiB/s, and this
    small guest (a working set of ~400 pages) lets pre-copy converge quickly anyway. Post-copy pays off when
    the guest writes faster than the link (section 2).

    ## 6. `release-ram`

    With post-copy, the source can also give the guest's RAM back to its host during the migration: the
    `release-ram` capability.
    """),
    *exercise(
        "pvp-release", kind="predict", points=1, title="what release-ram changes",
        question="""
        Run the `uniform` post-copy migration again with `release_ram=True`. What changes?

        * (A) fewer pages transferred: pages released on the source need not be sent
        * (B) a shorter downtime: the source has less memory to walk when it stops the guest
        * (C) nothing on the wire: the same pages go out, and the source frees each one once sent

        Set `answer_pvp_release` to a letter, then run the next cell.
        """,
        answer='"C"',
        check="""lab.choice("pvp-release", answer_pvp_release, "ABC")""",
        hidden="""assert lab.same_choice(answer_pvp_release, "C")
        """,
    ),
    code("""
    rr = migrate("uniform", True, release_ram=True)
    base = results["uniform", True]
    print(f"pages transferred: {pages_transferred(base.trace)} without, {pages_transferred(rr.trace)} with release-ram")
    print(f"source pages released: {int(rr.counters['released'])} of {rr.trace.n_pages}")
    """),
    md("""
    `release-ram` changes nothing on the wire: the source frees each page's memory once it has been sent,
    so the migrated VM's memory is not held twice.

    **Reproduced:** post-copy transfers fewer pages and finishes sooner than pre-copy for write-heavy
    guests, with a downtime of milliseconds; its cost is network faults, which background push reduces far
    below demand paging's and which more pre-copy before the switch reduces further (at the price of
    duplicates). **Not reproduced:** the paper's adaptive pre-paging itself (QEMU pushes in address order)
    and its self-ballooning; our guests are synthetic.

    ## Discussion

    * Post-copy's failure mode: what happens to the VM if the network breaks after the switch? (Lab 05.)
    * Which would you choose for a 1 TB database VM on a 10 Gbit/s link, and why?
    """),
]

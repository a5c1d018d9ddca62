"""Lab 07: the writable working set (Clark et al., NSDI 2005)."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "07-writable-working-set"

CELLS = [
    md("""
    # 07 · The writable working set — reproducing Clark et al., NSDI 2005

    > C. Clark, K. Fraser, S. Hand, J. G. Hansen, E. Jul, C. Limpach, I. Pratt, A. Warfield.
    > *Live Migration of Virtual Machines.* NSDI 2005.

    This is the paper that made iterative pre-copy the standard (Xen first, then QEMU/KVM). Three of its
    claims are tested here (the second is quoted in section 2, once you have predicted it):

    1. **A writable working set (WWS).** Pages are not dirtied uniformly: a small set of *hot* pages is
       written over and over, plus a slowly growing tail. Counting the distinct pages dirtied in tracking
       windows of increasing length, the curve rises fast and then flattens (the paper's WWS curves, §4).
    2. **What more pre-copy rounds buy.** The paper analyses how the expected downtime depends on the number
       of pre-copy rounds and on the bandwidth (§4), and draws a rule from it for when to stop iterating.
    3. **Small downtimes in practice:** *"an OS running the SPECweb benchmark [migrated] with only 210 ms
       unavailability, or an OS running a Quake 3 server ... with just 60 ms downtime"* (§1; 60 ms is also
       in the abstract).

    The numbers quoted are from the paper's abstract and introduction; the curve shapes from its §4
    figures. The paper used Xen on a gigabit LAN with real workloads; we use QEMU's algorithm in ramlab's
    simulator with synthetic workloads, and real QEMU captures. **You will** measure a WWS curve, predict
    what more rounds and more bandwidth do to the downtime, and find the WWS in a real capture. **Time** (planning figure, see TEACHING.md): about 50 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    md("""
    ## 1. Measuring a writable working set

    The simulator's workloads are the guests: `workload.step(guest, dt)` runs the guest for `dt` seconds
    and returns the pages it wrote (its dirty log). We record 20 s of three workloads in 10 ms steps:
    `hotset` (95% of the writes to 10% of the pages), `uniform` (writes anywhere) and `counters` (counters
    in a working set of 25% of the pages).
    """),
    code("""
    from ramlab.model.guest import Guest
    from ramlab.model.workloads import make_workload

    def dirty_log(name, seconds=20.0, step=0.01, ram=64 << 20, rate=16 << 20, seed=1, **params):
        guest = Guest.from_sizes([("pc.ram", ram)])
        w = make_workload(name, dirty_rate=rate, seed=seed, **params)
        w.attach(guest)
        return [w.step(guest, step) for _ in range(int(seconds / step))]

    logs = {"hotset": dirty_log("hotset", hot_fraction=0.1), "uniform": dirty_log("uniform"),
            "counters": dirty_log("counters")}
    print({k: len(v) for k, v in logs.items()}, "steps;", "first step of hotset:", logs["hotset"][0][:5], "...")
    """),
    *exercise(
        "wws-curve", kind="code", points=3, title="distinct pages per window",
        question="""
        Write `wws(steps, window)`: `steps` is a dirty log (a list of integer arrays, the pages written in each
        step); cut it into consecutive, non-overlapping windows of `window` steps (drop an incomplete last
        window) and return the **mean number of distinct pages** written per window, as a float. (`window=1`
        is the mean number of distinct pages per step.)
        """,
        scaffold='''
        def wws(steps, window):
            """Mean number of distinct pages dirtied per window of `window` steps (float)."""
        ''',
        solution="""
        n = len(steps) // window
        counts = [np.unique(np.concatenate([np.asarray(s, np.int64) for s in steps[i * window:(i + 1) * window]])).size
                  for i in range(n)]
        return float(np.mean(counts))
        """,
        check="""
        lab.function("wws-curve", wws, 2)
        got = wws([np.array([1, 2]), np.array([2, 3]), np.array([7])], 2)
        assert isinstance(got, float) and got == 3.0, f"windows [1,2]+[2,3] (3 distinct pages), the [7] dropped: got {got!r}"
        """,
        hidden="""
        def _ref_wws(steps, window):
            total = 0
            n = len(steps) // window
            for i in range(n):
                seen = set()
                for s in steps[i * window:(i + 1) * window]:
                    seen.update(int(x) for x in s)
                total += len(seen)
            return total / n
        _g = lab.fresh.rng()
        _cases = []
        for _ in range(25):
            _log = [_g.integers(0, int(_g.integers(2, 3000)), int(_g.integers(0, 80))) for _ in range(int(_g.integers(5, 120)))]
            _cases.append((_log, int(_g.integers(1, 5))))
        _cases.append((dirty_log("hotset", seconds=1.0, seed=int(_g.integers(1 << 30))), 10))
        lab.fresh.compare(wws, _ref_wws, _cases, star=True, name="wws",
                          same=lambda a, e: isinstance(a, float) and abs(a - e) <= 1e-9 * max(1.0, e),
                          describe=lambda c: f"a log of {len(c[0])} steps, window {c[1]}")
        """,
    ),
    code("""
    from bokeh.plotting import figure, show
    windows = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    f = figure(width=660, height=320, x_axis_type="log", x_axis_label="tracking window (s)",
               y_axis_label="distinct pages dirtied", title="WWS curves (ramlab simulator, 64 MiB guest, 16 MiB/s of writes)")
    for (name, log), color in zip(logs.items(), ["#d55e00", "#0072b2", "#009e73"]):
        f.line([w * 0.01 for w in windows], [wws(log, w) for w in windows], line_width=2, color=color, legend_label=name)
    f.legend.location = "top_left"
    show(f)
    """),
    md("""
    The `hotset` and `counters` curves have the paper's shape: steep, then flat at the working-set size (1638
    and 4096 pages), with a slow tail (the 5% of hotset writes that land anywhere). `uniform` has no working
    set: it keeps growing until it covers all of RAM — the worst case for pre-copy.

    ## 2. More rounds, less downtime?

    We migrate the hotset guest (24 MiB/s of writes, hot set 10% of 64 MiB) and force the completion after
    a given number of rounds (`max_passes`, with a tiny downtime limit so that QEMU never stops by itself).
    The **downtime** is then the last (stop-and-copy) pass: its bytes divided by the bandwidth.
    """),
    code("""
    MiB = 1 << 20

    def downtime_ms(bandwidth_mib, rounds, hot_fraction=0.1, dirty_mib=24, seed=1):
        r = ramlab.simulate(ram=64 * MiB, workload="hotset", dirty_rate=dirty_mib * MiB, bandwidth=bandwidth_mib * MiB,
                            max_passes=rounds, downtime_ms=1, hot_fraction=hot_fraction, seed=seed,
                            template=False, record_dirty=False)
        return 1000 * float(r.trace.bytes_per_pass()[-1]) / (bandwidth_mib * MiB)

    print(f"16 MiB/s, 3 rounds: downtime {downtime_ms(16, 3):.0f} ms")
    """),
    *exercise(
        "wws-rounds", kind="predict", points=1, title="twice as many rounds",
        question="""
        With the 16 MiB/s link (slower than the guest's 24 MiB/s of writes), going from **6 to 12** pre-copy
        rounds, the downtime:

        * (A) roughly halves: each extra round shrinks what is left to send when the guest is stopped
        * (B) roughly doubles: more rounds give the guest more time to dirty more of its pages
        * (C) barely changes: after a few rounds, what is left is what the guest rewrites per round

        Set `answer_wws_rounds` to a letter, then run the sweep below.
        """,
        answer='"C"',
        check="""lab.choice("wws-rounds", answer_wws_rounds, "ABC")""",
        hidden="""assert lab.same_choice(answer_wws_rounds, "C")
        """,
    ),
    code("""
    rounds = [2, 3, 4, 6, 8, 12]
    sweep = {bw: [downtime_ms(bw, k) for k in rounds] for bw in (16, 32, 64)}
    f = figure(width=660, height=320, x_axis_label="pre-copy rounds (passes, the last one stop-and-copy)",
               y_axis_label="downtime (ms)", title="Downtime vs rounds (simulated hotset guest)")
    for (bw, ys), color in zip(sweep.items(), ["#d55e00", "#0072b2", "#009e73"]):
        f.line(rounds, ys, line_width=2, color=color, legend_label=f"{bw} MiB/s")
        f.scatter(rounds, ys, color=color, size=6)
    show(f)
    lab.table([(bw, *[f"{y:.0f}" for y in ys]) for bw, ys in sweep.items()], ["MiB/s", *[f"{k} rounds" for k in rounds]],
              caption="downtime in ms")
    """),
    md("""
    At 16 MiB/s the curve levels off at about *hot set / bandwidth* (1638 pages × 4 KiB / 16 MiB/s ≈
    400 ms). This is the paper's claim 2, the **diminishing returns of pre-copy rounds**: each round only
    needs to resend what was dirtied during the previous one; once that is the WWS, further rounds do not
    shrink it, and the expected downtime levels off (§4, the downtime-vs-iterations analysis). So pre-copy
    should stop after a few rounds, not iterate until nothing is dirty.
    """),
    *exercise(
        "wws-bandwidth", kind="explain", points=2, title="what bandwidth buys",
        question="""
        From the table above: after 6 rounds, doubling the bandwidth from 16 to 32 MiB/s divides the downtime by
        much more than 2. Why?

        * (A) downtime = remaining / bandwidth, and remaining shrinks too: shorter rounds, fewer rewrites
        * (B) the simulator sends pages twice as fast *and* compresses them: the two gains multiply
        * (C) a faster link lets QEMU skip the hot pages until the final stop-and-copy pass
        * (D) it is noise: one simulation per point, and another random seed would give quite another ratio

        Set `answer_wws_bandwidth` to a letter.
        """,
        answer='"A"',
        check="""lab.choice("wws-bandwidth", answer_wws_bandwidth, "ABCD")""",
        hidden="""assert lab.same_choice(answer_wws_bandwidth, "A")
        """,
    ),
    md("""
    The remaining set is not a constant: at higher bandwidths the rounds get shorter, so the guest rewrites
    fewer of its hot pages during each (and the last, short round leaves some of them clean) — the plateau
    is lower and is reached later.

    Xen's pre-copy stopped iterating when a round no longer paid off. Write that stop rule.
    """),
    *exercise(
        "wws-stop", kind="code", points=2, title="when to stop iterating",
        question="""
        Write `stop_round(remaining, gain=0.1)`: `remaining[k]` is the number of dirty pages left after round
        `k`. Return the first round `k >= 1` whose round shrank what is left by less than the fraction `gain`
        (`remaining[k] > (1 - gain) * remaining[k - 1]`), or `None` if every round shrank it enough.
        """,
        scaffold='''
        def stop_round(remaining, gain=0.1):
            """First round k >= 1 with remaining[k] > (1 - gain) * remaining[k - 1], else None."""
        ''',
        solution="""
        r = np.asarray(remaining, float)
        bad = np.flatnonzero(r[1:] > (1 - gain) * r[:-1])
        return int(bad[0]) + 1 if bad.size else None
        """,
        check="""
        lab.function("wws-stop", stop_round, 1)
        assert stop_round([1000, 500, 480, 470]) == 2, "500 -> 480 shrinks by only 4%: stop at round 2"
        assert stop_round([1000, 100, 10]) is None, "every round shrinks by 90%"
        """,
        hidden="""
        def _ref_stop(remaining, gain=0.1):
            for k in range(1, len(remaining)):
                if remaining[k] > (1 - gain) * remaining[k - 1]:
                    return k
            return None
        _g = lab.fresh.rng()
        _cases = []
        for _ in range(300):
            _n = int(_g.integers(1, 15))
            _r = np.maximum(0, (10000 * np.cumprod(_g.uniform(0.05, 1.1, _n)))).astype(int).tolist()
            _cases.append((_r, float(_g.choice([0.05, 0.1, 0.3]))))
        _sim = ramlab.simulate(ram="16M", workload="hotset", dirty_rate="12M", bandwidth="8M", max_passes=10,
                               downtime_ms=1, template=False, seed=int(_g.integers(1 << 30)))
        _cases.append((_sim.trace.counters["remaining"][:-1].tolist(), 0.1))
        lab.fresh.compare(stop_round, _ref_stop, _cases, star=True, name="stop_round",
                          same=lambda a, e: (a is None and e is None) or (a is not None and e is not None and int(a) == e))
        """,
    ),
    md("""
    Explore it yourself: the hot-set size, the dirty rate, the bandwidth and the rounds.
    """),
    code("""
    import ipywidgets as W

    def run(bandwidth, dirty_rate, hot_fraction, rounds):
        d = downtime_ms(bandwidth, rounds, hot_fraction=hot_fraction, dirty_mib=dirty_rate)
        hot = hot_fraction * 64 * MiB
        print(f"downtime {d:.0f} ms;  hot set / bandwidth = {1000 * hot / (bandwidth * MiB):.0f} ms")

    lab.explore(run, auto=False, title="hotset guest, 64 MiB",
                bandwidth=W.IntSlider(value=16, min=4, max=128, description="MiB/s"),
                dirty_rate=W.IntSlider(value=24, min=1, max=128, description="dirty MiB/s"),
                hot_fraction=W.FloatSlider(value=0.1, min=0.01, max=0.5, step=0.01, description="hot fraction"),
                rounds=W.IntSlider(value=6, min=2, max=20, description="rounds"))
    """),
    md("""
    ## 3. A real capture

    Back to the real `plain` capture of lab 00. How many pages does each pass send after the bulk one, and
    how does that compare with what is left at QEMU's dirty syncs?
    """),
    code("""
    t = lab.trace("plain")
    sent = (t.wire_bytes > 0).sum(axis=1)
    samples = [s for s in lab.meta("plain")["progress_samples"] if s.get("dirty-sync-count")]
    print("pages sent per pass:", sent.tolist())
    print("remaining at each dirty sync (pages):", [s["remaining"] // 4096 for s in samples])
    """),
    *exercise(
        "wws-real", kind="explain", points=2, title="the WWS of a real guest",
        question="""
        After the bulk pass, `plain` sends about the same number of pages in every pass, and QEMU's
        `remaining` never drops much below it. What is that number?

        * (A) the pages QEMU resends after every dirty sync to be safe, whether dirtied or not
        * (B) the bandwidth × downtime limit in pages: QEMU fills each pass up to that amount
        * (C) the guest's zero pages, which QEMU sends again in every pass as ZERO records
        * (D) the guest's writable working set: the regions it rewrites every pass (about 1.6 MiB)

        Set `answer_wws_real` to a letter.
        """,
        answer='"D"',
        check="""lab.choice("wws-real", answer_wws_real, "ABCD")""",
        hidden="""assert lab.same_choice(answer_wws_real, "D")
        """,
    ),
    md("""
    ## Ours beside the paper's

    Downtime is *remaining / bandwidth* at the stop; the paper's two headline numbers next to ours (the
    real `plain` capture's downtime is QEMU's own `downtime` counter in `meta.json`; its link was limited to
    8 MiB/s, but QEMU sends the last pass at full speed once the guest is stopped).
    """),
    code("""
    rows = [("Clark et al.: SPECweb99 on Xen, gigabit LAN", "paper §1", 210),
            ("Clark et al.: Quake 3 server on Xen, gigabit LAN", "paper abstract, §1", 60),
            ("ramlab simulator: hotset, 16 MiB/s, 12 rounds", "this lab", round(sweep[16][-1])),
            ("ramlab simulator: hotset, 64 MiB/s, 6 rounds", "this lab", round(sweep[64][3])),
            ("real QEMU 7.2 capture `plain` (16 MiB guest)", "meta.json downtime",
             lab.meta("plain")["query_migrate_final"]["downtime"])]
    lab.table(rows, ["migration", "source", "downtime (ms)"])
    """),
    md("""
    **Reproduced:** the WWS curve shape (steep, then flat at the hot set), the levelling-off of downtime
    with rounds at roughly WWS / bandwidth, and downtimes of tens to hundreds of ms when the link outpaces
    the WWS. **Not reproduced:** the paper's exact workloads and hardware; our guests are synthetic, and a
    workload without a working set (`uniform`) never reaches a plateau.

    ## Discussion

    * Why does pre-copy need a *stop rule* at all, rather than iterating until nothing is dirty?
    * The WWS depends on the tracking window: what window matters for a migration?
    """),
]

"""Lab 10: steer a migration — predict, watch a real QEMU migrate live, rescue it (or replay a recording)."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "10-steer-a-migration"


def _raises(cell):  # type: ignore[no-untyped-def]
    """Tag a cell that needs the student's answers: "Run All" goes on past it until they are written."""
    cell.metadata["tags"] = ["raises-exception"]
    return cell


CELLS = [
    md("""
    # 10 · Steer a migration

    Every lab so far looked at migrations after they ended. Here you watch one **while QEMU migrates**:
    ramlab starts a real QEMU running its tiny test guest, records the migration through its proxy and
    decodes every chunk as it crosses the socket; the page map and the per-pass bars grow as the records
    arrive, beside QEMU's own `query-migrate` counters. Then you **steer** it, as an operator would.

    QEMU's stop rule (lab 02): at each bitmap sync, if the dirty memory left, `pending`, is below
    **`max-bandwidth × downtime-limit`**, QEMU stops the guest and sends the rest; otherwise it starts another
    pass. The test guest is made to test that rule. Every ~2 ms it rewrites the same pages: one dword of each
    page of a 1 MiB *counter* region (256 pages), a 32 KiB region of random bytes (8 pages) and a 512 KiB
    *alternating* region (128 pages, zero on even passes), and its status page. Whatever the migration does,
    at every sync those pages — its **writable working set** — are all dirty again.

    **You will** predict whether a migration converges, run it live, measure the working set from the live
    trace, compute the smallest rescue and apply it to the running migration. **Needs** `qemu-system-x86_64`
    (Debian/Ubuntu: `apt-get install qemu-system-x86`; Binder has it). Without it the lab says so and replays
    a bundled recording of the same experiment at its recorded pace, through the same live decoder: every
    exercise can still be answered. **Time** (planning figure, see TEACHING.md): about 45 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    code("""
    from ramlab.capture import qemu_available, watch_or_replay
    from ramlab.errors import CaptureError
    MiB = 2**20
    print("QEMU installed: the migration runs live." if qemu_available()
          else "No QEMU here: the lab replays a recording (see the message below when it starts).")
    """),
    *exercise(
        "steer-converge", kind="predict", points=1, title="will it converge?",
        question="""
        We migrate the 16 MiB test guest with `max-bandwidth` 4 MiB/s and `downtime-limit` 100 ms; nothing
        relaxes them. Its working set is about 394 pages (1.5 MiB). Predict:

        * (A) it never converges as it is: each pass ends with the working set dirty, too much for 100 ms
          at 4 MiB/s
        * (B) it converges after a few passes: each pass leaves fewer dirty pages than the one before
        * (C) it converges as soon as the bulk pass (the first, all of RAM) is over and only the working set
          is left to send

        Set `answer_steer_converge` to a letter, then start the migration below.
        """,
        answer='"A"',
        check="""lab.choice("steer-converge", answer_steer_converge, "ABC")""",
        hidden="""assert lab.same_choice(answer_steer_converge, "A")""",
    ),
    md("""
    ## Run it live

    `watch_or_replay` starts the migration and returns at once: QEMU migrates in the background (a replay,
    where there is no QEMU, goes at half the recorded pace: the recording lasts 4 s), ramlab decodes in a
    background thread, and the view below updates up to ten times a second while you keep
    working. The page map shows the pass being sent (its legend names each colour: vermillion for normal
    pages, sky blue for zero pages, grey for not sent yet in this pass); the bottom chart shows QEMU's
    remaining dirty pages (the thin line) against the dashed line, `max-bandwidth × downtime-limit` in
    pages: QEMU stops the guest only when the remaining pages dip below the dashed line *at a sync*. The fields under the charts call `migrate-set-parameters` on the running QEMU.
    """),
    code("""
    run = watch_or_replay("steer", bandwidth="4M", downtime_ms=100, timeout=300, speed=0.5)
    view = run.widget()
    view
    """),
    code("""
    run.wait_for(passes=10, timeout=60)   # a few seconds: ten passes of the live migration
    rows = [(p.index, p.kind, sum(p.pages.values()), round(p.t, 2)) for p in run.passes]
    fits = run.parameters["max-bandwidth"] * run.parameters["downtime-limit"] / 1000 / 4096
    display(lab.table(rows, ["pass", "kind", "pages sent", "complete at (s)"],
                      caption=f"status: {run.status}; what fits in the downtime limit: {fits:.0f} pages"))
    q = [s for s in run.samples if "ram.dirty-pages-rate" in s][-1]
    print(f"QEMU now: dirty rate {q['ram.dirty-pages-rate']} pages/s "
          f"({q['ram.dirty-pages-rate'] * 4096 / MiB:.1f} MiB/s), expected downtime {q.get('expected-downtime')} ms, "
          f"dirty syncs {q['ram.dirty-sync-count']}")
    """),
    *exercise(
        "steer-rate", kind="explain", points=1, title="the dirty rate is the wrong number",
        question="""
        QEMU reports a dirty rate well above the link's 4 MiB/s. By lab 02's geometric model (dirty rate ≥
        bandwidth) this migration could never converge, whatever the downtime limit. Yet you are about to
        rescue it by raising the downtime limit alone. Which explanation fits what the table shows?

        * (A) QEMU reports the dirty rate in bytes per second, not in pages: the table shows it 4096 times too
          big, and the guest really dirties far less per second than the 4 MiB/s link can send
        * (B) what must fit at a sync is the dirty *set*, the same few hundred pages however short the round;
          the *rate* (pages found dirty per second of the last round) grows as rounds shorten
        * (C) raising the downtime limit also raises the bandwidth QEMU may use: the link then outpaces the
          guest's dirty rate, and lab 02's geometric model converges after all

        Set `answer_steer_rate` to a letter.
        """,
        answer='"B"',
        check="""lab.choice("steer-rate", answer_steer_rate, "ABC")""",
        hidden="""assert lab.same_choice(answer_steer_rate, "B")""",
    ),
    *exercise(
        "steer-working-set", kind="code", points=2, title="the working set, from the live trace",
        question="""
        Write `working_set_pages(trace)`: the median, over the trace's passes of kind `"precopy"`, of the
        number of pages sent in the pass (any class but `NOT_SENT` and `DISCARDED`), as an `int` rounded down;
        `0` if the trace has no `"precopy"` pass. (`trace.classes` is `[passes, pages]`, `trace.pass_kinds` the
        kinds.) The median ignores the odd short pass, when a sync falls in the middle of a lap. Graded on
        other captures and new simulations.
        """,
        scaffold='''
        def working_set_pages(trace):
            """Median pages sent per precopy pass (rounded down), 0 without precopy passes."""
        ''',
        solution="""
        sent = (trace.classes != PageClass.NOT_SENT) & (trace.classes != PageClass.DISCARDED)
        per_pass = [int(sent[p].sum()) for p, kind in enumerate(trace.pass_kinds) if kind == "precopy"]
        return int(np.median(per_pass)) if per_pass else 0
        """,
        check="""
        lab.function("steer-working-set", working_set_pages, 1)
        W = working_set_pages(run.trace)
        print(f"working set of the live migration: {W} pages = {W * 4096 / MiB:.2f} MiB")
        """,
        hidden="""
        def _ref_wss(trace):
            sent = (trace.classes != PageClass.NOT_SENT) & (trace.classes != PageClass.DISCARDED)
            per = [int(sent[p].sum()) for p, k in enumerate(trace.pass_kinds) if k == "precopy"]
            return int(np.median(per)) if per else 0
        _cases = list(lab.fresh.other_traces().values())
        _g = lab.fresh.rng()
        _cases += [lab.fresh.simulation(_g).trace for _ in range(4)]
        lab.fresh.compare(working_set_pages, _ref_wss, _cases, name="working_set_pages",
                          describe=lambda t: repr(t))
        """,
    ),
    *exercise(
        "steer-min-downtime", kind="code", points=2, title="the smallest downtime limit that rescues it",
        question="""
        Write `min_downtime_ms(pages, bandwidth, page_size=4096)`: the smallest **whole number of
        milliseconds** `d` for which `pages` dirty pages fit, i.e. `pages * page_size < bandwidth * d / 1000`
        (QEMU stops when `pending` is strictly below the threshold). `bandwidth` is in bytes/s. Use integer
        arithmetic: graded on fresh values, up to terabytes.
        """,
        scaffold='''
        def min_downtime_ms(pages, bandwidth, page_size=4096):
            """Smallest whole ms d with pages * page_size < bandwidth * d / 1000."""
        ''',
        solution="""
        return pages * page_size * 1000 // bandwidth + 1
        """,
        check="""
        lab.function("steer-min-downtime", min_downtime_ms, 2)
        assert min_downtime_ms(1, 4096 * 1000) == 2, "1 page at 4096000 B/s takes exactly 1 ms: 1 ms is not below"
        """,
        hidden="""
        def _ref_min_ms(pages, bandwidth, page_size=4096):
            return pages * page_size * 1000 // bandwidth + 1
        _g = lab.fresh.rng()
        _cases = [(int(_g.integers(1, 1 << 28)), int(_g.integers(1 << 10, 1 << 40)), int(_g.choice([4096, 2 << 20])))
                  for _ in range(500)]
        _cases += [(k * 4096, 4096 * 1000 * 4096 // 1000 * 1000, 4096) for k in range(1, 20)]
        lab.fresh.compare(min_downtime_ms, _ref_min_ms, _cases, star=True, name="min_downtime_ms")
        """,
    ),
    md("""
    ## Rescue it

    One parameter, set on the running migration. QEMU compares with the bandwidth it *measured* over the
    last 100 ms, a little below `max-bandwidth`, so we give the rule 50% of margin. (A replay cannot be
    steered: it shows what the recording's operator did.)
    """),
    _raises(code("""
    W = working_set_pages(run.trace)   # (fails until you wrote the two functions above)
    rescue_ms = min_downtime_ms(W, run.parameters["max-bandwidth"]) * 3 // 2
    print(f"working set {W} pages -> downtime-limit {rescue_ms} ms")
    if run.replay:
        done = [c for c in run.meta["control_commands"] if c["event"] == "migrate-set-parameters"]
        print(f"replay: the recording was rescued at t = {done[0]['t']:.2f} s with {done[0]['arguments']}")
    elif run.status == "migrating":
        try:
            run.set_parameters(downtime_limit=rescue_ms)
        except CaptureError as exc:  # it ended between the two lines (a slow guest dirties less)
            print(f"too late to steer: {exc}")
    else:
        print(f"nothing to steer: the migration is already {run.status}")
    converged = run.wait_for(timeout=30)  # until the migration is over
    print(f"status: {run.status} after {len(run.passes)} passes")
    """)),
    code("""
    view.player()   # the whole migration, pass by pass (MigrationPlayer)
    """),
    *exercise(
        "steer-bandwidth", kind="predict", points=1, title="or more bandwidth?",
        question="""
        Instead of the downtime limit, an operator could have raised `max-bandwidth` and left `downtime-limit`
        at 100 ms. With a working set of 394 pages, what is the smallest `max-bandwidth`, in **whole MiB/s**,
        for which the working set fits? Set `answer_steer_bandwidth` to an int.
        """,
        answer="16",
        check="""lab.integer("steer-bandwidth", answer_steer_bandwidth, minimum=1, maximum=100000)""",
        hidden="""
        _need = 394 * 4096
        assert lab.same_int(answer_steer_bandwidth, min(m for m in range(1, 1000) if _need < m * 2**20 * 0.1))
        """,
    ),
    md("""
    More bandwidth also makes every pass shorter, so QEMU syncs more often — but the guest has rewritten its
    whole working set long before each sync, so the set to send stays the same. With XBZRLE (lab 03) most of
    those pages would go out as small deltas, yet QEMU 7.2's rule still counts them as whole pages: try
    `watch_or_replay("steer", bandwidth="4M", downtime_ms=100, xbzrle=True)` when you have a QEMU.

    **Discuss.** Who should steer: QEMU (auto-converge, which throttles the guest's CPUs), the operator, or an
    orchestrator that knows the service's tolerance for downtime? What would you show an operator so that the
    decision is obvious at a glance?
    """),
    code("""
    run.stop()        # cancels the migration if it is still running (nothing to do once it completed)
    run.wait(60)
    print(run.status, "- capture folder:", run.folder)
    """),
]

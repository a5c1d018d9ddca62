"""Lab 05: postcopy — the switch, discards, host pages, page requests, recovery."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "05-postcopy"

REF_MODERN = '''
def _ref_modern(dirty, r):
    """QEMU >= 4.2: canonicalise partly dirty host pages, then the maximal runs (target pages)."""
    bmap = [bool(x) for x in dirty]
    n = len(bmap)
    for h in range(0, n, r):
        if any(bmap[h:h + r]):
            bmap[h:h + r] = [True] * len(bmap[h:h + r])
    out, i = [], 0
    while i < n:
        if bmap[i]:
            j = i
            while j < n and bmap[j]:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out
'''

CELLS = [
    md("""
    # 05 · Postcopy

    Precopy may never converge. **Postcopy** flips the order: after a few precopy passes the source stops
    the guest, sends the device state, and the guest **resumes on the destination** right away with some of
    its memory still missing. A page the guest touches that is not there yet **faults**; the destination
    asks the source for it over the **return path**, while the source keeps pushing the rest in the
    background. Downtime is small and bounded; the price is that a network failure now hits a VM whose
    memory is split between two hosts.

    At the switch, the destination may hold *stale* copies of pages that were re-dirtied after they were
    sent. The source tells it to throw those away: the **discard** commands.

    **You will** read a real postcopy stream and its return path, compute discard ranges for huge pages as
    QEMU does, turn faults into page requests, and see postcopy recover from a broken connection.
    **Time** (planning figure, see TEACHING.md): about 55 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    code("""
    m = lab.migration("postcopy")   # fwd-0.bin + the return path ret-0.bin
    cmds = [e for e in m.events if type(e).__name__ == "Command"]
    lab.events_table(cmds, m.data, n=len(cmds))
    """),
    md("""
    The sequence at the switch: `POSTCOPY_RAM_DISCARD` (block name + up to 12 `(start, length)` byte
    ranges per command), `PING 2`, then one `PACKAGED` command whose blob is a small stream of its own —
    `LISTEN`, every device's state, `PING 3`, `RUN` — so the destination can read it in one go before
    starting the guest. After that, RAM pages keep flowing in the outer stream. In the player, the
    discard is a pass of DISCARDED pages, then come the postcopy pages: pushed in the background
    (POSTCOPY) or sent because the running destination asked for them (REQUESTED).
    """),
    code("""
    m.player()
    """),
    md("""
    ## Huge pages: whole host pages or nothing

    A destination backed by huge pages (2 MiB or 1 GiB on x86) can only place (and drop) **whole host
    pages**, atomically.
    So before discarding, the source rounds every partly dirty host page to a wholly dirty one
    (*canonicalisation*). QEMU ≥ 4.2 does it in one pass and sends each maximal run of the dirty map
    once. The seed algorithm (QEMU ~3.0) did it in two passes over an extra `unsent` map (pages never sent
    at all): first the host pages partly *unsent*, then those partly *dirty* (and sent), discarding each
    fixed host page as it goes — then it sends every run of `unsent | dirty`, so some ranges go twice.
    """),
    *exercise(
        "postcopy-seed-ranges", kind="explain", points=2, title="the seed algorithm's discards",
        question="""
        Host pages are 4 target pages. `dirty = [0,0,1,0, 0,1,1,1, 0,0,0,0, 0,0,0,1]`,
        `unsent = [0,0,0,0, 0,1,1,1, 0,0,0,0, 0,0,0,0]`. Which discard ranges does the **seed** algorithm send,
        in wire order, as `(start, n_pages)` in target pages? Work it out by hand, set
        `answer_postcopy_seed_ranges` to a list of pairs, then run the cells below.
        """,
        answer="[(4, 4), (0, 4), (12, 4), (0, 8), (12, 4)]",
        check="""lab.ranges("postcopy-seed-ranges", answer_postcopy_seed_ranges)""",
        hidden="""
        from ramlab.model.postcopy_plan import plan_discards as _plan
        _d = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1], bool)
        _u = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool)
        assert lab.same_ranges(answer_postcopy_seed_ranges, _plan(_d, _u, 4, "seed").ranges)
        """,
    ),
    code("""
    from ramlab.model.postcopy_plan import plan_discards
    dirty = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1], bool)
    unsent = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    for algorithm in ("seed", "modern"):
        plan = plan_discards(dirty, unsent, host_ratio=4, algorithm=algorithm)
        print(f"{algorithm:6}: {[(st.name, st.sent) for st in plan.steps]}")
    """),
    md("""
    `PostcopyDiscardView` walks through the same steps on the host-page grid (rows of one host page): the
    maps before and after each step, the host pages it fixed up, the ranges it sent (duplicates in
    magenta), and the POSTCOPY_RAM_DISCARD commands with their payload bytes.
    """),
    code("""
    from ramlab.widgets import PostcopyDiscardView
    PostcopyDiscardView((dirty, unsent), host_ratio=4, block="pc.ram")
    """),
    *exercise(
        "postcopy-modern", kind="code", points=3, title="QEMU's discard ranges",
        question="""
        Write `modern_discards(dirty, host_ratio)`, the QEMU ≥ 4.2 algorithm: `dirty` is a bool array over
        the target pages of a block (its length a multiple of `host_ratio`). Make every host page that has a
        dirty target page wholly dirty, then return the maximal runs of dirty pages as a list of
        `(start, n_pages)` tuples in target pages, in increasing order. Write it yourself: `plan_discards` and
        the run helpers of `ramlab.model` are unavailable while your function is graded. Vectorise if you
        can; it is graded on random bitmaps and host ratios.
        """,
        scaffold='''
        def modern_discards(dirty, host_ratio):
            """[(start, n_pages)]: runs of the dirty map after rounding to whole host pages."""
        ''',
        solution="""
        d = np.asarray(dirty, bool).reshape(-1, host_ratio).any(axis=1).repeat(host_ratio)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], d.astype(np.int8), [0]))))
        return [(int(s), int(e - s)) for s, e in zip(edges[0::2], edges[1::2])]
        """,
        check="""
        lab.function("postcopy-modern", modern_discards, 2)
        got = modern_discards(np.array([0, 1, 0, 0, 0, 0, 0, 0], bool), 4)
        assert lab.same_ranges(got, [(0, 4)]), f"one dirty page in host page 0 of 2: got {got!r}"
        """,
        hidden=REF_MODERN + """
_g = lab.fresh.rng()
_cases = []
for _ in range(300):
    _r = int(_g.choice([1, 2, 4, 8, 512]))
    _n = _r * int(_g.integers(1, 12 if _r < 512 else 3))
    _cases.append((lab.fresh.bitmap(_g, _n), _r))
lab.fresh.compare(modern_discards, _ref_modern, _cases, star=True, name="modern_discards",
                  same=lambda a, e: lab.same_ranges(a, e),
                  forbid=["ramlab.model.postcopy_plan.plan_discards", "ramlab.model.postcopy_plan.bitmap_runs",
                          "ramlab.model.postcopy_plan.run_pairs"],
                  describe=lambda c: f"{c[0].astype(int).tolist()[:64]} with host ratio {c[1]}")
""",
    ),
    md("""
    ## Huge pages on the wire
    """),
    *exercise(
        "postcopy-huge-request", kind="predict", points=1, title="the size of a page request",
        question="""
        In the real capture `postcopy-hugepages` the guest RAM block `m0` is backed by huge pages: their size
        is in the `PSize` column of QEMU's `info ramblock`, saved as
        `lab.meta("postcopy-hugepages")["info_ramblock_src"]`. When the running destination faults on one
        4 KiB target page of `m0`, how many **bytes** does its page request (on the return path) ask for?
        Set `answer_postcopy_huge_request` to an int, then run the next cell.
        """,
        answer="2 * 1024 * 1024",
        check="""lab.integer("postcopy-huge-request", answer_postcopy_huge_request, minimum=1)""",
        hidden="""
        _info = lab.meta("postcopy-hugepages")["info_ramblock_src"]
        _line = next(l for l in _info.splitlines() if l.split() and l.split()[0] == "m0")
        _num, _unit = _line.split()[1:3]
        assert lab.same_int(answer_postcopy_huge_request, int(float(_num) * {"KiB": 1024, "MiB": 1 << 20}[_unit]))
        """,
    ),
    code("""
    mh = lab.migration("postcopy-hugepages")
    print("blocks:", [(b.name, b.page_size) for b in mh.blocks][:2])
    print("discards:", [(b, hex(s), hex(n)) for b, s, n in mh.discards])
    print("requests:", [(r.block, hex(r.start), hex(r.length)) for r in mh.requests])
    PostcopyDiscardView.from_migration(mh)
    """),
    md("""
    A destination asks for each host page **once**: the fault thread remembers what it has requested and
    is still waiting for, and a fault on another target page of the same host page waits for that request.
    """),
    *exercise(
        "postcopy-requests", kind="code", points=2, title="from faults to requests",
        question="""
        Write `requests_for_faults(faults, host_ratio)`: `faults` is the sequence (in time order) of target
        pages the destination guest faulted on; return the list of requests it sends, as the **first target
        page of each host page**, in order, each host page at most once (nothing arrives meanwhile).
        """,
        scaffold='''
        def requests_for_faults(faults, host_ratio):
            """First target page of each requested host page, in request order, each once."""
        ''',
        solution="""
        seen, out = set(), []
        for f in faults:
            h = int(f) // host_ratio * host_ratio
            if h not in seen:
                seen.add(h)
                out.append(h)
        return out
        """,
        check="""
        lab.function("postcopy-requests", requests_for_faults, 2)
        got = requests_for_faults([5, 1, 6, 0], 4)
        assert list(got) == [4, 0], f"faults 5, 1, 6, 0 with host pages of 4: got {got!r}"
        """,
        hidden="""
        def _ref_requests(faults, r):
            hs = [int(f) - int(f) % r for f in faults]
            return [h for i, h in enumerate(hs) if h not in hs[:i]]
        _g = lab.fresh.rng()
        _cases = [(_g.integers(0, int(_g.integers(1, 5000)), int(_g.integers(0, 300))).tolist(),
                   int(_g.choice([1, 4, 512]))) for _ in range(200)]
        lab.fresh.compare(requests_for_faults, _ref_requests, _cases, star=True, name="requests_for_faults",
                          same=lambda a, e: [int(x) for x in a] == e, describe=lambda c: f"{len(c[0])} faults, ratio {c[1]}")
        """,
    ),
    md("""
    ## When the connection breaks: postcopy recovery

    After the switch, neither side has the whole VM. If the connection breaks, QEMU pauses postcopy (the
    guest waits on its missing pages) and, once a new connection is up, **recovers** (`migrate-recover` on
    the destination, `migrate` with `resume: true` on the source) and carries on. The simulator models a
    break after a given number of postcopy pages: the section on the wire at that moment is lost.
    """),
    *exercise(
        "postcopy-recovery", kind="predict", points=1, title="what is sent after a recovery",
        question="""
        After the recovery, which pages does the source send?

        * (A) all of RAM again: the destination's copy can no longer be trusted, so postcopy starts over
        * (B) only the pages the destination had requested before the break, then the migration ends
        * (C) only what was dirty at the switch and not yet sent: the pages lost on the wire are gone
        * (D) every page the destination says it has not received, those lost on the wire included

        Set `answer_postcopy_recovery` to a letter, then run the next cells.
        """,
        answer='"D"',
        check="""lab.choice("postcopy-recovery", answer_postcopy_recovery, "ABCD")""",
        hidden="""assert lab.same_choice(answer_postcopy_recovery, "D")
        """,
    ),
    code("""
    r = ramlab.simulate(ram="16M", workload="uniform", dirty_rate="16M", bandwidth="16M", postcopy=True,
                        postcopy_after=1, postcopy_pause_after=1000, seed=3, stream=True)
    for event in r.log:
        if event["kind"] in ("switchover", "pause", "resume"):
            print(event)
    pr = ramlab.open(r.stream)
    print("commands:", pr.summary()["commands"])
    """),
    code("""
    dst = r.postcopy.destination_received
    print("every page arrived in the end:", bool(dst.all()), " decode error:", pr.error)
    pr.player()
    """),
    md("""
    How the source knows what is missing: once reconnected, it asks the destination for its **received
    bitmap** of each block (`RECV_BITMAP`, answered on the return path), marks every page not in it dirty
    again — the pages lost with the broken connection included — and resumes (`POSTCOPY_RESUME`).
    """),
    md("""
    ## What to remember

    * postcopy bounds the downtime: the guest runs on the destination right after the device state;
    * huge pages force whole-host-page discards and requests: one dirty 4 KiB page costs 2 MiB;
    * the destination's received bitmap makes a broken postcopy recoverable: lost pages are sent again.
    """),
]

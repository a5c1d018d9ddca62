"""Lab 00: a tour of a real QEMU live migration (the `plain` capture)."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "00-tour"

CELLS = [
    md("""
    # 00 · A tour of a real QEMU live migration

    Live migration moves a running VM from one host to another. The guest keeps running while its RAM is
    copied, so QEMU copies it **iteratively**: first every page (the *bulk stage*), then again every page
    the guest wrote meanwhile, pass after pass, until what is left is small enough to send while the guest
    is paused for a moment (the *downtime*). Everything QEMU sends goes into one byte stream.

    This lab opens a **real stream** recorded from QEMU 7.2 (a 16 MiB guest running ramlab's test
    program, which writes memory in known patterns) and looks at it from the top.

    **You will** open a capture, name its parts (sections, RAM blocks, target pages, passes, page
    classes), check ramlab's decode against QEMU's own counters, and write two small functions over
    a `Trace`. **Time** (planning figure, see TEACHING.md): about 40 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    md("""
    `ramlab.open` decodes a whole capture folder (or a stream file, or bytes). It never raises on a
    damaged stream; `m.error` says what went wrong, if anything.
    """),
    code("""
    m = ramlab.open(lab.sample("plain"))
    s = m.summary()
    print("decoded to the end:", s["complete"], " error:", m.error)
    print("sections:", s["sections"])
    print("machine:", s["machine_type"], " target page size:", s["target_page_size"])
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
    lab.table([(b["name"], b["length"], b["length"] // s["target_page_size"]) for b in s["blocks"]],
              ["block", "bytes", "target pages"])
    """),
    md("""
    The guest program (ramlab's, `ramlab/capture/guest/guest.S`) uses only a few regions of `pc.ram`;
    the rest of the 16 MiB it never writes:

    | region | address in `pc.ram`, size | what the guest does |
    |---|---|---|
    | status | 0x300000, 1 page | a magic string and a pass counter, updated every pass |
    | counter | 0x400000, 1 MiB | filled once with data; every pass increments one dword in each page |
    | random | 0x800000, 32 KiB | rewritten with pseudo-random bytes every pass |
    | alternating | 0xA00000, 512 KiB | on odd passes filled with data, on even passes cleared to zero |
    | 0xFF | 0xC00000, 256 KiB | written once: all bytes 0xFF |
    | data once | 0xD00000, 256 KiB | written once with data |
    """),
    *exercise(
        "tour-bulk", kind="predict", points=1, title="what the bulk pass is made of",
        question="""
        In the bulk pass every page of every block is sent once. A page whose 4096 bytes are all zero
        goes out as a 9-byte **ZERO** record; any other page as a **PAGE** record carrying the whole
        page. Knowing the guest's memory map above, predict the bulk pass of this capture:

        * (A) far more ZERO records than PAGE records: most of `pc.ram` was never written
        * (B) far more PAGE records than ZERO records: firmware and guest code leave data in most pages
        * (C) about as many of each: half of the regions in the map hold data, half are empty

        Set `answer_tour_bulk` to a letter, then run the check.
        """,
        answer='"A"',
        check="""lab.choice("tour-bulk", answer_tour_bulk, "ABC")""",
        hidden="""assert lab.same_choice(answer_tour_bulk, "A"), "the guest touches a few MiB of its 16 MiB"
        """,
    ),
    md("""
    ## Passes and page classes

    `m.trace` is a numpy view of the migration: for every **pass** (one lap of the dirty-page scan over all
    blocks) and every page, how it was sent (its *class*) and how many bytes its record took
    (`trace.wire_bytes`, 0 when the page was not sent in that pass). The page axis is all blocks one after
    the other (`trace.blocks[i].offset` is where block *i* starts).
    """),
    code("""
    t = m.trace
    counts = t.class_counts()
    used = [k for k in range(1, len(CLASS_NAMES)) if counts[:, k].any()]
    lab.table([(p, t.pass_kinds[p], *counts[p, used], int(t.bytes_per_pass()[p])) for p in range(t.n_passes)],
              ["pass", "kind", *[CLASS_NAMES[k] for k in used], "bytes"])
    """),
    md("""
    Pass 0 is the bulk stage. Later passes send only what the guest dirtied since the previous **bitmap
    sync**. The last pass is `complete`: the guest is stopped and the rest goes out.

    Now write two functions over a `Trace`. A page counts as **sent in a pass** when its record took bytes
    on the wire in that pass (`trace.wire_bytes[p, g] > 0`): ZERO, PAGE, XBZRLE, compressed, requested or
    pushed in postcopy. They must work on *any* trace: they are graded on other captures and on new
    simulations.
    """),
    *exercise(
        "tour-sent-per-pass", kind="code", points=2, title="pages sent per pass",
        question="""
        Write `pages_sent_per_pass(trace)`: a numpy integer array with, for each pass, the number of pages
        sent in that pass. One line of numpy is enough.
        """,
        scaffold='''
        def pages_sent_per_pass(trace):
            """int array [n_passes]: pages whose record took bytes on the wire, per pass."""
        ''',
        solution="""return (trace.wire_bytes > 0).sum(axis=1)""",
        check="""
        from ramlab.trace import Trace
        lab.function("tour-sent-per-pass", pages_sent_per_pass, 1)
        tiny = Trace.from_classes(np.array([[1, 2, 2, 1], [0, 2, 0, 0]], np.uint8))
        tiny.wire_bytes[:] = [[9, 4104, 4104, 9], [0, 4104, 0, 0]]
        got = lab.as_int_array(pages_sent_per_pass(tiny), length=2, name="pages_sent_per_pass(tiny)")
        assert got.tolist() == [4, 1], f"on a 2-pass, 4-page trace: got {got.tolist()}"
        print("pages sent per pass in `plain`:", pages_sent_per_pass(t).tolist())
        """,
        hidden="""
        _g = lab.fresh.rng()
        _cases = list(lab.fresh.other_traces("plain").values())
        _cases += [lab.fresh.simulation(_g).trace for _ in range(3)]
        lab.fresh.compare(pages_sent_per_pass, lambda tr: np.count_nonzero(tr.wire_bytes, axis=1), _cases,
                          name="pages_sent_per_pass", same=lab.same_array, describe=lambda tr: tr.meta.get("name"))
        """,
    ),
    *exercise(
        "tour-resent", kind="code", points=2, title="pages sent more than once",
        question="""
        Every page sent again after the bulk pass is bandwidth spent twice. Write `resent_pages(trace)`: the
        global page indices (sorted, ascending, a numpy integer array) of the pages sent in **two or more**
        passes.
        """,
        scaffold='''
        def resent_pages(trace):
            """sorted int array: global indices of pages sent in at least two passes."""
        ''',
        solution="""return np.flatnonzero((trace.wire_bytes > 0).sum(axis=0) >= 2)""",
        check="""
        lab.function("tour-resent", resent_pages, 1)
        got = lab.as_int_array(resent_pages(tiny), name="resent_pages(tiny)")
        assert got.tolist() == [1], f"on the 4-page trace above: got {got.tolist()}"
        r = resent_pages(t)
        print(f"{len(r)} pages of `plain` were sent more than once")
        """,
        hidden="""
        def _ref_resent(tr):
            sent = np.zeros(tr.n_pages, np.int64)
            for p in range(tr.n_passes):
                sent += tr.wire_bytes[p] != 0
            return np.array([g for g in range(tr.n_pages) if sent[g] > 1], np.int64)
        _g = lab.fresh.rng()
        _cases = list(lab.fresh.other_traces("plain").values())
        _cases += [lab.fresh.simulation(_g).trace for _ in range(3)]
        lab.fresh.compare(resent_pages, _ref_resent, _cases, name="resent_pages", same=lab.same_array,
                          describe=lambda tr: tr.meta.get("name"))
        """,
    ),
    md("""
    ## Where the resent pages are

    `BitmapView` draws one pass as a page map (one pixel per page here, 128 pages per row = 512 KiB per
    row; hover for the block and offset). The player steps through all passes: press play or drag the
    slider.
    """),
    code("""
    m.player()
    """),
    *exercise(
        "tour-zero-again", kind="explain", points=2, title="zero pages sent again",
        question="""
        In passes 1 and 2 some pages go out as **ZERO** records although the bulk pass had already sent
        every page. Find *which* pages they are (`t.classes[p] == PageClass.ZERO`, and `t.block_of(g)` or the
        offsets) and compare with the guest's memory map above. Why are they sent again as ZERO records?

        * (A) QEMU re-sends every zero page in each pass, to be safe against lost records
        * (B) they are pages of the video RAM, which QEMU re-sends whenever the display changes
        * (C) the link lost the bulk pass's copies of them, so QEMU sends those pages again
        * (D) the guest cleared a region it had filled with data: dirty pages, now all zero

        Set `answer_tour_zero_again` to a letter.
        """,
        answer='"D"',
        check="""lab.choice("tour-zero-again", answer_tour_zero_again, "ABCD")""",
        hidden="""assert lab.same_choice(answer_tour_zero_again, "D"), "the alternating region at 0xA00000"
        """,
    ),
    md("""
    ## Is it right? QEMU's own counters

    The capture folder's `meta.json` holds what QEMU itself reported at the end (`query-migrate`). Its
    `normal` counter is the number of PAGE records and `duplicate` the number of ZERO records: ramlab's
    decode agrees exactly — which is how every capture in `ramlab/data` is checked.
    """),
    code("""
    ram = lab.meta("plain")["query_migrate_final"]["ram"]
    lab.table([("ZERO records", ram["duplicate"], m.records["zero"]),
               ("PAGE records", ram["normal"], m.records["page"])], ["", "QEMU says", "ramlab decoded"])
    """),
    md("""
    ## What to remember

    * a migration stream = sections; RAM = blocks of 4 KiB target pages; one lap over them = a pass;
    * the bulk pass sends everything once (mostly 9-byte ZERO records for an idle guest);
    * later passes send only what the guest dirtied: the pages you found with `resent_pages` are the
      guest's *working set*, the subject of lab 07.
    """),
]

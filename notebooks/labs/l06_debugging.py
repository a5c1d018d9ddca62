"""Lab 06: debugging a damaged capture."""

from textwrap import dedent

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "06-debugging-a-capture"

ERRORS = """
* (A) `Illegal RAM offset`
* (B) `Unknown combination of migration flags`
* (C) `Unknown ramblock`
* (D) a missing section footer
"""

CELLS = [
    md("""
    # 06 · Debugging a damaged capture

    A capture from a failed migration, a truncated pcap, a disk with a bad sector: QEMU's loader stops at
    the first thing it cannot parse with a terse message (`Unknown combination of migration flags`,
    `Illegal RAM offset`, ...) and throws everything away. ramlab stops at the same place but **keeps
    everything decoded before it** and tells you the byte offset.

    We damage the real `plain` stream in several ways (`lab.damaged(kind)`), find each problem, and write
    two small tools a debugger needs. **You will** locate damage by byte offset, predict the error each
    kind of damage produces, and compare RAM images. **Time** (planning figure, see TEACHING.md): about 50 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    code("""
    good = lab.stream_bytes("plain")
    print(len(good), "bytes in the intact stream;", lab.TRUNCATE_AT, "bytes kept in the truncated one")
    """),
    md("""
    ## 1. Truncated

    The recording stopped early: `lab.damaged("truncated")` is the first `lab.TRUNCATE_AT` bytes of the
    stream. The last item in it is cut in the middle.
    """),
    *exercise(
        "debug-truncated", kind="explain", points=2, title="where does the cut item start?",
        question="""
        At which byte offset does the item that was cut in the middle start? Find it with the tools of this
        course (`ramlab.open` on the bytes, `m.error`, `m.events`, `lab.events_table`...) and set
        `answer_debug_truncated` to an int. (Not `lab.TRUNCATE_AT`: that is where the data ends.)
        """,
        answer='ramlab.open(lab.damaged("truncated")).error.offset',
        check="""lab.integer("debug-truncated", answer_debug_truncated, minimum=0)""",
        hidden="""assert lab.same_int(answer_debug_truncated, lab.ref_walk(lab.damaged("truncated")).cut)
        """,
    ),
    md("""
    The inspector jumps to the error: the red row is where decoding stopped, and the hex view shows the
    bytes around it. Everything before the damage is usable: the trace covers the passes seen so far, and
    the RAM image has every page received.
    """),
    code("""
    m = ramlab.open(lab.damaged("truncated"))
    ins = m.inspector()
    ins.jump_to_error()
    ins
    """),
    code("""
    t = m.trace
    received = (t.wire_bytes > 0).any(axis=0)
    blk = t.blocks[0]
    print(f"{t.n_passes} passes decoded; {received[blk.offset:blk.offset + blk.n_pages()].sum()} of {blk.n_pages()} "
          f"pages of {blk.name} received")
    """),
    md("""
    ## 2. One flipped bit

    `lab.damaged("flipped")` has a single bit flipped (0x40) in the flag byte of a `ZERO | CONTINUE` record
    (flags 0x22) in the middle of a long run of ZERO records. The record keeps its size, so the reader
    reaches it in step.
    """),
    *exercise(
        "debug-flipped", kind="predict", points=1, title="the error of a flipped flag",
        # dedent before appending the (unindented) options, or the question would render as a code block
        question=dedent("""
        Which error does QEMU's loader (and ramlab) report at that record? Work out the new flag byte with the
        flag table of lab 01, then set `answer_debug_flipped` to a letter and run the next cell.
        """) + ERRORS,
        answer='"B"',
        check="""lab.choice("debug-flipped", answer_debug_flipped, "ABCD")""",
        hidden="""assert lab.same_choice(answer_debug_flipped, "B"), "0x22 ^ 0x40 = 0x62: two page kinds"
        """,
    ),
    code("""
    flip = lab.damaged("flipped")
    m2 = ramlab.open(flip)
    print(m2.error)
    at = m2.error.offset
    lab.hexdump(flip, at - 18, 48, mark=(at, 8))
    """),
    md("""
    A flip in a *length* or in *page data* would be worse: in page data nothing notices (the guest gets a
    corrupted page; only comparing RAM finds it), and in a length the reader loses step and reports
    something unrelated further on: the offset of the error is then only an upper bound.

    ## 3. A wrong block name

    `lab.damaged("renamed")` has the first page record's block name changed from `pc.ram` to `pc.rom` — a
    real block of 128 KiB. The records that follow it have CONTINUE: they use the same block.
    """),
    *exercise(
        "debug-renamed", kind="predict", points=2, title="pages into the wrong block",
        question=dedent("""
        Which error does the loader report for `lab.damaged("renamed")`? (Is `pc.rom` in the MEM_SIZE list?
        Do the offsets of the following CONTINUE records fit in 128 KiB?) Set `answer_debug_renamed` to a
        letter, then run the next cell.
        """) + ERRORS,
        answer='"A"',
        check="""lab.choice("debug-renamed", answer_debug_renamed, "ABCD")""",
        hidden="""assert lab.same_choice(answer_debug_renamed, "A")
        """,
    ),
    code("""
    for kind in ("renamed", "unknown-block"):
        mk = ramlab.open(lab.damaged(kind))
        print(f"{kind:14} -> {mk.error}")
    """),
    md("""
    The renamed stream is the dangerous one: before the offset no longer fits, the pages went **silently**
    into the wrong block. Only comparing RAM images finds such damage — or a flip in page data. Two tools
    for that.
    """),
    *exercise(
        "debug-changed-pages", kind="code", points=2, title="which pages differ",
        question="""
        Write `changed_pages(a, b, page=4096)`: `a` and `b` are RAM images (uint8 arrays of the same length, a
        multiple of `page`); return the sorted indices (numpy integer array) of the pages that differ in at
        least one byte. Vectorise it.
        """,
        scaffold='''
        def changed_pages(a, b, page=4096):
            """Sorted int array: indices of the pages where images a and b differ."""
        ''',
        solution="""
        a, b = np.asarray(a, np.uint8), np.asarray(b, np.uint8)
        return np.flatnonzero((a != b).reshape(-1, page).any(axis=1))
        """,
        check="""
        lab.function("debug-changed-pages", changed_pages, 2)
        x = np.zeros(3 * 4096, np.uint8); y = x.copy(); y[2 * 4096 + 5] = 9
        got = lab.as_int_array(changed_pages(x, y), name="changed_pages(x, y)")
        assert got.tolist() == [2], f"one byte differs in page 2: got {got.tolist()}"
        """,
        hidden="""
        def _ref_changed(a, b, page=4096):
            return np.array([i for i in range(len(a) // page)
                             if bytes(a[i * page:(i + 1) * page]) != bytes(b[i * page:(i + 1) * page])], np.int64)
        _g = lab.fresh.rng()
        _cases = []
        for _ in range(6):
            _n = int(_g.integers(1, 300))
            _a = _g.integers(0, 256, _n * 4096, dtype=np.uint8)
            _b = _a.copy()
            _k = int(_g.integers(0, 20))
            _pos = _g.integers(0, _a.size, _k)
            _b[_pos] ^= _g.integers(1, 256, _k, dtype=np.uint8)
            _cases.append((_a, _b))
        _cases.append((_g.integers(0, 256, 8 * 1024, dtype=np.uint8), _g.integers(0, 256, 8 * 1024, dtype=np.uint8), 1024))
        lab.fresh.compare(changed_pages, _ref_changed, _cases, star=True, name="changed_pages", same=lab.same_array,
                          describe=lambda c: f"two images of {len(c[0])} bytes")
        """,
    ),
    *exercise(
        "debug-first-difference", kind="code", points=2, title="the first differing byte",
        question="""
        Write `first_difference(a, b)`: for two byte strings (or uint8 arrays) of the same length, return
        `(offset, a[offset] ^ b[offset])` — the offset of the first byte where they differ and the XOR of the
        two bytes there (which bits flipped) — or `None` when they are equal.
        """,
        scaffold='''
        def first_difference(a, b):
            """(offset, xor) of the first differing byte, or None."""
        ''',
        solution="""
        a = np.frombuffer(bytes(a), np.uint8)
        b = np.frombuffer(bytes(b), np.uint8)
        d = np.flatnonzero(a != b)
        if d.size == 0:
            return None
        i = int(d[0])
        return i, int(a[i] ^ b[i])
        """,
        check="""
        lab.function("debug-first-difference", first_difference, 2)
        assert first_difference(b"abc", b"abc") is None, "equal inputs: None"
        got = first_difference(b"\\x00\\x01", b"\\x00\\x03")
        assert tuple(got) == (1, 2), f"b'\\\\x00\\\\x01' vs b'\\\\x00\\\\x03': got {got!r}"
        off, bits = first_difference(good, flip)
        print(f"the flipped stream differs from the intact one at byte {off}: bits {bits:#04x}")
        """,
        hidden="""
        def _ref_first(a, b):
            a, b = bytes(a), bytes(b)
            for i in range(len(a)):
                if a[i] != b[i]:
                    return (i, a[i] ^ b[i])
            return None
        _g = lab.fresh.rng()
        _cases = []
        for _ in range(100):
            _a = _g.integers(0, 256, int(_g.integers(1, 5000)), dtype=np.uint8).tobytes()
            _b = bytearray(_a)
            if _g.random() < 0.8:
                _i = int(_g.integers(0, len(_a)))
                _b[_i] ^= 1 << int(_g.integers(0, 8))
            _cases.append((_a, bytes(_b)))
        lab.fresh.compare(first_difference, _ref_first, _cases, star=True, name="first_difference",
                          same=lambda a, e: (a is None and e is None) or (a is not None and e is not None
                                                                          and tuple(int(x) for x in a) == e),
                          describe=lambda c: f"two strings of {len(c[0])} bytes")
        _big_a = lab.stream_bytes("q35-plain"); _big_b = bytearray(_big_a); _big_b[-100] ^= 0x10
        assert first_difference(_big_a, bytes(_big_b)) == (len(_big_a) - 100, 0x10), "on a 6 MB stream"
        """,
    ),
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
    print(write_report(m, out / "report.html").name, "written")
    """),
    md("""
    ## What to remember

    * a decoder fails where the bytes stop making sense, which may be after the damage;
    * an error's offset and the events before it locate the damage; everything before it is usable;
    * damage in page data, or pages sent to a wrong but existing block, raises nothing: compare RAM.
    """),
]

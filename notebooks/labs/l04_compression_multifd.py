"""Lab 04: compression and multifd (real captures)."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "04-compression-and-multifd"

CELLS = [
    md("""
    # 04 · Compression and multifd

    Two other ways to spend CPU (or connections) for fewer bytes or more throughput:

    * **compress** (removed in QEMU 9.1): worker threads deflate each page with zlib and send a
      `COMPRESS_PAGE` record (flag 0x100: `be32 clen` + a complete zlib stream). Zero pages are still ZERO
      records. Because workers finish in any order, records are not in page order.
    * **multifd**: *N* extra connections carry the page data in packets (optionally zstd or zlib compressed
      per channel), while the main channel keeps the control and the devices.

    **You will** bound a compressed page, pick the cheapest encoding of a page, find zero pages the way the
    migration thread does, and read a real multifd capture. **Time** (planning figure, see TEACHING.md): about 50 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    *exercise(
        "compress-bound", kind="predict", points=1, title="how big can a compressed page be?",
        question="""
        An incompressible page *grows* a little under deflate (stored blocks, the zlib header and the
        Adler-32). QEMU's destination refuses a `clen` above zlib's `compressBound(n) = n + (n >> 12) +
        (n >> 14) + (n >> 25) + 13`. What is the largest `clen` it accepts for a 4096-byte page? Set
        `answer_compress_bound` to an int.
        """,
        answer="4110",
        check="""lab.integer("compress-bound", answer_compress_bound, minimum=4096)""",
        hidden="""
        _n = 4096
        assert lab.same_int(answer_compress_bound, _n + _n // 4096 + _n // 16384 + _n // 33554432 + 13)
        """,
    ),
    md("""
    ## zlib pages in a real capture
    """),
    code("""
    import zlib
    from ramlab.wire import events as ev
    mc = lab.migration("compress")
    clen = np.array([len(e.data) for e in mc.events if isinstance(e, ev.RamCompressed)])
    print(mc.records)
    print(f"{len(clen)} COMPRESS_PAGE records; median clen {int(np.median(clen))} bytes")
    """),
    code("""
    from bokeh.plotting import figure, show
    hist, edges = np.histogram(clen, bins=40)
    f = figure(width=640, height=260, title="COMPRESS_PAGE payload sizes (real capture)", x_axis_label="clen (bytes)",
               y_axis_label="records")
    f.quad(top=hist, bottom=0, left=edges[:-1], right=edges[1:], color="#cc79a7")
    show(f)
    """),
    md("""
    Two populations: most of the guest's pages (counters, patterns, 0xFF) shrink to tens or hundreds of
    bytes; one region does not shrink at all.
    """),
    *exercise(
        "compress-random", kind="predict", points=1, title="compressing random bytes",
        question="""
        The guest's *random* region is rewritten with pseudo-random bytes every pass. What does zlib level 1
        make of such a page?

        * (A) about its size or a few bytes more: random bytes leave zlib nothing to find
        * (B) about half its size: zlib's Huffman codes still shrink any bytes a little
        * (C) a few dozen bytes: a pseudo-random generator repeats, and zlib finds the cycle

        Set `answer_compress_random` to a letter, then run the next cell.
        """,
        answer='"A"',
        check="""lab.choice("compress-random", answer_compress_random, "ABC")""",
        hidden="""assert lab.same_choice(answer_compress_random, "A")
        """,
    ),
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
    Zlib helps pages with structure, XBZRLE pages with *small changes*; random data defeats both.
    """),
    *exercise(
        "compress-cheapest", kind="code", points=2, title="the cheapest encoding of a page",
        question="""
        Write `cheapest(old, new)`: which of the three ways to send `new` (4096 bytes) takes the fewest payload
        bytes — `"xbzrle"` (only when `old` is not `None`; its size is `len(xbzrle.encode_page(old, new))`,
        0 for an identical page, impossible on overflow), `"zlib"` (`len(zlib.compress(new, 1))`) or `"page"`
        (4096). On a tie prefer `"xbzrle"`, then `"zlib"`. You may use `ramlab.xbzrle` and `zlib`.
        """,
        scaffold='''
        def cheapest(old, new):
            """'xbzrle', 'zlib' or 'page': the smallest payload for sending page new (old: cached copy or None)."""
        ''',
        solution="""
        new_b = bytes(new)
        sizes = {}
        if old is not None:
            enc = xbzrle.encode_page(np.frombuffer(bytes(old), np.uint8), np.frombuffer(new_b, np.uint8))
            if enc is not None:
                sizes["xbzrle"] = len(enc)
        sizes["zlib"] = len(zlib.compress(new_b, 1))
        sizes["page"] = 4096
        return min(sizes, key=lambda k: (sizes[k], ["xbzrle", "zlib", "page"].index(k)))
        """,
        check="""
        lab.function("compress-cheapest", cheapest, 2)
        got = cheapest(None, np.full(4096, 0xff, np.uint8))
        assert got in ("xbzrle", "zlib", "page"), f"return one of 'xbzrle', 'zlib', 'page', got {got!r}"
        assert got == "zlib", "a 0xFF page that was never sent: only zlib or a whole page are possible"
        """,
        hidden="""
        def _ref_cheapest(old, new):
            best, size = "page", 4096
            z = len(zlib.compress(bytes(new), 1))
            if z < size:
                best, size = "zlib", z
            if old is not None:
                e = xbzrle.encode_page(old, new)
                if e is not None and len(e) <= size:
                    best = "xbzrle"
            return best
        _g = lab.fresh.rng()
        _cases = []
        for _ in range(120):
            _o, _n = lab.fresh.page_pair(_g)
            _cases.append((None if _g.random() < 0.25 else _o, _n))
        _cases.append((None, _g.integers(0, 256, 4096, dtype=np.uint8)))
        lab.fresh.compare(cheapest, _ref_cheapest, _cases, star=True, name="cheapest",
                          describe=lambda c: "a page pair" if c[0] is not None else "a page with no cached copy")
        """,
    ),
    md("""
    ## Multifd with zstd

    The `multifd-zstd` capture is three files: `channel-0` is the main stream, `channel-1/2` the multifd
    channels in connection order. Each channel starts with a 64-byte handshake, then packets: a header
    listing page offsets, then the pages' data, here zstd-compressed per channel.
    """),
    code("""
    mm = lab.migration("multifd-zstd")
    s = mm.summary()
    print("channels:", s["channels"], " bytes per file:", [len(mm.data)] + [len(c) for c in mm.channel_data])
    rows = []
    for ch, packets in enumerate(mm.multifd_packets, start=1):
        pk = [p for p in packets if type(p).__name__ == "MultifdPacket"]
        rows.append((ch, len(pk), sum(p.sync for p in pk), sum(p.normal_pages for p in pk),
                     sum(p.payload_len for p in pk)))
    lab.table(rows, ["channel", "packets", "SYNC packets", "pages", "compressed payload bytes"])
    """),
    md("""
    Pages in all packets add up to a few more than QEMU's `normal` counter: 7.2 sometimes sends the last
    page of a full packet again at the start of a later packet (QEMU counts it once; ramlab keeps one).
    Before a page is queued for a channel, the migration thread checks whether it is all zero
    (`buffer_is_zero`).
    """),
    *exercise(
        "compress-zero-pages", kind="code", points=2, title="find the zero pages",
        question="""
        Write `zero_pages(ram, page=4096)`: the indices (sorted numpy integer array) of the pages of a RAM
        image (`uint8` array whose length is a multiple of `page`) whose bytes are all zero. Vectorise it: it
        is graded on images of up to 64 MiB.
        """,
        scaffold='''
        def zero_pages(ram, page=4096):
            """Sorted int array: indices of the all-zero pages of the RAM image."""
        ''',
        solution="""return np.flatnonzero(~np.asarray(ram, np.uint8).reshape(-1, page).any(axis=1))""",
        check="""
        lab.function("compress-zero-pages", zero_pages, 1)
        img = np.zeros(4 * 4096, np.uint8); img[4096 + 17] = 1
        got = lab.as_int_array(zero_pages(img), name="zero_pages(img)")
        assert got.tolist() == [0, 2, 3], f"a 4-page image whose page 1 has one non-zero byte: got {got.tolist()}"
        """,
        hidden="""
        def _ref_zero(ram, page=4096):
            ram = np.asarray(ram, np.uint8)
            return np.array([i for i in range(len(ram) // page) if not ram[i * page:(i + 1) * page].any()], np.int64)
        _g = lab.fresh.rng()
        _imgs = []
        for _ in range(4):
            _n = int(_g.integers(1, 512))
            _img = np.zeros(_n * 4096, np.uint8)
            _nz = _g.random(_n) < _g.random()
            _pos = np.flatnonzero(_nz) * 4096 + _g.integers(0, 4096, int(_nz.sum()))
            _img[_pos] = _g.integers(1, 256, _pos.size, dtype=np.uint8)
            _imgs.append(_img)
        _imgs.append(np.asarray(mm.ram("pc.ram"), np.uint8))
        lab.fresh.compare(zero_pages, _ref_zero, _imgs, name="zero_pages", same=lab.same_array,
                          describe=lambda r: f"a RAM image of {len(r) // 4096} pages")
        _big = np.zeros(64 << 20, np.uint8); _big[_g.integers(0, 64 << 20, 1000)] = 1
        import time as _time
        _t0 = _time.perf_counter(); _got = zero_pages(_big); _dt = _time.perf_counter() - _t0
        assert lab.same_array(_got, np.flatnonzero(~_big.reshape(-1, 4096).any(axis=1))), "zero_pages on 64 MiB"
        assert _dt < 10, f"zero_pages took {_dt:.1f} s on 64 MiB: vectorise it (no Python loop over pages)"
        """,
    ),
    code("""
    qemu = lab.meta("multifd-zstd")["query_migrate_final"]["ram"]
    ram0 = np.asarray(mm.ram("pc.ram"), np.uint8)
    print("QEMU normal:", qemu["normal"], " duplicate:", qemu["duplicate"], " multifd-bytes:", qemu["multifd-bytes"])
    print("records on the main channel:", mm.records)
    """),
    *exercise(
        "multifd-main-zero", kind="explain", points=2, title="what stays on the main channel",
        question="""
        Compare QEMU's counters with the page records of the main channel (`channel-0`) printed above. With
        multifd in QEMU 7.2, which pages does the **main** channel carry, and why?

        * (A) all pages: the multifd channels carry extra copies, to have each page sent faster
        * (B) only the pages of small blocks (ROMs, video RAM): too small to fill a multifd packet
        * (C) only zero pages: the migration thread finds them before it queues a page for a channel
        * (D) none: with multifd, the main channel carries only the device state and each pass's sync flags

        Set `answer_multifd_main_zero` to a letter.
        """,
        answer='"C"',
        check="""lab.choice("multifd-main-zero", answer_multifd_main_zero, "ABCD")""",
        hidden="""assert lab.same_choice(answer_multifd_main_zero, "C")
        """,
    ),
    code("""
    mm.player()
    """),
    md("""
    ## What to remember

    * zlib pays for structured pages, XBZRLE for small changes to cached pages, nothing pays for random data;
    * `compressBound` is why a destination can bound every length it reads;
    * multifd spreads page data over connections; zero pages (in 7.2) stay on the main channel.
    """),
]

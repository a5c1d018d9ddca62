"""Lab 03: XBZRLE, sending only what changed."""

from textwrap import dedent

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "03-xbzrle"

REF_ENCODER = '''
def _ref_encode(old, new, dlen=4096):
    """xbzrle_encode_buffer, byte by byte: bytes, b"" when equal, None on overflow."""
    old, new = bytes(old), bytes(new)
    slen, i, d, out = len(old), 0, 0, bytearray()
    uleb = lambda v: bytes([v]) if v < 0x80 else bytes([(v & 0x7F) | 0x80, v >> 7])
    while i < slen:
        if d + 2 > dlen:
            return None
        z = 0
        while i + z < slen and old[i + z] == new[i + z]:
            z += 1
        i += z
        if z == slen:
            return b""
        if i == slen:
            return bytes(out)
        out += uleb(z)
        d += len(uleb(z))
        if d + 2 > dlen:
            return None
        n = 0
        while i + n < slen and old[i + n] != new[i + n]:
            n += 1
        out += uleb(n)
        d += len(uleb(n))
        if d + n > dlen:
            return None
        out += new[i:i + n]
        d += n
        i += n
    return bytes(out)
'''

#: what the encoder and decoder exercises must not call (made unavailable while they are graded)
XBZRLE_API = ("encode_page", "encode_batch", "decode_page", "decode_batch", "runs", "overflow_check",
              "parse_encoded")

#: page pairs whose encoding is a given length, around the room checks (hidden tests of xbzrle-encode)
BOUNDARY_PAIRS = '''
def _boundary_pair(g, length, trailing, slen=4096):
    """(old, new) whose encoding, room checks aside, is `length` bytes: changed runs of 1 or 2 bytes
    1 byte apart (3 or 4 bytes of encoding each); `trailing`: equal bytes follow the last change,
    else the page ends changed (after a leading zrun of >= 128 bytes: a 2-byte ULEB128)."""
    units = length if trailing else length - 1
    b = units % 3
    runs = [1] * ((units - 4 * b) // 3) + [2] * b
    g.shuffle(runs)
    changed = np.zeros(slen, bool)
    at = 0 if trailing else slen - (sum(runs) + len(runs) - 1)
    for n in runs:
        changed[at:at + n] = True
        at += n + 1
    old = g.integers(0, 256, slen, dtype=np.uint8) if g.random() < 0.5 else np.zeros(slen, np.uint8)
    new = old ^ np.where(changed, g.integers(1, 256, slen), 0).astype(np.uint8)
    return old, new


def _boundary_cases(g, slen, dlen):
    """Encodings of dlen-2 .. dlen+1 bytes, with and without a trailing equal run: QEMU refuses
    dlen-1 with equal bytes after the last change (no room for a zrun), accepts dlen without."""
    return [_boundary_pair(g, dlen + k, trailing, slen) + (dlen,)
            for trailing in (True, False) for k in (-2, -1, 0, 1)]
'''

CELLS = [
    md("""
    # 03 · XBZRLE: sending only what changed

    When a page is sent again, often only a few bytes differ (a counter, a timestamp). With the `xbzrle`
    capability the source keeps a **cache** of pages it sent and, on the next visit, sends the **delta**:
    XOR the old and new page, and encode the runs of equal (zero XOR) and changed bytes:

    ```
    encoding := (zrun nzrun)+          zrun  := uleb(n_equal_bytes)
                                       nzrun := uleb(n_changed) new_bytes[n_changed]
    ```
    ULEB128 writes 7 bits per byte, low bits first, with bit 7 set when another byte follows (a page
    length needs at most 2 bytes). No trailing zero run is written. Identical pages encode to nothing
    (QEMU returns 0 and sends nothing); if the encoding would not fit in `dlen` = 4096 bytes, the encoder
    gives up (**overflow**, QEMU returns -1) and the page goes out whole. QEMU checks the room *before*
    each field: `d + 2 > dlen` before a zrun and before an nzrun length, `d + n > dlen` before the bytes.

    **You will** encode by hand, write an XBZRLE encoder and decoder that match QEMU's, predict the
    overflow and cache rules, and read real XBZRLE records. **Time** (planning figure, see TEACHING.md): about 80 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    code("""
    from ramlab import xbzrle

    old = np.zeros(4096, np.uint8)
    new = old.copy(); new[5] = 7; new[200:202] = [1, 2]
    enc = xbzrle.encode_page(old, new)
    print("two changes ->", enc.hex(" "))
    for tok in xbzrle.parse_encoded(enc):
        print(f"  {tok.kind:5} at encoded byte {tok.offset}, {tok.size} byte(s), value {tok.value}")
    """),
    md("""
    `05`: 5 equal bytes; `01 07`: one changed byte, 7. Then 194 equal bytes: 194 = 0b1_1000010 needs two
    ULEB128 bytes, `c2 01` (low 7 bits 0x42 with the continuation bit, then 194 >> 7 = 1); then `02 01 02`.
    """),
    *exercise(
        "xbzrle-last-byte", kind="predict", points=1, title="encode by hand",
        question="""
        `old` is a zero page, `new` differs only in its **last** byte (`new[4095] = 1`). Write down its XBZRLE
        encoding (bytes, or a hex string such as `"0a 01 ff"`) in `answer_xbzrle_last_byte`.
        """,
        answer='"ff 1f 01 01"',
        check="""lab.byte_string("xbzrle-last-byte", answer_xbzrle_last_byte)""",
        hidden=REF_ENCODER + dedent("""
        _new = bytearray(4096); _new[4095] = 1
        assert lab.same_bytes(answer_xbzrle_last_byte, _ref_encode(bytes(4096), bytes(_new)))
        """),
    ),
    *exercise(
        "xbzrle-encode", kind="code", points=3, title="an XBZRLE encoder",
        question="""
        Write `xbzrle_encode(old, new, dlen=4096)` for two pages (bytes or uint8 arrays of equal length):
        return the encoding as `bytes`, `b""` if the pages are equal, `None` on overflow — exactly QEMU's
        output and overflow decisions (the room checks above). Write it yourself: `ramlab.xbzrle` is made
        unavailable while your function is graded (a byte loop is fine; numpy is faster). It is graded on
        random page pairs and on pages whose encoding ends right at the limit, with and without equal bytes
        after the last change.
        """,
        scaffold='''
        def xbzrle_encode(old, new, dlen=4096):
            """XBZRLE encoding of new against old: bytes, b"" if equal, None on overflow."""
        ''',
        solution="""
        old, new = np.frombuffer(bytes(old), np.uint8), np.frombuffer(bytes(new), np.uint8)
        diff = np.flatnonzero(np.diff(np.concatenate(([0], (old != new).astype(np.int8), [0]))))
        if diff.size == 0:
            return b""
        starts, ends = diff[0::2], diff[1::2]          # changed runs [start, end)
        uleb = lambda v: bytes([v]) if v < 0x80 else bytes([(v & 0x7F) | 0x80, v >> 7])
        out, prev = bytearray(), 0
        for s, e in zip(starts.tolist(), ends.tolist()):
            if len(out) + 2 > dlen:
                return None
            out += uleb(s - prev)
            if len(out) + 2 > dlen:
                return None
            out += uleb(e - s)
            if len(out) + (e - s) > dlen:
                return None
            out += new[s:e].tobytes()
            prev = e
        if prev < len(old) and len(out) + 2 > dlen:   # QEMU checks the room before a trailing zero run too
            return None
        return bytes(out)
        """,
        check="""
        lab.function("xbzrle-encode", xbzrle_encode, 2)
        got = xbzrle_encode(old, new)
        assert isinstance(got, bytes), f"return bytes (or None on overflow), got {type(got).__name__}"
        assert got == enc, f"the two-change example above: got {got.hex(' ')}"
        assert xbzrle_encode(old, old) == b"", "identical pages encode to b''"
        """,
        hidden=REF_ENCODER + BOUNDARY_PAIRS + dedent(f"""
        _forbid = [f"ramlab.xbzrle.{{_f}}" for _f in {XBZRLE_API!r}]
        _g = lab.fresh.rng()
        _pairs = [lab.fresh.page_pair(_g) for _ in range(150)]
        _pairs += [lab.fresh.page_pair(_g, kind=k) for k in ("same", "dense", "random", "edges")]
        _pairs += [(np.zeros(4096, np.uint8), np.where(np.arange(4096) % 3 == 0, 1, 0).astype(np.uint8))]
        lab.fresh.compare(xbzrle_encode, _ref_encode, _pairs, star=True, name="xbzrle_encode", forbid=_forbid,
                          describe=lambda c: f"a page pair with {{int((c[0] != c[1]).sum())}} changed bytes")
        # at the overflow limit: 1365 isolated changes make 4095 bytes, which QEMU refuses (equal bytes follow)
        _alt = np.zeros(4096, np.uint8); _alt[1:2731:2] = 0x5A
        _edge = [(np.zeros(4096, np.uint8), _alt, 4096)] + _boundary_cases(_g, 4096, 4096)
        _edge += _boundary_cases(_g, 256, 64) + _boundary_cases(_g, 256, 100)
        lab.fresh.compare(xbzrle_encode, _ref_encode, _edge, star=True, name="xbzrle_encode at the overflow limit",
                          forbid=_forbid, describe=lambda c: f"{{len(c[0])}}-byte pages with "
                          f"{{int((c[0] != c[1]).sum())}} changed bytes (last byte changed: {{bool(c[0][-1] != c[1][-1])}}), "
                          f"dlen={{c[2]}}")
        _small = [(a[:256], b[:256], 64) for a, b in _pairs[:60]]
        lab.fresh.compare(xbzrle_encode, _ref_encode, _small, star=True, name="xbzrle_encode with dlen=64",
                          forbid=_forbid,
                          describe=lambda c: f"256-byte pages with {{int((c[0] != c[1]).sum())}} changed bytes")
        """),
    ),
    *exercise(
        "xbzrle-decode", kind="code", points=2, title="an XBZRLE decoder",
        question="""
        Write `xbzrle_decode(old, enc)`: apply the encoding `enc` to a copy of `old` and return the new page
        as `bytes`, without `ramlab.xbzrle` (unavailable while your function is graded). (QEMU's decoder
        also rejects malformed input; here every input is well formed.)
        """,
        scaffold='''
        def xbzrle_decode(old, enc):
            """The new page (bytes): old with the XBZRLE encoding enc applied."""
        ''',
        solution="""
        page, enc = bytearray(bytes(old)), bytes(enc)
        i = d = 0

        def uleb(at):
            v = enc[at] & 0x7F
            if enc[at] & 0x80:
                return v | (enc[at + 1] << 7), at + 2
            return v, at + 1

        while i < len(enc):
            z, i = uleb(i)
            d += z
            n, i = uleb(i)
            page[d:d + n] = enc[i:i + n]
            i += n
            d += n
        return bytes(page)
        """,
        check="""
        lab.function("xbzrle-decode", xbzrle_decode, 2)
        got = xbzrle_decode(old, enc)
        assert isinstance(got, bytes) and len(got) == 4096, f"return the 4096-byte page as bytes, got {type(got).__name__}"
        assert got == new.tobytes(), "decoding the two-change example does not give the new page back"
        """,
        hidden="""
        _g = lab.fresh.rng()
        _cases = []
        for _ in range(150):
            _old, _new = lab.fresh.page_pair(_g)
            _e = xbzrle.encode_page(_old, _new)
            if _e is not None:
                _cases.append((_old.tobytes(), _e, _new.tobytes()))
        lab.fresh.compare(lambda o, e, n: xbzrle_decode(o, e), lambda o, e, n: n, _cases, star=True,
                          name="xbzrle_decode", describe=lambda c: f"an encoding of {len(c[1])} bytes",
                          forbid=[f"ramlab.xbzrle.{_f}" for _f in XBZRLE_API])
        """.replace("XBZRLE_API", repr(XBZRLE_API)),
    ),
    md("""
    ## When XBZRLE gives up
    """),
    *exercise(
        "xbzrle-dense", kind="predict", points=1, title="every other byte",
        question="""
        `old` is a zero page and `new[2k] = 1` for every k < 2047 (every other byte changed, 2047 changes).
        What does the encoder return?

        * (A) an encoding a little shorter than 4096 bytes: XBZRLE still saves a few bytes
        * (B) overflow (`None`, QEMU's -1): the changes do not fit, the page goes out whole
        * (C) about 2 KiB: only the 2047 changed bytes are sent, equal runs cost almost nothing

        Set `answer_xbzrle_dense` to a letter, then run the next cell.
        """,
        answer='"B"',
        check="""lab.choice("xbzrle-dense", answer_xbzrle_dense, "ABC")""",
        hidden="""assert lab.same_choice(answer_xbzrle_dense, "B")
        """,
    ),
    code("""
    dense = old.copy(); dense[0:4094:2] = 1
    print("every other byte changed:", xbzrle.encode_page(old, dense))
    """),
    md("""
    Each isolated change costs 3 bytes (a zrun, an nzrun length, the byte): 2047 of them need 6141 bytes.
    The size of the encoding against the number of changed bytes, scattered at random or in one block:
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
            news[i, rng.choice(4096, k, replace=False)] ^= 0xff
        cont = olds.copy(); cont[:, :k] ^= 0xff
        for name, pages in (("scattered", news), ("contiguous", cont)):
            ret = xbzrle.encode_batch(olds, pages).ret
            size[name].append(np.where(ret < 0, 4096, ret).mean())
    f = figure(width=640, height=300, x_axis_type="log", x_axis_label="changed bytes in the page",
               y_axis_label="bytes sent (overflow = 4096)", title="XBZRLE encoding size vs change density")
    f.line(ks, size["scattered"], line_width=2, color="#d55e00", legend_label="scattered changes")
    f.line(ks, size["contiguous"], line_width=2, color="#009e73", legend_label="one contiguous run")
    f.legend.location = "top_left"
    show(f)
    """),
    md("""
    ## The page cache and its age rule

    The cache is **direct-mapped**: page address → slot `(addr / 4096) mod n_slots`. A different page may
    only evict a slot's page when that page is *stale*: QEMU's `cache_insert` refuses while
    `slot_age + CACHED_PAGE_LIFETIME > current_age`, with `CACHED_PAGE_LIFETIME = 2` and ages counted in
    bitmap syncs (`dirty_sync_count`). A page refused by the cache is sent whole (a cache miss).
    """),
    *exercise(
        "xbzrle-cache-age", kind="predict", points=1, title="when may B evict A?",
        question="""
        Page A was inserted into its slot at `dirty_sync_count` 5. Page B maps to the same slot. At which
        `dirty_sync_count` can inserting B first replace A? Set `answer_xbzrle_cache_age` to an int, then run
        the next cell.
        """,
        answer="7",
        check="""lab.integer("xbzrle-cache-age", answer_xbzrle_cache_age, minimum=5)""",
        hidden="""assert lab.same_int(answer_xbzrle_cache_age, next(a for a in range(5, 50) if not 5 + 2 > a))
        """,
    ),
    code("""
    from ramlab.model.page_cache import PageCache
    cache = PageCache(4 * 4096)            # 4 slots
    page = np.zeros(4096, np.uint8)
    print("slot of 0x1000 and 0x5000:", cache.slot_of(0x1000), cache.slot_of(0x5000))
    print("insert A=0x1000 at sync 5:", cache.insert(0x1000, page, age=5))
    for age in (5, 6, 7):
        print(f"insert B=0x5000 at sync {age}:", cache.insert(0x5000, page, age=age))
    """),
    md("""
    ## In a real capture

    The `xbzrle` capture's guest increments one dword per page of its 1 MiB counter region every pass: the
    best case. ramlab keeps the page before and after each XBZRLE record, and `XbzrleDeltaView` shows both
    pages, the changed runs and every field of the encoding:
    """),
    code("""
    from ramlab.widgets import XbzrleDeltaView
    mx = ramlab.open(lab.sample("xbzrle"))
    p, g = map(int, np.argwhere(mx.trace.classes == PageClass.XBZRLE)[0])
    XbzrleDeltaView(mx.trace, p, g)
    """),
    code("""
    xb = mx.trace.classes == PageClass.XBZRLE
    sizes = mx.trace.wire_bytes[xb]
    ram = lab.meta("xbzrle")["query_migrate_final"]
    print(f"{xb.sum()} XBZRLE records of {sizes.min()}..{sizes.max()} bytes (a PAGE record is 4104 bytes)")
    print("QEMU's xbzrle-cache counters:", {k: ram["xbzrle-cache"][k] for k in ("cache-miss", "overflow", "pages")})
    """),
    md("""
    ## What to remember

    * XBZRLE pays for sparse changes to pages sent before: a few bytes instead of 4 KiB;
    * dense or random changes overflow (and cost the encoding work for nothing); identical pages cost nothing;
    * the cache must hold the working set, and its age rule protects recently used pages: lab 08 measures
      both on whole migrations, as Svärd et al. did when they proposed it.
    """),
]

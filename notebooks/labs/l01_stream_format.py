"""Lab 01: the stream format, byte by byte."""

from labs.cells import HOW_TO, SETUP, code, exercise, md

LAB = "01-stream-format"

CELLS = [
    md("""
    # 01 · The stream format, byte by byte

    Everything is big-endian, with no padding and no length for most items: a reader must know each
    item's layout to find the next one. That is why one flipped byte can make the rest unreadable (lab 06).

    ```
    stream   := "QEVM" be32(3)  configuration  item*  EOF(0x00)  [vmdesc JSON]
    item     := section | command(0x08)
    START    := 0x01 be32 section_id cstr8 idstr be32 instance be32 version  body  footer
    PART/END := 0x02/0x03 be32 section_id  body  footer          footer := 0x7e be32 section_id
    configuration := 0x07 be32 length  machine-type bytes
    ```
    A RAM section body is a list of **records**, each starting with a `be64` *header word*: the page's
    byte offset inside its block with **flags** in the low 12 bits (ZERO 0x02, MEM_SIZE 0x04, PAGE 0x08,
    EOS 0x10, CONTINUE 0x20, XBZRLE 0x40, COMPRESS_PAGE 0x100). Without CONTINUE a block name (`cstr8`:
    a length byte, then the bytes) follows the header word; with it, the record uses the block of the
    previous record. The `MEM_SIZE` record of the START section carries the total RAM size in its header
    word, then each block as `cstr8 name, be64 used_length` until the lengths add up.

    **You will** read a real stream by hand, write a header-word parser and a small stream walker, and
    predict what a decoder does with a record that lies about its flags. **Time** (planning figure, see TEACHING.md): about 65 minutes.
    """),
    md(HOW_TO),
    code(SETUP),
    code("""
    data = lab.stream_bytes("plain")
    print(len(data), "bytes")
    lab.hexdump(data, 0, 64, mark=(0, 8))
    """),
    md("""
    `51 45 56 4d` is "QEVM", then version 3. Byte 8 is `0x07`, the configuration section: a be32 length,
    then the machine type. Then the RAM `START` section begins (`0x01`, section id, `cstr8 "ram"`,
    instance, version) with the MEM_SIZE record.
    """),
    *exercise(
        "format-header-word", kind="code", points=2, title="parse a header word",
        question="""
        Write `parse_header_word(word, tps=4096)`: given the header word as an `int`, return
        `(offset, flags)` where `offset` is the page offset (the word with its flag bits cleared) and
        `flags` the **set of flag names** that are set, using the names of `lab.SPEC_FLAGS`
        (`{0x02: "ZERO", 0x08: "PAGE", ...}`). With TPS = 4096 the flags are the low 12 bits.
        """,
        scaffold='''
        def parse_header_word(word, tps=4096):
            """(page offset, set of flag names) of a RAM record's be64 header word."""
        ''',
        solution="""
        flags = word & (tps - 1)
        return word & ~(tps - 1), {name for bit, name in lab.SPEC_FLAGS.items() if flags & bit}
        """,
        check="""
        lab.function("format-header-word", parse_header_word, 1)
        got = parse_header_word(0x2002)
        assert isinstance(got, tuple) and len(got) == 2, f"return a pair (offset, set of names), got {got!r}"
        assert got[0] == 0x2000 and got[1] == {"ZERO"}, f"0x2002 is a ZERO record at offset 0x2000, got {got!r}"
        """,
        hidden="""
        def _ref_header(word, tps=4096):
            names = set()
            for bit in sorted(lab.SPEC_FLAGS):
                if bit < tps and (word >> (bit.bit_length() - 1)) & 1:
                    names.add(lab.SPEC_FLAGS[bit])
            return word - word % tps, names
        _g = lab.fresh.rng()
        _words = [int(_g.integers(0, 1 << 40)) * 4096 + int(_g.integers(0, 1 << 10)) for _ in range(200)]
        _words += [0x10, 0x1028, 0x7FFFFFFFF000 | 0x62, 0x104]
        lab.fresh.compare(parse_header_word, _ref_header, _words, name="parse_header_word", describe=hex)
        lab.fresh.compare(parse_header_word, _ref_header, [(w, 1 << 16) for w in _words[:50]], star=True,
                          name="parse_header_word with tps=65536", describe=lambda c: hex(c[0]))
        """,
    ),
    md("""
    ## Walking to the first page record

    A decoder must walk every item to find the next one. `ramlab.open` does it for the whole stream;
    here you do it for the start of a precopy stream, with `int.from_bytes(data[a:b], "big")` and the
    grammar above — **without** `ramlab.open` or `lab.ref_walk`: the point is to read the format yourself.
    """),
    *exercise(
        "format-first-record", kind="code", points=3, title="find the first page record",
        question="""
        Write `first_page_record(data)`: the byte offset where the first RAM page record (ZERO, PAGE,
        XBZRLE or COMPRESS_PAGE) of a precopy stream starts. Walk: the 8-byte file header; the
        configuration (`0x07`, be32 length, bytes); the RAM START section header; its MEM_SIZE record and
        block list; records until EOS; the footer; the next section header (PART, 5 bytes). A record with
        neither MEM_SIZE nor EOS is the one. It is graded on other real captures and on simulated streams.
        """,
        scaffold='''
        def first_page_record(data):
            """Byte offset of the first RAM page record of a precopy stream (bytes)."""
        ''',
        solution="""
        be = lambda a, n: int.from_bytes(data[a:a + n], "big")
        pos = 8
        if data[pos] == 0x07:                      # configuration
            pos += 5 + be(pos + 1, 4)
        while True:
            kind = data[pos]
            if kind in (0x01, 0x04):               # START / FULL: type, id, cstr8 idstr, instance, version
                pos += 5
                pos += 1 + data[pos] + 8
            elif kind in (0x02, 0x03):             # PART / END: type, id
                pos += 5
            while True:                            # records of the section body
                word = be(pos, 8)
                flags = word & 0xFFF
                if flags & 0x04:                   # MEM_SIZE: names and lengths until the total
                    total, pos = word & ~0xFFF, pos + 8
                    while total > 0:
                        n = data[pos]
                        total -= be(pos + 1 + n, 8)
                        pos += 1 + n + 8
                elif flags == 0x10:                # EOS, then the footer
                    pos += 8 + 5
                    break
                else:
                    return pos
        """,
        check="""
        lab.function("format-first-record", first_page_record, 1)
        off = first_page_record(data)
        assert isinstance(off, int) and 26 < off < 2000, f"expected an int offset after the START section, got {off!r}"
        word = int.from_bytes(data[off:off + 8], "big")
        assert word & 0x0A and not word & 0x14, f"the header word at {off} is not a ZERO or PAGE record: {word:#x}"
        lab.hexdump(data, off, 32, mark=(off, 8))
        """,
        hidden="""
        _g = lab.fresh.rng()
        _streams = {n: lab.stream_bytes(n) for n in ("xbzrle", "compress", "q35-plain")}
        for _i in range(2):
            _r = ramlab.simulate(ram=int(_g.choice([4, 8])) << 20, workload="hotset", bandwidth="16M",
                                 stream=True, seed=int(_g.integers(1 << 30)))
            _streams[f"simulation {_i}"] = _r.stream
        lab.fresh.compare(first_page_record, lambda d: lab.ref_walk(d).records[0][0], list(_streams.values()),
                          name="first_page_record", describe=lambda d: f"a stream of {len(d):,} bytes")
        """,
    ),
    md("""
    Runs of records of one kind are grouped by ramlab's decoder into one `RamPages` event (the offsets are
    numpy arrays). The stream inspector shows the same walk as an interactive table: filter by record kind,
    section or block, click a row and every field of its bytes is annotated in the hex view.
    """),
    code("""
    m = ramlab.open(lab.sample("plain"))
    m.inspector()
    """),
    md("""
    ## Building records by hand

    The encoder has helpers for single records: `zero_record(block, offset, named)` and
    `page_record(block, offset, named, data)`. Before using them, count.
    """),
    *exercise(
        "format-record-bytes", kind="predict", points=1, title="how many bytes on the wire",
        question="""
        How many bytes do these RAM records take on the wire (TPS 4096): a PAGE record that names block
        `pc.ram`, then 3 ZERO records with CONTINUE, then EOS? Work it out from the grammar (a header word
        is 8 bytes, a name is a `cstr8`, a ZERO record carries one fill byte, a PAGE record the whole page,
        EOS is a bare header word), then run the next cell.
        """,
        answer="4146",
        check="""lab.integer("format-record-bytes", answer_format_record_bytes, minimum=1)""",
        hidden="""assert lab.same_int(answer_format_record_bytes, (8 + 1 + len("pc.ram") + 4096) + 3 * (8 + 1) + 8)
        """,
    ),
    code("""
    import struct
    from ramlab.wire.encoder import zero_record, page_record
    recs = (page_record("pc.ram", 0x0000, named=True, data=b"\\x5a" * 4096)
            + b"".join(zero_record("pc.ram", 0x1000 * (i + 1), named=False) for i in range(3))
            + struct.pack(">Q", 0x10))
    print(len(recs), "bytes")
    lab.hexdump(recs, 0, 32, mark=(0, 8))
    """),
    md("""
    ## A complete stream by hand

    The framing is a few `struct.pack` calls: file header, a START section with the MEM_SIZE list, a
    PART section with the records above, EOF.
    """),
    code("""
    def section(kind, sid, name=None):
        head = struct.pack(">BI", kind, sid)
        return head + (bytes([len(name)]) + name.encode() + struct.pack(">II", 0, 4) if name else b"")

    footer = lambda sid: struct.pack(">BI", 0x7e, sid)
    EOS = struct.pack(">Q", 0x10)
    size = 4 * 4096
    setup_section = (section(0x01, 2, "ram") + struct.pack(">Q", size | 0x04) + bytes([6]) + b"pc.ram"
                     + struct.pack(">Q", size) + EOS + footer(2))
    stream = b"QEVM" + struct.pack(">I", 3) + setup_section + section(0x02, 2) + recs + footer(2) + b"\\x00"
    tiny = ramlab.open(stream)
    print("error:", tiny.error, " records:", tiny.records)
    print("page 0 starts with", bytes(tiny.ram("pc.ram")[:4]))
    """),
    *exercise(
        "format-continue", kind="predict", points=2, title="a record that lies about CONTINUE",
        question="""
        Now clear the CONTINUE bit of the **second** record (the first ZERO record: its header word ends in
        `0x22`, make it `0x02`) and leave everything else as it is: no name follows it. What does the decoder
        make of it?

        * (A) it decodes fine: CONTINUE is only a hint, the loader keeps the last block it saw
        * (B) it sees that no name follows and uses the previous block, with a warning
        * (C) it reads the fill byte (0x00) as a name length, then fails: "" is no block's name
        * (D) it reports a truncated stream: the name it looks for runs past the end of the section

        Set `answer_format_continue` to a letter, then run the next cell.
        """,
        answer='"C"',
        check="""lab.choice("format-continue", answer_format_continue, "ABCD")""",
        hidden="""assert lab.same_choice(answer_format_continue, "C")
        """,
    ),
    code("""
    at = stream.index(recs) + len(page_record("pc.ram", 0, named=True, data=b"\\x5a" * 4096))
    bad = bytearray(stream)
    bad[at + 7] &= ~0x20
    broken = ramlab.open(bytes(bad))
    print(broken.error)
    lab.hexdump(bytes(bad), at, 16, mark=(at, 8))
    """),
    md("""
    ## What to remember

    * no lengths: the flags of each record say what follows, so a reader must follow the grammar exactly;
    * a block name appears only when the block changes (CONTINUE otherwise): a few bytes saved per record;
    * a corrupted flag does not fail where the damage is but where the misread bytes stop making sense —
      which is the subject of lab 06.
    """),
]

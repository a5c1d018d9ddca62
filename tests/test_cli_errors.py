"""Every bad path or option of the ``ramlab`` command: the right exit status (2 bad usage,
1 damaged or unreadable input), a message naming the problem, and never a traceback."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pytest
from _shared import DATA, read_zst

import ramlab
from ramlab.cli import main

PLAIN = str(DATA / "plain" / "stream.bin.zst")
USAGE, DAMAGED = 2, 1


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-bad")
    data = read_zst(DATA / "plain" / "stream.bin.zst")
    (d / "empty.bin").write_bytes(b"")
    (d / "trunc.bin").write_bytes(data[:100_000])
    (d / "exists").write_bytes(b"x")
    (d / "full").mkdir()
    (d / "full" / "a").write_bytes(b"")
    (d / "text.txt").write_text("hello\n")
    (d / "garbage.bin").write_bytes(bytes(range(256)) * 3)
    (d / "list.json").write_text("[1, 2]")
    (d / "bogus.json").write_text('{"devices": [{"bogus": 1}]}')
    return d


# (argv with {d} = the fixture folder, exit status, words the message must contain)
CASES = [
    # usage: exit 2
    ([], USAGE, "required"),
    (["frobnicate"], USAGE, "invalid choice"),
    (["inspect", "--bogus"], USAGE, "unrecognized"),
    (["inspect", "-", "-"], USAGE, "only one input"),
    (["extract", PLAIN], USAGE, "-o"),
    (["extract", PLAIN, "-o", "{d}/exists"], USAGE, "not a directory"),
    (["extract", PLAIN, "-o", "{d}/full"], USAGE, "--force"),
    (["extract", PLAIN, "-o", "{d}/missing/x"], USAGE, "does not exist"),
    (["reencode", PLAIN, "-o", "{d}/exists"], USAGE, "--force"),
    (["reencode", PLAIN, "-o", "{d}/full"], USAGE, "is a directory"),
    (["reencode", PLAIN, "-o", "{d}/missing/x"], USAGE, "does not exist"),
    (["report", PLAIN, "-o", "{d}/exists"], USAGE, "--force"),
    (["report", PLAIN, "-o", "{d}/full"], USAGE, "is a directory"),
    (["report", PLAIN, "-o", "{d}/missing/x.html"], USAGE, "does not exist"),
    (["simulate", "--ram", "4M", "-o", "{d}/exists"], USAGE, "--force"),
    (["simulate", "--ram", "4M", "-o", "{d}/full"], USAGE, "is a directory"),
    (["simulate", "--ram", "4M", "-o", "{d}/missing/x"], USAGE, "does not exist"),
    (["simulate", "--ram", "4M", "--return-path", "/proc/x"], USAGE, "needs -o"),
    (["simulate", "--ram", "4M", "--postcopy", "-o", "{d}/new.mig", "--return-path", "{d}/exists"], USAGE, "--force"),
    (["simulate", "--ram", "inf"], USAGE, "not a size"),
    (["simulate", "--ram", "nan"], USAGE, "not a size"),
    (["simulate", "--ram", "-1"], USAGE, "not a size"),
    (["simulate", "--ram", "64Q"], USAGE, "not a size"),
    (["simulate", "--cache-size=-4M"], USAGE, "not a size"),
    (["simulate", "--bandwidth", "1e30"], USAGE, "not a size"),
    (["simulate", "--ram", "99999999999T"], USAGE, "too large"),
    (["simulate", "--dirty-rate", "inf"], USAGE, "not a size"),
    (["simulate", "--downtime-ms", "nan"], USAGE, "not a duration"),
    (["simulate", "--downtime-ms", "-5"], USAGE, "not a duration"),
    (["simulate", "--max-passes", "-3"], USAGE, "not a count"),
    (["simulate", "--compress-level", "12"], USAGE, "invalid choice"),
    (["simulate", "--workload", "nope"], USAGE, "invalid choice"),
    (["simulate", "--param", "bad"], USAGE, "KEY=VALUE"),
    (["notebooks", "{d}/exists"], USAGE, "not a directory"),
    (["notebooks", "{d}/missing/x"], USAGE, "does not exist"),
    # damaged or unreadable input, or an output the system refuses: exit 1
    (["inspect", "{d}/nothing.bin", "-q"], DAMAGED, "cannot read"),
    (["inspect", "{d}/full", "-q"], DAMAGED, "no stream.bin"),
    (["inspect", PLAIN, "--return-path", "/proc/x", "-q"], DAMAGED, "cannot read /proc/x"),
    (["inspect", "{d}/garbage.bin", "-q"], DAMAGED, "at byte 0"),
    (["extract", PLAIN, "-o", "/proc/x", "-q"], DAMAGED, "cannot write /proc/x"),
    (["reencode", PLAIN, "-o", "/proc/x", "-q"], DAMAGED, "cannot write /proc/x"),
    (["report", PLAIN, "-o", "/proc/x", "-q"], DAMAGED, "cannot write /proc/x"),
    (["simulate", "--ram", "4M", "-o", "/proc/x"], DAMAGED, "cannot write /proc/x"),
    (["simulate", "--ram", "4M", "--postcopy", "-o", "{d}/pc.mig", "--return-path", "/proc/x"], DAMAGED,
     "cannot write /proc/x"),
    (["dump", "{d}/empty.bin", "-q"], DAMAGED, "ends in the middle"),
    (["dump", "{d}/trunc.bin", "-q"], DAMAGED, "ends in the middle"),
    (["dump", PLAIN, "--vmdesc", "{d}/nothing.json", "-q"], DAMAGED, "cannot read --vmdesc"),
    (["dump", PLAIN, "--vmdesc", "{d}/garbage.bin", "-q"], DAMAGED, "not a vmdesc"),
    (["dump", PLAIN, "--vmdesc", "{d}/text.txt", "-q"], DAMAGED, "not a vmdesc"),
    (["dump", PLAIN, "--vmdesc", "{d}/list.json", "-q"], DAMAGED, "not a vmdesc"),
    (["dump", PLAIN, "--vmdesc", "{d}/bogus.json", "-q"], DAMAGED, "vmdesc"),
]


def _case_id(value):
    return " ".join(a.replace(PLAIN, "plain.zst") for a in value) if isinstance(value, list) else None


@pytest.mark.parametrize(("argv", "status", "words"), CASES, ids=_case_id)
def test_bad_cli_case(capsys, files, argv, status, words):
    code = main([a.replace("{d}", str(files)) for a in argv])
    out, err = capsys.readouterr()
    assert code == status, (code, out, err)
    assert "Traceback" not in out + err
    assert words in err, err


# ramlab capture and ramlab watch: the same argparse types as simulate, so a bad size or number is a usage
# error (exit 2, no traceback) found while parsing, before any QEMU is started
QEMU_CASES = [
    (["capture", "{d}/cap", "--ram", "inf"], "not a size"),
    (["capture", "{d}/cap", "--ram=-1M"], "not a size"),
    (["capture", "{d}/cap", "--ram", "nan"], "not a size"),
    (["capture", "{d}/cap", "--ram", "1.5M"], "whole MiB"),
    (["capture", "{d}/cap", "--ram", "2M"], "at least 4M"),
    (["capture", "{d}/cap", "--cache-size", "inf"], "not a size"),
    (["capture", "{d}/cap", "--cache-size=-4M"], "not a size"),
    (["capture", "{d}/cap", "--bandwidth", "inf"], "not a size"),
    (["capture", "{d}/cap", "--bandwidth", "99999999999T"], "too large"),
    (["capture", "{d}/cap", "--postcopy-bandwidth", "inf"], "not a size"),
    (["capture", "{d}/cap", "--timeout", "inf"], "not a positive number"),
    (["capture", "{d}/cap", "--timeout", "0"], "not a positive number"),
    (["capture", "{d}/cap", "--timeout", "nan"], "not a positive number"),
    (["capture", "{d}/cap", "--compress-level", "99"], "invalid choice"),
    (["capture", "{d}/cap", "--compress-level=-1"], "invalid choice"),
    (["capture", "{d}/cap", "--compress-threads", "0"], "not an integer in 1..255"),
    (["capture", "{d}/cap", "--multifd", "0"], "not an integer in 1..255"),
    (["capture", "{d}/cap", "--downtime-ms=-1"], "not an integer in 0..2000000"),
    (["capture", "{d}/cap", "--relax-after=-1"], "not a count"),
    (["capture", "{d}/cap", "--postcopy-after", "two"], "not a count"),
    (["capture", "{d}/cap", "--zstd-level", "99"], "not an integer in 1..22"),
    (["watch", "--ram", "inf"], "not a size"),
    (["watch", "--ram", "-5"], "not a size"),
    (["watch", "--bandwidth", "nan"], "not a size"),
    (["watch", "--bandwidth", "inf"], "not a size"),
    (["watch", "--cache-size=-1M"], "not a size"),
    (["watch", "--postcopy-bandwidth", "inf"], "not a size"),
    (["watch", "--timeout", "inf"], "not a positive number"),
    (["watch", "--compress-level", "10"], "invalid choice"),
    (["watch", "--speed", "0"], "not a positive number"),
    (["watch", "--sample-interval", "inf"], "not a positive number"),
    (["watch", "--exec"], "recorder's socket"),
]


@pytest.fixture
def no_qemu(monkeypatch):
    """Any attempt to record a migration or start a process fails the test."""
    import subprocess

    import ramlab.capture.live
    import ramlab.capture.run

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a QEMU capture was started: {args} {kwargs}")

    monkeypatch.setattr(ramlab.capture.run, "capture", forbidden)
    monkeypatch.setattr(ramlab.capture.live, "start_capture", forbidden)
    monkeypatch.setattr(ramlab.capture.live, "capture", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)


@pytest.mark.parametrize(("argv", "words"), QEMU_CASES, ids=_case_id)
def test_bad_capture_and_watch_option_is_a_usage_error_before_qemu(capsys, tmp_path, no_qemu, argv, words):
    code = main([a.replace("{d}", str(tmp_path)) for a in argv])
    out, err = capsys.readouterr()
    assert code == USAGE, (code, out, err)
    assert "Traceback" not in out + err
    assert words in err, err
    assert not (tmp_path / "cap").exists()  # capture() creates its folder first: it was never called


def test_capture_size_parser_rejects_non_finite_and_negative_sizes():
    from ramlab.capture.run import parse_size
    from ramlab.errors import RamlabError

    assert parse_size("16M") == 16 << 20 and parse_size(4096) == 4096 and parse_size("1G") == 1 << 30
    for bad, words in [("inf", "finite"), ("-inf", "finite"), ("nan", "finite"), ("-1M", ">= 0"), ("-5", ">= 0"),
                       (-5, ">= 0"), (float("inf"), "finite"), (True, "size"), ("lots", "size")]:
        with pytest.raises(RamlabError, match=words):
            parse_size(bad, "--ram")


def test_simulate_with_a_ram_size_this_machine_cannot_hold(capsys):
    # 1 TiB: refused up front by simulate's own limits, or by the allocation; never a traceback
    code = main(["simulate", "--ram", "1T"])
    out, err = capsys.readouterr()
    assert code in (USAGE, DAMAGED) and "Traceback" not in out + err
    assert "memory" in err or "too large" in err or "size" in err, err


def test_outputs_are_not_overwritten_without_force(capsys, tmp_path):
    out = tmp_path / "again.bin"
    assert main(["reencode", PLAIN, "-o", str(out), "-q"]) == 0
    first = out.read_bytes()
    out.write_bytes(b"mine")
    assert main(["reencode", PLAIN, "-o", str(out), "-q"]) == USAGE
    assert out.read_bytes() == b"mine"
    assert main(["reencode", PLAIN, "-o", str(out), "-q", "--force"]) == 0
    assert out.read_bytes() == first
    ram = tmp_path / "ram"
    assert main(["extract", PLAIN, "-o", str(ram), "-q"]) == 0
    (ram / "pc.ram.bin").write_bytes(b"mine")
    assert main(["extract", PLAIN, "-o", str(ram), "-q"]) == USAGE
    assert (ram / "pc.ram.bin").read_bytes() == b"mine"
    assert main(["extract", PLAIN, "-o", str(ram), "-q", "--force"]) == 0
    assert (ram / "pc.ram.bin").stat().st_size == 16 << 20
    capsys.readouterr()


def test_notebooks_refuse_to_overwrite_without_force(capsys, tmp_path):
    assert main(["notebooks", str(tmp_path / "nb")]) == 0
    copied = sorted(p.name for p in (tmp_path / "nb").iterdir())
    assert "00-tour.ipynb" in copied and all(n.endswith(".ipynb") for n in copied)
    tour = tmp_path / "nb" / "00-tour.ipynb"
    tour.write_text("my work")
    assert main(["notebooks", str(tmp_path / "nb")]) == USAGE
    assert "00-tour.ipynb" in capsys.readouterr().err and tour.read_text() == "my work"
    assert main(["notebooks", str(tmp_path / "nb"), "--force"]) == 0
    assert tour.read_text() != "my work"


def test_stdin_is_refused_when_it_is_a_terminal(capsys, monkeypatch):
    class Tty(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty(io.BytesIO(b"")))
    assert main(["inspect", "-", "-q"]) == USAGE
    assert "terminal" in capsys.readouterr().err


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "zst"])
def test_dash_reads_standard_input(capsys, monkeypatch, compressed):
    data = (DATA / "plain" / "stream.bin.zst").read_bytes()
    if not compressed:
        data = read_zst(DATA / "plain" / "stream.bin.zst")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["inspect", "-", "--json", "-q"]) == 0
    out = capsys.readouterr().out
    assert '"name": "<stdin>"' in out and '"complete": true' in out


def test_every_option_has_help_and_every_command_examples():
    import argparse

    from ramlab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        if name == "capture":  # its own parser (ramlab.capture.run), checked below
            continue
        assert "examples:" in (p.epilog or ""), name
        for action in p._actions:
            assert action.help, f"ramlab {name} {action.option_strings or action.dest}: no help text"
    from ramlab.capture.run import build_parser as capture_parser

    for action in capture_parser()._actions:
        assert action.help, f"ramlab capture {action.option_strings or action.dest}: no help text"


def test_help_and_version_exit_zero(capsys):
    from ramlab import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ramlab {__version__}"
    for argv in (["-h"], ["inspect", "-h"], ["simulate", "-h"], ["notebooks", "-h"]):
        assert main(argv) == 0, argv
        assert "examples:" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("cat") is None, reason="needs cat")
def test_pipes_and_dev_stdin_are_read_fully(tmp_path):
    """``<(cat s.bin)`` and ``/dev/stdin`` are pipes: st_size is 0, the stream is not."""
    import subprocess

    raw = tmp_path / "s.bin"
    raw.write_bytes(read_zst(DATA / "plain" / "stream.bin.zst"))
    cmd = [sys.executable, "-m", "ramlab", "inspect", "-q", "--json"]
    via_dev_stdin = subprocess.run(f"cat {raw} | {' '.join(cmd)} /dev/stdin", shell=True,
                                   capture_output=True, text=True, timeout=120)
    via_dash = subprocess.run(f"cat {raw} | {' '.join(cmd)} -", shell=True,
                              capture_output=True, text=True, timeout=120)
    via_fifo = subprocess.run(["bash", "-c", f"{' '.join(cmd)} <(cat {raw})"],
                              capture_output=True, text=True, timeout=120)
    for r in (via_dev_stdin, via_dash, via_fifo):
        assert r.returncode == 0, r.stderr
        assert '"complete": true' in r.stdout and f'"stream_bytes": {raw.stat().st_size}' in r.stdout


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_file_that_reports_no_size_is_read_to_its_end():
    """/proc and sysfs files are regular files whose st_size is 0: read what they give, as QEMU's
    ``exec:cat FILE`` would (the bytes are not a stream: the decode says so at byte 0)."""
    from ramlab.io import read_stream

    text = Path("/proc/self/status").read_bytes()
    got = bytes(read_stream("/proc/self/status"))
    assert got[:5] == text[:5] == b"Name:" and len(got) > 100
    m = ramlab.open("/proc/self/status")
    assert m.error is not None and m.error.offset == 0 and "magic" in str(m.error).lower()
    assert bytes(read_stream(Path("/dev/null"))) == b""

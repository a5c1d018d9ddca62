"""Coverage-guided fuzzing of ramlab's decoders with atheris (libFuzzer for Python).

    python tests/fuzz/run.py stream --seconds 30          # one target, a short run (what CI does)
    python tests/fuzz/run.py all --seconds 600            # every target in turn, the long mode
    python tests/fuzz/run.py stream --replay FILE         # run one saved input through a target

Targets are in ``targets.py``. Each run starts from a seed corpus made from the bundled captures
(``ramlab/data``: prefixes of the streams, the multifd channels, the return paths, XBZRLE records),
written to ``artifacts/fuzz/corpus/<target>/`` together with what the fuzzer adds. Only ramlab's own
modules are instrumented for coverage. An input that makes a target fail, take more than
``--timeout`` seconds or more than ``--rss-mb`` of memory is saved as
``artifacts/fuzz/crash-<target>-*``; copy it to ``tests/fuzz/regressions/<target>/`` and it becomes a
test (``tests/test_fuzz.py`` replays that folder). The last line printed is a JSON summary:
``{"target", "executions", "seconds", "crashes"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = REPO / "artifacts" / "fuzz"
#: largest input the fuzzer builds (bytes): big enough for a few pages and their records
MAX_LEN = 64 << 10


def seed_corpus(target: str, out: Path) -> int:
    """Write the seed inputs of ``target`` (from the bundled captures) to ``out``."""
    sys.path.insert(0, str(REPO))
    import ramlab
    from ramlab.data import capture_files, data_dir
    from ramlab.io import read_stream

    out.mkdir(parents=True, exist_ok=True)
    seeds: list[bytes] = []
    for folder in sorted(p for p in data_dir().rglob("*") if (p / "meta.json").exists()):
        try:
            files, ret = capture_files(folder)
        except ramlab.RamlabError:
            continue
        main = bytes(read_stream(files[0])[:MAX_LEN])
        if target in ("stream", "open_bytes"):
            seeds += [main, main[:4096], main[: MAX_LEN // 4]]
        elif target == "multifd" and len(files) > 1:
            seeds += [bytes(read_stream(f)[:MAX_LEN]) for f in files[1:]]
        elif target == "return_path" and ret is not None:
            seeds.append(bytes(read_stream(ret)[:MAX_LEN]))
        elif target == "open_channels":
            other = bytes(read_stream(files[1])[: MAX_LEN // 2]) if len(files) > 1 else b""
            rp = bytes(read_stream(ret)[:4096]) if ret is not None else b""
            cut = 4 + len(main[: MAX_LEN // 4])
            head = cut.to_bytes(2, "little") + (cut + len(other)).to_bytes(2, "little")
            seeds.append(head + main[: MAX_LEN // 4] + other + rp)
        elif target == "xbzrle":
            m = ramlab.open(folder)
            recs = [e for e in m.events if type(e).__name__ == "RamXbzrle"][:8]
            if recs:
                seeds.append(bytes([len(recs) - 1]) + b"".join(e.data for e in recs))
    for i, s in enumerate(seeds):
        (out / f"seed-{i:03d}").write_bytes(s)
    return len(seeds)


def _child(target: str, args: list[str]) -> None:
    """Run inside the fuzzing process: instrument ramlab, then hand control to libFuzzer."""
    import atheris

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE.parent))  # tests/, for _shared
    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["ramlab"]):
        import ramlab  # noqa: F401
        import ramlab.wire.decoder  # noqa: F401
    from targets import TARGETS

    fn = TARGETS[target]
    atheris.Setup([sys.argv[0], *args], fn)
    atheris.Fuzz()


def fuzz(target: str, seconds: int, timeout: int, rss_mb: int, jobs_dir: Path) -> dict:
    corpus = jobs_dir / "corpus" / target
    if not corpus.is_dir() or not any(corpus.iterdir()):
        seed_corpus(target, corpus)
    args = [str(corpus), f"-max_total_time={seconds}", f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}",
            f"-max_len={MAX_LEN}", f"-artifact_prefix={jobs_dir}/crash-{target}-", "-print_final_stats=1"]
    t0 = time.perf_counter()
    # glibc raises its mmap threshold each time a large block is freed, so later large arrays come
    # from the heap and stay resident: one fuzzing process crept to 1.8 GB (libFuzzer's rss limit
    # is the process's peak) where every single input needs < 50 MB. Fixed thresholds: 0.2 GB.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    proc = subprocess.run([sys.executable, __file__, "--child", target, "--", *args], capture_output=True, text=True,
                          env=env)
    seconds_run = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    (jobs_dir / f"{target}.log").write_text(log)
    runs = (re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
            or re.findall(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE)", log))
    crashes = sorted(str(p) for p in jobs_dir.glob(f"crash-{target}-*"))
    return {"target": target, "executions": int(runs[-1]) if runs else 0, "seconds": round(seconds_run, 1),
            "crashes": crashes, "exit": proc.returncode}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[3:])
        return 0
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    from targets import TARGETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("target", choices=[*TARGETS, "all"])
    p.add_argument("--seconds", type=int, default=30, help="fuzzing time per target (default 30)")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    p.add_argument("--rss-mb", type=int, default=2048, help="memory one process may use (default 2048)")
    p.add_argument("--replay", type=Path, help="run this saved input through the target and exit")
    a = p.parse_args(argv)
    if a.replay is not None:
        TARGETS[a.target](a.replay.read_bytes())
        print(f"{a.replay}: ok")
        return 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAMLAB_XBZRLE_BACKEND", "numpy")  # numba's compiled kernels are not instrumented
    results = [fuzz(t, a.seconds, a.timeout, a.rss_mb, ARTIFACTS)
               for t in (TARGETS if a.target == "all" else [a.target])]
    for r in results:
        print(json.dumps(r))
    total = {"target": a.target, "executions": sum(r["executions"] for r in results),
             "seconds": round(sum(r["seconds"] for r in results), 1),
             "crashes": [c for r in results for c in r["crashes"]]}
    print(json.dumps(total))
    return 1 if total["crashes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

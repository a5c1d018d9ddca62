"""Throughput of ramlab's XBZRLE batch encoder and decoder, numpy and numba backends, vs QEMU's C.

Prints GB/s of page data (new-page bytes per second, 1 GB = 1e9 bytes) for batches of
4 KiB page pairs with different change patterns, next to QEMU's own ``migration/xbzrle.c``
timed in the same run on the same page pairs, and the ratio of the fastest ramlab backend
to C. The C is built at benchmark time from Debian's qemu source package (see
``qemu_xbzrle.py``: fetched once into ``--cache``, never committed) with a small harness of
ours (``xbzrle_harness.c``); its encodings are checked byte for byte against ramlab's. Where
the source or a compiler is unavailable the C columns say so and stay empty::

    python benchmarks/bench_xbzrle.py                    # 65536 pages (256 MiB per array), both backends
    python benchmarks/bench_xbzrle.py --quick            # 8192 pages
    python benchmarks/bench_xbzrle.py --backend numba    # one backend only
    python benchmarks/bench_xbzrle.py --no-c             # without QEMU's C
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import qemu_xbzrle

from ramlab import xbzrle
from ramlab.xbzrle import decode_batch, encode_batch

PAGE = 4096
GEN_CHUNK = 4096  # pages generated at a time, to bound temporaries


def _mutate(old: np.ndarray, rng: np.random.Generator, change: Callable) -> np.ndarray:
    new = old.copy()
    for s in range(0, old.shape[0], GEN_CHUNK):
        change(new[s : s + GEN_CHUNK], rng)
    return new


def _flip(block: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    block[mask] ^= rng.integers(1, 256, int(mask.sum()), dtype=np.uint8)


def _one_word(block: np.ndarray, rng: np.random.Generator) -> None:
    words = block.view(np.uint64)
    idx = rng.integers(0, words.shape[1], words.shape[0])
    words[np.arange(words.shape[0]), idx] ^= np.uint64(0xFFFFFFFFFFFFFFFF)


def _scattered64(block: np.ndarray, rng: np.random.Generator) -> None:
    mask = np.zeros(block.shape, bool)
    rows = np.repeat(np.arange(block.shape[0]), 64)
    mask[rows, rng.integers(0, PAGE, rows.size)] = True
    _flip(block, mask, rng)


def _percent(p: int) -> Callable:
    def change(block: np.ndarray, rng: np.random.Generator) -> None:
        _flip(block, rng.integers(0, 100, block.shape, dtype=np.uint8) < p, rng)

    return change


def _random(block: np.ndarray, rng: np.random.Generator) -> None:
    block[...] = rng.integers(0, 256, block.shape, dtype=np.uint8)


CASES: list[tuple[str, Callable | None]] = [
    ("identical", None),
    ("one 8-byte word", _one_word),
    ("64 scattered bytes", _scattered64),
    ("5% random bytes", _percent(5)),
    ("30% random bytes", _percent(30)),
    ("fully random", _random),
]


def time_c(harness: qemu_xbzrle.Harness, old: np.ndarray, new: np.ndarray, enc, repeats: int,  # type: ignore[no-untyped-def]
           work: Path) -> tuple[float, float]:
    """QEMU's encode and decode loops on the same pairs: best seconds of each.

    Raises AssertionError unless QEMU's return values and encoded bytes equal ramlab's ``enc``.
    """
    n, page = old.shape
    pairs, out = work / "pairs.bin", work / "c-encoded.bin"
    try:
        with pairs.open("wb") as fh:
            old.tofile(fh)
            new.tofile(fh)
        res = subprocess.run([str(harness.binary), str(pairs), str(n), str(page), str(repeats), str(out)],
                             capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            raise RuntimeError(f"QEMU xbzrle harness failed: {res.stderr.strip()}")
        fig = dict(line.split() for line in res.stdout.splitlines())
        assert int(fig["mismatches"]) == 0, "QEMU's decode(encode(old, new), old) != new"
        ret = np.fromfile(out, dtype=np.int32, count=n)
        slots = np.memmap(out, dtype=np.uint8, mode="r", offset=4 * n, shape=(n, page))
        assert np.array_equal(ret, enc.ret), "QEMU's xbzrle_encode_buffer return values differ from ramlab's"
        for s in range(0, n, GEN_CHUNK):  # the encoded bytes, compared page by page in bounded chunks
            r = ret[s : s + GEN_CHUNK]
            mine = enc.buffer[enc.offsets[s] : enc.offsets[min(s + GEN_CHUNK, n)]]
            assert np.array_equal(slots[s : s + GEN_CHUNK][np.arange(page) < np.maximum(r, 0)[:, None]], mine), \
                f"QEMU's encoded bytes differ from ramlab's in pages {s}..{s + GEN_CHUNK}"
        del slots
        return float(fig["encode"]), float(fig["decode"])
    finally:
        pairs.unlink(missing_ok=True)
        out.unlink(missing_ok=True)


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def _run_backend(name: str, old: np.ndarray, new: np.ndarray, repeats: int) -> tuple[float, float, object]:
    """Best encode and decode times of one backend, and its encoded batch (round trip checked)."""
    xbzrle.set_backend(name)
    encode_batch(old[:2], new[:2])  # compile / warm up outside the timing
    t_enc, enc = _best(lambda: encode_batch(old, new), repeats)
    target = old.copy()
    t_dec = float("inf")
    for _ in range(repeats):
        target[...] = old
        t = time.perf_counter()
        decode_batch(enc, target)
        t_dec = min(t_dec, time.perf_counter() - t)
    ok = enc.ret > 0
    assert np.array_equal(target[ok], new[ok]), f"{name}: decode(encode(old, new), old) != new"
    return t_enc, t_dec, enc


def _fmt(x: float | None, width: int = 7, digits: int = 2) -> str:
    return f"{x:>{width}.{digits}f}" if x is not None else f"{'-':>{width}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8192 pages instead of 65536")
    ap.add_argument("--pages", type=int, default=None, help="number of page pairs")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings")
    ap.add_argument("--backend", choices=["numpy", "numba", "both"], default="both",
                    help="which batch backend(s) to time (default both; numba needs ramlab[fast])")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ramlab-bench-xbzrle",
                    help="where QEMU's source files and the built harness are kept")
    ap.add_argument("--no-c", action="store_true", help="do not build and time QEMU's C")
    args = ap.parse_args()
    harness: qemu_xbzrle.Harness | None = None
    if args.no_c:
        print("QEMU C: not timed (--no-c)")
    else:
        try:
            harness = qemu_xbzrle.build(args.cache)
        except qemu_xbzrle.Unavailable as exc:
            print(f"QEMU C: unavailable, its columns are skipped: {exc}")
        else:
            print(f"QEMU C: migration/xbzrle.c of Debian's qemu {harness.source_version}, "
                  f"built with {' '.join(harness.cflags)}")
    backends = ["numpy", "numba"] if args.backend == "both" else [args.backend]
    if "numba" in backends and xbzrle.set_backend("auto") != "numba":
        if args.backend == "numba":
            raise SystemExit("numba is not installed: pip install 'ramlab[fast]'")
        print("numba not installed: timing the numpy backend only")
        backends = ["numpy"]
    n = args.pages or (8192 if args.quick else 65536)
    rng = np.random.default_rng(2024)
    old = rng.integers(0, 256, (n, PAGE), dtype=np.uint8)
    gb = n * PAGE / 1e9
    print(f"{n} page pairs of {PAGE} bytes ({n * PAGE / 2**20:.0f} MiB per array), best of {args.repeats}, "
          f"GB/s of page data; ratio = fastest ramlab backend / QEMU C"
          + ("; QEMU's encodings equal ramlab's byte for byte (checked per case)" if harness else ""))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    cols = " ".join(f"{b:>7}" for b in backends)
    print(f"{'':<20} | {'encode':^{8 * len(backends) + 14}} | {'decode':^{8 * len(backends) + 14}} |")
    print(f"{'case':<20} | {cols} {'C':>6} {'ratio':>6} | {cols} {'C':>6} {'ratio':>6} | "
          f"{'encoded':>7} {'same':>4} {'ovfl':>5} {'mean len':>8}")
    for name, change in CASES:
        new = old.copy() if change is None else _mutate(old, rng, change)
        enc_t, dec_t, batches = {}, {}, {}
        for b in backends:
            enc_t[b], dec_t[b], batches[b] = _run_backend(b, old, new, args.repeats)
        enc = batches[backends[0]]
        for b in backends[1:]:
            other = batches[b]
            assert np.array_equal(enc.ret, other.ret) and np.array_equal(enc.buffer, other.buffer), f"{b} differs"
        ok = enc.ret > 0
        mean_len = float(enc.ret[ok].mean()) if ok.any() else 0.0
        c_enc = c_dec = None
        if harness is not None:
            args.cache.mkdir(parents=True, exist_ok=True)
            t_enc, t_dec = time_c(harness, old, new, enc, args.repeats, args.cache)
            c_enc, c_dec = gb / t_enc, gb / t_dec
        best_enc, best_dec = gb / min(enc_t.values()), gb / min(dec_t.values())
        if not ok.any():  # no page has an encoding: nothing to decode, no decode figures
            dec_t = {b: None for b in backends}
            c_dec = best_dec = None
        print(f"{name:<20} | {' '.join(_fmt(gb / enc_t[b]) for b in backends)} {_fmt(c_enc, 6)} "
              f"{_fmt(best_enc / c_enc if c_enc else None, 6)} | "
              f"{' '.join(_fmt(gb / dec_t[b] if dec_t[b] else None) for b in backends)} {_fmt(c_dec, 6)} "
              f"{_fmt(best_dec / c_dec if c_dec and best_dec else None, 6)} | "
              f"{int(ok.sum()):>7} {int((enc.ret == 0).sum()):>4} {int((enc.ret < 0).sum()):>5} {mean_len:>8.1f}")
        del new, batches, enc
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

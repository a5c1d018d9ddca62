"""Throughput of ramlab's XBZRLE batch encoder and decoder, numpy and numba backends.

Prints GB/s of page data (new-page bytes per second, 1 GB = 1e9 bytes) for batches of
4 KiB page pairs with different change patterns, next to QEMU's C implementation
(``migration/xbzrle.c``) measured on the same machine, and the ratio of the fastest
ramlab backend to C::

    python benchmarks/bench_xbzrle.py                    # 65536 pages (256 MiB per array), both backends
    python benchmarks/bench_xbzrle.py --quick            # 8192 pages
    python benchmarks/bench_xbzrle.py --backend numba    # one backend only
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

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


# QEMU's C xbzrle_encode_buffer / xbzrle_decode_buffer on this machine, GB/s (None: not measured).
C_ENCODE = {"identical": 20.0, "one 8-byte word": 15.0, "64 scattered bytes": 2.8, "5% random bytes": 1.0,
            "30% random bytes": 0.28}
C_DECODE = {"64 scattered bytes": 11.0, "5% random bytes": 4.9}


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
    args = ap.parse_args()
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
          f"GB/s of page data; ratio = fastest ramlab backend / QEMU C")
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
        c_enc, c_dec = C_ENCODE.get(name), C_DECODE.get(name)
        best_enc, best_dec = gb / min(enc_t.values()), gb / min(dec_t.values())
        print(f"{name:<20} | {' '.join(_fmt(gb / enc_t[b]) for b in backends)} {_fmt(c_enc, 6)} "
              f"{_fmt(best_enc / c_enc if c_enc else None, 6)} | "
              f"{' '.join(_fmt(gb / dec_t[b]) for b in backends)} {_fmt(c_dec, 6)} "
              f"{_fmt(best_dec / c_dec if c_dec else None, 6)} | "
              f"{int(ok.sum()):>7} {int((enc.ret == 0).sum()):>4} {int((enc.ret < 0).sum()):>5} {mean_len:>8.1f}")
        del new, batches, enc


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""HF tokenizers' encode throughput on the same strings as bench_tokenizer.c (the baseline for
its ratio). Prints two lines: one Tokenizer.encode call per string (what bench_tokenizer does),
and encode_batch over all strings on one thread (no per-call Python overhead).

    RAYON_NUM_THREADS=1 python3 bench/bench_tokenizer_hf.py [tokenizer.json [cases.bin [min_s]]]
"""
import os
import pathlib
import struct
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def texts(path):
    d = pathlib.Path(path).read_bytes()
    assert d[:4] == b"TVTK"
    (n,), o, out = struct.unpack_from("<I", d, 4), 8, []
    for _ in range(n):
        (k,) = struct.unpack_from("<I", d, o)
        out.append(d[o + 4:o + 4 + k].decode("utf-8"))
        o += 4 + k
        (k,) = struct.unpack_from("<I", d, o)
        o += 4 + 2 * k
        (k,) = struct.unpack_from("<I", d, o)
        o += 4 + (0 if k == 0xFFFFFFFF else k)
    return out


def run(label, fn, items, nbytes, min_s):
    reps, tokens, t0 = 0, 0, time.perf_counter()
    while True:
        tokens += fn(items)
        reps += 1
        el = time.perf_counter() - t0
        if el >= min_s:
            break
    print(f"hf tokenizers {label}: {nbytes * reps / el / 1e6:.2f} MB/s "
          f"({nbytes * reps} bytes, {tokens} tokens, {el:.2f} s; {len(items)} strings x {reps})")


def main(argv):
    tj = argv[0] if argv else str(ROOT / "tests/data/tokenizer/tokenizer.json")
    cb = argv[1] if len(argv) > 1 else str(ROOT / "tests/data/tokenizer/cases.bin")
    min_s = float(argv[2]) if len(argv) > 2 else 2.0
    tok = Tokenizer.from_file(tj)
    items = texts(cb)
    nbytes = sum(len(t.encode("utf-8")) for t in items)
    run("encode", lambda xs: sum(len(tok.encode(x).ids) for x in xs), items, nbytes, min_s)
    run("encode_batch", lambda xs: sum(len(e.ids) for e in tok.encode_batch(xs)), items, nbytes,
        min_s)


if __name__ == "__main__":
    main(sys.argv[1:])

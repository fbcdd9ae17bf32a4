#!/usr/bin/env python3
"""Pillow baseline for bench_image.c: open + convert('RGB') + resize((448, 448), BICUBIC), in ms
per image (median), single thread, on the same files. Prints one line per file:
    bench_image_pillow: j_1600x1200.jpg 1600x1200 decode+resize448 14.2 ms/image (...)"""
import io
import pathlib
import statistics
import sys
import time

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent


def bench(path):
    buf = pathlib.Path(path).read_bytes()
    td, tr = [], []
    start = time.perf_counter()
    i = -2
    while len(td) < 5 or time.perf_counter() - start < 1.5:
        t0 = time.perf_counter()
        im = Image.open(io.BytesIO(buf)).convert("RGB")
        t1 = time.perf_counter()
        im.resize((448, 448), Image.BICUBIC)
        t2 = time.perf_counter()
        i += 1
        if i <= 0:
            continue
        td.append((t1 - t0) * 1e3)
        tr.append((t2 - t1) * 1e3)
    tot = statistics.median(a + b for a, b in zip(td, tr))
    print(f"bench_image_pillow: {pathlib.Path(path).name} {im.width}x{im.height} decode+resize448 "
          f"{tot:.3f} ms/image (decode {statistics.median(td):.3f}, resize "
          f"{statistics.median(tr):.3f}; {len(td)} runs; Pillow {Image.__version__})")


def main(argv):
    files = argv or [ROOT / "tests/data/image/j_1600x1200.jpg",
                     ROOT / "tests/data/image/j_641x479.jpg"]
    for f in files:
        bench(f)


if __name__ == "__main__":
    main(sys.argv[1:])

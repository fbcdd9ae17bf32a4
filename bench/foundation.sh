#!/usr/bin/env bash
# The foundation's benchmark lines, each with its baseline measured in the same run:
#   tokenizer encode MB/s vs HF tokenizers (one thread), JPEG decode + resize to 448 vs Pillow,
#   SHA-256 GB/s vs memcpy. Needs a build (scripts/setup.sh) and, for the baselines,
#   pip install tokenizers pillow.      bench/foundation.sh [build-dir]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
cmake --build "$build" --target bench_tokenizer bench_image bench_hash >/dev/null
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
"$build/bench_tokenizer"
RAYON_NUM_THREADS=1 python3 "$root/bench/bench_tokenizer_hf.py" || echo "(HF tokenizers not installed: no baseline)"
"$root/bench/bench_image.sh" "$build" || echo "(Pillow not installed: no baseline)"
"$build/bench_hash"

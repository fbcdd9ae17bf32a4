#!/usr/bin/env bash
# Runs bench_image (ours) and bench_image_pillow.py (Pillow) on the same JPEGs and prints one line
# each plus the speed ratio (Pillow time / our time; > 1 means we are faster).
#   bench/bench_image.sh [build-dir] [file.jpg ...]      default build dir: build
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
shift || true
bin="$build/bench_image"
if [ ! -x "$bin" ]; then
    echo "bench_image.sh: $bin not found; build first: cmake --build $build --target bench_image" >&2
    exit 2
fi
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    files=("$root/tests/data/image/j_1600x1200.jpg" "$root/tests/data/image/j_641x479.jpg")
fi
for f in "${files[@]}"; do
    ours="$("$bin" "$f")"
    pil="$(python3 "$root/bench/bench_image_pillow.py" "$f")"
    echo "$ours"
    echo "$pil"
    a="$(echo "$ours" | awk '{print $5}')"
    b="$(echo "$pil" | awk '{print $5}')"
    awk -v a="$a" -v b="$b" -v f="$(basename "$f")" \
        'BEGIN { printf "bench_image ratio: %s Pillow/ours = %.2fx\n", f, b / a }'
done

#!/usr/bin/env bash
# tests/gpu/pack.sh — packs a CUDA build for a GPU machine that cannot build the project itself
# (no -dev packages there): the CUDA test and benchmark binaries, stripped, plus the shared
# libraries they need that are not glibc, libstdc++ or CUDA's own (cuBLAS and the runtime come
# from the GPU machine's toolkit). Then, on the GPU machine, in a copy of this tree:
#   tests/gpu/run.sh [--bench] OUT_DIR
# Usage: tests/gpu/pack.sh [BUILD_DIR (default build-cuda)] [OUT_DIR (default build-gpucarry)]
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
bdir=${1:-$src/build-cuda}
out=${2:-$src/build-gpucarry}
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
for b in test_cuda_ops test_cuda_model bench_cuda; do
  cp "$bdir/$b" "$out/bin/"
  strip "$out/bin/$b"
done
for b in "$out"/bin/*; do ldd "$b"; done | awk '/=>/ {print $3}' | sort -u |
  grep -v -E 'libc\.so|libm\.so|ld-linux|libstdc\+\+|libgcc_s|libcudart|libcublas|libpthread|libdl\.so|librt\.so' |
  while read -r l; do cp -L "$l" "$out/lib/"; done
# the tests find tests/data through the source path compiled into them
echo "$src" > "$out/srcdir"
du -sh "$out"

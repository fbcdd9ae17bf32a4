#!/usr/bin/env bash
# tests/gpu/run.sh — the CUDA checks of issue 5 on a machine with an NVIDIA GPU:
#   op-by-op parity (test_cuda_ops), the engine goldens on CUDA (test_cuda_model), and with
#   --bench the GPU benchmarks (bench_cuda, and bench/bench_cuda_torch.py where PyTorch with
#   CUDA is installed, for the side-by-side figures).
# Usage: tests/gpu/run.sh [--bench] [BUILD_DIR]
#   BUILD_DIR: an existing CUDA build to use, or a folder made by tests/gpu/pack.sh (bin/ and
#   lib/: for a GPU machine without the project's -dev packages); default: configure and build
#   build-gpu here with -DTV_CUDA=ON. Exits 0 with a message where there is no GPU; non-zero
#   when a check fails.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
bench=0
bdir=
for a in "$@"; do
  case $a in
    --bench) bench=1 ;;
    *) bdir=$a ;;
  esac
done

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "tests/gpu/run.sh: no NVIDIA GPU here (nvidia-smi missing or sees none): nothing to run"
  exit 0
fi
nvidia-smi -L

if [ -z "$bdir" ]; then
  bdir=$src/build-gpu
  cmake -S "$src" -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DTV_CUDA=ON >/dev/null || exit 1
  cmake --build "$bdir" -j"$(nproc)" --target test_cuda_ops test_cuda_model bench_cuda || exit 1
fi

bin=$bdir
if [ -d "$bdir/bin" ]; then   # a pack.sh folder: its libraries, the toolkit's CUDA libraries
  bin=$bdir/bin
  cu=$(find /usr/local /usr/lib /opt -name 'libcublasLt.so.*' 2>/dev/null | head -1)
  export LD_LIBRARY_PATH=$bdir/lib${cu:+:$(dirname "$cu")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  want=$(cat "$bdir/srcdir" 2>/dev/null || true)   # the tests' compiled-in source path
  if [ -n "$want" ] && [ ! -e "$want/tests/data" ]; then
    mkdir -p "$(dirname "$want")" && ln -sfn "$src" "$want" ||
      echo "warning: $want/tests/data is missing; the golden tests will fail"
  fi
fi

fail=0
for t in test_cuda_ops test_cuda_model; do
  echo "== $t"
  if ! "$bin/$t"; then echo "FAILED: $t"; fail=1; fi
done

if [ "$bench" = 1 ]; then
  echo "== bench_cuda"
  "$bin/bench_cuda" || fail=1
  if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "== bench_cuda_torch.py (PyTorch eager fp16, same shapes)"
    python3 "$src/bench/bench_cuda_torch.py" || fail=1
  else
    echo "PyTorch with CUDA not found: no side-by-side figures"
  fi
fi
exit $fail

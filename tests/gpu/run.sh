#!/usr/bin/env bash
# tests/gpu/run.sh — the CUDA checks of issue 5 on a machine with an NVIDIA GPU:
#   op-by-op parity (test_cuda_ops), the engine goldens on CUDA (test_cuda_model), and with
#   --bench the GPU benchmarks (bench_cuda, and bench/bench_cuda_torch.py where PyTorch with
#   CUDA is installed, for the side-by-side figures).
# Usage: tests/gpu/run.sh [--bench] [BUILD_DIR]
#   BUILD_DIR: an existing CUDA build to use (default: configure and build build-gpu here with
#   -DTV_CUDA=ON). Exits 0 with a message where there is no GPU; non-zero when a check fails.
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

fail=0
for t in test_cuda_ops test_cuda_model; do
  echo "== $t"
  if ! "$bdir/$t"; then echo "FAILED: $t"; fail=1; fi
done

if [ "$bench" = 1 ]; then
  echo "== bench_cuda"
  "$bdir/bench_cuda" || fail=1
  if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "== bench_cuda_torch.py (PyTorch eager fp16, same shapes)"
    python3 "$src/bench/bench_cuda_torch.py" || fail=1
  else
    echo "PyTorch with CUDA not found: no side-by-side figures"
  fi
fi
exit $fail

#!/usr/bin/env bash
# Sets up, builds and runs every test: once in the normal build (warnings are errors) and once
# under AddressSanitizer + UndefinedBehaviorSanitizer. Ends with "total: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

run_suite() {  # $1 build dir, rest: cmake options
  local dir=$1; shift
  TV_BUILD_DIR=$dir scripts/setup.sh -DTV_WERROR=ON "$@" || return 1
  (cd "$dir" && ctest --output-on-failure -j"$(nproc)" 2>&1) | tee "$dir.ctest.log"
}

run_suite build
run_suite build-asan -DTV_SANITIZE=ON -DTV_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug

passed=0; failed=0
for log in build.ctest.log build-asan.ctest.log; do
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" 2>/dev/null | tail -1)
  if [ -z "$line" ]; then echo "test: $log has no ctest summary (build failed?)"; failed=$((failed + 1)); continue; fi
  total=$(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/')
  bad=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed.*/\1/')
  passed=$((passed + total - bad)); failed=$((failed + bad))
done
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

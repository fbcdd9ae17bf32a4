#!/usr/bin/env bash
# tinyvlm inspect: the SHA-256 it prints is coreutils' sha256sum of the file; image sizes are
# the files' own; readers' failures are an exit 1 with a message, usage errors exit 2.
# $1 = the binary, $2 = the source tree.
set -u
bin=$1; src=$2
pass=0; fail=0
ok() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
out=$(mktemp); err=$(mktemp)

for img in examples/sample.png examples/sample.jpg; do
  "$bin" inspect "$src/$img" >"$out" 2>"$err"; rc=$?
  sum=$(sha256sum "$src/$img" | cut -d' ' -f1)
  ok "$img exit 0" "[ $rc -eq 0 ]"
  ok "$img sha256 = sha256sum" "grep -q 'sha256 $sum' '$out'"
  ok "$img size" "grep -q '320 x 240' '$out'"
  ok "$img preprocessed" "grep -q 'preprocessed to \[3, 448, 448\]' '$out'"
done

"$bin" inspect --size 224 "$src/examples/sample.png" >"$out" 2>"$err"
ok "--size 224" "grep -q '\[3, 224, 224\]' '$out'"

"$bin" inspect "$src/tests/data/manifest" >"$out" 2>"$err"; rc=$?
ok "bundle manifest" "[ $rc -eq 0 ] && grep -q '32 heads x 80' '$out'"

"$bin" inspect /nonexistent.png >"$out" 2>"$err"; rc=$?
ok "missing file exit 1" "[ $rc -eq 1 ] && grep -q 'no such file' '$err'"

"$bin" inspect "$src/CMakeLists.txt" >"$out" 2>"$err"; rc=$?
ok "unsupported file exit 1" "[ $rc -eq 1 ] && grep -q 'not an image' '$err'"

head -c 100 "$src/examples/sample.jpg" >"$out.jpg"
"$bin" inspect "$out.jpg" >"$out" 2>"$err"; rc=$?
ok "truncated jpeg exit 1 with message" "[ $rc -eq 1 ] && [ -s '$err' ]"

"$bin" inspect --bogus x >"$out" 2>"$err"; rc=$?
ok "unknown option exit 2" "[ $rc -eq 2 ]"
"$bin" inspect >"$out" 2>"$err"; rc=$?
ok "no file exit 2" "[ $rc -eq 2 ]"
"$bin" inspect --help >"$out" 2>"$err"; rc=$?
ok "--help exit 0" "[ $rc -eq 0 ] && grep -q usage '$out'"

rm -f "$out" "$err" "$out.jpg"
echo "cli inspect: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

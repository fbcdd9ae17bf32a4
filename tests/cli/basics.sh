#!/usr/bin/env bash
# The tinyvlm command's contract: --help/--version succeed, unknown commands and planned
# commands fail with exit 2 and a message on stderr. $1 = the binary.
set -u
bin=$1
fail=0; pass=0
expect() {  # expect NAME WANT_RC CMD...: run CMD, compare exit code
  local name=$1 want=$2; shift 2
  "$@" >/tmp/tv_cli_out.$$ 2>/tmp/tv_cli_err.$$; local rc=$?
  if [ "$rc" -eq "$want" ]; then pass=$((pass + 1)); else
    fail=$((fail + 1)); echo "FAIL $name: exit $rc, wanted $want"; cat /tmp/tv_cli_err.$$; fi
}
expect_grep() {  # expect_grep NAME FILE PATTERN
  if grep -q -- "$3" "$2"; then pass=$((pass + 1)); else
    fail=$((fail + 1)); echo "FAIL $1: '$3' not in output"; cat "$2"; fi
}
expect help 0 "$bin" --help
expect_grep help-lists-inspect /tmp/tv_cli_out.$$ "inspect"
expect version 0 "$bin" --version
expect_grep version-number /tmp/tv_cli_out.$$ "^tinyvlm [0-9]"
expect_grep version-cuda /tmp/tv_cli_out.$$ "^cuda: "
expect no-args 2 "$bin"
expect unknown 2 "$bin" frobnicate
expect_grep unknown-msg /tmp/tv_cli_err.$$ "unknown command 'frobnicate'"
expect planned 2 "$bin" bench
expect_grep planned-msg /tmp/tv_cli_err.$$ "not built yet"
rm -f /tmp/tv_cli_out.$$ /tmp/tv_cli_err.$$
echo "cli basics: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

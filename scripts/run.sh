#!/usr/bin/env bash
# The main job: sets up and builds (scripts/setup.sh), starts the embedded default
# (`tinyvlm serve` with the shipped demo model), asks it one question about the shipped sample
# image through the HTTP API (examples/curl.sh), prints the answer, and keeps serving until
# Ctrl-C.
#   scripts/run.sh [--once]      --once: stop after the answer (exit 0 if one came back)
#   environment: TINYVLM_MODEL (default models/demo), TINYVLM_PORT (default 8080)
set -euo pipefail
cd "$(dirname "$0")/.."
once=0
[ "${1:-}" = "--once" ] && once=1

scripts/setup.sh
model=${TINYVLM_MODEL:-models/demo}
port=${TINYVLM_PORT:-8080}
url=http://127.0.0.1:$port
log=$(mktemp /tmp/tinyvlm-serve.XXXXXX.log)

"${TV_BUILD_DIR:-build}"/tinyvlm serve --model "$model" --port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM

# `serve` prints its "tinyvlm serving ... at URL" line once both workers are registered.
for _ in $(seq 1 600); do
  grep -q "tinyvlm serving" "$log" && break
  if ! kill -0 $pid 2>/dev/null; then
    echo "run: tinyvlm serve stopped:"; cat "$log"; exit 1
  fi
  sleep 0.1
done
grep "tinyvlm serving" "$log" || { echo "run: serve did not become ready in 60 s:"; cat "$log"; exit 1; }

question="[vqa] What colour is the circle?"
echo
echo "\$ examples/curl.sh examples/sample.png \"$question\""
answer=$(TINYVLM_URL=$url examples/curl.sh examples/sample.png "$question")
echo "$answer"
[ -n "$answer" ] || { echo "run: empty answer"; cat "$log"; exit 1; }

if [ $once = 1 ]; then exit 0; fi
echo
echo "tinyvlm is serving at $url (web page at $url/, API in docs/api.md, log in $log)."
echo "Ctrl-C stops it."
wait $pid

#!/usr/bin/env bash
# vision_rss.sh — a vision worker's peak resident memory for one batch: starts `tinyvlm gateway`
# and one `tinyvlm vision-worker --max-batch N` on BUNDLE, sends one /v1/embeddings request of N
# images (the sample images, repeated when N > 4), and prints the worker's VmHWM from
# /proc/PID/status after it answered. Run it for two batch sizes to get the cost of one image of
# a batch (docs/deploy.md, "Memory per worker").
#
# Usage: bench/vision_rss.sh BIN BUNDLE N [THREADS]
#   e.g. build/bench_mkbundle /tmp/full-f16 --dtype f16 --image-size 448
#        bench/vision_rss.sh build/tinyvlm /tmp/full-f16 1; bench/vision_rss.sh build/tinyvlm /tmp/full-f16 4
set -u
[ $# -ge 3 ] || { echo "usage: $0 BIN BUNDLE N [THREADS]" >&2; exit 2; }
bin=$1; bundle=$2; n=$3; threads=${4:-0}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d); pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
hp=$((10000 + RANDOM % 20000)); zp=$((hp + 1))   # below the ephemeral port range
"$bin" gateway --host 127.0.0.1 --port "$hp" --listen "tcp://127.0.0.1:$zp" \
  --request-timeout-s 3600 >"$work/gateway.log" 2>&1 &
pids+=($!)
"$bin" vision-worker --model "$bundle" --gateway "tcp://127.0.0.1:$zp" --max-batch "$n" \
  --threads "$threads" >"$work/worker.log" 2>&1 &
vp=$!; pids+=("$vp")
for _ in $(seq 600); do
  [ "$(curl -s "http://127.0.0.1:$hp/readyz" | jq -r .vision_workers 2>/dev/null)" = 1 ] && break
  kill -0 "$vp" 2>/dev/null || { echo "vision_rss: the worker stopped:"; cat "$work/worker.log"; exit 1; }
  sleep 0.2
done
imgs=("$src/examples/sample.jpg" "$src/examples/sample.png" "$src/tests/data/tinygptv/input.png"
      "$src/tests/data/image/j_641x479.jpg")
{ printf '{"input": ['
  for i in $(seq 0 $((n - 1))); do
    f=${imgs[$((i % 4))]}; m=image/png; case $f in *.jpg) m=image/jpeg ;; esac
    [ "$i" -gt 0 ] && printf ', '
    printf '"data:%s;base64,%s"' "$m" "$(base64 -w0 "$f")"
  done
  printf ']}'; } >"$work/req.json"
t0=$(date +%s)
code=$(curl -s --max-time 3600 -o "$work/out.json" -w '%{http_code}' \
  -H 'Content-Type: application/json' --data-binary "@$work/req.json" "http://127.0.0.1:$hp/v1/embeddings")
got=$(jq '.data | length' "$work/out.json" 2>/dev/null)
[ "$code" = 200 ] && [ "$got" = "$n" ] ||
  { echo "vision_rss: HTTP $code, $got embeddings"; tail -5 "$work/worker.log"; exit 1; }
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$vp/status")
echo "vision_rss: --max-batch $n: $n embeddings in $(( $(date +%s) - t0 )) s; worker peak RSS" \
  "$(awk -v k="$hwm" 'BEGIN { printf "%.3f GB (VmHWM %d kB)", k * 1024 / 1e9, k }')"

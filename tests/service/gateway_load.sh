#!/usr/bin/env bash
# Load through the distributed service: 2 vision + 2 LM workers (capacity 4 each, so most of the
# 32 requests wait in the gateway's queue), 32 concurrent streaming requests over 4 images x 2
# questions: every request is answered, every stream is well-formed SSE ending in [DONE], and
# each answer equals the same request's answer when sent alone (no cross-talk between the
# sequences batched together); both LM workers and both vision workers took work; nothing is
# left in flight afterwards.
# $1 = the binary, $2 = the source tree.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

make_bundle "$work/b"
start_redis
start_gateway --redis "redis://127.0.0.1:$rport"
for n in v1 v2; do start_worker vision $n --redis "redis://127.0.0.1:$rport" --max-batch 4; done
for n in l1 l2; do start_worker lm $n --redis "redis://127.0.0.1:$rport" --max-seqs 4; done
wait_workers 2 2 || exit 1

imgs=("$src/examples/sample.jpg" "$src/examples/sample.png" "$src/tests/data/tinygptv/input.png"
      "$src/tests/data/image/j_641x479.jpg")
qs=("[vqa] What is in the picture?" "Describe this image in detail.")
export MAXTOK=24
# the single-request answers (sequential, no cache for the first of each image)
for i in 0 1 2 3; do for j in 0 1; do
  req[$((i * 2 + j))]=$(chat_body "${imgs[$i]}" "${qs[$j]}" ',"stream":true')
  r=$(post /v1/chat/completions "$(chat_body "${imgs[$i]}" "${qs[$j]}")")
  [ "$(tail -n1 <<<"$r")" = 200 ] || { echo "FAIL single request $i/$j: $r"; exit 1; }
  head -n -1 <<<"$r" | jq -j '.choices[0].message.content' >"$work/want.$((i * 2 + j))"
done; done
ok "8 distinct single answers (different images/questions differ)" \
  "[ \$(cat '$work'/want.* | md5sum | cut -c1-8) != '' ] && [ \$(for f in '$work'/want.*; do md5sum < \$f; done | sort -u | wc -l) -ge 4 ]"

# 32 concurrent streams
t0=$(date +%s.%N)
for k in $(seq 0 31); do
  v=$((k % 8))
  curl -sN -H 'Content-Type: application/json' --data-binary "@${req[$v]}" "$url/v1/chat/completions" \
    -o "$work/sse.$k" -w '%{http_code}' >"$work/code.$k" &
done
wait
t1=$(date +%s.%N)
bad=0; cross=0; shape=0
for k in $(seq 0 31); do
  v=$((k % 8))
  [ "$(cat "$work/code.$k")" = 200 ] || { bad=$((bad + 1)); echo "  request $k: HTTP $(cat "$work/code.$k")"; continue; }
  [ "$(tail -n 2 "$work/sse.$k" | head -n1)" = 'data: [DONE]' ] &&
    awk 'NR % 2 == 1 && !/^data: / { exit 1 } NR % 2 == 0 && length($0) { exit 1 }' "$work/sse.$k" &&
    ! grep -q '"error"' "$work/sse.$k" || { shape=$((shape + 1)); echo "  request $k: malformed stream"; }
  got=$(sed -n 's/^data: //p' "$work/sse.$k" | grep -v '^\[DONE\]$' | jq -j '.choices[0].delta.content // empty')
  [ "$got" = "$(cat "$work/want.$v")" ] || { cross=$((cross + 1)); echo "  request $k: answer differs from its single run"; }
done
ok "all 32 answered 200" "[ $bad = 0 ]"
ok "all 32 streams well-formed, ending in [DONE]" "[ $shape = 0 ]"
ok "no cross-talk: each answer = its single-request answer" "[ $cross = 0 ]"
echo "  32 streams in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
m=$(curl -s "$url/metrics")
for w in l1 l2 v1 v2; do
  kind=lm; [ "${w#v}" != "$w" ] && kind=vision
  ok "worker $w took work" "[ \"\$(awk -v k='tinyvlm_worker_items_done{kind=\"$kind\",worker=\"$w\"}' 'index(\$0, k\" \") == 1 { print \$2 }' <<<\"\$m\")\" -gt 0 ]"
done
ok "nothing left in flight or queued" "[ \$(metric 'tinyvlm_worker_inflight{kind=\"lm\"}') = 0 ] &&
  [ \$(metric 'tinyvlm_queue_depth{kind=\"lm\"}') = 0 ] && [ \$(metric 'tinyvlm_worker_inflight{kind=\"vision\"}') = 0 ]"
ok "40 chat requests counted as 200" "[ \$(metric 'tinyvlm_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}') = 40 ]"

finish "service gateway_load"

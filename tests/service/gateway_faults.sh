#!/usr/bin/env bash
# kill -9 of a vision worker and of an LM worker during load (2 + 2 workers, 8 clients sending
# streaming and plain requests back to back): no request hangs (curl --max-time), each either
# succeeds with the right answer or gets a clear error (HTTP 5xx with an OpenAI error body, or an
# SSE error event followed by [DONE]); the gateway drops the dead workers, the pool recovers when
# they are restarted (readyz counts 2 + 2 again) and requests succeed afterwards.
# $1 = the binary, $2 = the source tree.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

make_bundle "$work/b"
start_redis
start_gateway --redis "redis://127.0.0.1:$rport"
R=(--redis "redis://127.0.0.1:$rport")
start_worker vision v1 "${R[@]}"; v1=$wpid
start_worker vision v2 "${R[@]}"
start_worker lm l1 "${R[@]}" --max-seqs 2; l1=$wpid
start_worker lm l2 "${R[@]}" --max-seqs 2
wait_workers 2 2 || exit 1

export MAXTOK=400
imgs=("$src/examples/sample.jpg" "$src/examples/sample.png" "$src/tests/data/tinygptv/input.png")
for i in 0 1 2; do
  plain[$i]=$(chat_body "${imgs[$i]}" "Describe this image.")
  stream[$i]=$(chat_body "${imgs[$i]}" "Describe this image." ',"stream":true')
  r=$(post /v1/chat/completions "${plain[$i]}")
  [ "$(tail -n1 <<<"$r")" = 200 ] || { echo "FAIL single request $i: $r"; exit 1; }
  head -n -1 <<<"$r" | jq -j '.choices[0].message.content' >"$work/want.$i"
done
redis-cli -p "$rport" flushall >/dev/null # make the load encode again

# client C: requests back to back until $work/stop exists; one result line per request:
#   ok | error STATUS CODE | wrong | hang
client() {
  local c=$1 n=0
  while [ ! -e "$work/stop" ]; do
    local i=$(( (c + n) % 3 )) f=$work/out.$c.$n
    if [ $(( (c + n) % 2 )) = 0 ]; then
      curl -sN --max-time 30 -H 'Content-Type: application/json' --data-binary "@${stream[$i]}" \
        "$url/v1/chat/completions" -o "$f" -w '%{http_code}' >"$f.code"
      local rc=$? st; st=$(cat "$f.code")
      if [ $rc = 28 ]; then echo hang
      elif [ "$st" != 200 ]; then echo "error $st $(jq -r .error.code "$f" 2>/dev/null)"
      elif [ "$(tail -n 2 "$f" | head -n1)" != 'data: [DONE]' ]; then echo "wrong (no [DONE])"
      elif grep -q '^data: {"error"' "$f"; then echo "error sse $(sed -n 's/^data: {"error"/{"error"/p' "$f" | jq -r .error.code)"
      elif [ "$(sed -n 's/^data: //p' "$f" | grep -v '^\[DONE\]$' | jq -j '.choices[0].delta.content // empty')" = "$(cat "$work/want.$i")" ]; then echo ok
      else echo wrong; fi
    else
      curl -s --max-time 30 -H 'Content-Type: application/json' --data-binary "@${plain[$i]}" \
        "$url/v1/chat/completions" -o "$f" -w '%{http_code}' >"$f.code"
      local rc=$? st; st=$(cat "$f.code")
      if [ $rc = 28 ]; then echo hang
      elif [ "$st" != 200 ]; then echo "error $st $(jq -r .error.code "$f" 2>/dev/null)"
      elif [ "$(jq -j '.choices[0].message.content' "$f")" = "$(cat "$work/want.$i")" ]; then echo ok
      else echo wrong; fi
    fi
    n=$((n + 1))
  done >"$work/results.$c"
}
for c in $(seq 0 7); do client "$c" & done
cpids=$(jobs -p)
sleep 1.5
kill -9 "$v1" "$l1"
sleep 2.5
ok "gateway dropped the killed workers" "[ \"\$(curl -s $url/readyz | jq -c '[.vision_workers, .lm_workers]')\" = '[1,1]' ]"
start_worker vision v1 "${R[@]}"
start_worker lm l1 "${R[@]}" --max-seqs 2
wait_workers 2 2; ok "the pool recovers after a restart (2 + 2)" "[ $? = 0 ]"
sleep 2
touch "$work/stop"
wait $cpids
cat "$work"/results.* >"$work/all"
echo "  results: $(sort "$work/all" | uniq -c | tr '\n' ';')"
ok "no request hung" "! grep -q hang '$work/all'"
ok "no wrong answer" "! grep -q wrong '$work/all'"
ok "errors are clear (worker_lost / no_worker / timeout codes)" \
  "! grep '^error' '$work/all' | grep -vqE 'error (5[0-9][0-9]|sse) (worker_lost|no_worker|queue_full|timeout|embedding_unavailable)\$'"
ok "many requests succeeded" "[ \$(grep -c '^ok' '$work/all') -ge 16 ]"
ok "the gateway counted 2 dropped workers" "[ \$(curl -s $url/metrics | awk '/^tinyvlm_workers_dropped_total/ { s += \$2 } END { print s+0 }') -ge 2 ]"
r=$(post /v1/chat/completions "${plain[2]}")
ok "a request after the storm succeeds with the right answer" "[ \"\$(tail -n1 <<<\"\$r\")\" = 200 ] &&
  [ \"\$(head -n -1 <<<\"\$r\" | jq -j '.choices[0].message.content')\" = \"\$(cat '$work/want.2')\" ]"
ok "nothing left in flight" "sleep 0.5; [ \$(metric 'tinyvlm_worker_inflight{kind=\"lm\"}') = 0 ] && [ \$(metric 'tinyvlm_worker_inflight{kind=\"vision\"}') = 0 ]"

finish "service gateway_faults"

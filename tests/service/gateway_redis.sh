#!/usr/bin/env bash
# Redis killed during load (gateway, 1 vision + 1 LM worker, 4 clients): requests keep
# succeeding with the right answers (embeddings travel inline; the gateway counts cache errors);
# after redis-server restarts on the same port, the cache comes back by itself: a new image is a
# miss once, then a hit.
# $1 = the binary, $2 = the source tree.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

make_bundle "$work/b"
start_redis
R=(--redis "redis://127.0.0.1:$rport" --redis-timeout-ms 100)
start_gateway "${R[@]}"
start_worker vision v1 "${R[@]}"
start_worker lm l1 "${R[@]}"
wait_workers 1 1 || exit 1

export MAXTOK=32
imgs=("$src/examples/sample.jpg" "$src/examples/sample.png" "$src/tests/data/tinygptv/input.png"
      "$src/tests/data/image/j_641x479.jpg")
for i in 0 1 2; do
  req[$i]=$(chat_body "${imgs[$i]}" "What is this?")
  r=$(post /v1/chat/completions "${req[$i]}")
  [ "$(tail -n1 <<<"$r")" = 200 ] || { echo "FAIL single request $i: $r"; exit 1; }
  head -n -1 <<<"$r" | jq -j '.choices[0].message.content' >"$work/want.$i"
done
ok "warm-up: 3 misses" "[ \$(metric 'tinyvlm_cache_lookups_total{result=\"miss\"}') = 3 ]"

client() {
  local c=$1 n=0
  while [ ! -e "$work/stop" ]; do
    local i=$(( (c + n) % 3 )) f=$work/out.$c.$n
    curl -s --max-time 30 -H 'Content-Type: application/json' --data-binary "@${req[$i]}" \
      "$url/v1/chat/completions" -o "$f" -w '%{http_code}' >"$f.code"
    if [ "$(cat "$f.code")" != 200 ]; then echo "error $(cat "$f.code") $(jq -r .error.code "$f" 2>/dev/null)"
    elif [ "$(jq -j '.choices[0].message.content' "$f")" = "$(cat "$work/want.$i")" ]; then echo ok
    else echo wrong; fi
    n=$((n + 1))
  done >"$work/results.$c"
}
for c in 0 1 2 3; do client "$c" & done
cpids=$(jobs -p)
sleep 1
kill -9 "$rpid"
sleep 2
errs=$(metric 'tinyvlm_cache_lookups_total{result="error"}')
ok "requests go on while Redis is down (cache errors counted)" "[ \${errs%.*} -gt 0 ]"
ok "the gateway reports the cache down" "[ \$(metric 'tinyvlm_cache_backend_up{backend=\"redis\"}') = 0 ]"
start_redis "$rport"
sleep 2
touch "$work/stop"
wait $cpids
cat "$work"/results.* >"$work/all"
echo "  results: $(sort "$work/all" | uniq -c | tr '\n' ';')"
ok "every request during the outage succeeded with the right answer" "! grep -qv '^ok\$' '$work/all' && [ \$(wc -l < '$work/all') -ge 8 ]"

# the cache is back: a new image misses once, then hits
req4=$(chat_body "${imgs[3]}" "What is this?")
m0=$(metric 'tinyvlm_cache_lookups_total{result="miss"}'); h0=$(metric 'tinyvlm_cache_lookups_total{result="hit"}')
r1=$(post /v1/chat/completions "$req4"); r2=$(post /v1/chat/completions "$req4")
ok "after the restart: 200 twice, same answer" "[ \"\$(tail -n1 <<<\"\$r1\")\" = 200 ] && [ \"\$(tail -n1 <<<\"\$r2\")\" = 200 ] &&
  [ \"\$(head -n -1 <<<\"\$r1\" | jq -c .choices)\" = \"\$(head -n -1 <<<\"\$r2\" | jq -c .choices)\" ]"
ok "...1 miss then 1 hit (hits resumed)" "[ \$(metric 'tinyvlm_cache_lookups_total{result=\"miss\"}') = \$((\${m0%.*} + 1)) ] &&
  [ \$(metric 'tinyvlm_cache_lookups_total{result=\"hit\"}') = \$((\${h0%.*} + 1)) ]"
ok "the restarted Redis holds embeddings again" "[ \$(redis-cli -p $rport dbsize) -ge 1 ]"
ok "the gateway reports the cache up" "[ \$(metric 'tinyvlm_cache_backend_up{backend=\"redis\"}') = 1 ]"

finish "service gateway_redis"

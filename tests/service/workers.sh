#!/usr/bin/env bash
# The distributed deployment on loopback: a real redis-server, `tinyvlm gateway`, and the worker
# daemons `tinyvlm vision-worker` / `tinyvlm lm-worker` (the LM worker configured through
# TINYVLM_* environment variables, the vision worker finding the gateway through
# --gateway-dns localhost), tiny bundle at f32. Checks: the workers register (gateway
# /readyz, their own --health-port probes); a greedy answer equals `tinyvlm ask --greedy`; the
# embedding lands in Redis and the same image again is a hit; 6 concurrent requests (two
# questions, streaming and not) each equal their single answer (continuous batching, no
# cross-talk); Redis killed: requests still succeed (embeddings inline), Redis back: hits resume;
# an LM worker killed with -9 and restarted: the pool recovers; SIGTERM: workers and gateway
# exit 0. $1 = the binary, $2 = the source tree.
set -u
bin=$1; src=$2
M=$src/tests/data/tinygptv/model
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
pass=0; fail=0
ok() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
for t in curl jq redis-server redis-cli; do
  command -v $t >/dev/null || { echo "SKIP: $t is not installed"; exit 0; }
done

free_port() {  # a loopback port nobody listens on (and not handed out before in this test),
  local p      # below the kernel's ephemeral range so no outgoing connection holds it
  while :; do
    p=$((10000 + RANDOM % 22000))
    case " ${used:-} " in *" $p "*) continue ;; esac
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { used="${used:-} $p"; echo $p; return; }
  done
}
RP=$(free_port); HP=$(free_port); LP=$(free_port); VH=$(free_port); LH=$(free_port)
redis=redis://127.0.0.1:$RP
url=http://127.0.0.1:$HP

start_redis() {
  redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    >"$work/redis.log" 2>&1 &
  rpid=$!; pids+=($rpid)
  for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis did not start"; cat "$work/redis.log"; return 1
}
start_lm() {
  TINYVLM_GATEWAY="tcp://127.0.0.1:$LP" TINYVLM_MODEL="$work/b" TINYVLM_REDIS=$redis \
  TINYVLM_THREADS=1 TINYVLM_MAX_SEQS=4 TINYVLM_HEALTH_PORT=$LH TINYVLM_HEARTBEAT_MS=200 \
    "$bin" lm-worker >>"$work/lm.log" 2>&1 &
  lpid=$!; pids+=($lpid)
}
wait_ready() {  # gateway /readyz 200 within 30 s
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

"$bin" convert --phi "$M/phi_fused" --eva "$M/eva_vit_g.pth" --blip2 "$M/blip2_pretrained_flant5xxl.pth" \
  --stage4 "$M/TinyGPT-V_for_Stage4.pth" --out "$work/b" --dtype f32 --vit-heads 2 --qformer-heads 2 \
  >"$work/conv.out" 2>&1 || { echo "FAIL convert"; cat "$work/conv.out"; exit 1; }

"$bin" vision-worker --help >"$work/vh" 2>&1
ok "vision-worker --help" "[ $? -eq 0 ] && grep -q -- '--batch-wait-ms' '$work/vh' && grep -q TINYVLM_GATEWAY '$work/vh'"
"$bin" lm-worker --help >"$work/lh" 2>&1
ok "lm-worker --help" "[ $? -eq 0 ] && grep -q -- '--max-seqs' '$work/lh' && grep -q -- '--health-port' '$work/lh'"
"$bin" lm-worker --gateway tcp://127.0.0.1:1 >/dev/null 2>"$work/e1"
ok "lm-worker without --model exit 2" "[ $? -eq 2 ] && grep -q -- '--model' '$work/e1'"
"$bin" vision-worker --model "$work/b" --emb-dtype f8 >/dev/null 2>"$work/e2"
ok "vision-worker bad --emb-dtype exit 2" "[ $? -eq 2 ]"
"$bin" vision-worker --model "$work/none" >/dev/null 2>"$work/e3"
ok "vision-worker missing bundle exit 1" "[ $? -eq 1 ] && grep -q tinyvlm.json '$work/e3'"
"$bin" vision-worker --model "$work/b" --gateway-dns "localhost" >/dev/null 2>"$work/e4"
ok "vision-worker bad --gateway-dns exit 1" "[ $? -eq 1 ] && grep -q 'tcp://NAME:PORT' '$work/e4'"

start_redis || exit 1
"$bin" gateway --host 127.0.0.1 --port "$HP" --listen "tcp://127.0.0.1:$LP" --redis "$redis" \
  --heartbeat-ms 200 --worker-timeout-ms 1500 >"$work/gw.log" 2>&1 &
gpid=$!; pids+=($gpid)
"$bin" vision-worker --model "$work/b" --gateway-dns "tcp://localhost:$LP" --redis "$redis" --threads 1 \
  --emb-dtype f32 --health-port "$VH" --heartbeat-ms 200 >"$work/vis.log" 2>&1 &
vpid=$!; pids+=($vpid)
start_lm
wait_ready; ok "gateway ready with both workers" "[ $? -eq 0 ]"
probe() {  # probe PORT PATH: 200 within 3 s (a worker is ready once the gateway's heartbeat came)
  for _ in $(seq 30); do curl -sf "http://127.0.0.1:$1$2" >/dev/null && return 0; sleep 0.1; done
  return 1
}
ok "vision worker /healthz and /readyz" "probe $VH /healthz && probe $VH /readyz"
ok "LM worker /readyz (env-configured)" "probe $LH /readyz"
ok "unknown probe path 404" "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$LH/nope)\" = 404 ]"

img=$src/tests/data/tinygptv/input.png
q1="[vqa] What colour is the cat?"; q2="Describe the picture."
req() {  # req QUESTION MAX_TOKENS STREAM -> JSON on stdout
  jq -n --arg u "data:image/png;base64,$(base64 -w0 "$img")" --arg q "$1" --argjson m "$2" --argjson s "$3" \
    '{temperature: 0, max_tokens: $m, stream: $s, messages: [{role: "user", content: [
      {type: "image_url", image_url: {url: $u}}, {type: "text", text: $q}]}]}'
}
req "$q1" 32 false >"$work/r1.json"; req "$q2" 24 false >"$work/r2.json"
req "$q1" 32 true >"$work/s1.json"; req "$q2" 24 true >"$work/s2.json"
post() { curl -s -m 30 "$url/v1/chat/completions" -H 'Content-Type: application/json' -d @"$work/$1"; }
answer() { post "$1" | jq -r '.choices[0].message.content // "ERROR"'; }
sse_answer() {  # concatenated deltas, or ERROR when the stream did not end with [DONE]
  post "$1" >"$work/$2"
  [ "$(grep -v '^$' "$work/$2" | tail -1)" = "data: [DONE]" ] || { echo ERROR; return; }
  grep '^data: {' "$work/$2" | sed 's/^data: //' | jq -j '.choices[0].delta.content // ""'
}

a1=$(answer r1.json)
"$bin" ask --model "$work/b" --image "$img" --greedy --max-tokens 32 --threads 1 --json "$q1" \
  >"$work/ask.json" 2>/dev/null
ok "greedy answer = tinyvlm ask --greedy" "[ \"\$a1\" = \"\$(jq -r .answer '$work/ask.json')\" ]"
ok "the embedding is in Redis" "[ \"\$(redis-cli -p $RP --scan --pattern 'emb:*' | wc -l)\" -eq 1 ]"
a2=$(answer r2.json)
hits=$(curl -s "$url/metrics" | grep '^tinyvlm_cache_lookups_total{result="hit"}' | awk '{print $2}')
ok "second image lookup is a hit" "[ '${hits:-0}' -ge 1 ]"

for i in 1 2 3; do
  answer r1.json >"$work/c1_$i" & answer r2.json >"$work/c2_$i" &
  sse_answer s1.json sse1_$i >"$work/d1_$i" &
done
wait_jobs() { for j in $(jobs -p); do case " ${pids[*]} " in *" $j "*) ;; *) wait "$j";; esac; done; }
wait_jobs
same=0
for i in 1 2 3; do
  [ "$(cat "$work/c1_$i")" = "$a1" ] && same=$((same + 1))
  [ "$(cat "$work/c2_$i")" = "$a2" ] && same=$((same + 1))
  [ "$(cat "$work/d1_$i")" = "$a1" ] && same=$((same + 1))
done
ok "9 concurrent requests (3 streamed) = their single answers" "[ $same -eq 9 ]"

# Redis down: requests still succeed (embeddings travel inline); back: hits resume
kill -9 "$rpid"; wait "$rpid" 2>/dev/null
ok "Redis down: answer still right" "[ \"\$(answer r1.json)\" = \"\$a1\" ]"
ok "Redis down: streaming still right" "[ \"\$(sse_answer s2.json sse2)\" = \"\$a2\" ]"
start_redis || exit 1
sleep 2.2   # the cache reconnects at most once a second
answer r1.json >/dev/null
h1=$(curl -s "$url/metrics" | grep '^tinyvlm_cache_lookups_total{result="hit"}' | awk '{print $2}')
ok "Redis back: answer right" "[ \"\$(answer r1.json)\" = \"\$a1\" ]"
h2=$(curl -s "$url/metrics" | grep '^tinyvlm_cache_lookups_total{result="hit"}' | awk '{print $2}')
ok "Redis back: hits resume" "[ '${h2:-0}' -gt '${h1:-0}' ]"

# the LM worker killed: requests fail cleanly (no hang); restarted: the pool recovers
kill -9 "$lpid"; wait "$lpid" 2>/dev/null
sleep 1.8   # past --worker-timeout-ms: dropped
code=$(curl -s -m 30 -o "$work/nolm.json" -w '%{http_code}' "$url/v1/chat/completions" \
  -H 'Content-Type: application/json' -d @"$work/r1.json")
ok "no LM worker: a clear error, no hang" "[ '$code' -ge 500 ] && jq -e '.error.message' '$work/nolm.json' >/dev/null"
start_lm
wait_ready
ok "restarted LM worker: answer right" "[ \"\$(answer r1.json)\" = \"\$a1\" ]"

# graceful shutdown
kill -TERM "$vpid" "$lpid"
rcs=0
for p in "$vpid" "$lpid"; do wait "$p"; rcs=$((rcs + $?)); done
ok "workers exit 0 on SIGTERM" "[ $rcs -eq 0 ]"
ok "workers said Bye" "[ \"\$(grep -c 'says bye' '$work/gw.log')\" -ge 2 ]"
kill -TERM "$gpid"; wait "$gpid"
ok "gateway exits 0 on SIGTERM" "[ $? -eq 0 ]"

if [ "$fail" -ne 0 ]; then
  for f in gw vis lm; do echo "--- $f.log"; tail -15 "$work/$f.log"; done
fi
echo "service workers: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

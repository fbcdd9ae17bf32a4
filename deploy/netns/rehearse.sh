#!/usr/bin/env bash
# A multi-host rehearsal of the distributed deployment on one Linux machine, without Docker:
# Redis, the gateway, two vision workers, one LM worker and a client each run in a network
# namespace of their own, with their own address, joined by veth links to a bridge (itself in
# a namespace, so the host's own network is never touched). Then:
#   1. requests from the client go through the gateway to the workers and back;
#   2. under load, one vision worker's link is cut: every request still ends — answered
#      (rerouted to the other vision worker) or refused with an OpenAI-style error — none hangs,
#      and the gateway drops the silent worker;
#   3. the link comes back: the worker registers again and every request succeeds; then the
#      other vision worker's link is cut for a while, so the restored one must carry the pool.
#
#   sudo deploy/netns/rehearse.sh BUILD/tinyvlm MODEL_BUNDLE
#
# Needs root (ip netns, veth, bridge), redis-server and curl. Exit 0 = rehearsal passed,
# 1 = failed, 3 = cannot run here (no permission for network namespaces, a tool missing).
# Each request has a unique image (a JPEG comment changes its SHA-256), so each one really
# goes through a vision worker instead of the embedding cache. REHEARSE_KEEP=1 keeps the logs.
set -u
bin=$(readlink -f "${1:?usage: rehearse.sh TINYVLM_BINARY MODEL_BUNDLE}")
model=$(readlink -f "${2:?usage: rehearse.sh TINYVLM_BINARY MODEL_BUNDLE}")
here=$(cd "$(dirname "$0")" && pwd)
image=${REHEARSE_IMAGE:-$here/../../examples/sample.jpg}

cannot() { echo "rehearse: cannot run here: $*"; exit 3; }
[ "$(id -u)" = 0 ] || cannot "needs root (network namespaces)"
for t in ip redis-server curl; do command -v "$t" >/dev/null 2>&1 || cannot "$t not installed"; done
[ -x "$bin" ] || cannot "$bin is not executable"
[ -f "$model/tinyvlm.json" ] || cannot "$model is not a tinyvlm bundle"
[ -f "$image" ] || cannot "no image $image"

# ---- names, addresses, cleanup ----------------------------------------------------------------
id=$(printf '%04x' $((RANDOM % 65536)))   # several rehearsals may run at once
ns_sw=tv${id}sw
hosts=(redis gw vis1 vis2 lm client)
declare -A addr
net=10.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))
i=2; for h in "${hosts[@]}"; do addr[$h]=$net.$i; i=$((i + 1)); done
ns() { echo "tv${id}$1"; }
work=$(mktemp -d); pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for h in "${hosts[@]}"; do ip netns del "$(ns "$h")" 2>/dev/null; done
  ip netns del "$ns_sw" 2>/dev/null
  if [ "${REHEARSE_KEEP:-0}" = 1 ]; then echo "rehearse: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
pass=0; fail=0
ok() { if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "ok   $1"; else fail=$((fail + 1)); echo "FAIL $1"; fi; }
in_ns() { local h=$1; shift; ip netns exec "$(ns "$h")" "$@"; }

# ---- the network: one bridge, one veth per host -----------------------------------------------
ip netns add "$ns_sw" 2>"$work/netns.err" || cannot "ip netns add: $(cat "$work/netns.err")"
ip -n "$ns_sw" link add br0 type bridge || cannot "no bridge support"
ip -n "$ns_sw" link set br0 up
for h in "${hosts[@]}"; do
  ip netns add "$(ns "$h")"
  # The switch side is named after the host; the host side is eth0 in the host's namespace.
  ip -n "$ns_sw" link add "p-$h" type veth peer name eth0 netns "$(ns "$h")" || cannot "no veth support"
  ip -n "$ns_sw" link set "p-$h" master br0 up
  ip -n "$(ns "$h")" addr add "${addr[$h]}/24" dev eth0
  ip -n "$(ns "$h")" link set eth0 up
  ip -n "$(ns "$h")" link set lo up
done
cut_link() { ip -n "$ns_sw" link set "p-$1" down; }
restore_link() { ip -n "$ns_sw" link set "p-$1" up; }

# ---- the services, each on its own host ------------------------------------------------------------
start() {  # start HOST LOGNAME CMD...: runs CMD in HOST's namespace in the background
  local h=$1 log=$2; shift 2
  # A simple command, not the in_ns function: bash then execs ip, and ip execs CMD, so $! is
  # the daemon itself (through a function it was a subshell, and killing it left CMD running).
  ip netns exec "$(ns "$h")" "$@" >"$work/$log.log" 2>&1 &
  pids+=($!)
}
start redis redis redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --save '' \
  --appendonly no --maxmemory 64mb --maxmemory-policy allkeys-lru
gw_http=http://${addr[gw]}:8080
start gw gateway "$bin" gateway --host 0.0.0.0 --port 8080 --listen tcp://0.0.0.0:5555 \
  --redis "redis://${addr[redis]}:6379" --heartbeat-ms 500 --worker-timeout-ms 2000
for v in vis1 vis2; do
  start "$v" "$v" "$bin" vision-worker --model "$model" --gateway "tcp://${addr[gw]}:5555" \
    --redis "redis://${addr[redis]}:6379" --threads 1 --worker-id "$v" --heartbeat-ms 500 \
    --gateway-timeout-ms 2000 --max-batch 2
done
start lm lm "$bin" lm-worker --model "$model" --gateway "tcp://${addr[gw]}:5555" \
  --redis "redis://${addr[redis]}:6379" --threads 1 --worker-id lm --heartbeat-ms 500 \
  --gateway-timeout-ms 2000 --max-seqs 4

metric() {  # metric NAME LABELS: the gateway's value (0 when absent), seen from the client
  in_ns client curl -s --max-time 3 "$gw_http/metrics" |
    awk -v k="$1${2:+{$2\}}" 'index($0, k " ") == 1 { print $2; f = 1 } END { if (!f) print 0 }'
}
wait_for() {  # wait_for SECONDS DESCRIPTION TEST...
  local s=$1 what=$2; shift 2
  for _ in $(seq $((s * 5))); do "$@" && return 0; sleep 0.2; done
  echo "rehearse: timed out waiting for $what"; return 1
}
workers_are() { [ "$(metric tinyvlm_workers 'kind="vision"')" = "$1" ] && [ "$(metric tinyvlm_workers 'kind="lm"')" = "$2" ]; }
ready() { in_ns client curl -sf --max-time 2 "$gw_http/readyz" >/dev/null; }
wait_for 60 "the gateway to be ready" ready; ok "gateway ready across namespaces" $?
wait_for 30 "2 vision + 1 LM workers registered" workers_are 2 1
ok "2 vision workers and 1 LM worker registered over their links" $?

# ---- requests ------------------------------------------------------------------------------------
# Image number n: the JPEG with a comment segment "tinyvlm rehearsal n" right after SOI.
make_image() {
  local n=$1 c="tinyvlm rehearsal $1" len
  len=$(( ${#c} + 2 ))
  { head -c 2 "$image"; printf "\xff\xfe\\x$(printf %02x $((len >> 8)))\\x$(printf %02x $((len & 255)))%s" "$c"
    tail -c +3 "$image"; } | base64 -w0 >"$work/img.$n.b64"
}
# request N: one chat completion for image N from the client; writes $work/r.N.{code,body,rc}.
request() {
  local n=$1
  make_image "$n"
  { printf '{"max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": ['
    printf '{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,'
    cat "$work/img.$n.b64"
    printf '"}}, {"type": "text", "text": "What is in the picture?"}]}]}'; } >"$work/req.$n.json"
  in_ns client curl -s --max-time 60 -o "$work/r.$n.body" -w '%{http_code}' \
    -H 'Content-Type: application/json' --data-binary "@$work/req.$n.json" \
    "$gw_http/v1/chat/completions" >"$work/r.$n.code" 2>"$work/r.$n.err"
  echo $? >"$work/r.$n.rc"
}
# embed_request NAME FROM TO: one POST /v1/embeddings with images FROM..TO (several images in
# one request reach the vision pool at once: more than one worker's slots, so both take some).
embed_request() {
  local name=$1 n first=1
  { printf '{"input": ['
    for n in $(seq "$2" "$3"); do
      make_image "$n"
      [ $first = 1 ] || printf ', '; first=0
      printf '"data:image/jpeg;base64,'; cat "$work/img.$n.b64"; printf '"'
    done
    printf ']}'; } >"$work/emb.$name.json"
  in_ns client curl -s --max-time 60 -o "$work/emb.$name.body" -w '%{http_code}' \
    -H 'Content-Type: application/json' --data-binary "@$work/emb.$name.json" \
    "$gw_http/v1/embeddings" >"$work/emb.$name.code" 2>/dev/null
  [ "$(cat "$work/emb.$name.code")" = 200 ] &&
    [ "$(grep -o '"embedding":' "$work/emb.$name.body" | wc -l)" = $(($3 - $2 + 1)) ]
}
# judge FROM TO: counts answered / refused cleanly / broken among requests FROM..TO.
judge() {
  answered=0; refused=0; broken=0
  for n in $(seq "$1" "$2"); do
    local rc code
    rc=$(cat "$work/r.$n.rc" 2>/dev/null || echo x); code=$(cat "$work/r.$n.code" 2>/dev/null)
    if [ "$rc" = 0 ] && [ "$code" = 200 ] && grep -q '"choices"' "$work/r.$n.body" &&
       grep -q '"finish_reason"' "$work/r.$n.body"; then
      answered=$((answered + 1))
    elif [ "$rc" = 0 ] && case "$code" in 4??|5??) true;; *) false;; esac &&
         grep -q '"error"' "$work/r.$n.body" && grep -q '"message"' "$work/r.$n.body"; then
      refused=$((refused + 1))
    else
      broken=$((broken + 1)); echo "rehearse: request $n: curl rc $rc, HTTP $code: $(head -c 200 "$work/r.$n.body" 2>/dev/null)"
    fi
  done
}
# load FROM TO CONCURRENCY: requests FROM..TO, CONCURRENCY at a time, in the foreground.
load() {
  local n=$1
  while [ "$n" -le "$2" ]; do
    local batch=()
    for _ in $(seq "$3"); do [ "$n" -le "$2" ] && { request "$n" & batch+=($!); n=$((n + 1)); }; done
    wait "${batch[@]}"
  done
}

# 1. Plain requests through the namespaces.
load 1 6 3
judge 1 6
ok "6 requests answered across namespaces (answered $answered, refused $refused, broken $broken)" \
  "$([ "$answered" = 6 ] && echo 0 || echo 1)"
embed_request one 11 18; ok "8 images in one embeddings request across namespaces" $?
# 2. Cut vis1's link while requests run, 4 at a time; keep the load on for 2 s after the gateway
# dropped vis1, then stop it; restore the link afterwards.
load_until() {  # requests FROM, FROM+1, ... 4 at a time until $work/stop exists
  local n=$1
  while [ ! -e "$work/stop" ]; do
    local batch=()
    for _ in 1 2 3 4; do request "$n" & batch+=($!); n=$((n + 1)); done
    wait "${batch[@]}"
  done
  echo $((n - 1)) >"$work/last"
}
t0=$(date +%s)
load_until 101 &
loader=$!
sleep 1
dropped0=$(metric tinyvlm_workers_dropped_total 'kind="vision"')
cut_link vis1
kill -0 "$loader" 2>/dev/null; ok "the link was cut while requests were running" $?
echo "rehearse: link of vis1 cut"
wait_for 15 "the gateway to drop vis1" workers_are 1 1
ok "the gateway dropped the cut worker (vision workers: $(metric tinyvlm_workers 'kind="vision"'))" $?
sleep 2
touch "$work/stop"
wait "$loader"
t1=$(date +%s)
last=$(cat "$work/last")
dropped1=$(metric tinyvlm_workers_dropped_total 'kind="vision"')
ok "counted as a dropped worker (tinyvlm_workers_dropped_total $dropped0 -> $dropped1)" \
  "$(awk -v a="$dropped0" -v b="$dropped1" 'BEGIN { exit !(b > a) }'; echo $?)"
judge 101 "$last"
total=$((last - 100))
ok "with a link cut, all $total requests of $((t1 - t0)) s ended cleanly (answered $answered, refused $refused, broken $broken)" \
  "$([ "$broken" = 0 ] && [ $((answered + refused)) = "$total" ] && echo 0 || echo 1)"
ok "the other vision worker kept the service up ($answered of $total answered)" \
  "$([ "$answered" -ge $((total / 2)) ] && [ "$total" -ge 8 ] && echo 0 || echo 1)"

# 3. Restore: vis1 registers again, takes work again, everything succeeds.
restore_link vis1
echo "rehearse: link of vis1 restored"
wait_for 20 "vis1 to register again" workers_are 2 1
ok "vis1 registered again after the link came back" $?
# Numbers above any the open-ended load of step 2 can reach, so every image is new to the cache.
load 100201 100212 4
judge 100201 100212
ok "after the restore all 12 requests answered (answered $answered, refused $refused, broken $broken)" \
  "$([ "$answered" = 12 ] && echo 0 || echo 1)"
# Prove vis1 serves again on its own: cut vis2 for a while, so the vision pool is vis1 alone,
# and every request must still be answered (and vis1's encode counter must move).
v1_before=$(metric tinyvlm_worker_items_done 'kind="vision",worker="vis1"')
cut_link vis2
echo "rehearse: link of vis2 cut"
wait_for 15 "the gateway to drop vis2" workers_are 1 1
ok "the gateway dropped vis2, vis1 is the vision pool" $?
load 100301 100308 4
judge 100301 100308
ok "with only the restored vis1, all 8 requests answered (answered $answered, refused $refused, broken $broken)" \
  "$([ "$answered" = 8 ] && echo 0 || echo 1)"
vis1_worked() { v1_after=$(metric tinyvlm_worker_items_done 'kind="vision",worker="vis1"'); awk -v a="$v1_before" -v b="$v1_after" 'BEGIN { exit !(b >= a + 8) }'; }
wait_for 5 "vis1's counter to move" vis1_worked
ok "vis1 encoded them ($v1_before -> $v1_after images)" $?
restore_link vis2
echo "rehearse: link of vis2 restored"
wait_for 20 "vis2 to register again" workers_are 2 1
ok "vis2 registered again" $?
# At once: an encode sent in the first moment after a link came back can be lost on the
# connection the reconnect replaces; the worker's next heartbeat shows it, and the gateway sends
# it again (tinyvlm_jobs_resent_total).
embed_request three 401 408; ok "8 images in one embeddings request, right after vis2 came back" $?
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { ok "every daemon still running" 1; break; }
done

echo "rehearse: jobs sent again after a loss (tinyvlm_jobs_resent_total): $(metric tinyvlm_jobs_resent_total)"
echo "rehearse: $pass passed, $fail failed"
if [ "$fail" -ne 0 ]; then
  for f in gateway vis1 vis2 lm; do echo "--- $f log (tail)"; tail -15 "$work/$f.log"; done
  echo "--- gateway metrics (workers)"
  in_ns client curl -s --max-time 3 "$gw_http/metrics" | grep -E '^tinyvlm_(worker|queue)' | grep -v _bucket
fi
[ "$fail" -eq 0 ]

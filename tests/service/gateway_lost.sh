#!/usr/bin/env bash
# Messages lost between the gateway and a worker (what a reconnect after a network cut does to
# whatever was queued on the old connection), made by the workers' fault injection
# (TINYVLM_TEST_LOSE_JOBS / _ANSWERS / _CHUNK, common/wlink.h): a lost encode, a lost encode answer and a
# lost generate are each sent again within a few heartbeats, and the request is answered with
# the same answer as without the loss (tinyvlm_jobs_resent_total counts them); a generation whose
# last chunk is lost after it streamed ends at once with a 503 worker_lost, not at the request
# timeout; a lost chunk ends the request at once with a 503 or, mid-stream, an error event. Without these
# checks each would wait for the request timeout (20 s here), or stream an answer with a hole.
# $1 = the binary, $2 = the source tree.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

make_bundle "$work/b"
start_gateway --request-timeout-s 20
export MAXTOK=16
req=$(chat_body "$src/examples/sample.png" "What is this?")

# ask NAME: one request (at most 15 s); sets code, secs; the answer goes to $work/NAME.
ask() {
  local t0; t0=$(date +%s.%N)
  r=$(post /v1/chat/completions "$req" --max-time 15)
  code=$(tail -n1 <<<"$r")
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  head -n -1 <<<"$r" >"$work/$1.json"
  jq -j '.choices[0].message.content' "$work/$1.json" >"$work/$1" 2>/dev/null
}
# workers VISION_ENV LM_ENV N: stops the workers running, starts vision vN and lm lN with these
# environments (e.g. TINYVLM_TEST_LOSE_JOBS=1, or "-" for none) and waits for them.
wv=; wl=
workers() {
  [ -n "$wv" ] && kill -9 "$wv" "$wl" 2>/dev/null
  [ -n "$wv" ] && for _ in $(seq 100); do [ "$(curl -s "$url/readyz" | jq -r .vision_workers)" = 0 ] && break; sleep 0.1; done
  WORKER_ENV=${1#-} start_worker vision "v$3"; wv=$wpid
  WORKER_ENV=${2#-} start_worker lm "l$3"; wl=$wpid
  wait_workers 1 1 || exit 1
}
resent() { metric tinyvlm_jobs_resent_total; }

workers - - 0
ask want
ok "reference request: 200 with an answer" "[ '$code' = 200 ] && [ -s '$work/want' ]"
ok "no job resent without a loss" "[ \$(resent) = 0 ]"

for case in "vision TINYVLM_TEST_LOSE_JOBS=1 - 1" "vision TINYVLM_TEST_LOSE_ANSWERS=1 - 2" \
            "lm - TINYVLM_TEST_LOSE_JOBS=1 3"; do
  set -- $case
  workers "$2" "$3" "$4"
  n0=$(resent)
  ask "got$4"
  echo "  $1 worker, ${2#-}${3#-}: HTTP $code in ${secs}s"
  ok "$1 worker, ${2#-}${3#-}: 200 in ${secs}s (< 10 s)" "[ '$code' = 200 ] && awk 'BEGIN { exit !($secs < 10) }'"
  ok "...the same answer as without the loss" "cmp -s '$work/want' '$work/got$4'"
  ok "...one job resent (tinyvlm_jobs_resent_total $n0 -> $(resent))" "[ \$(resent) = \$((\${n0%.*} + 1)) ]"
  ok "...the worker logged the injected loss" "grep -q 'fault injection: .*lost' '$work/${1:0:1}$4.log'"
done

# The LM's last chunk lost after earlier chunks reached the client: cannot be sent again.
workers - TINYVLM_TEST_LOSE_ANSWERS=1 4
ask got4
echo "  lm worker, TINYVLM_TEST_LOSE_ANSWERS=1: HTTP $code in ${secs}s"
ok "lm worker, its final chunk lost: 503 in ${secs}s (< 10 s)" "[ '$code' = 503 ] && awk 'BEGIN { exit !($secs < 10) }'"
ok "...error code worker_lost" "[ \"\$(jq -r .error.code '$work/got4.json')\" = worker_lost ]"
ask after
ok "...the next request is answered again (200, the same answer)" "[ '$code' = 200 ] && cmp -s '$work/want' '$work/after'"

# A chunk lost: the gateway sees the token count jump and ends the request at once, instead of
# passing on an answer with a hole in it — a plain 503 while nothing was streamed yet (the first
# chunk lost), an error event mid-stream (the third).
workers - TINYVLM_TEST_LOSE_CHUNK=1 5
ask got5
echo "  lm worker, TINYVLM_TEST_LOSE_CHUNK=1: HTTP $code in ${secs}s"
ok "first chunk lost: 503 worker_lost in ${secs}s (< 10 s)" \
  "[ '$code' = 503 ] && [ \"\$(jq -r .error.code '$work/got5.json')\" = worker_lost ] && awk 'BEGIN { exit !($secs < 10) }'"
workers - TINYVLM_TEST_LOSE_CHUNK=3 6
sreq=$(chat_body "$src/examples/sample.png" "What is this?" ',"stream":true')
t0=$(date +%s.%N)
curl -sN --max-time 15 -H 'Content-Type: application/json' --data-binary "@$sreq" \
  "$url/v1/chat/completions" -o "$work/s6" -w '%{http_code}' >"$work/s6.code"
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "  lm worker, TINYVLM_TEST_LOSE_CHUNK=3, streaming: HTTP $(cat "$work/s6.code") in ${secs}s"
ok "third chunk lost mid-stream: 200, text streamed, then an error event (worker_lost) and [DONE], in ${secs}s (< 10 s)" \
  "[ \"\$(cat '$work/s6.code')\" = 200 ] && grep -q '\"delta\":{\"content\":\"[^\"]' '$work/s6' && grep -q '\"code\": *\"worker_lost\"' '$work/s6' &&
   grep -q 'data: \[DONE\]' '$work/s6' && awk 'BEGIN { exit !($secs < 10) }'"
ok "...and no finish_reason stop/length (the answer is not passed off as whole)" \
  "! grep -q '\"finish_reason\": *\"\(stop\|length\)\"' '$work/s6'"
ask after6
ok "...the next request is answered again (200, the same answer)" "[ '$code' = 200 ] && cmp -s '$work/want' '$work/after6'"

finish "service gateway_lost"

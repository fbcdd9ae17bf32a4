#!/usr/bin/env bash
# Spreading work over a pool under light load: (1) one /v1/embeddings request with 8 distinct
# images on 2 vision workers of 2 slots each and --queue 0 is answered whole (the request's images
# go to the pool together and are admitted as one request: its own overflow waits instead of
# being refused queue_full), and both workers encode some of them; (2) an LM worker added to a
# pool that already served requests shares the next sequential requests at once (ties between
# equally free workers rotate) instead of taking all of them or none.
# $1 = the binary, $2 = the source tree.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

make_bundle "$work/b"
start_gateway --queue 0
for n in v1 v2; do start_worker vision $n --max-batch 2; done
start_worker lm l1 --max-seqs 2
wait_workers 2 1 || exit 1

items() { # $1 = kind, $2 = worker -> items_done from its last heartbeat
  metric "tinyvlm_worker_items_done{kind=\"$1\",worker=\"$2\"}"
}
settle() { sleep 0.6; } # two heartbeats: the items_done figures are current

# (1) 8 images in one request
f=$work/emb.json
{ printf '{"input":['; s=""
  for i in $(ls "$src"/tests/data/image/j_*.jpg | head -8); do printf '%s"%s"' "$s" "$(data_uri "$i" image/jpeg)"; s=,; done
  printf ']}'; } >"$f"
r=$(post /v1/embeddings "$f")
ok "8-image embeddings request with --queue 0 answered 200 (got $(tail -n1 <<<"$r"))" "[ '$(tail -n1 <<<"$r")' = 200 ]"
idx=$(head -n -1 <<<"$r" | jq -c '[.data[].index]' 2>/dev/null)
ok "8 embeddings returned ($idx)" "[ '$idx' = '[0,1,2,3,4,5,6,7]' ]"
ok "8 encodes" "[ \$(metric 'tinyvlm_image_encodes_total{result=\"ok\"}') = 8 ]"
settle
ok "both vision workers encoded (v1 $(items vision v1), v2 $(items vision v2))" \
  "[ \$(items vision v1) -gt 0 ] && [ \$(items vision v2) -gt 0 ] && [ \$((\$(items vision v1) + \$(items vision v2))) = 8 ]"

# (2) a second LM worker joins after l1 has served 4 requests; the next 4 (one at a time) are shared
req=$(chat_body "$src/examples/sample.png" "[vqa] What is in the picture?")
for _ in 1 2 3 4; do post /v1/chat/completions "$req" >/dev/null; done
start_worker lm l2 --max-seqs 2
wait_workers 2 2 || exit 1
settle
l1a=$(items lm l1); l2a=$(items lm l2)
codes=""
for _ in 1 2 3 4; do codes+=$(post /v1/chat/completions "$req" | tail -n1); done
settle
l1b=$(items lm l1); l2b=$(items lm l2)
ok "4 sequential requests answered ($codes)" "[ '$codes' = 200200200200 ]"
ok "l1 served the first 4 alone ($l1a, $l2a)" "[ $l1a = 4 ] && [ $l2a = 0 ]"
ok "after l2 joined, each served 2 of the next 4 (l1 +$((l1b - l1a)), l2 +$((l2b - l2a)))" \
  "[ $((l1b - l1a)) = 2 ] && [ $((l2b - l2a)) = 2 ]"
ok "nothing left in flight" "[ \$(metric 'tinyvlm_worker_inflight{kind=\"lm\"}') = 0 ] && [ \$(metric 'tinyvlm_worker_inflight{kind=\"vision\"}') = 0 ]"

finish "service gateway_spread"

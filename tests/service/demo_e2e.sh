#!/usr/bin/env bash
# Issue 7's end-to-end test through the distributed path: the committed demo bundle (models/demo)
# served by a real redis-server, one `tinyvlm gateway`, 2 `vision-worker`s and 1 `lm-worker`
# (separate processes, Redis embedding cache) answers the 200 held-out questions of
# tests/data/demo (100 scenes, two questions each; tools/demo/eval.py wrote them) through
# POST /v1/chat/completions, greedy, 8 requests at a time. The same questions go through
# `tinyvlm ask --greedy` (the same binary, one process per question). Checks: every request
# answered 200 within the time budget; exact-match accuracy against the scenes' true answers
# (blanks around the answer trimmed, as eval.py does) is the same through the service as with
# ask, and >= 95% for both; the service's answer equals ask's on >= 99% of the items; both vision
# workers encoded images (the gateway's per-worker /metrics); the second question about each
# image is served from the cache; ask's answers equal the stored PyTorch reference's on >= 99%;
# the whole test stays within its time budget. Prints the figures.
# $1 = the binary, $2 = the source tree. TV_DEMO_DATA overrides the test-data folder.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

D=${TV_DEMO_DATA:-$src/tests/data/demo}
N_PAR=8            # requests in flight at once
MAXTOK=64          # eval.py's MAX_NEW
BUDGET_S=${TV_DEMO_BUDGET_S:-120}   # seconds, ASan build included (Release: ~15 s)
export TINYVLM_LOG=warn
for t in curl jq redis-server redis-cli xargs timeout; do
  command -v $t >/dev/null || { echo "SKIP: $t is not installed"; exit 0; }
done
[ -f "$src/models/demo/tinyvlm.json" ] || { echo "FAIL no bundle at $src/models/demo"; exit 1; }
[ -f "$D/items.json" ] || { echo "FAIL no test data at $D/items.json"; exit 1; }
t_start=$SECONDS

# ---- the items: one line each (file, question) for the loops; truths stay in items.json -------
jq -r '.items[] | [.file, .question] | @tsv' "$D/items.json" >"$work/items.tsv" ||
  { echo "FAIL $D/items.json is not the expected JSON"; exit 1; }
n=$(wc -l <"$work/items.tsv")
nimg=$(cut -f1 "$work/items.tsv" | sort -u | wc -l)
ok "200 items in the test data (got $n)" "[ $n -eq 200 ]"
[ "$n" -gt 0 ] || exit 1

# request bodies: image first, then the question (the prompt ask builds); temperature 0
mkdir -p "$work/req" "$work/resp" "$work/ask" "$work/b64"
jq -r '.items[] | .question | @json' "$D/items.json" >"$work/questions.json"
i=0
while IFS=$'\t' read -r file _ && read -r qjson <&3; do
  b=$work/b64/${file//\//_}
  [ -f "$b" ] || base64 -w0 "$D/$file" >"$b"
  printf '{"temperature":0,"max_tokens":%s,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,%s"}},{"type":"text","text":%s}]}]}' \
    "$MAXTOK" "$(cat "$b")" "$qjson" >"$work/req/$i.json"
  i=$((i + 1))
done <"$work/items.tsv" 3<"$work/questions.json"

# ---- the distributed deployment --------------------------------------------------------------
ln -s "$src/models/demo" "$work/b"        # gateway_lib's workers load $work/b
start_redis
redis=redis://127.0.0.1:$rport
start_gateway --redis "$redis"
for v in v1 v2; do start_worker vision $v --redis "$redis"; done
start_worker lm l1 --redis "$redis" --max-seqs "$N_PAR"
wait_workers 2 1 || exit 1

# ---- 200 requests, N_PAR at a time ------------------------------------------------------------
# Each scene's first question goes before any second one, so the second finds the embedding in
# Redis (a cache hit) rather than joining the first one's encode.
order() { seq 0 2 $((n - 1)); seq 1 2 $((n - 1)); }
t0=$SECONDS
order | timeout "$BUDGET_S" xargs -P "$N_PAR" -I{} \
  curl -s -m "$BUDGET_S" -o "$work/resp/{}.json" -w '{} %{http_code}\n' \
    -H 'Content-Type: application/json' --data-binary "@$work/req/{}.json" \
    "$url/v1/chat/completions" >"$work/codes"
rc=$?
t_svc=$((SECONDS - t0))
ok "the requests finished within ${BUDGET_S} s (xargs exit $rc, ${t_svc} s)" "[ $rc -eq 0 ]"
n200=$(awk '$2 == 200' "$work/codes" | wc -l)
ok "every request answered 200 ($n200 of $n)" "[ $n200 -eq $n ]"
awk '$2 != 200 { print $1, $2 }' "$work/codes" | head -3 | while read -r i code; do
  echo "  item $i: HTTP $code $(head -c 300 "$work/resp/$i.json" 2>/dev/null)"
done

# the answers, blanks around them trimmed (eval.py's .strip()); null where there is none
strip='(if . == null then null else gsub("^\\s+|\\s+$"; "") end)'
per_item() { # $1 = folder, $2 = jq filter on one answer file -> a JSON array, one entry per item
  local files=() i out
  for i in $(seq 0 $((n - 1))); do files+=("$1/$i.json"); done
  # one jq for all; if a file is missing, empty or not JSON, one jq each (null for those)
  out=$(jq -cs "map($2)" "${files[@]}" 2>/dev/null)
  if [ "$(jq length <<<"$out" 2>/dev/null)" = "$n" ]; then echo "$out"; return; fi
  for f in "${files[@]}"; do
    out=$(jq -c "$2" "$f" 2>/dev/null | head -n1); echo "${out:-null}"
  done | jq -cs .
}
per_item "$work/resp" ".choices[0].message.content // null | $strip" >"$work/svc.json"

# ---- the same questions through `tinyvlm ask --greedy` (two at a time) -----------------------
t0=$SECONDS
awk -F'\t' '{ print NR - 1 }' "$work/items.tsv" | xargs -P 2 -I{} bash -c '
  i=$1; IFS=$'"'\t'"' read -r file question < <(sed -n "$((i + 1))p" "$2/items.tsv")
  "$3" ask --model "$4" --image "$5/$file" --greedy --json --max-tokens "$6" --threads 1 \
    "$question" >"$2/ask/$i.json" 2>"$2/ask/$i.err" || echo "ask failed on item $i" >>"$2/ask-failed"
' _ {} "$work" "$bin" "$src/models/demo" "$D" "$MAXTOK"
t_ask=$((SECONDS - t0))
ok "every ask succeeded" "[ ! -s '$work/ask-failed' ]"
[ -s "$work/ask-failed" ] && { head -3 "$work/ask-failed"; cat "$work"/ask/*.err | head -5; }
per_item "$work/ask" ".answer // null | $strip" >"$work/ask.json"
per_item "$work/ask" ".tokens // null" >"$work/ask_tok.json"

# ---- the figures -------------------------------------------------------------------------------
jq -n --slurpfile it "$D/items.json" --slurpfile s "$work/svc.json" --slurpfile a "$work/ask.json" \
  --slurpfile t "$work/ask_tok.json" '
  $it[0].items as $items | $s[0] as $svc | $a[0] as $ask | $t[0] as $tok | ($items | length) as $n |
  def count(f): [range($n) | select(f)] | length;
  {n: $n,
   svc: count($svc[.] == $items[.].answer), ask: count($ask[.] == $items[.].answer),
   pytorch: count($items[.].pytorch == $items[.].answer),
   agree: count($svc[.] == $ask[.] and $svc[.] != null),
   ask_pt: count($ask[.] == $items[.].pytorch),
   ask_pt_tok: count($tok[.] != null and $tok[.] == $items[.].pytorch_tokens),
   differ: [range($n) | select($svc[.] != $ask[.]) |
            "  item \(.) \($items[.].question | @json): service \($svc[.] | @json), ask \($ask[.] | @json)"],
   wrong: [range($n) | select($ask[.] != $items[.].answer) |
           "  item \(.) \($items[.].question | @json): want \($items[.].answer | @json), ask \($ask[.] | @json)"]}
' >"$work/fig.json" || { echo "FAIL could not compute the figures"; exit 1; }
fig() { jq -r ".$1" "$work/fig.json"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", b ? 100 * a / b : 0 }'; }
svc=$(fig svc); ask=$(fig ask); pt=$(fig pytorch); agree=$(fig agree); askpt=$(fig ask_pt); askpttok=$(fig ask_pt_tok)
echo "demo e2e: $n questions, $nimg images, gateway + 2 vision workers + 1 LM worker + redis-server"
echo "  exact match: service $svc/$n ($(pct "$svc" "$n")), tinyvlm ask $ask/$n ($(pct "$ask" "$n")), PyTorch (stored) $pt/$n ($(pct "$pt" "$n"))"
echo "  agreement: service = ask on $agree/$n ($(pct "$agree" "$n")); ask = PyTorch on $askpt/$n ($(pct "$askpt" "$n")), token ids $askpttok/$n"
echo "  time: 200 requests through the service ${t_svc} s ($N_PAR at a time), 200 asks ${t_ask} s (2 at a time)"
jq -r '.differ[]' "$work/fig.json" | head -10
[ "$ask" -lt "$n" ] && { echo "  ask's misses:"; jq -r '.wrong[]' "$work/fig.json" | head -10; }

ok "service accuracy = ask accuracy ($svc vs $ask)" "[ $svc -eq $ask ]"
ok "service answer = ask answer on >= 99% ($agree/$n)" "[ $((100 * agree)) -ge $((99 * n)) ]"
ok "service accuracy >= 95% ($svc/$n)" "[ $((100 * svc)) -ge $((95 * n)) ]"
ok "ask accuracy >= 95% ($ask/$n)" "[ $((100 * ask)) -ge $((95 * n)) ]"
ok "ask answer = stored PyTorch answer on >= 99% ($askpt/$n)" "[ $((100 * askpt)) -ge $((99 * n)) ]"

# ---- the work was spread, and the cache served the second questions --------------------------
sleep 0.6   # two heartbeats: the per-worker figures are current
v1=$(metric 'tinyvlm_worker_items_done{kind="vision",worker="v1"}')
v2=$(metric 'tinyvlm_worker_items_done{kind="vision",worker="v2"}')
l1=$(metric 'tinyvlm_worker_items_done{kind="lm",worker="l1"}')
hits=$(metric 'tinyvlm_cache_lookups_total{result="hit"}')
miss=$(metric 'tinyvlm_cache_lookups_total{result="miss"}')
enc=$(metric 'tinyvlm_image_encodes_total{result="ok"}')
echo "  work: vision v1 $v1 images, v2 $v2 images, LM l1 $l1 answers; cache $hits hits, $miss misses; $enc encodes"
ok "both vision workers encoded images (v1 $v1, v2 $v2)" "[ ${v1%.*} -gt 0 ] && [ ${v2%.*} -gt 0 ]"
ok "every image encoded at least once (v1 + v2 = $((${v1%.*} + ${v2%.*})) >= $nimg)" \
  "[ $((${v1%.*} + ${v2%.*})) -ge $nimg ]"
ok "the LM worker answered all $n ($l1)" "[ ${l1%.*} -eq $n ]"
ok "the second questions were cache hits ($hits >= 90)" "[ ${hits%.*} -ge 90 ]"

# a sanitizer build reports to the daemons' logs and ask's stderr without failing the request
san=$(grep -l 'AddressSanitizer\|LeakSanitizer\|runtime error:' "$work"/*.log "$work"/ask/*.err 2>/dev/null | head -3)
ok "no sanitizer report in the daemons' logs or ask's stderr (${san:-none})" "[ -z '$san' ]"
t_all=$((SECONDS - t_start))
echo "  whole test $t_all s"
ok "the whole test within ${BUDGET_S} s ($t_all s)" "[ $t_all -le $BUDGET_S ]"
if [ "$fail" -ne 0 ]; then
  for f in gateway v1 v2 l1; do echo "--- $f.log"; tail -8 "$work/$f.log"; done
fi
finish "service demo_e2e"

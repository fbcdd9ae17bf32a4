#!/usr/bin/env bash
# Bounded queue and tenant concurrency: with --queue 0 and one LM worker of capacity 1, 16
# simultaneous requests are either answered (right answer) or refused at once with 503
# queue_full (Retry-After) instead of piling up; a tenant limited to 1 request in flight gets 429
# for the overlapping ones. Nothing is left in flight afterwards.
# $1 = the binary, $2 = the source tree.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

make_bundle "$work/b"
printf 'key-a open\nkey-one single 1\n' >"$work/keys"
start_gateway --queue 0 --api-keys "$work/keys"
start_worker vision v1
start_worker lm l1 --max-seqs 1
wait_workers 1 1 || exit 1
export MAXTOK=1000
req=$(chat_body "$src/examples/sample.jpg" "Describe the picture.")
want=$(post /v1/chat/completions "$req" -H 'Authorization: Bearer key-a' | head -n -1 | jq -j '.choices[0].message.content')

burst() { # $1 = key, $2 = tag
  for k in $(seq 16); do
    curl -s --max-time 60 -H 'Content-Type: application/json' -H "Authorization: Bearer $1" \
      --data-binary "@$req" "$url/v1/chat/completions" -o "$work/$2.$k" -D "$work/$2.$k.h" \
      -w '%{http_code} %{time_total}\n' >"$work/$2.$k.code" &
  done
  wait
}
burst key-a q
n200=0; n503=0; other=0; slow=0
for k in $(seq 16); do
  read -r st t <"$work/q.$k.code"
  case $st in
    200) [ "$(jq -j '.choices[0].message.content' "$work/q.$k")" = "$want" ] && n200=$((n200 + 1)) || other=$((other + 1)) ;;
    503) jq -e '.error.code == "queue_full"' "$work/q.$k" >/dev/null && grep -qi '^Retry-After:' "$work/q.$k.h" &&
         n503=$((n503 + 1)) || other=$((other + 1))
         awk -v t="$t" 'BEGIN { exit !(t > 2) }' && slow=$((slow + 1)) ;;
    *) other=$((other + 1)) ;;
  esac
done
echo "  --queue 0: $n200 answered, $n503 refused, $other other"
ok "every request answered right or refused with queue_full" "[ $other = 0 ] && [ \$(($n200 + $n503)) = 16 ]"
ok "some were answered, some refused" "[ $n200 -ge 1 ] && [ $n503 -ge 1 ]"
ok "refusals came at once" "[ $slow = 0 ]"

burst key-one t
n429=0; n200=0
for k in $(seq 16); do
  read -r st t <"$work/t.$k.code"
  [ "$st" = 429 ] && jq -e '.error.type == "rate_limit_error"' "$work/t.$k" >/dev/null && n429=$((n429 + 1))
  [ "$st" = 200 ] && n200=$((n200 + 1))
done
echo "  tenant limited to 1: $n200 answered, $n429 got 429"
ok "a tenant over its concurrency gets 429" "[ $n429 -ge 1 ] && [ $n200 -ge 1 ]"
ok "nothing left in flight" "sleep 0.3; [ \$(metric 'tinyvlm_worker_inflight{kind=\"lm\"}') = 0 ] && [ \$(metric 'tinyvlm_queue_depth{kind=\"lm\"}') = 0 ]"

finish "service gateway_queue"

#!/usr/bin/env bash
# The distributed service on loopback (redis-server, tinyvlm gateway, one vision worker and one
# LM worker, tiny bundle): the same image sent twice is encoded once (the gateway's metrics show
# 1 miss then 1 hit, the vision worker encoded 1 image), both answers are identical and equal
# `tinyvlm ask --greedy` (f32 embeddings); the stream of the same request carries the same text;
# /v1/embeddings answers cached=true with the same vector twice; two identical images in one
# request and a salted tenant (API key file) get their own key (a miss), other tenants share.
# $1 = the binary, $2 = the source tree.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

make_bundle "$work/b"
start_redis
printf 'key-a acme\nkey-b bravo\nkey-s secret 0 0 pepper\n' >"$work/keys"
start_gateway --redis "redis://127.0.0.1:$rport" --api-keys "$work/keys"
start_worker vision v1 --redis "redis://127.0.0.1:$rport" --emb-dtype f32
start_worker lm l1 --redis "redis://127.0.0.1:$rport"
wait_workers 1 1 || exit 1
A=(-H 'Authorization: Bearer key-a')

Q="[vqa] What is in the picture?"
img=$src/examples/sample.jpg
req=$(chat_body "$img" "$Q")
r1=$(post /v1/chat/completions "$req" "${A[@]}")
ok "first answer 200" "[ \"\$(tail -n1 <<<\"\$r1\")\" = 200 ]"
ok "first: 1 miss, 0 hits" "[ \$(metric 'tinyvlm_cache_lookups_total{result=\"miss\"}') = 1 ] &&
                            [ \$(metric 'tinyvlm_cache_lookups_total{result=\"hit\"}') = 0 ]"
r2=$(post /v1/chat/completions "$req" "${A[@]}")
ok "second answer 200" "[ \"\$(tail -n1 <<<\"\$r2\")\" = 200 ]"
ok "second: 1 miss, 1 hit" "[ \$(metric 'tinyvlm_cache_lookups_total{result=\"miss\"}') = 1 ] &&
                            [ \$(metric 'tinyvlm_cache_lookups_total{result=\"hit\"}') = 1 ]"
ok "one image sent to the vision worker" "[ \$(metric 'tinyvlm_image_encodes_total{result=\"ok\"}') = 1 ]"
t1=$(head -n -1 <<<"$r1" | jq -r '.choices[0].message.content')
t2=$(head -n -1 <<<"$r2" | jq -r '.choices[0].message.content')
ok "both answers identical and non-empty" "[ -n \"\$t1\" ] && [ \"\$t1\" = \"\$t2\" ]"
ok "chat.completion shape" "head -n -1 <<<\"\$r1\" | jq -e '.object == \"chat.completion\" and (.id|startswith(\"chatcmpl-\"))
  and .choices[0].finish_reason == \"length\" and .usage.completion_tokens == 16
  and .usage.total_tokens == .usage.prompt_tokens + 16' >/dev/null"
"$bin" ask --model "$work/b" --image "$img" --greedy --max-tokens 16 --json "$Q" >"$work/ask.json" 2>"$work/ask.err"
ok "greedy answer through the gateway = tinyvlm ask --greedy" \
  "[ \"\$(jq -r .answer '$work/ask.json')\" = \"\$t1\" ]"

# the same request streamed: role first, content deltas, finish, usage, [DONE]
sreq=$(chat_body "$img" "$Q" ',"stream":true,"stream_options":{"include_usage":true}')
curl -sN -H 'Content-Type: application/json' "${A[@]}" --data-binary "@$sreq" "$url/v1/chat/completions" >"$work/sse"
ok "SSE ends with [DONE]" "[ \"\$(tail -n 2 '$work/sse' | head -n1)\" = 'data: [DONE]' ]"
ok "every event is 'data: ' + JSON or [DONE], blank-line separated" \
  "awk 'NR % 2 == 1 && !/^data: / { exit 1 } NR % 2 == 0 && length(\$0) { exit 1 }' '$work/sse'"
sed -n 's/^data: //p' "$work/sse" | grep -v '^\[DONE\]$' >"$work/events"
ok "first delta has the role" "head -n1 '$work/events' | jq -e '.choices[0].delta.role == \"assistant\"' >/dev/null"
ok "streamed text = the JSON answer" \
  "[ \"\$(jq -j '.choices[0].delta.content // empty' '$work/events')\" = \"\$t1\" ]"
ok "finish_reason then the usage chunk" \
  "[ \"\$(jq -r '.choices[0].finish_reason // empty' '$work/events')\" = length ] &&
   tail -n1 '$work/events' | jq -e '(.choices|length) == 0 and .usage.completion_tokens == 16' >/dev/null"
ok "TTFT histogram counted the three answers" "[ \$(metric 'tinyvlm_ttft_seconds_count') = 3 ]"
ok "tokens counted" "[ \$(metric 'tinyvlm_tokens_generated_total') = 48 ]"

# embeddings: cached (the chat put it there), same vector twice, unit length
printf '{"input":["%s"]}' "$(data_uri "$img" image/jpeg)" >"$work/emb.json"
e1=$(post /v1/embeddings "$work/emb.json" "${A[@]}" -D "$work/h1")
e2=$(post /v1/embeddings "$work/emb.json" "${A[@]}")
ok "embeddings 200, cached, header says hit" "[ \"\$(tail -n1 <<<\"\$e1\")\" = 200 ] &&
  head -n -1 <<<\"\$e1\" | jq -e '.data[0].cached == true' >/dev/null && grep -qi '^X-TinyVLM-Cache: hit' '$work/h1'"
ok "same vector twice" "[ \"\$(head -n -1 <<<\"\$e1\" | jq -c .data[0].embedding)\" = \"\$(head -n -1 <<<\"\$e2\" | jq -c .data[0].embedding)\" ]"
ok "unit length, sha256 = sha256sum" "head -n -1 <<<\"\$e1\" | jq -e '([.data[0].embedding[] | . * .] | add | sqrt) - 1 | fabs < 1e-4' >/dev/null &&
  [ \"\$(head -n -1 <<<\"\$e1\" | jq -r .data[0].sha256)\" = \"\$(sha256sum '$img' | cut -c1-64)\" ]"

# two identical images in one request (new image): one miss, one shared encode, one encode;
# the tiny model's embedding is [8, 80] (usage counts 8 rows per image)
png=$src/examples/sample.png
u=$(data_uri "$png" image/png)
printf '{"input":["%s","%s"],"full":true}' "$u" "$u" >"$work/emb2.json"
enc0=$(metric 'tinyvlm_image_encodes_total{result="ok"}')
e3=$(post /v1/embeddings "$work/emb2.json" "${A[@]}")
ok "two identical images: 200, same vectors, embedding_full [rows][dim]" "[ \"\$(tail -n1 <<<\"\$e3\")\" = 200 ] &&
  head -n -1 <<<\"\$e3\" | jq -e '.data[0].embedding == .data[1].embedding and (.data[0].embedding_full|length) == .usage.prompt_tokens / 2
    and (.data[0].embedding_full[0]|length) == (.data[0].embedding|length)' >/dev/null"
ok "...encoded once" "[ \$(metric 'tinyvlm_image_encodes_total{result=\"ok\"}') = \$((enc0 + 1)) ]"

# tenants: bravo shares acme's cache entries; the salted tenant does not
hits0=$(metric 'tinyvlm_cache_lookups_total{result="hit"}')
post /v1/embeddings "$work/emb.json" -H 'Authorization: Bearer key-b' >/dev/null
ok "another tenant shares the hit" "[ \$(metric 'tinyvlm_cache_lookups_total{result=\"hit\"}') = \$((hits0 + 1)) ]"
miss0=$(metric 'tinyvlm_cache_lookups_total{result="miss"}')
es=$(post /v1/embeddings "$work/emb.json" -H 'Authorization: Bearer key-s')
ok "a salted tenant misses, gets the same vector" "[ \$(metric 'tinyvlm_cache_lookups_total{result=\"miss\"}') = \$((miss0 + 1)) ] &&
  [ \"\$(head -n -1 <<<\"\$es\" | jq -c .data[0].embedding)\" = \"\$(head -n -1 <<<\"\$e1\" | jq -c .data[0].embedding)\" ]"
ok "redis holds 3 embeddings (2 shared + 1 salted)" "[ \$(redis-cli -p $rport dbsize) = 3 ]"
ok "/v1/models lists the model" "curl -s '${A[@]:1}' -H 'Authorization: Bearer key-a' '$url/v1/models' | jq -e '.data | length == 1' >/dev/null"
ok "gateway log warns about nothing open" "! grep -q 'OPEN' '$work/gateway.log'"

# two different images in one question: both encoded (the png is cached by now, the new one is not)
u1=$(data_uri "$img" image/jpeg); u2=$(data_uri "$src/tests/data/tinygptv/input.png" image/png)
printf '{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"%s"}},{"type":"text","text":"and"},{"type":"image_url","image_url":{"url":"%s"}},{"type":"text","text":"compare them"}]}],"temperature":0,"max_tokens":8}' "$u1" "$u2" >"$work/two.json"
r=$(post /v1/chat/completions "$work/two.json" "${A[@]}")
p1=$(head -n -1 <<<"$r1" | jq .usage.prompt_tokens)
ok "two images in one request: 200, the prompt holds both" "[ \"\$(tail -n1 <<<\"\$r\")\" = 200 ] &&
  [ \$(head -n -1 <<<\"\$r\" | jq .usage.prompt_tokens) -gt $p1 ]"

# clean stop: SIGTERM -> the gateway exits 0 within a few seconds, with no sanitizer report
kill -TERM "$gpid"
for _ in $(seq 100); do kill -0 "$gpid" 2>/dev/null || break; sleep 0.1; done
ok "SIGTERM stops the gateway" "! kill -0 $gpid 2>/dev/null"
ok "no sanitizer report in the gateway log" "! grep -qE 'Sanitizer|runtime error' '$work/gateway.log'"
ok "the stop is logged" "grep -q 'stopping' '$work/gateway.log'"

finish "service gateway_cache"

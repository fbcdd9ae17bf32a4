#!/usr/bin/env bash
# Bad input through the distributed service (tinyvlm gateway + workers + redis-server, tiny
# bundle): each gets the right 4xx/5xx with an OpenAI-style error body, and good requests keep
# being answered in between: no workers yet (503 + readyz 503), corrupt JPEG (400 from the vision
# worker), a PNG header claiming 100000 x 100000 pixels (413 before any worker sees it), bad
# base64, malformed JSON, wrong content type (415), wrong method (405), unknown route (404),
# unknown model, http image URL, prompt over the context, absurd max_tokens, body over the limit
# (413), missing / wrong API key (401), a tenant over its rate limit (429).
# $1 = the binary, $2 = the source tree.
bin=$1; src=$2
. "$src/tests/service/gateway_lib.bash"

make_bundle "$work/b"
start_redis
printf '# tenants\nkey-a acme\nkey-r ratelimited 0 2\n' >"$work/keys"
start_gateway --redis "redis://127.0.0.1:$rport" --api-keys "$work/keys" --max-body-mb 1 --max-tokens-limit 512
A=(-H 'Authorization: Bearer key-a')
img=$src/examples/sample.jpg

# check NAME WANT_STATUS RESPONSE: status and an OpenAI error body
check() {
  local st body; st=$(tail -n1 <<<"$3"); body=$(head -n -1 <<<"$3")
  ok "$1 -> $2 (got $st: $(head -c 200 <<<"$body"))" "[ '$st' = '$2' ] &&
    jq -e '(.error.message|length) > 0 and (.error.type|type) == \"string\" and has(\"error\")' >/dev/null <<<\"\$body\""
}
good() {
  local r; r=$(post /v1/chat/completions "$(chat_body "$img" "[vqa] what is this?")" "${A[@]}")
  ok "a good request still answers ($1)" "[ \"\$(tail -n1 <<<\"\$r\")\" = 200 ]"
}

check "no workers registered" 503 "$(post /v1/chat/completions "$(chat_body "$img" hi)" "${A[@]}")"
ok "readyz 503 without workers" "[ \$(curl -s -o /dev/null -w '%{http_code}' $url/readyz) = 503 ]"
ok "healthz 200 anyway" "[ \$(curl -s -o /dev/null -w '%{http_code}' $url/healthz) = 200 ]"
start_worker vision v1 --redis "redis://127.0.0.1:$rport"
start_worker lm l1 --redis "redis://127.0.0.1:$rport"
wait_workers 1 1 || exit 1
ok "readyz 200 with a pair" "[ \$(curl -s -o /dev/null -w '%{http_code}' $url/readyz) = 200 ]"
good "start"

head -c 400 "$img" >"$work/corrupt.jpg"
check "corrupt JPEG" 400 "$(post /v1/chat/completions "$(chat_body "$work/corrupt.jpg" hi)" "${A[@]}")"
ok "...refused by the vision worker as invalid_image" "grep -q invalid_image <<<\"\$(post /v1/chat/completions \"\$(chat_body '$work/corrupt.jpg' hi)\" \"\${A[@]}\")\""
enc0=$(metric 'tinyvlm_image_encodes_total{result="error"}')
check "PNG header claiming 100000x100000" 413 \
  "$(post /v1/chat/completions "$(chat_body "$src/tests/data/image/bad_bomb.png" hi)" "${A[@]}")"
ok "...refused at the gateway (no encode)" "[ \$(metric 'tinyvlm_image_encodes_total{result=\"error\"}') = $enc0 ]"
printf '{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR%%%%w0KGgo"}}]}]}' >"$work/b64.json"
check "bad base64" 400 "$(post /v1/chat/completions "$work/b64.json" "${A[@]}")"
printf '{"messages":[{"role":"user","content":"hi"}' >"$work/trunc.json"
check "malformed JSON" 400 "$(post /v1/chat/completions "$work/trunc.json" "${A[@]}")"
good "after malformed input"
check "text/plain content type" 415 \
  "$(curl -s -w '\n%{http_code}' -H 'Content-Type: text/plain' "${A[@]}" --data-binary "@$(chat_body "$img" hi)" "$url/v1/chat/completions")"
check "form content type on embeddings" 415 \
  "$(curl -s -w '\n%{http_code}' "${A[@]}" -d 'input=x' "$url/v1/embeddings")"
check "GET on chat completions" 405 "$(curl -s -w '\n%{http_code}' "${A[@]}" "$url/v1/chat/completions")"
check "unknown route" 404 "$(curl -s -w '\n%{http_code}' "${A[@]}" "$url/v2/nothing")"
check "unknown model" 400 "$(post /v1/chat/completions "$(chat_body "$img" hi ',"model":"gpt-17"')" "${A[@]}")"
printf '{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}' >"$work/url.json"
check "http image URL" 400 "$(post /v1/chat/completions "$work/url.json" "${A[@]}")"
long=$(for i in $(seq 3000); do printf 'word%d ' "$i"; done)
r=$(post /v1/chat/completions "$(chat_body "$img" "$long")" "${A[@]}")
check "prompt over the context" 400 "$r"
ok "...code context_length_exceeded" "head -n -1 <<<\"\$r\" | jq -e '.error.code == \"context_length_exceeded\"' >/dev/null"
check "max_tokens absurd" 400 "$(post /v1/chat/completions "$(MAXTOK=100000000 chat_body "$img" hi)" "${A[@]}")"
check "max_tokens over the gateway limit" 400 "$(post /v1/chat/completions "$(MAXTOK=513 chat_body "$img" hi)" "${A[@]}")"
check "no user message" 400 "$(printf '{"messages":[{"role":"system","content":"x"}]}' >"$work/nu.json"; post /v1/chat/completions "$work/nu.json" "${A[@]}")"
head -c 1500000 /dev/zero | tr '\0' 'a' >"$work/big.txt"
printf '{"messages":[{"role":"user","content":"%s"}]}' "$(cat "$work/big.txt")" >"$work/big.json"
check "body over --max-body-mb" 413 "$(post /v1/chat/completions "$work/big.json" "${A[@]}")"
check "missing API key" 401 "$(post /v1/chat/completions "$(chat_body "$img" hi)")"
check "wrong API key" 401 "$(post /v1/chat/completions "$(chat_body "$img" hi)" -H 'Authorization: Bearer nope')"
check "missing key on /v1/models" 401 "$(curl -s -w '\n%{http_code}' "$url/v1/models")"
R=(-H 'Authorization: Bearer key-r')
printf '{"input":"%s"}' "$(data_uri "$img" image/jpeg)" >"$work/emb.json"
s1=$(post /v1/embeddings "$work/emb.json" "${R[@]}" | tail -n1)
s2=$(post /v1/embeddings "$work/emb.json" "${R[@]}" | tail -n1)
ok "rate-limited tenant: 2 requests pass" "[ $s1 = 200 ] && [ $s2 = 200 ]"
check "...the third is over its rate (2/min)" 429 "$(post /v1/embeddings "$work/emb.json" "${R[@]}")"
check "embeddings of text" 400 "$(printf '{"input":"hello"}' >"$work/t.json"; post /v1/embeddings "$work/t.json" "${A[@]}")"
good "end"
ok "metrics count 4xx by route" "[ \$(metric 'tinyvlm_http_requests_total{route=\"/v1/chat/completions\",status=\"401\"}') = 2 ]"
ok "gateway and workers still running" "kill -0 $gpid && [ \$(curl -s $url/readyz | jq .lm_workers) = 1 ]"

finish "service gateway_badinput"

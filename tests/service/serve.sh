#!/usr/bin/env bash
# tinyvlm serve with the tiny bundle (converted at f32): it prints its ready line with the port it
# got (--port 0); a greedy chat completion with an image equals `tinyvlm ask --greedy` on the
# same image and question (and tiny.json's PyTorch text); stream=true gives well-formed SSE whose
# deltas add up to the same answer and which ends in [DONE]; the same image again is a cache hit;
# two images in one request, a follow-up turn and a corrupt image are answered (the last with a
# 400); a prompt over the context is 400 context_length_exceeded; SIGTERM stops it with exit 0.
# $1 = the binary, $2 = the source tree.
set -u
bin=$1; src=$2
M=$src/tests/data/tinygptv/model
work=$(mktemp -d); spid=
trap '[ -n "$spid" ] && kill -9 $spid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
pass=0; fail=0
ok() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
for t in curl jq; do command -v $t >/dev/null || { echo "SKIP: $t is not installed"; exit 0; }; done

"$bin" serve --help >"$work/help" 2>&1
ok "serve --help exit 0" "[ $? -eq 0 ] && grep -q -- '--model' '$work/help' && grep -q TINYVLM_PORT '$work/help'"
"$bin" serve --port 80 >/dev/null 2>"$work/e0"
ok "serve without --model exit 2" "[ $? -eq 2 ] && grep -q -- '--model' '$work/e0'"
"$bin" serve --model "$work/none" --port 0 >/dev/null 2>"$work/e1"
ok "serve with a missing bundle exit 1" "[ $? -eq 1 ] && grep -q tinyvlm.json '$work/e1'"
TINYVLM_PORT=notanumber "$bin" serve --model x >/dev/null 2>"$work/e2"
ok "bad TINYVLM_PORT exit 2" "[ $? -eq 2 ] && grep -q environment '$work/e2'"

"$bin" convert --phi "$M/phi_fused" --eva "$M/eva_vit_g.pth" --blip2 "$M/blip2_pretrained_flant5xxl.pth" \
  --stage4 "$M/TinyGPT-V_for_Stage4.pth" --out "$work/b" --dtype f32 --vit-heads 2 --qformer-heads 2 \
  >"$work/conv.out" 2>&1 || { echo "FAIL convert"; cat "$work/conv.out"; exit 1; }

"$bin" serve --model "$work/b" --port 0 --threads 1 --emb-dtype f32 >"$work/serve.out" 2>"$work/serve.log" &
spid=$!
for _ in $(seq 300); do
  grep -q '^tinyvlm serving' "$work/serve.out" && break
  kill -0 $spid 2>/dev/null || break
  sleep 0.1
done
url=$(grep -o 'http://[0-9.]*:[0-9]*' "$work/serve.out" | head -1)
ok "ready line" "[ -n '$url' ] && grep -q '^tinyvlm serving tinygpt-v at http://127.0.0.1:' '$work/serve.out'"
[ -n "$url" ] || { cat "$work/serve.log"; exit 1; }

port=${url##*:}
"$bin" serve --model "$work/b" --port "$port" --threads 1 >/dev/null 2>"$work/e3"
ok "a port in use: exit 1 naming it" "[ $? -eq 1 ] && grep -q '$port' '$work/e3'"

img=$src/tests/data/tinygptv/input.png
q="[vqa] What colour is the cat?"
uri="data:image/png;base64,$(base64 -w0 "$img")"
jq -n --arg u "$uri" --arg q "$q" '{model: "tinygpt-v", temperature: 0, max_tokens: 32,
  messages: [{role: "user", content: [{type: "image_url", image_url: {url: $u}}, {type: "text", text: $q}]}]}' \
  >"$work/req.json"
post() { curl -s -m 30 -o "$work/$2" -w '%{http_code}' "$url/v1/chat/completions" \
           -H 'Content-Type: application/json' -d @"$work/$1"; }

code=$(post req.json r1.json)
ok "chat completion 200" "[ '$code' = 200 ]"
"$bin" ask --model "$work/b" --image "$img" --greedy --max-tokens 32 --threads 1 --json "$q" \
  >"$work/ask.json" 2>/dev/null
want=$(jq -r .answer "$work/ask.json")
got=$(jq -r '.choices[0].message.content' "$work/r1.json")
ok "greedy answer = tinyvlm ask --greedy" "[ -n \"\$want\" ] && [ \"\$got\" = \"\$want\" ]"
[ "$got" = "$want" ] || { echo "  want: $want"; echo "  got:  $got"; }
ref=$(jq -r .greedy_text "$src/tests/data/tinygptv/tiny.json")
ok "greedy answer = PyTorch's text" "[ \"\$got\" = \"\$ref\" ]"
ok "finish length, usage 32 + 32" "jq -e '.choices[0].finish_reason == \"length\" and .usage.prompt_tokens == 32
  and .usage.completion_tokens == 32 and .object == \"chat.completion\"' '$work/r1.json' >/dev/null"

# the same image again: a cache hit, the same answer
code=$(post req.json r2.json)
ok "second request 200, same answer" "[ '$code' = 200 ] && [ \"\$(jq -r '.choices[0].message.content' '$work/r2.json')\" = \"\$want\" ]"
hits=$(curl -s "$url/metrics" | grep '^tinyvlm_cache_lookups_total{result="hit"}' | awk '{print $2}')
ok "cache hit counted" "[ '${hits:-0}' -ge 1 ]"

# streaming: every event is 'data: JSON', the last is [DONE], the deltas add up to the answer
jq '.stream = true' "$work/req.json" >"$work/req_s.json"
curl -s -N -m 30 "$url/v1/chat/completions" -H 'Content-Type: application/json' \
  -d @"$work/req_s.json" >"$work/sse.txt"
grep -v '^$' "$work/sse.txt" >"$work/sse_lines"
ok "SSE lines all start with 'data: '" "! grep -qv '^data: ' '$work/sse_lines'"
ok "SSE ends with [DONE]" "[ \"\$(tail -1 '$work/sse_lines')\" = 'data: [DONE]' ]"
sed -e '$d' -e 's/^data: //' "$work/sse_lines" >"$work/events.jsonl"
ok "SSE events are JSON chunks" "jq -e -s 'length > 1 and all(.object == \"chat.completion.chunk\")' '$work/events.jsonl' >/dev/null"
streamed=$(jq -j '.choices[0].delta.content // ""' "$work/events.jsonl")
ok "streamed deltas = the answer" "[ \"\$streamed\" = \"\$want\" ]"
ok "one finish_reason, length" "[ \"\$(jq -r '.choices[0].finish_reason // empty' '$work/events.jsonl')\" = length ]"

# two images in one request (the first image twice and the example PNG), then a follow-up turn
uri2="data:image/png;base64,$(base64 -w0 "$src/examples/sample.png")"
jq -n --arg u "$uri" --arg v "$uri2" '{temperature: 0, max_tokens: 8, messages: [
  {role: "user", content: [{type: "image_url", image_url: {url: $u}}, {type: "image_url", image_url: {url: $v}},
   {type: "text", text: "Compare them."}]},
  {role: "assistant", content: "Two cats."}, {role: "user", content: "Which is bigger?"}]}' >"$work/req2.json"
code=$(post req2.json r3.json)
ok "two images + follow-up 200" "[ '$code' = 200 ] && jq -e '.usage.completion_tokens == 8 and .usage.prompt_tokens > 16' '$work/r3.json' >/dev/null"

# a corrupt image: 400 invalid_image-style error body; the service keeps serving
head -c 300 "$img" >"$work/bad.png"
jq --arg u "data:image/png;base64,$(base64 -w0 "$work/bad.png")" \
  '.messages[0].content[0].image_url.url = $u' "$work/req.json" >"$work/req_bad.json"
code=$(post req_bad.json r4.json)
ok "corrupt image 400 with an error body" "[ '$code' = 400 ] && jq -e '.error.message | length > 0' '$work/r4.json' >/dev/null"

# a prompt over the context (2048 positions)
long=$(printf 'word %.0s' $(seq 1 3000))
jq --arg q "$long" '.messages[0].content[1].text = $q' "$work/req.json" >"$work/req_long.json"
code=$(post req_long.json r5.json)
ok "over the context 400 context_length_exceeded" "[ '$code' = 400 ] && grep -q context_length_exceeded '$work/r5.json'"

code=$(post req.json r6.json)
ok "still serving after the errors" "[ '$code' = 200 ]"

kill -TERM $spid
for _ in $(seq 100); do kill -0 $spid 2>/dev/null || break; sleep 0.1; done
wait $spid; rc=$?
spid=
ok "SIGTERM: exit 0" "[ $rc -eq 0 ]"
[ $rc -eq 0 ] || tail -20 "$work/serve.log"

echo "service serve: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

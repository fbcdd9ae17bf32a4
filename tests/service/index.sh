#!/usr/bin/env bash
# tinyvlm index against a real `tinyvlm serve` (the tiny bundle): a folder with good, duplicate,
# corrupt and unreadable images -> one JSONL line per good image whose sha256 is sha256sum's and
# whose embedding is the PyTorch reference's pooled image embedding (tiny.safetensors) and what
# curl gets from /v1/embeddings; the duplicate is a cache hit; failures are listed at the end and
# the exit code is 1; a second run resumes (nothing re-sent, no duplicate lines), a torn last
# line is survived; a keyed gateway gets the API key; unreachable gateway and usage errors exit
# 1 and 2; a TTY gets a progress bar.
# $1 = the binary, $2 = the source tree.
set -u
bin=$1; src=$2
M=$src/tests/data/tinygptv/model
work=$(mktemp -d); spid=
trap '[ -n "$spid" ] && kill $spid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
pass=0; fail=0
ok() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }

if "$bin" serve --help 2>&1 | grep -q 'not built yet'; then
  echo "SKIP: tinyvlm serve is not built yet"; exit 0
fi

# start_serve BUNDLE [FLAGS]: `tinyvlm serve` on a free port; sets url and spid. Returns 1 (log
# printed) on failure.
start_serve() {
  local port i
  for _ in 1 2 3 4 5; do
    port=$((10000 + RANDOM % 22000))   # below the ephemeral range
    "$bin" serve --model "$@" --host 127.0.0.1 --port "$port" >"$work/serve.log" 2>&1 &
    spid=$!
    for i in $(seq 300); do
      if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
        url=http://127.0.0.1:$port; return 0
      fi
      kill -0 "$spid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; spid=
    grep -qi 'in use' "$work/serve.log" || break
  done
  echo "serve did not become ready:"; cat "$work/serve.log"; return 1
}

"$bin" convert --phi "$M/phi_fused" --eva "$M/eva_vit_g.pth" --blip2 "$M/blip2_pretrained_flant5xxl.pth" \
  --stage4 "$M/TinyGPT-V_for_Stage4.pth" --out "$work/b" --dtype f32 --vit-heads 2 --qformer-heads 2 \
  >"$work/conv.out" 2>&1 || { echo "FAIL convert"; cat "$work/conv.out"; exit 1; }
start_serve "$work/b" || exit 1

# The folder: a.jpg and sub/deeper/dup.jpeg are the same bytes; bad.jpg is not an image;
# trunc.jpg is a cut JPEG; dangling.png cannot be opened; notes.txt is not an image name.
I=$work/imgs
mkdir -p "$I/sub/deeper"
cp "$src/examples/sample.jpg" "$I/a.jpg"
cp "$src/examples/sample.jpg" "$I/sub/deeper/dup.jpeg"
cp "$src/examples/sample.png" "$I/sub/B.PNG"
cp "$src/tests/data/tinygptv/input.png" "$I/c.png"
echo "not an image" > "$I/bad.jpg"
head -c 300 "$src/examples/sample.jpg" > "$I/trunc.jpg"
ln -s "$work/nowhere.png" "$I/dangling.png"
echo notes > "$I/notes.txt"
out=$work/out.jsonl
line() { grep -F "\"path\":\"$I/$1\"" "$out"; }

# --- first run: 4 indexed (1 cache hit), 3 failed, exit 1 -------------------------------------
"$bin" index "$I/" --url "$url" --out "$out" --concurrency 1 >"$work/r1.out" 2>"$work/r1.err"
ok "first run exit 1 (some failed)" "[ $? -eq 1 ]"
ok "4 lines written" "[ \$(wc -l < '$out') -eq 4 ]"
ok "every line is JSON with path, sha256, embedding" \
  "[ \$(jq -c 'select(.path and (.sha256|length)==64 and (.embedding|length)>0)' '$out' | wc -l) -eq 4 ]"
for f in a.jpg sub/deeper/dup.jpeg sub/B.PNG c.png; do
  sha=$(sha256sum "$I/$f" | cut -c1-64)
  ok "$f: sha256 = sha256sum" "[ \"\$(line $f | jq -r .sha256)\" = '$sha' ]"
done
ok "paths are DIR/relative (no doubled slash)" "! grep -q '//' <(jq -r .path '$out')"
ok "embedding of width 80 (the tiny LM) and unit length" \
  "[ \"\$(line c.png | jq '.embedding | length')\" = 80 ] &&
   line c.png | jq -e '([.embedding[] | . * .] | add | sqrt) - 1 | fabs < 1e-4' >/dev/null"
ok "the duplicate has the same embedding" \
  "[ \"\$(line a.jpg | jq -c .embedding)\" = \"\$(line sub/deeper/dup.jpeg | jq -c .embedding)\" ]"
ok "summary: 4 indexed, 1 cache hit, 3 failed" \
  "grep -q 'indexed 4 images (1 cache hit).*3 failed' '$work/r1.out'"
ok "bad.jpg reported with the gateway's 4xx" "grep -q 'failed: .*bad.jpg: HTTP 4[0-9][0-9]' '$work/r1.err'"
ok "trunc.jpg reported with the gateway's 4xx" "grep -q 'failed: .*trunc.jpg: HTTP 4[0-9][0-9]' '$work/r1.err'"
ok "dangling.png reported as unreadable" "grep -q 'failed: .*dangling.png: cannot open' '$work/r1.err'"
ok "notes.txt ignored" "! grep -q notes '$out' '$work/r1.err'"

# The reference: PyTorch's image embedding of input.png (tiny.safetensors "image_embeds",
# [1, 8, 80] f32), mean over the 8 rows, L2-normalised; the service's embeddings may be f16.
st=$src/tests/data/tinygptv/tiny.safetensors
hlen=$(od -An -t u8 -N 8 "$st" | tr -d ' ')
read -r b e < <(head -c $((8 + hlen)) "$st" | tail -c "$hlen" |
                jq -r '.image_embeds | select(.dtype == "F32") | "\(.data_offsets[0]) \(.data_offsets[1])"')
od -An -v -t f4 -j $((8 + hlen + b)) -N $((e - b)) "$st" | tr -s ' ' '\n' | grep -v '^$' > "$work/ref.txt"
line c.png | jq -r '.embedding[]' > "$work/got.txt"
maxdiff=$(awk -v D=80 'NR == FNR { s[(FNR - 1) % D] += $1; next }
  FNR == 1 { for (i = 0; i < D; i++) n2 += s[i] * s[i]; n = sqrt(n2) }
  { d = $1 - s[FNR - 1] / n; if (d < 0) d = -d; if (d > m) m = d } END { print m + 0 }' \
  "$work/ref.txt" "$work/got.txt")
ok "c.png embedding = PyTorch pooled reference (max diff $maxdiff <= 2e-3)" \
  "[ \$(wc -l < '$work/ref.txt') -eq 640 ] && [ \$(wc -l < '$work/got.txt') -eq 80 ] && awk 'BEGIN { exit !($maxdiff <= 2e-3) }'"
# An independent client: curl's answer for the same file is what index wrote.
printf '{"input":["data:image/png;base64,%s"]}' "$(base64 -w0 "$I/c.png")" > "$work/req.json"
curl -s "$url/v1/embeddings" -H 'Content-Type: application/json' --data-binary @"$work/req.json" > "$work/curl.json"
ok "index's embedding = curl's /v1/embeddings answer" \
  "jq -e --slurpfile a '$work/curl.json' '.embedding == \$a[0].data[0].embedding' <(line c.png) >/dev/null"

# --- resume ----------------------------------------------------------------------------------
"$bin" index "$I" --url "$url" --out "$out" >"$work/r2.out" 2>"$work/r2.err"
ok "second run exit 1 (the same 3 still fail)" "[ $? -eq 1 ]"
ok "second run skips the 4 done" "grep -q 'indexed 0 images.*4 already in' '$work/r2.out'"
ok "no duplicate lines" "[ \$(wc -l < '$out') -eq 4 ]"
rm "$I/bad.jpg" "$I/trunc.jpg" "$I/dangling.png"
cp "$src/examples/sample.png" "$I/sub/new.png"
line c.png | head -c 60 >> "$out"   # a line torn by a kill
"$bin" index "$I" --url "$url" --out "$out" --quiet >"$work/r3.out" 2>"$work/r3.err"
ok "third run exit 0 (all done)" "[ $? -eq 0 ]"
ok "third run sends only the new image (a cache hit)" \
  "grep -q 'indexed 1 image (1 cache hit).*4 already in.*0 failed' '$work/r3.out'"
ok "after the torn line every line but it parses, 5 images" \
  "[ \$(grep -c . '$out') -eq 6 ] && [ \$(jq -cR 'fromjson? | .path' '$out' | sort -u | wc -l) -eq 5 ]"
ok "--quiet: no progress lines" "! grep -q 'img/s' '$work/r3.err'"

# --- a terminal gets a progress bar (images/s, cache hits, ETA) --------------------------------
if command -v script >/dev/null; then
  rm -f "$work/tty.jsonl"
  script -qec "'$bin' index '$I' --url '$url' --out '$work/tty.jsonl'" /dev/null > "$work/tty.out" 2>&1
  ok "TTY run exit 0" "[ $? -eq 0 ]"
  ok "TTY progress bar" "grep -aq '\\[####################\\] 5/5 .*img/s .*cache hits .*ETA' '$work/tty.out'"
fi

# --- a gateway with API keys: the key from TINYVLM_API_KEY (or --api-key) is sent --------------
kill "$spid"; wait "$spid" 2>/dev/null; spid=
printf 'sk-test-1 tester\n' > "$work/keys"
start_serve "$work/b" --api-keys "$work/keys" || exit 1
"$bin" index "$I" --url "$url" --out "$work/k0.jsonl" >"$work/k0.out" 2>"$work/k0.err"
ok "keyed gateway, no key: exit 1, stops at the 401, says how to give a key" \
  "[ $? -eq 1 ] && grep -q 'HTTP 401' '$work/k0.err' && grep -q 'TINYVLM_API_KEY' '$work/k0.err' &&
   grep -q 'not attempted' '$work/k0.out' && [ ! -s '$work/k0.jsonl' ]"
TINYVLM_API_KEY=sk-test-1 "$bin" index "$I" --url "$url" --out "$work/k1.jsonl" >"$work/k1.out" 2>"$work/k1.err"
ok "keyed gateway, TINYVLM_API_KEY: exit 0, 5 lines" "[ $? -eq 0 ] && [ \$(wc -l < '$work/k1.jsonl') -eq 5 ]"
"$bin" index "$I" --url "$url" --out "$work/k2.jsonl" --api-key sk-wrong >/dev/null 2>"$work/k2.err"
ok "keyed gateway, wrong --api-key: exit 1, 401" "[ $? -eq 1 ] && grep -q 'HTTP 401' '$work/k2.err'"

# --- errors ----------------------------------------------------------------------------------
kill "$spid"; wait "$spid" 2>/dev/null; spid=
"$bin" index "$I" --url "$url" --out "$work/x.jsonl" --retries 0 >"$work/r4.out" 2>"$work/r4.err"
ok "gateway gone: exit 1, 'cannot reach', files not attempted" \
  "[ $? -eq 1 ] && grep -q 'cannot reach' '$work/r4.err' && grep -q 'not attempted' '$work/r4.out'"
"$bin" index "$I" --out "$work/x.jsonl" >/dev/null 2>&1
ok "no --url: exit 2" "[ $? -eq 2 ]"
"$bin" index "$work/none" --url "$url" >/dev/null 2>&1
ok "missing DIR: exit 2" "[ $? -eq 2 ]"
"$bin" index "$I" --url "$url" --concurrency 0 >/dev/null 2>&1
ok "bad --concurrency: exit 2" "[ $? -eq 2 ]"
"$bin" index --help >/dev/null 2>&1
ok "--help exit 0" "[ $? -eq 0 ]"

echo "service index: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# The web page (GET /) in headless Chromium against a real `tinyvlm serve`, driven over the
# DevTools protocol (--remote-debugging-pipe: NUL-separated JSON on fds 3 and 4, spoken here
# with jq): a real file is put on the page's file input (DOM.setFileInputFiles), the question,
# max tokens and temperature 0 are typed into their fields, Ask is clicked, and the answer that
# streamed onto the page must equal `tinyvlm ask --greedy` for the same image and question. A
# corrupt image must show the API's error on the page; on a keyed gateway the 401 shows, and the
# key typed into the settings is kept (localStorage) and sent. Skips (exit 0, with a message) where
# Chromium is absent or cannot start.
# TV_BROWSER_SCREENSHOT=FILE saves a PNG of the page with its answer (docs/web.png is one);
# TV_BROWSER_MODEL=DIR uses that bundle instead of converting the tiny test model.
# $1 = the binary, $2 = the source tree.
set -u
bin=$1; src=$(cd "$2" && pwd)   # Chromium wants absolute file paths
M=$src/tests/data/tinygptv/model
work=$(mktemp -d); spid=; cpid=
cleanup() {
  [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
pass=0; fail=0
ok() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }

if "$bin" serve --help 2>&1 | grep -q 'not built yet'; then
  echo "SKIP: tinyvlm serve is not built yet"; exit 0
fi
chrome=
for c in chromium chromium-browser google-chrome; do command -v "$c" >/dev/null && { chrome=$c; break; }; done
if [ -z "$chrome" ]; then
  echo "SKIP: no chromium (Debian: apt-get install chromium)"; exit 0
fi
chrome_flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
              --disable-extensions --user-data-dir="$work/profile")
if ! timeout 60 "$chrome" "${chrome_flags[@]}" --dump-dom about:blank >/dev/null 2>"$work/chrome0.err"; then
  echo "SKIP: $chrome cannot start here:"; tail -3 "$work/chrome0.err"; exit 0
fi

# ---- the service ------------------------------------------------------------------------------
start_serve() {  # start_serve BUNDLE [FLAGS]; sets url and spid
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

if [ -n "${TV_BROWSER_MODEL:-}" ]; then
  B=$TV_BROWSER_MODEL
  img=${TV_BROWSER_IMAGE:-$src/examples/sample.png}
  q=${TV_BROWSER_QUESTION:-[caption] Describe this image.}
  ntok=${TV_BROWSER_MAX_TOKENS:-48}
else
  B=$work/b
  "$bin" convert --phi "$M/phi_fused" --eva "$M/eva_vit_g.pth" --blip2 "$M/blip2_pretrained_flant5xxl.pth" \
    --stage4 "$M/TinyGPT-V_for_Stage4.pth" --out "$B" --dtype f32 --vit-heads 2 --qformer-heads 2 \
    >"$work/conv.out" 2>&1 || { echo "FAIL convert"; cat "$work/conv.out"; exit 1; }
  img=$src/tests/data/tinygptv/input.png
  q="[vqa] What colour is the cat?"
  ntok=16
fi
start_serve "$B" || exit 1
"$bin" ask --model "$B" --image "$img" --greedy --max-tokens "$ntok" --json "$q" >"$work/ask.json" 2>"$work/ask.err" ||
  { echo "FAIL ask"; cat "$work/ask.err"; exit 1; }
want=$(jq -r .answer "$work/ask.json")

# ---- the browser, over the DevTools pipe --------------------------------------------------------
mkfifo "$work/to" "$work/from"
"$chrome" "${chrome_flags[@]}" --remote-debugging-pipe 3<"$work/to" 4>"$work/from" 2>"$work/chrome.err" &
cpid=$!
exec 5>"$work/to" 6<"$work/from"
id=0; sid=
cdp() {  # cdp METHOD PARAMS_JSON: sends, prints the answer's .result (or .error), 1 on timeout
  id=$((id + 1))
  jq -cn --argjson id "$id" --arg m "$1" --argjson p "$2" --arg s "$sid" \
    '{id: $id, method: $m, params: $p} + (if $s != "" then {sessionId: $s} else {} end)' |
    tr -d '\n' >&5
  printf '\0' >&5
  local msg
  while IFS= read -r -d '' -t 30 msg <&6; do
    if [ "$(jq -r .id <<<"$msg")" = "$id" ]; then jq -c '.result // {error: .error}' <<<"$msg"; return 0; fi
  done
  echo "cdp: no answer to $1" >&2; return 1
}
js() {  # js EXPRESSION: its value (JSON-encoded string for strings); 1 if Chromium is silent
  local r
  r=$(cdp Runtime.evaluate "$(jq -cn --arg e "$1" '{expression: $e, returnByValue: true}')") || return 1
  jq -c .result.value <<<"$r"
}
wait_state() {  # polls #status[data-state] until done|error (60 s); prints it
  local s
  for _ in $(seq 300); do
    s=$(js 'document.getElementById("status").dataset.state') || { echo "no answer from Chromium"; return; }
    s=$(jq -r . <<<"$s")
    case $s in done|error) echo "$s"; return;; esac
    sleep 0.2
  done
  echo "$s"
}
# Picks FILE on the page's file input (a real upload), fills the fields, presses Ask.
ask_page() {
  local doc nid
  cdp Page.navigate "$(jq -cn --arg u "$url/" '{url: $u}')" >/dev/null
  for _ in $(seq 100); do
    [ "$(js 'document.readyState' | jq -r .)" = complete ] && break; sleep 0.1
  done
  doc=$(cdp DOM.getDocument '{}' | jq .root.nodeId)
  nid=$(cdp DOM.querySelector "{\"nodeId\":$doc,\"selector\":\"#file\"}" | jq .nodeId)
  cdp DOM.setFileInputFiles "$(jq -cn --arg f "$1" --argjson n "$nid" '{nodeId: $n, files: [$f]}')" >/dev/null
  for _ in $(seq 100); do   # the FileReader is asynchronous: Ask is enabled once the image is in
    [ "$(js '!document.getElementById("ask").disabled')" = true ] && break; sleep 0.1
  done
  # count the answer's updates: a streamed answer grows piece by piece, not in one go
  # The tiny model streams its whole answer in ~50 ms, so on a busy machine the browser may read
  # every SSE event in one network read. The test therefore wraps fetch so the page's reader gets
  # one event per read, 20 ms apart (a slow network, deterministic): a page that renders piece
  # by piece then shows one update per piece, one that waits for the end shows one.
  js "if (!window.tvSlowFetch) { window.tvSlowFetch = 1; const real = window.fetch;
        window.fetch = async (...args) => {
          const r = await real(...args);
          if (!r.body) return r;
          const rd = r.body.getReader(), enc = new TextEncoder(), dec = new TextDecoder();
          let buf = '';
          const body = new ReadableStream({ async pull(ctrl) {
            while (buf.indexOf('\\n\\n') < 0) {
              const x = await rd.read();
              if (x.done) { if (buf) ctrl.enqueue(enc.encode(buf)); buf = ''; ctrl.close(); return; }
              buf += dec.decode(x.value, {stream: true});
            }
            const i = buf.indexOf('\\n\\n') + 2, ev = buf.slice(0, i);
            buf = buf.slice(i);
            await new Promise(res => setTimeout(res, 20));
            ctrl.enqueue(enc.encode(ev));
          }});
          return new Response(body, {status: r.status, statusText: r.statusText, headers: r.headers});
        }; } 1" >/dev/null
  js "window.tvUpdates = 0; new MutationObserver(() => window.tvUpdates++).observe(
        document.getElementById('answer'), {childList: true, characterData: true, subtree: true});
      document.getElementById('question').value = $(jq -cn --arg q "$2" '$q');
      document.getElementById('max_tokens').value = '$3';
      document.getElementById('temperature').value = '0';
      document.getElementById('ask').click(); 1" >/dev/null
}

tid=$(cdp Target.createTarget '{"url":"about:blank"}' | jq -r .targetId)
sid=$(cdp Target.attachToTarget "{\"targetId\":\"$tid\",\"flatten\":true}" | jq -r .sessionId)
ok "DevTools session" "[ -n '$sid' ] && [ '$sid' != null ]"
cdp Emulation.setDeviceMetricsOverride '{"width":820,"height":600,"deviceScaleFactor":1,"mobile":false}' >/dev/null

ask_page "$img" "$q" "$ntok"
state=$(wait_state)
got=$(js 'document.getElementById("answer").textContent' | jq -r .)
ok "the page's answer finished" "[ '$state' = done ]"
ok "the page's streamed answer = tinyvlm ask --greedy" "[ -n \"\$want\" ] && [ \"\$got\" = \"\$want\" ]"
[ "$got" = "$want" ] || { echo "  want: $want"; echo "  got:  $got"; js 'document.getElementById("status").textContent'; }
ok "the answer was rendered as it streamed (updates: $(js 'window.tvUpdates'))" "[ \$(js 'window.tvUpdates') -gt 2 ]"
ok "the preview shows the image" "[ \"\$(js 'document.getElementById(\"preview\").naturalWidth > 0')\" = true ]"
ok "timing line shown" "js 'document.getElementById(\"meta\").textContent' | grep -q 'tokens'"
if [ -n "${TV_BROWSER_SCREENSHOT:-}" ]; then
  cdp Page.captureScreenshot '{"format":"png"}' | jq -r .data | base64 -d > "$TV_BROWSER_SCREENSHOT"
  echo "screenshot: $TV_BROWSER_SCREENSHOT"
fi

head -c 300 "$src/examples/sample.jpg" > "$work/corrupt.jpg"
ask_page "$work/corrupt.jpg" "What is this?" 4
state=$(wait_state)
msg=$(js 'document.getElementById("status").textContent' | jq -r .)
ok "a corrupt image shows the API's 4xx error on the page ($msg)" \
  "[ '$state' = error ] && grep -q 'HTTP 4[0-9][0-9]: .' <<<\"\$msg\""

# A gateway with API keys: without a key the page shows the 401; the key typed into the settings
# is kept in localStorage, comes back after a reload, and is sent.
kill "$spid"; wait "$spid" 2>/dev/null; spid=
printf 'sk-web tester\n' > "$work/keys"
start_serve "$B" --api-keys "$work/keys" || exit 1
ask_page "$img" "$q" "$ntok"
state=$(wait_state)
msg=$(js 'document.getElementById("status").textContent' | jq -r .)
ok "keyed gateway, no key: the page shows the 401 ($msg)" "[ '$state' = error ] && grep -q 'HTTP 401' <<<\"\$msg\""
js "const k = document.getElementById('key'); k.value = 'sk-web'; k.dispatchEvent(new Event('change')); 1" >/dev/null
ask_page "$img" "$q" "$ntok"   # navigates again: the key must come back from localStorage
state=$(wait_state)
got=$(js 'document.getElementById("answer").textContent' | jq -r .)
ok "the key survives a reload (localStorage)" "[ \"\$(js 'document.getElementById(\"key\").value' | jq -r .)\" = sk-web ]"
ok "keyed gateway, key given: the same answer" "[ '$state' = done ] && [ \"\$got\" = \"\$want\" ]"

cdp Browser.close '{}' >/dev/null
exec 5>&- 6<&-
wait "$cpid" 2>/dev/null; cpid=

echo "service browser: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# One question about one image to a running tinyvlm gateway, with curl: the image travels inside
# the JSON as a base64 data: URI (OpenAI's image_url content part).
#   usage: examples/curl.sh [IMAGE] [QUESTION]
#   start a gateway first, e.g.: tinyvlm serve --model models/demo
#   environment: TINYVLM_URL (default http://127.0.0.1:8080), TINYVLM_API_KEY (if it wants one)
set -eu
url=${TINYVLM_URL:-http://127.0.0.1:8080}
img=${1:-$(dirname "$0")/sample.png}
question=${2:-[vqa] What colour is the circle?}
case $img in *.png | *.PNG) mime=image/png ;; *) mime=image/jpeg ;; esac
auth=()
[ -n "${TINYVLM_API_KEY:-}" ] && auth=(-H "Authorization: Bearer $TINYVLM_API_KEY")
q=$(printf '%s' "$question" | sed 's/\\/\\\\/g; s/"/\\"/g')   # a JSON string

curl -sS "$url/v1/chat/completions" "${auth[@]}" -H 'Content-Type: application/json' -d @- <<JSON |
{"max_tokens": 64,
 "messages": [{"role": "user", "content": [
   {"type": "image_url", "image_url": {"url": "data:$mime;base64,$(base64 -w0 "$img")"}},
   {"type": "text", "text": "$q"}]}]}
JSON
if command -v jq >/dev/null; then jq -r '.choices[0].message.content // .'; else cat; echo; fi

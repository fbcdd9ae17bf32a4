# Shared by tests/service/gateway_*.sh (sourced; not a test itself): the tiny bundle, a real
# redis-server, `tinyvlm gateway` and its workers on free loopback ports, request builders and a
# pass/fail counter. The caller sets bin and src first.
set -u
M=$src/tests/data/tinygptv/model
work=$(mktemp -d)
pids=()
pass=0; fail=0
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; sleep 0.2; rm -rf "$work"' EXIT

ok() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
finish() { echo "$1: $pass passed, $fail failed"; [ "$fail" -eq 0 ]; }

free_port() { # a loopback port nobody listens on right now, below the kernel's ephemeral range
  local p      # (32768-60999 on Linux) so no outgoing connection of a parallel test can hold it
  for _ in $(seq 50); do
    p=$((10000 + RANDOM % 22000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  echo $((10000 + RANDOM % 22000))
}

make_bundle() { # $1 = output folder
  "$bin" convert --phi "$M/phi_fused" --eva "$M/eva_vit_g.pth" --blip2 "$M/blip2_pretrained_flant5xxl.pth" \
    --stage4 "$M/TinyGPT-V_for_Stage4.pth" --out "$1" --dtype f32 --vit-heads 2 --qformer-heads 2 \
    >"$work/convert.log" 2>&1 || { echo "FAIL convert"; cat "$work/convert.log"; exit 1; }
}

# start_redis [PORT]: on a fixed PORT (a restart) it retries for a few seconds while the port
# is still taken; on a free port it picks another after a clash. Sets rport, rpid.
start_redis() {
  for _ in $(seq 10); do
    rport=${1:-$(free_port)}
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
      >"$work/redis.$rport.log" 2>&1 &
    rpid=$!
    for _ in $(seq 100); do
      redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && { pids+=("$rpid"); disown "$rpid"; return 0; }
      kill -0 "$rpid" 2>/dev/null || break
      sleep 0.05
    done
    kill -9 "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null
    sleep 0.5
  done
  echo "FAIL redis-server did not start"; cat "$work/redis.$rport.log"; exit 1
}

# start_gateway [extra flags...]: sets url, zurl, gpid (retries on a port clash).
start_gateway() {
  local hp zp
  for _ in 1 2 3 4 5; do
    hp=$(free_port); zp=$(free_port)
    "$bin" gateway --host 127.0.0.1 --port "$hp" --listen "tcp://127.0.0.1:$zp" \
      --heartbeat-ms 250 --worker-timeout-ms 1500 "$@" >"$work/gateway.log" 2>&1 &
    gpid=$!
    for _ in $(seq 100); do
      curl -s -o /dev/null "http://127.0.0.1:$hp/healthz" 2>/dev/null && break
      kill -0 "$gpid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$gpid" 2>/dev/null; then
      pids+=("$gpid"); disown "$gpid"; url=http://127.0.0.1:$hp; zurl=tcp://127.0.0.1:$zp; return 0
    fi
    wait "$gpid" 2>/dev/null
  done
  echo "FAIL gateway did not start"; cat "$work/gateway.log"; exit 1
}

# start_worker vision|lm NAME [extra flags...]: sets wpid (the log is $work/NAME.log).
# WORKER_ENV="VAR=VALUE ..." adds to the worker's environment (e.g. fault injection).
start_worker() {
  local kind=$1 name=$2; shift 2
  # shellcheck disable=SC2086 # WORKER_ENV is a list of assignments
  env ${WORKER_ENV:-} "$bin" "$kind-worker" --model "$work/b" --gateway "$zurl" --worker-id "$name" --threads 1 \
    --heartbeat-ms 250 --gateway-timeout-ms 1500 "$@" >"$work/$name.log" 2>&1 &
  wpid=$!; pids+=("$wpid"); disown "$wpid"
}

# wait_workers NV NL: until /readyz counts NV vision and NL LM workers (10 s).
wait_workers() {
  for _ in $(seq 200); do
    local r; r=$(curl -s "$url/readyz")
    [ "$(echo "$r" | jq -r '"\(.vision_workers) \(.lm_workers)"' 2>/dev/null)" = "$1 $2" ] && return 0
    sleep 0.05
  done
  echo "FAIL workers did not register: $(curl -s "$url/readyz")"; tail -5 "$work"/*.log; return 1
}

data_uri() { # $1 = file, $2 = mime
  printf 'data:%s;base64,%s' "$2" "$(base64 -w0 "$1")"
}

# chat_body FILE QUESTION [extra JSON fields] -> a request file path
chat_body() {
  local f=$work/req.$RANDOM.$RANDOM.json mime=image/png
  case "$1" in *.jpg|*.jpeg) mime=image/jpeg ;; esac
  printf '{"messages":[{"role":"user","content":[{"type":"text","text":%s},{"type":"image_url","image_url":{"url":"%s"}}]}],"temperature":0,"max_tokens":%s%s}' \
    "$(jq -Rn --arg q "$2" '$q')" "$(data_uri "$1" "$mime")" "${MAXTOK:-16}" "${3:-}" >"$f"
  echo "$f"
}

post() { # $1 = path, $2 = body file, rest = curl options; prints the body, then the status on its own line
  local p=$1 b=$2; shift 2
  curl -s -w '\n%{http_code}' -H 'Content-Type: application/json' --data-binary "@$b" "$@" "$url$p"
}

metric() { # $1 = metric line prefix (name{labels}) -> value (0 if absent)
  curl -s "$url/metrics" | awk -v k="$1" 'index($0, k" ") == 1 { print $2; f=1 } END { if (!f) print 0 }'
}

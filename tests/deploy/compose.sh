#!/usr/bin/env bash
# deploy/docker-compose.yml offline: `docker-compose config` (Debian's docker-compose, or the
# `docker compose` plugin) accepts it, and the resolved file has what the deployment needs:
# Redis with maxmemory + allkeys-lru and no persistence, not published; the gateway published,
# health-checked on /readyz, given the API-key file as a secret; vision and LM worker replicas
# from environment variables; the `gpu` profile reserving NVIDIA devices with the CUDA image;
# the model volume read-only; stop grace above the workers' --grace-s; and the commands and
# TINYVLM_* variables are real subcommands and flags of the binary (`tinyvlm CMD --help`;
# skipped, with a note, for commands this build does not have yet).
# $1 = the tinyvlm binary, $2 = the source tree. Skips when no compose tool is installed.
set -u
bin=$1; src=$2
F=$src/deploy/docker-compose.yml
if command -v docker-compose >/dev/null 2>&1; then
  compose() { docker-compose -f "$F" "$@"; }
elif docker compose version >/dev/null 2>&1; then
  compose() { docker compose -f "$F" "$@"; }
else
  echo "SKIP: neither docker-compose nor the docker compose plugin is installed"
  exit 0
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pass=0; fail=0; notes=0
ok() { if [ "$2" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
yes_no() { if "$@"; then echo 0; else echo 1; fi; }
note() { notes=$((notes + 1)); echo "note: $*"; }

# flatten: the normalised YAML `config` prints -> one "a.b.c=value" line per scalar, "[]" for
# list items ("services.gateway.command[]=gateway"). Enough for compose's own output.
flatten() {
  awk '
    function path(   i, p) { p = ""; for (i = 1; i <= n; i++) p = p (key[i] == "[]" || p == "" ? "" : ".") key[i]; return p }
    function unq(v) { if (v ~ /^".*"$/ || v ~ /^'"'"'.*'"'"'$/) v = substr(v, 2, length(v) - 2); return v }
    /^[[:space:]]*(#|$)/ { next }
    {
      match($0, /^ */); ind = RLENGTH; body = substr($0, ind + 1)
      if (body ~ /^- /) {
        while (n > 0 && (ind_[n] > ind || (ind_[n] == ind && key[n] == "[]"))) n--
        n++; key[n] = "[]"; ind_[n] = ind
        body = substr(body, 3); ind += 2
        if (body !~ /^[A-Za-z0-9_.\/-]+:( |$)/) { print path() "=" unq(body); next }
      }
      while (n > 0 && ind_[n] >= ind) n--
      k = body; sub(/:.*/, "", k); v = body; sub(/^[^:]*:[ ]?/, "", v)
      n++; key[n] = k; ind_[n] = ind
      if (v != "") { print path() "=" unq(v); n-- }
    }'
}
# get KEY FILE: values at exactly that path.
get() { awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2) }' "$2"; }

# ---- compose accepts the file ----------------------------------------------------------------
(cd "$src/deploy" && compose config) >"$work/default.yaml" 2>"$work/err"
ok "compose config accepts deploy/docker-compose.yml" $?
[ -s "$work/err" ] && grep -iv "^$" "$work/err" | head -5
flatten <"$work/default.yaml" >"$work/d"
(cd "$src/deploy" && compose --profile gpu config) >"$work/gpu.yaml" 2>"$work/err"
ok "compose --profile gpu config accepts it" $?
flatten <"$work/gpu.yaml" >"$work/g"
(cd "$src/deploy" && TINYVLM_VISION_WORKERS=3 TINYVLM_LM_WORKERS=2 TINYVLM_REDIS_MAXMEMORY=300mb \
  TINYVLM_PORT=9999 compose config) >"$work/env.yaml" 2>/dev/null
flatten <"$work/env.yaml" >"$work/e"

svcs=$(cd "$src/deploy" && compose --profile gpu config --services 2>/dev/null | sort | tr '\n' ' ')
ok "services: gateway, CPU and GPU workers, redis ($svcs)" \
  "$([ "$svcs" = "gateway lm-worker lm-worker-gpu redis vision-worker vision-worker-gpu " ] && echo 0 || echo 1)"
# (Compose v1 lists profiled services in `config` too, so the profiles are checked as written.)
for s in $svcs; do
  prof=$(get "services.$s.profiles[]" "$work/g" | tr '\n' ' ')
  case "$s" in *-gpu) want="gpu ";; *) want="";; esac
  ok "$s: profiles '$prof' (want '$want')" "$([ "$prof" = "$want" ] && echo 0 || echo 1)"
done

# ---- Redis: a cache ---------------------------------------------------------------------------
rcmd=$(get services.redis.command[] "$work/d" | tr '\n' ' ')
ok "redis: maxmemory + allkeys-lru ($rcmd)" "$(echo "$rcmd" | grep -q -- '--maxmemory [0-9]' &&
  echo "$rcmd" | grep -q -- '--maxmemory-policy allkeys-lru' && echo 0 || echo 1)"
ok "redis: no snapshots, no AOF" "$(echo "$rcmd" | grep -q -- "--save  --appendonly no" && echo 0 || echo 1)"
ok "redis: maxmemory from TINYVLM_REDIS_MAXMEMORY" \
  "$(get services.redis.command[] "$work/e" | grep -qx 300mb && echo 0 || echo 1)"
ok "redis: not published" "$([ -z "$(grep '^services\.redis\.ports' "$work/d")" ] && echo 0 || echo 1)"

# ---- gateway ---------------------------------------------------------------------------------
ok "gateway: health check on /readyz" \
  "$(get services.gateway.healthcheck.test[] "$work/d" | grep -q '/readyz$' && echo 0 || echo 1)"
gw_port=$(get services.gateway.environment.TINYVLM_PORT "$work/d")
ok "gateway: health check hits its port ($gw_port)" \
  "$(get services.gateway.healthcheck.test[] "$work/d" | grep -q ":${gw_port:-x}/readyz$" && echo 0 || echo 1)"
pub=$(grep '^services\.gateway\.ports' "$work/d" | tr '\n' ' ')
ok "gateway: published, container port = its port ($pub)" \
  "$(get 'services.gateway.ports[]' "$work/d" | grep -q ":${gw_port:-x}\(/tcp\)\?$" && echo 0 || echo 1)"
ok "gateway: host port from TINYVLM_PORT" "$(get 'services.gateway.ports[]' "$work/e" | grep -q ':9999:' && echo 0 || echo 1)"
ok "gateway: published on loopback by default" "$(get 'services.gateway.ports[]' "$work/d" | grep -q '^127\.0\.0\.1:' && echo 0 || echo 1)"
sec=$(get 'services.gateway.secrets[].source' "$work/d"; get 'services.gateway.secrets[]' "$work/d")
keys=$(get services.gateway.environment.TINYVLM_API_KEYS "$work/d")
ok "gateway: API keys file is its secret ($keys, secret $sec)" \
  "$([ -n "$sec" ] && [ "$keys" = "/run/secrets/$sec" ] && grep -q "^secrets\.$sec\.file=" "$work/d" && echo 0 || echo 1)"

# ---- workers ---------------------------------------------------------------------------------
for w in vision-worker lm-worker; do
  ok "$w: replicas from env (default 1)" "$([ "$(get services.$w.scale "$work/d")" = 1 ] && echo 0 || echo 1)"
done
ok "vision workers = TINYVLM_VISION_WORKERS, LM workers = TINYVLM_LM_WORKERS" \
  "$([ "$(get services.vision-worker.scale "$work/e")" = 3 ] && [ "$(get services.lm-worker.scale "$work/e")" = 2 ] && echo 0 || echo 1)"
for w in vision-worker lm-worker vision-worker-gpu lm-worker-gpu; do
  cmd=$(get "services.$w.command[]" "$work/g" | head -1)
  ok "$w: runs tinyvlm $cmd" "$([ "$cmd" = "${w%-gpu}" ] && echo 0 || echo 1)"
  vol=$(get "services.$w.volumes[]" "$work/g" | grep ':/models:ro$')
  model=$(get "services.$w.environment.TINYVLM_MODEL" "$work/g")
  ok "$w: model volume read-only at /models, TINYVLM_MODEL inside ($model)" \
    "$([ -n "$vol" ] && case "$model" in /models/?*) true;; *) false;; esac && echo 0 || echo 1)"
  grace=$(get "services.$w.environment.TINYVLM_GRACE_S" "$work/g")
  stop=$(get "services.$w.stop_grace_period" "$work/g" | tr -dc '0-9')
  ok "$w: stop_grace_period ${stop}s > --grace-s $grace" \
    "$([ -n "$grace" ] && [ -n "$stop" ] && [ "$stop" -gt "$grace" ] && echo 0 || echo 1)"
  hport=$(get "services.$w.environment.TINYVLM_HEALTH_PORT" "$work/g")
  ok "$w: health check on its --health-port ($hport) /healthz" \
    "$(get "services.$w.healthcheck.test[]" "$work/g" | grep -q "^http://127.0.0.1:${hport:-x}/healthz$" && echo 0 || echo 1)"
  gwurl=$(get "services.$w.environment.TINYVLM_GATEWAY" "$work/g")
  ok "$w: connects to the gateway service ($gwurl)" \
    "$(echo "$gwurl" | grep -q '^tcp://gateway:5555$' && grep -q '^services.gateway.environment.TINYVLM_LISTEN=tcp://0.0.0.0:5555$' "$work/g" && echo 0 || echo 1)"
done
for w in vision-worker-gpu lm-worker-gpu; do
  ok "$w: reserves an NVIDIA GPU, CUDA image" \
    "$(grep -q "^services\.$w\.deploy\.resources\.reservations\.devices\[\]\.driver=nvidia$" "$work/g" &&
       [ "$(get services.$w.image "$work/g")" = tinyvlm:cuda ] && echo 0 || echo 1)"
done
for s in gateway vision-worker lm-worker; do
  ok "$s: CPU image built from deploy/docker/Dockerfile" \
    "$([ "$(get services.$s.image "$work/d")" = tinyvlm:cpu ] && [ "$(get services.$s.build.dockerfile "$work/d")" = deploy/docker/Dockerfile ] && echo 0 || echo 1)"
done
ok "Redis and workers only on an internal network" \
  "$(grep -q '^networks\.backend\.internal=true$' "$work/d" &&
     [ -z "$(grep -E '^services\.(redis|vision-worker|lm-worker)\.networks\.' "$work/d" | grep -v '\.backend=')" ] && echo 0 || echo 1)"

# ---- commands and TINYVLM_* against the binary ----------------------------------------------------
"$bin" --help >"$work/help" 2>&1
commands=$(awk '/^commands:/{on=1; next} /^$/{if (on) exit} on {print $1}' "$work/help")
built=$(awk '/^commands:/{on=1; next} /^$/{if (on) exit} on && !/not built yet/ {print $1}' "$work/help")
for s in gateway vision-worker lm-worker vision-worker-gpu lm-worker-gpu; do
  sub=$(get "services.$s.command[]" "$work/g" | head -1)
  ok "$s: '$sub' is a tinyvlm subcommand" "$(echo "$commands" | grep -qx "$sub" && echo 0 || echo 1)"
  if ! echo "$built" | grep -qx "$sub"; then note "$s: '$sub' not built yet in this binary: its flags are not checked"; continue; fi
  "$bin" "$sub" --help 2>&1 | grep -o -- '--[a-z0-9][a-z0-9-]*' | sort -u >"$work/flags"
  bad=""
  for f in $(get "services.$s.command[]" "$work/g" | grep -- '^--'); do grep -qx -- "$f" "$work/flags" || bad="$bad $f"; done
  for v in $(grep "^services\.$s\.environment\.TINYVLM_" "$work/g" | sed 's/^[^=]*\.\(TINYVLM_[A-Z0-9_]*\)=.*/\1/'); do
    if [ "$v" = TINYVLM_LOG ] && grep -q TINYVLM_LOG "$work/help"; then continue; fi
    f=--$(echo "${v#TINYVLM_}" | tr 'A-Z_' 'a-z-')
    grep -qx -- "$f" "$work/flags" || bad="$bad $v"
  done
  ok "$s: '$sub' knows every flag and TINYVLM_* it is given${bad:+ (unknown:$bad)}" "$([ -z "$bad" ] && echo 0 || echo 1)"
done

echo "deploy compose: $pass passed, $fail failed ($notes notes)"
[ "$fail" -eq 0 ]

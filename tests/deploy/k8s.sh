#!/usr/bin/env bash
# deploy/k8s offline: `kubectl kustomize` renders the cpu and gpu overlays (and the queue-depth
# autoscaler variant, and a user overlay that replaces the API keys); every manifest parses
# (kubectl turns it into JSON without a cluster); and the properties that matter hold:
# probes hit /healthz or /readyz on a declared port that the process really listens on (the
# gateway's --port, the workers' --health-port), workers list every gateway pod, every
# container has CPU and memory requests, HPAs and PDBs and Services point at existing
# Deployments, references to ConfigMaps and Secrets resolve, worker pods get more time to stop
# than the workers' --grace-s, the gpu overlay asks for nvidia.com/gpu, and the tinyvlm
# containers run real subcommands with real flags and TINYVLM_* variables (checked against
# `tinyvlm CMD --help`; skipped, with a note, for commands this build does not have yet).
# $1 = the tinyvlm binary, $2 = the source tree. Needs kubectl and jq; skips without them.
set -u
bin=$1; src=$2
for tool in kubectl jq; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIP: $tool not installed (kubectl: the Kubernetes client; jq: scripts/setup.sh)"
    exit 0
  fi
done
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pass=0; fail=0; notes=0
ok() { if [ "$2" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
# check NAME FILE: passes when FILE (the offending items a jq query printed) is empty.
check() {
  if [ -s "$2" ]; then fail=$((fail + 1)); echo "FAIL $1:"; sed 's/^/    /' "$2"; else pass=$((pass + 1)); fi
}
note() { notes=$((notes + 1)); echo "note: $*"; }
# Never let kubectl talk to a cluster (or to a gateway on localhost:8080).
export KUBECONFIG=/dev/null

# render DIR NAME: kustomize -> YAML -> JSON array in $work/NAME.json.
render() {
  kubectl kustomize "$1" >"$work/$2.yaml" 2>"$work/$2.err" || { cat "$work/$2.err"; return 1; }
  kubectl annotate --local --server=http://127.0.0.1:1 -f "$work/$2.yaml" tinyvlm.check=1 -o json \
    >"$work/$2.stream" 2>>"$work/$2.err" || { cat "$work/$2.err"; return 1; }
  jq -s '[.[] | if .kind == "List" then .items[] else . end]' "$work/$2.stream" >"$work/$2.json"
}

# ---- what the binary offers: subcommands and, per command, its flags -------------------------
"$bin" --help >"$work/help" 2>&1
commands=$(awk '/^commands:/{on=1; next} /^$/{if (on) exit} on {print $1}' "$work/help")
built_cmds=$(awk '/^commands:/{on=1; next} /^$/{if (on) exit} on && !/not built yet/ {print $1}' "$work/help")
ok "tinyvlm --help lists gateway, vision-worker, lm-worker" \
  "$(for c in gateway vision-worker lm-worker; do echo "$commands" | grep -qx "$c" || echo x; done | grep -c x)"
flags_of() { "$bin" "$1" --help 2>&1 | grep -o -- '--[a-z0-9][a-z0-9-]*' | sort -u; }
is_built() { echo "$built_cmds" | grep -qx "$1"; }

# ---- render ----------------------------------------------------------------------------------
K=$src/deploy/k8s
for o in cpu gpu; do
  render "$K/overlays/$o" "$o"; ok "overlay $o renders and parses" $?
done
# The overlay docs/deploy.md tells readers to write (its text, taken from the page), plus the
# documented sizing patch and queue-depth component: what a reader following it deploys.
mkdir -p "$work/mine/deploy/secrets/k8s"
cp -r "$K" "$work/mine/deploy/k8s"
awk '/^cat > deploy\/secrets\/k8s\/kustomization.yaml <<.EOF.$/ {on = 1; next} on && /^EOF$/ {exit} on' \
  "$src/docs/deploy.md" >"$work/mine/deploy/secrets/k8s/kustomization.yaml"
ok "docs/deploy.md has the own-overlay kustomization" "$([ -s "$work/mine/deploy/secrets/k8s/kustomization.yaml" ] && echo 0 || echo 1)"
# The sizing example: the yaml block after "Size the worker resources", de-indented.
awk '/Size the worker resources/ {f = 1} f && /```yaml/ {on = 1; next} on && /```/ {exit} on' "$src/docs/deploy.md" |
  sed 's/^   //' >>"$work/mine/deploy/secrets/k8s/kustomization.yaml"
printf 'components:\n  - ../../k8s/components/queue-depth-hpa\n' >>"$work/mine/deploy/secrets/k8s/kustomization.yaml"
printf 'sk-test-123 acme 4 60\n' >"$work/mine/deploy/secrets/k8s/api-keys"
render "$work/mine/deploy/secrets/k8s" mine; ok "docs/deploy.md own overlay + sizing patch + queue-depth HPA renders" $?

for o in cpu gpu mine; do
  J=$work/$o.json
  [ -s "$J" ] || continue
  kinds=$(jq -r '.[].kind' "$J" | sort -u | tr '\n' ' ')
  for k in Namespace ConfigMap Secret Deployment Service HorizontalPodAutoscaler PodDisruptionBudget; do
    ok "$o: has a $k ($kinds)" "$(echo " $kinds" | grep -q " $k " && echo 0 || echo 1)"
  done
  # Everything in one namespace, and it is the one the Namespace object creates.
  jq -r '(.[] | select(.kind=="Namespace") | .metadata.name) as $ns
         | .[] | select(.kind != "Namespace" and .metadata.namespace != $ns)
         | "\(.kind)/\(.metadata.name) in namespace \(.metadata.namespace)"' "$J" >"$work/x"
  check "$o: every object in the tinyvlm namespace" "$work/x"

  # Every container (init containers too) has CPU and memory requests.
  jq -r '.[] | select(.kind | IN("Deployment", "StatefulSet")) | .metadata.name as $d
         | (.spec.template.spec.containers + (.spec.template.spec.initContainers // []))[]
         | select((.resources.requests.cpu // "") == "" or (.resources.requests.memory // "") == "")
         | "\($d)/\(.name) has no cpu+memory requests"' "$J" >"$work/x"
  check "$o: every container has resource requests" "$work/x"

  # Every long-running container has liveness and readiness probes. HTTP probes ask /healthz or
  # /readyz on a port the container declares; exec probes run redis-cli or `sh FILE` where FILE
  # comes from a ConfigMap mounted in that container.
  jq -r '[.[] | select(.kind=="ConfigMap")] as $cms
         | .[] | select(.kind | IN("Deployment", "StatefulSet")) | .metadata.name as $d
         | .spec.template.spec as $p | $p.containers[] | . as $c
         | ([$c.volumeMounts[]? | . as $m | $p.volumes[] | select(.name == $m.name and .configMap != null)
             | .configMap.name as $n | $cms[] | select(.metadata.name == $n) | .data | keys[]
             | "\($m.mountPath)/\(.)"]) as $files
         | (if .livenessProbe == null or .readinessProbe == null
            then "\($d)/\(.name) lacks a liveness or readiness probe" else empty end),
           ([.livenessProbe, .readinessProbe, .startupProbe][] | select(. != null)
            | if .httpGet != null then
                .httpGet as $h
                | (if ($h.path | IN("/healthz", "/readyz")) then empty
                   else "\($d)/\($c.name) probes \($h.path)" end),
                  (if ([($c.ports // [])[] | select(.name == $h.port or .containerPort == $h.port)] | length) > 0
                   then empty else "\($d)/\($c.name) probes undeclared port \($h.port)" end)
              elif .exec != null then
                .exec.command as $x
                | if $x[0] == "redis-cli" then empty
                  elif $x[0] == "sh" and ($x[1] | IN($files[])) then empty
                  else "\($d)/\($c.name): exec probe \($x | join(" ")) runs no mounted script" end
              else "\($d)/\($c.name): probe neither httpGet nor exec" end)' \
    "$J" >"$work/x"
  check "$o: probes on /healthz|/readyz, declared ports, mounted scripts" "$work/x"
  # Liveness must not depend on other services: it asks /healthz, readiness asks /readyz.
  jq -r '.[] | select(.kind | IN("Deployment", "StatefulSet")) | .metadata.name as $d | .spec.template.spec.containers[]
         | select(.livenessProbe.httpGet != null)
         | select(.livenessProbe.httpGet.path != "/healthz" or .readinessProbe.httpGet.path != "/readyz")
         | "\($d)/\(.name): liveness \(.livenessProbe.httpGet.path), readiness \(.readinessProbe.httpGet.path)"' \
    "$J" >"$work/x"
  check "$o: liveness=/healthz, readiness=/readyz" "$work/x"

  # HPAs scale existing Deployments, and each worker pool has one.
  jq -r '[.[] | select(.kind=="Deployment") | .metadata.name] as $deps
         | .[] | select(.kind=="HorizontalPodAutoscaler") | .spec.scaleTargetRef
         | select(.kind != "Deployment" or (.name | IN($deps[]) | not))
         | "HPA targets \(.kind)/\(.name), not an existing Deployment"' "$J" >"$work/x"
  check "$o: HPAs target existing Deployments" "$work/x"
  jq -r '[.[] | select(.kind=="HorizontalPodAutoscaler") | .spec.scaleTargetRef.name] as $h
         | .[] | select(.kind | IN("Deployment", "StatefulSet")) | .metadata.name | select(test("worker"))
         | select(IN($h[]) | not) | "worker pool \(.) has no HPA"' "$J" >"$work/x"
  check "$o: an HPA per worker pool" "$work/x"
  jq -r '.[] | select(.kind=="HorizontalPodAutoscaler")
         | select((.spec.minReplicas // 1) < 1 or .spec.maxReplicas < (.spec.minReplicas // 1)
                  or (.spec.metrics | length) == 0)
         | "HPA \(.metadata.name): bad replica range or no metric"' "$J" >"$work/x"
  check "$o: HPA ranges and metrics" "$work/x"

  # PDB and Service selectors select some Deployment's pods; Service target ports exist there.
  jq -r '[.[] | select(.kind | IN("Deployment", "StatefulSet")) | .spec.template] as $T
         | .[] | select(.kind=="PodDisruptionBudget" or .kind=="Service")
         | (.spec.selector.matchLabels // .spec.selector // {}) as $s | . as $o
         | [$T[] | select(. as $t | $s | to_entries | all(.value == $t.metadata.labels[.key]))] as $m
         | if ($s | length) == 0 or ($m | length) == 0
           then "\($o.kind)/\($o.metadata.name) selects no pods"
           elif $o.kind == "Service" then
             ($o.spec.ports[] | .targetPort as $tp
              | if ([$m[].spec.containers[].ports[]? | select(.name == $tp or .containerPort == $tp)] | length) > 0
                then empty else "Service \($o.metadata.name): target port \($tp) not declared" end)
           else empty end' "$J" >"$work/x"
  check "$o: PDBs and Services select pods with those ports" "$work/x"
  jq -r '[.[] | select(.kind=="PodDisruptionBudget") | (.spec.selector.matchLabels // {})] as $P
         | .[] | select(.kind | IN("Deployment", "StatefulSet")) | . as $d
         | select([$P[] | to_entries | all(.value == $d.spec.template.metadata.labels[.key])] | any | not)
         | "Deployment \(.metadata.name) has no PodDisruptionBudget"' "$J" >"$work/x"
  check "$o: a PDB per Deployment" "$work/x"

  # ConfigMaps and Secrets referenced exist (after kustomize's name hashing).
  jq -r '[.[] | select(.kind=="ConfigMap") | .metadata.name] as $cm
         | [.[] | select(.kind=="Secret") | .metadata.name] as $sec
         | .[] | select(.kind | IN("Deployment", "StatefulSet")) | .metadata.name as $d | .spec.template.spec
         | ([.containers[].envFrom[]?.configMapRef.name // empty] | .[] | select(IN($cm[]) | not)
            | "\($d): ConfigMap \(.) missing"),
           ([.volumes[]?.secret.secretName // empty] | .[] | select(IN($sec[]) | not)
            | "\($d): Secret \(.) missing")' "$J" >"$work/x"
  check "$o: ConfigMap and Secret references resolve" "$work/x"

  # The gateway's --api-keys file is a key of the Secret mounted there.
  jq -r '(.[] | select(.kind=="Secret")) as $sec | .[] | select((.kind | IN("Deployment", "StatefulSet"))
         and .metadata.name=="tinyvlm-gateway") | .spec.template.spec as $p | $p.containers[0] as $c
         | ($c.args as $a | [range(0; $a | length) | select($a[.] == "--api-keys") | $a[. + 1]][0]
            // "") as $f
         | if $f == "" then "gateway has no --api-keys" else
             ([$c.volumeMounts[] | . as $m | $p.volumes[] | select(.name == $m.name and .secret != null)
               | select(.secret.secretName == $sec.metadata.name)
               | $sec.data | keys[] | "\($m.mountPath)/\(.)"] | index($f)) as $i
             | if $i == null then "gateway --api-keys \($f) is no key of a mounted Secret" else empty end
           end' "$J" >"$work/x"
  check "$o: gateway --api-keys names a file of the mounted Secret" "$work/x"

  # Workers: terminationGracePeriodSeconds leaves room after --grace-s (TINYVLM_GRACE_S).
  jq -r '([.[] | select(.kind=="ConfigMap") | .data] | add) as $cfg
         | .[] | select((.kind | IN("Deployment", "StatefulSet")) and (.metadata.name | test("worker")))
         | .metadata.name as $d | .spec.template.spec as $p
         | ([$p.containers[0].env[]? | select(.name=="TINYVLM_GRACE_S") | .value][0]
            // $cfg.TINYVLM_GRACE_S // "") as $g
         | if $g == "" then "\($d): no TINYVLM_GRACE_S"
           elif ($p.terminationGracePeriodSeconds // 30) <= ($g | tonumber)
           then "\($d): terminationGracePeriodSeconds \($p.terminationGracePeriodSeconds // 30) <= grace \($g)"
           else empty end' "$J" >"$work/x"
  check "$o: worker stop grace > --grace-s" "$work/x"

  # Pods run as non-root without privilege escalation.
  jq -r '.[] | select(.kind | IN("Deployment", "StatefulSet")) | .metadata.name as $d | .spec.template.spec
         | select(.securityContext.runAsNonRoot != true
                  or ([.containers[], (.initContainers // [])[]
                       | select(.securityContext.allowPrivilegeEscalation != false)] | length) > 0)
         | "\($d) may run as root or escalate"' "$J" >"$work/x"
  check "$o: non-root, no privilege escalation" "$work/x"

  # Images are the ones deploy/docker builds (or Redis).
  jq -r '.[] | select(.kind | IN("Deployment", "StatefulSet")) | .spec.template.spec
         | (.containers + (.initContainers // []))[] | .image
         | select(test("^(tinyvlm:(cpu|cuda)|tinyvlm-model:[a-z0-9._-]+|redis:[0-9a-z.-]+)$") | not)
         | "unknown image \(.)"' "$J" >"$work/x"
  check "$o: images are tinyvlm:cpu|cuda, tinyvlm-model:*, redis:*" "$work/x"
done

# ---- overlay-specific ------------------------------------------------------------------------
if [ -s "$work/gpu.json" ]; then
  jq -r '.[] | select((.kind | IN("Deployment", "StatefulSet")) and (.metadata.name | test("worker")))
         | .metadata.name as $d | .spec.template.spec.containers[0]
         | select(.resources.limits["nvidia.com/gpu"] == null or .image != "tinyvlm:cuda")
         | "\($d): no nvidia.com/gpu limit or not the CUDA image"' "$work/gpu.json" >"$work/x"
  check "gpu: workers take a GPU and run tinyvlm:cuda" "$work/x"
fi
if [ -s "$work/cpu.json" ]; then
  jq -r '.[] | select(.kind | IN("Deployment", "StatefulSet")) | .metadata.name as $d | .spec.template.spec.containers[]
         | select(.resources.limits["nvidia.com/gpu"] != null or .image == "tinyvlm:cuda")
         | "\($d): GPU in the cpu overlay"' "$work/cpu.json" >"$work/x"
  check "cpu: no GPU anywhere" "$work/x"
  # Worker thread count = the CPU it requests.
  jq -r '.[] | select((.kind | IN("Deployment", "StatefulSet")) and (.metadata.name | test("worker")))
         | .metadata.name as $d | .spec.template.spec.containers[0]
         | ([.env[]? | select(.name=="TINYVLM_THREADS") | .value][0] // "") as $t
         | select($t != (.resources.requests.cpu | tostring))
         | "\($d): TINYVLM_THREADS \($t) vs cpu request \(.resources.requests.cpu)"' \
    "$work/cpu.json" >"$work/x"
  check "cpu: threads = cpu request" "$work/x"
fi
if [ -s "$work/mine.json" ]; then
  jq -r '.[] | select(.kind=="HorizontalPodAutoscaler")
         | select([.spec.metrics[] | select(.type=="External" and .external.metric.name=="tinyvlm_queue_depth")] | length == 0)
         | "HPA \(.metadata.name) does not use tinyvlm_queue_depth"' "$work/mine.json" >"$work/x"
  check "queue-depth variant: both HPAs on tinyvlm_queue_depth" "$work/x"
  got=$(jq -r '.[] | select(.kind=="Deployment" and .metadata.name=="tinyvlm-lm-worker") | .spec.template.spec.containers[0]
        | "\(.resources.requests.cpu) \(.resources.limits.memory) \([.env[] | select(.name=="TINYVLM_THREADS") | .value][0])"' "$work/mine.json")
  ok "docs' sizing patch sets the LM worker to 8 cores, 12Gi, 8 threads ($got)" "$([ "$got" = "8 12Gi 8" ] && echo 0 || echo 1)"
  got=$(jq -r '.[] | select(.kind=="Secret") | .data["api-keys"]' "$work/mine.json" | base64 -d 2>/dev/null)
  ok "own overlay replaces the API keys" "$([ "$got" = "sk-test-123 acme 4 60" ] && echo 0 || echo 1)"
  jq -r '[.[] | select(.kind=="Secret") | .metadata.name] as $s | .[] | select(.kind | IN("Deployment", "StatefulSet"))
         | .spec.template.spec.volumes[]?.secret.secretName // empty | select(IN($s[]) | not)' \
    "$work/mine.json" >"$work/x"
  check "own overlay: the gateway mounts the replaced Secret" "$work/x"
fi

# ---- commands, flags and environment against the real binary --------------------------------
# The gateway's HTTP port (probe target) and the workers' health port are what the processes use.
J=$work/cpu.json
if [ -s "$J" ]; then
  jq -r '.[] | select(.kind | IN("Deployment", "StatefulSet")) | .metadata.name as $d | .spec.template.spec.containers[]
         | select(.image | startswith("tinyvlm:")) | "\($d)\t\((.command // []) + (.args // []) | @tsv)"' \
    "$J" | tr '\t' ' ' >"$work/cmds"
  ok "tinyvlm containers found" "$([ -s "$work/cmds" ] && echo 0 || echo 1)"
  while read -r dep sub rest; do
    if ! echo "$commands" | grep -qx "$sub"; then
      ok "$dep: '$sub' is a tinyvlm subcommand" 1; continue
    fi
    ok "$dep: '$sub' is a tinyvlm subcommand" 0
    if ! is_built "$sub"; then note "$dep: '$sub' is not built yet in this binary: its flags are not checked"; continue; fi
    flags_of "$sub" >"$work/flags.$sub"
    bad=""
    for f in $(echo "$rest" | grep -o -- '--[a-z0-9][a-z0-9-]*'); do
      grep -qx -- "$f" "$work/flags.$sub" || bad="$bad $f"
    done
    # TINYVLM_X_Y -> --x-y: every variable the container gets (its env, and every key of the
    # ConfigMaps it reads) must be a flag of its command; TINYVLM_LOG is global (tinyvlm --help).
    vars=$(jq -r --arg d "$dep" '[.[] | select(.kind=="ConfigMap")] as $cms | .[]
           | select((.kind | IN("Deployment", "StatefulSet")) and .metadata.name == $d) | .spec.template.spec.containers[0]
           | (.env[]?.name),
             (.envFrom[]?.configMapRef.name as $n | $cms[] | select(.metadata.name == $n) | .data | keys[])' \
           "$J" | grep '^TINYVLM_' | sort -u)
    for v in $vars; do
      if [ "$v" = TINYVLM_LOG ] && grep -q TINYVLM_LOG "$work/help"; then continue; fi
      f=--$(echo "${v#TINYVLM_}" | tr 'A-Z_' 'a-z-')
      grep -qx -- "$f" "$work/flags.$sub" || bad="$bad $v"
    done
    ok "$dep: '$sub' knows every flag and TINYVLM_* it is given${bad:+ (unknown:$bad)}" \
      "$([ -z "$bad" ] && echo 0 || echo 1)"
  done <"$work/cmds"

  # Probe ports are the ports the processes serve: the gateway's --port.
  gw_port=$(jq -r '.[] | select((.kind | IN("Deployment", "StatefulSet")) and .metadata.name=="tinyvlm-gateway")
            | .spec.template.spec.containers[0] | .args as $a
            | ([range(0; $a | length) | select($a[.] == "--port") | $a[. + 1]][0] // "8080")' "$J")
  probe_port=$(jq -r '.[] | select((.kind | IN("Deployment", "StatefulSet")) and .metadata.name=="tinyvlm-gateway")
            | .spec.template.spec.containers[0] | .readinessProbe.httpGet.port as $p
            | [.ports[] | select(.name == $p or .containerPort == $p) | .containerPort][0]' "$J")
  ok "gateway probes hit --port ($gw_port vs $probe_port)" "$([ "$gw_port" = "$probe_port" ] && echo 0 || echo 1)"

  # Workers reach EVERY gateway pod: TINYVLM_GATEWAY lists tcp://<sts>-<i>.<headless svc>:<msg
  # port> for i < replicas, the headless Service selects the gateway pods and publishes them
  # before they are ready; the gateway listens on that port.
  want=$(jq -r '(.[] | select(.kind=="StatefulSet" and .metadata.name=="tinyvlm-gateway")) as $s
         | ($s.spec.template.spec.containers[0].ports[] | select(.name=="msg") | .containerPort) as $mp
         | [range(0; $s.spec.replicas) | "tcp://\($s.metadata.name)-\(.).\($s.spec.serviceName):\($mp)"] | join(",")' "$J")
  got=$(jq -r '[.[] | select(.kind=="ConfigMap") | .data] | add | .TINYVLM_GATEWAY // empty' "$J")
  ok "workers' TINYVLM_GATEWAY lists every gateway pod ($got)" "$([ -n "$want" ] && [ "$got" = "$want" ] && echo 0 || echo 1)"
  jq -r '(.[] | select(.kind=="StatefulSet" and .metadata.name=="tinyvlm-gateway")) as $s
         | (.[] | select(.kind=="Service" and .metadata.name == $s.spec.serviceName)) as $h
         | if $h == null then "no headless Service \($s.spec.serviceName)"
           elif $h.spec.clusterIP != "None" or $h.spec.publishNotReadyAddresses != true
           then "Service \($h.metadata.name) must be headless and publish not-ready pods"
           elif ($h.spec.selector | to_entries | all(.value == $s.spec.template.metadata.labels[.key])) | not
           then "Service \($h.metadata.name) does not select the gateway pods" else empty end' "$J" >"$work/x"
  check "headless Service gives every gateway pod a name" "$work/x"
  listen=$(jq -r '.[] | select(.kind=="StatefulSet" and .metadata.name=="tinyvlm-gateway")
           | .spec.template.spec.containers[0].args as $a
           | [range(0; $a | length) | select($a[.] == "--listen") | $a[. + 1]][0] // ""' "$J")
  ok "gateway --listen ($listen) is on the port workers use" \
    "$(echo "$want" | grep -q ":${listen##*:}\(,\|$\)" && echo 0 || echo 1)"
  # Workers' probes hit the port their --health-port (TINYVLM_HEALTH_PORT) serves.
  hp=$(jq -r '[.[] | select(.kind=="ConfigMap") | .data] | add | .TINYVLM_HEALTH_PORT // empty' "$J")
  jq -r --arg hp "$hp" '.[] | select(.kind=="Deployment" and (.metadata.name | test("worker")))
         | .metadata.name as $d | .spec.template.spec.containers[0] as $c
         | [$c.livenessProbe, $c.readinessProbe, $c.startupProbe][] | select(. != null)
         | (.httpGet.port // "none") as $p
         | ([$c.ports[]? | select(.name == $p or .containerPort == $p) | .containerPort][0] // "none")
         | select((. | tostring) != $hp) | "\($d): probes port \(.) but TINYVLM_HEALTH_PORT is \($hp)"' \
    "$J" >"$work/x"
  check "workers' probes hit TINYVLM_HEALTH_PORT ($hp)" "$work/x"
  jq -r '.[] | select(.kind=="Deployment" and (.metadata.name | test("worker")))
         | .metadata.name as $d | .spec.template.spec.containers[0]
         | select([.env[]? | select(.name=="TINYVLM_WORKER_ID" and .valueFrom.fieldRef.fieldPath=="metadata.name")] | length == 0)
         | "\($d): TINYVLM_WORKER_ID is not the pod name"' "$J" >"$work/x"
  check "workers register under their pod name (per-worker series in /metrics)" "$work/x"
fi

echo "deploy k8s: $pass passed, $fail failed ($notes notes)"
[ "$fail" -eq 0 ]

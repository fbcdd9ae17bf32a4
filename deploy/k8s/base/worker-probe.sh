#!/bin/sh
# Worker probe (exec, from the kubelet): is this worker registered with a gateway?
# Workers serve no HTTP; every gateway lists the workers registered with it on GET /metrics
# (series labelled worker="ID"), and drops a worker whose heartbeats stop for 3 s. So:
#   probe.sh ready  -> 0 when at least one gateway lists TINYVLM_WORKER_ID
#   probe.sh live   -> 1 only when some gateway answered and none lists it (a worker that is
#                      hung or lost its link); when no gateway answers we cannot judge: 0
# Gateways are the hosts of TINYVLM_GATEWAY (tcp://HOST:5555,...), asked on HTTP port $2 (8080).
mode=${1:-ready}; port=${2:-8080}
id=${TINYVLM_WORKER_ID:?TINYVLM_WORKER_ID is not set}
reached=0
for gw in $(echo "${TINYVLM_GATEWAY:-}" | tr ',' ' '); do
  host=${gw#tcp://}; host=${host%:*}
  metrics=$(curl -fsS --max-time 2 "http://$host:$port/metrics" 2>/dev/null) || continue
  reached=1
  case "$metrics" in *"worker=\"$id\""*) exit 0 ;; esac
done
[ "$mode" = live ] && [ "$reached" = 0 ] && exit 0
exit 1

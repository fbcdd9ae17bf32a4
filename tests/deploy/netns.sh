#!/usr/bin/env bash
# The multi-host rehearsal (deploy/netns/rehearse.sh) on the tiny TinyGPT-V: Redis, the gateway,
# two vision workers, one LM worker and a client in separate network namespaces; requests
# across them, one vision worker's link cut under load and restored (see the script's header
# for what is asserted). Skips, with a message, where network namespaces are not permitted
# (not root, no veth/bridge), redis-server is missing, or the daemons are not built yet.
# TV_REHEARSE_MODEL=DIR uses that bundle (e.g. models/demo) instead of the converted tiny one.
# $1 = the tinyvlm binary, $2 = the source tree.
set -u
bin=$1; src=$2
M=$src/tests/data/tinygptv/model
skip() { echo "SKIP: $*"; exit 0; }
for c in gateway vision-worker lm-worker; do
  "$bin" "$c" --help 2>&1 | grep -q 'not built yet' && skip "tinyvlm $c is not built yet"
done
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null 2>&1 || skip "no ip (iproute2)"
command -v redis-server >/dev/null 2>&1 || skip "no redis-server (scripts/setup.sh installs it)"
command -v curl >/dev/null 2>&1 || skip "no curl (scripts/setup.sh installs it)"
probe=tvprobe$$
ip netns add "$probe" 2>/dev/null || skip "ip netns add is not permitted here"
ip netns del "$probe"

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
model=${TV_REHEARSE_MODEL:-}
if [ -z "$model" ]; then
  model=$work/b
  "$bin" convert --phi "$M/phi_fused" --eva "$M/eva_vit_g.pth" --blip2 "$M/blip2_pretrained_flant5xxl.pth" \
    --stage4 "$M/TinyGPT-V_for_Stage4.pth" --out "$model" --dtype f32 --vit-heads 2 --qformer-heads 2 \
    >"$work/conv.out" 2>&1 || { echo "FAIL convert"; cat "$work/conv.out"; exit 1; }
fi
bash "$src/deploy/netns/rehearse.sh" "$bin" "$model"
rc=$?
[ $rc -eq 3 ] && skip "the rehearsal cannot run here (see above)"
exit $rc

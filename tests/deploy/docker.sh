#!/usr/bin/env bash
# deploy/docker offline (no Docker engine needed): the images' build stage copies every source
# folder the build reads (checked by configuring the project from exactly those folders) and
# installs every library scripts/setup.sh installs; the CPU image's runtime stage installs the
# package of every shared library the real binary links (ldd -> dpkg -S, on Debian); both run
# as a non-root user with `tinyvlm` as entry point; no model is baked into them; the CUDA image
# builds with TV_CUDA=ON on an NVIDIA CUDA runtime base.
# $1 = the tinyvlm binary, $2 = the source tree.
set -u
bin=$1; src=$2
D=$src/deploy/docker
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pass=0; fail=0
ok() { if [ "$2" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
yes_no() { if "$@"; then echo 0; else echo 1; fi; }

# Dockerfile instructions with continuation lines joined, comments dropped.
joined() { sed -e 's/^[[:space:]]*#.*$//' "$1" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta'; }
# Packages named by the apt-get install of the stage that starts at FROM ... AS $2 (or the
# first/last stage for "first"/"last").
stage_pkgs() {
  joined "$1" | awk -v want="$2" '
    /^FROM / { n++; name = ($NF != $2 && $(NF-1) == "AS") ? $NF : ""; cur = (want == "first" && n == 1) || name == want }
    want == "last" && /^FROM / { buf = "" }
    /apt-get install/ { if (cur) print; if (want == "last") buf = buf "\n" $0 }
    END { if (want == "last") print buf }' |
    grep -o 'apt-get install[^&]*' | tr ' ' '\n' |
    grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install)$' | sort -u
}

for f in Dockerfile Dockerfile.cuda; do
  [ -f "$D/$f" ]; ok "$f exists" $?
done

# ---- the build stage copies what the build reads ---------------------------------------------
# Top-level paths CMakeLists.txt names; tests/, bench/ and tools/ are only globbed (absent = none).
need=$(grep -o '\${CMAKE_SOURCE_DIR}/[A-Za-z0-9_.-]*' "$src/CMakeLists.txt" | sed 's|.*}/||' |
       sort -u | grep -vxE 'tests|bench|tools')
for f in Dockerfile Dockerfile.cuda; do
  copied=$(joined "$D/$f" | awk '/^COPY / && !/--from=/ {for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i}' |
           sed 's|/$||; s|^\./||' | sort -u)
  missing=""
  for p in $need CMakeLists.txt; do echo "$copied" | grep -qx "$p" || missing="$missing $p"; done
  ok "$f copies every path CMakeLists.txt reads${missing:+ (missing:$missing)}" "$([ -z "$missing" ] && echo 0 || echo 1)"
  echo "$copied" | grep -q '^models' && ok "$f bakes no model in" 1 || ok "$f bakes no model in" 0
done
# Configure the project from exactly the CPU image's copied paths (what `docker build` sees).
if command -v cmake >/dev/null 2>&1; then
  mkdir -p "$work/ctx"
  for p in $(joined "$D/Dockerfile" | awk '/^COPY / && !/--from=/ {for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i}' | sed 's|/$||'); do
    cp -r "$src/$p" "$work/ctx/$p"
  done
  nice -n 10 cmake -S "$work/ctx" -B "$work/ctx-build" -DCMAKE_BUILD_TYPE=Release -DTV_CUDA=OFF \
    >"$work/cmake.log" 2>&1
  rc=$?; [ $rc -eq 0 ] || tail -20 "$work/cmake.log"
  ok "the project configures from the image's copied paths alone" $rc
else
  echo "note: cmake not installed, configure check skipped"
fi

# ---- packages --------------------------------------------------------------------------------
# (test-only tools — redis-server, curl, jq, docker-compose, chromium — are not build needs)
setup_libs=$(sed -n '/^PACKAGES=(/,/)/p' "$src/scripts/setup.sh" | tr ' ()' '\n\n\n' |
             grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vxE 'PACKAGES|redis-server|curl|jq|docker-compose|chromium' | sort -u)
ok "setup.sh package list found" "$([ -n "$setup_libs" ] && echo 0 || echo 1)"
for f in Dockerfile Dockerfile.cuda; do
  have=$(stage_pkgs "$D/$f" build)
  missing=$(comm -23 <(echo "$setup_libs") <(echo "$have") | tr '\n' ' ')
  ok "$f build stage installs setup.sh's packages${missing:+ (missing: $missing)}" "$([ -z "$missing" ] && echo 0 || echo 1)"
done
runtime=$(stage_pkgs "$D/Dockerfile" last)
if command -v dpkg >/dev/null 2>&1 && command -v ldd >/dev/null 2>&1 && command -v readelf >/dev/null 2>&1 \
   && [ -r /etc/debian_version ]; then
  # The libraries tinyvlm itself names (NEEDED); their own dependencies come with their packages.
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  missing=""
  # A binary built with CUDA (nvcc present, as on CI) also names the toolkit's libraries and
  # libstdc++ (its runtime is C++): the CPU image is built with TV_CUDA=OFF and has neither.
  cuda_build=0
  echo "$needed" | grep -q '^libcudart' && cuda_build=1
  for so in $needed; do
    case "$so" in libcudart*|libcublas*|libcublasLt*) continue;; esac
    [ $cuda_build = 1 ] && case "$so" in libstdc++*) continue;; esac
    l=$(ldd "$bin" | awk -v so="$so" '$1 == so && $3 ~ /^\// {print $3}')
    [ -n "$l" ] || { missing="$missing ?$so"; continue; }
    pkg=$(dpkg -S "$l" 2>/dev/null || dpkg -S "$(readlink -f "$l")" 2>/dev/null)
    pkg=${pkg%%:*}
    [ -n "$pkg" ] || { missing="$missing ?$l"; continue; }
    # In every Debian image already, or only in a sanitizer build.
    case "$pkg" in libc6|libgcc-s1|libasan*|libubsan*|liblsan*|libtsan*) continue;; esac
    echo "$runtime" | grep -qx "$pkg" || missing="$missing $pkg"
  done
  ok "CPU runtime stage installs the package of every library tinyvlm links${missing:+ (missing:$missing)}" \
    "$([ -z "$missing" ] && echo 0 || echo 1)"
else
  echo "note: not a Debian system with dpkg, ldd and readelf: runtime package check skipped"
fi
ok "CPU runtime has curl (health checks)" "$(echo "$runtime" | grep -qx curl && echo 0 || echo 1)"

# ---- user, entry point, bases, CUDA switch -------------------------------------------------------
for f in Dockerfile Dockerfile.cuda; do
  user=$(joined "$D/$f" | awk '/^USER /{u = $2} END {print u}')
  ok "$f runs as a non-root user ($user)" "$(case "$user" in ''|0|0:*|root|root:*) echo 1;; *) echo 0;; esac)"
  ok "$f entry point is tinyvlm" "$(yes_no grep -q '^ENTRYPOINT \[\"/usr/local/bin/tinyvlm\"\]' "$D/$f")"
done
ok "CPU image: Debian base, TV_CUDA=OFF" \
  "$(joined "$D/Dockerfile" | grep -q '^FROM debian:' && grep -q -- '-DTV_CUDA=OFF' "$D/Dockerfile" && echo 0 || echo 1)"
last_from=$(joined "$D/Dockerfile.cuda" | awk '/^FROM /{f = $2} END {print f}')
ok "CUDA image: runs on nvidia/cuda runtime ($last_from), builds TV_CUDA=ON" \
  "$(echo "$last_from" | grep -q '^nvidia/cuda:.*-runtime-' && grep -q -- '-DTV_CUDA=ON' "$D/Dockerfile.cuda" && echo 0 || echo 1)"
# The model image holds a bundle under /models/NAME, the path TINYVLM_MODEL names in k8s.
ok "model image copies a bundle to /models/\${MODEL_NAME}" \
  "$(yes_no grep -q 'COPY .*\${MODEL_DIR}/ /models/\${MODEL_NAME}/' "$D/Dockerfile.model")"

echo "deploy docker: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# Installs the Debian packages tinyvlm needs (only the missing ones, with sudo when not root),
# then configures and builds into build/. Safe to run again: it does only what is left to do.
#   scripts/setup.sh [extra cmake -D options...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Build tools, the libraries of DESIGN.md §6, and for the integration tests redis-server plus
# curl and jq (the tests talk to the gateway the way a user would), and docker-compose (only
# `docker-compose config` runs, offline: the deployment test checks the compose file), and
# chromium (headless: the web page's test uploads an image and reads the streamed answer).
PACKAGES=(build-essential cmake pkg-config
          libzmq3-dev libprotobuf-c-dev protobuf-c-compiler libhiredis-dev
          libturbojpeg0-dev libspng-dev libmicrohttpd-dev libcjson-dev libssl-dev libpcre2-dev
          libcurl4-openssl-dev redis-server curl jq docker-compose chromium)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} Debian packages already installed"
fi

BUILD_DIR=${TV_BUILD_DIR:-build}
echo "setup: building into $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@" > "$BUILD_DIR.cmake.log" 2>&1 \
  || { cat "$BUILD_DIR.cmake.log"; exit 1; }
grep -E "^-- (TV|CUDA)|Found CUDAToolkit" "$BUILD_DIR.cmake.log" || true
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "setup: done: $BUILD_DIR/tinyvlm"

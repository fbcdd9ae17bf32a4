#!/usr/bin/env bash
# Sets up, builds, and runs the main job on the embedded default.
# Today: the engine is not built yet (see README "Status"), so this shows what tinyvlm reads
# from the shipped sample image; later it becomes `tinyvlm serve` with the demo model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
./build/tinyvlm --version
./build/tinyvlm inspect examples/sample.png

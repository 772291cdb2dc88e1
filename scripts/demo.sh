#!/usr/bin/env bash
# The demo on a fresh machine: installs the build's system packages when missing, then
# runs `sluice demo` (normalization through the Kafka runtime on an in-process cluster).
# Arguments go to `sluice demo`, e.g. `bash scripts/demo.sh --orders 5000`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-build-deps.sh
exec cargo run --release -- demo "$@"

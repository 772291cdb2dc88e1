#!/usr/bin/env bash
# Runs Sluice's whole test suite on a fresh machine: installs what the tests need (each
# step skipped when already done), then runs unit, integration, doc and bench-smoke tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# C toolchain and libraries for the -sys crates; node and npm for the Mermaid check.
extra=()
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || extra=(nodejs npm)
# prometheus: the real Prometheus server (and promtool) of tests/observability.rs.
bash scripts/install-build-deps.sh "${extra[@]}" prometheus
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest

# The Kafka-protocol broker the integration tests start (one per test, on its own
# loopback address): built once from crates.io, skipped when installed.
bash scripts/install-broker.sh

# SecantusDB (a MongoDB-wire server, one per test) and fastavro, pinned, in the project's
# venv under the cache dir: skipped when installed.
bash scripts/install-test-servers.sh

# Mermaid's own parser, to check `sluice describe --mermaid` (tests/cli.rs).
mermaid_dir=scripts/mermaid-check
if ! cmp -s "$mermaid_dir/package-lock.json" "$mermaid_dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
  log "installing the Mermaid parser (npm ci)"
  (cd "$mermaid_dir" && npm ci --silent --no-audit --no-fund)
  cp "$mermaid_dir/package-lock.json" "$mermaid_dir/node_modules/.package-lock.json.installed"
fi

log "benchmarks, once each as tests"
cargo test --workspace --bench '*'
log "doc examples"
cargo test --workspace --doc
log "unit and integration tests"
cargo nextest run --workspace --no-fail-fast

#!/usr/bin/env bash
# Installs the system packages Sluice's build needs (C toolchain and the libraries of
# librdkafka's TLS and SASL support), skipping those already present.
set -euo pipefail
missing=()
for pkg in build-essential pkg-config libssl-dev libsasl2-dev zlib1g-dev libclang-dev "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

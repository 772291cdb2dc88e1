#!/usr/bin/env bash
# Installs the test broker, crabka-broker 0.3.0 (a single-node Kafka-protocol broker in
# Rust), into cargo's bin dir. Idempotent: exits at once when that version is installed.
#
# Why not `cargo install crabka-broker`: every crabka-* release is yanked on crates.io, and
# cargo only resolves a yanked version when a Cargo.lock pins it. scripts/broker/ holds a
# wrapper crate with such a lockfile; we `cargo fetch --locked` it to get the sources, then
# `cargo install --locked --path` crabka-broker's own source (it ships its own Cargo.lock).
# 0.3.1+ need rustc 1.96. The build takes ~30 CPU-minutes.
#
# Env: CARGO_HOME (default ~/.cargo), CARGO_INSTALL_ROOT (default $CARGO_HOME),
#      SLUICE_CACHE_DIR (build dir parent, default ${XDG_CACHE_HOME:-~/.cache}/sluice),
#      SLUICE_KEEP_BROKER_BUILD=1 to keep the build dir after a successful install.
set -euo pipefail

VERSION=0.3.0
here="$(cd "$(dirname "$0")" && pwd)"
pin_dir="$here/broker"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
install_root="${CARGO_INSTALL_ROOT:-$cargo_home}"
cache_dir="${SLUICE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}"
build_dir="$cache_dir/crabka-build"

die() { echo "install-broker: error: $*" >&2; exit 1; }

# Prints the path of an installed crabka-broker of the right version, or fails.
installed() {
  local bin
  for bin in "$(command -v crabka-broker 2>/dev/null || true)" "$install_root/bin/crabka-broker" \
             "$cargo_home/bin/crabka-broker"; do
    [ -n "$bin" ] && [ -x "$bin" ] || continue
    if [ "$(timeout 10 "$bin" --version 2>/dev/null)" = "crabka-broker $VERSION" ]; then
      echo "$bin"
      return 0
    fi
  done
  return 1
}

if bin="$(installed)"; then
  echo "install-broker: crabka-broker $VERSION already installed at $bin"
  exit 0
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH (install Rust >= 1.95 via rustup)"
command -v python3 >/dev/null 2>&1 || die "python3 not found (needed to read cargo metadata)"
[ -f "$pin_dir/Cargo.toml" ] && [ -f "$pin_dir/Cargo.lock" ] || die "missing $pin_dir/Cargo.{toml,lock}"

mkdir -p "$cache_dir"
# One install at a time (e.g. two test runs started together).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache_dir/install-broker.lock"
  flock 9
  if bin="$(installed)"; then
    echo "install-broker: crabka-broker $VERSION installed meanwhile at $bin"
    exit 0
  fi
fi

start=$(date +%s)
echo "install-broker: building crabka-broker $VERSION (about 30 CPU-minutes; build dir $build_dir)"

work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-broker-pin.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cp "$pin_dir/Cargo.toml" "$pin_dir/Cargo.lock" "$work/"
cp "$pin_dir/src/lib.rs" "$work/src/lib.rs"

echo "install-broker: fetching the pinned sources (cargo fetch --locked)"
cargo fetch --locked --manifest-path "$work/Cargo.toml" \
  || die "cargo fetch failed (is crates.io reachable? is $pin_dir/Cargo.lock intact?)"

# Where cargo unpacked crabka-broker's source (the registry dir name varies by index).
src="$(cargo metadata --locked --format-version 1 --manifest-path "$work/Cargo.toml" 2>/dev/null \
  | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "crabka-broker" and p["version"] == sys.argv[1]:
        print(os.path.dirname(p["manifest_path"]))
' "$VERSION" || true)"
if [ -z "$src" ]; then
  src="$(ls -d "$cargo_home"/registry/src/*/"crabka-broker-$VERSION" 2>/dev/null | head -n1 || true)"
fi
[ -n "$src" ] && [ -f "$src/Cargo.toml" ] || die "crabka-broker-$VERSION source not found under $cargo_home/registry/src"
[ -f "$src/Cargo.lock" ] || die "$src has no Cargo.lock; cannot install --locked"

echo "install-broker: cargo install --locked --path $src"
cargo install --locked --path "$src" --bin crabka-broker --target-dir "$build_dir" --root "$install_root" \
  || die "cargo install failed (build dir kept at $build_dir; rerun to resume)"

bin="$(installed)" || die "installed, but '$install_root/bin/crabka-broker --version' is not 'crabka-broker $VERSION'"
if [ "${SLUICE_KEEP_BROKER_BUILD:-0}" != 1 ]; then
  rm -rf "$build_dir"
fi
end=$(date +%s)
echo "install-broker: installed $bin in $(( (end - start) / 60 ))m$(( (end - start) % 60 ))s"
case ":$PATH:" in
  *":$install_root/bin:"*) ;;
  *) echo "install-broker: note: $install_root/bin is not on PATH; scripts/broker.sh looks there too" ;;
esac

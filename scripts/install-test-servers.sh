#!/usr/bin/env bash
# Installs the Python-based servers and tools the tests use into the project's own
# virtualenv, pinned. Idempotent: exits at once when the pinned versions are installed.
#
#   secantusdb  a MongoDB-wire server (secantusd-py); tests start one per test with
#               `--storage-path :memory:` (tests/support/mongo.rs finds it in this venv).
#               Only beta releases exist, so the version is pinned exactly (pip would
#               otherwise refuse a pre-release).
#   fastavro    decodes Avro in the Confluent wire format, to check with a second
#               implementation what the workers write.
#
# The venv: $SLUICE_CACHE_DIR/venv (default ${XDG_CACHE_HOME:-~/.cache}/sluice/venv), the
# same path the tests look in. A venv, not the system Python: nothing installed here
# changes the machine's Python, and removing the directory removes it all.
#
# Env: SLUICE_CACHE_DIR, SLUICE_PYTHON (an interpreter with a secantusdb wheel: CPython 3.11).
set -euo pipefail

SECANTUSDB_VERSION=0.7.0b3
FASTAVRO_VERSION=1.13.1

cache_dir="${SLUICE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}"
venv="$cache_dir/venv"
stamp="$venv/.sluice-installed"
want="secantusdb==$SECANTUSDB_VERSION fastavro==$FASTAVRO_VERSION"

die() { echo "install-test-servers: error: $*" >&2; exit 1; }

# The stamp records what was installed; a changed pin reinstalls.
if [ -x "$venv/bin/secantusd-py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "install-test-servers: $want already installed in $venv"
  exit 0
fi

python="${SLUICE_PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then
      python="$(command -v "$candidate")"
      break
    fi
  done
fi
[ -n "$python" ] || die "no python3 found (set SLUICE_PYTHON to a CPython 3.11 interpreter)"

mkdir -p "$cache_dir"
# One install at a time (two test runs started together).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache_dir/install-test-servers.lock"
  flock 9
  if [ -x "$venv/bin/secantusd-py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "install-test-servers: installed meanwhile in $venv"
    exit 0
  fi
fi

echo "install-test-servers: installing $want into $venv (with $python)"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || die "could not create the venv $venv (is the python venv module installed?)"
fi
# shellcheck disable=SC2086 # $want is two requirement words
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want \
  || die "pip install $want failed (is PyPI reachable? does $python have a secantusdb wheel?)"
[ -x "$venv/bin/secantusd-py" ] || die "secantusdb installed no secantusd-py in $venv/bin"
echo "$want" >"$stamp"
echo "install-test-servers: done"

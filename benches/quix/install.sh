#!/usr/bin/env bash
# Installs Quix Streams, the Python stream-processing library that the end-to-end bench
# (benches/e2e_throughput.rs, its quix-* variants) compares Sluice with, into a virtualenv
# of its own, pinned. Idempotent: exits at once when the pinned versions are installed.
#
#   quixstreams  the peer: benches/quix/normalize.py is Sluice's normalization topology
#                written as a Quix Streams Application. Pinned exactly, so that a figure
#                in BENCHMARKS.md names the release it was measured against; raise the pin
#                deliberately, and re-measure when you do.
#   fastavro     writes the canonical Avro in normalize.py (Quix Streams has no Confluent
#                wire-format serializer without a schema registry).
#
# The venv: $SLUICE_CACHE_DIR/quix-venv (default ${XDG_CACHE_HOME:-~/.cache}/sluice/quix-venv),
# apart from the tests' venv (scripts/install-test-servers.sh): Quix Streams brings many
# dependencies of its own, and neither venv should pin the other's.
#
# Prints on stdout the installed version and the venv's interpreter, as two lines:
#   quixstreams <version>
#   python <path of the venv's python>
# (progress and errors go to stderr).
#
# Env: SLUICE_CACHE_DIR, SLUICE_PYTHON (the interpreter to make the venv with; Quix Streams
#      3.x needs CPython >= 3.9).
set -euo pipefail

QUIXSTREAMS_VERSION=3.28.1
FASTAVRO_VERSION=1.13.1

cache_dir="${SLUICE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}"
venv="$cache_dir/quix-venv"
stamp="$venv/.sluice-installed"
want="quixstreams==$QUIXSTREAMS_VERSION fastavro==$FASTAVRO_VERSION"

say() { echo "install-quix: $*" >&2; }
die() { echo "install-quix: error: $*" >&2; exit 1; }

# The version the venv's Python imports, or nothing.
installed_version() {
  "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("quixstreams"))' 2>/dev/null || true
}

report() {
  echo "quixstreams $1"
  echo "python $venv/bin/python"
}

# The stamp records what was installed; a changed pin reinstalls.
installed() {
  [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
    && [ "$(installed_version)" = "$QUIXSTREAMS_VERSION" ]
}

if installed; then
  say "$want already installed in $venv"
  report "$QUIXSTREAMS_VERSION"
  exit 0
fi

python="${SLUICE_PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then
      python="$(command -v "$candidate")"
      break
    fi
  done
fi
[ -n "$python" ] || die "no python3 found (set SLUICE_PYTHON to a CPython >= 3.9 interpreter)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || die "$python is older than 3.9, which Quix Streams 3 needs (set SLUICE_PYTHON)"

mkdir -p "$cache_dir"
# One install at a time (two bench runs started together).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache_dir/install-quix.lock"
  flock 9
  if installed; then
    say "installed meanwhile in $venv"
    report "$QUIXSTREAMS_VERSION"
    exit 0
  fi
fi

say "installing $want into $venv (with $python)"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || die "could not create the venv $venv (is the python venv module installed?)"
fi
# shellcheck disable=SC2086 # $want is two requirement words
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want \
  || die "pip install $want failed (is PyPI reachable?)"
version="$(installed_version)"
[ "$version" = "$QUIXSTREAMS_VERSION" ] \
  || die "the venv imports quixstreams '${version:-nothing}', not $QUIXSTREAMS_VERSION"
"$venv/bin/python" -W ignore -c 'import quixstreams, fastavro' \
  || die "quixstreams or fastavro installed but does not import in $venv"
echo "$want" >"$stamp"
say "done"
report "$version"

#!/usr/bin/env bash
# Starts/stops the local test broker (crabka-broker 0.3.0, a single-node Kafka-protocol
# broker; install it with scripts/install-broker.sh).
#
#   scripts/broker.sh start    fresh log dir, start, set transaction.version=1, then print
#                              SLUICE_BROKERS=host:port on stdout (progress goes to stderr),
#                              so `eval "$(scripts/broker.sh start)"; export SLUICE_BROKERS`
#   scripts/broker.sh stop     stop it and wait (bounded)
#   scripts/broker.sh status   exit 0 if running (prints pid, address, run dir), 3 if not
#
# Env: SLUICE_BROKER_DIR   state dir (default /tmp/sluice-broker); each start uses a new
#                          $SLUICE_BROKER_DIR/run-<timestamp>/ (the broker cannot restart on a
#                          log dir that has seen transactional offset commits); the two
#                          newest older runs' logs are kept, not their data.
#      SLUICE_BROKER_HOST  listen IP (default 127.0.0.1). The broker's controller always
#                          listens on <host>:9093, so it is one broker per IP: use another
#                          loopback IP (127.0.0.2, ...) with another SLUICE_BROKER_DIR for a
#                          second broker.
#      SLUICE_BROKER_PORT  Kafka port (default 19092)
#      SLUICE_BROKER_START_TIMEOUT  seconds to wait for start-up (default 30)
#      SLUICE_BROKER_LOG   the broker's RUST_LOG filter (default: info, minus per-request lines)
#
# Why transaction.version=1: the broker finalizes transaction.version=2 (KIP-890) by default
# and librdkafka does not speak it: its transactional producer is fenced after the first
# commit. We downgrade it through the UpdateFeatures API right after start.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
VERSION=0.3.0
state_dir="${SLUICE_BROKER_DIR:-/tmp/sluice-broker}"
host="${SLUICE_BROKER_HOST:-127.0.0.1}"
port="${SLUICE_BROKER_PORT:-19092}"
start_timeout="${SLUICE_BROKER_START_TIMEOUT:-30}"
controller_port=9093
# The broker logs every request at info from crabka_broker::network::dispatch: too chatty.
broker_log_filter="${SLUICE_BROKER_LOG:-info,crabka_broker::network::dispatch=warn}"
pid_file="$state_dir/broker.pid"
current_file="$state_dir/current"   # path of the running broker's run dir
env_file="$state_dir/env"           # SLUICE_BROKERS=... of the running broker

say() { echo "broker: $*" >&2; }
die() { echo "broker: error: $*" >&2; exit 1; }

log_tail() {
  local log="$1"
  if [ -s "$log" ]; then
    echo "---- last 40 lines of $log ----" >&2
    tail -n 40 "$log" >&2
    echo "----" >&2
  fi
}

find_broker() {
  local bin
  for bin in "$(command -v crabka-broker 2>/dev/null || true)" \
             "${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin/crabka-broker" \
             "${CARGO_HOME:-$HOME/.cargo}/bin/crabka-broker"; do
    if [ -n "$bin" ] && [ -x "$bin" ] && [ "$(timeout 10 "$bin" --version 2>/dev/null)" = "crabka-broker $VERSION" ]; then
      echo "$bin"
      return 0
    fi
  done
  return 1
}

# True if something accepts TCP connections on $1:$2.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# Prints the pid of our running broker, or fails (and cleans a stale pid file).
running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
     && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q crabka-broker; then
    echo "$pid"
    return 0
  fi
  rm -f "$pid_file" "$env_file"
  return 1
}

new_uuid() {
  if [ -r /proc/sys/kernel/random/uuid ]; then
    cat /proc/sys/kernel/random/uuid
  else
    python3 -c 'import uuid; print(uuid.uuid4())'
  fi
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    say "not running"
    return 0
  fi
  say "stopping pid $pid"
  # The broker shuts down cleanly on SIGINT (ctrl-c); SIGTERM/SIGKILL are the fallbacks.
  kill -INT "$pid" 2>/dev/null || true
  local i sig
  for sig in INT TERM KILL; do
    [ "$sig" = INT ] || { say "still running, sending SIG$sig"; kill -"$sig" "$pid" 2>/dev/null || true; }
    for ((i = 0; i < 50; i++)); do   # 10 s per signal
      kill -0 "$pid" 2>/dev/null || break 2
      sleep 0.2
    done
  done
  if kill -0 "$pid" 2>/dev/null; then
    die "pid $pid did not exit even after SIGKILL"
  fi
  rm -f "$pid_file" "$env_file"
  say "stopped"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    local run
    run="$(cat "$current_file" 2>/dev/null || echo '?')"
    echo "running: pid $pid, SLUICE_BROKERS=$(sed -n 's/^SLUICE_BROKERS=//p' "$env_file" 2>/dev/null), run dir $run, log $run/broker.log"
    return 0
  fi
  echo "not running"
  return 3
}

cmd_start() {
  local bin
  bin="$(find_broker)" || die "crabka-broker $VERSION not found on PATH or in ~/.cargo/bin; run scripts/install-broker.sh"
  command -v python3 >/dev/null 2>&1 || die "python3 not found (needed by scripts/kafka_features.py)"

  mkdir -p "$state_dir"
  if running_pid >/dev/null; then
    say "a broker from a previous start is running; stopping it (a fresh log dir per run)"
    cmd_stop
  fi
  if port_open "$host" "$port"; then
    die "$host:$port is already in use by another process (set SLUICE_BROKER_PORT)"
  fi
  if port_open "$host" "$controller_port"; then
    die "$host:$controller_port is in use; crabka-broker's controller always binds <listen-ip>:$controller_port (another broker on this IP? try SLUICE_BROKER_HOST=127.0.0.2)"
  fi

  # Keep the two newest previous runs' logs, drop older runs. No start reuses a run's data,
  # and a bench leaves gigabytes of it: with a directory per loopback address, kept data
  # once filled this machine's disk. So the kept runs lose their data too.
  local old
  # shellcheck disable=SC2012
  for old in $(ls -1dt "$state_dir"/run-* 2>/dev/null | tail -n +3); do
    rm -rf "$old"
  done
  for old in "$state_dir"/run-*; do
    if [ -d "$old/data" ]; then rm -rf "$old/data"; fi
  done

  local run log data
  run="$state_dir/run-$(date +%Y%m%d-%H%M%S)-$$"
  data="$run/data"
  log="$run/broker.log"
  mkdir -p "$data"
  printf '{\n  "cluster_id": "%s",\n  "directory_id": "%s",\n  "version": 1\n}\n' \
    "$(new_uuid)" "$(new_uuid)" >"$data/meta.properties.json"

  say "starting $bin on $host:$port (log dir $data, log $log)"
  # setsid: the broker outlives this script and ignores the caller's ctrl-c; `stop` ends it.
  # The inner shell writes its own pid, then execs into the broker (same pid).
  # CRABKA_* env vars would override our flags or add config: clear them. No OTLP export.
  # The caller's RUST_LOG is for Sluice, not the broker: it gets SLUICE_BROKER_LOG.
  local v clean=()
  for v in $(compgen -e); do
    case "$v" in CRABKA_*) clean+=(-u "$v") ;; esac
  done
  env "${clean[@]}" OTEL_SDK_DISABLED=true NO_COLOR=1 RUST_LOG="$broker_log_filter" \
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pid_file.new" \
      "$bin" --listen-addr "$host:$port" --log-dir "$data" --metrics-listen-addr none \
      </dev/null >"$log" 2>&1 &

  local pid="" i=0
  while [ -z "$pid" ] && ((i++ < 50)); do   # 5 s
    if [ -s "$pid_file.new" ]; then pid="$(cat "$pid_file.new")"; else sleep 0.1; fi
  done
  rm -f "$pid_file.new"
  [ -n "$pid" ] || { log_tail "$log"; die "broker process did not start"; }
  echo "$pid" >"$pid_file"
  echo "$run" >"$current_file"

  local deadline=$((SECONDS + start_timeout))
  until port_open "$host" "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pid_file"
      log_tail "$log"
      die "broker exited during start-up (log: $log)"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$log"
      cmd_stop || true
      die "broker did not listen on $host:$port within ${start_timeout}s (log: $log)"
    fi
    sleep 0.2
  done
  say "listening on $host:$port (pid $pid)"

  local left=$((deadline - SECONDS))
  ((left >= 10)) || left=10
  if ! python3 "$here/kafka_features.py" --bootstrap "$host:$port" --set transaction.version=1 \
       --timeout "$left" >&2; then
    log_tail "$log"
    cmd_stop || true
    die "could not set transaction.version=1 (see above)"
  fi

  echo "SLUICE_BROKERS=$host:$port" >"$env_file"
  say "ready (run dir $run; stop with scripts/broker.sh stop)"
  echo "SLUICE_BROKERS=$host:$port"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

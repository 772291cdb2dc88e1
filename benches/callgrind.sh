#!/usr/bin/env bash
# Instructions per record of the operator chain, of the end-to-end harness's map (with
# and without lineage headers) and of normalization, counted by callgrind
# (benches/per_record.rs) inside Task::process only (--toggle-collect), so the generation
# of the inputs is not counted, as (Ir(2N) - Ir(N)) / N, so the first records' warm-up
# cancels out. Stable to within 1% between runs on a noisy machine.
#
#   bash benches/callgrind.sh [N]      (default N = 20000)
#
# Builds the bench in the release profile (the one `cargo bench` uses) first.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

binary=$(cargo bench --bench per_record --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "per_record" and m.get("executable"):
        print(m["executable"])')
[ -x "$binary" ] || { echo "callgrind.sh: the per_record bench did not build" >&2; exit 1; }

instructions() { # <path> <records>: the Ir callgrind collected
  valgrind --tool=callgrind --toggle-collect='*Task::process*' --callgrind-out-file=/dev/null \
    "$binary" "$1" "$2" 2>&1 >/dev/null \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

echo "instructions per record, (Ir(2N) - Ir(N)) / N with N = $n ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
for path in chain map map-no-lineage normalization; do
  one=$(instructions "$path" "$n")
  two=$(instructions "$path" $((2 * n)))
  echo "$path: $(( (two - one) / n )) instructions/record"
done

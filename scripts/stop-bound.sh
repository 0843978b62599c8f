#!/usr/bin/env bash
# How long a bot takes to stop after SIGTERM when the Bot API stops answering during the
# drain: the flood demo (polling, fixed:8, the default 30 s drain deadline) against the
# mock Bot API binary; once its handlers run, every getUpdates is made to hang (10 min),
# so the final confirmation cannot succeed, and the demo is sent SIGTERM. What is measured
# is the time from the signal to the exit, for handlers that end WORK_MS after they start.
#
#   scripts/stop-bound.sh                          # the binaries of this checkout
#   FLOODS="old=/tmp/old/target/release/examples/flood new=target/release/examples/flood" \
#     ROUNDS=2 WORKS="2000 25000" scripts/stop-bound.sh   # side by side, alternating
#
# Prints one line per run: `<name> work_ms=<T> stop_s=<S> exit=<code>`.
set -euo pipefail
cd "$(dirname "$0")/.."
floods=${FLOODS:-"this=target/release/examples/flood"}
mock=${MOCK:-target/release/mock-bot-api}
rounds=${ROUNDS:-1}
works=${WORKS:-"2000 25000"}
port=${PORT:-18181}
token=123456:TEST-token
url="http://127.0.0.1:$port"

if [ -z "${FLOODS:-}" ] || [ -z "${MOCK:-}" ]; then
  cargo build --release --example flood -p pollgate -q
  cargo build --release -p mock-bot-api -q
fi

stats() { curl -sf "$url/stats"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

for round in $(seq "$rounds"); do
  for work in $works; do
    for entry in $floods; do
      name=${entry%%=*}
      flood=${entry#*=}
      "$mock" --port "$port" --updates 1000 > /dev/null 2>&1 &
      mock_pid=$!
      until stats > /dev/null 2>&1; do sleep 0.05; done
      "$flood" --api-url "$url" --token "$token" --policy fixed:8 --updates 8 \
        --work-ms "$work" --json > /dev/null 2>&1 &
      flood_pid=$!
      # The first batch was served: the eight handlers run.
      until [ "$(stats | field updates_served)" -ge 8 ]; do sleep 0.05; done
      sleep 0.5
      curl -sf -X POST "$url/control/faults" -d '{"slow":1.0,"slow_ms":600000}' > /dev/null
      start=$(date +%s.%N)
      kill -TERM "$flood_pid"
      code=0
      wait "$flood_pid" || code=$?
      end=$(date +%s.%N)
      kill "$mock_pid" 2> /dev/null || true
      wait "$mock_pid" 2> /dev/null || true
      printf '%s work_ms=%s stop_s=%.2f exit=%s round=%s\n' "$name" "$work" \
        "$(python3 -c "print($end - $start)")" "$code" "$round"
    done
  done
done

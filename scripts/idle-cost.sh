#!/usr/bin/env bash
# What waiting costs: getUpdates calls and consumer CPU while handlers are slow and
# nothing new can be fetched, and getUpdates calls for an at-least-once drain with
# stragglers. Against the mock Bot API server as its own process; the consumer's CPU
# (flood's parent and child, not the server's) from /usr/bin/time. Prints markdown rows;
# docs/idle-cost.md holds a run.
#
#   scripts/idle-cost.sh                          # this checkout
#   FLOOD_OLD=/path/to/old/flood scripts/idle-cost.sh   # and an older build side by side
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example flood --bin mock-bot-api >&2
MOCK=target/release/mock-bot-api
TOKEN=123456:idle-cost-token
builds=("new=target/release/examples/flood")
[ -n "${FLOOD_OLD:-}" ] && builds+=("old=$FLOOD_OLD")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
calls() { curl -s "http://127.0.0.1:$1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["get_updates_calls"])'; }

# measure LABEL UPDATES FLOOD-ARGS...: one consumer run against a fresh server.
measure() {
  local label=$1 n=$2; shift 2
  for b in "${builds[@]}"; do
    local name=${b%%=*} bin=${b#*=} port
    port=$(free_port)
    "$MOCK" --port "$port" --token "$TOKEN" --updates "$n" --text-bytes 1024 --chats 100 >/dev/null 2>&1 &
    local mock=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
    local t times
    times=$(mktemp)
    /usr/bin/time -o "$times" -f "%e %U %S" env TELEGRAM_BOT_TOKEN=$TOKEN "$bin" \
      --api-url "http://127.0.0.1:$port" --updates "$n" --json "$@" >/dev/null 2>/dev/null
    t=$(tail -1 "$times"); rm -f "$times"
    local c
    c=$(calls "$port")
    kill "$mock"; wait "$mock" 2>/dev/null || true
    python3 - "$label" "$name" "$c" $t <<'EOF'
import sys
label, name, calls, wall, user, sys_ = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:7])
print(f"| {label} | {name} | {calls} | {calls / wall:.1f} | {wall:.2f} | {user + sys_:.2f} | {100 * (user + sys_) / wall:.1f}% |")
EOF
  done
}

echo "| scenario | build | getUpdates calls | per second | wall s | consumer CPU s | CPU share |"
echo "|---|---|---|---|---|---|---|"
measure "8 updates, all 5 s, fixed:100, at-least-once (room to admit, nothing new)" 8 \
  --policy fixed:100 --work-ms 5000 --delivery at-least-once
measure "8 updates, all 5 s, fixed:4, at-least-once (nothing can be admitted)" 8 \
  --policy fixed:4 --work-ms 5000 --delivery at-least-once
measure "8 updates, all 5 s, fixed:4, eager (nothing can be admitted)" 8 \
  --policy fixed:4 --work-ms 5000 --delivery eager
measure "2000 updates, 10% take 2 s, fixed:100, at-least-once" 2000 \
  --policy fixed:100 --work-ms 20 --slow-frac 0.1 --slow-x 100 --delivery at-least-once
measure "2000 updates, 10% take 2 s, bytes:128MiB, at-least-once" 2000 \
  --policy bytes:128MiB --work-ms 20 --slow-frac 0.1 --slow-x 100 --delivery at-least-once

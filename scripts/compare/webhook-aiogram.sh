#!/usr/bin/env bash
# The same webhook burst into aiogram 3 (webhook mode, its defaults: answer at once, handle
# in the background) and into pollgate (flood --transport webhook --webhook-listen, one
# policy), on this machine, one after the other. The mock Bot API server pushes the
# backlog like Telegram's server: max_connections 100, one update per chat at a time.
#
#   scripts/compare/webhook-aiogram.sh [POLICY]     # default bytes:128MiB
#   N=20000 scripts/compare/webhook-aiogram.sh
#
# Needs python3 with aiogram 3 (pip install aiogram).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-20000}
POLICY=${1:-bytes:128MiB}
SECRET=compare-secret-$$
export TELEGRAM_WEBHOOK_SECRET=$SECRET
cargo build --release --example flood --bin mock-bot-api >&2
MOCK=target/release/mock-bot-api
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

push_to() { # push_to PORT: a mock server pushing the backlog to 127.0.0.1:PORT; echoes its pid
  local api; api=$(free_port)
  "$MOCK" --port "$api" --updates "$N" --text-bytes 1024 --chats 100 \
    --webhook-url "http://127.0.0.1:$1/" --webhook-secret "$SECRET" --max-connections 100 \
    >/dev/null 2>&1 &
  echo "$! $api"
}

echo "== aiogram $(python3 -c 'import aiogram; print(aiogram.__version__)'), webhook mode, defaults"
port=$(free_port)
python3 scripts/compare/aiogram_webhook.py --listen "127.0.0.1:$port" --updates "$N" \
  --work-kib 256 --work-ms 200 > /tmp/aiogram-webhook.out &
bot=$!
wait_port "$port"
read -r mock api < <(push_to "$port")
wait "$bot" || true
grep -v listening /tmp/aiogram-webhook.out
curl -s "http://127.0.0.1:$api/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print({k: d[k] for k in d if k.startswith("webhook")})'
kill "$mock" 2>/dev/null; wait "$mock" 2>/dev/null || true

echo "== pollgate flood --transport webhook --policy $POLICY"
port=$(free_port)
target/release/examples/flood --transport webhook --webhook-listen "127.0.0.1:$port" \
  --policy "$POLICY" --updates "$N" --json > /tmp/pollgate-webhook.out &
bot=$!
wait_port "$port"
read -r mock api < <(push_to "$port")
wait "$bot" || true
cat /tmp/pollgate-webhook.out
curl -s "http://127.0.0.1:$api/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print({k: d[k] for k in d if k.startswith("webhook")})'
kill "$mock" 2>/dev/null; wait "$mock" 2>/dev/null || true

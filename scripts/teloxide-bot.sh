#!/usr/bin/env bash
# teloxide_bot against the mock with Telegram's send limits (docs/teloxide.md): one run; the
# arguments go to teloxide_bot (e.g. --policy fixed:64 --dispatcher --pacing throttle).
# MIX=varied|private-text|group-text (default private-text: every update answered once),
# N (1500) and CHATS (50) shape the backlog.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --example teloxide_bot -p pollgate
cargo build --release -q -p mock-bot-api
sent=$(mktemp)
port=$((20000 + RANDOM % 20000))
target/release/mock-bot-api --port $port --updates ${N:-1500} --chats ${CHATS:-50} --mix ${MIX:-private-text} --text-bytes 64 --send-limits > /dev/null 2>&1 &
mp=$!
for i in $(seq 50); do curl -s http://127.0.0.1:$port/stats >/dev/null && break; sleep 0.1; done
TELEGRAM_BOT_TOKEN=123456:TEST-token target/release/examples/teloxide_bot --api-url http://127.0.0.1:$port --exit-when-idle 3 --json "$@" 2>/dev/null | tail -1
curl -s http://127.0.0.1:$port/control/sent > "$sent"
curl -s http://127.0.0.1:$port/stats | python3 -c "
import json,sys,collections
d=json.load(sys.stdin); sent=json.load(open('$sent'))
sent = sent.get('sent', sent) if isinstance(sent, dict) else sent
per=collections.Counter(str(m.get('chat_id')) for m in sent)
# order check: replies in each chat in message order
last={}; bad=0
for m in sent:
    c=str(m.get('chat_id')); rp=m.get('reply_parameters'); mid=None
    if isinstance(rp,str): rp=json.loads(rp)
    if rp: mid=rp.get('message_id')
    if mid is not None:
        if c in last and mid < last[c]: bad+=1
        last[c]=mid
print({k:d[k] for k in ['sent_messages','send_429','pending']}, 'chats', len(per), 'max per chat', max(per.values()) if per else 0, 'ideal_s', round(max([len(sent)/30]+[(n-1) if int(c)>0 else 60*((n-1)//20) for c,n in per.items()]),1), 'groups', sum(1 for c in per if int(c)<0), 'out_of_order', bad)"
kill $mp

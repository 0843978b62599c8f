#!/usr/bin/env bash
# Sharded, ordered scale-out against unordered (docs/scale-out.md): the kill run of the
# issue, then throughput with 1, 2 and 3 workers, ordered and unordered interleaved, on a
# handler-bound workload (1000 chats, 16 MiB budget: 64 handlers of 256 KiB per worker);
# then Redis restarts (SIGKILL at 8 s, restart 3 s later with AOF) with everysec and always.
# ROUNDS=2 repeats the throughput rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --example scale_out
bin=target/release/examples/scale_out
pick() { python3 -c "
import json,sys
d=[json.loads(l) for l in sys.stdin if l.strip()][-1]
print(' '.join(f'{k}={d.get(k)}' for k in sys.argv[1:]))" "$@"; }
echo "== kill run: --ordered --shards 16 --workers 3 --updates 20000 --chats 100 --kill-one-after 3"
$bin --ordered --shards 16 --workers 3 --updates 20000 --chats 100 --kill-one-after 3 --json 2>/dev/null \
  | tee /tmp/scale-out-kill.jsonl | pick lost total_unique duplicates order_violations overlaps recovered takeover_median_s takeover_max_s drain_s
python3 -c "
import json
for l in open('/tmp/scale-out-kill.jsonl'):
    d=json.loads(l)
    if 'worker' in d and 'workers' not in d: print('  worker', d['worker'], 'handled', d['handled'], 'peak MiB', round(d['peak_rss_bytes']/2**20,1), 'within', d['within_budget'], 'killed', d['killed'])"
for round in $(seq ${ROUNDS:-1}); do
  for w in 1 2 3; do
    for mode in unordered ordered; do
      extra=""; [ $mode = ordered ] && extra="--ordered --shards 16"
      printf "round %s workers %s %-9s " $round $w $mode
      $bin $extra --workers $w --updates 20000 --chats 1000 --budget 16MiB --json 2>/dev/null | pick throughput_per_s drain_s lost order_violations overlaps
    done
  done
done
echo "== Redis SIGKILLed at 8 s, restarted 3 s later (AOF), lease TTL 10 s"
for mode in ordered unordered; do
  for fsync in everysec always; do
    extra=""; [ $mode = ordered ] && extra="--ordered --shards 16"
    printf "%-9s %-8s " $mode $fsync
    $bin $extra --workers 3 --updates 40000 --chats 100 --restart-redis-after 8 --appendfsync $fsync --lease-ms 10000 --json 2>/dev/null \
      | pick lost duplicates order_violations overlaps redis_pause_s drain_s
  done
done
echo "== the same, ordered, lease TTL 2 s (shorter than the outage)"
$bin --ordered --shards 16 --workers 3 --updates 40000 --chats 100 --restart-redis-after 8 --lease-ms 2000 --json 2>/dev/null \
  | pick lost duplicates order_violations overlaps redis_pause_s drain_s recovered

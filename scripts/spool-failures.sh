#!/usr/bin/env bash
# Failed handlers through the spool, on the standard workload (issue 13):
#   1. --fail-frac 0.05: every update handled, `retried` = the flaky ones, 0 dead letters;
#   2. --poison-frac 0.01 (every attempt fails): exactly those ids in the dead-letter
#      table, each with 3 attempts, checked with the `pollgate-spool` command.
#
#   scripts/spool-failures.sh [N]        # default 20000
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
cargo build --release --example flood -p pollgate
cargo build --release -p pollgate-spool --features cli --bin pollgate-spool
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
flood=target/release/examples/flood
std=(--updates "$n" --policy bytes:128MiB --delivery at-least-once --spool "$dir/spool" --json)

echo "== --fail-frac 0.05"
"$flood" "${std[@]}" --fail-frac 0.05 2>/dev/null > "$dir/flaky.json"
echo "== --poison-frac 0.01"
"$flood" "${std[@]}" --poison-frac 0.01 2>/dev/null > "$dir/poison.json"
target/release/pollgate-spool dead list "$dir/spool" --json > "$dir/dead.jsonl"

python3 - "$n" "$dir" <<'PY'
import json, sys
n, d = int(sys.argv[1]), sys.argv[2]
M = 2**64
def unit(i, salt):  # examples/shared/workload.rs: unit()
    return (((i ^ salt) * 0x9E3779B97F4A7C15) % M >> 11) / 2**53
FLAKY, POISON = 0x5851F42D4C957F2D, 0x14057B7EF767814F
ids = range(1, n + 1)  # the embedded server's ids
flaky = [i for i in ids if unit(i, FLAKY) < 0.05]
poison = [i for i in ids if unit(i, POISON) < 0.01]
f = json.load(open(f"{d}/flaky.json"))
p = json.load(open(f"{d}/poison.json"))
dead = [json.loads(l) for l in open(f"{d}/dead.jsonl")]
def row(name, r):
    return (f"| {name} | {r['handled']} | {r['retried']} | {r['dead_lettered']} | {r['duplicates']} "
            f"| {r['drain_s']:.2f} | {r['efficiency']:.3f} | {r['peak_rss_bytes'] / 2**20:.1f} |")
print("| run | handled | retried | dead_lettered | duplicates | drain s | efficiency | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
print(row("--fail-frac 0.05", f))
print(row("--poison-frac 0.01", p))
print()
print(f"flaky ids: {len(flaky)} ({len(flaky) / n:.2%}); poisoned ids: {len(poison)} ({len(poison) / n:.2%})")
dead_ids = sorted(x["update_id"] for x in dead)
checks = {
    "fail-frac: every update handled": f["handled"] == n,
    "fail-frac: retried == the flaky ids": f["retried"] == len(flaky),
    "fail-frac: 0 dead letters": f["dead_lettered"] == 0,
    "poison: the others handled": p["handled"] == n - len(poison),
    "poison: retried == 2 per poisoned id": p["retried"] == 2 * len(poison),
    "poison: dead-letter table == the poisoned ids": dead_ids == poison,
    "poison: each dead letter after 3 attempts": all(x["attempts"] == 3 for x in dead),
}
for name, ok in checks.items():
    print(f"{'ok  ' if ok else 'FAIL'} {name}")
sys.exit(0 if all(checks.values()) else 1)
PY

#!/usr/bin/env bash
# The spool's figures for docs/spool.md (issue 13), each section measured side by side in
# one run, rounds interleaved so the machine's noise hits every variant alike:
#   1. the standard workload (N=20000, 1 KiB, 256 KiB x 200 ms, bytes:128MiB): eager, and
#      at-least-once without and with the spool, glibc's default arenas and one arena;
#   2. a no-op handler (N=100000, 0 KiB x 0 ms, fixed:1000): updates/s through
#      fetch -> commit -> handle -> delete against the same run without a spool, and the
#      spool's cost per update in µs;
#   3. the stores' commit throughput (scripts/store-compare), redb against fjall and SQLite.
#
#   scripts/spool-bench.sh [ROUNDS]     # default 2; prints Markdown on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
cargo build --release --example flood -p pollgate >&2
flood=target/release/examples/flood
work=$(mktemp -d /var/tmp/spool-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The raw runs are kept: REPORT_ONLY=1 prints the report again from them.
mkdir -p target/spool-bench
out=target/spool-bench/runs.jsonl
[ -n "${REPORT_ONLY:-}" ] || : > "$out"

run() { # label env... -- flood args...
  local label=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  rm -rf "$work/spool"
  env "${envs[@]}" "$flood" "$@" --json 2>/dev/null | python3 -c "
import json, sys
for line in sys.stdin:
    d = json.loads(line); d['label'] = sys.argv[1]; print(json.dumps(d))" "$label" >> "$out"
}

std=(--updates 20000 --policy bytes:128MiB)
noop=(--updates 100000 --work-kib 0 --work-ms 0 --policy fixed:1000)
for r in $(seq "$rounds"); do
  [ -n "${REPORT_ONLY:-}" ] && break
  for alloc in default one; do
    envs=(POLLGATE_BENCH=1)
    [ "$alloc" = one ] && envs=(MALLOC_ARENA_MAX=1)
    run "std/$alloc/eager" "${envs[@]}" -- "${std[@]}"
    run "std/$alloc/alo" "${envs[@]}" -- "${std[@]}" --delivery at-least-once
    run "std/$alloc/alo+spool" "${envs[@]}" -- "${std[@]}" --delivery at-least-once --spool "$work/spool"
  done
  run "noop/eager" POLLGATE_BENCH=1 -- "${noop[@]}"
  run "noop/alo" POLLGATE_BENCH=1 -- "${noop[@]}" --delivery at-least-once
  run "noop/alo+spool" POLLGATE_BENCH=1 -- "${noop[@]}" --delivery at-least-once --spool "$work/spool"
done

python3 - "$out" "$rounds" <<'PY'
import json, sys, statistics, subprocess, datetime, platform, os
runs = [json.loads(l) for l in open(sys.argv[1])]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))
print("```text")
print(f"date: {datetime.datetime.utcnow().isoformat(timespec='seconds')}Z  commit: {commit}")
print(f"cpu: {cpu} x {os.cpu_count()}  memory: {int(mem) // 2**20} GiB  kernel: {platform.release()}")
print(f"rounds: {sys.argv[2]} (interleaved)")
print("```\n")
by = {}
for r in runs:
    by.setdefault(r["label"], []).append(r)
mib = lambda b: b / 2**20
print("### Standard workload (N = 20000, `bytes:128MiB`)\n")
print("| allocator | delivery | efficiency (each run) | peak RSS MiB (each run) | bound MiB | fetch calls | spool peak MB | lost | dup |")
print("|---|---|---|---|---|---|---|---|---|")
for alloc in ["default", "one"]:
    for v in ["eager", "alo", "alo+spool"]:
        rs = by.get(f"std/{alloc}/{v}", [])
        if not rs: continue
        bound = max(mib(r["baseline_rss_bytes"]) + 1.1 * 128 + 16 for r in rs)
        eff = ", ".join(f"{r['efficiency']:.3f}" for r in rs)
        peak = ", ".join(f"{mib(r['peak_rss_bytes']):.1f}" for r in rs)
        sp = ", ".join(f"{r['spool_peak_bytes'] / 1e6:.1f}" for r in rs if r.get("spool_peak_bytes"))
        lost = sum(r["updates"] - r["handled"] for r in rs)
        dup = sum(r["duplicates"] for r in rs)
        name = {"default": "glibc default arenas", "one": "`MALLOC_ARENA_MAX=1`"}[alloc]
        dv = {"eager": "eager", "alo": "at-least-once", "alo+spool": "at-least-once + spool"}[v]
        print(f"| {name} | {dv} | {eff} | {peak} | {bound:.1f} | {rs[0]['fetch_calls']} | {sp or '–'} | {lost} | {dup} |")
print()
print("### No-op handler (N = 100000, 0 KiB × 0 ms, `fixed:1000`)\n")
print("| delivery | drain s (each run) | updates/s (median) | µs per update (median) | lost | dup |")
print("|---|---|---|---|---|---|")
med = {}
for v in ["eager", "alo", "alo+spool"]:
    rs = by.get(f"noop/{v}", [])
    if not rs: continue
    d = statistics.median(r["drain_s"] for r in rs)
    med[v] = d
    n = rs[0]["updates"]
    lost = sum(r["updates"] - r["handled"] for r in rs)
    dup = sum(r["duplicates"] for r in rs)
    dv = {"eager": "eager", "alo": "at-least-once", "alo+spool": "at-least-once + spool"}[v]
    drains = ", ".join(f"{r['drain_s']:.2f}" for r in rs)
    print(f"| {dv} | {drains} | {n / d:,.0f} | {d / n * 1e6:.1f} | {lost} | {dup} |")
if "eager" in med and "alo+spool" in med:
    n = 100000
    print(f"\nThe spool's cost: {(med['alo+spool'] - med['eager']) / n * 1e6:.1f} µs per update over eager, "
          f"{(med['alo+spool'] - med['alo']) / n * 1e6:.1f} µs over at-least-once without it; "
          f"throughput ratio spool / eager = {med['eager'] / med['alo+spool']:.2f}.")
PY

echo
echo "### Stores: commit throughput (scripts/store-compare)"
echo
cargo run --release --quiet --manifest-path scripts/store-compare/Cargo.toml -- --dir /var/tmp 2>&1

#!/usr/bin/env bash
# Regenerates docs/benchmarks.md and its plots from measurements taken side by side in one
# run on this machine: the flood demo's policy comparison (macro bench), then the criterion
# micro benches (gate, decode, scheduling overhead), then the report generator.
#
#   scripts/benchmarks.sh            # everything (about 10 minutes on 2 cores)
#   QUICK=1 scripts/benchmarks.sh    # smaller backlogs, for a smoke test of the pipeline
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench
rm -rf "$out" && mkdir -p "$out"
cargo build --release --example flood --example bench_report
flood=./target/release/examples/flood
std="--text-bytes 1024 --chats 100 --work-kib 256 --work-ms 200 --json"
n_std=20000; n_big=100000; n_small=2000; n_mid=5000; n_sweep=10000; n_strag=5000
if [ -n "${QUICK:-}" ]; then n_std=2000; n_big=4000; n_small=500; n_mid=1000; n_sweep=1000; n_strag=1000; fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) × $(nproc)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "MALLOC_ARENA_MAX for flood children: ${MALLOC_ARENA_MAX:-unset (glibc default)}"
} > "$out/machine.txt"

run() { # run NAME ARGS...: one flood invocation, its JSON lines into $out/NAME.jsonl
  local name=$1; shift
  echo "== $name: flood $*" >&2
  echo "flood $*" >> "$out/commands.txt"
  "$flood" "$@" > "$out/$name.jsonl"
}

all="--policy unbounded --policy fixed:512 --policy barrier:512 --policy bytes:128MiB --policy rss:160MiB --policy custom"
budgeted="--policy fixed:512 --policy bytes:128MiB --policy rss:160MiB"
run standard $std --updates $n_std $all
run growth-small $std --updates $n_small --policy unbounded $budgeted
run growth-mid $std --updates $n_mid --policy unbounded $budgeted
run growth-big $std --updates $n_big $budgeted
run stragglers $std --updates $n_strag --slow-frac 0.01 --slow-x 20 --policy bytes:128MiB --policy barrier:512
run ordered $std --updates $n_std --ordered --policy bytes:128MiB --policy fixed:512
run at-least-once $std --updates $n_mid --delivery at-least-once --policy bytes:128MiB --policy barrier:100
run budget-sweep $std --updates $n_sweep --policy bytes:32MiB --policy bytes:64MiB --policy bytes:128MiB --policy bytes:256MiB \
  --policy rss:64MiB --policy rss:96MiB --policy rss:160MiB --policy rss:288MiB
MALLOC_ARENA_MAX=1 run glibc-one-arena $std --updates $n_std $budgeted

crit="--warm-up-time 1 --measurement-time 4"
[ -n "${QUICK:-}" ] && crit="--warm-up-time 1 --measurement-time 1"
cargo bench -p pollgate-admission --bench gate -- $crit 2>&1 | tail -n 3
cargo bench -p pollgate-core --bench decode -- $crit 2>&1 | tail -n 3
cargo bench --bench scheduling -- $crit 2>&1 | tail -n 3
cargo bench -p pollgate-admission --bench gate -- --list > /dev/null 2>&1 || true

./target/release/examples/bench_report "$out" target/criterion docs
echo "wrote docs/benchmarks.md and docs/img/*.svg" >&2

#!/usr/bin/env bash
# Longer crash-recovery runs: the mock Bot API server as its own process, the flood demo in
# at-least-once mode with a ledger, SIGKILLed at seeded random moments and restarted until
# the backlog is drained, for every built-in policy (tests/crash_recovery.rs).
#
#   scripts/crash-recovery.sh [N] [KILLS] [SEED]      # defaults: 20000 10 1
set -euo pipefail
cd "$(dirname "$0")/.."
export CRASH_N=${1:-20000} CRASH_KILLS=${2:-10} CRASH_SEED=${3:-1}
cargo build --release --examples --bins
cargo test --release --test crash_recovery -- --nocapture

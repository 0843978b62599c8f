#!/usr/bin/env bash
# The fault soak for minutes (examples/soak.rs): live traffic, faults on 10% of calls,
# handlers failing and panicking on 1% each. Prints the JSON report.
#
#   scripts/soak.sh [SECONDS] [RATE] [SEED]     # defaults: 300 300 1
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example soak
./target/release/examples/soak --seconds "${1:-300}" --rate "${2:-300}" --seed "${3:-1}" --json

#!/usr/bin/env bash
# The flood demo the way bots are deployed: inside a memory cgroup (256 MiB unless
# LIMIT_MIB says otherwise), with glibc's default arena count (MALLOC_ARENA_MAX=16
# emulates it on 2 cores unless MALLOC_ARENA_MAX is set), against the mock Bot API server
# running outside the cgroup. For each policy it prints flood's JSON line, then the
# cgroup's OOM kills and peak usage, and the ideal drain the limit allows:
#   N × T / ((limit − baseline) / W)
#
#   scripts/cgroup-oom.sh [POLICY ...]        # default: unbounded auto
#   N=20000 LIMIT_MIB=256 scripts/cgroup-oom.sh auto
#
# Needs root and a writable memory controller (cgroup v1 at /sys/fs/cgroup/memory, or a
# cgroup v2 hierarchy with the memory controller enabled).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
LIMIT_MIB=${LIMIT_MIB:-256}
TEXT=${TEXT:-1024}
WORK_KIB=${WORK_KIB:-256}
WORK_MS=${WORK_MS:-200}
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-16}
POLICIES=("$@")
[ ${#POLICIES[@]} -gt 0 ] || POLICIES=(unbounded auto)

cargo build --release --example flood --bin mock-bot-api >&2
FLOOD=target/release/examples/flood
MOCK=target/release/mock-bot-api

if [ -d /sys/fs/cgroup/memory ] && [ -w /sys/fs/cgroup/memory ]; then
  V=1; BASE=/sys/fs/cgroup/memory
elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
  V=2; BASE=/sys/fs/cgroup
else
  echo "cgroup-oom: no writable memory cgroup controller here" >&2; exit 1
fi

TOKEN=123456:cgroup-oom-demo-token
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

for policy in "${POLICIES[@]}"; do
  CG=$BASE/pollgate-oom-$$
  mkdir "$CG"
  if [ $V = 1 ]; then
    echo $((LIMIT_MIB << 20)) > "$CG/memory.limit_in_bytes"
  else
    echo $((LIMIT_MIB << 20)) > "$CG/memory.max"
    echo 0 > "$CG/memory.swap.max" 2>/dev/null || true
  fi
  # A fresh server (outside the cgroup) with the backlog for each run.
  "$MOCK" --port "$PORT" --token "$TOKEN" --updates "$N" --text-bytes "$TEXT" --chats 100 \
    >/dev/null 2>&1 &
  MOCK_PID=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
    sleep 0.05
  done
  start=$(date +%s.%N)
  set +e
  out=$(TELEGRAM_BOT_TOKEN=$TOKEN sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" \
    "$FLOOD" --api-url "http://127.0.0.1:$PORT" --policy "$policy" --updates "$N" \
    --work-kib "$WORK_KIB" --work-ms "$WORK_MS" --json 2>/tmp/pollgate-cgroup-oom.err)
  status=$?
  set -e
  end=$(date +%s.%N)
  kill "$MOCK_PID" 2>/dev/null; wait "$MOCK_PID" 2>/dev/null || true
  if [ $V = 1 ]; then
    oom=$(awk '/^oom_kill /{print $2}' "$CG/memory.oom_control")
    peak=$(cat "$CG/memory.max_usage_in_bytes")
  else
    oom=$(awk '/^oom_kill /{print $2}' "$CG/memory.events")
    peak=$(cat "$CG/memory.peak" 2>/dev/null || echo 0)
  fi
  rmdir "$CG"
  echo "== policy $policy: exit $status, wall $(python3 -c "print(round($end-$start,2))") s, cgroup v$V limit ${LIMIT_MIB} MiB, oom_kill ${oom:-?}, peak usage $((peak >> 20)) MiB, MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX"
  echo "${out:-(no JSON: killed)}"
  python3 - "$out" "$N" "$LIMIT_MIB" "$WORK_KIB" "$WORK_MS" <<'EOF'
import json, sys
out, n, limit, w, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lines = [l for l in out.splitlines() if l.startswith("{")]
if not lines:
    sys.exit(0)
r = json.loads(lines[-1])
base = r.get("baseline_rss_bytes", 0) / 2**20
slots = (limit - base) * 1024 / w
ideal = n * t / 1000 / slots
print(f"   handled {r['handled']}/{n}, drain {r['drain_s']:.2f} s, ideal at this limit {ideal:.2f} s "
      f"(baseline {base:.1f} MiB, {slots:.0f} slots): {ideal / r['drain_s']:.3f} of ideal")
EOF
done

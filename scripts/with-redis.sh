#!/usr/bin/env bash
# Runs a command with a private redis-server on a free loopback port, exported to it as
# POLLGATE_REDIS_URL, and stops the server afterwards (whatever the command's outcome).
# Installs redis-server from the distribution's packages first if it is missing.
#
#   scripts/with-redis.sh cargo test --workspace
set -euo pipefail

install_redis() {
  echo "redis-server not found; installing it from the distribution's packages" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "need root (or sudo) to install redis-server; install it yourself (apt-get install redis-server / brew install redis)" >&2
      exit 1
    fi
  fi
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q redis-server >/dev/null 2>&1 || {
      $sudo apt-get update -q >/dev/null
      $sudo apt-get install -y -q redis-server >/dev/null
    }
  elif command -v dnf >/dev/null 2>&1; then
    $sudo dnf install -y redis >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install redis >/dev/null
  else
    echo "no known package manager: install redis-server yourself" >&2
    exit 1
  fi
}

command -v redis-server >/dev/null 2>&1 || install_redis
redis-server --version >&2

ping() { # ping PORT: whether a server answers on it (redis-cli may be absent: use bash's /dev/tcp)
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  local reply
  read -r -t 1 reply <&3 || true
  exec 3>&-
  [[ "$reply" == +PONG* ]]
}

dir=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

for attempt in 1 2 3 4 5; do
  port=$(( 20000 + RANDOM % 40000 ))
  ping "$port" && continue # taken
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    if ping "$port"; then break 2; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
done
if [ -z "$pid" ]; then
  echo "could not start redis-server:" >&2
  cat "$dir/redis.log" >&2 || true
  exit 1
fi
export POLLGATE_REDIS_URL="redis://127.0.0.1:$port"
echo "redis-server (pid $pid) on $POLLGATE_REDIS_URL" >&2
"$@"

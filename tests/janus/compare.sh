#!/bin/sh
# Quad's SFU against Janus's VideoRoom with the same load, alternated in one session:
# 50 bots in one room, each publishing a microphone (50 packets a second) and receiving
# the 49 others (Quad's `audio_50_all`). Prints each run's summary line: packets received a
# second, loss, delay, the server's cores and memory, and packets per server CPU-second.
#
#   tests/janus/compare.sh [ROUNDS] [EVENT_LOOPS]
#
# Run from the repository after `cargo build --release -p quad-server -p quad-tests
# --bins`, as root or a user who may run Janus (Debian's `janus` package). EVENT_LOOPS
# (default 2) is Janus's `event_loops`; `default` leaves Janus's own default. The bots
# run on the same machine as the server, so a server that uses more CPU leaves the bots
# less: compare on an otherwise idle machine.
set -u
ROUNDS=${1:-2}
LOOPS=${2:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REL=$ROOT/target/release
# Waits (30 s at most) until URL answers.
wait_for() {
  n=0
  until curl -sf -o /dev/null "$1"; do
    n=$((n + 1)); [ "$n" -ge 300 ] && { echo "compare.sh: $1 never answered" >&2; return 1; }
    sleep 0.1
  done
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
quad() {
  dir=$(mktemp -d)
  printf 'room_max_speakers = 50\n' > "$dir/quad.toml"
  port=$(free_port)
  (cd "$ROOT" && exec "$REL/quad-server" --listen "127.0.0.1:$port" --dev \
    --data-dir "$dir/data" --config "$dir/quad.toml") > "$dir/server.log" 2>&1 &
  pid=$!
  wait_for "http://127.0.0.1:$port/healthz"
  (cd "$ROOT" && timeout 600 "$REL/quad-load" --server "127.0.0.1:$port" --bots 50 \
    --room-size 50 --seconds 15 --settle 40 --server-pid "$pid") 2>/dev/null | tail -1 | sed 's/^/quad:  /'
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
janus() {
  port=$(free_port)
  "$HERE/run-janus.sh" "$port" "$LOOPS" > /dev/null 2>&1 &
  pid=$!
  wait_for "http://127.0.0.1:$port/janus/info"
  media_ip=$(ip -4 -o addr show scope global | awk '{split($4, a, "/"); print a[1]; exit}')
  timeout 600 "$REL/janus-load" --janus "http://127.0.0.1:$port/janus" --janus-pid "$pid" \
    --bots 50 --settle 40 --seconds 15 --media-ip "$media_ip" 2>/dev/null | tail -1 | sed 's/^/janus: /'
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  rm -rf "/tmp/janus-run-$port"
}
i=0
while [ "$i" -lt "$ROUNDS" ]; do
  quad
  janus
  i=$((i + 1))
done

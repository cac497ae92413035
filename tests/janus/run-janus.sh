#!/bin/sh
# Runs Janus (Debian's janus 1.1.2) for janus-load (tests/src/bin/janus-load.rs): VideoRoom and the plain HTTP transport
# only, the HTTP API on 127.0.0.1:PORT, no event handlers, no admin API.
#
#   run-janus.sh PORT [EVENT_LOOPS] [MEDIA_IP]
#
# EVENT_LOOPS: a number sets `event_loops` (a static pool of loop threads); empty, 0 or
# "default" leaves Janus's default (a loop thread per handle).
# MEDIA_IP: the address ICE candidates are gathered on. Janus 1.1.2 skips loopback
# interfaces when gathering (src/ice.c), so this is the machine's first global IPv4
# address by default; packets between a machine's own addresses stay on its loopback
# device all the same.
# Only errors are logged (debug_level 2, as Quad runs with RUST_LOG=error; JANUS_DEBUG_LEVEL
# overrides it). Logs go to /tmp/janus-run-PORT/janus.log; the config lives beside it. Janus replaces
# this shell (exec), so the pid the caller sees is Janus's.
set -eu
PORT=${1:?usage: run-janus.sh PORT [EVENT_LOOPS] [MEDIA_IP]}
LOOPS=${2:-}
MEDIA_IP=${3:-$(ip -4 -o addr show scope global | awk '{split($4, a, "/"); print a[1]; exit}')}
[ -n "$MEDIA_IP" ] || { echo "run-janus.sh: no global IPv4 address for media; give MEDIA_IP" >&2; exit 1; }
LIB=/usr/lib/x86_64-linux-gnu/janus
DIR=/tmp/janus-run-$PORT
rm -rf "$DIR"
mkdir -p "$DIR/conf" "$DIR/plugins" "$DIR/transports" "$DIR/events" "$DIR/loggers"
# Only the VideoRoom plugin and the HTTP transport are there to load.
ln -s "$LIB/plugins/libjanus_videoroom.so" "$DIR/plugins/"
ln -s "$LIB/transports/libjanus_http.so" "$DIR/transports/"
case "$LOOPS" in
  ""|0|default) LOOPS_LINE="" ;;
  *) LOOPS_LINE="event_loops = $LOOPS" ;;
esac
cat > "$DIR/conf/janus.jcfg" <<JCFG
general: {
	configs_folder = "$DIR/conf"
	plugins_folder = "$DIR/plugins"
	transports_folder = "$DIR/transports"
	events_folder = "$DIR/events"
	loggers_folder = "$DIR/loggers"
	log_to_stdout = false
	log_to_file = "$DIR/janus.log"
	debug_level = ${JANUS_DEBUG_LEVEL:-2}
	debug_timestamps = true
	debug_colors = false
	session_timeout = 60
	$LOOPS_LINE
}
certificates: {
}
media: {
	rtp_port_range = "20000-40000"
}
nat: {
	nice_debug = false
	ice_enforce_list = "$MEDIA_IP"
}
plugins: {
}
transports: {
}
loggers: {
}
events: {
	broadcast = false
}
JCFG
cat > "$DIR/conf/janus.plugin.videoroom.jcfg" <<JCFG
general: {
}
JCFG
cat > "$DIR/conf/janus.transport.http.jcfg" <<JCFG
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = $PORT
	ip = "127.0.0.1"
	https = false
	events = false
}
admin: {
	admin_http = false
	admin_https = false
}
cors: {
}
JCFG
echo "run-janus.sh: Janus on http://127.0.0.1:$PORT/janus, media on $MEDIA_IP, event_loops ${LOOPS:-default}; log $DIR/janus.log" >&2
exec /usr/bin/janus -C "$DIR/conf/janus.jcfg" -F "$DIR/conf" -N

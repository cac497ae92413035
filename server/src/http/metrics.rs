//! `/metrics`: the server's counters in the Prometheus text format (version 0.0.4), read
//! from the atomics the space and the SFU keep; nothing here locks game state.

use crate::AppState;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// The metrics page.
pub fn render(state: &AppState) -> String {
    let sfu = state.sfu.metrics();
    let space = &state.space_stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 14] = [
        ("quad_spaces", "gauge", "Spaces (map instances) running.", 1),
        (
            "quad_avatars",
            "gauge",
            "Avatars in all spaces.",
            load(&space.avatars),
        ),
        (
            "quad_peer_edges",
            "gauge",
            "Proximity links (peer-to-peer media pairs).",
            load(&space.peer_edges),
        ),
        (
            "quad_rooms",
            "gauge",
            "Rooms with media through the SFU.",
            load(&sfu.rooms),
        ),
        (
            "quad_room_members",
            "gauge",
            "Members of SFU rooms.",
            load(&sfu.members),
        ),
        (
            "quad_sfu_forwarded_packets_total",
            "counter",
            "RTP packets the SFU forwarded (one per subscriber).",
            load(&sfu.forwarded_packets),
        ),
        (
            "quad_sfu_forwarded_bytes_total",
            "counter",
            "RTP bytes the SFU forwarded (header and payload, before SRTP).",
            load(&sfu.forwarded_bytes),
        ),
        (
            "quad_sfu_dropped_packets_total",
            "counter",
            "RTP packets the SFU could not hand to a subscriber's connection.",
            load(&sfu.dropped_packets),
        ),
        (
            "quad_sfu_suppressed_packets_total",
            "counter",
            "Microphone packets held back by the loudest-speakers rule.",
            load(&sfu.suppressed_packets),
        ),
        (
            "quad_sfu_blocked_packets_total",
            "counter",
            "Packets dropped because a teacher turned that device off.",
            load(&sfu.blocked_packets),
        ),
        (
            "quad_sfu_udp_datagrams_total",
            "counter",
            "UDP datagrams the SFU's connections sent.",
            load(&sfu.udp_datagrams),
        ),
        (
            "quad_sfu_udp_sends_total",
            "counter",
            "UDP sends (system calls) those datagrams took: same-size runs to one address go as one GSO send.",
            load(&sfu.udp_sends),
        ),
        (
            "quad_sfu_udp_dropped_datagrams_total",
            "counter",
            "UDP datagrams dropped because a connection's send queue was full.",
            load(&sfu.udp_dropped_datagrams),
        ),
        (
            "quad_sessions",
            "gauge",
            "Connected WebSocket sessions that said Hello.",
            state.sessions.len() as u64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
    out
}

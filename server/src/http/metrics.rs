//! `/metrics`: the server's counters in the Prometheus text format (version 0.0.4), read
//! from the atomics the space, the SFU and the store's writer keep; nothing here locks game state. Also who may
//! read them ([`answer`]): with `metrics_token`, whoever presents it; with
//! `metrics_listen`, only that listener serves them; with neither, the main listener
//! serves them to loopback clients that came through no proxy.

use crate::AppState;
use hyper::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, StatusCode};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// The metrics page.
pub fn render(state: &AppState) -> String {
    let sfu = state.sfu.metrics();
    let space = &state.space_stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 32] = [
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
            "quad_turn_relays",
            "gauge",
            "Relays allocated on the embedded TURN server.",
            state.ice.relays() as u64,
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
            "quad_sfu_direct_packets_total",
            "counter",
            "Forwarded packets the SFU encrypted and sent itself (microphones), not through webrtc-rs.",
            load(&sfu.direct_packets),
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
            "RTP packets the SFU could not hand to a subscriber's connection (closed, or not up yet).",
            load(&sfu.dropped_packets),
        ),
        (
            "quad_sfu_reader_dropped_packets_total",
            "counter",
            "Packets webrtc-rs dropped because a stream's reader was behind (logged once per 10 s).",
            crate::logging::READER_DROPPED_PACKETS.load(Ordering::Relaxed),
        ),
        (
            "quad_sfu_viewer_queue_full_total",
            "counter",
            "RTP packets dropped for one viewer whose connection's queue was full.",
            load(&sfu.viewer_queue_full),
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
            "quad_sfu_udp_unrouted_total",
            "counter",
            "UDP datagrams at the media port that belonged to no room member's connection (dropped).",
            load(&sfu.udp_unrouted),
        ),
        (
            "quad_sfu_udp_inbox_dropped_total",
            "counter",
            "UDP datagrams at the media port dropped because their connection's inbox was full.",
            load(&sfu.udp_inbox_dropped),
        ),
        (
            "quad_sfu_udp_ssrc_refused_total",
            "counter",
            "RTP and RTCP at the media port dropped because their connection's client had already sent from as many SSRCs as it may.",
            load(&sfu.udp_ssrc_refused),
        ),
        (
            "quad_sfu_queued_commands",
            "gauge",
            "Commands from room members' clients (signaling, tiles, devices) queued and not yet handled.",
            load(&sfu.queued_commands),
        ),
        (
            "quad_sfu_queued_commands_peak",
            "gauge",
            "The most commands one member's client has had queued at once since the server started.",
            load(&sfu.queued_commands_peak),
        ),
        (
            "quad_sfu_rate_limited_total",
            "counter",
            "Room signaling, tiles and device reports refused for coming too fast.",
            load(&sfu.rate_limited),
        ),
        (
            "quad_sfu_estimated_allocations_total",
            "counter",
            "Room members' video fitted into their bandwidth estimate (one member, one tick), from their clients' transport-wide feedback.",
            load(&sfu.estimated_allocations),
        ),
        (
            "quad_sfu_forward_slots",
            "gauge",
            "Send-only m-lines for forwarded streams on room members' connections, in use or idle (an idle one is reused for the next stream).",
            load(&sfu.forward_slots),
        ),
        (
            "quad_sfu_idle_slots",
            "gauge",
            "Of quad_sfu_forward_slots, those idle.",
            load(&sfu.idle_slots),
        ),
        (
            "quad_recordings",
            "gauge",
            "Class recordings in progress.",
            load(&sfu.recordings),
        ),
        (
            "quad_recording_dropped_packets_total",
            "counter",
            "Packets a recorder could not take because it was behind (lost to the recording only, not to the class).",
            load(&sfu.recording_dropped),
        ),
        (
            "quad_sessions",
            "gauge",
            "Sessions in the space: connected, or whose connection dropped and who may still resume (those are also in quad_sessions_parked).",
            state.sessions.len() as u64,
        ),
        (
            "quad_sfu_doors",
            "gauge",
            "Room members the SFU's front door knows (one entry each; equals quad_room_members unless one is stuck).",
            state.sfu.doors() as u64,
        ),
        (
            "quad_tokio_tasks",
            "gauge",
            "Tasks alive in the server's async runtime (a count that only grows is a leak).",
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
        ),
        (
            "quad_sessions_parked",
            "gauge",
            "Sessions whose connection dropped, kept for resume_grace_secs for their client to come back.",
            state.resumes.parked() as u64,
        ),
    ];
    let store = &state.store_health;
    let storage: [(&str, &str, &str, u64); 3] = [
        (
            "quad_store_healthy",
            "gauge",
            "1 while storage writes work, 0 after one failed (disk full, store_max_mb reached) until one works again.",
            u64::from(store.healthy.load(Ordering::Relaxed)),
        ),
        (
            "quad_store_write_failures_total",
            "counter",
            "Chat lines and audit records that could not be stored.",
            load(&store.write_failures),
        ),
        (
            "quad_store_outages_total",
            "counter",
            "Times storage writes started failing (each logged once).",
            load(&store.outages),
        ),
    ];
    let mut out = String::new();
    // Cluster mode only: this node's part in the cluster.
    let cluster: Vec<(&str, &str, &str, u64)> = match &state.cluster {
        Some(cluster) => vec![
            (
                "quad_cluster_nodes",
                "gauge",
                "Nodes of the cluster this node knows to be up (itself included).",
                cluster.view().nodes.len() as u64,
            ),
            (
                "quad_cluster_owns_space",
                "gauge",
                "1 while this node owns the campus's world, else 0 (it relays its clients).",
                u64::from(cluster.owns_space()),
            ),
            (
                "quad_cluster_relayed_sessions",
                "gauge",
                "Clients this node relays to the node that owns the campus.",
                crate::cluster::route::relayed(),
            ),
        ],
        None => Vec::new(),
    };
    for (name, kind, help, value) in rows.into_iter().chain(storage).chain(cluster) {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
    if let Some(heap) = crate::heap::heap_bytes() {
        for (name, help, value) in [
            (
                "quad_heap_live_bytes",
                "Bytes allocated and not yet freed.",
                heap.live,
            ),
            (
                "quad_heap_active_bytes",
                "Bytes in the allocator's pages that hold live objects (beyond the live heap: fragmentation).",
                heap.active,
            ),
            (
                "quad_heap_metadata_bytes",
                "Bytes of the allocator's own metadata.",
                heap.metadata,
            ),
            (
                "quad_heap_resident_bytes",
                "Bytes of the allocator's in RAM (beyond the active pages: freed pages not yet returned).",
                heap.resident,
            ),
        ] {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        }
    }
    out
}

/// The path.
pub const PATH: &str = "/metrics";

/// Which listener a `/metrics` request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The main one (`listen`).
    Main,
    /// The metrics listener (`metrics_listen`).
    Metrics,
}

/// Headers a reverse proxy adds: a request that has one did not start on this machine,
/// whatever its peer address says.
const FORWARDED: [&str; 4] = ["forwarded", "x-forwarded-for", "x-real-ip", "via"];

/// The answer to a `/metrics` request from `peer` on `listener`.
pub fn answer<B>(
    req: &Request<B>,
    peer: SocketAddr,
    listener: Listener,
    state: &AppState,
) -> warp::reply::Response {
    let config = &state.config;
    if listener == Listener::Main && config.metrics_listen.is_some() {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    if let Some(token) = &config.metrics_token {
        if !bearer_is(req.headers().get(AUTHORIZATION), token) {
            let mut res = plain(
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized: /metrics needs `Authorization: Bearer <metrics_token>`\n",
            );
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
    } else if listener == Listener::Main
        && !(peer.ip().to_canonical().is_loopback()
            && FORWARDED.iter().all(|h| !req.headers().contains_key(*h)))
    {
        return plain(
            StatusCode::FORBIDDEN,
            "403 Forbidden: /metrics is served only to this machine; set metrics_token or \
             metrics_listen to read it from elsewhere\n",
        );
    }
    let mut res = warp::reply::Response::new(render(state).into());
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

/// Whether an `Authorization` header is `Bearer <token>`, compared in constant time.
fn bearer_is(header: Option<&HeaderValue>, token: &str) -> bool {
    let Some(given) = header
        .map(|h| h.as_bytes())
        .and_then(|h| h.strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let want = token.as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn plain(status: StatusCode, body: &'static str) -> warp::reply::Response {
    let mut res = warp::reply::Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = "0123456789abcdef";
        let h = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(bearer_is(Some(&h("Bearer 0123456789abcdef")), token));
        assert!(!bearer_is(Some(&h("Bearer 0123456789abcdeF")), token));
        assert!(!bearer_is(Some(&h("Bearer 0123456789abcde")), token));
        assert!(!bearer_is(Some(&h("Basic 0123456789abcdef")), token));
        assert!(!bearer_is(Some(&h("0123456789abcdef")), token));
        assert!(!bearer_is(None, token));
    }
}

//! The WebSocket upgrade for `/ws`, done here rather than by warp so that the connection's
//! buffers can be sized: tungstenite's default 128 KiB read buffer is zero-filled per
//! connection, which alone would cost more than the whole 100 kB memory budget of an avatar.
//! It refuses pages of other sites ([`super::origin`]) and upgrades only while the session
//! pool has room; the session task then holds its places ([`Hold`]) until the session ends.

use super::limits::IpSlot;
use crate::AppState;
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Reply;

/// The session path.
pub const PATH: &str = "/ws";

/// A session's WebSocket.
pub type SessionSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Larger than the protocol's frame limit, so an oversized frame reaches the session and
/// gets a proper `Error` instead of a dropped connection.
const MAX_MESSAGE: usize = quad_shared::codec::MAX_FRAME_BYTES + 1024;
/// Enough for any legal frame in one read; the buffer grows for the rare larger one.
const READ_BUFFER: usize = 4 * 1024;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * MAX_MESSAGE)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

fn header_has(req: &Request<Incoming>, name: hyper::header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether this request is a WebSocket upgrade to the session path.
pub fn is_session_request(req: &Request<Incoming>) -> bool {
    (req.uri().path() == PATH || req.uri().path() == crate::cluster::media::LINK_PATH)
        && req.method() == hyper::Method::GET
        && header_has(req, CONNECTION, "upgrade")
        && header_has(req, UPGRADE, "websocket")
}

fn refuse(status: StatusCode, why: &'static str) -> warp::reply::Response {
    warp::reply::with_status(why, status).into_response()
}

/// What an upgraded session holds for its whole life: its place in its client IP's count,
/// and (taken at the upgrade) a place in the pool of sessions the server has room for.
pub struct Hold {
    pub ip: Arc<IpSlot>,
    pub sessions: Arc<Semaphore>,
}

/// Logs that the session pool is full, at most once every 10 s (a flood of upgrades must
/// not become a flood of log lines).
fn warn_pool_full() {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let last = LAST.load(std::sync::atomic::Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!("WebSocket upgrades refused: the session pool is full");
    }
}

/// What an upgraded connection becomes.
enum Upgrade {
    /// A session on this node.
    Session,
    /// A client this node relays to the space's node (`cluster::route`).
    Relay { owner: String, secret: String },
    /// A media link from the space's node (`cluster::media`).
    MediaLink,
}

/// What `req` is to become, with the client's address when another cluster node relays it;
/// or the refusal.
fn route(
    req: &Request<Incoming>,
    state: &AppState,
    peer: SocketAddr,
) -> Result<(Upgrade, Option<SocketAddr>), Box<warp::reply::Response>> {
    let cluster = state.cluster.as_deref();
    if req.uri().path() == crate::cluster::media::LINK_PATH {
        let trusted = cluster.is_some_and(|c| {
            req.headers()
                .get(crate::cluster::route::NODE_HEADER)
                .is_some_and(|v| c.is_secret(v.as_bytes()))
        });
        if !trusted {
            tracing::warn!(%peer, "a media link without the cluster secret refused");
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                "a media link needs the cluster secret",
            )));
        }
        return Ok((Upgrade::MediaLink, None));
    }
    // A session another cluster node relays (its client's origin was checked there).
    let relayed = crate::cluster::route::relayed_client(req.headers(), cluster).map_err(|why| {
        tracing::warn!(%peer, "WebSocket upgrade refused: {why}");
        Box::new(refuse(StatusCode::FORBIDDEN, why))
    })?;
    // In a cluster, a node that does not own the space relays its clients to the one that
    // does; a relayed session that reaches a node no longer owning it is sent back to try
    // again.
    match cluster {
        Some(cluster) if !cluster.owns_space() => match cluster.owner_url() {
            Some(owner) if relayed.is_none() => Ok((
                Upgrade::Relay {
                    owner,
                    secret: cluster.secret().to_owned(),
                },
                None,
            )),
            _ => Err(Box::new(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: the campus is moving to another server; try again \
                 in a few seconds\n",
            ))),
        },
        _ => Ok((Upgrade::Session, relayed)),
    }
}

/// Answers the handshake and starts the session once the connection is upgraded.
/// `peer` is the client's address (for the per-address session quotas).
pub fn accept(
    mut req: Request<Incoming>,
    state: Arc<AppState>,
    hold: Hold,
    peer: SocketAddr,
) -> warp::reply::Response {
    let (upgrade, relayed) = match route(&req, &state, peer) {
        Ok(routed) => routed,
        Err(refusal) => return *refusal,
    };
    let peer = relayed.unwrap_or(peer);
    let headers = req.headers();
    // A relayed session's origin was checked by its entry node; a media link has none.
    if relayed.is_none()
        && !matches!(upgrade, Upgrade::MediaLink)
        && !super::origin::allowed(
            headers.get(hyper::header::ORIGIN),
            headers.get(hyper::header::HOST),
            &state.config,
        )
    {
        // Debug only: any page on the web can make a visitor's browser try this.
        tracing::debug!(
            origin = ?headers.get(hyper::header::ORIGIN),
            "WebSocket upgrade refused: another site's page"
        );
        return refuse(StatusCode::FORBIDDEN, super::origin::REFUSED);
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return refuse(StatusCode::BAD_REQUEST, "WebSocket version 13 is required");
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let Ok(session_place) = hold.sessions.try_acquire_owned() else {
        warn_pool_full();
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: the server has no room for another session\n",
        );
    };
    let ip_place = hold.ip;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config()),
                )
                .await;
                match upgrade {
                    Upgrade::Session => crate::session::run(socket, state, peer).await,
                    Upgrade::Relay { owner, secret } => {
                        crate::cluster::route::relay(socket, owner, secret, peer).await
                    }
                    Upgrade::MediaLink => crate::cluster::media::serve_link(socket, state).await,
                }
            }
            Err(e) => tracing::debug!("WebSocket upgrade failed: {e}"),
        }
        // Held until the session has ended, so that open sessions count against the caps.
        drop(session_place);
        drop(ip_place);
    });
    let mut res = warp::reply::with_status("", StatusCode::SWITCHING_PROTOCOLS).into_response();
    let headers = res.headers_mut();
    headers.insert(
        CONNECTION,
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        UPGRADE,
        hyper::header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = accept_key.parse() {
        headers.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    res.headers_mut().remove(hyper::header::CONTENT_TYPE);
    res
}

//! The WebSocket upgrade for `/ws`, done here rather than by warp so that the connection's
//! buffers can be sized: tungstenite's default 128 KiB read buffer is zero-filled per
//! connection, which alone would cost more than the whole 100 kB memory budget of an avatar.

use crate::AppState;
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
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
    req.uri().path() == PATH
        && req.method() == hyper::Method::GET
        && header_has(req, CONNECTION, "upgrade")
        && header_has(req, UPGRADE, "websocket")
}

fn refuse(status: StatusCode, why: &'static str) -> warp::reply::Response {
    warp::reply::with_status(why, status).into_response()
}

/// Answers the handshake and starts the session once the connection is upgraded.
/// `peer` is the client's address (for the per-address session quotas).
pub fn accept(
    mut req: Request<Incoming>,
    state: Arc<AppState>,
    peer: SocketAddr,
) -> warp::reply::Response {
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
                crate::session::run(socket, state, peer).await;
            }
            Err(e) => tracing::debug!("WebSocket upgrade failed: {e}"),
        }
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

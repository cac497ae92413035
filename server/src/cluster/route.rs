//! Routing a client to the space's owner: a node that does not own the space relays each
//! WebSocket it accepts to the owner's `/ws`, frame by frame, and the owner runs the
//! session. The relay's own connection says which node sent it (the cluster secret, in
//! [`NODE_HEADER`]) and whose connection it carries ([`CLIENT_HEADER`]): the owner checks
//! the secret before it believes the address, and counts the session against the client's
//! address as if it had come straight.
//!
//! When the owner goes away (its node died, or it let the space go) the relay closes the
//! client's socket with "try again later" and the client reconnects through the entry node
//! it uses, which by then routes it to the new owner.

use futures_util::{SinkExt, StreamExt};
use hyper::header::HeaderMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// The relaying node proves itself with the cluster secret here.
pub const NODE_HEADER: &str = "x-quad-node-secret";
/// The client's address, as the relaying node saw it.
pub const CLIENT_HEADER: &str = "x-quad-client";

/// How long the relay waits for the owner to answer its upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// "Try again later": the client reconnects (RFC 6455's 1013).
const TRY_AGAIN_LATER: u16 = 1013;

static RELAYED: AtomicU64 = AtomicU64::new(0);

/// What a relay says to its client when the space's node is gone: try again (the client
/// reconnects, and lands on the new owner).
fn moving() -> Message {
    Message::Close(Some(CloseFrame {
        code: TRY_AGAIN_LATER.into(),
        reason: "the campus is moving to another server: reconnecting".into(),
    }))
}

/// Sessions this node relays to the owner now.
pub fn relayed() -> u64 {
    RELAYED.load(Ordering::Relaxed)
}

/// What a relayed upgrade says of itself: `None` when it is not relayed; the client's
/// address when the secret is right; `Err` when it claims to be relayed with a wrong secret
/// or no readable address (a forgery: refused).
pub fn relayed_client(
    headers: &HeaderMap,
    cluster: Option<&super::Cluster>,
) -> Result<Option<SocketAddr>, &'static str> {
    let Some(secret) = headers.get(NODE_HEADER) else {
        return Ok(None);
    };
    let Some(cluster) = cluster else {
        return Err("a relayed session, but this server is not in a cluster");
    };
    if !cluster.is_secret(secret.as_bytes()) {
        return Err("a relayed session with a wrong cluster secret");
    }
    headers
        .get(CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<SocketAddr>().ok())
        .map(Some)
        .ok_or("a relayed session without the client's address")
}

/// Relays `client` (accepted from `peer`) to the owner at `owner_url` until either side
/// closes.
pub async fn relay(
    mut client: impl super::Socket,
    owner_url: String,
    secret: String,
    peer: SocketAddr,
) {
    let ws_url = match owner_url.split_once("://") {
        Some(("https", rest)) => format!("wss://{}/ws", rest.trim_end_matches('/')),
        Some((_, rest)) => format!("ws://{}/ws", rest.trim_end_matches('/')),
        None => format!("ws://{}/ws", owner_url.trim_end_matches('/')),
    };
    let request = ws_url.as_str().into_client_request().map(|mut r| {
        let headers = r.headers_mut();
        if let Ok(v) = secret.parse() {
            headers.insert(NODE_HEADER, v);
        }
        if let Ok(v) = peer.to_string().parse() {
            headers.insert(CLIENT_HEADER, v);
        }
        r
    });
    let owner = match request {
        Ok(request) => tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(request, Some(super::ws_config()), true),
        )
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string())),
        Err(e) => Err(e.to_string()),
    };
    let mut owner = match owner {
        Ok((owner, _)) => owner,
        Err(e) => {
            tracing::warn!(%ws_url, "cluster: cannot relay a session to the space's node: {e}");
            let _ = tokio::time::timeout(Duration::from_secs(1), client.send(moving())).await;
            return;
        }
    };
    RELAYED.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            from_client = client.next() => match from_client {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => {
                    if owner.send(m).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = owner.send(Message::Close(frame)).await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = owner.close(None).await;
                    break;
                }
            },
            from_owner = owner.next() => match from_owner {
                Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => {
                    if client.send(m).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = client.send(Message::Close(frame)).await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    // The owner went away without a word (its node died).
                    let _ = client.send(moving()).await;
                    break;
                }
            },
        }
    }
    RELAYED.fetch_sub(1, Ordering::Relaxed);
}

//! The accept loop: one task per TCP connection, at most `max_connections` at once, each
//! served by hyper. `/ws` upgrades go to [`super::ws_upgrade`]; everything else to the warp
//! routes. On shutdown the loop stops accepting and waits for open requests to finish;
//! sessions close themselves with a reason.

use super::ws_upgrade;
use crate::AppState;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

/// Serves `listener` until the state's shutdown token is cancelled; `routes` is the warp
/// service (`warp::service(filter)`) for everything but sessions.
pub async fn serve<S>(listener: TcpListener, routes: S, state: Arc<AppState>)
where
    S: Service<hyper::Request<Incoming>, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let warp_service = routes;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let builder = builder.http1_only();
    let graceful = GracefulShutdown::new();
    // Sessions plus room for page loads; beyond that new connections are closed at once.
    let connections = Arc::new(Semaphore::new(state.config.max_sessions + 256));
    let shutdown = state.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: too many open connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let warp_service = warp_service.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let state = state.clone();
            let mut warp_service = warp_service.clone();
            async move {
                if ws_upgrade::is_session_request(&req) {
                    Ok::<_, Infallible>(ws_upgrade::accept(req, state, peer))
                } else {
                    warp_service.call(req).await
                }
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
    // Open HTTP requests get a moment to finish; upgraded sessions end on their own.
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 5 s of shutdown");
    }
}

//! The accept loops: one task per TCP connection, each served by hyper's HTTP/1 (with TLS
//! on, over TLS; see [`super::sniff`] for what else the port takes). `/ws`
//! upgrades go to [`super::ws_upgrade`], `/metrics` to [`super::metrics`], everything else
//! to the warp routes; every response gets the [`super::headers`].
//!
//! What a connection may hold ([`super::limits`]): a place in its IP's count
//! (`max_connections_per_ip`), and a place in the plain-HTTP pool until it ends or becomes
//! a session; a session then holds a place in the session pool (and its IP's) until it
//! ends. When the HTTP pool is full, a new connection pushes out the oldest idle one (a
//! connection not inside a request: silent, slow with its headers, or kept alive between
//! requests), so silent connections cannot keep out a client that sends its request at
//! once (`/healthz`); with none idle, the new one is closed. Headers must arrive within
//! `http_header_timeout_secs`, which also closes keep-alive connections left idle that
//! long. On shutdown the loop stops accepting, asks open connections to finish, and waits
//! up to 5 s for them; sessions close themselves with a reason.

use super::limits::{ConnectionBudget, PerIp};
use super::metrics::{self, Listener};
use super::sniff::{self, Arrival, Stream};
use super::{headers, records, ws_upgrade};
use crate::AppState;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// With TLS on: the acceptor, where TURN-over-TLS streams go, and the HSTS header.
#[derive(Clone)]
pub struct Secure {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub turn: Option<Arc<crate::turn::tcp::TcpTurnConn>>,
    pub hsts: Option<hyper::header::HeaderValue>,
}

/// How long open HTTP connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a new connection waits for the place of the idle one it pushed out.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Connections the metrics listener serves at once.
const METRICS_CONNECTIONS: usize = 16;

/// Serves `listener` until the state's shutdown token is cancelled; `routes` is the warp
/// service (`warp::service(filter)`) for everything but sessions and `/metrics`.
pub async fn serve<S>(
    listener: TcpListener,
    routes: S,
    state: Arc<AppState>,
    secure: Option<Secure>,
) where
    S: Service<hyper::Request<Incoming>, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let config = &state.config;
    let budget = ConnectionBudget::current(config.max_sessions);
    tracing::info!(
        "connections: up to {} sessions and {} other HTTP connections, {} per client IP \
         (open-file limit {}: {} files kept for the server, {} per session)",
        budget.sessions,
        budget.http,
        config.max_connections_per_ip,
        budget.open_files,
        budget.reserve,
        super::limits::FILES_PER_SESSION,
    );
    if budget.sessions < config.max_sessions {
        tracing::warn!(
            "the open-file limit ({}) leaves room for {} sessions, fewer than max_sessions \
             ({}): raise the hard limit (e.g. systemd's LimitNOFILE) or lower max_sessions",
            budget.open_files,
            budget.sessions,
            config.max_sessions
        );
    }
    let http_pool = Arc::new(Semaphore::new(budget.http));
    let sessions = Arc::new(Semaphore::new(budget.sessions));
    let per_ip = PerIp::new(
        config.max_connections_per_ip,
        config.connection_limit_exempt.clone(),
    );
    let http1 = http1_builder(config.http_header_timeout_secs);
    let header_timeout = Duration::from_secs(config.http_header_timeout_secs);
    let shutdown = state.shutdown.clone();
    let mut refused = Throttled::default();
    let idle = Arc::new(Idle::default());
    let mut next_id: u64 = 0;
    loop {
        let Some((stream, peer)) = accept(&listener, &shutdown).await else {
            break;
        };
        // Another node of the cluster relays many clients' sessions: it is not one client.
        let from_node = state
            .cluster
            .as_ref()
            .is_some_and(|c| c.is_node_ip(peer.ip()));
        let slot = if from_node {
            Some(PerIp::uncounted())
        } else {
            per_ip.take(peer.ip())
        };
        let Some(ip_slot) = slot else {
            refused.warn(format_args!(
                "connection from {} refused: max_connections_per_ip ({}) reached",
                peer.ip(),
                config.max_connections_per_ip
            ));
            continue;
        };
        let permit = match http_pool.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            // The pool is full: the oldest idle connection makes room (it lets its place
            // go as soon as its task sees the notice, well within the wait).
            Err(_) if idle.evict_oldest() => {
                tokio::time::timeout(EVICTION_WAIT, http_pool.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            refused.warn(format_args!(
                "connection from {peer} refused: {} HTTP connections open, none idle",
                budget.http
            ));
            continue;
        };
        let id = next_id;
        next_id += 1;
        let evict = Arc::new(Notify::new());
        idle.set_idle(id, &evict);
        let state = state.clone();
        let warp_service = routes.clone();
        let sessions = sessions.clone();
        let (shutdown, idle, http1, secure) = (
            shutdown.clone(),
            idle.clone(),
            http1.clone(),
            secure.clone(),
        );
        tokio::spawn(async move {
            // With TLS, what came: HTTPS, TURN inside TLS, or plain HTTP to redirect.
            let (io, plain): (Box<dyn Stream>, bool) = match &secure {
                None => (Box::new(stream), false),
                Some(secure) => {
                    let arrival = tokio::select! {
                        a = sniff::classify(stream, &secure.acceptor, header_timeout) => a,
                        _ = evict.notified() => Arrival::Gone("closed to make room".into()),
                        _ = shutdown.cancelled() => Arrival::Gone("server stopping".into()),
                    };
                    match arrival {
                        Arrival::Https(io) => (io, false),
                        Arrival::PlainHttp(stream) => (Box::new(stream), true),
                        Arrival::Turn(io) => {
                            // TURN keeps its own per-address and total limits: the HTTP
                            // places go back.
                            idle.set_busy(id);
                            drop(permit);
                            drop(ip_slot);
                            match &secure.turn {
                                Some(turn) => turn.adopt(io, peer),
                                None => tracing::debug!(%peer, "TURN over TLS, but TURN is off"),
                            }
                            return;
                        }
                        Arrival::Gone(why) => {
                            tracing::debug!(%peer, "connection closed: {why}");
                            idle.set_busy(id);
                            return;
                        }
                    }
                }
            };
            // HSTS only over TLS: on plain HTTP browsers ignore it (RFC 6797 §8.1).
            let hsts = secure
                .as_ref()
                .and_then(|s| s.hsts.clone())
                .filter(|_| !plain);
            let hold_ip = ip_slot.clone();
            let (idle_in_service, evict_in_service) = (idle.clone(), evict.clone());
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let state = state.clone();
                let mut warp_service = warp_service.clone();
                let hold = ws_upgrade::Hold {
                    ip: hold_ip.clone(),
                    sessions: sessions.clone(),
                };
                // Inside a request: not to be pushed out until its response is made.
                idle_in_service.set_busy(id);
                let (idle, evict) = (idle_in_service.clone(), evict_in_service.clone());
                let hsts = hsts.clone();
                async move {
                    // Recordings stream their bodies; everything else is warp's or small.
                    let streamed = |res: warp::reply::Response| {
                        use http_body_util::BodyExt;
                        res.map(|body| {
                            body.map_err(|e| {
                                Box::new(e) as Box<dyn std::error::Error + Send + Sync>
                            })
                            .boxed_unsync()
                        })
                    };
                    let mut res = if plain {
                        streamed(sniff::redirect(
                            &req,
                            state.config.public_url.as_deref(),
                            None,
                        ))
                    } else if ws_upgrade::is_session_request(&req) {
                        streamed(ws_upgrade::accept(req, state, hold, peer))
                    } else if req.uri().path() == metrics::PATH {
                        streamed(metrics::answer(&req, peer, Listener::Main, &state))
                    } else if req.uri().path().starts_with(records::RECORDING_PREFIX) {
                        let range = req
                            .headers()
                            .get(hyper::header::RANGE)
                            .and_then(|v| v.to_str().ok());
                        records::serve_recording(req.method(), req.uri(), range, &state).await
                    } else {
                        streamed(warp_service.call(req).await?)
                    };
                    headers::add(res.headers_mut());
                    if let Some(hsts) = hsts {
                        res.headers_mut()
                            .insert(hyper::header::STRICT_TRANSPORT_SECURITY, hsts);
                    }
                    idle.set_idle(id, &evict);
                    Ok::<_, Infallible>(res)
                }
            });
            let conn = http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = evict.notified() => {
                    tracing::debug!(%peer, "idle connection closed to make room");
                    Ok(())
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            idle.set_busy(id);
            // An upgraded session holds its own places (see `ws_upgrade::Hold`).
            drop(permit);
            drop(ip_slot);
        });
    }
    // Open HTTP requests get a moment to finish, and sessions to tell their clients and
    // close (each within its own close grace): a process that exits sooner resets them.
    let all_http = u32::try_from(budget.http).unwrap_or(u32::MAX);
    let all_sessions = u32::try_from(budget.sessions).unwrap_or(u32::MAX);
    let finished = async {
        let http = http_pool.acquire_many(all_http).await;
        let sessions = sessions.acquire_many(all_sessions).await;
        (http, sessions)
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, finished)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 5 s of shutdown");
    }
}

/// Serves `/metrics` alone on `listener` (`metrics_listen`) until shutdown.
pub async fn serve_metrics(listener: TcpListener, state: Arc<AppState>) {
    let pool = Arc::new(Semaphore::new(METRICS_CONNECTIONS));
    let http1 = http1_builder(state.config.http_header_timeout_secs);
    let shutdown = state.shutdown.clone();
    while let Some((stream, peer)) = accept(&listener, &shutdown).await {
        let Ok(permit) = pool.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut res = if req.uri().path() == metrics::PATH {
                metrics::answer(&req, peer, Listener::Metrics, &state)
            } else {
                let mut res = warp::reply::Response::new("not found".into());
                *res.status_mut() = hyper::StatusCode::NOT_FOUND;
                res
            };
            headers::add(res.headers_mut());
            std::future::ready(Ok::<_, Infallible>(res))
        });
        let conn = http1.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
            drop(permit);
        });
    }
}

/// Connections the plain-HTTP redirect listener serves at once.
const REDIRECT_CONNECTIONS: usize = 256;

/// Serves only redirects to HTTPS on `listener` (`http_redirect_listen`, usually port 80)
/// until shutdown, so that typing the campus's name into a browser lands on HTTPS.
/// Bounded like the metrics listener: a pool of connections, the header timeout, and one
/// answer per request with no body read.
pub async fn serve_redirects(listener: TcpListener, https_port: u16, state: Arc<AppState>) {
    let pool = Arc::new(Semaphore::new(REDIRECT_CONNECTIONS));
    let http1 = http1_builder(state.config.http_header_timeout_secs);
    let shutdown = state.shutdown.clone();
    while let Some((stream, _peer)) = accept(&listener, &shutdown).await {
        let Ok(permit) = pool.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut res =
                sniff::redirect(&req, state.config.public_url.as_deref(), Some(https_port));
            headers::add(res.headers_mut());
            std::future::ready(Ok::<_, Infallible>(res))
        });
        let conn = http1.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
            drop(permit);
        });
    }
}

fn http1_builder(header_timeout_secs: u64) -> hyper::server::conn::http1::Builder {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // hyper arms this whenever it waits for a request head: on a new connection and
        // on an idle keep-alive one, so it is the idle timeout too.
        .header_read_timeout(Duration::from_secs(header_timeout_secs))
        .keep_alive(true);
    http1
}

/// The next connection, or `None` once shutdown begins.
async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The connections not inside a request, by age (ids are given in accept order), each
/// with the notice that closes it.
#[derive(Default)]
struct Idle {
    by_age: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        // Only inserts and removes under the lock: a panic cannot leave the map torn.
        self.by_age.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_idle(&self, id: u64, evict: &Arc<Notify>) {
        self.lock().insert(id, evict.clone());
    }

    fn set_busy(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells the oldest idle connection to close; `false` if none is idle.
    fn evict_oldest(&self) -> bool {
        match self.lock().pop_first() {
            Some((_, evict)) => {
                // `notify_one` keeps the notice if the task is not waiting yet.
                evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A warning logged at most every 10 s (with how many it stood for), so that a flood of
/// refused connections does not become a flood of log lines.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    quiet: u64,
}

impl Throttled {
    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.quiet += 1;
            return;
        }
        if self.quiet > 0 {
            tracing::warn!(
                "{what} (and {} more since the last such warning)",
                self.quiet
            );
        } else {
            tracing::warn!("{what}");
        }
        self.last = Some(now);
        self.quiet = 0;
    }
}

//! Sessions: one task per WebSocket. It decodes frames, checks each message is legal in the
//! session's state and within its rate, and passes it to the space; it writes the frames
//! queued in its outbox ([`outbox`]) back, its own replies included.
//!
//! A bad frame is answered with an `Error` frame and the session goes on; only a client
//! that cannot go on (wrong protocol version, server full) is closed, with a reason. Nothing
//! here can affect another session. This module knows nothing of the world's rules.
//!
//! What one client may hold and send is bounded here: the bytes waiting for it (its
//! outbox's budget: a client that does not keep up is closed), how long it may take to say
//! `Hello` and how long it may stay silent, how often it may send each kind of message
//! ([`rate_limit`]), how large its signaling may be, and how many sessions its address may
//! hold and open ([`ip_quota`]).

pub mod ip_quota;
pub mod outbox;
mod rate_limit;

use crate::AppState;
use crate::auth::UserKey;
use crate::http::ws_upgrade::SessionSocket;
use crate::space::{Joiner, SpaceCommand};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use ip_quota::Refusal;
pub use outbox::SessionOutbox;
use quad_shared::AvatarId;
use quad_shared::codec::{self, CodecError};
use quad_shared::protocol::{
    CHAT_BURST, ClientMsg, ErrorCode, ErrorMsg, Hello, MAX_PEER_SDP_BYTES, MAX_ROOM_SDP_BYTES,
    PROTOCOL_VERSION, Role, ServerMsg, SessionState, normalize_chat, normalize_name,
};
use rate_limit::{Kind, KindLimits, RateLimit};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// WebSocket close codes used when a session cannot go on.
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How long a closing session may take to hand the client what it was still owed (a
/// refusal's `Error`) and the close frame. A client that does not read gets its
/// connection dropped after this instead.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What the session loop does after handling one message.
enum Next {
    Continue,
    Close(u16, String),
}

struct Session {
    state: Arc<AppState>,
    phase: SessionState,
    id: Option<AvatarId>,
    /// This session's own outbox, for its replies and to hand to the space at `Hello`.
    outbox: SessionOutbox,
    /// All frames, whatever they are.
    rate: RateLimit,
    /// Each kind of message (see [`rate_limit::ALLOWANCES`]).
    kinds: KindLimits,
    /// Sends fresh TURN credentials while the session lives.
    ice_renewal: Option<tokio::task::JoinHandle<()>>,
}

/// When a session has been silent, or without `Hello`, for too long.
struct Deadlines {
    hello_by: Option<Instant>,
    hello_secs: u64,
    idle: Duration,
    last_heard: Instant,
}

impl Deadlines {
    /// The close a session gets when a deadline has passed at `now`.
    fn expired(&self, now: Instant) -> Option<(u16, String)> {
        if self.hello_by.is_some_and(|t| now >= t) {
            return Some((
                close::POLICY,
                format!("no Hello within {} s", self.hello_secs),
            ));
        }
        if now >= self.last_heard + self.idle {
            return Some((
                close::POLICY,
                format!("idle: nothing received for {} s", self.idle.as_secs()),
            ));
        }
        None
    }

    /// When to look again.
    fn next(&self) -> Instant {
        let idle_at = self.last_heard + self.idle;
        self.hello_by.map_or(idle_at, |t| t.min(idle_at))
    }
}

fn close_frame(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

/// Runs one client's session until it disconnects, is closed, or the server shuts down.
/// `peer` is the client's address, for the per-address quotas.
pub async fn run(ws: SessionSocket, state: Arc<AppState>, peer: SocketAddr) {
    let (mut sink, mut stream) = ws.split();
    let _slot = match state.ip_quotas.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(refusal) => {
            let (err, reason) = match refusal {
                Refusal::TooMany(n) => (
                    ErrorMsg::new(
                        ErrorCode::Unavailable,
                        format!("too many sessions from your address: at most {n} at once"),
                    ),
                    "too many sessions from this address",
                ),
                Refusal::TooFast(n) => (
                    ErrorMsg::new(
                        ErrorCode::RateLimited,
                        format!(
                            "too many new sessions from your address: at most {n} a minute; \
                             try again in a moment"
                        ),
                    ),
                    "too many new sessions from this address",
                ),
            };
            tracing::debug!(ip = %peer.ip(), "session refused: {}", err.message);
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                if let Ok(frame) = codec::encode(&ServerMsg::Error(err)) {
                    sink.send(Message::binary(frame)).await?;
                }
                sink.send(close_frame(close::TRY_AGAIN_LATER, reason.into()))
                    .await
            })
            .await;
            return;
        }
    };
    let config = &state.config;
    let (outbox, mut outbox_rx) = outbox::channel(config.session_outbox_bytes);
    let overflow = outbox_rx.overflow_token();
    let shutdown = state.shutdown.clone();
    let now = Instant::now();
    let mut deadlines = Deadlines {
        hello_by: Some(now + Duration::from_secs(config.hello_timeout_secs)),
        hello_secs: config.hello_timeout_secs,
        idle: Duration::from_secs(config.idle_timeout_secs),
        last_heard: now,
    };
    let timer = tokio::time::sleep_until(deadlines.next());
    tokio::pin!(timer);
    let mut session = Session {
        state: state.clone(),
        phase: SessionState::AwaitingHello,
        id: None,
        outbox,
        rate: RateLimit::new(60.0, 120.0),
        kinds: KindLimits::default(),
        ice_renewal: None,
    };
    let keep_up = || {
        (
            close::TRY_AGAIN_LATER,
            "disconnected: the connection could not keep up".to_owned(),
        )
    };
    let going_away = || (close::GOING_AWAY, "the server is shutting down".to_owned());

    // `None`: the connection is gone, there is no one to tell.
    let closing: Option<(u16, String)> = 'session: loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Some(going_away()),
            _ = overflow.cancelled() => break Some(keep_up()),
            _ = &mut timer => {
                if let Some(close) = deadlines.expired(Instant::now()) {
                    break Some(close);
                }
                timer.as_mut().reset(deadlines.next());
            }
            frame = outbox_rx.recv() => {
                let Some(frame) = frame else { break None };
                // A client that does not read stalls this write; overflow, shutdown and the
                // deadlines are still noticed meanwhile.
                let write = sink.send(Message::binary(frame));
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        written = &mut write => match written {
                            Ok(()) => break,
                            Err(_) => break 'session None,
                        },
                        _ = shutdown.cancelled() => break 'session Some(going_away()),
                        _ = overflow.cancelled() => break 'session Some(keep_up()),
                        _ = &mut timer => {
                            if let Some(close) = deadlines.expired(Instant::now()) {
                                break 'session Some(close);
                            }
                            timer.as_mut().reset(deadlines.next());
                        }
                    }
                }
            }
            msg = stream.next() => {
                deadlines.last_heard = Instant::now();
                let next = match msg {
                    None | Some(Err(_)) => break None,
                    Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(msg)) => session.handle(msg).await,
                };
                if session.id.is_some() {
                    deadlines.hello_by = None;
                }
                if let Next::Close(code, reason) = next {
                    break Some((code, reason));
                }
            }
        }
    };
    let overflowed = outbox_rx.is_overflowed();
    if overflowed && let Some(id) = session.id {
        tracing::warn!(%id, ip = %peer.ip(), "session could not keep up; closed");
    }
    session.leave().await;
    if let Some((code, reason)) = closing {
        // What the client is still owed (a refusal's `Error`) goes first, unless it is
        // being closed for not reading; then the close frame, if it reads at all.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while !overflowed && let Some(frame) = outbox_rx.try_recv() {
                sink.feed(Message::binary(frame)).await?;
            }
            drop(outbox_rx);
            sink.send(close_frame(code, reason)).await
        })
        .await;
    }
}

impl Session {
    /// Queues a reply for this client, behind what is already queued for it.
    fn reply(&mut self, msg: &ServerMsg) {
        match codec::encode(msg) {
            // A full outbox closes the session; there is nothing more to do here.
            Ok(frame) => {
                let _ = self.outbox.push(Bytes::from(frame));
            }
            Err(e) => tracing::error!("cannot encode a reply: {e}"),
        }
    }

    fn refuse(&mut self, err: ErrorMsg) {
        tracing::debug!(id = ?self.id, code = ?err.code, "refused: {}", err.message);
        self.reply(&ServerMsg::Error(err));
    }

    async fn handle(&mut self, msg: Message) -> Next {
        if matches!(msg, Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) {
            return Next::Continue;
        }
        if !self.rate.allow() {
            if self.rate.should_warn() {
                self.refuse(ErrorMsg::new(
                    ErrorCode::RateLimited,
                    "too many frames: at most 60 per second",
                ));
            }
            return Next::Continue;
        }
        let Message::Binary(frame) = msg else {
            self.refuse(ErrorMsg::new(
                ErrorCode::NotBinary,
                "frames must be binary MessagePack, not text",
            ));
            return Next::Continue;
        };
        let msg = match codec::decode::<ClientMsg>(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                let code = match e {
                    CodecError::TooLarge { .. } => ErrorCode::TooLarge,
                    _ => ErrorCode::Malformed,
                };
                self.refuse(ErrorMsg::new(code, e.to_string()));
                return Next::Continue;
            }
        };
        if let Err(err) = self.phase.check(&msg) {
            self.refuse(err);
            return Next::Continue;
        }
        // Chat has its own refusal, sent for every message that is not sent (below).
        if let Some(kind) = Kind::of(&msg).filter(|k| *k != Kind::Chat)
            && let Err(allowance) = self.kinds.allow(kind)
        {
            if self.kinds.should_warn() {
                self.refuse(ErrorMsg::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many {} messages: at most {}; this one was dropped",
                        msg.kind(),
                        allowance.describe
                    ),
                ));
            }
            return Next::Continue;
        }
        match msg {
            ClientMsg::Hello(hello) => self.hello(hello).await,
            ClientMsg::Input(input) => {
                if let Some(id) = self.id {
                    self.forward(SpaceCommand::Input { id, input }).await
                } else {
                    Next::Continue
                }
            }
            ClientMsg::Signal { to, signal } => {
                if let Err(err) = signal.check_size("Signal", MAX_PEER_SDP_BYTES) {
                    self.refuse(err);
                    return Next::Continue;
                }
                if let Some(from) = self.id {
                    self.forward(SpaceCommand::Signal { from, to, signal })
                        .await
                } else {
                    Next::Continue
                }
            }
            ClientMsg::Media(media) => {
                if let Some(id) = self.id {
                    // The space is told either way; only the room's copy may be refused.
                    if let Err(err) = self.state.sfu.media(id, media) {
                        self.refuse(err);
                    }
                    self.forward(SpaceCommand::Media { id, media }).await
                } else {
                    Next::Continue
                }
            }
            ClientMsg::MediaReady { room } => {
                if let Some(id) = self.id {
                    self.forward(SpaceCommand::MediaReady { id, room }).await
                } else {
                    Next::Continue
                }
            }
            ClientMsg::RoomTiles(tiles) => {
                if tiles.len() > quad_shared::protocol::MAX_ROOM_TILES {
                    self.refuse(ErrorMsg::new(
                        ErrorCode::Malformed,
                        format!(
                            "RoomTiles has {} entries; at most {} are allowed",
                            tiles.len(),
                            quad_shared::protocol::MAX_ROOM_TILES
                        ),
                    ));
                } else if let Some(id) = self.id
                    && let Err(err) = self.state.sfu.tiles(id, tiles)
                {
                    self.refuse(err);
                }
                Next::Continue
            }
            ClientMsg::RoomSignal(signal) => {
                if let Err(err) = signal.check_size("RoomSignal", MAX_ROOM_SDP_BYTES) {
                    self.refuse(err);
                } else if let Some(id) = self.id
                    && let Err(err) = self.state.sfu.signal(id, signal)
                {
                    self.refuse(err);
                }
                Next::Continue
            }
            ClientMsg::Ping { nonce } => {
                self.reply(&ServerMsg::Pong { nonce });
                Next::Continue
            }
            ClientMsg::Chat { to, text } => {
                let Some(from) = self.id else {
                    return Next::Continue;
                };
                let text = match normalize_chat(&text) {
                    Ok(text) => text,
                    Err(err) => {
                        self.refuse(err);
                        return Next::Continue;
                    }
                };
                if self.kinds.allow(Kind::Chat).is_err() {
                    self.refuse(ErrorMsg::new(
                        ErrorCode::RateLimited,
                        format!(
                            "you are sending messages too fast: {CHAT_BURST} in a row, then one a second; \
                             this one was not sent"
                        ),
                    ));
                    return Next::Continue;
                }
                self.forward(SpaceCommand::Chat {
                    from,
                    to,
                    text,
                    at_ms: now_ms(),
                })
                .await
            }
            ClientMsg::Teacher(action) => match self.id {
                Some(from) => {
                    self.forward(SpaceCommand::Teacher {
                        from,
                        action,
                        at_ms: now_ms(),
                    })
                    .await
                }
                None => Next::Continue,
            },
            ClientMsg::Hand { raised } => match self.id {
                Some(id) => self.forward(SpaceCommand::Hand { id, raised }).await,
                None => Next::Continue,
            },
            ClientMsg::Attention { watching } => match self.id {
                Some(id) => self.forward(SpaceCommand::Attention { id, watching }).await,
                None => Next::Continue,
            },
            other => {
                self.refuse(ErrorMsg::new(
                    ErrorCode::WrongState,
                    format!("{} is not handled by this server", other.kind()),
                ));
                Next::Continue
            }
        }
    }

    async fn hello(&mut self, hello: Hello) -> Next {
        if hello.version != PROTOCOL_VERSION {
            self.refuse(ErrorMsg::new(
                ErrorCode::VersionMismatch,
                format!(
                    "this server speaks protocol {PROTOCOL_VERSION} and the client {}: reload the page",
                    hello.version
                ),
            ));
            return Next::Close(close::POLICY, "protocol version mismatch".into());
        }
        // A refused link or name leaves the session open: the lobby can try again.
        let link = match hello.token.as_deref().map(str::trim) {
            Some(token) if !token.is_empty() => match self.state.keys.verify(token) {
                Ok(claims) => Some(claims),
                Err(e) => {
                    tracing::info!("join link refused: {e}");
                    self.refuse(e.into());
                    return Next::Continue;
                }
            },
            _ => None,
        };
        if link.is_none() && !self.state.config.allow_guests {
            self.refuse(ErrorMsg::new(
                ErrorCode::Unauthorized,
                "this campus needs a join link: ask your teacher for one",
            ));
            return Next::Continue;
        }
        let name = match &link {
            Some(claims) => claims.name.clone(),
            None => match normalize_name(&hello.name) {
                Ok(name) if self.state.reserved_names.contains(&name) => {
                    self.refuse(ErrorMsg::new(
                        ErrorCode::Forbidden,
                        format!(
                            "the name {name:?} belongs to someone with a join link: choose another"
                        ),
                    ));
                    return Next::Continue;
                }
                Ok(name) => name,
                Err(err) => {
                    self.refuse(err);
                    return Next::Continue;
                }
            },
        };
        if link.is_some() {
            self.state.reserved_names.reserve(&name);
        }
        if self.state.sessions.len() >= self.state.config.max_sessions {
            self.refuse(ErrorMsg::new(
                ErrorCode::Unavailable,
                "the space is full; try again later",
            ));
            return Next::Close(close::TRY_AGAIN_LATER, "server full".into());
        }
        let id = AvatarId(self.state.next_avatar_id.fetch_add(1, Ordering::Relaxed));
        let (role, user, room) = match &link {
            Some(claims) => (claims.role(), UserKey::link(claims), claims.room.clone()),
            None => (
                Role::Guest,
                hello
                    .device
                    .as_deref()
                    .and_then(UserKey::device)
                    .unwrap_or_else(|| UserKey::session(self.state.run_nonce, id.0)),
                None,
            ),
        };
        self.state
            .sessions
            .insert(id, crate::SessionEntry { name: name.clone() });
        self.id = Some(id);
        self.phase = SessionState::InSpace;
        let joiner = Joiner {
            id,
            name,
            role,
            user,
            spawn: hello.spawn.map(glam::Vec2::from_array),
            room,
            ice_servers: self.state.ice.servers_for(id),
        };
        self.ice_renewal = self.state.ice.renew_every().map(|every| {
            let (state, outbox) = (self.state.clone(), self.outbox.clone());
            tokio::spawn(renew_ice_servers(state, id, every, outbox))
        });
        self.forward(SpaceCommand::Join {
            joiner,
            outbox: self.outbox.clone(),
        })
        .await
    }

    async fn forward(&mut self, cmd: SpaceCommand) -> Next {
        if self.state.space.send(cmd).await {
            Next::Continue
        } else {
            self.refuse(ErrorMsg::new(
                ErrorCode::Unavailable,
                "the space has stopped",
            ));
            Next::Close(close::GOING_AWAY, "the space has stopped".into())
        }
    }

    async fn leave(self) {
        if let Some(renewal) = &self.ice_renewal {
            renewal.abort();
        }
        if let Some(id) = self.id {
            // Its TURN credentials end with it, and so do its relays.
            self.state.ice.revoke(id).await;
            self.state.sessions.remove(&id);
            self.state.space.send(SpaceCommand::Leave { id }).await;
        }
    }
}

/// Sends `id` fresh TURN credentials every `every` until aborted or its outbox closes.
async fn renew_ice_servers(
    state: Arc<AppState>,
    id: AvatarId,
    every: std::time::Duration,
    outbox: SessionOutbox,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticks.tick().await;
        let msg = ServerMsg::IceServers {
            servers: state.ice.servers_for(id),
        };
        let Ok(frame) = codec::encode(&msg) else {
            return;
        };
        // A session that cannot take this is being closed for not keeping up.
        if outbox.push(Bytes::from(frame)).is_err() {
            return;
        }
    }
}

/// Milliseconds since the Unix epoch (chat timestamps, the audit log).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

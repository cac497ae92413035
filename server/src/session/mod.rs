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
pub mod resume;

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
use resume::Resumable;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// WebSocket close codes used when a session cannot go on.
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Quad's own: another connection took this session over (`Hello::resume`).
    pub const SUPERSEDED: u16 = 4000;
}

/// What becomes of the avatar when a session's connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parting {
    /// The connection was lost (or closed by the server for the client's sake: silent or
    /// not keeping up): the avatar waits `resume_grace_secs` for the client to resume.
    Park,
    /// The client closed it (leaving the page), or the server is shutting down.
    Leave,
    /// Another connection took the session over: this one leaves nothing behind.
    Superseded,
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
    /// Its resume entry, once in the space ([`resume`]).
    claim: Option<resume::Claim>,
    /// Who it is, once in the space (whose class records it may see).
    person: Option<(UserKey, Role)>,
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
        claim: None,
        person: None,
    };
    // Until the session has a resume entry, nothing can supersede it.
    let mut superseded = tokio_util::sync::CancellationToken::new();
    let mut parting = Parting::Park;
    let keep_up = || {
        (
            close::TRY_AGAIN_LATER,
            "disconnected: the connection could not keep up".to_owned(),
        )
    };
    let going_away = || {
        (
            close::SERVICE_RESTART,
            "the server is restarting".to_owned(),
        )
    };
    let taken_over = || {
        (
            close::SUPERSEDED,
            "this session goes on in another connection".to_owned(),
        )
    };

    // `None`: the connection is gone, there is no one to tell.
    let closing: Option<(u16, String)> = 'session: loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                parting = Parting::Leave;
                session.restarting();
                break Some(going_away());
            }
            _ = superseded.cancelled() => {
                parting = Parting::Superseded;
                break Some(taken_over());
            }
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
                        _ = shutdown.cancelled() => {
                            parting = Parting::Leave;
                            session.restarting();
                            break 'session Some(going_away());
                        }
                        _ = superseded.cancelled() => {
                            parting = Parting::Superseded;
                            break 'session Some(taken_over());
                        }
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
                    Some(Ok(Message::Close(frame))) => {
                        // Leaving the page closes with 1001, a client's own close with
                        // 1000 (or no code); any other code is a connection given up on
                        // (the client comes back to resume).
                        let code = frame.map(|f| u16::from(f.code));
                        if matches!(code, None | Some(close::NORMAL | close::GOING_AWAY)) {
                            parting = Parting::Leave;
                        }
                        break None;
                    }
                    Some(Ok(msg)) => session.handle(msg).await,
                };
                if session.id.is_some() {
                    deadlines.hello_by = None;
                }
                if let Some(claim) = &session.claim {
                    superseded = claim.superseded.clone();
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
    session.leave(parting).await;
    if let Some((code, reason)) = closing {
        // What the client is still owed (a refusal's `Error`) goes first, unless it is
        // being closed for not reading; then the close frame, if it reads at all.
        // Then the closing handshake: what the client still sends is read and dropped until
        // its own close frame, so that the socket is not closed with unread data (the kernel
        // would reset it, and the client could lose the frames it had not read yet).
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while !overflowed && let Some(frame) = outbox_rx.try_recv() {
                sink.feed(Message::binary(frame)).await?;
            }
            drop(outbox_rx);
            sink.send(close_frame(code, reason)).await?;
            while let Some(Ok(_)) = stream.next().await {}
            Ok::<_, tokio_tungstenite::tungstenite::Error>(())
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
                    if let Err(err) = self.state.media.media(id, media) {
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
                    && let Err(err) = self.state.media.tiles(id, tiles)
                {
                    self.refuse(err);
                }
                Next::Continue
            }
            ClientMsg::RoomSignal(signal) => {
                if let Err(err) = signal.check_size("RoomSignal", MAX_ROOM_SDP_BYTES) {
                    self.refuse(err);
                } else if let Some(id) = self.id
                    && let Err(err) = self.state.media.signal(id, signal)
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
            ClientMsg::Records => {
                self.send_records(None);
                Next::Continue
            }
            ClientMsg::ShareRecording { id, shared } => {
                self.send_records(Some((id, shared)));
                Next::Continue
            }
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
        if let Some(token) = hello.resume.as_deref()
            && let Some((who, claim)) = self.state.resumes.claim(token, Instant::now())
        {
            return self.resume(who, claim).await;
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
        let (role, user, link_room) = match &link {
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
        let claim = self.state.resumes.issue(Resumable {
            id,
            name: name.clone(),
            role,
            user: user.clone(),
            link_room: link_room.clone(),
        });
        // The link's room, or else the room the client was in before a restart (entering
        // it is checked as walking in would be).
        let room = link_room.or(hello.room);
        let joiner = self.enter(id, name, role, user, room, claim);
        let joiner = Joiner {
            spawn: hello.spawn.map(glam::Vec2::from_array),
            ..joiner
        };
        let epoch = self.claim.as_ref().map_or(0, |c| c.epoch);
        self.forward(SpaceCommand::Join {
            joiner,
            outbox: self.outbox.clone(),
            epoch,
        })
        .await
    }

    /// Takes over the session `claim` holds for `who`: the same avatar goes on with this
    /// connection (or joins afresh if it is gone).
    async fn resume(&mut self, who: Resumable, claim: resume::Claim) -> Next {
        tracing::debug!(id = %who.id, epoch = claim.epoch, "resuming");
        let epoch = claim.epoch;
        let joiner = self.enter(who.id, who.name, who.role, who.user, who.link_room, claim);
        self.forward(SpaceCommand::Resume {
            joiner,
            outbox: self.outbox.clone(),
            epoch,
        })
        .await
    }

    /// Sends this person's class records, after sharing a recording (`share`) if asked:
    /// read from the store off the session's task.
    fn send_records(&self, share: Option<(String, bool)>) {
        let Some((user, role)) = self.person.clone() else {
            return;
        };
        let (state, outbox) = (self.state.clone(), self.outbox.clone());
        tokio::task::spawn_blocking(move || {
            let store = state.records.storage.blocking();
            let reply = |msg: &ServerMsg| match quad_shared::codec::encode(msg) {
                Ok(frame) => {
                    let _ = outbox.push(bytes::Bytes::from(frame));
                }
                Err(e) => tracing::error!("cannot encode class records: {e}"),
            };
            if let Some((id, shared)) = share
                && let Err(err) = crate::records::library::share(store, &user.0, &id, shared)
            {
                reply(&ServerMsg::Error(err));
                return;
            }
            match crate::records::library::list(
                store,
                &state.records.links,
                &user.0,
                role,
                now_ms(),
            ) {
                Ok(list) => reply(&ServerMsg::Records(list)),
                Err(e) => {
                    tracing::error!("reading class records: {e:#}");
                    reply(&ServerMsg::Error(ErrorMsg::new(
                        ErrorCode::Unavailable,
                        "the class records cannot be read now; try again later",
                    )));
                }
            }
        });
    }

    /// Makes this session `id`'s, holding `claim`; the joiner to hand to the space.
    fn enter(
        &mut self,
        id: AvatarId,
        name: String,
        role: Role,
        user: UserKey,
        room: Option<String>,
        claim: resume::Claim,
    ) -> Joiner {
        self.state
            .sessions
            .insert(id, crate::SessionEntry { name: name.clone() });
        self.id = Some(id);
        self.person = Some((user.clone(), role));
        self.phase = SessionState::InSpace;
        let grace = self.state.resumes.grace().as_secs();
        let resume = (grace > 0).then(|| {
            (
                claim.token.clone(),
                u16::try_from(grace).unwrap_or(u16::MAX),
            )
        });
        self.claim = Some(claim);
        if let Some(renewal) = self.ice_renewal.take() {
            renewal.abort();
        }
        self.ice_renewal = self.state.ice.renew_every().map(|every| {
            let (state, outbox) = (self.state.clone(), self.outbox.clone());
            tokio::spawn(renew_ice_servers(state, id, every, outbox))
        });
        Joiner {
            id,
            name,
            role,
            user,
            spawn: None,
            room,
            ice_servers: self.state.ice.servers_for(id),
            resume,
        }
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

    /// Tells the client the server is restarting and when to come back: after a random
    /// delay, so that a campus's clients do not all return in the same second.
    fn restarting(&mut self) {
        if self.id.is_none() {
            return;
        }
        let spread = self.state.config.restart_spread_secs.saturating_mul(1000);
        let retry_after_ms = 1000 + rand::random_range(0..=spread);
        self.reply(&ServerMsg::Restarting {
            retry_after_ms: u32::try_from(retry_after_ms).unwrap_or(u32::MAX),
        });
    }

    /// The connection ended: the avatar leaves, or waits for a resume (`parting`).
    async fn leave(self, parting: Parting) {
        if let Some(renewal) = &self.ice_renewal {
            renewal.abort();
        }
        let (Some(id), Some(claim)) = (self.id, self.claim) else {
            return;
        };
        let state = self.state;
        let grace = state.resumes.grace();
        match parting {
            Parting::Superseded => {}
            Parting::Park if !grace.is_zero() => {
                if !state.resumes.park(&claim, Instant::now()) {
                    // Taken over meanwhile: the new connection has it.
                    return;
                }
                state
                    .space
                    .send(SpaceCommand::Away {
                        id,
                        epoch: claim.epoch,
                    })
                    .await;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    if state.resumes.expire(&claim) {
                        tracing::info!(%id, "not resumed within {grace:?}; leaving");
                        remove(&state, id).await;
                    }
                });
            }
            Parting::Park | Parting::Leave => {
                if state.resumes.end(&claim) {
                    remove(&state, id).await;
                }
            }
        }
    }
}

/// Takes `id` out of the space for good.
async fn remove(state: &AppState, id: AvatarId) {
    // Its TURN credentials end with it, and so do its relays.
    state.ice.revoke(id).await;
    state.sessions.remove(&id);
    state.space.send(SpaceCommand::Leave { id }).await;
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

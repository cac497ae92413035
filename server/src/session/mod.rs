//! Sessions: one task per WebSocket. It decodes frames, checks each message is legal in the
//! session's state, and passes it to the space; it writes the space's frames back.
//!
//! A bad frame is answered with an `Error` frame and the session goes on; only a client
//! that cannot go on (wrong protocol version, server full) is closed, with a reason. Nothing
//! here can affect another session. This module knows nothing of the world's rules.

mod rate_limit;

use crate::AppState;
use crate::auth::UserKey;
use crate::http::ws_upgrade::SessionSocket;
use crate::space::{Joiner, SESSION_OUTBOX_FRAMES, SpaceCommand};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quad_shared::AvatarId;
use quad_shared::codec::{self, CodecError};
use quad_shared::protocol::{
    CHAT_BURST, CHAT_SECONDS_PER_MESSAGE, ClientMsg, ErrorCode, ErrorMsg, Hello, PROTOCOL_VERSION,
    Role, ServerMsg, SessionState, normalize_chat, normalize_name,
};
use rate_limit::RateLimit;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// WebSocket close codes used when a session cannot go on.
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What the session loop does after handling one message.
enum Next {
    Continue,
    Close(u16, &'static str),
}

struct Session {
    state: Arc<AppState>,
    phase: SessionState,
    id: Option<AvatarId>,
    outbox_tx: mpsc::Sender<Bytes>,
    replies: Vec<ServerMsg>,
    rate: RateLimit,
    chat_rate: RateLimit,
    /// Sends fresh TURN credentials while the session lives.
    ice_renewal: Option<tokio::task::JoinHandle<()>>,
}

/// Runs one client's session until it disconnects or the server shuts down.
pub async fn run(ws: SessionSocket, state: Arc<AppState>) {
    let (mut sink, mut stream) = ws.split();
    let (outbox_tx, mut outbox_rx) = mpsc::channel::<Bytes>(SESSION_OUTBOX_FRAMES);
    let shutdown = state.shutdown.clone();
    let mut session = Session {
        state,
        phase: SessionState::AwaitingHello,
        id: None,
        outbox_tx,
        replies: Vec::new(),
        rate: RateLimit::new(60.0, 120.0),
        chat_rate: RateLimit::new(
            f64::from(1.0 / CHAT_SECONDS_PER_MESSAGE),
            f64::from(CHAT_BURST),
        ),
        ice_renewal: None,
    };

    let closing: Option<(u16, &'static str)> = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Some((close::GOING_AWAY, "the server is shutting down")),
            frame = outbox_rx.recv(), if session.id.is_some() => match frame {
                Some(frame) => {
                    if sink.send(Message::binary(frame)).await.is_err() {
                        break None;
                    }
                }
                None => break Some((close::TRY_AGAIN_LATER, "disconnected: the connection could not keep up")),
            },
            msg = stream.next() => {
                let next = match msg {
                    None | Some(Err(_)) => break None,
                    Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(msg)) => session.handle(msg).await,
                };
                for reply in session.replies.drain(..) {
                    if let Ok(frame) = codec::encode(&reply)
                        && sink.send(Message::binary(frame)).await.is_err()
                    {
                        break;
                    }
                }
                if let Next::Close(code, reason) = next {
                    break Some((code, reason));
                }
            }
        }
    };
    if let Some((code, reason)) = closing {
        // The peer may already be gone; there is nothing more to do either way.
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    session.leave().await;
}

impl Session {
    fn refuse(&mut self, err: ErrorMsg) {
        tracing::debug!(id = ?self.id, code = ?err.code, "refused: {}", err.message);
        self.replies.push(ServerMsg::Error(err));
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
                if let Some(id) = self.id
                    && let Err(err) = self.state.sfu.signal(id, signal)
                {
                    self.refuse(err);
                }
                Next::Continue
            }
            ClientMsg::Ping { nonce } => {
                self.replies.push(ServerMsg::Pong { nonce });
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
                if !self.chat_rate.allow() {
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
            return Next::Close(close::POLICY, "protocol version mismatch");
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
                Ok(name) => name,
                Err(err) => {
                    self.refuse(err);
                    return Next::Continue;
                }
            },
        };
        if self.state.sessions.len() >= self.state.config.max_sessions {
            self.refuse(ErrorMsg::new(
                ErrorCode::Unavailable,
                "the space is full; try again later",
            ));
            return Next::Close(close::TRY_AGAIN_LATER, "server full");
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
            let (state, outbox) = (self.state.clone(), self.outbox_tx.clone());
            tokio::spawn(renew_ice_servers(state, id, every, outbox))
        });
        self.forward(SpaceCommand::Join {
            joiner,
            outbox: self.outbox_tx.clone(),
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
            Next::Close(close::GOING_AWAY, "the space has stopped")
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
    outbox: mpsc::Sender<Bytes>,
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
        if outbox.send(Bytes::from(frame)).await.is_err() {
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

//! Room media across a cluster's nodes. [`MediaRooms`] is what the space and the sessions
//! call for room media; it decides where each room's SFU runs and sends the calls there.
//!
//! - Alone (no cluster), every room is on this process's [`Sfu`], called directly.
//! - In a cluster, only the space's owner places rooms. A new room goes to the
//!   least-loaded node ([`least_loaded`]: the rooms the owner placed on it, then its CPU and
//!   forwarded packets as it reported them to Redis), this node included. A room stays on
//!   its node while it has members.
//! - A room on another node is driven over a media link: one WebSocket from the owner to
//!   that node's `/cluster/media` ([`LINK_PATH`], behind the cluster secret), carrying the
//!   front door's calls (join, leave, signaling, devices, tiles, restrictions, spotlight)
//!   one way and, the other, the frames the room sends its members and who spoke. The
//!   media node runs an ordinary [`Sfu`] room for it ([`serve_link`]): the member's
//!   browser connects its media straight to that node (its candidates are in the answer).
//! - A media node that dies takes its link down: its rooms are placed again, on the others,
//!   and each member is sent `JoinRoomMedia`, on which a client starts its room afresh.
//!
//! A class whose room runs on another node is recorded there (the recorder runs beside the
//! room's forwarding), under an id the owner gives; its news comes back over the link. The
//! file is kept in that node's recordings folder, or in the bucket (`s3_bucket`), which in
//! a cluster every node can serve from.

use super::Cluster;
use crate::media::recording::{RecordRequest, RecordingEvent};
use crate::media::sfu::{Joining, RoomId, Sfu, TalkTime};
use crate::session::SessionOutbox;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quad_shared::AvatarId;
use quad_shared::protocol::{ErrorCode, ErrorMsg, MediaFlags, ServerMsg, Signal};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Where a node takes media links.
pub const LINK_PATH: &str = "/cluster/media";
/// Calls queued for one media link at most; past it the link is as good as dead (the
/// node stopped reading), and client-caused calls are refused.
const LINK_QUEUE: usize = 8192;
/// How long a media node that went away is not given rooms (its entry may linger in Redis
/// for a few seconds after it died).
const DEAD_FOR: Duration = Duration::from_secs(15);
/// How long the owner waits for a media node to take a link.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A call from the owner to a media node.
#[derive(Debug, Serialize, Deserialize)]
enum ToMedia {
    Join {
        room: u16,
        room_name: String,
        member: AvatarId,
        name: String,
        media: MediaFlags,
        always_heard: bool,
        off: MediaFlags,
    },
    Leave {
        member: AvatarId,
    },
    Signal {
        member: AvatarId,
        signal: Signal,
    },
    Media {
        member: AvatarId,
        media: MediaFlags,
    },
    Tiles {
        member: AvatarId,
        tiles: Vec<(AvatarId, u16)>,
    },
    Restrict {
        member: AvatarId,
        off: MediaFlags,
    },
    Spotlight {
        room: u16,
        who: Option<AvatarId>,
    },
    /// Record the room, as recording `id` (the owner made the id, and answered with it).
    Record {
        room: u16,
        id: String,
        room_name: String,
        by_user: String,
        by_name: String,
        session: String,
    },
    StopRecording {
        room: u16,
    },
}

/// News from a media node, other than member frames (which go raw, see [`member_frame`]).
#[derive(Debug, Serialize, Deserialize)]
enum FromMedia {
    Talk {
        room: u16,
        talk: Vec<(AvatarId, u32)>,
    },
    /// What became of a recording this node makes for the owner's space.
    Recording(RecordingEvent),
}

/// A frame for `member`'s client, as the link carries it: tag 0, the member, the frame.
fn member_frame(member: AvatarId, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 5);
    out.push(0);
    out.extend_from_slice(&member.0.to_le_bytes());
    out.extend_from_slice(frame);
    out
}

/// News as the link carries it: tag 1, then MessagePack.
fn news_frame(news: &FromMedia) -> Option<Vec<u8>> {
    let mut out = vec![1];
    rmp_serde::encode::write(&mut out, news).ok()?;
    Some(out)
}

/// Where a room runs: on this node, or on another (by name).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    Here,
    Node(String),
}

/// A room member, as the owner knows it (to place it again if its node dies).
#[derive(Clone)]
struct Member {
    room: RoomId,
    outbox: SessionOutbox,
    name: String,
    media: MediaFlags,
    always_heard: bool,
}

struct Room {
    place: Place,
    name: String,
    members: usize,
}

/// The owner's side of a link: calls go out through `tx`.
struct Link {
    tx: mpsc::Sender<Vec<u8>>,
}

#[derive(Default)]
struct Placements {
    rooms: HashMap<RoomId, Room>,
    members: HashMap<AvatarId, Member>,
    links: HashMap<String, Link>,
    /// Devices teachers turned off, for members on other nodes (sent at each join).
    restricted: HashMap<AvatarId, MediaFlags>,
    /// Nodes whose links went down, and when.
    dead: HashMap<String, Instant>,
    /// Rooms placed on each node now (by this owner).
    placed: HashMap<String, usize>,
}

/// Room media, wherever each room runs.
pub struct MediaRooms {
    local: Arc<Sfu>,
    cluster: Option<Arc<Cluster>>,
    state: Mutex<Placements>,
    /// Where the space takes who spoke (rooms here and on other nodes).
    talk: OnceLock<mpsc::UnboundedSender<TalkTime>>,
    /// Rooms this node runs for another node's space: where their news goes.
    hosted: Mutex<HashMap<RoomId, mpsc::Sender<Vec<u8>>>>,
    /// Where news of recordings made on other nodes goes (the space's channel, from the
    /// first recording request).
    recording_events: OnceLock<mpsc::UnboundedSender<RecordingEvent>>,
    me: Weak<MediaRooms>,
}

impl std::fmt::Debug for MediaRooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaRooms").finish()
    }
}

impl MediaRooms {
    /// Room media on `local`, and on the other nodes of `cluster` if there is one. Takes
    /// `local`'s talk reports (see [`MediaRooms::report_talk`]).
    pub fn new(local: Arc<Sfu>, cluster: Option<Arc<Cluster>>) -> Arc<MediaRooms> {
        let rooms = Arc::new_cyclic(|me| MediaRooms {
            local: local.clone(),
            cluster,
            state: Mutex::new(Placements::default()),
            talk: OnceLock::new(),
            hosted: Mutex::new(HashMap::new()),
            recording_events: OnceLock::new(),
            me: me.clone(),
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<TalkTime>();
        local.report_talk(tx);
        let weak = Arc::downgrade(&rooms);
        tokio::spawn(async move {
            while let Some(talk) = rx.recv().await {
                let Some(rooms) = weak.upgrade() else { break };
                rooms.route_talk(talk);
            }
        });
        rooms
    }

    /// This node's own SFU (for `/metrics`).
    pub fn local(&self) -> &Arc<Sfu> {
        &self.local
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Placements> {
        // A panic while holding this lock would be a bug; the maps stay usable either way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Has rooms report who spoke to `to` (once).
    pub fn report_talk(&self, to: mpsc::UnboundedSender<TalkTime>) {
        let _ = self.talk.set(to);
    }

    fn route_talk(&self, talk: TalkTime) {
        let hosted = self
            .hosted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&talk.room)
            .cloned();
        match hosted {
            Some(link) => {
                let news = FromMedia::Talk {
                    room: talk.room.0,
                    talk: talk.talk,
                };
                if let Some(frame) = news_frame(&news) {
                    let _ = link.try_send(frame);
                }
            }
            None => {
                if let Some(space) = self.talk.get() {
                    let _ = space.send(talk);
                }
            }
        }
    }

    /// Where `member`'s room is, if it is on another node: that node's link.
    fn remote_of(&self, member: AvatarId) -> Option<mpsc::Sender<Vec<u8>>> {
        // Alone, every room is here: no lock on the way.
        self.cluster.as_ref()?;
        let state = self.lock();
        let room = state.members.get(&member)?.room;
        match &state.rooms.get(&room)?.place {
            Place::Here => None,
            Place::Node(node) => state.links.get(node).map(|l| l.tx.clone()),
        }
    }

    /// Puts `member` in `room`, wherever the room runs (placing it if it is new).
    pub fn join(
        &self,
        room: RoomId,
        room_name: &str,
        member: AvatarId,
        joining: Joining,
        outbox: SessionOutbox,
    ) {
        if self.cluster.is_none() {
            return self.local.join(room, room_name, member, joining, outbox);
        }
        if self.lock().members.get(&member).map(|m| m.room) == Some(room) {
            return;
        }
        self.leave(member);
        let entry = Member {
            room,
            outbox,
            name: joining.name,
            media: joining.media,
            always_heard: joining.always_heard,
        };
        let mut state = self.lock();
        let place = match state.rooms.get_mut(&room) {
            Some(r) => {
                r.members += 1;
                r.place.clone()
            }
            None => {
                let place = self.choose(&state);
                *state.placed.entry(self.node_of(&place)).or_default() += 1;
                if let Place::Node(node) = &place {
                    tracing::info!(room = room.0, %node, "cluster: room media placed on another node");
                }
                state.rooms.insert(
                    room,
                    Room {
                        place: place.clone(),
                        name: room_name.to_owned(),
                        members: 1,
                    },
                );
                place
            }
        };
        state.members.insert(member, entry.clone());
        self.join_at(&mut state, &place, room, room_name, member, &entry);
    }

    /// Joins `member` to `room` at `place` (making the link if needed).
    fn join_at(
        &self,
        state: &mut Placements,
        place: &Place,
        room: RoomId,
        room_name: &str,
        member: AvatarId,
        entry: &Member,
    ) {
        match place {
            Place::Here => self.local.join(
                room,
                room_name,
                member,
                Joining {
                    name: entry.name.clone(),
                    media: entry.media,
                    always_heard: entry.always_heard,
                },
                entry.outbox.clone(),
            ),
            Place::Node(node) => {
                let call = ToMedia::Join {
                    room: room.0,
                    room_name: room_name.to_owned(),
                    member,
                    name: entry.name.clone(),
                    media: entry.media,
                    always_heard: entry.always_heard,
                    off: state.restricted.get(&member).copied().unwrap_or_default(),
                };
                let tx = self.link(state, node);
                send_call(&tx, &call);
            }
        }
    }

    /// The link to `node`, made now if there is none.
    fn link(&self, state: &mut Placements, node: &str) -> mpsc::Sender<Vec<u8>> {
        if let Some(link) = state.links.get(node) {
            return link.tx.clone();
        }
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let url = self.cluster.as_ref().and_then(|c| {
            c.view()
                .nodes
                .into_iter()
                .find(|n| n.name == node)
                .map(|n| (n.url, c.secret().to_owned()))
        });
        state.links.insert(node.to_owned(), Link { tx: tx.clone() });
        let (me, node) = (self.me.clone(), node.to_owned());
        tokio::spawn(async move {
            if let Some((url, secret)) = url {
                run_link(&url, &secret, rx, &me).await;
            }
            if let Some(rooms) = me.upgrade() {
                rooms.link_lost(&node);
            }
        });
        tx
    }

    /// The name of the node `place` is.
    fn node_of(&self, place: &Place) -> String {
        match place {
            Place::Node(node) => node.clone(),
            Place::Here => self
                .cluster
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
        }
    }

    /// The least-loaded place for a new room (this node when alone).
    fn choose(&self, state: &Placements) -> Place {
        let Some(cluster) = &self.cluster else {
            return Place::Here;
        };
        let view = cluster.view();
        let candidates = view.nodes.iter().filter(|n| {
            n.name == cluster.name
                || state
                    .dead
                    .get(&n.name)
                    .is_none_or(|at| at.elapsed() >= DEAD_FOR)
        });
        match least_loaded(candidates, &state.placed, &cluster.name) {
            Some(name) if name != cluster.name => Place::Node(name),
            _ => Place::Here,
        }
    }

    /// `node`'s link went down (it died, or could not be reached): its rooms are placed
    /// again and their members asked to connect again.
    fn link_lost(&self, node: &str) {
        let mut state = self.lock();
        state.links.remove(node);
        state.dead.insert(node.to_owned(), Instant::now());
        state.placed.remove(node);
        let lost: Vec<RoomId> = state
            .rooms
            .iter()
            .filter(|(_, r)| r.place == Place::Node(node.to_owned()))
            .map(|(id, _)| *id)
            .collect();
        if lost.is_empty() {
            return;
        }
        tracing::warn!(%node, rooms = lost.len(), "cluster: a media node went away; its rooms are placed again");
        for room in lost {
            let place = self.choose(&state);
            *state.placed.entry(self.node_of(&place)).or_default() += 1;
            let name = match state.rooms.get_mut(&room) {
                Some(r) => {
                    r.place = place.clone();
                    r.name.clone()
                }
                None => continue,
            };
            tracing::info!(room = room.0, ?place, "cluster: room media placed again");
            let members: Vec<(AvatarId, Member)> = state
                .members
                .iter()
                .filter(|(_, m)| m.room == room)
                .map(|(id, m)| (*id, m.clone()))
                .collect();
            let again = ServerMsg::JoinRoomMedia {
                room: quad_shared::ZoneId(room.0),
                name: name.clone(),
            };
            let frame = quad_shared::codec::encode(&again).ok().map(Bytes::from);
            for (id, member) in members {
                self.join_at(&mut state, &place, room, &name, id, &member);
                if let Some(frame) = &frame {
                    let _ = member.outbox.push(frame.clone());
                }
            }
        }
    }

    /// Takes `member` out of its room, if it is in one. The room ends with its last member.
    pub fn leave(&self, member: AvatarId) {
        if self.cluster.is_none() {
            return self.local.leave(member);
        }
        let mut state = self.lock();
        let Some(left) = state.members.remove(&member) else {
            return;
        };
        let Some(room) = state.rooms.get_mut(&left.room) else {
            return;
        };
        room.members = room.members.saturating_sub(1);
        let place = room.place.clone();
        if room.members == 0 {
            state.rooms.remove(&left.room);
            if let Some(n) = state.placed.get_mut(&self.node_of(&place)) {
                *n = n.saturating_sub(1);
            }
        }
        match place {
            Place::Here => self.local.leave(member),
            Place::Node(node) => {
                if let Some(link) = state.links.get(&node) {
                    send_call(&link.tx, &ToMedia::Leave { member });
                }
            }
        }
    }

    /// Signaling from `member`'s client for its room connection.
    pub fn signal(&self, member: AvatarId, signal: Signal) -> Result<(), ErrorMsg> {
        match self.remote_of(member) {
            None => self.local.signal(member, signal),
            Some(link) => client_call(&link, &ToMedia::Signal { member, signal }),
        }
    }

    /// `member`'s client reported its devices.
    pub fn media(&self, member: AvatarId, media: MediaFlags) -> Result<(), ErrorMsg> {
        if self.cluster.is_some()
            && let Some(m) = self.lock().members.get_mut(&member)
        {
            m.media = media;
        }
        match self.remote_of(member) {
            None => self.local.media(member, media),
            Some(link) => client_call(&link, &ToMedia::Media { member, media }),
        }
    }

    /// `member`'s client shows these cameras at these widths.
    pub fn tiles(&self, member: AvatarId, tiles: Vec<(AvatarId, u16)>) -> Result<(), ErrorMsg> {
        match self.remote_of(member) {
            None => self.local.tiles(member, tiles),
            Some(link) => client_call(&link, &ToMedia::Tiles { member, tiles }),
        }
    }

    /// Drops `member`'s packets of the devices in `off`, wherever it is.
    pub fn restrict(&self, member: AvatarId, off: MediaFlags) {
        self.local.restrict(member, off);
        if self.cluster.is_none() {
            return;
        }
        {
            let mut state = self.lock();
            if off == MediaFlags::default() {
                state.restricted.remove(&member);
            } else {
                state.restricted.insert(member, off);
            }
        }
        if let Some(link) = self.remote_of(member) {
            send_call(&link, &ToMedia::Restrict { member, off });
        }
    }

    /// Starts recording `room`, on whichever node runs it: the recording's id (a node that
    /// cannot start it says so in a `RecordingEvent::Stopped`).
    pub fn record(&self, room: RoomId, request: RecordRequest) -> Result<String, ErrorMsg> {
        let Some(Place::Node(node)) = self.place_of(room) else {
            return self.local.record(room, request);
        };
        let link = self.lock().links.get(&node).map(|l| l.tx.clone());
        let Some(link) = link else {
            return Err(ErrorMsg::new(
                ErrorCode::WrongState,
                "the room's media has not started yet: try again in a moment",
            ));
        };
        let _ = self.recording_events.set(request.events.clone());
        let id = crate::media::recording::new_id(crate::store::now_ms());
        send_call(
            &link,
            &ToMedia::Record {
                room: room.0,
                id: id.clone(),
                room_name: request.room_name,
                by_user: request.by_user,
                by_name: request.by_name,
                session: request.session,
            },
        );
        Ok(id)
    }

    pub fn stop_recording(&self, room: RoomId) {
        if let Some(Place::Node(node)) = self.place_of(room) {
            let link = self.lock().links.get(&node).map(|l| l.tx.clone());
            if let Some(link) = link {
                send_call(&link, &ToMedia::StopRecording { room: room.0 });
            }
            return;
        }
        self.local.stop_recording(room);
    }

    /// Who is spotlit in `room`.
    pub fn spotlight(&self, room: RoomId, who: Option<AvatarId>) {
        if let Some(Place::Node(node)) = self.place_of(room) {
            let link = self.lock().links.get(&node).map(|l| l.tx.clone());
            if let Some(link) = link {
                send_call(&link, &ToMedia::Spotlight { room: room.0, who });
            }
            return;
        }
        self.local.spotlight(room, who);
    }

    fn place_of(&self, room: RoomId) -> Option<Place> {
        self.cluster.as_ref()?;
        self.lock().rooms.get(&room).map(|r| r.place.clone())
    }

    /// Closes every room (server shutdown); the links close with the process.
    pub fn close_all(&self) {
        self.local.close_all();
        let mut state = self.lock();
        state.rooms.clear();
        state.members.clear();
        state.links.clear();
    }

    /// Frames a media node sent for `member`'s client.
    fn deliver(&self, member: AvatarId, frame: Bytes) {
        let outbox = self.lock().members.get(&member).map(|m| m.outbox.clone());
        if let Some(outbox) = outbox {
            let _ = outbox.push(frame);
        }
    }
}

/// The name of the least-loaded of `nodes`: fewest rooms placed on it (by this owner),
/// then least CPU and fewest forwarded packets (as reported); `me` wins ties.
pub fn least_loaded<'a>(
    nodes: impl Iterator<Item = &'a super::NodeInfo>,
    placed: &HashMap<String, usize>,
    me: &str,
) -> Option<String> {
    // A room weighs as much as a core's load; a core forwards some 100,000 packets a second.
    let score = |n: &super::NodeInfo| {
        placed.get(&n.name).copied().unwrap_or(0) as f64
            + n.cpu
            + n.forwarded_per_sec as f64 / 100_000.0
    };
    nodes
        .map(|n| (score(n), n.name != me, n.name.clone()))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, _, name)| name)
}

fn encode_call(call: &ToMedia) -> Option<Vec<u8>> {
    rmp_serde::to_vec(call).ok()
}

/// A call the space made: never refused by the link (a full queue means the node is gone,
/// and its rooms will be placed again).
fn send_call(link: &mpsc::Sender<Vec<u8>>, call: &ToMedia) {
    if let Some(frame) = encode_call(call)
        && link.try_send(frame).is_err()
    {
        tracing::warn!("cluster: a media link's queue is full; a call was dropped");
    }
}

/// A call a client caused: refused when the link's queue is full.
fn client_call(link: &mpsc::Sender<Vec<u8>>, call: &ToMedia) -> Result<(), ErrorMsg> {
    let frame = encode_call(call).ok_or_else(|| {
        ErrorMsg::new(
            ErrorCode::Malformed,
            "this room message cannot be passed on",
        )
    })?;
    link.try_send(frame).map_err(|_| {
        ErrorMsg::new(
            ErrorCode::RateLimited,
            "the room's server is not keeping up: this room message was dropped",
        )
    })
}

/// The owner's side of a link to the node at `url`, until either side closes it.
async fn run_link(
    url: &str,
    secret: &str,
    mut calls: mpsc::Receiver<Vec<u8>>,
    rooms: &Weak<MediaRooms>,
) {
    let ws_url = match url.split_once("://") {
        Some(("https", rest)) => format!("wss://{}{LINK_PATH}", rest.trim_end_matches('/')),
        Some((_, rest)) => format!("ws://{}{LINK_PATH}", rest.trim_end_matches('/')),
        None => return,
    };
    let Ok(mut request) = ws_url.as_str().into_client_request() else {
        return;
    };
    if let Ok(v) = secret.parse() {
        request.headers_mut().insert(super::route::NODE_HEADER, v);
    }
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(super::ws_config()), true),
    )
    .await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            tracing::warn!(%ws_url, "cluster: cannot open a media link: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%ws_url, "cluster: a media link timed out");
            return;
        }
    };
    loop {
        tokio::select! {
            call = calls.recv() => match call {
                Some(frame) => {
                    if ws.send(Message::binary(frame)).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    return;
                }
            },
            from = ws.next() => match from {
                Some(Ok(Message::Binary(frame))) => {
                    let Some(rooms) = rooms.upgrade() else { return };
                    match frame.first() {
                        Some(0) if frame.len() >= 5 => {
                            let mut id = [0u8; 4];
                            id.copy_from_slice(&frame[1..5]);
                            rooms.deliver(AvatarId(u32::from_le_bytes(id)), frame.slice(5..));
                        }
                        Some(1) => match rmp_serde::from_slice::<FromMedia>(&frame[1..]) {
                            Ok(FromMedia::Talk { room, talk }) => {
                                if let Some(space) = rooms.talk.get() {
                                    let _ = space.send(TalkTime { room: RoomId(room), talk });
                                }
                            }
                            Ok(FromMedia::Recording(event)) => {
                                if let Some(space) = rooms.recording_events.get() {
                                    let _ = space.send(event);
                                }
                            }
                            Err(e) => tracing::warn!("cluster: bad news on a media link: {e}"),
                        },
                        _ => tracing::warn!("cluster: a bad frame on a media link"),
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A media node's side of a link from the space's owner: runs the rooms it is asked to on
/// this node's SFU until the link closes, then takes their members out.
pub async fn serve_link(socket: impl super::Socket, state: Arc<crate::AppState>) {
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(LINK_QUEUE);
    let (mut sink, mut stream) = socket.split();
    let mut pumps: HashMap<AvatarId, (RoomId, tokio::task::JoinHandle<()>)> = HashMap::new();
    let sfu = state.media.local().clone();
    // News of the recordings made here for the owner's space goes back over the link.
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<RecordingEvent>();
    let news_out = out_tx.clone();
    let news = tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            if let Some(frame) = news_frame(&FromMedia::Recording(event))
                && news_out.send(frame).await.is_err()
            {
                break;
            }
        }
    });
    tracing::info!("cluster: a media link from the space's node opened");
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(frame) => {
                    if sink.send(Message::binary(frame)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            call = stream.next() => {
                let frame = match call {
                    Some(Ok(Message::Binary(frame))) => frame,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                let call = match rmp_serde::from_slice::<ToMedia>(&frame) {
                    Ok(call) => call,
                    Err(e) => {
                        tracing::warn!("cluster: a bad call on a media link: {e}");
                        continue;
                    }
                };
                let failed = match call {
                    ToMedia::Join { room, room_name, member, name, media, always_heard, off } => {
                        let room = RoomId(room);
                        if off != MediaFlags::default() {
                            sfu.restrict(member, off);
                        }
                        let (outbox, mut rx) =
                            crate::session::outbox::channel(state.config.session_outbox_bytes);
                        sfu.join(room, &room_name, member, Joining { name, media, always_heard }, outbox);
                        state
                            .media
                            .hosted
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(room, out_tx.clone());
                        let out = out_tx.clone();
                        let pump = tokio::spawn(async move {
                            while let Some(frame) = rx.recv().await {
                                if out.send(member_frame(member, &frame)).await.is_err() {
                                    break;
                                }
                            }
                        });
                        if let Some((_, old)) = pumps.insert(member, (room, pump)) {
                            old.abort();
                        }
                        None
                    }
                    ToMedia::Leave { member } => {
                        sfu.leave(member);
                        if let Some((_, pump)) = pumps.remove(&member) {
                            pump.abort();
                        }
                        None
                    }
                    ToMedia::Signal { member, signal } => sfu.signal(member, signal).err().map(|e| (member, e)),
                    ToMedia::Media { member, media } => sfu.media(member, media).err().map(|e| (member, e)),
                    ToMedia::Tiles { member, tiles } => sfu.tiles(member, tiles).err().map(|e| (member, e)),
                    ToMedia::Restrict { member, off } => {
                        sfu.restrict(member, off);
                        None
                    }
                    ToMedia::Spotlight { room, who } => {
                        sfu.spotlight(RoomId(room), who);
                        None
                    }
                    ToMedia::Record { room, id, room_name, by_user, by_name, session } => {
                        let request = RecordRequest {
                            room_name: room_name.clone(),
                            by_user,
                            by_name,
                            session,
                            events: events_tx.clone(),
                            id: Some(id.clone()),
                        };
                        if let Err(e) = sfu.record(RoomId(room), request) {
                            let _ = events_tx.send(RecordingEvent::Stopped {
                                room: RoomId(room),
                                room_name,
                                id,
                                reason: e.message,
                            });
                        }
                        None
                    }
                    ToMedia::StopRecording { room } => {
                        sfu.stop_recording(RoomId(room));
                        None
                    }
                };
                if let Some((member, err)) = failed
                    && let Ok(frame) = quad_shared::codec::encode(&ServerMsg::Error(err))
                {
                    let _ = out_tx.try_send(member_frame(member, &frame));
                }
            }
        }
    }
    tracing::info!(
        members = pumps.len(),
        "cluster: a media link closed; its rooms' members leave"
    );
    let mut hosted = state.media.hosted.lock().unwrap_or_else(|e| e.into_inner());
    for (member, (room, pump)) in pumps {
        sfu.leave(member);
        pump.abort();
        hosted.remove(&room);
    }
    // A recording going on finishes here (its room closed with its last member) and is
    // kept in the shared store; there is no link left to tell the space.
    news.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeInfo;

    fn node(name: &str, cpu: f64, forwarded_per_sec: u64, rooms: u64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            cpu,
            forwarded_per_sec,
            rooms,
            ..NodeInfo::default()
        }
    }

    #[test]
    fn idle_nodes_take_new_rooms_in_turn() {
        let nodes = [
            node("a", 0.03, 0, 0),
            node("b", 0.01, 0, 0),
            node("c", 0.02, 0, 0),
        ];
        let mut placed = HashMap::new();
        let mut order = Vec::new();
        for _ in 0..3 {
            let at = least_loaded(nodes.iter(), &placed, "a").expect("a node");
            *placed.entry(at.clone()).or_default() += 1;
            order.push(at);
        }
        order.sort();
        assert_eq!(order, ["a", "b", "c"], "three rooms, three nodes");
    }

    #[test]
    fn a_busy_node_gets_no_new_room() {
        let nodes = [
            node("a", 0.05, 0, 0),
            node("b", 1.6, 90_000, 0),
            node("c", 0.2, 5_000, 0),
        ];
        let placed = HashMap::from([("b".to_string(), 1), ("c".to_string(), 1)]);
        assert_eq!(
            least_loaded(nodes.iter(), &placed, "a").as_deref(),
            Some("a")
        );
        // The owner's world keeps it busy: a lightly loaded other node wins.
        let nodes = [
            node("a", 1.9, 0, 0),
            node("b", 1.6, 90_000, 0),
            node("c", 0.2, 5_000, 0),
        ];
        assert_eq!(
            least_loaded(nodes.iter(), &placed, "a").as_deref(),
            Some("c")
        );
    }

    #[test]
    fn link_frames_carry_the_member_and_the_news() {
        let frame = member_frame(AvatarId(0x01020304), b"hello");
        assert_eq!(&frame[..5], &[0, 4, 3, 2, 1]);
        assert_eq!(&frame[5..], b"hello");
        let news = news_frame(&FromMedia::Talk {
            room: 7,
            talk: vec![(AvatarId(3), 900)],
        })
        .expect("encodes");
        assert_eq!(news[0], 1);
        let back: FromMedia = rmp_serde::from_slice(&news[1..]).expect("decodes");
        assert!(
            matches!(back, FromMedia::Talk { room: 7, ref talk } if talk == &[(AvatarId(3), 900)])
        );
        let call = encode_call(&ToMedia::Leave {
            member: AvatarId(9),
        })
        .expect("encodes");
        assert!(
            matches!(rmp_serde::from_slice::<ToMedia>(&call), Ok(ToMedia::Leave { member }) if member == AvatarId(9))
        );
    }
}

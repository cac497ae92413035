//! The Quad protocol: every message either side can send, and which are legal when.
//!
//! Messages are two-level enums: [`ClientMsg`] from the browser, [`ServerMsg`] from the server.
//! [`SessionState::check`] is the one function that says which client messages are legal in
//! which state of a session. Hot messages (input, snapshots) have one-letter wire names,
//! because MessagePack writes variant names as strings.

use crate::ids::{AvatarId, ZoneId};
use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes shape. `Hello` carries it; a mismatch is refused with
/// [`ErrorCode::VersionMismatch`].
pub const PROTOCOL_VERSION: u16 = 10;

/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Positions on the wire for other avatars are in units of 1/`POSITION_QUANTUM` pixel.
pub const POSITION_QUANTUM: f32 = 4.0;

// ---------------------------------------------------------------------------------------------
// Client to server
// ---------------------------------------------------------------------------------------------

/// A message from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientMsg {
    /// The first message of every session.
    Hello(Hello),
    /// Movement input: hold `dir` for `steps` fixed movement steps.
    #[serde(rename = "i")]
    Input(Input),
    /// Asks for a [`ServerMsg::Pong`] with the same nonce (round-trip time).
    Ping { nonce: u32 },
    /// WebRTC signaling for the peer connection with `to`; relayed only along a proximity
    /// link the server created (see [`ServerMsg::ConnectPeer`]).
    Signal { to: AvatarId, signal: Signal },
    /// Whether this client's microphone and camera are on now (sent after `Welcome` and on
    /// every toggle); the server tells the people this avatar is linked with, and the room
    /// it is in.
    Media(MediaFlags),
    /// WebRTC signaling with the server's SFU for the room this avatar is in (after
    /// [`ServerMsg::JoinRoomMedia`]). The client offers once, with its microphone, camera and
    /// screen transceivers in that order; later offers come from the server.
    RoomSignal(Signal),
    /// The media of where this avatar moved to plays: the room's (`room: true`, after
    /// `JoinRoomMedia`) or a hallway peer's (`room: false`, after walking out of a room). The
    /// server may then close the old media; without it the old media goes after a short
    /// grace anyway.
    MediaReady { room: bool },
    /// In a room: how wide (device pixels) this client shows each member's camera, so the
    /// server sends each the simulcast layer that fits. At most [`MAX_ROOM_TILES`] entries.
    RoomTiles(Vec<(AvatarId, u16)>),
    /// A chat message (at most [`MAX_CHAT_CHARS`] characters, and at most
    /// [`CHAT_BURST`] in a row, then one per [`CHAT_SECONDS_PER_MESSAGE`]).
    Chat { to: ChatTo, text: String },
    /// A teacher's action in the room the teacher is in; refused for anyone else.
    Teacher(TeacherAction),
    /// Raise or lower this avatar's hand in its room.
    Hand { raised: bool },
    /// Whether this client is watching: the page is visible and, in focus mode, fullscreen.
    /// Sent on every change while in a room; teachers see students who are not.
    Attention { watching: bool },
    /// Asks for this person's class records ([`ServerMsg::Records`]): the recordings they
    /// may watch and, for teachers, the registers of the classes they taught.
    Records,
    /// A teacher shares a recording of their class with its students (or stops sharing).
    ShareRecording { id: String, shared: bool },
}

/// The longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 500;
/// Chat messages a client may send in a burst ...
pub const CHAT_BURST: u32 = 5;
/// ... and then one per this many seconds.
pub const CHAT_SECONDS_PER_MESSAGE: f32 = 1.0;
/// Chat history kept and sent per kind of chat.
pub const CHAT_HISTORY: usize = 100;

/// Who a chat message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChatTo {
    /// Everyone within talking distance (the proximity disconnect radius) when it is sent,
    /// in the same room or the same hallway.
    Nearby,
    /// Everyone in the sender's room.
    Room,
    /// Everyone in the space.
    Space,
    /// One person.
    Direct(AvatarId),
}

/// Someone a teacher acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Who {
    One(AvatarId),
    /// Every student in the room, and students who walk in later.
    Students,
}

/// A device the teacher can turn off for students.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    Mic,
    Camera,
    Screen,
}

/// What a teacher can do in a room. The server checks the sender is a teacher in that room
/// and enforces the effect itself (the SFU drops a muted student's packets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeacherAction {
    /// Turn a device off (`allowed: false`: mute, camera off, stop sharing) or allow it again.
    Allow {
        who: Who,
        device: Device,
        allowed: bool,
    },
    /// Show one participant large for everyone; `None` ends the spotlight.
    Spotlight(Option<AvatarId>),
    /// Send a student out of the room; it cannot walk back in while the class goes on.
    Remove(AvatarId),
    /// No one else (but teachers) may walk in while locked.
    Lock(bool),
    /// Focus mode: students see the teacher's stage and cannot walk.
    Focus(bool),
    /// Lower one raised hand, or all (`None`).
    LowerHand(Option<AvatarId>),
    /// Start (`true`) or stop recording the class. Everyone in the room sees that it
    /// records ([`ClassState::recording`]); the file is made when it stops.
    Record(bool),
}

impl TeacherAction {
    /// A short name for logs and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            TeacherAction::Allow { .. } => "allow",
            TeacherAction::Spotlight(_) => "spotlight",
            TeacherAction::Remove(_) => "remove",
            TeacherAction::Lock(_) => "lock",
            TeacherAction::Focus(_) => "focus",
            TeacherAction::LowerHand(_) => "lower-hand",
            TeacherAction::Record(_) => "record",
        }
    }
}

/// What a person is in the space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Joined with a teacher link: may use teacher controls in rooms.
    Teacher,
    /// Joined with a student link.
    Student,
    /// Joined with just a name (when the server allows guests); a student in rooms.
    #[default]
    Guest,
}

impl Role {
    pub fn is_teacher(self) -> bool {
        self == Role::Teacher
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Student => "student",
            Role::Guest => "guest",
        }
    }

    /// Parses `teacher`, `student` or `guest`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "teacher" => Some(Role::Teacher),
            "student" => Some(Role::Student),
            "guest" => Some(Role::Guest),
            _ => None,
        }
    }
}

/// The most entries a [`ClientMsg::RoomTiles`] may have.
pub const MAX_ROOM_TILES: usize = 256;

/// Which of an avatar's devices are sending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaFlags {
    pub mic: bool,
    pub camera: bool,
    /// Sharing a screen (older clients leave it out).
    #[serde(default)]
    pub screen: bool,
}

/// One WebRTC signaling message, as the browser's perfect-negotiation pattern produces them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Signal {
    /// A session description (`type` is offer, answer, pranswer or rollback).
    Description { kind: SdpKind, sdp: String },
    /// An ICE candidate; `candidate` is empty for end-of-candidates.
    Candidate {
        candidate: String,
        sdp_mid: Option<String>,
        sdp_m_line_index: Option<u16>,
    },
    /// Between hallway peers only: the sender has closed its connection with the receiver
    /// and opened a new one (its `generation`-th, counted from 1), because the old one said
    /// `connected` while nothing arrived on it. The receiver does the same, keeping its
    /// role, unless it is already at that generation (both sides renewed at once).
    Renew { generation: u32 },
}

/// The longest session description a client may send a linked peer ([`ClientMsg::Signal`]),
/// in bytes. A peer connection carries at most three m-lines (microphone, camera, screen);
/// a browser's offer lists every codec it has for each (about 1.5 kB for audio and up to
/// 5-6 kB for each video m-line in Chrome, less in Firefox), so real offers and answers are
/// under 16 kB. Twice that leaves room for browsers to grow.
pub const MAX_PEER_SDP_BYTES: usize = 32 * 1024;

/// The longest session description a client may send the room's SFU
/// ([`ClientMsg::RoomSignal`]), in bytes. The client's own offer has three m-lines, but its
/// answers to the server's offers have one m-section per forwarded stream: a lecture hall
/// of 120 with microphones and cameras is 240 m-sections of 600-800 bytes (about 150 kB,
/// see [`crate::codec::MAX_FRAME_BYTES`]). This leaves room for some screens on top.
pub const MAX_ROOM_SDP_BYTES: usize = 224 * 1024;

/// The longest ICE candidate (the `candidate` line plus `sdp_mid`), in bytes. Real ones are
/// under 200 bytes (`candidate:<foundation> 1 udp <priority> <ip> <port> typ ...`).
pub const MAX_CANDIDATE_BYTES: usize = 1024;

impl Signal {
    /// Whether this signaling message is no larger than a real one: a description of at
    /// most `max_sdp` bytes ([`MAX_PEER_SDP_BYTES`] between peers, [`MAX_ROOM_SDP_BYTES`]
    /// with the SFU), a candidate of at most [`MAX_CANDIDATE_BYTES`]. `what` names the
    /// message in the error (`"Signal"`, `"RoomSignal"`).
    pub fn check_size(&self, what: &str, max_sdp: usize) -> Result<(), ErrorMsg> {
        match self {
            Signal::Description { sdp, .. } if sdp.len() > max_sdp => Err(ErrorMsg::new(
                ErrorCode::TooLarge,
                format!(
                    "{what}: a session description of {} bytes; at most {max_sdp} are allowed",
                    sdp.len()
                ),
            )),
            Signal::Candidate {
                candidate, sdp_mid, ..
            } => {
                let len = candidate.len() + sdp_mid.as_ref().map_or(0, String::len);
                if len > MAX_CANDIDATE_BYTES {
                    Err(ErrorMsg::new(
                        ErrorCode::TooLarge,
                        format!(
                            "{what}: an ICE candidate of {len} bytes; at most {MAX_CANDIDATE_BYTES} are allowed"
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
            Signal::Description { .. } | Signal::Renew { .. } => Ok(()),
        }
    }

    /// Whether this is a session description or a renewal (each large or costly for its
    /// receiver, and rare; candidates are small and come in bursts, so the two are
    /// rate-limited apart).
    pub fn is_rare(&self) -> bool {
        matches!(self, Signal::Description { .. } | Signal::Renew { .. })
    }
}

/// The `type` of an `RTCSessionDescription`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SdpKind {
    Offer,
    Answer,
    Pranswer,
    Rollback,
}

/// Opens a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Display name, 1 to [`MAX_NAME_CHARS`] characters after trimming.
    pub name: String,
    /// A join token (for roles); guests send none.
    pub token: Option<String>,
    /// Where to appear, in world pixels. Honoured only by a server started with `--dev`.
    pub spawn: Option<[f32; 2]>,
    /// A random key this browser keeps, so a guest's direct and nearby chat history follows
    /// it across visits (people with a link are known by the link).
    #[serde(default)]
    pub device: Option<String>,
    /// The resume token of the session this client had (`Welcome::resume`): within the
    /// server's grace period it takes that session over (same avatar, place and room);
    /// otherwise the client joins afresh.
    #[serde(default)]
    pub resume: Option<String>,
    /// The classroom (by name) the client was in, for a rejoin after the session is gone
    /// (a server restart): it appears inside it again if it may enter.
    #[serde(default)]
    pub room: Option<String>,
}

/// Movement input. See [`crate::movement`] for how it is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// Strictly increasing per session; acknowledged in [`Snapshot::ack`].
    pub seq: u32,
    /// Direction bits ([`crate::movement::Dir`]).
    pub dir: u8,
    /// How many fixed steps of [`crate::movement::STEP_SECONDS`] the direction was held.
    pub steps: u8,
}

// ---------------------------------------------------------------------------------------------
// Server to client
// ---------------------------------------------------------------------------------------------

/// A message from the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerMsg {
    /// The answer to a good `Hello`.
    Welcome(Welcome),
    /// Authoritative positions for this client's area of interest.
    #[serde(rename = "s")]
    Snapshot(Snapshot),
    /// People who are in (or just entered) the space. Sent in full after `Welcome`, then as
    /// people join.
    PeopleJoined { people: Vec<Person> },
    /// People who left the space.
    PeopleLeft { ids: Vec<AvatarId> },
    /// Something the client sent was refused. The session goes on unless it is closed.
    Error(ErrorMsg),
    /// Answers [`ClientMsg::Ping`].
    Pong { nonce: u32 },
    /// Open a peer-to-peer connection with `peer` (proximity media). Both ends get it; the
    /// `polite` one yields when offers collide (the perfect-negotiation pattern).
    ConnectPeer {
        peer: AvatarId,
        polite: bool,
        /// The peer's microphone and camera state as the link forms.
        media: MediaFlags,
    },
    /// A linked peer turned its microphone or camera on or off.
    PeerMedia { peer: AvatarId, media: MediaFlags },
    /// Close the peer connection with `peer`; signaling with it is no longer relayed.
    DisconnectPeer { peer: AvatarId },
    /// Signaling relayed from `from`.
    Signal { from: AvatarId, signal: Signal },
    /// This avatar walked into a room zone: open one peer connection to the server's SFU,
    /// offering with [`ClientMsg::RoomSignal`]. Its proximity links stay until it sends
    /// [`ClientMsg::MediaReady`] (or a short grace ends); then `DisconnectPeer` closes them.
    JoinRoomMedia { room: ZoneId, name: String },
    /// This avatar left the room zone: close the SFU connection. Sent once its new
    /// proximity links play ([`ClientMsg::MediaReady`]), or a short grace after it walked out.
    LeaveRoomMedia { room: ZoneId },
    /// Signaling from the SFU (answers to the client's offer, the server's own offers when
    /// forwarded tracks come and go, ICE candidates).
    RoomSignal(Signal),
    /// Everyone in the room now, with what each publishes. Sent on every change.
    /// Forwarded tracks arrive in media streams whose id is `"<avatar>:<mic|camera|screen>"`.
    RoomMembers {
        room: ZoneId,
        members: Vec<RoomMember>,
    },
    /// Who is speaking now, loudest first (by the RTP audio level the publishers send).
    RoomSpeakers {
        room: ZoneId,
        speakers: Vec<AvatarId>,
    },
    /// A chat message for this client.
    Chat(ChatLine),
    /// Earlier messages, oldest first: on joining (space, nearby and direct) and on walking
    /// into a room (that room's). Lines may overlap live ones: their `id`s match.
    ChatHistory { lines: Vec<ChatLine> },
    /// The class in the room this avatar is in, sent on entering and on every change;
    /// `None` after walking out.
    Class(Option<ClassState>),
    /// To the room's teachers: a student stopped or started watching (left fullscreen in
    /// focus mode or hid the tab).
    Attention {
        student: AvatarId,
        name: String,
        watching: bool,
    },
    /// Something people should be told (e.g. that the teacher removed them from a room).
    Notice { text: String },
    /// Fresh TURN credentials, sent while the session lives, before the last ones stop
    /// being good for new relays (they are short-lived). Replaces `Welcome.ice_servers`
    /// for every connection from now on, and for ICE restarts of the open ones.
    IceServers { servers: Vec<IceServer> },
    /// To the sender only: its chat line `id` reached the people it was for (live), but the
    /// server could not store it (the disk is full, or the store's size limit is reached),
    /// so it will not be in anyone's history. Sent after the line itself.
    ChatNotSaved { id: u64 },
    /// Someone's connection dropped (`reconnecting: true`) and the server keeps their
    /// avatar for a while, or they are back (`false`). A person who does not come back in
    /// time leaves as usual (`PeopleLeft`).
    Reconnecting { id: AvatarId, reconnecting: bool },
    /// The server is shutting down to restart: connect again in `retry_after_ms` (spread
    /// over clients so they do not all return at once), resuming with `Welcome::resume`
    /// if the new process still has the session, or joining afresh.
    Restarting { retry_after_ms: u32 },
    /// To the teachers in a class: its register so far (every few seconds while it
    /// changes).
    ClassReport(ClassReport),
    /// This person's class records (the answer to [`ClientMsg::Records`], and again after
    /// a [`ClientMsg::ShareRecording`]).
    Records(RecordsList),
    /// To the teachers of a class (and whoever started the recording): what became of
    /// recording `id` of room `room`.
    Recording {
        id: String,
        room: String,
        news: RecordingNews,
    },
}

/// A class session's register as its teachers see it live: one row per person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassReport {
    /// The class session's id (for its CSV after class).
    pub session: String,
    pub room: String,
    pub started_ms: u64,
    pub rows: Vec<ReportRow>,
}

/// One person's attendance and engagement in a class session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    pub name: String,
    pub role: Role,
    /// In the room now.
    pub present: bool,
    /// How many times they came in.
    pub intervals: u32,
    pub present_ms: u64,
    /// How long they spoke.
    pub talk_ms: u64,
    pub hands: u32,
    pub chat_lines: u32,
    /// Times they stopped watching, and for how long in all.
    pub away_count: u32,
    pub away_ms: u64,
}

/// A person's class records: what [`ClientMsg::Records`] asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsList {
    /// Newest first.
    pub recordings: Vec<RecordingEntry>,
    /// The registers of classes this person taught, newest first (empty for students).
    pub classes: Vec<ClassEntry>,
}

/// One recording, as a person may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingEntry {
    pub id: String,
    pub room: String,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// `recording`, `mixing`, `ready` or `failed`.
    pub state: String,
    /// Why it failed or stopped early.
    pub message: String,
    /// Shared with the class's students.
    pub shared: bool,
    /// This person may share it (a teacher of its class).
    pub may_share: bool,
    /// Signed links that work for an hour: to play it, and to download it (ready ones).
    pub play_url: Option<String>,
    pub download_url: Option<String>,
}

/// One class session a teacher taught.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassEntry {
    pub session: String,
    pub room: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub people: u32,
    /// A signed link to its register as CSV (works for an hour).
    pub csv_url: String,
}

/// What became of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordingNews {
    /// It stopped by itself (the disk is full, it reached its longest); the class goes on.
    Stopped { reason: String },
    /// Its file is made.
    Ready { duration_ms: u64, bytes: u64 },
    /// No file could be made.
    Failed { message: String },
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    /// Increasing in the order messages were sent (also across restarts).
    pub id: u64,
    /// When it was sent, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub scope: ChatScope,
    /// The sender, if it is still this session's avatar (history from earlier sessions has
    /// `None`).
    pub from: Option<AvatarId>,
    pub from_name: String,
    pub from_role: Role,
    /// For direct messages: who it was sent to.
    pub to_name: Option<String>,
    /// As typed: show it as text, never as markup.
    pub text: String,
}

/// Which chat a line belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatScope {
    Nearby,
    /// The room's name.
    Room(String),
    Space,
    Direct,
}

/// A class: the teacher's settings for a room, for everyone in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassState {
    pub room: ZoneId,
    /// Teachers in the room.
    pub teachers: Vec<AvatarId>,
    /// No one but teachers may walk in.
    pub locked: bool,
    /// Focus mode: students watch the teacher's stage and cannot walk.
    pub focus: bool,
    /// Shown large for everyone.
    pub spotlight: Option<AvatarId>,
    /// Raised hands, the first raised first.
    pub hands: Vec<AvatarId>,
    /// Devices the teacher turned off, per student (`true`: off by the teacher).
    pub blocked: Vec<(AvatarId, MediaFlags)>,
    /// Devices off for students who walk in.
    pub blocked_for_newcomers: MediaFlags,
    /// Students who are not watching (see [`ClientMsg::Attention`]).
    pub away: Vec<AvatarId>,
    /// The class is being recorded: everyone in the room is told, and someone walking in
    /// is told before its media reaches the room.
    #[serde(default)]
    pub recording: bool,
}

impl ClassState {
    /// The devices the teacher turned off for `id`.
    pub fn blocked_of(&self, id: AvatarId) -> MediaFlags {
        self.blocked
            .iter()
            .find(|(who, _)| *who == id)
            .map(|(_, flags)| *flags)
            .unwrap_or_default()
    }
}

/// One member of a room, for the video grid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    pub id: AvatarId,
    pub name: String,
    /// What the member's client says it sends.
    pub media: MediaFlags,
}

/// Everything a client needs to enter the space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u16,
    pub you: AvatarId,
    /// The name the server settled on (trimmed).
    pub name: String,
    /// Where the map file is served, relative to the page (e.g. `/maps/campus.tmj`).
    pub map_url: String,
    /// Where the avatar starts, world pixels.
    pub spawn: [f32; 2],
    /// The server's tick rate.
    pub tick_hz: u16,
    /// The proximity rules, so the client can fade audio out by distance.
    pub proximity: crate::proximity::ProximityRules,
    /// STUN and TURN servers for peer connections, with credentials issued for this
    /// session (empty when the server offers none).
    pub ice_servers: Vec<IceServer>,
    /// The server runs in development mode: test-only page options (`?relay=1`) apply.
    pub dev: bool,
    /// What this person is: from the join link, or a guest.
    #[serde(default)]
    pub role: Role,
    /// The token that takes this session over after a lost connection (`Hello::resume`);
    /// keep it secret, as it stands for this person until the session ends.
    #[serde(default)]
    pub resume: Option<String>,
    /// How long, seconds, the server keeps the avatar of a lost connection for a resume.
    #[serde(default)]
    pub resume_grace_secs: u16,
    /// This session took over an earlier one (`Hello::resume`) rather than starting afresh.
    #[serde(default)]
    pub resumed: bool,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp|tcp`.
    pub urls: Vec<String>,
    /// TURN user name (coturn REST scheme: `expiry:user`); none for STUN.
    pub username: Option<String>,
    /// TURN password for `username`.
    pub credential: Option<String>,
}

/// One person in the space, for the people list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: AvatarId,
    pub name: String,
    /// Shown beside the name, so a guest cannot pass for a teacher by taking a name.
    pub role: Role,
}

/// Authoritative state for one client, sent about 10 times a second (on the client's
/// staggered turn) when something it can see changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub tick: u32,
    /// The last input sequence number the server applied for this client.
    pub ack: u32,
    /// This client's own position (exact, for reconciliation), when it changed or `ack` moved.
    pub you: Option<[f32; 2]>,
    /// Other avatars in the area of interest whose position changed (or that just came into
    /// view). Not every change is sent in every snapshot: a per-client byte budget decides.
    pub avatars: Vec<AvatarUpdate>,
    /// Avatars that left this client's area of interest (or the space).
    pub gone: Vec<AvatarId>,
}

/// Another avatar's position, quantized to 1/[`POSITION_QUANTUM`] pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarUpdate(pub AvatarId, pub u16, pub u16);

impl AvatarUpdate {
    /// Quantizes a world position (clamped to the representable range).
    pub fn new(id: AvatarId, pos: [f32; 2]) -> Self {
        let (x, y) = quantize(pos);
        AvatarUpdate(id, x, y)
    }

    /// The position in world pixels.
    pub fn position(&self) -> [f32; 2] {
        [
            self.1 as f32 / POSITION_QUANTUM,
            self.2 as f32 / POSITION_QUANTUM,
        ]
    }
}

/// Quantizes a world position to wire units (1/[`POSITION_QUANTUM`] px), rounding to the
/// nearest and clamping to the representable range. Cheap: no libm call. `u16::MAX` is never
/// produced, so the server can use it for "no position sent yet".
pub fn quantize(pos: [f32; 2]) -> (u16, u16) {
    // Clamped to be non-negative first, so adding a half and truncating rounds to nearest.
    let q = |v: f32| ((v * POSITION_QUANTUM).clamp(0.0, (u16::MAX - 1) as f32) + 0.5) as u16;
    (q(pos[0]), q(pos[1]))
}

/// A refusal: a stable code for programs and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    pub message: String,
}

/// Why something was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame was not a decodable message.
    Malformed,
    /// The frame was over the size limit.
    TooLarge,
    /// A text frame: the protocol uses binary frames only.
    NotBinary,
    /// The message is not legal in the session's current state.
    WrongState,
    /// The client speaks another protocol version.
    VersionMismatch,
    /// The display name is empty or too long.
    BadName,
    /// The movement input is not one a real client could send.
    IllegalMove,
    /// The server is full or shutting down.
    Unavailable,
    /// The client sent more than the server accepts per second.
    RateLimited,
    /// Not allowed: e.g. signaling an avatar the server has not linked this one with.
    Forbidden,
    /// The join link is not valid (forged, expired, or guests are not allowed without one).
    Unauthorized,
}

impl ErrorMsg {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorMsg {
            code,
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session states
// ---------------------------------------------------------------------------------------------

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Connected; nothing but `Hello` (and `Ping`) is legal.
    AwaitingHello,
    /// `Hello` accepted: the avatar is in the space.
    InSpace,
}

impl SessionState {
    /// Says whether `msg` is legal in this state; the error says why not.
    pub fn check(self, msg: &ClientMsg) -> Result<(), ErrorMsg> {
        use ClientMsg::*;
        match (self, msg) {
            (_, Ping { .. }) => Ok(()),
            (SessionState::AwaitingHello, Hello(_)) => Ok(()),
            (SessionState::AwaitingHello, other) => Err(ErrorMsg::new(
                ErrorCode::WrongState,
                format!("{} before Hello: send Hello first", other.kind()),
            )),
            (SessionState::InSpace, Hello(_)) => Err(ErrorMsg::new(
                ErrorCode::WrongState,
                "Hello was already accepted for this session",
            )),
            (SessionState::InSpace, _) => Ok(()),
        }
    }
}

impl ClientMsg {
    /// The message's name, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Hello(_) => "Hello",
            ClientMsg::Input(_) => "Input",
            ClientMsg::Ping { .. } => "Ping",
            ClientMsg::Signal { .. } => "Signal",
            ClientMsg::Media(_) => "Media",
            ClientMsg::RoomSignal(_) => "RoomSignal",
            ClientMsg::MediaReady { .. } => "MediaReady",
            ClientMsg::RoomTiles(_) => "RoomTiles",
            ClientMsg::Chat { .. } => "Chat",
            ClientMsg::Teacher(_) => "Teacher",
            ClientMsg::Hand { .. } => "Hand",
            ClientMsg::Attention { .. } => "Attention",
            ClientMsg::Records => "Records",
            ClientMsg::ShareRecording { .. } => "ShareRecording",
        }
    }
}

/// Checks and normalizes a display name: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no
/// control characters.
pub fn normalize_name(name: &str) -> Result<String, ErrorMsg> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(ErrorMsg::new(ErrorCode::BadName, "the name is empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(ErrorMsg::new(
            ErrorCode::BadName,
            format!("the name has {chars} characters; at most {MAX_NAME_CHARS} are allowed"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ErrorMsg::new(
            ErrorCode::BadName,
            "the name contains control characters",
        ));
    }
    Ok(name.to_owned())
}

/// Checks and normalizes a chat message: trimmed, 1 to [`MAX_CHAT_CHARS`] characters, no
/// control characters but line breaks and tabs.
pub fn normalize_chat(text: &str) -> Result<String, ErrorMsg> {
    let text = text.trim();
    let chars = text.chars().count();
    if chars == 0 {
        return Err(ErrorMsg::new(ErrorCode::Malformed, "the message is empty"));
    }
    if chars > MAX_CHAT_CHARS {
        return Err(ErrorMsg::new(
            ErrorCode::TooLarge,
            format!("the message has {chars} characters; at most {MAX_CHAT_CHARS} are allowed"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ErrorMsg::new(
            ErrorCode::Malformed,
            "the message contains control characters",
        ));
    }
    Ok(text.to_owned())
}

//! The SFU: forwards each room member's microphone, camera and screen RTP to every other
//! member, without transcoding. One WebRTC peer connection per member carries both
//! directions; the server renegotiates (its own offers) as forwarded tracks come and go.
//!
//! - [`Sfu`] is the front door, called by the space task (who is in which room) and by
//!   sessions (signaling). It never blocks: it hands work to actors over channels.
//! - `room`: one task per room; knows its members and published streams, wires
//!   subscriptions, picks the loudest speakers.
//! - `member`: one task per member; owns its peer connection and does its negotiation's
//!   I/O; `negotiation`: who offers when and what is due, a plain state machine.
//! - `forward`: one task per published stream; rewrites and writes each packet to every
//!   subscriber. Lock-free: its subscriber list is owned by the task and changed by messages.
//! - `direct`: a member connection's own send path for forwarded microphones (numbered,
//!   SRTP-encrypted and queued on the media port by the forwarder, bypassing webrtc-rs's
//!   per-packet pipeline), on m-lines Quad writes into the offers itself (`mic_lines`, so
//!   that webrtc-rs keeps no transceiver for them), with `srtp_keys` (the keys, learnt through the connection's
//!   crypto provider) and `transport_cc` (one transport-wide numbering and send history
//!   for both paths).
//! - `leg`: one viewer's share of one stream (its layer, its switches at keyframes, its
//!   renumbering), a plain state machine the forward task drives.
//! - `speakers`: the N-loudest rule, a pure function.
//! - [`allocation`]: which layer of each video stream fits a member's bandwidth estimate,
//!   a pure function the room applies at each tick; `trials`: the hold on a raise that
//!   did not fit, a state machine per member.
//! - `engine`: how a peer connection is built; `estimator`: the bandwidth estimate of what
//!   it sends, from the member's transport-wide feedback; `retransmission`: the budget its
//!   NACK resends get out of that estimate.
//! - `media_port`: the one UDP socket all connections share, and `demux`, which decides
//!   whose each datagram arriving there is; `batch_udp`: each connection's virtual socket
//!   on it.
//! - [`admission`]: what client signaling is taken (m-lines, candidates), a pure function.
//! - [`limits`]: how much one member's client may make the SFU do: its offer budget, and
//!   how many of the commands it caused may be queued at once. Commands from the space
//!   (join, leave, restrict, close) and between the SFU's own tasks are never refused.
//!
//! The SFU knows nothing about maps or zones: rooms are [`RoomId`]s given by the caller.

pub mod admission;
pub mod allocation;
mod batch_udp;
pub mod demux;
mod direct;
mod engine;
mod estimator;
mod forward;
mod leg;
pub mod limits;
pub mod media_port;
mod member;
pub mod mic_lines;
mod negotiation;
mod retransmission;
mod reused_timer;
mod room;
pub mod speakers;
mod srtp_keys;
pub mod ssrc_quota;
mod transport_cc;
mod trials;

use crate::media::recording::{self, RecordRequest, Recorder, RecordingSetup};
use crate::session::SessionOutbox;
use dashmap::DashMap;
use quad_shared::AvatarId;
use quad_shared::protocol::{ErrorCode, ErrorMsg, MediaFlags, SdpKind, Signal};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A room, as the caller names it. The space uses the room zone's id, which is also what
/// clients are told.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RoomId(pub u16);

/// Which of a member's devices a stream carries (the wire contract's: the client's offer
/// lists its transceivers in this order, so the first m-line is the microphone, the second
/// the camera, the third the screen).
pub use quad_shared::media::Source;

/// Tunables of the SFU.
#[derive(Clone, Debug)]
pub struct SfuConfig {
    /// The local IP the media port is bound to.
    pub bind_ip: IpAddr,
    /// The UDP port every member's connection shares (0: one the OS picks).
    pub media_port: u16,
    /// The address browsers reach the server's media port at, when not `bind_ip` (1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// How many of the loudest speakers are forwarded in a room.
    pub max_speakers: usize,
    /// How long a member's connection may stay disconnected before it is removed.
    pub member_timeout: Duration,
    /// Which client candidates the server may send connectivity checks to.
    pub egress: crate::egress::EgressPolicy,
}

/// Counters for `/metrics`, shared by every SFU task; relaxed atomics on the packet path.
#[derive(Debug, Default)]
pub struct SfuMetrics {
    pub rooms: AtomicU64,
    pub members: AtomicU64,
    pub forwarded_packets: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    /// Forwarded packets that went out on Quad's direct path (`direct`), not webrtc-rs's.
    pub direct_packets: AtomicU64,
    /// Packets that could not be handed to a subscriber's connection (it was closed, or a
    /// direct path was not up yet).
    pub dropped_packets: AtomicU64,
    /// Packets dropped for one viewer whose connection's queue was full (the others got
    /// them: a slow connection never holds a stream up).
    pub viewer_queue_full: AtomicU64,
    /// Audio packets held back by the loudest-speakers rule.
    pub suppressed_packets: AtomicU64,
    /// Packets dropped because a teacher turned that device off.
    pub blocked_packets: AtomicU64,
    /// UDP datagrams the SFU's connections sent, and the sends (system calls) they took.
    pub udp_datagrams: AtomicU64,
    pub udp_sends: AtomicU64,
    /// Datagrams dropped because a connection's send queue was full.
    pub udp_dropped_datagrams: AtomicU64,
    /// Datagrams at the media port that belonged to no connection (dropped).
    pub udp_unrouted: AtomicU64,
    /// Datagrams at the media port dropped because their connection's inbox was full.
    pub udp_inbox_dropped: AtomicU64,
    /// RTP and RTCP at the media port dropped because their connection's client had sent
    /// from as many SSRCs as it may (see [`ssrc_quota`]).
    pub udp_ssrc_refused: AtomicU64,
    /// Commands from members' clients queued and not yet handled (see [`limits::Queued`]).
    pub queued_commands: AtomicU64,
    /// The most commands one member's client has had queued at once.
    pub queued_commands_peak: AtomicU64,
    /// Client signaling, tiles and device reports refused for coming too fast.
    pub rate_limited: AtomicU64,
    /// Allocations (one member, one tick) made within a bandwidth estimate: its client
    /// sends transport-wide feedback on what the server sends it.
    pub estimated_allocations: AtomicU64,
    /// Send-only m-lines for forwarded streams on members' connections, carrying a stream
    /// or idle for the next one (see `member::Slot`).
    pub forward_slots: AtomicU64,
    /// Those of them idle.
    pub idle_slots: AtomicU64,
    /// Recordings in progress.
    pub recordings: AtomicU64,
    /// Packets a recorder could not take (its queue was full): lost to the recording only.
    pub recording_dropped: AtomicU64,
}

/// How long members of a room spoke since the room last said (its microphone's audio
/// level above [`speakers::SPEAKING_LOUDNESS`], whether forwarded or not), in ms; sent
/// about once a second while anyone speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TalkTime {
    pub room: RoomId,
    pub talk: Vec<(AvatarId, u32)>,
}

/// Who joins a room's media, as the room needs to know it.
#[derive(Debug)]
pub struct Joining {
    pub name: String,
    pub media: MediaFlags,
    /// A teacher: its microphone is forwarded whatever the loudest-speakers rule says.
    pub always_heard: bool,
}

/// Devices turned off per member (by a teacher): their packets are dropped, not forwarded.
pub type Restrictions = Arc<DashMap<AvatarId, MediaFlags>>;

/// A member, as the front door knows it: where its client's commands go and how many more
/// it may send. A new one at each join: a join is a new connection, and its first offer.
struct Door {
    room: RoomId,
    offers: limits::OfferBudget,
    /// Commands its client caused that are queued and not yet handled.
    queued: Arc<AtomicUsize>,
}

/// The front door of the SFU.
pub struct Sfu {
    config: Arc<SfuConfig>,
    metrics: Arc<SfuMetrics>,
    port: Arc<media_port::MediaPort>,
    /// Which room each member is in (sessions look here to route signaling), and its limits.
    members: DashMap<AvatarId, Door>,
    restrictions: Restrictions,
    /// Running rooms, with how many members each has (only the space task changes these).
    rooms: Mutex<rustc_hash::FxHashMap<RoomId, (room::RoomHandle, usize)>>,
    /// Where and how rooms are recorded (not at all, until set).
    recordings: std::sync::OnceLock<RecordingSetup>,
    /// Where rooms report who spoke (the space's class registers), once set.
    talk: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<TalkTime>>,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("members", &self.members.len())
            .finish()
    }
}

impl Sfu {
    /// Binds the media port (on the tokio runtime).
    pub fn new(config: SfuConfig) -> std::io::Result<Arc<Sfu>> {
        let metrics = Arc::new(SfuMetrics::default());
        let port = media_port::MediaPort::bind(config.bind_ip, config.media_port, metrics.clone())?;
        Ok(Arc::new(Sfu {
            config: Arc::new(config),
            metrics,
            port,
            members: DashMap::new(),
            restrictions: Arc::new(DashMap::new()),
            rooms: Mutex::new(Default::default()),
            recordings: std::sync::OnceLock::new(),
            talk: std::sync::OnceLock::new(),
        }))
    }

    /// Has rooms report who spoke to `to` (once; later calls change nothing; rooms that
    /// already run do not).
    pub fn report_talk(&self, to: tokio::sync::mpsc::UnboundedSender<TalkTime>) {
        let _ = self.talk.set(to);
    }

    /// Lets teachers record their classes (once; later calls change nothing).
    pub fn enable_recordings(&self, setup: RecordingSetup) {
        let _ = self.recordings.set(setup);
    }

    /// Starts recording `room` for `request`: the recording's id, or why it could not start.
    pub fn record(&self, room: RoomId, request: RecordRequest) -> Result<String, ErrorMsg> {
        let Some(setup) = self.recordings.get() else {
            return Err(ErrorMsg::new(
                ErrorCode::Unavailable,
                "this server does not record classes",
            ));
        };
        let Some(handle) = self.lock_rooms().get(&room).map(|(h, _)| h.clone()) else {
            return Err(ErrorMsg::new(
                ErrorCode::WrongState,
                "the room's media has not started yet: try again in a moment",
            ));
        };
        let recorder =
            Recorder::start(setup, room, request, self.metrics.clone()).map_err(|e| {
                tracing::error!(dir = %setup.dir.display(), "a recording could not start: {e}");
                ErrorMsg::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the recording could not start: {}",
                        recording::recorder::write_failure(&e)
                    ),
                )
            })?;
        let id = recorder.id.clone();
        handle.send(room::RoomCmd::Record(Some(recorder)));
        Ok(id)
    }

    /// Stops recording `room`, if it records.
    pub fn stop_recording(&self, room: RoomId) {
        self.send_to_room(room, room::RoomCmd::Record(None));
    }

    /// Who is spotlit in `room` (its recording's picture follows it).
    pub fn spotlight(&self, room: RoomId, who: Option<AvatarId>) {
        self.send_to_room(room, room::RoomCmd::Spotlight(who));
    }

    pub fn metrics(&self) -> &SfuMetrics {
        &self.metrics
    }

    /// The address of the media port.
    pub fn media_addr(&self) -> std::net::SocketAddr {
        self.port.addr()
    }

    /// Puts `member` in `room` (leaving any other room first). Frames for the member's
    /// client go to `outbox`.
    pub fn join(
        &self,
        room: RoomId,
        room_name: &str,
        member: AvatarId,
        joining: Joining,
        outbox: SessionOutbox,
    ) {
        if self.members.get(&member).map(|d| d.room) == Some(room) {
            return;
        }
        self.leave(member);
        let mut rooms = self.lock_rooms();
        let entry = rooms.entry(room).or_insert_with(|| {
            self.metrics.rooms.fetch_add(1, Ordering::Relaxed);
            (
                room::spawn(
                    room,
                    room_name.to_owned(),
                    self.config.clone(),
                    self.metrics.clone(),
                    self.port.clone(),
                    self.restrictions.clone(),
                    self.talk.get().cloned(),
                ),
                0,
            )
        });
        entry.1 += 1;
        entry.0.send(room::RoomCmd::Join {
            member,
            joining,
            outbox,
        });
        self.members.insert(
            member,
            Door {
                room,
                offers: limits::OfferBudget::new(Instant::now()),
                queued: Arc::new(AtomicUsize::new(0)),
            },
        );
    }

    /// Members the front door knows (for `/metrics`: the soak run watches it for leaks).
    pub fn doors(&self) -> usize {
        self.members.len()
    }

    /// Takes `member` out of its room, if it is in one. The room ends with its last member.
    pub fn leave(&self, member: AvatarId) {
        let Some((_, Door { room, .. })) = self.members.remove(&member) else {
            return;
        };
        let mut rooms = self.lock_rooms();
        if let Some(entry) = rooms.get_mut(&room) {
            entry.0.send(room::RoomCmd::Leave { member });
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                entry.0.send(room::RoomCmd::Close);
                rooms.remove(&room);
                self.metrics.rooms.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Signaling from `member`'s client for its room connection. An offer beyond its
    /// budget, or any signal while too many of its commands wait, is refused before its
    /// SDP is looked at.
    pub fn signal(&self, member: AvatarId, signal: Signal) -> Result<(), ErrorMsg> {
        if let Signal::Renew { .. } = signal {
            return Err(ErrorMsg::new(
                ErrorCode::Malformed,
                "RoomSignal: Renew is for hallway links; a room connection is renewed by \
                 leaving and joining the room",
            ));
        }
        let offer = matches!(
            signal,
            Signal::Description {
                kind: SdpKind::Offer,
                ..
            }
        );
        let (room, queued) = self.admit(member, offer)?.ok_or_else(not_in_a_room)?;
        if let Some(signal) = admission::admit(signal, &self.config.egress)? {
            self.send_to_room(
                room,
                room::RoomCmd::Signal {
                    member,
                    signal,
                    queued,
                },
            );
        }
        Ok(())
    }

    /// `member`'s client reported its devices; its room tells everyone. Outside a room
    /// there is nothing to do.
    pub fn media(&self, member: AvatarId, media: MediaFlags) -> Result<(), ErrorMsg> {
        if let Some((room, queued)) = self.admit(member, false)? {
            self.send_to_room(
                room,
                room::RoomCmd::Media {
                    member,
                    media,
                    queued,
                },
            );
        }
        Ok(())
    }

    /// Drops `member`'s packets of the devices set in `off` (a teacher turned them off),
    /// wherever it is; all false forwards them again.
    pub fn restrict(&self, member: AvatarId, off: MediaFlags) {
        if off == MediaFlags::default() {
            if self.restrictions.remove(&member).is_none() {
                return;
            }
        } else if self.restrictions.insert(member, off) == Some(off) {
            return;
        }
        if let Ok(room) = self.room_of(member) {
            self.send_to_room(room, room::RoomCmd::Restrict { member });
        }
    }

    /// `member`'s client shows these cameras at these widths (device pixels): each gets
    /// the simulcast layer that fits. Outside a room there is nothing to do.
    pub fn tiles(&self, member: AvatarId, tiles: Vec<(AvatarId, u16)>) -> Result<(), ErrorMsg> {
        if let Some((room, queued)) = self.admit(member, false)? {
            self.send_to_room(
                room,
                room::RoomCmd::Tiles {
                    member,
                    tiles,
                    queued,
                },
            );
        }
        Ok(())
    }

    /// The room `member` is in.
    pub fn room_of(&self, member: AvatarId) -> Result<RoomId, ErrorMsg> {
        self.members
            .get(&member)
            .map(|d| d.room)
            .ok_or_else(not_in_a_room)
    }

    /// Whether `member`'s client may have one more command queued (and spend an offer, for
    /// an offer): its room and the command's place in its allowance, `None` outside a
    /// room, or the refusal.
    fn admit(
        &self,
        member: AvatarId,
        offer: bool,
    ) -> Result<Option<(RoomId, limits::Queued)>, ErrorMsg> {
        // The entry's lock is held only here: `join` takes `rooms` before `members`.
        let Some(mut door) = self.members.get_mut(&member) else {
            return Ok(None);
        };
        let Some(queued) = limits::Queued::take(&door.queued, &self.metrics) else {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(ErrorMsg::new(
                ErrorCode::RateLimited,
                format!(
                    "too many room messages waiting: at most {} from one client are queued \
                     at a time; this one was dropped",
                    limits::MAX_QUEUED
                ),
            ));
        };
        if offer && let Err(wait) = door.offers.take(Instant::now()) {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(ErrorMsg::new(
                ErrorCode::RateLimited,
                format!(
                    "too many room offers: a client offers when it joins a room's media and \
                     when the server asks it to connect again; {burst} in a row, then one \
                     every {refill} s (the next in {wait:.1} s). This one was not answered",
                    burst = limits::OFFER_BURST,
                    refill = limits::OFFER_REFILL.as_secs(),
                    wait = wait.as_secs_f64(),
                ),
            ));
        }
        Ok(Some((door.room, queued)))
    }

    fn send_to_room(&self, room: RoomId, cmd: room::RoomCmd) {
        if let Some(entry) = self.lock_rooms().get(&room) {
            entry.0.send(cmd);
        }
    }

    fn lock_rooms(
        &self,
    ) -> std::sync::MutexGuard<'_, rustc_hash::FxHashMap<RoomId, (room::RoomHandle, usize)>> {
        // A panic while holding this lock would be a bug; the map stays usable either way.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every room (server shutdown).
    pub fn close_all(&self) {
        let mut rooms = self.lock_rooms();
        for (_, (handle, _)) in rooms.drain() {
            handle.send(room::RoomCmd::Close);
        }
        self.members.clear();
        self.metrics.rooms.store(0, Ordering::Relaxed);
    }
}

fn not_in_a_room() -> ErrorMsg {
    ErrorMsg::new(
        ErrorCode::WrongState,
        "RoomSignal outside a room: the server has not sent JoinRoomMedia",
    )
}

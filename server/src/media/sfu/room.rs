//! One room: a task that knows the room's members and their published streams, subscribes
//! every member to everyone else's streams, tells clients who is in the room and who is
//! speaking, applies the loudest-speakers rule, and fits each member's video into its
//! connection's bandwidth estimate ([`super::allocation`], at each [`ALLOCATION_TICK`]),
//! holding back a raise that failed ([`super::trials`]).
//!
//! A member's connection (its member task) starts with the client's offer. When it is lost
//! (disconnected past the timeout), its streams are withdrawn from everyone and the client is
//! asked to connect again; if the client is gone too, its session's leave removes it.

use super::allocation::{self, Allotment, Priority, VideoStream};
use super::estimator::DownlinkEstimate;
use super::forward::{self, ForwardCtl, StreamStats};
use super::limits::Queued;
use super::media_port::MediaPort;
use super::member::{self, MemberCmd, MemberSetup};
use super::speakers::{self, MicLevel};
use super::trials::Trials;
use super::{Restrictions, RoomId, SfuConfig, SfuMetrics, Source, TalkTime};
use crate::media::recording::{self, Recorder};
use crate::session::SessionOutbox;
use bytes::Bytes;
use quad_shared::protocol::{MediaFlags, RoomMember, SdpKind, ServerMsg, Signal};
use quad_shared::{AvatarId, ZoneId};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the room re-ranks its speakers.
const SPEAKER_TICK: Duration = Duration::from_millis(100);
/// How often the room fits each member's video into its bandwidth estimate. Several
/// feedback reports apart, so that each decision sees the last one's effect begin.
pub const ALLOCATION_TICK: Duration = Duration::from_millis(500);

/// What the SFU and member tasks tell a room. The commands a member's client caused hold
/// a [`Queued`] place in its allowance until handled (here, or by the member's task).
pub enum RoomCmd {
    Join {
        member: AvatarId,
        joining: super::Joining,
        outbox: SessionOutbox,
    },
    Leave {
        member: AvatarId,
    },
    Signal {
        member: AvatarId,
        signal: Signal,
        queued: Queued,
    },
    Media {
        member: AvatarId,
        media: MediaFlags,
        queued: Queued,
    },
    /// How wide a member's client shows each camera.
    Tiles {
        member: AvatarId,
        tiles: Vec<(AvatarId, u16)>,
        queued: Queued,
    },
    /// A member's track started arriving.
    Published(Published),
    /// A member's connection was lost.
    Gone {
        member: AvatarId,
    },
    /// A member's restrictions changed (see [`super::Sfu::restrict`]).
    Restrict {
        member: AvatarId,
    },
    /// Start recording with this recorder (`None`: stop).
    Record(Option<Recorder>),
    /// Who the teacher spotlights (the recording's picture follows it).
    Spotlight(Option<AvatarId>),
    Close,
}

/// A stream a member publishes, as subscribers need it.
#[derive(Clone)]
pub struct Published {
    pub publisher: AvatarId,
    pub kind: Source,
    pub codec: RTCRtpCodec,
    pub ctl: mpsc::UnboundedSender<ForwardCtl>,
    pub stats: Arc<StreamStats>,
}

/// A way to reach a room's task.
#[derive(Clone)]
pub struct RoomHandle(mpsc::UnboundedSender<RoomCmd>);

impl RoomHandle {
    pub fn send(&self, cmd: RoomCmd) {
        // A closed room has no one left to tell.
        let _ = self.0.send(cmd);
    }
}

struct Entry {
    name: String,
    media: MediaFlags,
    /// A teacher: always forwarded (see [`speakers`]).
    always_heard: bool,
    outbox: SessionOutbox,
    /// The member's connection task, once its client has offered.
    connection: Option<mpsc::UnboundedSender<MemberCmd>>,
    /// How wide its client shows each camera, as last reported.
    tiles: Vec<(AvatarId, u16)>,
    /// Its connection's bandwidth estimate (with its connection).
    downlink: Option<Arc<DownlinkEstimate>>,
    /// What the allocation last allotted it of each stream it is sent (at most one entry
    /// per stream in the room).
    allotted: rustc_hash::FxHashMap<(AvatarId, Source), Allotment>,
    /// Its raises on trial, and the hold after one that failed (with its connection).
    trials: Trials,
}

struct Room {
    id: RoomId,
    /// The room's display name (for `JoinRoomMedia`).
    name: String,
    handle: RoomHandle,
    config: Arc<SfuConfig>,
    metrics: Arc<SfuMetrics>,
    port: Arc<MediaPort>,
    restrictions: Restrictions,
    /// Members in the order they joined.
    members: Vec<(AvatarId, Entry)>,
    streams: Vec<Published>,
    /// Each microphone's packet count at the last speaker tick (in `streams` order of mics).
    mic_packets: rustc_hash::FxHashMap<AvatarId, u64>,
    speakers: Vec<AvatarId>,
    spotlight: Option<AvatarId>,
    recording: Option<Recording>,
    /// Who spoke how long since last reported, and where to report it.
    talk: rustc_hash::FxHashMap<AvatarId, u32>,
    talk_ticks: u32,
    talk_to: Option<mpsc::UnboundedSender<TalkTime>>,
}

/// The room's recording: its recorder, and which stream is its picture.
struct Recording {
    recorder: Recorder,
    picture: Option<(AvatarId, Source)>,
}

/// Starts a room's task.
pub fn spawn(
    id: RoomId,
    name: String,
    config: Arc<SfuConfig>,
    metrics: Arc<SfuMetrics>,
    port: Arc<MediaPort>,
    restrictions: Restrictions,
    talk_to: Option<mpsc::UnboundedSender<TalkTime>>,
) -> RoomHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = RoomHandle(tx);
    let room = Room {
        id,
        name,
        handle: handle.clone(),
        config,
        metrics,
        port,
        restrictions,
        members: Vec::new(),
        streams: Vec::new(),
        mic_packets: Default::default(),
        speakers: Vec::new(),
        spotlight: None,
        recording: None,
        talk: Default::default(),
        talk_ticks: 0,
        talk_to,
    };
    tokio::spawn(run(room, rx));
    handle
}

async fn run(mut room: Room, mut rx: mpsc::UnboundedReceiver<RoomCmd>) {
    let mut tick = tokio::time::interval(SPEAKER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut allocation = tokio::time::interval(ALLOCATION_TICK);
    allocation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None | Some(RoomCmd::Close) => break,
                Some(cmd) => room.command(cmd),
            },
            _ = tick.tick() => room.rank_speakers(),
            _ = allocation.tick() => {
                room.allocate();
                room.follow_picture();
            }
        }
    }
    room.stop_recording();
    for (_, entry) in std::mem::take(&mut room.members) {
        if let Some(connection) = entry.connection {
            let _ = connection.send(MemberCmd::Close);
        }
        room.metrics.members.fetch_sub(1, Ordering::Relaxed);
    }
    tracing::debug!(room = room.id.0, "room closed");
}

impl Room {
    fn entry(&mut self, id: AvatarId) -> Option<&mut Entry> {
        self.members
            .iter_mut()
            .find(|(m, _)| *m == id)
            .map(|(_, e)| e)
    }

    fn command(&mut self, cmd: RoomCmd) {
        match cmd {
            RoomCmd::Join {
                member,
                joining:
                    super::Joining {
                        name,
                        media,
                        always_heard,
                    },
                outbox,
            } => {
                if self.entry(member).is_some() {
                    return;
                }
                self.members.push((
                    member,
                    Entry {
                        name,
                        media,
                        always_heard,
                        outbox,
                        connection: None,
                        tiles: Vec::new(),
                        downlink: None,
                        allotted: Default::default(),
                        trials: Trials::default(),
                    },
                ));
                self.metrics.members.fetch_add(1, Ordering::Relaxed);
                tracing::info!(room = self.id.0, %member, members = self.members.len(), "joined room media");
                self.announce_members();
            }
            RoomCmd::Leave { member } => {
                if self.members.iter().any(|(m, _)| *m == member) {
                    self.remove_member(member);
                    self.members.retain(|(m, _)| *m != member);
                    tracing::info!(room = self.id.0, %member, members = self.members.len(), "left room media");
                    self.announce_members();
                }
            }
            RoomCmd::Signal {
                member,
                signal,
                queued,
            } => self.signal(member, signal, queued),
            RoomCmd::Media {
                member,
                media,
                queued: _handled_here,
            } => {
                if let Some(entry) = self.entry(member)
                    && entry.media != media
                {
                    entry.media = media;
                    self.announce_members();
                }
            }
            RoomCmd::Tiles {
                member,
                tiles,
                queued,
            } => {
                // Only the room's other members have cameras to show: a client cannot make
                // its member's task remember layers for anyone else.
                let mut tiles: Vec<(AvatarId, u16)> = tiles
                    .into_iter()
                    .filter(|(id, _)| *id != member && self.members.iter().any(|(m, _)| m == id))
                    .collect();
                tiles.sort_unstable_by_key(|(id, _)| *id);
                tiles.dedup_by_key(|(id, _)| *id);
                if let Some(entry) = self.entry(member) {
                    if let Some(connection) = &entry.connection {
                        let _ = connection.send(MemberCmd::Tiles(tiles.clone(), Some(queued)));
                    }
                    entry.tiles = tiles;
                }
            }
            RoomCmd::Published(published) => self.published(published),
            RoomCmd::Restrict { member } => {
                for stream in self.streams.iter().filter(|s| s.publisher == member) {
                    self.apply_restriction(stream);
                }
                self.announce_members();
            }
            RoomCmd::Gone { member } => {
                self.withdraw_streams(member);
                // Ask the client to connect again (it is told who is in the room when its new
                // offer comes); if it is gone, its leave follows.
                let msg = ServerMsg::JoinRoomMedia {
                    room: ZoneId(self.id.0),
                    name: self.name.clone(),
                };
                if let Some(entry) = self.entry(member) {
                    entry.connection = None;
                    entry.downlink = None;
                    entry.allotted.clear();
                    send(&entry.outbox, &msg);
                }
            }
            RoomCmd::Record(recorder) => {
                self.stop_recording();
                if let Some(recorder) = recorder {
                    self.start_recording(recorder);
                }
            }
            RoomCmd::Spotlight(who) => {
                self.spotlight = who;
                self.follow_picture();
            }
            RoomCmd::Close => {}
        }
    }

    /// Taps every microphone, and the picture, for `recorder`.
    fn start_recording(&mut self, mut recorder: Recorder) {
        tracing::info!(room = self.id.0, id = recorder.id, "recording");
        for stream in self.streams.iter().filter(|s| s.kind == Source::Mic) {
            let tap = recorder.tap(stream.publisher);
            let _ = stream.ctl.send(forward::ForwardCtl::Tap(Some(tap)));
        }
        self.recording = Some(Recording {
            recorder,
            picture: None,
        });
        self.follow_picture();
    }

    /// Lets go of every tap and ends the recording, if there is one.
    fn stop_recording(&mut self) {
        let Some(recording) = self.recording.take() else {
            return;
        };
        for stream in &self.streams {
            let _ = stream.ctl.send(forward::ForwardCtl::Tap(None));
        }
        recording.recorder.stop();
        tracing::info!(
            room = self.id.0,
            id = recording.recorder.id,
            "recording stopped"
        );
    }

    /// Moves the recording's picture to the stream that should be it now (see
    /// [`recording::choose_picture`]): a stream counts while its publisher says it sends
    /// it and no teacher turned it off.
    fn follow_picture(&mut self) {
        let Some(recording) = self.recording.as_ref() else {
            return;
        };
        let sending: Vec<(AvatarId, Source)> = self
            .streams
            .iter()
            .filter(|s| s.kind != Source::Mic)
            .filter(|s| {
                self.members.iter().any(|(m, e)| {
                    let media = self.effective_media(*m, e.media);
                    *m == s.publisher
                        && match s.kind {
                            Source::Camera => media.camera,
                            Source::Screen => media.screen,
                            Source::Mic => media.mic,
                        }
                })
            })
            .map(|s| (s.publisher, s.kind))
            .collect();
        let teachers: Vec<AvatarId> = self
            .members
            .iter()
            .filter(|(_, e)| e.always_heard)
            .map(|(m, _)| *m)
            .collect();
        let picture = recording::choose_picture(&sending, &teachers, self.spotlight);
        if picture == recording.picture {
            return;
        }
        let stream_of = |which: Option<(AvatarId, Source)>| {
            which.and_then(|(who, kind)| {
                self.streams
                    .iter()
                    .find(|s| s.publisher == who && s.kind == kind)
            })
        };
        if let Some(old) = stream_of(recording.picture) {
            let _ = old.ctl.send(forward::ForwardCtl::Tap(None));
        }
        let new = stream_of(picture).map(|s| (s.publisher, s.ctl.clone()));
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        tracing::debug!(room = self.id.0, ?picture, "the recording's picture");
        recording.picture = picture;
        if let Some((who, ctl)) = new {
            let _ = ctl.send(forward::ForwardCtl::Tap(Some(recording.recorder.tap(who))));
        }
    }

    /// Signaling from a member's client: its first offer starts its connection, and the
    /// client is told who is in the room and who speaks.
    ///
    /// A client starts its room afresh at each `JoinRoomMedia` (at a join, and when its
    /// connection was lost) and drops lists for a room it has not joined; its offer always
    /// comes after that message, so the list sent here is never lost. (A list broadcast at
    /// the join can reach the client before its `JoinRoomMedia`: the room learns of a join
    /// before the space delivers that message.)
    fn signal(&mut self, member: AvatarId, signal: Signal, queued: Queued) {
        let downlink = Arc::new(DownlinkEstimate::default());
        let setup = MemberSetup {
            downlink: downlink.clone(),
            id: member,
            room: self.handle.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            port: self.port.clone(),
            outbox: match self.entry(member) {
                Some(entry) => entry.outbox.clone(),
                None => return,
            },
        };
        let streams: Vec<Published> = self
            .streams
            .iter()
            .filter(|s| s.publisher != member)
            .cloned()
            .collect();
        let Some(entry) = self.entry(member) else {
            return;
        };
        if let Some(connection) = &entry.connection {
            let _ = connection.send(MemberCmd::Signal(signal, queued));
            return;
        }
        let Signal::Description {
            kind: SdpKind::Offer,
            sdp,
        } = signal
        else {
            // Candidates before the offer cannot be used; the client sends them after.
            return;
        };
        let connection = member::spawn(setup, sdp, queued);
        entry.downlink = Some(downlink);
        entry.trials = Trials::default();
        entry.allotted.clear();
        if !entry.tiles.is_empty() {
            let _ = connection.send(MemberCmd::Tiles(entry.tiles.clone(), None));
        }
        for published in streams {
            let _ = connection.send(MemberCmd::Subscribe(published));
        }
        entry.connection = Some(connection);
        let outbox = entry.outbox.clone();
        send(&outbox, &self.members_msg());
        send(&outbox, &self.speakers_msg());
    }

    fn published(&mut self, published: Published) {
        let Some(publisher) = self
            .members
            .iter()
            .find(|(m, _)| *m == published.publisher)
            .map(|(m, _)| *m)
        else {
            return;
        };
        self.streams
            .retain(|s| !(s.publisher == publisher && s.kind == published.kind));
        for (id, entry) in &self.members {
            if *id != publisher
                && let Some(connection) = &entry.connection
            {
                let _ = connection.send(MemberCmd::Subscribe(published.clone()));
            }
        }
        let mic = published.kind == Source::Mic;
        self.apply_restriction(&published);
        if let Some(recording) = self.recording.as_mut() {
            if mic {
                let tap = recording.recorder.tap(publisher);
                let _ = published.ctl.send(forward::ForwardCtl::Tap(Some(tap)));
            } else if recording.picture == Some((publisher, published.kind)) {
                // A new stream in the picture's place: tapped again below.
                recording.picture = None;
            }
        }
        self.streams.push(published);
        self.follow_picture();
        if mic {
            self.rank_speakers();
        } else {
            published_video_forwarded(self.streams.last());
        }
    }

    /// Sets whether `stream`'s packets are dropped, from its publisher's restrictions.
    fn apply_restriction(&self, stream: &Published) {
        let off = self
            .restrictions
            .get(&stream.publisher)
            .map(|r| *r)
            .unwrap_or_default();
        let blocked = match stream.kind {
            Source::Mic => off.mic,
            Source::Camera => off.camera,
            Source::Screen => off.screen,
        };
        stream.stats.blocked.store(blocked, Ordering::Relaxed);
    }

    /// What `id` sends, as others should see it: what its client says, less what a teacher
    /// turned off.
    fn effective_media(&self, id: AvatarId, media: MediaFlags) -> MediaFlags {
        let off = self.restrictions.get(&id).map(|r| *r).unwrap_or_default();
        MediaFlags {
            mic: media.mic && !off.mic,
            camera: media.camera && !off.camera,
            screen: media.screen && !off.screen,
        }
    }

    /// Stops forwarding everything `member` publishes.
    fn withdraw_streams(&mut self, member: AvatarId) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.streams)
            .into_iter()
            .partition(|s| s.publisher == member);
        self.streams = kept;
        if let Some(recording) = self.recording.as_mut()
            && recording.picture.is_some_and(|(who, _)| who == member)
        {
            recording.picture = None;
        }
        for stream in gone {
            for (_, entry) in &self.members {
                if let Some(connection) = &entry.connection {
                    let _ = connection.send(MemberCmd::Unsubscribe(member, stream.kind));
                }
            }
        }
        self.mic_packets.remove(&member);
        self.follow_picture();
    }

    /// Closes `member`'s connection and withdraws its streams (the entry stays).
    fn remove_member(&mut self, member: AvatarId) {
        self.withdraw_streams(member);
        if let Some(entry) = self.entry(member)
            && let Some(connection) = entry.connection.take()
        {
            entry.downlink = None;
            entry.allotted.clear();
            let _ = connection.send(MemberCmd::Close);
        }
        self.metrics.members.fetch_sub(1, Ordering::Relaxed);
    }

    /// Who is in the room and what each sends, as clients are told it.
    fn members_msg(&self) -> ServerMsg {
        let members = self
            .members
            .iter()
            .map(|(id, e)| RoomMember {
                id: *id,
                name: e.name.clone(),
                media: self.effective_media(*id, e.media),
            })
            .collect();
        ServerMsg::RoomMembers {
            room: ZoneId(self.id.0),
            members,
        }
    }

    fn speakers_msg(&self) -> ServerMsg {
        ServerMsg::RoomSpeakers {
            room: ZoneId(self.id.0),
            speakers: self.speakers.clone(),
        }
    }

    fn announce_members(&self) {
        self.broadcast(&self.members_msg());
    }

    fn broadcast(&self, msg: &ServerMsg) {
        match quad_shared::codec::encode(msg) {
            Ok(frame) => {
                let frame = Bytes::from(frame);
                for (_, entry) in &self.members {
                    let _ = entry.outbox.push(frame.clone());
                }
            }
            Err(e) => tracing::error!("cannot encode a room message: {e}"),
        }
    }

    /// Applies the loudest-speakers rule and tells members when who speaks changes.
    fn rank_speakers(&mut self) {
        let mics: Vec<&Published> = self
            .streams
            .iter()
            .filter(|s| s.kind == Source::Mic)
            .collect();
        if mics.is_empty() && self.speakers.is_empty() {
            return;
        }
        let levels: Vec<MicLevel> = mics
            .iter()
            .map(|s| {
                let packets = s.stats.packets.load(Ordering::Relaxed);
                let before = self.mic_packets.insert(s.publisher, packets);
                let sending = before != Some(packets);
                let heard = sending && !s.stats.blocked.load(Ordering::Relaxed);
                MicLevel {
                    loudness: if heard { s.stats.loudness() } else { 0.0 },
                    forwarded: s.stats.forwarded.load(Ordering::Relaxed),
                    always: self
                        .members
                        .iter()
                        .any(|(m, e)| *m == s.publisher && e.always_heard),
                }
            })
            .collect();
        let chosen = speakers::choose(&levels, self.config.max_speakers);
        for (mic, level) in mics.iter().zip(&levels) {
            if level.loudness > speakers::SPEAKING_LOUDNESS {
                *self.talk.entry(mic.publisher).or_default() += SPEAKER_TICK.as_millis() as u32;
            }
        }
        self.talk_ticks += 1;
        if self.talk_ticks >= 10 {
            self.talk_ticks = 0;
            let talk: Vec<(AvatarId, u32)> = self.talk.drain().collect();
            if let Some(to) = &self.talk_to
                && !talk.is_empty()
            {
                let _ = to.send(TalkTime {
                    room: self.id,
                    talk,
                });
            }
        }
        let mut speaking: Vec<(f32, AvatarId)> = Vec::new();
        for ((mic, level), forward) in mics.iter().zip(&levels).zip(chosen) {
            mic.stats.forwarded.store(forward, Ordering::Relaxed);
            if forward && level.loudness > speakers::SPEAKING_LOUDNESS {
                speaking.push((level.loudness, mic.publisher));
            }
        }
        speaking.sort_by(|a, b| b.0.total_cmp(&a.0));
        let speakers: Vec<AvatarId> = speaking.into_iter().map(|(_, id)| id).collect();
        if speakers != self.speakers {
            self.speakers = speakers;
            self.broadcast(&self.speakers_msg());
        }
    }
}

impl Room {
    /// Fits each member's video into its connection's bandwidth estimate and tells the
    /// forwarders what changed. A restrictive allotment is told again at every tick: a
    /// forwarder forgets it when the viewer is added again (a renegotiation), and one told
    /// before the viewer was added ignores it.
    fn allocate(&mut self) {
        let loudest = self.speakers.first().copied();
        // Audio every member hears, less its own: the microphones forwarded now.
        let mics: Vec<(AvatarId, u64)> = self
            .streams
            .iter()
            .filter(|s| s.kind == Source::Mic)
            .filter(|s| {
                s.stats.forwarded.load(Ordering::Relaxed)
                    && !s.stats.blocked.load(Ordering::Relaxed)
            })
            .map(|s| (s.publisher, s.stats.layer_rates()[0].unwrap_or(0)))
            .collect();
        let videos: Vec<&Published> = self
            .streams
            .iter()
            .filter(|s| s.kind != Source::Mic && !s.stats.blocked.load(Ordering::Relaxed))
            .collect();
        let rates: Vec<[Option<u64>; forward::LAYERS]> =
            videos.iter().map(|s| s.stats.layer_rates()).collect();
        let now = std::time::Instant::now();
        for (viewer, entry) in &mut self.members {
            let Some(downlink) = &entry.downlink else {
                continue;
            };
            let audio: u64 = mics
                .iter()
                .filter(|(p, _)| p != viewer)
                .map(|(_, bps)| bps)
                .sum();
            let (sent, streams): (Vec<&Published>, Vec<VideoStream>) = videos
                .iter()
                .zip(&rates)
                .filter(|(s, _)| s.publisher != *viewer)
                .map(|(s, layers)| {
                    let (priority, want) = match s.kind {
                        Source::Screen => (Priority::Screen, (forward::LAYERS - 1) as u8),
                        _ => (
                            if Some(s.publisher) == loudest {
                                Priority::Speaker
                            } else {
                                Priority::Camera
                            },
                            entry
                                .tiles
                                .iter()
                                .find(|(p, _)| *p == s.publisher)
                                .map_or(forward::DEFAULT_LAYER, |(_, w)| {
                                    forward::layer_for_width(*w)
                                }),
                        ),
                    };
                    (
                        *s,
                        VideoStream {
                            priority,
                            want,
                            layers: *layers,
                        },
                    )
                })
                .unzip();
            let estimate = downlink.get().map(|e| entry.trials.budget(e, now));
            if estimate.is_some() {
                self.metrics
                    .estimated_allocations
                    .fetch_add(1, Ordering::Relaxed);
            }
            let allotments = allocation::allocate(estimate, audio, &streams);
            entry
                .allotted
                .retain(|key, _| sent.iter().any(|s| (s.publisher, s.kind) == *key));
            let mut raised = false;
            for (stream, &allotment) in sent.iter().zip(&allotments) {
                let before = entry
                    .allotted
                    .insert((stream.publisher, stream.kind), allotment);
                raised |= allotment.raises(before.unwrap_or(Allotment::Paused));
                if before != Some(allotment) || allotment != Allotment::Unbudgeted {
                    let _ = stream.ctl.send(ForwardCtl::Allot(*viewer, allotment));
                }
            }
            if estimate.is_some() {
                let cost = audio + allocation::cost(&streams, &allotments);
                entry
                    .trials
                    .allocated(cost, raised, downlink.backoffs(), now);
                // So that the estimate grows far enough to try the next raise.
                downlink.want(
                    allocation::next_raise(&streams, &allotments).map_or(0, |step| cost + step),
                );
            }
        }
    }
}

/// Video is always forwarded (the loudest-speakers rule is for microphones).
fn published_video_forwarded(stream: Option<&Published>) {
    if let Some(s) = stream {
        s.stats.forwarded.store(true, Ordering::Relaxed);
    }
}

/// Queues one message for one client.
fn send(outbox: &SessionOutbox, msg: &ServerMsg) {
    match quad_shared::codec::encode(msg) {
        Ok(frame) => {
            let _ = outbox.push(Bytes::from(frame));
        }
        Err(e) => tracing::error!("cannot encode a room message: {e}"),
    }
}

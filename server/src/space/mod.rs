//! The space: one task per map instance owns a [`SpaceWorld`] (a bevy_ecs `World` and its
//! tick schedule) without locks. Sessions talk to it through a [`SpaceHandle`]; it sends
//! frames back through each session's outbox ([`SessionOutbox`], bounded in bytes).
//!
//! This module must not touch sockets or HTTP: it knows sessions only as ids and channels.

pub mod chat;
pub mod class;

pub mod components;
pub mod resources;
pub mod spatial_grid;
pub mod systems;
pub mod world;

use crate::cluster::media::MediaRooms;
use crate::media::recording::{RecordRequest, RecordingEvent};
use crate::media::sfu::{Joining, RoomId, TalkTime};
use crate::session::SessionOutbox;
use crate::session::outbox::Refused;
use crate::store::{History, Storage};
use bytes::Bytes;
use class::{RecordingChange, Restriction};
use quad_shared::AvatarId;
use quad_shared::protocol::{
    CHAT_HISTORY, ChatLine, ChatTo, Input, MediaFlags, ServerMsg, TeacherAction,
};
use resources::{Recipient, RoomMove};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
pub use world::{Joiner, SpaceWorld};

/// What a session can ask of its space.
#[derive(Debug)]
pub enum SpaceCommand {
    /// A new session (`epoch` of its resume entry: see `session::resume`).
    Join {
        joiner: Joiner,
        outbox: SessionOutbox,
        epoch: u64,
    },
    /// A new connection took over the session of `joiner.id` (its `epoch`): the avatar
    /// goes on with it, or joins afresh as `joiner` if it is gone.
    Resume {
        joiner: Joiner,
        outbox: SessionOutbox,
        epoch: u64,
    },
    /// The connection of `id`'s session (its `epoch`) dropped: the avatar waits for a
    /// resume. Ignored if a newer connection already took it over.
    Away {
        id: AvatarId,
        epoch: u64,
    },
    Input {
        id: AvatarId,
        input: Input,
    },
    Leave {
        id: AvatarId,
    },
    Media {
        id: AvatarId,
        media: MediaFlags,
    },
    /// The client's new media plays: the room's (`room`) or a hallway peer's.
    MediaReady {
        id: AvatarId,
        room: bool,
    },
    Signal {
        from: AvatarId,
        to: AvatarId,
        signal: quad_shared::protocol::Signal,
    },
    /// A chat message, checked for size and rate by the session.
    Chat {
        from: AvatarId,
        to: ChatTo,
        text: String,
        at_ms: u64,
    },
    Teacher {
        from: AvatarId,
        action: TeacherAction,
        at_ms: u64,
    },
    Hand {
        id: AvatarId,
        raised: bool,
    },
    Attention {
        id: AvatarId,
        watching: bool,
    },
    /// This node has just taken the space over from another (see `cluster`): chat ids go on
    /// after `last_chat_id`, the highest the shared store holds.
    TakeOver {
        last_chat_id: u64,
    },
}

/// Counts a space publishes for `/metrics` (written by its task, read by anyone).
#[derive(Debug, Default)]
pub struct SpaceStats {
    pub avatars: AtomicU64,
    pub peer_edges: AtomicU64,
}

/// A cheap, cloneable way to reach a space task.
#[derive(Clone, Debug)]
pub struct SpaceHandle {
    tx: mpsc::Sender<SpaceCommand>,
}

impl SpaceHandle {
    /// Sends a command; `false` if the space has stopped.
    pub async fn send(&self, cmd: SpaceCommand) -> bool {
        self.tx.send(cmd).await.is_ok()
    }
}

/// What a space task works with besides its world.
pub struct SpaceServices {
    /// Room media, wherever each room runs.
    pub media: Arc<MediaRooms>,
    /// Chat and the audit log.
    pub storage: Storage,
    /// Counts for `/metrics`, written after every tick.
    pub stats: Arc<SpaceStats>,
}

/// Starts the task that owns `world`, ticking `tick_hz` times a second until `shutdown`.
pub fn spawn(
    world: SpaceWorld,
    tick_hz: u16,
    services: SpaceServices,
    shutdown: CancellationToken,
) -> (SpaceHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4096);
    let task = tokio::spawn(run(world, rx, tick_hz, services, shutdown));
    (SpaceHandle { tx }, task)
}

async fn run(
    mut world: SpaceWorld,
    mut rx: mpsc::Receiver<SpaceCommand>,
    tick_hz: u16,
    services: SpaceServices,
    shutdown: CancellationToken,
) {
    let SpaceServices {
        media,
        storage,
        stats,
    } = services;
    let mut sessions: FxHashMap<AvatarId, SessionOutbox> = FxHashMap::default();
    // Which connection of each session the space listens to (see `SpaceCommand::Away`).
    let mut epochs: FxHashMap<AvatarId, u64> = FxHashMap::default();
    let mut held = Held::default();
    let (stored_tx, mut stored_rx) = mpsc::channel::<Vec<u64>>(MAX_HELD_BATCHES + 1);
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(tick_hz)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    let (recording_tx, mut recording_rx) = mpsc::unbounded_channel::<RecordingEvent>();
    let (talk_tx, mut talk_rx) = mpsc::unbounded_channel::<TalkTime>();
    media.report_talk(talk_tx);
    let mut records_tick = tokio::time::interval(REPORT_EVERY);
    records_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reports = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(event) = recording_rx.recv() => recording_news(&mut world, &media, event),
            Some(t) = talk_rx.recv() => world.talked(quad_shared::ZoneId(t.room.0), &t.talk),
            _ = records_tick.tick() => {
                world.send_class_reports(crate::store::now_ms());
                reports = reports.wrapping_add(1);
                for register in world.take_registers(reports.is_multiple_of(SAVE_EVERY_REPORTS)) {
                    storage.save_register(register);
                }
            }
            Some(lost) = stored_rx.recv() => {
                // Batches are stored in order, by one writer: this is the oldest held.
                if let Some(batch) = held.batches.pop_front() {
                    held.bytes -= batch.bytes;
                    release(&mut sessions, &media, batch, &lost);
                }
            }
            _ = interval.tick() => {
                let now = Instant::now();
                world.tick((now - last_tick).as_secs_f32());
                last_tick = now;
                stats.avatars.store(world.population() as u64, Ordering::Relaxed);
                stats.peer_edges.store(world.peer_edges() as u64, Ordering::Relaxed);
            }
            cmd = rx.recv() => match cmd {
                None => break,
                Some(SpaceCommand::Join { joiner, outbox, epoch }) => {
                    epochs.insert(joiner.id, epoch);
                    join(&mut world, &mut sessions, &storage, joiner, outbox);
                }
                Some(SpaceCommand::Resume { joiner, outbox, epoch }) => {
                    let (id, user) = (joiner.id, joiner.user.0.clone());
                    epochs.insert(id, epoch);
                    if world.resume(id, joiner.ice_servers.clone(), joiner.resume.clone()) {
                        sessions.insert(id, outbox.clone());
                        tracing::info!(%id, "resumed");
                        // Lines sent while it was away; the client merges those it has.
                        send_history(
                            &storage,
                            vec![History::Space, History::Nearby(user.clone()), History::Direct(user)],
                            outbox,
                        );
                    } else {
                        join(&mut world, &mut sessions, &storage, joiner, outbox);
                    }
                }
                Some(SpaceCommand::Away { id, epoch }) => {
                    if epochs.get(&id) == Some(&epoch) {
                        sessions.remove(&id);
                        world.away(id);
                        tracing::info!(%id, "connection lost; waiting for a resume");
                    }
                }
                Some(SpaceCommand::Chat { from, to, text, at_ms }) => world.chat(from, to, text, at_ms),
                Some(SpaceCommand::Teacher { from, action, at_ms }) => world.teacher(from, action, at_ms),
                Some(SpaceCommand::Hand { id, raised }) => world.hand(id, raised),
                Some(SpaceCommand::Attention { id, watching }) => world.attention(id, watching),
                Some(SpaceCommand::TakeOver { last_chat_id }) => world.continue_chat_after(last_chat_id),
                Some(SpaceCommand::Input { id, input }) => world.input(id, input),
                Some(SpaceCommand::Signal { from, to, signal }) => world.signal(from, to, signal),
                Some(SpaceCommand::Media { id, media }) => world.media(id, media),
                Some(SpaceCommand::MediaReady { id, room }) => world.media_ready(id, room),
                Some(SpaceCommand::Leave { id }) => {
                    sessions.remove(&id);
                    epochs.remove(&id);
                    if world.identity(id).is_some() {
                        world.leave(id);
                        tracing::info!(%id, population = world.population(), "left");
                    }
                }
            },
        }
        let restrictions = classes(&mut world, &sessions, &storage, &media, &recording_tx);
        move_rooms(&mut world, &sessions, &media);
        journal(
            &mut world,
            &mut sessions,
            &storage,
            &media,
            restrictions,
            &mut held,
            &stored_tx,
        );
    }
    // Classes going on end with the server (their people are out of the room from now).
    for register in world.end_registers(crate::store::now_ms()) {
        storage.save_register(register);
    }
    media.close_all();
}

/// Puts a new avatar in the world, and sends its chat history.
fn join(
    world: &mut SpaceWorld,
    sessions: &mut FxHashMap<AvatarId, SessionOutbox>,
    storage: &Storage,
    joiner: Joiner,
    outbox: SessionOutbox,
) {
    let (id, user, role) = (joiner.id, joiner.user.0.clone(), joiner.role);
    sessions.insert(id, outbox.clone());
    let at = world.join(joiner);
    tracing::info!(%id, role = role.as_str(), x = at.x, y = at.y, population = world.population(), "joined");
    send_history(
        storage,
        vec![
            History::Space,
            History::Nearby(user.clone()),
            History::Direct(user),
        ],
        outbox,
    );
}

/// Hands class changes on: the room chat history of people who walked into a class; and
/// returns the devices the SFU must drop, which [`journal`] applies once what caused them
/// is stored.
fn classes(
    world: &mut SpaceWorld,
    sessions: &FxHashMap<AvatarId, SessionOutbox>,
    storage: &Storage,
    media: &MediaRooms,
    recording_events: &mpsc::UnboundedSender<RecordingEvent>,
) -> Vec<Restriction> {
    let (restrictions, entered, recordings) = world.take_class_changes();
    for (id, room) in entered {
        if let Some(outbox) = sessions.get(&id) {
            send_history(storage, vec![History::Room(room)], outbox.clone());
        }
    }
    for change in recordings {
        match change {
            RecordingChange::Start {
                room,
                room_name,
                by,
                by_user,
                by_name,
                session,
            } => {
                let request = RecordRequest {
                    room_name,
                    by_user: by_user.0,
                    by_name,
                    session,
                    events: recording_events.clone(),
                    id: None,
                };
                let started = media.record(RoomId(room.0), request);
                world.recording_started(room, by, started);
            }
            RecordingChange::Stop { room } => media.stop_recording(RoomId(room.0)),
            RecordingChange::Spotlight { room, who } => media.spotlight(RoomId(room.0), who),
        }
    }
    restrictions
}

/// What became of a recording: the class stops showing one that stopped by itself, and
/// its teachers (and whoever started it) are told.
fn recording_news(world: &mut SpaceWorld, media: &MediaRooms, event: RecordingEvent) {
    use quad_shared::protocol::RecordingNews;
    let (room_name, id, by_user, news) = match event {
        RecordingEvent::Stopped {
            room,
            room_name,
            id,
            reason,
        } => {
            if world.recording_stopped(quad_shared::ZoneId(room.0), &id) {
                media.stop_recording(room);
            }
            (room_name, id, None, RecordingNews::Stopped { reason })
        }
        RecordingEvent::Ready {
            room_name,
            id,
            by_user,
            duration_ms,
            bytes,
        } => (
            room_name,
            id,
            Some(by_user),
            RecordingNews::Ready { duration_ms, bytes },
        ),
        RecordingEvent::Failed {
            room_name,
            id,
            by_user,
            message,
        } => (
            room_name,
            id,
            Some(by_user),
            RecordingNews::Failed { message },
        ),
    };
    let msg = ServerMsg::Recording {
        id,
        room: room_name.clone(),
        news,
    };
    world.tell_recording_news(&room_name, by_user.as_deref(), &msg);
}

/// How often each class's teachers get its register so far (and ended classes' registers
/// are stored).
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// Registers of classes still going on are stored every this many reports (10 s).
const SAVE_EVERY_REPORTS: u32 = 5;

/// Batches of frames held back until what caused them is stored, at most this many ...
const MAX_HELD_BATCHES: usize = 256;
/// ... and this many bytes of frames (a chat line is at most about 2 kB a recipient).
const MAX_HELD_BYTES: usize = 8 << 20;

/// What a pass of the space loop sent while it also journaled chat lines or audit records:
/// it goes out once the store has them ([`journal`]), so a line a client was shown, or a
/// teacher's action it saw take effect, survives a crash (`kill -9`) that follows.
struct HeldBatch {
    frames: Vec<(Recipient, Bytes)>,
    /// Devices the SFU drops from then on (a teacher's mute takes effect with its audit
    /// record stored), and those of later passes, which must not overtake them.
    restrictions: Vec<Restriction>,
    /// Who sent each chat line (by id), to be told if it could not be stored.
    senders: Vec<(u64, AvatarId)>,
    bytes: usize,
}

#[derive(Default)]
struct Held {
    batches: std::collections::VecDeque<HeldBatch>,
    bytes: usize,
    /// A warning was logged for going over the bounds (once per episode).
    warned: bool,
}

/// Hands what this pass journaled to the store and delivers what it sent. With nothing
/// journaled, the frames go out at once; otherwise they are held until the store's writer
/// has the batch ([`release`]). A store so slow that the held frames pass
/// [`MAX_HELD_BATCHES`] or [`MAX_HELD_BYTES`] gets its next batches written behind their
/// frames (as before the hold), with a warning, rather than holding the space's messages
/// without bound.
#[allow(clippy::too_many_arguments)]
fn journal(
    world: &mut SpaceWorld,
    sessions: &mut FxHashMap<AvatarId, SessionOutbox>,
    storage: &Storage,
    media: &MediaRooms,
    mut restrictions: Vec<Restriction>,
    held: &mut Held,
    stored: &mpsc::Sender<Vec<u64>>,
) {
    let (chat, audit) = world.take_journal();
    if chat.is_empty() && audit.is_empty() {
        match held.batches.back_mut() {
            // Behind the held ones, in order (a teacher's unmute cannot overtake the mute).
            Some(last) => last.restrictions.append(&mut restrictions),
            None => restrict(media, restrictions),
        }
        deliver_outbox(world, sessions);
        return;
    }
    let frames: Vec<(Recipient, Bytes)> = world.drain_outbox().collect();
    let bytes = frames.iter().map(|(_, f)| f.len()).sum::<usize>();
    let senders: Vec<(u64, AvatarId)> = chat
        .iter()
        .filter_map(|r| r.line.from.map(|from| (r.line.id, from)))
        .collect();
    if held.batches.len() >= MAX_HELD_BATCHES || held.bytes + bytes > MAX_HELD_BYTES {
        if !held.warned {
            tracing::warn!(
                batches = held.batches.len(),
                bytes = held.bytes,
                "the store is not keeping up: chat goes out before it is stored"
            );
            held.warned = true;
        }
        match held.batches.back_mut() {
            Some(last) => last.restrictions.append(&mut restrictions),
            None => restrict(media, restrictions),
        }
        deliver(sessions, frames);
        let tell: Vec<_> = senders
            .iter()
            .filter_map(|(id, from)| sessions.get(from).map(|o| (*id, o.downgrade())))
            .collect();
        storage.save_batch(
            chat,
            audit,
            Box::new(move |lost| {
                for (id, outbox) in tell {
                    if lost.contains(&id)
                        && let Some(outbox) = outbox.upgrade()
                    {
                        tell_not_saved(&outbox, id);
                    }
                }
            }),
        );
        return;
    }
    held.warned = false;
    held.bytes += bytes;
    held.batches.push_back(HeldBatch {
        frames,
        restrictions,
        senders,
        bytes,
    });
    let stored = stored.clone();
    storage.save_batch(
        chat,
        audit,
        Box::new(move |lost| {
            // Room for every held batch: it cannot be full. Closed: the space has stopped.
            let _ = stored.try_send(lost);
        }),
    );
}

/// Delivers a held batch now that the store has it, then tells the senders of lines that
/// could not be stored (after their line, so the client can mark it).
fn release(
    sessions: &mut FxHashMap<AvatarId, SessionOutbox>,
    media: &MediaRooms,
    batch: HeldBatch,
    lost: &[u64],
) {
    restrict(media, batch.restrictions);
    deliver(sessions, batch.frames);
    for (id, from) in batch.senders {
        if lost.contains(&id)
            && let Some(outbox) = sessions.get(&from)
        {
            tell_not_saved(outbox, id);
        }
    }
}

/// Has the SFU drop (or stop dropping) these members' devices.
fn restrict(media: &MediaRooms, restrictions: Vec<Restriction>) {
    for (id, off) in restrictions {
        media.restrict(id, off);
    }
}

/// Tells the sender of line `id` that it was not saved ([`ServerMsg::ChatNotSaved`]); a
/// session too far behind to take one more frame is not told.
fn tell_not_saved(outbox: &SessionOutbox, id: u64) {
    match quad_shared::codec::encode(&ServerMsg::ChatNotSaved { id }) {
        Ok(frame) => {
            let _ = outbox.push(Bytes::from(frame));
        }
        Err(e) => tracing::error!("cannot encode ChatNotSaved: {e}"),
    }
}

/// Lines of history per frame (a line is at most about 2 kB).
const HISTORY_CHUNK: usize = 50;

/// Reads histories in the background and sends them to one client.
fn send_history(storage: &Storage, which: Vec<History>, outbox: SessionOutbox) {
    let storage = storage.clone();
    tokio::spawn(async move {
        let lines: Vec<ChatLine> = storage.histories(which, CHAT_HISTORY).await;
        for chunk in lines.chunks(HISTORY_CHUNK) {
            let msg = ServerMsg::ChatHistory {
                lines: chunk.to_vec(),
            };
            match quad_shared::codec::encode(&msg) {
                Ok(frame) => {
                    // Refused: the session has ended, or is closing for not keeping up.
                    if outbox.push(Bytes::from(frame)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!("cannot encode chat history: {e}"),
            }
        }
    });
}

/// Tells the SFU who entered and left rooms, before the clients hear of it, so a client's
/// first room signaling always finds its room.
fn move_rooms(
    world: &mut SpaceWorld,
    sessions: &FxHashMap<AvatarId, SessionOutbox>,
    media: &MediaRooms,
) {
    for RoomMove { id, name, to } in world.drain_room_moves() {
        match (to, sessions.get(&id)) {
            (Some((room, room_name)), Some(outbox)) => media.join(
                RoomId(room.0),
                &room_name,
                id,
                Joining {
                    name,
                    media: world.media_of(id),
                    always_heard: world.identity(id).is_some_and(|i| i.role.is_teacher()),
                },
                outbox.clone(),
            ),
            _ => media.leave(id),
        }
    }
}

/// Hands the world's queued frames to their sessions (as [`deliver`]) without copying them
/// out first.
fn deliver_outbox(world: &mut SpaceWorld, sessions: &mut FxHashMap<AvatarId, SessionOutbox>) {
    let refused = offer(sessions, world.drain_outbox());
    remove_refused(sessions, refused);
}

/// Hands frames to their sessions. A session whose outbox is over its budget cannot keep
/// up: nothing more is delivered to it (its session task closes it).
fn deliver(sessions: &mut FxHashMap<AvatarId, SessionOutbox>, frames: Vec<(Recipient, Bytes)>) {
    let refused = offer(sessions, frames);
    remove_refused(sessions, refused);
}

/// Pushes each frame to its recipients' outboxes; returns the sessions that refused one.
fn offer(
    sessions: &FxHashMap<AvatarId, SessionOutbox>,
    frames: impl IntoIterator<Item = (Recipient, Bytes)>,
) -> Vec<(AvatarId, Refused)> {
    let mut refused = Vec::new();
    for (to, frame) in frames {
        let mut offer = |id: AvatarId, tx: &SessionOutbox| {
            if let Err(why) = tx.push(frame.clone()) {
                refused.push((id, why));
            }
        };
        match to {
            Recipient::One(id) => {
                if let Some(tx) = sessions.get(&id) {
                    offer(id, tx);
                }
            }
            Recipient::Everyone => sessions.iter().for_each(|(id, tx)| offer(*id, tx)),
        }
    }
    refused
}

/// Stops delivering to the sessions that refused a frame: ended, or too far behind (their
/// session task closes them). The avatar stays until the session says what became of it:
/// `Away` (kept for a resume) or `Leave`.
fn remove_refused(
    sessions: &mut FxHashMap<AvatarId, SessionOutbox>,
    refused: Vec<(AvatarId, Refused)>,
) {
    for (id, why) in refused {
        if sessions.remove(&id).is_some() && why == Refused::Overflow {
            tracing::warn!(%id, "session could not keep up; its connection is closed");
        }
    }
}

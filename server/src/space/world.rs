//! `SpaceWorld`: one space's ECS world with no I/O inside. Commands go in (`join`, `input`,
//! `leave`), time goes in (`tick(dt)`), encoded frames come out (`drain_outbox`). The space
//! task drives it over channels; benchmarks and tests drive it directly.

use super::chat::{self, Journal};
use super::class::{Classes, Effect, Entered, RecordingChange, Restriction};
use super::components::{Avatar, ClientView, Identity, InZone, Motion, Position};
use super::resources::{
    AppliedInputs, InputQueue, InputQueues, MediaStates, Outbox, ProximityGraph, Recipient,
    RoomMove, RoomPresence, RosterChanges, SlotTable, SpaceClock, SpaceMap, SpaceSettings,
};
use super::spatial_grid::SpatialGrid;
use super::systems;
use crate::auth::UserKey;
use crate::store::{AuditRecord, ChatRecord};
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::Schedule;
use bytes::Bytes;
use glam::Vec2;
use quad_shared::AvatarId;
use quad_shared::map::Map;
use quad_shared::map::ZoneKind;
use quad_shared::movement;
use quad_shared::protocol::{
    ChatTo, ErrorCode, ErrorMsg, IceServer, Input, MediaFlags, PROTOCOL_VERSION, Person, Role,
    ServerMsg, Signal, TeacherAction, Welcome,
};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// People per roster frame, so a roster of thousands stays under the frame limit.
pub const ROSTER_CHUNK: usize = 500;
/// Side of a spatial grid cell, pixels: the default connect radius, so the proximity pair
/// walk looks one cell around (measured against 64 to 192 px by the proximity benchmark).
pub const GRID_CELL: f32 = 160.0;

/// Someone joining: who, what they are, and where they would like to appear.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub id: AvatarId,
    pub name: String,
    pub role: Role,
    pub user: UserKey,
    /// Where to appear, world pixels: honoured only in dev mode, on walkable ground.
    pub spawn: Option<Vec2>,
    /// The classroom (by name) the join link is for: the person appears inside it (unless
    /// it is locked to them).
    pub room: Option<String>,
    /// STUN/TURN servers with this session's credentials, for `Welcome`.
    pub ice_servers: Vec<IceServer>,
    /// The token that takes this session over after a lost connection, and how long the
    /// server waits for it, for `Welcome` (none in benchmarks and unit tests).
    pub resume: Option<(String, u16)>,
}

impl Joiner {
    /// A guest with no link, no spawn wish and no ICE servers (benchmarks, tests).
    pub fn guest(id: AvatarId, name: impl Into<String>) -> Joiner {
        Joiner {
            id,
            name: name.into(),
            role: Role::Guest,
            user: UserKey::session(0, id.0),
            spawn: None,
            room: None,
            ice_servers: Vec::new(),
            resume: None,
        }
    }
}

/// What a `Welcome` says about the person it greets (the space adds its own settings).
struct Greeting {
    id: AvatarId,
    name: String,
    at: Vec2,
    role: Role,
    ice_servers: Vec<IceServer>,
    dev: bool,
    resumed: bool,
}

/// One space: a map and the avatars on it.
pub struct SpaceWorld {
    world: World,
    schedule: Schedule,
    entities: FxHashMap<AvatarId, Entity>,
    /// Each avatar's slot (see [`SlotTable`]).
    slots: FxHashMap<AvatarId, u32>,
    /// Movement input for the next tick, by slot; the world gets it for each tick.
    inputs: InputQueues,
    map_url: String,
    /// Avatars whose connection dropped, kept for a resume (see [`Self::away`]).
    away: rustc_hash::FxHashSet<AvatarId>,
}

impl SpaceWorld {
    pub fn new(map: Arc<Map>, settings: SpaceSettings, map_url: impl Into<String>) -> Self {
        let mut world = World::new();
        world.insert_resource(SpatialGrid::new(map.pixel_size(), GRID_CELL));
        world.insert_resource(SpaceMap(map));
        world.insert_resource(settings);
        world.insert_resource(SpaceClock::default());
        world.insert_resource(Outbox::default());
        world.insert_resource(RosterChanges::default());
        world.insert_resource(SlotTable::default());
        world.insert_resource(InputQueues::default());
        world.insert_resource(AppliedInputs::default());
        world.insert_resource(ProximityGraph::default());
        world.insert_resource(MediaStates::default());
        world.insert_resource(RoomPresence::default());
        world.insert_resource(Classes::default());
        world.insert_resource(Journal::default());
        SpaceWorld {
            world,
            schedule: systems::tick_schedule(),
            entities: FxHashMap::default(),
            slots: FxHashMap::default(),
            inputs: InputQueues::default(),
            map_url: map_url.into(),
            away: rustc_hash::FxHashSet::default(),
        }
    }

    fn map(&self) -> &Map {
        &self.world.resource::<SpaceMap>().0
    }

    fn send(&mut self, to: AvatarId, msg: &ServerMsg) {
        self.world
            .resource_mut::<Outbox>()
            .push(Recipient::One(to), msg);
    }

    /// Puts a new avatar in the space and queues its `Welcome` and the roster for it.
    pub fn join(&mut self, joiner: Joiner) -> Vec2 {
        let Joiner {
            id,
            name,
            role,
            user,
            spawn: requested_spawn,
            room,
            ice_servers,
            resume,
        } = joiner;
        let dev = self.world.resource::<SpaceSettings>().dev;
        let map = self.map();
        let room_spawn = room.and_then(|room| {
            let zone = map
                .zones
                .iter()
                .find(|z| z.kind == ZoneKind::Classroom && z.name == room)?;
            let free = self
                .world
                .resource::<Classes>()
                .may_enter(role, &user, zone.id)
                .is_ok();
            free.then(|| walkable_near(map, zone.rect.center(), zone.rect))
                .flatten()
        });
        let spawn = requested_spawn
            .filter(|p| dev && p.is_finite() && map.collision.walkable(*p))
            .or(room_spawn)
            .unwrap_or(map.spawn);
        let zone = map.zone_at(spawn);
        let slot = self
            .world
            .resource_mut::<SlotTable>()
            .allocate(id, quad_shared::protocol::quantize(spawn.to_array()));
        self.world.resource_mut::<ProximityGraph>().place(id, slot);
        self.slots.insert(id, slot);
        *self.inputs.of(slot) = InputQueue::default();
        let entity = self
            .world
            .spawn((
                Avatar {
                    id,
                    slot,
                    name: name.clone(),
                },
                Position(spawn),
                Identity { role, user },
                Motion::default(),
                InZone(zone),
                // Its interest list is allocated once, here, in join order (see replicate).
                ClientView {
                    interest: Vec::with_capacity(
                        self.world.resource::<SpaceSettings>().max_interest,
                    ),
                    ..ClientView::default()
                },
            ))
            .id();
        if let Some(old) = self.entities.insert(id, entity) {
            // Ids are never reused, so this is a bug in the caller; keep the world consistent.
            tracing::error!(%id, "joined twice; dropping the older avatar");
            self.despawn(old);
        }

        self.welcome(
            Greeting {
                id,
                name: name.clone(),
                at: spawn,
                role,
                ice_servers,
                dev,
                resumed: false,
            },
            resume,
        );
        self.world
            .resource_mut::<RosterChanges>()
            .joined
            .push(Person { id, name, role });
        spawn
    }

    /// Queues the `Welcome` for `greeting` (with the space's settings and the resume token)
    /// and the roster, and who of them is reconnecting.
    fn welcome(&mut self, greeting: Greeting, resume: Option<(String, u16)>) {
        let id = greeting.id;
        let settings = self.world.resource::<SpaceSettings>();
        let (resume, resume_grace_secs) = match resume {
            Some((token, grace)) => (Some(token), grace),
            None => (None, 0),
        };
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            you: id,
            name: greeting.name,
            map_url: self.map_url.clone(),
            spawn: greeting.at.to_array(),
            tick_hz: settings.tick_hz,
            proximity: settings.proximity,
            ice_servers: greeting.ice_servers,
            dev: greeting.dev,
            role: greeting.role,
            resume,
            resume_grace_secs,
            resumed: greeting.resumed,
        };
        self.send(id, &ServerMsg::Welcome(welcome));
        let people: Vec<Person> = self
            .world
            .query::<(&Avatar, &Identity)>()
            .iter(&self.world)
            .map(|(a, who)| Person {
                id: a.id,
                name: a.name.clone(),
                role: who.role,
            })
            .collect();
        for chunk in people.chunks(ROSTER_CHUNK) {
            self.send(
                id,
                &ServerMsg::PeopleJoined {
                    people: chunk.to_vec(),
                },
            );
        }
        let away: Vec<AvatarId> = self.away.iter().copied().filter(|a| *a != id).collect();
        for other in away {
            self.send(
                id,
                &ServerMsg::Reconnecting {
                    id: other,
                    reconnecting: true,
                },
            );
        }
    }

    /// `id`'s connection dropped: its avatar stays where it is, frozen, and everyone is
    /// told it is reconnecting, until it resumes ([`Self::resume`]) or leaves.
    pub fn away(&mut self, id: AvatarId) {
        let Some(&entity) = self.entities.get(&id) else {
            return;
        };
        if let Some(&slot) = self.slots.get(&id) {
            self.inputs.of(slot).pending.clear();
        }
        if let Some(mut motion) = self.world.get_mut::<Motion>(entity) {
            *motion = Motion::default();
        }
        self.away.insert(id);
        self.world.resource_mut::<Outbox>().push(
            Recipient::Everyone,
            &ServerMsg::Reconnecting {
                id,
                reconnecting: true,
            },
        );
    }

    /// A new connection took over `id`'s session: it gets a fresh `Welcome` for the avatar
    /// where it stands, the roster, its class, and its media anew (its hallway links are
    /// made again, and its room connection opened again), as a client that lost its
    /// connection has closed them. `false` if there is no such avatar (it was removed
    /// meanwhile): the caller joins it afresh.
    pub fn resume(
        &mut self,
        id: AvatarId,
        ice_servers: Vec<IceServer>,
        resume: Option<(String, u16)>,
    ) -> bool {
        let Some(&entity) = self.entities.get(&id) else {
            return false;
        };
        let Some(&slot) = self.slots.get(&id) else {
            return false;
        };
        let dev = self.world.resource::<SpaceSettings>().dev;
        let max_interest = self.world.resource::<SpaceSettings>().max_interest;
        let (name, role, at) = {
            let e = self.world.entity(entity);
            let (Some(avatar), Some(who), Some(at)) =
                (e.get::<Avatar>(), e.get::<Identity>(), e.get::<Position>())
            else {
                return false;
            };
            (avatar.name.clone(), who.role, at.0)
        };
        // Input numbering starts again with the new connection.
        *self.inputs.of(slot) = InputQueue::default();
        let mut e = self.world.entity_mut(entity);
        if let Some(mut motion) = e.get_mut::<Motion>() {
            *motion = Motion::default();
        }
        if let Some(mut view) = e.get_mut::<ClientView>() {
            *view = ClientView {
                interest: Vec::with_capacity(max_interest),
                ..ClientView::default()
            };
        }
        // Its room media opens again: out of the room now, back in at the next tick (the
        // room plan sees its zone as changed).
        if let Some(mut zone) = e.get_mut::<InZone>() {
            zone.set_changed();
        }
        {
            let mut presence = self.world.resource_mut::<RoomPresence>();
            presence.switching.remove(&id);
            if presence.room_of.remove(&id).is_some() {
                presence.moves.push(RoomMove {
                    id,
                    name: String::new(),
                    to: None,
                });
            }
        }
        // Its hallway links are made again by the next link plan; its peers close theirs.
        self.world
            .resource_scope(|world, mut graph: Mut<ProximityGraph>| {
                let mut outbox = world.resource_mut::<Outbox>();
                graph.remove(id, slot, |peer| {
                    outbox.push(
                        Recipient::One(peer),
                        &ServerMsg::DisconnectPeer { peer: id },
                    );
                });
                graph.place(id, slot);
            });
        self.welcome(
            Greeting {
                id,
                name,
                at,
                role,
                ice_servers,
                dev,
                resumed: true,
            },
            resume,
        );
        self.world.resource_mut::<Classes>().resumed(id);
        self.away.remove(&id);
        self.world.resource_mut::<Outbox>().push(
            Recipient::Everyone,
            &ServerMsg::Reconnecting {
                id,
                reconnecting: false,
            },
        );
        true
    }

    /// Removes an avatar; everyone is told at the next tick. Unknown ids are ignored.
    pub fn leave(&mut self, id: AvatarId) {
        self.away.remove(&id);
        self.world.resource_mut::<MediaStates>().0.remove(&id);
        self.world
            .resource_scope(|world, mut classes: Mut<Classes>| {
                classes.leave(&mut world.resource_mut::<Outbox>(), id);
            });
        let mut presence = self.world.resource_mut::<RoomPresence>();
        presence.switching.remove(&id);
        if presence.room_of.remove(&id).is_some() {
            presence.moves.push(RoomMove {
                id,
                name: String::new(),
                to: None,
            });
        }
        if let Some(entity) = self.entities.remove(&id) {
            self.despawn(entity);
            self.world.resource_mut::<RosterChanges>().left.push(id);
        }
    }

    fn despawn(&mut self, entity: Entity) {
        if let Some(avatar) = self.world.get::<Avatar>(entity) {
            let (id, slot) = (avatar.id, avatar.slot);
            // Its links break now, so the slot can go to someone else.
            self.world
                .resource_scope(|world, mut graph: Mut<ProximityGraph>| {
                    let mut outbox = world.resource_mut::<Outbox>();
                    graph.remove(id, slot, |peer| {
                        outbox.push(
                            Recipient::One(peer),
                            &ServerMsg::DisconnectPeer { peer: id },
                        );
                    });
                });
            self.world.resource_mut::<SlotTable>().release(slot);
            if self.slots.get(&id) == Some(&slot) {
                self.slots.remove(&id);
            }
            self.inputs.of(slot).pending.clear();
        }
        self.world.despawn(entity);
    }

    /// Queues movement input for the next tick, or answers the client with an error.
    pub fn input(&mut self, id: AvatarId, input: Input) {
        let Some(&slot) = self.slots.get(&id) else {
            return;
        };
        let queue = self.inputs.of(slot);
        let last = queue.last_queued;
        let refusal = if let Err(why) = movement::input_is_legal(input.dir, input.steps) {
            Some(ErrorMsg::new(ErrorCode::IllegalMove, why))
        } else if input.seq <= last {
            Some(ErrorMsg::new(
                ErrorCode::IllegalMove,
                format!("input sequence {} is not after {last}", input.seq),
            ))
        } else if queue.pending.len() >= InputQueue::MAX_PENDING {
            Some(ErrorMsg::new(
                ErrorCode::RateLimited,
                "too many movement inputs in one tick",
            ))
        } else {
            queue.pending.push(input);
            queue.last_queued = input.seq;
            None
        };
        if let Some(err) = refusal {
            tracing::debug!(%id, "input refused: {}", err.message);
            self.send(id, &ServerMsg::Error(err));
        }
    }

    /// Relays WebRTC signaling from `from` to `to`, but only along a proximity link the
    /// server created; anything else is refused and logged, and `to` receives nothing.
    pub fn signal(&mut self, from: AvatarId, to: AvatarId, signal: Signal) {
        if self.world.resource::<ProximityGraph>().linked(from, to) {
            self.world
                .resource_mut::<Outbox>()
                .push(Recipient::One(to), &ServerMsg::Signal { from, signal });
        } else {
            tracing::warn!(%from, %to, "signaling refused: the avatars are not linked");
            self.send(
                from,
                &ServerMsg::Error(ErrorMsg::new(
                    ErrorCode::Forbidden,
                    format!(
                        "no peer link with {to}: signaling is relayed only between linked avatars"
                    ),
                )),
            );
        }
    }

    /// Records a client's microphone and camera state and tells its linked peers of a change.
    pub fn media(&mut self, id: AvatarId, media: MediaFlags) {
        if !self.entities.contains_key(&id) {
            return;
        }
        let blocked = self.world.resource::<Classes>().blocked_of(id);
        let before = self.world.resource::<MediaStates>().of(id);
        let turned_on = |now: bool, was: bool, off: bool| now && !was && off;
        if turned_on(media.mic, before.mic, blocked.mic)
            || turned_on(media.camera, before.camera, blocked.camera)
            || turned_on(media.screen, before.screen, blocked.screen)
        {
            // The SFU drops the packets anyway; the client is told why nothing is heard.
            self.send(
                id,
                &ServerMsg::Error(ErrorMsg::new(
                    ErrorCode::Forbidden,
                    "the teacher turned this off for you: it stays off until the teacher allows it",
                )),
            );
        }
        let before = self.world.resource_mut::<MediaStates>().0.insert(id, media);
        if before == Some(media) {
            return;
        }
        let world = &mut self.world;
        world.resource_scope(|world, mut outbox: Mut<Outbox>| {
            let graph = world.resource::<ProximityGraph>();
            for peer in graph.peers_of(id) {
                outbox.push(
                    Recipient::One(peer),
                    &ServerMsg::PeerMedia { peer: id, media },
                );
            }
        });
    }

    /// A chat message from `from` (already checked for size and rate), sent at `at_ms`.
    pub fn chat(&mut self, from: AvatarId, to: ChatTo, text: String, at_ms: u64) {
        match chat::send(&mut self.world, &self.entities, from, to, text, at_ms) {
            Ok(()) => self.world.resource_mut::<Classes>().chatted(from),
            Err(err) => self.send(from, &ServerMsg::Error(err)),
        }
    }

    /// Members of `room` spoke this long more (from the SFU), for the class's register.
    pub fn talked(&mut self, room: quad_shared::ZoneId, talk: &[(AvatarId, u32)]) {
        self.world.resource_mut::<Classes>().talked(room, talk);
    }

    /// Sends each class's teachers its register so far.
    pub fn send_class_reports(&mut self, now_ms: u64) {
        self.world.resource_scope(|world, classes: Mut<Classes>| {
            classes.send_reports(&mut world.resource_mut::<Outbox>(), now_ms);
        });
    }

    /// Every class's register, ended at `now_ms` (the server stops), for storage.
    pub fn end_registers(&mut self, now_ms: u64) -> Vec<crate::records::register::Register> {
        let mut classes = self.world.resource_mut::<Classes>();
        for class in classes.rooms.values_mut() {
            class.register.end(now_ms);
        }
        classes.take_registers(true)
    }

    /// Class registers to store: those of classes that ended, and with `changed`, every one
    /// that changed since last taken.
    pub fn take_registers(&mut self, changed: bool) -> Vec<crate::records::register::Register> {
        self.world.resource_mut::<Classes>().take_registers(changed)
    }

    /// A teacher's action (refused unless `from` is a teacher in a room).
    pub fn teacher(&mut self, from: AvatarId, action: TeacherAction, at_ms: u64) {
        let Some(&entity) = self.entities.get(&from) else {
            return;
        };
        let (Some(identity), Some(avatar)) = (
            self.world.get::<Identity>(entity).cloned(),
            self.world.get::<Avatar>(entity).map(|a| a.name.clone()),
        ) else {
            return;
        };
        let entities = &self.entities;
        let result = self
            .world
            .resource_scope(|world, mut classes: Mut<Classes>| {
                let name_of = |id: AvatarId| {
                    entities
                        .get(&id)
                        .and_then(|e| world.get::<Avatar>(*e))
                        .map(|a| a.name.clone())
                };
                classes.teacher(
                    (from, identity.role, &identity.user, &avatar),
                    action,
                    name_of,
                    at_ms,
                )
            });
        match result {
            Ok((effect, record)) => {
                tracing::info!(%from, action = action.kind(), room = record.room, "teacher action");
                self.world.resource_mut::<Journal>().audit.push(record);
                if let Effect::SendOut { student, room } = effect {
                    self.send_out(student, room);
                }
                // The class's new state goes out with this pass, which holds it until the
                // audit record is stored (not at the next tick, which would not wait): no one
                // sees an action take effect that a crash could leave out of the log. Teacher
                // actions are rate-limited, so this does not undo the once-a-tick coalescing
                // that guards against students' hand and attention toggles.
                self.world
                    .resource_scope(|world, mut classes: Mut<Classes>| {
                        classes.send_announced(&mut world.resource_mut::<Outbox>());
                    });
            }
            Err(err) => {
                tracing::debug!(%from, "teacher action refused: {}", err.message);
                self.send(from, &ServerMsg::Error(err));
            }
        }
    }

    /// Moves `student` to walkable ground just outside `room` and tells it why.
    fn send_out(&mut self, student: AvatarId, room: quad_shared::ZoneId) {
        let Some(&entity) = self.entities.get(&student) else {
            return;
        };
        let map = self.map();
        let Some(zone) = map.zone(room) else {
            return;
        };
        let from = self
            .world
            .get::<Position>(entity)
            .map_or(zone.rect.center(), |p| p.0);
        let Some(to) = outside(map, zone.rect, from) else {
            tracing::warn!(%student, room = zone.name, "no walkable ground outside the room");
            return;
        };
        let text = format!("The teacher sent you out of {}.", zone.name);
        if let Some(slot) = self.world.get::<Avatar>(entity).map(|a| a.slot) {
            self.world
                .resource_mut::<SlotTable>()
                .set_wire(slot, quad_shared::protocol::quantize(to.to_array()));
        }
        if let Some(mut position) = self.world.get_mut::<Position>(entity) {
            position.0 = to;
        }
        if let Some(&slot) = self.slots.get(&student) {
            // Inputs sent before the move would walk from the old place: they are dropped,
            // and acknowledged, so the client's prediction starts over from here.
            let queue = self.inputs.of(slot);
            let last = queue.pending.last().map(|i| i.seq);
            queue.pending.clear();
            if let (Some(last), Some(mut motion)) = (last, self.world.get_mut::<Motion>(entity)) {
                motion.bypass_change_detection().last_seq = last;
            }
        }
        self.send(student, &ServerMsg::Notice { text });
    }

    /// A student raised or lowered its hand.
    pub fn hand(&mut self, id: AvatarId, raised: bool) {
        let result = self.world.resource_mut::<Classes>().hand(id, raised);
        if let Err(err) = result {
            self.send(id, &ServerMsg::Error(err));
        }
    }

    /// A student started or stopped watching.
    pub fn attention(&mut self, id: AvatarId, watching: bool) {
        let Some(name) = self
            .entities
            .get(&id)
            .and_then(|e| self.world.get::<Avatar>(*e))
            .map(|a| a.name.clone())
        else {
            return;
        };
        let result = self
            .world
            .resource_scope(|world, mut classes: Mut<Classes>| {
                classes.attention(&mut world.resource_mut::<Outbox>(), id, &name, watching)
            });
        if let Err(err) = result {
            self.send(id, &ServerMsg::Error(err));
        }
    }

    /// Where chat ids continue from (the highest stored).
    pub fn set_last_chat_id(&mut self, id: u64) {
        self.world.resource_mut::<Journal>().next_chat_id = id;
    }

    /// New chat ids go on after `id` too (another node's lines, once this node owns the
    /// space), never back.
    pub fn continue_chat_after(&mut self, id: u64) {
        let mut journal = self.world.resource_mut::<Journal>();
        journal.next_chat_id = journal.next_chat_id.max(id);
    }

    /// Takes what is to be stored since the last call.
    pub fn take_journal(&mut self) -> (Vec<ChatRecord>, Vec<AuditRecord>) {
        let mut journal = self.world.resource_mut::<Journal>();
        (
            std::mem::take(&mut journal.chat),
            std::mem::take(&mut journal.audit),
        )
    }

    /// Takes the class changes since the last call: devices the SFU must drop (per member)
    /// and who walked into which class (by room name, for its chat history).
    pub fn take_class_changes(&mut self) -> (Vec<Restriction>, Vec<Entered>, Vec<RecordingChange>) {
        let mut classes = self.world.resource_mut::<Classes>();
        (
            std::mem::take(&mut classes.restrictions),
            std::mem::take(&mut classes.entered),
            std::mem::take(&mut classes.recording_changes),
        )
    }

    /// The SFU started `room`'s recording as `id`, or could not (`Err`: why, for the
    /// teacher `by`).
    pub fn recording_started(
        &mut self,
        room: quad_shared::ZoneId,
        by: AvatarId,
        started: Result<String, ErrorMsg>,
    ) {
        let mut classes = self.world.resource_mut::<Classes>();
        let Some(class) = classes.rooms.get_mut(&room) else {
            return;
        };
        match started {
            Ok(id) => {
                if let Some(recording) = class.recording.as_mut() {
                    *recording = id;
                }
            }
            Err(err) => {
                class.recording = None;
                classes.announce(room);
                self.send(by, &ServerMsg::Error(err));
            }
        }
    }

    /// Recording `id` of `room` stopped by itself: the class is no longer recorded. Whether
    /// it was still the class's recording.
    pub fn recording_stopped(&mut self, room: quad_shared::ZoneId, id: &str) -> bool {
        let mut classes = self.world.resource_mut::<Classes>();
        let Some(class) = classes.rooms.get_mut(&room) else {
            return false;
        };
        if class.recording.as_deref() != Some(id) {
            return false;
        }
        class.recording = None;
        classes.announce(room);
        true
    }

    /// Tells the teachers in the room named `room_name`, and every session of `by_user`, what
    /// became of a recording.
    pub fn tell_recording_news(&mut self, room_name: &str, by_user: Option<&str>, msg: &ServerMsg) {
        let classes = self.world.resource::<Classes>();
        let mut to: Vec<AvatarId> = classes
            .rooms
            .values()
            .filter(|c| c.name == room_name)
            .flat_map(|c| c.teachers.iter().copied())
            .collect();
        if let Some(user) = by_user {
            for (id, entity) in &self.entities {
                if self
                    .world
                    .get::<Identity>(*entity)
                    .is_some_and(|i| i.user.0 == user)
                    && !to.contains(id)
                {
                    to.push(*id);
                }
            }
        }
        for id in to {
            self.send(id, msg);
        }
    }

    /// The identity `id` joined with.
    pub fn identity(&self, id: AvatarId) -> Option<&Identity> {
        self.entities
            .get(&id)
            .and_then(|e| self.world.get::<Identity>(*e))
    }

    /// Runs one tick, `dt` seconds after the previous one.
    pub fn tick(&mut self, dt: f32) {
        {
            let mut clock = self.world.resource_mut::<SpaceClock>();
            clock.tick = clock.tick.wrapping_add(1);
            clock.dt = dt.clamp(0.0, 1.0);
        }
        std::mem::swap(
            &mut self.inputs,
            &mut self.world.resource_mut::<InputQueues>(),
        );
        self.schedule.run(&mut self.world);
        std::mem::swap(
            &mut self.inputs,
            &mut self.world.resource_mut::<InputQueues>(),
        );
    }

    /// Takes the frames queued since the last call.
    pub fn drain_outbox(&mut self) -> std::vec::Drain<'_, (Recipient, Bytes)> {
        self.world
            .resource_mut::<Outbox>()
            .into_inner()
            .frames
            .drain(..)
    }

    /// `id`'s client says the room's media (`room`) or a hallway peer's plays: if that is
    /// where it is switching to, the old media goes.
    pub fn media_ready(&mut self, id: AvatarId, room: bool) {
        let switching_to_room = match self.world.resource::<RoomPresence>().switching.get(&id) {
            Some(switch) => switch.kind == super::resources::SwitchKind::Entering,
            None => return,
        };
        if switching_to_room != room {
            return;
        }
        self.world
            .resource_scope(|world, mut presence: Mut<RoomPresence>| {
                let mut outbox = world.resource_mut::<Outbox>();
                systems::room_plan::finish_switch(&mut presence, &mut outbox, id);
            });
    }

    /// Takes the room moves since the last call (for the SFU).
    pub fn drain_room_moves(&mut self) -> Vec<RoomMove> {
        std::mem::take(&mut self.world.resource_mut::<RoomPresence>().moves)
    }

    /// The media state `id` last reported.
    pub fn media_of(&self, id: AvatarId) -> MediaFlags {
        self.world.resource::<MediaStates>().of(id)
    }

    /// How many proximity links there are.
    pub fn peer_edges(&self) -> usize {
        self.world.resource::<ProximityGraph>().link_count()
    }

    /// How many avatars are in the space.
    /// Where everyone stands (tests and tools).
    pub fn positions(&mut self) -> Vec<(AvatarId, Vec2)> {
        self.world
            .query::<(&Avatar, &Position)>()
            .iter(&self.world)
            .map(|(a, p)| (a.id, p.0))
            .collect()
    }

    pub fn population(&self) -> usize {
        self.entities.len()
    }
}

/// The walkable point nearest `at` within `rect` (searched on rings of growing radius).
fn walkable_near(map: &Map, at: Vec2, rect: quad_shared::map::Rect) -> Option<Vec2> {
    let step = 8.0;
    for ring in 0..64 {
        let r = ring as f32 * step;
        let points = (ring * 8).max(1);
        for k in 0..points {
            let a = k as f32 / points as f32 * std::f32::consts::TAU;
            let p = at + Vec2::new(a.cos(), a.sin()) * r;
            if rect.contains(p) && map.collision.walkable(p) {
                return Some(p);
            }
        }
    }
    None
}

/// Walkable ground outside `rect` (and outside every classroom), nearest `from`: points on
/// rectangles growing around `rect`.
fn outside(map: &Map, rect: quad_shared::map::Rect, from: Vec2) -> Option<Vec2> {
    let step = 8.0;
    for grow in 1..48 {
        let d = grow as f32 * step;
        let (x0, y0) = (rect.x - d, rect.y - d);
        let (x1, y1) = (rect.x + rect.w + d, rect.y + rect.h + d);
        let mut best: Option<(f32, Vec2)> = None;
        let mut consider = |p: Vec2| {
            let in_room = map
                .zone_at(p)
                .and_then(|z| map.zone(z))
                .is_some_and(|z| z.kind == ZoneKind::Classroom);
            if !in_room && map.collision.walkable(p) {
                let d2 = p.distance_squared(from);
                if best.is_none_or(|(b, _)| d2 < b) {
                    best = Some((d2, p));
                }
            }
        };
        let mut x = x0;
        while x <= x1 {
            consider(Vec2::new(x, y0));
            consider(Vec2::new(x, y1));
            x += step;
        }
        let mut y = y0;
        while y <= y1 {
            consider(Vec2::new(x0, y));
            consider(Vec2::new(x1, y));
            y += step;
        }
        if let Some((_, p)) = best {
            return Some(p);
        }
    }
    None
}

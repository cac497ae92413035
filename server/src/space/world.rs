//! `SpaceWorld`: one space's ECS world with no I/O inside. Commands go in (`join`, `input`,
//! `leave`), time goes in (`tick(dt)`), encoded frames come out (`drain_outbox`). The space
//! task drives it over channels; benchmarks and tests drive it directly.

use super::components::{Avatar, ClientView, InZone, Motion, Position};
use super::resources::{
    MediaStates, Outbox, ProximityGraph, Recipient, RoomMove, RoomPresence, RosterChanges,
    SlotTable, SpaceClock, SpaceMap, SpaceSettings,
};
use super::spatial_grid::SpatialGrid;
use super::systems;
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::Schedule;
use bytes::Bytes;
use glam::Vec2;
use quad_shared::AvatarId;
use quad_shared::map::Map;
use quad_shared::movement;
use quad_shared::protocol::{
    ErrorCode, ErrorMsg, IceServer, Input, MediaFlags, PROTOCOL_VERSION, Person, ServerMsg, Signal,
    Welcome,
};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// People per roster frame, so a roster of thousands stays under the frame limit.
pub const ROSTER_CHUNK: usize = 500;
/// Side of a spatial grid cell, pixels.
pub const GRID_CELL: f32 = 128.0;

/// One space: a map and the avatars on it.
pub struct SpaceWorld {
    world: World,
    schedule: Schedule,
    entities: FxHashMap<AvatarId, Entity>,
    map_url: String,
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
        world.insert_resource(ProximityGraph::default());
        world.insert_resource(MediaStates::default());
        world.insert_resource(RoomPresence::default());
        SpaceWorld {
            world,
            schedule: systems::tick_schedule(),
            entities: FxHashMap::default(),
            map_url: map_url.into(),
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
    /// `requested_spawn` is honoured only in dev mode and only on walkable ground.
    pub fn join(
        &mut self,
        id: AvatarId,
        name: String,
        requested_spawn: Option<Vec2>,
        ice_servers: Vec<IceServer>,
    ) -> Vec2 {
        let dev = self.world.resource::<SpaceSettings>().dev;
        let map = self.map();
        let spawn = requested_spawn
            .filter(|p| dev && p.is_finite() && map.collision.walkable(*p))
            .unwrap_or(map.spawn);
        let zone = map.zone_at(spawn);
        let slot = self
            .world
            .resource_mut::<SlotTable>()
            .allocate(id, quad_shared::protocol::quantize(spawn.to_array()));
        let entity = self
            .world
            .spawn((
                Avatar {
                    id,
                    slot,
                    name: name.clone(),
                },
                Position(spawn),
                Motion::default(),
                InZone(zone),
                ClientView::default(),
            ))
            .id();
        if let Some(old) = self.entities.insert(id, entity) {
            // Ids are never reused, so this is a bug in the caller; keep the world consistent.
            tracing::error!(%id, "joined twice; dropping the older avatar");
            self.despawn(old);
        }

        let (tick_hz, proximity) = {
            let settings = self.world.resource::<SpaceSettings>();
            (settings.tick_hz, settings.proximity)
        };
        let welcome = ServerMsg::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            you: id,
            name: name.clone(),
            map_url: self.map_url.clone(),
            spawn: spawn.to_array(),
            tick_hz,
            proximity,
            ice_servers,
            dev,
            role: quad_shared::protocol::Role::Guest,
        });
        self.send(id, &welcome);
        let people: Vec<Person> = self
            .world
            .query::<&Avatar>()
            .iter(&self.world)
            .map(|a| Person {
                id: a.id,
                name: a.name.clone(),
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
        self.world
            .resource_mut::<RosterChanges>()
            .joined
            .push(Person { id, name });
        spawn
    }

    /// Removes an avatar; everyone is told at the next tick. Unknown ids are ignored.
    pub fn leave(&mut self, id: AvatarId) {
        self.world.resource_mut::<MediaStates>().0.remove(&id);
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
        if let Some(slot) = self.world.get::<Avatar>(entity).map(|a| a.slot) {
            self.world.resource_mut::<SlotTable>().release(slot);
        }
        self.world.despawn(entity);
    }

    /// Queues movement input for the next tick, or answers the client with an error.
    pub fn input(&mut self, id: AvatarId, input: Input) {
        let Some(&entity) = self.entities.get(&id) else {
            return;
        };
        let refusal = {
            // The entity is in `entities` only while it exists.
            let Some(mut motion) = self.world.get_mut::<Motion>(entity) else {
                return;
            };
            let last = motion.pending.last().map_or(motion.last_seq, |i| i.seq);
            if let Err(why) = movement::input_is_legal(input.dir, input.steps) {
                Some(ErrorMsg::new(ErrorCode::IllegalMove, why))
            } else if input.seq <= last {
                Some(ErrorMsg::new(
                    ErrorCode::IllegalMove,
                    format!("input sequence {} is not after {last}", input.seq),
                ))
            } else if motion.pending.len() >= Motion::MAX_PENDING {
                Some(ErrorMsg::new(
                    ErrorCode::RateLimited,
                    "too many movement inputs in one tick",
                ))
            } else {
                motion.bypass_change_detection().pending.push(input);
                None
            }
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
        let before = self.world.resource_mut::<MediaStates>().0.insert(id, media);
        if before == Some(media) {
            return;
        }
        let world = &mut self.world;
        world.resource_scope(|world, mut outbox: Mut<Outbox>| {
            let graph = world.resource::<ProximityGraph>();
            for &peer in graph.peers_of(id) {
                outbox.push(
                    Recipient::One(peer),
                    &ServerMsg::PeerMedia { peer: id, media },
                );
            }
        });
    }

    /// Runs one tick, `dt` seconds after the previous one.
    pub fn tick(&mut self, dt: f32) {
        {
            let mut clock = self.world.resource_mut::<SpaceClock>();
            clock.tick = clock.tick.wrapping_add(1);
            clock.dt = dt.clamp(0.0, 1.0);
        }
        self.schedule.run(&mut self.world);
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
        self.world.resource::<ProximityGraph>().links.len()
    }

    /// How many avatars are in the space.
    pub fn population(&self) -> usize {
        self.entities.len()
    }
}

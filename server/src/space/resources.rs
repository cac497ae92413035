//! Resources of the space's world: the map, the clock, settings, and the queues through
//! which the world talks to the outside (the outbox, roster changes).

use bevy_ecs::prelude::*;
use bytes::Bytes;
use quad_shared::AvatarId;
use quad_shared::map::Map;
use quad_shared::protocol::MediaFlags;
use std::sync::Arc;

/// The map this space runs on.
#[derive(Resource, Clone)]
pub struct SpaceMap(pub Arc<Map>);

/// Time, as given to the world by its driver (time is an input, never read from a clock).
#[derive(Resource, Debug, Default, Clone, Copy)]
pub struct SpaceClock {
    pub tick: u32,
    /// Seconds since the previous tick.
    pub dt: f32,
}

/// Tunables of a space.
#[derive(Resource, Debug, Clone)]
pub struct SpaceSettings {
    pub tick_hz: u16,
    pub area_of_interest: f32,
    pub replication_bytes_per_sec: u32,
    /// Most other avatars a client is sent (the nearest ones).
    pub max_interest: usize,
    /// Who is linked peer-to-peer outside rooms.
    pub proximity: quad_shared::proximity::ProximityRules,
    /// Whether `Hello.spawn` is honoured.
    pub dev: bool,
}

/// Who a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    One(AvatarId),
    Everyone,
}

/// Encoded frames the world wants sent; the driver drains it after every call.
#[derive(Resource, Debug, Default)]
pub struct Outbox {
    pub frames: Vec<(Recipient, Bytes)>,
}

impl Outbox {
    /// Encodes `msg` once and queues it. A message that cannot be encoded is a bug in the
    /// server, not bad input: it is logged and dropped.
    pub fn push(&mut self, to: Recipient, msg: &quad_shared::protocol::ServerMsg) {
        match quad_shared::codec::encode(msg) {
            Ok(frame) => self.frames.push((to, Bytes::from(frame))),
            Err(e) => tracing::error!(?to, "cannot encode an outgoing message: {e}"),
        }
    }
}

/// People who joined or left since the last tick, announced once per tick to everyone.
#[derive(Resource, Debug, Default)]
pub struct RosterChanges {
    pub joined: Vec<quad_shared::protocol::Person>,
    pub left: Vec<AvatarId>,
}

/// Every avatar's wire position in one dense array, indexed by a compact slot given at join
/// and reused after leave. Replication reads it for every viewer of every avatar, so it is
/// kept small and contiguous (8 bytes a slot, holder and position side by side: one cache
/// miss a look-up) rather than looked up through the ECS.
#[derive(Resource, Debug, Default)]
pub struct SlotTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

/// One slot: who holds it (`AvatarId(0)`: free; real ids start at 1) and where they are.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: AvatarId,
    wire: (u16, u16),
}

impl SlotTable {
    pub fn allocate(&mut self, id: AvatarId, wire: (u16, u16)) -> u32 {
        let slot = Slot { id, wire };
        if let Some(at) = self.free.pop() {
            self.slots[at as usize] = slot;
            at
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        }
    }

    pub fn release(&mut self, slot: u32) {
        if let Some(held) = self.slots.get_mut(slot as usize) {
            held.id = AvatarId(0);
            self.free.push(slot);
        }
    }

    /// Records the quantized position of the avatar in `slot`.
    pub fn set_wire(&mut self, slot: u32, wire: (u16, u16)) {
        if let Some(held) = self.slots.get_mut(slot as usize) {
            held.wire = wire;
        }
    }

    /// The wire position of `id` if it still holds `slot`.
    #[inline]
    pub fn wire_of(&self, slot: u32, id: AvatarId) -> Option<(u16, u16)> {
        self.slots
            .get(slot as usize)
            .filter(|s| s.id == id)
            .map(|s| s.wire)
    }

    /// Slots handed out so far (held or free): every slot number is below this.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// The proximity graph: which pairs of avatars are linked peer-to-peer now. Signaling is
/// relayed only along these links.
#[derive(Resource, Debug, Default)]
pub struct ProximityGraph {
    /// Linked pairs, the lower id first.
    pub links: rustc_hash::FxHashSet<(AvatarId, AvatarId)>,
    /// The links the proximity system wants after this tick (the media planner diffs them).
    pub wanted: rustc_hash::FxHashSet<(AvatarId, AvatarId)>,
    /// Each linked avatar's peers (the same links, by avatar), kept by the media planner.
    pub peers: rustc_hash::FxHashMap<AvatarId, Vec<AvatarId>>,
    /// `commit`'s buffer, kept between ticks.
    changes: Vec<((AvatarId, AvatarId), bool)>,
}

impl ProximityGraph {
    /// A pair in canonical order.
    pub fn pair(a: AvatarId, b: AvatarId) -> (AvatarId, AvatarId) {
        if a < b { (a, b) } else { (b, a) }
    }

    pub fn linked(&self, a: AvatarId, b: AvatarId) -> bool {
        self.links.contains(&Self::pair(a, b))
    }

    /// The avatars `id` is linked with now.
    pub fn peers_of(&self, id: AvatarId) -> &[AvatarId] {
        self.peers.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Makes the wanted links the current ones, calling `changed(a, b, linked)` for each
    /// link that forms or breaks.
    pub fn commit(&mut self, mut changed: impl FnMut(AvatarId, AvatarId, bool)) {
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        changes.extend(self.links.difference(&self.wanted).map(|&p| (p, false)));
        changes.extend(self.wanted.difference(&self.links).map(|&p| (p, true)));
        for &((a, b), linked) in &changes {
            changed(a, b, linked);
            if linked {
                self.add_peers(a, b);
            } else {
                self.remove_peers(a, b);
            }
        }
        self.changes = changes;
        std::mem::swap(&mut self.links, &mut self.wanted);
    }

    /// Records a new link in `peers`.
    fn add_peers(&mut self, a: AvatarId, b: AvatarId) {
        self.peers.entry(a).or_default().push(b);
        self.peers.entry(b).or_default().push(a);
    }

    /// Forgets a link in `peers`.
    fn remove_peers(&mut self, a: AvatarId, b: AvatarId) {
        for (from, to) in [(a, b), (b, a)] {
            if let Some(list) = self.peers.get_mut(&from) {
                list.retain(|p| *p != to);
                if list.is_empty() {
                    self.peers.remove(&from);
                }
            }
        }
    }
}

/// Each avatar's microphone and camera state, as its client last reported it.
#[derive(Resource, Debug, Default)]
pub struct MediaStates(pub rustc_hash::FxHashMap<AvatarId, MediaFlags>);

impl MediaStates {
    pub fn of(&self, id: AvatarId) -> MediaFlags {
        self.0.get(&id).copied().unwrap_or_default()
    }
}

/// Which room (a classroom zone, whose media goes through the SFU) each avatar is in, and
/// the changes since the space task last took them. The space task hands the changes to
/// the SFU before it delivers the `JoinRoomMedia` frames.
#[derive(Resource, Debug, Default)]
pub struct RoomPresence {
    pub room_of: rustc_hash::FxHashMap<AvatarId, quad_shared::ZoneId>,
    pub moves: Vec<RoomMove>,
    /// Avatars between two kinds of media (make before break): the old media stays until
    /// the client says the new one plays (`MediaReady`) or the ticks run out.
    pub switching: rustc_hash::FxHashMap<AvatarId, Switch>,
}

/// An avatar's media switch in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub kind: SwitchKind,
    /// Ticks until the old media goes regardless.
    pub ticks_left: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchKind {
    /// Walked into a room: its proximity links stay until the room's media plays.
    Entering,
    /// Walked out of this room: its room media stays until its hallway links play.
    Leaving(quad_shared::ZoneId),
}

impl RoomPresence {
    /// Whether `id` walked into a room and still keeps its hallway links.
    pub fn entering(&self, id: AvatarId) -> bool {
        self.switching
            .get(&id)
            .is_some_and(|s| s.kind == SwitchKind::Entering)
    }
}

/// An avatar entered a room, left one, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomMove {
    pub id: AvatarId,
    /// The avatar's display name.
    pub name: String,
    /// The room it is in now, with the room's name; `None`: no room.
    pub to: Option<(quad_shared::ZoneId, String)>,
}

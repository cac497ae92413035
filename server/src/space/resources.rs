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

/// Movement input waiting for the next tick, by slot (see [`SlotTable`]). The space's
/// driver queues into a copy of its own, which costs a hash look-up and no entity access,
/// and hands it to the world for each tick.
#[derive(Resource, Debug, Default)]
pub struct InputQueues(pub Vec<InputQueue>);

/// One avatar's waiting input.
#[derive(Debug, Default)]
pub struct InputQueue {
    /// Inputs in arrival order, applied at the next tick.
    pub pending: Vec<quad_shared::protocol::Input>,
    /// The sequence number of the last input accepted (the next must be above it).
    pub last_queued: u32,
}

impl InputQueue {
    /// Most inputs that may wait for one tick; more and the client is sending too fast.
    pub const MAX_PENDING: usize = 32;
}

impl InputQueues {
    /// The queue of `slot`, made empty if it does not exist yet.
    pub fn of(&mut self, slot: u32) -> &mut InputQueue {
        let s = slot as usize;
        if self.0.len() <= s {
            self.0.resize_with(s + 1, InputQueue::default);
        }
        &mut self.0[s]
    }
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
///
/// Links are kept by slot (see [`SlotTable`]), so the proximity system plans from arrays
/// instead of hash look-ups; questions by avatar id go through the id's slot. Every linked
/// avatar is in the space: [`ProximityGraph::remove`] breaks a leaver's links.
#[derive(Resource, Debug, Default)]
pub struct ProximityGraph {
    /// Each avatar's slot, from join to leave (see [`ProximityGraph::place`]).
    slot_of: rustc_hash::FxHashMap<AvatarId, u32>,
    /// Each slot's peers, as (slot, id).
    by_slot: SlotLinks,
    /// How many links there are.
    links: usize,
    /// The links the proximity system wants after this tick; the media planner commits them.
    pub wanted: LinkPlan,
}

/// Each slot's peers in one flat array, `stride` places a slot (a cache line for the
/// default cap of 6), so planning reads them without chasing a pointer per avatar.
#[derive(Debug, Default)]
struct SlotLinks {
    stride: usize,
    peers: Vec<(u32, AvatarId)>,
    count: Vec<u16>,
}

impl SlotLinks {
    fn of(&self, slot: u32) -> &[(u32, AvatarId)] {
        let s = slot as usize;
        match self.count.get(s) {
            Some(&n) => &self.peers[s * self.stride..s * self.stride + usize::from(n)],
            None => &[],
        }
    }

    fn push(&mut self, slot: u32, peer: (u32, AvatarId)) {
        let s = slot as usize;
        if self.count.len() <= s {
            self.count.resize(s + 1, 0);
            self.peers.resize(self.count.len() * self.stride, peer);
        }
        if usize::from(self.count[s]) == self.stride {
            self.widen();
        }
        self.peers[s * self.stride + usize::from(self.count[s])] = peer;
        self.count[s] += 1;
    }

    fn remove(&mut self, slot: u32, peer: AvatarId) {
        let s = slot as usize;
        let Some(&n) = self.count.get(s) else {
            return;
        };
        let list = &mut self.peers[s * self.stride..s * self.stride + usize::from(n)];
        if let Some(at) = list.iter().position(|&(_, p)| p == peer) {
            list.swap(at, usize::from(n) - 1);
            self.count[s] = n - 1;
        }
    }

    /// Doubles the places per slot (8 at first), keeping every list.
    fn widen(&mut self) {
        let stride = (self.stride * 2).max(8);
        let mut peers = vec![(0, AvatarId(0)); self.count.len() * stride];
        for (s, &n) in self.count.iter().enumerate() {
            let n = usize::from(n);
            peers[s * stride..s * stride + n]
                .copy_from_slice(&self.peers[s * self.stride..s * self.stride + n]);
        }
        self.stride = stride;
        self.peers = peers;
    }
}

/// The proximity system's plan for this tick, by the spatial grid's entry index: each
/// entry's slot and id, the entry indices of its wanted peers (`stride` places an entry,
/// `count` of them used), and the changes: the links that form and those that break.
#[derive(Debug, Default)]
pub struct LinkPlan {
    pub who: Vec<(u32, AvatarId)>,
    /// Each slot's entry index (valid for the slots in `who`).
    pub index_of_slot: Vec<u32>,
    pub stride: usize,
    pub peers: Vec<u32>,
    pub count: Vec<u8>,
    /// Wanted links that do not exist yet, as entry index pairs.
    pub formed: Vec<(u32, u32)>,
    /// Current links that are not wanted, as (slot, id) pairs.
    pub broken: Vec<((u32, AvatarId), (u32, AvatarId))>,
}

impl LinkPlan {
    /// The entry indices of entry `i`'s wanted peers.
    pub fn peers_of(&self, i: usize) -> &[u32] {
        let start = i * self.stride;
        &self.peers[start..start + usize::from(self.count[i])]
    }
}

impl ProximityGraph {
    /// Notes which slot `id` holds (at join).
    pub fn place(&mut self, id: AvatarId, slot: u32) {
        self.slot_of.insert(id, slot);
    }

    pub fn linked(&self, a: AvatarId, b: AvatarId) -> bool {
        self.peers_of(a).any(|p| p == b)
    }

    /// The avatars `id` is linked with now.
    pub fn peers_of(&self, id: AvatarId) -> impl ExactSizeIterator<Item = AvatarId> + '_ {
        let peers = match self.slot_of.get(&id) {
            Some(&slot) => self.by_slot.of(slot),
            None => &[],
        };
        peers.iter().map(|&(_, p)| p)
    }

    /// The peers of the avatar in `slot`, as (slot, id).
    pub fn peers_of_slot(&self, slot: u32) -> &[(u32, AvatarId)] {
        self.by_slot.of(slot)
    }

    /// How many links there are.
    pub fn link_count(&self) -> usize {
        self.links
    }

    /// Every link once, the lower id first (of the avatars [`ProximityGraph::place`]d).
    pub fn links(&self) -> impl Iterator<Item = (AvatarId, AvatarId)> + '_ {
        self.slot_of.iter().flat_map(move |(&a, &slot)| {
            self.by_slot
                .of(slot)
                .iter()
                .filter(move |&&(_, b)| a < b)
                .map(move |&(_, b)| (a, b))
        })
    }

    /// Breaks every link of `id` (in `slot`), which is leaving; `told(peer)` for each peer.
    pub fn remove(&mut self, id: AvatarId, slot: u32, mut told: impl FnMut(AvatarId)) {
        if self.slot_of.get(&id) == Some(&slot) {
            self.slot_of.remove(&id);
        }
        let peers = self.by_slot.of(slot).to_vec();
        for (peer_slot, peer) in peers {
            self.unlink(slot, id, peer_slot, peer);
            told(peer);
        }
    }

    /// Makes the wanted links the current ones, calling `changed(a, b, linked)` once for
    /// each link that forms or breaks (the plan lists both, so this costs the changes).
    pub fn commit(&mut self, mut changed: impl FnMut(AvatarId, AvatarId, bool)) {
        let plan = std::mem::take(&mut self.wanted);
        for &((a_slot, a), (b_slot, b)) in &plan.broken {
            changed(a.min(b), a.max(b), false);
            self.unlink(a_slot, a, b_slot, b);
        }
        for &(i, j) in &plan.formed {
            let ((a_slot, a), (b_slot, b)) = (plan.who[i as usize], plan.who[j as usize]);
            changed(a.min(b), a.max(b), true);
            self.link(a_slot, a, b_slot, b);
        }
        self.wanted = plan;
    }

    /// Records a new link.
    fn link(&mut self, a_slot: u32, a: AvatarId, b_slot: u32, b: AvatarId) {
        self.by_slot.push(a_slot, (b_slot, b));
        self.by_slot.push(b_slot, (a_slot, a));
        self.links += 1;
    }

    /// Forgets a link.
    fn unlink(&mut self, a_slot: u32, a: AvatarId, b_slot: u32, b: AvatarId) {
        self.by_slot.remove(a_slot, b);
        self.by_slot.remove(b_slot, a);
        self.links = self.links.saturating_sub(1);
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

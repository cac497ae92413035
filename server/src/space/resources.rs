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
///
/// Frames are copied into a shared arena and handed out as views of it, so a tick that
/// sends ten thousand frames makes a few allocations, not ten thousand. (A frame still
/// waiting in a slow client's queue keeps its chunk of the arena alive: at most
/// [`Outbox::CHUNK`] bytes.)
#[derive(Resource, Debug, Default)]
pub struct Outbox {
    pub frames: Vec<(Recipient, Bytes)>,
    arena: bytes::BytesMut,
    encoded: Vec<u8>,
}

impl Outbox {
    /// Bytes the arena grows by when it runs out.
    pub const CHUNK: usize = 16 * 1024;

    /// Encodes `msg` once and queues it. A message that cannot be encoded is a bug in the
    /// server, not bad input: it is logged and dropped.
    pub fn push(&mut self, to: Recipient, msg: &quad_shared::protocol::ServerMsg) {
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.clear();
        match quad_shared::codec::encode_into(msg, &mut encoded) {
            Ok(()) => self.push_frame(to, &encoded),
            Err(e) => tracing::error!(?to, "cannot encode an outgoing message: {e}"),
        }
        self.encoded = encoded;
    }

    /// Queues a frame already encoded.
    pub fn push_frame(&mut self, to: Recipient, frame: &[u8]) {
        if self.arena.capacity() < frame.len() {
            self.arena.reserve(Self::CHUNK.max(frame.len()));
        }
        self.arena.extend_from_slice(frame);
        self.frames.push((to, self.arena.split().freeze()));
    }
}

/// People who joined or left since the last tick, announced once per tick to everyone.
#[derive(Resource, Debug, Default)]
pub struct RosterChanges {
    pub joined: Vec<quad_shared::protocol::Person>,
    pub left: Vec<AvatarId>,
}

/// Clients whose input the movement system applied this tick. Replication acknowledges
/// each at once, on this tick, even when its next snapshot is a tick away: an input is
/// acknowledged within one tick of arriving, so the client's prediction is corrected soon.
#[derive(Resource, Debug, Default)]
pub struct AppliedInputs(pub Vec<Entity>);

/// Movement input waiting for the next tick, by slot (see [`SlotTable`]). The space's
/// driver queues into a copy of its own, which costs a hash look-up and no entity access,
/// and hands it to the world for each tick.
#[derive(Resource, Debug, Default)]
pub struct InputQueues(pub Vec<InputQueue>);

/// One avatar's waiting input.
#[derive(Debug, Default)]
pub struct InputQueue {
    /// Inputs in arrival order, applied at the next tick. A client sends one or two a
    /// tick, kept inline: no second cache miss per avatar when they are queued and when
    /// they are applied.
    pub pending: smallvec::SmallVec<[quad_shared::protocol::Input; 4]>,
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

    /// Starts fetching `slot`'s entry into the cache (a hint; nothing if there is none).
    #[inline]
    pub fn prefetch(&self, slot: u32) {
        if let Some(held) = self.slots.get(slot as usize) {
            mem_prefetch::prefetch_read_data::<_, 3>(held);
        }
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
/// The links are the last committed [`LinkPlan`], laid out by that tick's spatial grid
/// order: the next plan reads them almost in order (people move little in a tick) instead
/// of looking each avatar up. Questions by avatar id go through the id's slot. Every linked
/// avatar is in the space: [`ProximityGraph::remove`] breaks a leaver's links.
#[derive(Resource, Debug, Default)]
pub struct ProximityGraph {
    /// Each avatar's slot, from join to leave (see [`ProximityGraph::place`]).
    slot_of: rustc_hash::FxHashMap<AvatarId, u32>,
    /// The links now: the last plan committed, less the leavers since.
    current: LinkPlan,
    /// How many links there are.
    links: usize,
    /// The links the proximity system wants after this tick; the media planner commits them.
    wanted: LinkPlan,
    /// Whether `wanted` holds a plan not committed yet.
    proposed: bool,
    /// How many plans have been committed (wrapping).
    plans_committed: u32,
}

/// A set of links by the spatial grid's entry index: each entry's slot and id, the entry
/// indices of its peers (`stride` places an entry, `count` of them used), and, for a plan,
/// the changes from the links before it: the links that form and those that break.
#[derive(Debug, Default)]
pub struct LinkPlan {
    pub who: Vec<(u32, AvatarId)>,
    /// Each slot's entry index (valid for the slots in `who`; see [`LinkPlan::index_of`]).
    pub index_of_slot: Vec<u32>,
    pub stride: usize,
    pub peers: Vec<u32>,
    pub count: Vec<u8>,
    /// Wanted links that do not exist yet, as entry index pairs.
    pub formed: Vec<(u32, u32)>,
    /// Current links that are not wanted.
    pub broken: Vec<(AvatarId, AvatarId)>,
}

impl LinkPlan {
    /// The entry indices of entry `i`'s peers.
    pub fn peers_of(&self, i: usize) -> &[u32] {
        let start = i * self.stride;
        &self.peers[start..start + usize::from(self.count[i])]
    }

    /// The entry of `id`, who holds `slot`, if it is in this plan.
    #[inline]
    pub fn index_of(&self, slot: u32, id: AvatarId) -> Option<usize> {
        let i = *self.index_of_slot.get(slot as usize)? as usize;
        (self.who.get(i) == Some(&(slot, id))).then_some(i)
    }

    /// Takes `peer` out of entry `i`'s peers (the order of the rest may change).
    fn forget(&mut self, i: usize, peer: u32) {
        let start = i * self.stride;
        let n = usize::from(self.count[i]);
        let list = &mut self.peers[start..start + n];
        if let Some(at) = list.iter().position(|&p| p == peer) {
            list.swap(at, n - 1);
            self.count[i] -= 1;
        }
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

    /// The entry of `id` in the current links.
    fn entry_of(&self, id: AvatarId) -> Option<usize> {
        let &slot = self.slot_of.get(&id)?;
        self.current.index_of(slot, id)
    }

    /// The avatars `id` is linked with now.
    pub fn peers_of(&self, id: AvatarId) -> impl ExactSizeIterator<Item = AvatarId> + '_ {
        let peers = match self.entry_of(id) {
            Some(i) => self.current.peers_of(i),
            None => &[],
        };
        peers.iter().map(|&p| self.current.who[p as usize].1)
    }

    /// A buffer to plan in (the plan before last, for its allocations), and the links now.
    pub fn plan_buffer(&mut self) -> (LinkPlan, &LinkPlan) {
        self.proposed = false;
        (std::mem::take(&mut self.wanted), &self.current)
    }

    /// Hands over the plan for this tick, made from the current links.
    pub fn propose(&mut self, plan: LinkPlan) {
        self.wanted = plan;
        self.proposed = true;
    }

    /// How many link plans have been committed (wrapping): links are planned on some ticks
    /// only, so this tells whether the links now were planned after a given moment.
    pub fn plans_committed(&self) -> u32 {
        self.plans_committed
    }

    /// How many links there are.
    pub fn link_count(&self) -> usize {
        self.links
    }

    /// Every link once, the lower id first.
    pub fn links(&self) -> impl Iterator<Item = (AvatarId, AvatarId)> + '_ {
        let who = &self.current.who;
        who.iter().enumerate().flat_map(move |(i, &(_, a))| {
            self.current
                .peers_of(i)
                .iter()
                .map(move |&p| who[p as usize].1)
                .filter(move |&b| a < b)
                .map(move |b| (a, b))
        })
    }

    /// Breaks every link of `id` (in `slot`), which is leaving; `told(peer)` for each peer.
    /// A plan proposed and not committed yet is dropped (it may link the leaver); the next
    /// tick plans again.
    pub fn remove(&mut self, id: AvatarId, slot: u32, mut told: impl FnMut(AvatarId)) {
        self.proposed = false;
        if self.slot_of.get(&id) == Some(&slot) {
            self.slot_of.remove(&id);
        }
        let Some(i) = self.current.index_of(slot, id) else {
            return;
        };
        let current = &mut self.current;
        while let Some(&peer) = current.peers_of(i).last() {
            current.count[i] -= 1;
            current.forget(peer as usize, i as u32);
            self.links = self.links.saturating_sub(1);
            told(current.who[peer as usize].1);
        }
        // Nobody: the next plan finds no entry for it, even if its slot is taken again.
        current.who[i].1 = AvatarId(0);
    }

    /// Makes the proposed links the current ones, calling `changed(a, b, linked)` once for
    /// each link that forms or breaks (the plan lists both, so this costs the changes).
    /// Without a plan proposed since the last commit, nothing changes.
    pub fn commit(&mut self, mut changed: impl FnMut(AvatarId, AvatarId, bool)) {
        if !std::mem::take(&mut self.proposed) {
            return;
        }
        let plan = &self.wanted;
        for &(a, b) in &plan.broken {
            changed(a.min(b), a.max(b), false);
        }
        for &(i, j) in &plan.formed {
            let ((_, a), (_, b)) = (plan.who[i as usize], plan.who[j as usize]);
            changed(a.min(b), a.max(b), true);
        }
        self.links = (self.links + plan.formed.len()).saturating_sub(plan.broken.len());
        self.plans_committed = self.plans_committed.wrapping_add(1);
        std::mem::swap(&mut self.current, &mut self.wanted);
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
    /// [`ProximityGraph::plans_committed`] when the switch began: walking out, the room
    /// media may go early only once a link plan made since then found no one near.
    pub plans_at_start: u32,
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

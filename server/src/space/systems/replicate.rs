//! Replication: sends each client the avatars around it.
//!
//! Each client has an interest list: the nearest `max_interest` avatars within the area of
//! interest, re-selected every `REFRESH_TICKS` ticks (staggered across clients, so the grid
//! scan is spread out). Every tick, each avatar on the list whose position the client has
//! stale gains priority, nearer ones faster, and the highest-priority updates that fit the
//! client's byte budget (`replication_bytes_per_sec`) are sent. So a tick costs the length
//! of the interest lists, not the size of the crowd, and a client in a crowd gets its
//! neighbours often, far avatars less often, and never more bytes than its budget (plus
//! its own position, always sent when it changes).

use crate::space::components::{Avatar, ClientView, Interest, Motion, Position};
use crate::space::resources::{Outbox, Recipient, SlotTable, SpaceClock, SpaceSettings};
use crate::space::spatial_grid::SpatialGrid;
use bevy_ecs::prelude::*;
use bytes::BytesMut;
use quad_shared::AvatarId;
use quad_shared::protocol::{AvatarUpdate, ServerMsg, Snapshot};

/// A conservative size of one `AvatarUpdate` on the wire, bytes.
const UPDATE_BYTES: f32 = 12.0;
/// Ticks' worth of budget a client may bank.
const BURST_TICKS: f32 = 4.0;
/// How often an interest list is re-selected, in ticks (0.8 s at 20 Hz; the area of
/// interest reaches past the screen, so newcomers appear before they are in view).
pub const REFRESH_TICKS: u32 = 16;
/// The nearest entries of an interest list are checked every tick...
const NEAR_TIER: usize = 12;
/// ...the rest every this many ticks (staggered across clients), with weight to match.
const FAR_TIER_EVERY: u32 = 4;
/// Priority head start of an avatar the client has never been sent.
const NEW_BONUS: f32 = 4.0;

/// Buffers reused across clients and ticks, so a tick allocates only the frames it sends.
#[derive(Default)]
pub struct Scratch {
    near: Vec<(f32, u32, AvatarId)>,
    merged: Vec<Interest>,
    candidates: Vec<(f32, usize, (u16, u16))>,
    snapshot: Snapshot,
    buf: Vec<u8>,
    /// Every frame of a tick is cut from this one buffer: one allocation per tick, not one
    /// per client (the frames share it until the last is sent).
    frames: BytesMut,
}

pub fn replicate(
    clock: Res<SpaceClock>,
    settings: Res<SpaceSettings>,
    grid: Res<SpatialGrid>,
    mut outbox: ResMut<Outbox>,
    mut clients: Query<(&Avatar, &Position, &Motion, &mut ClientView)>,
    slots: Res<SlotTable>,
    mut scratch: Local<Scratch>,
) {
    let tick = clock.tick;
    let per_tick = settings.replication_bytes_per_sec as f32 / settings.tick_hz.max(1) as f32;
    let scratch = &mut *scratch;
    scratch.frames.reserve(clients.iter().len() * 64);

    for (avatar, position, motion, mut view) in &mut clients {
        let view = view.bypass_change_detection();
        view.byte_tokens = (view.byte_tokens + per_tick).min(per_tick * BURST_TICKS);
        let due = !view.selected || tick.wrapping_add(avatar.id.0) % REFRESH_TICKS == 0;
        if due {
            refresh_interest(view, avatar.id, position, &grid, &settings, scratch);
            view.selected = true;
        }

        // Which interesting avatars are stale, and how urgent each is.
        let Scratch {
            candidates,
            snapshot,
            buf,
            frames,
            ..
        } = scratch;
        candidates.clear();
        snapshot.avatars.clear();
        snapshot.gone.clear();
        snapshot.gone.append(&mut view.gone);
        let mut vanished = false;
        let far_due = (tick.wrapping_add(avatar.id.0)) % FAR_TIER_EVERY == 0;
        let checked = if far_due {
            view.interest.len()
        } else {
            NEAR_TIER.min(view.interest.len())
        };
        for (i, it) in view.interest[..checked].iter_mut().enumerate() {
            let Some(current) = slots.wire_of(it.slot, it.id) else {
                // Left the space since the last refresh.
                if it.sent.is_some() {
                    snapshot.gone.push(it.id);
                }
                it.sent = None;
                it.priority = f32::NEG_INFINITY;
                vanished = true;
                continue;
            };
            if it.sent != Some(current) {
                let weight = if i < NEAR_TIER {
                    it.weight
                } else {
                    it.weight * FAR_TIER_EVERY as f32
                };
                it.priority += weight + if it.sent.is_none() { NEW_BONUS } else { 0.0 };
                candidates.push((it.priority, i, current));
            }
        }
        let fit = (view.byte_tokens / UPDATE_BYTES).max(0.0) as usize;
        if fit < candidates.len() {
            if fit > 0 {
                candidates.select_nth_unstable_by(fit - 1, |a, b| b.0.total_cmp(&a.0));
            }
            candidates.truncate(fit);
        }
        for &(_, i, current) in candidates.iter() {
            let it = &mut view.interest[i];
            it.sent = Some(current);
            it.priority = 0.0;
            snapshot
                .avatars
                .push(AvatarUpdate(it.id, current.0, current.1));
        }
        if vanished {
            // After sending, so the indices in `candidates` stayed valid.
            view.interest.retain(|it| it.priority != f32::NEG_INFINITY);
        }

        let own = (position.0.to_array(), motion.last_seq);
        snapshot.you = (view.sent_self != Some(own)).then_some(own.0);
        if snapshot.you.is_none() && snapshot.avatars.is_empty() && snapshot.gone.is_empty() {
            continue;
        }
        snapshot.tick = tick;
        snapshot.ack = motion.last_seq;
        view.sent_self = Some(own);

        buf.clear();
        let msg = ServerMsg::Snapshot(std::mem::take(snapshot));
        let encoded = quad_shared::codec::encode_into(&msg, buf);
        if let ServerMsg::Snapshot(s) = msg {
            *snapshot = s; // hand the buffers back for reuse
        }
        match encoded {
            Ok(()) => {
                view.byte_tokens -= buf.len() as f32;
                frames.extend_from_slice(buf);
                outbox
                    .frames
                    .push((Recipient::One(avatar.id), frames.split().freeze()));
            }
            Err(e) => tracing::error!(id = %avatar.id, "cannot encode a snapshot: {e}"),
        }
    }
}

/// Re-selects a client's interest list: the nearest avatars within the area of interest,
/// keeping what was already sent for those that stay; those that drop out are reported gone.
fn refresh_interest(
    view: &mut ClientView,
    me: AvatarId,
    position: &Position,
    grid: &SpatialGrid,
    settings: &SpaceSettings,
    scratch: &mut Scratch,
) {
    let aoi = settings.area_of_interest;
    let max = settings.max_interest;
    let near = &mut scratch.near;
    // Look close first: in a crowd the nearest `max` are found without scanning the whole
    // area of interest.
    for radius in [aoi * 0.35, aoi * 0.6, aoi] {
        near.clear();
        grid.for_each_within(position.0, radius, |e, d2| {
            if e.id != me {
                near.push((d2, e.slot, e.id));
            }
        });
        if near.len() >= max {
            break;
        }
    }
    if near.len() > max {
        if max > 0 {
            near.select_nth_unstable_by(max - 1, |a, b| a.0.total_cmp(&b.0));
        }
        near.truncate(max);
    }
    near.sort_unstable_by_key(|n| n.2);

    // Merge two id-sorted lists: keep state for avatars still near, report those gone.
    let merged = &mut scratch.merged;
    merged.clear();
    view.interest.sort_unstable_by_key(|it| it.id);
    let mut old = view.interest.iter().peekable();
    for &(d2, slot, id) in near.iter() {
        while let Some(o) = old.next_if(|o| o.id < id) {
            if o.sent.is_some() {
                view.gone.push(o.id);
            }
        }
        let weight = 1.0 + 3.0 * (1.0 - d2.sqrt() / aoi).max(0.0);
        match old.next_if(|o| o.id == id) {
            Some(o) => merged.push(Interest { slot, weight, ..*o }),
            None => merged.push(Interest {
                slot,
                id,
                sent: None,
                priority: 0.0,
                weight,
            }),
        }
    }
    for o in old {
        if o.sent.is_some() {
            view.gone.push(o.id);
        }
    }
    // Nearest first: the near tier is the head of the list.
    merged.sort_unstable_by(|a, b| b.weight.total_cmp(&a.weight));
    std::mem::swap(&mut view.interest, merged);
}

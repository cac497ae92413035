//! Replication: sends each client the avatars around it.
//!
//! Each client has an interest list: the nearest `max_interest` avatars within the area of
//! interest, re-selected every 8th snapshot (staggered across clients, so the grid scan is
//! spread out). A client is sent a snapshot about 10 times a second, on its staggered turn
//! (see [`Cadence`]), so each tick visits a part of the clients. At a snapshot part of its
//! list is looked at (the nearest 12, and every 4th snapshot the rest): each avatar there
//! whose position the client has stale gains priority, nearer ones faster, and the
//! highest-priority updates that fit the client's byte budget (`replication_bytes_per_sec`)
//! are sent. So a tick costs a part of the interest lists, not the size of the crowd, and a
//! client in a crowd gets its neighbours often (about 10 times a second), far avatars less
//! often, and never more bytes than its budget (plus its own position, sent with each
//! snapshot when it changed).
//!
//! A client whose input was applied on a tick that is not its turn is sent its own
//! position and acknowledgement at once, alone ([`AppliedInputs`]): waiting for its turn
//! would add up to a tick to every input's round trip. Those frames count against the
//! client's byte budget like any other.

use super::cadence::{Cadence, NEAR_TIER};
use crate::space::components::{Avatar, ClientView, Interest, Motion, Position};
use crate::space::resources::{
    AppliedInputs, Outbox, Recipient, SlotTable, SpaceClock, SpaceSettings,
};
use crate::space::spatial_grid::{GridEntry, SpatialGrid};
use bevy_ecs::prelude::*;
use quad_shared::AvatarId;
use quad_shared::protocol::{AvatarUpdate, POSITION_QUANTUM, Snapshot};

/// A conservative size of one `AvatarUpdate` on the wire, bytes.
const UPDATE_BYTES: f32 = 12.0;
/// Snapshots' worth of budget a client may bank.
const BURST_SNAPSHOTS: f32 = 2.0;
/// Priority head start of an avatar the client has never been sent.
const NEW_BONUS: f32 = 4.0;
/// A client's first interest scan reaches this fraction of the area of interest.
const FIRST_SCAN: f32 = 0.35;
/// How many more people than it keeps an interest scan aims to find.
const SCAN_SLACK: f32 = 1.4;

/// Buffers reused across clients and ticks, so a tick allocates only the frames it sends.
#[derive(Default)]
pub struct Scratch {
    /// A scan's finds, as [`SpatialGrid::find_within`] gives them (distance, grid index).
    found: Vec<u64>,
    merged: Vec<Interest>,
    /// By slot: the stamp of the refresh that last saw the slot in an old interest list,
    /// and its index there, so a refresh carries old state over in linear time.
    marks: Vec<(u32, u32)>,
    stamp: u32,
    /// Which entries of the old interest list a refresh kept.
    kept: Vec<bool>,
    candidates: Vec<(f32, u32, (u16, u16))>,
    snapshot: Snapshot,
    buf: Vec<u8>,
}

pub fn replicate(
    clock: Res<SpaceClock>,
    settings: Res<SpaceSettings>,
    grid: Res<SpatialGrid>,
    mut outbox: ResMut<Outbox>,
    mut clients: Query<(&Avatar, &Position, &Motion, &mut ClientView)>,
    (slots, mut applied): (Res<SlotTable>, ResMut<AppliedInputs>),
    mut scratch: Local<Scratch>,
) {
    let tick = clock.tick;
    let per_tick = settings.replication_bytes_per_sec as f32 / settings.tick_hz.max(1) as f32;
    let cadence = Cadence::new(settings.tick_hz);
    let per_snapshot = per_tick * cadence.every as f32;
    let scratch = &mut *scratch;

    // Memory is fetched ahead of use: each client's interest lines two clients ahead, and
    // the slots its entries name one client ahead (by then its lines have arrived). The
    // lists are too big to stay in cache, and this is where replication waited most.
    let mut visited = clients
        .iter_mut()
        .filter(|(_, _, _, view)| cadence.visits(view, tick));
    let mut next = visited.next();
    let mut after = visited.next();
    for (_, _, _, view) in next.iter().chain(after.iter()) {
        prefetch_lines(view, tick, cadence);
    }
    while let Some((avatar, position, motion, mut view)) = next.take() {
        let ahead = visited.next();
        if let Some((_, _, _, view)) = &ahead {
            prefetch_lines(view, tick, cadence);
        }
        if let Some((_, _, _, view)) = &after {
            let turn = Cadence::turn(view, tick);
            for it in &view.interest[cadence.checked(view.interest.len(), turn)] {
                slots.prefetch(it.slot);
            }
        }
        (next, after) = (after, ahead);

        let view = view.bypass_change_detection();
        view.byte_tokens = (view.byte_tokens + per_snapshot).min(per_snapshot * BURST_SNAPSHOTS);
        if !view.selected {
            view.turn_offset = cadence.offset(avatar.id.0);
        }
        if cadence.due(view, tick) {
            refresh_interest(view, avatar.id, position, &grid, &settings, &slots, scratch);
            view.selected = true;
        }

        // Which interesting avatars are stale, and how urgent each is.
        let Scratch {
            candidates,
            snapshot,
            buf,
            ..
        } = scratch;
        candidates.clear();
        snapshot.avatars.clear();
        snapshot.gone.clear();
        snapshot.gone.append(&mut view.gone);
        let mut vanished = false;
        let turn = Cadence::turn(view, tick);
        let me = position.0 * POSITION_QUANTUM;
        let reach = settings.area_of_interest * POSITION_QUANTUM;
        for i in cadence.checked(view.interest.len(), turn) {
            let it = &mut view.interest[i];
            let Some(current) = slots.wire_of(it.slot, it.id) else {
                // Left the space since the last refresh.
                if it.was_sent() {
                    snapshot.gone.push(it.id);
                }
                it.sent = Interest::NEVER;
                it.priority = f32::NEG_INFINITY;
                vanished = true;
                continue;
            };
            if it.sent != current {
                // Nearer avatars age faster: weight 4 at the client, 1 at the edge of the
                // area of interest (times its tier's interval, so both tiers age alike).
                let (dx, dy) = (current.0 as f32 - me.x, current.1 as f32 - me.y);
                let near = (1.0 - (dx * dx + dy * dy).sqrt() / reach).max(0.0);
                let weight = (1.0 + 3.0 * near) * cadence.interval(i) as f32;
                it.priority += weight + if it.was_sent() { 0.0 } else { NEW_BONUS };
                candidates.push((it.priority, i as u32, current));
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
            let it = &mut view.interest[i as usize];
            it.sent = current;
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
        send_snapshot((snapshot, buf), view, &mut outbox, (avatar.id, tick, own));
    }

    // Inputs applied off a client's turn are acknowledged now, with its own position alone.
    for entity in applied.0.drain(..) {
        let Ok((avatar, position, motion, mut view)) = clients.get_mut(entity) else {
            continue;
        };
        let own = (position.0.to_array(), motion.last_seq);
        if cadence.visits(&view, tick) || view.sent_self == Some(own) {
            continue;
        }
        let Scratch { snapshot, buf, .. } = scratch;
        snapshot.avatars.clear();
        snapshot.gone.clear();
        snapshot.you = Some(own.0);
        send_snapshot(
            (snapshot, buf),
            view.bypass_change_detection(),
            &mut outbox,
            (avatar.id, tick, own),
        );
    }
}

/// Stamps `snapshot` with the tick and the client's acknowledged input, encodes it and
/// queues it for the client, charged to its byte budget (acknowledgements too, so its
/// total stays within the budget).
fn send_snapshot(
    (snapshot, buf): (&mut Snapshot, &mut Vec<u8>),
    view: &mut ClientView,
    outbox: &mut Outbox,
    (id, tick, own): (AvatarId, u32, ([f32; 2], u32)),
) {
    snapshot.tick = tick;
    snapshot.ack = own.1;
    view.sent_self = Some(own);
    buf.clear();
    match quad_shared::codec::encode_snapshot(snapshot, buf) {
        Ok(()) => {
            view.byte_tokens -= buf.len() as f32;
            outbox.push_frame(Recipient::One(id), buf);
        }
        Err(e) => tracing::error!(%id, "cannot encode a snapshot: {e}"),
    }
}

/// Prefetches each cache line of a client's interest list that its snapshot looks at: the
/// near tier, the far tier on its turn, and all of it when it is re-selected.
fn prefetch_lines(view: &ClientView, tick: u32, cadence: Cadence) {
    const PER_LINE: usize = 64 / std::mem::size_of::<Interest>();
    let interest = &view.interest;
    let end = if cadence.due(view, tick) {
        interest.len()
    } else {
        cadence
            .checked(interest.len(), Cadence::turn(view, tick))
            .end
    };
    for it in interest[..end].iter().step_by(PER_LINE) {
        mem_prefetch::prefetch_read_data::<_, 3>(it);
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
    slots: &SlotTable,
    scratch: &mut Scratch,
) {
    let aoi = settings.area_of_interest;
    let max = settings.max_interest;
    let found = &mut scratch.found;
    // Look close first: in a crowd the nearest `max` are found without scanning the whole
    // area of interest. The radius that sufficed last time is where the next look starts.
    let mut radius = if view.scan_radius > 0.0 {
        view.scan_radius.min(aoi)
    } else {
        aoi * FIRST_SCAN
    };
    let mut n;
    loop {
        // Oneself is among the finds (at distance 0): `max` others need one more.
        n = grid.find_within(position.0, radius, found);
        if n > max || radius >= aoi {
            break;
        }
        radius = (radius * 1.5).min(aoi);
    }
    // Next time, start from the radius that should find about `SCAN_SLACK` times what is
    // needed here (people per area scale with the radius squared): enough that a look
    // rarely comes up short, few enough that picking the nearest stays cheap.
    let others = n.saturating_sub(1);
    view.scan_radius = if others == 0 {
        radius
    } else {
        let scale = (SCAN_SLACK * max as f32 / others as f32).sqrt();
        (radius * scale.clamp(0.5, 1.5)).clamp(aoi * 0.05, aoi)
    };
    // The nearest `max` others: the nearest `max + 1` less oneself.
    let mut near = &mut found[..n];
    let keep = (max + 1).min(n);
    if keep > 0 && n > keep {
        near.select_nth_unstable(keep - 1);
    }
    near = &mut near[..keep];
    match near.iter().position(|&f| grid.entry_found(f).id == me) {
        Some(at) => {
            near.swap(at, keep - 1);
            near = &mut near[..keep - 1];
        }
        None if near.len() > max => {
            if max > 0 {
                near.select_nth_unstable(max - 1);
            }
            near = &mut near[..max];
        }
        None => {}
    }
    // Nearest first: the near tier is the head of the list (in any order within it).
    if near.len() > NEAR_TIER {
        near.select_nth_unstable(NEAR_TIER - 1);
    }

    // Carry over the state of avatars still near (found by slot, checked by id); report
    // those that dropped out as gone.
    let Scratch {
        merged,
        marks,
        stamp,
        kept,
        ..
    } = scratch;
    *stamp = stamp.wrapping_add(1);
    if *stamp == 0 {
        marks.iter_mut().for_each(|m| *m = (0, 0));
        *stamp = 1;
    }
    if marks.len() < slots.len() {
        marks.resize(slots.len(), (0, 0));
    }
    for (k, it) in view.interest.iter().enumerate() {
        if let Some(mark) = marks.get_mut(it.slot as usize) {
            *mark = (*stamp, k as u32);
        }
    }
    kept.clear();
    kept.resize(view.interest.len(), false);
    merged.clear();
    for &f in near.iter() {
        let GridEntry { slot, id, .. } = *grid.entry_found(f);
        let old = marks
            .get(slot as usize)
            .filter(|m| m.0 == *stamp)
            .map(|m| m.1 as usize)
            .filter(|&k| view.interest[k].id == id);
        match old {
            Some(k) => {
                kept[k] = true;
                merged.push(Interest {
                    slot,
                    ..view.interest[k]
                });
            }
            None => merged.push(Interest::new(slot, id)),
        }
    }
    for (it, kept) in view.interest.iter().zip(kept.iter()) {
        if !kept && it.was_sent() {
            view.gone.push(it.id);
        }
    }
    // Copied, not swapped: each client keeps the list it was given at join, so the lists
    // stay where they were laid out, in the order replication walks them.
    view.interest.clear();
    view.interest.extend_from_slice(merged);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over one second of ticks, which ticks give `avatar` a snapshot, a look at its far
    /// tier and a refresh.
    fn one_second(tick_hz: u16, id: u32) -> (usize, usize, usize) {
        let cadence = Cadence::new(tick_hz);
        let view = ClientView {
            selected: true,
            turn_offset: cadence.offset(id),
            ..ClientView::default()
        };
        let (mut snapshots, mut far, mut refreshes) = (0, 0, 0);
        // Ten seconds, to average the staggering out.
        for tick in 0..u32::from(tick_hz) * 10 {
            if !cadence.visits(&view, tick) {
                assert!(!cadence.due(&view, tick), "a refresh without a snapshot");
                continue;
            }
            snapshots += 1;
            let turn = Cadence::turn(&view, tick);
            far += usize::from(cadence.checked(48, turn).end == 48);
            refreshes += usize::from(cadence.due(&view, tick));
        }
        (snapshots / 10, far, refreshes)
    }

    #[test]
    fn snapshots_come_ten_times_a_second_with_the_far_tier_and_refreshes_in_turn() {
        for tick_hz in [20, 30, 60] {
            for id in [1, 2, 7] {
                let (snapshots, far, refreshes) = one_second(tick_hz, id);
                assert_eq!(snapshots, 10, "{tick_hz} Hz, client {id}");
                // Every 4th snapshot looks at the far tier, every 8th re-selects: over ten
                // seconds, 25 and 12 or 13 (depending on where the stagger starts).
                assert_eq!(far, 25, "{tick_hz} Hz, client {id}");
                assert!((12..=13).contains(&refreshes), "{tick_hz} Hz, client {id}");
            }
        }
        // Slower ticks than the snapshot rate: a snapshot every tick.
        assert_eq!(one_second(5, 3).0, 5);
    }

    /// A crowd of `n` on a grid, in random places (some at the same place as another), with
    /// their slots.
    fn crowd(n: u32, seed: u64) -> (Vec<glam::Vec2>, SpatialGrid, SlotTable) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut points: Vec<glam::Vec2> = (0..n)
            .map(|_| glam::Vec2::new(rng.random_range(0.0..3000.0), rng.random_range(0.0..3000.0)))
            .collect();
        // Two standing on someone else's spot (as at a spawn point).
        points[1] = points[0];
        points[2] = points[0];
        let mut slots = SlotTable::default();
        let mut grid = SpatialGrid::new(glam::Vec2::splat(3000.0), 128.0);
        let entries: Vec<GridEntry> = points
            .iter()
            .enumerate()
            .map(|(i, p)| GridEntry {
                id: AvatarId(i as u32 + 1),
                slot: slots.allocate(AvatarId(i as u32 + 1), (0, 0)),
                pos: *p,
                proximity: true,
                keeps_links: true,
            })
            .collect();
        grid.rebuild(entries);
        (points, grid, slots)
    }

    #[test]
    fn a_refresh_keeps_the_nearest_others_with_the_nearest_first() {
        let settings = SpaceSettings {
            tick_hz: 20,
            area_of_interest: 800.0,
            replication_bytes_per_sec: 2_000,
            max_interest: 48,
            proximity: Default::default(),
            dev: false,
        };
        let (points, grid, slots) = crowd(2_000, 3);
        let mut scratch = Scratch::default();
        for me in [0usize, 1, 7, 500, 1999] {
            let id = AvatarId(me as u32 + 1);
            let mut view = ClientView::default();
            // Twice: the second look starts from the radius the first one learned.
            for _ in 0..2 {
                let at = Position(points[me]);
                refresh_interest(&mut view, id, &at, &grid, &settings, &slots, &mut scratch);
                let mut by_distance: Vec<(f32, u32)> = (0..points.len())
                    .filter(|&o| o != me)
                    .map(|o| (points[o].distance(points[me]), o as u32 + 1))
                    .filter(|&(d, _)| d <= settings.area_of_interest)
                    .collect();
                by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
                let distance = |it: &Interest| points[it.id.0 as usize - 1].distance(points[me]);
                assert_eq!(view.interest.len(), 48, "client {me}");
                assert!(
                    view.interest.iter().all(|it| it.id != id),
                    "client {me} sees itself"
                );
                // The nearest 48 (by distance: ties may be either).
                let kept_farthest = view.interest.iter().map(distance).fold(0.0, f32::max);
                assert_eq!(kept_farthest, by_distance[47].0, "client {me}");
                // The first 12 are the nearest 12.
                let near_farthest = view.interest[..NEAR_TIER]
                    .iter()
                    .map(distance)
                    .fold(0.0, f32::max);
                assert_eq!(near_farthest, by_distance[11].0, "client {me}");
                for it in &view.interest {
                    assert_eq!(slots.wire_of(it.slot, it.id), Some((0, 0)), "client {me}");
                }
            }
        }
    }

    #[test]
    fn a_new_client_is_sent_its_surroundings_at_once() {
        let cadence = Cadence::new(20);
        let selected = ClientView {
            selected: true,
            turn_offset: cadence.offset(1),
            ..ClientView::default()
        };
        // A tick that is not a snapshot tick for the client once it has been selected.
        let tick = (0..2)
            .find(|&t| !cadence.visits(&selected, t))
            .expect("one of two ticks is not its turn");
        let view = ClientView::default();
        assert!(cadence.visits(&view, tick));
        assert!(cadence.due(&view, tick));
    }
}

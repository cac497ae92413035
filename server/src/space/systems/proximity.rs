//! Proximity: which avatars outside rooms should be linked peer-to-peer.
//!
//! Pairs within the connect radius (or, for pairs already linked, within the larger
//! disconnect radius) are candidates; candidates are taken nearest first (to a quarter
//! pixel) while both ends have fewer than `max_peers` links. Existing links count as nearer
//! by the hysteresis margin, so a newcomer does not steal a link at the cap by a pixel.
//! Found through the spatial grid and each avatar's few current peers, so the cost grows
//! with the avatars, not their square; the plan lists the links that form and break, so
//! committing it costs only the changes. Planned 10 times a second (see [`Cadence`]): a link
//! forms or breaks at most 50 ms later than at every tick, well inside a WebRTC negotiation.

use super::cadence::Cadence;
use crate::space::resources::{ProximityGraph, SpaceClock, SpaceSettings};
use crate::space::spatial_grid::SpatialGrid;
use bevy_ecs::prelude::*;
use quad_shared::proximity::ProximityRules;

/// Ranks are sorted in buckets of this many pixels (a counting sort: the order within a
/// quarter pixel is the grid's, which is deterministic).
const RANK_STEP: f32 = 0.25;

/// One pair within reach: its bucket by rank, and both ends as grid indices (12 bytes:
/// a crowd has a million of these).
#[derive(Clone, Copy, Default)]
struct Candidate {
    bucket: u32,
    i: u32,
    j: u32,
}

/// Buffers reused from tick to tick.
#[derive(Default)]
pub struct Scratch {
    candidates: Vec<Candidate>,
    sorted: Vec<Candidate>,
    counts: Vec<u32>,
    /// Per grid entry (and one more, for "nobody"), what the pair walk reads of it.
    near: Vec<Near>,
    /// Each entry of the current links' layout: its grid entry now (the grid's length if it
    /// is not in the grid).
    now_of: Vec<u32>,
    /// Each grid entry: its entry in the current links' layout (`u32::MAX`: none).
    was_of: Vec<u32>,
    /// The grid walk's ranges of rows below.
    below: Vec<(u32, u32)>,
    /// The current links, each once, by the last plan's entry indices.
    pairs: Vec<(u32, u32)>,
}

/// A grid entry as the pair walk reads it (one load for all three).
#[derive(Clone, Copy)]
struct Near {
    /// Where it takes part in proximity: its coordinates, or infinity if it takes no part
    /// (so no distance to it is in range).
    x: f32,
    y: f32,
    /// The entry whose peers were marked last, if this is one of them.
    marked_by: u32,
}

impl Near {
    /// An entry that takes no part (and "nobody", past the last entry).
    const NOWHERE: Near = Near {
        x: f32::INFINITY,
        y: f32::INFINITY,
        marked_by: u32::MAX,
    };
}

/// Set on a candidate's bucket when the pair is linked now.
const LINKED: u32 = 1 << 31;

/// Plans the links on the ticks [`Cadence::plans_links`] picks (10 times a second; at 20 Hz
/// every other tick, the one that sends fewer snapshots).
pub fn proximity(
    clock: Res<SpaceClock>,
    settings: Res<SpaceSettings>,
    grid: Res<SpatialGrid>,
    mut graph: ResMut<ProximityGraph>,
    mut scratch: Local<Scratch>,
) {
    if !Cadence::new(settings.tick_hz).plans_links(clock.tick) {
        return;
    }
    plan_links(&grid, &settings.proximity, &mut graph, &mut scratch);
}

/// Proposes to `graph` the links the rules want now, given the current links (for
/// hysteresis) and everyone's position in `grid`.
///
/// Candidates come from two places: the current links still within the disconnect radius
/// (read from the last plan, which is laid out in last tick's grid order, so nearly in
/// order), and unlinked pairs within the smaller connect radius (the grid's pair walk, so it
/// searches the smaller circle).
pub fn plan_links(
    grid: &SpatialGrid,
    rules: &ProximityRules,
    graph: &mut ProximityGraph,
    scratch: &mut Scratch,
) {
    let margin = rules.disconnect_radius - rules.connect_radius;
    let disconnect2 = rules.disconnect_radius * rules.disconnect_radius;
    let Scratch {
        candidates,
        sorted,
        counts,
        near,
        now_of,
        was_of,
        below,
        pairs,
    } = scratch;
    let entries = grid.entries();
    let nobody = entries.len() as u32;
    let (mut plan, current) = graph.plan_buffer();
    plan.who.clear();
    plan.who.extend(entries.iter().map(|e| (e.slot, e.id)));
    for (i, e) in entries.iter().enumerate() {
        let s = e.slot as usize;
        if plan.index_of_slot.len() <= s {
            plan.index_of_slot.resize(s + 1, u32::MAX);
        }
        plan.index_of_slot[s] = i as u32;
    }
    // Between the current links' layout and the grid's, both ways.
    now_of.clear();
    now_of.extend(
        current
            .who
            .iter()
            .map(|&(slot, id)| plan.index_of(slot, id).map_or(nobody, |i| i as u32)),
    );
    was_of.clear();
    was_of.extend(entries.iter().map(|e| {
        current
            .index_of(e.slot, e.id)
            .map_or(u32::MAX, |k| k as u32)
    }));

    // Current links, kept while within the disconnect radius and both ends keep links,
    // ranked by distance (nearer than any new pair at the same distance by the hysteresis
    // margin); the others break. First each link once, as (last plan's entry, its peer's):
    // it is met from both ends and taken, without a branch, from the lower index.
    // (Room for every link twice, written in one pass; the buffer only grows, and is not
    // cleared, which would write it all once more.)
    let room = current.count.iter().map(|&c| usize::from(c)).sum();
    if pairs.len() < room {
        pairs.resize(room, (0, 0));
    }
    let mut n = 0;
    for (k, (peers, &count)) in (0u32..).zip(
        current
            .peers
            .chunks_exact(current.stride.max(1))
            .zip(&current.count),
    ) {
        for &p in &peers[..usize::from(count)] {
            pairs[n] = (k, p);
            n += usize::from(k < p);
        }
    }
    let pairs = &pairs[..n];
    // Ranks are bucketed for a counting sort (every rank is at most the disconnect radius,
    // or the connect radius and the margin).
    let top = (rules.disconnect_radius.max(rules.connect_radius + margin) / RANK_STEP) as usize;
    // A rank's bucket: capped as a float, then cast (a shorter cast than to a usize).
    let top_rank = top as f32;
    let bucket_of = |rank: f32| (rank / RANK_STEP).min(top_rank) as u32;
    counts.clear();
    counts.resize(top + 2, 0);
    plan.broken.clear();
    if candidates.len() < pairs.len() {
        candidates.resize(pairs.len(), Candidate::default());
    }
    let mut used = 0;
    for &(k, p) in pairs {
        let (i, j) = (now_of[k as usize], now_of[p as usize]);
        if i == nobody || j == nobody {
            // Gone from the space without leaving (leavers' links broke at leave).
            plan.broken
                .push((current.who[k as usize].1, current.who[p as usize].1));
            continue;
        }
        let (a, b) = (&entries[i as usize], &entries[j as usize]);
        let d2 = a.pos.distance_squared(b.pos);
        let kept = a.keeps_links & b.keeps_links & (d2 <= disconnect2);
        if !kept {
            plan.broken.push((a.id, b.id));
        }
        let bucket = bucket_of(d2.sqrt());
        candidates[used] = Candidate {
            bucket: bucket | LINKED,
            i,
            j,
        };
        used += usize::from(kept);
    }

    // Unlinked pairs: both ends outside rooms and silent zones, within the connect radius,
    // found by the grid's walk. Every pair in a window is written, with its squared distance
    // for a bucket, and kept if it is in range and not linked: no branch in the scan.
    // (`candidates` past `used` is room to write in, not candidates: the buffer only grows,
    // and is not cleared between plans, which would write it all once more.)
    let linked = used;
    near.clear();
    near.extend(
        entries
            .iter()
            .zip(grid.xs().iter().zip(grid.ys()))
            .map(|(e, (&x, &y))| {
                if e.proximity {
                    Near {
                        x,
                        y,
                        ..Near::NOWHERE
                    }
                } else {
                    Near::NOWHERE
                }
            }),
    );
    near.push(Near::NOWHERE);
    let r2 = rules.connect_radius * rules.connect_radius;
    grid.for_each_window(rules.connect_radius, below, |i, (after, row_end), below| {
        if !entries[i].proximity {
            return;
        }
        // Mark this entry's peers, so linked pairs are left out below.
        if let Some(&k) = was_of.get(i).filter(|&&k| k != u32::MAX) {
            for &p in current.peers_of(k as usize) {
                near[now_of[p as usize] as usize].marked_by = i as u32;
            }
        }
        let window = (row_end - after)
            + below
                .iter()
                .map(|&(lo, hi)| (hi - lo) as usize)
                .sum::<usize>();
        if candidates.len() < used + window {
            candidates.resize((used + window).next_power_of_two(), Candidate::default());
        }
        let (ax, ay, me) = (near[i].x, near[i].y, i as u32);
        let mut n = used;
        // Over a slice taken once per range: the loop then needs no bounds checks but the
        // write's, and keeps the addresses (and the radius) in registers.
        let mut scan = |lo: usize, hi: usize| {
            let limit = r2;
            let out = &mut candidates[n..n + (hi - lo)];
            let mut m = 0;
            for (j, p) in (lo as u32..).zip(&near[lo..hi]) {
                let (dx, dy) = (p.x - ax, p.y - ay);
                let d2 = dx * dx + dy * dy;
                out[m] = Candidate {
                    bucket: d2.to_bits(),
                    i: me,
                    j,
                };
                m += usize::from((d2 <= limit) & (p.marked_by != me));
            }
            n += m;
        };
        scan(after, row_end);
        for &(lo, hi) in below {
            scan(lo as usize, hi as usize);
        }
        used = n;
    });
    let candidates = &mut candidates[..used];

    // New pairs' ranks from their squared distances.
    for c in &mut candidates[linked..] {
        c.bucket = bucket_of(f32::from_bits(c.bucket).sqrt() + margin);
    }
    // Every candidate counted in its bucket, apart from making the buckets: an increment at
    // an address that waits on a square root held up every later one (the processor cannot
    // tell it from the next increment's address until the root is done). About 7% faster
    // planning, timed in pairs.
    for c in candidates.iter() {
        counts[(c.bucket & !LINKED) as usize + 1] += 1;
    }
    counting_sort(candidates, sorted, counts);

    // Nearest first, while both ends are under the cap. A refused candidate writes its peers
    // to a spare place past the end and counts nothing, so the one branch left is for the
    // rare candidate that forms or breaks a link (most are kept links taken again, or new
    // pairs refused).
    let cap = rules.max_peers;
    let stride = usize::from(cap);
    plan.stride = stride;
    plan.count.clear();
    plan.count.resize(entries.len(), 0);
    let spare = entries.len() * stride;
    plan.peers.resize(spare + 1, 0);
    plan.formed.clear();
    for c in sorted.iter() {
        let (i, j) = (c.i as usize, c.j as usize);
        let (di, dj) = (plan.count[i], plan.count[j]);
        let taken = (di < cap) & (dj < cap);
        let (at_i, at_j) = if taken {
            (i * stride + usize::from(di), j * stride + usize::from(dj))
        } else {
            (spare, spare)
        };
        plan.peers[at_i] = c.j;
        plan.peers[at_j] = c.i;
        plan.count[i] = di + u8::from(taken);
        plan.count[j] = dj + u8::from(taken);
        let linked = c.bucket & LINKED != 0;
        if taken != linked {
            if taken {
                plan.formed.push((c.i, c.j));
            } else {
                plan.broken.push((plan.who[i].1, plan.who[j].1));
            }
        }
    }
    graph.propose(plan);
}

/// Sorts `from` into `to` by bucket, stable, given how many there are in each bucket
/// (`counts[b + 1]` for bucket `b`).
fn counting_sort(from: &[Candidate], to: &mut Vec<Candidate>, counts: &mut [u32]) {
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    to.clear();
    to.resize(from.len(), Candidate::default());
    for c in from {
        let at = &mut counts[(c.bucket & !LINKED) as usize];
        to[*at as usize] = *c;
        *at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::spatial_grid::GridEntry;
    use glam::Vec2;
    use quad_shared::AvatarId;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    type Links = BTreeSet<(AvatarId, AvatarId)>;

    /// Over many updates of a wandering crowd (some in rooms, some just walked into one),
    /// every plan keeps the rules, is what nearest-first taking would give, and its commit
    /// reports exactly the links that changed.
    #[test]
    fn plans_keep_the_rules_and_take_nearest_first() {
        let rules = ProximityRules::default();
        let margin = rules.disconnect_radius - rules.connect_radius;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let side = 1200.0;
        let n = 300;
        let mut pos: Vec<Vec2> = (0..n)
            .map(|_| Vec2::new(rng.random_range(0.0..side), rng.random_range(0.0..side)))
            .collect();
        let mut grid = SpatialGrid::new(Vec2::splat(side), 160.0);
        let mut graph = ProximityGraph::default();
        for i in 0..n {
            graph.place(AvatarId(i as u32 + 1), i as u32);
        }
        let mut scratch = Scratch::default();
        let mut checked_refusals = 0;
        for update in 0..30 {
            for p in &mut pos {
                *p += Vec2::new(rng.random_range(-12.0..12.0), rng.random_range(-12.0..12.0));
            }
            // A few avatars out of proximity: in a room (some still keeping their links).
            let flags: Vec<(bool, bool)> = (0..n)
                .map(|i| match (i + update) % 23 {
                    0 => (false, false),
                    1 => (false, true),
                    _ => (true, true),
                })
                .collect();
            let entries: Vec<GridEntry> = (0..n)
                .map(|i| GridEntry {
                    id: AvatarId(i as u32 + 1),
                    slot: i as u32,
                    pos: pos[i],
                    proximity: flags[i].0,
                    keeps_links: flags[i].1,
                })
                .collect();
            grid.rebuild(entries.iter().copied());
            let before: Links = graph.links().collect();
            plan_links(&grid, &rules, &mut graph, &mut scratch);
            let mut reported = (Links::new(), Links::new());
            graph.commit(|a, b, linked| {
                assert!(a < b);
                let fresh = if linked {
                    reported.0.insert((a, b))
                } else {
                    reported.1.insert((a, b))
                };
                assert!(fresh, "({a}, {b}) reported twice");
            });
            let after: Links = graph.links().collect();
            assert_eq!(
                reported.0,
                &after - &before,
                "formed links, update {update}"
            );
            assert_eq!(
                reported.1,
                &before - &after,
                "broken links, update {update}"
            );
            assert_eq!(graph.link_count(), after.len());

            let e = |id: AvatarId| &entries[id.0 as usize - 1];
            let degree = |id: AvatarId| graph.peers_of(id).len();
            // The rank of a pair the rules allow (`None`: not a candidate).
            let rank = |a: AvatarId, b: AvatarId| {
                let (x, y) = (e(a), e(b));
                let d = x.pos.distance(y.pos);
                if before.contains(&(a.min(b), a.max(b))) {
                    (x.keeps_links && y.keeps_links && d <= rules.disconnect_radius).then_some(d)
                } else {
                    (x.proximity && y.proximity && d <= rules.connect_radius).then_some(d + margin)
                }
            };
            for &(a, b) in &after {
                assert!(rank(a, b).is_some(), "({a}, {b}) linked against the rules");
                assert_eq!(graph.peers_of(b).filter(|&p| p == a).count(), 1);
            }
            for i in 0..n {
                let a = AvatarId(i as u32 + 1);
                assert!(degree(a) <= usize::from(rules.max_peers));
                for j in i + 1..n {
                    let b = AvatarId(j as u32 + 1);
                    let Some(r) = rank(a, b) else { continue };
                    if after.contains(&(a, b)) {
                        continue;
                    }
                    // Left out: one end was full of links that rank no farther.
                    let full_of_nearer = |end: AvatarId| {
                        degree(end) == usize::from(rules.max_peers)
                            && graph
                                .peers_of(end)
                                .all(|p| rank(end, p).is_some_and(|q| q <= r + RANK_STEP))
                    };
                    assert!(
                        full_of_nearer(a) || full_of_nearer(b),
                        "({a}, {b}) at rank {r} left out, update {update}"
                    );
                    checked_refusals += 1;
                }
            }
        }
        assert!(
            checked_refusals > 100,
            "the crowd was too sparse to test the cap"
        );

        // A leaver's links break at once, and its peers are told.
        let leaver = (1..=n as u32)
            .map(AvatarId)
            .find(|&id| graph.peers_of(id).len() > 1)
            .expect("someone has links");
        let slot = leaver.0 - 1;
        let peers: BTreeSet<AvatarId> = graph.peers_of(leaver).collect();
        let mut told = BTreeSet::new();
        let before = graph.link_count();
        graph.remove(leaver, slot, |p| {
            told.insert(p);
        });
        assert_eq!(told, peers);
        assert_eq!(graph.link_count(), before - peers.len());
        assert!(graph.links().all(|(a, b)| a != leaver && b != leaver));
    }
}

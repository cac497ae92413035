//! Proximity: which avatars outside rooms should be linked peer-to-peer.
//!
//! Pairs within the connect radius (or, for pairs already linked, within the larger
//! disconnect radius) are candidates; candidates are taken nearest first (to a quarter
//! pixel) while both ends have fewer than `max_peers` links. Existing links count as nearer
//! by the hysteresis margin, so a newcomer does not steal a link at the cap by a pixel.
//! Found through the spatial grid and each avatar's few current peers, so the cost grows
//! with the avatars, not their square; the plan lists the links that form and break, so
//! committing it costs only the changes.

use crate::space::resources::{ProximityGraph, SpaceSettings};
use crate::space::spatial_grid::SpatialGrid;
use bevy_ecs::prelude::*;
use quad_shared::AvatarId;
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
    /// Per grid entry: the entry whose peers were marked last (see the pair walk).
    marked_by: Vec<u32>,
    /// Each grid entry's current peers as entry indices: `current[spans[i].0..spans[i].1]`.
    current: Vec<u32>,
    spans: Vec<(u32, u32)>,
    /// Where each entry's peers with lower ids start in `current`.
    higher: Vec<u32>,
    /// The grid's pair walk buffer.
    hits: Vec<(u32, f32)>,
}

/// Set on a candidate's bucket when the pair is linked now.
const LINKED: u32 = 1 << 31;

pub fn proximity(
    settings: Res<SpaceSettings>,
    grid: Res<SpatialGrid>,
    mut graph: ResMut<ProximityGraph>,
    mut scratch: Local<Scratch>,
) {
    plan_links(&grid, &settings.proximity, &mut graph, &mut scratch);
}

/// Fills `graph.wanted` with the links the rules want now, given the current links (for
/// hysteresis) and everyone's position in `grid`.
///
/// Candidates come from two places: the current links still within the disconnect radius
/// (found through each avatar's few peers, not a search), and unlinked pairs within the
/// smaller connect radius (the grid's pair walk, so it searches the smaller circle).
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
        marked_by,
        current,
        spans,
        higher,
        hits,
    } = scratch;
    let entries = grid.entries();
    let mut plan = std::mem::take(&mut graph.wanted);
    plan.who.clear();
    plan.who.extend(entries.iter().map(|e| (e.slot, e.id)));
    for (i, e) in entries.iter().enumerate() {
        let s = e.slot as usize;
        if plan.index_of_slot.len() <= s {
            plan.index_of_slot.resize(s + 1, u32::MAX);
        }
        plan.index_of_slot[s] = i as u32;
    }
    // The grid entry of `id`, who holds `slot`, if it is in the grid.
    let entry_of = |slot: u32, id: AvatarId| {
        plan.index_of_slot
            .get(slot as usize)
            .copied()
            .filter(|&j| entries.get(j as usize).is_some_and(|e| e.id == id))
    };

    // Each entry's current peers as entry indices, read once, in the grid's order.
    current.clear();
    spans.clear();
    higher.clear();
    plan.broken.clear();
    for a in entries {
        // Peers with higher ids from the front (the links this entry ranks, so each link
        // once), lower ids from the back, without a branch on the order.
        let peers = graph.peers_of_slot(a.slot);
        let start = current.len();
        let end = start + peers.len();
        current.resize(end, 0);
        let (mut front, mut back) = (start, end);
        for &(peer_slot, peer) in peers {
            let Some(j) = entry_of(peer_slot, peer) else {
                // Not in the space any more: the link breaks (reported once).
                if peer > a.id {
                    plan.broken.push(((a.slot, a.id), (peer_slot, peer)));
                }
                continue;
            };
            let up = peer > a.id;
            current[if up { front } else { back - 1 }] = j;
            front += usize::from(up);
            back -= usize::from(!up);
        }
        if front != back {
            current.copy_within(back..end, front);
            current.truncate(end - (back - front));
        }
        higher.push(front as u32);
        spans.push((start as u32, current.len() as u32));
    }

    // Current links, each once (from its lower id), kept while within the disconnect
    // radius and both ends keep links. Ranked by distance: nearer than any new pair at the
    // same distance by the hysteresis margin. The others break.
    candidates.clear();
    for (i, a) in entries.iter().enumerate() {
        let (from, to) = (spans[i].0, higher[i]);
        for &j in &current[from as usize..to as usize] {
            let b = &entries[j as usize];
            let d2 = a.pos.distance_squared(b.pos);
            if a.keeps_links && b.keeps_links && d2 <= disconnect2 {
                candidates.push(Candidate {
                    bucket: (d2.sqrt() / RANK_STEP) as u32 | LINKED,
                    i: i as u32,
                    j,
                });
            } else {
                plan.broken.push(((a.slot, a.id), (b.slot, b.id)));
            }
        }
    }

    // Unlinked pairs: both ends outside rooms and silent zones, within the connect radius.
    // (`candidates` past `used` is room to write in, not candidates.)
    let mut used = candidates.len();
    marked_by.clear();
    marked_by.resize(entries.len(), u32::MAX);
    grid.for_each_neighbourhood(rules.connect_radius, hits, |i, hits| {
        let a = &entries[i];
        if !a.proximity {
            return;
        }
        // Mark this entry's peers, so linked pairs are left out below.
        let (from, to) = spans[i];
        for &j in &current[from as usize..to as usize] {
            marked_by[j as usize] = i as u32;
        }
        // Written for every hit, kept for the unlinked whose other end takes part: no branch.
        let mut n = used;
        if candidates.len() < n + hits.len() {
            candidates.resize((n + hits.len()).next_power_of_two(), Candidate::default());
        }
        for &(j, d2) in hits {
            candidates[n] = Candidate {
                bucket: ((d2.sqrt() + margin) / RANK_STEP) as u32,
                i: i as u32,
                j,
            };
            let b = j as usize;
            n += usize::from(entries[b].proximity & (marked_by[b] != i as u32));
        }
        used = n;
    });
    candidates.truncate(used);
    counting_sort(candidates, sorted, counts);

    // Nearest first, while both ends are under the cap.
    let cap = rules.max_peers;
    plan.stride = usize::from(cap);
    plan.count.clear();
    plan.count.resize(entries.len(), 0);
    plan.peers.resize(entries.len() * plan.stride, 0);
    plan.formed.clear();
    for c in sorted.iter() {
        let (i, j) = (c.i as usize, c.j as usize);
        let (di, dj) = (plan.count[i], plan.count[j]);
        if di < cap && dj < cap {
            plan.peers[i * plan.stride + usize::from(di)] = c.j;
            plan.peers[j * plan.stride + usize::from(dj)] = c.i;
            plan.count[i] = di + 1;
            plan.count[j] = dj + 1;
            if c.bucket & LINKED == 0 {
                plan.formed.push((c.i, c.j));
            }
        } else if c.bucket & LINKED != 0 {
            plan.broken.push((plan.who[i], plan.who[j]));
        }
    }
    graph.wanted = plan;
}

/// Sorts `from` into `to` by bucket, stable.
fn counting_sort(from: &[Candidate], to: &mut Vec<Candidate>, counts: &mut Vec<u32>) {
    let key = |c: &Candidate| (c.bucket & !LINKED) as usize;
    let buckets = from.iter().map(|c| key(c) + 1).max().unwrap_or(0);
    counts.clear();
    counts.resize(buckets + 1, 0);
    for c in from {
        counts[key(c) + 1] += 1;
    }
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    to.clear();
    to.resize(
        from.len(),
        Candidate {
            bucket: 0,
            i: 0,
            j: 0,
        },
    );
    for c in from {
        let at = &mut counts[key(c)];
        to[*at as usize] = *c;
        *at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::spatial_grid::GridEntry;
    use glam::Vec2;
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

//! Proximity: which avatars outside rooms should be linked peer-to-peer.
//!
//! Pairs within the connect radius (or, for pairs already linked, within the larger
//! disconnect radius) are candidates; candidates are taken nearest first (to a quarter
//! pixel) while both ends have fewer than `max_peers` links. Existing links count as nearer by the hysteresis
//! margin, so a newcomer does not steal a link at the cap by a pixel. Found through the
//! spatial grid, so the cost grows with the avatars, not their square.

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
#[derive(Clone, Copy)]
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
    /// Links granted so far this update, by grid index.
    degree: Vec<u8>,
    /// Each grid entry's current peers: a span of `peer_ids`.
    peer_span: Vec<(u32, u32)>,
    peer_ids: Vec<AvatarId>,
    /// The grid's pair walk buffer.
    hits: Vec<(u32, f32)>,
}

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
pub fn plan_links(
    grid: &SpatialGrid,
    rules: &ProximityRules,
    graph: &mut ProximityGraph,
    scratch: &mut Scratch,
) {
    let margin = rules.disconnect_radius - rules.connect_radius;
    let (connect2, disconnect2) = (
        rules.connect_radius * rules.connect_radius,
        rules.disconnect_radius * rules.disconnect_radius,
    );
    let Scratch {
        candidates,
        sorted,
        counts,
        degree,
        peer_span,
        peer_ids,
        hits,
    } = scratch;
    candidates.clear();
    // Current peers of each grid entry (by its index), so each pair's check is a short
    // sequential scan, not a hash lookup.
    let entries = grid.entries();
    peer_span.clear();
    peer_ids.clear();
    for a in entries {
        let peers = if a.keeps_links {
            graph.peers_of(a.id)
        } else {
            &[]
        };
        peer_span.push((peer_ids.len() as u32, peers.len() as u32));
        peer_ids.extend_from_slice(peers);
    }
    grid.for_each_pair_within(rules.disconnect_radius, hits, |i, j, d2| {
        let (a, b) = (&entries[i], &entries[j]);
        if !(a.keeps_links && b.keeps_links) {
            return;
        }
        let (start, len) = peer_span[i];
        let linked = peer_ids[start as usize..(start + len) as usize].contains(&b.id);
        if !(linked || (a.proximity && b.proximity)) {
            return;
        }
        // `rules.keeps`, on squared distances: most pairs in reach are refused here.
        if d2 <= if linked { disconnect2 } else { connect2 } {
            let d = d2.sqrt();
            // Existing links rank nearer by the hysteresis margin: rank in
            // [-margin, disconnect_radius], shifted to start at zero.
            let rank = if linked { d } else { d + margin };
            candidates.push(Candidate {
                bucket: (rank / RANK_STEP) as u32,
                i: i as u32,
                j: j as u32,
            });
        }
    });
    counting_sort(candidates, sorted, counts);
    degree.clear();
    degree.resize(entries.len(), 0);
    graph.wanted.clear();
    for c in sorted.iter() {
        let (i, j) = (c.i as usize, c.j as usize);
        let (di, dj) = (degree[i], degree[j]);
        if di < rules.max_peers && dj < rules.max_peers {
            graph
                .wanted
                .insert(ProximityGraph::pair(entries[i].id, entries[j].id));
            degree[i] = di + 1;
            degree[j] = dj + 1;
        }
    }
}

/// Sorts `from` into `to` by bucket, stable.
fn counting_sort(from: &[Candidate], to: &mut Vec<Candidate>, counts: &mut Vec<u32>) {
    let buckets = from
        .iter()
        .map(|c| c.bucket as usize + 1)
        .max()
        .unwrap_or(0);
    counts.clear();
    counts.resize(buckets + 1, 0);
    for c in from {
        counts[c.bucket as usize + 1] += 1;
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
        let at = &mut counts[c.bucket as usize];
        to[*at as usize] = *c;
        *at += 1;
    }
}

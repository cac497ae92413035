//! Proximity: which avatars outside rooms should be linked peer-to-peer.
//!
//! Pairs within the connect radius (or, for pairs already linked, within the larger
//! disconnect radius) are candidates; candidates are taken nearest first while both ends
//! have fewer than `max_peers` links. Existing links count as nearer by the hysteresis
//! margin, so a newcomer does not steal a link at the cap by a pixel. Found through the
//! spatial grid, so the cost grows with the avatars, not their square.

use crate::space::resources::{ProximityGraph, SpaceSettings};
use crate::space::spatial_grid::SpatialGrid;
use bevy_ecs::prelude::*;
use quad_shared::AvatarId;
use rustc_hash::FxHashMap;

#[derive(Default)]
pub struct Scratch {
    candidates: Vec<(f32, AvatarId, AvatarId)>,
    degree: FxHashMap<AvatarId, u8>,
}

pub fn proximity(
    settings: Res<SpaceSettings>,
    grid: Res<SpatialGrid>,
    mut graph: ResMut<ProximityGraph>,
    mut scratch: Local<Scratch>,
) {
    let rules = settings.proximity;
    let margin = rules.disconnect_radius - rules.connect_radius;
    let Scratch { candidates, degree } = &mut *scratch;
    candidates.clear();
    for a in grid.iter().filter(|a| a.proximity) {
        grid.for_each_within(a.pos, rules.disconnect_radius, |b, d2| {
            if b.id <= a.id || !b.proximity {
                return;
            }
            let linked = graph.linked(a.id, b.id);
            let d = d2.sqrt();
            if rules.keeps(d, linked) {
                let rank = if linked { d - margin } else { d };
                candidates.push((rank, a.id, b.id));
            }
        });
    }
    candidates.sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    degree.clear();
    let graph = &mut *graph;
    graph.wanted.clear();
    for &(_, a, b) in candidates.iter() {
        let (da, db) = (
            degree.get(&a).copied().unwrap_or(0),
            degree.get(&b).copied().unwrap_or(0),
        );
        if da < rules.max_peers && db < rules.max_peers {
            graph.wanted.insert((a, b));
            degree.insert(a, da + 1);
            degree.insert(b, db + 1);
        }
    }
}

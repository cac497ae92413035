//! Replication in a crowd, driving a `SpaceWorld` directly (no sockets): what one client is
//! sent keeps its picture of the people near it fresh, within its byte budget, and tells it
//! when someone leaves its view or the space.

use glam::Vec2;
use quad_server::space::resources::{Recipient, SpaceSettings};
use quad_server::space::{Joiner, SpaceWorld};
use quad_shared::AvatarId;
use quad_shared::codec;
use quad_shared::map::Map;
use quad_shared::movement::dir;
use quad_shared::protocol::{Input, ServerMsg, Snapshot};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;

const TICK_HZ: u16 = 20;
const BUDGET: u32 = 2_000;

/// The snapshots the last tick sent to `client`, each with its frame's size.
fn snapshots_to(world: &mut SpaceWorld, client: AvatarId) -> Vec<(usize, Snapshot)> {
    world
        .drain_outbox()
        .filter(|(to, _)| *to == Recipient::One(client))
        .filter_map(|(_, frame)| match codec::decode::<ServerMsg>(&frame) {
            Ok(ServerMsg::Snapshot(s)) => Some((frame.len(), s)),
            _ => None,
        })
        .collect()
}
#[test]
fn a_client_in_a_crowd_keeps_its_neighbours_fresh_within_its_budget() {
    let mut rng = SmallRng::seed_from_u64(5);
    let settings = SpaceSettings {
        tick_hz: TICK_HZ,
        area_of_interest: 800.0,
        replication_bytes_per_sec: BUDGET,
        max_interest: 48,
        proximity: Default::default(),
        dev: true,
    };
    let mut world = SpaceWorld::new(Arc::new(Map::open_square(64, 32)), settings, "/map.tmj");
    // 400 people on 2,048 px square, the watched one (id 1) in the middle.
    let n = 400u32;
    let mut spawn = |i: u32| {
        if i == 1 {
            Vec2::splat(1024.0)
        } else {
            Vec2::new(
                rng.random_range(64.0..1984.0),
                rng.random_range(64.0..1984.0),
            )
        }
    };
    for i in 1..=n {
        world.join(Joiner {
            spawn: Some(spawn(i)),
            ..Joiner::guest(AvatarId(i), format!("p{i}"))
        });
    }
    let mut rng = SmallRng::seed_from_u64(6);
    let mut heading: Vec<u8> = (0..=n)
        .map(|_| dir::HEADINGS[rng.random_range(0..8)])
        .collect();
    // What the watched client knows: others' positions (world px), and its own.
    let mut known: HashMap<AvatarId, [f32; 2]> = HashMap::new();
    let mut me = [0.0f32; 2];
    let mut bytes = 0usize;
    let mut gone_seen = 0;
    let ticks = 400u32;
    let mut staleness = Vec::new();
    for seq in 1..=ticks {
        for i in 1..=n {
            if i == 1 {
                continue; // the watched client stands still
            }
            if rng.random_ratio(1, 30) {
                heading[i as usize] = dir::HEADINGS[rng.random_range(0..8)];
            }
            world.input(
                AvatarId(i),
                Input {
                    seq,
                    dir: heading[i as usize],
                    steps: 3,
                },
            );
        }
        // Now and then someone leaves.
        if seq % 50 == 0 {
            world.leave(AvatarId(n + 1 - seq / 50));
        }
        world.tick(1.0 / TICK_HZ as f32);
        for (len, s) in snapshots_to(&mut world, AvatarId(1)) {
            bytes += len;
            if let Some(you) = s.you {
                me = you;
            }
            for u in &s.avatars {
                known.insert(u.0, u.position());
            }
            for id in &s.gone {
                gone_seen += usize::from(known.remove(id).is_some());
            }
        }
        if seq > 40 {
            // The true positions of the 12 nearest: the client's copy is close.
            let truth = world.positions();
            let mut near: Vec<(f32, AvatarId, Vec2)> = truth
                .iter()
                .filter(|(id, _)| *id != AvatarId(1))
                .map(|&(id, p)| (p.distance(Vec2::from(me)), id, p))
                .collect();
            near.sort_by(|a, b| a.0.total_cmp(&b.0));
            for &(_, id, p) in near.iter().take(12) {
                let seen = known.get(&id).copied().map(Vec2::from);
                // Not known at all counts as infinitely stale.
                staleness.push(seen.map_or(f32::INFINITY, |s| s.distance(p)));
            }
            // Nobody who left is still shown.
            for id in known.keys() {
                assert!(
                    truth.iter().any(|(t, _)| t == id),
                    "{id} left but is still shown"
                );
            }
        }
    }
    let per_sec = bytes as f64 / (ticks as f64 / TICK_HZ as f64);
    // The budget, plus the own position the client is always sent (here: it stands still).
    assert!(
        per_sec <= BUDGET as f64 * 1.1,
        "{per_sec:.0} B/s against a budget of {BUDGET}"
    );
    assert!(per_sec > BUDGET as f64 * 0.5, "only {per_sec:.0} B/s used");
    staleness.sort_by(f32::total_cmp);
    let median = staleness[staleness.len() / 2];
    let p95 = staleness[staleness.len() * 95 / 100];
    println!(
        "staleness of the nearest 12: median {median:.1} px, p95 {p95:.1} px; {per_sec:.0} B/s"
    );
    // People walk 8 px a tick. The nearest are checked every other tick, so typically
    // they are a tick or two behind; someone who just came near may still be in the far
    // tier of the list, checked every 8 ticks.
    assert!(
        median <= 16.0,
        "median staleness of the nearest {median} px"
    );
    assert!(
        p95 <= 72.0,
        "95th percentile staleness of the nearest {p95} px"
    );
    assert!(gone_seen > 0, "no one was reported gone");
}

/// Someone who leaves while a newcomer joins at once (and takes the freed slot, which the
/// client's interest list still names) is reported gone, and the newcomer is sent as itself.
#[test]
fn a_leaver_is_reported_gone_when_a_newcomer_joins_at_once() {
    let settings = SpaceSettings {
        tick_hz: TICK_HZ,
        area_of_interest: 800.0,
        replication_bytes_per_sec: 20_000,
        max_interest: 48,
        proximity: Default::default(),
        dev: true,
    };
    let mut world = SpaceWorld::new(Arc::new(Map::open_square(64, 32)), settings, "/map.tmj");
    let place = |i: u32| Vec2::new(700.0 + (i % 6) as f32 * 40.0, 700.0 + (i / 6) as f32 * 40.0);
    // The watched client (id 1) and 20 others around it, all in its interest list.
    for i in 1..=21 {
        world.join(Joiner {
            spawn: Some(place(i)),
            ..Joiner::guest(AvatarId(i), format!("p{i}"))
        });
    }
    let mut known: HashMap<AvatarId, [f32; 2]> = HashMap::new();
    let mut next_id = 22;
    let mut replaced = Vec::new();
    for tick in 1..=300u32 {
        // Every 7th tick one of the others leaves and a newcomer joins in its place.
        if tick % 7 == 0 && tick <= 200 {
            let leaver = world
                .positions()
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != AvatarId(1))
                .min()
                .expect("others are in the space");
            world.leave(leaver);
            world.join(Joiner {
                spawn: Some(place(next_id % 21)),
                ..Joiner::guest(AvatarId(next_id), format!("p{next_id}"))
            });
            replaced.push(leaver);
            next_id += 1;
        }
        world.tick(1.0 / TICK_HZ as f32);
        for (_, s) in snapshots_to(&mut world, AvatarId(1)) {
            for u in &s.avatars {
                known.insert(u.0, u.position());
            }
            for id in &s.gone {
                known.remove(id);
            }
        }
    }
    // A hundred ticks after the last change: the client knows exactly who is there, where.
    let truth = world.positions();
    let mut expected: Vec<AvatarId> = truth
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != AvatarId(1))
        .collect();
    let mut shown: Vec<AvatarId> = known.keys().copied().collect();
    expected.sort_unstable();
    shown.sort_unstable();
    assert_eq!(replaced.len(), 28, "leavers");
    assert_eq!(shown, expected, "who the client shows");
    for (id, p) in &truth {
        if let Some(seen) = known.get(id) {
            assert!(
                Vec2::from(*seen).distance(*p) < 1.0,
                "{id} shown at {seen:?}, is at {p}"
            );
        }
    }
}

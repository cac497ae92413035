//! Walking out of a classroom next to someone, driving a `SpaceWorld` directly (no
//! sockets): the hallway link comes before the room media goes (make before break), on
//! whichever tick the avatar steps out, although links are not planned at every tick.

use quad_server::space::resources::{Recipient, SpaceSettings};
use quad_server::space::{Joiner, SpaceWorld};
use quad_shared::AvatarId;
use quad_shared::codec;
use quad_shared::map::Map;
use quad_shared::movement::dir;
use quad_shared::protocol::{Input, ServerMsg};
use std::path::Path;
use std::sync::Arc;

const TICK_HZ: u16 = 20;

/// What the walker is told, in order: `ConnectPeer` to the friend, and `LeaveRoomMedia`.
#[derive(Debug, PartialEq)]
enum Told {
    Linked,
    LeftRoom,
}

/// The walker starts in classroom A above its door, waits `idle` ticks, and walks down
/// into the hallway, where a friend stands; what it is told about the friend and the room.
fn walk_out(idle: u32) -> Vec<Told> {
    let map = Map::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/maps/campus.tmj"))
        .expect("campus map");
    let settings = SpaceSettings {
        tick_hz: TICK_HZ,
        area_of_interest: 800.0,
        replication_bytes_per_sec: 2_000,
        max_interest: 48,
        proximity: Default::default(),
        dev: true,
    };
    let mut world = SpaceWorld::new(Arc::new(map), settings, "/map.tmj");
    // Classroom A's door is at tiles x 6-7 on row 10 (y 320-352); the hallway is below.
    let (walker, friend) = (AvatarId(1), AvatarId(2));
    world.join(Joiner {
        spawn: Some(glam::Vec2::new(224.0, 300.0)),
        ..Joiner::guest(walker, "walker")
    });
    world.join(Joiner {
        spawn: Some(glam::Vec2::new(224.0, 430.0)),
        ..Joiner::guest(friend, "friend")
    });
    let mut told = Vec::new();
    let mut seq = 0;
    let mut in_room = false;
    for t in 0..idle + 80 {
        if t >= idle {
            seq += 1;
            world.input(
                walker,
                Input {
                    seq,
                    dir: dir::DOWN,
                    steps: 3,
                },
            );
        }
        world.tick(1.0 / f32::from(TICK_HZ));
        for (to, frame) in world.drain_outbox() {
            if to != Recipient::One(walker) {
                continue;
            }
            match codec::decode::<ServerMsg>(&frame) {
                Ok(ServerMsg::JoinRoomMedia { .. }) => in_room = true,
                Ok(ServerMsg::ConnectPeer { peer, .. }) if peer == friend && in_room => {
                    told.push(Told::Linked)
                }
                Ok(ServerMsg::LeaveRoomMedia { .. }) => told.push(Told::LeftRoom),
                _ => {}
            }
        }
    }
    assert!(in_room, "the walker started in the room (idle {idle})");
    told
}

#[test]
fn walking_out_next_to_someone_links_before_the_room_media_goes() {
    // Stepping out on either tick of the link planner's period (it plans every other tick
    // at 20 Hz). Without a `MediaReady` from the client the room goes at the grace's end.
    for idle in [0, 1, 2, 3] {
        assert_eq!(
            walk_out(idle),
            vec![Told::Linked, Told::LeftRoom],
            "idle {idle}"
        );
    }
}

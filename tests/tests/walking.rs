//! Walking: bots join, see each other, move, hit walls; the server refuses teleports and
//! caps speed.

use quad_shared::movement::{AVATAR_HALF_SIZE, MAX_STEPS_PER_INPUT, SPEED, STEP_SECONDS, dir};
use quad_shared::protocol::{ClientMsg, ErrorCode, Input};
use quad_tests::{Bot, PATIENCE, TestServer, campus, tile_center};
use std::time::Duration;

const STEP: f32 = SPEED * STEP_SECONDS;

#[tokio::test]
async fn two_bots_join_and_see_each_other() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spawn = campus().spawn.to_array();
    let mut a = Bot::join(server.addr(), "Ada", Some(spawn)).await?;
    let mut b = Bot::join(server.addr(), "Bo", Some([spawn[0] + 40.0, spawn[1]])).await?;
    assert_ne!(a.id, b.id);
    let (a_id, b_id) = (a.id, b.id);
    b.wait_until(PATIENCE, |b| {
        b.others.contains_key(&a_id) && b.people.get(&a_id).is_some_and(|n| n == "Ada")
    })
    .await?;
    a.wait_until(PATIENCE, |a| {
        a.others.contains_key(&b_id) && a.people.get(&b_id).is_some_and(|n| n == "Bo")
    })
    .await?;
    assert_eq!(b.others[&a_id], spawn, "B sees A where A stands");
    assert_eq!(a.people.len(), 2);
    server.stop().await;
    Ok(())
}

/// A walker at the campus spawn and a watcher 60 px below who already sees it.
async fn walker_and_watcher(server: &TestServer) -> anyhow::Result<(Bot, Bot, [f32; 2])> {
    let spawn = campus().spawn.to_array();
    let walker = Bot::join(server.addr(), "Ada", Some(spawn)).await?;
    let mut watcher = Bot::join(server.addr(), "Bo", Some([spawn[0], spawn[1] + 60.0])).await?;
    let id = walker.id;
    watcher
        .wait_until(PATIENCE, |w| w.others.contains_key(&id))
        .await?;
    Ok((walker, watcher, spawn))
}

#[tokio::test]
async fn a_move_is_seen_by_the_other() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (mut a, mut b, spawn) = walker_and_watcher(&server).await?;
    let a_id = a.id;

    a.walk(dir::RIGHT, 30).await?;
    let expected = spawn[0] + 30.0 * STEP;
    assert!(
        (a.me[0] - expected).abs() < 0.01,
        "A is at {:?}, expected x {expected}",
        a.me
    );
    assert_eq!(a.me[1], spawn[1]);
    b.wait_until(PATIENCE, |b| {
        b.others
            .get(&a_id)
            .is_some_and(|p| (p[0] - expected).abs() <= 0.25)
    })
    .await?;
    server.stop().await;
    Ok(())
}

/// A courtyard tile just below a wall tile (found from the map, not hard-coded).
fn below_a_wall() -> (u32, u32) {
    let map = campus();
    let g = &map.collision;
    for ty in 2..map.height - 2 {
        for tx in 2..map.width - 2 {
            let (x, y) = (tx as i64, ty as i64);
            let open = |dx: i64, dy: i64| !g.tile_blocked(x + dx, y + dy);
            if g.tile_blocked(x, y - 1)
                && g.tile_blocked(x - 1, y - 1)
                && g.tile_blocked(x + 1, y - 1)
                && (-1..=1).all(|dx| (0..=2).all(|dy| open(dx, dy)))
            {
                return (tx, ty);
            }
        }
    }
    panic!("the campus has no open tile below a wall");
}

#[tokio::test]
async fn walking_into_a_wall_stops() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let map = campus();
    let (tx, ty) = below_a_wall();
    let start = tile_center(&map, tx, ty + 1);
    let mut a = Bot::join(server.addr(), "Ada", Some(start)).await?;
    assert_eq!(a.me, start, "dev spawn honoured");
    // 1.5 tiles of room, then 40 more steps pushing into the wall.
    a.walk(dir::UP, 60).await?;
    let wall_bottom = (ty * map.tile_size) as f32;
    assert!(
        a.me[1] >= wall_bottom + AVATAR_HALF_SIZE,
        "walked into the wall: {:?}",
        a.me
    );
    assert!(
        a.me[1] < wall_bottom + AVATAR_HALF_SIZE + STEP,
        "stopped short: {:?}",
        a.me
    );
    assert_eq!(a.me[0], start[0]);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_teleport_sized_move_is_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (mut a, mut b, spawn) = walker_and_watcher(&server).await?;
    let a_id = a.id;

    a.send(&ClientMsg::Input(Input {
        seq: 1,
        dir: dir::RIGHT,
        steps: 250,
    }))
    .await?;
    let err = a.expect_error(ErrorCode::IllegalMove).await?;
    assert!(err.message.contains("at most"), "{}", err.message);
    a.send(&ClientMsg::Input(Input {
        seq: 2,
        dir: 0x70,
        steps: 1,
    }))
    .await?;
    a.expect_error(ErrorCode::IllegalMove).await?;

    b.listen_for(Duration::from_millis(400)).await?;
    assert_eq!(b.others[&a_id], spawn, "B saw A move");
    assert_eq!(a.me, spawn);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn flooding_inputs_cannot_outrun_the_clock() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spawn = campus().spawn.to_array();
    let mut a = Bot::join(server.addr(), "Ada", Some(spawn)).await?;
    // 30 legal-looking inputs at once claim 360 steps (6 s of walking).
    let started = std::time::Instant::now();
    let mut last = 0;
    for _ in 0..30 {
        last = a.input(dir::DOWN, MAX_STEPS_PER_INPUT).await?;
    }
    a.wait_until(PATIENCE, |a| a.ack >= last).await?;
    let elapsed = started.elapsed().as_secs_f32();
    let travelled = a.me[1] - spawn[1];
    // At most the banked half second plus real time elapsed, plus one tick of slack.
    let allowed = (0.5 + elapsed + 0.05) * SPEED;
    assert!(
        travelled <= allowed,
        "moved {travelled} px in {elapsed} s (allowed {allowed})"
    );
    assert!(
        travelled < 360.0 * STEP * 0.5,
        "moved {travelled} px: the flood was honoured"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn leaving_is_announced() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spawn = campus().spawn.to_array();
    let mut a = Bot::join(server.addr(), "Ada", Some(spawn)).await?;
    let mut b = Bot::join(server.addr(), "Bo", Some(spawn)).await?;
    let a_id = a.id;
    b.wait_until(PATIENCE, |b| b.others.contains_key(&a_id))
        .await?;
    // Closing says goodbye: no grace for a resume (see tests/reconnect.rs for a drop).
    a.close().await;
    drop(a);
    b.wait_until(PATIENCE, |b| {
        !b.people.contains_key(&a_id) && !b.others.contains_key(&a_id)
    })
    .await?;
    assert!(
        b.reconnecting_events.is_empty(),
        "a goodbye is not a dropped connection: {:?}",
        b.reconnecting_events
    );
    server.stop().await;
    Ok(())
}

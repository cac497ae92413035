//! A dropped connection is not the end of a visit: the server keeps the avatar of a
//! connection that was lost (not closed) for `resume_grace_secs`, and a client that comes
//! back with the resume token from `Welcome` goes on as the same avatar, in the same place
//! and room, with its media made again. Its peers see it as reconnecting, not as leaving
//! and joining. After the grace period, or after a server restart, a client joins afresh,
//! in the room it asks for. SIGTERM tells clients to come back later, at spread times.
//!
//! Run in a loopback-only network namespace, as CI does:
//! `unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh cargo test -p quad-tests --test reconnect`

use anyhow::{Context, Result, bail};
use quad_shared::AvatarId;
use quad_shared::movement::dir;
use quad_shared::protocol::{ChatTo, ClientMsg, ErrorCode};
use quad_tests::room_bot::{RoomBot, RoomBotOptions, room_spot};
use quad_tests::{
    Bot, PATIENCE, PeerEvent, TestServer, campus, http_get, metric, rejoin_all, restart_process,
    start_process, temp_dir,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Two bots next to each other at the campus's spawn point, linked for hallway media.
async fn linked_pair(addr: SocketAddr) -> Result<(Bot, Bot)> {
    let spawn = campus().spawn.to_array();
    let mut a = Bot::join(addr, "Ada", Some(spawn)).await?;
    let mut b = Bot::join(addr, "Bo", Some([spawn[0] + 24.0, spawn[1]])).await?;
    let (a_id, b_id) = (a.id, b.id);
    a.wait_until(PATIENCE, |a| a.peers.contains_key(&b_id))
        .await?;
    b.wait_until(PATIENCE, |b| b.peers.contains_key(&a_id))
        .await?;
    Ok((a, b))
}

/// Sessions kept for a resume, from `/metrics`.
async fn parked(addr: SocketAddr) -> Result<f64> {
    let (_, page) = http_get(addr, "/metrics").await?;
    metric(&page, "quad_sessions_parked").context("quad_sessions_parked")
}

fn near(p: [f32; 2], q: [f32; 2]) -> bool {
    (p[0] - q[0]).abs() < 0.5 && (p[1] - q[1]).abs() < 0.5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_the_same_avatar_where_it_was() -> Result<()> {
    let server = TestServer::start().await?;
    let addr = server.addr();
    let (mut a, mut b) = linked_pair(addr).await?;
    let a_id = a.id;
    a.walk(dir::DOWN, 6).await?;
    let at = a.me;
    b.wait_until(PATIENCE, |b| {
        b.others.get(&a_id).is_some_and(|p| near(*p, at))
    })
    .await?;
    let token = a
        .welcome
        .as_ref()
        .and_then(|w| w.resume.clone())
        .context("Welcome carries a resume token")?;
    assert_eq!(token.len(), 32);
    assert_eq!(a.welcome.as_ref().map(|w| w.resume_grace_secs), Some(20));

    a.cut().await;
    b.wait_until(PATIENCE, |b| b.reconnecting.contains(&a_id))
        .await?;
    assert!(
        b.people.contains_key(&a_id),
        "a dropped connection is not a leave"
    );
    assert_eq!(parked(addr).await?, 1.0);
    // Said while A is away: it reaches A once back.
    b.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: "while you were away".into(),
    })
    .await?;
    b.wait_until(PATIENCE, |b| {
        b.chat_texts().contains(&"while you were away")
    })
    .await?;

    let back = Instant::now();
    drop(a.reconnect(addr, None).await?);
    let welcome = a.welcome.clone().context("welcomed")?;
    assert!(welcome.resumed, "the session goes on");
    assert_eq!(welcome.you, a_id, "the same avatar");
    assert!(near(welcome.spawn, at), "where it was: {:?}", welcome.spawn);
    assert_ne!(welcome.resume, None);
    let b_id = b.id;
    a.wait_until(PATIENCE, |a| {
        a.peers.contains_key(&b_id)
            && a.people.contains_key(&b_id)
            && a.chat_texts().contains(&"while you were away")
    })
    .await?;
    println!(
        "resumed: linked with its peer again {} ms after reconnecting",
        back.elapsed().as_millis()
    );
    // Its peer closed the old link and made a new one; it never saw A leave.
    b.wait_until(PATIENCE, |b| {
        !b.reconnecting.contains(&a_id)
            && b.peers.contains_key(&a_id)
            && b.peer_events.ends_with(&[
                PeerEvent::Disconnect(a_id),
                PeerEvent::Connect(a_id, b.peers[&a_id]),
            ])
    })
    .await?;
    assert_eq!(
        b.reconnecting_events,
        vec![(a_id, true), (a_id, false)],
        "reconnecting, then back"
    );
    assert!(b.people.contains_key(&a_id));
    assert_eq!(parked(addr).await?, 0.0);
    // It walks on from where it stood.
    a.walk(dir::RIGHT, 3).await?;
    assert!(a.me[0] > at[0], "walks on: {:?} from {:?}", a.me, at);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_taken_over_by_the_new_one() -> Result<()> {
    let server = TestServer::start().await?;
    let addr = server.addr();
    let (mut a, mut b) = linked_pair(addr).await?;
    let a_id = a.id;
    // The old connection is still open as far as the server knows (a Wi-Fi change).
    let old = a.reconnect(addr, None).await?;
    assert_eq!(a.id, a_id);
    assert!(a.welcome.as_ref().is_some_and(|w| w.resumed));
    let mut old = Bot::from_stream(old);
    let (code, reason) = old.expect_close().await?;
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.contains("another connection"), "{reason}");
    let b_id = b.id;
    a.wait_until(PATIENCE, |a| a.peers.contains_key(&b_id))
        .await?;
    b.wait_until(PATIENCE, |b| b.peers.contains_key(&a_id))
        .await?;
    // Superseded, the old session leaves nothing behind: A stays. (The old session had
    // done its leaving before it sent its close; B's acknowledged input, through the same
    // space after that, shows everything the space sent before it has reached B.)
    quad_tests::settle(std::slice::from_mut(&mut b)).await?;
    assert!(b.people.contains_key(&a_id));
    assert!(b.reconnecting.is_empty(), "{:?}", b.reconnecting_events);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avatar_not_back_within_the_grace_period_leaves() -> Result<()> {
    let server = TestServer::start_with(|c| c.resume_grace_secs = 1).await?;
    let addr = server.addr();
    let (mut a, mut b) = linked_pair(addr).await?;
    let a_id = a.id;
    a.cut().await;
    let cut = Instant::now();
    b.wait_until(PATIENCE, |b| b.reconnecting.contains(&a_id))
        .await?;
    b.wait_until(PATIENCE, |b| !b.people.contains_key(&a_id))
        .await?;
    let gone = cut.elapsed();
    assert!(gone >= Duration::from_millis(900), "left after {gone:?}");
    println!("not resumed: left {} ms after the cut", gone.as_millis());
    // Too late: the client joins afresh, under the same name.
    drop(a.reconnect(addr, None).await?);
    let welcome = a.welcome.clone().context("welcomed")?;
    assert!(!welcome.resumed);
    assert_ne!(welcome.you, a_id, "a new avatar");
    assert_eq!(welcome.name, "Ada");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_avatars_keep_their_place_and_tokens_open_only_their_own() -> Result<()> {
    let server = TestServer::start_with(|c| c.max_sessions = 2).await?;
    let addr = server.addr();
    let (mut a, _b) = linked_pair(addr).await?;
    let a_id = a.id;
    a.cut().await;
    // The campus is full while A may come back.
    let mut c = Bot::connect(addr).await?;
    c.send(&ClientMsg::Hello(quad_shared::protocol::Hello {
        version: quad_shared::protocol::PROTOCOL_VERSION,
        name: "Cy".into(),
        token: None,
        spawn: None,
        device: None,
        resume: Some("0123456789abcdef0123456789abcdef".into()),
        room: None,
    }))
    .await?;
    c.wait_until(PATIENCE, |c| !c.errors.is_empty() || c.welcome.is_some())
        .await?;
    assert!(c.welcome.is_none(), "a made-up token opens nothing");
    assert_eq!(c.errors[0].code, ErrorCode::Unavailable, "{:?}", c.errors);
    drop(a.reconnect(addr, None).await?);
    assert_eq!(a.id, a_id);
    assert!(a.welcome.as_ref().is_some_and(|w| w.resumed));
    server.stop().await;
    Ok(())
}

/// Waits until each bot has `count` more of the other's microphone packets than `base`.
async fn hear_each_other(a: &RoomBot, b: &RoomBot, count: u64) -> Result<()> {
    let (a_id, b_id) = (current(a), current(b));
    let (from_b, from_a) = (
        a.state().packets_from(b_id, "mic"),
        b.state().packets_from(a_id, "mic"),
    );
    a.wait_for(PATIENCE, "the other's audio", |s| {
        s.packets_from(b_id, "mic") >= from_b + count
    })
    .await?;
    b.wait_for(PATIENCE, "the other's audio", |s| {
        s.packets_from(a_id, "mic") >= from_a + count
    })
    .await
}

/// The bot's avatar now.
fn current(bot: &RoomBot) -> AvatarId {
    bot.state().me.unwrap_or(bot.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_member_resumes_into_its_room_and_is_heard_again() -> Result<()> {
    let server = TestServer::start().await?;
    let addr = server.addr();
    let at = room_spot(&campus(), 0)?;
    let a = RoomBot::join(addr, RoomBotOptions::mic("a", at)).await?;
    let b = RoomBot::join(addr, RoomBotOptions::mic("b", at)).await?;
    hear_each_other(&a, &b, 25).await?;
    let room = a.state().room;

    let cut = Instant::now();
    a.reconnect(addr, None);
    a.wait_for(PATIENCE, "resumed", |s| s.reconnects == 1 && s.resumed)
        .await?;
    a.wait_for(PATIENCE, "back in the room", |s| {
        s.joins == 2 && s.room == room
    })
    .await?;
    assert_eq!(current(&a), a.id, "the same avatar");
    hear_each_other(&a, &b, 25).await?;
    println!(
        "room audio both ways again {} ms after the reconnect began",
        cut.elapsed().as_millis()
    );
    server.stop().await;
    Ok(())
}

/// Bots in the hallway for the restart tests, besides the two in a room.
const WALKERS: usize = 48;

/// Two room bots in the first classroom and [`WALKERS`] bots in the hallway, on `addr`.
async fn campus_of(
    addr: SocketAddr,
    walkers: usize,
) -> Result<(RoomBot, RoomBot, Vec<Bot>, String)> {
    let map = campus();
    let at = room_spot(&map, 0)?;
    let room = map
        .zones
        .iter()
        .filter(|z| z.kind == quad_shared::map::ZoneKind::Classroom)
        .map(|z| z.name.clone())
        .next()
        .context("a classroom")?;
    let a = RoomBot::join(addr, RoomBotOptions::mic("a", at)).await?;
    let b = RoomBot::join(addr, RoomBotOptions::mic("b", at)).await?;
    hear_each_other(&a, &b, 25).await?;
    let mut bots = Vec::new();
    for i in 0..walkers {
        bots.push(Bot::join(addr, &format!("w{i}"), None).await?);
    }
    Ok((a, b, bots, room))
}

/// Every client comes back to the restarted server (the bots as the browser does: their
/// resume token is unknown there, so they join afresh, the room bots asking for their
/// room); returns how long, from the server answering again, until every one was in and
/// the room heard itself again.
async fn everyone_back(
    addr: SocketAddr,
    a: &RoomBot,
    b: &RoomBot,
    walkers: &mut [Bot],
    room: &str,
) -> Result<Duration> {
    let answering = Instant::now();
    a.reconnect(addr, Some(room.to_owned()));
    b.reconnect(addr, Some(room.to_owned()));
    rejoin_all(addr, walkers).await?;
    for bot in [a, b] {
        bot.wait_for(PATIENCE, "rejoined into its room", |s| {
            s.reconnects >= 1 && !s.resumed && s.room.is_some()
        })
        .await?;
    }
    hear_each_other(a, b, 10).await?;
    for w in walkers.iter() {
        let welcome = w.welcome.as_ref().context("welcomed")?;
        if welcome.resumed {
            bail!("a new process cannot resume an old session");
        }
    }
    Ok(answering.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_everyone_comes_back_and_the_class_is_in_its_room() -> Result<()> {
    let data = temp_dir("reconnect-crash");
    let (mut server, addr) = start_process(&data, "127.0.0.1:0").await?;
    let (a, b, mut walkers, room) = campus_of(addr, WALKERS).await?;
    server.start_kill()?;
    server.wait().await?;
    let (mut server, addr2) = restart_process(&data, addr).await?;
    assert_eq!(addr, addr2);
    let took = everyone_back(addr, &a, &b, &mut walkers, &room).await?;
    println!(
        "after kill -9: {} clients back in, the class hearing itself in its room, {} ms after the server answered again",
        WALKERS + 2,
        took.as_millis()
    );
    server.start_kill()?;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_to_come_back_later_and_they_do() -> Result<()> {
    let data = temp_dir("reconnect-sigterm");
    let (mut server, addr) = start_process(&data, "127.0.0.1:0").await?;
    let (a, b, mut walkers, room) = campus_of(addr, WALKERS).await?;
    let pid = server.id().context("the server's pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    // Told, each with its own time to come back (1 s, plus up to 5 s of spread).
    let mut told = Vec::new();
    for w in walkers.iter_mut() {
        let (code, reason) = w.expect_close().await?;
        assert_eq!(code, 1012, "{reason}");
        told.push(w.restarting.context("told when to come back")?);
    }
    for bot in [&a, &b] {
        bot.wait_for(PATIENCE, "told the server restarts", |s| {
            s.closed.as_ref().is_some_and(|(code, _)| *code == 1012) && s.restarting.is_some()
        })
        .await?;
    }
    told.sort_unstable();
    assert!(told.iter().all(|ms| (1000..=6000).contains(ms)), "{told:?}");
    assert!(
        told.first() != told.last(),
        "spread, not all at once: {told:?}"
    );
    println!("SIGTERM: clients told to come back after {told:?} ms");
    server.wait().await?;
    let (mut server, _) = restart_process(&data, addr).await?;
    let took = everyone_back(addr, &a, &b, &mut walkers, &room).await?;
    println!(
        "after SIGTERM: {} clients back in {} ms after the server answered again",
        walkers.len() + 2,
        took.as_millis()
    );
    server.start_kill()?;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

//! Abuse: what one client or one address can do to the server and to others. A client that
//! stops reading is closed and forgotten; its memory is bounded by its outbox budget.
//! Signaling is capped at what real descriptions need; every kind of message is
//! rate-limited; a connection must say Hello in time and a session must not go silent;
//! one address may hold and open only so many sessions; a student toggling its hand does
//! not flood the room.
//!
//! `floods_leave_a_well_behaved_client_alone` prints what a walking client beside each
//! flood sees (snapshot rate, input-to-acknowledgement p99) and the memory the flood costs:
//! `cargo test -p quad-tests --test abuse -- --nocapture floods`.

use quad_shared::AvatarId;
use quad_shared::movement::dir;
use quad_shared::protocol::*;
use quad_tests::room_bot::room_spot;
use quad_tests::{Bot, PATIENCE, TestServer, campus, http_get, metric};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A description of `len` bytes (its content does not matter to the server).
fn description(len: usize) -> Signal {
    Signal::Description {
        kind: SdpKind::Offer,
        sdp: "a".repeat(len),
    }
}

/// `quad_sessions` from `/metrics`.
async fn sessions(addr: SocketAddr) -> anyhow::Result<f64> {
    let (_, page) = http_get(addr, "/metrics").await?;
    metric(&page, "quad_sessions").ok_or_else(|| anyhow::anyhow!("no quad_sessions in {page}"))
}

/// This process's resident memory, KiB (the server runs in it).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `n` bots around the spawn point, all linked with each other (the server is started
/// with `max_peers` at least `n - 1`).
async fn linked_crowd(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Bot>> {
    let spawn = campus().spawn.to_array();
    let mut bots = Vec::new();
    for i in 0..n {
        let at = [
            spawn[0] + (i % 4) as f32 * 8.0,
            spawn[1] + (i / 4) as f32 * 8.0,
        ];
        bots.push(Bot::join(addr, &format!("b{i}"), Some(at)).await?);
    }
    for bot in &mut bots {
        bot.wait_until(PATIENCE, |b| b.peers.len() == n - 1).await?;
    }
    Ok(bots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_forgotten() -> anyhow::Result<()> {
    const FLOODERS: usize = 12;
    let server = TestServer::start_with(|c| {
        c.session_outbox_bytes = 512 * 1024;
        c.max_peers = FLOODERS as u8;
        // Closed, it is kept a second for a resume (it could come back on a new connection),
        // then forgotten.
        c.resume_grace_secs = 1;
    })
    .await?;
    let addr = server.addr();
    let mut bots = linked_crowd(addr, FLOODERS + 1).await?;
    let mut victim = bots.remove(0);
    let victim_id = victim.id;
    let before = sessions(addr).await?;
    let rss_before = rss_kib();
    let mut rss_peak = rss_before;

    // The victim reads nothing from now on. Every neighbour sends it the largest legal
    // descriptions as fast as it is allowed to (and faster: the excess is refused).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut gone = false;
    while Instant::now() < deadline {
        pace.tick().await;
        for bot in &mut bots {
            bot.send(&ClientMsg::Signal {
                to: victim_id,
                signal: description(MAX_PEER_SDP_BYTES),
            })
            .await?;
            bot.drain().await?;
        }
        rss_peak = rss_peak.max(rss_kib());
        if sessions(addr).await? < before {
            gone = true;
            break;
        }
    }
    println!(
        "outbox budget 512 KiB: RSS grew by at most {} KiB while the victim stopped reading",
        rss_peak.saturating_sub(rss_before)
    );
    assert!(
        gone,
        "the session of a client that reads nothing stays open"
    );

    // It is told why, if it reads at all.
    let (code, reason) = victim.expect_close().await?;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("keep up"), "{reason}");
    // The others go on, and are told it left.
    let other = &mut bots[0];
    other
        .wait_until(PATIENCE, |b| !b.people.contains_key(&victim_id))
        .await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_larger_than_real_descriptions_is_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut bots = linked_crowd(server.addr(), 2).await?;
    let mut b = bots.remove(1);
    let mut a = bots.remove(0);

    // Each refusal names the message and the limit.
    let too_large: [(ClientMsg, &str); 3] = [
        (
            ClientMsg::Signal {
                to: b.id,
                signal: description(MAX_PEER_SDP_BYTES + 1),
            },
            "Signal: a session description",
        ),
        (
            ClientMsg::Signal {
                to: b.id,
                signal: Signal::Candidate {
                    candidate: "c".repeat(MAX_CANDIDATE_BYTES + 1),
                    sdp_mid: None,
                    sdp_m_line_index: Some(0),
                },
            },
            "Signal: an ICE candidate",
        ),
        (
            ClientMsg::RoomSignal(description(MAX_ROOM_SDP_BYTES + 1)),
            "RoomSignal: a session description",
        ),
    ];
    for (msg, says) in too_large {
        let seen = a.errors.len();
        a.send(&msg).await?;
        let e = a.expect_error_after(seen, ErrorCode::TooLarge).await?;
        assert!(e.message.starts_with(says), "{}", e.message);
        assert!(e.message.contains("at most"), "{}", e.message);
    }

    // A real-sized one goes through, and only it arrives.
    a.send(&ClientMsg::Signal {
        to: b.id,
        signal: description(MAX_PEER_SDP_BYTES),
    })
    .await?;
    b.wait_until(PATIENCE, |b| !b.signals.is_empty()).await?;
    assert_eq!(b.signals.len(), 1);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_toggles_reach_a_peer_at_a_bounded_rate() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut bots = linked_crowd(server.addr(), 2).await?;
    let mut peer = bots.remove(1);
    let mut bot = bots.remove(0);
    // 60 toggles at once: the linked peer hears of a burst's worth, not 60.
    let before = peer.media_updates.len();
    let started = Instant::now();
    for i in 0..60 {
        bot.send(&ClientMsg::Media(MediaFlags {
            mic: i % 2 == 0,
            camera: false,
            screen: false,
        }))
        .await?;
    }
    let e = bot.expect_error(ErrorCode::RateLimited).await?;
    assert!(e.message.contains("Media"), "{}", e.message);
    peer.listen_for(Duration::from_millis(1000)).await?;
    let got = peer.media_updates.len() - before;
    // The burst (10), what the rate (4/s) refilled meanwhile, and a margin.
    let allowed = 10.0 + 4.0 * started.elapsed().as_secs_f64() + 2.0;
    println!("60 media toggles in a row: the peer got {got} updates");
    assert!(got >= 1, "the first toggles go through");
    assert!(
        (got as f64) <= allowed,
        "{got} updates from 60 toggles: at most {allowed:.0} expected"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_beyond_their_allowance_are_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut bot = Bot::connect(server.addr()).await?;
    // 100 in a row: within the limit on all frames (a burst of 120), not the one on pings.
    for nonce in 0..100 {
        bot.send(&ClientMsg::Ping { nonce }).await?;
    }
    let e = bot.expect_error(ErrorCode::RateLimited).await?;
    assert!(e.message.contains("Ping"), "{}", e.message);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_hello_is_closed() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.hello_timeout_secs = 1).await?;
    let started = Instant::now();
    let mut silent = Bot::connect(server.addr()).await?;
    // Pinging is not saying Hello.
    let mut pinging = Bot::connect(server.addr()).await?;
    pinging.send(&ClientMsg::Ping { nonce: 1 }).await?;
    for bot in [&mut silent, &mut pinging] {
        let (code, reason) = bot.expect_close().await?;
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("Hello"), "{reason}");
    }
    let took = started.elapsed();
    println!("closed {took:?} after connecting without Hello (timeout 1 s)");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Saying Hello in time is enough.
    let bot = Bot::join(server.addr(), "Ada", None).await?;
    assert!(bot.welcome.is_some());
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_session_is_closed_and_a_pinging_one_is_not() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.idle_timeout_secs = 2).await?;
    let mut silent = Bot::join(server.addr(), "Silent", None).await?;
    let mut alive = Bot::join(server.addr(), "Alive", None).await?;
    let started = Instant::now();
    // Alive pings every 500 ms, as the browser client does every 15 s; Silent sends nothing.
    let mut pace = tokio::time::interval(Duration::from_millis(500));
    let mut nonce = 0;
    while started.elapsed() < Duration::from_secs(5) && nonce < 20 {
        pace.tick().await;
        nonce += 1;
        alive.send(&ClientMsg::Ping { nonce }).await?;
        alive.drain().await?;
        silent.drain().await?;
    }
    let (code, reason) = silent.expect_close().await?;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("idle"), "{reason}");
    assert!(alive.closed.is_none(), "closed: {:?}", alive.closed);
    alive.walk(dir::RIGHT, 3).await?;
    server.stop().await;
    Ok(())
}

/// Connects and reads until welcomed or closed: `Ok(None)` if welcomed, else the close.
async fn try_join(addr: SocketAddr, name: &str) -> anyhow::Result<(Bot, Option<(u16, String)>)> {
    let mut bot = Bot::connect(addr).await?;
    bot.send(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        name: name.into(),
        token: None,
        spawn: None,
        device: None,
        resume: None,
        room: None,
    }))
    .await?;
    let _ = bot
        .wait_until(PATIENCE, |b| b.welcome.is_some() || b.closed.is_some())
        .await;
    let closed = bot.closed.clone();
    Ok((bot, closed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_quota_of_sessions() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.max_sessions_per_ip = 3;
        c.session_joins_per_ip_per_minute = 0;
    })
    .await?;
    let addr = server.addr();
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(Bot::join(addr, &format!("b{i}"), None).await?);
    }
    let (refused, closed) = try_join(addr, "fourth").await?;
    let (code, reason) = closed.ok_or_else(|| anyhow::anyhow!("a fourth session was let in"))?;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("too many sessions"), "{reason}");
    assert!(
        refused
            .errors
            .iter()
            .any(|e| e.code == ErrorCode::Unavailable && e.message.contains("at most 3")),
        "{:?}",
        refused.errors
    );
    // A session that ends gives its place back.
    let mut gone = held.remove(0);
    gone.close().await;
    let deadline = Instant::now() + PATIENCE;
    let mut tries = 0;
    loop {
        tries += 1;
        let (bot, closed) = try_join(addr, "again").await?;
        if closed.is_none() {
            held.push(bot);
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline && tries < 100,
            "the place was not given back: {closed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_opens_sessions_only_so_fast() -> anyhow::Result<()> {
    // 6 a minute: bursts of 3.
    let server = TestServer::start_with(|c| {
        c.max_sessions_per_ip = 0;
        c.session_joins_per_ip_per_minute = 6;
    })
    .await?;
    let addr = server.addr();
    let mut held = Vec::new();
    for i in 0..3 {
        let mut bot = Bot::join(addr, &format!("b{i}"), None).await?;
        bot.close().await;
        held.push(bot);
    }
    let (refused, closed) = try_join(addr, "fourth").await?;
    let (code, reason) = closed.ok_or_else(|| anyhow::anyhow!("a fourth join was let in"))?;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("too many new sessions"), "{reason}");
    assert!(
        refused
            .errors
            .iter()
            .any(|e| e.code == ErrorCode::RateLimited && e.message.contains("6 a minute")),
        "{:?}",
        refused.errors
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_toggling_its_hand_does_not_flood_the_room() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spot = room_spot(&campus(), 0)?;
    let token = server.token("Ms Ada", Role::Teacher)?;
    let mut ada = Bot::join_as(server.addr(), "x", Some(spot), Some(token), None).await?;
    let mut toggler = Bot::join(server.addr(), "Toggler", Some(spot)).await?;
    let mut cy = Bot::join(server.addr(), "Cy", Some(spot)).await?;
    for bot in [&mut ada, &mut toggler, &mut cy] {
        bot.wait_until(PATIENCE, |b| {
            b.class.as_ref().is_some_and(|c| !c.teachers.is_empty())
        })
        .await?;
    }
    cy.listen_for(Duration::from_millis(300)).await?;

    // 57 hand and attention toggles a second, for two seconds.
    let before = cy.class_frames;
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(1000 / 57));
    for i in 0..114 {
        pace.tick().await;
        let msg = if i % 2 == 0 {
            ClientMsg::Hand { raised: i % 4 == 0 }
        } else {
            ClientMsg::Attention {
                watching: i % 4 == 1,
            }
        };
        toggler.send(&msg).await?;
        toggler.drain().await?;
        cy.drain().await?;
    }
    cy.listen_for(Duration::from_millis(500)).await?;
    let secs = started.elapsed().as_secs_f64();
    let frames = cy.class_frames - before;
    println!(
        "114 toggles in 2 s: a classmate got {frames} class states in {secs:.1} s ({:.1}/s)",
        frames as f64 / secs
    );
    assert!(
        frames <= 25,
        "{frames} class states from 114 toggles: the room is flooded"
    );

    // One raised hand still arrives at once.
    let sent = Instant::now();
    cy.send(&ClientMsg::Hand { raised: true }).await?;
    ada.wait_until(PATIENCE, |b| {
        b.class.as_ref().is_some_and(|c| c.hands.contains(&cy.id))
    })
    .await?;
    println!(
        "a single raised hand reached the teacher in {:?}",
        sent.elapsed()
    );
    server.stop().await;
    Ok(())
}

/// What a walking client sees: snapshots per second and the input-to-acknowledgement p99.
struct Seen {
    snapshots_per_sec: f64,
    ack_p99_ms: f64,
    inputs: usize,
}

/// Walks `bot` back and forth like a real client (an input of 3 steps every 50 ms) for
/// `period`, timing each input until a snapshot acknowledges it.
async fn walk_and_measure(bot: &mut Bot, period: Duration) -> anyhow::Result<Seen> {
    let started = Instant::now();
    let snapshots = bot.snapshots;
    let mut pending: std::collections::VecDeque<(u32, Instant)> = Default::default();
    let mut latencies = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let mut n = 0u32;
    while started.elapsed() < period && n < 10_000 {
        pace.tick().await;
        let way = if (n / 20).is_multiple_of(2) {
            dir::RIGHT
        } else {
            dir::LEFT
        };
        n += 1;
        let seq = bot.input(way, 3).await?;
        pending.push_back((seq, Instant::now()));
        let next = Instant::now() + Duration::from_millis(45);
        let mut reads = 0;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            reads += 1;
            if reads > 1000 || !bot.pump(left).await? {
                break;
            }
            while pending.front().is_some_and(|(s, _)| *s <= bot.ack) {
                if let Some((_, at)) = pending.pop_front() {
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN);
    Ok(Seen {
        snapshots_per_sec: f64::from(bot.snapshots - snapshots) / secs,
        ack_p99_ms: p99,
        inputs: latencies.len(),
    })
}

/// A WebSocket upgrade to `/ws` on a bare socket, which then says nothing.
async fn upgraded_socket(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    // The 101 response's head, read up to its blank line.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 1024 {
        tokio::time::timeout(PATIENCE, socket.read_exact(&mut byte)).await??;
        head.push(byte[0]);
    }
    anyhow::ensure!(head.starts_with(b"HTTP/1.1 101"), "not upgraded");
    Ok(socket)
}

fn report(name: &str, baseline: &Seen, seen: &Seen, rss_growth_kib: u64) {
    println!(
        "{name:<44} snapshots {:>5.1}/s ({:+5.1}% of normal)  input->ack p99 {:>6.1} ms ({} inputs)  RSS +{} KiB",
        seen.snapshots_per_sec,
        (seen.snapshots_per_sec / baseline.snapshots_per_sec - 1.0) * 100.0,
        seen.ack_p99_ms,
        seen.inputs,
        rss_growth_kib
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_leave_a_well_behaved_client_alone() -> anyhow::Result<()> {
    const WINDOW: Duration = Duration::from_secs(3);
    let server = TestServer::start_with(|c| {
        c.max_peers = 12;
        c.session_outbox_bytes = 1024 * 1024;
        c.max_sessions_per_ip = 40;
        c.session_joins_per_ip_per_minute = 120;
        c.hello_timeout_secs = 10;
    })
    .await?;
    let addr = server.addr();
    // The well-behaved client walks in the courtyard, away from the crowd at the spawn.
    let spawn = campus().spawn.to_array();
    let mut walker = Bot::join(addr, "Walker", Some([spawn[0] - 400.0, spawn[1]])).await?;
    let baseline = walk_and_measure(&mut walker, WINDOW).await?;
    report("no flood", &baseline, &baseline, 0);

    // 1. The reported flood: a neighbour sends 250 kB signals 60 times a second into a
    //    linked client that stopped reading; and 11 more send the largest legal ones.
    let mut crowd = linked_crowd(addr, 13).await?;
    let victim = crowd.remove(0);
    let victim_id = victim.id;
    let rss0 = rss_kib();
    let flood = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(1000 / 60));
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < WINDOW && n < 1000 {
            pace.tick().await;
            n += 1;
            for (i, bot) in crowd.iter_mut().enumerate() {
                let len = if i == 0 { 250_000 } else { MAX_PEER_SDP_BYTES };
                if i == 0 || n % 6 == 0 {
                    let _ = bot
                        .send(&ClientMsg::Signal {
                            to: victim_id,
                            signal: description(len),
                        })
                        .await;
                }
                let _ = bot.drain().await;
            }
        }
        crowd
    });
    let seen = walk_and_measure(&mut walker, WINDOW).await?;
    let mut crowd = flood.await?;
    report(
        "signal flood into a client that stopped reading",
        &baseline,
        &seen,
        rss_kib().saturating_sub(rss0),
    );
    drop(victim);
    for bot in &mut crowd {
        bot.close().await;
    }
    drop(crowd);

    // 2. Hand and attention toggling, 57 a second, by a student in a class of 10.
    let spot = room_spot(&campus(), 0)?;
    let mut class = Vec::new();
    for i in 0..10 {
        class.push(Bot::join(addr, &format!("s{i}"), Some(spot)).await?);
    }
    let rss0 = rss_kib();
    let flood = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(1000 / 57));
        let started = Instant::now();
        let mut i = 0;
        while started.elapsed() < WINDOW && i < 1000 {
            pace.tick().await;
            i += 1;
            let msg = if i % 2 == 0 {
                ClientMsg::Hand { raised: i % 4 == 0 }
            } else {
                ClientMsg::Attention {
                    watching: i % 4 == 1,
                }
            };
            let _ = class[0].send(&msg).await;
            for bot in &mut class {
                let _ = bot.drain().await;
            }
        }
        class
    });
    let seen = walk_and_measure(&mut walker, WINDOW).await?;
    let class = flood.await?;
    let frames: Vec<u32> = class.iter().map(|b| b.class_frames).collect();
    report(
        "hand/attention toggling in a class of 10",
        &baseline,
        &seen,
        rss_kib().saturating_sub(rss0),
    );
    println!("  class states each member received in all: {frames:?}");
    drop(class);

    // 3. Every kind of message as fast as a socket allows, from one joined client.
    let mut spammer = Bot::join(addr, "Spam", Some(spawn)).await?;
    let rss0 = rss_kib();
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < WINDOW && n < 200_000 {
            n += 1;
            let msg = match n % 4 {
                0 => ClientMsg::Ping { nonce: n },
                1 => ClientMsg::Media(MediaFlags::default()),
                2 => ClientMsg::RoomTiles(vec![(AvatarId(1), 100)]),
                _ => ClientMsg::Hand { raised: true },
            };
            if spammer.send(&msg).await.is_err() {
                break;
            }
            if n.is_multiple_of(64) {
                let _ = spammer.drain().await;
            }
        }
        (spammer, n)
    });
    let seen = walk_and_measure(&mut walker, WINDOW).await?;
    let (_spammer, sent) = flood.await?;
    report(
        "one client sending every kind flat out",
        &baseline,
        &seen,
        rss_kib().saturating_sub(rss0),
    );
    println!("  ({sent} messages sent)");

    // 4. Connections that never say Hello, opened as fast as possible from one address
    //    (bare sockets that only do the upgrade, so the memory is the server's).
    let rss0 = rss_kib();
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        let mut open = Vec::new();
        while started.elapsed() < WINDOW && open.len() < 2000 {
            if let Ok(socket) = upgraded_socket(addr).await {
                open.push(socket);
            }
        }
        open
    });
    let seen = walk_and_measure(&mut walker, WINDOW).await?;
    let open = flood.await?;
    let rss_growth = rss_kib().saturating_sub(rss0);
    // Refused ones were sent an Error and a close; accepted ones nothing.
    let mut refused = 0;
    for socket in &open {
        let mut buf = [0u8; 256];
        if socket.try_read(&mut buf).is_ok() {
            refused += 1;
        }
    }
    report(
        "connections without Hello, as fast as possible",
        &baseline,
        &seen,
        rss_growth,
    );
    println!(
        "  {} connections opened; {refused} refused by the per-address quota (40 at once, bursts of 60)",
        open.len()
    );
    drop(open);

    assert!(walker.closed.is_none(), "{:?}", walker.closed);
    server.stop().await;
    Ok(())
}

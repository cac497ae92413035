//! Cluster mode, end to end: a real `redis-server` and PostgreSQL started on loopback, and
//! three `quad-server` nodes started as processes against them (`quad_tests::cluster`).
//!
//! - Clients entering through different nodes are in one campus: they see each other, are
//!   linked for proximity media (signaling crosses nodes), chat, and a teacher's join link
//!   made on one node works on another. The routing hop's cost is measured.
//! - SIGKILL of the node owning the space: another takes it over, the clients are back
//!   through their entry nodes, with the chat history; the time it took is printed.
//! - Redis restarted under load: nothing is disconnected, nothing acknowledged is lost,
//!   and the nodes are all back in the cluster view.
//! - A node that cannot reach Redis at start-up says so and exits.

use anyhow::{Context, Result, ensure};
use quad_shared::protocol::{ChatTo, ClientMsg, RecordingNews, Signal, TeacherAction};
use quad_tests::Bot;
use quad_tests::cluster::{Node, Postgres, Redis, node_command, view, wait_view};
use quad_tests::room_bot::{RoomBot, RoomBotOptions, room_spot};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A point `offset` from the campus spawn, checked to be walkable.
fn spot(offset: [f32; 2]) -> [f32; 2] {
    let map = quad_tests::campus();
    let p = map.spawn + glam::Vec2::from_array(offset);
    assert!(map.collision.walkable(p), "test spot {p} is not walkable");
    p.to_array()
}

/// Redis, PostgreSQL with a fresh database, and nodes `a`, `b`, `c` (`a` first: it owns
/// the space).
async fn cluster(db: &str) -> Result<(Redis, Postgres, Vec<Node>)> {
    cluster_with(db, "").await
}

/// [`cluster`], with `extra` settings in every node's config.
async fn cluster_with(db: &str, extra: &str) -> Result<(Redis, Postgres, Vec<Node>)> {
    let redis = Redis::start().await?;
    let postgres = Postgres::start().await?;
    let url = postgres.database(db)?;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(Node::start_with(name, &redis.url(), &url, extra).await?);
    }
    // Every node knows every other (the owner places rooms by what it knows).
    for node in &nodes {
        wait_view(node.addr, Duration::from_secs(10), |v| {
            v["nodes"].as_array().is_some_and(|n| n.len() == 3) && v["space_owner"] == "a"
        })
        .await?;
    }
    Ok((redis, postgres, nodes))
}

/// Sends a space chat line from `bot` and waits until `bot` sees it back (the space took
/// it); its id.
async fn chat(bot: &mut Bot, text: &str) -> Result<u64> {
    bot.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: text.into(),
    })
    .await?;
    bot.wait_until(quad_tests::PATIENCE, |b| {
        b.chat.values().any(|l| l.text == text)
    })
    .await?;
    bot.chat
        .iter()
        .find(|(_, l)| l.text == text)
        .map(|(id, _)| *id)
        .context("vanished")
}

/// `n` ping round trips of `bot` (at most 4 pings a second, the server's limit), in ms.
async fn pings(mut bot: Bot, n: u32) -> Result<Vec<f64>> {
    let mut rtts = Vec::new();
    for nonce in 0..n {
        let sent = Instant::now();
        bot.send(&ClientMsg::Ping { nonce }).await?;
        bot.wait_until(quad_tests::PATIENCE, |b| b.pongs.contains(&nonce))
            .await?;
        rtts.push(sent.elapsed().as_secs_f64() * 1000.0);
        bot.pongs.clear();
        tokio::time::sleep(Duration::from_millis(260).saturating_sub(sent.elapsed())).await;
    }
    Ok(rtts)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_entering_through_any_node_share_one_campus() -> Result<()> {
    let (_redis, _pg, nodes) = cluster("campus").await?;
    let (a, b, c) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);

    // The cluster view: behind the secret, with every node and its load.
    let res = quad_tests::http_request(b, "/cluster", &[]).await?;
    ensure!(
        res.status == 401,
        "/cluster without the secret: {}",
        res.status
    );
    let wrong = quad_tests::http_request(b, "/cluster", &["Authorization: Bearer nope"]).await?;
    ensure!(
        wrong.status == 401,
        "/cluster with a wrong secret: {}",
        wrong.status
    );
    let v = view(b).await?;
    println!("cluster view from b: {v:#}");
    for n in v["nodes"].as_array().context("nodes")? {
        ensure!(
            n["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:"))
        );
        ensure!(n["cpu"].as_f64().is_some() && n["sessions"].as_u64().is_some());
    }

    // Forgeries: a client posing as a relaying node (to choose the address it is counted
    // as), and a media link without the cluster secret, are refused.
    let upgrade = [
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let mut forged = upgrade.to_vec();
    forged.extend([
        "x-quad-node-secret: not-the-secret",
        "x-quad-client: 192.0.2.1:5",
    ]);
    let res = quad_tests::http_request(a, "/ws", &forged).await?;
    ensure!(res.status == 403, "a forged relay: {}", res.status);
    let res = quad_tests::http_request(b, "/cluster/media", &upgrade).await?;
    ensure!(
        res.status == 403,
        "a media link without the secret: {}",
        res.status
    );
    let mut wrong = upgrade.to_vec();
    wrong.push("x-quad-node-secret: not-the-secret");
    let res = quad_tests::http_request(b, "/cluster/media", &wrong).await?;
    ensure!(
        res.status == 403,
        "a media link with a wrong secret: {}",
        res.status
    );

    // One campus: each bot enters through another node, near the others.
    let mut ada = Bot::join(a, "Ada", Some(spot([0.0, 0.0]))).await?;
    let mut bo = Bot::join(b, "Bo", Some(spot([40.0, 0.0]))).await?;
    let mut cy = Bot::join(c, "Cy", Some(spot([0.0, 40.0]))).await?;
    for bot in [&mut ada, &mut bo, &mut cy] {
        bot.wait_until(quad_tests::PATIENCE, |b| {
            b.people.len() == 3 && b.peers.len() == 2
        })
        .await
        .with_context(|| format!("{} sees everyone and is linked to them", bot.id))?;
    }
    // Proximity signaling crosses nodes: Bo (through b) to Cy (through c).
    let offer = Signal::Description {
        kind: quad_shared::protocol::SdpKind::Offer,
        sdp: "v=0\r\n".into(),
    };
    bo.send(&ClientMsg::Signal {
        to: cy.id,
        signal: offer.clone(),
    })
    .await?;
    let bo_id = bo.id;
    cy.wait_until(quad_tests::PATIENCE, |c| {
        c.signals.iter().any(|(from, _)| *from == bo_id)
    })
    .await?;

    // Chat from one node reaches the others, and is kept in the shared store.
    let id = chat(&mut cy, "hello from c").await?;
    for bot in [&mut ada, &mut bo] {
        bot.wait_until(quad_tests::PATIENCE, |b| b.chat.contains_key(&id))
            .await?;
    }

    // A teacher's link made with the shared store works through any node.
    let bin = quad_tests::server_binary()?;
    let db = format!("postgres://quad@127.0.0.1:{}/campus", _pg.port);
    let out = std::process::Command::new(&bin)
        .current_dir(quad_tests::repo_root())
        .args([
            "token", "--role", "teacher", "--name", "Ms Ada", "--ttl", "1h",
        ])
        .args(["--database-url", &db])
        .arg("--data-dir")
        .arg(quad_tests::temp_dir("cluster-token"))
        .output()?;
    let link = String::from_utf8_lossy(&out.stdout);
    let token = link
        .split("token=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .context(format!("no link: {}", String::from_utf8_lossy(&out.stderr)))?
        .to_owned();
    let teacher = Bot::join_as(c, "x", Some(spot([-40.0, 0.0])), Some(token), None).await?;
    let welcome = teacher.welcome.as_ref().context("welcome")?;
    ensure!(
        welcome.role == quad_shared::protocol::Role::Teacher && welcome.name == "Ms Ada",
        "the link's role and name on node c: {:?} {:?}",
        welcome.role,
        welcome.name
    );

    // The routing hop: ping round trips through b (relayed to a) and straight to a, by
    // five bots each way at the same time (the same load on both).
    let mut direct = Vec::new();
    let mut relayed = Vec::new();
    for i in 0..5 {
        let at = Some(spot([-120.0, 40.0 * i as f32]));
        direct.push(pings(Bot::join(a, &format!("d{i}"), at).await?, 16));
        relayed.push(pings(Bot::join(b, &format!("r{i}"), at).await?, 16));
    }
    let (direct, relayed) = tokio::join!(
        futures_util::future::try_join_all(direct),
        futures_util::future::try_join_all(relayed)
    );
    let direct = median(direct?.concat());
    let relayed = median(relayed?.concat());
    println!(
        "signaling round trip p50 (80 pings each way, at once): straight to the space's node \
         {direct:.3} ms, through another node {relayed:.3} ms: the hop adds {:.3} ms",
        relayed - direct
    );
    // The load each node reports counts the sessions it relays (Bo's, once the ping bots
    // are gone).
    wait_view(a, Duration::from_secs(5), |v| {
        v["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == "b"))
            .and_then(|n| n["sessions"].as_u64())
            == Some(1)
    })
    .await
    .context("node b reports the one session it relays")?;
    // Each node's own /metrics says its part.
    // (b relays Bo; c relays Cy and the teacher.)
    for (addr, owns, relays) in [(a, 1.0, 0.0), (b, 0.0, 1.0), (c, 0.0, 2.0)] {
        let (status, page) = quad_tests::http_get(addr, "/metrics").await?;
        ensure!(status == 200, "/metrics: {status}");
        let m = |name| quad_tests::metric(&page, name).unwrap_or(-1.0);
        let seen = [
            m("quad_cluster_nodes"),
            m("quad_cluster_owns_space"),
            m("quad_cluster_relayed_sessions"),
        ];
        ensure!(
            seen == [3.0, owns, relays],
            "{addr}: nodes, owns the campus, relays: {seen:?}"
        );
    }
    Ok(())
}

/// Joins `addr` as `bot`'s person again, retrying until a node takes it.
async fn rejoin(bot: &mut Bot, addr: SocketAddr, until: Instant) -> Result<()> {
    loop {
        match bot.reconnect(addr, None).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < until => {
                println!("rejoining through {addr}: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_space_node_is_killed_another_takes_the_campus_over() -> Result<()> {
    let (_redis, _pg, mut nodes) = cluster("takeover").await?;
    let (b, c) = (nodes[1].addr, nodes[2].addr);
    let mut bo = Bot::join(b, "Bo", Some(spot([40.0, 0.0]))).await?;
    let mut cy = Bot::join(c, "Cy", Some(spot([0.0, 40.0]))).await?;
    let said = chat(&mut bo, "before the crash").await?;
    cy.wait_until(quad_tests::PATIENCE, |c| c.chat.contains_key(&said))
        .await?;
    // Shown, so stored: the space sends a chat line out only once it is kept.

    let killed = Instant::now();
    nodes[0].kill().await?;
    // The relays close the clients' sockets when the space's node goes.
    for bot in [&mut bo, &mut cy] {
        bot.wait_until(Duration::from_secs(5), |b| b.closed.is_some())
            .await
            .or_else(|e| if bot.closed.is_some() { Ok(()) } else { Err(e) })?;
    }
    let closed = killed.elapsed();
    let until = Instant::now() + Duration::from_secs(30);
    rejoin(&mut bo, b, until).await?;
    rejoin(&mut cy, c, until).await?;
    let (bo_id, cy_id) = (bo.id, cy.id);
    bo.wait_until(quad_tests::PATIENCE, |b| b.people.contains_key(&cy_id))
        .await?;
    cy.wait_until(quad_tests::PATIENCE, |c| c.people.contains_key(&bo_id))
        .await?;
    let back = killed.elapsed();
    let v = view(b).await?;
    let owner = v["space_owner"].as_str().unwrap_or_default().to_owned();
    println!(
        "space node killed: clients told in {:.2} s, back in the campus (on node {owner}) \
         through their entry nodes {:.2} s after the kill",
        closed.as_secs_f64(),
        back.as_secs_f64()
    );
    ensure!(owner == "b" || owner == "c", "the new owner: {v:#}");
    ensure!(
        v["nodes"].as_array().is_some_and(|n| n.len() == 2),
        "the killed node dropped out of the view: {v:#}"
    );
    // The history came from the shared store; new lines go on after it.
    bo.wait_until(quad_tests::PATIENCE, |b| b.chat.contains_key(&said))
        .await
        .context("the line said before the crash is in the history")?;
    let after = chat(&mut cy, "after the crash").await?;
    ensure!(after > said, "chat ids go on: {after} after {said}");
    bo.wait_until(quad_tests::PATIENCE, |b| b.chat.contains_key(&after))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_disconnects_nobody_and_loses_nothing() -> Result<()> {
    let (mut redis, _pg, nodes) = cluster("redis_restart").await?;
    let (b, c) = (nodes[1].addr, nodes[2].addr);
    // Six people chat through b and c, each a line a second (the most the server takes),
    // before, while and after Redis is away.
    let mut bots = Vec::new();
    for i in 0..6 {
        let (addr, x) = if i % 2 == 0 { (b, 40.0) } else { (c, -40.0) };
        bots.push(Bot::join(addr, &format!("p{i}"), Some(spot([x, 30.0 * i as f32]))).await?);
    }
    let talk = |mut bot: Bot, i: usize| async move {
        let mut said = Vec::new();
        for n in 0..8 {
            let started = Instant::now();
            said.push(chat(&mut bot, &format!("p{i} line {n}")).await?);
            tokio::time::sleep(Duration::from_millis(1100).saturating_sub(started.elapsed())).await;
        }
        anyhow::Ok((bot, said))
    };
    let talking = futures_util::future::try_join_all(
        bots.into_iter().enumerate().map(|(i, bot)| talk(bot, i)),
    );
    // Redis goes away for 2 s, with everything it held, 2 s into the talk.
    let restart = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis.restart(Duration::from_secs(2)).await
    };
    let (talked, restarted) = tokio::join!(talking, restart);
    restarted?;
    let mut acknowledged = Vec::new();
    let mut bots = Vec::new();
    for (bot, said) in talked? {
        acknowledged.extend(said);
        bots.push(bot);
    }
    let v = wait_view(b, Duration::from_secs(10), |v| {
        v["nodes"].as_array().is_some_and(|n| n.len() == 3)
    })
    .await?;
    ensure!(v["space_owner"] == "a", "the owner kept the space: {v:#}");
    for bot in &bots {
        ensure!(
            bot.closed.is_none(),
            "{} was disconnected: {:?}",
            bot.id,
            bot.closed
        );
    }
    // Every line acknowledged (sent out only once stored) is in the history a newcomer gets
    // from the shared store.
    let mut late = Bot::join(c, "Late", Some(spot([-40.0, 0.0]))).await?;
    late.wait_until(quad_tests::PATIENCE, |l| {
        acknowledged.iter().all(|id| l.chat.contains_key(id))
    })
    .await
    .context("every acknowledged line is in the history")?;
    println!(
        "Redis restarted (down 2 s) under chat: {} lines acknowledged, all kept; nobody \
         disconnected",
        acknowledged.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_reach_redis_says_so_and_exits() -> Result<()> {
    let pg = Postgres::start().await?;
    let db = pg.database("no_redis")?;
    let port = quad_tests::cluster::free_port()?;
    let data = quad_tests::temp_dir("no-redis");
    std::fs::create_dir_all(&data)?;
    let bin = quad_tests::server_binary()?;
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        node_command(
            &bin,
            &data,
            "lonely",
            &format!("redis://127.0.0.1:{port}"),
            &db,
        )
        .output(),
    )
    .await
    .context("the node did not exit within 30 s")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "exited in {:.1} s: {stderr}",
        started.elapsed().as_secs_f64()
    );
    ensure!(!out.status.success(), "it exited with success");
    ensure!(
        stderr.contains("cannot reach Redis at redis://127.0.0.1"),
        "it says why: {stderr}"
    );
    Ok(())
}

/// Waits until every bot of `bots` gets `more` microphone packets from each of the others
/// beyond what it had when called.
async fn all_hear_each_other(bots: &[RoomBot], more: u64) -> Result<()> {
    let ids: Vec<_> = bots.iter().map(|b| b.id).collect();
    for bot in bots {
        let others: Vec<_> = ids.iter().copied().filter(|id| *id != bot.id).collect();
        let had: Vec<u64> = others
            .iter()
            .map(|o| bot.state().packets_from(*o, "mic"))
            .collect();
        bot.wait_for(Duration::from_secs(30), "everyone's audio", |s| {
            others
                .iter()
                .zip(&had)
                .all(|(o, had)| s.packets_from(*o, "mic") >= had + more)
        })
        .await?;
    }
    Ok(())
}

/// The node whose media port a bot's room connection was offered (its answer's candidates).
fn media_node(bot: &RoomBot, view: &serde_json::Value) -> Option<String> {
    let candidates = bot.state().server_candidates.join("\n");
    view["nodes"].as_array()?.iter().find_map(|n| {
        let port = n["media"].as_str()?.rsplit_once(':')?.1.to_owned();
        candidates
            .contains(&format!(" {port} typ"))
            .then(|| n["name"].as_str().unwrap_or_default().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_go_to_idle_nodes_and_move_when_their_node_dies() -> Result<()> {
    let (_redis, _pg, mut nodes) = cluster("rooms").await?;
    let a = nodes[0].addr;
    let map = quad_tests::campus();
    // Two classes, two people each, all entering through the space's node.
    let mut rooms = Vec::new();
    for r in 0..2 {
        let at = room_spot(&map, r)?;
        let mut bots = Vec::new();
        for i in 0..2 {
            bots.push(RoomBot::join(a, RoomBotOptions::mic(&format!("r{r}p{i}"), at)).await?);
        }
        rooms.push(bots);
    }
    for bots in &rooms {
        all_hear_each_other(bots, 25).await?;
    }
    // The two rooms run on two different nodes, and each member's media goes straight to
    // its room's node.
    let v = wait_view(a, Duration::from_secs(10), |v| {
        v["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|n| n["rooms"] == 1).count() == 2)
    })
    .await?;
    let mut hosts = Vec::new();
    for bots in &rooms {
        let host = media_node(&bots[0], &v).context("the room's media node")?;
        ensure!(
            media_node(&bots[1], &v).as_ref() == Some(&host),
            "both members of a room connect to one node"
        );
        hosts.push(host);
    }
    println!("rooms placed on nodes {hosts:?}");
    ensure!(
        hosts[0] != hosts[1],
        "two idle nodes take one room each: {hosts:?}"
    );

    // The node of a room (not the space's) is killed: the room is placed again, and its
    // members hear each other again through another node.
    let (victim_room, victim) = hosts
        .iter()
        .enumerate()
        .find(|(_, h)| *h != "a")
        .map(|(i, h)| (i, h.clone()))
        .context("a room on another node than the space's")?;
    let index = nodes
        .iter()
        .position(|n| n.name == victim)
        .context("the victim node")?;
    let killed = Instant::now();
    nodes[index].kill().await?;
    let bots = &rooms[victim_room];
    all_hear_each_other(bots, 25).await?;
    let took = killed.elapsed();
    let v = view(a).await?;
    let now_on = media_node(&bots[0], &v).unwrap_or_default();
    println!(
        "media node {victim} killed: its room's members hear each other again on node {now_on} \
         {:.2} s later",
        took.as_secs_f64()
    );
    ensure!(
        now_on != victim && !now_on.is_empty(),
        "the room moved: {now_on}"
    );
    // The other room was not touched.
    all_hear_each_other(&rooms[1 - victim_room], 25).await?;
    Ok(())
}

/// Two browsers entering through two different nodes (neither owns the space) and a bot
/// through the third walk in one campus; the browsers, side by side, hear each other in
/// the hallway (their proximity signaling crosses three nodes), and both see the bot walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_through_different_nodes_hear_each_other_in_the_hallway() -> Result<()> {
    use quad_tests::browser::{Driver, require_client_bundle};
    require_client_bundle()?;
    let (_redis, _pg, nodes) = cluster("hallway").await?;
    let (a, b, c) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);
    let driver = Driver::start().await?;
    let alice = driver.browser().await?;
    let bob = driver.browser().await?;
    let (pa, pb) = (spot([-144.0, 0.0]), spot([-144.0, 100.0]));
    alice
        .goto(&format!("http://{b}/?name=Alice&spawn={},{}", pa[0], pa[1]))
        .await?;
    bob.goto(&format!("http://{c}/?name=Bob&spawn={},{}", pb[0], pb[1]))
        .await?;
    let alice_id = alice.wait_joined_with_mic("Alice (through node b)").await?;
    let bob_id = bob.wait_joined_with_mic("Bob (through node c)").await?;
    bob.wait_connected_to(alice_id).await?;
    alice.wait_connected_to(bob_id).await?;
    let heard_by_bob = bob.wait_audio_rising(alice_id).await?;
    let heard_by_alice = alice.wait_audio_rising(bob_id).await?;
    println!("Bob hears Alice: {heard_by_bob}\nAlice hears Bob: {heard_by_alice}");

    // A bot enters through the space's node and walks: both pages see it move.
    let mut walker = Bot::join(a, "Walker", Some(spot([40.0, 0.0]))).await?;
    let walker_id = u64::from(walker.id.0);
    let start = walker.me;
    walker.walk(quad_shared::movement::dir::DOWN, 20).await?;
    let moved_to = walker.me;
    ensure!(moved_to != start, "the walker moved");
    for (page, who) in [(&alice, "Alice"), (&bob, "Bob")] {
        page.wait_snapshot(&format!("{who} to see the walker move"), |s| {
            s["avatars"].as_array().is_some_and(|v| {
                v.iter().any(|x| {
                    x["id"] == walker_id
                        && x["y"]
                            .as_f64()
                            .is_some_and(|y| (y - f64::from(start[1])).abs() > 10.0)
                })
            })
        })
        .await?;
    }
    Ok(())
}

/// A teacher records a class whose room runs on another node than the space's: the
/// recording is made there, under the id the space gave, its news reaches the teacher
/// through the space, and the file (kept in that node's folder, here) holds the class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_whose_room_runs_on_another_node_is_recorded_there() -> Result<()> {
    let (_redis, pg, nodes) = cluster("recorded").await?;
    let a = nodes[0].addr;
    let map = quad_tests::campus();
    // Two rooms with a student each: they land on two nodes, one of them not the space's.
    let mut students = Vec::new();
    for r in 0..2 {
        students.push(
            RoomBot::join(
                a,
                RoomBotOptions::mic(&format!("s{r}"), room_spot(&map, r)?),
            )
            .await?,
        );
    }
    for s in &students {
        s.wait_for(quad_tests::PATIENCE, "a room connection", |s| {
            s.first_packet_at.is_some() || s.connection.is_some()
        })
        .await?;
    }
    let v = wait_view(a, Duration::from_secs(10), |v| {
        v["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|n| n["rooms"] == 1).count() == 2)
    })
    .await?;
    let (room, host) = students
        .iter()
        .enumerate()
        .find_map(|(i, s)| media_node(s, &v).filter(|h| h != "a").map(|h| (i, h)))
        .context("a room on another node than the space's")?;
    let host_node = nodes.iter().find(|n| n.name == host).context("the host")?;

    // The teacher walks into that room and records for a few seconds.
    let bin = quad_tests::server_binary()?;
    let out = std::process::Command::new(&bin)
        .current_dir(quad_tests::repo_root())
        .args([
            "token", "--role", "teacher", "--name", "Ms Ada", "--ttl", "1h",
        ])
        .args([
            "--database-url",
            &format!("postgres://quad@127.0.0.1:{}/recorded", pg.port),
        ])
        .arg("--data-dir")
        .arg(quad_tests::temp_dir("cluster-rec-token"))
        .output()?;
    let token = String::from_utf8_lossy(&out.stdout)
        .split("token=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .map(str::to_owned)
        .context("a teacher link")?;
    let teacher = RoomBot::join(
        a,
        RoomBotOptions {
            token: Some(token),
            ..RoomBotOptions::mic("Ms Ada", room_spot(&map, room)?)
        },
    )
    .await?;
    let class = [teacher, students.swap_remove(room)];
    all_hear_each_other(&class, 25).await?;
    class[0]
        .wait_for(quad_tests::PATIENCE, "the teacher in the class", |s| {
            s.class.is_some()
        })
        .await?;
    class[0].send(ClientMsg::Teacher(TeacherAction::Record(true)));
    class[1]
        .wait_for(quad_tests::PATIENCE, "the class shown recorded", |s| {
            s.class.as_ref().is_some_and(|c| c.recording)
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    class[0].send(ClientMsg::Teacher(TeacherAction::Record(false)));
    class[0]
        .wait_for(Duration::from_secs(60), "the recording ready", |s| {
            s.recordings
                .iter()
                .any(|(_, _, news)| matches!(news, RecordingNews::Ready { .. }))
        })
        .await?;
    let (id, news) = class[0]
        .state()
        .recordings
        .iter()
        .find(|(_, _, news)| matches!(news, RecordingNews::Ready { .. }))
        .map(|(id, _, news)| (id.clone(), news.clone()))
        .context("the news")?;
    let file = host_node.data.join("recordings").join(format!("{id}.webm"));
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .context("ffprobe (Debian's ffmpeg package)")?;
    let seconds: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    println!(
        "recorded on node {host} (the space is on a): {id}, {news:?}; the file plays {seconds:.2} s"
    );
    ensure!(
        (3.0..10.0).contains(&seconds),
        "{}: {seconds} s ({})",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// An entry node carries many people's sessions to the space's node over connections from
/// its one address: the space's node does not count them against `max_connections_per_ip`
/// (4 here, with loopback not exempt as it is by default). With that exemption turned off
/// in the server, the fifth person is refused and this fails. On one machine every client
/// also comes from a node's address (127.0.0.1), so this shows the exemption, not that
/// people are still counted (`tests/tests/web_surface.rs` does that for a single server,
/// whose code path is unchanged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_node_relays_more_people_than_one_address_may_connect() -> Result<()> {
    let (_redis, _pg, nodes) = cluster_with(
        "many",
        "max_connections_per_ip = 4\nconnection_limit_exempt = []\n",
    )
    .await?;
    let b = nodes[1].addr;
    let mut people = Vec::new();
    for i in 0..8 {
        people.push(Bot::join(b, &format!("p{i}"), Some(spot([0.0, 16.0 * i as f32]))).await?);
    }
    for person in &mut people {
        person
            .wait_until(quad_tests::PATIENCE, |p| p.people.len() == 8)
            .await?;
    }
    println!("8 people relayed by node b, whose connections to a all come from one address");
    Ok(())
}

//! Reconnecting without a reload, in two real browsers (fake microphones; each test runs
//! in Chromium and in Firefox). Page A
//! loses its WebSocket (`quad.dropConnection(ms)`: closed as a network cut would, and no
//! new one for `ms`); it says "Reconnecting…", comes back by itself as the same avatar in
//! the same place, and hears B and is heard by B again, in the hallway and in a classroom.
//! The page is never reloaded (a marker set before the cut is still there), and no chat
//! line shows twice. Prints how long audio took to come back after the cut ended.
//!
//! Then the real `quad-server` is killed with SIGKILL, three times, under two pages in a
//! classroom and 48 bots in the hallway, and started again on the same address and data
//! directory: the pages join again by themselves, back in their classroom, with the chat
//! they were shown kept once, and the bots join again; then SIGTERM: the pages are told the
//! server is restarting and come back to the new process. Prints how long each took from
//! the new process serving (with the median of the three crashes).

use quad_shared::protocol::{ChatTo, ClientMsg};
use quad_tests::browser::{
    Browser, Driver, Engine, HallwayPair, hallway_pair, require_client_bundle,
};
use quad_tests::room_bot::room_spot;
use quad_tests::{Bot, campus, rejoin_all, restart_process, start_process, temp_dir};
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long the cut lasts, milliseconds.
const CUT_MS: u32 = 3_000;

fn chat_count(snap: &Value, text: &str) -> usize {
    snap["chat"]
        .as_array()
        .map_or(0, |v| v.iter().filter(|l| l["text"] == text).count())
}

/// Page A drops its connection for [`CUT_MS`]; returns once it is back (resumed), with
/// the time the cut ended.
async fn cut_and_resume(a: &Browser, a_id: u64, bot: &mut Bot) -> anyhow::Result<Instant> {
    a.eval("window.__notReloaded = true; return true").await?;
    a.eval(&format!(
        "window.quad.dropConnection({CUT_MS}); return true"
    ))
    .await?;
    let snap = a
        .wait_snapshot("A to say it is reconnecting", |s| {
            s["connection"]["state"] == "reconnecting"
        })
        .await?;
    let status = snap["connection"]["status"].as_str().unwrap_or_default();
    assert!(status.starts_with("Reconnecting"), "{snap}");
    // Said while A is away.
    bot.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: "said during the cut".into(),
    })
    .await?;
    let snap = a
        .wait_snapshot("A back in the space", |s| {
            s["connection"]["state"] == "open" && s["connection"]["resumed"] == 1
        })
        .await?;
    let ended = Instant::now();
    assert_eq!(snap["self"]["id"], a_id, "the same avatar: {snap}");
    assert_eq!(
        a.eval("return window.__notReloaded === true").await?,
        Value::Bool(true),
        "the page was not reloaded"
    );
    Ok(ended)
}

quad_tests::in_each_engine!(
    a_page_that_loses_its_connection_comes_back_in_the_hallway_and_in_a_room
);

async fn a_page_that_loses_its_connection_comes_back_in_the_hallway_and_in_a_room(
    engine: Engine,
) -> anyhow::Result<()> {
    let HallwayPair {
        a,
        b,
        a_id,
        b_id,
        a_at: pa,
        driver: _driver,
        server,
    } = hallway_pair(engine).await?;
    let map = campus();
    // A bot in the space who chats.
    let mut bot = Bot::join(server.addr(), "Cleo", None).await?;
    bot.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: "said before the cut".into(),
    })
    .await?;
    a.wait_connected_to(b_id).await?;
    a.wait_audio_rising(b_id).await?;
    a.wait_snapshot("the first line", |s| {
        chat_count(s, "said before the cut") == 1
    })
    .await?;
    let before = a.snapshot().await?;

    // In the hallway.
    let ended = cut_and_resume(&a, a_id, &mut bot).await?;
    assert!(
        (before["self"]["x"].as_f64().unwrap_or(0.0) - f64::from(pa.x)).abs() < 1.0,
        "{before}"
    );
    let after = a.snapshot().await?;
    assert_eq!(after["self"]["x"], before["self"]["x"], "where it was");
    assert_eq!(after["self"]["y"], before["self"]["y"], "where it was");
    a.wait_connected_to(b_id).await?;
    a.wait_audio_rising(b_id).await?;
    b.wait_connected_to(a_id).await?;
    b.wait_audio_rising(a_id).await?;
    let hallway_ms = ended.elapsed().as_millis();
    let snap = a
        .wait_snapshot("the line said during the cut", |s| {
            chat_count(s, "said during the cut") == 1
        })
        .await?;
    assert_eq!(
        chat_count(&snap, "said before the cut"),
        1,
        "no line twice: {snap}"
    );

    // In a classroom: both pages start there afresh.
    let at = room_spot(&map, 0)?;
    a.goto(&format!(
        "{}/?name=Alice&spawn={},{}",
        server.url(),
        at[0],
        at[1]
    ))
    .await?;
    b.goto(&format!(
        "{}/?name=Bob&spawn={},{}",
        server.url(),
        at[0],
        at[1]
    ))
    .await?;
    let a_id = a.wait_joined_with_mic("A in the room").await?;
    let b_id = b.wait_joined_with_mic("B in the room").await?;
    let hears = |from: u64| {
        move |s: &Value| {
            s["room"]["state"] == "connected"
                && s["room"]["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["id"] == from && m["audio"] == true))
        }
    };
    a.wait_snapshot("A hearing B in the room", hears(b_id))
        .await?;
    b.wait_snapshot("B hearing A in the room", hears(a_id))
        .await?;
    let room = a.snapshot().await?["room"]["name"].clone();
    let ended = cut_and_resume(&a, a_id, &mut bot).await?;
    let snap = a
        .wait_snapshot("A hearing B in the room again", hears(b_id))
        .await?;
    assert_eq!(snap["room"]["name"], room, "the same room");
    let before = a.room_audio_from(b_id).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.room_audio_from(b_id).await? <= before {
        anyhow::ensure!(Instant::now() < deadline, "B's audio does not reach A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let room_ms = ended.elapsed().as_millis();
    b.wait_snapshot("B hearing A again", hears(a_id)).await?;
    let before = b.room_audio_from(a_id).await?;
    while b.room_audio_from(a_id).await? <= before {
        anyhow::ensure!(Instant::now() < deadline, "A's audio does not reach B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "after a {CUT_MS} ms cut: hallway audio both ways {hallway_ms} ms, room audio {room_ms} ms after the cut ended"
    );

    a.close().await?;
    b.close().await?;
    server.stop().await;
    Ok(())
}

/// The two pages are in the space again by themselves (joined afresh: the new process has
/// no sessions), in their classroom, hearing each other; returns how long that took from
/// `answering` (when the new process served).
async fn pages_back(
    pages: [&Browser; 2],
    rejoins: u64,
    room: &Value,
    answering: Instant,
) -> anyhow::Result<Duration> {
    let mut ids = Vec::new();
    for page in pages {
        let snap = page
            .wait_snapshot("the page back in the space by itself", |s| {
                s["connection"]["state"] == "open" && s["connection"]["rejoined"] == rejoins
            })
            .await?;
        ids.push(snap["self"]["id"].as_u64().unwrap_or_default());
    }
    let took = answering.elapsed();
    for (page, other) in [(pages[0], ids[1]), (pages[1], ids[0])] {
        let snap = page
            .wait_snapshot("the page hearing the other in its classroom again", |s| {
                s["room"]["state"] == "connected"
                    && s["room"]["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["id"] == other && m["audio"] == true))
            })
            .await?;
        assert_eq!(&snap["room"]["name"], room, "back in the same classroom");
        assert_eq!(
            page.eval("return window.__notReloaded === true").await?,
            Value::Bool(true),
            "not reloaded"
        );
    }
    Ok(took)
}

/// Kill-and-restart cycles in the restart test.
const CRASHES: u64 = 3;

quad_tests::in_each_engine!(after_a_crash_and_after_sigterm_the_pages_come_back_by_themselves);

async fn after_a_crash_and_after_sigterm_the_pages_come_back_by_themselves(
    engine: Engine,
) -> anyhow::Result<()> {
    require_client_bundle()?;
    let data = temp_dir("browser-restart");
    let (mut server, addr) = start_process(&data, "127.0.0.1:0").await?;
    let url = format!("http://{addr}");
    let driver = Driver::start_engine(engine).await?;
    let at = room_spot(&campus(), 1)?;
    let a = driver.browser().await?;
    let b = driver.browser().await?;
    for (page, name) in [(&a, "Alice"), (&b, "Bob")] {
        page.goto(&format!("{url}/?name={name}&spawn={},{}", at[0], at[1]))
            .await?;
    }
    a.wait_joined_with_mic("A").await?;
    b.wait_joined_with_mic("B").await?;
    let room = a
        .wait_snapshot("A in a classroom", |s| s["room"]["name"].is_string())
        .await?["room"]["name"]
        .clone();
    for page in [&a, &b] {
        page.eval("window.__notReloaded = true; return true")
            .await?;
    }
    // Lines a bot says, shown to A before the crash.
    let mut bot = Bot::join(addr, "Cleo", None).await?;
    for n in 0..5 {
        bot.send(&ClientMsg::Chat {
            to: ChatTo::Space,
            text: format!("before the crash {n}"),
        })
        .await?;
    }
    a.wait_snapshot("A shown the bot's lines", |s| {
        chat_count(s, "before the crash 4") == 1
    })
    .await?;

    // 48 more clients in the hallway: bots, each back as soon as the server answers.
    let mut walkers = vec![bot];
    for i in 1..48 {
        walkers.push(Bot::join(addr, &format!("w{i}"), None).await?);
    }

    // kill -9, then the same address again; three times, for a median.
    let mut after_crash = Vec::new();
    for cycle in 1..=CRASHES {
        server.start_kill()?;
        server.wait().await?;
        let (restarted, _) = restart_process(&data, addr).await?;
        server = restarted;
        let answering = Instant::now();
        let (pages, bots) = tokio::join!(pages_back([&a, &b], cycle, &room, answering), async {
            rejoin_all(addr, &mut walkers).await?;
            Ok::<_, anyhow::Error>(answering.elapsed())
        });
        after_crash.push(pages?.max(bots?));
        let snap = a.snapshot().await?;
        for n in 0..5 {
            assert_eq!(
                chat_count(&snap, &format!("before the crash {n}")),
                1,
                "each line once, kept across the crash: {snap}"
            );
        }
    }
    after_crash.sort_unstable();

    // SIGTERM: the pages are told, and come back when told to.
    let pid = server.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    for page in [&a, &b] {
        page.wait_snapshot("the page told the server restarts", |s| {
            s["connection"]["status"]
                .as_str()
                .is_some_and(|t| t.contains("restarting") || t.starts_with("Reconnecting"))
        })
        .await?;
    }
    server.wait().await?;
    let (mut server, _) = restart_process(&data, addr).await?;
    let after_term = pages_back([&a, &b], CRASHES + 1, &room, Instant::now()).await?;
    println!(
        "2 pages (back in their classroom by themselves, hearing each other) and 48 bots back, from the new process serving: {:?} ms after kill -9 (median {} ms of {CRASHES}); the pages {} ms after SIGTERM (told to come back in 1-6 s)",
        after_crash
            .iter()
            .map(Duration::as_millis)
            .collect::<Vec<_>>(),
        after_crash[after_crash.len() / 2].as_millis(),
        after_term.as_millis()
    );
    server.start_kill()?;
    a.close().await?;
    b.close().await?;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

//! A classroom in four browsers (fake devices), run once in Chromium and once in Firefox:
//! A and B start inside Classroom A, C walks in from the hallway; each hears the other two through the server
//! (the room connection's remote candidate is the server's); C's walk-in-to-hearing time
//! and its audio gap (from its hallway peer D to the room) are printed. A's camera reaches B
//! in a simulcast layer smaller than the full one, to fit B's tile, and reaches C, who came in
//! after A's connection was renegotiated. A shares a (fake, `?fakescreen=1`) screen that B
//! and C see large, and A's camera keeps playing at B after that renegotiation. Then A
//! walks out next to D in the hallway: A's room connection closes and a peer connection
//! with D opens; the audio gap of that switch is printed. Last, B's room connection breaks
//! under it, and B connects again with the room's member list and C's audio.
//!
//! A page in a classroom hears bots that come and go one after another, each on the m-line
//! the one before it left (the server reuses it).

use quad_tests::TestServer;
use quad_tests::browser::{Browser, Driver, Engine, require_client_bundle, tile_frames_script};
use serde_json::Value;
use std::time::{Duration, Instant};

/// WebDriver key values.
const ARROW_UP: char = '\u{e013}';
const ARROW_DOWN: char = '\u{e015}';

async fn open(
    b: &Browser,
    server: &TestServer,
    name: &str,
    at: [f32; 2],
    camera: bool,
) -> anyhow::Result<u64> {
    b.goto(&format!(
        "{}/?name={name}&camera={}&fakescreen=1&spawn={},{}",
        server.url(),
        u8::from(camera),
        at[0],
        at[1]
    ))
    .await?;
    b.wait_joined_with_mic(name).await
}

/// How long a page may take to hear a room.
const ROOM_PATIENCE: Duration = Duration::from_secs(30);

/// Samples, every 10 ms in the page, when room audio and audio from peer PEER arrive.
/// Each connection has at most one `getStats()` in flight, and its answer is dated when it
/// was asked for: on a loaded machine Firefox may take longer than the 10 ms period to
/// answer, and an answer is never dropped for being slow (a connection that closes
/// meanwhile may never answer; it is not asked again once closed).
const SAMPLER: &str = r#"
const peer = PEER;
const t = window.__sampler = {joinedRoom: null, firstRoomAudio: null, lastRoomAudio: null, firstPeerAudio: null, lastPeerAudio: null, roomBytes: 0, peerBytes: 0, roomSamples: 0, peerSamples: 0};
const audio = r => { let b = 0; if (r) r.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'audio') b += s.bytesReceived || 0; }); return b; };
const asking = new WeakSet();
const sample = (pc, which) => {
  if (!pc || pc.connectionState === 'closed' || asking.has(pc)) return;
  asking.add(pc);
  const asked = performance.now();
  let answer;
  try { answer = pc.getStats(); } catch (e) { asking.delete(pc); return; }
  answer.then(r => {
    t[which + 'Samples'] += 1;
    const b = audio(r);
    if (b > t[which + 'Bytes']) {
      t[which + 'Bytes'] = b;
      const last = 'last' + (which === 'room' ? 'Room' : 'Peer') + 'Audio';
      const first = 'first' + (which === 'room' ? 'Room' : 'Peer') + 'Audio';
      t[last] = Math.max(t[last] || 0, asked);
      if (t[first] === null || asked < t[first]) t[first] = asked;
    }
  }, () => {}).finally(() => asking.delete(pc));
};
setInterval(() => {
  const now = performance.now();
  if (t.joinedRoom === null && window.quad.snapshot().room) t.joinedRoom = now;
  const room = window.quad.roomPc();
  sample(room, 'room');
  if (room && room.connectionState === 'closed' && !t.roomClosed) t.roomClosed = now;
  if (!room && t.lastRoomAudio && !t.roomClosed) t.roomClosed = now;
  const pc = peer && window.quad.peerConnection(peer);
  if (pc && pc.connectionState === 'connected' && !t.peerConnected) t.peerConnected = now;
  sample(pc, 'peer');
}, 10);
return true;
"#;

fn member(snapshot: &Value, id: u64) -> Option<&Value> {
    snapshot["room"]["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
}

quad_tests::in_each_engine!(
    a_class_hears_itself_through_the_server_and_walking_out_switches_to_proximity
);

/// The two engines' runs of the class take turns: four browsers each, on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn a_class_hears_itself_through_the_server_and_walking_out_switches_to_proximity(
    engine: Engine,
) -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let (a, b, c, d) = (
        driver.browser().await?,
        driver.browser().await?,
        driver.browser().await?,
        driver.browser().await?,
    );
    // Classroom A spans x 32-416, y 32-320; its door is at x 192-256 on y 320-352, and the
    // hallway runs below it.
    let d_id = open(
        &d,
        &server,
        "Dana",
        quad_tests::walkable([300.0, 420.0]),
        false,
    )
    .await?;
    let a_id = open(
        &a,
        &server,
        "Ada",
        quad_tests::walkable([224.0, 280.0]),
        true,
    )
    .await?;
    let b_id = open(
        &b,
        &server,
        "Ben",
        quad_tests::walkable([120.0, 176.0]),
        false,
    )
    .await?;
    let c_id = open(
        &c,
        &server,
        "Cy",
        quad_tests::walkable([224.0, 400.0]),
        false,
    )
    .await?;

    for (page, who) in [(&a, "A"), (&b, "B")] {
        page.wait_snapshot(&format!("{who}'s room connection"), |s| {
            s["room"]["state"] == "connected"
        })
        .await?;
    }

    // C walks in through the door. A sampler in C's page times it: from the room appearing
    // in the snapshot (JoinRoomMedia) to the first room audio.
    c.wait_connected_to(d_id).await?;
    c.wait_audio_rising(d_id).await?;
    c.eval(&SAMPLER.replace("PEER", &d_id.to_string())).await?;
    c.hold_key(ARROW_UP, Duration::from_millis(900)).await?;
    c.wait_snapshot("C in the room", |s| !s["room"].is_null())
        .await?;
    let heard = c
        .wait_room_hearing("C", &[a_id, b_id], ROOM_PATIENCE)
        .await?;
    // The page heard the room; its sampler's answers may still be on their way.
    let times = c
        .wait_snapshot_of(
            "C's sampler to see room audio",
            "return window.__sampler",
            |t| !t["firstRoomAudio"].is_null(),
        )
        .await?;
    let ms = |v: &Value, k: &str| v[k].as_f64();
    if let (Some(joined), Some(first), Some(last_peer)) = (
        ms(&times, "joinedRoom"),
        ms(&times, "firstRoomAudio"),
        ms(&times, "lastPeerAudio"),
    ) {
        println!(
            "walking into the room to hearing it: {:.0} ms",
            first - joined
        );
        println!(
            "audio gap switching from the hallway to the room: {:.0} ms",
            first - last_peer
        );
    } else {
        anyhow::bail!("C's sampler missed the walk-in: {times}");
    }
    assert_eq!(heard["state"], "connected");
    // The server's media port: as its host candidate, or, when a connectivity check from
    // it arrived before the candidate did (Firefox under load), as a peer-reflexive one.
    let media = server.server.media_addr();
    assert!(
        heard["remote"]["type"] == "host" || heard["remote"]["type"] == "prflx",
        "the room's remote candidate: {heard}"
    );
    assert_eq!(
        (
            heard["remote"]["address"].as_str(),
            heard["remote"]["port"].as_u64()
        ),
        (Some("127.0.0.1"), Some(u64::from(media.port()))),
        "the server's media port: {heard}"
    );

    a.wait_room_hearing("A", &[b_id, c_id], ROOM_PATIENCE)
        .await?;
    b.wait_room_hearing("B", &[a_id, c_id], ROOM_PATIENCE)
        .await?;
    for (page, who) in [(&a, "A"), (&b, "B"), (&c, "C")] {
        page.wait_snapshot(&format!("{who}'s member list with live audio"), |s| {
            let others: Vec<u64> = [a_id, b_id, c_id]
                .into_iter()
                .filter(|id| Some(*id) != s["self"]["id"].as_u64())
                .collect();
            s["room"]["members"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
                && others
                    .iter()
                    .all(|id| member(s, *id).is_some_and(|m| m["audio"] == true))
        })
        .await?;
    }

    // A's camera arrives at B in simulcast: B's tile is small, so B gets a reduced layer
    // (the fake camera is 640 px wide).
    b.wait_snapshot("A's camera in B's tile", |s| {
        member(s, a_id).is_some_and(|m| m["video"] == true)
    })
    .await?;
    let width = b
        .wait_snapshot_of(
            "decoded frames of A's camera at B",
            &format!(
                "const v = document.querySelector('#room-tiles [data-member=\"{a_id}\"] video'); return v ? v.videoWidth : 0"
            ),
            |w| w.as_u64().is_some_and(|w| w > 0),
        )
        .await?;
    let tile = b
        .eval(&format!(
            "return document.querySelector('#room-tiles [data-member=\"{a_id}\"]').clientWidth"
        ))
        .await?;
    println!("A's camera at B: {width} px wide in a {tile} px tile");
    assert!(
        width.as_u64().is_some_and(|w| w < 640),
        "B gets the full layer ({width} px) for a {tile} px tile"
    );

    // Transport-wide congestion control both ways on every m-line, as both sides describe
    // it: the server's answer to B's own m-lines (B's uplink) and its offers of the
    // forwarded ones (B's downlink). And B's browser reports on what it receives: the
    // server fits B's video into an estimate made from that feedback.
    let sdp = b.room_descriptions().await?;
    for side in ["local", "remote"] {
        let text = sdp[side].as_str().unwrap_or_default();
        let sections: Vec<&str> = text.split("\r\nm=").skip(1).collect();
        assert!(
            sections.len() >= 4,
            "B's {side} description has too few m-lines: {text}"
        );
        for section in sections.iter().filter(|m| !m.starts_with("application")) {
            assert!(
                section.contains("/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
                "an m-line of B's {side} description without the transport-wide sequence number: {section}"
            );
            if section.starts_with("video") {
                assert!(
                    section.lines().any(|l| {
                        l.starts_with("a=rtcp-fb:") && l.trim_end().ends_with(" transport-cc")
                    }),
                    "a video m-line of B's {side} description without transport-cc feedback: {section}"
                );
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = quad_tests::http_get(server.addr(), "/metrics").await?;
        let estimated = quad_tests::metric(&page, "quad_sfu_estimated_allocations_total");
        if estimated.is_some_and(|n| n > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no browser's video was fitted into a bandwidth estimate: the browsers sent no transport-wide feedback"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // C joined after A's connection had been renegotiated (for B's and C's microphones),
    // which made the server lose A's camera layers until receiver reports stopped
    // acknowledging them: C gets A's camera as well.
    let a_camera_frames = tile_frames_script(a_id);
    c.wait_snapshot("A's camera in C's tile", |s| {
        member(s, a_id).is_some_and(|m| m["video"] == true)
    })
    .await?;
    c.wait_async_value("decoded frames of A's camera at C", &a_camera_frames, |n| {
        n.as_u64().is_some_and(|n| n > 0)
    })
    .await?;

    // A shares its screen; B and C show it large, with frames.
    a.click("#toggle-screen").await?;
    for (page, who) in [(&b, "B"), (&c, "C")] {
        page.wait_snapshot(&format!("A's screen at {who}"), |s| {
            s["room"]["screen"] == a_id
        })
        .await?;
        page.wait_snapshot_of(
            &format!("decoded screen frames at {who}"),
            "const v = document.querySelector('#room-screen video'); return v ? v.videoWidth : 0",
            |w| w.as_u64().is_some_and(|w| w > 0),
        )
        .await?;
    }

    // A's camera still plays at B after the screen share's renegotiation: ten more frames
    // decoded. Counted from the lowest count seen, as the count starts again at 0 if the
    // tile's video element is given a new stream meanwhile.
    let before = b.tile_frames(a_id).await?;
    let mut lowest = before;
    let after = b
        .wait_async_value(
            "A's camera frames at B rising after the screen share",
            &a_camera_frames,
            |n| {
                let n = n.as_u64().unwrap_or(0);
                lowest = lowest.min(n);
                n > lowest + 10
            },
        )
        .await?;
    println!(
        "A's camera at B after the screen share: {before} frames decoded, then {after} (lowest seen {lowest})"
    );

    // A walks out next to D: the room connection closes, a peer connection with D opens.
    // A sampler in A's page times the gap: from the last room audio A received to the first
    // audio from D. (In the page, because WebDriver runs one command at a time per page and
    // the walk holds it.)
    a.eval(&SAMPLER.replace("PEER", &d_id.to_string())).await?;
    a.hold_key(ARROW_DOWN, Duration::from_millis(900)).await?;
    a.wait_snapshot("A out of the room", |s| s["room"].is_null())
        .await?;
    a.wait_connected_to(d_id).await?;
    a.wait_audio_rising(d_id).await?;
    let times = a
        .wait_snapshot_of(
            "A's sampler to see the switch",
            "return window.__sampler",
            |t| !t["lastRoomAudio"].is_null() && !t["firstPeerAudio"].is_null(),
        )
        .await?;
    match (ms(&times, "lastRoomAudio"), ms(&times, "firstPeerAudio")) {
        (Some(last), Some(first)) => println!(
            "audio gap switching from the room to the hallway: {:.0} ms ({times})",
            first - last
        ),
        _ => anyhow::bail!("A's sampler missed the switch: {times}"),
    }
    a.wait_connected_to(d_id).await?;
    a.wait_audio_rising(d_id).await?;
    let room_pc = a
        .eval("return window.quad.roomPc() ? window.quad.roomPc().connectionState : null")
        .await?;
    assert!(
        room_pc.is_null() || room_pc == "closed",
        "A's room connection: {room_pc}"
    );
    b.wait_snapshot("A gone from B's room", |s| {
        s["room"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
            && member(s, a_id).is_none()
    })
    .await?;

    // B's room connection breaks (closed under it, as a crashed network stack would): the
    // server removes its media and asks it to connect again, and B's new room shows who is in
    // it and plays C again.
    b.eval("window.quad.roomPc().close(); return true").await?;
    b.wait_snapshot("B's member list after it reconnected", |s| {
        s["room"]["state"] == "connected"
            && s["room"]["members"]
                .as_array()
                .is_some_and(|m| m.len() == 2)
            && member(s, c_id).is_some_and(|m| m["audio"] == true)
    })
    .await?;
    b.wait_room_hearing("B after it reconnected", &[c_id], ROOM_PATIENCE)
        .await?;

    for page in [a, b, c, d] {
        page.close().await?;
    }
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(a_page_hears_newcomers_on_the_m_line_of_those_who_left);

async fn a_page_hears_newcomers_on_the_m_line_of_those_who_left(
    engine: Engine,
) -> anyhow::Result<()> {
    use quad_tests::room_bot::{RoomBot, RoomBotOptions, room_spot};
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let at = room_spot(&quad_tests::campus(), 0)?;
    let a = driver.browser().await?;
    let a_id = open(&a, &server, "Ada", at, false).await?;
    let mut transceivers = Vec::new();
    for i in 0..3 {
        let bot = RoomBot::join(server.addr(), RoomBotOptions::mic(&format!("n{i}"), at)).await?;
        let id = u64::from(bot.id.0);
        a.wait_room_hearing("Ada", &[id], ROOM_PATIENCE).await?;
        let snap = a
            .wait_snapshot("the newcomer heard on the page", |s| {
                member(s, id).is_some_and(|m| m["audio"] == true)
            })
            .await?;
        transceivers.push(snap["room"]["transceivers"].as_u64());
        bot.wait_receiving(&[quad_shared::AvatarId(a_id.try_into()?)], "mic", 20)
            .await?;
        bot.leave().await;
        a.wait_snapshot("the newcomer gone from the page's room", |s| {
            member(s, id).is_none()
        })
        .await?;
    }
    // The page's own three m-lines and one that each newcomer's microphone came on in turn
    // (three more, one per newcomer, if each had made its own).
    assert_eq!(transceivers, vec![Some(4); 3], "the m-line is reused");
    a.close().await?;
    server.stop().await;
    Ok(())
}

//! Proximity audio in two real browsers (fake microphones; a test in Chromium, one in
//! Firefox): A and B start apart
//! with no peer connection, B walks up to A, and B's `getStats()` shows audio bytes from A
//! rising over a candidate pair between the two browsers; B walks away and the peer
//! connection closes. Prints the time from the link forming to audio flowing.

use glam::Vec2;
use quad_tests::browser::{Driver, Engine, require_client_bundle};
use quad_tests::{TestServer, campus};
use serde_json::Value;
use std::time::Duration;

const ARROW_UP: char = '\u{e013}';
const ARROW_DOWN: char = '\u{e015}';

fn spot(offset: [f32; 2]) -> Vec2 {
    let map = campus();
    let p = map.spawn + Vec2::from_array(offset);
    assert!(
        map.collision.walkable(p),
        "test spot {p} is not walkable on the campus"
    );
    p
}

/// Polls every 10 ms until inbound audio bytes from PEER appear, then records when, next to
/// when the link formed, in `window.__quadAudio`.
const WATCH_AUDIO: &str = r#"
window.__quadAudio = null;
const timer = setInterval(async () => {
  const pc = window.quad.peerConnection(PEER);
  if (!pc) return;
  const peer = window.quad.snapshot().peers.find(p => p.id === PEER);
  const report = await pc.getStats();
  let bytes = 0;
  report.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'audio') bytes += s.bytesReceived || 0; });
  if (bytes > 0 && peer) { window.__quadAudio = {since: peer.since, audioAt: performance.now()}; clearInterval(timer); }
}, 10);
return true;
"#;

quad_tests::in_each_engine!(walking_up_brings_audio_and_walking_away_closes_it);

async fn walking_up_brings_audio_and_walking_away_closes_it(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    // A clear column of the courtyard, 560 px long (checked by `spot`).
    let (pa, pb) = (spot([-144.0, 0.0]), spot([-144.0, 300.0]));
    let a = driver.browser().await?;
    let b = driver.browser().await?;
    a.goto(&format!(
        "{}/?name=Alice&spawn={},{}",
        server.url(),
        pa.x,
        pa.y
    ))
    .await?;
    b.goto(&format!(
        "{}/?name=Bob&spawn={},{}",
        server.url(),
        pb.x,
        pb.y
    ))
    .await?;
    // The zone is known once the map has loaded; keys do nothing before that.
    let snap = a
        .wait_snapshot("A to join with a microphone and load the map", |s| {
            s["media"]["mic"] == true && s["self"]["zone"].is_string()
        })
        .await?;
    b.wait_snapshot("B to join with a microphone and load the map", |s| {
        s["media"]["mic"] == true && s["self"]["zone"].is_string()
    })
    .await?;
    let a_id = snap["self"]["id"].as_u64().unwrap_or_default();
    b.wait_snapshot("B to see A", |s| {
        s["avatars"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["id"] == a_id))
    })
    .await?;
    assert!(
        b.snapshot().await?["peers"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "linked from 300 px"
    );

    // Before walking, B's page starts watching for the first audio bytes from A.
    let watch = WATCH_AUDIO.replace("PEER", &a_id.to_string());
    let mut link_to_audio = Vec::new();
    for cycle in 0..3 {
        b.eval(&watch).await?;
        // B walks up about 190 px, well inside the connect radius.
        b.hold_key(ARROW_UP, Duration::from_millis(1200)).await?;
        b.wait_connected_to(a_id).await?;
        let measured = b
            .wait_snapshot_of(
                "the first audio from A",
                "return window.__quadAudio || null",
                |v| v["audioAt"].is_number(),
            )
            .await?;
        let ms = measured["audioAt"].as_f64().unwrap_or_default()
            - measured["since"].as_f64().unwrap_or_default();
        link_to_audio.push(ms);

        if cycle == 0 {
            let stats = b.wait_audio_rising(a_id).await?;
            // Browser to browser: our end is a host candidate, and the other is the other
            // browser itself (its host candidate, or learned from its check).
            assert_eq!(stats["local"]["type"], "host", "{stats}");
            assert!(quad_tests::browser::is_direct(&stats["remote"]), "{stats}");
            let remote = stats["remote"]["address"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                remote.starts_with("127.") || remote == "::1",
                "media left loopback: {stats}"
            );
        }

        // B walks back to 300 px, past the disconnect radius: the connection closes.
        b.hold_key(ARROW_DOWN, Duration::from_millis(1200)).await?;
        b.wait_snapshot("B's peer connection to close", |s| {
            s["peers"].as_array().is_some_and(Vec::is_empty)
        })
        .await?;
        assert_eq!(
            b.eval(&format!("return window.quad.peerConnection({a_id})"))
                .await?,
            Value::Null
        );
        a.wait_snapshot("A's side to close", |s| {
            s["peers"].as_array().is_some_and(Vec::is_empty)
        })
        .await?;
    }
    link_to_audio.sort_by(f64::total_cmp);
    println!(
        "link to first audio at B, ms (3 runs): {link_to_audio:?}; median {:.0}",
        link_to_audio[1]
    );

    a.close().await?;
    b.close().await?;
    server.stop().await;
    Ok(())
}

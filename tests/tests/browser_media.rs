//! Camera bubbles and shared mute state in two browsers (fake camera and microphone; a
//! test in Chromium, one in Firefox): A joins with a camera next to B, and B sees A's camera in a bubble; A mutes
//! with the M key and turns the camera off with its button, and B's page shows both; B,
//! who joined without a camera, turns one on, and it reaches A over a renegotiation; A
//! shares a (fake) screen that B shows large until A stops. And an offer that arrives
//! while the answer before it is still being applied is answered, not lost.

use quad_tests::TestServer;
use quad_tests::browser::{Driver, Engine, require_client_bundle};
use serde_json::Value;

fn peer(snapshot: &Value, id: u64) -> Option<&Value> {
    snapshot["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == id && p["state"] == "connected")
}

quad_tests::in_each_engine!(camera_bubbles_and_mute_state_reach_the_peer);

async fn camera_bubbles_and_mute_state_reach_the_peer(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let spawn = quad_tests::campus().spawn;
    let (a, b) = (driver.browser().await?, driver.browser().await?);
    a.goto(&format!(
        "{}/?name=Alice&camera=1&fakescreen=1&spawn={},{}",
        server.url(),
        spawn.x - 144.0,
        spawn.y
    ))
    .await?;
    let a_id = a
        .wait_snapshot("A to join with microphone and camera", |s| {
            s["self"]["id"].is_u64() && s["media"]["mic"] == true && s["media"]["camera"] == true
        })
        .await?["self"]["id"]
        .as_u64()
        .unwrap_or_default();
    b.goto(&format!(
        "{}/?name=Bob&camera=0&spawn={},{}",
        server.url(),
        spawn.x - 144.0,
        spawn.y + 80.0
    ))
    .await?;
    let b_id = b
        .wait_snapshot("B to join with a microphone only", |s| {
            s["self"]["id"].is_u64() && s["media"]["mic"] == true && s["media"]["camera"] == false
        })
        .await?["self"]["id"]
        .as_u64()
        .unwrap_or_default();

    // A's camera shows in a bubble on B's page, with decoded frames.
    b.wait_snapshot("A's camera bubble at B", |s| {
        peer(s, a_id).is_some_and(|p| p["camera"] == true && p["video"] == true && p["mic"] == true)
    })
    .await?;

    // M mutes A; B's page learns it from the server.
    a.hold_key('m', std::time::Duration::from_millis(50))
        .await?;
    a.wait_snapshot("A muted", |s| s["media"]["mic"] == false)
        .await?;
    b.wait_snapshot("A shown muted at B", |s| {
        peer(s, a_id).is_some_and(|p| p["mic"] == false)
    })
    .await?;

    // A's camera button turns it off; B's bubble hides.
    a.click("#toggle-camera").await?;
    a.wait_snapshot("A's camera off", |s| s["media"]["camera"] == false)
        .await?;
    b.wait_snapshot("A's bubble hidden at B", |s| {
        peer(s, a_id).is_some_and(|p| p["camera"] == false && p["video"] == false)
    })
    .await?;

    // B had no camera: turning it on adds a track to the connection, and A sees it.
    b.click("#toggle-camera").await?;
    b.wait_snapshot("B's camera on", |s| s["media"]["camera"] == true)
        .await?;
    let started = std::time::Instant::now();
    let shown = a
        .wait_snapshot("B's camera bubble at A", |s| {
            peer(s, b_id).is_some_and(|p| p["camera"] == true && p["video"] == true)
        })
        .await;
    if let Err(e) = shown {
        anyhow::bail!("{e}\nA's connection to B: {}", a.describe_peer(b_id).await);
    }
    println!("B's camera on to its bubble at A: {:?}", started.elapsed());

    // A shares its (fake) screen in the hallway: B shows it large, with frames, and it
    // goes away when A stops.
    a.click("#toggle-screen").await?;
    a.wait_snapshot("A sharing", |s| s["media"]["screen"] == true)
        .await?;
    b.wait_snapshot("A's screen at B", |s| {
        peer(s, a_id).is_some_and(|p| p["screen"] == true)
    })
    .await?;
    b.wait_snapshot_of(
        "decoded frames of A's screen at B",
        "const f = document.querySelector('#hallway-screen'); const v = f && f.querySelector('video'); return f && !f.hidden && v ? v.videoWidth : 0",
        |w| w.as_u64().is_some_and(|w| w > 0),
    )
    .await?;
    a.click("#toggle-screen").await?;
    b.wait_snapshot_of(
        "A's screen gone at B",
        "const f = document.querySelector('#hallway-screen'); return !f || f.hidden",
        |hidden| hidden == true,
    )
    .await?;

    a.close().await?;
    b.close().await?;
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(an_offer_right_behind_an_answer_is_answered);

/// Makes the page's `setRemoteDescription` of an answer take 1.5 s longer, as on a loaded
/// machine: whatever the peer sends meanwhile arrives while the answer is still being
/// applied.
const SLOW_ANSWERS: &str = r#"
const apply = RTCPeerConnection.prototype.setRemoteDescription;
RTCPeerConnection.prototype.setRemoteDescription = function (desc) {
  const args = arguments;
  if (desc && desc.type === "answer")
    return new Promise(r => setTimeout(r, 1500)).then(() => apply.apply(this, args));
  return apply.apply(this, args);
};
"#;

/// D (the impolite side: it joined first) offers its microphone; E answers and at once
/// offers its camera, a second offer that reaches D while D is still applying E's answer.
/// D handles E's signals in order, so the second offer meets a stable connection and is
/// answered, not ignored as a collision: E's connection settles and D sees E's camera.
async fn an_offer_right_behind_an_answer_is_answered(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let spawn = quad_tests::campus().spawn;
    let (d, e) = (driver.browser().await?, driver.browser().await?);
    d.goto(&format!(
        "{}/?name=Dee&camera=0&spawn={},{}",
        server.url(),
        spawn.x - 144.0,
        spawn.y
    ))
    .await?;
    let d_id = d.wait_joined_with_mic("D").await?;
    d.eval(SLOW_ANSWERS).await?;
    e.goto(&format!(
        "{}/?name=Eve&camera=1&spawn={},{}",
        server.url(),
        spawn.x - 144.0,
        spawn.y + 80.0
    ))
    .await?;
    let e_id = e.wait_joined_with_mic("E").await?;
    assert!(d_id < e_id, "D must be the impolite side (the lower id)");

    let shown = d
        .wait_snapshot("E's camera bubble at D", |s| {
            peer(s, e_id).is_some_and(|p| p["camera"] == true && p["video"] == true)
        })
        .await;
    if let Err(err) = shown {
        anyhow::bail!(
            "{err}\nE's connection to D: {}\nD's connection to E: {}",
            e.describe_peer(d_id).await,
            d.describe_peer(e_id).await
        );
    }
    let settled = e
        .wait_async_value(
            "E's connection to D stable, with every transceiver negotiated",
            "const done = arguments[arguments.length - 1]; \
             const pc = window.quad.peerConnection(PEER); \
             done(pc.signalingState === 'stable' \
                  && pc.getTransceivers().every(t => t.currentDirection !== null));"
                .replace("PEER", &d_id.to_string())
                .as_str(),
            |v| v == true,
        )
        .await;
    if let Err(err) = settled {
        anyhow::bail!(
            "{err}\nE's connection to D: {}",
            e.describe_peer(d_id).await
        );
    }

    d.close().await?;
    e.close().await?;
    server.stop().await;
    Ok(())
}

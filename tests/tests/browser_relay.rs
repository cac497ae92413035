//! Proximity audio forced through the embedded TURN server: two browsers open the page with
//! `?relay=1` (a dev server then sets `iceTransportPolicy: "relay"`), stand next to each
//! other, and audio flows over a selected candidate pair whose local side is a relay
//! candidate allocated on the embedded server. A server without `--dev` ignores the option.

use quad_tests::TestServer;
use quad_tests::browser::{Driver, require_client_bundle};
use std::time::Duration;

#[tokio::test]
async fn relay_only_audio_goes_through_the_embedded_turn_server() -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let turn = server
        .server
        .turn_addr()
        .ok_or_else(|| anyhow::anyhow!("the test server runs no embedded TURN"))?;
    let driver = Driver::start().await?;
    let spawn = quad_tests::campus().spawn;
    let (a, b) = (driver.browser().await?, driver.browser().await?);
    for (page, name, dy) in [(&a, "Alice", 0.0), (&b, "Bob", 60.0)] {
        page.goto(&format!(
            "{}/?name={name}&relay=1&spawn={},{}",
            server.url(),
            spawn.x - 144.0,
            spawn.y + dy
        ))
        .await?;
    }
    let a_id = a
        .wait_snapshot("A to join with a microphone", |s| {
            s["self"]["id"].is_u64() && s["media"]["mic"] == true
        })
        .await?["self"]["id"]
        .as_u64()
        .unwrap_or_default();
    let linked = b
        .wait_snapshot("B's relayed connection with A", |s| {
            s["peers"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|p| p["id"] == a_id && p["state"] == "connected")
            })
        })
        .await;
    if let Err(e) = linked {
        anyhow::bail!("{e}\nB's connection to A: {}", b.describe_peer(a_id).await);
    }

    let before = b.inbound_audio(a_id).await?["bytes"]
        .as_f64()
        .unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = b.inbound_audio(a_id).await?;
    assert!(
        stats["bytes"].as_f64().unwrap_or(0.0) > before,
        "audio from A is not rising at B: {stats}"
    );
    for side in ["local", "remote"] {
        assert_eq!(stats[side]["type"], "relay", "{side}: {stats}");
        assert_eq!(stats[side]["address"], turn.ip().to_string(), "{stats}");
    }
    // The local relay candidate was allocated through the embedded server's port.
    let url = stats["local"]["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with("turn:") && url.contains(&format!(":{}", turn.port())),
        "relay candidate not from the embedded TURN server on {turn}: {stats}"
    );
    println!("relayed pair: {stats}");
    a.close().await?;
    b.close().await?;
    server.stop().await;

    // Without --dev the option is ignored: the same two pages connect directly.
    let server = TestServer::start_with(|c| c.dev = false).await?;
    let (a, b) = (driver.browser().await?, driver.browser().await?);
    for (page, name) in [(&a, "Alice"), (&b, "Bob")] {
        page.goto(&format!("{}/?name={name}&relay=1", server.url()))
            .await?;
    }
    let a_id = a
        .wait_snapshot("A to join with a microphone", |s| {
            s["self"]["id"].is_u64() && s["media"]["mic"] == true
        })
        .await?["self"]["id"]
        .as_u64()
        .unwrap_or_default();
    b.wait_snapshot("B's connection with A", |s| {
        s["peers"].as_array().is_some_and(|v| {
            v.iter()
                .any(|p| p["id"] == a_id && p["state"] == "connected")
        })
    })
    .await?;
    let stats = b.inbound_audio(a_id).await?;
    assert_eq!(
        stats["local"]["type"], "host",
        "relay forced without --dev: {stats}"
    );
    a.close().await?;
    b.close().await?;
    server.stop().await;
    Ok(())
}

//! Proximity audio forced through the embedded TURN server (a test in Chromium, one in
//! Firefox): two browsers open the page with
//! `?relay=1` (a dev server then sets `iceTransportPolicy: "relay"`), stand next to each
//! other, and audio flows over a selected candidate pair whose local side is a relay
//! candidate allocated on the embedded server. A server without `--dev` ignores the option.

use quad_tests::TestServer;
use quad_tests::browser::{Driver, Engine, require_client_bundle};

quad_tests::in_each_engine!(relay_only_audio_goes_through_the_embedded_turn_server);

async fn relay_only_audio_goes_through_the_embedded_turn_server(
    engine: Engine,
) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let turn = server
        .server
        .turn_addr()
        .ok_or_else(|| anyhow::anyhow!("the test server runs no embedded TURN"))?;
    let driver = Driver::start_engine(engine).await?;
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
    let a_id = a.wait_joined_with_mic("A").await?;
    b.wait_connected_to(a_id).await?;
    let stats = b.wait_audio_rising(a_id).await?;
    for side in ["local", "remote"] {
        assert_eq!(stats[side]["type"], "relay", "{side}: {stats}");
        assert_eq!(stats[side]["address"], turn.ip().to_string(), "{stats}");
    }
    // The local relay candidate was allocated through the embedded server's port.
    // Firefox's candidate statistics name no URL; its relay address, checked above, is the
    // embedded server's, the one TURN server in the test's namespace.
    match stats["local"]["url"].as_str() {
        Some(url) => assert!(
            url.starts_with("turn:") && url.contains(&format!(":{}", turn.port())),
            "relay candidate not from the embedded TURN server on {turn}: {stats}"
        ),
        None => assert_eq!(engine, Engine::Firefox, "no URL: {stats}"),
    }
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
    let a_id = a.wait_joined_with_mic("A").await?;
    b.wait_connected_to(a_id).await?;
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

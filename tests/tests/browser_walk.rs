//! In two real browsers (Chromium, then Firefox: a test each): both join, A holds an arrow key, and B's page shows A moved. Also
//! checks the page's people list, HUD zone and `window.quad.zones()`.

use quad_tests::browser::{Driver, Engine, require_client_bundle};
use quad_tests::{TestServer, campus};
use serde_json::Value;
use std::time::Duration;

/// WebDriver's key value for ArrowDown.
const ARROW_DOWN: char = '\u{e015}';

fn avatar_named<'a>(snap: &'a Value, name: &str) -> Option<&'a Value> {
    snap["avatars"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
}

quad_tests::in_each_engine!(b_sees_a_walk);

async fn b_sees_a_walk(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let spawn = campus().spawn;
    let a = driver.browser().await?;
    let b = driver.browser().await?;
    a.goto(&format!(
        "{}/?name=Alice&spawn={},{}",
        server.url(),
        spawn.x,
        spawn.y
    ))
    .await?;
    b.goto(&format!(
        "{}/?name=Bob&spawn={},{}",
        server.url(),
        spawn.x + 64.0,
        spawn.y
    ))
    .await?;

    let a_self = a
        // The zone is known once the map has loaded; keys do nothing before that.
        .wait_snapshot("A to join and load the map", |s| {
            s["self"]["zone"].is_string()
        })
        .await?;
    let a_start_y = a_self["self"]["y"].as_f64().unwrap_or_default();
    assert_eq!(a_self["self"]["zone"], "Courtyard");
    let seen = b
        .wait_snapshot("B to see Alice", |s| avatar_named(s, "Alice").is_some())
        .await?;
    let before = avatar_named(&seen, "Alice")
        .map(|a| a["y"].as_f64().unwrap_or_default())
        .unwrap_or_default();
    assert!(
        (before - a_start_y).abs() < 1.0,
        "B sees Alice where she stands"
    );

    let zones = a.eval("return window.quad.zones()").await?;
    let names: Vec<&str> = zones
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|z| z["name"].as_str())
        .collect();
    assert!(
        names.contains(&"Lecture Hall") && names.contains(&"Classroom A"),
        "zones: {zones}"
    );

    a.hold_key(ARROW_DOWN, Duration::from_millis(1200)).await?;
    let after = b
        .wait_snapshot("B to see Alice move down", |s| {
            avatar_named(s, "Alice")
                .and_then(|a| a["y"].as_f64())
                .is_some_and(|y| y > before + 60.0)
        })
        .await?;
    let a_now = a.snapshot().await?;
    let a_y = a_now["self"]["y"].as_f64().unwrap_or_default();
    let b_view = avatar_named(&after, "Alice")
        .and_then(|a| a["y"].as_f64())
        .unwrap_or_default();
    assert!(a_y > a_start_y + 60.0, "A's own view moved: {a_now}");
    b.wait_snapshot("B to catch up with A", |s| {
        avatar_named(s, "Alice")
            .and_then(|a| a["y"].as_f64())
            .is_some_and(|y| (y - a_y).abs() < 1.0)
    })
    .await?;
    assert!(b_view > before);

    // The people list is real DOM.
    let people = b
        .eval("return [...document.querySelectorAll('#people-list li')].map(li => li.textContent)")
        .await?;
    let people: Vec<&str> = people
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    // Each name with its role, as the server announced it: both are guests here.
    assert!(people.contains(&"AliceGuest"), "{people:?}");
    assert!(people.contains(&"Bob (you)Guest"), "{people:?}");
    let hud = a
        .eval("return document.getElementById('hud-zone').textContent")
        .await?;
    assert!(
        hud.as_str().is_some_and(|z| !z.is_empty()),
        "HUD zone: {hud}"
    );

    a.close().await?;
    b.close().await?;
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(a_first_visit_is_light_and_a_second_comes_from_the_cache);

/// What the page has loaded so far, from the Resource Timing API: the page itself and each
/// resource with its bytes on the wire (`transferSize`: headers and body; 0 from the
/// cache), as sent (`encodedBodySize`) and decoded.
const LOADED: &str = r#"
const entry = e => ({ name: e.name, transfer: e.transferSize, encoded: e.encodedBodySize,
                      decoded: e.decodedBodySize });
return { page: entry(performance.getEntriesByType("navigation")[0]),
         resources: performance.getEntriesByType("resource").map(entry) };
"#;

/// Bytes on the wire of a load: the page and every resource.
fn wire_bytes(loaded: &Value) -> u64 {
    let size = |e: &Value| e["transfer"].as_u64().unwrap_or(0);
    size(&loaded["page"])
        + loaded["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(size)
            .sum::<u64>()
}

fn wasm_entry(loaded: &Value) -> Option<&Value> {
    loaded["resources"].as_array()?.iter().find(|e| {
        e["name"]
            .as_str()
            .is_some_and(|n| n.contains("/pkg/quad_client_bg.") && n.ends_with(".wasm"))
    })
}

/// A new visitor's first load, measured in the browser: at most 450 kB on the wire in all
/// (page, scripts, styles, the wasm, the map and its images), the wasm compressed in
/// transit and under 1.2 MB decoded. (The target is 1 MB: 0.92 MB before class records,
/// whose messages' decoders and panel added 0.15 MB, 18 kB as brotli; to be won back.) The visitor's next visit takes the wasm from its cache
/// without asking (a hashed name, cached for a year).
async fn a_first_visit_is_light_and_a_second_comes_from_the_cache(
    engine: Engine,
) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let a = driver.browser().await?;
    let url = format!("{}/?name=Ava", server.url());
    a.goto(&url).await?;
    a.wait_snapshot("A to join", |s| s["self"]["id"].is_u64())
        .await?;
    let first = a.eval(LOADED).await?;
    let wasm = wasm_entry(&first).ok_or_else(|| anyhow::anyhow!("no wasm loaded: {first}"))?;
    let (encoded, decoded) = (
        wasm["encoded"].as_u64().unwrap_or(0),
        wasm["decoded"].as_u64().unwrap_or(0),
    );
    let total = wire_bytes(&first);
    println!(
        "first visit: {total} bytes on the wire; the wasm {decoded} bytes, {encoded} in transit"
    );
    for e in first["resources"].as_array().into_iter().flatten() {
        println!(
            "  {} {} B (decoded {} B)",
            e["name"], e["transfer"], e["decoded"]
        );
    }
    assert!(
        decoded > 0 && decoded < 1_200_000,
        "the wasm: {decoded} bytes"
    );
    assert!(encoded < decoded / 2, "the wasm was not compressed: {wasm}");
    assert!(
        total <= 450_000,
        "first visit: {total} bytes on the wire\n{first}"
    );

    a.goto("about:blank").await?;
    a.goto(&url).await?;
    a.wait_snapshot("A to join again", |s| s["self"]["id"].is_u64())
        .await?;
    let second = a.eval(LOADED).await?;
    let wasm = wasm_entry(&second).ok_or_else(|| anyhow::anyhow!("no wasm loaded: {second}"))?;
    println!(
        "second visit: {} bytes on the wire; the wasm {} ",
        wire_bytes(&second),
        wasm["transfer"]
    );
    assert_eq!(
        wasm["transfer"], 0,
        "the wasm came over the wire again: {wasm}"
    );
    a.close().await?;
    server.stop().await;
    Ok(())
}

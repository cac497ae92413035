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

//! Phones and tablets, in Chromium's mobile emulation (a touch screen of the size given):
//! the page's audio waits for the first tap and starts with it; a finger held on the map
//! walks the avatar toward it; the chat and the people list open
//! as drawers and the chat sends; and at 390×844 and 768×1024, upright and on their side,
//! with a teacher in a classroom, no control covers another, none is off screen, and the
//! teacher's tools can be reached. Screenshots of each size are saved in
//! `target/test-artifacts/` (`phone-…`, `layout-…`) to look at.

use anyhow::{Context, bail};
use quad_shared::protocol::Role;
use quad_tests::browser::{Driver, Engine, require_client_bundle};
use quad_tests::room_bot::room_spot;
use quad_tests::{Bot, TestServer, campus};
use serde_json::Value;
use std::time::Duration;

/// What must never overlap or leave the screen: the HUD, the drawer buttons, the media
/// buttons, and the panels that float over the map.
const CONTROLS: [&str; 6] = [
    "#hud",
    "#drawer-buttons button",
    "#controls button",
    "#room",
    "#people",
    "#chat",
];

fn check_layout(layout: &Value, what: &str) -> anyhow::Result<()> {
    let list = |key: &str| {
        layout[key]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let (overlaps, outside) = (list("overlaps"), list("outside"));
    if !overlaps.is_empty() || !outside.is_empty() {
        bail!("{what}: overlapping {overlaps:?}, off screen {outside:?}\n{layout}");
    }
    if layout["rects"].as_array().is_none_or(|r| r.len() < 3) {
        bail!("{what}: the controls are not on the page\n{layout}");
    }
    Ok(())
}

/// Whether the element matching `selector` is shown (not `display: none`).
async fn shown(page: &quad_tests::browser::Browser, selector: &str) -> anyhow::Result<bool> {
    let v = page
        .eval(&format!(
            "const e = document.querySelector('{selector}'); return !!e && getComputedStyle(e).display !== 'none'"
        ))
        .await?;
    Ok(v == true)
}

#[tokio::test]
async fn a_phone_walks_by_touch_and_chats_from_a_drawer() -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(Engine::Chromium).await?;
    let phone = driver.touch_browser(390, 844).await?;
    let spawn = campus().spawn;
    // Someone near the spawn: linked with the phone, whose page then makes its audio.
    let mut bot = Bot::join(server.addr(), "Bo", Some([spawn.x - 40.0, spawn.y])).await?;
    phone
        .goto(&format!(
            "{}/?name=Tia&mic=0&spawn={},{}",
            server.url(),
            spawn.x,
            spawn.y
        ))
        .await?;
    let snap = phone
        .wait_snapshot("the phone to join and draw", |s| {
            s["self"]["id"].is_u64() && s["view_origin"].is_array()
        })
        .await?;
    let viewport = phone
        .eval("return [innerWidth, innerHeight, 'ontouchstart' in window]")
        .await?;
    assert_eq!(viewport, serde_json::json!([390, 844, true]));
    check_layout(&phone.layout(&CONTROLS).await?, "the phone's campus")?;
    // Its audio waits for a gesture, as a phone's does. (The phone shares no microphone: a
    // page that captures one may play audio without a gesture.)
    phone
        .wait_snapshot("the phone linked with the bot", |s| {
            s["peers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["id"] == bot.id.0))
        })
        .await?;
    assert_eq!(
        phone.eval("return window.quad.audioState()").await?,
        "suspended",
        "the phone's audio ran before a tap"
    );
    println!(
        "{}",
        phone
            .save_screenshot("phone-390x844-campus")
            .await?
            .display()
    );

    // A finger held 150 px from the avatar, toward open ground, walks it there.
    let at = |s: &Value| {
        glam::Vec2::new(
            s["self"]["x"].as_f64().unwrap_or(0.0) as f32,
            s["self"]["y"].as_f64().unwrap_or(0.0) as f32,
        )
    };
    let origin = glam::Vec2::new(
        snap["view_origin"][0].as_f64().unwrap_or(0.0) as f32,
        snap["view_origin"][1].as_f64().unwrap_or(0.0) as f32,
    );
    let start = at(&snap);
    let map = campus();
    let toward = [
        glam::Vec2::Y,
        glam::Vec2::NEG_Y,
        glam::Vec2::X,
        glam::Vec2::NEG_X,
    ]
    .into_iter()
    .find(|d| (1..=5).all(|i| map.collision.walkable(start + *d * (i as f32 * 30.0))))
    .context("no open ground next to the spawn")?;
    let finger = start - origin + toward * 150.0;
    phone
        .touch_hold(
            f64::from(finger.x),
            f64::from(finger.y),
            Duration::from_millis(1500),
        )
        .await?;
    // The touch started the audio.
    phone
        .wait_snapshot_of(
            "the phone's audio running after the touch",
            "return window.quad.audioState()",
            |s| s == "running",
        )
        .await?;
    let moved = phone
        .wait_snapshot("the avatar to walk toward the finger", |s| {
            (at(s) - start).dot(toward) > 40.0
        })
        .await?;
    let walked = at(&moved) - start;
    println!("a 1.5 s touch walked the avatar {walked:?} toward {toward:?}");
    assert!(
        walked.dot(toward) > 4.0 * walked.perp_dot(toward).abs(),
        "the walk strayed from the finger's direction: {walked:?}"
    );
    // Lifted, it stops: the position holds over five polls in a row (one walking keeps
    // moving, and the wait times out).
    let mut last = at(&moved);
    let mut held = 0;
    phone
        .wait_snapshot("the avatar to stop once the finger lifted", |s| {
            let now = at(s);
            held = if (now - last).length() < 0.5 {
                held + 1
            } else {
                0
            };
            last = now;
            held >= 5
        })
        .await?;

    // The chat is a drawer: closed, then open over the map without covering a control, and
    // it sends.
    assert!(
        !shown(&phone, "#chat").await?,
        "the chat shows before it is opened"
    );
    phone.click("#open-chat").await?;
    assert!(
        shown(&phone, "#chat").await?,
        "the chat drawer did not open"
    );
    assert_eq!(
        phone
            .eval("return document.getElementById('open-chat').getAttribute('aria-expanded')")
            .await?,
        "true"
    );
    check_layout(&phone.layout(&CONTROLS).await?, "the phone's open chat")?;
    let input = phone
        .client
        .find(fantoccini::Locator::Css("#chat-input"))
        .await?;
    input.send_keys("hello from a phone").await?;
    phone.click("#chat-send").await?;
    phone
        .wait_snapshot("the line in the chat", |s| {
            s["chat"]
                .as_array()
                .is_some_and(|c| c.iter().any(|l| l["text"] == "hello from a phone"))
        })
        .await?;
    println!(
        "{}",
        phone.save_screenshot("phone-390x844-chat").await?.display()
    );
    // The people drawer replaces it.
    phone.click("#open-people").await?;
    assert!(shown(&phone, "#people").await? && !shown(&phone, "#chat").await?);
    check_layout(&phone.layout(&CONTROLS).await?, "the phone's people list")?;
    phone.close().await?;
    bot.close().await;
    server.stop().await;
    Ok(())
}

/// The teacher's toolbar buttons, each scrolled into view in turn: where it lands, and
/// whether anything else is on top of its centre there.
const TOOLS_REACHABLE: &str = r##"
const out = [];
for (const b of document.querySelectorAll("#class-controls button")) {
  if (b.hidden) continue;
  b.scrollIntoView({ block: "nearest" });
  const r = b.getBoundingClientRect();
  const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  out.push({ name: b.id, inView: r.top >= 0 && r.bottom <= innerHeight && r.left >= 0
    && r.right <= innerWidth, onTop: top === b || b.contains(top) });
}
return out;
"##;

#[tokio::test]
async fn the_layout_fits_phones_and_tablets_either_way_up() -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(Engine::Chromium).await?;
    let spot = room_spot(&campus(), 0)?;
    let mut student = Bot::join(server.addr(), "Bo", Some(spot)).await?;
    for (width, height) in [(390, 844), (844, 390), (768, 1024), (1024, 768)] {
        let page = driver.touch_browser(width, height).await?;
        page.goto(&format!(
            "{}/?token={}&spawn={},{}",
            server.url(),
            server.token("Ms Ada", Role::Teacher)?,
            spot[0],
            spot[1]
        ))
        .await?;
        page.wait_snapshot("the teacher in the class with a student", |s| {
            s["class"]["teachers"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
                && s["room"]["members"]
                    .as_array()
                    .is_some_and(|m| m.len() == 2)
        })
        .await?;
        // The room panel and the toolbar are drawn on the next frame.
        page.wait_snapshot_of(
            "the teacher's toolbar",
            "const c = document.getElementById('class-controls'); return !!c && !c.hidden && c.getBoundingClientRect().height > 0",
            |v| v == true,
        )
        .await?;
        let what = format!("{width}×{height}");
        check_layout(&page.layout(&CONTROLS).await?, &what)?;
        // The tiles, the teacher's buttons on the student's tile, and the names and
        // marks under them: none over another.
        let tiles = page
            .layout(&[
                "#room-tiles .tile",
                ".tile-tools button",
                ".tile figcaption > *",
            ])
            .await?;
        let count = |prefix: &str| {
            tiles["rects"].as_array().map_or(0, |r| {
                r.iter()
                    .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                    .count()
            })
        };
        assert!(
            tiles["overlaps"].as_array().is_some_and(|o| o.is_empty())
                && tiles["outside"].as_array().is_some_and(|o| o.is_empty())
                && count("figure") == 2
                && count("button") >= 2,
            "{what}: the tiles {tiles}"
        );
        let tools = page.eval(TOOLS_REACHABLE).await?;
        let tools = tools.as_array().context("no toolbar")?;
        assert!(tools.len() >= 5, "{what}: {tools:?}");
        for tool in tools {
            assert!(
                tool["inView"] == true && tool["onTop"] == true,
                "{what}: the teacher cannot reach {tool}"
            );
        }
        let shot = page
            .save_screenshot(&format!("layout-{width}x{height}-classroom"))
            .await?;
        println!(
            "{what}: no overlaps, the toolbar in reach; {}",
            shot.display()
        );
        page.close().await?;
    }
    student.close().await;
    server.stop().await;
    Ok(())
}

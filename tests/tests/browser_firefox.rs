//! Firefox beside Chromium (fake devices in both): a Firefox page walks, and hears and is
//! heard by a Chromium page in the hallway, browser to browser; then the two, in a
//! classroom, hear each other and see each other's camera through the server.
//!
//! Each failure names the engine it happened in.
//!
//! Run in a loopback-only network namespace, as CI does (the Firefox driver gives it the
//! default route Firefox needs):
//! `QUAD_CLIENT_DIR=$PWD/target/web/pkg unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh cargo test -p quad-tests --test browser_firefox -- --nocapture`

use quad_tests::TestServer;
use quad_tests::browser::{Browser, Driver, Engine, require_client_bundle};
use serde_json::Value;
use std::time::Duration;

/// WebDriver's key value for ArrowDown.
const ARROW_DOWN: char = '\u{e015}';

/// One page of the test: its browser and who it is.
struct Page {
    browser: Browser,
    name: &'static str,
    id: u64,
}

impl Page {
    async fn open(
        driver: &Driver,
        server: &TestServer,
        name: &'static str,
        at: [f32; 2],
        camera: bool,
    ) -> anyhow::Result<Page> {
        let browser = driver.browser().await?;
        browser
            .goto(&format!(
                "{}/?name={name}&camera={}&spawn={},{}",
                server.url(),
                u8::from(camera),
                at[0],
                at[1]
            ))
            .await?;
        let id = browser
            .wait_joined_with_mic(name)
            .await
            .map_err(|e| e.context(format!("in {}", browser.engine().name())))?;
        Ok(Page { browser, name, id })
    }

    fn who(&self) -> String {
        format!("{} ({})", self.name, self.browser.engine().name())
    }
}

/// Waits until `page`'s room tile of `from` plays its camera (decoded frames of a known
/// size); their width. Not `getVideoPlaybackQuality()`: headless Firefox counts no frames
/// there, as it paints none.
async fn wait_camera(page: &Page, from: &Page) -> anyhow::Result<u64> {
    let width = format!(
        "const v = document.querySelector('#room-tiles [data-member=\"{}\"] video'); \
         return v && v.readyState >= 2 ? v.videoWidth : 0",
        from.id
    );
    let seen = page
        .browser
        .wait_snapshot_of(
            &format!("{}'s camera decoded at {}", from.who(), page.who()),
            &width,
            |w| w.as_u64().is_some_and(|w| w > 0),
        )
        .await;
    match seen {
        Ok(seen) => Ok(seen.as_u64().unwrap_or_default()),
        Err(e) => {
            let tile = page
                .browser
                .eval(&format!(
                    "const v = document.querySelector('#room-tiles [data-member=\"{}\"] video'); \
                     if (!v) return null; const s = v.srcObject; \
                     return {{paused: v.paused, readyState: v.readyState, \
                       tracks: s ? s.getTracks().map(t => `${{t.kind}} muted=${{t.muted}} ${{t.readyState}}`) : null}}",
                    from.id
                ))
                .await?;
            let video = page
                .browser
                .eval_async(
                    "const done = arguments[arguments.length - 1]; \
                     window.quad.roomPc().getStats().then(r => { const out = []; \
                     r.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') out.push(s); }); done(out); })",
                )
                .await?;
            anyhow::bail!("{e}\ntile: {tile}\ninbound video: {video}")
        }
    }
}

#[tokio::test]
async fn firefox_walks_and_hears_chromium_in_the_hallway_both_ways() -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let chromium = Driver::start_engine(Engine::Chromium).await?;
    let firefox = Driver::start_engine(Engine::Firefox).await?;
    let spawn = quad_tests::campus().spawn;
    let a = Page::open(&chromium, &server, "Alice", [spawn.x, spawn.y], false).await?;
    let b = Page::open(&firefox, &server, "Bob", [spawn.x + 64.0, spawn.y], false).await?;

    // Bob walks a little (a key held in Firefox), and Alice's page sees it.
    let bob_at = |s: &Value| {
        s["avatars"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["id"] == b.id))
            .and_then(|x| x["y"].as_f64())
    };
    let before = a
        .browser
        .wait_snapshot("Alice to see Bob", |s| bob_at(s).is_some())
        .await?;
    let start_y = bob_at(&before).unwrap_or_default();
    b.browser
        .wait_snapshot("Bob's page to load the map", |s| {
            s["self"]["zone"].is_string()
        })
        .await?;
    b.browser
        .hold_key(ARROW_DOWN, Duration::from_millis(400))
        .await?;
    a.browser
        .wait_snapshot("Alice to see Bob (Firefox) walk down", |s| {
            bob_at(s).is_some_and(|y| y > start_y + 20.0)
        })
        .await?;

    // Within the connect radius: a peer connection between the engines, audio both ways.
    for (page, other) in [(&a, &b), (&b, &a)] {
        if let Err(e) = page.browser.wait_connected_to(other.id).await {
            anyhow::bail!(
                "at {}: {e:#}\nat {}: {}",
                page.who(),
                other.who(),
                other.browser.describe_peer(page.id).await
            );
        }
        let stats = page
            .browser
            .wait_audio_rising(other.id)
            .await
            .map_err(|e| e.context(format!("at {}", page.who())))?;
        println!(
            "{} hears {} in the hallway over {} -> {}",
            page.who(),
            other.who(),
            stats["remote"],
            stats["local"]
        );
        assert!(
            quad_tests::browser::is_direct(&stats["remote"]),
            "browser to browser at {}: {stats}",
            page.who()
        );
    }
    a.browser.close().await?;
    b.browser.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn chromium_and_firefox_hear_and_see_each_other_in_a_classroom() -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let chromium = Driver::start_engine(Engine::Chromium).await?;
    let firefox = Driver::start_engine(Engine::Firefox).await?;
    // Inside Classroom A (x 32-416, y 32-320), apart from each other.
    let a = Page::open(
        &chromium,
        &server,
        "Ada",
        quad_tests::walkable([224.0, 280.0]),
        true,
    )
    .await?;
    let b = Page::open(
        &firefox,
        &server,
        "Ben",
        quad_tests::walkable([120.0, 176.0]),
        true,
    )
    .await?;
    for page in [&a, &b] {
        let connected = page
            .browser
            .wait_snapshot(&format!("{}'s room connection", page.who()), |s| {
                s["room"]["state"] == "connected"
            })
            .await;
        if let Err(e) = connected {
            anyhow::bail!(
                "{e}\nthe connection: {}",
                page.browser.describe_room().await
            );
        }
    }
    for (page, other) in [(&a, &b), (&b, &a)] {
        page.browser
            .wait_room_hearing(&page.who(), &[other.id], Duration::from_secs(30))
            .await?;
        let inbound = page.browser.room_inbound().await?;
        assert_eq!(
            inbound["remote"]["address"],
            "127.0.0.1",
            "{} hears through the server: {inbound}",
            page.who()
        );
        let width = wait_camera(page, other).await?;
        println!(
            "{} hears {} through the server and sees its camera {width} px wide",
            page.who(),
            other.who()
        );
    }
    a.browser.close().await?;
    b.browser.close().await?;
    server.stop().await;
    Ok(())
}

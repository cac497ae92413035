//! The page with a keyboard and a screen reader, in each engine: every control shown (in
//! the lobby, and on the campus in a classroom) has an accessible name; Tab reaches each
//! focusable control in turn and each shows a visible focus ring; and the live region
//! (`#announcer`) says the person's changes of situation: joining a room, the teacher's
//! mute and its end, the connection dropping and coming back.

use quad_shared::protocol::{ClientMsg, Device, Role, TeacherAction, Who};
use quad_tests::browser::{Browser, Driver, Engine, require_client_bundle};
use quad_tests::room_bot::room_spot;
use quad_tests::{Bot, TestServer, campus};
use serde_json::Value;
use std::time::Duration;

/// WebDriver's key value for Tab.
const TAB: char = '\u{e004}';

/// The shown controls a person can operate that have no accessible name (the name from
/// `aria-label`, `aria-labelledby`, a `<label>`, the button's text, or a title).
const UNNAMED: &str = r##"
const shown = e => { const cs = getComputedStyle(e), r = e.getBoundingClientRect();
  return !e.closest("[hidden]") && cs.display !== "none" && cs.visibility !== "hidden"
    && r.width > 0 && r.height > 0; };
const text = e => (e && e.textContent || "").trim();
const name = e => (e.getAttribute("aria-label") || "").trim()
  || (e.getAttribute("aria-labelledby") || "").split(/\s+/).filter(Boolean)
       .map(id => text(document.getElementById(id))).join(" ").trim()
  || (e.id && text(document.querySelector(`label[for="${e.id}"]`)))
  || text(e.closest("label"))
  || (e.tagName === "BUTTON" ? text(e) : "")
  || (e.getAttribute("title") || "").trim();
const controls = [...document.querySelectorAll(
  "button, input, select, textarea, a[href], [tabindex]:not([tabindex='-1'])")].filter(shown);
return { count: controls.length,
         unnamed: controls.filter(e => !name(e)).map(e => e.outerHTML.slice(0, 80)) };
"##;

/// The focused element and whether its focus shows (an outline of 2 px or more).
const FOCUSED: &str = r##"
const e = document.activeElement;
// Tab also passes through the browser's own controls: the page has no focus then.
if (!document.hasFocus() || !e || e === document.body) return null;
const cs = getComputedStyle(e);
return { id: e.id || e.tagName + ":" + (e.textContent || "").trim().slice(0, 20),
         ring: cs.outlineStyle !== "none" && parseFloat(cs.outlineWidth) >= 2 };
"##;

async fn check_names(page: &Browser, what: &str) -> anyhow::Result<()> {
    let names = page.eval(UNNAMED).await?;
    assert!(
        names["count"].as_u64().unwrap_or(0) >= 3,
        "{what}: no controls found: {names}"
    );
    assert_eq!(
        names["unnamed"],
        Value::Array(vec![]),
        "{what}: controls without a name"
    );
    Ok(())
}

/// Presses Tab until the focus comes back round (or 40 times); every element of the page
/// it lands on must show its focus. Returns how many it visited.
async fn check_focus_rings(page: &Browser, what: &str) -> anyhow::Result<usize> {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..40 {
        page.hold_key(TAB, Duration::from_millis(20)).await?;
        let focused = page.eval(FOCUSED).await?;
        let Some(id) = focused["id"].as_str() else {
            continue;
        };
        if seen.first().is_some_and(|first| first == id) {
            break;
        }
        assert_eq!(
            focused["ring"], true,
            "{what}: {id} takes the focus without showing it"
        );
        seen.push(id.to_owned());
    }
    assert!(seen.len() >= 3, "{what}: Tab reached only {seen:?}");
    Ok(seen.len())
}

async fn wait_said(page: &Browser, what: &str) -> anyhow::Result<()> {
    page.wait_snapshot_of(
        &format!("the live region to say \"{what}\""),
        "return document.getElementById('announcer').textContent",
        |t| t.as_str().is_some_and(|t| t.contains(what)),
    )
    .await?;
    Ok(())
}

quad_tests::in_each_engine!(a_keyboard_and_a_screen_reader_can_use_the_page);

async fn a_keyboard_and_a_screen_reader_can_use_the_page(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let page = driver.browser().await?;

    // The lobby.
    page.goto(&server.url()).await?;
    page.wait_snapshot_of(
        "the lobby",
        "const l = document.getElementById('lobby'); return !!window.quad && !l.hidden",
        |v| v == true,
    )
    .await?;
    check_names(&page, "the lobby").await?;
    let lobby = check_focus_rings(&page, "the lobby").await?;

    // A classroom with its teacher.
    let spot = room_spot(&campus(), 0)?;
    let token = server.token("Ms Ada", Role::Teacher)?;
    let mut teacher = Bot::join_as(server.addr(), "x", Some(spot), Some(token), None).await?;
    page.goto(&format!(
        "{}/?name=Stu&spawn={},{}",
        server.url(),
        spot[0],
        spot[1]
    ))
    .await?;
    let student = page.wait_joined_with_mic("the student").await?;
    wait_said(&page, "You joined Classroom").await?;
    page.wait_snapshot("the class with its teacher", |s| {
        s["class"]["teachers"]
            .as_array()
            .is_some_and(|t| t.iter().any(|id| *id == teacher.id.0))
    })
    .await?;
    check_names(&page, "the classroom").await?;
    let campus_stops = check_focus_rings(&page, "the classroom").await?;
    println!("Tab stops: {lobby} in the lobby, {campus_stops} in the classroom");

    // The teacher's mute, and its end.
    for allowed in [false, true] {
        teacher
            .send(&ClientMsg::Teacher(TeacherAction::Allow {
                who: Who::One(quad_shared::AvatarId(student as u32)),
                device: Device::Mic,
                allowed,
            }))
            .await?;
        let said = if allowed {
            "The teacher allowed your microphone again"
        } else {
            "The teacher muted your microphone"
        };
        wait_said(&page, said).await?;
    }

    // The connection drops for 1.5 s and comes back.
    page.eval("window.quad.dropConnection(1500); return true")
        .await?;
    wait_said(&page, "Connection lost, reconnecting").await?;
    wait_said(&page, "Reconnected").await?;
    page.close().await?;
    teacher.close().await;
    server.stop().await;
    Ok(())
}

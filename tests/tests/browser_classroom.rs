//! Classroom tools in a real browser, each test run in Chromium and in Firefox (fake
//! devices): chat shows whatever it holds as text and runs nothing (typed on the page and received from a bot), and a teacher's
//! mute shows on the student's page as muted by the teacher, with the mic button locked,
//! until the teacher allows the mic again; a recording shows on every page in the room,
//! and on a page that walks in while it runs.

use quad_shared::protocol::{ChatTo, ClientMsg, Device, Role, TeacherAction, Who};
use quad_tests::browser::{Driver, Engine, require_client_bundle};
use quad_tests::room_bot::room_spot;
use quad_tests::{Bot, PATIENCE, TestServer, campus};
use std::time::Duration;

/// WebDriver's key value for Enter.
const ENTER: char = '\u{e007}';
/// WebDriver's key value for the up arrow.
const ARROW_UP: char = '\u{e013}';
/// Below classroom A's door: walking up enters the room.
const HALLWAY: [f32; 2] = [224.0, 400.0];

/// The classic payload, and one that would leave a trace if it ever ran without a dialog.
const XSS: &str = "<img src=x onerror=alert(1)>";
const XSS_TRACE: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";

quad_tests::in_each_engine!(chat_shows_markup_as_plain_text_and_runs_nothing);

async fn chat_shows_markup_as_plain_text_and_runs_nothing(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let at = campus().spawn;
    let page = driver.browser().await?;
    page.goto(&format!(
        "{}/?name=Stu&spawn={},{}",
        server.url(),
        at.x,
        at.y
    ))
    .await?;
    page.wait_snapshot("the page to join", |s| s["self"]["id"].is_u64())
        .await?;
    let mut bot = Bot::join(server.addr(), "Mallory", Some([at.x + 40.0, at.y])).await?;

    // Typed on the page, to everyone.
    page.eval("document.querySelector('#chat-to').value = 'space'; return true")
        .await?;
    let input = page
        .client
        .find(fantoccini::Locator::Css("#chat-input"))
        .await?;
    input.send_keys(&format!("{XSS}{ENTER}")).await?;
    bot.wait_until(PATIENCE, |b| b.chat.values().any(|l| l.text == XSS))
        .await?;
    // From someone else.
    bot.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: XSS_TRACE.into(),
    })
    .await?;
    let snap = page
        .wait_snapshot("both lines in the page's chat", |s| {
            s["chat"].as_array().is_some_and(|lines| {
                lines.iter().any(|l| l["text"] == XSS)
                    && lines.iter().any(|l| l["text"] == XSS_TRACE)
            })
        })
        .await?;
    let from_bot = snap["chat"]
        .as_array()
        .and_then(|lines| lines.iter().find(|l| l["text"] == XSS_TRACE))
        .cloned()
        .unwrap_or_default();
    assert_eq!(from_bot["from"], "Mallory");
    // The DOM holds the text, not the markup, and nothing ran.
    // The page draws the log on its next frame: wait for both lines there.
    page.wait_snapshot_of(
        "both lines in the chat log",
        "return document.querySelectorAll('#chat-log .chat-text').length",
        |n| n.as_u64().is_some_and(|n| n >= 2),
    )
    .await?;
    let dom = page
        .eval(
            "const log = document.querySelector('#chat-log');
             return {
               imgs: log.querySelectorAll('img').length,
               scripts: log.querySelectorAll('script').length,
               texts: [...log.querySelectorAll('.chat-text')].map(e => e.textContent),
               trace: window.__xss === undefined ? null : window.__xss,
             };",
        )
        .await?;
    assert_eq!(dom["imgs"], 0, "{dom}");
    assert_eq!(dom["scripts"], 0, "{dom}");
    assert_eq!(dom["trace"], serde_json::Value::Null, "{dom}");
    let texts: Vec<&str> = dom["texts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(texts.contains(&XSS) && texts.contains(&XSS_TRACE), "{dom}");
    // No alert opened (WebDriver reports "no such alert" when there is none).
    assert!(
        page.client.get_alert_text().await.is_err(),
        "an alert is open"
    );
    // Typing in the chat did not walk the avatar (the keys were the input's).
    let moved = page.snapshot().await?;
    assert!(
        (moved["self"]["x"].as_f64().unwrap_or_default() - f64::from(at.x)).abs() < 1.0,
        "the avatar moved while typing: {moved}"
    );
    page.close().await?;
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(a_teachers_mute_shows_on_the_students_page);

async fn a_teachers_mute_shows_on_the_students_page(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let spot = room_spot(&campus(), 0)?;
    let token = server.token("Ms Ada", Role::Teacher)?;
    let mut teacher = Bot::join_as(server.addr(), "x", Some(spot), Some(token), None).await?;
    let page = driver.browser().await?;
    page.goto(&format!(
        "{}/?name=Stu&spawn={},{}",
        server.url(),
        spot[0],
        spot[1]
    ))
    .await?;
    let student = page.wait_joined_with_mic("the student").await?;
    page.wait_snapshot("the class with its teacher", |s| {
        s["class"]["teachers"]
            .as_array()
            .is_some_and(|t| t.iter().any(|id| *id == teacher.id.0))
    })
    .await?;

    teacher
        .send(&ClientMsg::Teacher(TeacherAction::Allow {
            who: Who::One(quad_shared::AvatarId(student as u32)),
            device: Device::Mic,
            allowed: false,
        }))
        .await?;
    let snap = page
        .wait_snapshot("the page to show the teacher's mute", |s| {
            s["class"]["me"]["mic"] == true && s["media"]["mic"] == false
        })
        .await?;
    let button = page
        .wait_snapshot_of(
            "the mic button locked",
            "const b = document.querySelector('#toggle-mic');
             return {disabled: b.disabled, text: b.textContent, blocked: b.dataset.blocked || null};",
            |b| b["disabled"] == true,
        )
        .await?;
    assert_eq!(button["disabled"], true, "{button}");
    assert_eq!(button["blocked"], "teacher", "{button}");
    assert!(
        button["text"]
            .as_str()
            .is_some_and(|t| t.contains("Muted by teacher")),
        "{button}"
    );
    // The student's own toggle does nothing while muted.
    page.click("#toggle-mic").await.ok();
    teacher.listen_for(Duration::from_millis(300)).await?;
    let again = page.snapshot().await?;
    assert_eq!(again["media"]["mic"], false, "{again}\nbefore: {snap}");
    // The teacher's own page state (via the bot) lists the student as muted.
    assert!(
        teacher
            .class
            .as_ref()
            .is_some_and(|c| c.blocked_of(quad_shared::AvatarId(student as u32)).mic)
    );

    teacher
        .send(&ClientMsg::Teacher(TeacherAction::Allow {
            who: Who::One(quad_shared::AvatarId(student as u32)),
            device: Device::Mic,
            allowed: true,
        }))
        .await?;
    page.wait_snapshot("the mute to be lifted", |s| {
        s["class"]["me"]["mic"] == false
    })
    .await?;
    // The page redraws its controls on its next frame.
    page.wait_snapshot_of(
        "the mic button unlocked",
        "const b = document.querySelector('#toggle-mic'); return {disabled: b.disabled, blocked: b.dataset.blocked || null};",
        |b| b["disabled"] == false && b["blocked"].is_null(),
    )
    .await?;
    // The student turns the mic back on itself.
    page.click("#toggle-mic").await?;
    page.wait_snapshot("the mic on again", |s| s["media"]["mic"] == true)
        .await?;
    page.close().await?;
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(a_teacher_runs_the_class_from_the_page);

async fn a_teacher_runs_the_class_from_the_page(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let spot = room_spot(&campus(), 0)?;
    let mut student = Bot::join(server.addr(), "Bo", Some(spot)).await?;
    let page = driver.browser().await?;
    page.goto(&format!(
        "{}/?token={}&spawn={},{}",
        server.url(),
        server.token("Ms Ada", Role::Teacher)?,
        spot[0],
        spot[1]
    ))
    .await?;
    let snap = page
        .wait_snapshot("the teacher in the class", |s| {
            s["self"]["role"] == "teacher"
                && s["class"]["teachers"]
                    .as_array()
                    .is_some_and(|t| !t.is_empty())
        })
        .await?;
    assert_eq!(snap["self"]["name"], "Ms Ada");
    student
        .wait_until(PATIENCE, |b| {
            b.class.as_ref().is_some_and(|c| !c.teachers.is_empty())
        })
        .await?;

    // The toolbar: lock, then focus mode.
    page.click("#class-lock").await?;
    student
        .wait_until(PATIENCE, |b| b.class.as_ref().is_some_and(|c| c.locked))
        .await?;
    page.click("#class-focus").await?;
    student
        .wait_until(PATIENCE, |b| b.class.as_ref().is_some_and(|c| c.focus))
        .await?;
    // The student's tile: mute it.
    let mute = format!(
        "figure.tile[data-member='{}'] button.tile-mute",
        student.id.0
    );
    page.wait_snapshot_of(
        "the student's tile with its tools",
        &format!("return !!document.querySelector(\"{mute}\")"),
        |v| *v == true,
    )
    .await?;
    page.click(&mute).await?;
    student
        .wait_until(PATIENCE, |b| {
            b.class.as_ref().is_some_and(|c| c.blocked_of(b.id).mic)
        })
        .await?;
    // A raised hand shows in the teacher's list, and the page lowers it.
    student.send(&ClientMsg::Hand { raised: true }).await?;
    page.wait_snapshot("the raised hand", |s| {
        s["class"]["hands"].as_array().is_some_and(|h| h.len() == 1)
    })
    .await?;
    page.click("#class-hands button.hand-lower").await?;
    student
        .wait_until(PATIENCE, |b| {
            b.class.as_ref().is_some_and(|c| c.hands.is_empty())
        })
        .await?;
    page.close().await?;
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(focus_mode_shows_the_stage_and_leaving_full_screen_tells_the_teacher);

async fn focus_mode_shows_the_stage_and_leaving_full_screen_tells_the_teacher(
    engine: Engine,
) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let spot = room_spot(&campus(), 0)?;
    let token = server.token("Ms Ada", Role::Teacher)?;
    let mut teacher = Bot::join_as(server.addr(), "x", Some(spot), Some(token), None).await?;
    let page = driver.browser().await?;
    page.goto(&format!(
        "{}/?name=Stu&spawn={},{}",
        server.url(),
        spot[0],
        spot[1]
    ))
    .await?;
    let snap = page
        .wait_snapshot("the student in the class", |s| s["class"].is_object())
        .await?;
    let me = snap["self"]["id"].as_u64().unwrap_or_default();

    teacher
        .send(&ClientMsg::Teacher(TeacherAction::Focus(true)))
        .await?;
    page.wait_snapshot_of(
        "the focus overlay",
        "return !document.querySelector('#focus').hidden",
        |v| *v == true,
    )
    .await?;
    page.click("#focus-enter").await?;
    page.wait_snapshot_of("full screen", "return !!document.fullscreenElement", |v| {
        *v == true
    })
    .await?;
    // Leaving full screen is an attention event for the teacher.
    page.eval("document.exitFullscreen(); return true").await?;
    teacher
        .wait_until(PATIENCE, |b| {
            b.attention
                .contains(&(quad_shared::AvatarId(me as u32), false))
        })
        .await?;
    // Walking keys do nothing in focus mode.
    let before = page.snapshot().await?;
    page.hold_key('\u{e013}', Duration::from_millis(400))
        .await?;
    let after = page.snapshot().await?;
    assert_eq!(
        before["self"]["y"], after["self"]["y"],
        "the student walked"
    );

    teacher
        .send(&ClientMsg::Teacher(TeacherAction::Focus(false)))
        .await?;
    page.wait_snapshot_of(
        "the overlay gone",
        "return document.querySelector('#focus').hidden",
        |v| *v == true,
    )
    .await?;
    page.close().await?;
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(a_bad_link_is_explained_in_the_lobby_and_a_guest_may_join);

async fn a_bad_link_is_explained_in_the_lobby_and_a_guest_may_join(
    engine: Engine,
) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let page = driver.browser().await?;
    page.goto(&format!("{}/?token=not.a.link", server.url()))
        .await?;
    let error = page
        .wait_snapshot_of(
            "the lobby's error",
            "return document.querySelector('#lobby-error').textContent",
            |v| v.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await?;
    assert!(
        error.as_str().is_some_and(|t| t.contains("not valid")),
        "{error}"
    );
    let name = page
        .client
        .find(fantoccini::Locator::Css("#lobby-name"))
        .await?;
    name.send_keys("Guesty").await?;
    page.click("#lobby-join").await?;
    let snap = page
        .wait_snapshot("the guest to join", |s| s["self"]["id"].is_u64())
        .await?;
    assert_eq!(snap["self"]["role"], "guest");
    assert_eq!(snap["self"]["name"], "Guesty");
    page.close().await?;
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(a_recording_shows_on_every_page_in_the_room);

/// Whether the page shows the recording indicator, and what its live region said last.
const INDICATOR: &str = "return {shown: !document.querySelector('#room-recording').hidden,
    said: document.querySelector('#announcer').textContent,
    notice: document.querySelector('#notice').textContent};";

async fn a_recording_shows_on_every_page_in_the_room(engine: Engine) -> anyhow::Result<()> {
    require_client_bundle()?;
    let server = TestServer::start().await?;
    let driver = Driver::start_engine(engine).await?;
    let spot = room_spot(&campus(), 0)?;
    let teacher = driver.browser().await?;
    teacher
        .goto(&format!(
            "{}/?token={}&spawn={},{}",
            server.url(),
            server.token("Ms Ada", Role::Teacher)?,
            spot[0],
            spot[1]
        ))
        .await?;
    let student = driver.browser().await?;
    student
        .goto(&format!(
            "{}/?name=Stu&spawn={},{}",
            server.url(),
            spot[0],
            spot[1]
        ))
        .await?;
    for page in [&teacher, &student] {
        page.wait_snapshot("the page in the class with its teacher", |s| {
            s["class"]["teachers"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
                && s["room"]["state"] == "connected"
        })
        .await?;
    }
    // The student has no Record button; the teacher does.
    let buttons = student
        .eval("return !document.querySelector('#class-controls').hidden")
        .await?;
    assert_eq!(buttons, false, "the student sees the teacher's toolbar");
    teacher.click("#class-record").await?;
    for (page, who) in [(&teacher, "teacher"), (&student, "student")] {
        page.wait_snapshot(&format!("the {who}'s class recording"), |s| {
            s["class"]["recording"] == true
        })
        .await?;
        let shown = page
            .wait_snapshot_of(
                &format!("the indicator on the {who}'s page"),
                INDICATOR,
                |v| v["shown"] == true,
            )
            .await?;
        assert!(
            shown["said"]
                .as_str()
                .is_some_and(|t| t.contains("being recorded")),
            "{who}: {shown}"
        );
    }
    teacher
        .wait_snapshot_of(
            "the teacher's button says stop",
            "const b = document.querySelector('#class-record'); return {text: b.textContent, pressed: b.getAttribute('aria-pressed')};",
            |b| b["text"] == "Stop recording" && b["pressed"] == "true",
        )
        .await?;

    // Someone walking in later is told as they enter.
    let late = driver.browser().await?;
    late.goto(&format!(
        "{}/?name=Late&spawn={},{}",
        server.url(),
        HALLWAY[0],
        HALLWAY[1]
    ))
    .await?;
    late.wait_snapshot("the late page to join", |s| s["self"]["id"].is_u64())
        .await?;
    late.hold_key(ARROW_UP, Duration::from_millis(900)).await?;
    late.wait_snapshot("the late page in the recorded class", |s| {
        s["class"]["recording"] == true
    })
    .await?;
    let told = late
        .wait_snapshot_of("the indicator on the late page", INDICATOR, |v| {
            v["shown"] == true
        })
        .await?;
    assert!(
        told["said"]
            .as_str()
            .is_some_and(|t| t.contains("being recorded")),
        "{told}"
    );

    teacher.click("#class-record").await?;
    for (page, who) in [
        (&teacher, "teacher"),
        (&student, "student"),
        (&late, "late"),
    ] {
        page.wait_snapshot_of(
            &format!("the indicator gone from the {who}'s page"),
            INDICATOR,
            |v| v["shown"] == false,
        )
        .await?;
    }
    // The teacher is told when the file is made.
    let ready = teacher
        .wait_snapshot_of("the teacher told the file is ready", INDICATOR, |v| {
            v["notice"].as_str().is_some_and(|t| t.contains("is ready"))
        })
        .await?;
    println!(
        "{}: the teacher was told: {}",
        engine.name(),
        ready["notice"]
    );
    // The live register lists the class (the teacher's room panel).
    let register = teacher
        .wait_snapshot_of(
            "the teacher's register",
            "const d = document.querySelector('#class-register');
             return {shown: !d.hidden, rows: [...d.querySelectorAll('tbody tr')].map(r => r.cells[0].textContent)};",
            |v| v["shown"] == true && v["rows"].as_array().is_some_and(|r| r.len() >= 3),
        )
        .await?;
    println!("{}: the register lists {}", engine.name(), register["rows"]);
    // The records panel lists the recording, and it plays in the page.
    teacher.click("#open-records").await?;
    teacher
        .wait_snapshot_of(
            "the recording in the records panel",
            "return document.querySelectorAll('#records-recordings button.play').length",
            |n| n.as_u64().is_some_and(|n| n >= 1),
        )
        .await?;
    teacher.click("#records-recordings button.play").await?;
    let played = teacher
        .wait_snapshot_of(
            "the recording playing in the page",
            "const v = document.querySelector('#records-player');
             return {hidden: v.hidden, duration: v.duration, ready: v.readyState, error: v.error && v.error.code};",
            |v| v["duration"].as_f64().is_some_and(|d| d > 1.0) && v["ready"].as_u64() >= Some(1),
        )
        .await?;
    println!("{}: the player: {played}", engine.name());
    assert_eq!(played["hidden"], false, "{played}");
    let csv = teacher
        .eval("return document.querySelectorAll('#records-classes a.csv').length")
        .await?;
    assert_eq!(csv, 1, "the class's register is not listed");
    for page in [teacher, student, late] {
        page.close().await?;
    }
    server.stop().await;
    Ok(())
}

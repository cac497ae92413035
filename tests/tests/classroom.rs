//! Classroom tools with bot clients on a real server: join links and roles, teacher actions
//! checked and enforced by the server (a mute drops the student's packets in the SFU, focus
//! mode stops students walking, a locked room keeps newcomers out), raised hands and
//! attention, chat that reaches only whom it is for, and chat history that survives a
//! restart.

use glam::Vec2;
use quad_shared::movement::{self, dir};
use quad_shared::protocol::{
    ChatScope, ChatTo, ClientMsg, Device, ErrorCode, Hello, MediaFlags, PROTOCOL_VERSION, Role,
    TeacherAction, Who,
};
use quad_tests::room_bot::{RoomBot, RoomBotOptions, room_spot};
use quad_tests::{Bot, PATIENCE, TestServer, campus, metric};
use std::time::{Duration, Instant, SystemTime};

/// Below classroom A's door: walking up enters the room.
const HALLWAY: [f32; 2] = [224.0, 400.0];

fn in_classroom(p: [f32; 2]) -> bool {
    let map = campus();
    map.zone_at(Vec2::from_array(p))
        .and_then(|z| map.zone(z))
        .is_some_and(|z| z.kind == quad_shared::map::ZoneKind::Classroom)
}

/// A direction in which a few steps from `p` really move (furniture blocks some).
fn free_direction(p: [f32; 2]) -> u8 {
    let map = campus();
    [dir::LEFT, dir::RIGHT, dir::UP, dir::DOWN]
        .into_iter()
        .find(|d| {
            let to = movement::apply(&map.collision, Vec2::from_array(p), *d, 10);
            to.distance(Vec2::from_array(p)) > 5.0 && {
                let z = map.zone_at(to);
                z.is_some() && z == map.zone_at(Vec2::from_array(p))
            }
        })
        .unwrap_or(dir::LEFT)
}

async fn teacher(server: &TestServer, name: &str, at: [f32; 2]) -> anyhow::Result<Bot> {
    let token = server.token(name, Role::Teacher)?;
    Bot::join_as(server.addr(), "ignored", Some(at), Some(token), None).await
}

/// Waits (with a deadline) until `cond` holds of the store's audit log.
async fn wait_audit(
    server: &TestServer,
    what: &str,
    cond: impl Fn(&[quad_server::store::AuditRecord]) -> bool,
) -> anyhow::Result<Vec<quad_server::store::AuditRecord>> {
    use quad_server::store::Store;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let store = quad_server::store::sqlite::SqliteStore::open(&server.data_dir)?;
        let log = store.audit_log(100)?;
        if cond(&log) {
            return Ok(log);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "audit log: {what}; it has {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_cannot_act_as_teachers_and_a_locked_room_keeps_newcomers_out()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spot = room_spot(&campus(), 0)?;
    let mut ada = teacher(&server, "Ms Ada", spot).await?;
    let welcome = ada.welcome.clone().expect("joined");
    assert_eq!(
        (welcome.role, welcome.name.as_str()),
        (Role::Teacher, "Ms Ada")
    );
    let mut bo = Bot::join(server.addr(), "Bo", Some(spot)).await?;
    assert_eq!(bo.welcome.as_ref().map(|w| w.role), Some(Role::Guest));
    bo.wait_until(PATIENCE, |b| {
        b.class.as_ref().is_some_and(|c| c.teachers == vec![ada.id])
    })
    .await?;

    // A student's attempts at teacher actions are refused and change nothing.
    bo.send(&ClientMsg::Teacher(TeacherAction::Lock(true)))
        .await?;
    let err = bo.expect_error(ErrorCode::Forbidden).await?;
    assert!(err.message.contains("only a teacher"), "{}", err.message);
    bo.send(&ClientMsg::Teacher(TeacherAction::Allow {
        who: Who::One(ada.id),
        device: Device::Mic,
        allowed: false,
    }))
    .await?;
    bo.expect_error(ErrorCode::Forbidden).await?;
    // A teacher action after them is applied, so they were handled (and refused) before.
    ada.send(&ClientMsg::Teacher(TeacherAction::Lock(true)))
        .await?;
    bo.wait_until(PATIENCE, |b| b.class.as_ref().is_some_and(|c| c.locked))
        .await?;
    ada.wait_until(PATIENCE, |b| b.class.as_ref().is_some_and(|c| c.locked))
        .await?;
    assert_eq!(
        ada.class.as_ref().map(|c| c.blocked.clone()),
        Some(Vec::new()),
        "the student's mute of the teacher did nothing"
    );

    // A newcomer walking in is stopped at the door; a teacher is not.
    let mut cy = Bot::join(server.addr(), "Cy", Some(HALLWAY)).await?;
    cy.walk(dir::UP, 40).await?;
    let err = cy.expect_error_after(0, ErrorCode::Forbidden).await?;
    assert!(err.message.contains("locked"), "{}", err.message);
    assert!(!in_classroom(cy.me), "Cy got in at {:?}", cy.me);
    assert!(cy.class.is_none());
    let mut dee = teacher(&server, "Mr Dee", HALLWAY).await?;
    dee.walk(dir::UP, 40).await?;
    assert!(in_classroom(dee.me), "a teacher walks into a locked room");

    // Unlocked, the newcomer walks in.
    ada.send(&ClientMsg::Teacher(TeacherAction::Lock(false)))
        .await?;
    ada.wait_until(PATIENCE, |b| b.class.as_ref().is_some_and(|c| !c.locked))
        .await?;
    cy.walk(dir::UP, 40).await?;
    assert!(
        in_classroom(cy.me),
        "Cy walks in once unlocked: {:?}",
        cy.me
    );

    // Every accepted action is in the audit log, refused ones are not.
    let log = wait_audit(&server, "two lock actions", |log| log.len() >= 2).await?;
    assert_eq!(
        log.iter()
            .map(|r| (r.actor_name.as_str(), r.action.as_str(), r.room.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("Ms Ada", "lock", "Classroom A"),
            ("Ms Ada", "lock", "Classroom A")
        ]
    );
    server.stop().await;
    Ok(())
}

fn room_bot(name: &str, at: [f32; 2], token: Option<String>) -> RoomBotOptions {
    RoomBotOptions {
        name: name.into(),
        spawn: at,
        mic_level: Some(30),
        camera: false,
        lossy: false,
        token,
        shaper: None,
        camera_rates: None,
        lose_answers: 0,
        mangle_answers: 0,
        real: None,
        speaking: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teachers_mute_drops_the_students_audio_in_the_sfu_until_unmuted() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.room_max_speakers = 10).await?;
    let spot = room_spot(&campus(), 0)?;
    let ada = RoomBot::join(
        server.addr(),
        room_bot("Ms Ada", spot, Some(server.token("Ms Ada", Role::Teacher)?)),
    )
    .await?;
    let bo = RoomBot::join(server.addr(), room_bot("Bo", spot, None)).await?;
    let cy = RoomBot::join(server.addr(), room_bot("Cy", spot, None)).await?;
    ada.wait_receiving(&[bo.id, cy.id], "mic", 20).await?;
    cy.wait_receiving(&[ada.id, bo.id], "mic", 20).await?;

    ada.send(ClientMsg::Teacher(TeacherAction::Allow {
        who: Who::One(bo.id),
        device: Device::Mic,
        allowed: false,
    }));
    bo.wait_for(PATIENCE, "Bo's class says the teacher muted it", |s| {
        s.class.as_ref().is_some_and(|c| c.blocked_of(bo.id).mic)
    })
    .await?;
    // The SFU drops Bo's packets: wait until it has dropped some and what was in flight
    // has arrived (Cy hears 25 more of Ada's), then Bo's count must stand still while Cy
    // hears 50 more of Ada's.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, page) = quad_tests::http_get(server.addr(), "/metrics").await?;
        if metric(&page, "quad_sfu_blocked_packets_total").unwrap_or(0.0) > 0.0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no packets blocked:\n{page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from_ada = cy.state().packets_from(ada.id, "mic");
    cy.wait_receiving(&[ada.id], "mic", from_ada + 25).await?;
    let muted_at = (
        ada.state().packets_from(bo.id, "mic"),
        cy.state().packets_from(bo.id, "mic"),
    );
    // Bo's client trying to unmute itself is refused (its packets stay dropped).
    bo.send(ClientMsg::Media(MediaFlags::default()));
    bo.send(ClientMsg::Media(MediaFlags {
        mic: true,
        ..MediaFlags::default()
    }));
    bo.wait_for(PATIENCE, "a refusal of Bo's unmute", |s| {
        s.errors.iter().any(|e| e.code == ErrorCode::Forbidden)
    })
    .await?;
    let from_ada = cy.state().packets_from(ada.id, "mic");
    cy.wait_receiving(&[ada.id], "mic", from_ada + 50).await?;
    bo.wait_receiving(&[ada.id], "mic", 20).await?;
    assert_eq!(
        (
            ada.state().packets_from(bo.id, "mic"),
            cy.state().packets_from(bo.id, "mic")
        ),
        muted_at,
        "nobody hears a muted student"
    );
    assert!(
        ada.state()
            .members
            .iter()
            .any(|m| m.id == bo.id && !m.media.mic),
        "the room shows Bo's mic as off"
    );

    ada.send(ClientMsg::Teacher(TeacherAction::Allow {
        who: Who::One(bo.id),
        device: Device::Mic,
        allowed: true,
    }));
    ada.wait_receiving(&[bo.id], "mic", muted_at.0 + 20).await?;
    cy.wait_receiving(&[bo.id], "mic", muted_at.1 + 20).await?;
    server.stop().await;
    Ok(())
}

/// The SFU's packets dropped for muted students (`quad_sfu_blocked_packets_total`).
async fn blocked_packets(server: &TestServer) -> anyhow::Result<f64> {
    let (_, page) = quad_tests::http_get(server.addr(), "/metrics").await?;
    Ok(metric(&page, "quad_sfu_blocked_packets_total").unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teachers_mute_takes_effect_only_once_its_audit_record_is_stored() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.room_max_speakers = 10).await?;
    let spot = room_spot(&campus(), 0)?;
    let ada = RoomBot::join(
        server.addr(),
        room_bot("Ms Ada", spot, Some(server.token("Ms Ada", Role::Teacher)?)),
    )
    .await?;
    let bo = RoomBot::join(server.addr(), room_bot("Bo", spot, None)).await?;
    let cy = RoomBot::join(server.addr(), room_bot("Cy", spot, None)).await?;
    ada.wait_receiving(&[bo.id, cy.id], "mic", 20).await?;

    // The disk stalls: another connection holds the database's write lock.
    let db =
        rusqlite::Connection::open(server.data_dir.join(quad_server::store::sqlite::FILE_NAME))?;
    db.execute_batch("BEGIN IMMEDIATE")?;
    ada.send(ClientMsg::Teacher(TeacherAction::Allow {
        who: Who::One(bo.id),
        device: Device::Mic,
        allowed: false,
    }));
    // Until the record is stored, the mute does nothing anyone could notice: Ada goes on
    // hearing Bo (75 more packets, 1.5 s), and nobody is told.
    let heard = ada.state().packets_from(bo.id, "mic");
    ada.wait_receiving(&[bo.id], "mic", heard + 75).await?;
    assert_eq!(
        blocked_packets(&server).await?,
        0.0,
        "no packet dropped yet"
    );
    assert!(
        !bo.state()
            .class
            .as_ref()
            .is_some_and(|c| c.blocked_of(bo.id).mic),
        "Bo not told before the record is stored"
    );

    // The disk comes back: the record is stored, then the mute takes effect.
    db.execute_batch("ROLLBACK")?;
    drop(db);
    bo.wait_for(PATIENCE, "Bo's class says the teacher muted it", |s| {
        s.class.as_ref().is_some_and(|c| c.blocked_of(bo.id).mic)
    })
    .await?;
    let deadline = Instant::now() + PATIENCE;
    while blocked_packets(&server).await? == 0.0 {
        anyhow::ensure!(Instant::now() < deadline, "no packets blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from_cy = ada.state().packets_from(cy.id, "mic");
    ada.wait_receiving(&[cy.id], "mic", from_cy + 25).await?;
    let muted_at = ada.state().packets_from(bo.id, "mic");
    ada.wait_receiving(&[cy.id], "mic", from_cy + 75).await?;
    assert_eq!(
        ada.state().packets_from(bo.id, "mic"),
        muted_at,
        "Bo unheard once the mute is stored"
    );
    wait_audit(&server, "the mute", |log| {
        log.iter().any(|r| r.action == "allow")
    })
    .await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn focus_mode_stops_students_walking_but_not_the_teacher() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spot = room_spot(&campus(), 0)?;
    let mut ada = teacher(&server, "Ms Ada", spot).await?;
    let mut bo = Bot::join(server.addr(), "Bo", Some(spot)).await?;
    bo.wait_until(PATIENCE, |b| {
        b.class.as_ref().is_some_and(|c| c.teachers == vec![ada.id])
    })
    .await?;
    let way = free_direction(spot);

    ada.send(&ClientMsg::Teacher(TeacherAction::Focus(true)))
        .await?;
    bo.wait_until(PATIENCE, |b| b.class.as_ref().is_some_and(|c| c.focus))
        .await?;
    let before = bo.me;
    let seen = bo.errors.len();
    bo.walk(way, 10).await?;
    let err = bo.expect_error_after(seen, ErrorCode::Forbidden).await?;
    assert!(err.message.contains("focus"), "{}", err.message);
    assert_eq!(bo.me, before, "a student does not move in focus mode");
    let before = ada.me;
    ada.walk(way, 10).await?;
    assert_ne!(ada.me, before, "the teacher moves");

    ada.send(&ClientMsg::Teacher(TeacherAction::Focus(false)))
        .await?;
    bo.wait_until(PATIENCE, |b| b.class.as_ref().is_some_and(|c| !c.focus))
        .await?;
    let before = bo.me;
    bo.walk(way, 10).await?;
    assert_ne!(bo.me, before, "the student walks again after focus mode");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hands_attention_spotlight_and_sending_a_student_out() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spot = room_spot(&campus(), 0)?;
    let mut ada = teacher(&server, "Ms Ada", spot).await?;
    let mut bo = Bot::join(server.addr(), "Bo", Some(spot)).await?;
    let mut cy = Bot::join(server.addr(), "Cy", Some(spot)).await?;
    for bot in [&mut bo, &mut cy] {
        bot.wait_until(PATIENCE, |b| {
            b.class.as_ref().is_some_and(|c| c.teachers == vec![ada.id])
        })
        .await?;
    }

    cy.send(&ClientMsg::Hand { raised: true }).await?;
    ada.wait_until(PATIENCE, |b| {
        b.class.as_ref().is_some_and(|c| c.hands == vec![cy.id])
    })
    .await?;
    bo.send(&ClientMsg::Hand { raised: true }).await?;
    ada.wait_until(PATIENCE, |b| {
        b.class
            .as_ref()
            .is_some_and(|c| c.hands == vec![cy.id, bo.id])
    })
    .await?;
    ada.send(&ClientMsg::Teacher(TeacherAction::LowerHand(Some(cy.id))))
        .await?;
    cy.wait_until(PATIENCE, |b| {
        b.class.as_ref().is_some_and(|c| c.hands == vec![bo.id])
    })
    .await?;

    bo.send(&ClientMsg::Attention { watching: false }).await?;
    ada.wait_until(PATIENCE, |b| {
        b.attention.contains(&(bo.id, false))
            && b.class.as_ref().is_some_and(|c| c.away == vec![bo.id])
    })
    .await?;
    bo.send(&ClientMsg::Attention { watching: true }).await?;
    ada.wait_until(PATIENCE, |b| b.attention.contains(&(bo.id, true)))
        .await?;

    ada.send(&ClientMsg::Teacher(TeacherAction::Spotlight(Some(cy.id))))
        .await?;
    bo.wait_until(PATIENCE, |b| {
        b.class.as_ref().is_some_and(|c| c.spotlight == Some(cy.id))
    })
    .await?;

    ada.send(&ClientMsg::Teacher(TeacherAction::Remove(bo.id)))
        .await?;
    bo.wait_until(PATIENCE, |b| {
        !b.notices.is_empty() && b.class.is_none() && !in_classroom(b.me)
    })
    .await?;
    assert!(bo.notices[0].contains("sent you out"), "{:?}", bo.notices);
    // Bo cannot walk back in, whichever way it tries.
    let seen = bo.errors.len();
    for way in [dir::UP, dir::DOWN, dir::LEFT, dir::RIGHT] {
        bo.walk(way, 30).await?;
        assert!(!in_classroom(bo.me), "Bo walked back in at {:?}", bo.me);
    }
    let err = bo.expect_error_after(seen, ErrorCode::Forbidden).await?;
    assert!(err.message.contains("sent you out"), "{}", err.message);
    ada.wait_until(PATIENCE, |b| {
        b.class.as_ref().is_some_and(|c| c.hands.is_empty())
    })
    .await?;
    server.stop().await;
    Ok(())
}

/// Whether `bot` has a chat line with `text`.
fn has(bot: &Bot, text: &str) -> bool {
    bot.chat.values().any(|l| l.text == text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_only_those_it_is_for() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spot = room_spot(&campus(), 0)?;
    let far = campus().spawn.to_array();
    let mut a = Bot::join(server.addr(), "A", Some(HALLWAY)).await?;
    let mut b = Bot::join(server.addr(), "B", Some([HALLWAY[0] + 40.0, HALLWAY[1]])).await?;
    let mut c = Bot::join(server.addr(), "C", Some(far)).await?;
    let mut t = teacher(&server, "T", spot).await?;
    let mut s = Bot::join(server.addr(), "S", Some(spot)).await?;
    s.wait_until(PATIENCE, |s| s.class.is_some()).await?;

    a.send(&ClientMsg::Chat {
        to: ChatTo::Nearby,
        text: "near A".into(),
    })
    .await?;
    let xss = "<img src=x onerror=alert(1)>";
    s.send(&ClientMsg::Chat {
        to: ChatTo::Room,
        text: xss.into(),
    })
    .await?;
    s.send(&ClientMsg::Chat {
        to: ChatTo::Nearby,
        text: "whisper in the room".into(),
    })
    .await?;
    a.send(&ClientMsg::Chat {
        to: ChatTo::Direct(c.id),
        text: "just for C".into(),
    })
    .await?;
    a.send(&ClientMsg::Chat {
        to: ChatTo::Room,
        text: "not in a room".into(),
    })
    .await?;
    a.expect_error(ErrorCode::WrongState).await?;
    // Senders get their own lines back, queued with everyone else's copies; so once they
    // have, a message to everyone sent now reaches everyone after all of the above.
    a.wait_until(PATIENCE, |b| has(b, "near A") && has(b, "just for C"))
        .await?;
    s.wait_until(PATIENCE, |b| has(b, xss) && has(b, "whisper in the room"))
        .await?;
    t.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: "everyone".into(),
    })
    .await?;
    for bot in [&mut a, &mut b, &mut c, &mut t, &mut s] {
        bot.wait_until(PATIENCE, |b| has(b, "everyone")).await?;
    }
    let seen = |bot: &Bot| {
        ["near A", xss, "whisper in the room", "just for C"]
            .iter()
            .map(|t| has(bot, t))
            .collect::<Vec<bool>>()
    };
    assert_eq!(seen(&a), vec![true, false, false, true], "A");
    assert_eq!(seen(&b), vec![true, false, false, false], "B (near A)");
    assert_eq!(seen(&c), vec![false, false, false, true], "C (far)");
    assert_eq!(seen(&t), vec![false, true, true, false], "T (in the room)");
    assert_eq!(seen(&s), vec![false, true, true, false], "S (in the room)");
    let line = t.chat.values().find(|l| l.text == xss).expect("seen");
    assert_eq!(line.scope, ChatScope::Room("Classroom A".into()));
    assert_eq!((line.from, line.from_name.as_str()), (Some(s.id), "S"));
    assert!(!has(&a, "not in a room"));

    // Size and rate limits, with clear errors; the session goes on.
    a.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: "x".repeat(quad_shared::protocol::MAX_CHAT_CHARS + 1),
    })
    .await?;
    let err = a.expect_error(ErrorCode::TooLarge).await?;
    assert!(err.message.contains("at most"), "{}", err.message);
    for i in 0..8 {
        a.send(&ClientMsg::Chat {
            to: ChatTo::Space,
            text: format!("spam {i}"),
        })
        .await?;
    }
    let err = a.expect_error(ErrorCode::RateLimited).await?;
    assert!(err.message.contains("too fast"), "{}", err.message);
    b.wait_until(PATIENCE, |b| has(b, "spam 0")).await?;
    assert!(
        !has(&b, "spam 7"),
        "the eighth message in a burst is refused"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_history_and_join_links_survive_a_restart() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spot = room_spot(&campus(), 0)?;
    let bo_link = server.token("Bo", Role::Student)?;
    let mut ada = teacher(&server, "Ms Ada", spot).await?;
    let mut bo = Bot::join_as(server.addr(), "x", Some(spot), Some(bo_link.clone()), None).await?;
    let device = "0123456789abcdef0123456789abcdef".to_string();
    let mut guest = Bot::join_as(
        server.addr(),
        "Gus",
        Some(HALLWAY),
        None,
        Some(device.clone()),
    )
    .await?;
    bo.wait_until(PATIENCE, |b| b.class.is_some()).await?;
    ada.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: "before the restart".into(),
    })
    .await?;
    bo.send(&ClientMsg::Chat {
        to: ChatTo::Room,
        text: "in the room".into(),
    })
    .await?;
    ada.send(&ClientMsg::Chat {
        to: ChatTo::Direct(bo.id),
        text: "for Bo".into(),
    })
    .await?;
    ada.send(&ClientMsg::Chat {
        to: ChatTo::Direct(guest.id),
        text: "for Gus".into(),
    })
    .await?;
    bo.wait_until(PATIENCE, |b| has(b, "for Bo") && has(b, "in the room"))
        .await?;
    guest.wait_until(PATIENCE, |b| has(b, "for Gus")).await?;
    let last_id = *guest.chat.keys().last().expect("a line");
    drop((ada, bo, guest));

    let data = server.stop_keeping_data().await;
    let server = TestServer::start_in(data, |_| {}).await?;
    // The same link works after the restart (the secret was kept) and brings back the
    // space, room and direct history that is Bo's.
    let mut bo = Bot::join_as(server.addr(), "x", Some(spot), Some(bo_link), None).await?;
    bo.wait_until(PATIENCE, |b| {
        ["before the restart", "in the room", "for Bo"]
            .iter()
            .all(|t| has(b, t))
    })
    .await?;
    assert!(!has(&bo, "for Gus"));
    assert!(
        bo.chat.values().all(|l| l.from.is_none()),
        "history has no live ids"
    );
    // The guest's browser (its device key) gets its direct messages back; another does not.
    let mut gus = Bot::join_as(server.addr(), "Gus", Some(HALLWAY), None, Some(device)).await?;
    gus.wait_until(PATIENCE, |b| {
        has(b, "for Gus") && has(b, "before the restart")
    })
    .await?;
    assert!(!has(&gus, "in the room") && !has(&gus, "for Bo"));
    let mut other = Bot::join_as(
        server.addr(),
        "Gus",
        Some(HALLWAY),
        None,
        Some("ffffffffffffffffffffffffffffffff".into()),
    )
    .await?;
    other
        .wait_until(PATIENCE, |b| has(b, "before the restart"))
        .await?;
    other.listen_for(Duration::from_millis(300)).await?;
    assert!(!has(&other, "for Gus"));
    // New lines continue the ids.
    other
        .send(&ClientMsg::Chat {
            to: ChatTo::Space,
            text: "after".into(),
        })
        .await?;
    other.wait_until(PATIENCE, |b| has(b, "after")).await?;
    let after = other
        .chat
        .values()
        .find(|l| l.text == "after")
        .map(|l| l.id);
    assert!(after > Some(last_id), "{after:?} after {last_id}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_and_missing_links_are_refused_with_a_reason() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let hello = |token: Option<String>| {
        ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: "Bo".into(),
            token,
            spawn: None,
            device: None,
            resume: None,
            room: None,
        })
    };
    let expired = server.server.join_keys().issue(
        "Bo",
        Role::Student,
        None,
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(7200),
    )?;
    let forged = quad_server::auth::JoinKeys::new(b"not the server's secret at all!!").issue(
        "Bo",
        Role::Teacher,
        None,
        Duration::from_secs(3600),
        SystemTime::now(),
    )?;
    let mut bot = Bot::connect(server.addr()).await?;
    bot.send(&hello(Some(expired))).await?;
    let err = bot.expect_error(ErrorCode::Unauthorized).await?;
    assert!(err.message.contains("expired"), "{}", err.message);
    bot.send(&hello(Some(forged))).await?;
    let err = bot.expect_error(ErrorCode::Unauthorized).await?;
    assert!(err.message.contains("not valid"), "{}", err.message);
    assert!(bot.welcome.is_none());
    // The same connection may then join as a guest.
    bot.send(&hello(None)).await?;
    bot.wait_until(PATIENCE, |b| b.welcome.is_some()).await?;
    assert_eq!(bot.welcome.as_ref().map(|w| w.role), Some(Role::Guest));
    // A link for a room opens in that room.
    let link = server.server.join_keys().issue(
        "Cy",
        Role::Student,
        Some("Classroom B"),
        Duration::from_secs(3600),
        SystemTime::now(),
    )?;
    let mut cy = Bot::join_as(server.addr(), "x", None, Some(link), None).await?;
    assert_eq!(cy.welcome.as_ref().map(|w| w.role), Some(Role::Student));
    cy.wait_until(PATIENCE, |b| b.class.is_some()).await?;
    assert!(in_classroom(cy.me));
    server.stop().await;

    let server = TestServer::start_with(|c| c.allow_guests = false).await?;
    let mut bot = Bot::connect(server.addr()).await?;
    bot.send(&hello(None)).await?;
    let err = bot.expect_error(ErrorCode::Unauthorized).await?;
    assert!(err.message.contains("join link"), "{}", err.message);
    bot.send(&hello(Some(server.token("Bo", Role::Student)?)))
        .await?;
    bot.wait_until(PATIENCE, |b| b.welcome.is_some()).await?;
    assert_eq!(bot.welcome.as_ref().map(|w| w.role), Some(Role::Student));
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teacher_turns_a_students_camera_off_in_the_sfu_and_on_again() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.room_max_speakers = 10).await?;
    let spot = room_spot(&campus(), 0)?;
    let ada = RoomBot::join(
        server.addr(),
        room_bot("Ms Ada", spot, Some(server.token("Ms Ada", Role::Teacher)?)),
    )
    .await?;
    let bo = RoomBot::join(
        server.addr(),
        RoomBotOptions {
            camera: true,
            ..room_bot("Bo", spot, None)
        },
    )
    .await?;
    ada.wait_receiving(&[bo.id], "camera", 20).await?;

    ada.send(ClientMsg::Teacher(TeacherAction::Allow {
        who: Who::One(bo.id),
        device: Device::Camera,
        allowed: false,
    }));
    bo.wait_for(PATIENCE, "Bo's class says its camera is off", |s| {
        s.class.as_ref().is_some_and(|c| c.blocked_of(bo.id).camera)
    })
    .await?;
    // Bo's microphone goes on (it is not blocked) and measures the time: once what was in
    // flight has arrived, not one camera packet more may come while 50 mic packets do.
    let mic = ada.state().packets_from(bo.id, "mic");
    ada.wait_receiving(&[bo.id], "mic", mic + 25).await?;
    let camera_off_at = ada.state().packets_from(bo.id, "camera");
    let mic = ada.state().packets_from(bo.id, "mic");
    ada.wait_receiving(&[bo.id], "mic", mic + 50).await?;
    assert_eq!(
        ada.state().packets_from(bo.id, "camera"),
        camera_off_at,
        "no video from a camera the teacher turned off"
    );
    let (_, page) = quad_tests::http_get(server.addr(), "/metrics").await?;
    assert!(metric(&page, "quad_sfu_blocked_packets_total").unwrap_or(0.0) > 0.0);

    ada.send(ClientMsg::Teacher(TeacherAction::Allow {
        who: Who::One(bo.id),
        device: Device::Camera,
        allowed: true,
    }));
    // The picture comes back (from the next keyframe) without a sequence gap.
    let stream = format!("{}:camera", bo.id.0);
    let jumps = ada.state().seq_jumps.get(&stream).copied().unwrap_or(0);
    ada.wait_receiving(&[bo.id], "camera", camera_off_at + 20)
        .await?;
    assert_eq!(
        ada.state().seq_jumps.get(&stream).copied().unwrap_or(0),
        jumps,
        "the camera came back with a gap in sequence numbers"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_and_a_removal_outlast_a_reload_of_the_same_link() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let map = campus();
    let spot = room_spot(&map, 0)?;
    let room = map
        .zone_at(Vec2::from_array(spot))
        .and_then(|z| map.zone(z))
        .map(|z| z.name.clone())
        .ok_or_else(|| anyhow::anyhow!("no room at {spot:?}"))?;
    let mut ada = teacher(&server, "Ms Ada", spot).await?;
    // Bo's link opens in the room, as `quad-server token --room` makes it.
    let link = server.server.join_keys().issue(
        "Bo",
        Role::Student,
        Some(&room),
        Duration::from_secs(3600),
        SystemTime::now(),
    )?;
    let join = || Bot::join_as(server.addr(), "ignored", None, Some(link.clone()), None);
    let mut bo = join().await?;
    bo.wait_until(PATIENCE, |b| b.class.is_some()).await?;
    ada.send(&ClientMsg::Teacher(TeacherAction::Allow {
        who: Who::One(bo.id),
        device: Device::Mic,
        allowed: false,
    }))
    .await?;
    let muted = |b: &Bot| {
        b.class
            .as_ref()
            .is_some_and(|c| c.blocked.iter().any(|(id, f)| *id == b.id && f.mic))
    };
    bo.wait_until(PATIENCE, muted).await?;

    // A reload: the same person under a new avatar, back in the room, still muted.
    bo.close().await;
    let mut bo = join().await?;
    bo.wait_until(PATIENCE, |b| b.class.is_some()).await?;
    bo.wait_until(PATIENCE, muted)
        .await
        .map_err(|e| anyhow::anyhow!("the reload lifted the mute: {e}"))?;

    ada.send(&ClientMsg::Teacher(TeacherAction::Remove(bo.id)))
        .await?;
    bo.wait_until(PATIENCE, |b| b.class.is_none() && !in_classroom(b.me))
        .await?;
    // Another reload does not bring the removed student back inside.
    bo.close().await;
    let mut bo = join().await?;
    bo.listen_for(Duration::from_millis(500)).await?;
    assert!(
        bo.class.is_none() && !in_classroom(bo.me),
        "the removed student is back in the room at {:?}",
        bo.me
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_teacher_is_heard_over_students_claiming_to_be_loudest() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.room_max_speakers = 2).await?;
    let at = room_spot(&campus(), 1)?;
    let mut listener = room_bot("listener", at, None);
    listener.mic_level = None;
    let listener = RoomBot::join(server.addr(), listener).await?;
    let mut teacher = room_bot("Ms Ada", at, Some(server.token("Ms Ada", Role::Teacher)?));
    teacher.mic_level = Some(90);
    let teacher = RoomBot::join(server.addr(), teacher).await?;
    // Three students whose clients claim the loudest possible level, against 2 places.
    let mut students = Vec::new();
    for i in 0..3 {
        let mut options = room_bot(&format!("loud{i}"), at, None);
        options.mic_level = Some(0);
        students.push(RoomBot::join(server.addr(), options).await?);
    }
    // The rule is in effect once every student has connected and two are forwarded.
    for bot in &students {
        bot.wait_for(PATIENCE, "a connected room connection", |s| {
            s.connected_at.is_some()
        })
        .await?;
    }
    let count = |s: &quad_tests::room_bot::RoomBotState| -> (u64, Vec<u64>) {
        let students = students.iter().map(|b| s.packets_from(b.id, "mic"));
        (s.packets_from(teacher.id, "mic"), students.collect())
    };
    let (_, at_start) = count(&listener.state());
    listener
        .wait_for(PATIENCE, "two students forwarded", |s| {
            let (_, now) = count(s);
            now.iter()
                .zip(&at_start)
                .filter(|(n, b)| **n >= **b + 20)
                .count()
                == 2
        })
        .await?;
    // Over the next window the teacher keeps arriving beside them.
    let (teacher_before, _) = count(&listener.state());
    listener
        .wait_for(PATIENCE, "the teacher forwarded beside two students", |s| {
            count(s).0 >= teacher_before + 20
        })
        .await
        .map_err(|e| anyhow::anyhow!("the teacher was kept out: {e}"))?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_take_a_link_holders_name_and_roles_are_shown() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let ada = teacher(&server, "Ms Ada", campus().spawn.to_array()).await?;
    for taken in ["Ms Ada", "ms ada", "Ms. Ada", "Ms Ada\u{200b}"] {
        let mut guest = Bot::connect(server.addr()).await?;
        guest
            .send(&ClientMsg::Hello(Hello {
                version: PROTOCOL_VERSION,
                name: taken.into(),
                token: None,
                spawn: None,
                device: None,
                resume: None,
                room: None,
            }))
            .await?;
        let err = guest.expect_error(ErrorCode::Forbidden).await?;
        assert!(
            err.message.contains("join link"),
            "{taken:?}: {}",
            err.message
        );
        assert!(guest.welcome.is_none(), "{taken:?} was let in");
    }
    let mut bo = Bot::join(server.addr(), "Bo", None).await?;
    bo.wait_until(PATIENCE, |b| b.roles.len() == 2).await?;
    assert_eq!(bo.roles.get(&ada.id), Some(&Role::Teacher));
    assert_eq!(bo.roles.get(&bo.id), Some(&Role::Guest));
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_classroom_keeps_students_out_but_not_teachers() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let map = campus();
    let spot = room_spot(&map, 0)?;
    let capacity = map
        .zone_at(Vec2::from_array(spot))
        .and_then(|z| map.zone(z))
        .map(|z| z.capacity as usize)
        .ok_or_else(|| anyhow::anyhow!("no room at {spot:?}"))?;
    anyhow::ensure!((1..=60).contains(&capacity), "capacity {capacity}");
    let mut inside = Vec::new();
    for i in 0..capacity {
        inside.push(Bot::join(server.addr(), &format!("s{i}"), Some(spot)).await?);
    }
    let last = inside
        .last_mut()
        .ok_or_else(|| anyhow::anyhow!("no students"))?;
    last.wait_until(PATIENCE, |b| {
        b.class.is_some() && b.people.len() == capacity
    })
    .await?;

    // A student walking in from the hallway is stopped at the door, and told why.
    let mut cy = Bot::join(server.addr(), "Cy", Some(HALLWAY)).await?;
    cy.walk(dir::UP, 40).await?;
    let err = cy.expect_error_after(0, ErrorCode::Forbidden).await?;
    assert!(err.message.contains("full"), "{}", err.message);
    assert!(
        !in_classroom(cy.me),
        "Cy got into a full room at {:?}",
        cy.me
    );
    // A teacher is not.
    let mut dee = teacher(&server, "Mr Dee", HALLWAY).await?;
    dee.walk(dir::UP, 40).await?;
    assert!(in_classroom(dee.me), "a teacher walks into a full room");
    // Once someone leaves, there is room again.
    if let Some(mut gone) = inside.pop() {
        gone.close().await;
    }
    let deadline = Instant::now() + PATIENCE;
    while !in_classroom(cy.me) {
        anyhow::ensure!(Instant::now() < deadline, "Cy never got in: {:?}", cy.me);
        cy.walk(dir::UP, 20).await?;
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_holders_name_stays_reserved_after_a_restart() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut ada = teacher(&server, "Ms Ada", campus().spawn.to_array()).await?;
    ada.close().await;
    let data = server.stop_keeping_data().await;
    // The same campus restarted: Ms Ada has not joined since, and her name is still hers.
    let server = TestServer::start_in(data, |_| {}).await?;
    let mut guest = Bot::connect(server.addr()).await?;
    guest
        .send(&ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: "MS ADA".into(),
            token: None,
            spawn: None,
            device: None,
            resume: None,
            room: None,
        }))
        .await?;
    let err = guest.expect_error(ErrorCode::Forbidden).await?;
    assert!(err.message.contains("join link"), "{}", err.message);
    assert!(guest.welcome.is_none());
    server.stop().await;
    Ok(())
}

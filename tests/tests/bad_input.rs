//! Bad input: malformed, oversized, text and out-of-state frames each get an `Error`; the
//! server goes on serving everyone else.

use quad_shared::codec::MAX_FRAME_BYTES;
use quad_shared::movement::dir;
use quad_shared::protocol::*;
use quad_tests::{Bot, PATIENCE, TestServer, campus};

#[tokio::test]
async fn each_bad_frame_gets_an_error_and_others_are_unaffected() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spawn = campus().spawn.to_array();
    let mut watcher =
        Bot::join(server.addr(), "Watcher", Some([spawn[0], spawn[1] + 50.0])).await?;
    let mut walker = Bot::join(server.addr(), "Walker", Some(spawn)).await?;

    // A message before Hello.
    let mut early = Bot::connect(server.addr()).await?;
    early
        .send(&ClientMsg::Input(Input {
            seq: 1,
            dir: dir::UP,
            steps: 1,
        }))
        .await?;
    let e = early.expect_error(ErrorCode::WrongState).await?;
    assert!(e.message.contains("before Hello"), "{}", e.message);

    // Garbage bytes, on a joined session.
    walker.send_raw(vec![0xc1, 0xff, 0x00, 0x13]).await?;
    walker.expect_error(ErrorCode::Malformed).await?;
    // An unknown message.
    walker.send_raw(rmp_like_unknown_variant()).await?;
    walker.expect_error(ErrorCode::Malformed).await?;
    // Oversized.
    walker.send_raw(vec![0x90; MAX_FRAME_BYTES + 100]).await?;
    let e = walker.expect_error(ErrorCode::TooLarge).await?;
    assert!(e.message.contains("limit"), "{}", e.message);
    // Text instead of binary.
    walker.send_text("{\"Hello\":{}}").await?;
    walker.expect_error(ErrorCode::NotBinary).await?;
    // A second Hello.
    walker
        .send(&ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: "again".into(),
            token: None,
            spawn: None,
            device: None,
            resume: None,
            room: None,
        }))
        .await?;
    walker.expect_error(ErrorCode::WrongState).await?;

    // The walker's session and everyone else's go on.
    let walker_id = walker.id;
    walker.walk(dir::RIGHT, 12).await?;
    let x = walker.me[0];
    assert!(x > spawn[0]);
    watcher
        .wait_until(PATIENCE, |w| {
            w.others
                .get(&walker_id)
                .is_some_and(|p| (p[0] - x).abs() <= 0.25)
        })
        .await?;
    let late = Bot::join(server.addr(), "Late", None).await?;
    watcher
        .wait_until(PATIENCE, |w| w.people.contains_key(&late.id))
        .await?;
    server.stop().await;
    Ok(())
}

/// `{"Fly": nil}`: a well-formed MessagePack map naming a message that does not exist.
fn rmp_like_unknown_variant() -> Vec<u8> {
    vec![0x81, 0xa3, b'F', b'l', b'y', 0xc0]
}

#[tokio::test]
async fn another_protocol_version_is_told_and_closed() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut bot = Bot::connect(server.addr()).await?;
    bot.send(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION + 1,
        name: "Future".into(),
        token: None,
        spawn: None,
        device: None,
        resume: None,
        room: None,
    }))
    .await?;
    let e = bot.expect_error(ErrorCode::VersionMismatch).await?;
    assert!(e.message.contains("reload"), "{}", e.message);
    let (code, reason) = bot.expect_close().await?;
    assert_eq!(code, 1008);
    assert!(reason.contains("version"));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_bad_name_can_be_corrected() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut bot = Bot::connect(server.addr()).await?;
    let hello = |name: &str| {
        ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: name.into(),
            token: None,
            spawn: None,
            device: None,
            resume: None,
            room: None,
        })
    };
    bot.send(&hello("   ")).await?;
    bot.expect_error(ErrorCode::BadName).await?;
    bot.send(&hello(&"n".repeat(MAX_NAME_CHARS + 1))).await?;
    bot.expect_error(ErrorCode::BadName).await?;
    bot.send(&hello("  Cy  ")).await?;
    bot.wait_until(PATIENCE, |b| b.welcome.is_some()).await?;
    assert_eq!(bot.welcome.as_ref().map(|w| w.name.as_str()), Some("Cy"));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn spawn_requests_are_ignored_outside_dev_mode() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.dev = false).await?;
    let map = campus();
    let bot = Bot::join(
        server.addr(),
        "Ada",
        Some([map.spawn.x + 100.0, map.spawn.y]),
    )
    .await?;
    assert_eq!(bot.me, map.spawn.to_array());
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_full_server_refuses_politely() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_sessions = 1).await?;
    let _first = Bot::join(server.addr(), "One", None).await?;
    let mut second = Bot::connect(server.addr()).await?;
    second
        .send(&ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: "Two".into(),
            token: None,
            spawn: None,
            device: None,
            resume: None,
            room: None,
        }))
        .await?;
    second.expect_error(ErrorCode::Unavailable).await?;
    assert_eq!(second.expect_close().await?.0, 1013);
    server.stop().await;
    Ok(())
}

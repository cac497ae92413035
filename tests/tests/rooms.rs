//! Classroom media through the SFU, with bots that are webrtc-rs peers publishing synthetic
//! Opus and VP8: everyone in a room receives everyone else; a newcomer is added to everyone
//! by renegotiation; a bot that vanishes is cleaned up and the others see no errors; only
//! the loudest speakers are forwarded; a lost connection rejoins, and one whose path dies
//! is restarted in place; an offer whose answer is lost is sent again; m-lines are reused
//! as people come and go; walking in and out switches between proximity and room media; bad
//! room signaling is refused while the room goes on.

use quad_shared::AvatarId;
use quad_shared::movement::dir;
use quad_shared::protocol::{ClientMsg, ErrorCode, SdpKind, Signal};
use quad_tests::room_bot::{MediaEvent, RoomBot, RoomBotOptions, room_spot};
use quad_tests::{Bot, PATIENCE, TestServer, campus};
use std::time::Duration;

fn options(name: &str, spawn: [f32; 2], mic_level: Option<u8>, camera: bool) -> RoomBotOptions {
    RoomBotOptions {
        name: name.into(),
        spawn,
        mic_level,
        camera,
        lossy: false,
        token: None,
        shaper: None,
        camera_rates: None,
        lose_answers: 0,
        mangle_answers: 0,
        real: None,
        speaking: None,
    }
}

/// Every bot has received at least `count` microphone packets from every other bot.
async fn all_hear_each_other(bots: &[RoomBot], count: u64) -> anyhow::Result<()> {
    let ids: Vec<AvatarId> = bots.iter().map(|b| b.id).collect();
    for bot in bots {
        let others: Vec<AvatarId> = ids.iter().copied().filter(|id| *id != bot.id).collect();
        bot.wait_receiving(&others, "mic", count).await?;
    }
    Ok(())
}

/// Waits until `a` and `b` each receive 20 more microphone packets from the other than now.
async fn hear_each_other_again(a: &RoomBot, b: &RoomBot) -> anyhow::Result<()> {
    let (b_heard, a_heard) = (
        b.state().packets_from(a.id, "mic"),
        a.state().packets_from(b.id, "mic"),
    );
    b.wait_for(PATIENCE, "a's audio at b again", |s| {
        s.packets_from(a.id, "mic") > b_heard + 20
    })
    .await?;
    a.wait_for(PATIENCE, "b's audio at a again", |s| {
        s.packets_from(b.id, "mic") > a_heard + 20
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_forwards_everyone_to_everyone_and_renegotiates_on_join_and_leave()
-> anyhow::Result<()> {
    // A bot that vanishes is kept for a resume for a second, then leaves.
    let server = TestServer::start_with(|c| {
        c.room_max_speakers = 10;
        c.resume_grace_secs = 1;
    })
    .await?;
    let map = campus();
    let at = room_spot(&map, 0)?;
    let mut bots = Vec::new();
    for i in 0..5 {
        bots.push(
            RoomBot::join(
                server.addr(),
                options(&format!("bot{i}"), at, Some(30), i == 0),
            )
            .await?,
        );
    }
    for bot in &bots {
        bot.wait_for(PATIENCE, "JoinRoomMedia", |s| s.room.is_some())
            .await?;
    }
    all_hear_each_other(&bots, 25).await?;
    // The camera of bot 0 reaches the other four too.
    for bot in &bots[1..] {
        bot.wait_receiving(&[bots[0].id], "camera", 10).await?;
    }
    // `/metrics` counts the room, its members and what was forwarded.
    let (status, page) = quad_tests::http_get(server.addr(), "/metrics").await?;
    assert_eq!(status, 200, "{page}");
    let m = |name| quad_tests::metric(&page, name).unwrap_or(-1.0);
    assert_eq!(m("quad_rooms"), 1.0, "{page}");
    assert_eq!(m("quad_room_members"), 5.0, "{page}");
    assert_eq!(m("quad_avatars"), 5.0, "{page}");
    assert_eq!(m("quad_spaces"), 1.0, "{page}");
    assert!(
        m("quad_sfu_forwarded_packets_total") >= 5.0 * 4.0 * 25.0,
        "{page}"
    );
    assert!(
        m("quad_sfu_forwarded_bytes_total") > m("quad_sfu_forwarded_packets_total") * 12.0,
        "{page}"
    );
    // The microphones went out on the direct path (the bots decrypted them: they heard).
    assert!(
        m("quad_sfu_direct_packets_total") >= 5.0 * 4.0 * 20.0,
        "{page}"
    );
    assert_eq!(
        m("quad_peer_edges"),
        0.0,
        "no proximity links in a room: {page}"
    );
    for bot in &bots {
        assert_eq!(
            bot.state().members.len(),
            5,
            "members: {:?}",
            bot.state().members
        );
    }

    // A sixth joins: everyone gets its audio after a renegotiation, and it gets everyone.
    let offers_before: Vec<u32> = bots.iter().map(|b| b.state().server_offers).collect();
    bots.push(RoomBot::join(server.addr(), options("bot5", at, Some(30), false)).await?);
    all_hear_each_other(&bots, 25).await?;
    for (bot, before) in bots.iter().zip(&offers_before) {
        assert!(
            bot.state().server_offers > *before,
            "bot {} was not renegotiated",
            bot.id
        );
    }

    // Bot 2 vanishes: no goodbye on either connection (it leaves when its second of grace
    // for a resume is over).
    let offers_before: Vec<u32> = bots
        .iter()
        .filter(|b| b.id != bots[2].id)
        .map(|b| b.state().server_offers)
        .collect();
    let gone = bots.remove(2);
    let gone_id = gone.id;
    drop(gone);
    for bot in &bots {
        bot.wait_for(PATIENCE, "the vanished bot leaves the member list", |s| {
            !s.members.iter().any(|m| m.id == gone_id) && !s.members.is_empty()
        })
        .await?;
    }
    // Its stream is withdrawn by a server offer to each of the others; after that nothing
    // more arrives from it, and the others carry on.
    for (bot, before) in bots.iter().zip(&offers_before) {
        bot.wait_for(PATIENCE, "the offer that withdraws the vanished bot", |s| {
            s.server_offers > *before
        })
        .await?;
    }
    let frozen: Vec<u64> = bots
        .iter()
        .map(|b| b.state().packets_from(gone_id, "mic"))
        .collect();
    let before: Vec<u64> = bots
        .iter()
        .map(|b| b.state().packets_from(bots[0].id, "mic"))
        .collect();
    for (i, bot) in bots.iter().enumerate().skip(1) {
        bot.wait_for(PATIENCE, "bot 0's audio to keep coming", |s| {
            s.packets_from(bots[0].id, "mic") > before[i] + 10
        })
        .await?;
    }
    for (i, bot) in bots.iter().enumerate() {
        let s = bot.state();
        assert_eq!(
            s.packets_from(gone_id, "mic"),
            frozen[i],
            "bot {} still receives the vanished bot",
            bot.id
        );
        assert!(
            s.errors.is_empty(),
            "bot {} got errors: {:?}",
            bot.id,
            s.errors
        );
        assert!(s.failed.is_none(), "bot {} failed: {:?}", bot.id, s.failed);
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_loudest_speakers_are_forwarded() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.room_max_speakers = 3).await?;
    let at = room_spot(&campus(), 1)?;
    let listener = RoomBot::join(server.addr(), options("listener", at, None, false)).await?;
    let mut speakers = Vec::new();
    // Levels in -dBov: speaker 0 is the loudest, speaker 9 the quietest.
    for i in 0..10u8 {
        speakers.push(
            RoomBot::join(
                server.addr(),
                options(&format!("speaker{i}"), at, Some(10 + 10 * i), false),
            )
            .await?,
        );
    }
    for speaker in &speakers {
        speaker
            .wait_for(PATIENCE, "a connected room connection", |s| {
                s.connected_at.is_some()
            })
            .await?;
    }
    let loudest: Vec<AvatarId> = speakers[..3].iter().map(|b| b.id).collect();
    listener.wait_receiving(&loudest, "mic", 25).await?;
    listener
        .wait_for(PATIENCE, "the three loudest named as speakers", |s| {
            s.speakers == loudest
        })
        .await?;

    // Over a window, only the three loudest arrive.
    let count = |bot: &RoomBot| -> Vec<u64> {
        let s = bot.state();
        speakers
            .iter()
            .map(|b| s.packets_from(b.id, "mic"))
            .collect()
    };
    let before = count(&listener);
    listener
        .wait_for(PATIENCE, "20 more packets from each of the loudest", |s| {
            speakers[..3]
                .iter()
                .zip(&before)
                .all(|(b, n)| s.packets_from(b.id, "mic") >= n + 20)
        })
        .await?;
    let after = count(&listener);
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    for (i, d) in delta.iter().enumerate() {
        if i < 3 {
            assert!(
                *d >= 20,
                "speaker {i} (loud) got {d} packets through: {delta:?}"
            );
        } else {
            assert_eq!(*d, 0, "speaker {i} (quiet) was forwarded: {delta:?}");
        }
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_media_connection_is_removed_after_the_timeout_and_rejoins() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.room_member_timeout_secs = 1).await?;
    let at = room_spot(&campus(), 2)?;
    let a = RoomBot::join(server.addr(), options("a", at, Some(20), false)).await?;
    let b = RoomBot::join(server.addr(), options("b", at, Some(20), false)).await?;
    b.wait_receiving(&[a.id], "mic", 20).await?;
    a.drop_media();
    // The server notices, withdraws a's stream from b, and asks a to connect again; a does.
    a.wait_for(PATIENCE, "a second JoinRoomMedia", |s| s.joins >= 2)
        .await?;
    // The client starts its room afresh at the second JoinRoomMedia (as the page does): the
    // server tells it again who is in the room.
    a.wait_for(PATIENCE, "the member list after the rejoin", |s| {
        let mut ids: Vec<_> = s.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids == [a.id.min(b.id), a.id.max(b.id)]
    })
    .await?;
    hear_each_other_again(&a, &b).await?;
    assert!(
        b.state().errors.is_empty(),
        "b got errors: {:?}",
        b.state().errors
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_lines_are_reused_as_people_come_and_go() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let at = room_spot(&campus(), 1)?;
    let a = RoomBot::join(server.addr(), options("a", at, Some(20), false)).await?;
    // Six newcomers one after another, each heard by a and hearing a, then gone.
    for i in 0..6 {
        let n = RoomBot::join(
            server.addr(),
            options(&format!("n{i}"), at, Some(20), false),
        )
        .await?;
        a.wait_receiving(&[n.id], "mic", 20).await?;
        n.wait_receiving(&[a.id], "mic", 20).await?;
        let gone = n.id;
        n.leave().await;
        a.wait_for(PATIENCE, "the newcomer gone from a's room", |s| {
            s.members.iter().all(|m| m.id != gone)
        })
        .await?;
    }
    // a's connection still has its own three m-lines and one for the others' microphones
    // (nine, one per newcomer, if each had made its own).
    let last = RoomBot::join(server.addr(), options("last", at, Some(20), false)).await?;
    a.wait_receiving(&[last.id], "mic", 20).await?;
    let (m_lines, errors) = {
        let s = a.state();
        (s.m_lines, s.errors.clone())
    };
    assert_eq!(m_lines, 4, "the m-line is reused");
    assert!(errors.is_empty(), "a got errors: {errors:?}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_whose_answer_is_lost_is_sent_again_then_the_media_starts_over()
-> anyhow::Result<()> {
    // The answer wait is the member timeout.
    let server = TestServer::start_with(|c| c.room_member_timeout_secs = 1).await?;
    let at = room_spot(&campus(), 2)?;
    // a's answer to the offer of b's microphone is lost: the offer comes again, and a
    // answers it on the same connection.
    let a = RoomBot::join(
        server.addr(),
        RoomBotOptions {
            lose_answers: 1,
            ..options("a", at, Some(20), false)
        },
    )
    .await?;
    let b = RoomBot::join(server.addr(), options("b", at, Some(20), false)).await?;
    a.wait_receiving(&[b.id], "mic", 20).await?;
    b.wait_receiving(&[a.id], "mic", 20).await?;
    let (offers, joins) = {
        let s = a.state();
        (s.server_offers, s.joins)
    };
    assert!(offers >= 2, "offered again: {offers}");
    assert_eq!(joins, 1, "the same connection, not a new one");
    // c loses every answer to the first offer (it and both times it is sent again): its
    // media is started over, and the new connection's negotiation goes through.
    let c = RoomBot::join(
        server.addr(),
        RoomBotOptions {
            lose_answers: 3,
            ..options("c", at, Some(20), false)
        },
    )
    .await?;
    c.wait_for(PATIENCE, "a second JoinRoomMedia", |s| s.joins >= 2)
        .await?;
    c.wait_receiving(&[a.id, b.id], "mic", 20).await?;
    a.wait_receiving(&[c.id], "mic", 20).await?;
    for (name, bot) in [("a", &a), ("b", &b)] {
        let errors = bot.state().errors.clone();
        assert!(errors.is_empty(), "{name} got errors: {errors:?}");
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_media_path_is_restarted_without_leaving_the_room() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let at = room_spot(&campus(), 2)?;
    // a reaches the SFU through a proxy (it rewrites the server's candidates); b directly.
    let a = RoomBot::join(
        server.addr(),
        RoomBotOptions {
            lossy: true,
            ..options("a", at, Some(20), false)
        },
    )
    .await?;
    let b = RoomBot::join(server.addr(), options("b", at, Some(20), false)).await?;
    b.wait_receiving(&[a.id], "mic", 20).await?;
    a.wait_receiving(&[b.id], "mic", 20).await?;
    // The proxy stops answering while both ends stay up (a NAT binding or relay gone). The
    // server's ICE keeps its selected pair, so only a restart can find another: after 5 s
    // without a packet it offers one, and the new checks find the direct path, well before
    // the 10 s after which a member is removed.
    a.cut_media_path();
    a.wait_for(Duration::from_secs(20), "an ICE restart offer", |s| {
        s.ice_restarts >= 1
    })
    .await?;
    hear_each_other_again(&a, &b).await?;
    let (joins, errors) = {
        let s = a.state();
        (s.joins, s.errors.clone())
    };
    assert_eq!(joins, 1, "a was removed and joined the room again");
    assert!(errors.is_empty(), "a got errors: {errors:?}");
    assert!(b.state().errors.is_empty(), "b got errors");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_into_a_room_switches_from_proximity_to_room_media_and_back() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    // Classroom A's door is at tiles x 6-7 on row 10; the hallway is below it.
    let hallway = [224.0, 400.0];
    let mut friend = Bot::join(server.addr(), "friend", Some([224.0, 430.0])).await?;
    let walker = RoomBot::join(server.addr(), options("walker", hallway, Some(20), false)).await?;
    friend
        .wait_until(PATIENCE, |f| f.peers.contains_key(&walker.id))
        .await?;
    let inside = RoomBot::join(
        server.addr(),
        options("inside", room_spot(&campus(), 0)?, Some(20), false),
    )
    .await?;

    walker.walk(dir::UP, 40);
    walker
        .wait_for(PATIENCE, "JoinRoomMedia", |s| s.room.is_some())
        .await?;
    friend
        .wait_until(PATIENCE, |f| !f.peers.contains_key(&walker.id))
        .await?;
    walker.wait_receiving(&[inside.id], "mic", 20).await?;
    inside.wait_receiving(&[walker.id], "mic", 20).await?;

    walker.walk(dir::DOWN, 40);
    walker
        .wait_for(PATIENCE, "LeaveRoomMedia", |s| s.room.is_none())
        .await?;
    friend
        .wait_until(PATIENCE, |f| f.peers.contains_key(&walker.id))
        .await?;
    // Make before break, both ways: the room came before the hallway link went, and the
    // hallway link came back before the room went.
    let log = walker.state().log.clone();
    let f = friend.id;
    let join = log
        .iter()
        .position(|e| matches!(e, MediaEvent::JoinRoom(_)));
    let leave = log
        .iter()
        .position(|e| matches!(e, MediaEvent::LeaveRoom(_)));
    let unlink = log.iter().position(|e| *e == MediaEvent::DisconnectPeer(f));
    let relink = log.iter().rposition(|e| *e == MediaEvent::ConnectPeer(f));
    assert!(
        join.is_some() && join < unlink && unlink < relink && relink < leave,
        "walker's media log: {log:?}"
    );
    inside
        .wait_for(PATIENCE, "the walker leaves the member list", |s| {
            s.members.len() == 1
        })
        .await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_room_signaling_is_refused_and_the_room_goes_on() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    // Outside any room: refused.
    let mut outsider =
        Bot::join(server.addr(), "outsider", Some(campus().spawn.to_array())).await?;
    outsider
        .send(&ClientMsg::RoomSignal(Signal::Description {
            kind: SdpKind::Offer,
            sdp: "v=0".into(),
        }))
        .await?;
    outsider.expect_error(ErrorCode::WrongState).await?;

    let at = room_spot(&campus(), 0)?;
    let a = RoomBot::join(server.addr(), options("a", at, Some(20), false)).await?;
    let b = RoomBot::join(server.addr(), options("b", at, Some(20), false)).await?;
    b.wait_receiving(&[a.id], "mic", 10).await?;

    // A raw client in the room sends garbage SDP, a renewal, an answer nobody asked for,
    // and junk candidates.
    let mut rogue = Bot::join(server.addr(), "rogue", Some(at)).await?;
    rogue
        .wait_until(PATIENCE, |r| !r.room_msgs.is_empty())
        .await?;
    rogue
        .send(&ClientMsg::RoomSignal(Signal::Description {
            kind: SdpKind::Offer,
            sdp: "this is not SDP".into(),
        }))
        .await?;
    rogue.expect_error(ErrorCode::Malformed).await?;
    // A renewal is for hallway links: the room's connection is not renewed.
    rogue
        .send(&ClientMsg::RoomSignal(Signal::Renew { generation: 1 }))
        .await?;
    rogue.expect_error(ErrorCode::Malformed).await?;
    rogue
        .send(&ClientMsg::RoomSignal(Signal::Description {
            kind: SdpKind::Rollback,
            sdp: String::new(),
        }))
        .await?;
    rogue
        .send(&ClientMsg::RoomSignal(Signal::Candidate {
            candidate: "candidate:garbage".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        }))
        .await?;
    rogue.listen_for(Duration::from_millis(300)).await?;

    let before = b.state().packets_from(a.id, "mic");
    b.wait_for(PATIENCE, "a's audio keeps coming", |s| {
        s.packets_from(a.id, "mic") > before + 25
    })
    .await?;
    assert!(a.state().errors.is_empty() && b.state().errors.is_empty());
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_the_microphone_lines_is_refused_and_the_offer_answered_again()
-> anyhow::Result<()> {
    // The answer wait is the member timeout.
    let server = TestServer::start_with(|c| c.room_member_timeout_secs = 1).await?;
    let at = room_spot(&campus(), 1)?;
    // a answers the offer of b's microphone without the m-line the SFU wrote for it.
    let a = RoomBot::join(
        server.addr(),
        RoomBotOptions {
            mangle_answers: 1,
            ..options("a", at, Some(20), false)
        },
    )
    .await?;
    let b = RoomBot::join(server.addr(), options("b", at, Some(20), false)).await?;
    a.wait_for(PATIENCE, "the answer refused", |s| {
        s.errors.iter().any(|e| e.code == ErrorCode::Malformed)
    })
    .await?;
    let refusal = a
        .state()
        .errors
        .iter()
        .find(|e| e.code == ErrorCode::Malformed)
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(refusal.contains("lacks m-line q"), "{refusal}");
    // The offer stays out, comes again, and its answer goes through on the same
    // connection; b, whose answers are whole, heard nothing of it.
    a.wait_receiving(&[b.id], "mic", 20).await?;
    b.wait_receiving(&[a.id], "mic", 20).await?;
    let (offers, joins) = {
        let s = a.state();
        (s.server_offers, s.joins)
    };
    assert!(offers >= 2, "offered again: {offers}");
    assert_eq!(joins, 1, "the same connection, not a new one");
    let errors = b.state().errors.clone();
    assert!(errors.is_empty(), "b got errors: {errors:?}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_gets_the_simulcast_layer_that_fits_its_tile() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let at = room_spot(&campus(), 3)?;
    let camera = RoomBot::join(server.addr(), options("camera", at, None, true)).await?;
    let small = RoomBot::join(server.addr(), options("small", at, None, false)).await?;
    let large = RoomBot::join(server.addr(), options("large", at, None, false)).await?;
    // Reports no tile size: gets the middle layer.
    let plain = RoomBot::join(server.addr(), options("plain", at, None, false)).await?;
    for viewer in [&small, &large] {
        // A client reports its tiles once it shows the room.
        viewer
            .wait_for(PATIENCE, "JoinRoomMedia", |s| s.room.is_some())
            .await?;
    }
    small.tiles(vec![(camera.id, 160)]);
    large.tiles(vec![(camera.id, 1280)]);
    let stream = format!("{}:camera", camera.id.0);
    let layers = |b: &RoomBot| b.state().layers.get(&stream).copied().unwrap_or_default();
    for (viewer, layer) in [(&small, 0), (&large, 2), (&plain, 1)] {
        viewer
            .wait_for(PATIENCE, &format!("camera layer {layer}"), |s| {
                s.layers.get(&stream).is_some_and(|l| l[layer] >= 10)
            })
            .await?;
    }
    // Over a window, each gets its layer and no other.
    let before = [layers(&small), layers(&large), layers(&plain)];
    for (i, (viewer, layer)) in [(&small, 0), (&large, 2), (&plain, 1)]
        .into_iter()
        .enumerate()
    {
        viewer
            .wait_for(
                PATIENCE,
                &format!("20 more packets of layer {layer}"),
                |s| {
                    s.layers
                        .get(&stream)
                        .is_some_and(|l| l[layer] >= before[i][layer] + 20)
                },
            )
            .await?;
    }
    let after = [layers(&small), layers(&large), layers(&plain)];
    for (i, wanted) in [0, 2, 1].into_iter().enumerate() {
        for layer in 0..3 {
            let got = after[i][layer] - before[i][layer];
            if layer == wanted {
                assert!(
                    got >= 20,
                    "viewer {i} got {got} packets of its layer {layer}: {after:?}"
                );
            } else {
                assert_eq!(
                    got, 0,
                    "viewer {i} got layer {layer} too: {before:?} -> {after:?}"
                );
            }
        }
    }

    // The small tile grows: that viewer moves up to the full layer at its next keyframe,
    // and its sequence numbers run on without a gap.
    let jumps_before = small.state().seq_jumps.get(&stream).copied().unwrap_or(0);
    let full_before = layers(&small)[2];
    small.tiles(vec![(camera.id, 1280)]);
    small
        .wait_for(PATIENCE, "the full layer after the tile grew", |s| {
            s.layers
                .get(&stream)
                .is_some_and(|l| l[2] >= full_before + 20)
        })
        .await?;
    assert_eq!(
        small.state().seq_jumps.get(&stream).copied().unwrap_or(0),
        jumps_before,
        "the layer switch left a gap in sequence numbers"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_are_recovered_by_nack_on_both_legs() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let at = room_spot(&campus(), 2)?;
    // Both bots reach the server through proxies that drop the first copy of every 10th
    // video packet: the publisher's on the way to the server, the viewer's on the way from
    // it. Only retransmissions fill those gaps.
    let lossy = |name: &str, camera| RoomBotOptions {
        lossy: true,
        token: None,
        ..options(name, at, None, camera)
    };
    let camera = RoomBot::join(server.addr(), lossy("camera", true)).await?;
    let viewer = RoomBot::join(server.addr(), lossy("viewer", false)).await?;
    let stream = format!("{}:camera", camera.id.0);
    viewer.wait_receiving(&[camera.id], "camera", 30).await?;
    let start = viewer.state().last_seq.get(&stream).copied().unwrap_or(0);
    // How far past `start` the newest sequence number seen is. (The last one received may
    // be a late retransmission of an older one.)
    let ahead = |seqs: Option<&std::collections::HashSet<u16>>| -> u16 {
        seqs.into_iter()
            .flatten()
            .map(|q| q.wrapping_sub(start))
            .filter(|d| *d < 0x8000)
            .max()
            .unwrap_or(0)
    };
    // About 3 s of video (30 frames a second).
    viewer
        .wait_for(PATIENCE, "90 more video packets", |s| {
            ahead(s.seqs.get(&stream)) >= 90
        })
        .await?;
    let seqs = viewer
        .state()
        .seqs
        .get(&stream)
        .cloned()
        .unwrap_or_default();
    let end = start.wrapping_add(ahead(Some(&seqs)));
    // Leave the last half second for retransmissions still under way.
    let span: Vec<u16> = (0..end.wrapping_sub(start).saturating_sub(15))
        .map(|i| start.wrapping_add(i))
        .collect();
    let missing = span.iter().filter(|q| !seqs.contains(q)).count();
    assert!(span.len() >= 60, "too few packets to judge: {}", span.len());
    // Without retransmission about one in five would be missing.
    assert!(
        missing * 100 <= span.len(),
        "{missing} of {} video packets never arrived",
        span.len()
    );
    server.stop().await;
    Ok(())
}

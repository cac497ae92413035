//! Proximity links: bots that come near each other are told to connect, with opposite
//! politeness; they are told to disconnect when they part; the boundary does not flap; a
//! crowd respects the cap; rooms have no links; signaling is relayed only along links.

use glam::Vec2;
use quad_shared::movement::{SPEED, STEP_SECONDS, dir};
use quad_shared::protocol::{ClientMsg, ErrorCode, MediaFlags, SdpKind, Signal};
use quad_shared::proximity::ProximityRules;
use quad_tests::{Bot, PATIENCE, PeerEvent, TestServer, campus};
use std::time::Duration;

const STEP: f32 = SPEED * STEP_SECONDS;

/// A point `offset` from the campus spawn, checked to be walkable (a map edit that breaks
/// a test's geometry fails here, loudly).
fn spot(offset: [f32; 2]) -> [f32; 2] {
    let map = campus();
    let p = map.spawn + Vec2::from_array(offset);
    assert!(
        map.collision.walkable(p),
        "test spot {p} is not walkable on the campus"
    );
    p.to_array()
}

/// Steps to walk `px` pixels.
fn steps(px: f32) -> u32 {
    (px / STEP).round() as u32
}

#[tokio::test]
async fn approaching_connects_and_parting_disconnects() -> anyhow::Result<()> {
    let rules = ProximityRules::default();
    let server = TestServer::start().await?;
    let mut a = Bot::join(server.addr(), "Ada", Some(spot([0.0, 0.0]))).await?;
    let mut b = Bot::join(server.addr(), "Bo", Some(spot([0.0, 250.0]))).await?;
    let (a_id, b_id) = (a.id, b.id);
    a.listen_for(Duration::from_millis(300)).await?;
    assert!(a.peers.is_empty(), "linked from 250 px away");

    b.walk(dir::UP, steps(250.0 - 130.0)).await?;
    b.wait_until(PATIENCE, |b| b.peers.contains_key(&a_id))
        .await?;
    a.wait_until(PATIENCE, |a| a.peers.contains_key(&b_id))
        .await?;
    assert_ne!(a.peers[&b_id], b.peers[&a_id], "exactly one side is polite");

    b.walk(dir::DOWN, steps(rules.disconnect_radius - 130.0 + 30.0))
        .await?;
    b.wait_until(PATIENCE, |b| !b.peers.contains_key(&a_id))
        .await?;
    a.wait_until(PATIENCE, |a| !a.peers.contains_key(&b_id))
        .await?;
    let polite = a
        .peer_events
        .first()
        .is_some_and(|e| matches!(e, PeerEvent::Connect(_, true)));
    assert_eq!(
        a.peer_events,
        vec![
            PeerEvent::Connect(b_id, polite),
            PeerEvent::Disconnect(b_id)
        ]
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn pacing_inside_the_hysteresis_band_does_not_flap() -> anyhow::Result<()> {
    let rules = ProximityRules::default();
    let server = TestServer::start().await?;
    let mut a = Bot::join(server.addr(), "Ada", Some(spot([0.0, 0.0]))).await?;
    let mut b = Bot::join(
        server.addr(),
        "Bo",
        Some(spot([0.0, rules.connect_radius - 20.0])),
    )
    .await?;
    let b_id = b.id;
    a.wait_until(PATIENCE, |a| a.peers.contains_key(&b_id))
        .await?;
    // Pace between just outside the connect radius and just inside the disconnect radius.
    let band = rules.disconnect_radius - rules.connect_radius;
    b.walk(dir::DOWN, steps(20.0 + band / 4.0)).await?;
    for _ in 0..3 {
        b.walk(dir::DOWN, steps(band / 2.0)).await?;
        b.walk(dir::UP, steps(band / 2.0)).await?;
    }
    a.listen_for(Duration::from_millis(300)).await?;
    assert_eq!(a.peer_events.len(), 1, "flapped: {:?}", a.peer_events);
    assert!(a.peers.contains_key(&b_id));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_crowd_respects_the_cap() -> anyhow::Result<()> {
    let cap = ProximityRules::default().max_peers as usize;
    let server = TestServer::start().await?;
    let mut bots = Vec::new();
    for i in 0..10 {
        let offset = [(i % 5) as f32 * 24.0 - 48.0, (i / 5) as f32 * 30.0];
        bots.push(Bot::join(server.addr(), &format!("bot{i}"), Some(spot(offset))).await?);
    }
    for bot in &mut bots {
        bot.wait_until(PATIENCE, |b| !b.peers.is_empty()).await?;
    }
    for bot in &mut bots {
        bot.listen_for(Duration::from_millis(200)).await?;
    }
    let mut links = 0;
    for bot in &bots {
        assert!(
            bot.peers.len() <= cap,
            "{} has {} links",
            bot.id,
            bot.peers.len()
        );
        links += bot.peers.len();
    }
    // Ten avatars all within reach of each other: the cap, not distance, limits the links.
    assert!(links >= 2 * 25, "only {} links in a tight crowd", links / 2);
    // Links are symmetric.
    for bot in &bots {
        for peer in bot.peers.keys() {
            let other = bots.iter().find(|b| b.id == *peer).expect("peer is a bot");
            assert!(
                other.peers.contains_key(&bot.id),
                "one-sided link {} -> {}",
                bot.id,
                peer
            );
        }
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn signaling_is_relayed_only_along_links() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut a = Bot::join(server.addr(), "Ada", Some(spot([0.0, 0.0]))).await?;
    let mut b = Bot::join(server.addr(), "Bo", Some(spot([0.0, 60.0]))).await?;
    let mut far = Bot::join(server.addr(), "Far", Some(spot([400.0, 0.0]))).await?;
    let (b_id, far_id) = (b.id, far.id);
    a.wait_until(PATIENCE, |a| a.peers.contains_key(&b_id))
        .await?;

    let offer = Signal::Description {
        kind: SdpKind::Offer,
        sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into(),
    };
    a.send(&ClientMsg::Signal {
        to: b_id,
        signal: offer.clone(),
    })
    .await?;
    b.wait_until(PATIENCE, |b| !b.signals.is_empty()).await?;
    assert_eq!(b.signals[0], (a.id, offer.clone()));

    a.send(&ClientMsg::Signal {
        to: far_id,
        signal: offer.clone(),
    })
    .await?;
    let e = a.expect_error(ErrorCode::Forbidden).await?;
    assert!(e.message.contains("no peer link"), "{}", e.message);
    // Nor to an avatar that does not exist.
    a.send(&ClientMsg::Signal {
        to: quad_shared::AvatarId(9999),
        signal: offer,
    })
    .await?;
    a.expect_error(ErrorCode::Forbidden).await?;
    far.listen_for(Duration::from_millis(400)).await?;
    assert!(
        far.signals.is_empty(),
        "a forged signal was delivered: {:?}",
        far.signals
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn no_links_inside_a_classroom() -> anyhow::Result<()> {
    let map = campus();
    let room = map
        .zones
        .iter()
        .find(|z| z.name == "Classroom A")
        .expect("Classroom A");
    // Two free spots 40 px apart inside the room.
    let inside: Vec<[f32; 2]> = (0..room.rect.h as u32 / 8)
        .flat_map(|j| (0..room.rect.w as u32 / 8).map(move |i| (i, j)))
        .map(|(i, j)| {
            Vec2::new(
                room.rect.x + 12.0 + i as f32 * 8.0,
                room.rect.y + 12.0 + j as f32 * 8.0,
            )
        })
        .filter(|p| room.rect.contains(*p) && map.collision.walkable(*p))
        .map(|p| p.to_array())
        .collect();
    let (p, q) = inside
        .iter()
        .find_map(|p| {
            let q = [p[0] + 40.0, p[1]];
            (room.rect.contains(Vec2::from_array(q)) && map.collision.walkable(Vec2::from_array(q)))
                .then_some((*p, q))
        })
        .expect("two free spots in Classroom A");
    let server = TestServer::start().await?;
    let mut a = Bot::join(server.addr(), "Ada", Some(p)).await?;
    let mut b = Bot::join(server.addr(), "Bo", Some(q)).await?;
    a.listen_for(Duration::from_millis(500)).await?;
    b.drain().await?;
    assert_eq!(a.me, p, "spawned in the room");
    assert!(
        a.peers.is_empty() && b.peers.is_empty(),
        "linked inside a room"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn media_state_goes_to_linked_peers_only() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut a = Bot::join(server.addr(), "Ada", Some(spot([-144.0, 0.0]))).await?;
    // Ada's state is known before anyone links with her.
    let muted = MediaFlags {
        mic: false,
        camera: true,
        screen: false,
    };
    a.send(&ClientMsg::Media(muted)).await?;
    let mut b = Bot::join(server.addr(), "Bo", Some(spot([-144.0, 60.0]))).await?;
    // Far away, in view but not linked.
    let mut c = Bot::join(server.addr(), "Cy", Some(spot([-144.0, 300.0]))).await?;
    let (a_id, b_id) = (a.id, b.id);
    b.wait_until(PATIENCE, |b| b.peers.contains_key(&a_id))
        .await?;
    assert_eq!(
        b.peer_media[&a_id], muted,
        "ConnectPeer carries Ada's state"
    );
    a.wait_until(PATIENCE, |a| a.peers.contains_key(&b_id))
        .await?;
    assert_eq!(a.peer_media[&b_id], MediaFlags::default());

    let live = MediaFlags {
        mic: true,
        camera: true,
        screen: false,
    };
    a.send(&ClientMsg::Media(live)).await?;
    b.wait_until(PATIENCE, |b| b.peer_media.get(&a_id) == Some(&live))
        .await?;
    // Saying the same again is not news.
    a.send(&ClientMsg::Media(live)).await?;
    b.listen_for(Duration::from_millis(300)).await?;
    assert_eq!(b.media_updates, vec![(a_id, live)]);
    c.listen_for(Duration::from_millis(300)).await?;
    assert!(
        c.media_updates.is_empty(),
        "an unlinked avatar heard: {:?}",
        c.media_updates
    );
    assert!(!c.peer_media.contains_key(&a_id));
    server.stop().await;
    Ok(())
}

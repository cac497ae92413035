//! A room member abusing the SFU's signaling: re-offering many times a second is refused
//! after its offer budget, and floods of ICE candidates or `RoomTiles` never queue more than
//! a member's allowance; the room goes on meanwhile. The abuser is a raw [`Bot`] in the
//! room; two [`RoomBot`]s keep talking.
//!
//! Run in a loopback-only network namespace, as CI does:
//! `unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh cargo test -p quad-tests --test sfu_abuse`

use quad_server::media::sfu::limits::{MAX_QUEUED, OFFER_BURST};
use quad_shared::AvatarId;
use quad_shared::protocol::{ClientMsg, ErrorCode, SdpKind, ServerMsg, Signal};
use quad_tests::room_bot::{RoomBot, RoomBotOptions, client_offer, room_spot};
use quad_tests::{Bot, PATIENCE, TestServer, campus, http_get, metric};
use std::time::{Duration, Instant};

/// Commands one member's client may have queued: 64, as the README says.
const ALLOWANCE: u64 = 64;

fn options(name: &str, spawn: [f32; 2]) -> RoomBotOptions {
    RoomBotOptions {
        name: name.into(),
        spawn,
        mic_level: Some(20),
        camera: false,
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

/// Two talking room bots and a raw client, all in the room at `at`, the raw one told to
/// join the room's media.
async fn room_with_rogue(
    server: &TestServer,
    at: [f32; 2],
) -> anyhow::Result<(RoomBot, RoomBot, Bot)> {
    let a = RoomBot::join(server.addr(), options("a", at)).await?;
    let b = RoomBot::join(server.addr(), options("b", at)).await?;
    b.wait_receiving(&[a.id], "mic", 10).await?;
    let mut rogue = Bot::join(server.addr(), "rogue", Some(at)).await?;
    rogue
        .wait_until(PATIENCE, |r| {
            r.room_msgs
                .iter()
                .any(|m| matches!(m, ServerMsg::JoinRoomMedia { .. }))
        })
        .await?;
    Ok((a, b, rogue))
}

/// `b` keeps receiving `a`'s microphone: 25 packets more than now.
async fn room_goes_on(a: &RoomBot, b: &RoomBot) -> anyhow::Result<()> {
    let before = b.state().packets_from(a.id, "mic");
    b.wait_for(PATIENCE, "a's audio keeps coming", |s| {
        s.packets_from(a.id, "mic") > before + 25
    })
    .await?;
    let (a_errors, b_errors) = (a.state().errors.clone(), b.state().errors.clone());
    assert!(
        a_errors.is_empty() && b_errors.is_empty(),
        "the well-behaved members got errors: {a_errors:?} {b_errors:?}"
    );
    Ok(())
}

/// The SFU's metric `name`, as `/metrics` gives it now.
async fn sfu_metric(server: &TestServer, name: &str) -> anyhow::Result<u64> {
    let (status, page) = http_get(server.addr(), "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    metric(&page, name)
        .map(|v| v as u64)
        .ok_or_else(|| anyhow::anyhow!("no {name} in /metrics"))
}

/// A client sending RTCP from a new SSRC in every packet (each would cost the server a
/// decryption state for the connection's life) is held to its allowance of sources: the
/// rest is dropped and counted, and its connection and the room go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtcp_from_ever_new_sources_is_bounded_and_the_room_goes_on() -> anyhow::Result<()> {
    use quad_server::media::sfu::ssrc_quota::MAX_SSRCS_PER_KIND;
    let server = TestServer::start().await?;
    let at = room_spot(&campus(), 0)?;
    let a = RoomBot::join(server.addr(), options("a", at)).await?;
    let b = RoomBot::join(server.addr(), options("b", at)).await?;
    b.wait_receiving(&[a.id], "mic", 10).await?;
    let before = sfu_metric(&server, "quad_sfu_udp_ssrc_refused_total").await?;
    let sent = 2 * MAX_SSRCS_PER_KIND as u32;
    b.send_receiver_reports(0x5000_0000..0x5000_0000 + sent)
        .await?;
    // The first reports fill b's allowance (less the sources it already used); every later
    // one is refused. UDP on loopback may lose a few.
    let least = u64::from(sent) - MAX_SSRCS_PER_KIND as u64 - 16;
    let refused = sfu_metric_until(&server, "quad_sfu_udp_ssrc_refused_total", |v| {
        v >= before + least
    })
    .await?
        - before;
    assert!(
        (least..=u64::from(sent)).contains(&refused),
        "{refused} of {sent} reports from new sources refused; expected at least {least}"
    );
    room_goes_on(&a, &b).await?;
    // b's own audio still reaches a: its known sources are admitted.
    room_goes_on(&b, &a).await?;
    Ok(())
}

/// Polls the SFU's metric `name` until `done` holds for it (for [`PATIENCE`] at most) and
/// gives its last value.
async fn sfu_metric_until(
    server: &TestServer,
    name: &str,
    done: impl Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = sfu_metric(server, name).await?;
        if done(value) || Instant::now() >= deadline {
            return Ok(value);
        }
        // A poll interval, not a wait for something to happen.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until no client command is queued in the SFU any more.
async fn queues_drain(server: &TestServer) -> anyhow::Result<()> {
    let queued = sfu_metric_until(server, "quad_sfu_queued_commands", |v| v == 0).await?;
    anyhow::ensure!(
        queued == 0,
        "the SFU's queues did not drain ({queued} queued)"
    );
    Ok(())
}

/// `RateLimited` errors from the SFU (not the session's own frame limit) among `errors`.
fn sfu_rate_limited(rogue: &Bot, seen: usize) -> usize {
    rogue.errors[seen..]
        .iter()
        .filter(|e| e.code == ErrorCode::RateLimited && !e.message.starts_with("too many frames"))
        .count()
}

fn answers(rogue: &Bot) -> usize {
    rogue
        .room_msgs
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMsg::RoomSignal(Signal::Description {
                    kind: SdpKind::Answer,
                    ..
                })
            )
        })
        .count()
}

#[test]
fn the_allowance_is_the_documented_one() {
    assert_eq!(MAX_QUEUED as u64, ALLOWANCE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_offering_many_times_a_second_is_refused_after_the_budget() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (a, b, mut rogue) = room_with_rogue(&server, room_spot(&campus(), 0)?).await?;
    let offer = client_offer().await?;
    let seen = rogue.errors.len();

    // 10 offers at once: the session lets through 10 room descriptions in a row (then 2 a
    // second), so all reach the SFU's front door.
    const OFFERS: usize = 10;
    let started = Instant::now();
    for _ in 0..OFFERS {
        rogue
            .send(&ClientMsg::RoomSignal(Signal::Description {
                kind: SdpKind::Offer,
                sdp: offer.clone(),
            }))
            .await?;
    }
    let sent_in = started.elapsed();
    // Each offer is answered or refused, once.
    rogue
        .wait_until(PATIENCE, |r| answers(r) + r.errors.len() - seen >= OFFERS)
        .await?;
    let answered = answers(&rogue);
    let rate_limited = sfu_rate_limited(&rogue, seen);
    let other: Vec<&str> = rogue.errors[seen..]
        .iter()
        .filter(|e| e.code != ErrorCode::RateLimited)
        .map(|e| e.message.as_str())
        .collect();
    println!(
        "re-offer flood: {OFFERS} offers sent in {sent_in:?}: {answered} answered, \
         {rate_limited} refused by the offer budget, {} refused otherwise {other:?}",
        other.len()
    );
    let budget = OFFER_BURST as usize;
    // Sent within a second: at most the burst (and what a second earns) got past the door.
    assert!(
        rate_limited >= OFFERS - budget - 1,
        "only {rate_limited} of {OFFERS} offers were refused by the budget"
    );
    assert!(answered <= budget + 1, "{answered} offers were answered");
    let refusal = rogue.errors[seen..]
        .iter()
        .find(|e| e.code == ErrorCode::RateLimited)
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(refusal.contains("too many room offers"), "{refusal}");

    room_goes_on(&a, &b).await?;
    server.stop().await;
    Ok(())
}

/// The raw client offers, then at once sends `flood` of `make(i)`: they queue behind the
/// offer while the server builds its connection. The first `burst` go at once, the rest
/// paced at the session's own allowance for their kind (`per_sec`), so that all reach the
/// SFU. Returns the most commands one member had queued, and how many of the flood the SFU
/// refused for coming too fast.
async fn flood_after_offer(
    server: &TestServer,
    rogue: &mut Bot,
    (flood, burst, per_sec): (usize, usize, f64),
    make: impl Fn(usize) -> ClientMsg,
) -> anyhow::Result<(u64, usize)> {
    let offer = client_offer().await?;
    let seen = rogue.errors.len();
    rogue
        .send(&ClientMsg::RoomSignal(Signal::Description {
            kind: SdpKind::Offer,
            sdp: offer,
        }))
        .await?;
    let pace = Duration::from_secs_f64(1.1 / per_sec);
    for i in 0..flood {
        if i >= burst {
            tokio::time::sleep(pace).await;
        }
        rogue.send(&make(i)).await?;
    }
    rogue.wait_until(PATIENCE, |r| answers(r) >= 1).await?;
    queues_drain(server).await?;
    rogue.drain().await?;
    let peak = sfu_metric(server, "quad_sfu_queued_commands_peak").await?;
    Ok((peak, sfu_rate_limited(rogue, seen)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_candidates_is_bounded_and_the_room_goes_on() -> anyhow::Result<()> {
    // Candidates on 127.0.0.0/8 (not the server's own 127.0.0.1) pass the egress policy, so
    // they reach the member's connection; its checks to them stay on loopback.
    let server =
        TestServer::start_with(|c| c.allowed_peer_ranges = vec!["127.0.0.0/8".into()]).await?;
    let (a, b, mut rogue) = room_with_rogue(&server, room_spot(&campus(), 1)?).await?;
    // The session passes 64 room candidates in a row, then 10 a second: 84 reach the SFU.
    const FLOOD: usize = 84;
    let (peak, refused) = flood_after_offer(&server, &mut rogue, (FLOOD, 64, 10.0), |i| {
        ClientMsg::RoomSignal(Signal::Candidate {
            candidate: format!(
                "candidate:{i} 1 udp 2122260223 127.0.0.{} {} typ host",
                2 + i / 200,
                20000 + i
            ),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        })
    })
    .await?;
    println!(
        "candidate flood: {FLOOD} sent, {refused} refused; at most {peak} commands of one \
         member queued at once (allowance {MAX_QUEUED})"
    );
    assert!(peak <= ALLOWANCE, "{peak} commands queued at once");
    // However fast the server was, one ICE session takes at most 64 of them.
    assert!(
        refused >= FLOOD - 64,
        "only {refused} of {FLOOD} candidates were refused"
    );
    room_goes_on(&a, &b).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_room_tiles_is_bounded_and_the_room_goes_on() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (a, b, mut rogue) = room_with_rogue(&server, room_spot(&campus(), 2)?).await?;
    const FLOOD: usize = 110;
    let (a_id, b_id) = (a.id, b.id);
    let (peak, refused) = flood_after_offer(&server, &mut rogue, (FLOOD, FLOOD, 10.0), |i| {
        // The room's members at changing widths, and strangers.
        let mut tiles = vec![(a_id, 100 + i as u16), (b_id, 1000 - i as u16)];
        tiles.extend((0..30u32).map(|n| (AvatarId(1_000_000 + i as u32 * 30 + n), 320)));
        ClientMsg::RoomTiles(tiles)
    })
    .await?;
    println!(
        "tiles flood: {FLOOD} sent, {refused} refused; at most {peak} commands of one member \
         queued at once (allowance {MAX_QUEUED})"
    );
    assert!(peak <= ALLOWANCE, "{peak} commands queued at once");
    room_goes_on(&a, &b).await?;
    // The rogue is still a member: the others see three in the room.
    b.wait_for(PATIENCE, "three members", |s| s.members.len() == 3)
        .await?;
    server.stop().await;
    Ok(())
}

/// Whether `socket` receives a STUN binding request within `wait`.
async fn gets_connectivity_checks(socket: &tokio::net::UdpSocket, wait: Duration) -> bool {
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if n >= 20 && buf[..2] == [0x00, 0x01] => return true,
            Ok(Ok(_)) => {}
            _ => return false,
        }
    }
    false
}

/// A raw room member offers and trickles a candidate naming a UDP socket on 127.0.0.2:
/// whether the SFU then sends that socket connectivity checks.
async fn sfu_probes_a_trickled_candidate(allowed: Vec<String>) -> anyhow::Result<bool> {
    let server = TestServer::start_with(|c| c.allowed_peer_ranges = allowed).await?;
    let mut rogue = Bot::join(server.addr(), "rogue", Some(room_spot(&campus(), 0)?)).await?;
    rogue
        .wait_until(PATIENCE, |r| {
            r.room_msgs
                .iter()
                .any(|m| matches!(m, ServerMsg::JoinRoomMedia { .. }))
        })
        .await?;
    rogue
        .send(&ClientMsg::RoomSignal(Signal::Description {
            kind: SdpKind::Offer,
            sdp: client_offer().await?,
        }))
        .await?;
    rogue.wait_until(PATIENCE, |r| answers(r) >= 1).await?;
    let internal = tokio::net::UdpSocket::bind("127.0.0.2:0").await?;
    let port = internal.local_addr()?.port();
    rogue
        .send(&ClientMsg::RoomSignal(Signal::Candidate {
            candidate: format!("candidate:1 1 udp 2130706431 127.0.0.2 {port} typ host"),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        }))
        .await?;
    let probed = gets_connectivity_checks(&internal, Duration::from_secs(4)).await;
    server.stop().await;
    Ok(probed)
}

#[tokio::test]
async fn a_candidate_naming_an_internal_address_gets_no_connectivity_checks() -> anyhow::Result<()>
{
    // Where the operator allows the range, the SFU checks the candidate: the probe is real.
    assert!(
        sfu_probes_a_trickled_candidate(vec!["127.0.0.2".into()]).await?,
        "the SFU never checked an allowed candidate"
    );
    // By default loopback is refused: nothing is sent there.
    assert!(
        !sfu_probes_a_trickled_candidate(Vec::new()).await?,
        "the SFU sent connectivity checks to 127.0.0.2"
    );
    Ok(())
}

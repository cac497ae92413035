//! A hallway link whose media path is cut comes back once the path does (a test in
//! Chromium, one in Firefox): two pages linked in the hallway hear each other; the test drops every UDP datagram in its
//! network namespace (nftables) for [`CUT`], so their peer connection goes down while the
//! WebSocket (TCP) stays up; the pages restart ICE on a backoff for as long as the link
//! lasts, and once the path is back they hear each other again. Prints the ICE restarts
//! made and how long after the cut ended audio came back.
//!
//! A second test makes a link that says `connected` but carries nothing from a speaking
//! peer (the peer's page stops its senders, as a browser that lost its transport after an
//! ICE restart does): the other page renews the link, both pages open new connections, and
//! they hear each other again.
//!
//! Needs root for nftables (CI runs the tests as root, each binary in a network namespace
//! of its own): `unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh cargo test -p quad-tests --test browser_hallway_recovery`

use anyhow::{Context, Result, bail};
use quad_tests::browser::{Browser, Engine, HallwayPair, hallway_pair};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the media path is cut.
const CUT: Duration = Duration::from_secs(12);

/// Runs `nft` with `args`.
fn nft(args: &[&str]) -> Result<()> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .context("running nft (install nftables)")?;
    if !out.status.success() {
        bail!(
            "nft {args:?}: {} (this test needs root, in a network namespace of its own)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Drops every UDP datagram this namespace sends, until dropped.
struct UdpCut;

impl UdpCut {
    fn start() -> Result<UdpCut> {
        nft(&["add", "table", "inet", "quad_cut"])?;
        nft(&[
            "add",
            "chain",
            "inet",
            "quad_cut",
            "out",
            "{ type filter hook output priority 0; }",
        ])?;
        nft(&[
            "add", "rule", "inet", "quad_cut", "out", "meta", "l4proto", "udp", "drop",
        ])?;
        Ok(UdpCut)
    }
}

impl Drop for UdpCut {
    fn drop(&mut self) {
        if let Err(e) = nft(&["delete", "table", "inet", "quad_cut"]) {
            eprintln!("could not lift the cut: {e:#}");
        }
    }
}

fn peer_of(snap: &serde_json::Value, id: u64) -> serde_json::Value {
    snap["peers"]
        .as_array()
        .and_then(|v| v.iter().find(|p| p["id"] == id).cloned())
        .unwrap_or_default()
}

async fn restarts(page: &Browser, peer: u64) -> Result<u64> {
    Ok(peer_of(&page.snapshot().await?, peer)["restarts"]
        .as_u64()
        .unwrap_or(0))
}

quad_tests::in_each_engine!(a_hallway_link_cut_and_restored_recovers_with_ice_restarts);

/// The two engines' runs take turns: the cut drops every UDP datagram in the namespace,
/// the other run's included.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn a_hallway_link_cut_and_restored_recovers_with_ice_restarts(engine: Engine) -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let HallwayPair {
        a,
        b,
        a_id,
        b_id,
        a_at: _,
        driver: _driver,
        server,
    } = hallway_pair(engine).await?;
    a.wait_connected_to(b_id).await.context("before the cut")?;
    a.wait_audio_rising(b_id)
        .await
        .context("A, before the cut")?;
    b.wait_audio_rising(a_id)
        .await
        .context("B, before the cut")?;

    let cut = UdpCut::start()?;
    let began = Instant::now();
    a.wait_snapshot("A's link to go down", |s| {
        let state = &peer_of(s, b_id)["state"];
        *state == "disconnected" || *state == "failed"
    })
    .await?;
    let down = began.elapsed();
    tokio::time::sleep(CUT.saturating_sub(began.elapsed())).await;
    let during = restarts(&a, b_id).await? + restarts(&b, a_id).await?;
    drop(cut);
    let ended = Instant::now();

    let recovered = async {
        a.wait_connected_to(b_id)
            .await
            .context("A, after the cut")?;
        b.wait_connected_to(a_id)
            .await
            .context("B, after the cut")?;
        a.wait_audio_rising(b_id)
            .await
            .context("A, after the cut")?;
        b.wait_audio_rising(a_id)
            .await
            .context("B, after the cut")?;
        anyhow::Ok(())
    };
    if let Err(e) = recovered.await {
        // Both ends' view of the link says which side stopped: B not sending, A not
        // accepting, or a transceiver left in the wrong direction.
        let (at_a, at_b) = (a.link_report(b_id).await, b.link_report(a_id).await);
        return Err(e.context(format!("A's link: {at_a}\nB's link: {at_b}")));
    }
    let back = ended.elapsed();
    let total = restarts(&a, b_id).await? + restarts(&b, a_id).await?;
    println!(
        "media path cut for {CUT:?}: down after {} ms; {during} ICE restarts during the cut, \
         {total} in all; audio both ways {} ms after the path came back",
        down.as_millis(),
        back.as_millis()
    );
    assert!(
        during >= 2,
        "a link that stays down is restarted again, not once: {during} restarts"
    );
    // The link is the same one (the server never ended it): the pages still see each other.
    assert_eq!(
        a.snapshot().await?["peers"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        1
    );
    a.close().await?;
    b.close().await?;
    server.stop().await;
    Ok(())
}

quad_tests::in_each_engine!(a_connected_link_that_carries_nothing_is_renewed);

async fn a_connected_link_that_carries_nothing_is_renewed(engine: Engine) -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let HallwayPair {
        a,
        b,
        a_id,
        b_id,
        a_at: _,
        driver: _driver,
        server,
    } = hallway_pair(engine).await?;
    a.wait_connected_to(b_id).await?;
    a.wait_audio_rising(b_id).await.context("A, at first")?;
    b.wait_audio_rising(a_id).await.context("B, at first")?;

    // B's page stops sending to A; B's microphone stays on as far as anyone is told.
    b.eval(&format!(
        "window.quad.peerConnection({a_id}).getSenders().forEach(s => s.replaceTrack(null)); return true"
    ))
    .await?;
    let silent = Instant::now();
    let renewed = a
        .wait_snapshot("A to renew the silent link", |s| {
            peer_of(s, b_id)["generation"].as_u64().unwrap_or(0) >= 1
        })
        .await?;
    let after = silent.elapsed();
    b.wait_snapshot("B to follow the renewal", |s| {
        peer_of(s, a_id)["generation"] == peer_of(&renewed, b_id)["generation"]
    })
    .await?;
    let renewal = Instant::now();
    let recovered = async {
        a.wait_connected_to(b_id).await.context("A, renewed")?;
        a.wait_audio_rising(b_id).await.context("A, renewed")?;
        b.wait_audio_rising(a_id).await.context("B, renewed")?;
        anyhow::Ok(())
    };
    if let Err(e) = recovered.await {
        let (at_a, at_b) = (a.link_report(b_id).await, b.link_report(a_id).await);
        return Err(e.context(format!("A's link: {at_a}\nB's link: {at_b}")));
    }
    println!(
        "a silent link renewed {} ms after the silence began; audio both ways {} ms after",
        after.as_millis(),
        renewal.elapsed().as_millis()
    );
    // One renewal, not a chain of them: both pages are at the same generation, still linked.
    let (sa, sb) = (a.snapshot().await?, b.snapshot().await?);
    assert_eq!(peer_of(&sa, b_id)["generation"], 1, "A: {sa}");
    assert_eq!(peer_of(&sb, a_id)["generation"], 1, "B: {sb}");
    a.close().await?;
    b.close().await?;
    server.stop().await;
    Ok(())
}

//! SFU forwarding against the machine's own limit: `cargo xtask bench`.
//!
//! Starts the release `quad-server` (`QUAD_SERVER_BIN`, else `target/release/quad-server`)
//! and plays, with room bots in this process (webrtc-rs peers, SRTP):
//! - `audio_50_all`: a room of 50 microphones, every one forwarded (`room_max_speakers =
//!   50`): 50 × 49 streams at 50 packets/s;
//! - `audio_50_loudest`: the same room under the default rule (the 3 loudest forwarded);
//! - `camera_1_to_50`: one camera (three simulcast layers) and 50 viewers;
//! - `audio_10_all`: a light load, for the delay the SFU adds when it is not busy.
//!
//! For each it reports packets received per second, per CPU-second of the server, loss, the
//! one-way delay p50/p99 and the server's memory per room member. Then it starts this
//! binary again as a plain UDP relay (`quad_tests::relay`: batched, no encryption), plays
//! the `audio_50_all` pattern through it, and reports the SFU's packets per CPU-second as a
//! ratio of the relay's. Writes `target/bench/sfu_forwarding.json`.
//!
//! The bots and the server share this machine's cores, so the packets a run can push are
//! bounded by the bots too; the per-CPU-second figures are what compare.

use quad_tests::load::{self, ReleaseServer, Report, Scenario, quantile};
use quad_tests::{relay, repo_root};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

async fn scenario(
    name: &str,
    max_speakers: usize,
    s: Scenario,
) -> anyhow::Result<(String, Report)> {
    let server = ReleaseServer::start(&format!("room_max_speakers = {max_speakers}\n"))?;
    let report = load::run(server.addr, &s, Some(server.pid())).await?;
    drop(server);
    println!("{name:>18}: {}", report.summary());
    Ok((name.to_owned(), report))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--relay-server") {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        println!("{}", socket.local_addr()?);
        return relay::serve(socket);
    }
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this is only built.
    if !args.iter().any(|a| a == "--bench") {
        println!("sfu_forwarding: measured by `cargo xtask bench`, not in the test suite");
        return Ok(());
    }
    let settle = Duration::from_secs(60);
    // `QUAD_BENCH_MEASURE_SECS` lengthens the window (to profile the server in it).
    let measure = Duration::from_secs(
        std::env::var("QUAD_BENCH_MEASURE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let room = |bots: usize, mics: usize, cameras: usize| Scenario {
        bots,
        room_size: bots,
        mics,
        cameras,
        settle,
        measure,
        real: None,
        window: None,
    };
    // `QUAD_BENCH_ONLY=audio_50_all` runs only the scenarios whose name contains it (and
    // the relay, when it is `audio_50_all`'s pattern that is asked for).
    let only = std::env::var("QUAD_BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let mut runs = Vec::new();
    for (name, max_speakers, s) in [
        ("audio_10_all", 50, room(10, 10, 0)),
        ("audio_50_all", 50, room(50, 50, 0)),
        ("audio_50_loudest", 3, room(50, 50, 0)),
        ("camera_1_to_50", 3, room(51, 0, 1)),
    ] {
        if wanted(name) {
            runs.push(scenario(name, max_speakers, s).await?);
        }
    }
    if !wanted("audio_50_all") {
        return Ok(());
    }

    // The plain relay, with audio_50_all's pattern: 50 members, each sending 12 bytes (an
    // RTP header's worth) and a variable-size Opus frame every 20 ms.
    let exe = std::env::current_exe()?;
    let mut relay_child = Command::new(&exe)
        .arg("--relay-server")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(
        relay_child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .read_line(&mut line)?;
    let relay_addr: std::net::SocketAddr = line.trim().parse()?;
    let pid = relay_child.id();
    let relay_run = tokio::task::spawn_blocking(move || {
        let cpu0 = load::cpu_seconds(pid);
        let run = relay::drive(relay_addr, 50, Duration::from_millis(20), 12, measure);
        let cpu1 = load::cpu_seconds(pid);
        run.map(|r| (r, cpu0, cpu1))
    })
    .await??;
    let _ = relay_child.kill();
    let _ = relay_child.wait();
    let (relay_run, cpu0, cpu1) = relay_run;
    // The relay's CPU is read around the whole drive (warm-up included), so this is a floor
    // of its packets per CPU-second.
    let relay_cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) => (b - a) / (measure.as_secs_f64() + 1.0),
        _ => 0.0,
    };
    let relay_per_core = (relay_cores > 0.0).then(|| relay_run.received_pps / relay_cores);
    println!(
        "{:>18}: {:.0} packets/s received; relay {:.2} cores; {} packets/s per relay core; delay p50 {:?} µs, p99 {:?} µs",
        "udp_relay_50",
        relay_run.received_pps,
        relay_cores,
        relay_per_core.map_or("-".into(), |v| format!("{v:.0}")),
        quantile(&relay_run.delay_us, 0.5),
        quantile(&relay_run.delay_us, 0.99),
    );
    let sfu_per_core = runs
        .iter()
        .find(|(n, _)| n == "audio_50_all")
        .and_then(|(_, r)| r.pps_per_server_core());
    let ratio = match (sfu_per_core, relay_per_core) {
        (Some(s), Some(r)) if r > 0.0 => Some(s / r),
        _ => None,
    };
    println!(
        "SFU packets per server CPU-second as a share of the plain relay's: {}",
        ratio.map_or("-".into(), |r| format!("{:.0}%", r * 100.0))
    );
    let mut scenarios = serde_json::Map::new();
    for (name, r) in &runs {
        let mut v = r.to_json();
        let per_member = r
            .server
            .map(|s| s.rss_kib.saturating_sub(r.server_rss_before_kib) as f64 / r.bots as f64);
        v["server_rss_per_member_kib"] = json!(per_member);
        scenarios.insert(name.clone(), v);
    }
    let out = repo_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("sfu_forwarding.json"),
        serde_json::to_string_pretty(&json!({
            "scenarios": scenarios,
            "udp_relay_50": {
                "received_pps": relay_run.received_pps,
                "relay_cpu_cores": relay_cores,
                "pps_per_relay_core": relay_per_core,
                "delay_us_p50": quantile(&relay_run.delay_us, 0.5),
                "delay_us_p99": quantile(&relay_run.delay_us, 0.99),
            },
            "sfu_share_of_relay_per_core": ratio,
        }))?,
    )?;
    Ok(())
}

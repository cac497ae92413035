//! The load engine behind `quad-load` and the SFU benchmark: puts room bots (webrtc-rs
//! peers, see [`crate::room_bot`]) into a running server's classrooms, lets them publish
//! synthetic Opus and VP8 for a while, and reports what they saw: join time, packets
//! forwarded per second, loss, the delay the server adds, and the server's CPU and memory
//! (read from `/proc/<pid>` when its pid is known).
//!
//! Bots stamp their send time in every payload; bots and server share one clock on one
//! machine, so the delay is one-way and includes the bots' own scheduling.

use crate::room_bot::{RoomBot, RoomBotOptions, room_spot};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Bots in all.
    pub bots: usize,
    /// Bots per room; the rooms are the map's classrooms (reused when there are more rooms
    /// than classrooms).
    pub room_size: usize,
    /// How many bots of each room publish a microphone (the first ones).
    pub mics: usize,
    /// How many bots of each room publish a camera (the first ones).
    pub cameras: usize,
    /// How long to wait for everyone to join and receive before measuring, at most.
    pub settle: Duration,
    /// How long to measure.
    pub measure: Duration,
    /// Publish real Opus and VP8 ([`crate::real_media`]) instead of synthetic payloads.
    pub real: Option<std::sync::Arc<crate::real_media::RealMedia>>,
    /// Told `true` when the measured window opens and `false` when it closes (for whoever
    /// measures more than one server over it).
    pub window: Option<tokio::sync::mpsc::UnboundedSender<bool>>,
}

/// The median of `values` (the upper one of an even count); 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// This machine's CPU model, as `/proc/cpuinfo` names it (for reports beside the figures).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A process's CPU and memory over the measured window.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessLoad {
    /// CPU seconds per second (1.0 = one core busy).
    pub cpu_cores: f64,
    pub rss_kib: u64,
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub bots: usize,
    /// From starting to connect to the first forwarded packet, per bot that got one, ms.
    pub join_ms: Vec<f64>,
    /// Forwarded packets all bots received per second, in the window.
    pub received_pps: f64,
    /// Packets missing in the window (sequence gaps never filled), of those expected.
    pub loss: f64,
    /// Send-to-receive delay of packets in the window, µs.
    pub delay_us: Vec<u64>,
    pub server: Option<ProcessLoad>,
    /// Server RSS before the bots connected.
    pub server_rss_before_kib: u64,
}

/// The `q`-quantile of sorted-or-not values (`q` in 0..=1).
pub fn quantile<T: Copy + PartialOrd>(values: &[T], q: f64) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((v.len().saturating_sub(1)) as f64 * q).round() as usize;
    v.get(i).copied()
}

impl Report {
    /// Forwarded packets per second per core of server CPU.
    pub fn pps_per_server_core(&self) -> Option<f64> {
        self.server
            .filter(|s| s.cpu_cores > 0.0)
            .map(|s| self.received_pps / s.cpu_cores)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "bots": self.bots,
            "join_ms_p50": quantile(&self.join_ms, 0.5),
            "join_ms_p99": quantile(&self.join_ms, 0.99),
            "joined": self.join_ms.len(),
            "received_pps": self.received_pps,
            "loss": self.loss,
            "delay_us_p50": quantile(&self.delay_us, 0.5),
            "delay_us_p99": quantile(&self.delay_us, 0.99),
            "server_cpu_cores": self.server.map(|s| s.cpu_cores),
            "server_rss_kib": self.server.map(|s| s.rss_kib),
            "server_rss_before_kib": self.server_rss_before_kib,
            "pps_per_server_core": self.pps_per_server_core(),
        })
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let d = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.2}", v as f64 / 1000.0));
        format!(
            "{} bots, {} joined (join p50 {} ms, p99 {} ms); {:.0} packets/s received, loss {:.2}%; delay p50 {} ms, p99 {} ms; server {} cores, {} MiB ({:.1} MiB before the bots, {} kB a bot); {} packets/s per server core",
            self.bots,
            self.join_ms.len(),
            f(quantile(&self.join_ms, 0.5)),
            f(quantile(&self.join_ms, 0.99)),
            self.received_pps,
            self.loss * 100.0,
            d(quantile(&self.delay_us, 0.5)),
            d(quantile(&self.delay_us, 0.99)),
            self.server
                .map_or("-".into(), |s| format!("{:.2}", s.cpu_cores)),
            self.server
                .map_or("-".into(), |s| format!("{:.1}", s.rss_kib as f64 / 1024.0)),
            self.server_rss_before_kib as f64 / 1024.0,
            self.server.map_or("-".into(), |s| {
                // kB (1,000 bytes), as the benchmark's target is put.
                let above = s.rss_kib.saturating_sub(self.server_rss_before_kib);
                format!("{:.0}", above as f64 * 1.024 / self.bots.max(1) as f64)
            }),
            f(self.pps_per_server_core()),
        )
    }
}

/// CPU seconds a process has used so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports in clock ticks of 1/100 s (USER_HZ) on every mainstream platform.
    Some(ticks / 100.0)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS").unwrap_or(0)
}

/// The part of a process's resident memory that is mapped files (its binary's code and
/// data, and libraries), KiB. It grows as new code paths run for the first time.
pub fn rss_file_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssFile")
}

/// A `KEY:   N kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs `scenario` against the server at `addr` (started with `--dev`, so bots choose
/// where to appear). `server_pid` lets it read the server's CPU and memory.
pub async fn run(addr: SocketAddr, scenario: &Scenario, server_pid: Option<u32>) -> Result<Report> {
    if scenario.room_size == 0 {
        bail!("room_size must be at least 1");
    }
    let (status, text) = crate::http_get(addr, "/map.tmj").await?;
    if status != 200 {
        bail!("GET /map.tmj: HTTP {status}");
    }
    let map = quad_shared::map::Map::from_tmj(&text).context("the server's map")?;
    let rss_before = server_pid.map_or(0, rss_kib);

    let mut bots = Vec::with_capacity(scenario.bots);
    for i in 0..scenario.bots {
        let room = i / scenario.room_size;
        let seat = i % scenario.room_size;
        let options = RoomBotOptions {
            name: format!("load{i}"),
            spawn: room_spot(&map, room % 4)?,
            mic_level: (seat < scenario.mics).then_some(30),
            camera: seat < scenario.cameras,
            lossy: false,
            token: None,
            shaper: None,
            camera_rates: None,
            lose_answers: 0,
            mangle_answers: 0,
            real: scenario.real.clone(),
            speaking: None,
        };
        bots.push(RoomBot::join(addr, options).await?);
    }

    // Settle: everyone in a room has received something (or the time is up).
    let deadline = Instant::now() + scenario.settle;
    while Instant::now() < deadline && !bots.iter().all(|b| b.state().first_packet_at.is_some()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and the rate has settled: negotiations still under way (each publisher's arrival
    // renegotiates every member) would otherwise be measured with the forwarding.
    let total = |bots: &[RoomBot]| -> u64 {
        bots.iter()
            .map(|b| b.state().received.values().sum::<u64>())
            .sum()
    };
    let mut previous: Option<f64> = None;
    while Instant::now() < deadline {
        let before = total(&bots);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rate = (total(&bots) - before) as f64;
        if previous.is_some_and(|p| rate > 0.0 && (rate - p).abs() <= 0.03 * rate) {
            break;
        }
        previous = Some(rate);
    }
    if bots.iter().all(|b| b.state().room.is_none()) {
        bail!(
            "no bot got into a room: is the server running with --dev (bots choose where to appear)?"
        );
    }
    let join_ms = bots
        .iter()
        .filter_map(|b| {
            let first = b.state().first_packet_at?;
            Some(first.duration_since(b.started_at).as_secs_f64() * 1000.0)
        })
        .collect();

    // Measure.
    let snapshot = |bots: &[RoomBot]| -> (u64, u64, u64) {
        let (mut received, mut distinct, mut span) = (0u64, 0u64, 0u64);
        for b in bots {
            let s = b.state();
            received += s.received.values().sum::<u64>();
            for seqs in s.seqs.values() {
                distinct += seqs.len() as u64;
            }
            for (stream, last) in &s.last_seq {
                if let Some(seqs) = s.seqs.get(stream) {
                    // The span of sequence numbers seen, around the last received (which
                    // may be a late retransmission, so some are newer than it).
                    let (low, high) = seqs
                        .iter()
                        .map(|q| q.wrapping_sub(*last) as i16)
                        .fold((0i16, 0i16), |(lo, hi), d| (lo.min(d), hi.max(d)));
                    span += (i32::from(high) - i32::from(low) + 1) as u64;
                }
            }
        }
        (received, distinct, span)
    };
    for b in &bots {
        b.state().delays_us.clear();
    }
    if let Some(window) = &scenario.window {
        let _ = window.send(true);
    }
    let cpu_before = server_pid.and_then(cpu_seconds);
    let (received0, distinct0, span0) = snapshot(&bots);
    let started = Instant::now();
    eprintln!(
        "load: {} bots settled; measuring for {:?}",
        bots.len(),
        scenario.measure
    );
    tokio::time::sleep(scenario.measure).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (received1, distinct1, span1) = snapshot(&bots);
    let cpu_after = server_pid.and_then(cpu_seconds);
    if let Some(window) = &scenario.window {
        let _ = window.send(false);
    }
    let delay_us: Vec<u64> = bots
        .iter()
        .flat_map(|b| b.state().delays_us.clone())
        .collect();
    let expected = span1.saturating_sub(span0);
    let got = distinct1.saturating_sub(distinct0);
    let server = match (server_pid, cpu_before, cpu_after) {
        (Some(pid), Some(a), Some(b)) => Some(ProcessLoad {
            cpu_cores: (b - a) / elapsed,
            rss_kib: rss_kib(pid),
        }),
        _ => None,
    };
    let report = Report {
        bots: bots.len(),
        join_ms,
        received_pps: (received1 - received0) as f64 / elapsed,
        loss: if expected > 0 {
            expected.saturating_sub(got) as f64 / expected as f64
        } else {
            0.0
        },
        delay_us,
        server,
        server_rss_before_kib: rss_before,
    };
    for b in bots {
        b.leave().await;
    }
    Ok(report)
}

/// Runs `bots` protocol bots that walk about the campus's open areas (no media: bots do
/// not take part in peer-to-peer proximity media), for `measure` after they joined. The
/// report's join time is from connecting to `Welcome`; `received_pps` counts the frames
/// the bots received (snapshots and the rest) per second.
pub async fn run_walkers(
    addr: SocketAddr,
    bots: usize,
    measure: Duration,
    server_pid: Option<u32>,
) -> Result<Report> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let (status, text) = crate::http_get(addr, "/map.tmj").await?;
    if status != 200 {
        bail!("GET /map.tmj: HTTP {status}");
    }
    let map = quad_shared::map::Map::from_tmj(&text).context("the server's map")?;
    let rss_before = server_pid.map_or(0, rss_kib);
    let frames = Arc::new(AtomicU64::new(0));
    let mut join_ms = Vec::with_capacity(bots);
    let mut tasks = Vec::with_capacity(bots);
    for i in 0..bots {
        // Spread over the courtyard around the spawn point, on walkable ground.
        let mut at = map.spawn;
        for k in 0..64 {
            let p = map.spawn
                + glam::Vec2::new(
                    ((i * 37 + k * 13) % 41) as f32 * 24.0 - 480.0,
                    ((i * 53 + k * 7) % 23) as f32 * 24.0 - 120.0,
                );
            if map.collision.walkable(p) {
                at = p;
                break;
            }
        }
        let started = Instant::now();
        let mut bot = crate::Bot::join(addr, &format!("walker{i}"), Some(at.to_array())).await?;
        join_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let frames = frames.clone();
        tasks.push(tokio::spawn(async move {
            // Walk a random-looking square, reading whatever arrives in between.
            let dirs = [
                quad_shared::movement::dir::RIGHT,
                quad_shared::movement::dir::DOWN,
                quad_shared::movement::dir::LEFT,
                quad_shared::movement::dir::UP,
            ];
            let mut n = i;
            loop {
                for _ in 0..20 {
                    if bot.input(dirs[n % 4], 3).await.is_err() {
                        return;
                    }
                    // Read for 50 ms, as a client would between inputs.
                    let until = Instant::now() + Duration::from_millis(50);
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        match bot.pump(left).await {
                            Ok(true) => {
                                frames.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(false) => break,
                            Err(_) => return,
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    let cpu_before = server_pid.and_then(cpu_seconds);
    let f0 = frames.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    let elapsed = started.elapsed().as_secs_f64();
    let f1 = frames.load(Ordering::Relaxed);
    let cpu_after = server_pid.and_then(cpu_seconds);
    for t in tasks {
        t.abort();
    }
    let server = match (server_pid, cpu_before, cpu_after) {
        (Some(pid), Some(a), Some(b)) => Some(ProcessLoad {
            cpu_cores: (b - a) / elapsed,
            rss_kib: rss_kib(pid),
        }),
        _ => None,
    };
    Ok(Report {
        bots,
        join_ms,
        received_pps: (f1 - f0) as f64 / elapsed,
        loss: 0.0,
        delay_us: Vec::new(),
        server,
        server_rss_before_kib: rss_before,
    })
}

/// The release `quad-server` binary (`QUAD_SERVER_BIN`, else `target/release/quad-server`)
/// running for a benchmark, on a loopback port, in `--dev` mode, with its own data
/// directory. Killed when dropped.
pub struct ReleaseServer {
    child: std::process::Child,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl ReleaseServer {
    /// Starts it with `config` as its TOML config file (per-address quotas off: the bots
    /// all come from loopback).
    pub fn start(config: &str) -> Result<ReleaseServer> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let root = crate::repo_root();
        let bin = std::env::var("QUAD_SERVER_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| root.join("target/release/quad-server"));
        let dir = crate::temp_dir("bench-server");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("quad.toml");
        // Every bot comes from 127.0.0.1: no per-address session quotas.
        std::fs::write(
            &file,
            format!("max_sessions_per_ip = 0\nsession_joins_per_ip_per_minute = 0\n{config}"),
        )?;
        let mut child = Command::new(&bin)
            .current_dir(&root)
            .args(["--listen", "127.0.0.1:0", "--dev", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("{} (cargo xtask bench builds it)", bin.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let addr = match line
            .trim()
            .trim_start_matches("Quad is serving http://")
            .parse()
        {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                bail!("the server did not start ({e}): {line:?}");
            }
        };
        Ok(ReleaseServer { child, addr, dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ReleaseServer {
    /// Stops it as an operator would (SIGTERM), so that it can finish what it writes on
    /// the way out (a `dhat-heap` build's profile, too); killed if it takes over 60 s.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_and_its_mapped_files_are_read_from_proc() {
        let me = std::process::id();
        let (rss, files) = (rss_kib(me), rss_file_kib(me).expect("RssFile"));
        // This test's own binary is mapped, and is part of what is resident.
        assert!(
            files > 0 && files < rss,
            "RssFile {files} kB of VmRSS {rss} kB"
        );
        assert_eq!(status_kib(me, "NoSuchKey"), None);
        assert_eq!(rss_file_kib(u32::MAX), None);
    }
}

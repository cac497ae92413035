//! What recording costs: `cargo xtask bench` (or `cargo bench -p quad-tests --bench
//! recording`).
//!
//! - `recorder_cpu`: the release `quad-server` (`QUAD_SERVER_BIN`) with a class of 30: a
//!   teacher (a room bot with a camera and a microphone) and 29 students with microphones,
//!   all publishing real Opus and VP8 (`quad_tests::real_media`). The server's CPU is
//!   measured over the same window with the class recorded and not, in alternating runs
//!   (three each); the report is the medians and their ratio (target: recording adds under
//!   5%).
//! - `mixdown_5min`: 5 minutes of a class's raw tracks (30 microphones, each speaking a
//!   thirtieth of the time, and the picture at 30 frames a second), written with the
//!   server's own track writers, then mixed by `ffmpeg` as the server does after a class,
//!   three times; the report is the median time and its ratio to real time (target: under
//!   10 s).
//!
//! Writes `target/bench/recording.json` with the CPU model beside the figures.

use anyhow::{Context, Result};
use quad_server::media::recording::audio::{AudioTrack, RATE};
use quad_server::media::recording::mixdown::{self, Manifest};
use quad_server::media::recording::picture::PictureTrack;
use quad_shared::protocol::{ClientMsg, Role, TeacherAction};
use quad_tests::load::{self, ReleaseServer, Scenario, cpu_model, median};
use quad_tests::real_media::{RealMedia, SILENCE, real_media};
use quad_tests::repo_root;
use quad_tests::room_bot::{RoomBot, RoomBotOptions, room_spot};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "recording-bench-join-secret-0123456789";

/// One run of the class: the server's CPU cores over the measured window.
async fn class_run(media: &Arc<RealMedia>, record: bool) -> Result<f64> {
    let server = ReleaseServer::start(&format!("join_secret = \"{SECRET}\"\n"))?;
    let map = quad_tests::campus();
    let spot = room_spot(&map, 0)?;
    let keys = quad_server::auth::JoinKeys::new(SECRET.as_bytes());
    let token = keys.issue(
        "Teacher",
        Role::Teacher,
        None,
        Duration::from_secs(3600),
        std::time::SystemTime::now(),
    )?;
    let teacher = RoomBot::join(
        server.addr,
        RoomBotOptions {
            camera: true,
            token: Some(token),
            real: Some(media.clone()),
            ..RoomBotOptions::mic("Teacher", spot)
        },
    )
    .await?;
    if record {
        let deadline = Instant::now() + Duration::from_secs(30);
        while teacher.state().class.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "the teacher is not in the class");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        teacher.send(ClientMsg::Teacher(TeacherAction::Record(true)));
    }
    let scenario = Scenario {
        bots: 29,
        room_size: 29,
        mics: 29,
        cameras: 0,
        settle: Duration::from_secs(60),
        measure: Duration::from_secs(10),
        real: Some(media.clone()),
        window: None,
    };
    let report = load::run(server.addr, &scenario, Some(server.pid())).await?;
    if record {
        anyhow::ensure!(
            teacher.state().class.as_ref().is_some_and(|c| c.recording),
            "the class was not being recorded"
        );
    }
    let cores = report.server.map_or(0.0, |s| s.cpu_cores);
    println!(
        "recorder {}: server {cores:.3} cores; {}",
        if record { "on " } else { "off" },
        report.summary()
    );
    drop(teacher);
    drop(server);
    Ok(cores)
}

/// Writes five minutes of a class's raw tracks into `dir`, as the recorder would.
fn five_minutes(dir: &std::path::Path, media: &RealMedia) -> Result<Manifest> {
    let seconds = 300u64;
    let mut audio = Vec::new();
    for mic in 0..30u64 {
        let name = format!("audio-{mic}.ogg");
        let file = std::io::BufWriter::new(std::fs::File::create(dir.join(&name))?);
        let mut track = AudioTrack::new(file, mic as u32)?;
        // Each speaks for its thirtieth of the time.
        let speaks = (mic * seconds / 30 * 50)..((mic + 1) * seconds / 30 * 50);
        for frame in 0..seconds * 50 {
            let payload: &[u8] = if speaks.contains(&frame) {
                &media.tone[frame as usize % media.tone.len()]
            } else {
                &SILENCE
            };
            track.push(1, (frame * 960) as u32, frame * 960, payload)?;
        }
        drop(track.finish(seconds * RATE)?);
        audio.push(name);
    }
    let file = std::io::BufWriter::new(std::fs::File::create(dir.join("picture.ivf"))?);
    let mut picture = PictureTrack::new(file)?;
    let mut seq = 0u16;
    for frame in 0..seconds * 30 {
        let (vp8, _) = &media.video[frame as usize % media.video.len()];
        let parts: Vec<&[u8]> = vp8.chunks(1000).collect();
        for (i, part) in parts.iter().enumerate() {
            let mut payload = vec![if i == 0 { 0x10 } else { 0x00 }];
            payload.extend_from_slice(part);
            seq = seq.wrapping_add(1);
            picture.push(
                1,
                seq,
                (frame * 3000) as u32,
                i + 1 == parts.len(),
                frame * 1000 / 30,
                &payload,
            )?;
        }
    }
    drop(picture.finish()?);
    Ok(Manifest {
        duration_ms: seconds * 1000,
        audio,
        picture: Some("picture.ivf".into()),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("recording: measured by `cargo xtask bench`, not in the test suite");
        return Ok(());
    }
    let media = real_media()?;
    let only = std::env::var("QUAD_BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let mut out = serde_json::Map::new();
    out.insert("cpu".into(), json!(cpu_model()));

    if wanted("mixdown_5min") {
        let dir = quad_tests::temp_dir("mixdown-bench");
        std::fs::create_dir_all(&dir)?;
        let manifest = five_minutes(&dir, &media)?;
        let mut times = Vec::new();
        for run in 0..3 {
            let file = dir.join(format!("out-{run}.webm"));
            let started = Instant::now();
            let bytes = mixdown::run(
                std::path::Path::new("ffmpeg"),
                &dir,
                &manifest,
                &file,
                Duration::from_secs(600),
            )
            .context("the mixdown")?;
            let secs = started.elapsed().as_secs_f64();
            println!("mixdown_5min run {run}: {secs:.2} s, {bytes} bytes");
            times.push(secs);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let m = median(times.clone());
        println!(
            "mixdown_5min: median {m:.2} s for 300 s of class ({:.0}x real time; target under 10 s), {}",
            300.0 / m,
            cpu_model()
        );
        out.insert(
            "mixdown_5min".into(),
            json!({"seconds": times, "median_s": m, "times_real_time": 300.0 / m}),
        );
    }

    if wanted("recorder_cpu") {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            off.push(class_run(&media, false).await?);
            on.push(class_run(&media, true).await?);
        }
        let (m_off, m_on) = (median(off.clone()), median(on.clone()));
        let added = (m_on / m_off - 1.0) * 100.0;
        println!(
            "recorder_cpu: server {m_off:.3} cores without recording, {m_on:.3} with (medians of 3, alternating): recording adds {added:.1}% (target under 5%), {}",
            cpu_model()
        );
        out.insert(
            "recorder_cpu".into(),
            json!({"cores_off": off, "cores_on": on, "median_off": m_off, "median_on": m_on, "added_percent": added}),
        );
    }
    let dir = repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("recording.json"),
        serde_json::to_string_pretty(&serde_json::Value::Object(out))?,
    )?;
    Ok(())
}

//! `quad-load`: points bot participants at a running Quad server and reports what they
//! saw. The bots are webrtc-rs peers that sit in the map's classrooms and publish
//! synthetic Opus (and VP8 with `--cameras`), or, with `--walk`, protocol clients that walk
//! about the open campus; see `quad_tests::load`.
//!
//! ```text
//! quad-server --dev &            # bots choose their seats, so the server needs --dev
//! quad-load --bots 20 --room-size 10 --mics 10 --cameras 1 --seconds 10 \
//!     --server-pid $(pgrep -n quad-server)
//! ```

use clap::Parser;
use quad_tests::load::{self, Scenario};
use std::net::SocketAddr;
use std::time::Duration;

/// Load a Quad server with bot participants.
#[derive(Parser, Debug)]
#[command(name = "quad-load", version)]
struct Args {
    /// The server's address (as `quad-server --listen` printed it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: String,
    /// Bots in all.
    #[arg(long, default_value_t = 10)]
    bots: usize,
    /// Bots per room (rooms are the map's classrooms, reused when there are more rooms).
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Walk about the campus's open areas instead of sitting in rooms (no media).
    #[arg(long)]
    walk: bool,
    /// Bots per room that publish a microphone (Opus, 50 packets/s).
    #[arg(long, default_value_t = usize::MAX)]
    mics: usize,
    /// Bots per room that publish a camera (VP8 in three simulcast layers, 30 frames/s).
    #[arg(long, default_value_t = 0)]
    cameras: usize,
    /// How long to measure, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// How long to wait for everyone to join and receive first, at most, seconds.
    #[arg(long, default_value_t = 30.0)]
    settle: f64,
    /// The server's process id, to report its CPU and memory (same machine only).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr: SocketAddr = args
        .server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .map_err(|e| anyhow::anyhow!("--server {}: {e}", args.server))?;
    if !(args.seconds.is_finite()
        && args.seconds > 0.0
        && args.settle.is_finite()
        && args.settle >= 0.0)
    {
        anyhow::bail!("--seconds must be positive and --settle not negative");
    }
    let scenario = Scenario {
        bots: args.bots,
        room_size: args.room_size,
        mics: args.mics.min(args.room_size),
        cameras: args.cameras.min(args.room_size),
        settle: Duration::from_secs_f64(args.settle),
        measure: Duration::from_secs_f64(args.seconds),
        real: None,
        window: None,
    };
    let report = if args.walk {
        load::run_walkers(addr, args.bots, scenario.measure, args.server_pid).await?
    } else {
        load::run(addr, &scenario, args.server_pid).await?
    };
    println!("{}", report.summary());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.to_json())?)
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
    }
    Ok(())
}

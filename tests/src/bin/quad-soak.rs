//! `quad-soak`: the soak run (see `quad_tests::soak`). `cargo xtask soak --minutes N`
//! builds the release server and runs this; it stops by itself after N minutes and
//! writes `soak.md`, `soak.csv` and `soak.svg` (default: `target/soak/`).
//!
//! `--crash-cycles N` runs N kill-and-restart cycles instead (see `quad_tests::crash`):
//! the release server is killed with SIGKILL while bots chat, and every line any bot was
//! shown must be in the history after the restart.

use clap::Parser;
use quad_tests::soak::{self, SoakOptions};
use std::time::Duration;

/// Soak a release Quad server with walking bots and churning classrooms.
#[derive(Parser, Debug)]
#[command(name = "quad-soak", version)]
struct Args {
    /// How long to run, minutes (at most 24 hours).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Bots walking the open campus.
    #[arg(long, default_value_t = 300)]
    walkers: usize,
    /// Classrooms with media bots.
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Media bots per classroom.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 60.0)]
    every: f64,
    /// Where to write the report (default: target/soak).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Instead of the soak: this many kill-and-restart cycles while bots chat.
    #[arg(long)]
    crash_cycles: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(cycles) = args.crash_cycles {
        return crash(cycles).await;
    }
    if !(0.0..=24.0 * 60.0).contains(&args.minutes) || args.minutes == 0.0 {
        anyhow::bail!("--minutes must be more than 0 and at most 1440");
    }
    if !(1.0..=3600.0).contains(&args.every) {
        anyhow::bail!("--every must be between 1 and 3600 seconds");
    }
    let options = SoakOptions {
        minutes: args.minutes,
        walkers: args.walkers,
        rooms: args.rooms,
        room_size: args.room_size.max(2),
        every: Duration::from_secs_f64(args.every),
        out: args.out.unwrap_or_else(soak::default_out),
    };
    println!(
        "soak: {} walkers, {} rooms of {}, {} minutes; a row per sample:",
        options.walkers, options.rooms, options.room_size, options.minutes
    );
    let mut header = String::from("| minute |");
    for (name, _) in soak::SERIES {
        header.push_str(&format!(" {name} |"));
    }
    println!("{header}");
    let (samples, activity) = soak::run(&options).await?;
    let verdict = soak::report(&options, &samples, &activity, &soak::machine())?;
    for line in verdict {
        println!("{line}");
    }
    println!("report: {}", options.out.join("soak.md").display());
    Ok(())
}

/// `cycles` kill-and-restart cycles of the release server (`QUAD_SERVER_BIN`).
async fn crash(cycles: usize) -> anyhow::Result<()> {
    if !(1..=1000).contains(&cycles) {
        anyhow::bail!("--crash-cycles must be between 1 and 1000");
    }
    let bin = std::env::var("QUAD_SERVER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| quad_tests::repo_root().join("target/release/quad-server"));
    let data = quad_tests::temp_dir("soak-crash");
    let report = quad_tests::crash::crash_cycles(&bin, &data, cycles).await?;
    let _ = std::fs::remove_dir_all(&data);
    println!(
        "{} kills with SIGKILL ({} of them with the store stalled): {} lines sent, {} shown to some bot before a kill, {} stored, {} of those shown lost; {}",
        report.cycles,
        report.cycles / 2,
        report.sent,
        report.seen,
        report.stored,
        report.lost.len(),
        soak::machine()
    );
    if !report.lost.is_empty() {
        anyhow::bail!("lines shown but lost: {:?}", report.lost);
    }
    Ok(())
}

//! `quad-soak`: the soak run (see `quad_tests::soak`). `cargo xtask soak --minutes N`
//! builds the release server and runs this; it stops by itself after N minutes and
//! writes `soak.md`, `soak.csv` and `soak.svg` (default: `target/soak/`).

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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

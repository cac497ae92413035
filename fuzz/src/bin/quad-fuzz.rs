//! `quad-fuzz`: runs the fuzz harnesses (see `quad_fuzz`). `cargo xtask fuzz --minutes N`
//! builds it in release and shares N minutes among the harnesses; each stops early at
//! `--executions` (10 million by default). Exits non-zero on the first panic, with the
//! input saved under `target/fuzz/<harness>/`.
//!
//! `quad-fuzz --write-seeds` writes the built-in seeds into `fuzz/corpus/` again.

use anyhow::{Result, bail};
use quad_fuzz::{HARNESSES, fuzz, write_seeds};
use std::time::Duration;

fn main() -> Result<()> {
    let mut minutes = 10.0f64;
    let mut executions = 10_000_000u64;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--minutes" => minutes = value()?.parse()?,
            "--executions" => executions = value()?.parse()?,
            "--harness" => only = Some(value()?),
            "--write-seeds" => {
                write_seeds()?;
                println!("seeds written to fuzz/corpus/");
                return Ok(());
            }
            other => bail!(
                "unknown argument {other}; usage: quad-fuzz [--minutes N] [--executions N] [--harness NAME] | --write-seeds"
            ),
        }
    }
    if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
        bail!("--minutes must be more than 0 and at most 1440");
    }
    let chosen: Vec<_> = HARNESSES
        .iter()
        .filter(|h| only.as_deref().is_none_or(|o| o == h.name))
        .collect();
    if chosen.is_empty() {
        bail!("no harness named {only:?}");
    }
    let each = Duration::from_secs_f64(minutes * 60.0 / chosen.len() as f64);
    println!("| harness | executions | seconds | per second | panics |");
    println!("|---|---|---|---|---|");
    for h in chosen {
        let ran = fuzz(h, executions, each)?;
        println!(
            "| {} | {} | {:.0} | {:.0} | 0 |",
            h.name,
            ran.executions,
            ran.elapsed.as_secs_f64(),
            ran.executions as f64 / ran.elapsed.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

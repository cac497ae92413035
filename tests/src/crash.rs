//! Crash cycles: the real `quad-server` process is killed with SIGKILL while bots chat in
//! bursts, and started again on the same data directory; every chat line any bot was sent
//! must be in the history then. `tests/tests/crash.rs` runs five cycles in the tests;
//! `cargo xtask soak --crash-cycles N` runs more against the release build.
//!
//! The kill comes while the bursts are still going out (once one bot has seen a third of
//! them), when the store's writer is furthest behind the broadcast, or, every other cycle,
//! while the database's write lock is held (a stalled disk): a line broadcast before it is
//! stored would be lost here.

use crate::{Bot, chat_bursts, settle};
use anyhow::{Context, Result, bail};
use quad_server::store::sqlite::SqliteStore;
use quad_server::store::{History, Store};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Bots in the space; each sends a burst of five lines (the chat allowance's burst).
pub const BOTS: usize = 40;
pub const BURST: usize = 5;

/// Starts `bin` (a `quad-server`) on a free loopback port with `data` as its data
/// directory; returns the process and its address.
pub async fn start(bin: &Path, data: &Path) -> Result<(Child, SocketAddr)> {
    crate::start_binary(bin, data, "127.0.0.1:0").await
}

/// Kills the campus served from `data` while bursts of chat go out; returns every line
/// (id and text) that some bot was sent before the process died. With `stall`, another
/// connection holds the database's write lock meanwhile (a stalled disk, within the
/// server's 5 s busy timeout), so none of the lines is stored before the kill.
async fn chat_then_kill(
    bin: &Path,
    data: &Path,
    cycle: usize,
    stall: bool,
) -> Result<BTreeMap<u64, String>> {
    let (mut server, addr) = start(bin, data).await?;
    let mut bots = Vec::new();
    for i in 0..BOTS {
        bots.push(Bot::join(addr, &format!("c{cycle}bot{i}"), None).await?);
    }
    let lock = if stall {
        let conn = rusqlite::Connection::open(data.join(quad_server::store::sqlite::FILE_NAME))?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Some(conn)
    } else {
        None
    };
    let first_sent = Instant::now();
    // Every burst goes out before anyone reads: the space takes the lines in, and
    // broadcasts them, as fast as they come.
    chat_bursts(&mut bots, BURST, |i, n| {
        format!("cycle {cycle} bot{i} line {n}")
    })
    .await?;
    let sent = BOTS * BURST;
    let this_cycle = |b: &Bot| {
        b.chat
            .values()
            .filter(|l| l.text.starts_with(&format!("cycle {cycle} ")))
            .count()
    };
    if stall {
        // Everything the space sent before it handled every burst has arrived: lines that
        // went out before they were stored would be here.
        settle(&mut bots).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stall && this_cycle(&bots[0]) < sent / 3 {
        if Instant::now() > deadline {
            bail!(
                "cycle {cycle}: the first bot saw {} of {sent} lines",
                this_cycle(&bots[0])
            );
        }
        bots[0].pump(Duration::from_millis(100)).await?;
    }
    if !stall {
        println!(
            "cycle {cycle}: a third of the {sent} lines reached a bot {:.1} ms after the first was sent",
            first_sent.elapsed().as_secs_f64() * 1e3
        );
    }
    server.start_kill().context("SIGKILL")?;
    server.wait().await?;
    drop(lock);
    let mut seen = BTreeMap::new();
    for bot in &mut bots {
        while bot.closed.is_none() {
            if !bot.pump(Duration::from_secs(5)).await? {
                break;
            }
        }
        for (id, line) in &bot.chat {
            seen.insert(*id, line.text.clone());
        }
        if stall {
            // Not stored, so not shown, not even to its sender.
            anyhow::ensure!(
                this_cycle(bot) == 0,
                "cycle {cycle}: a bot was shown {} lines the stalled store did not have",
                this_cycle(bot)
            );
        }
    }
    Ok(seen)
}

/// What the cycles found.
#[derive(Debug)]
pub struct CrashReport {
    pub cycles: usize,
    pub sent: usize,
    /// Lines some bot was sent before a kill.
    pub seen: usize,
    pub stored: usize,
    /// Lines seen but not in the history after the restart (must be none).
    pub lost: Vec<(u64, String)>,
}

/// Runs `cycles` kill-and-restart cycles of `bin` on the data directory `data` (odd ones
/// with the store stalled), then starts it once more and checks a newcomer is shown the
/// newest line anyone saw.
pub async fn crash_cycles(bin: &Path, data: &Path, cycles: usize) -> Result<CrashReport> {
    let mut seen = BTreeMap::new();
    for cycle in 0..cycles {
        seen.append(&mut chat_then_kill(bin, data, cycle, cycle % 2 == 1).await?);
    }
    anyhow::ensure!(!seen.is_empty(), "no bot saw a line before a kill");
    let (server, addr) = start(bin, data).await?;
    let stored: BTreeMap<u64, String> = SqliteStore::open(data)?
        .chat_history(&History::Space, 10 * cycles * BOTS * BURST)?
        .into_iter()
        .map(|l| (l.id, l.text))
        .collect();
    let lost: Vec<(u64, String)> = seen
        .iter()
        .filter(|(id, text)| stored.get(id) != Some(text))
        .map(|(id, text)| (*id, text.clone()))
        .collect();
    // The restarted server serves, and shows a newcomer the newest line it has (the
    // newest line seen may be older than the 100 lines history shows, when the store got
    // further than the broadcast before the kill).
    let mut late = Bot::join(addr, "late", None).await?;
    let newest = *stored.keys().next_back().context("a line was stored")?;
    late.wait_until(crate::PATIENCE, |b| b.chat.contains_key(&newest))
        .await
        .context("the restarted server's history")?;
    drop(server);
    Ok(CrashReport {
        cycles,
        sent: cycles * BOTS * BURST,
        seen: seen.len(),
        stored: stored.len(),
        lost,
    })
}

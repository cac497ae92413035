//! A crash loses nothing anyone has seen: the real `quad-server` process is killed with
//! SIGKILL five times while bots chat in bursts (see `quad_tests::crash`), and every chat
//! line any bot was sent is in the history when the server is started again on the same
//! data directory.

use anyhow::Result;
use quad_tests::crash::crash_cycles;
use quad_tests::{server_binary, temp_dir};

/// Killed with SIGKILL five times while chat bursts go out, twice of them while the store
/// is stalled, then started again: every line any bot was sent is in the history, and the
/// restarted server serves it. (Before lines were held until stored, the stalled cycles
/// lost every line of their bursts, all of which bots had been shown, and about one
/// unstalled kill in four lost a few.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chat_line_anyone_saw_survives_a_kill() -> Result<()> {
    let data = temp_dir("crash");
    let report = crash_cycles(&server_binary()?, &data, 5).await?;
    println!(
        "{} kills, {} lines sent, {} seen by some bot before a kill, {} stored, {} of those seen lost",
        report.cycles,
        report.sent,
        report.seen,
        report.stored,
        report.lost.len()
    );
    anyhow::ensure!(
        report.lost.is_empty(),
        "lines seen but lost in a crash: {:?}",
        report.lost
    );
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

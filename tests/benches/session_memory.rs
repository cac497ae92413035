//! Server memory per connected avatar (no media): `cargo xtask bench`.
//!
//! Starts the real `quad-server` binary (`QUAD_SERVER_BIN`, else `target/release/quad-server`)
//! on a loopback port, connects bots in steps, and reads the server's resident memory from
//! `/proc/<pid>/status` after each step. Bots keep reading their frames, as browsers do.
//! Reports the growth per avatar between the first and the last step (target: < 100 kB),
//! and writes it to `target/bench/session_memory.json`.

use futures_util::StreamExt;
use quad_tests::load::{ReleaseServer, rss_kib};
use quad_tests::{Bot, repo_root};
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this is only built.
    if !std::env::args().any(|a| a == "--bench") {
        println!("session_memory: measured by `cargo xtask bench`, not in the test suite");
        return Ok(());
    }
    let root = repo_root();
    let server = ReleaseServer::start("")?;
    let (addr, pid) = (server.addr, server.pid());

    let map = quad_tests::campus();
    let steps = [100usize, 500, 1000];
    let mut readers = Vec::new();
    let mut samples = Vec::new();
    let mut joined = 0;
    for &target in &steps {
        while joined < target {
            // Spread avatars over the courtyard so areas of interest look like a busy campus.
            let x = map.spawn.x - 600.0 + (joined % 40) as f32 * 30.0;
            let y = map.spawn.y + (joined / 40 % 25) as f32 * 30.0;
            // Fails unless the server welcomes the bot: a refused join must not count.
            let bot = Bot::join(addr, &format!("bot{joined}"), Some([x, y])).await?;
            readers.push(tokio::spawn(async move {
                let mut ws = bot.into_stream();
                while let Some(Ok(_)) = ws.next().await {}
            }));
            joined += 1;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = rss_kib(pid);
        println!("{target:>6} avatars: server RSS {:>8} KiB", rss);
        samples.push((target, rss));
    }
    let (n0, r0) = samples[0];
    let (n1, r1) = samples[samples.len() - 1];
    let per_avatar_kb = (r1.saturating_sub(r0)) as f64 * 1.024 / (n1 - n0) as f64;
    println!(
        "server memory per connected avatar (no media): {per_avatar_kb:.1} kB  (target < 100 kB)"
    );
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("session_memory.json"),
        format!(
            "{{\"samples\":[{}],\"per_avatar_kb\":{per_avatar_kb:.2}}}\n",
            samples
                .iter()
                .map(|(n, r)| format!("{{\"avatars\":{n},\"rss_kib\":{r}}}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    )?;
    drop(server);
    for r in readers {
        r.abort();
    }
    Ok(())
}

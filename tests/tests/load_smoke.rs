//! A short smoke run of the real `quad-load` binary against a server: a few bots for a few
//! seconds, and packets arrive. (The load figures themselves come from `cargo xtask bench`.)

use quad_tests::TestServer;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quad_load_runs_bots_that_receive_each_other() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let dir = quad_tests::temp_dir("load");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join("report.json");
    let out = tokio::task::spawn_blocking({
        let (addr, json) = (server.addr(), json.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_quad-load"))
                .args(["--server", &addr.to_string()])
                .args(["--bots", "4", "--room-size", "4", "--cameras", "1"])
                .args(["--seconds", "2", "--settle", "20", "--json"])
                .arg(&json)
                .env("RUST_LOG", "warn")
                .output()
        }
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quad-load failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    assert_eq!(report["joined"], 4, "{report}");
    // The three loudest of four microphones (the default rule) at 50 packets/s, each heard
    // by three: 450 packets/s, plus one camera layer at 30 packets/s to three viewers.
    let pps = report["received_pps"].as_f64().unwrap_or(0.0);
    assert!(pps > 300.0, "{report}");
    assert!(report["loss"].as_f64().unwrap_or(1.0) < 0.05, "{report}");
    assert!(report["delay_us_p50"].as_u64().is_some(), "{report}");
    println!("quad-load: {stdout}");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quad_load_walkers_join_and_are_sent_snapshots() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let out = tokio::task::spawn_blocking({
        let addr = server.addr();
        move || {
            Command::new(env!("CARGO_BIN_EXE_quad-load"))
                .args(["--server", &addr.to_string()])
                .args(["--walk", "--bots", "20", "--seconds", "2"])
                .output()
        }
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "quad-load --walk failed: {stdout}");
    assert!(stdout.contains("20 bots, 20 joined"), "{stdout}");
    // Twenty walkers at 20 snapshots a second each, give or take.
    let pps: f64 = stdout
        .split("; ")
        .find_map(|p| p.strip_suffix(" packets/s received, loss 0.00%"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(pps > 100.0, "{stdout}");
    server.stop().await;
    Ok(())
}

//! What forwarding costs as a cluster grows: `cargo xtask bench` (or `cargo bench -p
//! quad-tests --bench cluster`).
//!
//! The release `quad-server` (`QUAD_SERVER_BIN`) as 1, 2 and 3 cluster nodes on this
//! machine, against a real `redis-server` and PostgreSQL on loopback (fresh each run). The
//! same load each time (`quad_tests::load`): three classrooms of twelve room bots, each
//! publishing a microphone (synthetic Opus, 50 packets a second) and all forwarded
//! (`room_max_speakers = 12`: 6,600 packets a second a room), all entering through the
//! space's node, so with three nodes each node runs one room. Over the measured window,
//! every node's CPU (from `/proc`) and forwarded packets (its `/metrics`) are read, and
//! the cost is CPU time per forwarded packet: per node, and for the whole cluster. Rounds
//! alternate 1, 2, 3 nodes, three times; the report is the medians and each size's ratio
//! to one node's (target: within 10%).
//!
//! The machine has two cores, so this measures cost, not capacity: three nodes share the
//! same two cores as one.
//!
//! Writes `target/bench/cluster.json` with the CPU model beside the figures.

use anyhow::{Context, Result, bail};
use quad_tests::cluster::{Postgres, Redis, node_command, wait_view};
use quad_tests::load::{self, Scenario, cpu_model, median};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ROOMS: usize = 3;
const ROOM_SIZE: usize = 12;
const ROUNDS: usize = 3;

struct Node {
    name: String,
    addr: SocketAddr,
    pid: u32,
    _child: tokio::process::Child,
}

/// A node's CPU seconds and forwarded packets so far.
async fn sample(node: &Node) -> Result<(f64, f64)> {
    let cpu = load::cpu_seconds(node.pid).context("the node's CPU time")?;
    let (status, page) = quad_tests::http_get(node.addr, "/metrics").await?;
    if status != 200 {
        bail!("/metrics of {}: {status}", node.name);
    }
    let forwarded = quad_tests::metric(&page, "quad_sfu_forwarded_packets_total")
        .context("quad_sfu_forwarded_packets_total")?;
    Ok((cpu, forwarded))
}

/// What one node did over the window.
#[derive(Clone, Debug)]
struct NodeCost {
    name: String,
    cores: f64,
    forwarded_per_sec: f64,
}

impl NodeCost {
    fn us_per_packet(&self) -> Option<f64> {
        (self.forwarded_per_sec > 0.0).then(|| self.cores * 1e6 / self.forwarded_per_sec)
    }
}

/// One run with `n` nodes: each node's cost, and the bots' received packets per second.
async fn run(n: usize, round: usize, pg: &Postgres) -> Result<(Vec<NodeCost>, f64)> {
    let bin = std::env::var("QUAD_SERVER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| quad_tests::repo_root().join("target/release/quad-server"));
    let redis = Redis::start().await?;
    let db = pg.database(&format!("bench_{n}_{round}"))?;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"].into_iter().take(n) {
        let data = quad_tests::temp_dir(&format!("bench-node-{name}"));
        std::fs::create_dir_all(&data)?;
        let mut command = node_command(&bin, &data, name, &redis.url(), &db);
        // Every microphone is forwarded: the load is forwarding, not the world.
        let config = data.join("quad.toml");
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&format!("room_max_speakers = {ROOM_SIZE}\n"));
        std::fs::write(&config, text)?;
        // Warnings too: a media link that fails shows here.
        command.env("RUST_LOG", "warn");
        let (child, serving) = quad_tests::spawn_server(&mut command).await?;
        let addr: SocketAddr = serving
            .url
            .trim_start_matches("http://")
            .parse()
            .context("the node's address")?;
        let pid = child.id().context("the node's pid")?;
        nodes.push(Node {
            name: name.into(),
            addr,
            pid,
            _child: child,
        });
    }
    for node in &nodes {
        wait_view(node.addr, Duration::from_secs(15), |v| {
            v["nodes"].as_array().is_some_and(|all| all.len() == n)
        })
        .await?;
    }
    let (tx, mut window) = tokio::sync::mpsc::unbounded_channel();
    let scenario = Scenario {
        bots: ROOMS * ROOM_SIZE,
        room_size: ROOM_SIZE,
        mics: ROOM_SIZE,
        cameras: 0,
        settle: Duration::from_secs(60),
        measure: Duration::from_secs(10),
        real: None,
        window: Some(tx),
    };
    let owner = nodes[0].addr;
    let loading = tokio::spawn(async move { load::run(owner, &scenario, None).await });
    if window.recv().await != Some(true) {
        bail!("the load ended before its window: {:?}", loading.await);
    }
    let opened = Instant::now();
    let mut before = Vec::new();
    for node in &nodes {
        before.push(sample(node).await?);
    }
    if window.recv().await != Some(false) {
        bail!("the load's window did not close");
    }
    let mut costs = Vec::new();
    let secs = opened.elapsed().as_secs_f64();
    for (node, (cpu0, fwd0)) in nodes.iter().zip(before) {
        let (cpu1, fwd1) = sample(node).await?;
        costs.push(NodeCost {
            name: node.name.clone(),
            cores: (cpu1 - cpu0) / secs,
            forwarded_per_sec: (fwd1 - fwd0) / secs,
        });
    }
    let report = loading.await??;
    Ok((costs, report.received_pps))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("cluster: measured by `cargo xtask bench`, not in the test suite");
        return Ok(());
    }
    let pg = Postgres::start().await?;
    // Per size: the cluster's µs of CPU per forwarded packet, per round; and per node.
    let mut cluster_us: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        for n in 1..=3 {
            let (costs, received) = run(n, round, &pg).await?;
            let cores: f64 = costs.iter().map(|c| c.cores).sum();
            let forwarded: f64 = costs.iter().map(|c| c.forwarded_per_sec).sum();
            let us = cores * 1e6 / forwarded.max(1.0);
            cluster_us[n - 1].push(us);
            let per_node: Vec<String> = costs
                .iter()
                .map(|c| {
                    format!(
                        "{} {:.3} cores {:.0} pkt/s {}",
                        c.name,
                        c.cores,
                        c.forwarded_per_sec,
                        c.us_per_packet()
                            .map_or("-".into(), |us| format!("{us:.1} µs/pkt"))
                    )
                })
                .collect();
            println!(
                "round {round}, {n} node(s): {us:.1} µs of CPU per forwarded packet; bots \
                 received {received:.0} pkt/s; {}",
                per_node.join("; ")
            );
            runs.push(json!({
                "round": round,
                "nodes": n,
                "cluster_us_per_packet": us,
                "received_pps": received,
                "per_node": costs.iter().map(|c| json!({
                    "name": c.name,
                    "cores": c.cores,
                    "forwarded_per_sec": c.forwarded_per_sec,
                    "us_per_packet": c.us_per_packet(),
                })).collect::<Vec<_>>(),
            }));
        }
    }
    let medians: Vec<f64> = cluster_us.iter().map(|v| median(v.clone())).collect();
    for (i, m) in medians.iter().enumerate() {
        println!(
            "{} node(s): median {m:.1} µs of CPU per forwarded packet, {:.2}x one node's \
             (target: within 10%); {}",
            i + 1,
            m / medians[0],
            cpu_model()
        );
    }
    let dir = quad_tests::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("cluster.json"),
        serde_json::to_string_pretty(&json!({
            "cpu": cpu_model(),
            "rooms": ROOMS,
            "room_size": ROOM_SIZE,
            "median_us_per_packet": medians,
            "ratio_to_one_node": medians.iter().map(|m| m / medians[0]).collect::<Vec<_>>(),
            "runs": runs,
        }))?,
    )?;
    Ok(())
}

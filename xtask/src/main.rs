//! `cargo xtask`: the project's tasks.
//!
//! - `serve`: builds the wasm client, then runs `quad-server` on http://127.0.0.1:8080.
//! - `test`: builds the client, installs Chromium when missing, runs every test.
//! - `bench`: runs the benchmarks and prints one table against the targets.
//! - `fuzz --minutes N`: every fuzz harness (`fuzz/`), N minutes shared among them, each
//!   stopping at 10 million executions; a table of executions per harness.
//! - `soak --minutes N`: a release server under walking bots and churning classrooms for
//!   N minutes (default 30), sampled each minute; writes `target/soak/soak.{md,csv,svg}`.
//!   `soak --crash-cycles N`: N kill-and-restart cycles while bots chat instead.
//! - `client`: only builds the wasm client into `target/web/pkg`.
//!
//! The wasm bundle is made with the `wasm-bindgen-cli-support` library, so nothing is
//! downloaded at run time beyond crates.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("serve") => serve(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("bench-summary") => summarize(&root),
        Some("soak") => soak(&root, &args[1..]),
        Some("fuzz") => run(cargo()
            .args([
                "run",
                "--release",
                "--package",
                "quad-fuzz",
                "--bin",
                "quad-fuzz",
                "--",
            ])
            .args(&args[1..])),
        Some("client") => build_client(&root).map(|_| ()),
        _ => {
            eprintln!(
                "usage: cargo xtask <serve [server flags] | test [cargo test args] | bench | soak [--minutes N | --crash-cycles N] | fuzz [--minutes N] | client>"
            );
            std::process::exit(2);
        }
    }
}

fn repo_root() -> PathBuf {
    // xtask lives one level below the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Adds the wasm32 target to the toolchain `rust-toolchain.toml` names, when rustup
/// manages it and the target is missing (newer rustups no longer add a toolchain file's
/// targets by themselves). Without rustup, the build below says what is missing.
fn ensure_wasm_target() -> Result<()> {
    let Ok(listed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&listed.stdout);
    if listed.status.success() && !installed.lines().any(|l| l.trim() == WASM_TARGET) {
        eprintln!("xtask: adding the {WASM_TARGET} target with rustup");
        run(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    Ok(())
}

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` (relative to the repository root
/// if relative), else `target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Compiles `quad-client` for wasm32 and generates the JS glue into `target/web/pkg`.
fn build_client(root: &Path) -> Result<PathBuf> {
    ensure_wasm_target()?;
    eprintln!("xtask: building the wasm client");
    run(cargo().args([
        "build",
        "--package",
        "quad-client",
        "--target",
        WASM_TARGET,
        "--profile",
        "client",
    ]))?;
    let target = target_dir(root);
    let wasm = target.join("wasm32-unknown-unknown/client/quad_client.wasm");
    let out = target.join("web/pkg");
    std::fs::create_dir_all(&out)?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)?
        .typescript(false)
        // Function names for stack traces: a quarter of the file, and panics say where
        // they happened without them.
        .remove_name_section(true)
        .remove_producers_section(true)
        .out_name("quad_client")
        .generate(&out)
        .with_context(|| format!("wasm-bindgen on {}", wasm.display()))?;
    compress_bundle(&out)?;
    eprintln!("xtask: client bundle in {}", out.display());
    Ok(out)
}

/// Writes `NAME.br` (brotli, best quality) and `NAME.gz` (gzip, best level) next to each
/// `.js` and `.wasm` file of the bundle, for the server to send to browsers that accept
/// them (it compresses anything without them itself, faster and less well). Skips files
/// whose compressed forms are already newer.
fn compress_bundle(dir: &Path) -> Result<()> {
    use std::io::Write;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let kind = path.extension().and_then(|e| e.to_str());
        if !matches!(kind, Some("js" | "wasm")) {
            continue;
        }
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let sibling = |ext: &str| {
            let mut name = path.as_os_str().to_os_string();
            name.push(ext);
            PathBuf::from(name)
        };
        let (br, gz) = (sibling(".br"), sibling(".gz"));
        if [&br, &gz]
            .iter()
            .all(|s| modified(s).is_some() && modified(s) >= modified(&path))
        {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let mut brotli_out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut brotli_out, 64 * 1024, 11, 22);
            w.write_all(&bytes)?;
        }
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        w.write_all(&bytes)?;
        let gzip_out = w.finish()?;
        std::fs::write(&br, &brotli_out)?;
        std::fs::write(&gz, &gzip_out)?;
        eprintln!(
            "xtask: {}: {} bytes, {} brotli, {} gzip",
            path.file_name().unwrap_or_default().to_string_lossy(),
            bytes.len(),
            brotli_out.len(),
            gzip_out.len()
        );
    }
    Ok(())
}

fn serve(root: &Path, extra: &[String]) -> Result<()> {
    let pkg = build_client(root)?;
    eprintln!("xtask: starting quad-server");
    let mut cmd = cargo();
    cmd.args(["run", "--release", "--package", "quad-server", "--"]);
    cmd.arg("--client-dir").arg(&pkg);
    cmd.args(extra);
    run(&mut cmd)
}

/// Installs what the browser tests and the test network need if it is missing (as root):
/// Debian's chromium and chromium-driver, iproute2 and nftables; or says how.
/// The geckodriver release the Firefox tests are driven by, from crates.io.
const GECKODRIVER_VERSION: &str = "0.37.1";

/// Where `cargo install` puts binaries: `$CARGO_HOME` (else `~/.cargo`); the tests look
/// for geckodriver in its `bin` (see `tests/src/browser.rs`).
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default()
}

/// geckodriver, built from crates.io when it is missing (a few minutes on 2 cores, once).
fn ensure_geckodriver() -> Result<PathBuf> {
    let home = cargo_home();
    let bin = home.join("bin/geckodriver");
    if !bin.exists() {
        eprintln!(
            "xtask: installing geckodriver {GECKODRIVER_VERSION} (the Firefox tests need it)"
        );
        run(cargo()
            .args([
                "install",
                "--locked",
                "--version",
                GECKODRIVER_VERSION,
                "--root",
            ])
            .arg(&home)
            .arg("geckodriver"))?;
    }
    Ok(bin)
}

fn ensure_test_tools() -> Result<()> {
    let have = |p: &str| Path::new(p).exists();
    let missing: Vec<&str> = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
        ("/usr/bin/firefox-esr", "firefox-esr"),
        ("/usr/bin/WebKitWebDriver", "webkit2gtk-driver"),
        ("/usr/bin/Xvfb", "xvfb"),
        ("/usr/bin/certutil", "libnss3-tools"),
        ("/usr/sbin/ip", "iproute2"),
        ("/usr/sbin/nft", "nftables"),
        // Class recordings: the server's mixdown, and ffprobe for the tests.
        ("/usr/bin/ffmpeg", "ffmpeg"),
        ("/usr/bin/ffprobe", "ffmpeg"),
        // Cluster mode: Redis coordinates the nodes, PostgreSQL is their shared store.
        ("/usr/bin/redis-server", "redis-server"),
    ]
    .into_iter()
    .filter(|(path, _)| !have(path))
    .map(|(_, package)| package)
    .chain((!have_postgres_server()).then_some("postgresql"))
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        bail!(
            "the browser tests and the test network need {}: run `sudo apt-get install -y {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!(
        "xtask: installing {} (the browser tests and the test network need them)",
        missing.join(", ")
    );
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y"])
        .args(&missing))
}

/// Whether a PostgreSQL server is installed (Debian keeps it in /usr/lib/postgresql/VERSION).
fn have_postgres_server() -> bool {
    std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
        versions
            .filter_map(|v| v.ok())
            .any(|v| v.path().join("bin/postgres").is_file())
    })
}

/// Whether this process may create a network namespace (root, or user namespaces allowed).
fn can_isolate_network() -> bool {
    Command::new("unshare")
        .args(["--net", "--", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let pkg = build_client(root)?;
    ensure_test_tools()?;
    let geckodriver = ensure_geckodriver()?;
    // Build everything first, with the network (crates may need fetching).
    run(cargo().args(["test", "--workspace", "--all-targets", "--no-run"]))?;
    // Then run every test in a network namespace that has only loopback, so servers,
    // bots and browsers (WebRTC gathers candidates on every interface) reach nothing else.
    // Its default route goes through loopback from 127.0.0.1: Firefox gathers no ICE
    // candidates without a default route (see `tests/src/browser.rs`).
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = if can_isolate_network() {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && ip route add default dev lo src 127.0.0.1 && exec \"$@\"",
            "sh",
        ]);
        cmd.arg(&cargo_bin);
        cmd
    } else {
        eprintln!(
            "xtask: WARNING: cannot create a network namespace (run as root for that); \
             tests run in the host network, and browsers may use its interfaces"
        );
        Command::new(&cargo_bin)
    };
    cmd.args(["test", "--workspace", "--all-targets", "--offline"]);
    cmd.args(extra);
    cmd.env("QUAD_CLIENT_DIR", &pkg);
    cmd.env("QUAD_GECKODRIVER", &geckodriver);
    // A failing test's message stays short enough to read in a CI log: no error backtraces
    // unless asked for.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        cmd.env("RUST_LIB_BACKTRACE", "0");
    }
    run(&mut cmd)
}

/// `cargo` arguments that build the release server (`target/release/quad-server`).
const RELEASE_SERVER: [&str; 4] = ["build", "--release", "--package", "quad-server"];

/// The soak run: builds the release server and `quad-soak`, then runs it with `extra`
/// (`--minutes N`, `--walkers`, `--rooms`, `--room-size`, `--every`, `--out`).
fn soak(root: &Path, extra: &[String]) -> Result<()> {
    // The server as users run it: its `/metrics` tells the live heap from what the
    // allocator holds beyond it (`quad_heap_*`).
    run(cargo().args(RELEASE_SERVER))?;
    run(cargo()
        .args([
            "run",
            "--release",
            "--package",
            "quad-tests",
            "--bin",
            "quad-soak",
            "--",
        ])
        .args(extra)
        .env("QUAD_SERVER_BIN", root.join("target/release/quad-server")))
}

fn bench(root: &Path, extra: &[String]) -> Result<()> {
    let mut world = cargo();
    world.args([
        "bench",
        "--package",
        "quad-server",
        "--bench",
        "world_tick",
        "--",
    ]);
    world.args(extra);
    run(&mut world)?;
    run(cargo().args([
        "bench",
        "--package",
        "quad-server",
        "--bench",
        "proximity_graph",
    ]))?;
    // The server as users run it: no counting allocator on the packet path.
    run(cargo().args(RELEASE_SERVER))?;
    run(cargo()
        .args([
            "bench",
            "--package",
            "quad-tests",
            "--bench",
            "session_memory",
        ])
        .env("QUAD_SERVER_BIN", root.join("target/release/quad-server")))?;
    run(cargo()
        .args([
            "bench",
            "--package",
            "quad-tests",
            "--bench",
            "sfu_forwarding",
        ])
        .env("QUAD_SERVER_BIN", root.join("target/release/quad-server")))?;
    run(cargo()
        .args(["bench", "--package", "quad-tests", "--bench", "recording"])
        .env("QUAD_SERVER_BIN", root.join("target/release/quad-server")))?;
    run(cargo()
        .args(["bench", "--package", "quad-tests", "--bench", "cluster"])
        .env("QUAD_SERVER_BIN", root.join("target/release/quad-server")))?;
    summarize(root)
}

/// Reads every benchmark's JSON, prints one table against the targets, and writes it with
/// the machine's description to `target/bench/summary.json`.
fn summarize(root: &Path) -> Result<()> {
    use serde_json::{Value, json};
    let dir = root.join("target/bench");
    let read = |name: &str| -> Value {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let (world, proximity, memory, sfu) = (
        read("world_tick.json"),
        read("proximity_graph.json"),
        read("session_memory.json"),
        read("sfu_forwarding.json"),
    );
    let find = |v: &Value, key: &str, name: &str| -> Value {
        v.as_array()
            .and_then(|a| a.iter().find(|e| e[key] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let proximity_update = proximity
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["scenario"] == "open_10240px" && e["step"] == "whole update")
                .cloned()
        })
        .unwrap_or(Value::Null);
    let scenario = |name: &str| sfu["scenarios"][name].clone();
    let num = |v: &Value| v.as_f64();
    let fmt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    // (what, value, spread, target, met)
    let mut rows: Vec<(String, String, String, String, Option<bool>)> = Vec::new();
    let mut row = |what: &str,
                   value: Option<f64>,
                   digits: usize,
                   spread: String,
                   target: &str,
                   met: Option<bool>| {
        rows.push((
            what.to_owned(),
            fmt(value, digits),
            spread,
            target.to_owned(),
            met,
        ));
    };
    // The target is a p99 on one core: judged on the tick thread's CPU time, since wall
    // time on a shared machine also counts moments another process had the core (both are
    // shown).
    for (name, target, limit) in [
        ("campus_1000", "", None),
        ("open_campus_10000", "p99 < 5 ms (CPU)", Some(5.0)),
        ("campus_10000_stress", "", None),
    ] {
        let w = find(&world, "scenario", name);
        let p50 = num(&w["p50_ms"]);
        let cpu99 = num(&w["cpu_p99_ms"]);
        row(
            &format!("world tick, {name} (ms p50)"),
            p50,
            2,
            format!(
                "p99 {}; CPU p50 {}, p99 {}",
                fmt(num(&w["p99_ms"]), 2),
                fmt(num(&w["cpu_p50_ms"]), 2),
                fmt(cpu99, 2)
            ),
            target,
            limit.zip(cpu99).map(|(l, v)| v < l),
        );
    }
    let p = num(&proximity_update["p50_ms"]);
    row(
        "proximity graph update, 10k (ms p50)",
        p,
        2,
        format!("p99 {}", fmt(num(&proximity_update["p99_ms"]), 2)),
        "< 1 ms",
        p.map(|v| v < 1.0),
    );
    let m = num(&memory["per_avatar_kb"]);
    row(
        "memory per avatar, no media (kB)",
        m,
        1,
        String::new(),
        "< 100 kB",
        m.map(|v| v < 100.0),
    );
    let all = scenario("audio_50_all");
    let per_core = num(&all["pps_per_server_core"]);
    row(
        "SFU, 50 mics all forwarded (packets/s per server core)",
        per_core,
        0,
        format!(
            "{} packets/s on {} cores",
            fmt(num(&all["received_pps"]), 0),
            fmt(num(&all["server_cpu_cores"]), 2)
        ),
        // Absolute figures move with the machine (164,000 on a quiet EPYC, 101,700 on a
        // Xeon of the same kind): the target is a ratio to the build before, measured in
        // alternated runs (`farm-bench`, see the README), so this row has none.
        "",
        None,
    );
    let share = num(&sfu["sfu_share_of_relay_per_core"]);
    row(
        "SFU per core as a share of the plain UDP relay (%)",
        share.map(|s| s * 100.0),
        0,
        format!(
            "relay {} packets/s per core",
            fmt(num(&sfu["udp_relay_50"]["pps_per_relay_core"]), 0)
        ),
        ">= 40%",
        share.map(|s| s >= 0.4),
    );
    for name in ["audio_50_loudest", "camera_1_to_50"] {
        let s = scenario(name);
        row(
            &format!("SFU, {name} (packets/s per server core)"),
            num(&s["pps_per_server_core"]),
            0,
            format!("loss {}%", fmt(num(&s["loss"]).map(|l| l * 100.0), 2)),
            "",
            None,
        );
    }
    let recording = read("recording.json");
    let added = num(&recording["recorder_cpu"]["added_percent"]);
    row(
        "recording a class of 30: server CPU added (%)",
        added,
        1,
        format!(
            "{} cores off, {} on (medians)",
            fmt(num(&recording["recorder_cpu"]["median_off"]), 3),
            fmt(num(&recording["recorder_cpu"]["median_on"]), 3)
        ),
        "< 5%",
        added.map(|a| a < 5.0),
    );
    let mix = num(&recording["mixdown_5min"]["median_s"]);
    row(
        "mixdown of a 5-minute class (s)",
        mix,
        2,
        format!(
            "{}x real time",
            fmt(num(&recording["mixdown_5min"]["times_real_time"]), 0)
        ),
        "< 10 s",
        mix.map(|m| m < 10.0),
    );
    let cluster = read("cluster.json");
    for (i, nodes) in [(1usize, 2), (2, 3)] {
        let ratio = num(&cluster["ratio_to_one_node"][i]);
        row(
            &format!("CPU per forwarded packet, {nodes} nodes / 1 node"),
            ratio,
            2,
            format!(
                "{} µs against {} µs (medians)",
                fmt(num(&cluster["median_us_per_packet"][i]), 1),
                fmt(num(&cluster["median_us_per_packet"][0]), 1)
            ),
            "within 10%",
            ratio.map(|r| r <= 1.10),
        );
    }
    let light = scenario("audio_10_all");
    let d99 = num(&light["delay_us_p99"]).map(|v| v / 1000.0);
    row(
        "delay through the SFU, 10 mics (ms p99, one-way incl. bots)",
        d99,
        2,
        format!(
            "p50 {}",
            fmt(num(&light["delay_us_p50"]).map(|v| v / 1000.0), 2)
        ),
        "< 1 ms at half load",
        d99.map(|v| v < 1.0),
    );
    let mem = num(&all["server_rss_per_member_kib"]).map(|k| k * 1.024);
    row(
        "memory per SFU room member, 50 mics all forwarded (kB)",
        mem,
        0,
        format!(
            "{} MiB with 50 members, {} MiB idle",
            fmt(num(&all["server_rss_kib"]).map(|k| k / 1024.0), 1),
            fmt(num(&all["server_rss_before_kib"]).map(|k| k / 1024.0), 1)
        ),
        "< 1000 kB",
        mem.map(|v| v < 1000.0),
    );
    let join = num(&all["join_ms_p50"]);
    row(
        "join to first forwarded audio, 50 in a room (ms p50)",
        join,
        0,
        format!("p99 {}", fmt(num(&all["join_ms_p99"]), 0)),
        "< 1000 ms",
        join.map(|v| v < 1000.0),
    );

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .unwrap_or_default();
    println!("\nQuad benchmarks on {cpu}, {cores} cores, {mem_total} kB of memory\n");
    println!("| measure | value | spread | target | met |\n|---|---|---|---|---|");
    for (what, value, spread, target, met) in &rows {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!("| {what} | {value} | {spread} | {target} | {met} |");
    }
    let summary = json!({
        "machine": {"cpu": cpu, "cores": cores, "memory_kib": mem_total},
        "rows": rows.iter().map(|(what, value, spread, target, met)| json!({
            "measure": what, "value": value, "spread": spread, "target": target, "met": met,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    eprintln!("xtask: results in target/bench/*.json, the table in target/bench/summary.json");
    Ok(())
}

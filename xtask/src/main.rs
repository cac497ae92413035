//! `cargo xtask`: the project's tasks.
//!
//! - `serve`: builds the wasm client, then runs `quad-server` on http://127.0.0.1:8080.
//! - `test`: builds the client, installs Chromium when missing, runs every test.
//! - `bench`: runs the benchmarks.
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
        Some("client") => build_client(&root).map(|_| ()),
        _ => {
            eprintln!(
                "usage: cargo xtask <serve [server flags] | test [cargo test args] | bench | client>"
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

/// Compiles `quad-client` for wasm32 and generates the JS glue into `target/web/pkg`.
fn build_client(root: &Path) -> Result<PathBuf> {
    eprintln!("xtask: building the wasm client");
    run(cargo().args([
        "build",
        "--package",
        "quad-client",
        "--target",
        "wasm32-unknown-unknown",
        "--release",
    ]))?;
    let wasm = root.join("target/wasm32-unknown-unknown/release/quad_client.wasm");
    let out = root.join("target/web/pkg");
    std::fs::create_dir_all(&out)?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)?
        .typescript(false)
        .out_name("quad_client")
        .generate(&out)
        .with_context(|| format!("wasm-bindgen on {}", wasm.display()))?;
    eprintln!("xtask: client bundle in {}", out.display());
    Ok(out)
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

/// Installs Debian's chromium and chromium-driver if they are missing (as root), or says how.
fn ensure_chromium() -> Result<()> {
    let have = |p: &str| Path::new(p).exists();
    if have("/usr/bin/chromium") && have("/usr/bin/chromedriver") {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        bail!(
            "browser tests need Chromium and ChromeDriver: run `sudo apt-get install -y chromium chromium-driver`"
        );
    }
    eprintln!("xtask: installing chromium and chromium-driver (browser tests need them)");
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get").args(["install", "-y", "chromium", "chromium-driver"]))
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
    ensure_chromium()?;
    // Build everything first, with the network (crates may need fetching).
    run(cargo().args(["test", "--workspace", "--all-targets", "--no-run"]))?;
    // Then run every test in a network namespace that has only loopback, so servers,
    // bots and browsers (WebRTC gathers candidates on every interface) reach nothing else.
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = if can_isolate_network() {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
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
    // A failing test's message stays short enough to read in a CI log: no error backtraces
    // unless asked for.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        cmd.env("RUST_LIB_BACKTRACE", "0");
    }
    run(&mut cmd)
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
    run(cargo().args(["build", "--release", "--package", "quad-server"]))?;
    run(cargo()
        .args([
            "bench",
            "--package",
            "quad-tests",
            "--bench",
            "session_memory",
        ])
        .env("QUAD_SERVER_BIN", root.join("target/release/quad-server")))?;
    eprintln!("xtask: results in target/bench/*.json");
    Ok(())
}

//! The `quad-server` binary as a user starts it: prints its address, answers `/healthz`,
//! runs without transparent huge pages, shuts down cleanly on SIGTERM, and refuses to
//! start on a broken map or bad config with an error that names the file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn server() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quad-server"));
    cmd.current_dir(root())
        .env_remove("QUAD_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A started server, killed when dropped: a test that fails half-way leaves none running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// The server started on a free loopback port with `data` as its data directory.
fn start(data: &Path) -> Running {
    Running(
        server()
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .spawn()
            .expect("spawn quad-server"),
    )
}

fn temp(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quad-cli-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn starts_serves_and_stops_on_sigterm() {
    let data = temp("data");
    let mut child = start(&data);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the address line");
    let addr = line
        .trim()
        .strip_prefix("Quad is serving http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();

    let health = http_get(&addr, "/healthz").expect("GET /healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") || health.starts_with("HTTP/1.0 200"),
        "{health}"
    );
    let map = http_get(&addr, "/map.tmj").expect("GET /map.tmj");
    assert!(map.contains("\"tilesets\""), "the map is served");
    let missing = http_get(&addr, "/no/such/file").expect("GET missing");
    assert!(missing.contains(" 404 "), "{missing}");
    assert!(data.is_dir(), "the data directory is created");

    let pid = child.id().to_string();
    // Transparent huge pages are off for the server (`quad_server::heap::no_huge_pages`):
    // with them, khugepaged grew a long run's memory in 2 MiB steps over a flat live heap.
    if cfg!(target_os = "linux") {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])),
            "transparent huge pages are not off: {status}"
        );
    }
    // The server runs on jemalloc, whose statistics `/metrics` shows: a live heap of some
    // MiB (the map, the world, the store), within the pages that hold it, within what
    // the allocator has in RAM, within the process's RSS.
    let metrics = http_get(&addr, "/metrics").expect("GET /metrics");
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let (live, active, resident) = (
        gauge("quad_heap_live_bytes"),
        gauge("quad_heap_active_bytes"),
        gauge("quad_heap_resident_bytes"),
    );
    assert!(
        live > 1e6 && live <= active && active <= resident,
        "{metrics}"
    );
    assert!(gauge("quad_heap_metadata_bytes") > 0.0, "{metrics}");
    if cfg!(target_os = "linux") {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("VmRSS");
        assert!(resident < rss_kib * 1024.0, "{resident} {rss_kib} KiB");
    }
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

fn refuses(args: &[&str], expect_in_error: &[&str]) {
    let out = server()
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .expect("run");
    assert!(!out.status.success(), "started anyway");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in expect_in_error {
        assert!(
            stderr.contains(needle),
            "stderr does not mention {needle:?}: {stderr}"
        );
    }
}

#[test]
fn a_broken_map_file_is_refused_by_name() {
    let dir = temp("broken-map");
    let broken = dir.join("broken.tmj");
    let campus = std::fs::read_to_string(root().join("assets/maps/campus.tmj")).expect("campus");
    // Drop the collision layer's name so the map has no collision layer.
    std::fs::write(
        &broken,
        campus.replace("\"name\": \"collision\"", "\"name\": \"coll\""),
    )
    .expect("write");
    refuses(
        &["--map", broken.to_str().expect("utf-8")],
        &["broken.tmj", "collision"],
    );

    let truncated = dir.join("truncated.tmj");
    std::fs::write(&truncated, &campus[..campus.len() / 2]).expect("write");
    refuses(
        &["--map", truncated.to_str().expect("utf-8")],
        &["truncated.tmj", "JSON"],
    );

    refuses(
        &["--map", "/nonexistent/campus.tmj"],
        &["/nonexistent/campus.tmj"],
    );
}

#[test]
fn a_bad_config_is_refused_by_setting() {
    let dir = temp("bad-config");
    let cfg = dir.join("quad.toml");
    std::fs::write(&cfg, "tick_hz = 0\n").expect("write");
    refuses(&["--config", cfg.to_str().expect("utf-8")], &["tick_hz"]);
    std::fs::write(&cfg, "tickrate = 5\n").expect("write");
    refuses(
        &["--config", cfg.to_str().expect("utf-8")],
        &["quad.toml", "tickrate"],
    );
}

/// Runs `quad-server token ...` on `data` and returns (success, stdout, stderr).
fn token(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = server()
        .args(["token", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .expect("run quad-server token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The claims of the link's token, checked with the secret kept in `data`.
fn claims(data: &Path, link: &str) -> quad_server::auth::JoinClaims {
    let token = link
        .trim()
        .split_once("/?token=")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("not a join link: {link:?}"));
    let config = quad_server::Config {
        data_dir: data.to_owned(),
        ..quad_server::Config::default()
    };
    let storage = quad_server::open_storage(&config).expect("the data directory's store");
    let (keys, created) = quad_server::join_keys(&config, &storage).expect("keys");
    assert!(!created, "the secret was already there");
    keys.verify(token).expect("a valid link")
}

#[test]
fn token_makes_join_links_with_the_campus_secret() {
    let data = temp("token");
    let (ok, link, err) = token(
        &data,
        &["--role", "teacher", "--name", "Ms Ada", "--ttl", "8h"],
    );
    assert!(ok, "{err}");
    assert!(link.starts_with("http://127.0.0.1:8080/?token="), "{link}");
    let c = claims(&data, &link);
    assert_eq!((c.name.as_str(), c.role.as_str()), ("Ms Ada", "teacher"));
    assert_eq!(c.exp - c.iat, 8 * 3600);

    // A second link for a room, with the same secret; different people get different ids.
    let (ok, link2, err) = token(
        &data,
        &["--role", "student", "--name", "Bo", "--room", "Classroom B"],
    );
    assert!(ok, "{err}");
    let c2 = claims(&data, &link2);
    assert_eq!(c2.room.as_deref(), Some("Classroom B"));
    assert_ne!(c.sub, c2.sub);

    for (args, needle) in [
        (&["--role", "guest", "--name", "X"][..], "--role"),
        (
            &["--role", "teacher", "--name", "X", "--ttl", "soon"][..],
            "--ttl",
        ),
        (&["--role", "teacher", "--name", ""][..], "name"),
        (
            &["--role", "student", "--name", "X", "--room", "Attic"][..],
            "Classroom A",
        ),
    ] {
        let (ok, _, err) = token(&data, args);
        assert!(!ok, "{args:?} made a link");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn the_first_start_prints_a_teacher_link_and_later_starts_do_not() {
    let data = temp("first-start");
    let lines_of_a_start = || {
        let mut child = start(&data);
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = String::new();
        reader.read_line(&mut line).expect("the address line");
        let addr = line
            .trim()
            .strip_prefix("Quad is serving http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        // The server is up (it printed its address): stop it, and read the rest.
        assert!(http_get(&addr, "/healthz").is_ok());
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        let mut rest = String::new();
        reader
            .read_to_string(&mut rest)
            .expect("the rest of stdout");
        let _ = child.wait();
        lines.extend(rest.lines().map(str::to_owned));
        (addr, lines)
    };
    let (addr, first) = lines_of_a_start();
    assert!(first[0].contains("new campus"), "{first:?}");
    let link = first[1].trim();
    assert!(
        link.starts_with(&format!("http://{addr}/?token=")),
        "{link}"
    );
    let c = claims(&data, link);
    assert_eq!((c.name.as_str(), c.role.as_str()), ("Teacher", "teacher"));
    let (_, second) = lines_of_a_start();
    assert!(
        second.is_empty(),
        "a later start prints no link: {second:?}"
    );
}

/// Under a low soft open-file limit (256, as `ulimit -Sn 256` leaves it), the server raises
/// it to the hard limit, says so, derives its connection caps from what it got, and serves.
#[test]
fn a_low_open_file_limit_is_raised_at_start() {
    let data = temp("nofile");
    let bin = env!("CARGO_BIN_EXE_quad-server");
    let mut cmd = if Path::new("/usr/bin/prlimit").exists() {
        let mut cmd = Command::new("/usr/bin/prlimit");
        // Soft limit only: the hard one stays what the machine allows.
        cmd.args(["--nofile=256:", "--", bin]);
        cmd
    } else {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -S -n 256 && exec \"$0\" \"$@\"", bin]);
        cmd
    };
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .current_dir(root())
        .env_remove("QUAD_CONFIG")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quad-server under a 256 soft open-file limit");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the address line");
    let addr = line
        .trim()
        .strip_prefix("Quad is serving http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    // Both lines come at start-up; the second when the accept loop starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut raised, mut budget) = (None, None);
    while raised.is_none() || budget.is_none() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        if line.contains("open-file limit raised from 256 to ") {
            raised = Some(line);
        } else if line.contains("connections: up to ") {
            budget = Some(line);
        }
    }
    let health = http_get(&addr, "/healthz");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    let raised = raised.expect("the log says the open-file limit was raised from 256");
    let budget = budget.expect("the log gives the connection caps");
    println!("{raised}\n{budget}");
    assert!(
        !budget.contains("open-file limit 256:"),
        "the caps follow the raised limit: {budget}"
    );
    assert!(health.expect("GET /healthz").contains(" 200 "));
}

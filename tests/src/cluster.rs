//! The pieces of a Quad cluster for tests: a real `redis-server` and a real PostgreSQL,
//! each started on loopback in a temporary directory and stopped when dropped, and
//! `quad-server` nodes started as processes against them (so a test can SIGKILL one).

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The cluster secret test nodes share.
pub const SECRET: &str = "cluster-test-secret-0123456789abcdef";

/// A port on loopback nobody listens on now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_port(port: u16, what: &str, child: &mut tokio::process::Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before listening: {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on {port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `redis-server` on loopback, without persistence (what Quad keeps there is re-written
/// every second).
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Redis {
    pub async fn start() -> Result<Redis> {
        let dir = crate::temp_dir("redis");
        std::fs::create_dir_all(&dir)?;
        let mut redis = Redis {
            port: free_port()?,
            dir,
            child: None,
        };
        redis.run().await?;
        Ok(redis)
    }

    async fn run(&mut self) -> Result<()> {
        let mut child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (Debian's redis-server package)")?;
        wait_for_port(self.port, "redis-server", &mut child).await?;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (everything it held is lost) and starts it again on the same port.
    pub async fn restart(&mut self, down_for: Duration) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        tokio::time::sleep(down_for).await;
        self.run().await
    }
}

/// A PostgreSQL server on loopback, in a temporary directory (as the `postgres` user when
/// the tests run as root: PostgreSQL refuses to run as root).
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    child: tokio::process::Child,
}

fn postgres_bin(name: &str) -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (Debian's postgresql package)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .with_context(|| format!("no {name} under /usr/lib/postgresql/*/bin"))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` with `args`, as the `postgres` user when this is root.
fn as_postgres(program: &Path) -> std::process::Command {
    if is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

impl Postgres {
    pub async fn start() -> Result<Postgres> {
        let dir = crate::temp_dir("postgres");
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            if !status.success() {
                bail!("chown of {} to postgres failed", dir.display());
            }
        }
        let data = dir.join("data");
        let out = as_postgres(&postgres_bin("initdb")?)
            .args([
                "--auth=trust",
                "--username=quad",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data)
            .output()
            .context("initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port()?;
        let mut command: tokio::process::Command = as_postgres(&postgres_bin("postgres")?).into();
        let mut child = command
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .arg("-p")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting postgres")?;
        wait_for_port(port, "postgres", &mut child).await?;
        Ok(Postgres { port, dir, child })
    }

    /// A URL for database `db` (made now, empty).
    pub fn database(&self, db: &str) -> Result<String> {
        let out = as_postgres(&postgres_bin("createdb")?)
            .args(["-h", "127.0.0.1", "-U", "quad", "-p"])
            .arg(self.port.to_string())
            .arg(db)
            .output()
            .context("createdb")?;
        if !out.status.success() {
            bail!("createdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(format!("postgres://quad@127.0.0.1:{}/{db}", self.port))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // `postgres` runs under runuser: stop the server itself with a fast shutdown.
        if let Some(pid) = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = self.child.start_kill();
    }
}

/// A `quad-server` node of a cluster.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub child: tokio::process::Child,
}

impl Node {
    /// Starts node `name` against `redis` and the database at `db`.
    pub async fn start(name: &str, redis: &str, db: &str) -> Result<Node> {
        Self::start_with(name, redis, db, "").await
    }

    /// Starts node `name` with more settings (TOML lines) in its config file.
    pub async fn start_with(name: &str, redis: &str, db: &str, extra: &str) -> Result<Node> {
        let bin = crate::server_binary()?;
        let data = crate::temp_dir(&format!("node-{name}"));
        std::fs::create_dir_all(&data)?;
        let mut command = node_command(&bin, &data, name, redis, db);
        let config = data.join("quad.toml");
        let text = std::fs::read_to_string(&config)? + extra;
        std::fs::write(&config, text)?;
        let (child, serving) = crate::spawn_server(&mut command).await?;
        let addr = serving
            .url
            .strip_prefix("http://")
            .context("a plain-http node")?
            .parse()?;
        Ok(Node {
            name: name.into(),
            addr,
            data,
            child,
        })
    }

    /// SIGKILL: the node is gone at once, without a word to anyone.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// The command line of a node (the same binary as a single server, with `--cluster`).
pub fn node_command(
    bin: &Path,
    data: &Path,
    name: &str,
    redis: &str,
    db: &str,
) -> tokio::process::Command {
    let config = data.join("quad.toml");
    // Every node picks its own TURN and media ports (they share a machine here), and every
    // client comes from loopback (no per-address session quotas).
    let _ = std::fs::write(
        &config,
        "media_port = 0\nmax_sessions_per_ip = 0\nsession_joins_per_ip_per_minute = 0\n",
    );
    let mut command = tokio::process::Command::new(bin);
    command
        .current_dir(crate::repo_root())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--dev",
            "--turn-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .arg("--client-dir")
        .arg(crate::client_dir())
        .args(["--cluster", redis, "--node", name, "--database-url", db])
        .env("QUAD_CLUSTER_SECRET", SECRET);
    command
}

/// `GET /cluster` from `addr` with the cluster secret: the JSON view.
pub async fn view(addr: SocketAddr) -> Result<serde_json::Value> {
    let auth = format!("Authorization: Bearer {SECRET}");
    let res = crate::http_request(addr, "/cluster", &[auth.as_str()]).await?;
    if res.status != 200 {
        bail!(
            "/cluster answered {}: {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        );
    }
    Ok(serde_json::from_slice(&res.body)?)
}

/// Waits until `addr`'s view of the cluster satisfies `cond`.
pub async fn wait_view(
    addr: SocketAddr,
    timeout: Duration,
    mut cond: impl FnMut(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = view(addr).await;
        if let Ok(v) = &view
            && cond(v)
        {
            return view;
        }
        if Instant::now() > deadline {
            bail!("the cluster view of {addr} did not become as expected: {view:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

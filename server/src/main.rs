//! `quad-server`: parses the command line, starts tracing, and runs the server until
//! SIGINT or SIGTERM (a second signal exits at once). `quad-server token` makes join links.

use clap::{Parser, Subcommand};
use quad_server::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// jemalloc, not glibc's malloc: the world tick and the SFU make many small, short-lived
/// buffers, and with glibc a fifth of a 10,000-avatar tick went to `malloc` and `free`
/// (perf, `cargo xtask bench`). Nor mimalloc, which the server used before: with jemalloc
/// the server forwarded as many packets per CPU-second or more, and held about a tenth
/// less memory under the forwarding bench and a sixth less in the soak (README, "Soak").
///
/// With `--features heap-prof`, jemalloc's sampling heap profiler is built in, cheap enough
/// for a whole soak at full load (DHAT slows the server too much for that). Run with
/// `_RJEM_MALLOC_CONF=prof:true,lg_prof_sample:17,lg_prof_interval:32,prof_prefix:DIR/heap`
/// and a profile is written to `DIR` after every 4 GiB allocated; two of them compared
/// (`jeprof --text --cum --base=EARLY quad-server LATE`) show what a long run keeps
/// (the README's "Soak" says more).
///
/// jemalloc keeps statistics (built with them), which `/metrics` shows: the live heap and
/// what the allocator holds beyond it (`quad_server::heap`).
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// With `--features dhat-heap`, a heap profile instead: every allocation is tracked, and
/// `dhat-heap.json` (in the working directory) is written when the server stops on
/// SIGTERM. Open it in DHAT's viewer. For finding what a long run keeps; much slower.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// The Quad virtual campus server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A TOML config file; command-line flags and QUAD_* variables override it.
    #[arg(long, env = "QUAD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "QUAD_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// The Tiled map (.tmj) of the campus.
    #[arg(long, env = "QUAD_MAP", global = true)]
    map: Option<PathBuf>,
    /// Directory of the page's static files.
    #[arg(long, env = "QUAD_ASSETS")]
    assets: Option<PathBuf>,
    /// Directory of the built wasm client.
    #[arg(long, env = "QUAD_CLIENT_DIR")]
    client_dir: Option<PathBuf>,
    /// Directory for the server's data.
    #[arg(long, env = "QUAD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Development mode: pages may choose their spawn with ?spawn=X,Y.
    #[arg(long, env = "QUAD_DEV")]
    dev: bool,
    /// Where the embedded STUN/TURN server listens, UDP and TCP (default: the --listen IP,
    /// port 3478).
    #[arg(long, env = "QUAD_TURN_LISTEN")]
    turn_listen: Option<SocketAddr>,
    /// HTTPS: a PEM certificate chain (with --tls-key); a renewed file is used without a
    /// restart.
    #[arg(long, env = "QUAD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// HTTPS: the PEM private key of --tls-cert.
    #[arg(long, env = "QUAD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// HTTPS with a self-signed certificate, made at the first start and kept in the data
    /// directory (for a trial on a LAN; browsers warn about it).
    #[arg(long, env = "QUAD_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// With TLS: also listen for plain HTTP here (e.g. 0.0.0.0:80) and redirect it to HTTPS.
    #[arg(long, env = "QUAD_HTTP_REDIRECT_LISTEN")]
    http_redirect_listen: Option<SocketAddr>,
    /// The address browsers reach TURN at, when it is not the --turn-listen IP.
    #[arg(long, env = "QUAD_TURN_PUBLIC_IP")]
    turn_public_ip: Option<std::net::IpAddr>,
    /// Cluster mode: the Redis server the nodes coordinate through (redis://HOST:PORT).
    #[arg(long, env = "QUAD_CLUSTER", global = true)]
    cluster: Option<String>,
    /// This node's name in the cluster.
    #[arg(long = "node", env = "QUAD_NODE", global = true)]
    node_name: Option<String>,
    /// Where the other nodes reach this node's web port (default http://LISTEN).
    #[arg(long, env = "QUAD_NODE_URL")]
    node_url: Option<String>,
    /// The shared store, PostgreSQL (postgres://USER:PASSWORD@HOST:PORT/DB).
    #[arg(long, env = "QUAD_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// The secret cluster nodes share (at least 32 characters).
    #[arg(long, env = "QUAD_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a join link (uses the same config and data directory as the server).
    Token {
        /// `teacher` or `student`.
        #[arg(long)]
        role: String,
        /// The display name the link joins with.
        #[arg(long)]
        name: String,
        /// How long the link stays valid, e.g. 8h, 30m, 7d.
        #[arg(long, default_value = "8h")]
        ttl: String,
        /// A classroom (its name on the map) the link opens in.
        #[arg(long)]
        room: Option<String>,
    },
}

impl Cli {
    fn into_config(self) -> Result<Config, quad_server::config::ConfigError> {
        let mut config = Config::from_file(self.config.as_deref())?;
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.map {
            config.map = v;
        }
        if let Some(v) = self.assets {
            config.assets_dir = v;
        }
        if let Some(v) = self.client_dir {
            config.client_dir = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        config.dev |= self.dev;
        if self.tls_cert.is_some() {
            config.tls_cert = self.tls_cert;
            config.tls_key = self.tls_key;
        }
        config.tls_self_signed |= self.tls_self_signed;
        if self.http_redirect_listen.is_some() {
            config.http_redirect_listen = self.http_redirect_listen;
        }
        if self.turn_listen.is_some() {
            config.turn_listen = self.turn_listen;
        }
        if self.turn_public_ip.is_some() {
            config.turn_public_ip = self.turn_public_ip;
        }
        if self.cluster.is_some() {
            config.cluster = self.cluster;
        }
        if self.node_name.is_some() {
            config.node_name = self.node_name;
        }
        if self.node_url.is_some() {
            config.node_url = self.node_url;
        }
        if self.database_url.is_some() {
            config.database_url = self.database_url;
        }
        if self.cluster_secret.is_some() {
            config.cluster_secret = self.cluster_secret;
        }
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profile = dhat_profile();
    // webrtc-rs's ICE and DTLS warn about routine things on every connection.
    quad_server::logging::init(
        "info,warp=warn,hyper=warn,rtc_ice=error,rtc_dtls=error",
        false,
    );
    quad_server::heap::no_huge_pages();
    let mut cli = Cli::parse();
    let command = cli.command.take();
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(Command::Token {
        role,
        name,
        ttl,
        room,
    }) = command
    {
        return match token(&config, &role, &name, &ttl, room.as_deref()) {
            Ok(link) => {
                println!("{link}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match quad_server::run(config, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Starts the heap profile. With `QUAD_DHAT_AFTER_SECS=N` it is written after N seconds
/// while the server runs on, so its "at t-end" figures are what was live at that moment:
/// two runs stopped at different times show what grows. Otherwise it is written at exit.
#[cfg(feature = "dhat-heap")]
fn dhat_profile() -> Option<dhat::Profiler> {
    let profile = dhat::Profiler::new_heap();
    let Some(secs) = std::env::var("QUAD_DHAT_AFTER_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Some(profile);
    };
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(secs));
        drop(profile);
        eprintln!("dhat: profile written after {secs} s");
    });
    None
}

/// Makes a join link with the campus's secret (from the config or the data directory).
fn token(
    config: &Config,
    role: &str,
    name: &str,
    ttl: &str,
    room: Option<&str>,
) -> anyhow::Result<String> {
    config.validate()?;
    let role = match quad_shared::protocol::Role::parse(role) {
        Some(
            role @ (quad_shared::protocol::Role::Teacher | quad_shared::protocol::Role::Student),
        ) => role,
        _ => anyhow::bail!("--role must be `teacher` or `student`, not `{role}`"),
    };
    let ttl = quad_server::auth::parse_ttl(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    if let Some(room) = room {
        let map = quad_shared::map::Map::load(&config.map)?;
        if !map
            .zones
            .iter()
            .any(|z| z.kind == quad_shared::map::ZoneKind::Classroom && z.name == room)
        {
            let rooms: Vec<&str> = map
                .zones
                .iter()
                .filter(|z| z.kind == quad_shared::map::ZoneKind::Classroom)
                .map(|z| z.name.as_str())
                .collect();
            anyhow::bail!(
                "--room: the map has no classroom named `{room}` (it has: {})",
                rooms.join(", ")
            );
        }
    }
    let storage = quad_server::open_storage(config)?;
    let (keys, _) = quad_server::join_keys(config, &storage)?;
    quad_server::join_link(config, &keys, name, role, room, ttl)
}

/// Completes on the first SIGINT or SIGTERM; a second one exits immediately. The handlers
/// are installed when this is called, before the server starts serving: a signal that
/// comes as soon as the server answers must not find the default action (exit at once).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut signals = Signals::install();
    async move {
        signals.next().await;
        tokio::spawn(async move {
            signals.next().await;
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
    }
}

/// SIGINT and SIGTERM, listened for from the moment this is made.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Signals { streams }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! `quad-server`: the Quad server as a library; `main.rs` only parses the command line.
//!
//! Layout, edge to core:
//! - [`config`]: settings and their validation.
//! - [`http`]: warp routes: the page, the wasm client, the map, `/ws`, `/healthz`,
//!   `/metrics`; who may open sessions and read metrics; connection limits.
//! - [`session`]: one task per WebSocket; decodes, checks state, forwards to the space.
//! - [`space`]: one task per space owning a bevy_ecs world that ticks at a fixed rate.
//! - [`media`]: the SFU that forwards classroom media; [`turn`]: embedded STUN/TURN.
//! - [`egress`]: which addresses clients may have the server send to (TURN, SFU).
//! - [`heap`]: what the heap holds, from the allocator's statistics (for `/metrics` and soaks);
//!   [`logging`]: the log subscriber (webrtc-rs's per-packet drop errors sampled).
//! - [`auth`]: join links (teacher and student roles); [`store`]: chat, the audit log and
//!   secrets, in SQLite in the data directory.
//!
//! [`start`] binds, loads the map and spawns everything; [`run`] does the same and waits
//! for a shutdown signal. Startup fails, with an error naming the file, on a bad map.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod egress;
pub mod heap;
pub mod http;
pub mod logging;
pub mod media;
pub mod records;
pub mod session;
pub mod space;
pub mod store;
pub mod tls;
pub mod turn;

use anyhow::Context;
pub use config::Config;
use dashmap::DashMap;
use quad_shared::AvatarId;
use quad_shared::map::Map;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use tokio_util::sync::CancellationToken;

/// The store's name for the key that signs links to class records.
const RECORDS_LINK_SECRET: &str = "records_link_key";

/// What every session and handler shares. Game state is not here: it lives in the space.
pub struct AppState {
    pub config: Config,
    pub map_file: MapFile,
    /// The page, the client and the map as HTTP sends them (`http::files`).
    pub files: http::files::StaticFiles,
    pub space: space::SpaceHandle,
    /// Index of connected sessions (who is connected), not game state.
    pub sessions: DashMap<AvatarId, SessionEntry>,
    /// The names of link holders, which guests may not take.
    pub reserved_names: ReservedNames,
    pub next_avatar_id: AtomicU32,
    pub shutdown: CancellationToken,
    /// STUN/TURN servers and credentials for `Welcome`.
    pub ice: turn::Ice,
    /// This node's SFU (its counters are `/metrics`'; media links drive its rooms too).
    pub sfu: Arc<media::sfu::Sfu>,
    /// Room media, wherever each room runs (sessions' room signaling goes here).
    pub media: Arc<cluster::media::MediaRooms>,
    /// What the space reports for `/metrics`.
    pub space_stats: Arc<space::SpaceStats>,
    /// Signs and checks join links.
    pub keys: auth::JoinKeys,
    /// Tells this run's session-only users apart from earlier runs'.
    pub run_nonce: u64,
    /// Sessions per address: how many each holds and how fast it opens them.
    pub ip_quotas: session::ip_quota::IpQuotas,
    /// Whether storage writes work, for `/metrics`.
    pub store_health: Arc<store::StoreHealth>,
    /// Resume tokens: which sessions a new connection may take over.
    pub resumes: session::resume::Resumes,
    /// Class records: where they are kept, and the key their links are signed with.
    pub records: Records,
    /// This node's membership of a cluster (`cluster`), if it is in one.
    pub cluster: Option<Arc<cluster::Cluster>>,
}

/// Class records as sessions and the HTTP handler reach them.
pub struct Records {
    pub storage: store::Storage,
    pub links: records::links::Links,
    /// Where recordings are kept.
    pub archive: Arc<records::archive::Archive>,
}

/// Display names guests may not take: those of the join-link holders who have ever joined,
/// kept in the store. Links are made by the campus's operators, so this grows only with
/// them; it is capped all the same.
pub struct ReservedNames {
    keys: DashMap<String, ()>,
    storage: store::Storage,
}

impl ReservedNames {
    /// The names reserved so far, from `storage` (where new ones are kept).
    pub fn load(storage: &store::Storage) -> anyhow::Result<ReservedNames> {
        let keys = DashMap::new();
        for key in storage
            .blocking()
            .reserved_names()
            .context("reading the reserved names")?
        {
            keys.insert(key, ());
        }
        Ok(ReservedNames {
            keys,
            storage: storage.clone(),
        })
    }

    /// Names kept at most.
    const MAX: usize = 100_000;

    /// Names compare by their letters and digits alone, without case: "Ms. Ada" and
    /// "ms ada" (or with an invisible character inside) are the same name.
    fn key(name: &str) -> String {
        name.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    }

    /// Reserves `name`, in the store too if it is new.
    pub fn reserve(&self, name: &str) {
        let key = Self::key(name);
        if self.keys.len() < Self::MAX && !key.is_empty() && !self.keys.contains_key(&key) {
            self.keys.insert(key.clone(), ());
            self.storage.save_reserved_name(key);
        }
    }

    /// Adds keys already kept in the store (another node reserved them).
    pub fn extend(&self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if self.keys.len() >= Self::MAX {
                break;
            }
            self.keys.insert(key, ());
        }
    }

    /// Whether `name` is reserved.
    pub fn contains(&self, name: &str) -> bool {
        self.keys.contains_key(&Self::key(name))
    }
}

/// One connected session, as the index knows it.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    pub name: String,
}

/// The map as loaded at startup: parsed, and its files ready to serve.
#[derive(Clone)]
pub struct MapFile {
    pub map: Arc<Map>,
    pub text: String,
    /// Each tileset's image bytes and content type, by tileset index.
    pub tileset_images: Vec<(Vec<u8>, &'static str)>,
}

impl MapFile {
    /// Loads and validates a map and every image it refers to.
    pub fn load(path: &Path) -> anyhow::Result<MapFile> {
        let map = Map::load(path)?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("map file {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tileset_images = Vec::new();
        for tileset in &map.tilesets {
            let image = dir.join(&tileset.image);
            let bytes = std::fs::read(&image).with_context(|| {
                format!(
                    "map file {}: tileset \"{}\" image {}",
                    path.display(),
                    tileset.name,
                    image.display()
                )
            })?;
            let mime = match image.extension().and_then(|e| e.to_str()) {
                Some("png") => "image/png",
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("webp") => "image/webp",
                _ => "application/octet-stream",
            };
            tileset_images.push((bytes, mime));
        }
        Ok(MapFile {
            map: Arc::new(map),
            text,
            tileset_images,
        })
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    first_teacher_link: Option<String>,
    keys: auth::JoinKeys,
    turn_addr: Option<SocketAddr>,
    media_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    tls: Option<Arc<tls::Tls>>,
    redirect_addr: Option<SocketAddr>,
    /// Cancelled when this cluster node lost the space to another (it stops).
    lost: Option<CancellationToken>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Where plain HTTP is redirected to HTTPS (`http_redirect_listen`), if it is.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    /// The TLS side of the web port, when HTTPS is on.
    pub fn tls(&self) -> Option<&tls::Tls> {
        self.tls.as_deref()
    }

    /// The address it listens on (useful after binding port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The keys this server's join links are signed with.
    pub fn join_keys(&self) -> &auth::JoinKeys {
        &self.keys
    }

    /// A teacher link, when this start made the campus's secret (its first start).
    pub fn first_teacher_link(&self) -> Option<&str> {
        self.first_teacher_link.as_deref()
    }

    /// Where the embedded STUN/TURN server listens (UDP and TCP), if it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn_addr
    }

    /// The UDP address of the media port every room member's connection shares.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Where `/metrics` is served on its own (`metrics_listen`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, closes every session with a reason, and waits for the tasks.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(e) = self.task.await {
            tracing::error!("server task ended badly: {e}");
        }
    }
}

/// Validates the config, loads the map, binds, and starts serving in the background.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate()?;
    let map_file = MapFile::load(&config.map)?;
    store::private::private_dir(&config.data_dir)?;
    if !config.assets_dir.join("index.html").is_file() {
        anyhow::bail!(
            "assets directory {}: no index.html (run from the repository root, or pass --assets)",
            config.assets_dir.display()
        );
    }
    if !config.client_dir.join("quad_client.js").is_file() {
        tracing::warn!(
            "the browser client is not built in {}: `cargo xtask serve` builds it",
            config.client_dir.display()
        );
    }
    let files = {
        let (assets, client, map) = (
            config.assets_dir.clone(),
            config.client_dir.clone(),
            map_file.clone(),
        );
        tokio::task::spawn_blocking(move || http::files::StaticFiles::load(&assets, &client, &map))
            .await??
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Cluster mode: Redis must answer before anything is served.
    let cluster = match &config.cluster {
        Some(_) => Some(cluster::Cluster::join(&config, addr).await?),
        None => None,
    };
    let storage = open_storage(&config)?;
    let (keys, new_secret) = join_keys(&config, &storage)?;
    // What the retention settings no longer keep goes before anyone can read it. A failure
    // is logged and does not stop the server: the writer thread tries again within the hour.
    let _ = storage.prune_blocking();
    let redirect_listener = match config.http_redirect_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("http_redirect_listen: cannot listen on {at}"))?,
        ),
        None => None,
    };
    let redirect_addr = match &redirect_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("metrics_listen: cannot listen on {at}"))?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let shutdown = CancellationToken::new();
    if config.tls_cert.is_some() && config.public_url.is_none() {
        tracing::warn!(
            "TLS with tls_cert but no public_url: links and the TURN-over-TLS URL name the \
             listen address, which a CA's certificate does not carry; set public_url to \
             https://NAME, NAME being the certificate's"
        );
    }
    let tls = match config.tls_source() {
        Some(source) => Some(Arc::new(tls::Tls::start(&source, shutdown.clone())?)),
        None => None,
    };
    let (ice, embedded_turn) = turn::start(&config, addr, shutdown.clone()).await?;
    if let Some(t) = &embedded_turn {
        tracing::info!(
            "STUN/TURN on {} (UDP and TCP), offered at {}",
            t.addr,
            t.public_ip
        );
    }

    let settings = space::resources::SpaceSettings {
        tick_hz: config.tick_hz,
        area_of_interest: config.area_of_interest,
        replication_bytes_per_sec: config.replication_bytes_per_sec,
        max_interest: config.max_visible_avatars,
        proximity: config.proximity(),
        dev: config.dev,
    };
    let mut world = space::SpaceWorld::new(map_file.map.clone(), settings, http::MAP_URL);
    world.set_last_chat_id(
        storage
            .blocking()
            .last_chat_id()
            .context("reading the chat history")?,
    );
    let sfu = media::sfu::Sfu::new(config.sfu()).with_context(|| {
        format!(
            "binding the media port (UDP {}, setting `media_port`)",
            std::net::SocketAddr::new(config.sfu().bind_ip, config.sfu().media_port)
        )
    })?;
    let media_addr = sfu.media_addr();
    tracing::info!("room media (SFU) on UDP {media_addr}");
    let (records_key, _) = storage
        .blocking()
        .secret_or_create(RECORDS_LINK_SECRET, &|| auth::random_bytes(32))
        .context("reading the records' link key")?;
    let archive = Arc::new(
        records::archive::Archive::new(config.recordings_dir(), config.s3().as_ref())
            .context("the recordings' object storage (`s3_*` settings)")?,
    );
    if let Some(setup) = config.recording_setup(Some(storage.clone()), archive.clone()) {
        // Recordings are the class's faces and voices: private to the server's user.
        store::private::private_dir(&setup.dir)
            .with_context(|| format!("the recordings directory {}", setup.dir.display()))?;
        tracing::info!(dir = %setup.dir.display(), "classes may be recorded");
        // Recordings a stopped server left unfinished are made into files, in the
        // background (the list is read now, before anyone can start a new one).
        let unfinished = media::recording::recovery::unfinished(&setup);
        if !unfinished.is_empty() {
            let (setup, runtime) = (setup.clone(), tokio::runtime::Handle::current());
            tokio::task::spawn_blocking(move || {
                let made = media::recording::recovery::recover(&setup, &runtime, unfinished);
                tracing::info!(made, "unfinished recordings finished");
            });
        }
        sfu.enable_recordings(setup);
    }
    if let Some(turn) = &embedded_turn {
        // A browser that reaches the server only through TURN (a firewall that lets out
        // nothing but TCP 443) has its relay send to the media port: that one port of the
        // machine's own addresses is opened to relays.
        let mut ips = vec![media_addr.ip()];
        ips.extend(config.media_public_ip);
        if media_addr.ip().is_unspecified() {
            ips.extend(egress::EgressPolicy::own_addresses(&config.own_ips()));
        }
        for ip in ips.into_iter().filter(|ip| !ip.is_unspecified()) {
            turn.policy
                .open_service(SocketAddr::new(ip, media_addr.port()));
        }
    }
    if let Some(cluster) = &cluster {
        cluster.set_media_addr(media_addr);
    }
    let media = cluster::media::MediaRooms::new(sfu.clone(), cluster.clone());
    let space_stats = Arc::new(space::SpaceStats::default());
    let (space, space_task) = space::spawn(
        world,
        config.tick_hz,
        space::SpaceServices {
            media: media.clone(),
            storage: storage.clone(),
            stats: space_stats.clone(),
        },
        shutdown.clone(),
    );
    let first_teacher_link = if new_secret {
        let mut config = config.clone();
        config.listen = addr;
        Some(join_link(
            &config,
            &keys,
            "Teacher",
            quad_shared::protocol::Role::Teacher,
            None,
            FIRST_LINK_TTL,
        )?)
    } else {
        None
    };

    let resume_grace = std::time::Duration::from_secs(config.resume_grace_secs);
    let ip_quotas = session::ip_quota::IpQuotas::new(
        config.max_sessions_per_ip,
        config.session_joins_per_ip_per_minute,
    );
    let state = Arc::new(AppState {
        config,
        map_file,
        files,
        space,
        sessions: DashMap::new(),
        reserved_names: ReservedNames::load(&storage)?,
        next_avatar_id: AtomicU32::new(1),
        shutdown: shutdown.clone(),
        ice,
        sfu,
        media,
        space_stats,
        keys: keys.clone(),
        run_nonce: u64::from_le_bytes(auth::random_bytes(8).try_into().unwrap_or([0; 8])),
        ip_quotas,
        store_health: storage.health(),
        resumes: session::resume::Resumes::new(resume_grace),
        records: Records {
            links: records::links::Links::new(&records_key),
            archive,
            storage: storage.clone(),
        },
        cluster: cluster.clone(),
    });
    if let Some(cluster) = cluster {
        tokio::spawn(cluster::run(cluster, state.clone(), shutdown.clone()));
    }
    {
        // Old recordings and registers go now and every hour.
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(records::PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = every.tick() => {}
                }
                let pruned = records::prune(
                    &state.records.storage,
                    &state.records.archive,
                    state.config.records_retention_days,
                    store::now_ms(),
                )
                .await;
                if let Err(e) = pruned {
                    tracing::error!("deleting old records: {e:#}");
                }
            }
        });
    }
    let routes = http::routes(state.clone());
    if let Some(listener) = redirect_listener {
        tracing::info!("redirecting http://{} to HTTPS", listener.local_addr()?);
        tokio::spawn(http::serve::serve_redirects(
            listener,
            addr.port(),
            state.clone(),
        ));
    }
    if let Some(listener) = metrics_listener {
        tracing::info!("/metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(http::serve::serve_metrics(listener, state.clone()));
    }
    let secure = tls.as_ref().map(|tls| http::serve::Secure {
        acceptor: tls.acceptor.clone(),
        turn: embedded_turn.as_ref().map(|t| t.tcp.clone()),
        hsts: (state.config.hsts_max_age_secs > 0)
            .then(|| {
                hyper::header::HeaderValue::from_str(&format!(
                    "max-age={}",
                    state.config.hsts_max_age_secs
                ))
                .ok()
            })
            .flatten(),
    });
    let lost = state.cluster.as_ref().map(|c| c.lost.clone());
    let task = tokio::spawn(async move {
        http::serve::serve(listener, warp::service(routes), state.clone(), secure).await;
        if let Err(e) = space_task.await {
            tracing::error!("space task ended badly: {e}");
        }
        // What the space queued for storage is written before the server counts as stopped.
        storage.flush().await;
        drop(state);
    });
    Ok(Server {
        addr,
        first_teacher_link,
        keys,
        turn_addr: embedded_turn.map(|t| t.addr),
        tls,
        redirect_addr,
        media_addr,
        metrics_addr,
        lost,
        shutdown,
        task,
    })
}

/// Starts the server and runs it until `signal` completes.
pub async fn run(
    config: Config,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // Every session and relay is a file: take all the process may have (logged either way;
    // the connection caps follow from what it got).
    let _ = http::limits::raise_open_file_limit();
    let server = start(config).await?;
    // Whoever started the server may have closed its stdout: that must not stop it.
    let mut out = std::io::stdout().lock();
    match server.tls() {
        None => {
            let _ = writeln!(out, "Quad is serving http://{}", server.addr());
        }
        Some(tls) => {
            let _ = writeln!(out, "Quad is serving https://{}", server.addr());
            let _ = writeln!(
                out,
                "TLS certificate SHA-256 fingerprint: {}",
                tls.fingerprint()
            );
            if let Some(spki) = tls.spki_hash() {
                let _ = writeln!(out, "TLS public key SHA-256 (base64): {spki}");
            }
        }
    }
    if let Some(link) = server.first_teacher_link() {
        let _ = writeln!(
            out,
            "This is a new campus. A teacher link, valid for 7 days (make more with \
             `quad-server token --role teacher --name NAME`):\n  {link}"
        );
    }
    let _ = out.flush();
    drop(out);
    let stopped = server.shutdown.clone();
    tokio::select! {
        _ = signal => {}
        _ = stopped.cancelled() => {}
    }
    tracing::info!("shutting down");
    let lost = server.lost.clone();
    server.stop().await;
    if lost.is_some_and(|l| l.is_cancelled()) {
        anyhow::bail!(
            "this node lost the space to another cluster node; start it again to rejoin the \
             cluster"
        );
    }
    Ok(())
}

/// How long the teacher link printed at a campus's first start stays valid.
pub const FIRST_LINK_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The name of the join-link secret in the store.
const JOIN_SECRET: &str = "join-links";

/// Opens the embedded store in the configured data directory.
/// The directory is made private (0700, the database 0600): it holds the join-link secret.
/// Its size is capped at `store_max_mb`; its writer thread prunes by the retention settings.
pub fn open_storage(config: &Config) -> anyhow::Result<store::Storage> {
    store::private::private_dir(&config.data_dir)?;
    if let Some(url) = &config.database_url {
        let store = store::postgres::PostgresStore::open(url)?;
        return store::Storage::new(Arc::new(store), config.retention(), store::PRUNE_EVERY);
    }
    let store = store::sqlite::SqliteStore::open(&config.data_dir)?;
    store
        .limit_size(config.store_max_mb.saturating_mul(1024 * 1024))
        .context("store_max_mb")?;
    store::Storage::new(Arc::new(store), config.retention(), store::PRUNE_EVERY)
}

/// The keys join links are signed with: the configured secret, or the one kept in the
/// store (made now if there is none: the flag says so).
pub fn join_keys(
    config: &Config,
    storage: &store::Storage,
) -> anyhow::Result<(auth::JoinKeys, bool)> {
    if let Some(secret) = &config.join_secret {
        return Ok((auth::JoinKeys::new(secret.as_bytes()), false));
    }
    let (secret, created) = storage
        .blocking()
        .secret_or_create(JOIN_SECRET, &|| auth::random_bytes(32))
        .context("reading the join-link secret")?;
    Ok((auth::JoinKeys::new(&secret), created))
}

/// A link that opens the campus as `name` with `role` for `ttl`.
pub fn join_link(
    config: &Config,
    keys: &auth::JoinKeys,
    name: &str,
    role: quad_shared::protocol::Role,
    room: Option<&str>,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let token = keys.issue(name, role, room, ttl, std::time::SystemTime::now())?;
    Ok(format!("{}/?token={token}", config.public_url()))
}

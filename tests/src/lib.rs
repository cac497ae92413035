//! `quad-tests`: the end-to-end harness. [`TestServer`] starts a real Quad server on
//! `127.0.0.1:0` with its own data directory; [`Bot`] is a WebSocket client that speaks the
//! protocol and keeps a model of what it has been told. Browser tests live in
//! [`browser`]. Tests talk only to loopback.

pub mod browser;
pub mod cluster;
pub mod crash;
pub mod load;
pub mod lossy_udp;
pub mod netlab;
pub mod real_media;
pub mod relay;
pub mod room_bot;
pub mod s3;
pub mod soak;
pub mod tls_client;
pub mod turn_client;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use quad_server::Config;
use quad_shared::AvatarId;
use quad_shared::codec;
use quad_shared::protocol::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The repository root (assets, the built client).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Logs to stderr once per test binary (shown for failing tests).
pub fn init_tracing() {
    quad_server::logging::init("warn,quad_server=info,rtc_ice=error,rtc_dtls=error", true);
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(label: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "quad-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A real server on a free loopback port.
pub struct TestServer {
    pub server: quad_server::Server,
    pub data_dir: PathBuf,
}

impl TestServer {
    /// Starts a server in dev mode (spawn points may be chosen) with the campus map.
    pub async fn start() -> Result<TestServer> {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Result<TestServer> {
        Self::start_in(temp_dir("data"), tweak).await
    }

    /// Starts a server on an existing data directory (to restart one).
    pub async fn start_in(
        data_dir: PathBuf,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<TestServer> {
        init_tracing();
        let root = repo_root();
        let mut config = Config {
            listen: "127.0.0.1:0".parse()?,
            map: root.join("assets/maps/campus.tmj"),
            assets_dir: root.join("assets"),
            client_dir: client_dir(),
            data_dir: data_dir.clone(),
            dev: true,
            // Every bot comes from 127.0.0.1: the per-address quotas are for tests of them
            // (`tests/tests/abuse.rs`) to set.
            max_sessions_per_ip: 0,
            session_joins_per_ip_per_minute: 0,
            ..Config::default()
        };
        tweak(&mut config);
        let server = quad_server::start(config).await?;
        Ok(TestServer { server, data_dir })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub async fn stop(self) {
        self.server.stop().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Stops the server and keeps its data directory (returned) for a restart.
    pub async fn stop_keeping_data(self) -> PathBuf {
        self.server.stop().await;
        self.data_dir
    }

    /// A join link's token for `name` as `role`, valid for an hour.
    pub fn token(&self, name: &str, role: quad_shared::protocol::Role) -> Result<String> {
        self.server.join_keys().issue(
            name,
            role,
            None,
            Duration::from_secs(3600),
            std::time::SystemTime::now(),
        )
    }
}

/// A teacher's link named `name` for the campus kept in `data`, made as an operator makes
/// one (`quad-server token`).
pub fn teacher_token(bin: &std::path::Path, data: &std::path::Path, name: &str) -> Result<String> {
    let out = std::process::Command::new(bin)
        .current_dir(repo_root())
        .args(["token", "--role", "teacher", "--name", name, "--ttl", "1h"])
        .arg("--data-dir")
        .arg(data)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("token=")
        .nth(1)
        .map(|t| t.split_whitespace().next().unwrap_or_default().to_owned())
        .filter(|t| !t.is_empty())
        .context("quad-server token printed no link")
}

/// The `quad-server` binary `cargo test` built beside the running test, for tests that need
/// the real process (signals, restarts, network namespaces).
pub fn server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<the test> → target/<profile>/quad-server
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("quad-server"))
        .ok_or_else(|| anyhow!("no target directory above the test"))?;
    if !bin.is_file() {
        bail!("{} is not built: run `cargo xtask test`", bin.display());
    }
    Ok(bin)
}

/// A `quad-server` process (the debug build beside the tests) on `listen` with `data` as
/// its data directory, and where it serves.
pub async fn start_process(
    data: &std::path::Path,
    listen: &str,
) -> Result<(tokio::process::Child, SocketAddr)> {
    start_binary(&server_binary()?, data, listen).await
}

/// The `quad-server` binary `bin` on `listen`, in `--dev` mode, with `data` as its data
/// directory; the process and where it serves.
pub async fn start_binary(
    bin: &std::path::Path,
    data: &std::path::Path,
    listen: &str,
) -> Result<(tokio::process::Child, SocketAddr)> {
    // A restart listens on the port it had, but its TURN and media ports are the
    // system's pick like the first start's: other tests' servers may hold the defaults
    // (3478, 7882) while this one restarts.
    let ip = listen.rsplit_once(':').map_or("127.0.0.1", |(ip, _)| ip);
    let ports = temp_dir("ports");
    std::fs::create_dir_all(&ports)?;
    let config = ports.join("quad.toml");
    std::fs::write(&config, "media_port = 0\n")?;
    let mut command = tokio::process::Command::new(bin);
    command
        .current_dir(repo_root())
        .args(["--listen", listen, "--dev"])
        .arg("--turn-listen")
        .arg(format!("{ip}:0"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .arg("--client-dir")
        .arg(client_dir());
    let (child, serving) = spawn_server(&mut command).await?;
    let addr = serving
        .url
        .strip_prefix("http://")
        .context("a plain-http server")?
        .parse()?;
    Ok((child, addr))
}

/// Starts the server again on the same address (the port may take a moment to free).
pub async fn restart_process(
    data: &std::path::Path,
    addr: SocketAddr,
) -> Result<(tokio::process::Child, SocketAddr)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match start_process(data, &addr.to_string()).await {
            Ok(started) => return Ok(started),
            Err(e) if Instant::now() < deadline => {
                println!("restarting: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every bot joins `addr` again, all at once (as clients on a short backoff do after a
/// restart), each retrying every 100 ms until the server takes it; with their resume
/// tokens, which only the process that gave them knows.
pub async fn rejoin_all(addr: SocketAddr, bots: &mut [Bot]) -> Result<()> {
    let rejoins = bots.iter_mut().map(|w| async move {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match w.reconnect(addr, None).await {
                Ok(_) => return Ok::<_, anyhow::Error>(()),
                Err(e) if Instant::now() < deadline => {
                    println!("bot reconnecting: {e:#}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    });
    for result in futures_util::future::join_all(rejoins).await {
        result?;
    }
    Ok(())
}

/// Where a started `quad-server` process serves, as it printed it.
pub struct Serving {
    /// `http://ADDR` or `https://ADDR`.
    pub url: String,
    /// With TLS, the certificate's public-key hash (base64), for Chromium's
    /// `--ignore-certificate-errors-spki-list`.
    pub spki: Option<String>,
}

/// Spawns `command` (a `quad-server` command line) with its stdout piped and waits, up to
/// 60 s, until it says where it serves (and, over TLS, its key's hash). Its output goes on
/// to the test's, prefixed `server: `; the process is killed when the `Child` is dropped.
pub async fn spawn_server(
    command: &mut tokio::process::Command,
) -> Result<(tokio::process::Child, Serving)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting quad-server")?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let serving = tokio::time::timeout(Duration::from_secs(60), async {
        let mut url = None;
        while let Some(line) = lines.next_line().await? {
            println!("server: {line}");
            if let Some(addr) = line.strip_prefix("Quad is serving ") {
                if addr.starts_with("http://") {
                    return Ok(Serving {
                        url: addr.trim().to_owned(),
                        spki: None,
                    });
                }
                url = Some(addr.trim().to_owned());
            } else if let (Some(url), Some(hash)) =
                (&url, line.strip_prefix("TLS public key SHA-256 (base64): "))
            {
                return Ok(Serving {
                    url: url.clone(),
                    spki: Some(hash.to_owned()),
                });
            }
        }
        bail!("the server exited before it said where it serves")
    })
    .await
    .context("the server did not start within 60 s")??;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("server: {line}");
        }
    });
    Ok((child, serving))
}

/// Each bot sends `burst` chat lines to the whole space, `text(bot, n)` each, one bot after
/// the other, without reading.
pub async fn chat_bursts(
    bots: &mut [Bot],
    burst: usize,
    text: impl Fn(usize, usize) -> String,
) -> Result<()> {
    for (i, bot) in bots.iter_mut().enumerate() {
        for n in 0..burst {
            bot.send(&ClientMsg::Chat {
                to: ChatTo::Space,
                text: text(i, n),
            })
            .await?;
        }
    }
    Ok(())
}

/// Waits until the space has handled everything any of `bots` sent so far, and each bot has
/// received what the space sent it before that. Each stands still for a step and waits for
/// its acknowledgement, twice: a session forwards a bot's messages in order, so once every
/// first acknowledgement is in, the space has handled every earlier message; the space
/// sends each bot's frames in order, so the second acknowledgement comes after whatever it
/// sent the bot before.
pub async fn settle(bots: &mut [Bot]) -> Result<()> {
    for _ in 0..2 {
        let mut sent = Vec::with_capacity(bots.len());
        for bot in bots.iter_mut() {
            sent.push(bot.input(0, 1).await?);
        }
        for (bot, seq) in bots.iter_mut().zip(sent) {
            bot.wait_until(PATIENCE, |b| b.ack >= seq).await?;
        }
    }
    Ok(())
}

/// Where the built wasm client is: `QUAD_CLIENT_DIR`, else `target/web/pkg`.
pub fn client_dir() -> PathBuf {
    std::env::var_os("QUAD_CLIENT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/web/pkg"))
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client with a model of what the server told it.
pub struct Bot {
    ws: Ws,
    pub id: AvatarId,
    pub welcome: Option<Welcome>,
    /// Own authoritative position and the last acked input.
    pub me: [f32; 2],
    pub ack: u32,
    /// Other avatars in view, as last sent.
    pub others: HashMap<AvatarId, [f32; 2]>,
    /// Everyone in the space, by id.
    pub people: HashMap<AvatarId, String>,
    /// Everyone's role, by id, as the server announced it.
    pub roles: HashMap<AvatarId, Role>,
    /// Every error received, in order.
    pub errors: Vec<ErrorMsg>,
    /// Snapshot payload bytes received (for bandwidth checks).
    pub snapshot_bytes: usize,
    /// Current peer links: peer -> whether this side is polite.
    pub peers: HashMap<AvatarId, bool>,
    /// Every `ConnectPeer` and `DisconnectPeer` received, in order.
    pub peer_events: Vec<PeerEvent>,
    /// Each peer's microphone and camera state, from `ConnectPeer` and `PeerMedia`.
    pub peer_media: HashMap<AvatarId, MediaFlags>,
    /// Every `PeerMedia` received, in order.
    pub media_updates: Vec<(AvatarId, MediaFlags)>,
    /// Signaling received: (from, signal).
    pub signals: Vec<(AvatarId, Signal)>,
    /// Room media messages (`JoinRoomMedia`, `RoomSignal`, ...), in order, for whoever
    /// drives room media (see [`room_bot`]).
    pub room_msgs: Vec<ServerMsg>,
    /// The address its media connections bind: the one it reached the server at (the
    /// server runs on this machine), so a bot that came over IPv6 sends media over IPv6.
    pub media_ip: std::net::IpAddr,
    /// Chat lines, live and from history, by id.
    pub chat: std::collections::BTreeMap<u64, quad_shared::protocol::ChatLine>,
    /// How many `ChatHistory` frames arrived.
    pub histories: u32,
    /// How many `Snapshot` frames arrived.
    pub snapshots: u32,
    /// How many `Class` frames arrived.
    pub class_frames: u32,
    /// The class this avatar is in, as last sent.
    pub class: Option<quad_shared::protocol::ClassState>,
    /// `Notice` texts.
    pub notices: Vec<String>,
    /// The last `Records` list received.
    pub records: Option<quad_shared::protocol::RecordsList>,
    /// The last `ClassReport` (teachers get one every few seconds in a class).
    pub class_report: Option<quad_shared::protocol::ClassReport>,
    /// `Recording` news: (recording id, room, what became of it).
    pub recordings: Vec<(String, String, quad_shared::protocol::RecordingNews)>,
    /// Teachers' `Attention` events: (student, watching).
    pub attention: Vec<(AvatarId, bool)>,
    /// Set when the server closed the connection: (code, reason).
    pub closed: Option<(u16, String)>,
    /// Every `IceServers` renewal received, in order.
    pub ice_renewals: Vec<Vec<IceServer>>,
    /// The ids of `ChatNotSaved`, in order.
    pub not_saved: Vec<u64>,
    /// Who the server says is reconnecting now.
    pub reconnecting: std::collections::HashSet<AvatarId>,
    /// Every `Reconnecting` received, in order: (who, reconnecting).
    pub reconnecting_events: Vec<(AvatarId, bool)>,
    /// `Restarting::retry_after_ms`, if the server said it is restarting.
    pub restarting: Option<u32>,
    /// The nonces of the `Pong`s received, in order.
    pub pongs: Vec<u32>,
    /// The last `Hello` sent (a rejoin repeats it).
    hello_sent: Option<Hello>,
    seq: u32,
}

/// A change of peer link, as the bot received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    Connect(AvatarId, bool),
    Disconnect(AvatarId),
}

/// How long tests wait for something that should happen within a few ticks.
pub const PATIENCE: Duration = Duration::from_secs(10);

impl Bot {
    /// Opens a WebSocket without saying Hello.
    pub async fn connect(addr: SocketAddr) -> Result<Bot> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .context("WebSocket connect")?;
        let mut bot = Self::over(ws);
        bot.media_ip = addr.ip();
        Ok(bot)
    }

    /// Opens a WebSocket over TLS (`wss://`) to a server whose certificate is `trust`,
    /// and joins as `name`.
    pub async fn join_tls(
        addr: SocketAddr,
        trust: &rustls_pki_types::CertificateDer<'static>,
        name: &str,
    ) -> Result<Bot> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trust.clone())?;
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            format!("wss://{addr}/ws"),
            None,
            true,
            Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
                config,
            ))),
        )
        .await
        .context("WebSocket over TLS")?;
        let mut bot = Self::over(ws);
        bot.hello(name, None, None, None).await?;
        Ok(bot)
    }

    /// A bot on a connection that is already open (e.g. the old one [`Bot::reconnect`]
    /// returns), to read what the server still sends on it.
    pub fn from_stream(ws: Ws) -> Bot {
        Self::over(ws)
    }

    fn over(ws: Ws) -> Bot {
        Bot {
            ws,
            id: AvatarId(0),
            welcome: None,
            me: [0.0; 2],
            ack: 0,
            others: HashMap::new(),
            people: HashMap::new(),
            roles: HashMap::new(),
            errors: Vec::new(),
            snapshot_bytes: 0,
            peers: HashMap::new(),
            peer_events: Vec::new(),
            peer_media: HashMap::new(),
            media_updates: Vec::new(),
            signals: Vec::new(),
            room_msgs: Vec::new(),
            media_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            chat: Default::default(),
            histories: 0,
            snapshots: 0,
            class_frames: 0,
            class: None,
            notices: Vec::new(),
            recordings: Vec::new(),
            class_report: None,
            records: None,
            attention: Vec::new(),
            closed: None,
            ice_renewals: Vec::new(),
            not_saved: Vec::new(),
            reconnecting: Default::default(),
            reconnecting_events: Vec::new(),
            restarting: None,
            pongs: Vec::new(),
            hello_sent: None,
            seq: 0,
        }
    }

    /// Connects again as a client whose connection dropped does: a new WebSocket whose
    /// `Hello` carries the resume token from `Welcome` (and the room it was in, for a
    /// server that no longer has the session). Returns the old connection, for the caller
    /// to drop (a cut: no close frame) or keep (a half-open connection, to be superseded).
    /// The bot's view starts afresh, as the browser's does; chat lines are kept.
    pub async fn reconnect(&mut self, addr: SocketAddr, room: Option<String>) -> Result<Ws> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .context("WebSocket connect")?;
        let old = std::mem::replace(&mut self.ws, ws);
        let mut hello = self
            .hello_sent
            .clone()
            .ok_or_else(|| anyhow!("never said Hello"))?;
        hello.resume = self.welcome.as_ref().and_then(|w| w.resume.clone());
        hello.room = room;
        if let Some(w) = &self.welcome {
            hello.name = w.name.clone();
        }
        self.welcome = None;
        self.closed = None;
        self.errors.clear();
        self.others.clear();
        self.people.clear();
        self.peers.clear();
        self.room_msgs.clear();
        self.class = None;
        self.reconnecting.clear();
        self.restarting = None;
        self.seq = 0;
        self.ack = 0;
        self.send(&ClientMsg::Hello(hello.clone())).await?;
        self.hello_sent = Some(hello);
        self.wait_until(PATIENCE, |b| b.welcome.is_some() || !b.errors.is_empty())
            .await?;
        if self.welcome.is_none() {
            bail!("Hello refused: {:?}", self.errors);
        }
        Ok(old)
    }

    /// Connects and joins as `name`, at `spawn` if given (dev servers honour it).
    pub async fn join(addr: SocketAddr, name: &str, spawn: Option<[f32; 2]>) -> Result<Bot> {
        Self::join_as(addr, name, spawn, None, None).await
    }

    /// Joins with a join link's `token` and/or a browser's `device` key.
    pub async fn join_as(
        addr: SocketAddr,
        name: &str,
        spawn: Option<[f32; 2]>,
        token: Option<String>,
        device: Option<String>,
    ) -> Result<Bot> {
        let mut bot = Self::connect(addr).await?;
        bot.hello(name, spawn, token, device).await?;
        Ok(bot)
    }

    async fn hello(
        &mut self,
        name: &str,
        spawn: Option<[f32; 2]>,
        token: Option<String>,
        device: Option<String>,
    ) -> Result<()> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            name: name.into(),
            token,
            spawn,
            device,
            resume: None,
            room: None,
        };
        self.send(&ClientMsg::Hello(hello.clone())).await?;
        self.hello_sent = Some(hello);
        self.wait_until(PATIENCE, |b| b.welcome.is_some() || !b.errors.is_empty())
            .await?;
        if self.welcome.is_none() {
            bail!("Hello refused: {:?}", self.errors);
        }
        Ok(())
    }

    /// The texts of the chat lines received, oldest first.
    pub fn chat_texts(&self) -> Vec<&str> {
        self.chat.values().map(|l| l.text.as_str()).collect()
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        self.send_raw(codec::encode(msg)?).await
    }

    pub async fn send_raw(&mut self, frame: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(frame)).await?;
        Ok(())
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The raw WebSocket, for callers that only want to keep reading (load tools).
    pub fn into_stream(self) -> Ws {
        self.ws
    }

    /// Sends one input with the next sequence number.
    pub async fn input(&mut self, dir: u8, steps: u8) -> Result<u32> {
        self.seq += 1;
        let seq = self.seq;
        self.send(&ClientMsg::Input(Input { seq, dir, steps }))
            .await?;
        Ok(seq)
    }

    /// Walks like a real client: `total_steps` steps in inputs of 3 steps every 50 ms, then
    /// waits until the server has applied them all.
    pub async fn walk(&mut self, dir: u8, total_steps: u32) -> Result<()> {
        let mut left = total_steps;
        let mut last = 0;
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        while left > 0 {
            pace.tick().await;
            let steps = left.min(3) as u8;
            last = self.input(dir, steps).await?;
            left -= steps as u32;
            self.drain().await?;
        }
        self.wait_until(PATIENCE, |b| b.ack >= last).await
    }

    /// Applies one message to the model.
    fn absorb(&mut self, msg: ServerMsg, len: usize) {
        match msg {
            ServerMsg::Welcome(w) => {
                self.id = w.you;
                self.me = w.spawn;
                self.welcome = Some(w);
            }
            ServerMsg::Snapshot(s) => {
                self.snapshots += 1;
                self.snapshot_bytes += len;
                self.ack = s.ack;
                if let Some(p) = s.you {
                    self.me = p;
                }
                for u in s.avatars {
                    self.others.insert(u.0, u.position());
                }
                for id in s.gone {
                    self.others.remove(&id);
                }
            }
            ServerMsg::PeopleJoined { people } => {
                for p in people {
                    self.roles.insert(p.id, p.role);
                    self.people.insert(p.id, p.name);
                }
            }
            ServerMsg::PeopleLeft { ids } => {
                for id in ids {
                    self.people.remove(&id);
                }
            }
            ServerMsg::Error(e) => self.errors.push(e),
            ServerMsg::ConnectPeer {
                peer,
                polite,
                media,
            } => {
                self.peers.insert(peer, polite);
                self.peer_media.insert(peer, media);
                self.peer_events.push(PeerEvent::Connect(peer, polite));
            }
            ServerMsg::PeerMedia { peer, media } => {
                self.peer_media.insert(peer, media);
                self.media_updates.push((peer, media));
            }
            ServerMsg::DisconnectPeer { peer } => {
                self.peers.remove(&peer);
                self.peer_events.push(PeerEvent::Disconnect(peer));
            }
            ServerMsg::Signal { from, signal } => self.signals.push((from, signal)),
            msg @ (ServerMsg::JoinRoomMedia { .. }
            | ServerMsg::LeaveRoomMedia { .. }
            | ServerMsg::RoomSignal(_)
            | ServerMsg::RoomMembers { .. }
            | ServerMsg::RoomSpeakers { .. }) => self.room_msgs.push(msg),
            ServerMsg::Chat(line) => {
                self.chat.insert(line.id, line);
            }
            ServerMsg::ChatHistory { lines } => {
                self.histories += 1;
                for line in lines {
                    self.chat.insert(line.id, line);
                }
            }
            ServerMsg::Class(class) => {
                self.class_frames += 1;
                self.class = class;
            }
            ServerMsg::Notice { text } => self.notices.push(text),
            ServerMsg::Pong { nonce } => self.pongs.push(nonce),
            ServerMsg::Recording { id, room, news } => self.recordings.push((id, room, news)),
            ServerMsg::ClassReport(report) => self.class_report = Some(report),
            ServerMsg::Records(list) => self.records = Some(list),
            ServerMsg::Attention {
                student, watching, ..
            } => self.attention.push((student, watching)),
            ServerMsg::IceServers { servers } => self.ice_renewals.push(servers),
            ServerMsg::ChatNotSaved { id } => self.not_saved.push(id),
            ServerMsg::Reconnecting { id, reconnecting } => {
                if reconnecting {
                    self.reconnecting.insert(id);
                } else {
                    self.reconnecting.remove(&id);
                }
                self.reconnecting_events.push((id, reconnecting));
            }
            ServerMsg::Restarting { retry_after_ms } => self.restarting = Some(retry_after_ms),
            _ => {}
        }
    }

    /// Reads one frame, waiting at most `timeout`. `Ok(false)` on timeout.
    async fn read_one(&mut self, timeout: Duration) -> Result<bool> {
        if self.closed.is_some() {
            bail!("connection closed: {:?}", self.closed);
        }
        let next = match tokio::time::timeout(timeout, self.ws.next()).await {
            Err(_) => return Ok(false),
            Ok(next) => next,
        };
        match next {
            None => {
                self.closed = Some((1006, "no close frame".into()));
            }
            Some(Err(e)) => {
                self.closed = Some((1006, e.to_string()));
            }
            Some(Ok(Message::Binary(frame))) => {
                let msg: ServerMsg =
                    codec::decode(&frame).map_err(|e| anyhow!("bad frame from server: {e}"))?;
                self.absorb(msg, frame.len());
            }
            Some(Ok(Message::Close(frame))) => {
                self.closed = Some(
                    frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new())),
                );
            }
            Some(Ok(_)) => {}
        }
        Ok(true)
    }

    /// Cuts the connection as a network failure does: the TCP stream ends without a
    /// WebSocket close frame. The bot can then only [`Bot::reconnect`].
    pub async fn cut(&mut self) {
        use tokio::io::AsyncWriteExt;
        match self.ws.get_mut() {
            MaybeTlsStream::Plain(tcp) => {
                let _ = tcp.shutdown().await;
            }
            MaybeTlsStream::Rustls(tls) => {
                let _ = tls.get_mut().0.shutdown().await;
            }
            _ => {}
        }
        self.closed = Some((1006, "cut by the test".into()));
    }

    /// Says goodbye: a close frame, then the connection ends.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Reads at most one frame, waiting at most `timeout`; `Ok(false)` if none came.
    pub async fn pump(&mut self, timeout: Duration) -> Result<bool> {
        self.read_one(timeout).await
    }

    /// Processes whatever has already arrived, without waiting.
    pub async fn drain(&mut self) -> Result<()> {
        while self.closed.is_none() && self.read_one(Duration::from_millis(1)).await? {}
        Ok(())
    }

    /// Reads frames until `cond` holds, or fails after `timeout`.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&Bot) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "condition not met within {timeout:?} (errors: {:?}, closed: {:?})",
                    self.errors,
                    self.closed
                );
            }
            if self.closed.is_some() {
                bail!("connection closed while waiting: {:?}", self.closed);
            }
            self.read_one(deadline - now).await?;
        }
        Ok(())
    }

    /// Keeps reading for `period` (to check that something does *not* happen).
    pub async fn listen_for(&mut self, period: Duration) -> Result<()> {
        let deadline = Instant::now() + period;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if self.closed.is_some() || !self.read_one(left).await? {
                break;
            }
        }
        Ok(())
    }

    /// Waits for an error with `code`.
    pub async fn expect_error(&mut self, code: ErrorCode) -> Result<ErrorMsg> {
        self.expect_error_after(self.errors.len(), code).await
    }

    /// Waits for an error with `code` among those after the first `seen` (for errors that
    /// may have come while the caller was doing something else, such as walking).
    pub async fn expect_error_after(&mut self, seen: usize, code: ErrorCode) -> Result<ErrorMsg> {
        self.wait_until(PATIENCE, |b| {
            b.errors[seen..].iter().any(|e| e.code == code)
        })
        .await?;
        self.errors[seen..]
            .iter()
            .find(|e| e.code == code)
            .cloned()
            .ok_or_else(|| anyhow!("vanished"))
    }

    /// Waits until the server closes the connection.
    pub async fn expect_close(&mut self) -> Result<(u16, String)> {
        let deadline = Instant::now() + PATIENCE;
        while self.closed.is_none() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| anyhow!("the server did not close the connection"))?;
            self.read_one(left).await?;
        }
        Ok(self.closed.clone().unwrap_or_default())
    }
}

/// The campus map, as the server loads it.
pub fn campus() -> quad_shared::map::Map {
    quad_shared::map::Map::load(&repo_root().join("assets/maps/campus.tmj"))
        .expect("the campus map loads (checked by quad-shared's tests)")
}

/// `p`, checked to be a spot an avatar may stand on the campus (a test's spawn point).
pub fn walkable(p: [f32; 2]) -> [f32; 2] {
    assert!(
        campus().collision.walkable(glam::Vec2::from_array(p)),
        "test spot {p:?} is not walkable on the campus"
    );
    p
}

/// The centre of tile (tx, ty) in world pixels.
pub fn tile_center(map: &quad_shared::map::Map, tx: u32, ty: u32) -> [f32; 2] {
    let ts = map.tile_size as f32;
    [(tx as f32 + 0.5) * ts, (ty as f32 + 0.5) * ts]
}

/// A plain HTTP/1.1 GET over loopback: the status code and the body.
/// An HTTP/1.1 response as read off the wire: status, headers (names lower-cased) and body
/// (not decoded: ask for no encoding).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with `extra` header lines (each `Name: value`), on a connection of its own.
pub async fn http_request(addr: SocketAddr, path: &str, extra: &[&str]) -> Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .context("HTTP response timed out")??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    // Chunked bodies (streamed files) are put back together.
    let chunked = |h: &Vec<(String, String)>| {
        h.iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    };
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if chunked(&response.headers) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..end]).trim(), 16)?;
            if size == 0 {
                break;
            }
            let start = end + 2;
            out.extend_from_slice(rest.get(start..start + size).context("a cut chunk")?);
            rest = rest.get(start + size + 2..).unwrap_or_default();
        }
        body = out;
    }
    response.body = body;
    Ok(response)
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .context("HTTP response timed out")??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The value of a metric in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

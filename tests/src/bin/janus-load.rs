//! `janus-load`: the SFU benchmark's `audio_50_all` load, pointed at a running Janus
//! (1.x, VideoRoom plugin, plain HTTP transport) instead of Quad, so that both SFUs can be
//! compared on one machine in one session.
//!
//! Every bot is a webrtc-rs peer like Quad's room bots ([`quad_tests::room_bot`]): it
//! publishes one microphone (synthetic Opus, 50 packets/s, RTP audio level 30) in one
//! VideoRoom room through a publisher handle, and receives every other bot's microphone
//! through one multistream subscriber handle. The report is the one `quad-load` prints,
//! with Janus's CPU and memory in the place of the server's.
//!
//! ```text
//! tests/janus/run-janus.sh 8188 2 &      # Janus on 127.0.0.1:8188 with 2 event loops
//! janus-load --janus http://127.0.0.1:8188/janus --janus-pid $(pgrep -n janus) \
//!     --bots 50 --settle 40 --seconds 15 --media-ip 192.0.2.2
//! ```
//!
//! `tests/janus/compare.sh` runs it alternated with `quad-load` against Quad's server.
//!
//! Janus gathers no candidates on loopback interfaces, so its media address is one of the
//! machine's own (`--media-ip`, the address it was told to use); traffic between a
//! machine's own addresses stays on its loopback device all the same.

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use quad_tests::load::{ProcessLoad, Report, cpu_seconds, rss_kib};
use quad_tests::room_bot::{MAGIC, now_us, opus_frame_len, synthetic};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// How long any one HTTP request may take (long polls excepted).
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an asynchronous VideoRoom request may take to be answered by an event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer connection may take to connect, or gather its candidates.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Load a running Janus VideoRoom with Quad's `audio_50_all` load.
#[derive(Parser, Debug)]
#[command(name = "janus-load", version)]
struct Args {
    /// Janus's HTTP API (janus.transport.http), base path included.
    #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
    janus: String,
    /// Janus's process id, to report its CPU and memory (same machine only).
    #[arg(long)]
    janus_pid: Option<u32>,
    /// Bots in all, in one room; each publishes a microphone and receives all the others.
    #[arg(long, default_value_t = 50)]
    bots: usize,
    /// How long to wait for everyone to receive, and the rate to settle, at most, seconds.
    #[arg(long, default_value_t = 30.0)]
    settle: f64,
    /// How long to measure, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The local address the bots' peer connections use (Janus's media address, as its
    /// `ice_enforce_list` has it).
    #[arg(long, default_value = "127.0.0.1")]
    media_ip: IpAddr,
    /// Handles set up at the same time.
    #[arg(long, default_value_t = 10)]
    parallel: usize,
    /// Print the first bot's SDPs.
    #[arg(long)]
    verbose: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.seconds.is_finite()
        && args.seconds > 0.0
        && args.settle.is_finite()
        && args.settle >= 0.0)
    {
        bail!("--seconds must be positive and --settle not negative");
    }
    if args.bots < 2 {
        bail!("--bots must be at least 2");
    }
    // Setting up takes a bounded time per handle; this bounds the whole run besides.
    let limit = Duration::from_secs_f64(args.settle + args.seconds)
        + Duration::from_secs(120 + 4 * args.bots as u64);
    let report = tokio::time::timeout(limit, run(&args))
        .await
        .map_err(|_| anyhow!("the run did not end within {limit:?}"))??;
    println!("{}", report.summary());
    Ok(())
}

/// `http://host:port/path` as an address and a path.
fn parse_url(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--janus {url}: only http:// URLs"))?;
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, format!("/{}", path.trim_end_matches('/'))),
        None => (rest, "/janus".to_owned()),
    };
    let addr = host
        .parse()
        .map_err(|e| anyhow!("--janus {url}: {host}: {e}"))?;
    Ok((addr, path))
}

// ---------------------------------------------------------------------------------------
// Janus's HTTP API.

/// One HTTP/1.1 request on its own connection; the response's JSON body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no response within {timeout:?}"))?
        .with_context(|| format!("{method} {path}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path}: no HTTP header in the response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut payload = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload).with_context(|| format!("{method} {path}: chunked body"))?;
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: no status in {head:?}"))?;
    if status != 200 {
        bail!(
            "{method} {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&payload)
        );
    }
    serde_json::from_slice(&payload).with_context(|| {
        format!(
            "{method} {path}: not JSON: {:?}",
            String::from_utf8_lossy(&payload)
        )
    })
}

/// A chunked transfer encoding's body.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("no chunk size"))?;
        let size = std::str::from_utf8(&raw[..line])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        raw = &raw[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = raw
            .get(..size)
            .ok_or_else(|| anyhow!("a chunk cut short"))?;
        out.extend_from_slice(chunk);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

/// A Janus session, its event long poll, and the requests waiting for their events.
struct Janus {
    addr: SocketAddr,
    path: String,
    session: u64,
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next: AtomicU64,
    webrtcups: AtomicU64,
    hangups: AtomicU64,
    slowlinks: AtomicU64,
    /// Set when the bots leave: their hangups are no news.
    leaving: AtomicBool,
}

/// `janus` of a Janus API answer, failing on its errors.
fn janus_kind(answer: &Value, what: &str) -> Result<String> {
    let kind = answer["janus"].as_str().unwrap_or_default();
    if kind == "error" {
        bail!(
            "{what}: Janus error {}: {}",
            answer["error"]["code"],
            answer["error"]["reason"].as_str().unwrap_or_default()
        );
    }
    if kind.is_empty() {
        bail!("{what}: not a Janus answer: {answer}");
    }
    Ok(kind.to_owned())
}

/// A VideoRoom answer's data, failing on its errors.
fn plugin_data(answer: &Value, what: &str) -> Result<Value> {
    let data = answer
        .pointer("/plugindata/data")
        .cloned()
        .ok_or_else(|| anyhow!("{what}: no plugin data in {answer}"))?;
    if let Some(error) = data.get("error") {
        bail!("{what}: VideoRoom error {}: {error}", data["error_code"]);
    }
    Ok(data)
}

impl Janus {
    async fn create(addr: SocketAddr, path: String) -> Result<Arc<Janus>> {
        let answer = http(
            addr,
            "POST",
            &path,
            Some(&json!({"janus": "create", "transaction": "create"})),
            HTTP_TIMEOUT,
        )
        .await
        .context("creating a Janus session")?;
        janus_kind(&answer, "creating a session")?;
        let session = answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("creating a session: no id in {answer}"))?;
        Ok(Arc::new(Janus {
            addr,
            path,
            session,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            webrtcups: AtomicU64::new(0),
            hangups: AtomicU64::new(0),
            slowlinks: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
        }))
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// POSTs `body` (with a new transaction) to the session, or to one of its handles.
    async fn post(&self, handle: Option<u64>, mut body: Value) -> Result<(String, Value)> {
        let transaction = self.transaction();
        body["transaction"] = json!(transaction);
        let path = match handle {
            Some(h) => format!("{}/{}/{h}", self.path, self.session),
            None => format!("{}/{}", self.path, self.session),
        };
        let answer = http(self.addr, "POST", &path, Some(&body), HTTP_TIMEOUT).await?;
        Ok((transaction, answer))
    }

    async fn attach(&self) -> Result<u64> {
        let (_, answer) = self
            .post(
                None,
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await
            .context("attaching to the VideoRoom")?;
        janus_kind(&answer, "attaching to the VideoRoom")?;
        answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("attaching: no handle id in {answer}"))
    }

    /// A VideoRoom request that is answered at once (`create`, `listparticipants`).
    async fn request(&self, handle: u64, body: Value, what: &str) -> Result<Value> {
        let (_, answer) = self
            .post(Some(handle), json!({"janus": "message", "body": body}))
            .await
            .with_context(|| what.to_owned())?;
        janus_kind(&answer, what)?;
        plugin_data(&answer, what)
    }

    /// A VideoRoom request answered by an event (with its JSEP, if any).
    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
        what: &str,
    ) -> Result<(Value, Option<Value>)> {
        let transaction = self.transaction();
        let (tx, rx) = oneshot::channel();
        self.pending().insert(transaction.clone(), tx);
        let mut message = json!({"janus": "message", "body": body, "transaction": transaction});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let path = format!("{}/{}/{handle}", self.path, self.session);
        let answer = match http(self.addr, "POST", &path, Some(&message), HTTP_TIMEOUT).await {
            Ok(answer) => answer,
            Err(e) => {
                self.pending().remove(&transaction);
                return Err(e.context(what.to_owned()));
            }
        };
        let event = match janus_kind(&answer, what) {
            Ok(kind) if kind == "ack" => match tokio::time::timeout(EVENT_TIMEOUT, rx).await {
                Ok(Ok(event)) => event,
                Ok(Err(_)) => bail!("{what}: the event poll ended"),
                Err(_) => {
                    self.pending().remove(&transaction);
                    bail!("{what}: no event within {EVENT_TIMEOUT:?}")
                }
            },
            // Answered at once after all.
            Ok(_) => {
                self.pending().remove(&transaction);
                answer
            }
            Err(e) => {
                self.pending().remove(&transaction);
                return Err(e);
            }
        };
        let data = plugin_data(&event, what)?;
        Ok((data, event.get("jsep").cloned()))
    }

    /// Long-polls the session's events until aborted, handing each to the request waiting
    /// for it.
    async fn poll(self: Arc<Self>) {
        let path = format!("{}/{}?maxev=50", self.path, self.session);
        loop {
            let events = match http(self.addr, "GET", &path, None, Duration::from_secs(45)).await {
                Ok(Value::Array(events)) => events,
                Ok(event) => vec![event],
                Err(e) => {
                    eprintln!("janus-load: polling events: {e:#}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            for event in events {
                let waiting = event["transaction"]
                    .as_str()
                    .and_then(|t| self.pending().remove(t));
                if let Some(tx) = waiting {
                    let _ = tx.send(event);
                    continue;
                }
                match event["janus"].as_str().unwrap_or_default() {
                    "webrtcup" => {
                        self.webrtcups.fetch_add(1, Ordering::Relaxed);
                    }
                    "hangup" if !self.leaving.load(Ordering::Relaxed) => {
                        self.hangups.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "janus-load: Janus hung up handle {}: {}",
                            event["sender"],
                            event["reason"].as_str().unwrap_or_default()
                        );
                    }
                    "slowlink" => {
                        self.slowlinks.fetch_add(1, Ordering::Relaxed);
                    }
                    "timeout" => eprintln!("janus-load: Janus timed the session out"),
                    _ => {}
                }
            }
        }
    }

    /// Keeps the session alive (Janus drops sessions quiet for 60 s) until aborted.
    async fn keepalive(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(25)).await;
            if let Err(e) = self.post(None, json!({"janus": "keepalive"})).await {
                eprintln!("janus-load: keepalive: {e:#}");
            }
        }
    }

    async fn destroy(&self) {
        if let Err(e) = self.post(None, json!({"janus": "destroy"})).await {
            eprintln!("janus-load: destroying the session: {e:#}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The bots' peer connections, as Quad's room bots make them.

/// What a bot has seen.
#[derive(Default)]
struct BotState {
    /// Packets received per received track (numbered as they came).
    received: HashMap<usize, u64>,
    tracks: usize,
    first_packet_at: Option<Instant>,
    last_seq: HashMap<usize, u16>,
    seqs: HashMap<usize, HashSet<u16>>,
    delays_us: Vec<u64>,
    publisher: Option<RTCPeerConnectionState>,
    subscriber: Option<RTCPeerConnectionState>,
}

type Shared = Arc<Mutex<BotState>>;

fn lock(s: &Mutex<BotState>) -> MutexGuard<'_, BotState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

struct Events {
    bot: Shared,
    subscriber: bool,
    gathered: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let mut s = lock(&self.bot);
        if self.subscriber {
            s.subscriber = Some(state);
        } else {
            s.publisher = Some(state);
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        count(track, self.bot.clone());
    }
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// A peer connection like a room bot's (Opus with the audio level, the default
/// interceptors), its UDP socket on `ip`; and whether its candidates are gathered.
async fn new_pc(
    bot: Shared,
    subscriber: bool,
    ip: IpAddr,
) -> Result<(Arc<dyn PeerConnection>, watch::Receiver<bool>)> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let (gathered, gathered_rx) = watch::channel(false);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(Arc::new(Events {
            bot,
            subscriber,
            gathered,
        }))
        .with_udp_addrs(vec![SocketAddr::new(ip, 0)])
        .build()
        .await?;
    Ok((Arc::new(pc), gathered_rx))
}

/// The local description once its candidates are all in (Janus is given no trickle).
async fn gathered_description(
    pc: &Arc<dyn PeerConnection>,
    mut gathered: watch::Receiver<bool>,
) -> Result<RTCSessionDescription> {
    tokio::time::timeout(CONNECT_TIMEOUT, gathered.wait_for(|g| *g))
        .await
        .map_err(|_| anyhow!("ICE gathering not complete within {CONNECT_TIMEOUT:?}"))?
        .map_err(|_| anyhow!("the peer connection went before gathering completed"))?;
    pc.local_description()
        .await
        .ok_or_else(|| anyhow!("no local description"))
}

/// Waits for `which` connection of `bot` to be connected.
async fn wait_connected(bot: &Shared, subscriber: bool) -> Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let state = {
            let s = lock(bot);
            if subscriber {
                s.subscriber
            } else {
                s.publisher
            }
        };
        match state {
            Some(RTCPeerConnectionState::Connected) => return Ok(()),
            Some(s @ (RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)) => {
                bail!("the peer connection is {s:?}")
            }
            _ if Instant::now() >= deadline => {
                bail!("not connected within {CONNECT_TIMEOUT:?} (state {state:?})")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Publishes synthetic Opus until aborted, as a room bot's microphone: a 60-100 byte
/// packet every 20 ms with the audio level.
fn publish(track: Arc<TrackLocalStaticRTP>, level: u8) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ssrc = track.track().await.ssrcs().next().unwrap_or(0);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let (mut seq, mut n) = (0u16, 0u64);
        loop {
            tick.tick().await;
            n += 1;
            if !n.is_multiple_of(2) {
                continue;
            }
            seq = seq.wrapping_add(1);
            let len = opus_frame_len(ssrc, seq);
            let mut packet = synthetic(111, seq, u32::from(seq) * 960, &[0; 4], len);
            packet.header.ssrc = ssrc;
            let level = HeaderExtension::AudioLevel(AudioLevelExtension {
                level,
                voice: level < 127,
            });
            if track
                .write_rtp_with_extensions(packet, &[level])
                .await
                .is_err()
            {
                break;
            }
        }
    })
}

/// Counts what arrives on a received track, as the room bots do.
fn count(track: Arc<dyn TrackRemote>, bot: Shared) {
    let index = {
        let mut s = lock(&bot);
        s.tracks += 1;
        s.tracks - 1
    };
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                let p = &packet.payload;
                let ours = p.len() >= 16 && &p[4..8] == MAGIC;
                let delay = ours.then(|| {
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&p[8..16]);
                    now_us().saturating_sub(u64::from_be_bytes(sent))
                });
                let mut s = lock(&bot);
                s.first_packet_at.get_or_insert_with(Instant::now);
                *s.received.entry(index).or_default() += 1;
                let seq = packet.header.sequence_number;
                s.seqs.entry(index).or_default().insert(seq);
                s.last_seq.insert(index, seq);
                if let Some(d) = delay
                    && s.delays_us.len() < 100_000
                {
                    s.delays_us.push(d);
                }
            }
        }
    });
}

/// A bot's publisher: its handle, its feed id in the room, and its connection.
struct Publisher {
    feed: u64,
    pc: Arc<dyn PeerConnection>,
    sending: tokio::task::JoinHandle<()>,
}

/// Joins `room` as a publisher and publishes a microphone.
async fn start_publisher(
    janus: &Janus,
    room: u64,
    i: usize,
    bot: &Shared,
    ip: IpAddr,
    verbose: bool,
) -> Result<Publisher> {
    let handle = janus.attach().await?;
    let (joined, _) = janus
        .message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room, "display": format!("bot{i}")}),
            None,
            "joining as a publisher",
        )
        .await?;
    if joined["videoroom"] != "joined" {
        bail!("joining as a publisher: {joined}");
    }
    let feed = joined["id"]
        .as_u64()
        .ok_or_else(|| anyhow!("joining as a publisher: no id in {joined}"))?;

    let (pc, gathered) = new_pc(bot.clone(), false, ip).await?;
    let mic = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "bot-mic".to_owned(),
        "bot-mic".to_owned(),
        "mic".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: String::new(),
                ssrc: Some(rand::random()),
                ..Default::default()
            },
            codec: opus(),
            ..Default::default()
        }],
    )));
    let encodings = mic.track().await.codings().to_vec();
    pc.add_transceiver_from_track(
        mic.clone() as Arc<dyn TrackLocal>,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: encodings,
        }),
    )
    .await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let offer = gathered_description(&pc, gathered).await?;
    if verbose {
        eprintln!("publisher offer:\n{}", offer.sdp);
    }
    let (configured, jsep) = janus
        .message(
            handle,
            json!({"request": "publish", "display": format!("bot{i}")}),
            Some(json!({"type": "offer", "sdp": offer.sdp, "trickle": false})),
            "publishing",
        )
        .await?;
    if configured["configured"] != "ok" {
        bail!("publishing: {configured}");
    }
    let answer = jsep
        .and_then(|j| j["sdp"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("publishing: no SDP answer with {configured}"))?;
    if verbose {
        eprintln!("Janus's answer:\n{answer}");
    }
    pc.set_remote_description(RTCSessionDescription::answer(answer)?)
        .await
        .context("Janus's answer")?;
    wait_connected(bot, false)
        .await
        .context("the publisher's connection")?;
    Ok(Publisher {
        feed,
        sending: publish(mic, 30),
        pc,
    })
}

/// Subscribes to `feeds` in one multistream subscription; returns its connection and how
/// many streams Janus put in it.
async fn start_subscriber(
    janus: &Janus,
    room: u64,
    feeds: &[u64],
    bot: &Shared,
    ip: IpAddr,
    verbose: bool,
) -> Result<(Arc<dyn PeerConnection>, usize)> {
    let handle = janus.attach().await?;
    let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
    let (attached, jsep) = janus
        .message(
            handle,
            json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}),
            None,
            "subscribing",
        )
        .await?;
    if attached["videoroom"] != "attached" {
        bail!("subscribing: {attached}");
    }
    let subscribed = attached["streams"].as_array().map_or(0, Vec::len);
    let offer = jsep
        .and_then(|j| j["sdp"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("subscribing: no SDP offer with {attached}"))?;
    if verbose {
        eprintln!("Janus's subscriber offer:\n{offer}");
    }
    let (pc, gathered) = new_pc(bot.clone(), true, ip).await?;
    pc.set_remote_description(RTCSessionDescription::offer(offer)?)
        .await
        .context("Janus's offer")?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    let answer = gathered_description(&pc, gathered).await?;
    if verbose {
        eprintln!("subscriber answer:\n{}", answer.sdp);
    }
    let (started, _) = janus
        .message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer.sdp, "trickle": false})),
            "starting the subscription",
        )
        .await?;
    if started["started"] != "ok" {
        bail!("starting the subscription: {started}");
    }
    wait_connected(bot, true)
        .await
        .context("the subscriber's connection")?;
    Ok((pc, subscribed))
}

/// The socket inodes a process has open (`/proc/<pid>/fd`).
fn socket_inodes(pid: &str) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| {
        let link = std::fs::read_link(e.ok()?.path()).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// Datagrams the kernel dropped (receive buffer full) on this process's UDP sockets and on
/// `other`'s, so far (`/proc/net/udp`'s `drops`).
fn udp_drops(other: Option<u32>) -> (u64, u64) {
    let mine = socket_inodes("self");
    let theirs = other.map_or_else(HashSet::new, |pid| socket_inodes(&pid.to_string()));
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let (mut a, mut b) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(inode), Some(drops)) = (
            fields.get(9).and_then(|f| f.parse::<u64>().ok()),
            fields.get(12).and_then(|f| f.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if mine.contains(&inode) {
            a += drops;
        } else if theirs.contains(&inode) {
            b += drops;
        }
    }
    (a, b)
}

// ---------------------------------------------------------------------------------------
// The run.

struct Bot {
    state: Shared,
    started_at: Instant,
    publisher: Option<Publisher>,
    subscriber: Option<Arc<dyn PeerConnection>>,
}

async fn run(args: &Args) -> Result<Report> {
    let (addr, path) = parse_url(&args.janus)?;
    let rss_before = args.janus_pid.map_or(0, rss_kib);
    let janus = Janus::create(addr, path).await?;
    let poller = tokio::spawn(janus.clone().poll());
    let keepalive = tokio::spawn(janus.clone().keepalive());
    let result = drive(args, &janus, rss_before).await;
    // Events stop before the session goes (a poll of a gone session is an error in
    // Janus's log).
    poller.abort();
    keepalive.abort();
    tokio::time::timeout(HTTP_TIMEOUT, janus.destroy())
        .await
        .unwrap_or_else(|_| eprintln!("janus-load: destroying the session timed out"));
    result
}

async fn drive(args: &Args, janus: &Arc<Janus>, rss_before: u64) -> Result<Report> {
    let admin = janus.attach().await?;
    let room = u64::from(rand::random::<u32>()) + 1;
    let created = janus
        .request(
            admin,
            json!({
                "request": "create",
                "room": room,
                "description": "janus-load",
                "permanent": false,
                "publishers": args.bots + 10,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "audiolevel_ext": true,
                "audiolevel_event": false,
                "record": false,
                "notify_joining": false,
            }),
            "creating the room",
        )
        .await?;
    if created["videoroom"] != "created" {
        bail!("creating the room: {created}");
    }
    eprintln!("janus-load: room {room}; {} bots joining", args.bots);

    // Publishers, a few at a time.
    let gate = Arc::new(Semaphore::new(args.parallel.max(1)));
    let mut tasks = Vec::with_capacity(args.bots);
    for i in 0..args.bots {
        let (janus, gate, ip) = (janus.clone(), gate.clone(), args.media_ip);
        let verbose = args.verbose && i == 0;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let state = Shared::default();
            let started_at = Instant::now();
            let publisher = start_publisher(&janus, room, i, &state, ip, verbose)
                .await
                .map_err(|e| eprintln!("janus-load: bot {i}: {e:#}"))
                .ok();
            Bot {
                state,
                started_at,
                publisher,
                subscriber: None,
            }
        }));
    }
    let mut bots = Vec::with_capacity(args.bots);
    for task in tasks {
        bots.push(task.await.context("a publisher's task")?);
    }
    let feeds: Vec<u64> = bots
        .iter()
        .filter_map(|b| b.publisher.as_ref().map(|p| p.feed))
        .collect();
    eprintln!(
        "janus-load: {} of {} publishers connected",
        feeds.len(),
        args.bots
    );
    if feeds.is_empty() {
        bail!("no publisher connected");
    }

    // Their feeds are active once Janus has set up their media.
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let list = janus
            .request(
                admin,
                json!({"request": "listparticipants", "room": room}),
                "listing participants",
            )
            .await?;
        let active = list["participants"]
            .as_array()
            .map_or(0, |ps| ps.iter().filter(|p| p["publisher"] == true).count());
        if active >= feeds.len() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "janus-load: only {active} of {} feeds active; subscribing anyway",
                feeds.len()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Subscribers: each bot to every other bot's feed.
    let mut tasks = Vec::with_capacity(bots.len());
    for (i, bot) in bots.iter().enumerate() {
        let own = bot.publisher.as_ref().map(|p| p.feed);
        let others: Vec<u64> = feeds.iter().copied().filter(|f| Some(*f) != own).collect();
        let (janus, gate, ip, state) = (
            janus.clone(),
            gate.clone(),
            args.media_ip,
            bot.state.clone(),
        );
        let verbose = args.verbose && i == 0;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            start_subscriber(&janus, room, &others, &state, ip, verbose)
                .await
                .map_err(|e| eprintln!("janus-load: bot {i} subscribing: {e:#}"))
                .ok()
        }));
    }
    let mut subscribed = 0;
    for (bot, task) in bots.iter_mut().zip(tasks) {
        if let Some((pc, streams)) = task.await.context("a subscriber's task")? {
            bot.subscriber = Some(pc);
            subscribed += streams;
        }
    }
    eprintln!(
        "janus-load: {} subscribers connected, {subscribed} streams subscribed (of {} possible)",
        bots.iter().filter(|b| b.subscriber.is_some()).count(),
        feeds.len() * feeds.len().saturating_sub(1)
    );

    // Settle, as Quad's load engine does: everyone receives, and the rate is steady.
    let settle = Duration::from_secs_f64(args.settle);
    let deadline = Instant::now() + settle;
    while Instant::now() < deadline
        && !bots
            .iter()
            .all(|b| lock(&b.state).first_packet_at.is_some())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = |bots: &[Bot]| -> u64 {
        bots.iter()
            .map(|b| lock(&b.state).received.values().sum::<u64>())
            .sum()
    };
    let mut previous: Option<f64> = None;
    while Instant::now() < deadline {
        let before = total(&bots);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rate = (total(&bots) - before) as f64;
        if previous.is_some_and(|p| rate > 0.0 && (rate - p).abs() <= 0.03 * rate) {
            break;
        }
        previous = Some(rate);
    }
    let join_ms = bots
        .iter()
        .filter_map(|b| {
            let first = lock(&b.state).first_packet_at?;
            Some(first.duration_since(b.started_at).as_secs_f64() * 1000.0)
        })
        .collect();

    // Measure.
    let snapshot = |bots: &[Bot]| -> (u64, u64, u64, HashMap<(usize, usize), u64>) {
        let (mut received, mut distinct, mut span) = (0u64, 0u64, 0u64);
        let mut per_stream = HashMap::new();
        for (i, b) in bots.iter().enumerate() {
            let s = lock(&b.state);
            received += s.received.values().sum::<u64>();
            for (stream, n) in &s.received {
                per_stream.insert((i, *stream), *n);
            }
            for seqs in s.seqs.values() {
                distinct += seqs.len() as u64;
            }
            for (stream, last) in &s.last_seq {
                if let Some(seqs) = s.seqs.get(stream) {
                    let (low, high) = seqs
                        .iter()
                        .map(|q| q.wrapping_sub(*last) as i16)
                        .fold((0i16, 0i16), |(lo, hi), d| (lo.min(d), hi.max(d)));
                    span += (i32::from(high) - i32::from(low) + 1) as u64;
                }
            }
        }
        (received, distinct, span, per_stream)
    };
    for b in &bots {
        lock(&b.state).delays_us.clear();
    }
    let drops0 = udp_drops(args.janus_pid);
    let cpu_before = args.janus_pid.and_then(cpu_seconds);
    let (received0, distinct0, span0, streams0) = snapshot(&bots);
    let started = Instant::now();
    eprintln!(
        "janus-load: {} bots settled; measuring for {:.0} s",
        bots.len(),
        args.seconds
    );
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (received1, distinct1, span1, streams1) = snapshot(&bots);
    let cpu_after = args.janus_pid.and_then(cpu_seconds);
    let drops1 = udp_drops(args.janus_pid);
    eprintln!(
        "janus-load: UDP datagrams the kernel dropped in the window (receive buffers full): bots {}, Janus {}",
        drops1.0.saturating_sub(drops0.0),
        drops1.1.saturating_sub(drops0.1),
    );
    let live = streams1
        .iter()
        .filter(|(k, n)| **n > streams0.get(k).copied().unwrap_or(0))
        .count();
    eprintln!(
        "janus-load: {live} streams received packets in the window; Janus said webrtcup {} times, hangup {}, slowlink {}",
        janus.webrtcups.load(Ordering::Relaxed),
        janus.hangups.load(Ordering::Relaxed),
        janus.slowlinks.load(Ordering::Relaxed),
    );
    let delay_us: Vec<u64> = bots
        .iter()
        .flat_map(|b| lock(&b.state).delays_us.clone())
        .collect();
    let expected = span1.saturating_sub(span0);
    let got = distinct1.saturating_sub(distinct0);
    let server = match (args.janus_pid, cpu_before, cpu_after) {
        (Some(pid), Some(a), Some(b)) => Some(ProcessLoad {
            cpu_cores: (b - a) / elapsed,
            rss_kib: rss_kib(pid),
        }),
        _ => None,
    };
    let report = Report {
        bots: bots.len(),
        join_ms,
        received_pps: (received1 - received0) as f64 / elapsed,
        loss: if expected > 0 {
            expected.saturating_sub(got) as f64 / expected as f64
        } else {
            0.0
        },
        delay_us,
        server,
        server_rss_before_kib: rss_before,
    };

    // Leave.
    janus.leaving.store(true, Ordering::Relaxed);
    for b in bots {
        if let Some(p) = b.publisher {
            p.sending.abort();
            let _ = tokio::time::timeout(Duration::from_secs(5), p.pc.close()).await;
        }
        if let Some(pc) = b.subscriber {
            let _ = tokio::time::timeout(Duration::from_secs(5), pc.close()).await;
        }
    }
    Ok(report)
}

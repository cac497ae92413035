//! Room bots: protocol clients that take part in classroom media as webrtc-rs peers, the way
//! a browser does. A bot walks (or spawns) into a room zone, answers `JoinRoomMedia` with an
//! offer of three send-only m-lines (microphone, camera, screen), answers the server's
//! renegotiations, and publishes synthetic Opus (with an RTP audio level) and optionally VP8.
//! Every packet it receives is counted by the stream it came in (`"<avatar>:<kind>"`).
//!
//! Each bot runs in its own task; tests read its [`RoomBotState`] and wait on it.

use crate::{Bot, PATIENCE};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use quad_shared::media::{SIMULCAST_LAYERS, Source};
use quad_shared::protocol::{
    ClientMsg, ErrorMsg, MediaFlags, RoomMember, SdpKind, ServerMsg, Signal,
};
use quad_shared::{AvatarId, ZoneId};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The first bytes of every synthetic payload, so a receiver can tell bot packets apart.
pub const MAGIC: &[u8; 4] = b"QUAD";

/// What a bot publishes.
#[derive(Clone, Debug)]
pub struct RoomBotOptions {
    pub name: String,
    /// Where to appear (the test server must run with `dev`).
    pub spawn: [f32; 2],
    /// Publish a microphone at this RTP audio level (-dBov: 0 loudest, 127 silence).
    pub mic_level: Option<u8>,
    /// Publish a camera (VP8 packets at 30 per second).
    pub camera: bool,
    /// Reach the server's media through a [`crate::lossy_udp`] proxy that drops the first
    /// copy of every 10th video packet each way (retransmissions get through).
    pub lossy: bool,
    /// A join link's token (for a teacher or student), if any.
    pub token: Option<String>,
    /// Reach the server's media through a [`crate::lossy_udp`] proxy whose link to the bot
    /// is this narrow one (and not lossy), instead.
    pub shaper: Option<Arc<crate::lossy_udp::Shaper>>,
    /// The camera's layers at these bitrates (bit/s; several packets a frame where a frame
    /// is over 1,000 bytes), instead of one small packet a frame per layer; a layer at 0
    /// is not sent.
    pub camera_rates: Option<[u64; 3]>,
    /// Answers to the server's offers that are made but never sent, as if lost on the way
    /// (the first N).
    pub lose_answers: u32,
    /// Answers to the server's offers sent without the m-lines Quad writes itself for
    /// forwarded microphones (mids `q0`, `q1`, ...), as a broken or hostile client might
    /// (the first N).
    pub mangle_answers: u32,
    /// Publish real Opus and VP8 (a tone while `speaking`, silence otherwise; a test
    /// pattern on the camera) instead of synthetic payloads.
    pub real: Option<Arc<crate::real_media::RealMedia>>,
    /// When the microphone carries the tone (always, without this).
    pub speaking: Option<crate::real_media::Speaking>,
}

impl RoomBotOptions {
    /// Whether its media goes through proxies.
    fn proxied(&self) -> bool {
        self.lossy || self.shaper.is_some()
    }
}

/// What a bot has seen, for tests to read.
#[derive(Debug, Default)]
pub struct RoomBotState {
    pub room: Option<ZoneId>,
    pub members: Vec<RoomMember>,
    pub speakers: Vec<AvatarId>,
    /// Packets received per forwarded stream id (`"<avatar>:<mic|camera|screen>"`).
    pub received: HashMap<String, u64>,
    /// Which stream each SSRC carries, as the server's last offer says (`a=ssrc:… msid:`):
    /// the server reuses an m-line, and its SSRC, for a later stream once one ends.
    pub ssrc_streams: HashMap<u32, String>,
    /// The m-lines of the server's last offer.
    pub m_lines: usize,
    /// One-way delays of received bot packets (send time stamped in the payload), µs.
    pub delays_us: Vec<u64>,
    /// The room connection's state, as its last change said.
    pub connection: Option<RTCPeerConnectionState>,
    /// When the room connection first reached `Connected`.
    pub connected_at: Option<Instant>,
    /// When the first forwarded packet arrived.
    pub first_packet_at: Option<Instant>,
    /// Offers the server made (renegotiations).
    pub server_offers: u32,
    /// The server's ICE username fragment, from its last description.
    pub server_ufrag: Option<String>,
    /// The candidates the SFU gave (in its answer and by trickle), as it wrote them.
    pub server_candidates: Vec<String>,
    /// Server offers that changed its ICE credentials (ICE restarts).
    pub ice_restarts: u32,
    /// `JoinRoomMedia` messages received.
    pub joins: u32,
    pub errors: Vec<ErrorMsg>,
    /// The class the bot is in, as last sent.
    pub class: Option<quad_shared::protocol::ClassState>,
    /// The last `Records` list, as [`crate::Bot::records`].
    pub records: Option<quad_shared::protocol::RecordsList>,
    /// The last `ClassReport`, as [`crate::Bot::class_report`].
    pub class_report: Option<quad_shared::protocol::ClassReport>,
    /// `Recording` news, as [`crate::Bot::recordings`].
    pub recordings: Vec<(String, String, quad_shared::protocol::RecordingNews)>,
    /// Set when the bot's task ended with an error.
    pub failed: Option<String>,
    /// Room and proximity changes, in the order the server sent them.
    pub log: Vec<MediaEvent>,
    /// Camera packets received per stream, by the simulcast layer they were sent on.
    pub layers: HashMap<String, [u64; 3]>,
    /// Per stream: the last sequence number, and how often one did not follow the last.
    pub last_seq: HashMap<String, u16>,
    /// Per stream: every sequence number received (up to 65,536 of them).
    pub seqs: HashMap<String, HashSet<u16>>,
    pub seq_jumps: HashMap<String, u64>,
    /// The bot's avatar now (a rejoin after the session is gone gets a new one).
    pub me: Option<AvatarId>,
    /// Set when the server closed the connection: (code, reason). The bot then waits for
    /// [`RoomBot::reconnect`].
    pub closed: Option<(u16, String)>,
    /// `Restarting::retry_after_ms`, if the server said it is restarting.
    pub restarting: Option<u32>,
    /// Connections made again, and whether the last one resumed the session.
    pub reconnects: u32,
    pub resumed: bool,
    /// The tracks the room connection received (what RTCP can be written on).
    pub tracks: ReceivedTracks,
}

/// The room connection's received tracks.
#[derive(Default)]
pub struct ReceivedTracks(Vec<Arc<dyn TrackRemote>>);

impl std::fmt::Debug for ReceivedTracks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tracks", self.0.len())
    }
}

/// A change of the bot's media, as the server told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    JoinRoom(ZoneId),
    LeaveRoom(ZoneId),
    ConnectPeer(AvatarId),
    DisconnectPeer(AvatarId),
}

impl RoomBotState {
    /// Packets received from `publisher`'s stream of `kind` (`mic`, `camera`, `screen`).
    pub fn packets_from(&self, publisher: AvatarId, kind: &str) -> u64 {
        self.received
            .get(&format!("{}:{kind}", publisher.0))
            .copied()
            .unwrap_or(0)
    }
}

enum Command {
    Walk(u8, u32),
    Tiles(Vec<(AvatarId, u16)>),
    Send(ClientMsg),
    /// Close the room connection but keep the WebSocket (a network that drops media only).
    DropMedia,
    /// Cut the lossy proxies the media goes through (new ones serve later candidates).
    CutProxies,
    /// Connect again to this address, resuming (see [`Bot::reconnect`]); the room's name
    /// is asked for if the session is gone.
    Reconnect(SocketAddr, Option<String>),
    Leave,
}

impl RoomBotOptions {
    /// A bot named `name` at `spawn` publishing a microphone (level 30) and nothing else,
    /// on a direct path.
    pub fn mic(name: &str, spawn: [f32; 2]) -> RoomBotOptions {
        RoomBotOptions {
            name: name.into(),
            spawn,
            mic_level: Some(30),
            camera: false,
            lossy: false,
            token: None,
            shaper: None,
            camera_rates: None,
            lose_answers: 0,
            mangle_answers: 0,
            real: None,
            speaking: None,
        }
    }
}

/// A bot in the space that does room media. Dropping it stops its task abruptly: the
/// WebSocket goes without a close frame and the peer connection is closed.
pub struct RoomBot {
    pub id: AvatarId,
    /// When it started connecting (before the WebSocket opened).
    pub started_at: Instant,
    state: Arc<Mutex<RoomBotState>>,
    /// The current room connection, so that dropping the bot can close it.
    pc: PcSlot,
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

type PcSlot = Arc<Mutex<Option<Arc<dyn PeerConnection>>>>;

impl Drop for RoomBot {
    fn drop(&mut self) {
        self.task.abort();
        let pc = self.pc.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Without close() the connection's driver task would run on; closing says nothing
        // to the server that the WebSocket's end does not.
        if let (Some(pc), Ok(rt)) = (pc, tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

impl RoomBot {
    /// Joins the space at `options.spawn` and starts taking part in room media.
    pub async fn join(addr: SocketAddr, options: RoomBotOptions) -> Result<RoomBot> {
        let started_at = Instant::now();
        let bot = Bot::join_as(
            addr,
            &options.name,
            Some(options.spawn),
            options.token.clone(),
            None,
        )
        .await?;
        let id = bot.id;
        let state = Arc::new(Mutex::new(RoomBotState::default()));
        let (commands, rx) = mpsc::unbounded_channel();
        let pc = PcSlot::default();
        let task = tokio::spawn(run(bot, options, state.clone(), pc.clone(), rx));
        Ok(RoomBot {
            id,
            started_at,
            state,
            pc,
            commands,
            task,
        })
    }

    pub fn state(&self) -> MutexGuard<'_, RoomBotState> {
        // Only this module's tasks lock it, and none panics while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `cond` holds of the bot's state, or fails after `timeout` saying what
    /// the state was.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&RoomBotState) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let state = self.state();
                if cond(&state) {
                    return Ok(());
                }
                if let Some(why) = &state.failed {
                    bail!("bot {} failed while waiting for {what}: {why}", self.id);
                }
                if Instant::now() >= deadline {
                    bail!(
                        "bot {}: {what} not within {timeout:?}; state: {:?}",
                        self.id,
                        *state
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Walks like a client (see [`Bot::walk`]).
    pub fn walk(&self, dir: u8, steps: u32) {
        let _ = self.commands.send(Command::Walk(dir, steps));
    }

    /// Reports the width at which this bot "shows" each member's camera.
    pub fn tiles(&self, tiles: Vec<(AvatarId, u16)>) {
        let _ = self.commands.send(Command::Tiles(tiles));
    }

    /// Sends any message on the bot's WebSocket.
    pub fn send(&self, msg: ClientMsg) {
        let _ = self.commands.send(Command::Send(msg));
    }

    /// Drops the WebSocket without a close frame (a network cut) if it is still open, closes
    /// the room connection as the browser does, and connects again to `addr` with the
    /// resume token (asking for `room` if the server no longer has the session).
    pub fn reconnect(&self, addr: SocketAddr, room: Option<String>) {
        let _ = self.commands.send(Command::Reconnect(addr, room));
    }

    /// Drops the per-packet records kept so far (delays, sequence numbers, the log), so that
    /// a long run's bot does not grow; counts stay.
    pub fn forget(&self) {
        let mut s = self.state();
        s.delays_us.clear();
        s.seqs.clear();
        s.log.clear();
        s.errors.clear();
    }

    /// Closes the room connection without a word, keeping the WebSocket.
    pub fn drop_media(&self) {
        let _ = self.commands.send(Command::DropMedia);
    }

    /// With `lossy`: the path the media takes goes dead (its proxies relay nothing from
    /// now on) while the connection stays open; server candidates that come later get new
    /// proxies.
    pub fn cut_media_path(&self) {
        let _ = self.commands.send(Command::CutProxies);
    }

    /// Leaves properly: closes the peer connection and the WebSocket with a close frame.
    pub async fn leave(self) {
        let _ = self.commands.send(Command::Leave);
        let deadline = Instant::now() + PATIENCE;
        while !self.task.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends an empty receiver report from each SSRC of `ssrcs` on a received track, as a
    /// client may: RTCP's sender SSRC is the client's to choose.
    pub async fn send_receiver_reports(&self, ssrcs: std::ops::Range<u32>) -> Result<()> {
        let track = self
            .state()
            .tracks
            .0
            .first()
            .cloned()
            .context("no track received yet")?;
        for ssrc in ssrcs {
            let report = rtc::rtcp::receiver_report::ReceiverReport {
                ssrc,
                ..Default::default()
            };
            track
                .write_rtcp(vec![Box::new(report)])
                .await
                .map_err(|e| anyhow!("writing RTCP: {e}"))?;
        }
        Ok(())
    }

    /// Waits until this bot receives packets from each of `publishers`' `kind` streams,
    /// at least `count` from each.
    pub async fn wait_receiving(
        &self,
        publishers: &[AvatarId],
        kind: &str,
        count: u64,
    ) -> Result<()> {
        self.wait_for(
            PATIENCE,
            &format!("{count} {kind} packets from each of {publishers:?}"),
            |s| publishers.iter().all(|p| s.packets_from(*p, kind) >= count),
        )
        .await
    }
}

/// What the peer connection's callbacks report.
enum PcEvent {
    Candidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
}

struct Events(mpsc::UnboundedSender<PcEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.send(PcEvent::Candidate(init));
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(PcEvent::State(state));
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.0.send(PcEvent::Track(track));
    }
}

/// One room connection of a bot.
struct Media {
    pc: Arc<dyn PeerConnection>,
    events: mpsc::UnboundedReceiver<PcEvent>,
    publisher: Option<tokio::task::JoinHandle<()>>,
    mic: Option<Arc<TrackLocalStaticRTP>>,
    /// The camera track and its transceiver (for the negotiated extension ids).
    camera: Option<(
        Arc<TrackLocalStaticRTP>,
        Arc<dyn webrtc::rtp_transceiver::RtpTransceiver>,
    )>,
}

impl Media {
    async fn close(mut self) {
        if let Some(p) = self.publisher.take() {
            p.abort();
        }
        let _ = self.pc.close().await;
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

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// A bot's peer connection, its UDP socket on `ip` (a loopback address).
async fn new_pc(
    events: mpsc::UnboundedSender<PcEvent>,
    ip: std::net::IpAddr,
) -> Result<Arc<dyn PeerConnection>> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8(),
            payload_type: 96,
        },
        RtpCodecKind::Video,
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
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(Arc::new(Events(events)))
        .with_udp_addrs(vec![SocketAddr::new(ip, 0)])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// A local track with one encoding per RID (one unnamed encoding for `[""]`), each with a
/// random SSRC.
fn local_track(
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    label: &str,
    rids: &[&str],
) -> Arc<TrackLocalStaticRTP> {
    let encodings = rids
        .iter()
        .map(|rid| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: (*rid).to_owned(),
                ssrc: Some(rand::random()),
                ..Default::default()
            },
            codec: codec.clone(),
            ..Default::default()
        })
        .collect();
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("bot-{label}"),
        format!("bot-{label}"),
        label.to_owned(),
        kind,
        encodings,
    )))
}

/// Opens the room connection: three send-only m-lines in the order the SFU expects, and the
/// offer.
async fn open_media(bot: &mut Bot, options: &RoomBotOptions) -> Result<Media> {
    let (tx, events) = mpsc::unbounded_channel();
    let pc = new_pc(tx, bot.media_ip).await?;
    // The encodings must be given again: `add_transceiver_from_track` does not take them
    // from the track.
    let sendonly = |encodings: Vec<RTCRtpEncodingParameters>| {
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: encodings,
        })
    };
    // webrtc-rs wants a track on a send-only m-line; devices that are off never write.
    let mic = local_track(RtpCodecKind::Audio, opus(), Source::Mic.as_str(), &[""]);
    // The camera in three simulcast layers, as the browser client sends it.
    let camera = local_track(
        RtpCodecKind::Video,
        vp8(),
        Source::Camera.as_str(),
        &SIMULCAST_RIDS,
    );
    let screen = local_track(RtpCodecKind::Video, vp8(), Source::Screen.as_str(), &[""]);
    let mut camera_sender = None;
    for track in [&mic, &camera, &screen] {
        let encodings = track.track().await.codings().to_vec();
        let transceiver = pc
            .add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, sendonly(encodings))
            .await?;
        if Arc::ptr_eq(track, &camera) {
            camera_sender = Some(transceiver);
        }
    }
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer.clone()).await?;
    bot.send(&ClientMsg::RoomSignal(Signal::Description {
        kind: SdpKind::Offer,
        sdp: offer.sdp,
    }))
    .await?;
    Ok(Media {
        pc,
        events,
        publisher: None,
        mic: options.mic_level.is_some().then_some(mic),
        camera: if options.camera {
            camera_sender.map(|t| (camera, t))
        } else {
            None
        },
    })
}

/// An offer like the one a bot makes when it joins a room's media (three send-only
/// m-lines), from a connection closed at once: for tests that send raw room signaling.
pub async fn client_offer() -> Result<String> {
    let (tx, _events) = mpsc::unbounded_channel();
    let pc = new_pc(tx, std::net::Ipv4Addr::LOCALHOST.into()).await?;
    let tracks = [
        local_track(RtpCodecKind::Audio, opus(), Source::Mic.as_str(), &[""]),
        local_track(
            RtpCodecKind::Video,
            vp8(),
            Source::Camera.as_str(),
            &SIMULCAST_RIDS,
        ),
        local_track(RtpCodecKind::Video, vp8(), Source::Screen.as_str(), &[""]),
    ];
    for track in tracks {
        let encodings = track.track().await.codings().to_vec();
        pc.add_transceiver_from_track(
            track as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: encodings,
            }),
        )
        .await?;
    }
    let offer = pc.create_offer(None).await?;
    let _ = pc.close().await;
    Ok(offer.sdp)
}

/// The RIDs of the camera's simulcast layers, lowest first (the wire contract's names).
pub const SIMULCAST_RIDS: [&str; 3] = [
    SIMULCAST_LAYERS[0].0,
    SIMULCAST_LAYERS[1].0,
    SIMULCAST_LAYERS[2].0,
];

/// Publishes synthetic media until aborted: Opus-sized packets every 20 ms with the audio
/// level, and on the camera a VP8-shaped packet every 33 ms on each simulcast layer, a
/// keyframe every 30th. Payloads carry [`MAGIC`] and the send time at 4..16; video
/// payloads start with a VP8 descriptor and carry their layer at byte 2. With `rates`, each
/// layer's frame is as many bytes as its bitrate needs, in packets of at most 1,000 bytes.
/// With `real`, the payloads are real Opus and VP8 instead (see [`crate::real_media`]).
fn publish(
    mic: Option<(Arc<TrackLocalStaticRTP>, u8)>,
    camera: Option<(
        Arc<TrackLocalStaticRTP>,
        Arc<dyn webrtc::rtp_transceiver::RtpTransceiver>,
    )>,
    rates: Option<[u64; 3]>,
    real: Option<(
        Arc<crate::real_media::RealMedia>,
        Option<crate::real_media::Speaking>,
    )>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mic_ssrc = match &mic {
            Some((t, _)) => t.track().await.ssrcs().next().unwrap_or(0),
            None => 0,
        };
        // Each layer's SSRC, and the ids of the mid and rid extensions the layers carry.
        let mut layers: Vec<u32> = Vec::new();
        let mut mid_ext: Option<(u8, Bytes)> = None;
        let mut rid_ext: Option<u8> = None;
        if let Some((track, transceiver)) = &camera {
            layers = track.track().await.ssrcs().collect();
            let mid = transceiver.mid().await.ok().flatten().unwrap_or_default();
            if let Ok(Some(sender)) = transceiver.sender().await
                && let Ok(params) = sender.get_parameters().await
            {
                for ext in &params.rtp_parameters.header_extensions {
                    match ext.uri.as_str() {
                        "urn:ietf:params:rtp-hdrext:sdes:mid" => {
                            mid_ext = Some((ext.id as u8, Bytes::from(mid.clone().into_bytes())));
                        }
                        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" => {
                            rid_ext = Some(ext.id as u8);
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let (mut audio_seq, mut frame) = (0u16, 0u32);
        let mut video_seqs = [0u16; 3];
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            if let Some((track, level)) = &mic
                && n.is_multiple_of(2)
            {
                audio_seq = audio_seq.wrapping_add(1);
                // Variable-bitrate Opus, as browsers send it: 60-100 bytes, about 80.
                let len = opus_frame_len(mic_ssrc, audio_seq);
                let mut packet =
                    synthetic(111, audio_seq, u32::from(audio_seq) * 960, &[0; 4], len);
                packet.header.ssrc = mic_ssrc;
                let mut level = *level;
                if let Some((media, speaking)) = &real {
                    let on = speaking.as_ref().is_none_or(|s| s.now());
                    packet.payload = if on {
                        media.tone[usize::from(audio_seq) % media.tone.len()].clone()
                    } else {
                        Bytes::from_static(&crate::real_media::SILENCE)
                    };
                    if !on {
                        level = 127;
                    }
                }
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
            if let Some((track, _)) = &camera
                && n.is_multiple_of(3)
            {
                frame = frame.wrapping_add(1);
                let key = frame % 30 == 1;
                if let Some((media, _)) = &real {
                    let (vp8, _) = &media.video[frame as usize % media.video.len()];
                    for (layer, ssrc) in layers.iter().enumerate().take(3) {
                        let parts: Vec<&[u8]> = vp8.chunks(1000).collect();
                        for (part, chunk) in parts.iter().enumerate() {
                            let seq = &mut video_seqs[layer];
                            *seq = seq.wrapping_add(1);
                            let mut payload = Vec::with_capacity(chunk.len() + 1);
                            // VP8 descriptor: S=1 on the frame's first packet, partition 0.
                            payload.push(if part == 0 { 0x10 } else { 0x00 });
                            payload.extend_from_slice(chunk);
                            let mut packet = rtc::rtp::Packet {
                                header: rtc::rtp::header::Header {
                                    version: 2,
                                    payload_type: 96,
                                    sequence_number: *seq,
                                    timestamp: frame * 3000,
                                    marker: part + 1 == parts.len(),
                                    ssrc: *ssrc,
                                    ..Default::default()
                                },
                                payload: Bytes::from(payload),
                            };
                            if let Some((id, mid)) = &mid_ext {
                                let _ = packet.header.set_extension(*id, mid.clone());
                            }
                            if let Some(id) = rid_ext {
                                let rid = SIMULCAST_RIDS[layer];
                                let _ = packet
                                    .header
                                    .set_extension(id, Bytes::from_static(rid.as_bytes()));
                            }
                            if track.write_rtp(packet).await.is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
                for (layer, ssrc) in layers.iter().enumerate().take(3) {
                    let frame_bytes = match rates {
                        // A layer at 0 bit/s is not sent (a camera of fewer layers).
                        Some(rates) if rates[layer] == 0 => continue,
                        Some(rates) => (rates[layer] / 8 / 30).max(16) as usize,
                        None => 300 * (layer + 1),
                    };
                    let packets = frame_bytes.div_ceil(1000);
                    for part in 0..packets {
                        // VP8 descriptor: the first packet starts partition 0; its payload
                        // header has P=0 on keyframes.
                        let start = if part == 0 { 0x10 } else { 0x00 };
                        let head = [start, u8::from(!key), layer as u8, 0];
                        video_seqs[layer] = video_seqs[layer].wrapping_add(1);
                        let len = frame_bytes / packets;
                        let mut packet = synthetic(96, video_seqs[layer], frame * 3000, &head, len);
                        packet.header.marker = part + 1 == packets;
                        packet.header.ssrc = *ssrc;
                        if let Some((id, mid)) = &mid_ext {
                            let _ = packet.header.set_extension(*id, mid.clone());
                        }
                        if let Some(id) = rid_ext {
                            let rid = SIMULCAST_RIDS[layer.min(2)];
                            let _ = packet
                                .header
                                .set_extension(id, Bytes::from_static(rid.as_bytes()));
                        }
                        if track.write_rtp(packet).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    })
}

/// An SDP without its candidate lines (they come by trickle, through the proxy).
/// `sdp` without the m-sections whose mid starts with `q` (the SFU's microphone lines),
/// nor their mids in the BUNDLE group.
fn without_mic_lines(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let mic = section.iter().any(|l| l.starts_with("a=mid:q"));
        for line in section.drain(..) {
            if !mic {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    };
    for line in sdp.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
            section.push(line);
        } else if !section.is_empty() {
            section.push(line);
        } else if let Some(mids) = line.strip_prefix("a=group:BUNDLE") {
            let kept: Vec<&str> = mids
                .split_whitespace()
                .filter(|m| !m.starts_with('q'))
                .collect();
            out.push_str(&format!("a=group:BUNDLE {}\r\n", kept.join(" ")));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    flush(&mut section, &mut out);
    out
}

fn strip_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| !l.starts_with("a=candidate:"))
        .collect()
}

/// The ICE username fragment of an SDP (the first; bundled m-lines share it).
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

fn lock(s: &Mutex<RoomBotState>) -> MutexGuard<'_, RoomBotState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Microseconds since the Unix epoch (what bots stamp in their payloads).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A variable-bitrate Opus frame's size (60-100 bytes, 80 on average), different for each
/// packet and speaker, so that a receiver's packets differ in size as they do from browsers.
pub fn opus_frame_len(ssrc: u32, seq: u16) -> usize {
    let mix = ssrc.wrapping_mul(0x9e37_79b9) ^ u32::from(seq).wrapping_mul(0x85eb_ca6b);
    60 + (mix.rotate_right(13) % 41) as usize
}

/// A packet whose payload is `head` (4 bytes), [`MAGIC`], the send time, then padding.
pub fn synthetic(
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    head: &[u8; 4],
    len: usize,
) -> rtc::rtp::Packet {
    let mut payload = vec![0u8; len.max(16)];
    payload[..4].copy_from_slice(head);
    payload[4..8].copy_from_slice(MAGIC);
    payload[8..16].copy_from_slice(&now_us().to_be_bytes());
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type,
            sequence_number: seq,
            timestamp,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

/// The stream each SSRC of `sdp` carries (`a=ssrc:<ssrc> msid:<stream> <track>`).
fn ssrc_streams(sdp: &str) -> Vec<(u32, String)> {
    sdp.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("a=ssrc:")?;
            let (ssrc, attr) = rest.split_once(' ')?;
            let stream = attr.strip_prefix("msid:")?.split_whitespace().next()?;
            Some((ssrc.parse().ok()?, stream.to_owned()))
        })
        .collect()
}

/// Counts what arrives on a forwarded track, by the stream its SSRC carries now.
fn count(track: Arc<dyn TrackRemote>, state: Arc<Mutex<RoomBotState>>) {
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .tracks
        .0
        .push(track.clone());
    tokio::spawn(async move {
        let first_stream = track.stream_id().await;
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                let stream = {
                    let s = state.lock().unwrap_or_else(|e| e.into_inner());
                    s.ssrc_streams
                        .get(&packet.header.ssrc)
                        .cloned()
                        .unwrap_or_else(|| first_stream.clone())
                };
                let p = &packet.payload;
                let ours = p.len() >= 16 && &p[4..8] == MAGIC;
                let delay = ours.then(|| {
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&p[8..16]);
                    now_us().saturating_sub(u64::from_be_bytes(sent))
                });
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                s.first_packet_at.get_or_insert_with(Instant::now);
                *s.received.entry(stream.clone()).or_default() += 1;
                if ours && stream.ends_with(":camera") {
                    let layer = usize::from(p[2].min(2));
                    s.layers.entry(stream.clone()).or_default()[layer] += 1;
                }
                let seq = packet.header.sequence_number;
                s.seqs.entry(stream.clone()).or_default().insert(seq);
                if let Some(last) = s.last_seq.insert(stream.clone(), seq)
                    && seq != last.wrapping_add(1)
                {
                    *s.seq_jumps.entry(stream.clone()).or_default() += 1;
                }
                if let Some(d) = delay
                    && s.delays_us.len() < 100_000
                {
                    s.delays_us.push(d);
                }
            }
        }
    });
}

async fn run(
    bot: Bot,
    options: RoomBotOptions,
    state: Arc<Mutex<RoomBotState>>,
    pc: PcSlot,
    commands: mpsc::UnboundedReceiver<Command>,
) {
    if let Err(e) = drive(bot, options, state.clone(), pc, commands).await {
        state.lock().unwrap_or_else(|e| e.into_inner()).failed = Some(format!("{e:#}"));
    }
}

async fn drive(
    mut bot: Bot,
    options: RoomBotOptions,
    state: Arc<Mutex<RoomBotState>>,
    pc_slot: PcSlot,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Result<()> {
    let mut media: Option<Media> = None;
    // Lossy proxies, by the server address each stands in for.
    let mut proxies: HashMap<SocketAddr, crate::lossy_udp::Proxy> = HashMap::new();
    let mut walking: Option<(u8, u32)> = None;
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let flags = MediaFlags {
        mic: options.mic_level.is_some(),
        camera: options.camera,
        screen: false,
    };
    bot.send(&ClientMsg::Media(flags)).await?;
    loop {
        // Signaling first, then peer connection events, then the bot's own pace.
        bot.pump(Duration::from_millis(5)).await?;
        if let Some(closed) = bot.closed.clone() {
            // As the browser does: media goes, and the bot waits to be told to come back.
            if let Some(m) = media.take() {
                m.close().await;
            }
            {
                let mut s = lock(&state);
                s.closed = Some(closed.clone());
                s.restarting = bot.restarting;
                s.connection = None;
            }
            match commands.recv().await {
                Some(Command::Reconnect(addr, room)) => {
                    reconnect(&mut bot, &state, addr, room, flags).await?;
                    continue;
                }
                _ => bail!("the server closed the connection: {closed:?}"),
            }
        }
        {
            let mut s = lock(&state);
            s.me = Some(bot.id);
            s.restarting = bot.restarting;
            s.errors.append(&mut bot.errors);
            s.class = bot.class.clone();
            s.recordings.append(&mut bot.recordings);
            if bot.class_report.is_some() {
                s.class_report = bot.class_report.take();
            }
            if bot.records.is_some() {
                s.records = bot.records.take();
            }
            for event in bot.peer_events.drain(..) {
                s.log.push(match event {
                    crate::PeerEvent::Connect(peer, _) => MediaEvent::ConnectPeer(peer),
                    crate::PeerEvent::Disconnect(peer) => MediaEvent::DisconnectPeer(peer),
                });
            }
        }
        for msg in std::mem::take(&mut bot.room_msgs) {
            match msg {
                ServerMsg::JoinRoomMedia { room, .. } => {
                    if let Some(old) = media.take() {
                        old.close().await;
                    }
                    {
                        let mut s = lock(&state);
                        s.room = Some(room);
                        s.log.push(MediaEvent::JoinRoom(room));
                        s.joins += 1;
                        s.connection = None;
                        // As the browser client does: a room starts afresh, and the server
                        // says who is in it.
                        s.members.clear();
                        s.speakers.clear();
                    }
                    let m = open_media(&mut bot, &options).await?;
                    *pc_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.pc.clone());
                    media = Some(m);
                }
                ServerMsg::LeaveRoomMedia { room } => {
                    if let Some(old) = media.take() {
                        old.close().await;
                    }
                    let mut s = lock(&state);
                    s.log.push(MediaEvent::LeaveRoom(room));
                    s.room = None;
                    s.members.clear();
                    s.connection = None;
                }
                ServerMsg::RoomMembers { members, .. } => lock(&state).members = members,
                ServerMsg::RoomSpeakers { speakers, .. } => lock(&state).speakers = speakers,
                ServerMsg::RoomSignal(signal) => {
                    let Some(m) = &media else { continue };
                    match signal {
                        Signal::Description {
                            kind: SdpKind::Answer,
                            sdp,
                        } => {
                            {
                                let mut s = lock(&state);
                                s.server_ufrag = ice_ufrag(&sdp);
                                s.server_candidates.extend(
                                    sdp.lines()
                                        .filter_map(|l| l.trim_end().strip_prefix("a="))
                                        .filter(|l| l.starts_with("candidate:"))
                                        .map(str::to_owned),
                                );
                            }
                            let sdp = if options.proxied() {
                                strip_candidates(&sdp)
                            } else {
                                sdp
                            };
                            m.pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                                .await
                                .context("the SFU's answer")?;
                        }
                        Signal::Description {
                            kind: SdpKind::Offer,
                            sdp,
                        } => {
                            if std::env::var_os("QUAD_DEBUG_SDP").is_some() {
                                eprintln!("server offer to {}:\n{sdp}", bot.id);
                            }
                            {
                                let mut s = lock(&state);
                                s.ssrc_streams.extend(ssrc_streams(&sdp));
                                s.m_lines = sdp.lines().filter(|l| l.starts_with("m=")).count();
                                let ufrag = ice_ufrag(&sdp);
                                if s.server_ufrag.is_some() && ufrag != s.server_ufrag {
                                    s.ice_restarts += 1;
                                }
                                s.server_ufrag = ufrag;
                            }
                            let sdp = if options.proxied() {
                                strip_candidates(&sdp)
                            } else {
                                sdp
                            };
                            m.pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
                                .await
                                .context("the SFU's offer")?;
                            let answer = m.pc.create_answer(None).await?;
                            m.pc.set_local_description(answer.clone()).await?;
                            let offers = {
                                let mut s = lock(&state);
                                s.server_offers += 1;
                                s.server_offers
                            };
                            if offers > options.lose_answers {
                                let sdp = if offers <= options.mangle_answers {
                                    without_mic_lines(&answer.sdp)
                                } else {
                                    answer.sdp
                                };
                                bot.send(&ClientMsg::RoomSignal(Signal::Description {
                                    kind: SdpKind::Answer,
                                    sdp,
                                }))
                                .await?;
                            }
                        }
                        Signal::Description { kind, .. } => {
                            bail!("unexpected {kind:?} from the SFU")
                        }
                        Signal::Renew { .. } => bail!("unexpected Renew from the SFU"),
                        Signal::Candidate {
                            candidate,
                            sdp_mid,
                            sdp_m_line_index,
                        } => {
                            lock(&state).server_candidates.push(candidate.clone());
                            let candidate = if options.proxied() {
                                crate::lossy_udp::through_proxy(
                                    &candidate,
                                    &mut proxies,
                                    options.shaper.as_ref(),
                                )
                                .await?
                            } else {
                                candidate
                            };
                            if !candidate.is_empty() {
                                m.pc.add_ice_candidate(RTCIceCandidateInit {
                                    candidate,
                                    sdp_mid,
                                    sdp_mline_index: sdp_m_line_index,
                                    ..Default::default()
                                })
                                .await
                                .context("the SFU's candidate")?;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(m) = &mut media {
            while let Ok(event) = m.events.try_recv() {
                match event {
                    PcEvent::Candidate(init) => {
                        bot.send(&ClientMsg::RoomSignal(Signal::Candidate {
                            candidate: init.candidate,
                            sdp_mid: init.sdp_mid,
                            sdp_m_line_index: init.sdp_mline_index,
                        }))
                        .await?;
                    }
                    PcEvent::State(s) => {
                        if s == RTCPeerConnectionState::Connected {
                            // The room plays: hallway links kept while walking in may go.
                            bot.send(&ClientMsg::MediaReady { room: true }).await?;
                        }
                        let mut st = lock(&state);
                        st.connection = Some(s);
                        if s == RTCPeerConnectionState::Connected {
                            st.connected_at.get_or_insert_with(Instant::now);
                            if m.publisher.is_none() {
                                let mic = m.mic.clone().zip(options.mic_level);
                                let real = options
                                    .real
                                    .clone()
                                    .map(|media| (media, options.speaking.clone()));
                                m.publisher = Some(publish(
                                    mic,
                                    m.camera.clone(),
                                    options.camera_rates,
                                    real,
                                ));
                            }
                        }
                    }
                    PcEvent::Track(track) => count(track, state.clone()),
                }
            }
        }
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Walk(dir, steps) => walking = Some((dir, steps)),
                Command::Tiles(tiles) => bot.send(&ClientMsg::RoomTiles(tiles)).await?,
                Command::Send(msg) => bot.send(&msg).await?,
                Command::DropMedia => {
                    if let Some(m) = media.take() {
                        m.close().await;
                    }
                }
                Command::CutProxies => {
                    for (_, proxy) in proxies.drain() {
                        proxy.cut();
                    }
                }
                Command::Reconnect(addr, room) => {
                    if let Some(m) = media.take() {
                        m.close().await;
                    }
                    reconnect(&mut bot, &state, addr, room, flags).await?;
                }
                Command::Leave => {
                    if let Some(m) = media.take() {
                        m.close().await;
                    }
                    bot.close().await;
                    return Ok(());
                }
            }
        }
        if let Some((dir, left)) = walking.as_mut() {
            if pace_ready(&mut pace) {
                let steps = (*left).min(3);
                bot.input(*dir, steps as u8).await?;
                *left -= steps;
            }
            if *left == 0 {
                walking = None;
            }
        }
    }
}

/// Connects `bot` again (its old connection dropped without a close frame) and says what
/// it publishes; the room media follows when the server sends `JoinRoomMedia`.
async fn reconnect(
    bot: &mut Bot,
    state: &Mutex<RoomBotState>,
    addr: SocketAddr,
    room: Option<String>,
    flags: MediaFlags,
) -> Result<()> {
    {
        let mut s = lock(state);
        s.room = None;
        s.members.clear();
        s.speakers.clear();
        s.connection = None;
    }
    if bot.closed.is_none() {
        bot.cut().await;
    }
    // A server that is restarting may not answer yet: try again, as the browser does.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match bot.reconnect(addr, room.clone()).await {
            Ok(old) => {
                drop(old);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("reconnecting: {e:#}");
                tokio::time::sleep(Duration::from_millis(100 + rand::random_range(0..100))).await;
            }
            Err(e) => return Err(e.context("reconnecting")),
        }
    }
    bot.send(&ClientMsg::Media(flags)).await?;
    let mut s = lock(state);
    s.me = Some(bot.id);
    s.closed = None;
    s.restarting = None;
    s.reconnects += 1;
    s.resumed = bot.welcome.as_ref().is_some_and(|w| w.resumed);
    Ok(())
}

/// Whether the walking pace's next 50 ms tick has come (without waiting for it).
fn pace_ready(pace: &mut tokio::time::Interval) -> bool {
    use std::future::Future;
    use std::task::{Context as TaskContext, Poll};
    let waker = std::task::Waker::noop();
    let mut cx = TaskContext::from_waker(waker);
    let tick = pace.tick();
    tokio::pin!(tick);
    matches!(tick.as_mut().poll(&mut cx), Poll::Ready(_))
}

/// A walkable point inside the `index`-th classroom zone of `map`, near its centre.
pub fn room_spot(map: &quad_shared::map::Map, index: usize) -> Result<[f32; 2]> {
    let room = map
        .zones
        .iter()
        .filter(|z| z.kind == quad_shared::map::ZoneKind::Classroom)
        .nth(index)
        .ok_or_else(|| anyhow!("the map has no classroom number {index}"))?;
    let r = room.rect;
    // A walkable point near the room's centre (furniture may block the exact centre).
    for dy in 0..8 {
        for dx in 0..8 {
            for (sx, sy) in [(1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)] {
                let p = glam::Vec2::new(
                    r.x + r.w / 2.0 + sx * dx as f32 * 16.0,
                    r.y + r.h / 2.0 + sy * dy as f32 * 16.0,
                );
                if r.contains(p) && map.collision.walkable(p) {
                    return Ok(p.to_array());
                }
            }
        }
    }
    bail!("no walkable point found in classroom {}", room.name)
}

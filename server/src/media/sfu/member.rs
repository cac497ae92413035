//! One room member's connection: a task owns the member's peer connection and does the
//! I/O of its negotiation, whose rules are a plain state machine ([`super::negotiation`]):
//! the client offers once (microphone, camera and screen m-lines, in that order); after
//! that only the server offers, one negotiation at a time, whenever forwarded tracks are
//! added or removed, or to restart ICE when the connection is interrupted. Bad signaling
//! is answered with an `Error` and the connection goes on.
//!
//! Forwarded cameras and screens are webrtc-rs transceivers ([`Slot`]); forwarded
//! microphones are m-lines Quad writes into the offers itself ([`super::mic_lines`]),
//! sent on the connection's direct path.
//!
//! What a client may send here is bounded: its offers and queued commands at the front
//! door ([`super::limits`]), and the ICE candidates it gives one ICE session
//! ([`super::negotiation::MAX_CANDIDATES`]).

use super::forward::{self, ForwardCtl, Numbering, Out, StreamSource, StreamStats, Subscriber};
use super::limits::Queued;
use super::media_port::{MediaPort, PortLink};
use super::mic_lines::{LineId, MicLines};
use super::negotiation::{self, CandidateStep, Negotiation, Refusal, Timeout};
use super::room::{Published, RoomCmd, RoomHandle};
use super::{SfuConfig, SfuMetrics, Source, engine};
use crate::session::SessionOutbox;
use bytes::Bytes;
use quad_shared::AvatarId;
use quad_shared::protocol::{ErrorCode, ErrorMsg, SdpKind, ServerMsg, Signal};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

/// How long an unsubscribe waits for the stream's forwarder to stop writing to the track.
const FORWARDER_STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a track stays on the connection after its forwarder stopped, for the packets
/// already queued for the connection's driver to be sent (well under a millisecond unless
/// the server is very busy).
const DRIVER_QUEUE_GRACE: std::time::Duration = std::time::Duration::from_millis(20);

/// What the room tells a member's task. What its client sent holds a [`Queued`] place in
/// its allowance until handled here.
pub enum MemberCmd {
    Signal(Signal, Queued),
    /// Forward this stream to the member.
    Subscribe(Published),
    /// Stop forwarding this stream to the member.
    Unsubscribe(AvatarId, Source),
    /// The width, in device pixels, at which the client shows each member's camera (`None`:
    /// as the room remembered it for a new connection).
    Tiles(Vec<(AvatarId, u16)>, Option<Queued>),
    Close,
}

/// What the peer connection's callbacks report (they run on its driver task and must not
/// wait, so they only send).
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

/// Everything a member task starts with.
pub struct MemberSetup {
    pub id: AvatarId,
    pub room: RoomHandle,
    pub config: Arc<SfuConfig>,
    pub metrics: Arc<SfuMetrics>,
    /// The media port its connection's datagrams go through.
    pub port: Arc<MediaPort>,
    pub outbox: SessionOutbox,
    /// Where its connection's congestion controller puts the bandwidth estimate.
    pub downlink: Arc<super::estimator::DownlinkEstimate>,
}

/// Starts a member's task; it builds the connection and answers `offer` (whose place in
/// the client's allowance is freed once answered).
pub fn spawn(
    setup: MemberSetup,
    offer: String,
    queued: Queued,
) -> mpsc::UnboundedSender<MemberCmd> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(setup, offer, queued, rx));
    tx
}

/// The m-line a forwarded stream is sent on.
enum Carrier {
    /// A webrtc-rs transceiver (video).
    Slot(Slot),
    /// One of Quad's own m-lines (microphones).
    Line(LineId),
}

/// One forwarded stream on this member's connection.
struct Subscription {
    published: Published,
    /// The m-line it is sent on.
    carrier: Carrier,
    /// In an offer the server sent.
    offered: bool,
    /// Handed to the forwarder (after the negotiation that carries it completed).
    live: bool,
}

struct Member {
    setup: MemberSetup,
    pc: Arc<dyn PeerConnection>,
    /// The connection's direct send path, which forwarded microphones take.
    direct: Arc<super::direct::Direct>,
    /// The connection's place on the media port (its routes are forgotten when the task
    /// ends).
    link: Arc<PortLink>,
    subscriptions: FxHashMap<(AvatarId, Source), Subscription>,
    /// Send-only m-lines no stream uses now, for the next ones (see [`Slot`]).
    idle: Vec<Slot>,
    /// The forwarded microphones' m-lines, and where every m-line is in the offers.
    mics: MicLines,
    /// Who may offer when, and what is due. A browser answers in milliseconds; an answer
    /// can still be lost (dropped as over its allowance, or by a client's bug): after the
    /// member timeout (`room_member_timeout_secs`) without one, the offer is sent again.
    negotiation: Negotiation<RTCIceCandidateInit>,
    /// The connection is up (DTLS done): forwarding before that only fails.
    connected: bool,
    /// The simulcast layer that fits each publisher's tile on this member's screen.
    tile_layers: FxHashMap<AvatarId, u8>,
}

async fn run(
    setup: MemberSetup,
    offer: String,
    queued: Queued,
    mut cmds: mpsc::UnboundedReceiver<MemberCmd>,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let handler = Arc::new(Events(events_tx));
    let link = setup.port.open();
    let (pc, direct) =
        match engine::peer_connection(&setup.config, link.clone(), handler, setup.downlink.clone())
            .await
        {
            Ok(made) => made,
            Err(e) => {
                tracing::error!(member = %setup.id, "cannot create a peer connection: {e:#}");
                send(
                    &setup.outbox,
                    &ServerMsg::Error(ErrorMsg::new(
                        ErrorCode::Unavailable,
                        "the server cannot open a media connection now",
                    )),
                );
                setup.room.send(RoomCmd::Gone { member: setup.id });
                return;
            }
        };
    let negotiation = Negotiation::new(setup.config.member_timeout);
    let mut member = Member {
        setup,
        pc,
        direct,
        link,
        subscriptions: FxHashMap::default(),
        negotiation,
        connected: false,
        tile_layers: FxHashMap::default(),
        idle: Vec::new(),
        mics: MicLines::default(),
    };
    member.remote_offer(offer).await;
    drop(queued);
    let timeout = member.setup.config.member_timeout;
    // Armed while the connection is not connected: new, disconnected or failed.
    let mut deadline = Some(tokio::time::Instant::now() + timeout);
    loop {
        let expired = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None | Some(MemberCmd::Close) => break,
                Some(cmd) => member.command(cmd).await,
            },
            event = events.recv() => match event {
                None => break,
                Some(PcEvent::Candidate(init)) => send(
                    &member.setup.outbox,
                    &ServerMsg::RoomSignal(Signal::Candidate {
                        candidate: member.link.advertised_candidate(&init.candidate),
                        sdp_mid: init.sdp_mid,
                        sdp_m_line_index: init.sdp_mline_index,
                    }),
                ),
                Some(PcEvent::State(state)) => {
                    tracing::debug!(member = %member.setup.id, %state, "room connection");
                    match state {
                        RTCPeerConnectionState::Connected => {
                            deadline = None;
                            member.connected = true;
                            member.go_live().await;
                        }
                        // The client closed it or it failed: no reason to wait.
                        RTCPeerConnectionState::Closed | RTCPeerConnectionState::Failed => {
                            deadline = Some(tokio::time::Instant::now());
                        }
                        _ => {
                            if deadline.is_none() {
                                deadline = Some(tokio::time::Instant::now() + timeout);
                                if member.connected
                                    && state == RTCPeerConnectionState::Disconnected
                                {
                                    tracing::info!(
                                        member = %member.setup.id,
                                        "room connection interrupted; restarting ICE (removed unless back within {timeout:?})"
                                    );
                                    member.restart_ice().await;
                                }
                            }
                        }
                    }
                }
                Some(PcEvent::Track(track)) => member.published(track).await,
            },
            () = async {
                match member.negotiation.poll_timeout() {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                match member.negotiation.handle_timeout(std::time::Instant::now()) {
                    Timeout::Nothing => {}
                    Timeout::Negotiate => member.negotiate().await,
                    Timeout::Resend(frame) => {
                        tracing::warn!(
                            member = %member.setup.id,
                            "no answer to the room offer within {timeout:?}; sending it again ({} of {})",
                            member.negotiation.resent(),
                            negotiation::RESENDS,
                        );
                        let _ = member.setup.outbox.push(frame);
                    }
                    Timeout::GiveUp => {
                        // The room asks its client to connect its media again.
                        tracing::warn!(member = %member.setup.id, "the room offer was never answered; starting its media again");
                        member.setup.room.send(RoomCmd::Gone { member: member.setup.id });
                        break;
                    }
                }
            }
            () = expired => {
                tracing::info!(member = %member.setup.id, "room connection lost; removing its media");
                member.setup.room.send(RoomCmd::Gone { member: member.setup.id });
                break;
            }
        }
    }
    for sub in member.subscriptions.values() {
        if let Carrier::Slot(slot) = &sub.carrier {
            slot.point_feedback(None);
        }
        let _ = sub.published.ctl.send(ForwardCtl::Remove {
            member: member.setup.id,
            done: None,
        });
    }
    if let Err(e) = member.pc.close().await {
        tracing::debug!(member = %member.setup.id, "closing the room connection: {e}");
    }
    member
        .setup
        .metrics
        .idle_slots
        .fetch_sub(member.idle.len() as u64, Ordering::Relaxed);
    member.count_lines((member.mics.count(), member.mics.idle()), (0, 0));
    member.link.close();
}

/// The one encoding of a forwarded stream on a viewer's leg: `ssrc`, the publisher's codec.
fn send_encodings(ssrc: u32, published: &Published) -> Vec<RTCRtpEncodingParameters> {
    vec![RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(ssrc),
            ..Default::default()
        },
        codec: published.codec.clone(),
        ..Default::default()
    }]
}

/// Where a slot's feedback goes: the forwarder of the stream it carries now, if any.
type FeedbackTarget = Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<ForwardCtl>>>>;

/// A send-only m-line of this connection that webrtc-rs owns (a forwarded camera or screen;
/// microphones have Quad's own, `mic_lines`), with its sender, bound track and SSRC. When
/// its stream ends it is kept (inactive) for the next stream of its kind and codec: a room
/// where people come and go would otherwise add an m-line per stream ever forwarded, each
/// with its SSRC, its state in the WebRTC stack and its share of every offer, for as long
/// as the connection lasts (the soak's memory grew by about 230 kB per newcomer).
struct Slot {
    transceiver: Arc<dyn RtpTransceiver>,
    sender: Arc<dyn RtpSender>,
    track: Arc<TrackLocalStaticRTP>,
    /// The track id of its m-line's `msid` (kept when the stream id changes).
    track_id: String,
    ssrc: u32,
    kind: RtpCodecKind,
    /// The codec it was made for; it is reused only for a stream with the same.
    mime_type: String,
    feedback: FeedbackTarget,
    /// Its feedback relay runs (started when it first goes live; ends with the track).
    relaying: bool,
    /// The last sequence number and timestamp sent on it (numbering goes on from there).
    numbering: Arc<Numbering>,
    /// Counts it (`quad_sfu_forward_slots`) while it lives.
    metrics: Arc<SfuMetrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.forward_slots.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slot {
    fn point_feedback(&self, to: Option<mpsc::UnboundedSender<ForwardCtl>>) {
        *self.feedback.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

/// Idle slots a connection keeps; past this many, a slot whose stream ended is removed
/// from the connection instead (its m-line then stays, inactive, as before).
const MAX_IDLE_SLOTS: usize = 64;

/// Tile sizes a connection remembers before it forgets those of cameras it does not get
/// (one message names at most [`quad_shared::protocol::MAX_ROOM_TILES`]).
const MAX_TILE_LAYERS: usize = quad_shared::protocol::MAX_ROOM_TILES;

/// Notes that `publisher`'s tile wants `layer`; whether that changed anything. Past
/// [`MAX_TILE_LAYERS`] it forgets the tiles of people this member gets no stream from
/// (`senders`): a tile outlives a camera turned off (the client reports sizes only when they
/// change), and a client naming ids at random grows nothing.
fn remember_tile(
    tiles: &mut FxHashMap<AvatarId, u8>,
    publisher: AvatarId,
    layer: u8,
    senders: impl FnOnce() -> FxHashSet<AvatarId>,
) -> bool {
    if tiles.insert(publisher, layer) == Some(layer) {
        return false;
    }
    if tiles.len() > MAX_TILE_LAYERS {
        let senders = senders();
        tiles.retain(|p, _| *p == publisher || senders.contains(p));
    }
    true
}

/// Passes the viewer's feedback on a forwarded track to the forwarder its slot points at:
/// keyframe requests (rate-limited there on the way to the publisher) and the loss its
/// receiver reports (which picks its simulcast layer). Ends when the track is unbound.
fn relay_feedback(member: AvatarId, slot: &Slot) {
    let (track, ssrc, target) = (slot.track.clone(), slot.ssrc, slot.feedback.clone());
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                continue;
            };
            let Some(ctl) = target.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
                continue;
            };
            for packet in &packets {
                if engine::is_keyframe_request(packet.as_ref()) {
                    let _ = ctl.send(ForwardCtl::KeyframeRequest);
                } else if let Some(rr) = packet.as_any().downcast_ref::<ReceiverReport>()
                    && let Some(report) = rr.reports.iter().find(|r| r.ssrc == ssrc)
                {
                    let _ = ctl.send(ForwardCtl::Loss(member, report.fraction_lost));
                }
            }
        }
    });
}

/// Queues a frame for the member's client; a full or closed outbox is the session's
/// business (it is closed for being slow), not the SFU's.
fn send(outbox: &SessionOutbox, msg: &ServerMsg) {
    match quad_shared::codec::encode(msg) {
        Ok(frame) => {
            let _ = outbox.push(Bytes::from(frame));
        }
        Err(e) => tracing::error!("cannot encode an SFU message: {e}"),
    }
}

impl Member {
    fn refuse_signal(&self, refusal: Refusal) {
        let code = match refusal {
            Refusal::OfferDuringOffer | Refusal::AnswerWithoutOffer => ErrorCode::WrongState,
            Refusal::TooManyCandidates => ErrorCode::RateLimited,
        };
        self.refuse(code, refusal.message());
    }

    fn refuse(&self, code: ErrorCode, message: String) {
        tracing::debug!(member = %self.setup.id, "room signaling refused: {message}");
        send(
            &self.setup.outbox,
            &ServerMsg::Error(ErrorMsg::new(code, message)),
        );
    }

    /// Handles one command; a [`Queued`] place it holds is freed when this returns.
    async fn command(&mut self, cmd: MemberCmd) {
        match cmd {
            MemberCmd::Signal(Signal::Description { kind, sdp }, _handled_here) => match kind {
                SdpKind::Offer => self.remote_offer(sdp).await,
                SdpKind::Answer => self.remote_answer(sdp).await,
                SdpKind::Pranswer | SdpKind::Rollback => self.refuse(
                    ErrorCode::WrongState,
                    format!("the SFU does not take a {kind:?} description"),
                ),
            },
            MemberCmd::Signal(
                Signal::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_m_line_index,
                },
                _handled_here,
            ) => {
                if candidate.is_empty() {
                    return;
                }
                let init = RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index: sdp_m_line_index,
                    ..Default::default()
                };
                match self.negotiation.candidate(init) {
                    CandidateStep::Apply(init) => self.add_candidate(init).await,
                    CandidateStep::Held => {}
                    CandidateStep::Refused(refusal) => self.refuse_signal(refusal),
                }
            }
            // Refused before it is queued (`Sfu::signal`): a room connection is not renewed.
            MemberCmd::Signal(Signal::Renew { .. }, _handled_here) => {}
            MemberCmd::Subscribe(published) => self.subscribe(published).await,
            MemberCmd::Unsubscribe(publisher, kind) => self.unsubscribe(publisher, kind).await,
            MemberCmd::Tiles(tiles, _handled_here) => {
                for (publisher, width) in tiles {
                    let layer = forward::layer_for_width(width);
                    let subscriptions = &self.subscriptions;
                    let senders = || subscriptions.keys().map(|(p, _)| *p).collect();
                    if !remember_tile(&mut self.tile_layers, publisher, layer, senders) {
                        continue;
                    }
                    if let Some(sub) = self.subscriptions.get(&(publisher, Source::Camera))
                        && sub.live
                    {
                        let _ = sub
                            .published
                            .ctl
                            .send(ForwardCtl::Want(self.setup.id, layer));
                    }
                }
            }
            MemberCmd::Close => {}
        }
    }

    async fn add_candidate(&mut self, init: RTCIceCandidateInit) {
        if let Err(e) = self.pc.add_ice_candidate(init).await {
            self.refuse(ErrorCode::Malformed, format!("bad ICE candidate: {e}"));
        }
    }

    /// The client's offer: answer it, then offer whatever forwarded tracks are waiting.
    async fn remote_offer(&mut self, sdp: String) {
        if let Err(refusal) = self.negotiation.client_offer() {
            self.refuse_signal(refusal);
            return;
        }
        let answer = async {
            let offer = RTCSessionDescription::offer(sdp)?;
            self.pc.set_remote_description(offer).await?;
            let answer = self.pc.create_answer(None).await?;
            self.pc.set_local_description(answer.clone()).await?;
            self.link.set_local_description(&answer.sdp);
            Ok::<_, webrtc::error::Error>(answer)
        }
        .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                self.refuse(
                    ErrorCode::Malformed,
                    format!("the room offer was refused: {e}"),
                );
                return;
            }
        };
        send(
            &self.setup.outbox,
            &ServerMsg::RoomSignal(Signal::Description {
                kind: SdpKind::Answer,
                sdp: self.link.advertised_sdp(&answer.sdp),
            }),
        );
        for init in self.negotiation.client_offer_answered() {
            self.add_candidate(init).await;
        }
        self.negotiate().await;
    }

    /// The client's answer to the server's offer: forwarded tracks in it go live.
    async fn remote_answer(&mut self, sdp: String) {
        if let Err(refusal) = self.negotiation.client_answer() {
            self.refuse_signal(refusal);
            return;
        }
        // webrtc-rs gets the answer without the microphone lines, which it never offered.
        let sdp = match self.mics.answer(&sdp) {
            Ok(sdp) => sdp,
            Err(e) => {
                self.refuse(ErrorCode::Malformed, format!("the answer was refused: {e}"));
                return;
            }
        };
        let applied = async {
            let answer = RTCSessionDescription::answer(sdp)?;
            self.pc.set_remote_description(answer).await
        }
        .await;
        if let Err(e) = applied {
            self.refuse(ErrorCode::Malformed, format!("the answer was refused: {e}"));
            return;
        }
        self.negotiation.answer_applied();
        self.go_live().await;
        self.negotiate().await;
    }

    /// Offers ICE afresh: new credentials, every candidate pair checked again, and the pair
    /// the client nominates then is used.
    ///
    /// An interrupted connection is not always a lost client. webrtc-rs, as the controlled
    /// agent (the client offers first), keeps the first pair a browser nominates and ignores
    /// a later nomination; Chromium nominates whichever pair works first (on loopback at times
    /// its TURN relay, before its host pair) and may move to a better one. When the first
    /// pair then stops answering, the server saw a dead connection while the browser's pair
    /// worked, and the member was removed and had to join again.
    async fn restart_ice(&mut self) {
        self.negotiation.restart_ice();
        self.negotiate().await;
    }

    /// Offers the current forwarded tracks if they changed and no negotiation is running.
    async fn negotiate(&mut self) {
        let Some(due) = self.negotiation.offer_due() else {
            return;
        };
        let options = due
            .ice_restart
            .then_some(RTCOfferOptions { ice_restart: true });
        let offer = match self.pc.create_offer(options).await {
            Ok(offer) => offer,
            Err(e) => {
                tracing::error!(member = %self.setup.id, "cannot make an offer: {e}");
                return;
            }
        };
        let for_client = match self.mics.offer(&offer.sdp) {
            Ok(sdp) => sdp,
            Err(e) => {
                tracing::error!(member = %self.setup.id, "cannot write the microphones into an offer: {e}");
                return;
            }
        };
        let frame = match quad_shared::codec::encode(&ServerMsg::RoomSignal(Signal::Description {
            kind: SdpKind::Offer,
            sdp: self.link.advertised_sdp(&for_client),
        })) {
            Ok(frame) => Bytes::from(frame),
            Err(e) => {
                // Only a room far beyond any map's capacity gets here; the next change
                // tries again.
                tracing::error!(member = %self.setup.id, "cannot send an offer: {e}");
                return;
            }
        };
        // The offer is applied only once it has room in the outbox: an offer lost to a
        // full outbox would leave this member waiting for an answer forever. (Should the
        // outbox fill in between, the push below closes the session, and the member with it.)
        if !self.setup.outbox.has_room(frame.len()) {
            self.negotiation.offer_blocked(std::time::Instant::now());
            return;
        }
        let sdp = offer.sdp.clone();
        if let Err(e) = self.pc.set_local_description(offer).await {
            tracing::error!(member = %self.setup.id, "cannot apply an offer: {e}");
            return;
        }
        self.link.set_local_description(&sdp);
        let _ = self.setup.outbox.push(frame.clone());
        for sub in self.subscriptions.values_mut() {
            sub.offered = true;
        }
        self.negotiation
            .offer_sent(frame, std::time::Instant::now());
    }

    /// Hands negotiated subscriptions to their forwarders, with this leg's payload type,
    /// once the connection is up.
    async fn go_live(&mut self) {
        if !self.negotiation.may_go_live(self.connected) {
            return;
        }
        let id = self.setup.id;
        for sub in self
            .subscriptions
            .values_mut()
            .filter(|s| s.offered && !s.live)
        {
            let wanted = &sub.published.codec.mime_type;
            let (out, ssrc, numbering, payload_type) = match &sub.carrier {
                Carrier::Slot(slot) => {
                    let payload_type = match slot.sender.get_parameters().await {
                        Ok(params) => params
                            .rtp_parameters
                            .codecs
                            .iter()
                            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(wanted))
                            .map(|c| c.payload_type),
                        Err(_) => None,
                    };
                    let out = Out::Track(slot.track.clone());
                    (out, slot.ssrc, slot.numbering.clone(), payload_type)
                }
                Carrier::Line(line) => {
                    let accepted = self.mics.accepted(*line);
                    let Some(l) = self.mics.line(*line) else {
                        continue;
                    };
                    if let Some(accepted) = accepted {
                        self.direct.bind(l.ssrc, accepted.transport_cc);
                    }
                    let out = Out::Direct(self.direct.clone());
                    let payload_type = accepted.map(|a| a.payload_type);
                    (out, l.ssrc, l.numbering.clone(), payload_type)
                }
            };
            let Some(payload_type) = payload_type else {
                tracing::warn!(member = %id, codec = %wanted, "the client did not accept a forwarded track's codec");
                continue;
            };
            sub.live = true;
            if let Carrier::Slot(slot) = &mut sub.carrier {
                slot.point_feedback(Some(sub.published.ctl.clone()));
                if !slot.relaying {
                    slot.relaying = true;
                    relay_feedback(id, slot);
                }
            }
            let _ = sub.published.ctl.send(ForwardCtl::Add(Subscriber {
                member: id,
                out,
                ssrc,
                numbering,
                payload_type,
                want: self
                    .tile_layers
                    .get(&sub.published.publisher)
                    .copied()
                    .unwrap_or(forward::DEFAULT_LAYER),
            }));
        }
    }

    async fn subscribe(&mut self, published: Published) {
        let key = (published.publisher, published.kind);
        if self.subscriptions.contains_key(&key) {
            return;
        }
        let stream = quad_shared::media::StreamLabel {
            avatar: published.publisher,
            source: published.kind,
        }
        .to_string();
        let carrier = if published.kind == Source::Mic {
            let before = (self.mics.count(), self.mics.idle());
            let Some(line) = self.mics.take(stream) else {
                tracing::warn!(member = %self.setup.id, "too many microphone m-lines; one not forwarded");
                return;
            };
            self.count_lines(before, (self.mics.count(), self.mics.idle()));
            Carrier::Line(line)
        } else {
            let kind = RtpCodecKind::Video;
            let slot = match self.reuse_slot(kind, &published, &stream).await {
                Some(slot) => slot,
                None => match self.new_slot(kind, &published, stream).await {
                    Some(slot) => slot,
                    None => return,
                },
            };
            Carrier::Slot(slot)
        };
        self.subscriptions.insert(
            key,
            Subscription {
                published,
                carrier,
                offered: false,
                live: false,
            },
        );
        self.negotiation.tracks_changed();
        self.negotiate().await;
    }

    /// Keeps `quad_sfu_forward_slots` and `quad_sfu_idle_slots` counting the microphone
    /// lines: they went from `before` (lines, idle) to `after`.
    fn count_lines(&self, before: (usize, usize), after: (usize, usize)) {
        let metrics = &self.setup.metrics;
        let adjust = |counter: &std::sync::atomic::AtomicU64, from: usize, to: usize| {
            if to >= from {
                counter.fetch_add((to - from) as u64, Ordering::Relaxed);
            } else {
                counter.fetch_sub((from - to) as u64, Ordering::Relaxed);
            }
        };
        adjust(&metrics.forward_slots, before.0, after.0);
        adjust(&metrics.idle_slots, before.1, after.1);
    }

    /// An idle slot of this kind and codec, made to carry `stream` (its `msid` names the
    /// new stream, so the client's track event tells whose it is); none if there is none.
    async fn reuse_slot(
        &mut self,
        kind: RtpCodecKind,
        published: &Published,
        stream: &str,
    ) -> Option<Slot> {
        let wanted = &published.codec.mime_type;
        let at = self
            .idle
            .iter()
            .position(|s| s.kind == kind && s.mime_type.eq_ignore_ascii_case(wanted))?;
        let slot = self.idle.swap_remove(at);
        self.setup
            .metrics
            .idle_slots
            .fetch_sub(1, Ordering::Relaxed);
        let relabelled = MediaStreamTrack::new(
            stream.to_owned(),
            slot.track_id.clone(),
            stream.to_owned(),
            kind,
            send_encodings(slot.ssrc, published),
        );
        // Sending first: webrtc-rs has no sender to relabel on an inactive m-line.
        let relabelled: Arc<dyn TrackLocal> = Arc::new(TrackLocalStaticRTP::new(relabelled));
        let reused = async {
            slot.transceiver
                .set_direction(RTCRtpTransceiverDirection::Sendonly)
                .await?;
            slot.sender.replace_track(relabelled).await
        }
        .await;
        match reused {
            Ok(()) => Some(slot),
            Err(e) => {
                // Left on the connection, inactive; a new m-line is made instead.
                tracing::warn!(member = %self.setup.id, "cannot reuse an m-line: {e}");
                let _ = slot
                    .transceiver
                    .set_direction(RTCRtpTransceiverDirection::Inactive)
                    .await;
                None
            }
        }
    }

    /// A new send-only m-line for `stream`.
    async fn new_slot(
        &mut self,
        kind: RtpCodecKind,
        published: &Published,
        stream: String,
    ) -> Option<Slot> {
        let ssrc = rand::random::<u32>();
        let encodings = send_encodings(ssrc, published);
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream.clone(),
            stream.clone(),
            stream.clone(),
            kind,
            encodings.clone(),
        )));
        // A new send-only m-line: `add_track` would reuse the client's own (receive-only
        // here) m-lines, which the client only sends on.
        let added = self
            .pc
            .add_transceiver_from_track(
                track.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    // Not taken from the track by this call: given again.
                    send_encodings: encodings,
                }),
            )
            .await;
        let transceiver = match added {
            Ok(transceiver) => transceiver,
            Err(e) => {
                tracing::error!(member = %self.setup.id, "cannot add a forwarded track: {e}");
                return None;
            }
        };
        let sender = transceiver.sender().await.ok().flatten()?;
        self.setup
            .metrics
            .forward_slots
            .fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            transceiver,
            sender,
            track,
            track_id: stream,
            ssrc,
            kind,
            mime_type: published.codec.mime_type.clone(),
            feedback: FeedbackTarget::default(),
            relaying: false,
            numbering: Arc::default(),
            metrics: self.setup.metrics.clone(),
        })
    }

    async fn unsubscribe(&mut self, publisher: AvatarId, kind: Source) {
        let Some(sub) = self.subscriptions.remove(&(publisher, kind)) else {
            return;
        };
        // The forwarder stops writing to the track before the track is idle or leaves the
        // connection: a packet still on its way to a removed sender fails in webrtc-rs's
        // driver, which logs an error for each (dozens when a room is busy). The packets it
        // wrote last wait in the driver's queue a moment longer; the driver is given that
        // moment.
        let (done, stopped) = oneshot::channel();
        let removal = ForwardCtl::Remove {
            member: self.setup.id,
            done: Some(done),
        };
        if let Carrier::Slot(slot) = &sub.carrier {
            slot.point_feedback(None);
        }
        // A forwarder that has ended (its publisher left) writes nothing more.
        let mut stopped_writing = true;
        if sub.published.ctl.send(removal).is_ok() {
            // A forwarder that has ended drops `done` at once; a forwarder never waits on a
            // viewer, so it answers within a packet, and a stuck task is not waited for long.
            match tokio::time::timeout(FORWARDER_STOP_WAIT, stopped).await {
                Ok(Ok(())) if matches!(sub.carrier, Carrier::Slot(_)) => {
                    tokio::time::sleep(DRIVER_QUEUE_GRACE).await
                }
                Ok(_) => {}
                Err(_) => stopped_writing = false,
            }
        }
        let slot = match sub.carrier {
            Carrier::Slot(slot) => slot,
            Carrier::Line(line) => {
                // Kept for the next microphone once nothing more is written to it; a line a
                // stuck forwarder may still write to is never given to another stream.
                if stopped_writing {
                    let before = (self.mics.count(), self.mics.idle());
                    self.mics.release(line);
                    self.count_lines(before, (self.mics.count(), self.mics.idle()));
                }
                tracing::debug!(member = %self.setup.id, stopped_writing, "microphone unsubscribed");
                self.negotiation.tracks_changed();
                self.negotiate().await;
                return;
            }
        };
        // Kept for the next stream, once nothing more is written to it (the next stream's
        // numbering goes on from what was sent last).
        let idle = stopped_writing
            && self.idle.len() < MAX_IDLE_SLOTS
            && slot
                .transceiver
                .set_direction(RTCRtpTransceiverDirection::Inactive)
                .await
                .is_ok();
        tracing::debug!(member = %self.setup.id, idle, stopped_writing, idle_slots = self.idle.len(), "stream unsubscribed");
        if idle {
            self.setup
                .metrics
                .idle_slots
                .fetch_add(1, Ordering::Relaxed);
            self.idle.push(slot);
        } else if let Err(e) = self.pc.remove_track(&slot.sender).await {
            tracing::debug!(member = %self.setup.id, "removing a forwarded track: {e}");
        }
        self.negotiation.tracks_changed();
        self.negotiate().await;
    }

    /// The client's track arrived (on its first packet): start forwarding it.
    async fn published(&mut self, track: Arc<dyn TrackRemote>) {
        let Some((index, audio_level_id)) = self.m_line_of(&track).await else {
            tracing::warn!(member = %self.setup.id, "a track on an unknown m-line; ignored");
            return;
        };
        let Some(kind) = Source::from_m_line(index) else {
            tracing::warn!(member = %self.setup.id, index, "a track on an extra m-line; ignored");
            return;
        };
        let ssrcs = track.ssrcs().await;
        let Some(&media_ssrc) = ssrcs.first() else {
            tracing::warn!(member = %self.setup.id, index, "a track without an SSRC; ignored");
            return;
        };
        // webrtc-rs copies the codec into the track it hands over from the receiver's state
        // when it handles the first packet; a renegotiation applied in between (people come
        // and go in a room all the time) can leave that copy without one (seen in CI). The
        // engine negotiates one codec per kind, so the m-line names it.
        let codec = match track.codec(media_ssrc).await {
            Some(codec) => codec,
            None => {
                tracing::debug!(member = %self.setup.id, index, media_ssrc, "a track without a codec; the m-line's codec is used");
                engine::negotiated_codec(kind)
            }
        };
        let stats = Arc::new(StreamStats::default());
        let ctl = forward::spawn(
            StreamSource {
                track,
                kind,
                media_ssrc,
                audio_level_id,
            },
            stats.clone(),
            self.setup.metrics.clone(),
        );
        tracing::info!(member = %self.setup.id, kind = kind.as_str(), codec = %codec.mime_type, "publishing");
        self.setup.room.send(RoomCmd::Published(Published {
            publisher: self.setup.id,
            kind,
            codec,
            ctl,
            stats,
        }));
    }

    /// Which of the client's m-lines (by order in its offer) carries `track`, and the audio
    /// level extension id negotiated on it.
    async fn m_line_of(&self, track: &Arc<dyn TrackRemote>) -> Option<(usize, Option<u8>)> {
        for transceiver in self.pc.get_transceivers().await {
            let Ok(Some(receiver)) = transceiver.receiver().await else {
                continue;
            };
            if Arc::as_ptr(receiver.track()).cast::<()>() != Arc::as_ptr(track).cast::<()>() {
                continue;
            }
            let mid = transceiver.mid().await.ok().flatten()?;
            let index = mid.parse::<usize>().ok()?;
            let level_id = match receiver.get_parameters().await {
                Ok(params) => params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == engine::AUDIO_LEVEL_URI)
                    .and_then(|e| u8::try_from(e.id).ok()),
                Err(_) => None,
            };
            return Some((index, level_id));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_of_strangers_are_forgotten_and_those_of_senders_kept() {
        let mut tiles = FxHashMap::default();
        let senders = || [AvatarId(1), AvatarId(2)].into_iter().collect();
        assert!(remember_tile(&mut tiles, AvatarId(1), 0, senders));
        assert!(
            !remember_tile(&mut tiles, AvatarId(1), 0, senders),
            "unchanged"
        );
        // A camera turned off: its publisher still sends audio, and its tile is kept.
        assert!(remember_tile(&mut tiles, AvatarId(2), 2, senders));
        for i in 1_000..11_000 {
            remember_tile(&mut tiles, AvatarId(i), 1, senders);
            assert!(tiles.len() <= MAX_TILE_LAYERS + 1);
        }
        assert_eq!(tiles.get(&AvatarId(1)), Some(&0));
        assert_eq!(tiles.get(&AvatarId(2)), Some(&2));
    }
}

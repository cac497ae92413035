//! Forwarding one published stream: a task reads the publisher's RTP and writes it to every
//! subscriber's track. Its subscriber list is owned by the task and changed only by
//! messages, so the packet path takes no lock; a packet is cloned per subscriber without
//! allocating (the payload is shared, the header extensions are dropped first).
//!
//! Per subscriber the SSRC and payload type are rewritten to what that leg negotiated.
//!
//! Simulcast: a camera may arrive in up to three layers (RIDs `q`, `h`, `f`: quarter, half
//! and full resolution). Each viewer gets one layer: the one that fits its tile
//! ([`layer_for_width`]) within what the room's bandwidth allocation allots it
//! ([`Allotment`]: a highest layer, or paused). Which layer, when a viewer switches and how
//! its numbering runs on is decided per viewer by a [`Leg`], a plain state machine; this
//! task feeds it packets, sends what it says to send and rate-limits the keyframe requests
//! it asks for.
//!
//! Each layer's bitrate is measured here, from the packets that arrive (every layer arrives,
//! whoever views it), for the allocation to weigh ([`StreamStats::layer_rates`]).
//!
//! Microphones held back by the loudest-speakers rule skip packets; sequence numbers are
//! shifted by the skipped count, so receivers see no loss. Video subscribers get a keyframe
//! promptly: a picture-loss request goes to the publisher when one joins (rate-limited).

use super::allocation::Allotment;
use super::leg::{self, Arrival, Change, Leg};
use super::speakers;
use super::{SfuMetrics, Source};
use crate::media::recording::recorder::{self, Taken};
use crate::media::recording::{Tap, Tapped};
use futures_util::FutureExt;
use quad_shared::AvatarId;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

pub use super::leg::LAYERS;

/// Picture-loss requests to one publisher's layer at most this often.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// A layer that sent nothing for this long counts as stopped (the browser may drop layers
/// it cannot afford).
const LAYER_STALE: Duration = Duration::from_secs(1);
/// Each layer's bitrate is measured over windows this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Bytes counted per packet on top of its payload: the RTP header with the extensions the
/// viewer's leg adds (about what the congestion controller counts per packet).
const PACKET_OVERHEAD: u64 = 24;

pub use quad_shared::media::layer_of_rid;

/// The layer a camera is sent at to a viewer that has reported no tile for it.
pub const DEFAULT_LAYER: u8 = 1;

/// The layer that fits a tile `width` device pixels wide.
pub fn layer_for_width(width: u16) -> u8 {
    match width {
        0..=240 => 0,
        241..=560 => 1,
        _ => 2,
    }
}

/// Whether a VP8 RTP payload starts a keyframe (RFC 7741: the first partition of a frame
/// whose payload header has P = 0).
pub fn vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let (start, partition) = (b0 & 0x10 != 0, b0 & 0x07);
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return false;
        };
        i = 2;
        if x & 0x80 != 0 {
            let Some(&picture) = payload.get(i) else {
                return false;
            };
            i += if picture & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    payload.get(i).is_some_and(|header| header & 0x01 == 0)
}

/// What the room reads of a stream, and the one thing it sets (whether a microphone is
/// forwarded). Atomics: the forwarding task writes, the room's speaker tick reads.
#[derive(Debug)]
pub struct StreamStats {
    /// Smoothed loudness (f32 bits), microphones only.
    loudness: AtomicU32,
    /// Held back by the loudest-speakers rule when false.
    pub forwarded: AtomicBool,
    /// Dropped because a teacher turned the device off.
    pub blocked: AtomicBool,
    pub packets: AtomicU64,
    /// Each layer's measured bitrate (bit/s, smoothed over [`RATE_WINDOW`]s); 0 for a layer
    /// that did not arrive in the last window. A single-layer stream has only layer 0.
    layer_bps: [AtomicU64; LAYERS],
}

impl Default for StreamStats {
    fn default() -> Self {
        StreamStats {
            loudness: AtomicU32::new(0f32.to_bits()),
            // The room decides at once when the stream is published.
            forwarded: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            packets: AtomicU64::new(0),
            layer_bps: Default::default(),
        }
    }
}

impl StreamStats {
    pub fn loudness(&self) -> f32 {
        f32::from_bits(self.loudness.load(Ordering::Relaxed))
    }

    /// Each layer's bitrate as last measured (bit/s), `None` for a layer not arriving.
    pub fn layer_rates(&self) -> [Option<u64>; LAYERS] {
        let mut rates = [None; LAYERS];
        for (rate, bps) in rates.iter_mut().zip(&self.layer_bps) {
            *rate = Some(bps.load(Ordering::Relaxed)).filter(|&b| b > 0);
        }
        rates
    }
}

/// Where a viewer's packets of a stream go.
pub enum Out {
    /// A webrtc-rs track on the viewer's connection (video).
    Track(Arc<TrackLocalStaticRTP>),
    /// The viewer connection's direct send path, on one of Quad's own m-lines
    /// (microphones; see `direct` and `mic_lines`).
    Direct(Arc<super::direct::Direct>),
}

/// One viewer of a stream: where its packets go and what its leg uses.
pub struct Subscriber {
    pub member: AvatarId,
    pub out: Out,
    pub ssrc: u32,
    pub payload_type: u8,
    /// The simulcast layer its tile wants.
    pub want: u8,
    /// The last sequence number and timestamp sent on this track, kept up to date here: a
    /// later stream on the same m-line (reused) numbers on from it, so the viewer's receiver
    /// sees one continuous stream and drops nothing as old.
    pub numbering: Arc<Numbering>,
}

/// The last sequence number and timestamp sent on a viewer's track (none yet, at first).
#[derive(Debug, Default)]
pub struct Numbering(AtomicU64);

impl Numbering {
    const SET: u64 = 1 << 63;

    pub fn get(&self) -> Option<(u16, u32)> {
        let v = self.0.load(Ordering::Relaxed);
        (v & Self::SET != 0).then_some(((v >> 32) as u16, v as u32))
    }

    fn set(&self, seq: u16, ts: u32) {
        self.0.store(
            Self::SET | (u64::from(seq) << 32) | u64::from(ts),
            Ordering::Relaxed,
        );
    }
}

/// Changes to a forwarding task's subscribers.
pub enum ForwardCtl {
    Add(Subscriber),
    /// Stop writing to a viewer; `done` is told once nothing more will be written to it.
    Remove {
        member: AvatarId,
        done: Option<oneshot::Sender<()>>,
    },
    /// A viewer lost a picture: ask the publisher for a keyframe.
    KeyframeRequest,
    /// A viewer's tile changed size: the layer it wants.
    Want(AvatarId, u8),
    /// A viewer's receiver report: the fraction of packets it lost (of 256).
    Loss(AvatarId, u8),
    /// What the room's bandwidth allocation allots a viewer of this stream.
    Allot(AvatarId, Allotment),
    /// Hand a copy of each packet to the room's recorder (`None`: stop). A microphone's
    /// packets go as received, whether the loudest-speakers rule forwards them or not; a
    /// video's go as a viewer of its best layer would get them.
    Tap(Option<Tap>),
}

/// What the forwarding task needs to know about its stream.
pub struct StreamSource {
    pub track: Arc<dyn TrackRemote>,
    pub kind: Source,
    /// The publisher's (first) SSRC (picture-loss requests name it).
    pub media_ssrc: u32,
    /// The negotiated id of the audio level header extension on the publisher's leg.
    pub audio_level_id: Option<u8>,
}

/// Starts forwarding `source`; the task ends when the publisher's track ends or every
/// control sender is dropped.
pub fn spawn(
    source: StreamSource,
    stats: Arc<StreamStats>,
    metrics: Arc<SfuMetrics>,
) -> mpsc::UnboundedSender<ForwardCtl> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(source, stats, metrics, rx));
    tx
}

/// A subscriber with its leg: its layer and rewriting state.
struct Viewer {
    sub: Subscriber,
    leg: Leg,
}

struct Forwarder {
    source: StreamSource,
    stats: Arc<StreamStats>,
    metrics: Arc<SfuMetrics>,
    viewers: Vec<Viewer>,
    /// Simulcast: each layer's SSRC (from the RIDs the publisher announced) and when it was
    /// last heard. Empty for a single-layer stream.
    layer_ssrcs: [Option<u32>; LAYERS],
    layer_seen: [Option<Instant>; LAYERS],
    /// Packets skipped while held back; outgoing sequence numbers are shifted by it.
    skipped: u16,
    /// The last packet was dropped for a teacher's restriction.
    was_blocked: bool,
    last_keyframe_request: [Option<Instant>; LAYERS],
    keyframe_wanted: [bool; LAYERS],
    /// Bytes that arrived on each layer since `window_start` (see [`RATE_WINDOW`]).
    window_bytes: [u64; LAYERS],
    window_start: Instant,
    /// The room's recorder, with a leg of its own for a video.
    tap: Option<(Tap, Option<Leg>)>,
}

async fn run(
    source: StreamSource,
    stats: Arc<StreamStats>,
    metrics: Arc<SfuMetrics>,
    mut ctl: mpsc::UnboundedReceiver<ForwardCtl>,
) {
    let track = source.track.clone();
    let mut f = Forwarder {
        source,
        stats,
        metrics,
        viewers: Vec::new(),
        layer_ssrcs: [None; LAYERS],
        layer_seen: [None; LAYERS],
        skipped: 0,
        was_blocked: false,
        last_keyframe_request: [None; LAYERS],
        keyframe_wanted: [false; LAYERS],
        window_bytes: [0; LAYERS],
        window_start: Instant::now(),
        tap: None,
    };
    loop {
        tokio::select! {
            biased;
            msg = ctl.recv() => match msg {
                None => break,
                Some(msg) => f.control(msg),
            },
            event = track.poll() => match event {
                None | Some(TrackRemoteEvent::OnEnded) => break,
                Some(TrackRemoteEvent::OnOpen(init)) => {
                    tracing::debug!(kind = ?f.source.kind, rid = ?init.rid, ssrc = init.ssrc, "stream open");
                    if let Some(layer) = init.rid.as_deref().and_then(layer_of_rid) {
                        f.layer_ssrcs[usize::from(layer)] = Some(init.ssrc);
                    }
                }
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => f.forward(packet),
                Some(_) => {}
            },
        }
        f.request_keyframes().await;
    }
}

impl Forwarder {
    fn simulcast(&self) -> bool {
        self.layer_ssrcs.iter().any(Option::is_some)
    }

    fn viewer(&mut self, member: AvatarId) -> Option<&mut Viewer> {
        self.viewers.iter_mut().find(|v| v.sub.member == member)
    }

    fn control(&mut self, msg: ForwardCtl) {
        let now = Instant::now();
        match msg {
            ForwardCtl::Add(sub) => {
                let member = sub.member;
                tracing::debug!(kind = ?self.source.kind, ssrc = self.source.media_ssrc, viewer = %member, want = sub.want, "viewer added");
                self.viewers.retain(|v| v.sub.member != member);
                let want = sub.want;
                let leg = Leg::new(want, sub.numbering.get(), now);
                self.viewers.push(Viewer { sub, leg });
                self.want_keyframe(want, now);
            }
            ForwardCtl::Remove { member, done } => {
                self.viewers.retain(|v| v.sub.member != member);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            ForwardCtl::KeyframeRequest => {
                // A viewer's decoder lost the picture: whichever layers are being viewed.
                let current: Vec<u8> = self
                    .viewers
                    .iter()
                    .filter_map(|v| v.leg.current())
                    .collect();
                for layer in current {
                    self.want_keyframe(layer, now);
                }
            }
            ForwardCtl::Want(member, layer) => {
                if let Some(v) = self.viewer(member) {
                    v.leg.set_want(layer);
                }
            }
            ForwardCtl::Allot(member, allotment) => {
                let (kind, ssrc) = (self.source.kind, self.source.media_ssrc);
                if let Some(v) = self.viewer(member)
                    && v.leg.allot(allotment)
                {
                    tracing::debug!(?kind, ssrc, viewer = %member, ?allotment, "allotment");
                }
            }
            ForwardCtl::Tap(tap) => {
                self.tap = tap.map(|tap| {
                    if self.source.kind == Source::Mic {
                        (tap, None)
                    } else {
                        // The best layer there is, from its next keyframe.
                        self.want_keyframe(leg::TOP, now);
                        (tap, Some(Leg::new(leg::TOP, None, now)))
                    }
                });
            }
            ForwardCtl::Loss(member, lost) => {
                if let Some(v) = self.viewer(member) {
                    v.leg.on_loss(lost, now);
                }
            }
        }
    }

    /// Counts a packet of `layer` towards its bitrate, and publishes the bitrates at the end
    /// of each window.
    fn measure(&mut self, layer: u8, payload: usize, now: Instant) {
        self.window_bytes[usize::from(layer)] += payload as u64 + PACKET_OVERHEAD;
        let elapsed = now.duration_since(self.window_start);
        if elapsed < RATE_WINDOW {
            return;
        }
        let micros = elapsed.as_micros().max(1) as u64;
        for (bytes, bps) in self.window_bytes.iter_mut().zip(&self.stats.layer_bps) {
            let sample = bytes.saturating_mul(8_000_000) / micros;
            let before = bps.load(Ordering::Relaxed);
            // Smoothed (keyframes make windows uneven), but a layer that stopped is 0 at once.
            let smoothed = if sample == 0 || before == 0 {
                sample
            } else {
                (before + sample) / 2
            };
            bps.store(smoothed, Ordering::Relaxed);
            *bytes = 0;
        }
        self.window_start = now;
    }

    fn want_keyframe(&mut self, layer: u8, _now: Instant) {
        if self.source.kind != Source::Mic {
            self.keyframe_wanted[usize::from(layer).min(LAYERS - 1)] = true;
        }
    }

    fn forward(&mut self, mut packet: rtc::rtp::Packet) {
        let now = Instant::now();
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = self.source.audio_level_id
            && let Some(level) = packet
                .header
                .get_extension(id)
                .and_then(|p| p.first().copied())
        {
            let loudness = f32::from(127 - (level & 0x7f));
            let smoothed = speakers::smooth(self.stats.loudness(), loudness);
            self.stats
                .loudness
                .store(smoothed.to_bits(), Ordering::Relaxed);
        }
        if self.stats.blocked.load(Ordering::Relaxed) {
            self.metrics.blocked_packets.fetch_add(1, Ordering::Relaxed);
            if self.source.kind == Source::Mic {
                // Renumbered away like a quiet speaker's: receivers see no loss.
                self.skipped = self.skipped.wrapping_add(1);
            } else if !self.was_blocked {
                // Viewers pick the picture up again at a keyframe, without a sequence gap.
                for viewer in &mut self.viewers {
                    viewer.leg.interrupt();
                }
            }
            self.was_blocked = true;
            return;
        }
        if self.was_blocked {
            self.was_blocked = false;
            for layer in 0..LAYERS {
                self.want_keyframe(layer as u8, now);
            }
        }
        let layer = if self.simulcast() {
            match self
                .layer_ssrcs
                .iter()
                .position(|s| *s == Some(packet.header.ssrc))
            {
                Some(l) => l as u8,
                // Not a layer we know (yet): nothing to do with it.
                None => return,
            }
        } else {
            0
        };
        self.measure(layer, packet.payload.len(), now);
        if self.source.kind == Source::Mic {
            self.record(&packet, layer, now);
        }
        if !self.stats.forwarded.load(Ordering::Relaxed) {
            self.skipped = self.skipped.wrapping_add(1);
            self.metrics
                .suppressed_packets
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.layer_seen[usize::from(layer)] = Some(now);
        if self.source.kind != Source::Mic {
            self.record(&packet, layer, now);
        }
        if self.viewers.is_empty() {
            return;
        }
        let keyframe = self.source.kind != Source::Mic && vp8_keyframe(&packet.payload);
        let header = &mut packet.header;
        header.sequence_number = header.sequence_number.wrapping_sub(self.skipped);
        // Extension ids differ per leg; the viewer's interceptors add their own.
        header.extension = false;
        header.extensions.clear();
        header.extensions_padding = 0;
        let arrival = Arrival {
            layer,
            seq: header.sequence_number,
            ts: header.timestamp,
            keyframe,
        };
        let bytes = (12 + packet.payload.len()) as u64;
        let stream = self.stream_now(now);
        let (kind, ssrc) = (self.source.kind, self.source.media_ssrc);
        let mut i = 0;
        while i < self.viewers.len() {
            let v = &mut self.viewers[i];
            let step = v.leg.on_packet(&stream, arrival);
            if let Some(layer) = step.keyframe {
                self.keyframe_wanted[usize::from(layer)] = true;
            }
            match step.change {
                Some(Change::Took(layer)) => {
                    tracing::debug!(?kind, ssrc, viewer = %v.sub.member, layer, "viewer takes a layer");
                }
                Some(Change::OverAllotment { had, most }) => {
                    tracing::debug!(?kind, ssrc, viewer = %v.sub.member, had, most, "viewer over its allotment");
                }
                Some(Change::Paused) => {
                    tracing::debug!(?kind, ssrc, viewer = %v.sub.member, "viewer paused");
                }
                None => {}
            }
            let Some((out_seq, out_ts)) = step.send else {
                i += 1;
                continue;
            };
            v.sub.numbering.set(out_seq, out_ts);
            let mut copy = packet.clone();
            copy.header.sequence_number = out_seq;
            copy.header.timestamp = out_ts;
            copy.header.ssrc = v.sub.ssrc;
            copy.header.payload_type = v.sub.payload_type;
            let handed = match &v.sub.out {
                Out::Direct(direct) => match direct.send(copy) {
                    Ok(()) => {
                        self.metrics.direct_packets.fetch_add(1, Ordering::Relaxed);
                        Handed::Queued
                    }
                    // Not up yet, or its queue is full: lost to this viewer alone.
                    Err(_) => Handed::Unsent,
                },
                Out::Track(track) => hand_over(track, copy),
            };
            match handed {
                Handed::Queued => {
                    self.metrics
                        .forwarded_packets
                        .fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .forwarded_bytes
                        .fetch_add(bytes, Ordering::Relaxed);
                    i += 1;
                }
                Handed::Full => {
                    // Its connection is behind: this packet is lost to it alone (it sees a
                    // gap, as on a lossy link), and every other viewer gets it on time.
                    self.metrics
                        .viewer_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Handed::Unsent => {
                    self.metrics.dropped_packets.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Handed::Gone => {
                    // The viewer's connection is gone; its member task cleans up the rest.
                    self.metrics.dropped_packets.fetch_add(1, Ordering::Relaxed);
                    self.viewers.swap_remove(i);
                }
            }
        }
    }

    /// What the legs need to know of the stream now.
    fn stream_now(&self, now: Instant) -> leg::Stream {
        leg::Stream {
            video: self.source.kind != Source::Mic,
            simulcast: self.simulcast(),
            live: std::array::from_fn(|l| {
                self.layer_seen[l].is_some_and(|t| now.duration_since(t) < LAYER_STALE)
            }),
        }
    }

    /// Hands a copy of `packet` (of `layer`) to the recorder, if the room records.
    fn record(&mut self, packet: &rtc::rtp::Packet, layer: u8, now: Instant) {
        if self.tap.is_none() {
            return;
        }
        let stream = self.stream_now(now);
        let Some((tap, leg)) = self.tap.as_mut() else {
            return;
        };
        let header = &packet.header;
        let (seq, ts) = match leg {
            None => (header.sequence_number, header.timestamp),
            Some(leg) => {
                let arrival = Arrival {
                    layer,
                    seq: header.sequence_number.wrapping_sub(self.skipped),
                    ts: header.timestamp,
                    keyframe: vp8_keyframe(&packet.payload),
                };
                let step = leg.on_packet(&stream, arrival);
                if let Some(layer) = step.keyframe {
                    self.keyframe_wanted[usize::from(layer)] = true;
                }
                match step.send {
                    Some(numbered) => numbered,
                    None => return,
                }
            }
        };
        let video = leg.is_some();
        let copy = Tapped {
            stream: tap.stream,
            who: tap.who,
            video,
            arrived: now,
            seq,
            ts,
            marker: header.marker,
            payload: packet.payload.clone(),
        };
        match recorder::hand_over(tap, copy, &self.metrics) {
            Taken::Yes => {}
            // The recording lost part of a frame: it waits for a keyframe, so ask for one.
            Taken::Dropped if video => self.want_keyframe(layer, now),
            Taken::Dropped => {}
            Taken::Ended => self.tap = None,
        }
    }

    /// Sends the picture-loss requests that are wanted, each layer at most every
    /// [`KEYFRAME_INTERVAL`] (a request that must wait goes out with a later packet).
    async fn request_keyframes(&mut self) {
        if self.source.kind == Source::Mic {
            return;
        }
        let now = Instant::now();
        for layer in 0..LAYERS {
            if !self.keyframe_wanted[layer]
                || self.last_keyframe_request[layer]
                    .is_some_and(|t| now.duration_since(t) < KEYFRAME_INTERVAL)
            {
                continue;
            }
            let ssrc = if self.simulcast() {
                match self.layer_ssrcs[layer] {
                    Some(ssrc) => ssrc,
                    None => {
                        self.keyframe_wanted[layer] = false;
                        continue;
                    }
                }
            } else {
                self.source.media_ssrc
            };
            self.keyframe_wanted[layer] = false;
            self.last_keyframe_request[layer] = Some(now);
            tracing::debug!(kind = ?self.source.kind, layer, ssrc, "picture-loss request");
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            if let Err(e) = self.source.track.write_rtcp(vec![Box::new(pli)]).await {
                tracing::debug!("picture-loss request not sent: {e}");
            }
        }
    }
}

/// What became of a packet handed to a viewer's connection.
#[derive(Debug, PartialEq, Eq)]
enum Handed {
    Queued,
    /// The connection's queue was full: the packet was dropped for this viewer.
    Full,
    /// The direct path could not send it (not up yet, or its queue was full): dropped for
    /// this viewer.
    Unsent,
    /// The connection is closed.
    Gone,
}

/// Hands `packet` to a viewer's connection without waiting.
///
/// webrtc-rs's `write_rtp` waits while the connection's queue (256 events) is full, and a
/// forwarder serves every viewer of a stream in turn: waiting on one slow connection
/// would hold the stream up for the whole room, and with it the publisher's own queue,
/// which then drops for everyone. So the write is polled once: the queue takes the packet
/// now, or this viewer loses it. `unconstrained`, so that tokio's cooperative budget does
/// not make a queue with room look full.
fn hand_over(track: &TrackLocalStaticRTP, packet: rtc::rtp::Packet) -> Handed {
    match tokio::task::unconstrained(track.write_rtp(packet)).now_or_never() {
        Some(Ok(())) => Handed::Queued,
        None => Handed::Full,
        Some(Err(_)) => Handed::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_are_recognised() {
        // S=1, PID=0, no extension; payload header P=0: a keyframe.
        assert!(vp8_keyframe(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // P=1: an interframe.
        assert!(!vp8_keyframe(&[0x10, 0x01, 0x00]));
        // Not the start of a partition.
        assert!(!vp8_keyframe(&[0x00, 0x00]));
        // Extended: I with a 15-bit picture id, L, T/K; then P=0.
        assert!(vp8_keyframe(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00]));
        assert!(!vp8_keyframe(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x01]));
        // Truncated.
        assert!(!vp8_keyframe(&[0x90, 0xe0]));
        assert!(!vp8_keyframe(&[]));
    }

    fn audio_packet(sequence_number: u16) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number,
                ssrc: 7,
                ..Default::default()
            },
            payload: vec![0; 100].into(),
        }
    }

    struct NoEvents;
    impl webrtc::peer_connection::PeerConnectionEventHandler for NoEvents {}

    /// A viewer's connection whose queue is full loses the packet at once instead of
    /// holding the forwarder (and with it every other viewer) until the queue drains.
    #[tokio::test]
    async fn a_full_connection_queue_drops_the_packet_without_waiting() -> anyhow::Result<()> {
        use rtc::media_stream::MediaStreamTrack;
        use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
        use webrtc::peer_connection::{MediaEngine, PeerConnection, PeerConnectionBuilder};

        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_udp_addrs(vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))])
            .with_handler(Arc::new(NoEvents))
            .with_setting_engine(
                webrtc::peer_connection::SettingEngineBuilder::new()
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                    .build(),
            )
            .build()
            .await?;
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "s".to_owned(),
            "t".to_owned(),
            "t".to_owned(),
            RtpCodecKind::Audio,
            vec![],
        )));
        // Binds the track to the connection's queue.
        pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;

        // This test's runtime has one thread, and the loop does not yield: the connection's
        // driver takes nothing from its queue meanwhile, as a driver that is behind.
        let handed: Vec<Handed> = (0..1_000)
            .map(|seq| hand_over(&track, audio_packet(seq)))
            .collect();
        let queued = handed.iter().take_while(|h| **h == Handed::Queued).count();
        // The queue holds 256 events; the connection may have queued a few of its own.
        assert!((200..=256).contains(&queued), "{queued} queued");
        assert!(
            handed[queued..].iter().all(|h| *h == Handed::Full),
            "{:?}",
            &handed[queued..queued + 5]
        );

        // Once the driver has run, the queue takes packets again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match hand_over(&track, audio_packet(0)) {
                Handed::Queued => break,
                other => assert!(std::time::Instant::now() < deadline, "still {other:?}"),
            }
        }

        pc.close().await?;
        assert_eq!(hand_over(&track, audio_packet(1)), Handed::Gone);
        Ok(())
    }

    #[test]
    fn tiles_pick_layers() {
        assert_eq!(layer_for_width(160), 0);
        assert_eq!(layer_for_width(320), 1);
        assert_eq!(layer_for_width(1280), 2);
        assert_eq!(layer_of_rid("q"), Some(0));
        assert_eq!(layer_of_rid("f"), Some(2));
        assert_eq!(layer_of_rid("x"), None);
    }
}

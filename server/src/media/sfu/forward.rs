//! Forwarding one published stream: a task reads the publisher's RTP and writes it to every
//! subscriber's track. Its subscriber list is owned by the task and changed only by
//! messages, so the packet path takes no lock; a packet is cloned per subscriber without
//! allocating (the payload is shared, the header extensions are dropped first).
//!
//! Per subscriber the SSRC and payload type are rewritten to what that leg negotiated.
//! Microphones held back by the loudest-speakers rule skip packets; sequence numbers are
//! shifted by the skipped count, so receivers see no loss. Video subscribers get a keyframe
//! promptly: a picture-loss request goes to the publisher when one joins (rate-limited).

use super::speakers;
use super::{SfuMetrics, StreamKind};
use quad_shared::AvatarId;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// Picture-loss requests to one publisher at most this often.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// What the room reads of a stream, and the one thing it sets (whether a microphone is
/// forwarded). Atomics: the forwarding task writes, the room's speaker tick reads.
#[derive(Debug)]
pub struct StreamStats {
    /// Smoothed loudness (f32 bits), microphones only.
    loudness: AtomicU32,
    /// Held back by the loudest-speakers rule when false.
    pub forwarded: AtomicBool,
    pub packets: AtomicU64,
}

impl Default for StreamStats {
    fn default() -> Self {
        StreamStats {
            loudness: AtomicU32::new(0f32.to_bits()),
            // The room decides at once when the stream is published.
            forwarded: AtomicBool::new(false),
            packets: AtomicU64::new(0),
        }
    }
}

impl StreamStats {
    pub fn loudness(&self) -> f32 {
        f32::from_bits(self.loudness.load(Ordering::Relaxed))
    }
}

/// One viewer of a stream: the track on the viewer's connection and what its leg uses.
pub struct Subscriber {
    pub member: AvatarId,
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    pub payload_type: u8,
}

/// Changes to a forwarding task's subscribers.
pub enum ForwardCtl {
    Add(Subscriber),
    Remove(AvatarId),
    /// A viewer lost a picture: ask the publisher for a keyframe.
    KeyframeRequest,
}

/// What the forwarding task needs to know about its stream.
pub struct StreamSource {
    pub track: Arc<dyn TrackRemote>,
    pub kind: StreamKind,
    /// The publisher's SSRC (picture-loss requests name it).
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

struct Forwarder {
    source: StreamSource,
    stats: Arc<StreamStats>,
    metrics: Arc<SfuMetrics>,
    subscribers: Vec<Subscriber>,
    /// Packets skipped while held back; outgoing sequence numbers are shifted by it.
    skipped: u16,
    last_keyframe_request: Option<Instant>,
    keyframe_wanted: bool,
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
        subscribers: Vec::new(),
        skipped: 0,
        last_keyframe_request: None,
        keyframe_wanted: false,
    };
    loop {
        tokio::select! {
            biased;
            msg = ctl.recv() => match msg {
                None => break,
                Some(ForwardCtl::Add(sub)) => {
                    f.subscribers.retain(|s| s.member != sub.member);
                    f.subscribers.push(sub);
                    f.keyframe_wanted = true;
                    f.maybe_request_keyframe().await;
                }
                Some(ForwardCtl::Remove(member)) => f.subscribers.retain(|s| s.member != member),
                Some(ForwardCtl::KeyframeRequest) => {
                    f.keyframe_wanted = true;
                    f.maybe_request_keyframe().await;
                }
            },
            event = track.poll() => match event {
                None | Some(TrackRemoteEvent::OnEnded) => break,
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    f.forward(packet).await;
                    if f.keyframe_wanted {
                        f.maybe_request_keyframe().await;
                    }
                }
                Some(_) => {}
            },
        }
    }
}

impl Forwarder {
    async fn forward(&mut self, mut packet: rtc::rtp::Packet) {
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
        if !self.stats.forwarded.load(Ordering::Relaxed) {
            self.skipped = self.skipped.wrapping_add(1);
            self.metrics
                .suppressed_packets
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.subscribers.is_empty() {
            return;
        }
        let header = &mut packet.header;
        header.sequence_number = header.sequence_number.wrapping_sub(self.skipped);
        // Extension ids differ per leg; the viewer's interceptors add their own.
        header.extension = false;
        header.extensions.clear();
        header.extensions_padding = 0;
        let bytes = (12 + packet.payload.len()) as u64;
        let mut i = 0;
        while i < self.subscribers.len() {
            let sub = &self.subscribers[i];
            let mut copy = packet.clone();
            copy.header.ssrc = sub.ssrc;
            copy.header.payload_type = sub.payload_type;
            if sub.track.write_rtp(copy).await.is_ok() {
                self.metrics
                    .forwarded_packets
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .forwarded_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
                i += 1;
            } else {
                // The viewer's connection is gone; its member task cleans up the rest.
                self.metrics.dropped_packets.fetch_add(1, Ordering::Relaxed);
                self.subscribers.swap_remove(i);
            }
        }
    }

    /// Sends a picture-loss request to the publisher if one is wanted and the last was long
    /// enough ago (otherwise it goes with a later packet).
    async fn maybe_request_keyframe(&mut self) {
        if self.source.kind == StreamKind::Mic || !self.keyframe_wanted {
            self.keyframe_wanted = false;
            return;
        }
        let now = Instant::now();
        if self
            .last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_INTERVAL)
        {
            return;
        }
        self.last_keyframe_request = Some(now);
        self.keyframe_wanted = false;
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: self.source.media_ssrc,
        };
        if let Err(e) = self.source.track.write_rtcp(vec![Box::new(pli)]).await {
            tracing::debug!("picture-loss request not sent: {e}");
        }
    }
}

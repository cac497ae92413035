//! Transport-wide congestion control of what the SFU sends one member: one numbering and one
//! send history for every RTP packet of the connection, whoever sends it, and the bandwidth
//! estimator they feed.
//!
//! Two senders share a connection: webrtc-rs's pipeline (video, retransmissions) and Quad's
//! direct path ([`super::direct`], forwarded microphones). The member's browser reports
//! on packets by their transport-wide sequence number (the `transport-cc` header
//! extension), one sequence per connection, so both must number from one counter and
//! record into one history. [`TransportWide`] is that shared state: [`TransportWide::number`]
//! gives a packet its number and records its size and departure; [`TransportWideCc`] is
//! the interceptor that numbers webrtc-rs's packets through it and hands it the member's
//! feedback. It replaces `rtc-interceptor`'s TWCC sender and congestion controller (whose
//! history is three hash maps per packet) with [`SendHistory`], a plain state machine over
//! a ring in send order.

use super::estimator::DownlinkEstimator;
use rtc::interceptor::{
    BandwidthEstimator, Interceptor, Packet, PacketReport, StreamInfo, TaggedPacket, convert_twcc,
};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::sansio::Protocol;
use rtc::shared::marshal::Marshal;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The transport-wide sequence number header extension.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// How long a sent packet waits for the member's feedback before it is forgotten. Browsers
/// report every 50-100 ms, so only a packet whose report was lost waits this long.
pub const HORIZON: Duration = Duration::from_secs(1);

/// The most packets kept waiting for feedback (1 s of 8,000 packets a second; 24 bytes
/// each): a member whose browser never reports costs this much and no more.
pub const MAX_OUTSTANDING: usize = 8_192;

/// [`Sent::arrival_us`] of a packet not reported arrived (yet).
const NOT_ARRIVED: u64 = u64::MAX;

/// One sent packet, in the history: 24 bytes (a member receiving 49 microphones sends
/// 2,450 packets a second, all kept for [`HORIZON`]).
#[derive(Clone, Copy, Debug)]
struct Sent {
    ssrc: u32,
    rtp_sequence_number: u16,
    /// Bytes: a packet fits in a datagram.
    size: u16,
    /// When it left, microseconds after [`SendHistory::epoch`].
    departure_us: u64,
    /// When it arrived, in the member's clock, microseconds; [`NOT_ARRIVED`] until reported.
    arrival_us: u64,
}

/// Sent packets by transport-wide sequence number, waiting for feedback, in send order.
/// Numbers are kept unwrapped (a `u64` that never wraps); the wire carries the low 16 bits.
#[derive(Debug, Default)]
pub struct SendHistory {
    /// What departures count from: the first packet's departure.
    epoch: Option<Instant>,
    /// The unwrapped number of `sent[0]`.
    base: u64,
    sent: VecDeque<Sent>,
    /// The first packet not yet reported to the estimator.
    next_report: u64,
    /// The newest packet the member reported arrived.
    highest_arrived: Option<u64>,
}

impl SendHistory {
    /// The number the next packet gets.
    fn next(&self) -> u64 {
        self.base + self.sent.len() as u64
    }

    /// Records a packet leaving now; returns its wire number.
    pub fn record(
        &mut self,
        ssrc: u32,
        rtp_sequence_number: u16,
        size: usize,
        now: Instant,
    ) -> u16 {
        let number = self.next();
        let epoch = *self.epoch.get_or_insert(now);
        let departure_us = micros(now.saturating_duration_since(epoch));
        self.sent.push_back(Sent {
            ssrc,
            rtp_sequence_number,
            size: size.min(u16::MAX as usize) as u16,
            departure_us,
            arrival_us: NOT_ARRIVED,
        });
        self.prune(departure_us);
        number as u16
    }

    /// Forgets packets older than [`HORIZON`] before `now_us`, and the oldest beyond
    /// [`MAX_OUTSTANDING`].
    fn prune(&mut self, now_us: u64) {
        let cutoff = now_us.checked_sub(micros(HORIZON));
        while let Some(front) = self.sent.front() {
            let old = cutoff.is_some_and(|cutoff| front.departure_us < cutoff);
            if !old && self.sent.len() <= MAX_OUTSTANDING {
                break;
            }
            self.sent.pop_front();
            self.base += 1;
        }
        self.next_report = self.next_report.max(self.base);
    }

    /// The unwrapped number a wire number from feedback stands for: the latest packet sent
    /// with it, or `None` if that is no longer (or never was) in the history.
    fn unwrap(&self, wire: u16) -> Option<u64> {
        let next = self.next();
        let back = (next as u16).wrapping_sub(wire);
        let back = if back == 0 { 65_536 } else { back as u64 };
        let number = next.checked_sub(back)?;
        (number >= self.base).then_some(number)
    }

    /// Applies one feedback packet.
    pub fn on_feedback(&mut self, feedback: &TransportLayerCc) {
        for ack in convert_twcc(feedback) {
            let Some(number) = self.unwrap(ack.sequence_number) else {
                continue;
            };
            if !ack.arrived {
                continue;
            }
            let index = (number - self.base) as usize;
            if let Some(sent) = self.sent.get_mut(index) {
                sent.arrival_us = ack.arrival.map_or(0, micros).min(NOT_ARRIVED - 1);
                self.highest_arrived = Some(self.highest_arrived.map_or(number, |h| h.max(number)));
            }
        }
    }

    /// Everything up to the newest arrived packet not reported before, in send order;
    /// those without an arrival by then count as lost.
    pub fn take_reports(&mut self) -> Vec<PacketReport> {
        let Some(highest) = self.highest_arrived else {
            return Vec::new();
        };
        let from = self.next_report.max(self.base);
        let Some(epoch) = self.epoch.filter(|_| from <= highest) else {
            return Vec::new();
        };
        let reports = (from..=highest)
            .filter_map(|number| {
                let sent = self.sent.get((number - self.base) as usize)?;
                let arrival = (sent.arrival_us != NOT_ARRIVED)
                    .then(|| Duration::from_micros(sent.arrival_us));
                Some(PacketReport {
                    ssrc: sent.ssrc,
                    id: number,
                    rtp_sequence_number: sent.rtp_sequence_number,
                    is_twcc: true,
                    twcc_sequence_number: number as u16,
                    size: usize::from(sent.size),
                    arrived: arrival.is_some(),
                    departure: epoch + Duration::from_micros(sent.departure_us),
                    arrival,
                    ecn: Ecn::NotEct,
                })
            })
            .collect();
        self.next_report = highest + 1;
        reports
    }

    /// Packets waiting for feedback.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.sent.len()
    }
}

/// Whole microseconds of `d`, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct State {
    history: SendHistory,
    /// The transport-cc extension id of each local stream that negotiated it.
    streams: HashMap<u32, u8>,
    estimator: DownlinkEstimator,
}

/// One connection's transport-wide numbering, history and estimator (see the module docs).
pub struct TransportWide {
    state: Mutex<State>,
}

impl TransportWide {
    pub fn new(estimator: DownlinkEstimator) -> Arc<TransportWide> {
        Arc::new(TransportWide {
            state: Mutex::new(State {
                history: SendHistory::default(),
                streams: HashMap::new(),
                estimator,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data, each change whole: a panic elsewhere while it was held leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers a packet of `ssrc` of `size` bytes leaving now, if its stream negotiated
    /// transport-wide numbers: the extension id and the number to write.
    pub fn number(
        &self,
        ssrc: u32,
        rtp_sequence_number: u16,
        size: usize,
        now: Instant,
    ) -> Option<(u8, u16)> {
        let mut state = self.state();
        let id = *state.streams.get(&ssrc)?;
        Some((
            id,
            state.history.record(ssrc, rtp_sequence_number, size, now),
        ))
    }

    /// Numbers the stream `ssrc` (one of Quad's own m-lines, which webrtc-rs does not bind)
    /// with extension `id`; `None`: not at all.
    pub fn bind(&self, ssrc: u32, id: Option<u8>) {
        let mut state = self.state();
        match id.filter(|id| (1..=14).contains(id)) {
            Some(id) => state.streams.insert(ssrc, id),
            None => state.streams.remove(&ssrc),
        };
    }

    fn on_feedback(&self, now: Instant, feedback: &TransportLayerCc) {
        let mut state = self.state();
        state.history.on_feedback(feedback);
        let reports = state.history.take_reports();
        state.estimator.on_reports(now, &reports);
    }
}

/// The interceptor that numbers webrtc-rs's outgoing RTP through a [`TransportWide`] and
/// feeds it the member's transport-wide feedback. In the chain where `rtc-interceptor`'s
/// TWCC sender would be: below the NACK responder, so resends are numbered too.
pub struct TransportWideCc {
    shared: Arc<TransportWide>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl TransportWideCc {
    pub fn new(shared: Arc<TransportWide>) -> TransportWideCc {
        TransportWideCc {
            shared,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for TransportWideCc {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                if let Some(feedback) = packet.as_any().downcast_ref::<TransportLayerCc>() {
                    self.shared.on_feedback(msg.now, feedback);
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet {
            // The extension is 2 bytes, padded to 4, plus the extension header's 4 when
            // the packet had no extension: what the size on the wire will be.
            use rtc::shared::marshal::MarshalSize;
            let size = packet.marshal_size() + if packet.header.extension { 4 } else { 8 };
            if let Some((id, number)) = self.shared.number(
                packet.header.ssrc,
                packet.header.sequence_number,
                size,
                msg.now,
            ) {
                let extension = rtc::rtp::extension::transport_cc_extension::TransportCcExtension {
                    transport_sequence: number,
                };
                if let Ok(data) = extension.marshal() {
                    let _ = packet.header.set_extension(id, data.freeze());
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.shared.state().estimator.handle_timeout(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.shared.state().estimator.poll_timeout()
    }
}

impl Interceptor for TransportWideCc {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(ext) = info
            .rtp_header_extensions
            .iter()
            .find(|e| e.uri == TRANSPORT_CC_URI)
            && let Ok(id) = u8::try_from(ext.id)
            && (1..=14).contains(&id)
        {
            self.shared.state().streams.insert(info.ssrc, id);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.shared.state().streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, StatusVectorChunk, SymbolSizeTypeTcc, SymbolTypeTcc,
    };

    /// Feedback that `count` packets from `base` arrived (or not), 1 ms apart.
    fn feedback(base: u16, arrived: &[bool]) -> TransportLayerCc {
        let symbols: Vec<SymbolTypeTcc> = arrived
            .iter()
            .map(|&a| {
                if a {
                    SymbolTypeTcc::PacketReceivedSmallDelta
                } else {
                    SymbolTypeTcc::PacketNotReceived
                }
            })
            .collect();
        let chunks = symbols
            .chunks(7)
            .map(|c| {
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: rtc::rtcp::transport_feedbacks::transport_layer_cc::StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list: c.to_vec(),
                })
            })
            .collect();
        let recv_deltas = arrived
            .iter()
            .filter(|&&a| a)
            .map(|_| RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 1_000,
            })
            .collect();
        TransportLayerCc {
            base_sequence_number: base,
            packet_status_count: arrived.len() as u16,
            packet_chunks: chunks,
            recv_deltas,
            ..Default::default()
        }
    }

    #[test]
    fn packets_are_numbered_in_turn_and_reported_in_send_order() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        let numbers: Vec<u16> = (0..5)
            .map(|i| history.record(7, 100 + i, 200, t0 + Duration::from_millis(i as u64)))
            .collect();
        assert_eq!(numbers, vec![0, 1, 2, 3, 4]);
        assert!(history.take_reports().is_empty(), "nothing reported yet");

        // 0 and 1 arrived, 2 lost, 3 arrived; 4 not reported yet.
        history.on_feedback(&feedback(0, &[true, true, false, true]));
        let reports = history.take_reports();
        let fates: Vec<(u16, bool)> = reports
            .iter()
            .map(|r| (r.rtp_sequence_number, r.arrived))
            .collect();
        assert_eq!(
            fates,
            vec![(100, true), (101, true), (102, false), (103, true)]
        );
        assert!(reports.iter().all(|r| r.size == 200 && r.ssrc == 7));
        let departures: Vec<Instant> = reports.iter().map(|r| r.departure).collect();
        let sent: Vec<Instant> = (0..4).map(|i| t0 + Duration::from_millis(i)).collect();
        assert_eq!(departures, sent, "departures kept to the microsecond");
        assert!(
            reports[1].arrival > reports[0].arrival,
            "arrivals accumulate"
        );
        assert!(
            history.take_reports().is_empty(),
            "each packet is reported once"
        );

        history.on_feedback(&feedback(4, &[true]));
        let reports = history.take_reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].rtp_sequence_number, 104);
    }

    #[test]
    fn numbers_wrap_on_the_wire_and_feedback_still_finds_them() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        let mut last = 0;
        for i in 0..70_000u32 {
            // Spread over time so the horizon keeps the history short.
            last = history.record(1, i as u16, 100, t0 + Duration::from_micros(i as u64 * 100));
            if i % 1_000 == 0 {
                history.take_reports();
            }
        }
        assert_eq!(last, (69_999u32 % 65_536) as u16);
        history.on_feedback(&feedback(last.wrapping_sub(1), &[true, true]));
        let reports = history.take_reports();
        let tail: Vec<u16> = reports
            .iter()
            .rev()
            .take(2)
            .map(|r| r.rtp_sequence_number)
            .collect();
        assert_eq!(tail, vec![69_999u32 as u16, 69_998u32 as u16]);
        assert_eq!(reports.last().map(|r| r.id), Some(69_999), "unwrapped ids");
        let lost = reports.iter().filter(|r| !r.arrived).count();
        assert_eq!(
            lost,
            reports.len() - 2,
            "the unreported before them count as lost"
        );
    }

    #[test]
    fn a_sent_packet_costs_24_bytes_of_history() {
        // 2,450 packets a second for a member hearing 49 microphones, for a second: this
        // is most of a member's memory that grows with the room.
        assert_eq!(std::mem::size_of::<Sent>(), 24);
    }

    #[test]
    fn the_history_is_bounded_by_age_and_count() {
        let t0 = Instant::now();
        let mut history = SendHistory::default();
        for i in 0..(MAX_OUTSTANDING as u32 * 2) {
            history.record(1, i as u16, 100, t0);
        }
        assert_eq!(
            history.outstanding(),
            MAX_OUTSTANDING,
            "a member that never reports"
        );
        history.record(1, 0, 100, t0 + HORIZON + Duration::from_millis(1));
        assert_eq!(
            history.outstanding(),
            1,
            "older than the horizon is forgotten"
        );
        // Feedback about forgotten packets is ignored.
        history.on_feedback(&feedback(0, &[true; 5]));
        assert!(history.take_reports().is_empty());
    }
}

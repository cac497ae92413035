//! A budget for retransmissions on one connection: an interceptor, wire-ward of the NACK
//! responder, that lets retransmitted RTP through up to a share of the connection's
//! bandwidth estimate ([`RETRANSMISSION_SHARE`]) and drops the rest. It owns only its own
//! record of what was sent; it never delays a packet and never touches a first copy.
//!
//! Why: the NACK responder resends whatever a receiver asks for, as often as it asks. On a
//! link that is full, what it resends is lost again and asked for again: a receiver whose
//! NACKs are not capped (webrtc-rs's default) kept a 400 kbit/s link full with resends
//! alone, the estimate fell to its floor, and the viewer's video stayed paused and its
//! audio lossy. Without an estimate (a client that sends no transport-wide feedback) the
//! budget does not apply.

use super::estimator::DownlinkEstimate;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// The share of the estimate retransmissions may take.
pub const RETRANSMISSION_SHARE: f64 = 0.2;
/// How far back a packet is recognised as sent before (sequence numbers per stream).
const HISTORY: usize = 1024;
/// The budget may save up this many seconds' worth (a burst of resends after one loss).
const BURST_SECONDS: f64 = 0.25;

/// The sequence numbers recently sent on one stream.
struct Sent {
    /// Slot `seq % HISTORY` holds the last sequence number sent there.
    seqs: Box<[Option<u16>; HISTORY]>,
}

impl Sent {
    fn new() -> Sent {
        Sent {
            seqs: Box::new([None; HISTORY]),
        }
    }

    /// Records `seq`; whether it was sent before (a retransmission).
    fn record(&mut self, seq: u16) -> bool {
        let slot = &mut self.seqs[usize::from(seq) % HISTORY];
        let again = *slot == Some(seq);
        *slot = Some(seq);
        again
    }
}

/// Whether the stream negotiated generic NACK (`a=rtcp-fb:PT nack`), as the NACK responder
/// decides whether to keep copies of it.
fn supports_nack(info: &StreamInfo) -> bool {
    info.rtcp_feedback
        .iter()
        .any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
}

pub struct RetransmissionBudget {
    estimate: Arc<DownlinkEstimate>,
    /// Per stream this connection sends (bound by the peer connection, one per forwarded
    /// track).
    sent: FxHashMap<u32, Sent>,
    /// Bits of retransmission that may go now.
    tokens: f64,
    refilled: Option<Instant>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RetransmissionBudget {
    pub fn new(estimate: Arc<DownlinkEstimate>) -> RetransmissionBudget {
        RetransmissionBudget {
            estimate,
            sent: FxHashMap::default(),
            tokens: 0.0,
            refilled: None,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    /// Whether a retransmission of `bytes` fits the budget at `now` (and spends it if so).
    fn afford(&mut self, now: Instant, bytes: usize) -> bool {
        let Some(estimate) = self.estimate.get() else {
            return true;
        };
        let rate = estimate as f64 * RETRANSMISSION_SHARE;
        let elapsed = self
            .refilled
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.refilled = Some(now);
        self.tokens = (self.tokens + elapsed * rate).min(rate * BURST_SECONDS);
        let cost = (bytes * 8) as f64;
        if cost > self.tokens {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RetransmissionBudget {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(sent) = self.sent.get_mut(&packet.header.ssrc)
            && sent.record(packet.header.sequence_number)
            && !self.afford(msg.now, packet.payload.len() + 12)
        {
            return Ok(());
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for RetransmissionBudget {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        // Only a stream that negotiated NACK is ever resent (the NACK responder keeps no
        // copies of the others): Opus legs have none, and a room's microphones are most of
        // its forwarded tracks, so they get no 4 kB history each.
        if supports_nack(info) {
            self.sent.insert(info.ssrc, Sent::new());
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.sent.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, RTCPFeedback};
    use rtc::shared::{TransportContext, TransportMessage};
    use std::time::Duration;

    fn rtp(now: Instant, ssrc: u32, seq: u16) -> TaggedPacket {
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    ssrc,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: bytes::Bytes::from(vec![0u8; 988]),
            })),
        }
    }

    /// Writes each packet; how many went through.
    fn passed(budget: &mut RetransmissionBudget, packets: Vec<TaggedPacket>) -> usize {
        let mut n = 0;
        for p in packets {
            budget.handle_write(p).expect("written");
            while budget.poll_write().is_some() {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn first_copies_always_pass_and_resends_only_within_the_budget() {
        let estimate = Arc::new(DownlinkEstimate::default());
        let mut budget = RetransmissionBudget::new(estimate.clone());
        budget.bind_local_stream(&StreamInfo {
            ssrc: 7,
            rtcp_feedback: vec![
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: String::new(),
                },
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: "pli".into(),
                },
            ],
            ..Default::default()
        });
        let t0 = Instant::now();
        // No estimate: nothing is held back, resends included.
        let first: Vec<_> = (0..10).map(|s| rtp(t0, 7, s)).collect();
        assert_eq!(passed(&mut budget, first), 10);
        assert_eq!(passed(&mut budget, vec![rtp(t0, 7, 3)]), 1);

        // 400 kbit/s: resends may take 80 kbit/s, 10 kB a second of 1,000-byte packets.
        estimate.set(400_000);
        let t1 = t0 + Duration::from_secs(1);
        let resends: Vec<_> = (0..10).map(|s| rtp(t1, 7, s)).collect();
        // The first goes at once only if saved up: none is (the clock starts now).
        assert_eq!(passed(&mut budget, resends), 0);
        let t2 = t1 + Duration::from_secs(1);
        let resends: Vec<_> = (0..10).map(|s| rtp(t2, 7, s)).collect();
        // A quarter second's worth saved up: 20,000 bits, two packets of 8,000.
        assert_eq!(passed(&mut budget, resends), 2);
        // New packets pass however spent the budget is, as do streams it was not told of.
        let new: Vec<_> = (10..40).map(|s| rtp(t2, 7, s)).collect();
        assert_eq!(passed(&mut budget, new), 30);
        assert_eq!(passed(&mut budget, vec![rtp(t2, 8, 1), rtp(t2, 8, 1)]), 2);
    }

    #[test]
    fn streams_without_nack_keep_no_history() {
        let mut budget = RetransmissionBudget::new(Arc::new(DownlinkEstimate::default()));
        // An Opus leg: picture-loss feedback at most, no generic NACK.
        budget.bind_local_stream(&StreamInfo {
            ssrc: 9,
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            }],
            ..Default::default()
        });
        assert!(budget.sent.is_empty());
        budget.bind_local_stream(&StreamInfo {
            ssrc: 10,
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        assert_eq!(budget.sent.len(), 1);
    }
}

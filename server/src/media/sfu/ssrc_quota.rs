//! How many synchronisation sources (SSRCs) one connection's client may send from: a bound
//! on what the WebRTC stack keeps per source.
//!
//! webrtc-rs keeps a decryption state (rollover or index counter, replay window) for every
//! SSRC that reaches a connection, in SRTP and in SRTCP, for as long as the connection
//! lives, and has no way to forget one. The SSRC is in the clear and the client picks it,
//! so a client changing it on every packet grows the server's memory without end. Not only
//! a hostile one: webrtc-rs as a client picks a new random sender SSRC for the receiver
//! reports of every stream it binds, on every renegotiation (the soak's bots made about
//! 30 a second, and the server's live heap grew by 0.3 MiB a minute).
//!
//! A browser sends from a few: its own media streams (with their retransmission streams),
//! and one fixed sender SSRC for its reports. So the media port lets each connection use
//! [`MAX_SSRCS_PER_KIND`] distinct SSRCs in RTP and as many in RTCP, and drops packets
//! from further ones (`quad_sfu_udp_ssrc_refused_total`). The other datagrams (ICE, DTLS)
//! are not looked at.

use rustc_hash::FxHashSet;

/// Distinct SSRCs one connection may send RTP from, and as many RTCP.
///
/// A browser in a room uses about ten for RTP (a microphone; a camera's three simulcast
/// layers and their retransmission streams; a screen and its retransmissions) and one or
/// a few for RTCP; each costs the server a few hundred bytes.
pub const MAX_SSRCS_PER_KIND: usize = 256;

/// The SSRCs a connection's client has sent from (see the module's text).
#[derive(Debug, Default)]
pub struct SsrcQuota {
    rtp: FxHashSet<u32>,
    rtcp: FxHashSet<u32>,
}

/// What a datagram is, as far as the quota cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// RTP from this SSRC.
    Rtp(u32),
    /// RTCP whose (first) packet's sender is this SSRC.
    Rtcp(u32),
    /// ICE, DTLS, or a datagram too short to say.
    Other,
}

impl Source {
    /// Reads the SSRC of an (encrypted) RTP or RTCP datagram: its first 12 bytes are in the
    /// clear. RTP and RTCP are told apart by the payload type (RFC 5761: 192-223 is RTCP).
    pub fn of(datagram: &[u8]) -> Source {
        // RFC 7983: a first byte of 128-191 is RTP or RTCP (version 2).
        let Some(&first) = datagram.first() else {
            return Source::Other;
        };
        if !(128..=191).contains(&first) {
            return Source::Other;
        }
        let ssrc_at = |at: usize| {
            datagram
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
        };
        let is_rtcp = datagram.get(1).is_some_and(|pt| (192..=223).contains(pt));
        let source = if is_rtcp {
            ssrc_at(4).map(Source::Rtcp)
        } else {
            ssrc_at(8).map(Source::Rtp)
        };
        source.unwrap_or(Source::Other)
    }
}

impl SsrcQuota {
    /// Whether `datagram` may reach the connection: it is not RTP or RTCP, or its SSRC was
    /// seen before, or the connection has sources left (then this one is remembered).
    pub fn admit(&mut self, datagram: &[u8]) -> bool {
        let (seen, ssrc) = match Source::of(datagram) {
            Source::Rtp(ssrc) => (&mut self.rtp, ssrc),
            Source::Rtcp(ssrc) => (&mut self.rtcp, ssrc),
            Source::Other => return true,
        };
        if seen.contains(&ssrc) {
            return true;
        }
        if seen.len() >= MAX_SSRCS_PER_KIND {
            return false;
        }
        seen.insert(ssrc);
        true
    }

    /// Distinct SSRCs seen: (RTP, RTCP).
    #[cfg(test)]
    fn used(&self) -> (usize, usize) {
        (self.rtp.len(), self.rtcp.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 111, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0; 20]);
        p
    }

    /// An SRTCP receiver report (header, sender SSRC, then ciphertext and the index).
    fn rtcp(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x80, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        p
    }

    #[test]
    fn the_ssrc_is_read_where_rtp_and_rtcp_keep_it() {
        assert_eq!(Source::of(&rtp(0xdead_beef)), Source::Rtp(0xdead_beef));
        assert_eq!(Source::of(&rtcp(7)), Source::Rtcp(7));
        // Marker bit set, payload type 96: RTP, not RTCP.
        let mut marked = rtp(5);
        marked[1] = 0x80 | 96;
        assert_eq!(Source::of(&marked), Source::Rtp(5));
        // STUN (first byte 0-3), DTLS (20-63), and cut packets are not looked at.
        assert_eq!(Source::of(&[0, 1, 0, 0]), Source::Other);
        assert_eq!(Source::of(&[22, 254, 253, 0]), Source::Other);
        assert_eq!(Source::of(&rtp(1)[..11]), Source::Other);
        assert_eq!(Source::of(&rtcp(1)[..7]), Source::Other);
        assert_eq!(Source::of(&[]), Source::Other);
    }

    #[test]
    fn a_connection_may_send_from_so_many_sources_and_no_more() {
        let mut quota = SsrcQuota::default();
        for ssrc in 0..MAX_SSRCS_PER_KIND as u32 {
            assert!(quota.admit(&rtp(ssrc)), "rtp {ssrc}");
            assert!(quota.admit(&rtcp(1_000_000 + ssrc)), "rtcp {ssrc}");
        }
        assert_eq!(quota.used(), (MAX_SSRCS_PER_KIND, MAX_SSRCS_PER_KIND));
        // New sources are refused, and nothing more is remembered...
        for ssrc in 5_000..10_000 {
            assert!(!quota.admit(&rtp(ssrc)));
            assert!(!quota.admit(&rtcp(ssrc)));
        }
        assert_eq!(quota.used(), (MAX_SSRCS_PER_KIND, MAX_SSRCS_PER_KIND));
        // ...while the known ones, and ICE and DTLS, go on.
        assert!(quota.admit(&rtp(3)));
        assert!(quota.admit(&rtcp(1_000_003)));
        assert!(quota.admit(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]));
        assert!(quota.admit(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn rtp_and_rtcp_sources_are_counted_apart() {
        let mut quota = SsrcQuota::default();
        for ssrc in 0..MAX_SSRCS_PER_KIND as u32 {
            assert!(quota.admit(&rtcp(ssrc)));
        }
        // The RTCP allowance is spent; the same SSRCs as RTP are still new and welcome.
        assert!(!quota.admit(&rtcp(u32::MAX)));
        assert!(quota.admit(&rtp(0)) && quota.admit(&rtp(u32::MAX)));
    }
}

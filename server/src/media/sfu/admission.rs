//! What client signaling the SFU takes, checked at its front door before anything reaches
//! a member's connection:
//! - an offer has at most one m-line per device a client publishes (microphone, camera,
//!   screen); a bigger one costs the server work for nothing and is refused;
//! - ICE candidates, trickled or inside an offer, that name an address the egress policy
//!   refuses (loopback, private, the server's own, ...) or no address at all (an mDNS
//!   name) are left out, so a client cannot make the server send connectivity checks into
//!   networks only the server reaches. The client's own checks still reach the server,
//!   which answers them where they came from (a peer-reflexive candidate): that is how a
//!   browser on the server's own network connects.
//!
//! Pure functions: no I/O, no state.

use crate::egress::EgressPolicy;
use quad_shared::protocol::{ErrorCode, ErrorMsg, SdpKind, Signal};
use std::net::IpAddr;

/// M-lines a client's offer may have: one per device it publishes, in
/// [`super::Source`] order.
pub const MAX_CLIENT_M_LINES: usize = 3;

/// The signal to pass on (with refused candidates left out), `None` to drop it quietly (a
/// refused trickled candidate), or the error to answer.
pub fn admit(signal: Signal, policy: &EgressPolicy) -> Result<Option<Signal>, ErrorMsg> {
    match signal {
        Signal::Description {
            kind: SdpKind::Offer,
            sdp,
        } => {
            let m_lines = sdp.lines().filter(|l| l.starts_with("m=")).count();
            if m_lines > MAX_CLIENT_M_LINES {
                return Err(ErrorMsg::new(
                    ErrorCode::Malformed,
                    format!(
                        "an offer with {m_lines} m-lines: a client publishes at most \
                         {MAX_CLIENT_M_LINES} (microphone, camera, screen)"
                    ),
                ));
            }
            let sdp = without_refused_candidates(&sdp, policy);
            Ok(Some(Signal::Description {
                kind: SdpKind::Offer,
                sdp,
            }))
        }
        Signal::Candidate {
            candidate,
            sdp_mid,
            sdp_m_line_index,
        } => {
            // An empty candidate marks the end of candidates.
            if !candidate.is_empty() && !candidate_allowed(&candidate, policy) {
                tracing::debug!("a room candidate left out: {candidate}");
                return Ok(None);
            }
            Ok(Some(Signal::Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            }))
        }
        other => Ok(Some(other)),
    }
}

/// Whether an ICE candidate (`candidate:...`, with or without `a=`) names an address the
/// policy allows.
pub fn candidate_allowed(candidate: &str, policy: &EgressPolicy) -> bool {
    let line = candidate.trim().trim_start_matches("a=");
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    line.split_whitespace()
        .nth(4)
        .and_then(|a| a.parse::<IpAddr>().ok())
        .is_some_and(|ip| policy.check(ip).is_ok())
}

/// `sdp` without the `a=candidate` lines the policy refuses.
fn without_refused_candidates(sdp: &str, policy: &EgressPolicy) -> String {
    let ending = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        if line.starts_with("a=candidate:") && !candidate_allowed(line, policy) {
            continue;
        }
        out.push_str(line);
        out.push_str(ending);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(m_lines: usize, candidates: &[&str]) -> Signal {
        let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for i in 0..m_lines {
            sdp.push_str(&format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\n"));
            for c in candidates {
                sdp.push_str(&format!("a={c}\r\n"));
            }
        }
        Signal::Description {
            kind: SdpKind::Offer,
            sdp,
        }
    }

    const PUBLIC: &str = "candidate:1 1 udp 2122260223 8.8.8.8 50000 typ host";
    const LOOPBACK: &str = "candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host";
    const PRIVATE: &str = "candidate:3 1 udp 2122260223 192.168.1.5 50002 typ host";
    const MDNS: &str = "candidate:4 1 udp 2122260223 abcd.local 50003 typ host";

    #[test]
    fn offers_with_more_m_lines_than_devices_are_refused() {
        let policy = EgressPolicy::default();
        assert!(admit(offer(3, &[]), &policy).is_ok());
        let err = admit(offer(700, &[]), &policy).unwrap_err();
        assert!(err.message.contains("700 m-lines"), "{}", err.message);
    }

    #[test]
    fn refused_candidates_are_left_out_of_offers_and_trickle() {
        let policy = EgressPolicy::default();
        let Ok(Some(Signal::Description { sdp, .. })) =
            admit(offer(1, &[PUBLIC, LOOPBACK, PRIVATE, MDNS]), &policy)
        else {
            panic!("the offer was not passed on");
        };
        assert!(sdp.contains("8.8.8.8 50000"), "{sdp}");
        for gone in ["127.0.0.1 50001", "192.168.1.5", "abcd.local"] {
            assert!(!sdp.contains(gone), "{gone} kept in {sdp}");
        }
        assert!(sdp.contains("a=mid:0\r\n"));
        let trickled = |c: &str| Signal::Candidate {
            candidate: c.into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        };
        assert!(matches!(admit(trickled(LOOPBACK), &policy), Ok(None)));
        assert!(matches!(admit(trickled(MDNS), &policy), Ok(None)));
        assert!(matches!(admit(trickled(PUBLIC), &policy), Ok(Some(_))));
        assert!(matches!(admit(trickled(""), &policy), Ok(Some(_))));
        // An operator's range opens it.
        let lan = EgressPolicy::new(
            crate::egress::parse_ranges(&["192.168.0.0/16".into()]).expect("range"),
            Vec::new(),
        );
        assert!(matches!(admit(trickled(PRIVATE), &lan), Ok(Some(_))));
    }
}

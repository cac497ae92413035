//! Forwarded microphones on m-lines Quad writes itself, so that webrtc-rs keeps no state
//! for them.
//!
//! A webrtc-rs transceiver costs about 21 kB (its sender's event queue, parameters, codec
//! preferences and its copies of the descriptions), and a member hearing 49 microphones had
//! 49 of them: about 1 MB a member before anything of Quad's. A forwarded microphone needs
//! none of it: its packets go out on the direct path (`direct`), and the only feedback a
//! browser sends about them, transport-wide, is read before webrtc-rs routes anything.
//!
//! So each forwarded microphone is a [`MicLine`]: a send-only audio m-section written into
//! the server's offers after webrtc-rs made them ([`MicLines::offer`]) and taken out of
//! the client's answers before webrtc-rs reads them ([`MicLines::answer`]). webrtc-rs
//! matches an answer's m-sections to its transceivers by `mid`, so the sections it never
//! offered are never missed. The browser sees ordinary m-lines, with the same transport
//! (they are bundled, and carry the ICE and DTLS attributes of the section they copy).
//!
//! The rules the splice keeps:
//! - m-lines are never removed or reordered (RFC 3264): [`MicLines`] remembers the order
//!   the client was offered, and webrtc-rs's new m-lines come after Quad's older ones;
//! - a line copies the first live audio m-section of webrtc-rs's offer (codecs, header
//!   extensions, ICE and DTLS attributes, so an ICE restart renews them too) and adds its
//!   own `mid`, direction, `msid` and SSRC;
//! - a line whose stream ended is offered inactive and kept for the next stream (its SSRC,
//!   track id and numbering go on), so a connection has at most as many lines as it ever
//!   forwarded microphones at once, and never more than [`MAX_LINES`];
//! - the client's answer says, per line, whether it takes it, with which payload type and
//!   which transport-wide extension id ([`Accepted`]).
//!
//! Plain data in, plain data out: the member task (`member`) does the I/O.

use super::forward::Numbering;
use super::transport_cc::TRANSPORT_CC_URI;
use std::fmt;
use std::sync::Arc;

/// The most microphone lines one connection keeps: more microphones than any room holds.
pub const MAX_LINES: usize = 512;

/// What the client's last answer said about a line it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Opus's payload type.
    pub payload_type: u8,
    /// The transport-wide sequence number extension's id, if the client takes it.
    pub transport_cc: Option<u8>,
}

/// One microphone m-line (see the module docs).
#[derive(Debug)]
pub struct MicLine {
    mid: String,
    pub ssrc: u32,
    /// The track id of its `msid` (kept when the stream changes).
    track_id: String,
    /// The stream it carries (its `msid`'s stream id); `None`: idle, offered inactive.
    stream: Option<String>,
    /// The last sequence number and timestamp sent on it (the next stream numbers on).
    pub numbering: Arc<Numbering>,
    /// What the last answer said, if it took the line.
    accepted: Option<Accepted>,
}

/// A line, as [`MicLines`] hands it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LineId(usize);

/// Why an offer or answer could not be spliced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpliceError {
    /// webrtc-rs's offer has no live audio m-section to copy.
    NoAudioSection,
    /// An m-section without a `mid`.
    NoMid,
    /// webrtc-rs's offer lacks an m-line the client was offered before.
    LostMLine(String),
    /// The client's answer lacks one of Quad's lines.
    Unanswered(String),
}

impl fmt::Display for SpliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpliceError::NoAudioSection => write!(f, "no audio m-section to copy"),
            SpliceError::NoMid => write!(f, "an m-section without a mid"),
            SpliceError::LostMLine(mid) => write!(f, "m-line {mid} went missing from the offer"),
            SpliceError::Unanswered(mid) => write!(f, "the answer lacks m-line {mid}"),
        }
    }
}

impl std::error::Error for SpliceError {}

/// A connection's microphone lines and the order of its m-lines (see the module docs).
#[derive(Debug, Default)]
pub struct MicLines {
    lines: Vec<MicLine>,
    /// Every m-line's mid in the order the client was last offered them.
    order: Vec<String>,
}

impl MicLines {
    /// A line for `stream` (a [`quad_shared::media::StreamLabel`]): an idle one if there is
    /// one, a new one otherwise; `None` past [`MAX_LINES`].
    pub fn take(&mut self, stream: String) -> Option<LineId> {
        if let Some(at) = self.lines.iter().position(|l| l.stream.is_none()) {
            self.lines[at].stream = Some(stream);
            return Some(LineId(at));
        }
        if self.lines.len() >= MAX_LINES {
            return None;
        }
        let at = self.lines.len();
        self.lines.push(MicLine {
            // Not a number: webrtc-rs numbers its own m-lines.
            mid: format!("q{at}"),
            ssrc: rand::random(),
            track_id: stream.clone(),
            stream: Some(stream),
            numbering: Arc::default(),
            accepted: None,
        });
        Some(LineId(at))
    }

    /// The line's stream ended: it is offered inactive from the next offer on, and kept
    /// for the next stream.
    pub fn release(&mut self, id: LineId) {
        if let Some(line) = self.lines.get_mut(id.0) {
            line.stream = None;
        }
    }

    pub fn line(&self, id: LineId) -> Option<&MicLine> {
        self.lines.get(id.0)
    }

    /// What the last answer said about the line, if it took it.
    pub fn accepted(&self, id: LineId) -> Option<Accepted> {
        self.lines.get(id.0)?.accepted
    }

    /// How many lines there are, idle or not.
    pub fn count(&self) -> usize {
        self.lines.len()
    }

    /// How many lines are idle.
    pub fn idle(&self) -> usize {
        self.lines.iter().filter(|l| l.stream.is_none()).count()
    }

    /// The offer for the client: webrtc-rs's `engine` offer with the microphone lines
    /// written in, every m-line where the client saw it before.
    pub fn offer(&mut self, engine: &str) -> Result<String, SpliceError> {
        let sdp = Sdp::parse(engine);
        let mut engine_mids = Vec::with_capacity(sdp.sections.len());
        for section in &sdp.sections {
            engine_mids.push(section.mid().ok_or(SpliceError::NoMid)?);
        }
        if self.lines.is_empty() && self.order.is_empty() {
            // Nothing of Quad's: webrtc-rs's offer as it is.
            return Ok(engine.to_owned());
        }
        let template = sdp
            .sections
            .iter()
            .find(|s| s.kind() == Some("audio") && !s.rejected());
        let template = match template {
            Some(t) => t,
            None if self.lines.is_empty() => return Ok(engine.to_owned()),
            None => return Err(SpliceError::NoAudioSection),
        };
        let mut order = self.order.clone();
        for mid in &engine_mids {
            if !order.iter().any(|m| m == mid) {
                order.push((*mid).to_owned());
            }
        }
        for line in &self.lines {
            if !order.contains(&line.mid) {
                order.push(line.mid.clone());
            }
        }
        let bundled = sdp.bundle();
        let mut out = String::with_capacity(engine.len() + self.lines.len() * 600);
        for line in &sdp.session {
            if line.starts_with(BUNDLE) {
                out.push_str(BUNDLE);
                for mid in &order {
                    if bundled.contains(&mid.as_str()) || self.find(mid).is_some() {
                        out.push(' ');
                        out.push_str(mid);
                    }
                }
                out.push_str("\r\n");
            } else {
                push_line(&mut out, line);
            }
        }
        for mid in &order {
            if let Some(line) = self.find(mid) {
                line.write(template, &mut out);
            } else if let Some(at) = engine_mids.iter().position(|m| m == mid) {
                for line in &sdp.sections[at].lines {
                    push_line(&mut out, line);
                }
            } else {
                return Err(SpliceError::LostMLine(mid.clone()));
            }
        }
        self.order = order;
        Ok(out)
    }

    /// The client's answer for webrtc-rs: without the microphone lines (and their mids in
    /// the bundle), which are read here ([`MicLines::accepted`]).
    pub fn answer(&mut self, client: &str) -> Result<String, SpliceError> {
        let sdp = Sdp::parse(client);
        let mut answered = vec![None; self.lines.len()];
        let mut kept = Vec::with_capacity(sdp.sections.len());
        for section in &sdp.sections {
            let mid = section.mid().ok_or(SpliceError::NoMid)?;
            match self.lines.iter().position(|l| l.mid == mid) {
                Some(at) => answered[at] = Some(section.accepted()),
                None => kept.push(section),
            }
        }
        for (line, answer) in self.lines.iter().zip(&answered) {
            // A line made after the offer this answers is in the next one.
            if answer.is_none() && self.order.contains(&line.mid) {
                return Err(SpliceError::Unanswered(line.mid.clone()));
            }
        }
        for (line, answer) in self.lines.iter_mut().zip(answered) {
            if let Some(accepted) = answer {
                line.accepted = accepted;
            }
        }
        if kept.len() == sdp.sections.len() {
            return Ok(client.to_owned());
        }
        let mut out = String::with_capacity(client.len());
        for line in &sdp.session {
            if let Some(mids) = line.strip_prefix(BUNDLE) {
                out.push_str(BUNDLE);
                for mid in mids.split_ascii_whitespace() {
                    if self.find(mid).is_none() {
                        out.push(' ');
                        out.push_str(mid);
                    }
                }
                out.push_str("\r\n");
            } else {
                push_line(&mut out, line);
            }
        }
        for section in kept {
            for line in &section.lines {
                push_line(&mut out, line);
            }
        }
        Ok(out)
    }

    fn find(&self, mid: &str) -> Option<&MicLine> {
        self.lines.iter().find(|l| l.mid == mid)
    }
}

const BUNDLE: &str = "a=group:BUNDLE";

/// Direction attributes, which a line sets for itself.
const DIRECTIONS: [&str; 4] = ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"];

/// Attributes of the copied section that name its own streams, which a line leaves out.
const OWN_STREAMS: [&str; 5] = [
    "a=msid:",
    "a=ssrc:",
    "a=ssrc-group:",
    "a=rid:",
    "a=simulcast:",
];

impl MicLine {
    /// Writes this line's m-section, copied from `template`.
    fn write(&self, template: &Section<'_>, out: &mut String) {
        let direction = match self.stream {
            Some(_) => "a=sendonly",
            None => "a=inactive",
        };
        let mut directed = false;
        for line in &template.lines {
            if line.starts_with("a=mid:") {
                out.push_str("a=mid:");
                out.push_str(&self.mid);
                out.push_str("\r\n");
            } else if DIRECTIONS.contains(line) {
                push_line(out, direction);
                directed = true;
            } else if !OWN_STREAMS.iter().any(|a| line.starts_with(a)) {
                push_line(out, line);
            }
        }
        if !directed {
            push_line(out, direction);
        }
        if let Some(stream) = &self.stream {
            let (ssrc, track) = (self.ssrc, &self.track_id);
            out.push_str(&format!(
                "a=msid:{stream} {track}\r\na=ssrc:{ssrc} cname:{stream}\r\n\
                 a=ssrc:{ssrc} msid:{stream} {track}\r\n"
            ));
        }
    }
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push_str("\r\n");
}

/// An SDP as lines: the session part and each m-section (from its `m=` line).
struct Sdp<'a> {
    session: Vec<&'a str>,
    sections: Vec<Section<'a>>,
}

struct Section<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Sdp<'a> {
    fn parse(sdp: &'a str) -> Sdp<'a> {
        let mut parsed = Sdp {
            session: Vec::new(),
            sections: Vec::new(),
        };
        for line in sdp.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if line.starts_with("m=") {
                parsed.sections.push(Section { lines: vec![line] });
            } else if let Some(section) = parsed.sections.last_mut() {
                section.lines.push(line);
            } else {
                parsed.session.push(line);
            }
        }
        parsed
    }

    /// The mids of the session's BUNDLE group.
    fn bundle(&self) -> Vec<&'a str> {
        self.session
            .iter()
            .find_map(|l| l.strip_prefix(BUNDLE))
            .map(|mids| mids.split_ascii_whitespace().collect())
            .unwrap_or_default()
    }
}

impl<'a> Section<'a> {
    fn attribute(&self, name: &str) -> Option<&'a str> {
        self.lines.iter().find_map(|l| l.strip_prefix(name))
    }

    fn mid(&self) -> Option<&'a str> {
        self.attribute("a=mid:").map(str::trim)
    }

    /// `audio`, `video` or `application`.
    fn kind(&self) -> Option<&'a str> {
        self.lines.first()?.strip_prefix("m=")?.split(' ').next()
    }

    /// Port 0: the m-line is rejected or stopped.
    fn rejected(&self) -> bool {
        self.lines
            .first()
            .and_then(|m| m.split(' ').nth(1))
            .is_none_or(|port| port == "0")
    }

    /// What an answer's section for one of Quad's lines says: `None` if the client does
    /// not take it (rejected, inactive, or without Opus).
    fn accepted(&self) -> Option<Accepted> {
        if self.rejected() || self.lines.contains(&"a=inactive") {
            return None;
        }
        let payload_type = self.lines.iter().find_map(|l| {
            let (pt, codec) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
            codec
                .to_ascii_lowercase()
                .starts_with("opus/")
                .then(|| pt.parse().ok())?
        })?;
        let transport_cc = self.lines.iter().find_map(|l| {
            let (id, uri) = l.strip_prefix("a=extmap:")?.split_once(' ')?;
            let id = id.split('/').next()?.parse::<u8>().ok()?;
            (uri.split(' ').next() == Some(TRANSPORT_CC_URI) && (1..=14).contains(&id))
                .then_some(id)
        });
        Some(Accepted {
            payload_type,
            transport_cc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer as webrtc-rs makes it for a member: the client's microphone, camera and
    /// screen (received), and one forwarded camera (sent).
    fn engine_offer(ufrag: &str, extra_video: bool) -> String {
        let mut sdp = format!(
            "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB:CD\r\n\
             a=extmap-allow-mixed\r\na=group:BUNDLE 0 1 2 3{}\r\n",
            if extra_video { " 4" } else { "" }
        );
        let transport = format!(
            "c=IN IP4 0.0.0.0\r\na=setup:passive\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:pwd{ufrag}\r\n\
             a=rtcp-mux\r\na=rtcp-rsize\r\n"
        );
        sdp += &format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{transport}a=mid:0\r\n\
             a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
             a=extmap:3 {TRANSPORT_CC_URI}\r\na=rtpmap:111 opus/48000/2\r\n\
             a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtcp-fb:111 transport-cc\r\n\
             a=recvonly\r\na=candidate:1 1 udp 2130706431 192.0.2.1 4000 typ host\r\n\
             a=end-of-candidates\r\n"
        );
        for mid in ["1", "2"] {
            sdp += &format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n{transport}a=mid:{mid}\r\n\
                 a=rtpmap:96 VP8/90000\r\na=recvonly\r\n"
            );
        }
        let sent = |mid: &str, ssrc: u32| {
            format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n{transport}a=mid:{mid}\r\n\
                 a=rtpmap:96 VP8/90000\r\na=msid:7:camera 7:camera\r\n\
                 a=ssrc:{ssrc} cname:7:camera\r\na=ssrc:{ssrc} msid:7:camera 7:camera\r\n\
                 a=sendonly\r\n"
            )
        };
        sdp += &sent("3", 1111);
        if extra_video {
            sdp += &sent("4", 2222);
        }
        sdp
    }

    /// The browser's answer to `offer`: each m-section's mid, direction flipped, its codec
    /// and extensions kept; `refuse` names mids it answers inactive.
    fn answer_to(offer: &str, refuse: &[&str]) -> String {
        let sdp = Sdp::parse(offer);
        let mut out = String::new();
        for line in &sdp.session {
            push_line(&mut out, line);
        }
        for section in &sdp.sections {
            let mid = section.mid().unwrap();
            for line in &section.lines {
                let line = match *line {
                    "a=sendonly" if refuse.contains(&mid) => "a=inactive",
                    "a=sendonly" => "a=recvonly",
                    "a=recvonly" => "a=sendonly",
                    l if l.starts_with("a=msid:") || l.starts_with("a=ssrc:") => continue,
                    l => l,
                };
                push_line(&mut out, line);
            }
        }
        out
    }

    fn mids(sdp: &str) -> Vec<String> {
        Sdp::parse(sdp)
            .sections
            .iter()
            .map(|s| s.mid().unwrap().to_owned())
            .collect()
    }

    fn section<'a>(sdp: &'a Sdp<'a>, mid: &str) -> &'a Section<'a> {
        sdp.sections.iter().find(|s| s.mid() == Some(mid)).unwrap()
    }

    #[test]
    fn without_lines_the_offer_is_webrtc_rss_own() {
        let mut lines = MicLines::default();
        let offer = engine_offer("u1", false);
        assert_eq!(lines.offer(&offer).unwrap(), offer);
        assert_eq!(
            lines.answer(&answer_to(&offer, &[])).unwrap(),
            answer_to(&offer, &[])
        );
    }

    #[test]
    fn a_line_copies_the_audio_section_and_names_its_stream() {
        let mut lines = MicLines::default();
        let id = lines.take("5:mic".into()).unwrap();
        let ssrc = lines.line(id).unwrap().ssrc;
        let offer = lines.offer(&engine_offer("u1", false)).unwrap();
        let sdp = Sdp::parse(&offer);
        assert_eq!(mids(&offer), ["0", "1", "2", "3", "q0"]);
        assert!(sdp.session.contains(&"a=group:BUNDLE 0 1 2 3 q0"));
        let line = section(&sdp, "q0");
        assert_eq!(line.lines[0], "m=audio 9 UDP/TLS/RTP/SAVPF 111");
        for copied in [
            "a=ice-ufrag:u1",
            "a=ice-pwd:pwdu1",
            "a=setup:passive",
            "a=rtpmap:111 opus/48000/2",
            "a=rtcp-fb:111 transport-cc",
            "a=candidate:1 1 udp 2130706431 192.0.2.1 4000 typ host",
        ] {
            assert!(line.lines.contains(&copied), "{copied} copied");
        }
        assert!(line.lines.contains(&"a=sendonly"));
        assert!(!line.lines.contains(&"a=recvonly"));
        assert!(line.lines.contains(&"a=msid:5:mic 5:mic"));
        let named = format!("a=ssrc:{ssrc} msid:5:mic 5:mic");
        assert!(line.lines.contains(&named.as_str()));
        assert_eq!(
            line.lines
                .iter()
                .filter(|l| l.starts_with("a=mid:"))
                .count(),
            1
        );
        // The copied section is left as it was.
        assert!(section(&sdp, "0").lines.contains(&"a=recvonly"));
    }

    #[test]
    fn the_answer_is_read_for_the_lines_and_handed_on_without_them() {
        let mut lines = MicLines::default();
        let a = lines.take("5:mic".into()).unwrap();
        let b = lines.take("6:mic".into()).unwrap();
        let offer = lines.offer(&engine_offer("u1", false)).unwrap();
        assert_eq!(lines.accepted(a), None, "not answered yet");
        let answer = answer_to(&offer, &["q1"]);
        let for_engine = lines.answer(&answer).unwrap();
        assert_eq!(mids(&for_engine), ["0", "1", "2", "3"]);
        assert!(for_engine.contains("a=group:BUNDLE 0 1 2 3\r\n"));
        assert!(!for_engine.contains("q0"));
        assert_eq!(
            lines.accepted(a),
            Some(Accepted {
                payload_type: 111,
                transport_cc: Some(3)
            })
        );
        assert_eq!(lines.accepted(b), None, "answered inactive");
    }

    #[test]
    fn m_lines_keep_their_places_and_new_ones_come_last() {
        let mut lines = MicLines::default();
        lines.take("5:mic".into()).unwrap();
        let first = lines.offer(&engine_offer("u1", false)).unwrap();
        lines.answer(&answer_to(&first, &[])).unwrap();
        // webrtc-rs adds a camera (mid 4) and another microphone comes.
        lines.take("6:mic".into()).unwrap();
        let second = lines.offer(&engine_offer("u1", true)).unwrap();
        assert_eq!(mids(&second), ["0", "1", "2", "3", "q0", "4", "q1"]);
        assert!(second.contains("a=group:BUNDLE 0 1 2 3 q0 4 q1\r\n"));
        // The answer handed to webrtc-rs has its own m-lines in its own order.
        let for_engine = lines.answer(&answer_to(&second, &[])).unwrap();
        assert_eq!(mids(&for_engine), ["0", "1", "2", "3", "4"]);
        // An m-line webrtc-rs drops cannot be hidden from the client.
        let mut without_3 = engine_offer("u1", true).replace("a=mid:3", "a=mid:9");
        without_3 = without_3.replace("BUNDLE 0 1 2 3 4", "BUNDLE 0 1 2 9 4");
        assert_eq!(
            lines.offer(&without_3),
            Err(SpliceError::LostMLine("3".into()))
        );
    }

    #[test]
    fn an_ended_stream_leaves_its_line_inactive_for_the_next() {
        let mut lines = MicLines::default();
        let a = lines.take("5:mic".into()).unwrap();
        let ssrc = lines.line(a).unwrap().ssrc;
        let offer = lines.offer(&engine_offer("u1", false)).unwrap();
        lines.answer(&answer_to(&offer, &[])).unwrap();
        lines.release(a);
        assert_eq!(lines.idle(), 1);
        let offer = lines.offer(&engine_offer("u2", false)).unwrap();
        let sdp = Sdp::parse(&offer);
        let line = section(&sdp, "q0");
        assert!(line.lines.contains(&"a=inactive"));
        assert!(
            line.lines.contains(&"a=ice-ufrag:u2"),
            "an ICE restart reaches it"
        );
        assert!(
            !line
                .lines
                .iter()
                .any(|l| l.starts_with("a=msid:") || l.starts_with("a=ssrc:"))
        );
        lines.answer(&answer_to(&offer, &[])).unwrap();
        assert_eq!(lines.accepted(a), None, "inactive is not taken");
        // The next microphone takes the same line: same mid, SSRC and track, its own stream.
        let b = lines.take("8:mic".into()).unwrap();
        assert_eq!(b, a);
        assert_eq!(lines.count(), 1);
        assert_eq!(lines.line(b).unwrap().ssrc, ssrc);
        let offer = lines.offer(&engine_offer("u2", false)).unwrap();
        assert!(offer.contains("a=msid:8:mic 5:mic\r\n"));
        assert_eq!(mids(&offer), ["0", "1", "2", "3", "q0"]);
    }

    #[test]
    fn lines_are_bounded() {
        let mut lines = MicLines::default();
        for i in 0..MAX_LINES {
            assert!(lines.take(format!("{i}:mic")).is_some());
        }
        assert_eq!(lines.take("x:mic".into()), None);
        lines.release(LineId(7));
        assert_eq!(lines.take("y:mic".into()), Some(LineId(7)));
    }

    #[test]
    fn an_answer_without_a_line_it_was_offered_is_refused() {
        let mut lines = MicLines::default();
        lines.take("5:mic".into()).unwrap();
        let offer = lines.offer(&engine_offer("u1", false)).unwrap();
        let answer = answer_to(&engine_offer("u1", false), &[]);
        assert_eq!(
            lines.answer(&answer),
            Err(SpliceError::Unanswered("q0".into()))
        );
        // A line made after the offer is not expected in its answer.
        lines.take("6:mic".into()).unwrap();
        assert!(lines.answer(&answer_to(&offer, &[])).is_ok());
        assert!(
            lines.answer("v=0\r\nm=audio 9 x 111\r\n").is_err(),
            "no mid"
        );
    }

    #[test]
    fn what_the_answer_takes() {
        let section = |lines: &str| {
            let sdp = format!("v=0\r\n{lines}");
            Sdp::parse(&sdp).sections[0].accepted()
        };
        assert_eq!(
            section(&format!(
                "m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=mid:q0\r\na=recvonly\r\n\
                 a=extmap:7/recvonly {TRANSPORT_CC_URI}\r\na=rtpmap:109 OPUS/48000/2\r\n"
            )),
            Some(Accepted {
                payload_type: 109,
                transport_cc: Some(7)
            })
        );
        assert_eq!(
            section("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:q0\r\na=rtpmap:111 opus/48000/2\r\n")
                .map(|a| a.transport_cc),
            Some(None),
            "without the extension"
        );
        assert_eq!(
            section("m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:q0\r\na=rtpmap:111 opus/48000/2\r\n"),
            None,
            "rejected"
        );
        assert_eq!(
            section("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:q0\r\na=rtpmap:0 PCMU/8000\r\n"),
            None,
            "no Opus"
        );
    }
}

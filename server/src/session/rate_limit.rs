//! Token buckets for what one client sends: one for all its frames, and one per kind of
//! message ([`Kind`]), with the allowances in one table ([`ALLOWANCES`]).

use quad_shared::protocol::{CHAT_BURST, CHAT_SECONDS_PER_MESSAGE, ClientMsg};
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimit {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    warned: Option<Instant>,
}

impl RateLimit {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        RateLimit {
            per_sec,
            burst,
            tokens: burst,
            last: Instant::now(),
            warned: None,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    /// Takes one token if there is one at `now`.
    pub fn allow_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now` (nothing spent is still remembered).
    pub fn is_full_at(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_sec >= self.burst
    }

    /// True at most once a second, so refusals do not become a flood of their own.
    pub fn should_warn(&mut self) -> bool {
        let now = Instant::now();
        if self.warned.is_some_and(|t| (now - t).as_secs_f64() < 1.0) {
            return false;
        }
        self.warned = Some(now);
        true
    }
}

/// A kind of client message, as rate-limited. Signaling is split into descriptions (large,
/// a few per negotiation) and candidates (small, in bursts when gathering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hello,
    Input,
    Ping,
    SignalDescription,
    SignalCandidate,
    Media,
    RoomSignalDescription,
    /// Answers to the server's own offers: solicited, one per renegotiation the server
    /// starts (it waits for each before the next), so they get more room than offers.
    RoomSignalAnswer,
    RoomSignalCandidate,
    MediaReady,
    RoomTiles,
    Chat,
    Teacher,
    Hand,
    Attention,
    /// Asking for one's class records, and sharing a recording.
    Records,
}

impl Kind {
    /// The kind of `msg`; `None` for a message this server does not rate-limit by kind
    /// (one it does not handle: it is refused anyway).
    pub fn of(msg: &ClientMsg) -> Option<Kind> {
        Some(match msg {
            ClientMsg::Hello(_) => Kind::Hello,
            ClientMsg::Input(_) => Kind::Input,
            ClientMsg::Ping { .. } => Kind::Ping,
            ClientMsg::Signal { signal, .. } if signal.is_rare() => Kind::SignalDescription,
            ClientMsg::Signal { .. } => Kind::SignalCandidate,
            ClientMsg::Media(_) => Kind::Media,
            ClientMsg::RoomSignal(quad_shared::protocol::Signal::Description {
                kind: quad_shared::protocol::SdpKind::Answer,
                ..
            }) => Kind::RoomSignalAnswer,
            ClientMsg::RoomSignal(signal) if signal.is_rare() => Kind::RoomSignalDescription,
            ClientMsg::RoomSignal(_) => Kind::RoomSignalCandidate,
            ClientMsg::MediaReady { .. } => Kind::MediaReady,
            ClientMsg::RoomTiles(_) => Kind::RoomTiles,
            ClientMsg::Chat { .. } => Kind::Chat,
            ClientMsg::Teacher(_) => Kind::Teacher,
            ClientMsg::Hand { .. } => Kind::Hand,
            ClientMsg::Attention { .. } => Kind::Attention,
            ClientMsg::Records | ClientMsg::ShareRecording { .. } => Kind::Records,
            _ => return None,
        })
    }
}

/// One kind's allowance: `per_sec` on average, `burst` in a row.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    pub kind: Kind,
    pub per_sec: f64,
    pub burst: f64,
    /// How the refusal describes the limit.
    pub describe: &'static str,
}

const fn allow(kind: Kind, per_sec: f64, burst: f64, describe: &'static str) -> Allowance {
    Allowance {
        kind,
        per_sec,
        burst,
        describe,
    }
}

/// What a client may send of each kind. A real client stays well inside every line; each
/// number says what the browser client really sends, and the margin over it.
pub static ALLOWANCES: [Allowance; 16] = [
    // The lobby sends one; a refused name or link is corrected by hand and sent again.
    allow(Kind::Hello, 1.0, 5.0, "1 a second"),
    // The client sends one input per 3 movement steps of 1/60 s: 20 a second while walking,
    // plus one when the direction changes; a frame of at most 0.25 s makes 5 at once.
    // Twice the walking rate leaves room for changing direction often.
    allow(Kind::Input, 40.0, 40.0, "40 a second"),
    // The client pings every 15 s to keep an idle session open; tools ping for the round
    // trip time, a few a second at most.
    allow(Kind::Ping, 4.0, 10.0, "4 a second"),
    // One offer or answer per negotiation with each linked peer (at most `max_peers`, 6 by
    // default), and a rollback when offers collide: a crowd forming makes a burst, then
    // only renegotiations when a camera or screen is turned on or off.
    allow(Kind::SignalDescription, 2.0, 20.0, "2 a second"),
    // A browser gathers up to a few dozen candidates per connection (host, reflexive and
    // relayed, per interface and protocol): a burst of about 6 links' worth.
    allow(Kind::SignalCandidate, 20.0, 200.0, "20 a second"),
    // Sent when a device is turned on or off: clicks.
    allow(Kind::Media, 4.0, 10.0, "4 a second"),
    // The client offers once per room connection (again at an ICE restart or a new
    // device).
    allow(Kind::RoomSignalDescription, 2.0, 10.0, "2 a second"),
    // It answers each server offer, one negotiation at a time, as forwarded tracks come and
    // go: twenty people walking into a room within a second make about that many offers
    // to each in a few seconds. A dropped answer would leave the negotiation waiting, so
    // the allowance is well above that; the SFU refuses answers it did not ask for.
    allow(Kind::RoomSignalAnswer, 20.0, 60.0, "20 a second"),
    // Candidates of the one room connection, gathered at its start and at ICE restarts.
    allow(Kind::RoomSignalCandidate, 10.0, 64.0, "10 a second"),
    // One per move between a room and the hallway.
    allow(Kind::MediaReady, 2.0, 6.0, "2 a second"),
    // Sent when the video grid's layout changes (people come and go, the window resizes).
    allow(Kind::RoomTiles, 10.0, 20.0, "10 a second"),
    // People typing: the limit the protocol announces.
    allow(
        Kind::Chat,
        1.0 / CHAT_SECONDS_PER_MESSAGE as f64,
        CHAT_BURST as f64,
        "5 in a row, then one a second",
    ),
    // A teacher's clicks, e.g. muting several students one after another.
    allow(Kind::Teacher, 5.0, 20.0, "5 a second"),
    // Every change is sent to everyone in the room: a hand goes up or down by a click.
    allow(Kind::Hand, 2.0, 4.0, "2 a second"),
    // Sent when the tab is hidden or shown, or fullscreen is left or entered; every change
    // goes to the room's teachers and class.
    allow(Kind::Attention, 2.0, 6.0, "2 a second"),
    // Opening the records panel, and a teacher sharing recordings one after another: each
    // reads the store, so a few a second at most.
    allow(Kind::Records, 1.0, 5.0, "1 a second"),
];

/// One client's buckets: one per kind, in [`ALLOWANCES`] order.
#[derive(Debug)]
pub struct KindLimits {
    buckets: Vec<RateLimit>,
    warned: Option<Instant>,
}

impl Default for KindLimits {
    fn default() -> Self {
        KindLimits {
            buckets: ALLOWANCES
                .iter()
                .map(|a| RateLimit::new(a.per_sec, a.burst))
                .collect(),
            warned: None,
        }
    }
}

impl KindLimits {
    /// Takes a token for `kind`; `Err` with the allowance when there is none.
    pub fn allow(&mut self, kind: Kind) -> Result<(), &'static Allowance> {
        let Some(i) = ALLOWANCES.iter().position(|a| a.kind == kind) else {
            return Ok(());
        };
        let spent = self.buckets.get_mut(i).is_some_and(|b| !b.allow());
        if spent { Err(&ALLOWANCES[i]) } else { Ok(()) }
    }

    /// True at most once a second across all kinds, so refusals do not become a flood of
    /// their own.
    pub fn should_warn(&mut self) -> bool {
        let now = Instant::now();
        if self.warned.is_some_and(|t| (now - t).as_secs_f64() < 1.0) {
            return false;
        }
        self.warned = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_kind_has_one_allowance() {
        for (i, a) in ALLOWANCES.iter().enumerate() {
            assert!(a.per_sec > 0.0 && a.burst >= 1.0, "{:?}", a.kind);
            assert_eq!(
                ALLOWANCES.iter().position(|b| b.kind == a.kind),
                Some(i),
                "{:?} is listed twice",
                a.kind
            );
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = RateLimit::new(2.0, 4.0);
        let t0 = Instant::now();
        assert!((0..4).all(|_| bucket.allow_at(t0)));
        assert!(!bucket.allow_at(t0));
        assert!(!bucket.is_full_at(t0));
        assert!(bucket.allow_at(t0 + Duration::from_millis(500)));
        assert!(!bucket.allow_at(t0 + Duration::from_millis(500)));
        assert!(bucket.is_full_at(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn answers_to_the_servers_offers_are_not_counted_as_offers() {
        use quad_shared::protocol::{SdpKind, Signal};
        let room = |kind| {
            ClientMsg::RoomSignal(Signal::Description {
                kind,
                sdp: String::new(),
            })
        };
        assert_eq!(
            Kind::of(&room(SdpKind::Answer)),
            Some(Kind::RoomSignalAnswer)
        );
        assert_eq!(
            Kind::of(&room(SdpKind::Offer)),
            Some(Kind::RoomSignalDescription)
        );
        // Twenty members walking in at once: each answers about twenty offers in a few
        // seconds (this many answers were dropped when they shared the offers' allowance,
        // and the negotiation waited for them for ever).
        let mut limits = KindLimits::default();
        assert!((0..30).all(|_| limits.allow(Kind::RoomSignalAnswer).is_ok()));
        assert!((0..10).all(|_| limits.allow(Kind::RoomSignalDescription).is_ok()));
        assert!(limits.allow(Kind::RoomSignalDescription).is_err());
    }

    #[test]
    fn a_renewal_counts_with_the_descriptions_not_the_candidates() {
        use quad_shared::protocol::Signal;
        let to = quad_shared::AvatarId(7);
        let renew = ClientMsg::Signal {
            to,
            signal: Signal::Renew { generation: 1 },
        };
        // A renewal makes the peer open a new connection: as rare as a description.
        assert_eq!(Kind::of(&renew), Some(Kind::SignalDescription));
        let candidate = ClientMsg::Signal {
            to,
            signal: Signal::Candidate {
                candidate: String::new(),
                sdp_mid: None,
                sdp_m_line_index: None,
            },
        };
        assert_eq!(Kind::of(&candidate), Some(Kind::SignalCandidate));
    }

    #[test]
    fn kinds_are_limited_apart() {
        let mut limits = KindLimits::default();
        let hand = ALLOWANCES
            .iter()
            .find(|a| a.kind == Kind::Hand)
            .map_or(0, |a| a.burst as usize);
        for _ in 0..hand {
            assert!(limits.allow(Kind::Hand).is_ok());
        }
        assert!(limits.allow(Kind::Hand).is_err());
        assert!(limits.allow(Kind::Input).is_ok(), "other kinds go on");
    }
}

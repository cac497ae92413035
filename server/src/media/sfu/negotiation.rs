//! One member's negotiation as a plain state machine: who may offer when, which offer is
//! due, what waits for what, and what an unanswered offer or a full outbox leads to. No I/O
//! and no clock: the member task (`member.rs`) feeds it what happened with the instant, does
//! what it returns (apply a description, queue an offer, add candidates), and sleeps until
//! [`Negotiation::poll_timeout`].
//!
//! The rules:
//! - the client offers first (its microphone, camera and screen m-lines); nothing is offered
//!   to it before that offer is answered;
//! - after that only the server offers, one negotiation at a time: an offer while the
//!   server's own awaits its answer is refused (the client answers first), and so is an
//!   answer when no offer was made;
//! - forwarded tracks that change while an offer is out are offered once it is answered;
//!   an ICE restart rides on the next offer;
//! - an offer that found the client's outbox full is tried again [`RETRY`] later (an offer
//!   lost to a full outbox would leave the member waiting for an answer for ever);
//! - an offer unanswered for the member timeout is sent again unchanged, [`RESENDS`] times,
//!   and then the member is given up (the room asks its client to connect again);
//! - candidates the client sends before its offer is answered wait for it; one ICE session
//!   (from the client's offer, or from an ICE restart) takes at most [`MAX_CANDIDATES`];
//! - forwarded tracks go live once the connection is up and no offer is out.

use bytes::Bytes;
use std::time::{Duration, Instant};

/// How soon an offer that found the client's outbox full is tried again.
pub const RETRY: Duration = Duration::from_millis(100);

/// How many times an unanswered offer is sent again before the member is given up.
pub const RESENDS: u8 = 2;

/// Candidates a client may give one ICE session (from its offer until the server restarts
/// ICE), counting those sent before its offer was answered; more are refused. A browser
/// gathers a few per network interface and TURN server; each one is kept by the ICE agent
/// and paired with every local candidate for connectivity checks.
pub const MAX_CANDIDATES: usize = 64;

/// Where the negotiation stands.
#[derive(Debug)]
enum Phase {
    /// The client has not offered yet (or its offer has not been answered).
    AwaitingClientOffer,
    /// Nothing is out: the server may offer.
    Stable,
    /// The server's offer awaits the client's answer.
    OfferSent(OfferSent),
}

/// The server's offer that awaits the client's answer.
#[derive(Debug)]
struct OfferSent {
    /// As queued for the client, to send again unchanged.
    frame: Bytes,
    again_at: Instant,
    resent: u8,
}

/// Why the client's signaling was refused (for an `Error` to the client; the negotiation
/// goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An offer while the server's own awaits an answer.
    OfferDuringOffer,
    /// An answer with no offer out.
    AnswerWithoutOffer,
    /// Past [`MAX_CANDIDATES`] in one ICE session.
    TooManyCandidates,
}

impl Refusal {
    pub fn message(self) -> String {
        match self {
            Refusal::OfferDuringOffer => {
                "an offer while the server's offer awaits an answer: answer it first".into()
            }
            Refusal::AnswerWithoutOffer => "an answer, but the server made no offer".into(),
            Refusal::TooManyCandidates => format!(
                "too many ICE candidates: at most {MAX_CANDIDATES} for one ICE session; this \
                 one was not used"
            ),
        }
    }
}

/// What to do with a candidate the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum CandidateStep<C> {
    /// Give it to the connection now.
    Apply(C),
    /// Kept until the client's offer is answered ([`Negotiation::client_offer_answered`]
    /// returns it).
    Held,
    Refused(Refusal),
}

/// The offer that is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferDue {
    /// With new ICE credentials.
    pub ice_restart: bool,
}

/// What a timer that came due asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Nothing (no timer was due).
    Nothing,
    /// Try the offer that found the outbox full again ([`Negotiation::offer_due`]).
    Negotiate,
    /// Queue this unanswered offer again.
    Resend(Bytes),
    /// The offer went unanswered too long: give the member up.
    GiveUp,
}

/// One member's negotiation (see the module's documentation). `C` is an ICE candidate as
/// the connection takes it.
#[derive(Debug)]
pub struct Negotiation<C> {
    phase: Phase,
    /// Forwarded tracks changed since the last offer.
    changed: bool,
    /// The next offer restarts ICE.
    restart_ice: bool,
    /// Candidates sent before the client's offer was answered.
    early_candidates: Vec<C>,
    /// Candidates the client gave this ICE session.
    candidates: usize,
    /// When to try an offer again that could not be queued.
    retry_at: Option<Instant>,
    /// How long an offer waits for its answer before it is sent again.
    answer_wait: Duration,
}

impl<C> Negotiation<C> {
    pub fn new(answer_wait: Duration) -> Negotiation<C> {
        Negotiation {
            phase: Phase::AwaitingClientOffer,
            changed: false,
            restart_ice: false,
            early_candidates: Vec::new(),
            candidates: 0,
            retry_at: None,
            answer_wait,
        }
    }

    /// The client offers: whether it may now.
    pub fn client_offer(&self) -> Result<(), Refusal> {
        match self.phase {
            Phase::OfferSent(_) => Err(Refusal::OfferDuringOffer),
            _ => Ok(()),
        }
    }

    /// The client's offer was answered: the server may offer from now on. The candidates
    /// that waited for it, to apply.
    pub fn client_offer_answered(&mut self) -> Vec<C> {
        self.phase = Phase::Stable;
        std::mem::take(&mut self.early_candidates)
    }

    /// The client answers: whether an offer is out for it to answer.
    pub fn client_answer(&self) -> Result<(), Refusal> {
        match self.phase {
            Phase::OfferSent(_) => Ok(()),
            _ => Err(Refusal::AnswerWithoutOffer),
        }
    }

    /// The client's answer was applied: the negotiation is over.
    pub fn answer_applied(&mut self) {
        if matches!(self.phase, Phase::OfferSent(_)) {
            self.phase = Phase::Stable;
        }
    }

    /// A candidate from the client.
    pub fn candidate(&mut self, candidate: C) -> CandidateStep<C> {
        if self.candidates >= MAX_CANDIDATES {
            return CandidateStep::Refused(Refusal::TooManyCandidates);
        }
        self.candidates += 1;
        match self.phase {
            Phase::AwaitingClientOffer => {
                self.early_candidates.push(candidate);
                CandidateStep::Held
            }
            _ => CandidateStep::Apply(candidate),
        }
    }

    /// Forwarded tracks were added or removed: they are to be offered.
    pub fn tracks_changed(&mut self) {
        self.changed = true;
    }

    /// The connection was interrupted: the next offer restarts ICE.
    pub fn restart_ice(&mut self) {
        self.restart_ice = true;
        self.changed = true;
    }

    /// The offer to make now, if one is due: something changed, and nothing is out.
    pub fn offer_due(&self) -> Option<OfferDue> {
        (matches!(self.phase, Phase::Stable) && self.changed).then_some(OfferDue {
            ice_restart: self.restart_ice,
        })
    }

    /// The due offer found the client's outbox full: it is tried again [`RETRY`] later.
    pub fn offer_blocked(&mut self, now: Instant) {
        self.retry_at = Some(now + RETRY);
    }

    /// The due offer was applied and queued as `frame`: it awaits its answer.
    pub fn offer_sent(&mut self, frame: Bytes, now: Instant) {
        self.changed = false;
        if self.restart_ice {
            // The agent forgot the client's candidates: the client trickles new ones.
            self.candidates = 0;
        }
        self.restart_ice = false;
        self.retry_at = None;
        self.phase = Phase::OfferSent(OfferSent {
            frame,
            again_at: now + self.answer_wait,
            resent: 0,
        });
    }

    /// Whether the server's offer awaits an answer.
    pub fn offer_out(&self) -> bool {
        matches!(self.phase, Phase::OfferSent(_))
    }

    /// Whether forwarded tracks that were offered may go live: the connection is up and no
    /// offer is out (what the client accepts is known only from its answer).
    pub fn may_go_live(&self, connected: bool) -> bool {
        connected && !self.offer_out()
    }

    /// When [`Negotiation::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let again = match &self.phase {
            Phase::OfferSent(sent) => Some(sent.again_at),
            _ => None,
        };
        match (self.retry_at, again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A timer came due: what it asks for (one thing at a time; call again while
    /// [`Negotiation::poll_timeout`] is past).
    pub fn handle_timeout(&mut self, now: Instant) -> Timeout {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            return Timeout::Negotiate;
        }
        let Phase::OfferSent(sent) = &mut self.phase else {
            return Timeout::Nothing;
        };
        if sent.again_at > now {
            return Timeout::Nothing;
        }
        if sent.resent >= RESENDS {
            return Timeout::GiveUp;
        }
        sent.resent += 1;
        sent.again_at = now + self.answer_wait;
        Timeout::Resend(sent.frame.clone())
    }

    /// How many times the offer out has been sent again.
    pub fn resent(&self) -> u8 {
        match &self.phase {
            Phase::OfferSent(sent) => sent.resent,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// A negotiation whose client's offer has been answered.
    fn stable() -> Negotiation<u32> {
        let mut n = Negotiation::new(WAIT);
        assert_eq!(n.client_offer(), Ok(()));
        assert!(n.client_offer_answered().is_empty());
        assert_eq!(n.poll_timeout(), None);
        n
    }

    #[test]
    fn nothing_is_offered_before_the_clients_offer_is_answered() {
        let mut n: Negotiation<u32> = Negotiation::new(WAIT);
        n.tracks_changed();
        assert_eq!(n.offer_due(), None, "the client offers first");
        assert_eq!(n.client_answer(), Err(Refusal::AnswerWithoutOffer));
        assert_eq!(n.client_offer(), Ok(()));
        n.client_offer_answered();
        // What changed meanwhile is offered now.
        assert_eq!(n.offer_due(), Some(OfferDue { ice_restart: false }));
    }

    #[test]
    fn one_negotiation_at_a_time_and_what_changed_meanwhile_comes_next() {
        let now = Instant::now();
        let mut n = stable();
        assert_eq!(n.offer_due(), None, "nothing changed");
        n.tracks_changed();
        assert!(n.offer_due().is_some());
        n.offer_sent(Bytes::from_static(b"offer 1"), now);
        assert!(n.offer_out());
        assert_eq!(n.offer_due(), None, "nothing changed since");
        // A track comes while the offer is out: not offered until it is answered.
        n.tracks_changed();
        assert_eq!(n.offer_due(), None);
        // The client may not offer in the middle, and its answer is what is expected.
        assert_eq!(n.client_offer(), Err(Refusal::OfferDuringOffer));
        assert_eq!(n.client_answer(), Ok(()));
        n.answer_applied();
        assert!(!n.offer_out());
        assert_eq!(n.offer_due(), Some(OfferDue { ice_restart: false }));
        // A second answer has nothing to answer.
        n.offer_sent(Bytes::from_static(b"offer 2"), now);
        n.answer_applied();
        assert_eq!(n.client_answer(), Err(Refusal::AnswerWithoutOffer));
        assert_eq!(n.offer_due(), None);
    }

    #[test]
    fn an_ice_restart_rides_on_the_next_offer_even_when_one_is_out() {
        let now = Instant::now();
        let mut n = stable();
        n.restart_ice();
        assert_eq!(n.offer_due(), Some(OfferDue { ice_restart: true }));
        n.offer_sent(Bytes::from_static(b"restart"), now);
        // Interrupted again while that offer is out: the next offer restarts again.
        n.restart_ice();
        assert_eq!(n.offer_due(), None);
        n.answer_applied();
        assert_eq!(n.offer_due(), Some(OfferDue { ice_restart: true }));
        n.offer_sent(Bytes::from_static(b"restart again"), now);
        n.answer_applied();
        n.tracks_changed();
        assert_eq!(n.offer_due(), Some(OfferDue { ice_restart: false }));
    }

    #[test]
    fn candidates_wait_for_the_answer_and_one_ice_session_takes_so_many() {
        let now = Instant::now();
        let mut n: Negotiation<u32> = Negotiation::new(WAIT);
        assert_eq!(n.candidate(1), CandidateStep::Held);
        assert_eq!(n.candidate(2), CandidateStep::Held);
        assert_eq!(n.client_offer_answered(), vec![1, 2]);
        assert_eq!(n.candidate(3), CandidateStep::Apply(3));
        for c in 4..=MAX_CANDIDATES as u32 {
            assert_eq!(n.candidate(c), CandidateStep::Apply(c));
        }
        assert_eq!(
            n.candidate(1000),
            CandidateStep::Refused(Refusal::TooManyCandidates)
        );
        // An offer that does not restart ICE does not renew the allowance.
        n.tracks_changed();
        n.offer_sent(Bytes::new(), now);
        n.answer_applied();
        assert_eq!(
            n.candidate(1001),
            CandidateStep::Refused(Refusal::TooManyCandidates)
        );
        // An ICE restart does: the client trickles its candidates anew.
        n.restart_ice();
        n.offer_sent(Bytes::new(), now);
        assert_eq!(n.candidate(1002), CandidateStep::Apply(1002));
    }

    #[test]
    fn an_offer_that_found_the_outbox_full_is_tried_again() {
        let now = Instant::now();
        let mut n = stable();
        n.tracks_changed();
        assert!(n.offer_due().is_some());
        n.offer_blocked(now);
        assert_eq!(n.poll_timeout(), Some(now + RETRY));
        assert_eq!(n.handle_timeout(now + RETRY / 2), Timeout::Nothing);
        assert_eq!(n.handle_timeout(now + RETRY), Timeout::Negotiate);
        assert_eq!(n.poll_timeout(), None);
        // Still due; this time it goes out.
        assert!(n.offer_due().is_some());
        n.offer_sent(Bytes::from_static(b"offer"), now + RETRY);
        assert_eq!(n.poll_timeout(), Some(now + RETRY + WAIT));
    }

    #[test]
    fn an_unanswered_offer_is_sent_again_twice_then_the_member_is_given_up() {
        let now = Instant::now();
        let mut n = stable();
        n.tracks_changed();
        n.offer_sent(Bytes::from_static(b"offer"), now);
        assert_eq!(n.poll_timeout(), Some(now + WAIT));
        assert_eq!(n.handle_timeout(now + WAIT / 2), Timeout::Nothing);
        let mut at = now + WAIT;
        for resend in 1..=RESENDS {
            assert_eq!(
                n.handle_timeout(at),
                Timeout::Resend(Bytes::from_static(b"offer")),
                "unchanged, so the client answers the same offer"
            );
            assert_eq!(n.resent(), resend);
            at += WAIT;
            assert_eq!(n.poll_timeout(), Some(at));
        }
        assert_eq!(n.handle_timeout(at), Timeout::GiveUp);
    }

    #[test]
    fn an_answer_in_time_stops_the_resends() {
        let now = Instant::now();
        let mut n = stable();
        n.tracks_changed();
        n.offer_sent(Bytes::from_static(b"offer"), now);
        assert_eq!(
            n.handle_timeout(now + WAIT),
            Timeout::Resend(Bytes::from_static(b"offer"))
        );
        n.answer_applied();
        assert_eq!(n.poll_timeout(), None);
        assert_eq!(n.handle_timeout(now + 10 * WAIT), Timeout::Nothing);
    }

    #[test]
    fn tracks_go_live_when_connected_and_no_offer_is_out() {
        let now = Instant::now();
        let mut n = stable();
        assert!(!n.may_go_live(false));
        assert!(n.may_go_live(true));
        n.tracks_changed();
        n.offer_sent(Bytes::new(), now);
        assert!(
            !n.may_go_live(true),
            "what the client accepts is in its answer"
        );
        n.answer_applied();
        assert!(n.may_go_live(true));
    }
}

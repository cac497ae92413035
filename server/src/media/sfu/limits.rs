//! How much one member's client may make the SFU do, decided at the front door
//! ([`super::Sfu`]) before anything is queued or parsed:
//! - [`OfferBudget`]: how often it may offer. A client offers once when it joins a room's
//!   media, and once more whenever the server asks it to connect again (`JoinRoomMedia`
//!   after its connection was lost); ICE restarts and renegotiations are the server's
//!   offers. Each offer costs SDP parsing and an answer (the first one a whole peer
//!   connection), so a client re-offering 60 times a second kept more than a core busy.
//!   A token bucket: [`OFFER_BURST`] in a row, then one per [`OFFER_REFILL`].
//! - [`Queued`]: how many of the commands its client caused (signaling, tiles, devices)
//!   are queued and not yet handled. The room's and the member's channels stay unbounded,
//!   because what the space sends on them (join, leave, restrictions, close) and what a
//!   room sends a member (subscribe, unsubscribe) must never be lost; what a client sends
//!   takes a [`Queued`] ticket first, at most [`MAX_QUEUED`] per member, and the ticket
//!   travels with the command until the task that does its work is done with it (dropping
//!   it frees its place). A flooding client is refused with `RateLimited` and hurts only
//!   itself: the other members' allowances are their own, and a room's queue holds at most
//!   `MAX_QUEUED` client commands per member. (One bounded channel per room would have let
//!   one member's flood refuse everyone else's signaling.)
//!
//! The session already lets a client send at most 60 frames a second (120 in a burst):
//! these limits make sure that a task slower than that (an offer's SDP work, a server
//! under load) never lets a backlog grow.

use super::SfuMetrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Offers a member's client may make in a row.
pub const OFFER_BURST: u32 = 3;

/// How long it takes to earn one more offer, up to [`OFFER_BURST`].
pub const OFFER_REFILL: Duration = Duration::from_secs(5);

/// Commands a member's client may have queued and not yet handled. A browser's first offer
/// is followed at once by its ICE candidates, which wait while the server builds the
/// connection: a machine with many interfaces trickles a few dozen.
pub const MAX_QUEUED: usize = 64;

/// A member's offers: a token bucket of [`OFFER_BURST`] refilled one per [`OFFER_REFILL`].
/// Pure: the caller gives the time.
#[derive(Clone, Debug)]
pub struct OfferBudget {
    /// Offers left (whole ones count).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl OfferBudget {
    /// A full budget.
    pub fn new(now: Instant) -> OfferBudget {
        OfferBudget {
            tokens: f64::from(OFFER_BURST),
            at: now,
        }
    }

    /// Spends one offer, or says how long until the next one is earned.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        // A clock that went backwards earns nothing.
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() / OFFER_REFILL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(f64::from(OFFER_BURST));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(OFFER_REFILL.mul_f64(1.0 - self.tokens))
        }
    }
}

/// A place in a member's allowance of queued commands, held by a command from its client
/// until the command has been handled. Dropping it frees the place.
#[derive(Debug)]
pub struct Queued {
    member: Arc<AtomicUsize>,
    metrics: Arc<SfuMetrics>,
}

impl Queued {
    /// A place in `member`'s allowance (its count of queued commands), if it has one left.
    pub fn take(member: &Arc<AtomicUsize>, metrics: &Arc<SfuMetrics>) -> Option<Queued> {
        let before = member
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_QUEUED).then_some(n + 1)
            })
            .ok()?;
        metrics.queued_commands.fetch_add(1, Ordering::Relaxed);
        metrics
            .queued_commands_peak
            .fetch_max(before as u64 + 1, Ordering::Relaxed);
        Some(Queued {
            member: member.clone(),
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.member.fetch_sub(1, Ordering::AcqRel);
        self.metrics.queued_commands.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_come_in_a_burst_then_one_per_refill() {
        let start = Instant::now();
        let mut budget = OfferBudget::new(start);
        for _ in 0..OFFER_BURST {
            assert!(budget.take(start).is_ok());
        }
        let wait = budget.take(start).expect_err("the burst is spent");
        assert_eq!(wait, OFFER_REFILL);
        // Half a refill later: still nothing, half as long to wait.
        let half = start + OFFER_REFILL / 2;
        let wait = budget.take(half).expect_err("half an offer earned");
        assert!(
            wait.abs_diff(OFFER_REFILL / 2) < Duration::from_millis(1),
            "{wait:?}"
        );
        // A refill after the start: one offer, and only one.
        let later = start + OFFER_REFILL;
        assert!(budget.take(later).is_ok());
        assert!(budget.take(later).is_err());
    }

    #[test]
    fn a_long_pause_earns_no_more_than_the_burst() {
        let start = Instant::now();
        let mut budget = OfferBudget::new(start);
        assert!(budget.take(start).is_ok());
        let much_later = start + OFFER_REFILL * 100;
        for _ in 0..OFFER_BURST {
            assert!(budget.take(much_later).is_ok());
        }
        assert!(budget.take(much_later).is_err());
    }

    #[test]
    fn legitimate_rejoins_fit_the_budget() {
        // A client offers at its join and at each rejoin; the server asks it to rejoin only
        // after its connection was lost for `room_member_timeout_secs` (at least 1 s): the
        // first few come at once, then once per refill forever.
        let start = Instant::now();
        let mut budget = OfferBudget::new(start);
        for i in 0..OFFER_BURST {
            assert!(
                budget
                    .take(start + Duration::from_secs(u64::from(i)))
                    .is_ok()
            );
        }
        for i in 1..100u32 {
            assert!(
                budget.take(start + OFFER_REFILL * (i + 1)).is_ok(),
                "rejoin {i}"
            );
        }
    }

    #[test]
    fn queued_commands_are_bounded_and_freed_when_dropped() {
        let metrics = Arc::new(SfuMetrics::default());
        let member = Arc::new(AtomicUsize::new(0));
        let held: Vec<Queued> = (0..MAX_QUEUED)
            .map(|_| Queued::take(&member, &metrics).expect("within the allowance"))
            .collect();
        assert!(Queued::take(&member, &metrics).is_none());
        assert_eq!(
            metrics.queued_commands.load(Ordering::Relaxed),
            MAX_QUEUED as u64
        );
        // Another member's allowance is its own.
        let other = Arc::new(AtomicUsize::new(0));
        let theirs = Queued::take(&other, &metrics).expect("another member's place");
        drop(held);
        assert_eq!(member.load(Ordering::Relaxed), 0);
        assert!(Queued::take(&member, &metrics).is_some());
        drop(theirs);
        assert_eq!(metrics.queued_commands.load(Ordering::Relaxed), 0);
        assert_eq!(
            metrics.queued_commands_peak.load(Ordering::Relaxed),
            MAX_QUEUED as u64
        );
    }
}

//! Raising a viewer's video is a trial, and a failed one is not repeated at once: a plain
//! state machine per viewer, that the room's allocation tick consults and tells.
//!
//! The estimator grows its estimate above what is sent while the path is clear, and there
//! is no probing: the next layer up is the probe. On a steady narrow link that raise
//! fills the link's queue, the estimator backs off, the layer comes down again, and a few
//! seconds of growth later the same raise is tried again: the picture flaps every few
//! seconds, and each try delays the viewer's audio. So when the estimate backs off within
//! [`TRIAL_WINDOW`] of a raise (a stream allotted a higher layer, or resumed), the raise
//! failed: the budget stays below what it needed (halfway between the allocation before it
//! and the raised one, so that the layers' bitrates moving a little between ticks neither
//! lets the same raise through nor blocks what held) for a hold that doubles with each
//! failure in a row ([`FIRST_HOLD`] up to [`LONGEST_HOLD`]); a raise that holds for the
//! window resets it. The longest hold is short enough that a link that widens gets its
//! large layer back within about 15 s.

use std::time::{Duration, Instant};

/// A backoff this soon after a raise means the raise did not fit.
pub const TRIAL_WINDOW: Duration = Duration::from_secs(3);
/// How long the budget stays below a raise that failed for the first time.
pub const FIRST_HOLD: Duration = Duration::from_secs(5);
/// ... and at most, after failures in a row.
pub const LONGEST_HOLD: Duration = Duration::from_secs(10);

/// One viewer's raises (see the module's documentation).
#[derive(Debug, Clone)]
pub struct Trials {
    /// What the last allocation cost (bit/s).
    last_cost: u64,
    /// A raise on trial.
    trial: Option<Trial>,
    /// The budget stays at most this (bit/s) until then.
    ceiling: Option<(u64, Instant)>,
    /// The hold the next failure gets.
    hold: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Trial {
    at: Instant,
    /// What the allocation cost before the raise, and with it (bit/s).
    before: u64,
    cost: u64,
    /// The estimator's backoff count when it was made.
    backoffs: u64,
}

impl Default for Trials {
    fn default() -> Self {
        Trials {
            last_cost: 0,
            trial: None,
            ceiling: None,
            hold: FIRST_HOLD,
        }
    }
}

impl Trials {
    /// The budget to allocate within now: the estimate, kept below a failed raise's cost
    /// while its hold lasts.
    pub fn budget(&mut self, estimate: u64, now: Instant) -> u64 {
        match self.ceiling {
            Some((_, until)) if now >= until => {
                self.ceiling = None;
                estimate
            }
            Some((ceiling, _)) => estimate.min(ceiling),
            None => estimate,
        }
    }

    /// The allocation just made costs `cost` bit/s, and `raised` some stream above what the
    /// last one allotted it; the estimator has backed off `backoffs` times so far.
    pub fn allocated(&mut self, cost: u64, raised: bool, backoffs: u64, now: Instant) {
        if let Some(trial) = self.trial {
            if backoffs > trial.backoffs {
                self.trial = None;
                if now.duration_since(trial.at) <= TRIAL_WINDOW {
                    let ceiling = trial.before + trial.cost.saturating_sub(trial.before) / 2;
                    tracing::debug!(cost = trial.cost, ceiling, hold = ?self.hold, "a raise did not fit");
                    self.ceiling = Some((ceiling, now + self.hold));
                    self.hold = (self.hold * 2).min(LONGEST_HOLD);
                }
            } else if now.duration_since(trial.at) > TRIAL_WINDOW {
                // It held.
                self.trial = None;
                self.hold = FIRST_HOLD;
            }
        }
        if raised && cost > self.last_cost && self.trial.is_none() {
            self.trial = Some(Trial {
                at: now,
                before: self.last_cost,
                cost,
                backoffs,
            });
        }
        self.last_cost = cost;
    }

    /// The budget is held below this until then, if it is.
    #[cfg(test)]
    fn ceiling(&self) -> Option<(u64, Instant)> {
        self.ceiling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1000;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    /// Halfway between an allocation of 200 kbit/s that held and one of 600 that did not.
    const MIDWAY: u64 = 400 * K;

    #[test]
    fn a_raise_followed_by_a_backoff_is_held_below_and_the_hold_doubles() {
        let start = Instant::now();
        let mut trials = Trials::default();
        trials.allocated(200 * K, true, 0, start);
        trials.allocated(200 * K, false, 0, at(start, 4_000));
        // The estimate grew: the allocation raised a stream, to 600 kbit/s in all.
        assert_eq!(trials.budget(650 * K, at(start, 5_000)), 650 * K);
        trials.allocated(600 * K, true, 0, at(start, 5_000));
        // The estimator backed off a second later: the raise failed.
        assert_eq!(trials.budget(300 * K, at(start, 6_000)), 300 * K);
        trials.allocated(200 * K, false, 1, at(start, 6_000));
        assert_eq!(
            trials.ceiling(),
            Some((MIDWAY, at(start, 6_000) + FIRST_HOLD))
        );
        // While held, an estimate that grew past it is kept below the raise.
        assert_eq!(trials.budget(700 * K, at(start, 10_000)), MIDWAY);
        trials.allocated(200 * K, false, 1, at(start, 10_000));
        // The hold over, the raise is tried again; it fails again: held twice as long.
        let again = at(start, 6_000) + FIRST_HOLD;
        assert_eq!(trials.budget(700 * K, again), 700 * K);
        trials.allocated(600 * K, true, 1, again);
        trials.allocated(200 * K, false, 2, again + Duration::from_secs(1));
        let (_, until) = trials.ceiling().expect("held again");
        assert_eq!(until, again + Duration::from_secs(1) + 2 * FIRST_HOLD);
        // Never longer than the longest hold.
        let mut t = until;
        for n in 0..5 {
            t += Duration::from_secs(60);
            trials.budget(700 * K, t);
            trials.allocated(600 * K, true, 3 + n, t);
            trials.allocated(200 * K, false, 4 + n, t + Duration::from_secs(1));
        }
        let last_fail = t + Duration::from_secs(1);
        assert_eq!(trials.ceiling(), Some((MIDWAY, last_fail + LONGEST_HOLD)));
    }

    #[test]
    fn a_raise_that_holds_resets_the_hold() {
        let start = Instant::now();
        let mut trials = Trials::default();
        trials.allocated(200 * K, false, 0, start);
        trials.allocated(600 * K, true, 0, at(start, 1_000));
        trials.allocated(200 * K, false, 1, at(start, 2_000));
        assert!(trials.ceiling().is_some());
        // The hold over, the raise is tried again and holds past the window ...
        let later = at(start, 2_000) + FIRST_HOLD;
        trials.budget(700 * K, later);
        trials.allocated(600 * K, true, 1, later);
        trials.allocated(
            600 * K,
            false,
            1,
            later + TRIAL_WINDOW + Duration::from_millis(500),
        );
        // ... so the next failure is held only the first hold again.
        let t = later + Duration::from_secs(10);
        trials.allocated(1_000 * K, true, 1, t);
        trials.allocated(600 * K, false, 2, t + Duration::from_secs(1));
        assert_eq!(
            trials.ceiling(),
            Some((800 * K, t + Duration::from_secs(1) + FIRST_HOLD))
        );
    }

    #[test]
    fn a_backoff_long_after_a_raise_or_without_one_holds_nothing_back() {
        let start = Instant::now();
        let mut trials = Trials::default();
        trials.allocated(600 * K, true, 0, start);
        trials.allocated(600 * K, false, 0, at(start, 2_000));
        trials.allocated(600 * K, false, 0, at(start, 3_500));
        // A backoff 5 s after the raise (cross traffic, say): not the raise's fault.
        trials.allocated(200 * K, false, 1, at(start, 5_000));
        assert_eq!(trials.ceiling(), None);
        // Bitrates that grew a little with no stream raised are no trial either.
        trials.allocated(230 * K, false, 1, at(start, 5_500));
        trials.allocated(200 * K, false, 2, at(start, 6_000));
        assert_eq!(trials.ceiling(), None);
        assert_eq!(trials.budget(900 * K, at(start, 6_500)), 900 * K);
    }
}

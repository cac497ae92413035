//! Getting a session back after the connection drops: what the page keeps of its session
//! ([`Link`]: the resume token, its name, the room it is in) and when to try again (a
//! backoff with jitter, [`backoff_ms`], or the time the server gave when it announced a
//! restart). Hallway peer connections that fail are restarted on the same backoff. Plain
//! Rust; the WebSocket side is in `web::net`, the peers' in `web::peers`.

use quad_shared::protocol::Welcome;

/// The first retry after a lost connection waits up to this long, milliseconds; each
/// failed attempt doubles it, up to [`RETRY_MAX_MS`]. The wait is drawn between half of
/// it and all of it (jitter).
const RETRY_FIRST_MS: f64 = 500.0;
const RETRY_MAX_MS: f64 = 15_000.0;

/// What the page keeps about its session to get it back after the connection drops.
#[derive(Debug, Default)]
pub struct Link {
    /// From the last `Welcome`: the resume token and the name the server settled on.
    pub resume: Option<String>,
    pub name: Option<String>,
    /// The classroom the avatar is in (by name), asked for again on a rejoin.
    pub room: Option<String>,
    /// Trying to get back in: attempts since the connection dropped (0: connected).
    pub attempt: u32,
    pub reconnecting: bool,
    /// When the server said it is restarting: when to come back, milliseconds.
    pub retry_hint_ms: Option<u32>,
    /// Sessions resumed, and rejoined afresh, since the page opened (for tests).
    pub resumed: u32,
    pub rejoined: u32,
}

impl Link {
    /// Notes a `Welcome`: connected (again).
    pub fn welcomed(&mut self, w: &Welcome) {
        if self.reconnecting {
            if w.resumed {
                self.resumed += 1;
            } else {
                self.rejoined += 1;
            }
        }
        self.resume = w.resume.clone();
        self.name = Some(w.name.clone());
        self.attempt = 0;
        self.reconnecting = false;
        self.retry_hint_ms = None;
    }

    /// How long to wait before the next attempt, milliseconds, with `random` in [0, 1).
    pub fn next_delay_ms(&mut self, random: f64) -> f64 {
        if let Some(hint) = self.retry_hint_ms.take() {
            return f64::from(hint);
        }
        backoff_ms(self.attempt, RETRY_FIRST_MS, RETRY_MAX_MS, random)
    }
}

/// The wait before try number `attempt` (from 1): a ceiling of `first_ms`, doubled for each
/// try before, at most `max_ms`; the wait is drawn between half of it and all of it with
/// `random` in [0, 1) (jitter, so that many clients do not try in step).
pub fn backoff_ms(attempt: u32, first_ms: f64, max_ms: f64, random: f64) -> f64 {
    let exp = attempt.saturating_sub(1).min(16);
    let ceiling = (first_ms * f64::from(1u32 << exp)).min(max_ms);
    ceiling / 2.0 + random.clamp(0.0, 1.0) * ceiling / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_with_jitter_up_to_a_ceiling() {
        let mut link = Link {
            reconnecting: true,
            ..Link::default()
        };
        let mut last_ceiling = 0.0;
        for attempt in 1..=10 {
            link.attempt = attempt;
            let low = link.next_delay_ms(0.0);
            let high = link.next_delay_ms(0.999_999);
            assert!(low < high, "jittered: {low} < {high}");
            assert!((high - 2.0 * low).abs() < 1.0, "between half and all of it");
            assert!(high >= last_ceiling - 1.0, "never shorter than before");
            assert!(high <= RETRY_MAX_MS);
            last_ceiling = high;
        }
        assert!((link.next_delay_ms(0.999_999) - RETRY_MAX_MS).abs() < 1.0);
        link.attempt = 1;
        assert!(link.next_delay_ms(0.999_999) <= RETRY_FIRST_MS);
    }

    #[test]
    fn a_restart_notice_says_when_to_come_back_once() {
        let mut link = Link {
            attempt: 1,
            reconnecting: true,
            retry_hint_ms: Some(3_200),
            ..Link::default()
        };
        assert_eq!(link.next_delay_ms(0.5), 3_200.0);
        assert!(link.next_delay_ms(0.5) < 3_200.0, "then the usual backoff");
    }
}

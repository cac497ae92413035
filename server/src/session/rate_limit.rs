//! A token bucket for frames from one client.

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
        let now = Instant::now();
        self.tokens =
            (self.tokens + (now - self.last).as_secs_f64() * self.per_sec).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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

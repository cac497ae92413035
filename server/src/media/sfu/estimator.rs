//! The bandwidth estimate of what the SFU sends one member: [`DownlinkEstimator`], the
//! algorithm `rtc-interceptor`'s congestion controller drives with the member's resolved
//! transport-wide feedback, and [`DownlinkEstimate`], where each new estimate is published
//! for the room's allocation. No I/O and no clock: every instant comes in with the reports.
//!
//! Why not `rtc-interceptor`'s GCC: behind a 400 kbit/s link with a 1.5 s drop-tail queue
//! (the bandwidth test), its delay half never signalled overuse, and its loss half cut from
//! its own target every 200 ms while the reports still described the queue's backlog, down
//! to its floor: the camera stayed paused for ten seconds on a link with room for its small
//! layer. This one cuts from what the member demonstrably receives, and reads delay as the
//! plain queueing delay over the path's baseline:
//!
//! - the delivered rate: bytes reported arrived over the last [`RATE_WINDOW`];
//! - the queueing delay: the median of each reported packet's one-way delay (arrival on the
//!   member's clock less departure on ours) above the least seen lately
//!   ([`BASELINE_WINDOW`]), the clock offset cancelling out. The median, not the largest: a
//!   queue delays every packet behind it, while jitter (a radio link, a busy receiver, a
//!   loaded machine) delays a few, and read as a queue it would hold the estimate where it
//!   is for as long as the jitter lasts;
//! - loss: the share of reported packets lost, smoothed.
//!
//! A queue building ([`QUEUE_HIGH`] for [`QUEUE_PERSIST`]) or heavy loss ([`LOSS_HIGH`]) sets the estimate to
//! [`BACKOFF`] of the delivered rate (at most once per [`BACKOFF_INTERVAL`], so that a cut
//! is seen before the next). A short queue and little loss let it grow by [`GROWTH`] a
//! second, as far as the allocation's next raise needs ([`DownlinkEstimate::want`]), or,
//! when it wants none, up to [`HEADROOM`] times what is delivered; growing above what is
//! sent is how a wider link is found again (there is no probing), and the next layer up (or
//! a paused stream resumed) is the probe; a raise that fails is held back for a while
//! ([`super::trials`]).

use rtc::interceptor::{BandwidthEstimator, PacketReport};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the estimate starts (bit/s), before the first feedback: enough for a camera's
/// middle layer and audio, so that a new viewer sees a picture at once.
pub const INITIAL: f64 = 1_000_000.0;
/// The floor (bit/s): audio and little else; the allocation pauses video below it.
pub const MIN: f64 = 60_000.0;
/// The ceiling (bit/s): more than any room's video needs.
pub const MAX: f64 = 50_000_000.0;
/// The delivered rate is measured over this long.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);
/// The one-way delay baseline is the least seen over about this long.
pub const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// Queueing delay above which a queue is building.
pub const QUEUE_HIGH: Duration = Duration::from_millis(80);
/// ... and below which the path counts as clear.
pub const QUEUE_LOW: Duration = Duration::from_millis(25);
/// A queue counts as building once it has stayed above [`QUEUE_HIGH`] this long: one late
/// batch (a busy receiver, a radio's jitter) is not congestion.
pub const QUEUE_PERSIST: Duration = Duration::from_millis(100);
/// Smoothed loss above which the path is congested. High: loss that is not congestion (a
/// radio link, the tests' lossy proxy at 10%) must not ratchet the estimate down, as each
/// backoff from the delivered rate would; a congested drop-tail queue loses far more, and
/// shows in the delay first.
pub const LOSS_HIGH: f64 = 0.2;
/// ... and below which it counts as clean.
pub const LOSS_LOW: f64 = 0.02;
/// A backoff sets the estimate to this share of the delivered rate.
pub const BACKOFF: f64 = 0.85;
/// Backoffs at most this often.
pub const BACKOFF_INTERVAL: Duration = Duration::from_millis(500);
/// Growth per second on a clear path.
pub const GROWTH: f64 = 1.25;
/// With no raise wanted, growth stops at this multiple of the delivered rate, plus
/// [`HEADROOM_FLOOR`]: room for a stream that starts, not so much that the estimate drifts
/// far from anything the path has carried.
pub const HEADROOM: f64 = 4.0;
pub const HEADROOM_FLOOR: f64 = 250_000.0;
/// With a raise wanted, growth stops at this multiple of what the allocation would send
/// after it ([`DownlinkEstimate::want`]): a little above, as layers' measured rates wander.
pub const WANTED_MARGIN: f64 = 1.1;
/// With no feedback for this long (nothing sent: every video paused, no audio), the
/// estimate grows as on a clear path, so that the allocation tries the lowest layer again.
pub const IDLE: Duration = Duration::from_secs(1);

/// The bandwidth estimate of one connection's sending direction, as its estimator last
/// computed it. Written in the interceptor chain, read by the room's allocation tick.
#[derive(Debug, Default)]
pub struct DownlinkEstimate {
    /// Bit/s; 0 until the first feedback (a client that sends none is never estimated).
    bits_per_second: AtomicU64,
    /// How many times the estimator has backed off (see [`super::trials`]).
    backoffs: AtomicU64,
    /// Bit/s the room's allocation would send after its next raise (0: none wanted).
    wanted: AtomicU64,
}

impl DownlinkEstimate {
    /// The estimate in bit/s, if any feedback has arrived.
    pub fn get(&self) -> Option<u64> {
        match self.bits_per_second.load(Ordering::Relaxed) {
            0 => None,
            bps => Some(bps),
        }
    }

    pub fn set(&self, bits_per_second: u64) {
        self.bits_per_second
            .store(bits_per_second.max(1), Ordering::Relaxed);
    }

    /// How many times the estimator has backed off so far.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }

    /// The room's allocation would send `bits_per_second` after its next raise (0: it
    /// wants none): growth on a clear path stops at [`WANTED_MARGIN`] times that, instead
    /// of at [`HEADROOM`] times the delivered rate. So the raise is tried however dear it
    /// is (a paused screen share to a viewer receiving only audio), and only that raise:
    /// a viewer held on the smallest layer tries the next one, not the largest.
    pub fn want(&self, bits_per_second: u64) {
        self.wanted.store(bits_per_second, Ordering::Relaxed);
    }

    fn wanted(&self) -> f64 {
        self.wanted.load(Ordering::Relaxed) as f64
    }
}

/// The estimator (see the module's documentation), publishing to a [`DownlinkEstimate`].
pub struct DownlinkEstimator {
    out: std::sync::Arc<DownlinkEstimate>,
    target: f64,
    /// Arrived packets' (report time, bytes) within [`RATE_WINDOW`].
    delivered: VecDeque<(Instant, usize)>,
    delivered_bytes: usize,
    /// Least one-way delay (s) in the current and the previous half of [`BASELINE_WINDOW`].
    baseline: [f64; 2],
    baseline_since: Option<Instant>,
    /// Departures are measured from here (our clock).
    epoch: Option<Instant>,
    loss: f64,
    first_report: Option<Instant>,
    /// Since when the queue has been above [`QUEUE_HIGH`].
    queue_high_since: Option<Instant>,
    last_backoff: Option<Instant>,
    last_update: Option<Instant>,
}

impl DownlinkEstimator {
    fn publish(&self) {
        self.out.set(self.target as u64);
    }
}

impl DownlinkEstimator {
    pub fn new(out: std::sync::Arc<DownlinkEstimate>) -> DownlinkEstimator {
        DownlinkEstimator {
            out,
            target: INITIAL,
            delivered: VecDeque::new(),
            delivered_bytes: 0,
            baseline: [f64::INFINITY; 2],
            baseline_since: None,
            epoch: None,
            loss: 0.0,
            first_report: None,
            queue_high_since: None,
            last_backoff: None,
            last_update: None,
        }
    }

    /// Forgets what arrived before the last [`RATE_WINDOW`].
    fn forget_delivered(&mut self, now: Instant) {
        while let Some(&(at, size)) = self.delivered.front() {
            if now.saturating_duration_since(at) < RATE_WINDOW {
                break;
            }
            self.delivered.pop_front();
            self.delivered_bytes -= size;
        }
    }

    /// Grows the estimate for `seconds` of a clear path, up to what the allocation's next
    /// raise would send (with [`WANTED_MARGIN`]), or, with no raise wanted, [`HEADROOM`]
    /// times what is delivered (an estimate already above that stays where it is).
    fn grow(&mut self, seconds: f64, now: Instant) {
        let wanted = self.out.wanted();
        let headroom = if wanted > 0.0 {
            wanted * WANTED_MARGIN
        } else {
            self.delivered_rate(now) * HEADROOM + HEADROOM_FLOOR
        };
        self.target = (self.target * GROWTH.powf(seconds)).min(headroom.max(self.target));
    }

    /// Bit/s reported arrived over the last [`RATE_WINDOW`] (or since the first report,
    /// when that is more recent).
    fn delivered_rate(&self, now: Instant) -> f64 {
        let span = self.first_report.map_or(RATE_WINDOW, |first| {
            now.saturating_duration_since(first)
                .clamp(Duration::from_millis(100), RATE_WINDOW)
        });
        (self.delivered_bytes * 8) as f64 / span.as_secs_f64()
    }
}

impl BandwidthEstimator for DownlinkEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.first_report.get_or_insert(now);
        // Reports come in send order: the first one's departure is the earliest.
        let epoch = *self.epoch.get_or_insert(reports[0].departure);
        // Queueing delay: the median in this batch above the baseline.
        let since = *self.baseline_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= BASELINE_WINDOW / 2 {
            self.baseline = [f64::INFINITY, self.baseline[0]];
            self.baseline_since = Some(now);
        }
        let mut delays = Vec::with_capacity(reports.len());
        let mut lost = 0usize;
        for report in reports {
            match report.arrival.filter(|_| report.arrived) {
                Some(arrival) => {
                    let departure = match report.departure.checked_duration_since(epoch) {
                        Some(after) => after.as_secs_f64(),
                        None => -epoch.duration_since(report.departure).as_secs_f64(),
                    };
                    let delay = arrival.as_secs_f64() - departure;
                    self.baseline[0] = self.baseline[0].min(delay);
                    delays.push(delay);
                    self.delivered.push_back((now, report.size));
                    self.delivered_bytes += report.size;
                }
                None => lost += 1,
            }
        }
        self.forget_delivered(now);
        let baseline = self.baseline[0].min(self.baseline[1]);
        let queue = median(&mut delays).map_or(0.0, |d| (d - baseline).max(0.0));
        let sample = lost as f64 / reports.len() as f64;
        self.loss = 0.7 * self.loss + 0.3 * sample;

        let elapsed = self
            .last_update
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last_update = Some(now);
        let queue_high = if queue > QUEUE_HIGH.as_secs_f64() {
            let since = *self.queue_high_since.get_or_insert(now);
            now.saturating_duration_since(since) >= QUEUE_PERSIST
        } else {
            self.queue_high_since = None;
            false
        };
        let congested = queue_high || self.loss > LOSS_HIGH;
        let clear = queue < QUEUE_LOW.as_secs_f64() && self.loss < LOSS_LOW;
        if congested {
            let due = self
                .last_backoff
                .is_none_or(|t| now.saturating_duration_since(t) >= BACKOFF_INTERVAL);
            let delivered = self.delivered_rate(now);
            if due && delivered > 0.0 {
                self.target = self.target.min(delivered * BACKOFF);
                self.last_backoff = Some(now);
                self.out.backoffs.fetch_add(1, Ordering::Relaxed);
            }
        } else if clear {
            self.grow(elapsed.min(1.0), now);
        }
        self.target = self.target.clamp(MIN, MAX);
        tracing::trace!(
            target = self.target,
            delivered = self.delivered_rate(now),
            queue_ms = queue * 1000.0,
            loss = self.loss,
            "bandwidth estimate"
        );
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }

    fn handle_timeout(&mut self, now: Instant) {
        let Some(last) = self.last_update else {
            return;
        };
        let idle = now.saturating_duration_since(last);
        if idle >= IDLE {
            self.grow(idle.as_secs_f64().min(1.0), now);
            self.target = self.target.min(MAX);
            self.last_update = Some(now);
            self.publish();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // Always ahead of the last update, which `handle_timeout` moves on.
        self.last_update.map(|last| last + IDLE)
    }
}

/// The median of `values` (the upper one of an even count), reordering them.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let middle = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(middle, f64::total_cmp);
    Some(*m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A path of `rate(t)` bit/s with a 75 kB drop-tail queue, fed with 1,000-byte packets
    /// at the estimate, reported every 100 ms; the estimate after each report, over
    /// `seconds`. Packet `n` arrives `jitter(n)` seconds later than the queue alone delays
    /// it (without delaying the packets after it).
    fn run(
        estimator: &mut DownlinkEstimator,
        start: Instant,
        seconds: u64,
        rate: impl Fn(f64) -> f64,
        jitter: impl Fn(u64) -> f64,
    ) -> Vec<f64> {
        let mut estimates = Vec::new();
        // When the link is free again (s since start), and the sender's saved-up bytes.
        let (mut free_at, mut credit) = (0.0f64, 0.0f64);
        let mut reports: Vec<PacketReport> = Vec::new();
        let mut seq = 0u64;
        for ms in 0..seconds * 1000 {
            let t = ms as f64 / 1000.0;
            let now = start + Duration::from_millis(ms);
            credit += estimator.target_bitrate() / 8.0 / 1000.0;
            while credit >= 1000.0 {
                credit -= 1000.0;
                seq += 1;
                let link = rate(t);
                let begin = free_at.max(t);
                let backlog = (begin - t) * link / 8.0;
                let arrived = backlog + 1000.0 <= 75_000.0;
                if arrived {
                    free_at = begin + 8000.0 / link;
                }
                reports.push(PacketReport {
                    ssrc: 1,
                    id: seq,
                    rtp_sequence_number: seq as u16,
                    is_twcc: true,
                    twcc_sequence_number: seq as u16,
                    size: 1000,
                    arrived,
                    departure: now,
                    // The member's clock is 5 s ahead of ours: it must not matter.
                    arrival: arrived.then(|| Duration::from_secs_f64(5.02 + free_at + jitter(seq))),
                    ecn: Default::default(),
                });
            }
            if ms % 100 == 99 {
                // A packet is reported once it (or, lost, the next one) has arrived.
                let horizon = t - 0.02;
                let cut = reports
                    .iter()
                    .rposition(|r| r.arrival.is_some_and(|a| a.as_secs_f64() - 5.02 <= horizon))
                    .map_or(0, |i| i + 1);
                let due: Vec<PacketReport> = reports.drain(..cut).collect();
                estimator.on_reports(now, &due);
                estimates.push(estimator.target_bitrate());
            }
        }
        estimates
    }

    #[test]
    fn a_narrow_link_is_found_and_a_wide_one_again() {
        let out = Arc::new(DownlinkEstimate::default());
        let mut estimator = DownlinkEstimator::new(out.clone());
        assert_eq!(out.get(), None, "no estimate before feedback");
        let start = Instant::now();
        // 400 kbit/s for 10 s, then 3 Mbit/s.
        let estimates = run(
            &mut estimator,
            start,
            20,
            |t| if t < 10.0 { 400_000.0 } else { 3_000_000.0 },
            |_| 0.0,
        );
        let narrow = &estimates[30..100];
        let wide = &estimates[180..200];
        // A sawtooth about the link's rate: backed off when the queue builds, up again
        // when it has drained.
        assert!(
            narrow.iter().all(|e| (300_000.0..480_000.0).contains(e)),
            "on the narrow link the estimate stays near it: {narrow:?}"
        );
        assert!(
            wide.iter().all(|e| *e > 1_000_000.0),
            "the estimate grows again when the link widens: {wide:?}"
        );
        assert!(out.get().is_some());
    }

    #[test]
    fn jitter_that_is_no_queue_does_not_hold_the_estimate_down() {
        let out = Arc::new(DownlinkEstimate::default());
        let mut estimator = DownlinkEstimator::new(out);
        // A wide path (5 Mbit/s) on which one packet in five arrives 60 ms late, as over a
        // busy radio link or to a loaded machine: a delay no queue made.
        let estimates = run(
            &mut estimator,
            Instant::now(),
            8,
            |_| 5_000_000.0,
            |seq| if seq % 5 == 0 { 0.06 } else { 0.0 },
        );
        let last = estimates.last().copied().unwrap_or_default();
        assert!(
            last > 2.0 * INITIAL,
            "the estimate grows on a jittery but wide path: {estimates:?}"
        );
    }

    /// The `report`th feedback batch of a steady flow: ten packets of `size` bytes sent
    /// 10 ms apart from `start`, each arriving `queue` after it was sent (no loss).
    fn steady_batch(
        start: Instant,
        report: u64,
        size: usize,
        queue: Duration,
    ) -> Vec<PacketReport> {
        (0..10u64)
            .map(|i| {
                let n = report * 10 + i;
                let sent = Duration::from_millis(n * 10);
                PacketReport {
                    ssrc: 1,
                    id: n,
                    rtp_sequence_number: n as u16,
                    is_twcc: true,
                    twcc_sequence_number: n as u16,
                    size,
                    arrived: true,
                    departure: start + sent,
                    arrival: Some(sent + queue),
                    ecn: Default::default(),
                }
            })
            .collect()
    }

    #[test]
    fn on_a_clear_path_the_estimate_grows_only_so_far_above_what_is_sent() {
        let out = Arc::new(DownlinkEstimate::default());
        let mut estimator = DownlinkEstimator::new(out);
        let start = Instant::now();
        // 20 s of a clear path carrying 200 kbit/s (a small layer and audio): 250 bytes
        // every 10 ms, reported every 100 ms, no delay, no loss.
        for report in 0..200u64 {
            let batch = steady_batch(start, report, 250, Duration::ZERO);
            estimator.on_reports(start + Duration::from_millis(report * 100 + 100), &batch);
        }
        let estimate = estimator.target_bitrate();
        let ceiling = 200_000.0 * HEADROOM + HEADROOM_FLOOR;
        // Within a tenth of it: over the first half second, the delivered rate reads high
        // (the first reports' bytes over a shorter span), and what grew then stays.
        assert!(
            estimate > INITIAL && estimate <= ceiling * 1.1,
            "grew to {estimate}, against {ceiling} at most"
        );
    }

    /// 22 s of a path carrying 40 kbit/s (audio alone: 50 bytes every 10 ms), the
    /// allocation wanting `wanted` bit/s for its next raise; the estimate at the end. From
    /// the first to the second second a queue of 200 ms backs the estimate off to its
    /// floor; the path is clear after that.
    fn grown_with_audio_alone(wanted: u64) -> f64 {
        let out = Arc::new(DownlinkEstimate::default());
        out.want(wanted);
        let mut estimator = DownlinkEstimator::new(out);
        let start = Instant::now();
        for report in 0..220u64 {
            let queue = if (10..20).contains(&report) { 200 } else { 0 };
            let batch = steady_batch(start, report, 50, Duration::from_millis(queue));
            estimator.on_reports(start + Duration::from_millis(report * 100 + 100), &batch);
            if report == 19 {
                let low = estimator.target_bitrate();
                assert!(low < 100_000.0, "backed off by the queue: {low}");
            }
        }
        estimator.target_bitrate()
    }

    #[test]
    fn growth_stops_at_what_the_next_raise_wants_above_or_below_the_headroom() {
        // Growth alone stops at the headroom: 4 x 40 + 250 = 410 kbit/s.
        let headroom = 40_000.0 * HEADROOM + HEADROOM_FLOOR;
        let unwanted = grown_with_audio_alone(0);
        assert!(
            (headroom * 0.95..=headroom * 1.05).contains(&unwanted),
            "grew to {unwanted} with nothing wanted, against a headroom of {headroom}"
        );
        // A paused screen share of 800 kbit/s for this viewer: the next raise would send
        // 840 with the audio, which the headroom never affords; wanted, it is reached.
        let wanted = 840_000;
        let grown = grown_with_audio_alone(wanted);
        assert!(
            grown >= wanted as f64 && grown <= wanted as f64 * WANTED_MARGIN * 1.01,
            "grew to {grown}, to afford {wanted}"
        );
        // A cheaper raise (the small layer of a paused camera): no further than it needs,
        // so that a viewer held on a small layer tries the next one, not the largest.
        let cheap = grown_with_audio_alone(300_000);
        assert!(
            (300_000.0..=330_000.0 * 1.01).contains(&cheap),
            "grew to {cheap}, to afford 300000"
        );
    }

    #[test]
    fn with_nothing_sent_the_estimate_grows_so_that_video_is_tried_again() {
        let out = Arc::new(DownlinkEstimate::default());
        let mut estimator = DownlinkEstimator::new(out.clone());
        let start = Instant::now();
        // Feedback that says a 100 kbit/s path is full (a queue of 200 ms).
        let reports: Vec<PacketReport> = (0..10u16)
            .map(|i| PacketReport {
                ssrc: 1,
                id: u64::from(i),
                rtp_sequence_number: i,
                is_twcc: true,
                twcc_sequence_number: i,
                size: 1250,
                arrived: true,
                departure: start + Duration::from_millis(u64::from(i)),
                arrival: Some(Duration::from_millis(
                    u64::from(i) * 100 + 20 * u64::from(i > 0),
                )),
                ecn: Default::default(),
            })
            .collect();
        // In two batches: a queue is congestion once it persists.
        estimator.on_reports(start + Duration::from_millis(900), &reports[..5]);
        estimator.on_reports(start + Duration::from_secs(1), &reports[5..]);
        let low = estimator.target_bitrate();
        assert!(low < INITIAL, "backed off: {low}");
        // Then nothing: no feedback at all.
        let wake = estimator.poll_timeout().expect("a timer while idle");
        assert!(wake > start + Duration::from_secs(1));
        estimator.handle_timeout(wake);
        let grown = estimator.target_bitrate();
        assert!(grown > low * 1.2, "{low} -> {grown}");
        assert_eq!(out.get(), Some(grown as u64));
        assert!(estimator.poll_timeout().is_some_and(|t| t > wake));
    }
}

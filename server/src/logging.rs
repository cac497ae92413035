//! The server's log: the `tracing` subscriber that `main` (and the tests) install, and the
//! one rule it adds to the filter the operator gives.
//!
//! webrtc-rs logs an ERROR for every packet it drops because a stream's reader (the SFU's
//! forwarder, or a track's queue of 256) is behind, with the whole packet printed. Under
//! load that is thousands of lines a second, and formatting them takes the CPU the
//! readers needed. [`PacketDrops`] lets one of them through every
//! [`SAMPLE_EVERY`] and counts the rest (`quad_sfu_reader_dropped_packets_total`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, fmt};

/// Packet drops webrtc-rs reported and this log did not print.
pub static READER_DROPPED_PACKETS: AtomicU64 = AtomicU64::new(0);

/// One packet-drop line is printed this often at most.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Where webrtc-rs reports them, and how its messages begin.
const DRIVER_TARGET: &str = "webrtc::peer_connection::driver";
const DROP_MESSAGES: [&str; 3] = [
    "Failed to send RtpPacket to track remote",
    "Failed to send RtcpPacket to track remote",
    "Failed to send RtcpPacket to track local",
];

/// Installs the subscriber: `filter` (from `RUST_LOG`, else the caller's default), packet
/// drops sampled, lines to stderr (or to the test harness with `for_tests`). Does nothing
/// if one is installed already.
pub fn init(default_filter: &str, for_tests: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(PacketDrops::default());
    let _ = if for_tests {
        registry.with(fmt::layer().with_test_writer()).try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
}

/// The layer that samples webrtc-rs's packet-drop errors (see the module's text).
#[derive(Debug)]
pub struct PacketDrops {
    start: Instant,
    /// When (ms after `start`, plus one) a drop line was last let through; 0: never.
    last_shown_ms: AtomicU64,
}

impl Default for PacketDrops {
    fn default() -> Self {
        PacketDrops {
            start: Instant::now(),
            last_shown_ms: AtomicU64::new(0),
        }
    }
}

impl PacketDrops {
    /// Whether a drop line seen now is printed (one per [`SAMPLE_EVERY`]).
    fn show_now(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last_shown_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < SAMPLE_EVERY.as_millis() as u64 {
            return false;
        }
        self.last_shown_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl<S: Subscriber> Layer<S> for PacketDrops {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if !is_packet_drop(event) {
            return true;
        }
        if self.show_now() {
            return true;
        }
        READER_DROPPED_PACKETS.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Whether `event`'s message is one of webrtc-rs's packet-drop errors. Only the message's
/// first bytes are formatted, not the packet after them.
///
/// webrtc-rs logs through the `log` crate: such a record arrives as an event whose
/// target is `log`, with the real one in its `log.target` field.
fn is_packet_drop(event: &Event<'_>) -> bool {
    let target = event.metadata().target();
    if target != DRIVER_TARGET && target != LOG_RECORD_TARGET {
        return false;
    }
    let mut head = MessageHead::default();
    event.record(&mut head);
    let from_driver = target == DRIVER_TARGET || head.log_target == DRIVER_TARGET;
    from_driver && DROP_MESSAGES.iter().any(|m| head.text.starts_with(m))
}

/// The target of events made from `log` records (by `tracing-log`, which the subscriber
/// installs), and the field that holds the record's own target.
const LOG_RECORD_TARGET: &str = "log";
const LOG_TARGET_FIELD: &str = "log.target";

/// The beginning of an event's message ([`MessageHead::LEN`] bytes), and the target of a
/// `log` record.
#[derive(Default)]
struct MessageHead {
    text: String,
    log_target: String,
}

impl MessageHead {
    /// As long as the longest message begun in [`DROP_MESSAGES`]: what follows (the
    /// packet) is never formatted.
    const LEN: usize = {
        let mut longest = 0;
        let mut i = 0;
        while i < DROP_MESSAGES.len() {
            if DROP_MESSAGES[i].len() > longest {
                longest = DROP_MESSAGES[i].len();
            }
            i += 1;
        }
        longest
    };
}

impl Visit for MessageHead {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let mut out = Bounded(&mut self.text);
            // Stops with an error once full: the rest is never formatted.
            let _ = write!(out, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.text = value.chars().take(Self::LEN).collect(),
            LOG_TARGET_FIELD if value.len() <= DRIVER_TARGET.len() => {
                self.log_target = value.to_owned()
            }
            _ => {}
        }
    }
}

/// A writer that takes [`MessageHead::LEN`] bytes, then fails.
struct Bounded<'a>(&'a mut String);

impl std::fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = MessageHead::LEN.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push_str(&s[..end]);
        Err(std::fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Lines written, for the test to read.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Formatting this panics: proof that a drop line's packet is never formatted.
    struct Packet;
    impl std::fmt::Debug for Packet {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("the packet of a dropped line was formatted")
        }
    }

    #[test]
    fn packet_drops_are_sampled_and_counted_and_other_lines_pass() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(PacketDrops::default())
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            );
        // webrtc-rs logs through the `log` crate, as the subscriber's `try_init` would
        // forward it.
        let _ = tracing_log::LogTracer::init();
        let before = READER_DROPPED_PACKETS.load(Ordering::Relaxed);
        tracing::subscriber::with_default(subscriber, || {
            log::error!(target: "webrtc::peer_connection::driver", "Failed to send RtpPacket to track remote {}: {:?}", "bot-mic", "first");
            for _ in 0..500 {
                log::error!(target: "webrtc::peer_connection::driver", "Failed to send RtpPacket to track remote {}: {:?}", "bot-mic", Packet);
                tracing::error!(target: "webrtc::peer_connection::driver", "Failed to send RtcpPacket to track local {}: {:?}", "bot-mic", Packet);
            }
            log::error!(target: "webrtc::peer_connection::driver", "Failed to send RTP: {}", "a real error");
            log::error!(target: "quad_server::elsewhere", "Failed to send RtpPacket to track remote {}", "not webrtc's");
        });
        let text = String::from_utf8(lines.0.lock().expect("not poisoned").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains("\"first\""), "{text}");
        assert!(text.contains("a real error"), "{text}");
        assert!(text.contains("not webrtc's"), "{text}");
        // Other tests in this binary may count too: at least these.
        assert!(READER_DROPPED_PACKETS.load(Ordering::Relaxed) - before >= 1_000);
    }

    #[test]
    fn the_message_head_stops_at_its_length() {
        let mut text = String::new();
        let long = "é".repeat(100);
        assert!(write!(Bounded(&mut text), "{long}").is_err());
        assert!(text.len() <= MessageHead::LEN && text.chars().all(|c| c == 'é'));
    }
}

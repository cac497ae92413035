//! Recording a class. A teacher starts and stops it (the space checks who may); the room's
//! SFU task then hands the recorder a copy of what it forwards, and the recorder writes it
//! to disk as received, without decoding:
//!
//! - every microphone (held back by the loudest-speakers rule or not; not while a teacher
//!   has it muted) as its own Ogg Opus track ([`audio`]), silence-filled so that every
//!   track spans the whole recording;
//! - the room's picture ([`choose_picture`]: the shared screen, or the spotlight, or else a
//!   teacher's camera), one layer of one stream at a time, as one VP8 IVF track
//!   ([`picture`]).
//!
//! The forwarding tasks hand packets over with `try_send` on a bounded channel: a recorder
//! that falls behind loses packets (counted), never holds up the class. The recorder is a
//! thread of its own ([`recorder`]): it writes, and when the recording ends it runs the
//! mixdown ([`mixdown`]: `ffmpeg`, a separate process) into one WebM file a browser plays,
//! and records the outcome in the store. A write that fails (the disk is full) stops the
//! recording at once, with a message for the teacher; the class goes on.

pub mod audio;
pub mod mixdown;
pub mod picture;
pub mod recorder;
pub mod recovery;

use crate::media::sfu::RoomId;
use bytes::Bytes;
use quad_shared::AvatarId;
use quad_shared::media::Source;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub use recorder::Recorder;

/// Where and how recordings are made (from the server's configuration).
#[derive(Clone)]
pub struct RecordingSetup {
    /// Recordings are kept here: `<id>.webm`, and `<id>/` with the raw tracks while one
    /// is made (and after, if the mixdown failed).
    pub dir: PathBuf,
    /// The media tool that makes the file (`ffmpeg`, or a path to it).
    pub ffmpeg: PathBuf,
    /// A recording stops by itself after this long.
    pub max_length: Duration,
    /// The mixdown is stopped if it takes longer than this.
    pub mixdown_timeout: Duration,
    /// Where each recording's outcome is kept (none in some tests).
    pub storage: Option<crate::store::Storage>,
    /// Where finished files go (the folder, or a bucket).
    pub archive: std::sync::Arc<crate::records::archive::Archive>,
}

impl std::fmt::Debug for RecordingSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSetup")
            .field("dir", &self.dir)
            .field("ffmpeg", &self.ffmpeg)
            .field("max_length", &self.max_length)
            .finish()
    }
}

/// A teacher's request to record a room, as the SFU needs it.
#[derive(Debug)]
pub struct RecordRequest {
    pub room_name: String,
    /// Who started it ([`crate::auth::UserKey`]) and their name.
    pub by_user: String,
    pub by_name: String,
    /// The class session it is part of.
    pub session: String,
    /// Where the recording's news goes (the space).
    pub events: mpsc::UnboundedSender<RecordingEvent>,
    /// The id it is to have (given by the space's node when this node runs the room for
    /// it); else a new one.
    pub id: Option<String>,
}

/// What happened to a recording, for the space to act on and tell the teachers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecordingEvent {
    /// It stopped by itself (a write failed, it reached its longest): the class is no
    /// longer recorded.
    Stopped {
        room: RoomId,
        room_name: String,
        id: String,
        reason: String,
    },
    /// Its file is made.
    Ready {
        room_name: String,
        id: String,
        by_user: String,
        duration_ms: u64,
        bytes: u64,
    },
    /// No file could be made; the raw tracks are kept (`raw`), if any were written.
    Failed {
        room_name: String,
        id: String,
        by_user: String,
        message: String,
    },
}

/// One packet handed to the recorder.
#[derive(Debug)]
pub struct Tapped {
    /// Which stream it belongs to (a new number for each stream the room taps).
    pub stream: u64,
    pub who: AvatarId,
    pub video: bool,
    pub arrived: Instant,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// A forwarding task's line to the recorder.
#[derive(Clone, Debug)]
pub struct Tap {
    pub stream: u64,
    pub who: AvatarId,
    pub sink: std::sync::mpsc::SyncSender<Tapped>,
}

/// The stream that is the room's picture: a shared screen (a teacher's first), or the
/// spotlit person's camera, or else a teacher's camera (the first teacher's with one);
/// `None` when there is none of those. `streams` are the room's published streams,
/// `teachers` in the order they came in.
pub fn choose_picture(
    streams: &[(AvatarId, Source)],
    teachers: &[AvatarId],
    spotlight: Option<AvatarId>,
) -> Option<(AvatarId, Source)> {
    let has = |who: AvatarId, kind: Source| streams.contains(&(who, kind));
    let screen = teachers
        .iter()
        .copied()
        .find(|t| has(*t, Source::Screen))
        .or_else(|| {
            streams
                .iter()
                .find(|(_, kind)| *kind == Source::Screen)
                .map(|(who, _)| *who)
        });
    if let Some(who) = screen {
        return Some((who, Source::Screen));
    }
    if let Some(who) = spotlight.filter(|s| has(*s, Source::Camera)) {
        return Some((who, Source::Camera));
    }
    teachers
        .iter()
        .copied()
        .find(|t| has(*t, Source::Camera))
        .map(|who| (who, Source::Camera))
}

/// A new recording's id: when it started (UTC, to the second) and a random part, so ids
/// sort by time and cannot be guessed.
pub fn new_id(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{:08x}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        rand::random::<u32>()
    )
}

/// Whether `id` has the shape [`new_id`] gives (and so is safe in a path).
pub fn valid_id(id: &str) -> bool {
    id.len() == 24
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 15 => b == b'-',
            16.. => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
            _ => b.is_ascii_digit(),
        })
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_is_the_screen_then_the_spotlight_then_a_teachers_camera() {
        let (t, s1, s2) = (AvatarId(1), AvatarId(2), AvatarId(3));
        let cams = [(t, Source::Camera), (s1, Source::Camera), (s2, Source::Mic)];
        assert_eq!(choose_picture(&cams, &[t], None), Some((t, Source::Camera)));
        assert_eq!(
            choose_picture(&cams, &[t], Some(s1)),
            Some((s1, Source::Camera))
        );
        // A spotlit student without a camera: the teacher's.
        assert_eq!(
            choose_picture(&cams, &[t], Some(s2)),
            Some((t, Source::Camera))
        );
        let mut with_screens = cams.to_vec();
        with_screens.push((s2, Source::Screen));
        assert_eq!(
            choose_picture(&with_screens, &[t], Some(s1)),
            Some((s2, Source::Screen))
        );
        with_screens.push((t, Source::Screen));
        assert_eq!(
            choose_picture(&with_screens, &[t], None),
            Some((t, Source::Screen))
        );
        // No teacher camera, no spotlight, no screen: nothing.
        assert_eq!(choose_picture(&cams[1..], &[t], None), None);
    }

    #[test]
    fn ids_sort_by_time_and_are_checked() {
        let id = new_id(1_796_342_400_000 + 3_723_000); // 2026-12-04 01:02:03 UTC
        assert!(id.starts_with("20261204-010203-"), "{id}");
        assert!(valid_id(&id), "{id}");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for bad in [
            "",
            "../../etc/passwd",
            "20261204-010203-ABCDEF01",
            "20261204_010203-abcdef01",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}

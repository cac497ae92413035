//! Real media for room bots, made once per test process with `ffmpeg`: a 440 Hz tone as
//! 20 ms Opus frames, and a test pattern as VP8 frames at 30 a second (a keyframe every
//! half second, so a recorder or viewer that joins late soon has a picture). Bots that
//! publish these instead of synthetic payloads make streams a decoder can play, which is
//! what a recording test needs.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A silent 20 ms Opus frame (what a bot sends while it says nothing).
pub const SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// Encoded media to publish.
#[derive(Debug)]
pub struct RealMedia {
    /// A tone, 20 ms per frame.
    pub tone: Vec<Bytes>,
    /// VP8 frames, 30 a second, with whether each is a keyframe.
    pub video: Vec<(Bytes, bool)>,
}

/// When a bot speaks: `on` intervals measured from `epoch`, once the test sets it (the
/// bot is silent before, and outside them).
#[derive(Clone, Debug)]
pub struct Speaking {
    pub epoch: Arc<OnceLock<Instant>>,
    pub on: Vec<(Duration, Duration)>,
}

impl Speaking {
    pub fn now(&self) -> bool {
        let Some(epoch) = self.epoch.get() else {
            return false;
        };
        let t = epoch.elapsed();
        self.on.iter().any(|(from, to)| t >= *from && t < *to)
    }
}

/// The media, made at the first call (with `ffmpeg` from the `PATH`).
pub fn real_media() -> Result<Arc<RealMedia>> {
    // Made once, by whichever test asks first (the others wait for it).
    static MEDIA: Mutex<Option<Arc<RealMedia>>> = Mutex::new(None);
    let mut media = MEDIA.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = media.as_ref() {
        return Ok(m.clone());
    }
    let dir = crate::temp_dir("real-media");
    std::fs::create_dir_all(&dir)?;
    let made = make(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let made = Arc::new(made?);
    *media = Some(made.clone());
    Ok(made)
}

fn ffmpeg(args: &[&str]) -> Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .context("running ffmpeg (Debian's ffmpeg package; `.ci/run` installs it)")?;
    if !out.status.success() {
        bail!("ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn make(dir: &Path) -> Result<RealMedia> {
    let ogg = dir.join("tone.ogg");
    let ivf = dir.join("pattern.ivf");
    let (ogg_s, ivf_s) = (ogg.to_string_lossy(), ivf.to_string_lossy());
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=2",
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
        "-frame_duration",
        "20",
        "-ac",
        "1",
        &ogg_s,
    ])?;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30:duration=2",
        "-c:v",
        "libvpx",
        "-b:v",
        "300k",
        "-g",
        "15",
        "-auto-alt-ref",
        "0",
        "-f",
        "ivf",
        &ivf_s,
    ])?;
    let mut tone = Vec::new();
    let mut reader = ogg::PacketReader::new(std::io::Cursor::new(std::fs::read(&ogg)?));
    while let Some(packet) = reader.read_packet()? {
        if packet.data.starts_with(b"OpusHead") || packet.data.starts_with(b"OpusTags") {
            continue;
        }
        tone.push(Bytes::from(packet.data));
    }
    let file = std::fs::read(&ivf)?;
    let mut video = Vec::new();
    let mut i = 32;
    while i + 12 <= file.len() {
        let len = u32::from_le_bytes(file[i..i + 4].try_into()?) as usize;
        let frame = file.get(i + 12..i + 12 + len).context("a cut IVF frame")?;
        video.push((Bytes::copy_from_slice(frame), frame[0] & 1 == 0));
        i += 12 + len;
    }
    if tone.len() < 50 || video.len() < 30 || !video[0].1 {
        bail!(
            "ffmpeg made {} audio and {} video frames",
            tone.len(),
            video.len()
        );
    }
    Ok(RealMedia { tone, video })
}

//! Recordings a stopped server left unfinished. A crash, a `kill -9` or a restart during
//! class stops the recorder before it finishes its tracks and makes the file; what it
//! wrote is on disk (flushed every second). At start, each recording the store still
//! has as `recording` or `mixing` is finished from its raw tracks: the picture's header
//! is repaired (its size and frame count are written only at the end; a frame cut short
//! by the kill is dropped), the manifest is made again from the files if it was not
//! written, and the mixdown and upload run as after any class.

use super::RecordingSetup;
use super::mixdown::{self, MANIFEST, Manifest};
use super::picture::keyframe_size;
use crate::store::RecordingRecord;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The IVF header's length, and each frame header's.
const HEADER: u64 = 32;
const FRAME_HEADER: u64 = 12;

/// Makes an IVF file the recorder could not finish whole: drops a last frame cut short,
/// and writes the header's picture size (from the first keyframe) and frame count. How
/// many frames it holds.
pub fn repair_picture(path: &Path) -> std::io::Result<u32> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let (mut at, mut frames, mut size) = (HEADER, 0u32, None);
    while at + FRAME_HEADER <= len {
        file.seek(SeekFrom::Start(at))?;
        let mut head = [0u8; 12];
        file.read_exact(&mut head)?;
        let frame_len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        if at + FRAME_HEADER + frame_len > len {
            break;
        }
        if size.is_none() {
            let mut start = [0u8; 10];
            let n = frame_len.min(10) as usize;
            file.read_exact(&mut start[..n])?;
            size = keyframe_size(&start[..n]);
        }
        frames += 1;
        at += FRAME_HEADER + frame_len;
    }
    file.set_len(at.max(HEADER.min(len)))?;
    if len >= HEADER {
        let (w, h) = size.unwrap_or((0, 0));
        file.seek(SeekFrom::Start(12))?;
        file.write_all(&w.to_le_bytes())?;
        file.write_all(&h.to_le_bytes())?;
        file.seek(SeekFrom::Start(24))?;
        file.write_all(&frames.to_le_bytes())?;
    }
    file.flush()?;
    Ok(frames)
}

/// The manifest of the raw tracks in `raw`, from the files themselves: the microphones'
/// Ogg files, the picture if it holds a frame, and the length from the last write.
fn rebuild(raw: &Path, started_ms: u64) -> std::io::Result<Manifest> {
    let mut audio = Vec::new();
    let mut last_ms = started_ms;
    for entry in std::fs::read_dir(raw)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(modified) = entry.metadata().and_then(|m| m.modified())
            && let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH)
        {
            last_ms = last_ms.max(since.as_millis() as u64);
        }
        if name.starts_with("audio-") && name.ends_with(".ogg") {
            audio.push(name);
        }
    }
    audio.sort();
    let picture = raw.join("picture.ivf");
    let picture =
        (picture.exists() && repair_picture(&picture)? > 0).then(|| "picture.ivf".to_owned());
    Ok(Manifest {
        duration_ms: last_ms.saturating_sub(started_ms),
        audio,
        picture,
    })
}

/// The recordings the store has as unfinished. Called at start, before anyone can start a
/// new one (which would look unfinished too).
pub fn unfinished(setup: &RecordingSetup) -> Vec<RecordingRecord> {
    let Some(storage) = &setup.storage else {
        return Vec::new();
    };
    match storage.blocking().recordings(1_000) {
        Ok(rows) => rows
            .into_iter()
            .filter(|r| r.state == "recording" || r.state == "mixing")
            .filter(|r| super::valid_id(&r.id))
            .collect(),
        Err(e) => {
            tracing::error!("looking for unfinished recordings: {e:#}");
            Vec::new()
        }
    }
}

/// Finishes `rows` ([`unfinished`]); how many became files. Blocks (file work and
/// `ffmpeg`): run it off the runtime's threads.
pub fn recover(
    setup: &RecordingSetup,
    runtime: &tokio::runtime::Handle,
    rows: Vec<RecordingRecord>,
) -> usize {
    let Some(storage) = &setup.storage else {
        return 0;
    };
    let mut made = 0;
    for row in rows {
        tracing::info!(
            id = row.id,
            room = row.room,
            "finishing a recording the server left unfinished"
        );
        let outcome = finish(setup, runtime, &row);
        let mut record = row.clone();
        match outcome {
            Ok((duration_ms, bytes, location)) => {
                record.state = "ready".to_owned();
                record.duration_ms = duration_ms;
                record.bytes = bytes;
                record.location = location;
                record.message = "the server stopped during this recording; it was finished from what was written".to_owned();
                made += 1;
            }
            Err(message) => {
                tracing::error!(
                    id = row.id,
                    "an unfinished recording could not be made: {message}"
                );
                record.state = "failed".to_owned();
                record.message = message;
            }
        }
        if let Err(e) = storage.blocking().save_recording(&record) {
            tracing::error!(
                id = row.id,
                "the recording's record could not be saved: {e:#}"
            );
        }
    }
    made
}

/// One unfinished recording made into a file: its length, size and where it is kept.
fn finish(
    setup: &RecordingSetup,
    runtime: &tokio::runtime::Handle,
    row: &RecordingRecord,
) -> Result<(u64, u64, String), String> {
    let raw = setup.dir.join(&row.id);
    if !raw.is_dir() {
        return Err("the server stopped during this recording before it wrote anything".to_owned());
    }
    let written = std::fs::read(raw.join(MANIFEST))
        .ok()
        .and_then(|json| serde_json::from_slice::<Manifest>(&json).ok());
    let manifest = match written {
        Some(m) => m,
        None => {
            let m = rebuild(&raw, row.started_ms)
                .map_err(|e| format!("reading the raw tracks: {e}"))?;
            let json = serde_json::to_vec_pretty(&m).unwrap_or_default();
            std::fs::write(raw.join(MANIFEST), json)
                .map_err(|e| format!("writing the manifest: {e}"))?;
            m
        }
    };
    if manifest.audio.is_empty() && manifest.picture.is_none() {
        return Err("the server stopped during this recording before any media was written; the folder is kept".to_owned());
    }
    let out = setup.dir.join(format!("{}.webm", row.id));
    let bytes = mixdown::run(&setup.ffmpeg, &raw, &manifest, &out, setup.mixdown_timeout)
        .map_err(|e| format!("{e}; the raw tracks are kept on the server ({}/)", row.id))?;
    if let Err(e) = std::fs::remove_dir_all(&raw) {
        tracing::warn!(dir = %raw.display(), "the raw tracks could not be deleted: {e}");
    }
    let (location, failed) = runtime.block_on(setup.archive.keep(&row.id));
    if let Some(failed) = failed {
        tracing::error!(id = row.id, "{failed}");
    }
    Ok((manifest.duration_ms, bytes, location.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_cut_short_is_repaired() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("quad-repair-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("picture.ivf");
        let mut file = vec![0u8; 32];
        file[..4].copy_from_slice(b"DKIF");
        let key = [
            0x10u8, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 7, 7,
        ];
        for pts in 0..3u64 {
            file.extend_from_slice(&(key.len() as u32).to_le_bytes());
            file.extend_from_slice(&pts.to_le_bytes());
            file.extend_from_slice(&key);
        }
        // A fourth frame, cut short by the kill.
        file.extend_from_slice(&100u32.to_le_bytes());
        file.extend_from_slice(&3u64.to_le_bytes());
        file.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &file)?;
        assert_eq!(repair_picture(&path)?, 3);
        let repaired = std::fs::read(&path)?;
        assert_eq!(repaired.len(), 32 + 3 * (12 + key.len()));
        assert_eq!(u16::from_le_bytes([repaired[12], repaired[13]]), 320);
        assert_eq!(u16::from_le_bytes([repaired[14], repaired[15]]), 240);
        assert_eq!(
            u32::from_le_bytes([repaired[24], repaired[25], repaired[26], repaired[27]]),
            3
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}

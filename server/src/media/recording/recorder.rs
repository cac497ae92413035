//! The recorder: one OS thread per recording, which takes the packets the room's
//! forwarding tasks hand it, writes them into the recording's tracks, and when the
//! recording ends, finishes the tracks, runs the mixdown and records the outcome. File
//! writes and the mixdown block; on their own thread they hold up nothing else.

use super::audio::{AudioTrack, RATE};
use super::picture::PictureTrack;
use super::{RecordRequest, RecordingEvent, RecordingSetup, Tap, Tapped, mixdown};
use crate::media::sfu::{RoomId, SfuMetrics};
use crate::store::RecordingRecord;
use quad_shared::AvatarId;
use rustc_hash::FxHashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Packets waiting for the recorder at most (about 4 s of a 30-member class's audio and a
/// picture); past it a packet is dropped and counted.
pub const QUEUE: usize = 8192;
/// Microphone tracks one recording keeps at most (a bigger room's later speakers are left
/// out, and the log says so).
pub const MAX_AUDIO_TRACKS: usize = 64;
/// The recorder takes what the forwarding tasks handed it this often (the queue holds well
/// over that much).
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// Written files are flushed this often, so a crash loses little.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A recording in progress, held by its room.
pub struct Recorder {
    pub id: String,
    sink: SyncSender<Tapped>,
    /// When the room stopped it.
    stop: Arc<Mutex<Option<Instant>>>,
    next_stream: u64,
    metrics: Arc<SfuMetrics>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("id", &self.id).finish()
    }
}

/// What the thread needs besides the packets.
struct Job {
    id: String,
    room: RoomId,
    raw: PathBuf,
    setup: RecordingSetup,
    request: RecordRequest,
    record: RecordingRecord,
    stop: Arc<Mutex<Option<Instant>>>,
    /// The server's runtime, for the upload to object storage (async) after the mixdown.
    runtime: Option<tokio::runtime::Handle>,
}

impl Recorder {
    /// Starts recording `room`: makes its directory and its thread. Fails if the
    /// directory cannot be made.
    pub fn start(
        setup: &RecordingSetup,
        room: RoomId,
        request: RecordRequest,
        metrics: Arc<SfuMetrics>,
    ) -> std::io::Result<Recorder> {
        let started_ms = crate::store::now_ms();
        // A recording made for another node's space has the id that node gave it.
        let id = match &request.id {
            Some(id) if super::valid_id(id) => id.clone(),
            Some(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a recording id",
                ));
            }
            None => super::new_id(started_ms),
        };
        let raw = setup.dir.join(&id);
        std::fs::create_dir_all(&raw)?;
        let record = RecordingRecord {
            id: id.clone(),
            room: request.room_name.clone(),
            by_user: request.by_user.clone(),
            by_name: request.by_name.clone(),
            started_ms,
            duration_ms: 0,
            bytes: 0,
            state: "recording".to_owned(),
            message: String::new(),
            shared: false,
            session: request.session.clone(),
            location: "local".to_owned(),
        };
        let (sink, packets) = std::sync::mpsc::sync_channel(QUEUE);
        let stop = Arc::new(Mutex::new(None));
        let job = Job {
            id: id.clone(),
            room,
            raw,
            setup: setup.clone(),
            request,
            record,
            stop: stop.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        std::thread::Builder::new()
            .name("quad-recorder".to_owned())
            .spawn(move || run(job, packets))?;
        metrics.recordings.fetch_add(1, Ordering::Relaxed);
        Ok(Recorder {
            id,
            sink,
            stop,
            next_stream: 0,
            metrics,
        })
    }

    /// A line for one more stream (by `who`) to hand its packets over.
    pub fn tap(&mut self, who: AvatarId) -> Tap {
        self.next_stream += 1;
        Tap {
            stream: self.next_stream,
            who,
            sink: self.sink.clone(),
        }
    }

    /// Ends the recording now (packets already on their way still count).
    pub fn stop(&self) {
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        stop.get_or_insert_with(Instant::now);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
        self.metrics.recordings.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What became of a packet handed to the recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    Yes,
    /// Its queue was full: the recording lost it (counted).
    Dropped,
    /// The recording has ended: let go of the tap.
    Ended,
}

/// Hands a packet to the recorder without waiting.
pub fn hand_over(tap: &Tap, packet: Tapped, metrics: &SfuMetrics) -> Taken {
    match tap.sink.try_send(packet) {
        Ok(()) => Taken::Yes,
        Err(TrySendError::Full(_)) => {
            metrics.recording_dropped.fetch_add(1, Ordering::Relaxed);
            Taken::Dropped
        }
        Err(TrySendError::Disconnected(_)) => Taken::Ended,
    }
}

/// The tracks being written.
struct Tracks {
    started: Instant,
    dir: PathBuf,
    audio: FxHashMap<AvatarId, (String, AudioTrack<BufWriter<File>>)>,
    picture: Option<PictureTrack<BufWriter<File>>>,
    /// Speakers left out for [`MAX_AUDIO_TRACKS`] (logged once each).
    left_out: Vec<AvatarId>,
}

impl Tracks {
    fn write(&mut self, t: Tapped) -> std::io::Result<()> {
        let since = t.arrived.saturating_duration_since(self.started);
        if t.video {
            if self.picture.is_none() {
                let file = File::create(self.dir.join(PICTURE))?;
                self.picture = Some(PictureTrack::new(BufWriter::new(file))?);
            }
            if let Some(picture) = self.picture.as_mut() {
                let at_ms = since.as_millis() as u64;
                picture.push(t.stream, t.seq, t.ts, t.marker, at_ms, &t.payload)?;
            }
            return Ok(());
        }
        if !self.audio.contains_key(&t.who) {
            if self.audio.len() >= MAX_AUDIO_TRACKS {
                if !self.left_out.contains(&t.who) {
                    tracing::warn!(who = %t.who, "a recording keeps {MAX_AUDIO_TRACKS} microphones at most; this one is left out");
                    self.left_out.push(t.who);
                }
                return Ok(());
            }
            let name = format!("audio-{}.ogg", t.who.0);
            let file = BufWriter::new(File::create(self.dir.join(&name))?);
            let track = AudioTrack::new(file, t.who.0)?;
            self.audio.insert(t.who, (name, track));
        }
        if let Some((_, track)) = self.audio.get_mut(&t.who) {
            let at = since.as_micros() as u64 * RATE / 1_000_000;
            track.push(t.stream, t.ts, at, &t.payload)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for (_, track) in self.audio.values_mut() {
            track.flush()?;
        }
        if let Some(p) = self.picture.as_mut() {
            p.flush()?;
        }
        Ok(())
    }

    /// Finishes every track at `end`, and says what was written.
    fn finish(self, end: Instant) -> std::io::Result<mixdown::Manifest> {
        let length = end.saturating_duration_since(self.started);
        let end_sample = length.as_micros() as u64 * RATE / 1_000_000;
        let mut audio = Vec::new();
        let mut tracks: Vec<_> = self.audio.into_iter().collect();
        tracks.sort_by_key(|(who, _)| *who);
        for (_, (name, track)) in tracks {
            let mut file = track.finish(end_sample)?;
            file.flush()?;
            audio.push(name);
        }
        let picture = match self.picture {
            Some(track) if track.frames > 0 => {
                track.finish()?.flush()?;
                Some(PICTURE.to_owned())
            }
            Some(track) => {
                drop(track.finish()?);
                None
            }
            None => None,
        };
        Ok(mixdown::Manifest {
            duration_ms: length.as_millis() as u64,
            audio,
            picture,
        })
    }
}

/// The picture track's file name.
const PICTURE: &str = "picture.ivf";

fn run(job: Job, packets: Receiver<Tapped>) {
    let started = Instant::now();
    let mut tracks = Tracks {
        started,
        dir: job.raw.clone(),
        audio: FxHashMap::default(),
        picture: None,
        left_out: Vec::new(),
    };
    save(&job, &job.record);
    let mut last_flush = started;
    // Why it stopped by itself, if it did; whether that was a failed write.
    let mut stopped: Option<(String, bool)> = None;
    let end = loop {
        if let Some(at) = *job.stop.lock().unwrap_or_else(|e| e.into_inner()) {
            break at;
        }
        if started.elapsed() >= job.setup.max_length {
            let minutes = job.setup.max_length.as_secs() / 60;
            stopped = Some((
                format!("the recording reached its longest ({minutes} minutes) and stopped"),
                false,
            ));
            break Instant::now();
        }
        // Packets are taken in batches: a thread woken for each one (about 1,500 a second
        // in a class of 30) cost more than all the writing.
        std::thread::sleep(DRAIN_EVERY);
        let mut written = Ok(());
        let mut gone = false;
        loop {
            match packets.try_recv() {
                Ok(t) => {
                    written = tracks.write(t);
                    if written.is_err() {
                        break;
                    }
                }
                Err(TryRecvError::Empty) => break,
                // Every sender is gone: the room has ended (it stops its recorder first).
                Err(TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        if gone {
            break Instant::now();
        }
        let written = written.and_then(|()| {
            if last_flush.elapsed() >= FLUSH_EVERY {
                last_flush = Instant::now();
                tracks.flush()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            stopped = Some((write_failure(&e), true));
            break Instant::now();
        }
    };
    // What arrived before the end still counts.
    if stopped.is_none() {
        while let Ok(t) = packets.try_recv() {
            if t.arrived > end {
                break;
            }
            if let Err(e) = tracks.write(t) {
                stopped = Some((write_failure(&e), true));
                break;
            }
        }
    }
    drop(packets);
    if let Some((reason, _)) = &stopped {
        tracing::warn!(
            id = job.id,
            room = job.request.room_name,
            "recording stopped: {reason}"
        );
        let _ = job.request.events.send(RecordingEvent::Stopped {
            room: job.room,
            room_name: job.request.room_name.clone(),
            id: job.id.clone(),
            reason: reason.clone(),
        });
    }
    let finished = tracks.finish(end);
    let failed = match (&stopped, finished) {
        (Some((reason, true)), _) => Err(format!(
            "{reason}; the tracks written so far are kept on the server ({}/)",
            job.id
        )),
        (_, Err(e)) => Err(format!(
            "{}; the tracks written so far are kept on the server ({}/)",
            write_failure(&e),
            job.id
        )),
        (_, Ok(manifest)) => make_file(&job, manifest),
    };
    match failed {
        Ok((duration_ms, bytes)) => {
            let mut record = job.record.clone();
            record.duration_ms = duration_ms;
            record.bytes = bytes;
            record.state = "ready".to_owned();
            record.message = stopped.map(|(r, _)| r).unwrap_or_default();
            // Into the bucket, if one is set (the file stays here if that fails).
            if let Some(runtime) = &job.runtime {
                let (location, failed) = runtime.block_on(job.setup.archive.keep(&job.id));
                record.location = location.as_str().to_owned();
                if let Some(failed) = failed {
                    tracing::error!(id = job.id, "{failed}");
                    if record.message.is_empty() {
                        record.message = failed;
                    }
                }
            }
            save(&job, &record);
            tracing::info!(
                id = job.id,
                room = job.request.room_name,
                duration_ms,
                bytes,
                "recording ready"
            );
            let _ = job.request.events.send(RecordingEvent::Ready {
                room_name: job.request.room_name.clone(),
                id: job.id.clone(),
                by_user: job.request.by_user.clone(),
                duration_ms,
                bytes,
            });
        }
        Err(message) => {
            let mut record = job.record.clone();
            record.duration_ms = end.saturating_duration_since(started).as_millis() as u64;
            record.state = "failed".to_owned();
            record.message = message.clone();
            save(&job, &record);
            tracing::error!(
                id = job.id,
                room = job.request.room_name,
                "recording failed: {message}"
            );
            let _ = job.request.events.send(RecordingEvent::Failed {
                room_name: job.request.room_name.clone(),
                id: job.id.clone(),
                by_user: job.request.by_user.clone(),
                message,
            });
        }
    }
}

/// Writes the manifest and runs the mixdown: the file's length and size, or why there is
/// no file. The raw tracks are deleted once the file is made, and kept otherwise.
fn make_file(job: &Job, manifest: mixdown::Manifest) -> Result<(u64, u64), String> {
    let kept = |what: String| {
        tracing::warn!(raw = %job.raw.display(), "no recording file: {what}");
        format!(
            "{what}; the raw tracks are kept on the server (in the recordings folder, {}/)",
            job.id
        )
    };
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    std::fs::write(job.raw.join(mixdown::MANIFEST), json).map_err(|e| kept(write_failure(&e)))?;
    let mut mixing = job.record.clone();
    mixing.state = "mixing".to_owned();
    mixing.duration_ms = manifest.duration_ms;
    save(job, &mixing);
    let out = job.setup.dir.join(format!("{}.webm", job.id));
    let started = Instant::now();
    let bytes = mixdown::run(
        &job.setup.ffmpeg,
        &job.raw,
        &manifest,
        &out,
        job.setup.mixdown_timeout,
    )
    .map_err(|e| kept(e.to_string()))?;
    tracing::info!(
        id = job.id,
        seconds = started.elapsed().as_secs_f64(),
        length_s = manifest.duration_ms as f64 / 1000.0,
        "mixdown done"
    );
    if let Err(e) = std::fs::remove_dir_all(&job.raw) {
        tracing::warn!(dir = %job.raw.display(), "the raw tracks could not be deleted: {e}");
    }
    Ok((manifest.duration_ms, bytes))
}

fn save(job: &Job, record: &RecordingRecord) {
    if let Some(storage) = &job.setup.storage
        && let Err(e) = storage.blocking().save_recording(record)
    {
        tracing::error!(
            id = record.id,
            "the recording's record could not be saved: {e:#}"
        );
    }
}

/// Why a write failed, for the teacher.
pub fn write_failure(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        "the disk is full".to_owned()
    } else {
        format!("a recording file could not be written ({e})")
    }
}

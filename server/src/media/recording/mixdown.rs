//! The mixdown: after a class, one file a browser plays (WebM: the picture's VP8 as
//! recorded, the microphones mixed into one Opus track), made by `ffmpeg` as a separate
//! process from the raw tracks the recorder wrote. It runs on the recorder's thread, with
//! one encoder thread (a class may still be going on), and is stopped if it takes longer
//! than its timeout. Its messages go to `mixdown.log` beside the raw tracks.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The raw tracks' description, written beside them.
pub const MANIFEST: &str = "manifest.json";
const LOG: &str = "mixdown.log";

/// What a recording's raw tracks are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub duration_ms: u64,
    /// Ogg Opus files, each spanning the whole recording.
    pub audio: Vec<String>,
    /// The VP8 IVF file, if any picture was recorded.
    pub picture: Option<String>,
}

/// Why no file was made.
#[derive(Debug, thiserror::Error)]
pub enum MixdownError {
    #[error(
        "the media tool {0} was not found, so no playable file was made (install ffmpeg, or set \
         `ffmpeg` in the configuration)"
    )]
    ToolMissing(PathBuf),
    #[error("the media tool could not be started: {0}")]
    Start(std::io::Error),
    #[error("the mixdown took longer than {0:?} and was stopped")]
    Timeout(Duration),
    #[error("the mixdown failed: {0}")]
    Failed(String),
}

/// The arguments that make `out` from the tracks in `raw`.
pub fn arguments(raw: &Path, manifest: &Manifest, out: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
            .into_iter()
            .map(Into::into)
            .collect();
    let input = |args: &mut Vec<std::ffi::OsString>, path: PathBuf| {
        args.push("-i".into());
        args.push(path.into_os_string());
    };
    for track in &manifest.audio {
        input(&mut args, raw.join(track));
    }
    let audio_inputs = manifest.audio.len();
    if audio_inputs == 0 {
        // No one spoke: a silent track, so that every recording has its sound track.
        for a in ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono"] {
            args.push(a.into());
        }
    }
    if let Some(picture) = &manifest.picture {
        input(&mut args, raw.join(picture));
    }
    if audio_inputs > 1 {
        let mut graph: String = (0..audio_inputs).map(|i| format!("[{i}:a]")).collect();
        graph.push_str(&format!(
            "amix=inputs={audio_inputs}:duration=longest:normalize=0[a]"
        ));
        args.extend([
            "-filter_complex".into(),
            graph.into(),
            "-map".into(),
            "[a]".into(),
        ]);
    } else {
        args.extend(["-map".into(), "0:a".into()]);
    }
    if manifest.picture.is_some() {
        let index = audio_inputs.max(1);
        args.extend([
            "-map".into(),
            format!("{index}:v").into(),
            "-c:v".into(),
            "copy".into(),
        ]);
    }
    let seconds = format!("{:.3}", manifest.duration_ms as f64 / 1000.0);
    for a in [
        "-c:a", "libopus", "-b:a", "64k", "-threads", "1", "-t", &seconds, "-f", "webm",
    ] {
        args.push(a.into());
    }
    args.push(out.as_os_str().to_owned());
    args
}

/// Makes `out` from the tracks in `raw` with `ffmpeg`; its size in bytes.
pub fn run(
    ffmpeg: &Path,
    raw: &Path,
    manifest: &Manifest,
    out: &Path,
    timeout: Duration,
) -> Result<u64, MixdownError> {
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let log = std::fs::File::create(raw.join(LOG)).map_err(MixdownError::Start)?;
    let mut child = Command::new(ffmpeg)
        .args(arguments(raw, manifest, &part))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MixdownError::ToolMissing(ffmpeg.to_owned()),
            _ => MixdownError::Start(e),
        })?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&part);
                return Err(MixdownError::Timeout(timeout));
            }
            Err(e) => return Err(MixdownError::Start(e)),
        }
    };
    if !status.success() {
        let _ = std::fs::remove_file(&part);
        let said = std::fs::read_to_string(raw.join(LOG)).unwrap_or_default();
        let last: Vec<&str> = said.lines().rev().take(3).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        return Err(MixdownError::Failed(format!(
            "ffmpeg {status}: {}",
            last.join(" / ")
        )));
    }
    std::fs::rename(&part, out).map_err(|e| MixdownError::Failed(format!("{e}")))?;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(manifest: &Manifest) -> Vec<String> {
        arguments(Path::new("/r"), manifest, Path::new("/o.webm"))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn microphones_are_mixed_and_the_picture_copied() {
        let a = args(&Manifest {
            duration_ms: 20_000,
            audio: vec!["a1.ogg".into(), "a2.ogg".into()],
            picture: Some("p.ivf".into()),
        });
        let joined = a.join(" ");
        assert!(
            joined.contains("-i /r/a1.ogg -i /r/a2.ogg -i /r/p.ivf"),
            "{joined}"
        );
        assert!(
            joined.contains("[0:a][1:a]amix=inputs=2:duration=longest:normalize=0[a]"),
            "{joined}"
        );
        assert!(joined.contains("-map 2:v -c:v copy"), "{joined}");
        assert!(joined.ends_with("-t 20.000 -f webm /o.webm"), "{joined}");
    }

    #[test]
    fn a_recording_without_speakers_has_a_silent_track() {
        let joined = args(&Manifest {
            duration_ms: 1_500,
            audio: vec![],
            picture: Some("p.ivf".into()),
        })
        .join(" ");
        assert!(joined.contains("-f lavfi -i anullsrc"), "{joined}");
        assert!(joined.contains("-map 0:a -map 1:v"), "{joined}");
        let joined = args(&Manifest {
            duration_ms: 1_500,
            audio: vec!["a.ogg".into()],
            picture: None,
        })
        .join(" ");
        assert!(
            !joined.contains("amix") && !joined.contains(":v"),
            "{joined}"
        );
    }

    #[test]
    fn a_missing_tool_is_named() {
        let dir = std::env::temp_dir().join(format!("quad-mixdown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = run(
            Path::new("/nonexistent/ffmpeg"),
            &dir,
            &Manifest::default(),
            &dir.join("o.webm"),
            Duration::from_secs(5),
        )
        .expect_err("no tool");
        assert!(matches!(err, MixdownError::ToolMissing(_)), "{err}");
        assert!(err.to_string().contains("/nonexistent/ffmpeg"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

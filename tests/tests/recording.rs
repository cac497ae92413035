//! Recording a class, end to end with room bots that publish real Opus and VP8 (made by
//! `ffmpeg`, see `quad_tests::real_media`): a teacher records, students cannot, the file
//! that comes out plays (ffprobe) and holds the room's sound where people spoke and
//! silence where no one did; a full disk stops the recording with a message while the
//! class goes on; without the media tool the teacher is told and the raw tracks are kept.

use anyhow::{Context, Result, bail, ensure};
use quad_shared::protocol::{ClientMsg, ErrorCode, RecordingNews, Role, TeacherAction};
use quad_tests::real_media::{RealMedia, Speaking, real_media};
use quad_tests::room_bot::{RoomBot, RoomBotOptions, room_spot};
use quad_tests::{PATIENCE, TestServer, campus};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn bot(
    name: &str,
    at: [f32; 2],
    token: Option<String>,
    media: &Arc<RealMedia>,
    camera: bool,
    speaking: Option<Speaking>,
) -> RoomBotOptions {
    RoomBotOptions {
        camera,
        token,
        real: Some(media.clone()),
        speaking,
        ..RoomBotOptions::mic(name, at)
    }
}

fn secs(from: f64, to: f64) -> (Duration, Duration) {
    (Duration::from_secs_f64(from), Duration::from_secs_f64(to))
}

/// Waits until `cond` holds of a bot's state.
async fn wait_for(
    bot: &RoomBot,
    what: &str,
    patience: Duration,
    cond: impl Fn(&quad_tests::room_bot::RoomBotState) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        {
            let s = bot.state();
            if cond(&s) {
                return Ok(());
            }
            if let Some(failed) = &s.failed {
                bail!("{what}: the bot failed: {failed}");
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not within {patience:?} (class {:?}, recordings {:?}, errors {:?})",
                    s.class,
                    s.recordings,
                    s.errors
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn recording(bot: &RoomBot) -> bool {
    bot.state().class.as_ref().is_some_and(|c| c.recording)
}

/// The news of the first recording the bot was told of that matches.
fn news(bot: &RoomBot, pick: impl Fn(&RecordingNews) -> bool) -> Option<(String, RecordingNews)> {
    bot.state()
        .recordings
        .iter()
        .find(|(_, _, n)| pick(n))
        .map(|(id, _, n)| (id.clone(), n.clone()))
}

/// What ffprobe says of a file: its duration and its streams' (type, codec).
fn probe(file: &Path) -> Result<(f64, Vec<(String, String)>)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_type,codec_name",
        ])
        .args(["-of", "json"])
        .arg(file)
        .output()
        .context("running ffprobe (Debian's ffmpeg package)")?;
    ensure!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let duration: f64 = json["format"]["duration"]
        .as_str()
        .context("no duration")?
        .parse()?;
    let streams = json["streams"]
        .as_array()
        .context("no streams")?
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or_default().to_owned(),
                s["codec_name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Ok((duration, streams))
}

/// The mean volume (dB) of the file's sound from `from` for half a second (ffmpeg's
/// `volumedetect`).
fn mean_volume(file: &Path, from: f64) -> Result<f64> {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-ss",
            &format!("{from}"),
            "-t",
            "0.5",
            "-i",
        ])
        .arg(file)
        .args(["-map", "0:a", "-af", "volumedetect", "-f", "null", "-"])
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    said.lines()
        .find_map(|l| l.split("mean_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .with_context(|| format!("no mean_volume at {from} s: {said}"))
}

fn recordings_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_class_is_one_playable_file_with_the_rooms_sound_and_the_teachers_camera()
-> Result<()> {
    let media = real_media()?;
    let server = TestServer::start_with(|c| c.room_max_speakers = 10).await?;
    let spot = room_spot(&campus(), 0)?;
    // The recording starts at `epoch`; each person speaks at known times after it.
    let epoch = Arc::new(OnceLock::new());
    let speaks = |on: Vec<(Duration, Duration)>| Speaking {
        epoch: epoch.clone(),
        on,
    };
    let teacher = RoomBot::join(
        server.addr(),
        bot(
            "Ms Ada",
            spot,
            Some(server.token("Ms Ada", Role::Teacher)?),
            &media,
            true,
            Some(speaks(vec![secs(16.0, 19.0)])),
        ),
    )
    .await?;
    let patterns = [
        vec![secs(2.0, 5.0)],
        vec![secs(7.0, 10.0)],
        vec![secs(12.0, 15.0)],
    ];
    let mut students = Vec::new();
    for (i, on) in patterns.into_iter().enumerate() {
        students.push(
            RoomBot::join(
                server.addr(),
                bot(
                    &format!("Student {i}"),
                    spot,
                    None,
                    &media,
                    false,
                    Some(speaks(on)),
                ),
            )
            .await?,
        );
    }
    // One more student, without media, who will leave and come back (by their join link).
    let dee_token = server.token("Dee", Role::Student)?;
    let mut dee = quad_tests::Bot::join_as(
        server.addr(),
        "x",
        Some(spot),
        Some(dee_token.clone()),
        None,
    )
    .await?;
    let ids: Vec<_> = students.iter().map(|s| s.id).collect();
    teacher.wait_receiving(&ids, "mic", 20).await?;
    for s in &students {
        s.wait_receiving(&[teacher.id], "camera", 20).await?;
    }

    // A student cannot record: the server refuses, and nothing records.
    students[0].send(ClientMsg::Teacher(TeacherAction::Record(true)));
    wait_for(&students[0], "the student's refusal", PATIENCE, |s| {
        s.errors.iter().any(|e| e.code == ErrorCode::Forbidden)
    })
    .await?;
    ensure!(
        !recording(&teacher),
        "a student's request started a recording"
    );

    epoch.get_or_init(Instant::now);
    let started = Instant::now();
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(true)));
    for b in std::iter::once(&teacher).chain(&students) {
        wait_for(b, "everyone sees the recording", PATIENCE, |s| {
            s.class.as_ref().is_some_and(|c| c.recording)
        })
        .await?;
    }
    tokio::time::sleep_until((started + Duration::from_secs(20)).into()).await;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(false)));
    wait_for(
        &teacher,
        "the recording is ready",
        Duration::from_secs(60),
        |s| {
            s.recordings
                .iter()
                .any(|(_, _, n)| matches!(n, RecordingNews::Ready { .. }))
        },
    )
    .await?;
    ensure!(
        !recording(&students[0]),
        "the class still shows a recording"
    );
    let (id, ready) =
        news(&teacher, |n| matches!(n, RecordingNews::Ready { .. })).context("no Ready news")?;
    let dir = server.data_dir.join("recordings");
    let file = dir.join(format!("{id}.webm"));
    // The raw tracks are gone once the file is made.
    ensure!(
        recordings_in(&dir) == [format!("{id}.webm")],
        "{:?}",
        recordings_in(&dir)
    );
    let (duration, streams) = probe(&file)?;
    println!("recording {id}: {ready:?}; ffprobe: {duration:.2} s, {streams:?}");
    ensure!((19.0..=21.0).contains(&duration), "{duration} s");
    ensure!(
        streams.contains(&("audio".into(), "opus".into()))
            && streams.contains(&("video".into(), "vp8".into()))
            && streams.len() == 2,
        "{streams:?}"
    );
    // Loud where someone spoke, silent where no one did.
    let loud = [3.0, 8.0, 13.0, 17.0];
    let quiet = [0.5, 5.5, 10.5, 15.3];
    let mut volumes = Vec::new();
    for at in loud.iter().chain(&quiet) {
        volumes.push((*at, mean_volume(&file, *at)?));
    }
    println!("mean volume per second (s, dB): {volumes:?}");
    for (at, db) in &volumes {
        if loud.contains(at) {
            ensure!(*db > -35.0, "silent at {at} s where someone spoke: {db} dB");
        } else {
            ensure!(*db < -60.0, "sound at {at} s where no one spoke: {db} dB");
        }
    }
    // Student 0 takes part: a raised hand, a chat line, a moment away from the tab.
    students[0].send(ClientMsg::Hand { raised: true });
    students[0].send(ClientMsg::Chat {
        to: quad_shared::protocol::ChatTo::Room,
        text: "a question".into(),
    });
    students[0].send(ClientMsg::Attention { watching: false });
    tokio::time::sleep(Duration::from_millis(600)).await;
    students[0].send(ClientMsg::Attention { watching: true });
    // Dee leaves and comes back: two intervals in the register.
    dee.close().await;
    wait_for(&teacher, "the register shows Dee gone", PATIENCE, |s| {
        s.class_report
            .as_ref()
            .is_some_and(|r| r.rows.iter().any(|row| row.name == "Dee" && !row.present))
    })
    .await?;
    let _dee =
        quad_tests::Bot::join_as(server.addr(), "x", Some(spot), Some(dee_token), None).await?;
    wait_for(&teacher, "the register shows Dee back", PATIENCE, |s| {
        s.class_report.as_ref().is_some_and(|r| {
            r.rows
                .iter()
                .any(|row| row.name == "Dee" && row.intervals == 2 && row.present)
        })
    })
    .await?;
    // Talk time from the SFU's audio levels: 3 s each, within 10%.
    let report = teacher.state().class_report.clone().context("no report")?;
    for row in &report.rows {
        println!(
            "register: {} ({}): talk {} ms, {} interval(s), present {} ms",
            row.name,
            row.role.as_str(),
            row.talk_ms,
            row.intervals,
            row.present_ms
        );
    }
    for name in ["Ms Ada", "Student 0", "Student 1", "Student 2"] {
        let row = report
            .rows
            .iter()
            .find(|r| r.name == name)
            .with_context(|| format!("{name} is not in the register: {report:?}"))?;
        ensure!(
            (2_700..=3_300).contains(&row.talk_ms),
            "{name} spoke 3 s, the register says {} ms",
            row.talk_ms
        );
    }
    let engaged = report
        .rows
        .iter()
        .find(|r| r.name == "Student 0")
        .context("no Student 0")?;
    ensure!(
        (engaged.hands, engaged.chat_lines, engaged.away_count) == (1, 1, 1)
            && (400..=2_000).contains(&engaged.away_ms),
        "{engaged:?}"
    );
    let dee_row = report
        .rows
        .iter()
        .find(|r| r.name == "Dee")
        .context("no Dee")?;
    ensure!(dee_row.talk_ms == 0, "{dee_row:?}");
    // The store keeps it.
    {
        use quad_server::store::Store;
        let store = quad_server::store::sqlite::SqliteStore::open(&server.data_dir)?;
        let rows = store.recordings(10)?;
        ensure!(rows.len() == 1, "{rows:?}");
        let row = &rows[0];
        ensure!(
            row.id == id && row.state == "ready" && row.room == "Classroom A",
            "{row:?}"
        );
        ensure!(
            row.by_name == "Ms Ada" && (19_000..=21_000).contains(&row.duration_ms),
            "{row:?}"
        );
        ensure!(row.bytes == std::fs::metadata(&file)?.len(), "{row:?}");
    }
    // The register outlives the server: stopped, its store has the class as it stood.
    let session = report.session.clone();
    let data = server.stop_keeping_data().await;
    {
        use quad_server::store::Store;
        let store = quad_server::store::sqlite::SqliteStore::open(&data)?;
        let register = store
            .register(&session)?
            .context("the register was not stored")?;
        let dee = register
            .people
            .iter()
            .find(|p| p.name == "Dee")
            .context("no Dee in the stored register")?;
        ensure!(dee.intervals.len() == 2, "{dee:?}");
        let recorded = store.recordings(10)?;
        ensure!(recorded[0].session == session, "{recorded:?}");
        let csv = quad_server::records::register::csv(&register, quad_server::store::now_ms());
        println!("{csv}");
        ensure!(
            csv.lines()
                .filter(|l| l.starts_with("Dee,student,"))
                .count()
                == 2,
            "{csv}"
        );
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(kib: u32) -> Result<SmallDisk> {
        let dir = quad_tests::temp_dir("small-disk");
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&dir)
            .status()
            .context("mount (the test runs as root, as `cargo xtask test` does)")?;
        ensure!(status.success(), "mounting a tmpfs failed");
        Ok(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_recording_with_a_message_and_the_class_goes_on() -> Result<()> {
    let media = real_media()?;
    let disk = SmallDisk::mount(192)?;
    let recordings = disk.0.join("recordings");
    let server = TestServer::start_with(|c| c.recordings_dir = Some(recordings.clone())).await?;
    let spot = room_spot(&campus(), 1)?;
    let teacher = RoomBot::join(
        server.addr(),
        bot(
            "Mr Bo",
            spot,
            Some(server.token("Mr Bo", Role::Teacher)?),
            &media,
            true,
            None,
        ),
    )
    .await?;
    let student = RoomBot::join(server.addr(), bot("Cy", spot, None, &media, false, None)).await?;
    teacher.wait_receiving(&[student.id], "mic", 20).await?;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(true)));
    wait_for(&student, "the recording starts", PATIENCE, |s| {
        s.class.as_ref().is_some_and(|c| c.recording)
    })
    .await?;
    // The camera fills 192 KiB in a few seconds.
    wait_for(
        &teacher,
        "the teacher is told",
        Duration::from_secs(30),
        |s| {
            s.recordings.iter().any(|(_, _, n)| {
            matches!(n, RecordingNews::Stopped { reason } if reason.contains("disk is full"))
        })
        },
    )
    .await?;
    wait_for(
        &student,
        "the class no longer shows a recording",
        PATIENCE,
        |s| s.class.as_ref().is_some_and(|c| !c.recording),
    )
    .await?;
    wait_for(&teacher, "no file could be made", PATIENCE, |s| {
        s.recordings
            .iter()
            .any(|(_, _, n)| matches!(n, RecordingNews::Failed { .. }))
    })
    .await?;
    // The class goes on: the student's audio keeps reaching the teacher.
    let before = teacher.state().packets_from(student.id, "mic");
    wait_for(
        &teacher,
        "the student's audio after the disk filled",
        PATIENCE,
        |s| s.packets_from(student.id, "mic") >= before + 50,
    )
    .await?;
    server.stop().await;
    drop(disk);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_media_tool_the_teacher_is_told_and_the_raw_tracks_are_kept() -> Result<()> {
    let media = real_media()?;
    let server =
        TestServer::start_with(|c| c.ffmpeg = PathBuf::from("/nonexistent/ffmpeg")).await?;
    let spot = room_spot(&campus(), 2)?;
    let teacher = RoomBot::join(
        server.addr(),
        bot(
            "Ms Di",
            spot,
            Some(server.token("Ms Di", Role::Teacher)?),
            &media,
            true,
            None,
        ),
    )
    .await?;
    let student = RoomBot::join(server.addr(), bot("Ed", spot, None, &media, false, None)).await?;
    teacher.wait_receiving(&[student.id], "mic", 20).await?;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(true)));
    wait_for(&teacher, "the recording starts", PATIENCE, |s| {
        s.class.as_ref().is_some_and(|c| c.recording)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(false)));
    wait_for(&teacher, "the teacher is told", PATIENCE, |s| {
        s.recordings
            .iter()
            .any(|(_, _, n)| matches!(n, RecordingNews::Failed { .. }))
    })
    .await?;
    let (id, failed) =
        news(&teacher, |n| matches!(n, RecordingNews::Failed { .. })).context("no news")?;
    let RecordingNews::Failed { message } = failed else {
        bail!("{failed:?}");
    };
    println!("the teacher was told: {message}");
    ensure!(
        message.contains("/nonexistent/ffmpeg") && message.contains("raw tracks"),
        "{message}"
    );
    let raw = server.data_dir.join("recordings").join(&id);
    let files = recordings_in(&raw);
    ensure!(
        files.contains(&"manifest.json".to_owned())
            && files.contains(&format!("audio-{}.ogg", student.id.0))
            && files.contains(&"picture.ivf".to_owned()),
        "{files:?}"
    );
    // The raw tracks themselves play.
    let (duration, _) = probe(&raw.join(format!("audio-{}.ogg", student.id.0)))?;
    ensure!((2.0..=5.0).contains(&duration), "{duration} s");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_listed_played_and_shared_by_signed_links_that_expire() -> Result<()> {
    use quad_tests::{Bot, http_request};
    let media = real_media()?;
    let server = TestServer::start().await?;
    let spot = room_spot(&campus(), 3)?;
    let teacher = RoomBot::join(
        server.addr(),
        bot(
            "Mr Fox",
            spot,
            Some(server.token("Mr Fox", Role::Teacher)?),
            &media,
            true,
            None,
        ),
    )
    .await?;
    let student = RoomBot::join(server.addr(), bot("Gil", spot, None, &media, false, None)).await?;
    // Someone on the campus who was never in this class.
    let mut outsider = Bot::join(server.addr(), "Hal", Some(campus().spawn.into())).await?;
    teacher.wait_receiving(&[student.id], "mic", 20).await?;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(true)));
    wait_for(&teacher, "the recording starts", PATIENCE, recording_now).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(false)));
    wait_for(&teacher, "the file is made", Duration::from_secs(60), |s| {
        s.recordings
            .iter()
            .any(|(_, _, n)| matches!(n, RecordingNews::Ready { .. }))
    })
    .await?;

    // The teacher's list: the recording, with links, and the class's register.
    teacher.send(ClientMsg::Records);
    wait_for(&teacher, "the teacher's records", PATIENCE, |s| {
        s.records.as_ref().is_some_and(|r| !r.recordings.is_empty())
    })
    .await?;
    let list = teacher.state().records.clone().context("no list")?;
    let entry = &list.recordings[0];
    ensure!(
        entry.state == "ready" && entry.may_share && !entry.shared,
        "{entry:?}"
    );
    ensure!(list.classes.len() == 1, "{list:?}");
    let play = entry.play_url.clone().context("no play link")?;
    let download = entry.download_url.clone().context("no download link")?;
    let file = server
        .data_dir
        .join("recordings")
        .join(format!("{}.webm", entry.id));
    let size = std::fs::metadata(&file)?.len();
    ensure!(entry.bytes == size, "{entry:?} vs {size}");

    let whole = http_request(server.addr(), &play, &[]).await?;
    ensure!(whole.status == 200, "{:?}", whole.headers);
    ensure!(
        whole.header("content-type") == Some("video/webm"),
        "{:?}",
        whole.headers
    );
    ensure!(
        whole.body == std::fs::read(&file)?,
        "the file came back different"
    );
    ensure!(
        whole.header("cache-control") == Some("private, no-store"),
        "{:?}",
        whole.headers
    );
    let part = http_request(server.addr(), &play, &["Range: bytes=100-199"]).await?;
    ensure!(
        part.status == 206 && part.body.len() == 100,
        "{} {:?}",
        part.status,
        part.headers
    );
    let saved = http_request(server.addr(), &download, &[]).await?;
    ensure!(
        saved
            .header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment")),
        "{:?}",
        saved.headers
    );
    let csv = http_request(server.addr(), &list.classes[0].csv_url, &[]).await?;
    let text = String::from_utf8_lossy(&csv.body);
    println!("the class's CSV:\n{text}");
    ensure!(
        csv.status == 200 && text.starts_with("name,role,came,went"),
        "{text}"
    );
    ensure!(
        text.contains("\nMr Fox,teacher,") && text.contains("\nGil,guest,"),
        "{text}"
    );

    // Links cannot be changed, and stop working when they expire.
    let forged = play.replace("expires=", "expires=9");
    let refused = http_request(server.addr(), &forged, &[]).await?;
    ensure!(refused.status == 403, "{}", refused.status);
    let expired = {
        use quad_server::store::Store;
        let store = quad_server::store::sqlite::SqliteStore::open(&server.data_dir)?;
        let (key, _) = store.secret_or_create("records_link_key", &|| vec![0; 32])?;
        let links = quad_server::records::links::Links::new(&key);
        let path = play.split('?').next().unwrap_or_default().to_owned();
        links.sign(&path, quad_server::store::now_ms() - 1, false)
    };
    let late = http_request(server.addr(), &expired, &[]).await?;
    ensure!(
        late.status == 403 && String::from_utf8_lossy(&late.body).contains("expired"),
        "{} {}",
        late.status,
        String::from_utf8_lossy(&late.body)
    );
    let bare = http_request(
        server.addr(),
        play.split('?').next().unwrap_or_default(),
        &[],
    )
    .await?;
    ensure!(bare.status == 403, "{}", bare.status);

    // The student sees nothing until the teacher shares it, and cannot share it.
    student.send(ClientMsg::Records);
    wait_for(&student, "the student's records", PATIENCE, |s| {
        s.records.is_some()
    })
    .await?;
    let theirs = student.state().records.clone().context("no list")?;
    ensure!(
        theirs.recordings.is_empty() && theirs.classes.is_empty(),
        "{theirs:?}"
    );
    student.send(ClientMsg::ShareRecording {
        id: entry.id.clone(),
        shared: true,
    });
    wait_for(&student, "the student's share refused", PATIENCE, |s| {
        s.errors.iter().any(|e| e.code == ErrorCode::Forbidden)
    })
    .await?;
    teacher.send(ClientMsg::ShareRecording {
        id: entry.id.clone(),
        shared: true,
    });
    wait_for(&teacher, "the shared recording", PATIENCE, |s| {
        s.records
            .as_ref()
            .is_some_and(|r| r.recordings.first().is_some_and(|e| e.shared))
    })
    .await?;
    student.state().records = None;
    student.send(ClientMsg::Records);
    wait_for(&student, "the student sees it shared", PATIENCE, |s| {
        s.records.as_ref().is_some_and(|r| {
            r.recordings
                .first()
                .is_some_and(|e| e.id == entry.id && !e.may_share && e.play_url.is_some())
        })
    })
    .await?;
    // Someone who was not in the class still does not.
    outsider.send(&ClientMsg::Records).await?;
    outsider
        .wait_until(PATIENCE, |b| b.records.is_some())
        .await?;
    let outside = outsider.records.clone().context("no list")?;
    ensure!(outside.recordings.is_empty(), "{outside:?}");

    // Past the retention, the recording and its file go.
    {
        let store = quad_server::store::sqlite::SqliteStore::open(&server.data_dir)?;
        let storage = quad_server::store::Storage::new(
            Arc::new(store),
            quad_server::store::Retention::default(),
            Duration::from_secs(3600),
        )?;
        let archive =
            quad_server::records::archive::Archive::new(server.data_dir.join("recordings"), None)?;
        let gone = quad_server::records::prune(
            &storage,
            &archive,
            1,
            quad_server::store::now_ms() + 2 * 24 * 3600 * 1000,
        )
        .await?;
        ensure!(
            gone == 1 && !file.exists(),
            "{gone} deleted; file there: {}",
            file.exists()
        );
    }
    server.stop().await;
    Ok(())
}

fn recording_now(s: &quad_tests::room_bot::RoomBotState) -> bool {
    s.class.as_ref().is_some_and(|c| c.recording)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_goes_to_object_storage_retried_checked_and_plays_from_there() -> Result<()> {
    use futures_util::StreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    use quad_tests::http_request;
    use quad_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
    let media = real_media()?;
    // The S3 server refuses the first two writes, as a busy service would.
    let s3 = S3Server::start("class-recordings", 2).await?;
    let endpoint = s3.endpoint();
    let server = TestServer::start_with(|c| {
        c.s3_bucket = Some("class-recordings".into());
        c.s3_endpoint = Some(endpoint.clone());
        c.s3_allow_http = true;
        c.s3_access_key_id = Some(ACCESS_KEY.into());
        c.s3_secret_access_key = Some(SECRET_KEY.into());
    })
    .await?;
    let spot = room_spot(&campus(), 1)?;
    let teacher = RoomBot::join(
        server.addr(),
        bot(
            "Ms Ivy",
            spot,
            Some(server.token("Ms Ivy", Role::Teacher)?),
            &media,
            true,
            None,
        ),
    )
    .await?;
    let student = RoomBot::join(server.addr(), bot("Jo", spot, None, &media, false, None)).await?;
    teacher.wait_receiving(&[student.id], "mic", 20).await?;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(true)));
    wait_for(&teacher, "the recording starts", PATIENCE, recording_now).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(false)));
    wait_for(&teacher, "the file is made", Duration::from_secs(60), |s| {
        s.recordings
            .iter()
            .any(|(_, _, n)| matches!(n, RecordingNews::Ready { .. }))
    })
    .await?;
    let (id, _) =
        news(&teacher, |n| matches!(n, RecordingNews::Ready { .. })).context("no news")?;

    // The bucket lists it with the file's size; the local copy is gone.
    let row = {
        use quad_server::store::Store;
        let store = quad_server::store::sqlite::SqliteStore::open(&server.data_dir)?;
        store
            .recordings(10)?
            .into_iter()
            .find(|r| r.id == id)
            .context("no row")?
    };
    ensure!(row.location == "s3" && row.message.is_empty(), "{row:?}");
    let client = s3.client()?;
    let listed: Vec<object_store::ObjectMeta> = client
        .list(Some(&object_store::path::Path::from("recordings")))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    println!(
        "the bucket lists {:?}; {} writes were refused first",
        listed
            .iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect::<Vec<_>>(),
        s3.refused_writes.load(std::sync::atomic::Ordering::SeqCst)
    );
    let object = listed
        .iter()
        .find(|m| m.location.to_string() == format!("recordings/{id}.webm"))
        .context("the recording is not in the bucket")?;
    ensure!(
        object.size == row.bytes,
        "{} bytes stored, {} made",
        object.size,
        row.bytes
    );
    ensure!(
        s3.refused_writes.load(std::sync::atomic::Ordering::SeqCst) == 2,
        "the refused writes were not retried through"
    );
    let local = server
        .data_dir
        .join("recordings")
        .join(format!("{id}.webm"));
    ensure!(!local.exists(), "the local copy was kept after the upload");

    // It plays from the bucket through the server's signed link, whole and by range.
    teacher.send(ClientMsg::Records);
    wait_for(&teacher, "the teacher's records", PATIENCE, |s| {
        s.records.as_ref().is_some_and(|r| !r.recordings.is_empty())
    })
    .await?;
    let play = teacher
        .state()
        .records
        .as_ref()
        .and_then(|r| r.recordings[0].play_url.clone())
        .context("no link")?;
    let stored = client
        .get(&object_store::path::Path::from(format!(
            "recordings/{id}.webm"
        )))
        .await?
        .bytes()
        .await?;
    let whole = http_request(server.addr(), &play, &[]).await?;
    ensure!(
        whole.status == 200 && whole.body == stored,
        "status {}",
        whole.status
    );
    let tail = http_request(server.addr(), &play, &["Range: bytes=-100"]).await?;
    ensure!(
        tail.status == 206 && tail.body == stored[stored.len() - 100..],
        "{} {:?}",
        tail.status,
        tail.headers
    );

    // Past the retention, it goes from the bucket too.
    {
        let store = quad_server::store::sqlite::SqliteStore::open(&server.data_dir)?;
        let storage = quad_server::store::Storage::new(
            Arc::new(store),
            quad_server::store::Retention::default(),
            Duration::from_secs(3600),
        )?;
        let settings = quad_server::records::archive::S3Settings {
            bucket: "class-recordings".into(),
            prefix: "recordings/".into(),
            endpoint: Some(s3.endpoint()),
            region: "us-east-1".into(),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            allow_http: true,
        };
        let archive = quad_server::records::archive::Archive::new(
            server.data_dir.join("recordings"),
            Some(&settings),
        )?;
        let gone = quad_server::records::prune(
            &storage,
            &archive,
            1,
            quad_server::store::now_ms() + 2 * 24 * 3600 * 1000,
        )
        .await?;
        let left = client
            .list(Some(&object_store::path::Path::from("recordings")))
            .collect::<Vec<_>>()
            .await;
        ensure!(
            gone == 1 && left.is_empty(),
            "{gone} deleted, {} left",
            left.len()
        );
    }
    server.stop().await;
    Ok(())
}

/// The server killed (SIGKILL) during a recording: started again on the same data, it
/// makes the file from what was written, and the teacher finds it ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_cut_off_by_a_kill_is_finished_when_the_server_starts_again() -> Result<()> {
    use quad_server::store::Store;
    let media = real_media()?;
    let data = quad_tests::temp_dir("recording-kill");
    std::fs::create_dir_all(&data)?;
    let bin = quad_tests::server_binary()?;
    let (mut child, addr) = quad_tests::start_process(&data, "127.0.0.1:0").await?;
    let token = quad_tests::teacher_token(&bin, &data, "Ms Kay")?;
    let spot = room_spot(&campus(), 2)?;
    let teacher = RoomBot::join(addr, bot("Ms Kay", spot, Some(token), &media, true, None)).await?;
    let student = RoomBot::join(addr, bot("Lu", spot, None, &media, false, None)).await?;
    teacher.wait_receiving(&[student.id], "mic", 20).await?;
    teacher.send(ClientMsg::Teacher(TeacherAction::Record(true)));
    wait_for(&teacher, "the recording starts", PATIENCE, recording_now).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    child.kill().await?;
    drop((teacher, student));
    let (mut again, _) = quad_tests::restart_process(&data, addr).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let row = loop {
        let store = quad_server::store::sqlite::SqliteStore::open(&data)?;
        let rows = store.recordings(10)?;
        ensure!(rows.len() == 1, "{rows:?}");
        if rows[0].state == "ready" || rows[0].state == "failed" {
            break rows[0].clone();
        }
        ensure!(Instant::now() < deadline, "still {:?}", rows[0]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("after the restart: {row:?}");
    ensure!(row.state == "ready", "{row:?}");
    ensure!(row.message.contains("server stopped"), "{row:?}");
    let file = data.join("recordings").join(format!("{}.webm", row.id));
    let (duration, streams) = probe(&file)?;
    println!("ffprobe: {duration:.2} s, {streams:?}");
    ensure!((2.5..=6.0).contains(&duration), "{duration} s");
    ensure!(
        streams.contains(&("audio".into(), "opus".into()))
            && streams.contains(&("video".into(), "vp8".into())),
        "{streams:?}"
    );
    ensure!(
        !data.join("recordings").join(&row.id).exists(),
        "the raw tracks were kept"
    );
    again.kill().await?;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

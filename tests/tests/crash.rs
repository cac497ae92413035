//! A crash loses nothing anyone has seen: the real `quad-server` process is killed with
//! SIGKILL five times while bots chat in bursts (see `quad_tests::crash`), and every chat
//! line any bot was sent is in the history when the server is started again on the same
//! data directory.

use anyhow::Result;
use quad_tests::crash::crash_cycles;
use quad_tests::{server_binary, temp_dir};

/// Killed with SIGKILL five times while chat bursts go out, twice of them while the store
/// is stalled, then started again: every line any bot was sent is in the history, and the
/// restarted server serves it. (Before lines were held until stored, the stalled cycles
/// lost every line of their bursts, all of which bots had been shown, and about one
/// unstalled kill in four lost a few.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chat_line_anyone_saw_survives_a_kill() -> Result<()> {
    let data = temp_dir("crash");
    let report = crash_cycles(&server_binary()?, &data, 5).await?;
    println!(
        "{} kills, {} lines sent, {} seen by some bot before a kill, {} stored, {} of those seen lost",
        report.cycles,
        report.sent,
        report.seen,
        report.stored,
        report.lost.len()
    );
    anyhow::ensure!(
        report.lost.is_empty(),
        "lines seen but lost in a crash: {:?}",
        report.lost
    );
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// A teacher's link for the campus kept in `data` (made by `quad-server token`).
fn teacher_token(bin: &std::path::Path, data: &std::path::Path) -> Result<String> {
    quad_tests::teacher_token(bin, data, "Ms Ada")
}

/// Teacher actions a student saw take effect (the room locked, unlocked, ...) are in the
/// audit log after SIGKILL: the class's new state goes out only with the audit record
/// stored. Three cycles; the teacher toggles the lock as fast as it may while the student
/// counts the changes it is shown, and the server is killed in the middle of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_teacher_action_anyone_saw_is_in_the_audit_log_after_a_kill() -> Result<()> {
    use quad_server::store::Store;
    use quad_server::store::sqlite::SqliteStore;
    use quad_shared::protocol::{ClientMsg, TeacherAction};
    use quad_tests::Bot;
    use quad_tests::room_bot::room_spot;
    use std::time::{Duration, Instant};

    let bin = server_binary()?;
    let data = temp_dir("crash-audit");
    std::fs::create_dir_all(&data)?;
    let token = teacher_token(&bin, &data)?;
    let at = room_spot(&quad_tests::campus(), 0)?;
    let mut seen_total = 0;
    for cycle in 0..3 {
        let (mut server, addr) = quad_tests::crash::start(&bin, &data).await?;
        let mut teacher = Bot::join_as(addr, "t", Some(at), Some(token.clone()), None).await?;
        let mut student = Bot::join(addr, &format!("student{cycle}"), Some(at)).await?;
        student
            .wait_until(quad_tests::PATIENCE, |b| b.class.is_some())
            .await?;
        teacher
            .wait_until(quad_tests::PATIENCE, |b| b.class.is_some())
            .await?;
        let mut locked = student.class.as_ref().is_some_and(|c| c.locked);
        let mut seen = 0;
        // In the middle cycle the database's write lock is held (a stalled disk): nothing
        // is stored, so the student must see nothing change.
        let stall = cycle == 1;
        let lock = if stall {
            let conn =
                rusqlite::Connection::open(data.join(quad_server::store::sqlite::FILE_NAME))?;
            conn.execute_batch("BEGIN IMMEDIATE")?;
            Some(conn)
        } else {
            None
        };
        // Toggles, paced within the teacher's allowance; the kill comes after the student
        // saw a few (or, stalled, after eight were sent), while more are on their way.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut next = !locked;
        let mut sent = 0;
        while if stall { sent < 8 } else { seen < 4 } {
            anyhow::ensure!(
                Instant::now() < deadline,
                "cycle {cycle}: saw {seen} changes"
            );
            sent += 1;
            teacher
                .send(&ClientMsg::Teacher(TeacherAction::Lock(next)))
                .await?;
            next = !next;
            let until = Instant::now() + Duration::from_millis(250);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                if !student.pump(left).await? {
                    break;
                }
                let now = student.class.as_ref().is_some_and(|c| c.locked);
                if now != locked {
                    seen += 1;
                    locked = now;
                }
            }
            teacher.drain().await?;
        }
        // One more on its way as the process dies.
        teacher
            .send(&ClientMsg::Teacher(TeacherAction::Lock(next)))
            .await?;
        server.start_kill()?;
        server.wait().await?;
        drop(lock);
        while student.closed.is_none() {
            if !student.pump(Duration::from_secs(2)).await? {
                break;
            }
            let now = student.class.as_ref().is_some_and(|c| c.locked);
            if now != locked {
                seen += 1;
                locked = now;
            }
        }
        if stall {
            anyhow::ensure!(
                seen == 0,
                "cycle {cycle}: the student saw {seen} lock changes the stalled store did not have"
            );
        }
        seen_total += seen;
        let logged = SqliteStore::open(&data)?
            .audit_log(10_000)?
            .iter()
            .filter(|r| r.action == "lock")
            .count();
        println!(
            "cycle {cycle}: the student saw {seen} lock changes; {seen_total} in all; the audit log holds {logged} lock actions"
        );
        anyhow::ensure!(
            logged >= seen_total,
            "the student saw {seen_total} lock changes but the audit log holds {logged}"
        );
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

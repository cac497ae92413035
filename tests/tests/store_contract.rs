//! Both stores keep the same promises: one contract, run against the embedded SQLite store
//! and against the cluster's PostgreSQL store (a real server started on loopback by
//! `quad_tests::cluster::Postgres`). Every method of `Store` is used, and what it gives
//! back is checked.

use anyhow::{Result, ensure};
use quad_server::auth::UserKey;
use quad_server::records::register::{Attendee, Register};
use quad_server::store::{
    AuditRecord, ChatRecord, History, Pruned, RecordingRecord, Retention, Store,
};
use quad_shared::protocol::{ChatLine, ChatScope, Role};

const DAY: u64 = 24 * 3600 * 1000;
const NOW: u64 = 1_700_000_000_000 + 400 * DAY;

fn line(id: u64, at_ms: u64, scope: ChatScope, text: &str) -> ChatLine {
    ChatLine {
        id,
        at_ms,
        scope,
        from: None,
        from_name: "Ada".into(),
        from_role: Role::Teacher,
        to_name: None,
        text: text.into(),
    }
}

fn record(line: ChatLine, recipients: &[&str]) -> ChatRecord {
    ChatRecord {
        line,
        from_user: "u:ada".into(),
        recipients: recipients.iter().map(|s| s.to_string()).collect(),
    }
}

fn audit(action: &str, at_ms: u64) -> AuditRecord {
    AuditRecord {
        at_ms,
        room: "Room 1".into(),
        actor_user: "u:ada".into(),
        actor_name: "Ada".into(),
        action: action.into(),
        target_name: Some("Bo".into()),
        detail: format!("{action} the room"),
    }
}

fn recording(id: &str, started_ms: u64, session: &str) -> RecordingRecord {
    RecordingRecord {
        id: id.into(),
        room: "Room 1".into(),
        by_user: "u:ada".into(),
        by_name: "Ada".into(),
        started_ms,
        duration_ms: 0,
        bytes: 0,
        state: "recording".into(),
        message: String::new(),
        shared: false,
        session: session.into(),
        location: "local".into(),
    }
}

fn attendee(user: &str, role: Role, talk_ms: u64) -> Attendee {
    Attendee {
        user: UserKey(user.into()),
        name: user.trim_start_matches("u:").into(),
        role,
        intervals: vec![(NOW - DAY, Some(NOW - DAY + 60_000)), (NOW - 1000, None)],
        talk_ms,
        hands: 2,
        chat_lines: 3,
        away_count: 1,
        away_ms: 5_000,
        away_since: None,
    }
}

fn contract(store: &dyn Store) -> Result<()> {
    // Secrets: made once, the same for everyone after.
    let (first, made) = store.secret_or_create("join", &|| vec![1, 2, 3])?;
    ensure!(made && first == vec![1, 2, 3]);
    let (again, made) = store.secret_or_create("join", &|| vec![9])?;
    ensure!(!made && again == first, "a secret is made once");

    // Chat: each history keeps its own, the last N oldest first.
    ensure!(store.last_chat_id()? == 0);
    store.append_chat(&record(
        line(1, NOW - 100 * DAY, ChatScope::Nearby, "old"),
        &["u:ada", "u:bo"],
    ))?;
    store.append_chat(&record(
        line(2, NOW, ChatScope::Room("Room 1".into()), "<b>"),
        &[],
    ))?;
    store.append_chat(&record(
        line(3, NOW, ChatScope::Nearby, "psst"),
        &["u:ada", "u:bo"],
    ))?;
    store.append_chat(&record(
        line(4, NOW, ChatScope::Direct, "dm"),
        &["u:ada", "u:cy"],
    ))?;
    for id in 5..=110 {
        store.append_chat(&record(line(id, NOW, ChatScope::Space, "more"), &[]))?;
    }
    ensure!(store.last_chat_id()? == 110);
    let space = store.chat_history(&History::Space, 100)?;
    ensure!(space.len() == 100 && space[0].id == 11 && space[99].id == 110);
    let room = store.chat_history(&History::Room("Room 1".into()), 100)?;
    ensure!(room.len() == 1 && room[0].text == "<b>");
    ensure!(room[0].scope == ChatScope::Room("Room 1".into()));
    let bo: Vec<u64> = store
        .chat_history(&History::Nearby("u:bo".into()), 100)?
        .iter()
        .map(|l| l.id)
        .collect();
    ensure!(bo == vec![1, 3], "Bo's nearby lines: {bo:?}");
    ensure!(
        store
            .chat_history(&History::Nearby("u:cy".into()), 100)?
            .is_empty()
    );
    let cy = store.chat_history(&History::Direct("u:cy".into()), 100)?;
    ensure!(cy.len() == 1 && cy[0].text == "dm" && cy[0].from_role == Role::Teacher);

    // The audit log, in order.
    store.append_audit(&audit("ancient", NOW - 400 * DAY))?;
    store.append_audit(&audit("lock", NOW))?;
    store.append_audit(&audit("allow", NOW))?;
    let log = store.audit_log(10)?;
    ensure!(log.len() == 3 && log[1] == audit("lock", NOW) && log[2].action == "allow");

    // Recordings: saved, updated, listed newest first, shared.
    store.save_recording(&recording("r1", NOW - 500 * DAY, "s-old"))?;
    store.save_recording(&recording("r2", NOW - 1000, "s1"))?;
    let mut done = recording("r2", NOW - 1000, "s1");
    done.state = "ready".into();
    done.bytes = 12_345;
    done.duration_ms = 20_000;
    done.location = "s3".into();
    store.save_recording(&done)?;
    ensure!(
        store.recording("r2")? == Some(done.clone()),
        "the update is kept"
    );
    ensure!(store.recording("nope")?.is_none());
    let ids: Vec<String> = store.recordings(10)?.into_iter().map(|r| r.id).collect();
    ensure!(ids == ["r2", "r1"], "newest first: {ids:?}");
    store.set_recording_shared("r2", true)?;
    ensure!(store.recording("r2")?.is_some_and(|r| r.shared));

    // Class registers: saved, updated, read whole, by teacher, by attendee.
    let mut class = Register {
        id: "s1".into(),
        room: "Room 1".into(),
        started_ms: NOW - 2000,
        ended_ms: None,
        people: vec![
            attendee("u:ada", Role::Teacher, 1_000),
            attendee("u:bo", Role::Student, 3_000),
        ],
        left_out: 0,
        ..Register::default()
    };
    store.save_register(&class)?;
    class.people[1].talk_ms = 4_000;
    class.people.push(attendee("u:cy", Role::Student, 0));
    class.ended_ms = Some(NOW);
    class.left_out = 2;
    store.save_register(&class)?;
    let old = Register {
        id: "s-old".into(),
        room: "Room 2".into(),
        started_ms: NOW - 500 * DAY,
        people: vec![attendee("u:bo", Role::Teacher, 10)],
        ..Register::default()
    };
    store.save_register(&old)?;
    let kept = store
        .register("s1")?
        .ok_or_else(|| anyhow::anyhow!("s1 kept"))?;
    ensure!(kept.ended_ms == Some(NOW) && kept.left_out == 2);
    ensure!(
        kept.people == class.people,
        "people, in order: {:?}",
        kept.people
    );
    let taught: Vec<String> = store
        .registers(Some("u:ada"), 10)?
        .into_iter()
        .map(|r| r.id)
        .collect();
    ensure!(taught == ["s1"], "Ada taught s1: {taught:?}");
    ensure!(store.registers(None, 10)?.len() == 2);
    let bo_sessions = store.sessions_of("u:bo", 10)?;
    ensure!(
        bo_sessions == vec![("s1".to_string(), false), ("s-old".to_string(), true)],
        "{bo_sessions:?}"
    );

    // Records' retention: the old recording and register go, the new ones stay.
    let gone = store.prune_records(NOW - 365 * DAY)?;
    ensure!(gone == ["r1"], "{gone:?}");
    ensure!(store.recordings(10)?.len() == 1 && store.register("s-old")?.is_none());
    ensure!(
        store.sessions_of("u:bo", 10)?.len() == 1,
        "attendees go with their session"
    );

    // Reserved names: kept once.
    store.reserve_name("msada", NOW)?;
    store.reserve_name("msada", NOW + 1)?;
    store.reserve_name("bo", NOW)?;
    let mut names = store.reserved_names()?;
    names.sort();
    ensure!(names == ["bo", "msada"]);

    // Chat and audit retention.
    ensure!(store.prune(&Retention::default(), NOW)? == Pruned::default());
    let rules = Retention {
        chat_days: 90,
        chat_max_lines: 100,
        audit_days: 365,
    };
    let pruned = store.prune(&rules, NOW)?;
    // Line 1 is 100 days old; of the other 109, the oldest 9 are beyond the newest 100.
    ensure!(pruned == Pruned { chat: 10, audit: 1 }, "{pruned:?}");
    ensure!(
        store
            .chat_history(&History::Nearby("u:bo".into()), 100)?
            .is_empty()
    );
    ensure!(store.audit_log(10)?.len() == 2);
    Ok(())
}

#[test]
fn the_sqlite_store_keeps_the_contract() -> Result<()> {
    let dir = quad_tests::temp_dir("contract-sqlite");
    std::fs::create_dir_all(&dir)?;
    let store = quad_server::store::sqlite::SqliteStore::open(&dir)?;
    contract(&store)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_the_contract() -> Result<()> {
    let pg = quad_tests::cluster::Postgres::start().await?;
    let url = pg.database("contract")?;
    tokio::task::spawn_blocking(move || {
        let store = quad_server::store::postgres::PostgresStore::open(&url)?;
        contract(&store)?;
        // Opening again (a second node starting) migrates nothing and sees the same data.
        let again = quad_server::store::postgres::PostgresStore::open(&url)?;
        ensure!(again.last_chat_id()? == 110);
        ensure!(again.secret_or_create("join", &|| vec![7])?.0 == vec![1, 2, 3]);
        anyhow::Ok(())
    })
    .await??;
    Ok(())
}

#[test]
fn a_postgres_store_that_cannot_be_reached_is_a_clear_error() {
    let port = quad_tests::cluster::free_port().expect("a port");
    let err = quad_server::store::postgres::PostgresStore::open(&format!(
        "postgres://quad@127.0.0.1:{port}/none"
    ))
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(
        err.contains("connecting to PostgreSQL") && err.contains("database_url"),
        "{err}"
    );
}

//! Storage faults and retention, with bot clients on a real server. A full store is made
//! for real: the server runs with `store_max_mb = 1` (SQLite's `max_page_count`) and the
//! test fills the database through the store API up to that limit, so the server's inserts
//! fail with "database or disk is full", as on a full disk. Then: the sender of a line that
//! could not be stored is told (and the others still get it live), the outage is logged and
//! counted once and its end noticed, and the rest of the space goes on. Retention: old chat
//! lines, lines past `chat_max_lines` and old audit records are gone after a restart, recent
//! ones kept. A stalled store (the test holds the write lock) holds chat back until it is
//! stored, within a bound.

use glam::Vec2;
use quad_server::store::sqlite::SqliteStore;
use quad_server::store::{AuditRecord, ChatRecord, History, Retention, Store, now_ms};
use quad_shared::movement::{self, dir};
use quad_shared::protocol::{ChatLine, ChatScope, ChatTo, ClientMsg, MAX_CHAT_CHARS, Role};
use quad_tests::{Bot, PATIENCE, TestServer, campus, chat_bursts, http_get, metric, settle};
use std::path::Path;
use std::time::{Duration, Instant};

/// A hallway spot, and one next to it (within talking distance).
const ADA: [f32; 2] = [224.0, 400.0];
const BO: [f32; 2] = [260.0, 400.0];

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Filler lines' ids: far above what the server hands out in a test.
const FILLER_IDS: u64 = 1_000_000_000;

fn record(id: u64, at_ms: u64, scope: ChatScope, text: &str) -> ChatRecord {
    ChatRecord {
        line: ChatLine {
            id,
            at_ms,
            scope,
            from: None,
            from_name: "Filler".into(),
            from_role: Role::Guest,
            to_name: None,
            text: text.into(),
        },
        from_user: "u:filler".into(),
        recipients: Vec::new(),
    }
}

/// Fills the database in `dir` up to a 1 MB limit with ancient room lines (shown to no
/// one), until a 500-character line no longer fits. The store is returned so the test can
/// free the space again.
fn fill_to_one_mb(dir: &Path) -> anyhow::Result<SqliteStore> {
    let store = SqliteStore::open(dir)?;
    store.limit_size(1024 * 1024)?;
    let text = "f".repeat(500);
    for n in 0..20_000 {
        let filler = record(FILLER_IDS + n, 1, ChatScope::Room("Filler".into()), &text);
        if let Err(e) = store.append_chat(&filler) {
            anyhow::ensure!(format!("{e:#}").contains("full"), "not a full store: {e:#}");
            return Ok(store);
        }
    }
    anyhow::bail!("20,000 lines fit in a megabyte")
}

/// A server whose store is full, with Ada and Bo next to each other.
async fn full_server() -> anyhow::Result<(TestServer, SqliteStore, Bot, Bot)> {
    let server = TestServer::start_with(|c| c.store_max_mb = 1).await?;
    let store = fill_to_one_mb(&server.data_dir)?;
    let ada = Bot::join(server.addr(), "Ada", Some(ADA)).await?;
    let bo = Bot::join(server.addr(), "Bo", Some(BO)).await?;
    Ok((server, store, ada, bo))
}

/// Ada says `text` to the space; waits until Bo has it and returns its id.
async fn say(ada: &mut Bot, bo: &mut Bot, text: &str) -> anyhow::Result<u64> {
    ada.send(&ClientMsg::Chat {
        to: ChatTo::Space,
        text: text.into(),
    })
    .await?;
    if let Err(e) = bo
        .wait_until(PATIENCE, |b| b.chat_texts().contains(&text))
        .await
    {
        ada.drain().await?;
        anyhow::bail!("{e}; the sender's errors: {:?}", ada.errors);
    }
    let id = bo
        .chat
        .values()
        .find(|l| l.text == text)
        .map(|l| l.id)
        .ok_or_else(|| anyhow::anyhow!("vanished"))?;
    Ok(id)
}

/// Waits until the metrics page satisfies `cond`; returns it.
async fn wait_metrics(
    server: &TestServer,
    what: &str,
    cond: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, page) = http_get(server.addr(), "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics: {status}");
        if cond(&page) {
            return Ok(page);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "metrics: {what}; they are\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A line of the longest size a client may send, starting with `tag`.
fn long_line(tag: &str) -> String {
    let mut line = format!("{tag} {}", "x".repeat(MAX_CHAT_CHARS));
    line.truncate(MAX_CHAT_CHARS);
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_of_a_line_that_could_not_be_stored_is_told_and_others_still_get_it()
-> anyhow::Result<()> {
    let (server, _store, mut ada, mut bo) = full_server().await?;
    let text = long_line("lost");
    let id = say(&mut ada, &mut bo, &text).await?;
    // Ada gets her line live, then the word that it was not saved.
    ada.wait_until(PATIENCE, |a| a.not_saved.contains(&id))
        .await?;
    assert!(ada.chat_texts().contains(&text.as_str()), "delivered live");
    assert_eq!(ada.not_saved, vec![id]);
    // Bo, who did not send it, is not told; and it is in no history.
    bo.listen_for(Duration::from_millis(300)).await?;
    assert!(bo.not_saved.is_empty(), "{:?}", bo.not_saved);
    let reader = SqliteStore::open(&server.data_dir)?;
    let history = reader.chat_history(&History::Space, 100)?;
    assert!(history.iter().all(|l| l.id != id), "it was not stored");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_counted_once_and_its_end_noticed() -> anyhow::Result<()> {
    let (server, store, mut ada, mut bo) = full_server().await?;
    let page = wait_metrics(&server, "healthy at first", |p| {
        metric(p, "quad_store_healthy") == Some(1.0)
    })
    .await?;
    assert_eq!(metric(&page, "quad_store_outages_total"), Some(0.0));
    let mut lost = Vec::new();
    for n in 0..3 {
        lost.push(say(&mut ada, &mut bo, &long_line(&format!("lost {n}"))).await?);
    }
    ada.wait_until(PATIENCE, |a| a.not_saved.len() == 3).await?;
    assert_eq!(ada.not_saved, lost, "each line is named, in order");
    let page = wait_metrics(&server, "three failures", |p| {
        metric(p, "quad_store_write_failures_total") == Some(3.0)
    })
    .await?;
    assert_eq!(metric(&page, "quad_store_healthy"), Some(0.0));
    assert_eq!(
        metric(&page, "quad_store_outages_total"),
        Some(1.0),
        "one outage (logged once), not one per line"
    );

    // Space is freed (here: the filler goes): the next line is stored, and the store is
    // healthy again, still after one outage.
    let freed = store.prune(
        &Retention {
            chat_days: 1,
            ..Retention::default()
        },
        now_ms(),
    )?;
    assert!(freed.chat > 100, "{freed:?}");
    let kept = say(&mut ada, &mut bo, &long_line("kept")).await?;
    let page = wait_metrics(&server, "healthy again", |p| {
        metric(p, "quad_store_healthy") == Some(1.0)
    })
    .await?;
    assert_eq!(metric(&page, "quad_store_outages_total"), Some(1.0));
    assert_eq!(metric(&page, "quad_store_write_failures_total"), Some(3.0));
    let history = store.chat_history(&History::Space, 100)?;
    assert_eq!(history.iter().map(|l| l.id).collect::<Vec<_>>(), vec![kept]);
    ada.listen_for(Duration::from_millis(300)).await?;
    assert_eq!(ada.not_saved.len(), 3, "the stored line is not reported");
    server.stop().await;
    Ok(())
}

/// A direction in which a few steps from `p` really move.
fn free_direction(p: [f32; 2]) -> u8 {
    let map = campus();
    [dir::LEFT, dir::RIGHT, dir::UP, dir::DOWN]
        .into_iter()
        .find(|d| {
            let to = movement::apply(&map.collision, Vec2::from_array(p), *d, 10);
            to.distance(Vec2::from_array(p)) > 5.0
        })
        .unwrap_or(dir::LEFT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_space_goes_on_while_storage_fails() -> anyhow::Result<()> {
    let (server, _store, mut ada, mut bo) = full_server().await?;
    let id = say(&mut ada, &mut bo, &long_line("lost")).await?;
    ada.wait_until(PATIENCE, |a| a.not_saved.contains(&id))
        .await?;
    // Ada walks: her inputs are applied and Bo's snapshots follow her.
    let start = ada.me;
    let seen_by_bo = bo.snapshot_bytes;
    ada.walk(free_direction(start), 12).await?;
    assert!(
        Vec2::from_array(ada.me).distance(Vec2::from_array(start)) > 5.0,
        "moved from {start:?} to {:?}",
        ada.me
    );
    let ada_id = ada.id;
    let moved_to = ada.me;
    bo.wait_until(PATIENCE, |b| {
        b.snapshot_bytes > seen_by_bo
            && b.others
                .get(&ada_id)
                .is_some_and(|p| Vec2::from_array(*p).distance(Vec2::from_array(moved_to)) < 1.0)
    })
    .await?;
    // Someone new can join, and chat still reaches people.
    let mut cy = Bot::join(server.addr(), "Cy", Some(BO)).await?;
    let text = long_line("still live");
    let id = say(&mut ada, &mut cy, &text).await?;
    bo.wait_until(PATIENCE, |b| b.chat.contains_key(&id))
        .await?;
    assert!(ada.closed.is_none() && bo.closed.is_none());
    server.stop().await;
    Ok(())
}

/// Starts a server once (to make its database), stops it, and returns the data directory.
async fn made_data_dir() -> anyhow::Result<std::path::PathBuf> {
    let server = TestServer::start().await?;
    Ok(server.stop_keeping_data().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_chat_is_deleted_at_start_up_and_recent_chat_kept() -> anyhow::Result<()> {
    let dir = made_data_dir().await?;
    let now = now_ms();
    {
        let store = SqliteStore::open(&dir)?;
        store.append_chat(&record(
            1,
            now - 100 * DAY_MS,
            ChatScope::Space,
            "100 days old",
        ))?;
        let mut nearby = record(2, now - 40 * DAY_MS, ChatScope::Nearby, "40 days old");
        nearby.recipients = vec!["u:filler".into(), "u:other".into()];
        store.append_chat(&nearby)?;
        store.append_chat(&record(
            3,
            now - 20 * DAY_MS,
            ChatScope::Space,
            "20 days old",
        ))?;
        store.append_chat(&record(4, now - DAY_MS, ChatScope::Space, "yesterday"))?;
    }
    let server = TestServer::start_in(dir, |c| c.chat_retention_days = 30).await?;
    let mut ada = Bot::join(server.addr(), "Ada", Some(ADA)).await?;
    ada.wait_until(PATIENCE, |a| a.chat_texts().contains(&"yesterday"))
        .await?;
    assert_eq!(ada.chat_texts(), vec!["20 days old", "yesterday"]);
    let store = SqliteStore::open(&server.data_dir)?;
    let ids = |h: History| -> anyhow::Result<Vec<u64>> {
        Ok(store.chat_history(&h, 100)?.iter().map(|l| l.id).collect())
    };
    assert_eq!(ids(History::Space)?, vec![3, 4]);
    assert!(ids(History::Nearby("u:other".into()))?.is_empty());
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_chat_max_lines_are_kept() -> anyhow::Result<()> {
    let dir = made_data_dir().await?;
    let now = now_ms();
    {
        let store = SqliteStore::open(&dir)?;
        for id in 1..=150 {
            store.append_chat(&record(
                id,
                now - DAY_MS,
                ChatScope::Space,
                &format!("{id}"),
            ))?;
        }
    }
    let server = TestServer::start_in(dir, |c| c.chat_max_lines = 100).await?;
    let store = SqliteStore::open(&server.data_dir)?;
    let kept: Vec<u64> = store
        .chat_history(&History::Space, 1000)?
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(kept, (51..=150).collect::<Vec<_>>());
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_its_own_retention() -> anyhow::Result<()> {
    let dir = made_data_dir().await?;
    let now = now_ms();
    {
        let store = SqliteStore::open(&dir)?;
        for (action, age_days) in [("two years ago", 730), ("last month", 30)] {
            store.append_audit(&AuditRecord {
                at_ms: now - age_days * DAY_MS,
                room: "Room 1".into(),
                actor_user: "u:ada".into(),
                actor_name: "Ada".into(),
                action: action.into(),
                target_name: None,
                detail: String::new(),
            })?;
        }
    }
    // Chat is kept a week; the audit log a year: last month's record stays.
    let server = TestServer::start_in(dir, |c| {
        c.chat_retention_days = 7;
        c.audit_retention_days = 365;
    })
    .await?;
    let store = SqliteStore::open(&server.data_dir)?;
    let log = store.audit_log(100)?;
    assert_eq!(
        log.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        vec!["last month"]
    );
    server.stop().await;
    Ok(())
}

/// A stalled store holds back what its lines would show, but not without bound: with the
/// database's write lock held by another connection, the first 256 chat lines wait for it
/// (none is shown), the ones past that bound go out unstored (with a warning in the log),
/// and once the lock goes every line is stored and shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_holds_chat_back_within_a_bound() -> anyhow::Result<()> {
    const BOTS: usize = 60;
    const BURST: usize = 5;
    let server = TestServer::start_with(|c| {
        c.max_connections_per_ip = 200;
        c.max_sessions_per_ip = 200;
        c.session_joins_per_ip_per_minute = 200;
    })
    .await?;
    let mut watcher = Bot::join(server.addr(), "Watcher", Some(ADA)).await?;
    let mut bots = Vec::new();
    for i in 0..BOTS {
        bots.push(Bot::join(server.addr(), &format!("talker{i}"), Some(BO)).await?);
    }
    let lock =
        rusqlite::Connection::open(server.data_dir.join(quad_server::store::sqlite::FILE_NAME))?;
    lock.execute_batch("BEGIN IMMEDIATE")?;
    chat_bursts(&mut bots, BURST, |i, n| format!("talker{i} line {n}")).await?;
    let sent = BOTS * BURST;
    // Past the bound (256 held passes, one per line here), lines go out while the store is
    // still stalled, and only those.
    let unheld = sent - 256;
    watcher
        .wait_until(Duration::from_secs(3), |b| b.chat.len() >= unheld)
        .await?;
    // Every line has been handled, and what went out has arrived: no more come out.
    settle(&mut bots).await?;
    settle(std::slice::from_mut(&mut watcher)).await?;
    let shown_while_stalled = watcher.chat.len();
    anyhow::ensure!(
        shown_while_stalled == unheld,
        "{shown_while_stalled} of {sent} lines shown while the store was stalled, not {unheld}"
    );
    lock.execute_batch("ROLLBACK")?;
    drop(lock);
    watcher
        .wait_until(PATIENCE, |b| b.chat.len() >= sent)
        .await?;
    let stored = SqliteStore::open(&server.data_dir)?.chat_history(&History::Space, 2 * sent)?;
    anyhow::ensure!(
        stored.len() == sent,
        "{} of {sent} lines stored",
        stored.len()
    );
    println!("{shown_while_stalled} of {sent} lines shown while the store was stalled");
    server.stop().await;
    Ok(())
}

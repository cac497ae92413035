//! The embedded store: one SQLite file (`quad.sqlite3` in the data directory), in WAL mode
//! so `quad-server token` can read secrets while the server runs. The schema comes from the
//! SQL files in `server/migrations/`, applied in order and tracked by `user_version`. The
//! files are private to the server's user ([`super::private`]). A size cap
//! ([`SqliteStore::limit_size`], `store_max_mb`) makes writes past it fail as on a full disk;
//! pruning deletes in batches and leaves the freed pages for new rows (the file does not
//! shrink, and does not grow while pruning keeps up).

use super::{AuditRecord, ChatRecord, History, Pruned, RecordingRecord, Retention, Store};
use crate::auth::UserKey;
use crate::records::register::{Attendee, Register};
use anyhow::Context;
use quad_shared::protocol::{ChatLine, ChatScope, Role};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use std::path::Path;
use std::sync::Mutex;

/// The database file's name in the data directory.
pub const FILE_NAME: &str = "quad.sqlite3";

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001_init.sql"),
    include_str!("../../migrations/002_retention.sql"),
    include_str!("../../migrations/003_reserved_names.sql"),
    include_str!("../../migrations/004_recordings.sql"),
    include_str!("../../migrations/005_class_registers.sql"),
    include_str!("../../migrations/006_recording_location.sql"),
];

/// Rows deleted per statement when pruning, so readers wait at most that long.
const PRUNE_BATCH: i64 = 5_000;
/// Batches one prune deletes at most per table (bounded work; the next prune goes on).
const PRUNE_MAX_BATCHES: usize = 1_000;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Recordings, newest first: the one with `id`, or all; at most `limit`.
    fn recording_rows(
        &self,
        id: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<RecordingRecord>> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached(
                "SELECT id, room, by_user, by_name, started_ms, duration_ms, bytes, state, message,
                        shared, session, location
                 FROM recordings WHERE ?2 IS NULL OR id = ?2
                 ORDER BY started_ms DESC, id DESC LIMIT ?1",
            )?
            .query_map(params![limit as i64, id], |row| {
                Ok(RecordingRecord {
                    id: row.get(0)?,
                    room: row.get(1)?,
                    by_user: row.get(2)?,
                    by_name: row.get(3)?,
                    started_ms: row.get::<_, i64>(4)?.max(0) as u64,
                    duration_ms: row.get::<_, i64>(5)?.max(0) as u64,
                    bytes: row.get::<_, i64>(6)?.max(0) as u64,
                    state: row.get(7)?,
                    message: row.get(8)?,
                    shared: row.get(9)?,
                    session: row.get(10)?,
                    location: row.get(11)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Opens (creating if needed) the store in `data_dir` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> anyhow::Result<SqliteStore> {
        let path = data_dir.join(FILE_NAME);
        // The file holds secrets: made 0600 before SQLite opens it (its -wal and -shm
        // files get the same mode), and tightened if an older run left it looser.
        super::private::create_private_file(&path)?;
        let open = || -> anyhow::Result<Connection> {
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
            migrations
                .to_latest(&mut conn)
                .context("migrating the schema")?;
            Ok(conn)
        };
        let conn = open().with_context(|| format!("database {}", path.display()))?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            super::private::tighten_file(Path::new(&name));
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// Caps the database at `max_bytes` (SQLite's `max_page_count`; 0: no cap but the
    /// disk's). Past it, writes fail with "database or disk is full", exactly as on a full
    /// disk. A database already larger keeps its size as the cap. Returns the cap in bytes.
    pub fn limit_size(&self, max_bytes: u64) -> anyhow::Result<u64> {
        if max_bytes == 0 {
            return Ok(0);
        }
        let conn = self.conn();
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let page_size = page_size.max(512) as u64;
        let pages = (max_bytes / page_size).max(1);
        let set: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get(0)
        })?;
        let cap = set.max(0) as u64 * page_size;
        if cap > max_bytes {
            tracing::warn!(
                "the database is already {} MB, more than its size limit: it may not grow",
                cap / (1024 * 1024)
            );
        }
        Ok(cap)
    }

    /// Deletes the rows `select` (a `SELECT id ... LIMIT ?2` with the cutoff as `?1`)
    /// names from `table`, in batches; the number deleted.
    fn delete_batched(&self, table: &str, select: &str, bound: i64) -> anyhow::Result<u64> {
        let sql = format!("DELETE FROM {table} WHERE id IN ({select})");
        let mut deleted = 0;
        for _ in 0..PRUNE_MAX_BATCHES {
            // The lock is taken per batch, so reads get in between.
            let n = self.conn().execute(&sql, params![bound, PRUNE_BATCH])?;
            deleted += n as u64;
            if (n as i64) < PRUNE_BATCH {
                break;
            }
        }
        Ok(deleted)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the connection would be a bug; SQLite's own transactions
        // keep the data consistent, so the connection stays usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn scope_parts(scope: &ChatScope) -> (&'static str, Option<&str>) {
    match scope {
        ChatScope::Nearby => ("nearby", None),
        ChatScope::Room(name) => ("room", Some(name.as_str())),
        ChatScope::Space => ("space", None),
        ChatScope::Direct => ("direct", None),
    }
}

fn line_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ChatLine> {
    let scope: String = row.get("scope")?;
    let room: Option<String> = row.get("room")?;
    let scope = match scope.as_str() {
        "nearby" => ChatScope::Nearby,
        "room" => ChatScope::Room(room.unwrap_or_default()),
        "direct" => ChatScope::Direct,
        _ => ChatScope::Space,
    };
    let role: String = row.get("from_role")?;
    Ok(ChatLine {
        id: row.get::<_, i64>("id")? as u64,
        at_ms: row.get::<_, i64>("at_ms")? as u64,
        scope,
        from: None,
        from_name: row.get("from_name")?,
        from_role: Role::parse(&role).unwrap_or_default(),
        to_name: row.get("to_name")?,
        text: row.get("body")?,
    })
}

impl Store for SqliteStore {
    fn secret_or_create(
        &self,
        name: &str,
        make: &dyn Fn() -> Vec<u8>,
    ) -> anyhow::Result<(Vec<u8>, bool)> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing: Option<Vec<u8>> = tx
            .query_row("SELECT value FROM secret WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(value) = existing {
            return Ok((value, false));
        }
        let value = make();
        tx.execute(
            "INSERT INTO secret (name, value) VALUES (?1, ?2)",
            params![name, value],
        )?;
        tx.commit()?;
        Ok((value, true))
    }

    fn append_chat(&self, record: &ChatRecord) -> anyhow::Result<()> {
        let line = &record.line;
        let (scope, room) = scope_parts(&line.scope);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO chat (id, at_ms, scope, room, from_user, from_name, from_role, to_name, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                line.id as i64,
                line.at_ms as i64,
                scope,
                room,
                record.from_user,
                line.from_name,
                line.from_role.as_str(),
                line.to_name,
                line.text
            ],
        )?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO chat_recipient (user, chat_id) VALUES (?1, ?2)",
            )?;
            for user in &record.recipients {
                insert.execute(params![user, line.id as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn chat_history(&self, which: &History, limit: usize) -> anyhow::Result<Vec<ChatLine>> {
        let conn = self.conn();
        let limit = limit as i64;
        let mut lines = match which {
            History::Space => conn
                .prepare_cached(
                    "SELECT * FROM chat WHERE scope = 'space' ORDER BY id DESC LIMIT ?1",
                )?
                .query_map(params![limit], line_from_row)?
                .collect::<Result<Vec<_>, _>>()?,
            History::Room(room) => conn
                .prepare_cached(
                    "SELECT * FROM chat WHERE scope = 'room' AND room = ?1 ORDER BY id DESC LIMIT ?2",
                )?
                .query_map(params![room, limit], line_from_row)?
                .collect::<Result<Vec<_>, _>>()?,
            History::Nearby(user) | History::Direct(user) => {
                let scope = if matches!(which, History::Nearby(_)) {
                    "nearby"
                } else {
                    "direct"
                };
                conn.prepare_cached(
                    "SELECT chat.* FROM chat_recipient r JOIN chat ON chat.id = r.chat_id
                     WHERE r.user = ?1 AND chat.scope = ?2 ORDER BY chat.id DESC LIMIT ?3",
                )?
                .query_map(params![user, scope, limit], line_from_row)?
                .collect::<Result<Vec<_>, _>>()?
            }
        };
        lines.reverse();
        Ok(lines)
    }

    fn last_chat_id(&self) -> anyhow::Result<u64> {
        let id: Option<i64> = self
            .conn()
            .query_row("SELECT MAX(id) FROM chat", [], |r| r.get(0))?;
        Ok(id.unwrap_or(0).max(0) as u64)
    }

    fn append_audit(&self, r: &AuditRecord) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO audit (at_ms, room, actor_user, actor_name, action, target_name, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                r.at_ms as i64,
                r.room,
                r.actor_user,
                r.actor_name,
                r.action,
                r.target_name,
                r.detail
            ],
        )?;
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> anyhow::Result<Vec<AuditRecord>> {
        let conn = self.conn();
        let mut records = conn
            .prepare_cached(
                "SELECT at_ms, room, actor_user, actor_name, action, target_name, detail
                 FROM audit ORDER BY id DESC LIMIT ?1",
            )?
            .query_map(params![limit as i64], |row| {
                Ok(AuditRecord {
                    at_ms: row.get::<_, i64>(0)? as u64,
                    room: row.get(1)?,
                    actor_user: row.get(2)?,
                    actor_name: row.get(3)?,
                    action: row.get(4)?,
                    target_name: row.get(5)?,
                    detail: row.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        records.reverse();
        Ok(records)
    }

    fn save_recording(&self, r: &RecordingRecord) -> anyhow::Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO recordings
                     (id, room, by_user, by_name, started_ms, duration_ms, bytes, state, message, shared,
                      session, location)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (id) DO UPDATE SET duration_ms = ?6, bytes = ?7, state = ?8,
                     message = ?9, shared = ?10, location = ?12",
            )?
            .execute(params![
                r.id,
                r.room,
                r.by_user,
                r.by_name,
                r.started_ms as i64,
                r.duration_ms as i64,
                r.bytes as i64,
                r.state,
                r.message,
                r.shared,
                r.session,
                r.location
            ])?;
        Ok(())
    }

    fn recordings(&self, limit: usize) -> anyhow::Result<Vec<RecordingRecord>> {
        self.recording_rows(None, limit)
    }

    fn recording(&self, id: &str) -> anyhow::Result<Option<RecordingRecord>> {
        Ok(self.recording_rows(Some(id), 1)?.into_iter().next())
    }

    fn save_register(&self, r: &Register) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO class_sessions (id, room, started_ms, ended_ms, left_out)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET ended_ms = ?4, left_out = ?5",
        )?
        .execute(params![
            r.id,
            r.room,
            r.started_ms as i64,
            r.ended_ms.map(|t| t as i64),
            r.left_out
        ])?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO class_attendees (session, user_key, name, role, intervals, talk_ms,
                     hands, chat_lines, away_count, away_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (session, user_key) DO UPDATE SET name = ?3, intervals = ?5,
                     talk_ms = ?6, hands = ?7, chat_lines = ?8, away_count = ?9, away_ms = ?10",
            )?;
            for p in &r.people {
                let intervals = serde_json::to_string(&p.intervals)?;
                upsert.execute(params![
                    r.id,
                    p.user.0,
                    p.name,
                    p.role.as_str(),
                    intervals,
                    p.talk_ms as i64,
                    p.hands,
                    p.chat_lines,
                    p.away_count,
                    p.away_ms as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn registers(&self, taught_by: Option<&str>, limit: usize) -> anyhow::Result<Vec<Register>> {
        let conn = self.conn();
        let ids: Vec<String> = match taught_by {
            Some(user) => conn
                .prepare_cached(
                    "SELECT s.id FROM class_sessions s JOIN class_attendees a ON a.session = s.id
                     WHERE a.user_key = ?1 AND a.role = 'teacher'
                     ORDER BY s.started_ms DESC LIMIT ?2",
                )?
                .query_map(params![user, limit as i64], |row| row.get(0))?
                .collect::<Result<_, _>>()?,
            None => conn
                .prepare_cached("SELECT id FROM class_sessions ORDER BY started_ms DESC LIMIT ?1")?
                .query_map(params![limit as i64], |row| row.get(0))?
                .collect::<Result<_, _>>()?,
        };
        drop(conn);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.register(&id)?);
        }
        Ok(out)
    }

    fn register(&self, id: &str) -> anyhow::Result<Option<Register>> {
        let conn = self.conn();
        let Some(mut register) = conn
            .prepare_cached(
                "SELECT id, room, started_ms, ended_ms, left_out FROM class_sessions WHERE id = ?1",
            )?
            .query_row(params![id], |row| {
                Ok(Register {
                    id: row.get(0)?,
                    room: row.get(1)?,
                    started_ms: row.get::<_, i64>(2)?.max(0) as u64,
                    ended_ms: row.get::<_, Option<i64>>(3)?.map(|t| t.max(0) as u64),
                    left_out: row.get(4)?,
                    ..Register::default()
                })
            })
            .optional()?
        else {
            return Ok(None);
        };
        let rows = conn
            .prepare_cached(
                "SELECT user_key, name, role, intervals, talk_ms, hands, chat_lines, away_count,
                        away_ms
                 FROM class_attendees WHERE session = ?1 ORDER BY rowid",
            )?
            .query_map(params![id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    [
                        row.get::<_, i64>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, i64>(6)?,
                        row.get::<_, i64>(7)?,
                        row.get::<_, i64>(8)?,
                    ],
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (user, name, role, intervals, [talk, hands, chat, away_count, away_ms]) in rows {
            register.people.push(Attendee {
                user: UserKey(user),
                name,
                role: Role::parse(&role).unwrap_or_default(),
                intervals: serde_json::from_str(&intervals)?,
                talk_ms: talk.max(0) as u64,
                hands: hands.max(0) as u32,
                chat_lines: chat.max(0) as u32,
                away_count: away_count.max(0) as u32,
                away_ms: away_ms.max(0) as u64,
                away_since: None,
            });
        }
        Ok(Some(register))
    }

    fn sessions_of(&self, user: &str, limit: usize) -> anyhow::Result<Vec<(String, bool)>> {
        let conn = self.conn();
        let rows = conn
            .prepare_cached(
                "SELECT s.id, a.role FROM class_sessions s JOIN class_attendees a ON a.session = s.id
                 WHERE a.user_key = ?1 ORDER BY s.started_ms DESC LIMIT ?2",
            )?
            .query_map(params![user, limit as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)? == "teacher"))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn set_recording_shared(&self, id: &str, shared: bool) -> anyhow::Result<()> {
        self.conn()
            .prepare_cached("UPDATE recordings SET shared = ?2 WHERE id = ?1")?
            .execute(params![id, shared])?;
        Ok(())
    }

    fn prune_records(&self, before_ms: u64) -> anyhow::Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids: Vec<String> = tx
            .prepare_cached("SELECT id FROM recordings WHERE started_ms < ?1")?
            .query_map(params![before_ms as i64], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute(
            "DELETE FROM recordings WHERE started_ms < ?1",
            params![before_ms as i64],
        )?;
        tx.execute(
            "DELETE FROM class_attendees WHERE session IN
                 (SELECT id FROM class_sessions WHERE started_ms < ?1)",
            params![before_ms as i64],
        )?;
        tx.execute(
            "DELETE FROM class_sessions WHERE started_ms < ?1",
            params![before_ms as i64],
        )?;
        tx.commit()?;
        Ok(ids)
    }

    fn reserve_name(&self, key: &str, at_ms: u64) -> anyhow::Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT OR IGNORE INTO reserved_names (name_key, reserved_ms) VALUES (?1, ?2)",
            )?
            .execute(params![key, at_ms as i64])?;
        Ok(())
    }

    fn reserved_names(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.conn();
        let keys = conn
            .prepare_cached("SELECT name_key FROM reserved_names")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(keys)
    }

    fn prune(&self, rules: &Retention, now_ms: u64) -> anyhow::Result<Pruned> {
        let mut pruned = Pruned::default();
        if let Some(cutoff) = rules.chat_cutoff_ms(now_ms) {
            // Recipients go with their line (ON DELETE CASCADE).
            pruned.chat += self.delete_batched(
                "chat",
                "SELECT id FROM chat WHERE at_ms < ?1 LIMIT ?2",
                cutoff as i64,
            )?;
        }
        if rules.chat_max_lines > 0 {
            // The id of the oldest line kept: everything before it goes.
            let first_kept: Option<i64> = self
                .conn()
                .query_row(
                    "SELECT id FROM chat ORDER BY id DESC LIMIT 1 OFFSET ?1",
                    params![(rules.chat_max_lines - 1).min(i64::MAX as u64) as i64],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(first_kept) = first_kept {
                pruned.chat += self.delete_batched(
                    "chat",
                    "SELECT id FROM chat WHERE id < ?1 ORDER BY id LIMIT ?2",
                    first_kept,
                )?;
            }
        }
        if let Some(cutoff) = rules.audit_cutoff_ms(now_ms) {
            pruned.audit += self.delete_batched(
                "audit",
                "SELECT id FROM audit WHERE at_ms < ?1 LIMIT ?2",
                cutoff as i64,
            )?;
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u64, scope: ChatScope, text: &str) -> ChatLine {
        ChatLine {
            id,
            at_ms: 1_700_000_000_000 + id,
            scope,
            from: None,
            from_name: "Ada".into(),
            from_role: Role::Teacher,
            to_name: None,
            text: text.into(),
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "quad-store-{name}-{}-{}",
            std::process::id(),
            crate::auth::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn chat_survives_reopening_and_each_history_keeps_its_own() {
        let dir = temp_dir("chat");
        {
            let store = SqliteStore::open(&dir).expect("opens");
            let rec = |line: ChatLine, recipients: &[&str]| ChatRecord {
                line,
                from_user: "u:ada".into(),
                recipients: recipients.iter().map(|s| s.to_string()).collect(),
            };
            store
                .append_chat(&rec(line(1, ChatScope::Space, "hello all"), &[]))
                .expect("saved");
            store
                .append_chat(&rec(line(2, ChatScope::Room("Room 1".into()), "<b>"), &[]))
                .expect("saved");
            store
                .append_chat(&rec(line(3, ChatScope::Nearby, "psst"), &["u:ada", "u:bo"]))
                .expect("saved");
            store
                .append_chat(&rec(line(4, ChatScope::Direct, "dm"), &["u:ada", "u:cy"]))
                .expect("saved");
            for id in 5..=110 {
                store
                    .append_chat(&rec(line(id, ChatScope::Space, "more"), &[]))
                    .expect("saved");
            }
        }
        let store = SqliteStore::open(&dir).expect("reopens");
        assert_eq!(store.last_chat_id().expect("reads"), 110);
        let space = store.chat_history(&History::Space, 100).expect("reads");
        assert_eq!(space.len(), 100);
        assert_eq!(
            space.first().map(|l| l.id),
            Some(11),
            "the last 100, oldest first"
        );
        let room = store
            .chat_history(&History::Room("Room 1".into()), 100)
            .expect("reads");
        assert_eq!(room.len(), 1);
        assert_eq!(room[0].text, "<b>");
        assert_eq!(room[0].scope, ChatScope::Room("Room 1".into()));
        let bo = store
            .chat_history(&History::Nearby("u:bo".into()), 100)
            .expect("reads");
        assert_eq!(bo.iter().map(|l| l.id).collect::<Vec<_>>(), vec![3]);
        let cy_nearby = store
            .chat_history(&History::Nearby("u:cy".into()), 100)
            .expect("reads");
        assert!(cy_nearby.is_empty(), "cy was not near");
        let cy = store
            .chat_history(&History::Direct("u:cy".into()), 100)
            .expect("reads");
        assert_eq!(cy.iter().map(|l| l.id).collect::<Vec<_>>(), vec![4]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_secret_is_made_once() {
        let dir = temp_dir("secret");
        let store = SqliteStore::open(&dir).expect("opens");
        let (a, created) = store
            .secret_or_create("join", &|| vec![1, 2, 3])
            .expect("works");
        assert!(created);
        let (b, created) = store.secret_or_create("join", &|| vec![9]).expect("works");
        assert!(!created);
        assert_eq!(a, b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn audit_records_are_kept_in_order() {
        let dir = temp_dir("audit");
        let store = SqliteStore::open(&dir).expect("opens");
        for action in ["lock", "allow"] {
            store
                .append_audit(&AuditRecord {
                    at_ms: 1,
                    room: "Room 1".into(),
                    actor_user: "u:ada".into(),
                    actor_name: "Ada".into(),
                    action: action.into(),
                    target_name: None,
                    detail: String::new(),
                })
                .expect("saved");
        }
        let log = store.audit_log(10).expect("reads");
        assert_eq!(
            log.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            vec!["lock", "allow"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pruning_deletes_old_and_surplus_chat_with_its_recipients_and_old_audit() {
        let dir = temp_dir("prune");
        let store = SqliteStore::open(&dir).expect("opens");
        let day = 24 * 3600 * 1000;
        let now = 1_700_000_000_000 + 400 * day;
        let at = |id: u64, at_ms: u64, scope: ChatScope| ChatRecord {
            line: ChatLine {
                at_ms,
                ..line(id, scope, "x")
            },
            from_user: "u:ada".into(),
            recipients: vec!["u:ada".into(), "u:bo".into()],
        };
        // 1..=3 are 100 days old; 4..=10 a day old.
        for id in 1..=10 {
            let age = if id <= 3 { 100 } else { 1 };
            store
                .append_chat(&at(id, now - age * day, ChatScope::Nearby))
                .expect("saved");
        }
        for (action, age) in [("old", 400), ("recent", 10)] {
            store
                .append_audit(&AuditRecord {
                    at_ms: now - age * day,
                    room: "Room 1".into(),
                    actor_user: "u:ada".into(),
                    actor_name: "Ada".into(),
                    action: action.into(),
                    target_name: None,
                    detail: String::new(),
                })
                .expect("saved");
        }
        let keep_all = store.prune(&Retention::default(), now).expect("prunes");
        assert_eq!(keep_all, Pruned::default(), "0 keeps everything");
        let rules = Retention {
            chat_days: 90,
            chat_max_lines: 5,
            audit_days: 365,
        };
        let pruned = store.prune(&rules, now).expect("prunes");
        assert_eq!(pruned, Pruned { chat: 5, audit: 1 });
        let bo = store
            .chat_history(&History::Nearby("u:bo".into()), 100)
            .expect("reads");
        assert_eq!(
            bo.iter().map(|l| l.id).collect::<Vec<_>>(),
            vec![6, 7, 8, 9, 10]
        );
        let orphans: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM chat_recipient WHERE chat_id NOT IN (SELECT id FROM chat)",
                [],
                |r| r.get(0),
            )
            .expect("counts");
        assert_eq!(orphans, 0, "recipients go with their lines");
        let audit = store.audit_log(10).expect("reads");
        assert_eq!(
            audit.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            vec!["recent"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_size_limit_fails_writes_like_a_full_disk() {
        let dir = temp_dir("full");
        let store = SqliteStore::open(&dir).expect("opens");
        store.limit_size(1024 * 1024).expect("limits");
        let text = "y".repeat(500);
        let mut failed = None;
        for id in 1..=10_000 {
            if let Err(e) = store.append_chat(&ChatRecord {
                line: line(id, ChatScope::Space, &text),
                from_user: "u:ada".into(),
                recipients: Vec::new(),
            }) {
                failed = Some((id, e));
                break;
            }
        }
        let (id, e) = failed.expect("the limit is reached");
        assert!(format!("{e:#}").contains("full"), "{e:#}");
        assert!(id > 100, "a megabyte holds more than {id} lines");
        assert_eq!(
            store.last_chat_id().expect("reads"),
            id - 1,
            "the rest is kept"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_broken_database_file_is_a_clear_error() {
        let dir = temp_dir("broken");
        std::fs::write(
            dir.join(FILE_NAME),
            b"this is not a database, just some text",
        )
        .expect("write");
        let err = SqliteStore::open(&dir).err().expect("refused");
        assert!(format!("{err:#}").contains(FILE_NAME), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

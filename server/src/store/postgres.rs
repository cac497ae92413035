//! The shared store of a cluster: PostgreSQL (`database_url`), so that chat history, join-link
//! secrets, the audit log and class records outlive any one node and every node sees the
//! same. The schema comes from `server/migrations/postgres/`, applied in order under an
//! advisory lock (nodes starting together migrate once) and tracked in `quad_schema`.
//!
//! The [`Store`] trait is synchronous, and the `postgres` client runs a runtime of its own,
//! which may not be started on a tokio worker. So one thread owns the connection and runs
//! each call sent to it ([`PostgresStore::call`]); callers wait for the answer, exactly as
//! they wait for SQLite's lock. A lost connection is made again at the next call; each
//! statement is bounded by `statement_timeout` and a connection attempt by its timeout.

use super::{AuditRecord, ChatRecord, History, Pruned, RecordingRecord, Retention, Store};
use crate::auth::UserKey;
use crate::records::register::{Attendee, Register};
use anyhow::Context;
use postgres::{Client, NoTls, Row};
use quad_shared::protocol::{ChatLine, ChatScope, Role};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/001_init.sql")];

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may run before the server cancels it.
const STATEMENT_TIMEOUT_MS: u32 = 15_000;
/// An arbitrary key for the advisory lock that serializes migrations across nodes.
const MIGRATION_LOCK: i64 = 0x5155_4144; // "QUAD"
/// Rows deleted per statement when pruning, and batches per prune (bounded work).
const PRUNE_BATCH: i64 = 5_000;
const PRUNE_MAX_BATCHES: usize = 1_000;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The connection as its thread holds it: made again after it is lost.
struct Connection {
    config: postgres::Config,
    client: Option<Client>,
}

impl Connection {
    fn client(&mut self) -> anyhow::Result<&mut Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            let mut client = self
                .config
                .connect(NoTls)
                .context("connecting to PostgreSQL")?;
            client.batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))?;
            self.client = Some(client);
        }
        // Set just above when it was not.
        self.client
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no PostgreSQL connection"))
    }
}

pub struct PostgresStore {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore(..)")
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), and brings the schema up
    /// to date. An unreachable database or a bad URL is an error that says so.
    pub fn open(url: &str) -> anyhow::Result<PostgresStore> {
        let mut config: postgres::Config = url
            .parse()
            .with_context(|| "database_url is not a PostgreSQL URL (postgres://USER@HOST/DB)")?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("quad-postgres".into())
            .spawn(move || {
                let mut connection = Connection {
                    config,
                    client: None,
                };
                while let Ok(job) = rx.recv() {
                    job(&mut connection);
                }
            })?;
        let store = PostgresStore {
            jobs: Mutex::new(tx),
        };
        store
            .call(migrate)
            .context("the PostgreSQL store (database_url)")?;
        Ok(store)
    }

    /// Runs `f` with the connection on the store's thread and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> anyhow::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |connection: &mut Connection| {
            let result = connection.client().and_then(f);
            if result.is_err()
                && let Some(c) = &connection.client
                && c.is_closed()
            {
                connection.client = None;
            }
            let _ = reply_tx.send(result);
        });
        self.jobs
            .lock()
            // A panic while holding the sender would be a bug; the sender is still usable.
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| anyhow::anyhow!("the PostgreSQL thread has stopped"))?;
        reply_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the PostgreSQL thread has stopped"))?
    }
}

fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS quad_schema (version INTEGER NOT NULL)")?;
    let version: Option<i32> = tx
        .query_opt("SELECT version FROM quad_schema", &[])?
        .map(|r| r.get(0));
    let from = version.unwrap_or(0).max(0) as usize;
    if from > MIGRATIONS.len() {
        anyhow::bail!(
            "the database's schema is version {from}, newer than this server knows ({}): \
             run a newer quad-server",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.batch_execute(sql)
            .with_context(|| format!("migration {}", i + 1))?;
    }
    let to = MIGRATIONS.len() as i32;
    if version.is_none() {
        tx.execute("INSERT INTO quad_schema (version) VALUES ($1)", &[&to])?;
    } else {
        tx.execute("UPDATE quad_schema SET version = $1", &[&to])?;
    }
    tx.commit()?;
    Ok(())
}

fn scope_parts(scope: &ChatScope) -> (&'static str, Option<String>) {
    match scope {
        ChatScope::Nearby => ("nearby", None),
        ChatScope::Room(name) => ("room", Some(name.clone())),
        ChatScope::Space => ("space", None),
        ChatScope::Direct => ("direct", None),
    }
}

const LINE_COLUMNS: &str = "chat.id, chat.at_ms, chat.scope, chat.room, chat.from_name, chat.from_role, chat.to_name, chat.body";

fn line_from_row(row: &Row) -> ChatLine {
    let scope: String = row.get(2);
    let room: Option<String> = row.get(3);
    let scope = match scope.as_str() {
        "nearby" => ChatScope::Nearby,
        "room" => ChatScope::Room(room.unwrap_or_default()),
        "direct" => ChatScope::Direct,
        _ => ChatScope::Space,
    };
    let role: String = row.get(5);
    ChatLine {
        id: row.get::<_, i64>(0).max(0) as u64,
        at_ms: row.get::<_, i64>(1).max(0) as u64,
        scope,
        from: None,
        from_name: row.get(4),
        from_role: Role::parse(&role).unwrap_or_default(),
        to_name: row.get(6),
        text: row.get(7),
    }
}

fn recording_from_row(row: &Row) -> RecordingRecord {
    RecordingRecord {
        id: row.get(0),
        room: row.get(1),
        by_user: row.get(2),
        by_name: row.get(3),
        started_ms: row.get::<_, i64>(4).max(0) as u64,
        duration_ms: row.get::<_, i64>(5).max(0) as u64,
        bytes: row.get::<_, i64>(6).max(0) as u64,
        state: row.get(7),
        message: row.get(8),
        shared: row.get(9),
        session: row.get(10),
        location: row.get(11),
    }
}

const RECORDING_COLUMNS: &str = "id, room, by_user, by_name, started_ms, duration_ms, bytes, \
                                 state, message, shared, session, location";

fn register_of(client: &mut Client, id: &str) -> anyhow::Result<Option<Register>> {
    let Some(row) = client.query_opt(
        "SELECT id, room, started_ms, ended_ms, left_out FROM class_sessions WHERE id = $1",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let mut register = Register {
        id: row.get(0),
        room: row.get(1),
        started_ms: row.get::<_, i64>(2).max(0) as u64,
        ended_ms: row.get::<_, Option<i64>>(3).map(|t| t.max(0) as u64),
        left_out: row.get::<_, i64>(4).clamp(0, u32::MAX as i64) as u32,
        ..Register::default()
    };
    for row in client.query(
        "SELECT user_key, name, role, intervals, talk_ms, hands, chat_lines, away_count, away_ms
         FROM class_attendees WHERE session = $1 ORDER BY seq",
        &[&id],
    )? {
        let role: String = row.get(2);
        let intervals: String = row.get(3);
        let count = |i: usize| row.get::<_, i64>(i).clamp(0, u32::MAX as i64) as u32;
        register.people.push(Attendee {
            user: UserKey(row.get(0)),
            name: row.get(1),
            role: Role::parse(&role).unwrap_or_default(),
            intervals: serde_json::from_str(&intervals)?,
            talk_ms: row.get::<_, i64>(4).max(0) as u64,
            hands: count(5),
            chat_lines: count(6),
            away_count: count(7),
            away_ms: row.get::<_, i64>(8).max(0) as u64,
            away_since: None,
        });
    }
    Ok(Some(register))
}

/// Deletes, in batches, the rows of `table` whose ids `select` (a `SELECT id ... LIMIT $2`
/// with `bound` as `$1`) names; the number deleted.
fn delete_batched(
    client: &mut Client,
    table: &str,
    select: &str,
    bound: i64,
) -> anyhow::Result<u64> {
    let sql = format!("DELETE FROM {table} WHERE id IN ({select})");
    let mut deleted = 0;
    for _ in 0..PRUNE_MAX_BATCHES {
        let n = client.execute(&sql, &[&bound, &PRUNE_BATCH])?;
        deleted += n;
        if (n as i64) < PRUNE_BATCH {
            break;
        }
    }
    Ok(deleted)
}

impl Store for PostgresStore {
    fn secret_or_create(
        &self,
        name: &str,
        make: &dyn Fn() -> Vec<u8>,
    ) -> anyhow::Result<(Vec<u8>, bool)> {
        // Made before asking: nodes starting together race, and the first insert wins.
        let (name, candidate) = (name.to_owned(), make());
        self.call(move |c| {
            let made = c.execute(
                "INSERT INTO secret (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &candidate],
            )?;
            let value: Vec<u8> = c
                .query_one("SELECT value FROM secret WHERE name = $1", &[&name])?
                .get(0);
            Ok((value, made == 1))
        })
    }

    fn append_chat(&self, record: &ChatRecord) -> anyhow::Result<()> {
        let record = record.clone();
        self.call(move |c| {
            let line = &record.line;
            let (scope, room) = scope_parts(&line.scope);
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO chat (id, at_ms, scope, room, from_user, from_name, from_role,
                                   to_name, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &(line.id as i64),
                    &(line.at_ms as i64),
                    &scope,
                    &room,
                    &record.from_user,
                    &line.from_name,
                    &line.from_role.as_str(),
                    &line.to_name,
                    &line.text,
                ],
            )?;
            let insert = tx.prepare(
                "INSERT INTO chat_recipient (user_key, chat_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )?;
            for user in &record.recipients {
                tx.execute(&insert, &[user, &(line.id as i64)])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn chat_history(&self, which: &History, limit: usize) -> anyhow::Result<Vec<ChatLine>> {
        let which = which.clone();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |c| {
            let rows = match &which {
                History::Space => c.query(
                    &format!(
                        "SELECT {LINE_COLUMNS} FROM chat WHERE scope = 'space'
                         ORDER BY id DESC LIMIT $1"
                    ),
                    &[&limit],
                )?,
                History::Room(room) => c.query(
                    &format!(
                        "SELECT {LINE_COLUMNS} FROM chat WHERE scope = 'room' AND room = $1
                         ORDER BY id DESC LIMIT $2"
                    ),
                    &[room, &limit],
                )?,
                History::Nearby(user) | History::Direct(user) => {
                    let scope = if matches!(which, History::Nearby(_)) {
                        "nearby"
                    } else {
                        "direct"
                    };
                    c.query(
                        &format!(
                            "SELECT {LINE_COLUMNS} FROM chat_recipient r
                             JOIN chat ON chat.id = r.chat_id
                             WHERE r.user_key = $1 AND chat.scope = $2
                             ORDER BY chat.id DESC LIMIT $3"
                        ),
                        &[user, &scope, &limit],
                    )?
                }
            };
            let mut lines: Vec<ChatLine> = rows.iter().map(line_from_row).collect();
            lines.reverse();
            Ok(lines)
        })
    }

    fn last_chat_id(&self) -> anyhow::Result<u64> {
        self.call(|c| {
            let id: Option<i64> = c.query_one("SELECT MAX(id) FROM chat", &[])?.get(0);
            Ok(id.unwrap_or(0).max(0) as u64)
        })
    }

    fn append_audit(&self, r: &AuditRecord) -> anyhow::Result<()> {
        let r = r.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO audit (at_ms, room, actor_user, actor_name, action, target_name,
                                    detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &(r.at_ms as i64),
                    &r.room,
                    &r.actor_user,
                    &r.actor_name,
                    &r.action,
                    &r.target_name,
                    &r.detail,
                ],
            )?;
            Ok(())
        })
    }

    fn audit_log(&self, limit: usize) -> anyhow::Result<Vec<AuditRecord>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |c| {
            let mut records: Vec<AuditRecord> = c
                .query(
                    "SELECT at_ms, room, actor_user, actor_name, action, target_name, detail
                     FROM audit ORDER BY id DESC LIMIT $1",
                    &[&limit],
                )?
                .iter()
                .map(|row| AuditRecord {
                    at_ms: row.get::<_, i64>(0).max(0) as u64,
                    room: row.get(1),
                    actor_user: row.get(2),
                    actor_name: row.get(3),
                    action: row.get(4),
                    target_name: row.get(5),
                    detail: row.get(6),
                })
                .collect();
            records.reverse();
            Ok(records)
        })
    }

    fn save_recording(&self, r: &RecordingRecord) -> anyhow::Result<()> {
        let r = r.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO recordings
                     (id, room, by_user, by_name, started_ms, duration_ms, bytes, state, message,
                      shared, session, location)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (id) DO UPDATE SET duration_ms = $6, bytes = $7, state = $8,
                     message = $9, shared = $10, location = $12",
                &[
                    &r.id,
                    &r.room,
                    &r.by_user,
                    &r.by_name,
                    &(r.started_ms as i64),
                    &(r.duration_ms as i64),
                    &(r.bytes as i64),
                    &r.state,
                    &r.message,
                    &r.shared,
                    &r.session,
                    &r.location,
                ],
            )?;
            Ok(())
        })
    }

    fn recordings(&self, limit: usize) -> anyhow::Result<Vec<RecordingRecord>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {RECORDING_COLUMNS} FROM recordings
                     ORDER BY started_ms DESC, id DESC LIMIT $1"
                ),
                &[&limit],
            )?
            .iter()
            .map(recording_from_row)
            .collect())
        })
    }

    fn recording(&self, id: &str) -> anyhow::Result<Option<RecordingRecord>> {
        let id = id.to_owned();
        self.call(move |c| {
            Ok(c.query_opt(
                &format!("SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1"),
                &[&id],
            )?
            .as_ref()
            .map(recording_from_row))
        })
    }

    fn save_register(&self, r: &Register) -> anyhow::Result<()> {
        let r = r.clone();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO class_sessions (id, room, started_ms, ended_ms, left_out)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET ended_ms = $4, left_out = $5",
                &[
                    &r.id,
                    &r.room,
                    &(r.started_ms as i64),
                    &r.ended_ms.map(|t| t as i64),
                    &(r.left_out as i64),
                ],
            )?;
            let upsert = tx.prepare(
                "INSERT INTO class_attendees (session, user_key, name, role, intervals, talk_ms,
                     hands, chat_lines, away_count, away_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (session, user_key) DO UPDATE SET name = $3, intervals = $5,
                     talk_ms = $6, hands = $7, chat_lines = $8, away_count = $9, away_ms = $10",
            )?;
            for p in &r.people {
                let intervals = serde_json::to_string(&p.intervals)?;
                tx.execute(
                    &upsert,
                    &[
                        &r.id,
                        &p.user.0,
                        &p.name,
                        &p.role.as_str(),
                        &intervals,
                        &(p.talk_ms as i64),
                        &(p.hands as i64),
                        &(p.chat_lines as i64),
                        &(p.away_count as i64),
                        &(p.away_ms as i64),
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn registers(&self, taught_by: Option<&str>, limit: usize) -> anyhow::Result<Vec<Register>> {
        let taught_by = taught_by.map(str::to_owned);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |c| {
            let ids: Vec<String> = match &taught_by {
                Some(user) => c.query(
                    "SELECT s.id FROM class_sessions s JOIN class_attendees a ON a.session = s.id
                     WHERE a.user_key = $1 AND a.role = 'teacher'
                     ORDER BY s.started_ms DESC LIMIT $2",
                    &[user, &limit],
                )?,
                None => c.query(
                    "SELECT id FROM class_sessions ORDER BY started_ms DESC LIMIT $1",
                    &[&limit],
                )?,
            }
            .iter()
            .map(|r| r.get(0))
            .collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(register_of(c, &id)?);
            }
            Ok(out)
        })
    }

    fn register(&self, id: &str) -> anyhow::Result<Option<Register>> {
        let id = id.to_owned();
        self.call(move |c| register_of(c, &id))
    }

    fn sessions_of(&self, user: &str, limit: usize) -> anyhow::Result<Vec<(String, bool)>> {
        let user = user.to_owned();
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |c| {
            Ok(c.query(
                "SELECT s.id, a.role FROM class_sessions s JOIN class_attendees a ON a.session = s.id
                 WHERE a.user_key = $1 ORDER BY s.started_ms DESC LIMIT $2",
                &[&user, &limit],
            )?
            .iter()
            .map(|r| (r.get(0), r.get::<_, String>(1) == "teacher"))
            .collect())
        })
    }

    fn set_recording_shared(&self, id: &str, shared: bool) -> anyhow::Result<()> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE recordings SET shared = $2 WHERE id = $1",
                &[&id, &shared],
            )?;
            Ok(())
        })
    }

    fn prune_records(&self, before_ms: u64) -> anyhow::Result<Vec<String>> {
        let before = before_ms.min(i64::MAX as u64) as i64;
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let ids: Vec<String> = tx
                .query(
                    "DELETE FROM recordings WHERE started_ms < $1 RETURNING id",
                    &[&before],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Attendees go with their session (ON DELETE CASCADE).
            tx.execute(
                "DELETE FROM class_sessions WHERE started_ms < $1",
                &[&before],
            )?;
            tx.commit()?;
            Ok(ids)
        })
    }

    fn reserve_name(&self, key: &str, at_ms: u64) -> anyhow::Result<()> {
        let key = key.to_owned();
        self.call(move |c| {
            c.execute(
                "INSERT INTO reserved_names (name_key, reserved_ms) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&key, &(at_ms as i64)],
            )?;
            Ok(())
        })
    }

    fn reserved_names(&self) -> anyhow::Result<Vec<String>> {
        self.call(|c| {
            Ok(c.query("SELECT name_key FROM reserved_names", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn prune(&self, rules: &Retention, now_ms: u64) -> anyhow::Result<Pruned> {
        let rules = *rules;
        self.call(move |c| {
            let mut pruned = Pruned::default();
            if let Some(cutoff) = rules.chat_cutoff_ms(now_ms) {
                // Recipients go with their line (ON DELETE CASCADE).
                pruned.chat += delete_batched(
                    c,
                    "chat",
                    "SELECT id FROM chat WHERE at_ms < $1 LIMIT $2",
                    cutoff as i64,
                )?;
            }
            if rules.chat_max_lines > 0 {
                let first_kept: Option<i64> = c
                    .query_opt(
                        "SELECT id FROM chat ORDER BY id DESC LIMIT 1 OFFSET $1",
                        &[&((rules.chat_max_lines - 1).min(i64::MAX as u64) as i64)],
                    )?
                    .map(|r| r.get(0));
                if let Some(first_kept) = first_kept {
                    pruned.chat += delete_batched(
                        c,
                        "chat",
                        "SELECT id FROM chat WHERE id < $1 ORDER BY id LIMIT $2",
                        first_kept,
                    )?;
                }
            }
            if let Some(cutoff) = rules.audit_cutoff_ms(now_ms) {
                pruned.audit += delete_batched(
                    c,
                    "audit",
                    "SELECT id FROM audit WHERE at_ms < $1 LIMIT $2",
                    cutoff as i64,
                )?;
            }
            Ok(pruned)
        })
    }
}

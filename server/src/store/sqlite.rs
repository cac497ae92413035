//! The embedded store: one SQLite file (`quad.sqlite3` in the data directory), in WAL mode
//! so `quad-server token` can read secrets while the server runs. The schema comes from the
//! SQL files in `server/migrations/`, applied in order and tracked by `user_version`. The
//! files are private to the server's user ([`super::private`]).

use super::{AuditRecord, ChatRecord, History, Store};
use anyhow::Context;
use quad_shared::protocol::{ChatLine, ChatScope, Role};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use std::path::Path;
use std::sync::Mutex;

/// The database file's name in the data directory.
pub const FILE_NAME: &str = "quad.sqlite3";

const MIGRATIONS: &[&str] = &[include_str!("../../migrations/001_init.sql")];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
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

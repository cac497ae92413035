//! Storage: what outlives a server run. Chat (with who received the nearby and direct
//! messages, for their history), the teacher-action audit log, and generated secrets; how
//! long chat and the audit log are kept ([`Retention`]); and whether writes are working
//! ([`StoreHealth`]).
//!
//! [`Store`] is the small, synchronous trait the rest of the server uses, so another
//! database can come later; [`sqlite::SqliteStore`] is the embedded default, a file in the
//! data directory with migrations from `server/migrations/`; [`postgres::PostgresStore`]
//! is the shared store of a cluster (`database_url`). Callers on async tasks use
//! [`Storage`], whose one writer thread does every write and the periodic pruning. A store
//! that fails loses that record, never the session: the sender of a chat line that could
//! not be kept is told (through the callback given with it), and the log says so once when
//! writes start failing and once when they work again.

pub mod postgres;
pub mod private;
pub mod sqlite;

use crate::records::register::Register;
use quad_shared::protocol::ChatLine;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// A chat message as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRecord {
    pub line: ChatLine,
    /// Who sent it ([`crate::auth::UserKey`]).
    pub from_user: String,
    /// For nearby and direct messages: everyone it reached, the sender included.
    pub recipients: Vec<String>,
}

/// One accepted teacher action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub at_ms: u64,
    pub room: String,
    pub actor_user: String,
    pub actor_name: String,
    /// [`quad_shared::protocol::TeacherAction::kind`].
    pub action: String,
    pub target_name: Option<String>,
    /// The action in full, for people reading the log.
    pub detail: String,
}

/// A class recording, as kept (see `media::recording`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingRecord {
    pub id: String,
    /// The room's name.
    pub room: String,
    /// Who started it ([`crate::auth::UserKey`]) and their name then.
    pub by_user: String,
    pub by_name: String,
    pub started_ms: u64,
    pub duration_ms: u64,
    /// The file's size, once made.
    pub bytes: u64,
    /// `recording`, `mixing`, `ready` or `failed`.
    pub state: String,
    /// Why it failed or stopped early, for people.
    pub message: String,
    /// Shared with the class's students.
    pub shared: bool,
    /// The class session it was made in.
    pub session: String,
    /// Where its file is: `local` or `s3` ([`crate::records::archive::Location`]).
    pub location: String,
}

/// Which chat history to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum History {
    Space,
    /// A room's, by the room's name.
    Room(String),
    /// The nearby messages that reached this user.
    Nearby(String),
    /// The direct messages this user sent or received.
    Direct(String),
}

/// The storage the server needs. Calls block; use [`Storage`] from async code.
pub trait Store: Send + Sync + 'static {
    /// A named secret, creating it with `make` if there is none yet. The flag says whether it
    /// was created now.
    fn secret_or_create(
        &self,
        name: &str,
        make: &dyn Fn() -> Vec<u8>,
    ) -> anyhow::Result<(Vec<u8>, bool)>;
    fn append_chat(&self, record: &ChatRecord) -> anyhow::Result<()>;
    /// The last `limit` lines of a history, oldest first.
    fn chat_history(&self, which: &History, limit: usize) -> anyhow::Result<Vec<ChatLine>>;
    /// The highest chat id stored (0 if none): new ids continue after it.
    fn last_chat_id(&self) -> anyhow::Result<u64>;
    fn append_audit(&self, record: &AuditRecord) -> anyhow::Result<()>;
    /// The last `limit` audit records, oldest first.
    fn audit_log(&self, limit: usize) -> anyhow::Result<Vec<AuditRecord>>;
    /// Keeps a recording's record (replacing the one with its id).
    fn save_recording(&self, record: &RecordingRecord) -> anyhow::Result<()>;
    /// The newest `limit` recordings, newest first.
    fn recordings(&self, limit: usize) -> anyhow::Result<Vec<RecordingRecord>>;
    /// One recording, by its id.
    fn recording(&self, id: &str) -> anyhow::Result<Option<RecordingRecord>>;
    /// Keeps a class session's register (replacing what was kept of it).
    fn save_register(&self, register: &Register) -> anyhow::Result<()>;
    /// The newest `limit` class registers, newest first; only those of sessions `taught_by`
    /// taught, if given.
    fn registers(&self, taught_by: Option<&str>, limit: usize) -> anyhow::Result<Vec<Register>>;
    /// One class session's register.
    fn register(&self, id: &str) -> anyhow::Result<Option<Register>>;
    /// The class sessions `user` attended, newest first, with whether they taught it.
    fn sessions_of(&self, user: &str, limit: usize) -> anyhow::Result<Vec<(String, bool)>>;
    /// Shares recording `id` with its class's students, or stops sharing it.
    fn set_recording_shared(&self, id: &str, shared: bool) -> anyhow::Result<()>;
    /// Deletes the recordings and class registers that started before `before_ms`; the
    /// ids of the recordings deleted (their files are the caller's to delete).
    fn prune_records(&self, before_ms: u64) -> anyhow::Result<Vec<String>>;
    /// Keeps `key` (a reserved display name, see `ReservedNames`); a known one is kept once.
    fn reserve_name(&self, key: &str, at_ms: u64) -> anyhow::Result<()>;
    /// Every reserved name key.
    fn reserved_names(&self) -> anyhow::Result<Vec<String>>;
    /// Deletes the chat lines and audit records `rules` no longer keep, as of `now_ms`.
    fn prune(&self, rules: &Retention, now_ms: u64) -> anyhow::Result<Pruned>;
}

/// How long chat and the audit log are kept (`chat_retention_days`, `chat_max_lines`,
/// `audit_retention_days`); 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Chat lines older than this many days are deleted.
    pub chat_days: u32,
    /// Only the newest this many chat lines are kept.
    pub chat_max_lines: u64,
    /// Audit records older than this many days are deleted.
    pub audit_days: u32,
}

impl Retention {
    /// The time before which chat lines go, if they go by age.
    pub fn chat_cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        cutoff(self.chat_days, now_ms)
    }

    /// The time before which audit records go, if they go by age.
    pub fn audit_cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        cutoff(self.audit_days, now_ms)
    }
}

fn cutoff(days: u32, now_ms: u64) -> Option<u64> {
    (days > 0).then(|| now_ms.saturating_sub(u64::from(days) * 24 * 3600 * 1000))
}

/// What a prune deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub chat: u64,
    pub audit: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether writes work, for `/metrics` and the log. Written by the writer thread only.
#[derive(Debug)]
pub struct StoreHealth {
    /// Writes (chat lines, audit records) that failed, ever.
    pub write_failures: AtomicU64,
    /// Times writes started failing after working (each logged once).
    pub outages: AtomicU64,
    /// The last write worked (true until one fails).
    pub healthy: AtomicBool,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            write_failures: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }
}

impl StoreHealth {
    /// Counts a failed write; the first of an outage is logged (with why), the rest not.
    fn failed(&self, what: &str, e: &anyhow::Error) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        if self.healthy.swap(false, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "storage writes are failing ({what}: {e:#}): chat lines and audit records are \
                 not being saved until they work again (senders of chat lines are told; \
                 quad_store_write_failures_total counts what was lost)"
            );
        }
    }

    /// Notes a write that worked; the first after an outage is logged.
    fn worked(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                failures = self.write_failures.load(Ordering::Relaxed),
                "storage writes work again"
            );
        }
    }
}

/// A store for async code. Writes go, in order, to one writer thread (so a slow disk never
/// holds up the space); [`Storage::flush`] waits until every earlier write is done, which
/// the server does when it stops, so nothing sent before a shutdown is lost. Reads run on
/// tokio's blocking pool. The writer thread also prunes what [`Retention`] no longer keeps:
/// every [`PRUNE_EVERY`], and sooner once a tenth of `chat_max_lines` was added since the
/// last prune (so a flood of chat cannot outgrow the limit by more than that).
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Store>,
    writes: std::sync::mpsc::Sender<Write>,
    retention: Retention,
    health: Arc<StoreHealth>,
}

/// Called once a [`Storage::save_batch`] is written, with the ids of the chat lines that
/// could not be (an empty list when all were).
pub type OnStored = Box<dyn FnOnce(Vec<u64>) + Send>;

enum Write {
    Batch {
        chat: Vec<ChatRecord>,
        audit: Vec<AuditRecord>,
        stored: OnStored,
    },
    ReservedName(String),
    Register(Box<Register>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// How often the writer thread prunes old chat and audit records.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Storage(..)")
    }
}

impl Storage {
    /// Wraps `store` and starts its writer thread (it ends when the last clone is dropped),
    /// which prunes by `retention` every `prune_every` ([`PRUNE_EVERY`] but in tests).
    pub fn new(
        store: Arc<dyn Store>,
        retention: Retention,
        prune_every: Duration,
    ) -> anyhow::Result<Storage> {
        let (writes, rx) = std::sync::mpsc::channel::<Write>();
        let health = Arc::new(StoreHealth::default());
        let writer = Writer {
            store: store.clone(),
            health: health.clone(),
            retention,
            added: 0,
        };
        std::thread::Builder::new()
            .name("quad-store-writer".into())
            .spawn(move || writer.run(rx, prune_every))?;
        Ok(Storage {
            store,
            writes,
            retention,
            health,
        })
    }

    /// Whether writes work, for `/metrics`.
    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    /// Prunes now, on the caller's thread (at start-up, before serving); logs what went.
    pub fn prune_blocking(&self) -> anyhow::Result<Pruned> {
        prune_logged(&*self.store, &self.retention)
    }

    /// The store itself, for blocking callers (startup, the CLI).
    pub fn blocking(&self) -> &dyn Store {
        &*self.store
    }

    /// Saves chat lines and audit records in the background, in order after every earlier
    /// write; then calls `stored` (on the writer thread: it must not block) with the ids of
    /// the lines that could not be stored. The space holds back what a batch's lines and
    /// actions send to clients until then, so no client sees a line that a crash could
    /// still lose.
    pub fn save_batch(&self, chat: Vec<ChatRecord>, audit: Vec<AuditRecord>, stored: OnStored) {
        self.write(Write::Batch {
            chat,
            audit,
            stored,
        });
    }

    /// Keeps a reserved display name's key.
    pub fn save_reserved_name(&self, key: String) {
        self.write(Write::ReservedName(key));
    }

    /// Keeps a class session's register as it is now.
    pub fn save_register(&self, register: Register) {
        self.write(Write::Register(Box::new(register)));
    }

    fn write(&self, write: Write) {
        if self.writes.send(write).is_err() {
            tracing::error!("the store's writer has stopped: a record was not saved");
        }
    }

    /// Waits until every write queued before this call is done.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.write(Write::Flush(done));
        let _ = wait.await;
    }

    /// Reads histories and merges them by id (oldest first); a failure is logged and
    /// yields what could be read.
    pub async fn histories(&self, which: Vec<History>, limit: usize) -> Vec<ChatLine> {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            for w in &which {
                match store.chat_history(w, limit) {
                    Ok(mut more) => lines.append(&mut more),
                    Err(e) => tracing::error!(?w, "could not read chat history: {e:#}"),
                }
            }
            lines.sort_by_key(|l| l.id);
            lines.dedup_by_key(|l| l.id);
            lines
        });
        read.await.unwrap_or_else(|e| {
            tracing::error!("chat history reader failed: {e}");
            Vec::new()
        })
    }
}

/// The writer thread's state.
struct Writer {
    store: Arc<dyn Store>,
    health: Arc<StoreHealth>,
    retention: Retention,
    /// Chat lines added since the last prune.
    added: u64,
}

impl Writer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Write>, prune_every: Duration) {
        let mut next_prune = Instant::now() + prune_every;
        loop {
            let wait = next_prune.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(write) => self.write(write),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let flood = self.retention.chat_max_lines > 0
                && self.added >= (self.retention.chat_max_lines / 10).max(1);
            if flood || Instant::now() >= next_prune {
                // A failure is logged; the next prune tries again.
                let _ = prune_logged(&*self.store, &self.retention);
                self.added = 0;
                next_prune = Instant::now() + prune_every;
            }
        }
    }

    /// Stores one chat line; whether it was stored.
    fn chat(&mut self, record: &ChatRecord) -> bool {
        match self.store.append_chat(record) {
            Ok(()) => {
                self.added += 1;
                self.health.worked();
                true
            }
            Err(e) => {
                self.health
                    .failed(&format!("chat line {}", record.line.id), &e);
                false
            }
        }
    }

    fn audit(&mut self, record: &AuditRecord) {
        match self.store.append_audit(record) {
            Ok(()) => self.health.worked(),
            Err(e) => self
                .health
                .failed(&format!("audit record {}", record.action), &e),
        }
    }

    fn write(&mut self, write: Write) {
        match write {
            Write::Batch {
                chat,
                audit,
                stored,
            } => {
                let lost = chat
                    .iter()
                    .filter(|record| !self.chat(record))
                    .map(|record| record.line.id)
                    .collect();
                for record in &audit {
                    self.audit(record);
                }
                stored(lost);
            }
            Write::ReservedName(key) => match self.store.reserve_name(&key, now_ms()) {
                Ok(()) => self.health.worked(),
                Err(e) => self.health.failed("a reserved name", &e),
            },
            Write::Register(register) => match self.store.save_register(&register) {
                Ok(()) => self.health.worked(),
                Err(e) => self.health.failed("a class register", &e),
            },
            Write::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Prunes by `rules` as of now; logs what was deleted, or why it could not be.
fn prune_logged(store: &dyn Store, rules: &Retention) -> anyhow::Result<Pruned> {
    match store.prune(rules, now_ms()) {
        Ok(pruned) => {
            if pruned != Pruned::default() {
                tracing::info!(
                    chat_lines = pruned.chat,
                    audit_records = pruned.audit,
                    "deleted what the retention settings no longer keep"
                );
            }
            Ok(pruned)
        }
        Err(e) => {
            tracing::error!("could not delete old chat and audit records: {e:#}");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quad_shared::protocol::{ChatScope, Role};

    fn record(id: u64, at_ms: u64) -> ChatRecord {
        ChatRecord {
            line: ChatLine {
                id,
                at_ms,
                scope: ChatScope::Space,
                from: None,
                from_name: "Ada".into(),
                from_role: Role::Student,
                to_name: None,
                text: "hi".into(),
            },
            from_user: "u:ada".into(),
            recipients: Vec::new(),
        }
    }

    fn temp_store(name: &str) -> (std::path::PathBuf, Arc<sqlite::SqliteStore>) {
        let dir = std::env::temp_dir().join(format!(
            "quad-storage-{name}-{}-{}",
            std::process::id(),
            crate::auth::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = sqlite::SqliteStore::open(&dir).expect("opens");
        (dir, Arc::new(store))
    }

    /// Waits (at most 10 s) until `cond` holds.
    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_writer_prunes_periodically() {
        let (dir, store) = temp_store("periodic");
        let day = 24 * 3600 * 1000;
        store
            .append_chat(&record(1, now_ms() - 10 * day))
            .expect("saved");
        store.append_chat(&record(2, now_ms())).expect("saved");
        let retention = Retention {
            chat_days: 5,
            ..Retention::default()
        };
        let _storage =
            Storage::new(store.clone(), retention, Duration::from_millis(20)).expect("starts");
        wait_for("the old line goes", || {
            store
                .chat_history(&History::Space, 10)
                .is_ok_and(|h| h.iter().map(|l| l.id).eq([2]))
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flood_of_chat_is_pruned_before_the_hour_is_up() {
        let (dir, store) = temp_store("flood");
        let retention = Retention {
            chat_max_lines: 100,
            ..Retention::default()
        };
        let storage = Storage::new(store.clone(), retention, PRUNE_EVERY).expect("starts");
        for id in 1..=200 {
            storage.save_batch(vec![record(id, now_ms())], Vec::new(), Box::new(|_| {}));
        }
        wait_for("at most 100 lines and a tenth more", || {
            store
                .chat_history(&History::Space, 1000)
                .is_ok_and(|h| h.len() <= 110 && h.last().is_some_and(|l| l.id == 200))
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lost_line_is_reported_and_the_outage_counted_once() {
        let (dir, store) = temp_store("lost");
        store.limit_size(1).expect("limits");
        let storage =
            Storage::new(store.clone(), Retention::default(), PRUNE_EVERY).expect("starts");
        let health = storage.health();
        let (lost_tx, lost_rx) = std::sync::mpsc::channel();
        let big = "z".repeat(100_000);
        let lines = (1..=3)
            .map(|id| {
                let mut r = record(id, now_ms());
                r.line.text = big.clone();
                r
            })
            .collect();
        storage.save_batch(
            lines,
            Vec::new(),
            Box::new(move |lost| {
                let _ = lost_tx.send(lost);
            }),
        );
        let lost = lost_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("reported");
        assert_eq!(lost, vec![1, 2, 3]);
        assert_eq!(health.write_failures.load(Ordering::Relaxed), 3);
        assert_eq!(health.outages.load(Ordering::Relaxed), 1);
        assert!(!health.healthy.load(Ordering::Relaxed));
        // A line that fits again is stored, and the store is healthy.
        storage.save_batch(vec![record(4, now_ms())], Vec::new(), Box::new(|_| {}));
        wait_for("healthy again", || health.healthy.load(Ordering::Relaxed));
        assert_eq!(health.outages.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Storage: what outlives a server run. Chat (with who received the nearby and direct
//! messages, for their history), the teacher-action audit log, and generated secrets.
//!
//! [`Store`] is the small, synchronous trait the rest of the server uses, so another
//! database can come later; [`sqlite::SqliteStore`] is the embedded default, a file in the
//! data directory with migrations from `server/migrations/`. Callers on async tasks use
//! [`Storage`], which runs each call on tokio's blocking pool and logs failures: a store
//! that fails loses that record, never the session.

pub mod private;
pub mod sqlite;

use quad_shared::protocol::ChatLine;
use std::sync::Arc;

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
}

/// A store for async code. Writes go, in order, to one writer thread (so a slow disk never
/// holds up the space); [`Storage::flush`] waits until every earlier write is done, which
/// the server does when it stops, so nothing sent before a shutdown is lost. Reads run on
/// tokio's blocking pool.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Store>,
    writes: std::sync::mpsc::Sender<Write>,
}

enum Write {
    Chat(ChatRecord),
    Audit(AuditRecord),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Storage(..)")
    }
}

impl Storage {
    /// Wraps `store` and starts its writer thread (it ends when the last clone is dropped).
    pub fn new(store: Arc<dyn Store>) -> anyhow::Result<Storage> {
        let (writes, rx) = std::sync::mpsc::channel::<Write>();
        let writer = store.clone();
        std::thread::Builder::new()
            .name("quad-store-writer".into())
            .spawn(move || {
                for write in rx {
                    match write {
                        Write::Chat(record) => {
                            if let Err(e) = writer.append_chat(&record) {
                                tracing::error!(
                                    id = record.line.id,
                                    "could not save a chat message: {e:#}"
                                );
                            }
                        }
                        Write::Audit(record) => {
                            if let Err(e) = writer.append_audit(&record) {
                                tracing::error!(
                                    action = record.action,
                                    "could not save an audit record: {e:#}"
                                );
                            }
                        }
                        Write::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(Storage { store, writes })
    }

    /// The store itself, for blocking callers (startup, the CLI).
    pub fn blocking(&self) -> &dyn Store {
        &*self.store
    }

    /// Saves a chat message in the background; a failure is logged.
    pub fn save_chat(&self, record: ChatRecord) {
        self.write(Write::Chat(record));
    }

    /// Saves an audit record in the background; a failure is logged.
    pub fn save_audit(&self, record: AuditRecord) {
        self.write(Write::Audit(record));
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

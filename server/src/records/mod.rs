//! Class records: what a class leaves behind for its teachers. [`register`] is a class
//! session's attendance and engagement (kept by the space as the class goes on, stored,
//! shown live to the teachers and downloaded as CSV after class). Recordings themselves
//! are made by `media::recording`; their rows are in the store.

pub mod archive;
pub mod library;
pub mod links;
pub mod register;

use std::time::Duration;

/// How often old records are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the recordings (rows, and their files wherever `archive` keeps them) and class
/// registers older than `days` as of `now_ms`; how many recordings went. `days` 0 keeps
/// everything.
pub async fn prune(
    storage: &crate::store::Storage,
    archive: &archive::Archive,
    days: u32,
    now_ms: u64,
) -> anyhow::Result<usize> {
    if days == 0 {
        return Ok(0);
    }
    let cutoff = now_ms.saturating_sub(u64::from(days) * 24 * 3600 * 1000);
    let store = storage.clone();
    let gone =
        tokio::task::spawn_blocking(move || store.blocking().prune_records(cutoff)).await??;
    for id in gone
        .iter()
        .filter(|id| crate::media::recording::valid_id(id))
    {
        archive.delete(id).await;
    }
    if !gone.is_empty() {
        tracing::info!(recordings = gone.len(), days, "old recordings deleted");
    }
    Ok(gone.len())
}

//! Class records: what a class leaves behind for its teachers. [`register`] is a class
//! session's attendance and engagement (kept by the space as the class goes on, stored,
//! shown live to the teachers and downloaded as CSV after class). Recordings themselves
//! are made by `media::recording`; their rows are in the store.

pub mod library;
pub mod links;
pub mod register;

use crate::store::Store;
use std::path::Path;
use std::time::Duration;

/// How often old records are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the recordings (rows and files in `dir`) and class registers older than `days`
/// as of `now_ms`; how many recordings went. `days` 0 keeps everything.
pub fn prune(
    store: &dyn Store,
    dir: Option<&Path>,
    days: u32,
    now_ms: u64,
) -> anyhow::Result<usize> {
    if days == 0 {
        return Ok(0);
    }
    let cutoff = now_ms.saturating_sub(u64::from(days) * 24 * 3600 * 1000);
    let gone = store.prune_records(cutoff)?;
    if let Some(dir) = dir {
        for id in gone
            .iter()
            .filter(|id| crate::media::recording::valid_id(id))
        {
            let file = dir.join(format!("{id}.webm"));
            if let Err(e) = std::fs::remove_file(&file)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %file.display(), "an old recording could not be deleted: {e}");
            }
            let _ = std::fs::remove_dir_all(dir.join(id));
        }
    }
    if !gone.is_empty() {
        tracing::info!(recordings = gone.len(), days, "old recordings deleted");
    }
    Ok(gone.len())
}

//! What the server's heap holds, as the allocator (jemalloc, built with its statistics)
//! counts it; `/metrics` shows it. A soak compares it with the process's RSS:
//! - the live heap (`allocated`): bytes allocated and not yet freed. If it climbs, the
//!   server keeps something;
//! - `active`: the pages that hold live objects. Beyond the live heap, that is the free
//!   space scattered among them (fragmentation);
//! - `resident`: everything of the allocator's in RAM, its own metadata included. Beyond
//!   `active`, that is freed pages not yet given back to the kernel.
//!
//! Also [`no_huge_pages`], which the server calls first thing.

/// The allocator's view of the heap, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapBytes {
    /// Allocated and not yet freed.
    pub live: u64,
    /// In pages that hold live objects.
    pub active: u64,
    /// The allocator's own metadata (part of `resident`).
    pub metadata: u64,
    /// All the allocator's memory that is in RAM.
    pub resident: u64,
}

/// The allocator's statistics now, or `None` when jemalloc is not the allocator (a
/// `dhat-heap` build) or cannot say.
pub fn heap_bytes() -> Option<HeapBytes> {
    if cfg!(feature = "dhat-heap") {
        return None;
    }
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc's totals are refreshed when the epoch advances.
    epoch::advance().ok()?;
    Some(HeapBytes {
        live: stats::allocated::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        metadata: stats::metadata::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

/// Turns transparent huge pages off for this process. An allocator that asks for them
/// (mimalloc, which the server used before, did: `madvise(MADV_HUGEPAGE)` on its arena),
/// or a kernel set to give them always, lets khugepaged collapse every 2 MiB that holds
/// anything into a whole huge page: in a 30-minute soak the server's memory grew by a fifth
/// in 2 MiB steps while its live heap stayed flat, 80 of its 101 MiB in huge pages. With
/// them off, freed pages go back to the kernel as the allocator purges them.
/// Linux only; elsewhere a no-op. Failing is logged, not fatal (memory is then only larger).
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!("could not turn transparent huge pages off: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jemalloc_is_built_with_its_statistics() {
        // Without them every read fails. (Unit tests run on the system allocator, so the
        // live heap here is only jemalloc's own; `server/tests/cli.rs` reads a running
        // server's.)
        let heap = heap_bytes().expect("jemalloc statistics");
        assert!(
            heap.metadata > 0 && heap.metadata <= heap.resident,
            "{heap:?}"
        );
        assert!(heap.live <= heap.active, "{heap:?}");
    }
}

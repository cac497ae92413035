//! The live heap, as the allocator counts it. With the `heap-count` feature, `main.rs`
//! wraps the allocator (jemalloc) in `cap::Cap`, which adds up the bytes allocated and
//! not yet freed, and hands this module a way to read them ([`count_with`]); `/metrics`
//! then shows them as `quad_heap_live_bytes`. A soak compares that with the process's RSS: a live heap that
//! climbs is something the server keeps, an RSS that climbs over a flat live heap is the
//! allocator's. Off by default: a shared atomic per allocation is a cost the SFU's packet
//! path need not pay.
//!
//! Also [`no_huge_pages`], which the server calls first thing.

use std::sync::OnceLock;

static SOURCE: OnceLock<fn() -> usize> = OnceLock::new();

/// Makes [`live_bytes`] read `source` (the counting allocator's total). Once per process;
/// later calls are ignored.
pub fn count_with(source: fn() -> usize) {
    let _ = SOURCE.set(source);
}

/// The live heap in bytes, or `None` when the allocator is not counted.
pub fn live_bytes() -> Option<u64> {
    SOURCE.get().map(|source| source() as u64)
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
    fn the_live_heap_is_read_from_the_counting_allocator_once_it_is_set() {
        assert_eq!(live_bytes(), None);
        count_with(|| 1_234_567);
        count_with(|| 0);
        assert_eq!(live_bytes(), Some(1_234_567));
    }
}

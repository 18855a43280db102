//! A lazily initialized value.
//!
//! runbook's copy of sled 0.34.7 differs from the published crate here only: the original
//! `Lazy` made every thread that found the value being initialized spin in a bare
//! compare-and-swap loop until it was. sled's thread pool initializes its queue by spawning
//! seven threads that each touch the queue at once, so on a 2-core machine six threads spun
//! while the seventh was being created — ~11 ms of CPU at each start of a process that opens a
//! database (measured with `perf record` on `runbook run`). `OnceLock` parks the waiters
//! instead.

use std::sync::OnceLock;

/// A lazily initialized value
pub struct Lazy<T, F> {
    cell: OnceLock<T>,
    init: F,
}

impl<T, F> Lazy<T, F> {
    /// Create a new Lazy
    pub const fn new(init: F) -> Self
    where
        F: Sized,
    {
        Self { cell: OnceLock::new(), init }
    }
}

impl<T, F> std::ops::Deref for Lazy<T, F>
where
    F: Fn() -> T,
{
    type Target = T;

    fn deref(&self) -> &T {
        self.cell.get_or_init(|| (self.init)())
    }
}

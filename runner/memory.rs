//! The process's allocator, and how much memory the current thread holds.
//!
//! jemalloc is the global allocator because it counts, for each thread, every byte the thread
//! allocated and every byte it freed (`thread.allocatedp` and `thread.deallocatedp`, read
//! through a pointer: no call, no lock). Something that runs on one thread from start to end —
//! a Rhai evaluation — holds what its thread allocated less what it freed since it started:
//! [`Meter::held`]. Memory the thread frees that another thread allocated makes the figure
//! smaller; memory another thread frees that this one allocated keeps it larger. Neither
//! happens in an evaluation, which shares no values with other threads while it runs.

use std::cell::OnceCell;

use tikv_jemalloc_ctl::thread::{ThreadLocal, allocatedp, deallocatedp};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

thread_local! {
    /// This thread's counters, looked up once per thread; `None` if jemalloc cannot give them.
    static COUNTERS: OnceCell<Option<(ThreadLocal<u64>, ThreadLocal<u64>)>> =
        const { OnceCell::new() };
}

/// Bytes this thread allocated less bytes it freed, over its life (wrapping), or `None` when
/// the allocator does not count.
fn net() -> Option<u64> {
    COUNTERS.with(|cell| {
        cell.get_or_init(|| Some((allocatedp::read().ok()?, deallocatedp::read().ok()?)))
            .as_ref()
            .map(|(allocated, deallocated)| allocated.get().wrapping_sub(deallocated.get()))
    })
}

/// Measures the memory the current thread comes to hold from the moment it is started.
#[derive(Clone, Copy, Debug)]
pub struct Meter {
    start: Option<u64>,
}

impl Meter {
    /// Starts measuring on the current thread.
    pub fn start() -> Meter {
        Meter { start: net() }
    }

    /// Bytes the current thread holds beyond what it held at [`Meter::start`] (0 if it holds
    /// less, or if the allocator does not count). Meaningful only on the starting thread.
    pub fn held(self) -> u64 {
        match (self.start, net()) {
            (Some(start), Some(now)) => {
                let delta = now.wrapping_sub(start);
                // A "negative" delta wraps to a huge number: the thread holds less than before.
                if delta > u64::MAX / 2 { 0 } else { delta }
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_counts_what_this_thread_allocates_and_frees() {
        let meter = Meter::start();
        let block = vec![1u8; 8 << 20];
        let held = meter.held();
        assert!(
            (8 << 20..9 << 20).contains(&held),
            "held {held} bytes with an 8 MiB block alive"
        );
        drop(block);
        assert!(
            meter.held() < 1 << 20,
            "held {} after the drop",
            meter.held()
        );
    }

    #[test]
    fn another_threads_allocations_are_not_counted() {
        let meter = Meter::start();
        let block = std::thread::spawn(|| vec![1u8; 8 << 20]).join().unwrap();
        assert!(meter.held() < 1 << 20, "held {}", meter.held());
        drop(block);
    }
}

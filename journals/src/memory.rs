//! A journal in memory: for dry runs (`plan`) and tests. Same semantics as the sled journal
//! (locks, contiguous records, summaries), no durability.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::Utc;

use crate::{Event, Journal, JournalError, JournalStats, LockChange, Record, RunId, RunSummary};

/// A journal that forgets everything when dropped.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<RunId, Vec<Record>>,
    summaries: BTreeMap<RunId, RunSummary>,
    locks: HashMap<String, RunId>,
    meta: HashMap<String, Vec<u8>>,
    stats: JournalStats,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }
}

fn add(inner: &mut Inner, id: RunId, events: &[Event], lock: LockChange) -> Vec<Record> {
    let now = Utc::now();
    let summary = inner.summaries.get_mut(&id).expect("run exists");
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let record = Record {
            seq: summary.last_seq + 1,
            at: now,
            event: event.clone(),
        };
        summary.apply(&record);
        out.push(record);
    }
    if let Some(key) = &summary.lock {
        match lock {
            LockChange::Release if inner.locks.get(key) == Some(&id) => {
                inner.locks.remove(key);
            }
            LockChange::Retake => {
                inner.locks.insert(key.clone(), id);
            }
            _ => {}
        }
    }
    inner
        .records
        .entry(id)
        .or_default()
        .extend(out.iter().cloned());
    inner.stats.commits += 1;
    out
}

impl Journal for MemoryJournal {
    fn insert(
        &self,
        id: RunId,
        lock: Option<&str>,
        take_lock: bool,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError> {
        let mut inner = self.inner.lock().expect("journal mutex poisoned");
        if inner.summaries.contains_key(&id) {
            return Err(JournalError::RunExists(id));
        }
        if let Some(key) = lock
            && let Some(holder) = inner.locks.get(key)
        {
            return Err(JournalError::LockHeld {
                key: key.to_owned(),
                holder: *holder,
            });
        }
        let now = Utc::now();
        inner.summaries.insert(
            id,
            RunSummary {
                lock: lock.map(str::to_owned),
                ..RunSummary::empty(id, now)
            },
        );
        if let Some(key) = lock.filter(|_| take_lock) {
            inner.locks.insert(key.to_owned(), id);
        }
        let records = add(&mut inner, id, events, LockChange::Keep);
        if let Some(s) = inner.summaries.get_mut(&id) {
            s.lock = lock.map(str::to_owned);
        }
        Ok(records)
    }

    fn write(
        &self,
        id: RunId,
        expected: u64,
        events: &[Event],
        lock: LockChange,
    ) -> Result<Vec<Record>, JournalError> {
        let mut inner = self.inner.lock().expect("journal mutex poisoned");
        let Some(summary) = inner.summaries.get(&id) else {
            return Err(JournalError::NoSuchRun(id.to_string()));
        };
        if summary.last_seq != expected {
            return Err(JournalError::Conflict {
                run: id,
                expected,
                found: summary.last_seq,
            });
        }
        if lock == LockChange::Retake
            && let Some(key) = &summary.lock
            && let Some(holder) = inner.locks.get(key)
            && *holder != id
        {
            return Err(JournalError::LockHeld {
                key: key.clone(),
                holder: *holder,
            });
        }
        Ok(add(&mut inner, id, events, lock))
    }

    fn read(&self, id: RunId) -> Result<Vec<Record>, JournalError> {
        let inner = self.inner.lock().expect("journal mutex poisoned");
        inner
            .records
            .get(&id)
            .cloned()
            .ok_or_else(|| JournalError::NoSuchRun(id.to_string()))
    }

    fn read_after(&self, id: RunId, after: u64) -> Result<Vec<Record>, JournalError> {
        Ok(self
            .read(id)?
            .into_iter()
            .filter(|r| r.seq > after)
            .collect())
    }

    fn runs(&self) -> Result<Vec<RunSummary>, JournalError> {
        let inner = self.inner.lock().expect("journal mutex poisoned");
        Ok(inner.summaries.values().cloned().collect())
    }

    fn summary(&self, id: RunId) -> Result<RunSummary, JournalError> {
        let inner = self.inner.lock().expect("journal mutex poisoned");
        inner
            .summaries
            .get(&id)
            .cloned()
            .ok_or_else(|| JournalError::NoSuchRun(id.to_string()))
    }

    fn resolve(&self, prefix: &str) -> Result<RunId, JournalError> {
        let inner = self.inner.lock().expect("journal mutex poisoned");
        let p = prefix.to_ascii_uppercase();
        let found: Vec<RunId> = inner
            .summaries
            .keys()
            .filter(|id| id.to_string().starts_with(&p))
            .copied()
            .collect();
        JournalError::one_run(prefix, found)
    }

    fn lock_holder(&self, key: &str) -> Result<Option<RunId>, JournalError> {
        let inner = self.inner.lock().expect("journal mutex poisoned");
        Ok(inner.locks.get(key).copied())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let inner = self.inner.lock().expect("journal mutex poisoned");
        Ok(inner.meta.get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), JournalError> {
        let mut inner = self.inner.lock().expect("journal mutex poisoned");
        inner.meta.insert(key.to_owned(), value.to_vec());
        inner.stats.commits += 1;
        Ok(())
    }

    fn swap_meta(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, JournalError> {
        let mut inner = self.inner.lock().expect("journal mutex poisoned");
        if inner.meta.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        inner.meta.insert(key.to_owned(), value.to_vec());
        inner.stats.commits += 1;
        Ok(true)
    }

    fn stats(&self) -> JournalStats {
        self.inner.lock().expect("journal mutex poisoned").stats
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn the_memory_journal_conforms() {
        crate::conformance::all(&|| (Arc::new(super::MemoryJournal::new()), Box::new(())));
    }
}

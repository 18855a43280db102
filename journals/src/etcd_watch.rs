//! Following keys of the etcd journal through watch failures.
//!
//! [`follow`] hands every change of a key (or of every key under a prefix) from a given
//! revision on, in order, each once, for as long as its receiver lives — across watch streams
//! that fail: a failed or cancelled watch is created again from the revision after the last
//! change handed, after a pause that grows from 100 ms to 2 s (no busy loop while etcd is
//! down). When etcd compacted the revisions a watch must start from, the changes in between
//! are gone: the follower says so ([`Change::Compacted`]) and goes on from the oldest revision
//! etcd still has, so its reader re-reads whatever it must not miss.
//!
//! A watch on a member that is stopped (not closed) hangs without an error until the member
//! goes on; its changes then arrive. Readers that must react within a bound also look on a
//! timer.

use std::sync::Arc;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;

use crate::etcd_journal::{Inner, backoff};

/// A change of a followed key.
#[derive(Debug)]
pub(crate) enum Change {
    /// The key was written.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
    },
    /// The key was deleted (or its lease ended).
    Delete {
        /// The key.
        key: String,
    },
    /// Changes before here were compacted away and are not handed: re-read what matters.
    Compacted,
}

/// Changes of `key` (every key under it when `prefix`) from revision `from` on; the follower
/// ends when the receiver is dropped. Must be called on the journal's runtime.
pub(crate) fn follow(
    inner: Arc<Inner>,
    key: String,
    prefix: bool,
    from: i64,
) -> mpsc::Receiver<Change> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(inner, key, prefix, from, tx));
    rx
}

async fn run(inner: Arc<Inner>, key: String, prefix: bool, from: i64, tx: mpsc::Sender<Change>) {
    let mut client = inner.client.watch_client();
    let mut next = from;
    let mut failures = 0;
    loop {
        let mut options = WatchOptions::new()
            .with_start_revision(next)
            .with_progress_notify();
        if prefix {
            options = options.with_prefix();
        }
        let created = tokio::select! {
            created = tokio::time::timeout(inner.timeout, client.watch(key.clone(), Some(options))) => created,
            () = tx.closed() => return,
        };
        match created {
            Ok(Ok(mut stream)) => loop {
                let message = tokio::select! {
                    message = stream.message() => message,
                    () = tx.closed() => return,
                };
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(key = %key, error = %e, "an etcd watch failed; creating it again");
                        break;
                    }
                };
                if response.compact_revision() > 0 {
                    next = next.max(response.compact_revision());
                    if tx.send(Change::Compacted).await.is_err() {
                        return;
                    }
                    break;
                }
                if response.canceled() {
                    break;
                }
                failures = 0;
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    next = kv.mod_revision() + 1;
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let change = match event.event_type() {
                        EventType::Put => Change::Put {
                            key,
                            value: kv.value().to_vec(),
                        },
                        EventType::Delete => Change::Delete { key },
                    };
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
                // A progress notice says every change up to its revision was sent (the
                // creation notice comes before the history it replays, so it says nothing).
                if response.events().is_empty()
                    && !response.created()
                    && let Some(header) = response.header()
                {
                    next = next.max(header.revision() + 1);
                }
            },
            Ok(Err(e)) => {
                tracing::debug!(key = %key, error = %e, "failed to create an etcd watch");
            }
            Err(_) => tracing::debug!(key = %key, "creating an etcd watch timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff(failures)) => {}
            () = tx.closed() => return,
        }
        failures += 1;
    }
}

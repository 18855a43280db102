//! Several executors sharing one journal (the etcd journal): which executor executes which run,
//! how an executor that lost its machine — or its lease — is fenced off, and how a decision
//! given to one executor reaches the one that executes the run.
//!
//! The contract every implementation keeps:
//!
//! - **One lease per executor.** An executor joins with a lease of [`Fleet::ttl`] that it keeps
//!   alive. Its identity ([`Fleet::me`]) names the lease, so an executor that lost its lease and
//!   joined again is another executor: nothing owned under the old lease is its own.
//! - **Ownership.** An unfinished run is owned by at most one executor, from the write that
//!   creates or claims it until its terminal `StateChanged` (which lets go in the same write),
//!   [`Fleet::release`], or the owner's lease expiring. A run parked at a gate or paused stays
//!   owned: its gate timers and its decisions are the owner's.
//! - **Fencing.** Every write of a run by a joined executor is one atomic store transaction that
//!   also checks that the run is owned by that executor — or is owned by nobody, and then takes it
//!   under the executor's lease in the same transaction. A write to a run owned by another
//!   executor fails with [`JournalError::Owned`], one by an executor whose lease is gone with
//!   [`JournalError::Fenced`]; in both cases nothing is written. A journal that has not joined
//!   writes only runs nobody owns, and takes none.
//! - **Standing.** [`Fleet::standing`] says whether the lease is held. `Suspended` means the
//!   keep-alives have failed for a whole TTL (etcd unreachable, or without quorum): the lease may
//!   be gone, so the executor stops its steps at a safe point; it goes back to `Held` if the
//!   store answers again and the lease is still there (etcd renews leases when a new leader is
//!   elected, so a quorum loss alone does not take ownership away). `Lost` is final: the store
//!   said the lease does not exist; every write of this executor is fenced from then on.
//! - **Decisions through the store.** [`Fleet::ask`] puts a request where its addressee watches
//!   ([`Fleet::inbox`]) and waits for the addressee's answer; requests and answers are JSON the
//!   runner defines, never secrets.
//! - **Adoption.** Runs marked [`Fleet::adopt`] are to be carried on by whichever executor is up
//!   when their owner goes (what `serve` executes; a run a person interrupted from a terminal is
//!   not marked). [`Fleet::adoptable`] lists them, [`Fleet::orphaned`] wakes a claimer whenever
//!   an owner lets go or its lease expires.

use std::time::Duration;

use crate::{JournalError, RunId};

/// Whether this executor's lease is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Renewed within its TTL: this executor may write the runs it owns.
    Held,
    /// Not renewed for a whole TTL: the lease may have expired; stop steps at a safe point and
    /// wait — it is `Held` again if the store answers and the lease is still there.
    Suspended,
    /// The store said the lease is gone: every run this executor owned may be another's now.
    Lost,
}

/// A request that reached this executor, and where its answer goes.
pub struct Incoming {
    /// The executor that asked.
    pub from: String,
    /// The request, as the asker wrote it.
    pub body: serde_json::Value,
    /// Send the answer here (dropping it answers with an error saying the request was dropped).
    pub reply: tokio::sync::oneshot::Sender<serde_json::Value>,
}

/// An answer that arrives once the addressee wrote it.
pub type Answer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<serde_json::Value, JournalError>> + Send + 'static>,
>;

/// The executors sharing a journal, as seen by one of them.
pub trait Fleet: Send + Sync {
    /// This executor's identity: its name and its lease, e.g. `host-a/694d7f3e1c2b0a11`.
    fn me(&self) -> String;

    /// The lease's time to live: an owner that died is replaced within it (plus the claimer's
    /// reaction time).
    fn ttl(&self) -> Duration;

    /// The lease's standing, updated as keep-alives succeed or fail.
    fn standing(&self) -> tokio::sync::watch::Receiver<Standing>;

    /// Takes run `id` if nobody owns it; `Ok(true)` when this executor owns it (now or already),
    /// `Ok(false)` when another does.
    fn claim(&self, id: RunId) -> Result<bool, JournalError>;

    /// Who owns run `id`, if anyone.
    fn owner(&self, id: RunId) -> Result<Option<String>, JournalError>;

    /// Every owned run and its owner.
    fn owners(&self) -> Result<Vec<(RunId, String)>, JournalError>;

    /// Lets go of run `id` if this executor owns it (a graceful stop hands runs over at once
    /// instead of after the TTL).
    fn release(&self, id: RunId) -> Result<(), JournalError>;

    /// Marks run `id` as one an executor carries on when its owner goes (`true`), or no longer
    /// (`false`).
    fn adopt(&self, id: RunId, yes: bool) -> Result<(), JournalError>;

    /// The runs marked by [`Fleet::adopt`].
    fn adoptable(&self) -> Result<Vec<RunId>, JournalError>;

    /// Wakes (with the run) whenever a run's owner lets go or its lease expires. A receiver that
    /// lags may miss wake-ups: claimers also look on a timer.
    fn orphaned(&self) -> tokio::sync::broadcast::Receiver<RunId>;

    /// Sends `body` to executor `to` and waits for its answer, at most `within`.
    fn ask(&self, to: &str, body: serde_json::Value, within: Duration) -> Answer;

    /// The requests sent to this executor. Only the first call gets them.
    fn inbox(&self) -> Option<tokio::sync::mpsc::Receiver<Incoming>>;

    /// Leaves the fleet: the lease is revoked, so every run this executor still owns is free for
    /// another at once.
    fn leave(&self);
}

//! The etcd-backed [`Journal`]: runs kept in an etcd cluster, so that they outlive the machine
//! that executes them.
//!
//! Layout, under the journal's prefix `P` ([`EtcdTarget::prefix`]):
//!
//! - `P/runs/<id>/e/<seq, 20 digits>` → one record: `r` + CRC32 (4 bytes LE) + JSON [`Record`],
//!   or, for a record too large to travel inline, `b` + CRC32 + JSON [`BlobRef`] naming its blob;
//! - `P/runs/<id>/b/<blob id>/<n, 6 digits>` → the n-th piece of a large record's `CRC32 + JSON`,
//!   each at most [`CHUNK`] bytes, written before the commit that refers to them (an aborted
//!   commit leaves them unreferenced, and they are deleted at once when etcd answers);
//! - `P/runs/<id>/last` → the run's last sequence number, in decimal;
//! - `P/summaries/<id>` → CRC32 + JSON [`RunSummary`], with the hash chain over the run's
//!   records (the chain of the sled journal: [`witness::chain_next`] over each record's JSON);
//! - `P/locks/<key>` → the id of the run holding the lock;
//! - `P/meta/<key>` → raw bytes;
//! - `P/receipts/<unique id>` → empty: written with a [`Journal::swap_meta`], deleted once its
//!   answer came (see Patience below);
//! - the fleet's keys (`P/members/`, `P/owners/`, `P/adopt/`, `P/inbox/`, `P/answers/`): see
//!   `etcd_fleet`.
//!
//! Writes: every `create` and `append` is one etcd transaction. An append compares the run's
//! `last` key with the sequence number the writer expects, and its summary's revision with the
//! one it read, and only then writes the records, the summary and `last` together; otherwise
//! nothing is written and the writer gets [`JournalError::Conflict`]. A create compares that
//! the run's summary and its lock key do not exist (`create_revision == 0`); a terminal
//! `StateChanged` deletes the lock in the same transaction, after comparing that it still names
//! the run. A write is durable when etcd answers: etcd commits it to a quorum's write-ahead
//! logs first.
//!
//! Ownership: the same transaction carries the fleet's comparisons (`Inner::fence`, in
//! `etcd_fleet`): once the journal [joined](EtcdJournal::join), that its lease is alive and
//! the run is its own (or nobody's, and then it takes it); before, that nobody owns the run.
//! The first try assumes the usual case (the run is the writer's own, or nobody's) without
//! reading; a refused commit reads who owns the run and decides again
//! ([`JournalError::Owned`], [`JournalError::Fenced`], or another try).
//!
//! Patience: a write (`create`, `append`, `put_meta`, `swap_meta`) that etcd fails
//! transiently — no answer within the timeout, no leader, no quorum, unreachable — is tried
//! again after a pause growing from 100 ms to 2 s, for [`EtcdJournal::patience`] (default
//! [`PATIENCE`]), then fails with [`EtcdError::Unavailable`]. Runs stop at a safe point meanwhile
//! (the engine waits for its write) and go on when quorum returns. The journal's reads (records,
//! summaries, locks, meta) are tried again the same way: a read has no effect, so every try is
//! the same question. A write's try that got no answer may still have committed — then, or
//! later —, so a try after one is read differently: an append
//! that finds the run ending at `expected + n` with exactly its events (a create: the run
//! existing with exactly its events) committed earlier and returns the stored records, not a
//! [`JournalError::Conflict`]; every try compares the same `expected`, so at most one lands.
//! Under ownership only the owner writes a run, so those records are this writer's. A swap
//! cannot tell its value from the same value swapped in by another executor (two deciding
//! one schedule's fire do), so it writes a receipt key unique to it in the same transaction
//! and, after a try without an answer, a refused comparison with its receipt in place is its
//! own earlier success. Blobs written for a try without an answer stay (they may be
//! referenced).
//!
//! Size: etcd refuses requests over 1.5 MiB by default. A record whose stored form exceeds
//! [`INLINE_MAX`] goes to a blob; so does the largest inline record while a commit would carry
//! more than [`TXN_BUDGET`] bytes. A commit needing more than [`MAX_TXN_OPS`] operations
//! (etcd's default `--max-txn-ops` is 128) is refused with [`EtcdError::TooLarge`], nothing
//! written.
//!
//! Reads: a run's summary and records are read at one etcd revision, so a read never sees half
//! of a commit. Every record is checked: its CRC, its sequence number against its key, the
//! sequence without gaps up to the summary's `last_seq`, each blob piece present and the whole
//! passing the CRC, and on a full read the hash chain against the summary's. A lost or changed
//! record is a [`JournalError::Corrupt`] naming the run and the record, never a silently
//! shorter history. (There is no witness file: what vouches for the records is the summary
//! written atomically with them, in a replicated store.)
//!
//! Threads: the etcd client is asynchronous. The journal runs it on a small runtime of its own,
//! so the synchronous methods work from any thread — a caller's own runtime included, whose
//! worker then waits as it would on the sled journal's disk — and [`Journal::append_async`]
//! waits for etcd's answer without holding any thread.
//!
//! Several executors sharing the journal: `etcd_fleet` (leases, ownership, decisions through
//! the store).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, TxnOp,
    TxnOpResponse,
};
use serde::{Deserialize, Serialize};

use crate::etcd_fleet::Member;
use crate::etcd_url::EtcdTarget;
use crate::witness;
use crate::{
    Event, Journal, JournalError, JournalStats, LockChange, Pending, Record, RunId, RunSummary,
};

/// A record whose stored form is larger goes to a blob.
pub const INLINE_MAX: usize = 64 * 1024;
/// The bytes one commit may carry inline (etcd's default request limit is 1.5 MiB).
pub const TXN_BUDGET: usize = 1024 * 1024;
/// The size of a blob's pieces, each written by a request of its own.
pub const CHUNK: usize = 1024 * 1024;
/// The most operations one commit may need (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;
/// Records read per request (at most [`INLINE_MAX`] bytes each, under gRPC's 4 MiB replies).
const PAGE: i64 = 48;
/// How many times a write re-reads and tries again when only a lock or an owner moved under it.
const ATTEMPTS: usize = 5;
/// How long a write (or a read) keeps trying while etcd is unreachable or without quorum, by
/// default.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// What a write that [`Inner::patiently`] keeps trying does not do while etcd fails.
pub(crate) const WRITE: &str = "take a write";
/// What a read that [`Inner::patiently`] keeps trying does not do while etcd fails.
pub(crate) const READ: &str = "answer a read";

const INLINE: u8 = b'r';
const BLOB: u8 = b'b';

/// What can go wrong talking to etcd (carried as [`JournalError::Storage`]).
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// etcd refused the request or could not be reached.
    #[error("etcd at {endpoints} failed to {action}")]
    Request {
        /// The cluster's endpoints.
        endpoints: String,
        /// What we asked.
        action: &'static str,
        /// The cause.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer in time (unreachable, or without quorum).
    #[error("etcd at {endpoints} did not answer within {timeout:?} when asked to {action}")]
    Timeout {
        /// The cluster's endpoints.
        endpoints: String,
        /// What we asked.
        action: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// A commit would exceed what one etcd transaction may carry.
    #[error(
        "a commit to run {run} is too large for one etcd transaction: {detail}; nothing was written"
    )]
    TooLarge {
        /// The run.
        run: RunId,
        /// How large.
        detail: String,
    },
    /// A TLS file could not be read.
    #[error("failed to read the etcd {what} {path}")]
    TlsFile {
        /// Which file.
        what: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS options are incomplete.
    #[error("etcd TLS: {0}")]
    TlsOptions(&'static str),
    /// The journal's own runtime could not start or went away.
    #[error("the etcd journal's runtime {0}")]
    Runtime(String),
    /// A write kept meeting concurrent changes of the run's lock.
    #[error("run {0} kept changing under the write; nothing was written")]
    Contended(RunId),
    /// etcd kept failing a write or a read (unreachable, or without quorum) for the journal's
    /// whole patience ([`EtcdJournal::set_patience`]).
    #[error("etcd at {endpoints} did not {what} within {patience:?}; gave up")]
    Unavailable {
        /// The cluster's endpoints.
        endpoints: String,
        /// What it did not do: [`WRITE`] or [`READ`].
        what: &'static str,
        /// How long the request kept trying.
        patience: Duration,
        /// The last failure.
        #[source]
        last: Box<JournalError>,
    },
    /// A key holds something this journal does not write.
    #[error("key {key} holds an unexpected value: {detail}")]
    Malformed {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

impl From<EtcdError> for JournalError {
    fn from(e: EtcdError) -> Self {
        JournalError::Storage(Box::new(e))
    }
}

/// Where a large record's bytes are.
#[derive(Debug, Serialize, Deserialize)]
struct BlobRef {
    /// The blob's id, unique per write.
    blob: String,
    /// How many pieces.
    chunks: usize,
    /// The total length of the record's `CRC32 + JSON`.
    len: usize,
}

/// A journal in an etcd cluster.
pub struct EtcdJournal {
    pub(crate) inner: Arc<Inner>,
    /// Taken on drop, to shut down without waiting (a drop may happen on a runtime's thread).
    runtime: Option<tokio::runtime::Runtime>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) endpoints: String,
    pub(crate) timeout: Duration,
    commits: AtomicU64,
    /// How long a write keeps trying through transient failures, in milliseconds.
    patience_ms: AtomicU64,
    /// Writes tried again after a transient failure (tests watch it).
    pub(crate) retries: AtomicU64,
    /// The fleet membership, once [`EtcdJournal::join`]ed: every write is fenced by it.
    pub(crate) member: RwLock<Option<Arc<Member>>>,
}

impl std::fmt::Debug for EtcdJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdJournal")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdJournal {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl EtcdJournal {
    /// Connects to the cluster `target` names; each request waits at most `timeout`.
    pub fn open(target: &EtcdTarget, timeout: Duration) -> Result<Self, JournalError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-journal")
            .enable_all()
            .build()
            .map_err(|e| EtcdError::Runtime(format!("failed to start: {e}")))?;
        let endpoints = target.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        if let Some((user, password)) = &target.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &target.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let eps = target.endpoints.clone();
        let ends = endpoints.clone();
        // A cluster that asks clients for a certificate closes the connection of one without,
        // which the transport reports only as "connection closed": say what was tried.
        let action = match &target.tls {
            Some(tls) if tls.cert.is_none() => {
                "connect over TLS without a client certificate (a cluster that asks its clients \
                 for one needs a certificate and its key)"
            }
            _ => "connect",
        };
        let client = wait(runtime.handle(), async move {
            tokio::time::timeout(timeout, Client::connect(eps, Some(options)))
                .await
                .map_err(|_| EtcdError::Timeout {
                    endpoints: ends.clone(),
                    action,
                    timeout,
                })?
                .map_err(|source| EtcdError::Request {
                    endpoints: ends,
                    action,
                    source,
                })
                .map_err(JournalError::from)
        })?;
        let journal = Self {
            inner: Arc::new(Inner {
                client,
                prefix: target.prefix.clone(),
                endpoints,
                timeout,
                commits: AtomicU64::new(0),
                patience_ms: AtomicU64::new(PATIENCE.as_millis() as u64),
                retries: AtomicU64::new(0),
                member: RwLock::new(None),
            }),
            runtime: Some(runtime),
        };
        // A cluster that accepts the connection lazily answers here, or says why not.
        journal.call(|inner| async move { inner.get(&inner.meta_key("")).await.map(drop) })?;
        Ok(journal)
    }

    /// The key prefix everything of this journal is under.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// How long a write keeps trying while etcd does not answer or has no quorum (default
    /// [`PATIENCE`]) before it fails.
    pub fn patience(&self) -> Duration {
        self.inner.patience()
    }

    /// Sets [`EtcdJournal::patience`].
    pub fn set_patience(&self, patience: Duration) {
        self.inner
            .patience_ms
            .store(patience.as_millis() as u64, Ordering::Relaxed);
    }

    /// The journal's own runtime, where its client and its fleet's tasks run.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .handle()
    }

    /// Runs `f` on the journal's runtime and waits for it.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, JournalError>> + Send + 'static,
    {
        wait(self.handle(), f(self.inner.clone()))
    }

    /// A read, tried again while etcd fails transiently (no leader, no quorum, unreachable)
    /// for the journal's patience, as a write is: a process that has the journal open (`serve`
    /// and its API, a run under way) waits out an election or a quorum loss instead of failing
    /// at once. Opening itself does not wait, so that a wrong address fails at once.
    fn patient_read<T, F, Fut>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: Fn(Arc<Inner>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, JournalError>> + Send + 'static,
    {
        self.call(move |inner| async move { inner.patiently(READ, |_| f(inner.clone())).await })
    }
}

/// Runs `fut` on `runtime` and blocks this thread (any thread but the runtime's own) until it
/// ends.
pub(crate) fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    fut: impl Future<Output = Result<T, JournalError>> + Send + 'static,
) -> Result<T, JournalError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| EtcdError::Runtime("stopped during a request".into()))?
}

fn tls_options(tls: &crate::etcd_url::EtcdTls) -> Result<etcd_client::TlsOptions, EtcdError> {
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| EtcdError::TlsFile {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let mut options = etcd_client::TlsOptions::new();
    if let Some(ca) = &tls.ca_cert {
        options = options.ca_certificate(etcd_client::Certificate::from_pem(read(
            "CA certificate",
            ca,
        )?));
    } else {
        options = options.with_enabled_roots();
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            options = options.identity(etcd_client::Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(EtcdError::TlsOptions(
                "a client certificate needs its key, and a key its certificate (--etcd-cert and --etcd-key)",
            ));
        }
    }
    Ok(options)
}

/// The key just after every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// CRC32 (little-endian) of the JSON, then the JSON.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, JournalError> {
    let json = serde_json::to_vec(value).map_err(|e| JournalError::Storage(Box::new(e)))?;
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// The JSON of `CRC32 + JSON`, if the checksum holds.
fn checked(bytes: &[u8]) -> Result<&[u8], String> {
    let Some((crc, json)) = bytes.split_first_chunk::<4>() else {
        return Err(format!("truncated value of {} bytes", bytes.len()));
    };
    if u32::from_le_bytes(*crc) != crc32fast::hash(json) {
        return Err("checksum mismatch".to_owned());
    }
    Ok(json)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(checked(bytes)?).map_err(|e| format!("undecodable: {e}"))
}

fn corrupt(run: RunId, seq: u64, detail: String) -> JournalError {
    JournalError::Corrupt { run, seq, detail }
}

fn make_records(events: &[Event], first: u64, at: DateTime<Utc>) -> Vec<Record> {
    events
        .iter()
        .zip(first..)
        .map(|(event, seq)| Record {
            seq,
            at,
            event: event.clone(),
        })
        .collect()
}

/// A commit's writes.
#[derive(Default)]
pub(crate) struct Commit {
    pub(crate) compares: Vec<Compare>,
    pub(crate) ops: Vec<TxnOp>,
    bytes: usize,
    /// Blobs written ahead, to delete if the commit does not happen.
    blobs: Vec<String>,
}

impl Commit {
    pub(crate) fn put(&mut self, key: String, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.ops.push(TxnOp::put(key, value, None));
    }

    /// Puts `key` attached to `lease`: etcd deletes it when the lease ends, and refuses the
    /// whole commit if the lease is gone already.
    pub(crate) fn put_leased(&mut self, key: String, value: Vec<u8>, lease: i64) {
        self.bytes += key.len() + value.len();
        let options = PutOptions::new().with_lease(lease);
        self.ops.push(TxnOp::put(key, value, Some(options)));
    }
}

/// How long to wait before the `tries`-th retry: 100 ms, doubling, at most 2 s.
pub(crate) fn backoff(tries: u32) -> Duration {
    Duration::from_millis(100u64 << tries.min(5)).min(Duration::from_secs(2))
}

/// Whether `e` says etcd did not answer, or answered that it cannot now (no leader, no quorum,
/// overloaded): the same request may succeed later — and, for a write, may have been
/// committed although no answer came.
pub(crate) fn transient(e: &JournalError) -> bool {
    let JournalError::Storage(source) = e else {
        return false;
    };
    match source.downcast_ref::<EtcdError>() {
        Some(EtcdError::Timeout { .. }) => true,
        Some(EtcdError::Request { source, .. }) => transient_etcd(source),
        _ => false,
    }
}

fn transient_etcd(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            // Cancelled: the client's own deadline (`ConnectOptions::with_timeout`) expired.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled => true,
            // etcd's own "request timed out" / "leader changed" travel as Unknown through
            // some proxies.
            Code::Unknown => {
                let message = status.message();
                ["timed out", "leader", "connection"]
                    .iter()
                    .any(|m| message.contains(m))
            }
            _ => false,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Whether etcd refused a request because a lease it names does not exist (any more).
pub(crate) fn lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.message().contains("requested lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

impl Inner {
    pub(crate) fn patience(&self) -> Duration {
        Duration::from_millis(self.patience_ms.load(Ordering::Relaxed))
    }

    fn run_dir(&self, id: RunId) -> String {
        format!("{}/runs/{id}/", self.prefix)
    }
    fn event_key(&self, id: RunId, seq: u64) -> String {
        format!("{}e/{seq:020}", self.run_dir(id))
    }
    fn blob_prefix(&self, id: RunId, blob: &str) -> String {
        format!("{}b/{blob}/", self.run_dir(id))
    }
    fn last_key(&self, id: RunId) -> String {
        format!("{}last", self.run_dir(id))
    }
    fn summaries_dir(&self) -> String {
        format!("{}/summaries/", self.prefix)
    }
    pub(crate) fn summary_key(&self, id: RunId) -> String {
        format!("{}{id}", self.summaries_dir())
    }
    fn lock_key(&self, key: &str) -> String {
        format!("{}/locks/{key}", self.prefix)
    }
    fn meta_key(&self, key: &str) -> String {
        format!("{}/meta/{key}", self.prefix)
    }

    /// Bounds `request` by the journal's timeout and names what failed.
    pub(crate) async fn ask<T>(
        &self,
        action: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, JournalError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(source)) => Err(EtcdError::Request {
                endpoints: self.endpoints.clone(),
                action,
                source,
            }
            .into()),
            Err(_) => Err(EtcdError::Timeout {
                endpoints: self.endpoints.clone(),
                action,
                timeout: self.timeout,
            }
            .into()),
        }
    }

    /// The value of `key`, with its modification revision and the store's revision.
    pub(crate) async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64), JournalError> {
        let mut kv = self.client.kv_client();
        let mut answer = self.ask("read", kv.get(key, None)).await?;
        let revision = answer
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        Ok((answer.take_kvs().into_iter().next(), revision))
    }

    /// Every key-value in `[start, end)` at `revision` (0: the latest), `PAGE` at a time.
    pub(crate) async fn range(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        revision: i64,
        keys_only: bool,
    ) -> Result<Vec<KeyValue>, JournalError> {
        let mut kv = self.client.kv_client();
        let mut out = Vec::new();
        let mut from = start;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            if keys_only {
                options = options.with_keys_only();
            }
            let mut answer = self
                .ask("read", kv.get(from.clone(), Some(options)))
                .await?;
            let more = answer.more();
            let kvs = answer.take_kvs();
            let Some(last) = kvs.last() else { break };
            from = last.key().to_vec();
            from.push(0);
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    async fn txn(&self, commit: Commit) -> Result<(bool, Vec<TxnOpResponse>), JournalError> {
        let txn = etcd_client::Txn::new()
            .when(commit.compares)
            .and_then(commit.ops);
        let mut kv = self.client.kv_client();
        let answer = self.ask("commit", kv.txn(txn)).await?;
        Ok((answer.succeeded(), answer.op_responses()))
    }

    /// The run's summary with its modification revision, and the store's revision.
    async fn summary_at(&self, id: RunId) -> Result<(RunSummary, i64, i64), JournalError> {
        let (kv, revision) = self.get(&self.summary_key(id)).await?;
        let Some(kv) = kv else {
            return Err(JournalError::NoSuchRun(id.to_string()));
        };
        let summary = decode_summary(id, kv.value()).map_err(|d| summary_corrupt(id, &d))?;
        Ok((summary, kv.mod_revision(), revision))
    }

    async fn lock_value(&self, key: &str) -> Result<Option<RunId>, JournalError> {
        let full = self.lock_key(key);
        let (kv, _) = self.get(&full).await?;
        kv.map(|kv| parse_id(&full, kv.value())).transpose()
    }

    /// Adds `records` (and their blobs, written now) to `commit`, folding them into `summary`
    /// and the chain.
    async fn add_records(
        &self,
        id: RunId,
        records: &[Record],
        summary: &mut RunSummary,
        commit: &mut Commit,
    ) -> Result<(), JournalError> {
        let mut chain = match summary.chain.as_deref() {
            Some(hex) => witness::chain_from_hex(hex).ok_or_else(|| {
                summary_corrupt(id, "its hash chain is not 56 hexadecimal digits")
            })?,
            None => witness::chain_start(id),
        };
        let mut values = Vec::with_capacity(records.len());
        for record in records {
            summary.apply(record);
            let value = encode(record)?;
            chain = witness::chain_next(&chain, &value[4..]);
            values.push(value);
        }
        summary.chain = Some(witness::chain_hex(&chain));
        // Largest first to blobs, until every inline record is small and the commit fits.
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(values[i].len()));
        let mut inline: usize = values.iter().map(Vec::len).sum();
        let mut to_blob = vec![false; values.len()];
        for i in order {
            if values[i].len() > INLINE_MAX || inline > TXN_BUDGET {
                to_blob[i] = true;
                inline -= values[i].len();
            }
        }
        for ((record, value), blob) in records.iter().zip(values).zip(to_blob) {
            let stored = if blob {
                let reference = self.write_blob(id, &value, commit).await?;
                [&[BLOB][..], &encode(&reference)?].concat()
            } else {
                [&[INLINE][..], &value].concat()
            };
            commit.put(self.event_key(id, record.seq), stored);
        }
        Ok(())
    }

    async fn write_blob(
        &self,
        id: RunId,
        value: &[u8],
        commit: &mut Commit,
    ) -> Result<BlobRef, JournalError> {
        let blob = RunId::new().to_string();
        let prefix = self.blob_prefix(id, &blob);
        commit.blobs.push(prefix.clone());
        let mut kv = self.client.kv_client();
        let mut chunks = 0;
        for (n, piece) in value.chunks(CHUNK).enumerate() {
            self.ask(
                "write a large record",
                kv.put(format!("{prefix}{n:06}"), piece.to_vec(), None),
            )
            .await?;
            chunks += 1;
        }
        Ok(BlobRef {
            blob,
            chunks,
            len: value.len(),
        })
    }

    /// Commits, or deletes the blobs written for a commit that did not happen.
    async fn commit(&self, id: RunId, commit: Commit) -> Result<bool, JournalError> {
        if commit.ops.len() > MAX_TXN_OPS || commit.bytes > TXN_BUDGET + 64 * 1024 {
            let detail = format!(
                "{} operations, {} bytes (at most {MAX_TXN_OPS} and {TXN_BUDGET})",
                commit.ops.len(),
                commit.bytes
            );
            self.drop_blobs(&commit.blobs).await;
            return Err(EtcdError::TooLarge { run: id, detail }.into());
        }
        let blobs = commit.blobs.clone();
        let result = self.txn(commit).await;
        match result {
            Ok((true, _)) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Ok((false, _)) => {
                self.drop_blobs(&blobs).await;
                Ok(false)
            }
            // The owner's lease ended between the fence's read and the commit: nothing landed.
            Err(e) if refused_lease(&e) => {
                self.drop_blobs(&blobs).await;
                Err(self.fenced(id, "etcd refused its lease: it does not exist any more"))
            }
            // Unknown whether it landed: the blobs may be referenced, so they stay.
            Err(e) => Err(e),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the journal's patience runs out
    /// while etcd keeps failing transiently ([`transient`]). `attempt` is told whether an
    /// earlier try failed so: that try may have committed without its answer reaching us.
    pub(crate) async fn patiently<T, Fut>(
        &self,
        what: &'static str,
        mut attempt: impl FnMut(bool) -> Fut,
    ) -> Result<T, JournalError>
    where
        Fut: Future<Output = Result<T, JournalError>>,
    {
        let patience = self.patience();
        let deadline = Instant::now() + patience;
        let mut tries = 0;
        loop {
            match attempt(tries > 0).await {
                Err(e) if transient(&e) => {
                    let pause = backoff(tries);
                    if Instant::now() + pause > deadline {
                        return Err(EtcdError::Unavailable {
                            endpoints: self.endpoints.clone(),
                            what,
                            patience,
                            last: Box::new(e),
                        }
                        .into());
                    }
                    tracing::warn!(
                        error = %crate::error_chain(&e),
                        "etcd did not {what}; trying again"
                    );
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tries += 1;
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// The records of `id` after `after` if they are exactly `events`: a write whose answer
    /// was lost had committed them.
    pub(crate) async fn landed(
        &self,
        id: RunId,
        after: u64,
        events: &[Event],
    ) -> Result<Option<Vec<Record>>, JournalError> {
        let stored = self.read(id, after).await?;
        let same =
            stored.len() == events.len() && stored.iter().zip(events).all(|(r, e)| r.event == *e);
        Ok(same.then_some(stored))
    }

    async fn drop_blobs(&self, blobs: &[String]) {
        let mut kv = self.client.kv_client();
        for prefix in blobs {
            let options = etcd_client::DeleteOptions::new().with_prefix();
            if let Err(e) = self
                .ask(
                    "delete an unused blob",
                    kv.delete(prefix.clone(), Some(options)),
                )
                .await
            {
                tracing::warn!(blob = %prefix, error = %e, "an unused blob stays in etcd");
            }
        }
    }

    async fn insert(
        &self,
        id: RunId,
        lock: Option<String>,
        take_lock: bool,
        events: Vec<Event>,
    ) -> Result<Vec<Record>, JournalError> {
        self.patiently(WRITE, |ambiguous| {
            self.insert_once(id, lock.as_deref(), take_lock, &events, ambiguous)
        })
        .await
    }

    async fn insert_once(
        &self,
        id: RunId,
        lock: Option<&str>,
        take_lock: bool,
        events: &[Event],
        ambiguous: bool,
    ) -> Result<Vec<Record>, JournalError> {
        let ends = LockChange::of(events) == LockChange::Release;
        // A new run has no owner; a refused commit reads who has.
        let mut owner = None;
        for _ in 0..ATTEMPTS {
            let now = Utc::now();
            let mut summary = RunSummary::empty(id, now);
            let records = make_records(events, 1, now);
            let mut commit = Commit::default();
            commit.compares.push(Compare::create_revision(
                self.summary_key(id),
                CompareOp::Equal,
                0,
            ));
            if let Some(key) = lock {
                commit.compares.push(Compare::create_revision(
                    self.lock_key(key),
                    CompareOp::Equal,
                    0,
                ));
                if take_lock {
                    commit.put(self.lock_key(key), id.to_string().into_bytes());
                }
            }
            self.fence(id, ends, owner.as_deref(), &mut commit)?;
            self.add_records(id, &records, &mut summary, &mut commit)
                .await?;
            summary.lock = lock.map(str::to_owned);
            commit.put(self.last_key(id), summary.last_seq.to_string().into_bytes());
            commit.put(self.summary_key(id), encode(&summary)?);
            if self.commit(id, commit).await? {
                return Ok(records);
            }
            if self.get(&self.summary_key(id)).await?.0.is_some() {
                if ambiguous && let Some(stored) = self.landed(id, 0, events).await? {
                    return Ok(stored);
                }
                return Err(JournalError::RunExists(id));
            }
            if let Some(key) = lock
                && let Some(holder) = self.lock_value(key).await?
            {
                return Err(JournalError::LockHeld {
                    key: key.to_owned(),
                    holder,
                });
            }
            owner = self.ownership(id).await?;
        }
        Err(EtcdError::Contended(id).into())
    }

    async fn write(
        &self,
        id: RunId,
        expected: u64,
        events: Vec<Event>,
        lock: LockChange,
    ) -> Result<Vec<Record>, JournalError> {
        self.patiently(WRITE, |ambiguous| {
            self.write_once(id, expected, &events, lock, ambiguous)
        })
        .await
    }

    async fn write_once(
        &self,
        id: RunId,
        expected: u64,
        events: &[Event],
        lock: LockChange,
        ambiguous: bool,
    ) -> Result<Vec<Record>, JournalError> {
        // Most writes are the owner's (or, on a journal that has not joined, of a run nobody
        // owns): assume so, and read who owns the run only after a refused commit.
        let mut owner = self.likely_owner();
        for _ in 0..ATTEMPTS {
            let (mut summary, summary_revision, _) = self.summary_at(id).await?;
            if summary.last_seq != expected {
                if ambiguous && let Some(stored) = self.landed(id, expected, events).await? {
                    return Ok(stored);
                }
                return Err(JournalError::Conflict {
                    run: id,
                    expected,
                    found: summary.last_seq,
                });
            }
            let mut commit = Commit::default();
            commit.compares.push(Compare::value(
                self.last_key(id),
                CompareOp::Equal,
                expected.to_string(),
            ));
            commit.compares.push(Compare::mod_revision(
                self.summary_key(id),
                CompareOp::Equal,
                summary_revision,
            ));
            if let Some(key) = summary.lock.clone() {
                let full = self.lock_key(&key);
                let holder = self.lock_value(&key).await?;
                let ours = id.to_string();
                match (lock, holder) {
                    (LockChange::Release, Some(h)) if h == id => {
                        commit
                            .compares
                            .push(Compare::value(full.clone(), CompareOp::Equal, ours));
                        commit.ops.push(TxnOp::delete(full, None));
                    }
                    (LockChange::Retake, Some(h)) if h != id => {
                        return Err(JournalError::LockHeld { key, holder: h });
                    }
                    (LockChange::Retake, Some(_)) => {
                        commit
                            .compares
                            .push(Compare::value(full, CompareOp::Equal, ours));
                    }
                    (LockChange::Retake, None) => {
                        commit.compares.push(Compare::create_revision(
                            full.clone(),
                            CompareOp::Equal,
                            0,
                        ));
                        commit.put(full, ours.into_bytes());
                    }
                    _ => {}
                }
            }
            self.fence(
                id,
                lock == LockChange::Release,
                owner.as_deref(),
                &mut commit,
            )?;
            let records = make_records(events, expected + 1, Utc::now());
            self.add_records(id, &records, &mut summary, &mut commit)
                .await?;
            commit.put(self.last_key(id), summary.last_seq.to_string().into_bytes());
            commit.put(self.summary_key(id), encode(&summary)?);
            if self.commit(id, commit).await? {
                return Ok(records);
            }
            // Someone wrote the run (the next round reports the conflict), moved its lock or
            // its owner, or this executor's lease ended (the next round decides again).
            let (kv, _) = self.get(&self.last_key(id)).await?;
            if kv.is_none() {
                return Err(corrupt(
                    id,
                    expected,
                    "the run's `last` key is missing: its records cannot be appended to".into(),
                ));
            }
            owner = self.ownership(id).await?;
        }
        Err(EtcdError::Contended(id).into())
    }

    /// The records of `id` after `after`, verified; a full read also checks the hash chain.
    async fn read(&self, id: RunId, after: u64) -> Result<Vec<Record>, JournalError> {
        let (summary, _, revision) = self.summary_at(id).await?;
        let last_seq = summary.last_seq;
        let start = self.event_key(id, after.saturating_add(1)).into_bytes();
        let events_dir = format!("{}e/", self.run_dir(id));
        let kvs = self
            .range(start, prefix_end(&events_dir), revision, false)
            .await?;
        let mut chain = (after == 0).then(|| witness::chain_start(id));
        let mut records = Vec::with_capacity(kvs.len());
        let mut expected = after.saturating_add(1);
        for kv in &kvs {
            let key = String::from_utf8_lossy(kv.key());
            let key_seq = key
                .strip_prefix(&events_dir)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    corrupt(
                        id,
                        expected,
                        format!("malformed key {key} after record {}", expected - 1),
                    )
                })?;
            if key_seq > last_seq {
                break;
            }
            if key_seq != expected {
                return Err(corrupt(
                    id,
                    expected,
                    format!("record {expected} missing: the next record found is {key_seq}"),
                ));
            }
            let value = self.stored_value(id, key_seq, kv.value(), revision).await?;
            let json = checked(&value).map_err(|d| corrupt(id, key_seq, d))?;
            let record: Record = serde_json::from_slice(json)
                .map_err(|e| corrupt(id, key_seq, format!("undecodable record: {e}")))?;
            if record.seq != key_seq {
                return Err(corrupt(
                    id,
                    key_seq,
                    format!("key says {key_seq} but record says {}", record.seq),
                ));
            }
            if let Some(c) = chain.as_mut() {
                *c = witness::chain_next(c, json);
            }
            records.push(record);
            expected = key_seq + 1;
        }
        if expected - 1 < last_seq {
            return Err(corrupt(
                id,
                expected,
                format!(
                    "the log ends at record {} but the run's summary says {last_seq} (torn tail)",
                    expected - 1
                ),
            ));
        }
        if let (Some(c), Some(hex)) = (chain, summary.chain.as_deref())
            && witness::chain_from_hex(hex) != Some(c)
        {
            return Err(corrupt(
                id,
                last_seq,
                "the run's records do not match its summary's hash chain".into(),
            ));
        }
        Ok(records)
    }

    /// A record's `CRC32 + JSON`, from its key's value (and its blob, for a large one).
    async fn stored_value(
        &self,
        id: RunId,
        seq: u64,
        value: &[u8],
        revision: i64,
    ) -> Result<Vec<u8>, JournalError> {
        match value.split_first() {
            Some((&INLINE, rest)) => Ok(rest.to_vec()),
            Some((&BLOB, rest)) => {
                let reference: BlobRef = decode(rest)
                    .map_err(|d| corrupt(id, seq, format!("its blob reference is {d}")))?;
                let prefix = self.blob_prefix(id, &reference.blob);
                let mut kv = self.client.kv_client();
                let mut out = Vec::with_capacity(reference.len);
                for n in 0..reference.chunks {
                    let options = GetOptions::new().with_revision(revision);
                    let mut answer = self
                        .ask(
                            "read a large record",
                            kv.get(format!("{prefix}{n:06}"), Some(options)),
                        )
                        .await?;
                    let Some(piece) = answer.take_kvs().into_iter().next() else {
                        return Err(corrupt(
                            id,
                            seq,
                            format!("piece {n} of its {} is missing", reference.chunks),
                        ));
                    };
                    out.extend_from_slice(piece.value());
                }
                if out.len() != reference.len {
                    return Err(corrupt(
                        id,
                        seq,
                        format!("its pieces hold {} bytes, not {}", out.len(), reference.len),
                    ));
                }
                Ok(out)
            }
            _ => Err(corrupt(
                id,
                seq,
                "the stored value has an unknown form".into(),
            )),
        }
    }

    /// Every summary, oldest first, each decoded or with what is wrong with it.
    async fn summaries(&self) -> Result<BTreeMap<RunId, Result<RunSummary, String>>, JournalError> {
        let dir = self.summaries_dir();
        let kvs = self
            .range(dir.clone().into_bytes(), prefix_end(&dir), 0, false)
            .await?;
        let mut out = BTreeMap::new();
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key());
            let Some(id) = key.strip_prefix(&dir).and_then(|s| s.parse::<RunId>().ok()) else {
                tracing::warn!(key = %key, "ignoring a malformed summary key in the journal");
                continue;
            };
            out.insert(id, decode_summary(id, kv.value()));
        }
        Ok(out)
    }

    async fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), JournalError> {
        let stored = self.meta_key(key);
        // A put whose answer was lost is simply put again: the value is the same.
        self.patiently(WRITE, |_| {
            let mut kv = self.client.kv_client();
            let (stored, value) = (stored.clone(), value.clone());
            async move { self.ask("write", kv.put(stored, value, None)).await }
        })
        .await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn swap_meta(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, JournalError> {
        let stored = self.meta_key(key);
        // After a try whose answer was lost, finding `value` stored does not say that this
        // swap wrote it (another executor may have swapped in the same value — two executors
        // deciding one schedule's fire do): a receipt unique to this swap, written with it,
        // does. The retry compares the same `expected`, so at most one of the tries lands.
        let receipt = format!("{}/receipts/{}", self.prefix, RunId::new());
        let swapped = self
            .patiently(WRITE, |ambiguous| {
                self.swap_once(&stored, expected.as_deref(), &value, &receipt, ambiguous)
            })
            .await?;
        if swapped {
            self.commits.fetch_add(1, Ordering::Relaxed);
            let mut kv = self.client.kv_client();
            if let Err(e) = self.ask("delete a receipt", kv.delete(receipt, None)).await {
                tracing::warn!(error = %e, "a swap's receipt stays in etcd");
            }
        }
        Ok(swapped)
    }

    /// One try of a swap that writes `receipt` with it; after an `ambiguous` try, a refused
    /// comparison with the receipt in place means that earlier try swapped.
    pub(crate) async fn swap_once(
        &self,
        stored: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        receipt: &str,
        ambiguous: bool,
    ) -> Result<bool, JournalError> {
        let mut commit = Commit::default();
        commit.compares.push(match expected {
            Some(bytes) => Compare::value(stored, CompareOp::Equal, bytes),
            None => Compare::create_revision(stored, CompareOp::Equal, 0),
        });
        commit.put(stored.to_owned(), value.to_vec());
        commit.put(receipt.to_owned(), Vec::new());
        let (swapped, _) = self.txn(commit).await?;
        if !swapped && ambiguous {
            return Ok(self.get(receipt).await?.0.is_some());
        }
        Ok(swapped)
    }

    async fn resolve(&self, prefix: &str) -> Result<RunId, JournalError> {
        let start = format!("{}{}", self.summaries_dir(), prefix.to_ascii_uppercase());
        let kvs = self
            .range(start.clone().into_bytes(), prefix_end(&start), 0, true)
            .await?;
        let dir = self.summaries_dir();
        let found: Vec<RunId> = kvs
            .iter()
            .filter_map(|kv| {
                String::from_utf8_lossy(kv.key())
                    .strip_prefix(&dir)
                    .and_then(|s| s.parse().ok())
            })
            .collect();
        JournalError::one_run(prefix, found)
    }
}

/// Whether `e` is etcd refusing a commit because a lease it names does not exist.
fn refused_lease(e: &JournalError) -> bool {
    let JournalError::Storage(source) = e else {
        return false;
    };
    matches!(
        source.downcast_ref::<EtcdError>(),
        Some(EtcdError::Request { source, .. }) if lease_not_found(source)
    )
}

fn decode_summary(id: RunId, value: &[u8]) -> Result<RunSummary, String> {
    let summary: RunSummary = decode(value)?;
    if summary.id == id {
        Ok(summary)
    } else {
        Err(format!(
            "summary is stored under {id} but names run {}",
            summary.id
        ))
    }
}

fn summary_corrupt(run: RunId, detail: &str) -> JournalError {
    JournalError::Corrupt {
        run,
        seq: 0,
        detail: format!("the run's summary is unreadable: {detail}"),
    }
}

fn parse_id(key: &str, value: &[u8]) -> Result<RunId, JournalError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            EtcdError::Malformed {
                key: key.to_owned(),
                detail: format!("{} bytes that are not a run id", value.len()),
            }
            .into()
        })
}

impl Journal for EtcdJournal {
    fn insert(
        &self,
        id: RunId,
        lock: Option<&str>,
        take_lock: bool,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError> {
        let lock = lock.map(str::to_owned);
        let events = events.to_vec();
        self.call(move |inner| async move { inner.insert(id, lock, take_lock, events).await })
    }

    fn write(
        &self,
        id: RunId,
        expected: u64,
        events: &[Event],
        lock: LockChange,
    ) -> Result<Vec<Record>, JournalError> {
        let events = events.to_vec();
        self.call(move |inner| async move { inner.write(id, expected, events, lock).await })
    }

    fn append_async(&self, id: RunId, expected: u64, events: Vec<Event>) -> Pending {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            let result = if events.is_empty() {
                inner.summary_at(id).await.map(|_| Vec::new())
            } else {
                let lock = LockChange::of(&events);
                inner.write(id, expected, events, lock).await
            };
            let _ = tx.send(result);
        });
        Box::pin(async move {
            rx.await
                .map_err(|_| EtcdError::Runtime("stopped during an append".into()))?
        })
    }

    fn read(&self, id: RunId) -> Result<Vec<Record>, JournalError> {
        self.patient_read(move |inner| async move { inner.read(id, 0).await })
    }

    fn read_after(&self, id: RunId, after: u64) -> Result<Vec<Record>, JournalError> {
        self.patient_read(move |inner| async move { inner.read(id, after).await })
    }

    fn runs(&self) -> Result<Vec<RunSummary>, JournalError> {
        let all = self.patient_read(|inner| async move { inner.summaries().await })?;
        all.into_iter()
            .map(|(id, s)| s.map_err(|d| summary_corrupt(id, &d)))
            .collect()
    }

    fn readable_runs(&self) -> Vec<RunSummary> {
        self.patient_read(|inner| async move { inner.summaries().await })
            .map(|all| all.into_values().filter_map(Result::ok).collect())
            .unwrap_or_default()
    }

    fn problems(&self) -> Vec<JournalError> {
        match self.patient_read(|inner| async move { inner.summaries().await }) {
            Ok(all) => all
                .into_iter()
                .filter_map(|(id, s)| s.err().map(|d| summary_corrupt(id, &d)))
                .collect(),
            Err(e) => vec![e],
        }
    }

    fn summary(&self, id: RunId) -> Result<RunSummary, JournalError> {
        self.patient_read(move |inner| async move { inner.summary_at(id).await.map(|(s, _, _)| s) })
    }

    fn resolve(&self, prefix: &str) -> Result<RunId, JournalError> {
        let prefix = prefix.to_owned();
        self.patient_read(move |inner| {
            let prefix = prefix.clone();
            async move { inner.resolve(&prefix).await }
        })
    }

    fn lock_holder(&self, key: &str) -> Result<Option<RunId>, JournalError> {
        let key = key.to_owned();
        self.patient_read(move |inner| {
            let key = key.clone();
            async move { inner.lock_value(&key).await }
        })
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let key = key.to_owned();
        self.patient_read(move |inner| {
            let key = inner.meta_key(&key);
            async move {
                let (kv, _) = inner.get(&key).await?;
                Ok(kv.map(|kv| kv.value().to_vec()))
            }
        })
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), JournalError> {
        let key = key.to_owned();
        let value = value.to_vec();
        self.call(move |inner| async move { inner.put_meta(&key, value).await })
    }

    fn swap_meta(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, JournalError> {
        let key = key.to_owned();
        let expected = expected.map(<[u8]>::to_vec);
        let value = value.to_vec();
        self.call(move |inner| async move { inner.swap_meta(&key, expected, value).await })
    }

    fn stats(&self) -> JournalStats {
        JournalStats {
            commits: self.inner.commits.load(Ordering::Relaxed),
            // etcd syncs its own write-ahead log; this process issues none.
            syncs: 0,
        }
    }
}

#[cfg(test)]
mod tests;

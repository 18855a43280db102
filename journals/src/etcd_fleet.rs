//! The etcd side of [`Fleet`]: several executors sharing one [`EtcdJournal`], each under an
//! etcd lease of its own ([`EtcdJournal::join`]).
//!
//! Layout, under the journal's prefix `P` (beside the journal's keys, see `etcd_journal`):
//!
//! - `P/members/<me>` → when the executor joined (RFC 3339), attached to its lease: it exists
//!   exactly as long as the lease does (etcd deletes a lease's keys in the same step that ends
//!   the lease).
//! - `P/owners/<run>` → the owner's identity, attached to the owner's lease.
//! - `P/adopt/<run>` → the identity of the executor that marked the run; no lease: the mark
//!   must outlive its owner, that is its point.
//! - `P/inbox/<executor>/<request>` → JSON `{"from": <asker>, "body": <request>}`, attached to
//!   the asker's lease (an asker that dies takes its questions with it).
//! - `P/answers/<request>` → the answer's JSON, attached to a lease of [`ANSWER_TTL`] of its
//!   own (an asker that gave up does not leave it behind).
//!
//! Identity: `<name>/<lease id in 16 hexadecimal digits>`; a name holds no `/`, space or
//! control character, so an inbox prefix never covers another executor's.
//!
//! Fencing, inside the journal's write transactions (`Inner::fence`): a joined journal's
//! write compares that `P/members/<me>` exists — its lease is alive when the write commits —
//! and that the run's owner key holds `me`, or does not exist and is then put with the lease
//! in the same transaction (a terminal `StateChanged` deletes it instead). A journal that has
//! not joined compares that the run has no owner key and puts none. An owner key naming
//! another executor is [`JournalError::Owned`]; a missing member key (or etcd refusing the
//! lease) is [`JournalError::Fenced`], and the standing becomes `Lost`. A refused comparison
//! writes nothing, so a write by an executor that lost its lease — frozen past its TTL and
//! continued, say — changes nothing, whoever owns the run meanwhile.
//!
//! Standing: a keep-alive every third of the TTL on a stream kept open (opened again after a
//! failure, with a growing pause). `Suspended` once none succeeded for a whole TTL; `Held`
//! again when one does (etcd renews every lease when a new leader is elected, so a quorum loss
//! alone leaves the lease in place); `Lost` when etcd says the lease does not exist — final: the
//! keep-alive and the watches end, and every write is fenced. A single etcd member that is
//! frozen past the TTL expires the lease itself when it goes on (its clock ran meanwhile), so
//! there the executor goes from `Suspended` to `Lost`.
//!
//! Leaving: [`Fleet::leave`] revokes the lease, so the executor's runs are free at once.
//! Dropping the journal without leaving is a crash as far as the others can tell: the runs
//! are free once the lease expires. Joining again leaves the previous membership first.
//!
//! Watches ([`crate::etcd_watch`]) survive stream failures. [`Fleet::orphaned`] follows
//! deletions under `P/owners/` from the revision of the join on. An inbox reads the requests
//! already there, then follows what comes, each request handed once; the answer and the
//! request's deletion are one transaction, done only if the request is still there (the asker
//! withdraws it when it gives up). An ask whose put got no answer tries again within its time
//! only while neither the request nor its answer exists, so no request is handed twice.
//! A dropped [`Incoming::reply`] answers `{"error": "dropped"}`.
//!
//! Threads: everything runs on the journal's own runtime; the synchronous methods block the
//! calling thread as the journal's do (any thread but that runtime's).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::etcd_journal::{
    Commit, EtcdError, EtcdJournal, Inner, READ, backoff, lease_not_found, prefix_end, transient,
    wait,
};
use crate::etcd_watch::{Change, follow};
use crate::fleet::{Answer, Fleet, Incoming, Standing};
use crate::{JournalError, RunId};

/// How long an answer stays in etcd for its asker to read.
pub const ANSWER_TTL: Duration = Duration::from_secs(60);
/// How many requests wait in an inbox for the runner to take them.
const INBOX_DEPTH: usize = 64;
/// How many times an answer is tried while etcd fails transiently.
const ANSWER_TRIES: u32 = 5;

/// What can go wrong between executors (carried as [`JournalError::Storage`]).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A name an executor cannot join with.
    #[error(
        "executor name `{0}` is not usable: give a non-empty name without `/`, spaces or control characters"
    )]
    BadName(String),
    /// The addressee of a request is not in the fleet.
    #[error("executor {0} is not in the fleet (it never joined, or its lease ended)")]
    NotMember(String),
    /// The addressee did not answer in time.
    #[error("executor {to} did not answer within {within:?}; the request was withdrawn")]
    Unanswered {
        /// The addressee.
        to: String,
        /// How long the asker waited.
        within: Duration,
    },
    /// This executor left the fleet or lost its lease.
    #[error("executor {0} is no longer in the fleet (it left, or its lease ended)")]
    Left(String),
    /// An answer that is not JSON.
    #[error("the answer to request {request} is not JSON")]
    BadAnswer {
        /// The request.
        request: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl From<FleetError> for JournalError {
    fn from(e: FleetError) -> Self {
        JournalError::Storage(Box::new(e))
    }
}

/// A request as it travels through an inbox.
#[derive(Serialize, Deserialize)]
struct Request {
    from: String,
    body: Value,
}

/// This process's membership: its lease and what follows from it.
pub(crate) struct Member {
    me: String,
    lease: i64,
    ttl: Duration,
    standing: watch::Sender<Standing>,
    orphaned: broadcast::Sender<RunId>,
    inbox_taken: AtomicBool,
}

impl Member {
    /// Moves to `to`, except out of `Lost`, which is final.
    fn set(&self, to: Standing) {
        self.standing.send_if_modified(|now| {
            if *now == Standing::Lost || *now == to {
                return false;
            }
            *now = to;
            true
        });
    }

    fn is_lost(&self) -> bool {
        *self.standing.borrow() == Standing::Lost
    }
}

/// Resolves once `standing` is `Lost` (or its sender is gone).
async fn until_lost(standing: &mut watch::Receiver<Standing>) {
    let _ = standing.wait_for(|s| *s == Standing::Lost).await;
}

/// One executor of the fleet sharing an etcd journal: what [`EtcdJournal::join`] returns.
#[derive(Clone)]
pub struct EtcdFleet {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    member: Arc<Member>,
}

impl std::fmt::Debug for EtcdFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdFleet")
            .field("me", &self.member.me)
            .field("standing", &*self.member.standing.borrow())
            .finish_non_exhaustive()
    }
}

fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

impl EtcdJournal {
    /// Joins the executors sharing this journal as `name`, under a lease of `ttl` (whole
    /// seconds, rounded up; etcd may raise it to its minimum, see [`Fleet::ttl`]). From then on
    /// every write of this journal is fenced by that lease (see [`crate::fleet`]). Joining again
    /// leaves the previous membership first (its runs are free at once).
    pub fn join(&self, name: &str, ttl: Duration) -> Result<Arc<EtcdFleet>, JournalError> {
        if !usable_name(name) {
            return Err(FleetError::BadName(name.to_owned()).into());
        }
        let seconds = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let name = name.to_owned();
        let handle = self.handle().clone();
        let (me, lease, granted, revision) = wait(&handle, {
            let inner = self.inner.clone();
            async move {
                let mut leases = inner.client.lease_client();
                let grant = inner
                    .ask("grant a lease", leases.grant(seconds, None))
                    .await?;
                let lease = grant.id();
                let me = format!("{name}/{lease:016x}");
                let mut kv = inner.client.kv_client();
                let options = PutOptions::new().with_lease(lease);
                let joined = chrono::Utc::now().to_rfc3339();
                let put = inner
                    .ask("join", kv.put(inner.member_key(&me), joined, Some(options)))
                    .await?;
                let revision = put
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision);
                Ok((me, lease, grant.ttl(), revision))
            }
        })?;
        let member = Arc::new(Member {
            me,
            lease,
            ttl: Duration::from_secs(u64::try_from(granted).unwrap_or(1).max(1)),
            standing: watch::Sender::new(Standing::Held),
            orphaned: broadcast::channel(256).0,
            inbox_taken: AtomicBool::new(false),
        });
        let previous = self
            .inner
            .member
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(member.clone());
        let fleet = EtcdFleet {
            inner: self.inner.clone(),
            handle: handle.clone(),
            member,
        };
        if let Some(previous) = previous {
            EtcdFleet {
                member: previous,
                ..fleet.clone()
            }
            .leave();
        }
        handle.spawn(keep_alive(fleet.inner.clone(), fleet.member.clone()));
        handle.spawn(watch_orphans(
            fleet.inner.clone(),
            fleet.member.clone(),
            revision + 1,
        ));
        tracing::info!(me = %fleet.member.me, ttl = ?fleet.member.ttl, "joined the executors sharing the etcd journal");
        Ok(Arc::new(fleet))
    }
}

impl Inner {
    pub(crate) fn member(&self) -> Option<Arc<Member>> {
        self.member
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn member_key(&self, me: &str) -> String {
        format!("{}{me}", self.members_dir())
    }
    fn members_dir(&self) -> String {
        format!("{}/members/", self.prefix)
    }
    fn owner_key(&self, id: RunId) -> String {
        format!("{}{id}", self.owners_dir())
    }
    fn owners_dir(&self) -> String {
        format!("{}/owners/", self.prefix)
    }
    fn adopt_key(&self, id: RunId) -> String {
        format!("{}{id}", self.adopt_dir())
    }
    fn adopt_dir(&self) -> String {
        format!("{}/adopt/", self.prefix)
    }
    fn inbox_dir(&self, executor: &str) -> String {
        format!("{}/inbox/{executor}/", self.prefix)
    }
    fn answer_key(&self, request: &str) -> String {
        format!("{}/answers/{request}", self.prefix)
    }

    /// The error for a write of `run` by an executor whose lease is gone; its standing is
    /// `Lost` from now on.
    pub(crate) fn fenced(&self, run: RunId, why: &str) -> JournalError {
        let detail = match self.member() {
            Some(member) => {
                member.set(Standing::Lost);
                format!("the lease of {} is gone: {why}", member.me)
            }
            None => why.to_owned(),
        };
        JournalError::Fenced { run, detail }
    }

    /// Who a write of run `id` should expect to own it before anything was read: this
    /// executor once joined (it writes the runs it owns), nobody otherwise.
    pub(crate) fn likely_owner(&self) -> Option<String> {
        self.member().map(|m| m.me.clone())
    }

    /// Adds to `commit` what ownership asks of a write of run `id` (see the module doc),
    /// `owner` being who the writer believes owns the run (the comparisons refuse the commit
    /// if that is wrong; [`Inner::ownership`] then says who does); `ends` when the write ends
    /// the run. Fails at once, nothing written, when the run is another executor's or this
    /// executor's lease is known to be gone.
    pub(crate) fn fence(
        &self,
        id: RunId,
        ends: bool,
        owner: Option<&str>,
        commit: &mut Commit,
    ) -> Result<(), JournalError> {
        let owner_key = self.owner_key(id);
        let Some(m) = self.member() else {
            if let Some(owner) = owner {
                return Err(JournalError::Owned {
                    run: id,
                    owner: owner.to_owned(),
                });
            }
            commit
                .compares
                .push(Compare::create_revision(owner_key, CompareOp::Equal, 0));
            return Ok(());
        };
        if m.is_lost() {
            return Err(self.fenced(id, "etcd said so earlier"));
        }
        commit.compares.push(Compare::create_revision(
            self.member_key(&m.me),
            CompareOp::Greater,
            0,
        ));
        match owner {
            Some(owner) if owner == m.me => {
                commit.compares.push(Compare::value(
                    owner_key.clone(),
                    CompareOp::Equal,
                    m.me.clone(),
                ));
                if ends {
                    commit.ops.push(TxnOp::delete(owner_key, None));
                }
            }
            Some(owner) => {
                return Err(JournalError::Owned {
                    run: id,
                    owner: owner.to_owned(),
                });
            }
            None => {
                commit.compares.push(Compare::create_revision(
                    owner_key.clone(),
                    CompareOp::Equal,
                    0,
                ));
                if !ends {
                    commit.put_leased(owner_key, m.me.clone().into_bytes(), m.lease);
                }
            }
        }
        Ok(())
    }

    /// Who owns run `id` now, read after a refused commit; [`JournalError::Fenced`] when this
    /// executor's lease is gone.
    pub(crate) async fn ownership(&self, id: RunId) -> Result<Option<String>, JournalError> {
        let member = self.member();
        let mut reads = vec![TxnOp::get(self.owner_key(id), None)];
        if let Some(m) = &member {
            reads.push(TxnOp::get(self.member_key(&m.me), None));
        }
        let mut kv = self.client.kv_client();
        let answer = self
            .ask("read the run's owner", kv.txn(Txn::new().and_then(reads)))
            .await?;
        let found = answer.op_responses();
        if member.is_some() && first_value(found.get(1)).is_none() {
            return Err(self.fenced(id, "it expired or was revoked"));
        }
        Ok(first_value(found.first()).map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every key under `dir` with its value.
    async fn entries(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        let kvs = self
            .range(dir.as_bytes().to_vec(), prefix_end(dir), 0, false)
            .await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                Some((key.strip_prefix(dir)?.to_owned(), kv.value().to_vec()))
            })
            .collect())
    }
}

/// The value of the first key a read inside a transaction found.
fn first_value(response: Option<&TxnOpResponse>) -> Option<Vec<u8>> {
    match response {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    }
}

/// Keeps the lease alive and says how that goes (see the module doc), until it is lost.
async fn keep_alive(inner: Arc<Inner>, member: Arc<Member>) {
    let period = (member.ttl / 3).max(Duration::from_millis(200));
    let mut leases = inner.client.lease_client();
    let mut standing = member.standing.subscribe();
    let mut last_ok = Instant::now();
    let mut tries = 0;
    loop {
        if member.is_lost() {
            return;
        }
        match tokio::time::timeout(period, leases.keep_alive(member.lease)).await {
            Ok(Ok((mut keeper, mut stream))) => {
                last_ok = Instant::now();
                tries = 0;
                member.set(Standing::Held);
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(period) => {}
                        () = until_lost(&mut standing) => return,
                    }
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(period, stream.message()).await {
                        Ok(Ok(Some(renewed))) if renewed.ttl() > 0 => {
                            last_ok = Instant::now();
                            member.set(Standing::Held);
                        }
                        Ok(Ok(Some(_))) => {
                            tracing::warn!(me = %member.me, "etcd says this executor's lease is gone");
                            member.set(Standing::Lost);
                            return;
                        }
                        Ok(Err(e)) if lease_not_found(&e) => {
                            member.set(Standing::Lost);
                            return;
                        }
                        _ => break,
                    }
                    if last_ok.elapsed() >= member.ttl {
                        member.set(Standing::Suspended);
                    }
                }
            }
            Ok(Err(e)) if lease_not_found(&e) => {
                tracing::warn!(me = %member.me, "etcd says this executor's lease is gone");
                member.set(Standing::Lost);
                return;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "a lease keep-alive failed"),
            Err(_) => tracing::debug!("a lease keep-alive went unanswered"),
        }
        if last_ok.elapsed() >= member.ttl {
            if *member.standing.borrow() == Standing::Held {
                tracing::warn!(me = %member.me, "no lease keep-alive succeeded for a whole TTL: suspended");
            }
            member.set(Standing::Suspended);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff(tries).min(period)) => {}
            () = until_lost(&mut standing) => return,
        }
        tries += 1;
    }
}

/// Wakes [`Fleet::orphaned`] receivers with every run whose owner key goes, until the lease
/// is lost.
async fn watch_orphans(inner: Arc<Inner>, member: Arc<Member>, from: i64) {
    let dir = inner.owners_dir();
    let mut changes = follow(inner.clone(), dir.clone(), true, from);
    let mut standing = member.standing.subscribe();
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            () = until_lost(&mut standing) => return,
        };
        match change {
            Some(Change::Delete { key }) => {
                if let Some(id) = key.strip_prefix(&dir).and_then(|s| s.parse().ok()) {
                    // No receiver is fine: nobody is claiming.
                    let _ = member.orphaned.send(id);
                }
            }
            // Missed deletions: claimers also look on a timer.
            Some(Change::Put { .. } | Change::Compacted) => {}
            None => return,
        }
    }
}

/// Hands the requests in this executor's inbox to `tx`, each once, until the receiver is
/// dropped or the lease is lost.
async fn serve_inbox(inner: Arc<Inner>, member: Arc<Member>, tx: mpsc::Sender<Incoming>) {
    let dir = inner.inbox_dir(&member.me);
    let mut standing = member.standing.subscribe();
    let mut handed = HashSet::new();
    let mut tries = 0;
    loop {
        let mut kv = inner.client.kv_client();
        let options = GetOptions::new().with_prefix();
        let listed = inner
            .ask("read the inbox", kv.get(dir.clone(), Some(options)))
            .await;
        let mut listing = match listed {
            Ok(listing) => listing,
            Err(e) => {
                tracing::debug!(error = %e, "failed to read the inbox");
                tokio::select! {
                    () = tokio::time::sleep(backoff(tries)) => {}
                    () = until_lost(&mut standing) => return,
                    () = tx.closed() => return,
                }
                tries += 1;
                continue;
            }
        };
        tries = 0;
        let revision = listing
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        for kv in listing.take_kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if !hand(&inner, &dir, &mut handed, &tx, &key, kv.value()).await {
                return;
            }
        }
        let mut changes = follow(inner.clone(), dir.clone(), true, revision + 1);
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                () = until_lost(&mut standing) => return,
                () = tx.closed() => return,
            };
            match change {
                Some(Change::Put { key, value }) => {
                    if !hand(&inner, &dir, &mut handed, &tx, &key, &value).await {
                        return;
                    }
                }
                Some(Change::Delete { key }) => {
                    if let Some(request) = key.strip_prefix(&dir) {
                        handed.remove(request);
                    }
                }
                Some(Change::Compacted) => break,
                None => return,
            }
        }
    }
}

/// Hands one request (`key` under `dir`) to the runner unless it was handed already; false
/// when the runner's receiver is gone.
async fn hand(
    inner: &Arc<Inner>,
    dir: &str,
    handed: &mut HashSet<String>,
    tx: &mpsc::Sender<Incoming>,
    key: &str,
    value: &[u8],
) -> bool {
    let Some(request) = key.strip_prefix(dir).filter(|r| !r.contains('/')) else {
        return true;
    };
    if !handed.insert(request.to_owned()) {
        return true;
    }
    let (reply, answer) = oneshot::channel();
    match serde_json::from_slice::<Request>(value) {
        Ok(Request { from, body }) => {
            if tx.send(Incoming { from, body, reply }).await.is_err() {
                return false;
            }
        }
        Err(e) => {
            tracing::warn!(request, error = %e, "a request in the inbox is not what an executor writes");
            let _ = reply.send(serde_json::json!({ "error": format!("malformed request: {e}") }));
        }
    }
    tokio::spawn(send_answer(
        inner.clone(),
        request.to_owned(),
        key.to_owned(),
        answer,
    ));
    true
}

/// Writes the runner's answer to `request` (or says it was dropped) and deletes the request,
/// in one transaction, if the asker has not withdrawn it meanwhile.
async fn send_answer(
    inner: Arc<Inner>,
    request: String,
    key: String,
    answer: oneshot::Receiver<Value>,
) {
    let value = answer
        .await
        .unwrap_or_else(|_| serde_json::json!({ "error": "dropped" }));
    let bytes = value.to_string().into_bytes();
    for tries in 0..ANSWER_TRIES {
        match put_answer(&inner, &request, &key, bytes.clone()).await {
            Ok(()) => return,
            Err(e) if transient(&e) => {
                tracing::debug!(request, error = %e, "an answer did not reach etcd; trying again");
                tokio::time::sleep(backoff(tries)).await;
            }
            Err(e) => {
                tracing::warn!(request, error = %e, "failed to answer a request");
                return;
            }
        }
    }
    tracing::warn!(request, "gave up answering a request: etcd kept failing");
}

async fn put_answer(
    inner: &Inner,
    request: &str,
    key: &str,
    value: Vec<u8>,
) -> Result<(), JournalError> {
    let mut leases = inner.client.lease_client();
    let lease = inner
        .ask(
            "grant an answer's lease",
            leases.grant(ANSWER_TTL.as_secs() as i64, None),
        )
        .await?
        .id();
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Greater, 0)])
        .and_then([
            TxnOp::put(
                inner.answer_key(request),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::delete(key, None),
        ]);
    let mut kv = inner.client.kv_client();
    let answered = inner.ask("answer a request", kv.txn(txn)).await?;
    if !answered.succeeded() {
        tracing::debug!(request, "the asker withdrew its request before the answer");
        let _ = inner
            .ask("drop an answer's lease", leases.revoke(lease))
            .await;
    }
    Ok(())
}

/// Sends `body` to `to` and waits for the answer until `deadline`.
async fn ask(
    inner: Arc<Inner>,
    member: Arc<Member>,
    to: String,
    body: Value,
    within: Duration,
) -> Result<Value, JournalError> {
    let deadline = tokio::time::Instant::now() + within;
    if member.is_lost() {
        return Err(FleetError::Left(member.me.clone()).into());
    }
    let request = RunId::new().to_string();
    let key = format!("{}{request}", inner.inbox_dir(&to));
    let envelope = serde_json::to_vec(&Request {
        from: member.me.clone(),
        body,
    })
    .map_err(|e| JournalError::Storage(Box::new(e)))?;
    let answer = inner.answer_key(&request);
    let mut kv = inner.client.kv_client();
    // A try whose answer was lost may have landed — and been answered, the request deleted:
    // a later try puts the request only if neither it nor its answer exists, so the
    // addressee never gets it twice.
    let mut tries = 0;
    let sent = loop {
        let txn = Txn::new()
            .when([
                Compare::create_revision(inner.member_key(&to), CompareOp::Greater, 0),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(answer.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(
                key.clone(),
                envelope.clone(),
                Some(PutOptions::new().with_lease(member.lease)),
            )])
            .or_else([
                TxnOp::get(answer.clone(), None),
                TxnOp::get(inner.member_key(&to), None),
            ]);
        match tokio::time::timeout_at(deadline, inner.ask("send a request", kv.txn(txn))).await {
            Ok(Ok(sent)) => break sent,
            Ok(Err(e)) if refused_lease(&e) => {
                member.set(Standing::Lost);
                return Err(FleetError::Left(member.me.clone()).into());
            }
            Ok(Err(e)) if transient(&e) => {
                tracing::debug!(error = %e, "a request did not reach etcd; trying again");
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + backoff(tries)),
                )
                .await;
                tries += 1;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(FleetError::Unanswered { to, within }.into()),
        }
    };
    if !sent.succeeded() {
        let found = sent.op_responses();
        if let Some(value) = first_value(found.first()) {
            return decode_answer(&request, &value);
        }
        if first_value(found.get(1)).is_none() {
            return Err(FleetError::NotMember(to).into());
        }
        // Our earlier try's request is there, unanswered yet: wait for its answer.
    }
    let revision = sent
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    match tokio::time::timeout_at(deadline, await_answer(&inner, &answer, revision + 1)).await {
        Ok(Ok(value)) => {
            if let Err(e) = inner
                .ask("delete a read answer", kv.delete(answer, None))
                .await
            {
                tracing::debug!(error = %e, "a read answer stays until its lease ends");
            }
            decode_answer(&request, &value)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            if let Err(e) = inner.ask("withdraw a request", kv.delete(key, None)).await {
                tracing::debug!(error = %e, "an unanswered request stays until the asker's lease ends");
            }
            Err(FleetError::Unanswered { to, within }.into())
        }
    }
}

fn decode_answer(request: &str, value: &[u8]) -> Result<Value, JournalError> {
    serde_json::from_slice(value).map_err(|source| {
        FleetError::BadAnswer {
            request: request.to_owned(),
            source,
        }
        .into()
    })
}

/// The value written at `key` from revision `from` on (or already there when the history
/// was compacted).
async fn await_answer(inner: &Arc<Inner>, key: &str, from: i64) -> Result<Vec<u8>, JournalError> {
    let mut changes = follow(inner.clone(), key.to_owned(), false, from);
    loop {
        match changes.recv().await {
            Some(Change::Put { value, .. }) => return Ok(value),
            Some(Change::Compacted) => {
                if let (Some(kv), _) = inner.get(key).await? {
                    return Ok(kv.value().to_vec());
                }
            }
            Some(Change::Delete { .. }) => {}
            None => {
                return Err(
                    EtcdError::Runtime("stopped while waiting for an answer".into()).into(),
                );
            }
        }
    }
}

/// Whether `e` is etcd refusing a lease that does not exist.
fn refused_lease(e: &JournalError) -> bool {
    let JournalError::Storage(source) = e else {
        return false;
    };
    matches!(
        source.downcast_ref::<EtcdError>(),
        Some(EtcdError::Request { source, .. }) if lease_not_found(source)
    )
}

impl EtcdFleet {
    /// Runs `f` on the journal's runtime and waits for it.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>, Arc<Member>) -> Fut,
        Fut: Future<Output = Result<T, JournalError>> + Send + 'static,
    {
        wait(&self.handle, f(self.inner.clone(), self.member.clone()))
    }

    /// Reads through `f`, tried again while etcd fails transiently, for the journal's patience
    /// (as its own reads are): an executor's API answering who owns a run waits out an election
    /// or a member coming back instead of failing.
    fn read<T, F, Fut>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: Fn(Arc<Inner>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, JournalError>> + Send + 'static,
    {
        self.call(move |inner, _| async move { inner.patiently(READ, |_| f(inner.clone())).await })
    }

    /// The identities of the executors whose lease is alive.
    pub fn members(&self) -> Result<Vec<String>, JournalError> {
        self.read(|inner| async move {
            let dir = inner.members_dir();
            Ok(inner
                .entries(&dir)
                .await?
                .into_iter()
                .map(|(me, _)| me)
                .collect())
        })
    }
}

impl Fleet for EtcdFleet {
    fn me(&self) -> String {
        self.member.me.clone()
    }

    fn ttl(&self) -> Duration {
        self.member.ttl
    }

    fn standing(&self) -> watch::Receiver<Standing> {
        self.member.standing.subscribe()
    }

    fn claim(&self, id: RunId) -> Result<bool, JournalError> {
        self.call(move |inner, member| async move {
            if member.is_lost() {
                return Err(inner.fenced(id, "etcd said so earlier"));
            }
            let (owner_key, member_key) = (inner.owner_key(id), inner.member_key(&member.me));
            let summary_key = inner.summary_key(id);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(summary_key.clone(), CompareOp::Greater, 0),
                    Compare::create_revision(member_key.clone(), CompareOp::Greater, 0),
                    Compare::create_revision(owner_key.clone(), CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::put(
                    owner_key.clone(),
                    member.me.clone(),
                    Some(PutOptions::new().with_lease(member.lease)),
                )])
                .or_else([
                    TxnOp::get(owner_key, None),
                    TxnOp::get(member_key, None),
                    TxnOp::get(summary_key, Some(GetOptions::new().with_keys_only())),
                ]);
            let mut kv = inner.client.kv_client();
            let answer = match inner.ask("claim a run", kv.txn(txn)).await {
                Ok(answer) => answer,
                Err(e) if refused_lease(&e) => {
                    return Err(inner.fenced(id, "etcd refused it"));
                }
                Err(e) => return Err(e),
            };
            if answer.succeeded() {
                return Ok(true);
            }
            let found = answer.op_responses();
            if !matches!(found.get(2), Some(TxnOpResponse::Get(g)) if !g.kvs().is_empty()) {
                return Err(JournalError::NoSuchRun(id.to_string()));
            }
            if first_value(found.get(1)).is_none() {
                return Err(inner.fenced(id, "it expired or was revoked"));
            }
            // Taken by someone (or, if gone again meanwhile, by someone who let go: the next
            // claim decides).
            Ok(first_value(found.first()).is_some_and(|owner| owner == member.me.as_bytes()))
        })
    }

    fn owner(&self, id: RunId) -> Result<Option<String>, JournalError> {
        self.read(move |inner| async move {
            let (kv, _) = inner.get(&inner.owner_key(id)).await?;
            Ok(kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
        })
    }

    fn owners(&self) -> Result<Vec<(RunId, String)>, JournalError> {
        self.read(|inner| async move {
            let dir = inner.owners_dir();
            Ok(inner
                .entries(&dir)
                .await?
                .into_iter()
                .filter_map(|(run, owner)| {
                    Some((
                        run.parse().ok()?,
                        String::from_utf8_lossy(&owner).into_owned(),
                    ))
                })
                .collect())
        })
    }

    fn release(&self, id: RunId) -> Result<(), JournalError> {
        self.call(move |inner, member| async move {
            let owner_key = inner.owner_key(id);
            let txn = Txn::new()
                .when([Compare::value(
                    owner_key.clone(),
                    CompareOp::Equal,
                    member.me.clone(),
                )])
                .and_then([TxnOp::delete(owner_key, None)]);
            let mut kv = inner.client.kv_client();
            inner.ask("release a run", kv.txn(txn)).await?;
            Ok(())
        })
    }

    fn adopt(&self, id: RunId, yes: bool) -> Result<(), JournalError> {
        self.call(move |inner, member| async move {
            let mut kv = inner.client.kv_client();
            let key = inner.adopt_key(id);
            if yes {
                inner
                    .ask("mark a run adoptable", kv.put(key, member.me.clone(), None))
                    .await?;
            } else {
                inner
                    .ask("unmark an adoptable run", kv.delete(key, None))
                    .await?;
            }
            Ok(())
        })
    }

    fn adoptable(&self) -> Result<Vec<RunId>, JournalError> {
        self.call(|inner, _| async move {
            let dir = inner.adopt_dir();
            Ok(inner
                .entries(&dir)
                .await?
                .into_iter()
                .filter_map(|(run, _)| run.parse().ok())
                .collect())
        })
    }

    fn orphaned(&self) -> broadcast::Receiver<RunId> {
        self.member.orphaned.subscribe()
    }

    fn ask(&self, to: &str, body: Value, within: Duration) -> Answer {
        let (tx, rx) = oneshot::channel();
        let (inner, member, to) = (self.inner.clone(), self.member.clone(), to.to_owned());
        self.handle.spawn(async move {
            let _ = tx.send(ask(inner, member, to, body, within).await);
        });
        Box::pin(async move {
            rx.await
                .map_err(|_| EtcdError::Runtime("stopped during a request".into()))?
        })
    }

    fn inbox(&self) -> Option<mpsc::Receiver<Incoming>> {
        if self.member.inbox_taken.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (tx, rx) = mpsc::channel(INBOX_DEPTH);
        self.handle
            .spawn(serve_inbox(self.inner.clone(), self.member.clone(), tx));
        Some(rx)
    }

    fn leave(&self) {
        let member = self.member.clone();
        member.set(Standing::Lost);
        let revoked = self.call(move |inner, _| async move {
            let mut leases = inner.client.lease_client();
            inner
                .ask("revoke the lease", leases.revoke(member.lease))
                .await
        });
        match revoked {
            Ok(_) => {
                tracing::info!(me = %self.member.me, "left the executors sharing the etcd journal");
            }
            Err(e) => tracing::warn!(
                me = %self.member.me,
                error = %crate::error_chain(&e),
                "failed to revoke the lease on leaving: the runs it owns are free once it expires"
            ),
        }
    }
}

#[cfg(test)]
mod tests;

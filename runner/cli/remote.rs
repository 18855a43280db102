//! The command line talking to the process that holds the journal — `serve`, or another
//! command executing a run — instead of the journal itself: over the journal's owner-only
//! local socket, with the API and the messages of [`crate::wire`], acting as the command
//! line's user.

use std::time::Duration;

use runbook_journals::{Event, Record, RunId, RunState};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::{CliError, Env};
use crate::failure::Kind;
use crate::schedule::state::Fired;
use crate::serve::auth::ACT_AS;
use crate::serve::local::{self, Address, Probe};
use crate::wire::{
    AbortRun, Aborted, Accepted, Decide, ErrorBody, HolderInfo, ListedRun, PauseRun, PausedRun,
    ResumeRun, RunDetail, RunRecord, ScheduleStatus, StartRun,
};

/// How long a request may take. An abort waits for the run to reach a safe point, which the
/// holder bounds at a minute.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a holder may take to say what it is before it counts as not answering.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The holder of this command line's journal.
pub struct Remote {
    /// Kept open: the socket may be reached through it (`/proc/self/fd`).
    _address: Address,
    client: reqwest::Client,
    who: String,
    holder: HolderInfo,
}

impl Remote {
    /// The holder answering on the journal's socket, if one does. A socket nobody listens on
    /// is a dead holder's, and one whose listener does not answer (a process on its way out)
    /// is none either: only a holder that says what it is counts.
    pub async fn connect(env: &Env) -> Option<Self> {
        let address = Address::of(&env.journal_dir()).ok()?;
        if local::probe(&address) != Probe::Answering {
            return None;
        }
        runbook_steps::install_crypto_provider();
        let client = reqwest::Client::builder()
            .unix_socket(address.path())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let mut remote = Self {
            _address: address,
            client,
            who: env.who.clone(),
            holder: HolderInfo {
                pid: 0,
                command: String::new(),
                schedules: false,
            },
        };
        remote.holder = remote
            .send(
                remote
                    .request(reqwest::Method::GET, "/holder")
                    .timeout(HELLO_TIMEOUT),
            )
            .await
            .ok()?;
        Some(remote)
    }

    /// What holds the journal.
    pub fn holder(&self) -> &HolderInfo {
        &self.holder
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        // The host is never looked up: every connection goes to the socket.
        self.client
            .request(method, format!("http://runbook/api/v1{path}"))
            .header(ACT_AS, &self.who)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        let idempotent = request
            .try_clone()
            .and_then(|r| r.build().ok())
            .is_some_and(|r| r.method() == reqwest::Method::GET);
        let response = request
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(&e, idempotent))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failure(status, response).await);
        }
        // The answer whole first: one cut short is the holder going away, not a bad answer.
        let body = response
            .bytes()
            .await
            .map_err(|e| broken_off(&e, idempotent))?;
        serde_json::from_slice(&body).map_err(|e| {
            CliError::Other(anyhow::anyhow!(
                "the process holding the journal sent an answer this command cannot read: {e}"
            ))
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// Every unfinished run, newest first.
    pub async fn unfinished(&self) -> Result<Vec<ListedRun>, CliError> {
        self.get(&format!(
            "/runs?{}",
            crate::serve::filter::unfinished_query()
        ))
        .await
    }

    /// The newest `limit` runs, newest first.
    pub async fn newest(&self, limit: usize) -> Result<Vec<ListedRun>, CliError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.get(&format!("/runs?limit={limit}")).await
    }

    /// A run's records.
    pub async fn records(&self, run: &str) -> Result<(RunId, Vec<Record>), CliError> {
        let list: Vec<RunRecord> = self.get(&format!("/runs/{run}/records")).await?;
        // The holder resolved the prefix; the records say to which run.
        let id = match list.first() {
            Some(r) => r.run,
            None => self.detail(run).await?.run,
        };
        Ok((id, list.into_iter().map(|r| r.record).collect()))
    }

    /// A run as its records tell it.
    pub async fn detail(&self, run: &str) -> Result<RunDetail, CliError> {
        self.get(&format!("/runs/{run}")).await
    }

    /// Starts a run.
    pub async fn start(&self, body: &StartRun) -> Result<Accepted, CliError> {
        self.post("/runs", body).await
    }

    /// Resumes a run.
    pub async fn resume(&self, run: &str, body: &ResumeRun) -> Result<Accepted, CliError> {
        self.post(&format!("/runs/{run}/resume"), body).await
    }

    /// Approves or rejects a run's open gate.
    pub async fn decide(
        &self,
        run: &str,
        approved: bool,
        body: &Decide,
    ) -> Result<Accepted, CliError> {
        let verb = if approved { "approve" } else { "reject" };
        self.post(&format!("/runs/{run}/{verb}"), body).await
    }

    /// Aborts a run.
    pub async fn abort(&self, run: &str, body: &AbortRun) -> Result<Aborted, CliError> {
        self.post(&format!("/runs/{run}/abort"), body).await
    }

    /// Pauses a run.
    pub async fn pause(&self, run: &str, body: &PauseRun) -> Result<PausedRun, CliError> {
        self.post(&format!("/runs/{run}/pause"), body).await
    }

    /// Every schedule with its state.
    pub async fn schedules(&self) -> Result<Vec<ScheduleStatus>, CliError> {
        self.get("/schedules").await
    }

    /// Pauses or resumes (`verb`) a schedule.
    pub async fn schedule(&self, name: &str, verb: &str) -> Result<ScheduleStatus, CliError> {
        self.post(&format!("/schedules/{name}/{verb}"), &serde_json::json!({}))
            .await
    }

    /// Fires a schedule now.
    pub async fn trigger(&self, name: &str) -> Result<Fired, CliError> {
        self.post(
            &format!("/schedules/{name}/trigger"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Follows a run's records (server-sent events), calling `each` for every one after record
    /// `after`, until the run ends or — unless `until_end` — parks: after record `since` when
    /// given (the `since` of the answer to this command line's action on the run), so a park
    /// the run reached before the stream was opened counts too. Returns the last state seen,
    /// and the seq of the last record seen (`after` for none). A stream that breaks ends the
    /// follow like one that ends: the caller learns from the state whether the run settled.
    pub async fn follow(
        &self,
        run: &str,
        until_end: bool,
        since: Option<u64>,
        after: u64,
        mut each: impl FnMut(RunId, &Record),
    ) -> Result<(Option<RunState>, u64), CliError> {
        let path = match since {
            Some(since) => format!("/runs/{run}/events?until_end={until_end}&since={since}"),
            None => format!("/runs/{run}/events?until_end={until_end}"),
        };
        let mut response = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .map_err(|e| unreachable(&e, true))?;
        if !response.status().is_success() {
            return Err(failure(response.status(), response).await);
        }
        let mut buffer = String::new();
        let mut data = String::new();
        let mut last_state = None;
        let mut last_seq = after;
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line = buffer[..end].trim_end_matches('\r').to_owned();
                buffer.drain(..=end);
                if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                } else if line.is_empty() && !data.is_empty() {
                    if let Ok(RunRecord { run, record }) = serde_json::from_str::<RunRecord>(&data)
                        && record.seq > last_seq
                    {
                        if let Event::StateChanged { state, .. } = &record.event {
                            last_state = Some(*state);
                        }
                        last_seq = record.seq;
                        each(run, &record);
                    }
                    data.clear();
                }
            }
        }
        Ok((last_state, last_seq))
    }
}

/// A request that did not get an answer. One that never connected is known to have changed
/// nothing, and a read changes nothing anyway: either may be made again once the holder is gone
/// (a holder killed as it accepted the connection resets it; one gone before this command wrote
/// its request fails the write with EPIPE — an error here, never a signal: see
/// [`crate::ui::stdout`]). An action that may have reached the holder is not made twice.
fn unreachable(e: &reqwest::Error, idempotent: bool) -> CliError {
    CliError::Holder {
        kind: if e.is_connect() || (idempotent && !e.is_timeout()) {
            Kind::Unavailable
        } else {
            Kind::Failed
        },
        message: format!(
            "failed to reach the process holding the journal: {}",
            runbook_journals::error_chain(e)
        ),
    }
}

/// An answer that broke off: the holder went away while sending it. A read may be made again,
/// as after [`unreachable`]; an action got this far, so it was taken, and is not made twice.
fn broken_off(e: &reqwest::Error, idempotent: bool) -> CliError {
    CliError::Holder {
        kind: if idempotent && !e.is_timeout() {
            Kind::Unavailable
        } else {
            Kind::Failed
        },
        message: format!(
            "the process holding the journal went away while answering: {}",
            runbook_journals::error_chain(e)
        ),
    }
}

/// The error an answer other than a success stands for, of the kind the holder says.
async fn failure(status: reqwest::StatusCode, response: reqwest::Response) -> CliError {
    let body: Option<ErrorBody> = response.json().await.ok();
    let message = body.as_ref().map_or_else(
        || format!("the process holding the journal answered {status}"),
        |b| b.error.clone(),
    );
    // A `serve` older than the `kind` field: its statuses are all there is to go by.
    let kind = body.and_then(|b| b.kind).unwrap_or(match status.as_u16() {
        400 | 404 | 409 => Kind::BadInput,
        401 => Kind::Unauthorized,
        503 => Kind::Unavailable,
        _ => Kind::Failed,
    });
    CliError::Holder { kind, message }
}

/// A JSON object of `name=value` pairs.
pub fn params_json(params: &[(String, String)]) -> serde_json::Map<String, serde_json::Value> {
    params
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

//! Notifications of what an on-call person must hear about — a gate opened, a gate expired, a
//! run needs attention, was aborted, failed, succeeded — derived from journal records by one
//! function ([`Notice::from_record`]) for webhooks and for the web page alike.
//!
//! The [`Notifier`] is an engine [`Observer`]: it sees every committed, already-redacted
//! journal record, picks the few that people want to hear about and queues them. Its
//! [`Observer::record`] only enqueues — it never blocks a run and never fails one. A
//! background task takes the queue, reads the run's summary from the journal (runbook name,
//! who started it), builds one Slack-compatible JSON message and hands it to one worker per
//! webhook. A worker POSTs its messages one after another, in order, retrying each with
//! exponential backoff; a webhook that is down or slow delays only its own messages.
//!
//! The message is what a Slack incoming webhook expects (`text`, with `&`, `<` and `>`
//! escaped), plus machine-readable fields for other receivers:
//!
//! ```json
//! {"text": ":x: upgrade-openbao (run 01J…, started by alice) failed: step `roll` failed",
//!  "run": "01J…", "runbook": "upgrade-openbao", "started_by": "alice",
//!  "event": "run-failed", "state": "failed", "reason": "step `roll` failed",
//!  "url": "https://runbook.example/runs/01J…"}
//! ```
//!
//! A gate's message also carries `step` (the gate's path), `prompt`, and `expires_at`,
//! `four_eyes`, `approvals` and `approvers` when the gate has them; a gate-expired message
//! carries `step`, `expired_at` and `on_timeout` (what the expiry meant); the others carry
//! `reason`, the run's reason as journaled (already scrubbed of secrets, as every record is).
//! `url` is there only when a base URL is configured.
//!
//! Webhook URLs are secrets (a Slack webhook's path is its credential): logs name only the
//! URL's scheme, host and port.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use runbook_journals::{Event, GateTimeout, Journal, Record, RunId, RunState, RunSummary};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::engine::log::Observer;

/// How long one POST may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages a webhook's worker may hold before new ones are dropped (and counted as failed):
/// bounds the memory a dead webhook can pin.
pub const WEBHOOK_QUEUE: usize = 1024;

/// What a webhook can be told about.
///
/// Adding one: a variant here, in [`NotifyEvent::ALL`] and [`NotifyEvent::as_str`], the record
/// it comes from in [`Notice::from_record`], and its words in [`Notice::text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyEvent {
    /// A gate opened and waits for approval.
    GateOpened,
    /// Nobody decided a gate before it expired; its `on_timeout` applies.
    GateExpired,
    /// A run stopped for an operator's decision (a step in flight when its process died).
    RunNeedsAttention,
    /// An operator aborted a run.
    RunAborted,
    /// A run ended failed.
    RunFailed,
    /// A run ended succeeded.
    RunSucceeded,
    /// An operator paused a run (it holds its lock until unpaused or aborted).
    RunPaused,
}

impl NotifyEvent {
    /// Every event, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::GateOpened,
        Self::GateExpired,
        Self::RunNeedsAttention,
        Self::RunAborted,
        Self::RunFailed,
        Self::RunSucceeded,
        Self::RunPaused,
    ];

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|e| *e == self)
            .expect("every event is in ALL")
    }

    /// The kebab-case name used in configuration and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GateOpened => "gate-opened",
            Self::GateExpired => "gate-expired",
            Self::RunNeedsAttention => "run-needs-attention",
            Self::RunAborted => "run-aborted",
            Self::RunFailed => "run-failed",
            Self::RunSucceeded => "run-succeeded",
            Self::RunPaused => "run-paused",
        }
    }
}

impl std::fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A receiver of notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Where messages are sent, with POST (http or https).
    pub url: String,
    /// The events it wants; empty means all of them.
    #[serde(default)]
    pub events: Vec<NotifyEvent>,
}

impl Webhook {
    /// Whether this webhook is subscribed to `event`.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }

    /// Checks the URL (absolute, http or https), for configuration errors at start-up rather
    /// than failed deliveries later. The error does not repeat the URL, which is a secret.
    pub fn check(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("webhook URL is not a valid URL: {e}"))?;
        match url.scheme() {
            "http" | "https" if url.host().is_some() => Ok(()),
            "http" | "https" => Err("webhook URL has no host".to_owned()),
            other => Err(format!(
                "webhook URL has scheme `{other}`; only http and https are supported"
            )),
        }
    }

    /// The URL as logs may show it: scheme, host and port, never the path (a credential).
    pub fn display_url(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => {
                let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"));
                if let Some(port) = url.port() {
                    let _ = write!(shown, ":{port}");
                }
                shown.push_str("/…");
                shown
            }
            Err(_) => "<invalid URL>".to_owned(),
        }
    }
}

/// How a failed delivery is retried: `attempts` in all, waiting `first_backoff` after the
/// first failure and twice as long after each further one, at most `max_backoff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (at least 1 is made).
    pub attempts: u32,
    /// The wait after the first failed attempt.
    pub first_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// 6 attempts, waiting 1 s, 2 s, 4 s, 8 s and 16 s between them.
    fn default() -> Self {
        Self {
            attempts: 6,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(16),
        }
    }
}

impl Retry {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// What a record is worth telling, before the journal is consulted: for a webhook's message
/// and for the web page's list of what happened to a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// What happened.
    pub event: NotifyEvent,
    /// When the record was committed.
    pub at: DateTime<Utc>,
    /// The gate's path.
    pub step: Option<String>,
    /// The gate's prompt, or why the run is in its state (as journaled, scrubbed).
    pub detail: Option<String>,
    /// When the gate expires (gate-opened) or expired (gate-expired).
    pub expires_at: Option<DateTime<Utc>>,
    /// A four-eyes gate.
    pub four_eyes: bool,
    /// Distinct approvals the gate needs.
    pub approvals: u32,
    /// Who may decide the gate (empty: anyone).
    pub approvers: Vec<String>,
    /// What the gate's expiry meant.
    pub on_timeout: Option<GateTimeout>,
}

impl Notice {
    /// The notice a record gives, if it is worth one.
    pub fn from_record(record: &Record) -> Option<Self> {
        let notice = |event, step, detail| Self {
            event,
            at: record.at,
            step,
            detail,
            expires_at: None,
            four_eyes: false,
            approvals: 1,
            approvers: Vec::new(),
            on_timeout: None,
        };
        match &record.event {
            Event::GateOpened {
                path,
                prompt,
                expires_at,
                four_eyes,
                approvals,
                approvers,
                on_timeout,
            } => Some(Self {
                expires_at: *expires_at,
                four_eyes: *four_eyes,
                approvals: *approvals,
                approvers: approvers.clone(),
                on_timeout: expires_at.map(|_| *on_timeout),
                ..notice(
                    NotifyEvent::GateOpened,
                    Some(path.clone()),
                    Some(prompt.clone()),
                )
            }),
            Event::GateExpired {
                path,
                expired_at,
                outcome,
            } => Some(Self {
                expires_at: Some(*expired_at),
                on_timeout: Some(*outcome),
                ..notice(NotifyEvent::GateExpired, Some(path.clone()), None)
            }),
            Event::StateChanged { state, reason } => {
                let event = match state {
                    RunState::NeedsAttention => NotifyEvent::RunNeedsAttention,
                    RunState::Aborted => NotifyEvent::RunAborted,
                    RunState::Failed => NotifyEvent::RunFailed,
                    RunState::Succeeded => NotifyEvent::RunSucceeded,
                    RunState::Paused => NotifyEvent::RunPaused,
                    RunState::Running
                    | RunState::Waiting
                    | RunState::Sleeping
                    | RunState::Interrupted => return None,
                };
                Some(notice(event, None, reason.clone()))
            }
            _ => None,
        }
    }

    /// Every notice of a run's records, in order: what the web page lists as what happened.
    pub fn of_records(records: &[Record]) -> Vec<Self> {
        records.iter().filter_map(Self::from_record).collect()
    }

    /// The state the event puts the run in (not what the summary says by the time it is
    /// read). An expired gate's run is running again: the expiry is being applied.
    pub fn state(&self) -> RunState {
        match self.event {
            NotifyEvent::GateOpened => RunState::Waiting,
            NotifyEvent::GateExpired => RunState::Running,
            NotifyEvent::RunNeedsAttention => RunState::NeedsAttention,
            NotifyEvent::RunAborted => RunState::Aborted,
            NotifyEvent::RunFailed => RunState::Failed,
            NotifyEvent::RunSucceeded => RunState::Succeeded,
            NotifyEvent::RunPaused => RunState::Paused,
        }
    }

    /// What happened, in words, after the run's name (`waits for approval at …`); `escape`
    /// applies to free text (Slack's control characters for a webhook).
    pub fn text(&self, escape: impl Fn(&str) -> String) -> String {
        let step = self.step.as_deref().unwrap_or("?");
        let detail = self.detail.as_deref().filter(|d| !d.trim().is_empty());
        let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self.event {
            NotifyEvent::GateOpened => {
                let mut text = format!("waits for approval at `{step}`");
                if let Some(prompt) = detail {
                    let _ = write!(text, ": {}", escape(prompt));
                }
                if self.approvals > 1 {
                    let _ = write!(text, " ({} distinct approvals needed)", self.approvals);
                }
                if !self.approvers.is_empty() {
                    let _ = write!(text, " (approvers: {})", escape(&self.approvers.join(", ")));
                }
                if self.four_eyes {
                    text.push_str(
                        " (four eyes: someone other than who started the run must approve)",
                    );
                }
                if let Some(expires) = self.expires_at {
                    let _ = write!(text, " (expires {}", secs(expires));
                    if let Some(outcome) = self.on_timeout {
                        let _ = write!(text, ", then on_timeout: {outcome}");
                    }
                    text.push(')');
                }
                text
            }
            NotifyEvent::GateExpired => {
                let meant = match self.on_timeout.unwrap_or_default() {
                    GateTimeout::Approve => "it counts as approved and the run goes on",
                    GateTimeout::Reject => "it counts as rejected",
                    GateTimeout::Fail => "the gate step fails",
                };
                let at = self.expires_at.map(secs).unwrap_or_default();
                format!("gate `{step}` expired at {at} with nobody deciding: {meant}")
            }
            NotifyEvent::RunNeedsAttention => match detail {
                Some(reason) => format!("needs attention: {}", escape(reason)),
                None => "needs attention".to_owned(),
            },
            NotifyEvent::RunAborted => match detail {
                Some(reason) => format!("was {}", escape(reason)),
                None => "was aborted".to_owned(),
            },
            NotifyEvent::RunFailed => match detail {
                Some(reason) => format!("failed: {}", escape(reason)),
                None => "failed".to_owned(),
            },
            NotifyEvent::RunSucceeded => "succeeded".to_owned(),
            NotifyEvent::RunPaused => match detail {
                Some(reason) => format!("was {}", escape(reason)),
                None => "was paused".to_owned(),
            },
        }
    }

    /// The emoji that starts the event's Slack text.
    fn emoji(&self) -> &'static str {
        match self.event {
            NotifyEvent::GateOpened => ":pause_button:",
            NotifyEvent::GateExpired => ":hourglass:",
            NotifyEvent::RunNeedsAttention => ":warning:",
            NotifyEvent::RunAborted => ":octagonal_sign:",
            NotifyEvent::RunFailed => ":x:",
            NotifyEvent::RunSucceeded => ":white_check_mark:",
            NotifyEvent::RunPaused => ":double_vertical_bar:",
        }
    }
}

/// A notice queued for the webhooks.
#[derive(Debug)]
struct Pending {
    run: RunId,
    notice: Notice,
}

/// Delivery counters, shared with the workers.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Deliveries (message × webhook) queued and not yet delivered or given up.
    outstanding: AtomicU64,
}

impl Counters {
    fn settled(&self, delivered: bool) {
        let counter = if delivered {
            &self.delivered
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends webhook notifications for the runs it observes. See the module documentation.
#[derive(Debug)]
pub struct Notifier {
    queue: mpsc::UnboundedSender<Pending>,
    /// How many webhooks want each event (by [`NotifyEvent::index`]): events nobody wants
    /// are not even queued.
    subscribers: [u64; NotifyEvent::ALL.len()],
    counters: Arc<Counters>,
}

impl Notifier {
    /// A notifier for `webhooks`, reading run summaries from `journal`; `base_url` (e.g.
    /// `https://runbook.example`) makes messages link to `<base_url>/runs/<id>`.
    ///
    /// Must be called inside a tokio runtime: it spawns the task that delivers.
    pub fn new(
        webhooks: Vec<Webhook>,
        journal: Arc<dyn Journal>,
        base_url: Option<String>,
    ) -> Arc<Self> {
        Self::with_retry(webhooks, journal, base_url, Retry::default())
    }

    /// [`Notifier::new`] with another retry policy.
    pub fn with_retry(
        webhooks: Vec<Webhook>,
        journal: Arc<dyn Journal>,
        base_url: Option<String>,
        retry: Retry,
    ) -> Arc<Self> {
        let counters = Arc::new(Counters::default());
        let subscribers =
            NotifyEvent::ALL.map(|e| webhooks.iter().filter(|w| w.wants(e)).count() as u64);
        let (queue, pending) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher {
            webhooks,
            journal,
            base_url: base_url.map(|u| u.trim_end_matches('/').to_owned()),
            retry,
            counters: Arc::clone(&counters),
        };
        tokio::spawn(dispatcher.run(pending));
        Arc::new(Self {
            queue,
            subscribers,
            counters,
        })
    }

    /// Messages a webhook accepted (2xx), one per message and webhook.
    pub fn delivered(&self) -> u64 {
        self.counters.delivered.load(Ordering::Relaxed)
    }

    /// Messages a webhook never accepted: every attempt failed, or its queue was full.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Waits until every message queued so far is delivered or given up on, for at most
    /// `within`; whether it got there. For a server's shutdown, so that a run's last news
    /// is not lost with the process.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.counters.outstanding.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Observer for Notifier {
    fn record(&self, run: RunId, record: &Record) {
        let Some(notice) = Notice::from_record(record) else {
            return;
        };
        let pending = Pending { run, notice };
        let deliveries = self.subscribers[pending.notice.event.index()];
        if deliveries == 0 {
            return;
        }
        self.counters
            .outstanding
            .fetch_add(deliveries, Ordering::AcqRel);
        if self.queue.send(pending).is_err() {
            self.counters
                .outstanding
                .fetch_sub(deliveries, Ordering::AcqRel);
            // The runtime is shutting down: nothing can be delivered any more.
            tracing::debug!(%run, "notification dropped: the notifier has stopped");
        }
    }
}

/// The background task: turns pending events into messages and fans them out.
struct Dispatcher {
    webhooks: Vec<Webhook>,
    journal: Arc<dyn Journal>,
    base_url: Option<String>,
    retry: Retry,
    counters: Arc<Counters>,
}

impl Dispatcher {
    async fn run(self, mut pending: mpsc::UnboundedReceiver<Pending>) {
        // Nothing is ever queued without a webhook (`record` counts the deliveries first), and
        // building the client reads and parses every system CA certificate: ~10 ms of CPU that
        // each `runbook run` paid beside its first steps.
        if self.webhooks.is_empty() {
            return;
        }
        let client = client();
        let workers: Vec<(Webhook, mpsc::Sender<Arc<Value>>)> = self
            .webhooks
            .iter()
            .map(|webhook| {
                let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
                let worker = Worker {
                    webhook: webhook.clone(),
                    client: client.clone(),
                    retry: self.retry,
                    counters: Arc::clone(&self.counters),
                };
                tokio::spawn(worker.run(rx));
                (webhook.clone(), tx)
            })
            .collect();
        while let Some(p) = pending.recv().await {
            // A journal read may touch the disk: not on the runtime's worker threads.
            let journal = Arc::clone(&self.journal);
            let run = p.run;
            let summary = tokio::task::spawn_blocking(move || journal.summary(run))
                .await
                .map_err(|e| e.to_string())
                .and_then(|read| read.map_err(|e| e.to_string()));
            let summary = match summary {
                Ok(summary) => Some(summary),
                Err(error) => {
                    tracing::warn!(run = %p.run, %error, "notification without the run's summary");
                    None
                }
            };
            let message = Arc::new(message(&p, summary.as_ref(), self.base_url.as_deref()));
            for (webhook, tx) in &workers {
                if !webhook.wants(p.notice.event) {
                    continue;
                }
                if tx.try_send(Arc::clone(&message)).is_err() {
                    self.counters.settled(false);
                    tracing::warn!(
                        webhook = %webhook.display_url(),
                        run = %p.run,
                        event = %p.notice.event,
                        "notification dropped: {WEBHOOK_QUEUE} messages are already waiting for this webhook"
                    );
                }
            }
        }
    }
}

/// The HTTP client: rustls on the process's ring provider, a timeout per request, and no
/// redirects (a webhook answers where it is configured).
fn client() -> reqwest::Client {
    runbook_steps::install_crypto_provider();
    let builder = || {
        reqwest::Client::builder()
            .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
    };
    match builder().build() {
        Ok(client) => client,
        Err(e) => {
            // Without system CA certificates (a minimal container) the system verifier cannot
            // be built; http:// webhooks must still work, and https:// ones then fail per POST.
            tracing::warn!(
                error = %runbook_journals::error_chain(&e),
                "no usable system CA certificates: https:// webhooks will fail"
            );
            builder()
                .tls_certs_only([])
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        }
    }
}

/// Delivers one webhook's messages, in order.
struct Worker {
    webhook: Webhook,
    client: reqwest::Client,
    retry: Retry,
    counters: Arc<Counters>,
}

impl Worker {
    async fn run(self, mut messages: mpsc::Receiver<Arc<Value>>) {
        while let Some(message) = messages.recv().await {
            let delivered = self.deliver(&message).await;
            self.counters.settled(delivered);
        }
    }

    /// POSTs `message` until it is accepted or the attempts are used up.
    async fn deliver(&self, message: &Value) -> bool {
        let attempts = self.retry.attempts.max(1);
        for attempt in 1..=attempts {
            let error = match self
                .client
                .post(&self.webhook.url)
                .json(message)
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => return true,
                Ok(response) => format!("HTTP {}", response.status()),
                Err(e) if e.is_builder() => {
                    // The URL itself is unusable: trying again cannot help.
                    tracing::warn!(
                        webhook = %self.webhook.display_url(),
                        run = message["run"].as_str().unwrap_or("?"),
                        error = %runbook_journals::error_chain(&e.without_url()),
                        "notification failed: the webhook URL is unusable"
                    );
                    return false;
                }
                Err(e) => runbook_journals::error_chain(&e.without_url()),
            };
            if attempt == attempts {
                tracing::warn!(
                    webhook = %self.webhook.display_url(),
                    run = message["run"].as_str().unwrap_or("?"),
                    event = message["event"].as_str().unwrap_or("?"),
                    %error,
                    "notification failed after {attempts} attempts; giving up"
                );
                return false;
            }
            let wait = self.retry.backoff(attempt);
            tracing::warn!(
                webhook = %self.webhook.display_url(),
                run = message["run"].as_str().unwrap_or("?"),
                event = message["event"].as_str().unwrap_or("?"),
                %error,
                "notification attempt {attempt} of {attempts} failed; retrying in {}",
                humantime::format_duration(wait)
            );
            tokio::time::sleep(wait).await;
        }
        false
    }
}

/// `text` escaped for Slack's mrkdwn: `&`, `<` and `>` are control characters there.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The JSON message for `p`.
fn message(p: &Pending, summary: Option<&RunSummary>, base_url: Option<&str>) -> Value {
    let n = &p.notice;
    let runbook = summary.map_or("?", |s| s.runbook.as_str());
    let started_by = summary.map(|s| s.started_by.as_str());
    let url = base_url.map(|base| format!("{base}/runs/{}", p.run));

    let mut who = format!("{} (run {}", slack_escape(runbook), p.run);
    if let Some(by) = started_by.filter(|by| !by.is_empty()) {
        let _ = write!(who, ", started by {}", slack_escape(by));
    }
    who.push(')');
    let mut text = format!("{} {who} {}", n.emoji(), n.text(slack_escape));
    if let Some(url) = &url {
        let _ = write!(text, "\n<{url}>");
    }

    let mut out = Map::new();
    out.insert("text".into(), Value::String(text));
    out.insert("run".into(), Value::String(p.run.to_string()));
    out.insert("runbook".into(), Value::String(runbook.to_owned()));
    if let Some(by) = started_by {
        out.insert("started_by".into(), Value::String(by.to_owned()));
    }
    out.insert("event".into(), Value::String(n.event.as_str().to_owned()));
    out.insert("state".into(), Value::String(n.state().as_str().to_owned()));
    out.insert("at".into(), json!(n.at));
    match n.event {
        NotifyEvent::GateOpened => {
            out.insert("step".into(), json!(n.step));
            out.insert("prompt".into(), json!(n.detail));
            if let Some(expires) = n.expires_at {
                out.insert("expires_at".into(), json!(expires));
            }
            if let Some(outcome) = n.on_timeout {
                out.insert("on_timeout".into(), json!(outcome));
            }
            if n.four_eyes {
                out.insert("four_eyes".into(), Value::Bool(true));
            }
            if n.approvals > 1 {
                out.insert("approvals".into(), json!(n.approvals));
            }
            if !n.approvers.is_empty() {
                out.insert("approvers".into(), json!(n.approvers));
            }
        }
        NotifyEvent::GateExpired => {
            out.insert("step".into(), json!(n.step));
            out.insert("expired_at".into(), json!(n.expires_at));
            out.insert("on_timeout".into(), json!(n.on_timeout));
        }
        NotifyEvent::RunNeedsAttention
        | NotifyEvent::RunAborted
        | NotifyEvent::RunFailed
        | NotifyEvent::RunSucceeded
        | NotifyEvent::RunPaused => {
            if let Some(reason) = &n.detail {
                out.insert("reason".into(), Value::String(reason.clone()));
            }
        }
    }
    if let Some(url) = url {
        out.insert("url".into(), Value::String(url));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_journals::MemoryJournal;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A tiny HTTP receiver: answers each request with the next status of `statuses` (the last
    /// one repeats) and forwards every request body it got, as JSON, to the returned channel.
    async fn receiver(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Value>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hook/secret-token",
            listener.local_addr().unwrap()
        );
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut served = 0usize;
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let status = statuses[served.min(statuses.len() - 1)];
                served += 1;
                if let Some(body) = read_request(&mut stream).await {
                    let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (url, rx)
    }

    /// Reads one request and returns its body (by content-length).
    async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with("post "), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf[end + 4..end + 4 + length].to_vec());
        }
    }

    /// A URL on which nothing listens.
    async fn dead_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/dead")
    }

    /// A URL that accepts connections and never answers.
    async fn black_hole_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        format!("http://{addr}/slow")
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no message within 5 s")
            .expect("receiver stopped")
    }

    fn journal_with_run(runbook: &str) -> (Arc<dyn Journal>, RunId) {
        let journal = Arc::new(MemoryJournal::new());
        let run = RunId::new();
        let started = Event::RunStarted(
            // Through serde, so that fields the journal adds later take their defaults.
            serde_json::from_value(json!({
                "runbook": runbook, "params": {}, "sources": [], "lock": null,
                "started_by": "alice", "engine_version": "test"
            }))
            .unwrap(),
        );
        journal.create(run, None, &[started]).unwrap();
        (journal, run)
    }

    fn record(event: Event) -> Record {
        Record {
            seq: 2,
            at: Utc::now(),
            event,
        }
    }

    fn gate() -> Record {
        record(Event::GateOpened {
            path: "confirm".into(),
            prompt: "All pods on 2.7.2. Check dashboards, then approve.".into(),
            expires_at: None,
            four_eyes: false,
            approvals: 1,
            approvers: Vec::new(),
            on_timeout: GateTimeout::Fail,
        })
    }

    fn failed() -> Record {
        record(Event::StateChanged {
            state: RunState::Failed,
            reason: Some("step `roll[2].healthy` failed: timed out".into()),
        })
    }

    fn succeeded() -> Record {
        record(Event::StateChanged {
            state: RunState::Succeeded,
            reason: None,
        })
    }

    fn fast() -> Retry {
        Retry {
            attempts: 6,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        }
    }

    async fn settle(notifier: &Notifier, delivered: u64, failed: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while (notifier.delivered(), notifier.failed()) != (delivered, failed) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "counters are ({}, {}), expected ({delivered}, {failed})",
                notifier.delivered(),
                notifier.failed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn events_parse_by_their_kebab_case_names() {
        let hook: Webhook = serde_json::from_value(json!({
            "url": "https://hooks.example/x",
            "events": ["gate-opened", "gate-expired", "run-needs-attention", "run-aborted",
                       "run-failed", "run-succeeded", "run-paused"]
        }))
        .unwrap();
        assert_eq!(hook.events, NotifyEvent::ALL);
        let all: Webhook = serde_json::from_value(json!({ "url": "https://h/x" })).unwrap();
        assert!(NotifyEvent::ALL.iter().all(|e| all.wants(*e)));
        assert!(hook.check().is_ok());
        assert!(
            Webhook {
                url: "ftp://h/x".into(),
                events: vec![]
            }
            .check()
            .is_err()
        );
        assert_eq!(
            Webhook {
                url: "https://hooks.slack.com/services/T0/B0/SECRET".into(),
                events: vec![]
            }
            .display_url(),
            "https://hooks.slack.com/…"
        );
    }

    #[test]
    fn every_event_an_on_call_person_must_hear_about_comes_from_its_record() {
        let at = |event| Record {
            seq: 7,
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            event,
        };
        let state = |state, reason: Option<&str>| {
            at(Event::StateChanged {
                state,
                reason: reason.map(str::to_owned),
            })
        };
        let expires = DateTime::from_timestamp(1_800_000_030, 0).unwrap();
        let opened = at(Event::GateOpened {
            path: "confirm".into(),
            prompt: "Go?".into(),
            expires_at: Some(expires),
            four_eyes: true,
            approvals: 2,
            approvers: vec!["alice".into(), "bob".into(), "carol".into()],
            on_timeout: GateTimeout::Reject,
        });
        let expired = at(Event::GateExpired {
            path: "confirm".into(),
            expired_at: expires,
            outcome: GateTimeout::Approve,
        });
        // (record, event, state, text after the run's name)
        for (record, event, run_state, text) in [
            (
                opened,
                NotifyEvent::GateOpened,
                RunState::Waiting,
                "waits for approval at `confirm`: Go? (2 distinct approvals needed) \
                 (approvers: alice, bob, carol) (four eyes: someone other than who started \
                 the run must approve) (expires 2027-01-15T08:00:30Z, then on_timeout: reject)",
            ),
            (
                expired,
                NotifyEvent::GateExpired,
                RunState::Running,
                "gate `confirm` expired at 2027-01-15T08:00:30Z with nobody deciding: it \
                 counts as approved and the run goes on",
            ),
            (
                state(
                    RunState::NeedsAttention,
                    Some("step `restart` was in flight"),
                ),
                NotifyEvent::RunNeedsAttention,
                RunState::NeedsAttention,
                "needs attention: step `restart` was in flight",
            ),
            (
                state(RunState::Aborted, Some("aborted by alice: wrong cluster")),
                NotifyEvent::RunAborted,
                RunState::Aborted,
                "was aborted by alice: wrong cluster",
            ),
            (
                state(
                    RunState::Paused,
                    Some("paused by alice: restoring a snapshot"),
                ),
                NotifyEvent::RunPaused,
                RunState::Paused,
                "was paused by alice: restoring a snapshot",
            ),
            (
                state(RunState::Failed, Some("step `x` failed")),
                NotifyEvent::RunFailed,
                RunState::Failed,
                "failed: step `x` failed",
            ),
            (
                state(RunState::Succeeded, None),
                NotifyEvent::RunSucceeded,
                RunState::Succeeded,
                "succeeded",
            ),
        ] {
            let notice = Notice::from_record(&record).expect("worth a notice");
            assert_eq!(notice.event, event);
            assert_eq!(notice.state(), run_state);
            assert_eq!(notice.text(str::to_owned), text);
            assert_eq!(notice.at, record.at);
        }
        for quiet in [
            RunState::Running,
            RunState::Waiting,
            RunState::Sleeping,
            RunState::Interrupted,
        ] {
            assert_eq!(Notice::from_record(&state(quiet, None)), None, "{quiet}");
        }
    }

    #[tokio::test]
    async fn a_gate_expiry_and_an_abort_are_delivered_with_their_json() {
        let (url, mut rx) = receiver(vec![200]).await;
        let (journal, run) = journal_with_run("rotate");
        let notifier = Notifier::new(
            vec![Webhook {
                url,
                events: vec![],
            }],
            journal,
            None,
        );
        let expires = DateTime::from_timestamp(1_800_000_030, 0).unwrap();
        notifier.record(
            run,
            &record(Event::GateExpired {
                path: "confirm".into(),
                expired_at: expires,
                outcome: GateTimeout::Reject,
            }),
        );
        notifier.record(
            run,
            &record(Event::StateChanged {
                state: RunState::Aborted,
                reason: Some("aborted by bob".into()),
            }),
        );
        let expired = next(&mut rx).await;
        assert_eq!(expired["event"], "gate-expired");
        assert_eq!(expired["step"], "confirm");
        assert_eq!(expired["on_timeout"], "reject");
        assert_eq!(expired["expired_at"], json!(expires));
        assert_eq!(
            expired["text"],
            format!(
                ":hourglass: rotate (run {run}, started by alice) gate `confirm` expired at \
                 2027-01-15T08:00:30Z with nobody deciding: it counts as rejected"
            )
        );
        let aborted = next(&mut rx).await;
        assert_eq!(aborted["event"], "run-aborted");
        assert_eq!(aborted["state"], "aborted");
        assert_eq!(aborted["reason"], "aborted by bob");
        settle(&notifier, 2, 0).await;
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = Retry::default();
        let waits: Vec<u64> = (1..6).map(|a| retry.backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(retry.backoff(40), Duration::from_secs(16));
    }

    #[tokio::test]
    async fn the_three_events_are_delivered_with_their_json() {
        let (url, mut rx) = receiver(vec![200]).await;
        let (journal, run) = journal_with_run("upgrade-openbao");
        let notifier = Notifier::new(
            vec![Webhook {
                url,
                events: vec![],
            }],
            journal,
            Some("https://runbook.example/".into()),
        );
        notifier.record(run, &gate());
        // Records that are not worth a message are ignored.
        notifier.record(
            run,
            &record(Event::StateChanged {
                state: RunState::Running,
                reason: None,
            }),
        );
        notifier.record(run, &failed());
        notifier.record(run, &succeeded());

        let url = format!("https://runbook.example/runs/{run}");
        let gate = next(&mut rx).await;
        assert_eq!(gate["event"], "gate-opened");
        assert_eq!(gate["state"], "waiting");
        assert_eq!(gate["run"], run.to_string());
        assert_eq!(gate["runbook"], "upgrade-openbao");
        assert_eq!(gate["started_by"], "alice");
        assert_eq!(gate["step"], "confirm");
        assert_eq!(gate["url"], url);
        assert_eq!(
            gate["text"],
            format!(
                ":pause_button: upgrade-openbao (run {run}, started by alice) waits for \
                 approval at `confirm`: All pods on 2.7.2. Check dashboards, then approve.\n<{url}>"
            )
        );

        let failed = next(&mut rx).await;
        assert_eq!(failed["event"], "run-failed");
        assert_eq!(failed["state"], "failed");
        assert_eq!(failed["reason"], "step `roll[2].healthy` failed: timed out");
        assert_eq!(
            failed["text"],
            format!(
                ":x: upgrade-openbao (run {run}, started by alice) failed: step \
                 `roll[2].healthy` failed: timed out\n<{url}>"
            )
        );

        let succeeded = next(&mut rx).await;
        assert_eq!(succeeded["event"], "run-succeeded");
        assert_eq!(succeeded["state"], "succeeded");
        assert_eq!(
            succeeded["text"],
            format!(
                ":white_check_mark: upgrade-openbao (run {run}, started by alice) succeeded\n<{url}>"
            )
        );
        settle(&notifier, 3, 0).await;
    }

    #[tokio::test]
    async fn without_a_base_url_there_is_no_link_and_slack_characters_are_escaped() {
        let (url, mut rx) = receiver(vec![200]).await;
        let (journal, run) = journal_with_run("a&b");
        let notifier = Notifier::new(
            vec![Webhook {
                url,
                events: vec![NotifyEvent::RunFailed],
            }],
            journal,
            None,
        );
        notifier.record(
            run,
            &record(Event::StateChanged {
                state: RunState::Failed,
                reason: Some("expected <200>".into()),
            }),
        );
        let message = next(&mut rx).await;
        assert!(message.get("url").is_none(), "{message}");
        assert_eq!(message["runbook"], "a&b");
        assert_eq!(message["reason"], "expected <200>");
        assert_eq!(
            message["text"],
            format!(":x: a&amp;b (run {run}, started by alice) failed: expected &lt;200&gt;")
        );
    }

    #[tokio::test]
    async fn a_receiver_failing_twice_gets_the_message_on_the_third_attempt() {
        let (url, mut rx) = receiver(vec![500, 500, 200]).await;
        let (journal, run) = journal_with_run("rotate");
        let notifier = Notifier::with_retry(
            vec![Webhook {
                url,
                events: vec![],
            }],
            journal,
            None,
            fast(),
        );
        notifier.record(run, &succeeded());
        for _ in 0..3 {
            let message = next(&mut rx).await;
            assert_eq!(message["event"], "run-succeeded");
        }
        settle(&notifier, 1, 0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "delivered more than once");
    }

    #[tokio::test]
    async fn a_receiver_that_keeps_failing_is_given_up_on() {
        let (url, mut rx) = receiver(vec![500]).await;
        let (journal, run) = journal_with_run("rotate");
        let notifier = Notifier::with_retry(
            vec![Webhook {
                url,
                events: vec![],
            }],
            journal,
            None,
            Retry {
                attempts: 3,
                ..fast()
            },
        );
        notifier.record(run, &failed());
        for _ in 0..3 {
            next(&mut rx).await;
        }
        settle(&notifier, 0, 1).await;
    }

    #[tokio::test]
    async fn a_dead_webhook_does_not_hold_up_the_others() {
        let (url, mut rx) = receiver(vec![200]).await;
        let (journal, run) = journal_with_run("rotate");
        let retry = Retry {
            attempts: 6,
            first_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
        };
        let notifier = Notifier::with_retry(
            vec![
                Webhook {
                    url: dead_url().await,
                    events: vec![],
                },
                Webhook {
                    url: black_hole_url().await,
                    events: vec![],
                },
                Webhook {
                    url,
                    events: vec![],
                },
            ],
            journal,
            None,
            retry,
        );
        notifier.record(run, &gate());
        notifier.record(run, &failed());
        // Both arrive, in order, long before the dead webhooks' first retry is due.
        assert_eq!(next(&mut rx).await["event"], "gate-opened");
        assert_eq!(next(&mut rx).await["event"], "run-failed");
        settle(&notifier, 2, 0).await;
    }

    #[tokio::test]
    async fn events_a_webhook_did_not_subscribe_to_are_not_sent() {
        let (gates_url, mut gates) = receiver(vec![200]).await;
        let (ends_url, mut ends) = receiver(vec![200]).await;
        let (journal, run) = journal_with_run("rotate");
        let notifier = Notifier::new(
            vec![
                Webhook {
                    url: gates_url,
                    events: vec![NotifyEvent::GateOpened],
                },
                Webhook {
                    url: ends_url,
                    events: vec![NotifyEvent::RunFailed, NotifyEvent::RunSucceeded],
                },
            ],
            journal,
            None,
        );
        notifier.record(run, &gate());
        notifier.record(run, &failed());
        notifier.record(run, &succeeded());
        assert_eq!(next(&mut gates).await["event"], "gate-opened");
        assert_eq!(next(&mut ends).await["event"], "run-failed");
        assert_eq!(next(&mut ends).await["event"], "run-succeeded");
        settle(&notifier, 3, 0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(gates.try_recv().is_err());
        assert!(ends.try_recv().is_err());
    }

    #[tokio::test]
    async fn events_nobody_wants_are_not_queued() {
        let (url, mut rx) = receiver(vec![200]).await;
        let (journal, run) = journal_with_run("rotate");
        let notifier = Notifier::new(
            vec![Webhook {
                url,
                events: vec![NotifyEvent::RunSucceeded],
            }],
            journal,
            None,
        );
        assert_eq!(notifier.subscribers, [0, 0, 0, 0, 0, 1, 0]);
        notifier.record(run, &gate());
        notifier.record(run, &failed());
        notifier.record(run, &succeeded());
        assert_eq!(next(&mut rx).await["event"], "run-succeeded");
        settle(&notifier, 1, 0).await;
    }

    #[tokio::test]
    async fn flush_waits_for_outstanding_deliveries() {
        let (url, _rx) = receiver(vec![500, 200]).await;
        let (journal, run) = journal_with_run("rotate");
        let slow = Retry {
            attempts: 2,
            first_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_millis(300),
        };
        let notifier = Notifier::with_retry(
            vec![
                Webhook {
                    url,
                    events: vec![],
                },
                Webhook {
                    url: black_hole_url().await,
                    events: vec![NotifyEvent::RunFailed],
                },
            ],
            journal,
            None,
            slow,
        );
        assert!(
            notifier.flush(Duration::from_millis(10)).await,
            "nothing queued yet"
        );
        notifier.record(run, &succeeded());
        assert!(
            !notifier.flush(Duration::from_millis(50)).await,
            "a retry is due"
        );
        assert!(notifier.flush(Duration::from_secs(5)).await);
        assert_eq!((notifier.delivered(), notifier.failed()), (1, 0));
        // The black hole holds a message until its request times out.
        notifier.record(run, &failed());
        assert!(!notifier.flush(Duration::from_millis(300)).await);
    }

    #[tokio::test]
    async fn a_run_missing_from_the_journal_is_still_notified() {
        let (url, mut rx) = receiver(vec![200]).await;
        let notifier = Notifier::new(
            vec![Webhook {
                url,
                events: vec![],
            }],
            Arc::new(MemoryJournal::new()),
            None,
        );
        let run = RunId::new();
        notifier.record(run, &succeeded());
        let message = next(&mut rx).await;
        assert_eq!(message["runbook"], "?");
        assert_eq!(
            message["text"],
            format!(":white_check_mark: ? (run {run}) succeeded")
        );
    }
}

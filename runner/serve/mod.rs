//! `runbook serve`: one long-lived process that holds the journal, fires schedules, executes
//! runs (parking them at gates, waking durable timers, applying gates' expiries on time —
//! [`gate_timers`]), resumes the runs a previous `serve`
//! was executing when it died, and serves an HTTP API, a web page and Prometheus metrics —
//! and, like every holder of the journal, the same API on the journal's local socket for the
//! command line ([`holder`]). On SIGTERM it stops every run at a safe point — journaled as
//! interrupted, resumed by the next `serve` — and exits.
//!
//! This module knows nothing of the command line: it is given its options and the journal
//! directory, and returns a [`ServeError`] whose exit code the command line decides.

pub mod api;
pub mod auth;
pub mod claimer;
pub mod filter;
pub mod fleet;
pub mod forward;
pub mod gate_timers;
pub mod holder;
pub mod inbox;
pub mod info;
pub mod live;
pub mod local;
pub mod metrics;
pub mod notify;
pub mod runs;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runbook_journals::{JournalError, SledJournal, SledOptions};
use runbook_steps::{CancelReason, CancelSource, Registry};

use crate::engine::log::Observer;
use crate::library::Library;
use crate::schedule::scheduler::Scheduler;
use crate::serve::api::{App, Bus};
use crate::serve::auth::{Tokens, random_token};
use crate::serve::fleet::{Member, Shared};
use crate::serve::gate_timers::GateTimers;
use crate::serve::holder::Holder;
use crate::serve::info::ServeInfo;
use crate::serve::metrics::Metrics;
use crate::serve::notify::{Notifier, NotifyEvent, Webhook};
use crate::serve::runs::{Config, Runs, ScheduleLauncher};
use crate::ui::OutputMode;
use crate::ui::json::ServeEvent;
use crate::ui::stdout::outln;
use crate::wire::HolderInfo;

/// Why `serve` could not start or went down.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Its options or files are wrong (schedules, tokens, webhooks, the address).
    #[error("{0}")]
    BadInput(String),
    /// The journal could not be opened or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Anything else it needs failed.
    #[error("failed to {action}: {source}")]
    Io {
        /// What it was doing.
        action: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// How long a stopping `serve` waits for webhook notifications still being delivered.
const NOTIFY_FLUSH: Duration = Duration::from_secs(5);

/// How `serve` was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The journal directory.
    pub journal_dir: PathBuf,
    /// The journal, when it is shared by several executors (etcd; `journal_dir` is then its
    /// local directory), and how to join their fleet.
    pub shared: Option<Shared>,
    /// How runs' records are printed.
    pub output: OutputMode,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Schedules files.
    pub schedules: Vec<PathBuf>,
    /// A tokens file (`name: token` per line).
    pub tokens: Option<PathBuf>,
    /// Webhooks to notify.
    pub webhooks: Vec<String>,
    /// Which events the webhooks get (empty: all).
    pub webhook_events: Vec<NotifyEvent>,
    /// The URL people reach this `serve` at, for links in notifications.
    pub base_url: Option<String>,
    /// How often schedules are checked.
    pub tick: Duration,
}

/// Runs `serve` until SIGTERM or SIGINT.
pub async fn serve(opts: Options) -> Result<(), ServeError> {
    let mut tokens = match &opts.tokens {
        Some(path) => Tokens::from_file(path).map_err(ServeError::BadInput)?,
        None => Tokens::default(),
    };
    if let Ok(token) = std::env::var("RUNBOOK_API_TOKEN")
        && !token.trim().is_empty()
    {
        tokens.add("api", token.trim());
    }
    if !opts.listen.ip().is_loopback() && !tokens.has_remote() {
        return Err(ServeError::BadInput(format!(
            "refusing to listen on {} without API tokens: give --tokens FILE or $RUNBOOK_API_TOKEN, or listen on 127.0.0.1",
            opts.listen
        )));
    }
    let webhooks: Vec<Webhook> = opts
        .webhooks
        .iter()
        .map(|url| Webhook {
            url: url.clone(),
            events: opts.webhook_events.clone(),
        })
        .collect();
    for w in &webhooks {
        w.check().map_err(ServeError::BadInput)?;
    }
    let library = Library::from_env();
    let schedules = crate::schedule::load::load_all(&library, &opts.schedules).map_err(|e| {
        eprintln!("{e}");
        ServeError::BadInput("the schedules have problems".into())
    })?;

    let dir = opts.journal_dir.clone();
    let (journal, member): (Arc<dyn runbook_journals::Journal>, _) = match &opts.shared {
        Some(shared) => {
            let join = shared.join.clone();
            let member = tokio::task::spawn_blocking(move || Member::join(join))
                .await
                .map_err(|e| ServeError::BadInput(format!("failed to join the fleet: {e}")))??;
            let event = ServeEvent {
                executor: Some(member.me()),
                at: Some(chrono::Utc::now()),
                ..ServeEvent::new("joined")
            };
            say(opts.output, &event, || {
                format!(
                    "joined the executors of the journal as {} (lease TTL {})",
                    member.me(),
                    humantime::format_duration(member.fleet().ttl())
                )
            });
            (shared.journal.clone(), Some(member))
        }
        None => (
            Arc::new(SledJournal::open(&dir, SledOptions::default())?) as _,
            None,
        ),
    };
    let local_token = random_token().map_err(|e| ServeError::Io {
        action: "draw a random local token from the OS".into(),
        source: std::io::Error::other(e),
    })?;
    tokens.set_local(local_token.clone());

    let metrics = Metrics::new();
    let bus = Bus::new(4096);
    let notifier = Notifier::new(webhooks, journal.clone(), opts.base_url.clone());
    let gate_timers = GateTimers::new(journal.clone(), opts.output);
    let mut observers: Vec<Arc<dyn Observer>> = vec![
        bus.clone(),
        metrics.clone(),
        notifier.clone(),
        gate_timers.clone(),
        Arc::new(crate::ui::FollowFile::new(&dir)),
    ];
    if opts.output == OutputMode::Json {
        observers.push(Arc::new(crate::ui::JsonLines));
    } else {
        observers.push(Arc::new(crate::ui::PlainLines::new(false)));
    }
    let runs = Runs::new(Config {
        journal: journal.clone(),
        registry: Arc::new(Registry::builtin()),
        library,
        observers,
        metrics: Some(metrics.clone()),
        owns: true,
        fleet: member.clone(),
        logs: None,
        log_mode: opts.output,
    })?;
    gate_timers.attach(&runs);
    let scheduler = Arc::new(Scheduler::new(
        schedules,
        journal.clone(),
        Arc::new(ScheduleLauncher { runs: runs.clone() }),
        opts.tick,
    ));

    // Caught from before serve says it listens: a SIGTERM sent once it has said so always stops
    // it at a safe point (exit 0), never by the signal's default action.
    let mut stop_signals = StopSignals::install()?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| ServeError::BadInput(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        action: "read the address listened on".into(),
        source,
    })?;
    let url = format!("http://{addr}");
    ServeInfo {
        pid: std::process::id(),
        url: url.clone(),
        token: local_token,
    }
    .write(&dir)
    .map_err(|source| ServeError::Io {
        action: format!("write {}", info::path(&dir).display()),
        source,
    })?;
    let count = scheduler.schedules().len();
    let event = ServeEvent {
        url: Some(&url),
        journal: Some(dir.display().to_string()),
        schedules: Some(count),
        ..ServeEvent::new("listening")
    };
    say(opts.output, &event, || {
        format!(
            "serving on {url} (journal {}; {count} schedule{})",
            dir.display(),
            if count == 1 { "" } else { "s" }
        )
    });

    let app = Arc::new(App {
        runs: runs.clone(),
        tokens,
        bus,
        metrics: metrics.clone(),
        scheduler: Some(scheduler.clone()),
        notifier: notifier.clone(),
        holder: HolderInfo {
            pid: std::process::id(),
            command: "serve".into(),
            schedules: true,
        },
    });
    let holder = Holder::listen(app.clone(), &dir);

    for (id, result) in runs.resume_owned() {
        match result {
            Ok(()) => {
                let event = ServeEvent {
                    run: Some(id),
                    ..ServeEvent::new("resuming")
                };
                say(opts.output, &event, || {
                    format!("resuming run {id}, which a previous serve was executing")
                });
            }
            Err(e) => eprintln!("could not resume run {id}: {e}"),
        }
    }
    // Runs parked at gates outlive a serve: their expiries are armed again (one that passed
    // while serve was down is applied at once) — in the background, as reading every parked
    // run must not hold up the API. On a shared journal the parked runs are their owners';
    // those whose owner went away are armed by the executor that holds them now (the claimer).
    let rearm = gate_timers.clone();
    let output = opts.output;
    let shared = member.is_some();
    tokio::spawn(async move {
        if shared {
            return;
        }
        for (id, path, at) in rearm.arm_waiting().await {
            let event = ServeEvent {
                run: Some(id),
                step: Some(&path),
                at: Some(at),
                ..ServeEvent::new("gate_expires")
            };
            say(output, &event, || {
                format!(
                    "gate `{path}` of run {id} expires at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            });
        }
    });

    let shutdown = CancelSource::new();
    let fleet_task = member.as_ref().map(|m| {
        m.spawn(
            &runs,
            Some(gate_timers.clone()),
            opts.output,
            shutdown.token(),
        )
    });
    let scheduler_task = tokio::spawn(scheduler.run(shutdown.token()));
    let stop = shutdown.token();
    let server = axum::serve(listener, api::router(app)).with_graceful_shutdown(async move {
        stop.cancelled().await;
    });
    let server_task = tokio::spawn(async move { server.await });

    let signal = stop_signals.recv().await;
    let event = ServeEvent {
        detail: Some(signal.clone()),
        ..ServeEvent::new("stopping")
    };
    say(opts.output, &event, || {
        format!("{signal}: stopping runs at a safe point")
    });
    shutdown.cancel(CancelReason::Interrupted(signal.clone()));
    let _ = scheduler_task.await;
    if let Some(task) = fleet_task {
        let _ = task.await;
    }
    runs.shutdown(&signal).await;
    // The runs stopped are still adoptable: revoking the lease frees them for another
    // executor now rather than after the TTL.
    if let Some(member) = &member {
        let me = member.me();
        let member = member.clone();
        let _ = tokio::task::spawn_blocking(move || member.leave()).await;
        let event = ServeEvent {
            executor: Some(me.clone()),
            ..ServeEvent::new("left")
        };
        say(opts.output, &event, || {
            format!("executor {me} left: the runs it owned are free for the others")
        });
    }
    // The runs' last news (a failure at shutdown, the interrupted runs' gates) is delivered
    // before the process goes, within a bound: a dead webhook must not hold up the exit.
    if !notifier.flush(NOTIFY_FLUSH).await {
        eprintln!(
            "some webhook notifications were not delivered within {}",
            humantime::format_duration(NOTIFY_FLUSH)
        );
    }
    metrics.set_notifications(notifier.delivered(), notifier.failed());
    let _ = tokio::time::timeout(Duration::from_secs(10), server_task).await;
    ServeInfo::remove(&dir);
    // The socket goes while this process still holds the journal (it does until it returns).
    holder.close().await;
    say(opts.output, &ServeEvent::new("stopped"), || {
        "stopped".to_owned()
    });
    Ok(())
}

/// Prints what serve does: a [`ServeEvent`] with `--output json`, a line for people otherwise.
pub(crate) fn say(output: OutputMode, event: &ServeEvent<'_>, human: impl FnOnce() -> String) {
    match output {
        OutputMode::Json => crate::ui::json::print(event),
        OutputMode::Human => outln!("{}", human()),
    }
}

/// SIGINT and SIGTERM, caught from the moment it is installed.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let catch = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|source| ServeError::Io {
                action: format!("catch {name}"),
                source,
            })
        };
        Ok(Self {
            int: catch(SignalKind::interrupt(), "SIGINT")?,
            term: catch(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// The name of the next signal caught.
    async fn recv(&mut self) -> String {
        tokio::select! {
            _ = self.int.recv() => "SIGINT".into(),
            _ = self.term.recv() => "SIGTERM".into(),
        }
    }
}

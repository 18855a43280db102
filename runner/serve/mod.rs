//! `runbook serve`: one long-lived process that holds the journal, fires schedules, executes
//! runs (parking them at gates, waking durable timers), resumes the runs a previous `serve`
//! was executing when it died, and serves an HTTP API, a web page and Prometheus metrics.
//! On SIGTERM it stops every run at a safe point — journaled as interrupted, resumed by the
//! next `serve` — and exits.

pub mod api;
pub mod auth;
pub mod info;
pub mod metrics;
pub mod notify;
pub mod runs;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runbook_steps::{CancelReason, CancelSource, Registry};

use crate::cli::{CliError, Env, exit};
use crate::engine::log::Observer;
use crate::library::Library;
use crate::schedule::scheduler::Scheduler;
use crate::serve::api::{App, Bus};
use crate::serve::auth::{Tokens, random_token};
use crate::serve::info::ServeInfo;
use crate::serve::metrics::Metrics;
use crate::serve::notify::{Notifier, NotifyEvent, Webhook};
use crate::serve::runs::{Runs, ScheduleLauncher};

/// How long a stopping `serve` waits for webhook notifications still being delivered.
const NOTIFY_FLUSH: Duration = Duration::from_secs(5);

/// How `serve` was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
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
pub async fn serve(env: &Env, opts: Options) -> Result<i32, CliError> {
    let mut tokens = match &opts.tokens {
        Some(path) => Tokens::from_file(path).map_err(CliError::Usage)?,
        None => Tokens::default(),
    };
    if let Ok(token) = std::env::var("RUNBOOK_API_TOKEN")
        && !token.trim().is_empty()
    {
        tokens.add("api", token.trim());
    }
    if !opts.listen.ip().is_loopback() && !tokens.has_remote() {
        return Err(CliError::Usage(format!(
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
        w.check().map_err(CliError::Usage)?;
    }
    let library = Library::from_env();
    let schedules = crate::schedule::load::load_all(&library, &opts.schedules).map_err(|e| {
        eprintln!("{e}");
        CliError::Usage("the schedules have problems".into())
    })?;

    let journal = env.open_journal()?;
    let dir = env.journal_dir();
    let local_token = random_token();
    tokens.set_local(local_token.clone());

    let metrics = Metrics::new();
    let bus = Bus::new(4096);
    let notifier = Notifier::new(webhooks, journal.clone(), opts.base_url.clone());
    let mut observers: Vec<Arc<dyn Observer>> = vec![
        bus.clone(),
        metrics.clone(),
        notifier.clone(),
        Arc::new(crate::ui::FollowFile::new(&dir)),
    ];
    if env.cli.output == crate::ui::OutputMode::Json {
        observers.push(Arc::new(crate::ui::JsonLines));
    } else {
        observers.push(Arc::new(crate::ui::PlainLines::new()));
    }
    let runs = Runs::new(
        journal.clone(),
        Arc::new(Registry::builtin()),
        library,
        observers,
        Some(metrics.clone()),
    )?;
    let scheduler = Arc::new(Scheduler::new(
        schedules,
        journal.clone(),
        Arc::new(ScheduleLauncher { runs: runs.clone() }),
        opts.tick,
    ));

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Other(e.into()))?;
    let url = format!("http://{addr}");
    ServeInfo {
        pid: std::process::id(),
        url: url.clone(),
        token: local_token,
    }
    .write(&dir)
    .map_err(|e| {
        CliError::Other(anyhow::anyhow!(
            "cannot write {}: {e}",
            info::path(&dir).display()
        ))
    })?;
    println!(
        "serving on {url} (journal {}; {} schedule{})",
        dir.display(),
        scheduler.schedules().len(),
        if scheduler.schedules().len() == 1 {
            ""
        } else {
            "s"
        }
    );

    for (id, result) in runs.resume_owned() {
        match result {
            Ok(()) => println!("resuming run {id}, which a previous serve was executing"),
            Err(e) => eprintln!("could not resume run {id}: {e}"),
        }
    }

    let shutdown = CancelSource::new();
    let scheduler_task = tokio::spawn(scheduler.clone().run(shutdown.token()));
    let app = Arc::new(App {
        runs: runs.clone(),
        tokens,
        bus,
        metrics: metrics.clone(),
        scheduler,
        notifier: notifier.clone(),
    });
    let stop = shutdown.token();
    let server = axum::serve(listener, api::router(app)).with_graceful_shutdown(async move {
        stop.cancelled().await;
    });
    let server_task = tokio::spawn(async move { server.await });

    let signal = wait_for_signal().await;
    println!("{signal}: stopping runs at a safe point");
    shutdown.cancel(CancelReason::Interrupted(signal.clone()));
    let _ = scheduler_task.await;
    runs.shutdown(&signal).await;
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
    println!("stopped");
    Ok(exit::OK)
}

async fn wait_for_signal() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending::<String>().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT".into(),
        _ = term.recv() => "SIGTERM".into(),
    }
}

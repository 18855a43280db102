//! `runbook-node-agent`: the kubelet of one node of the Kubernetes testbed
//! (`testbeds/kubernetes.sh create … --agent-node NAME`), for end-to-end tests whose pods must
//! be real servers. The controllers that create, delete and order pods are the cluster's own;
//! the agent only does a kubelet's part for the pods bound to its node: it starts each pod's
//! server as a local process (chosen by its config, the image tag picking the version), stops
//! it when the pod is deleted, and reports the pod's status and readiness from the process's
//! real health. It also keeps the Node Ready (status and Lease heartbeats).
//!
//! ```text
//! runbook-node-agent --kubeconfig CLUSTER/kubeconfig --node agent-1 --config agent.json
//! ```
//!
//! Logs go to stderr (`RUNBOOK_NODE_AGENT_LOG` takes a tracing filter, default `info`).
//! SIGTERM or SIGINT stops every process it started, then it exits 0. Exit 1: it could not
//! start (bad config, API server unreachable); exit 2: bad arguments.

mod agent;
mod config;
mod image;
mod node;
mod pods;
mod probe;
mod process;
mod retry;
mod status;
mod template;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

/// Backs the pods bound to one Kubernetes node with local processes.
#[derive(Parser, Debug)]
#[command(name = "runbook-node-agent", version)]
struct Args {
    /// The node this agent is the kubelet of.
    #[arg(long)]
    node: String,
    /// The backends: which pods, which command (JSON; see the crate's config module).
    #[arg(long)]
    config: PathBuf,
    /// Credentials for the API server (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The node's address, reported as the node's `InternalIP` and every pod's IP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: String,
    /// How often the node's status and Lease are renewed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Write the agent's pid to this file once it is running.
    #[arg(long)]
    pid_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNBOOK_NODE_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runbook-node-agent: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot use the kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("cannot reach the API server: {0}")]
    Connect(String),
    #[error("cannot write the pid file {path}: {source}")]
    PidFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, StartError> {
    // rustls needs a process-wide provider; ring, as everywhere in the workspace.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let fail = |message: String| StartError::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let file = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| fail(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| StartError::Connect(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| StartError::Connect(e.to_string()))
}

async fn run(args: Args) -> Result<(), StartError> {
    let config = config::Config::load(&args.config)?;
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let client = client(args.kubeconfig.as_ref()).await?;

    // Registration is retried for a minute: the API server may still be starting.
    let deadline = Instant::now() + Duration::from_secs(60);
    let registration = loop {
        match node::Registration::register(
            client.clone(),
            &args.node,
            &args.node_ip,
            args.heartbeat,
        )
        .await
        {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "cannot register the node yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(StartError::Connect(e.to_string())),
        }
    };
    registration
        .heartbeat()
        .await
        .map_err(|e| StartError::Connect(e.to_string()))?;
    tracing::info!(node = %args.node, backends = config.backends.len(), "node Ready; watching its pods");
    if let Some(path) = &args.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            StartError::PidFile {
                path: path.display().to_string(),
                source,
            }
        })?;
    }

    let changed = Arc::new(Notify::new());
    let cache = pods::Cache::default();
    let heartbeat = tokio::spawn(registration.beat(args.heartbeat));
    let watch = tokio::spawn(pods::watch(
        client.clone(),
        args.node.clone(),
        cache.clone(),
        changed.clone(),
    ));
    let agent = agent::Agent::new(config, args.node, args.node_ip, client, cache, changed);
    agent
        .run(async {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        })
        .await;
    watch.abort();
    heartbeat.abort();
    Ok(())
}

//! `--detach`: the command returns as soon as the run executes, with its id, while the run goes
//! on in a background process — which holds the journal like any command executing a run
//! (parking at gates, answering other commands meanwhile) — or in the process that holds the
//! journal already.
//!
//! The background process is this program again, in a session of its own (no terminal's
//! hangup or Ctrl-C reaches it), handed the operation on its standard input (secret parameters
//! never appear on a command line, which every user of the machine can read). It writes one
//! [`DetachedReady`] line on its standard output once the run executes, and from then on its
//! output — and the run's — goes to `logs/RUN.log` in the journal directory. A command that
//! fails before that (a bad parameter, a held lock) fails in the background process; the
//! command line shows what it said and exits as it did.

use std::io::Read as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use runbook_journals::RunId;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use crate::cli::runs::{Mode, operate};
use crate::cli::{CliError, Env, exit};
use crate::ui::OutputMode;
use crate::ui::stdout::outln;
use crate::wire::{DetachedReady, Operation};

/// The hidden subcommand the background process runs.
pub const BACKGROUND: &str = "background";

/// How long the command line waits for the background process to take the run on. Creating
/// a run is loading its runbook and one journal commit; this bound is for a machine that
/// stalls.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Starts the background process for `op` (approving every gate if `yes`) and returns once the
/// run executes.
pub async fn spawn(env: &Env, op: &Operation, yes: bool) -> Result<i32, CliError> {
    let exe = std::env::current_exe().map_err(|e| {
        CliError::Other(anyhow::anyhow!(
            "cannot find this program to start it in the background: {e}"
        ))
    })?;
    let output = match env.cli.output {
        OutputMode::Human => "human",
        OutputMode::Json => "json",
    };
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--journal")
        .arg(env.journal_arg_for_child())
        .args(["--output", output, "--as", &env.who, BACKGROUND]);
    if yes {
        command.arg("--yes");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CliError::Other(anyhow::anyhow!("cannot start the background process: {e}"))
        })?;
    let pid = child.id().unwrap_or_default();
    let mut request = serde_json::to_vec(op).expect("operations serialize");
    request.push(b'\n');
    if let Some(mut stdin) = child.stdin.take() {
        // A process that died at once is told nothing; what it said explains why.
        let _ = stdin.write_all(&request).await;
    }
    let mut stderr = child.stderr.take().expect("piped");
    let said = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut printed = Vec::new();
    let ready = tokio::time::timeout(READY_WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<DetachedReady>(&line) {
                Ok(ready) => return Some(ready),
                Err(_) => printed.push(line),
            }
        }
        None
    })
    .await;
    for line in &printed {
        outln!("{line}");
    }
    match ready {
        Ok(Some(ready)) => {
            // Its standard error closes once it writes to its log instead: after that, nothing
            // it says is lost with this process.
            if let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(5), said).await {
                eprint!("{text}");
            }
            announce(env, &ready);
            Ok(exit::OK)
        }
        Ok(None) => {
            let status = child.wait().await.ok();
            eprint!("{}", said.await.unwrap_or_default());
            Ok(status.and_then(|s| s.code()).unwrap_or(exit::FAILED))
        }
        Err(_) => Err(CliError::Other(anyhow::anyhow!(
            "the background process (pid {pid}) did not take the run on within {}; `runbook status` shows whether it did since",
            humantime::format_duration(READY_WAIT)
        ))),
    }
}

/// Tells where the run goes on.
fn announce(env: &Env, ready: &DetachedReady) {
    let DetachedReady { run, pid, log } = ready;
    if env.cli.output == OutputMode::Json {
        crate::ui::json::print(
            &json!({ "event": "detached", "run": run.to_string(), "pid": pid, "log": log }),
        );
        return;
    }
    outln!("run {run} goes on in the background (pid {pid})");
    if let Some(log) = log {
        outln!("  output: {}", log.display());
    }
    outln!("  follow: runbook log {run} --follow");
    outln!("  status: runbook status {run}");
}

/// The background process: reads its operation and carries it out, detached from any
/// terminal.
pub async fn background(env: &Env, yes: bool) -> Result<i32, CliError> {
    // A session of its own: the terminal's hangup and Ctrl-C are for the command line that
    // started it, which has returned.
    let _ = nix::unistd::setsid();
    ignore_hangups();
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::Other(anyhow::anyhow!("cannot read the operation: {e}")))?;
    let op: Operation = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("the operation handed over is not readable: {e}")))?;
    operate(env, &op, Mode::Background { yes }).await
}

/// A hangup (a terminal closing after all) must not end the background process.
fn ignore_hangups() {
    use tokio::signal::unix::{SignalKind, signal};
    if let Ok(mut hup) = signal(SignalKind::hangup()) {
        tokio::spawn(async move { while hup.recv().await.is_some() {} });
    }
}

/// In the background process, once run `id` executes (in process `pid`): tells the command
/// line that started it, and sends everything this process says from now on to `log`.
pub fn ready(id: RunId, pid: u32, log: Option<&Path>) {
    let line = serde_json::to_string(&DetachedReady {
        run: id,
        pid,
        log: log.map(Path::to_path_buf),
    })
    .expect("ready lines serialize");
    outln!("{line}");
    let target = match log {
        Some(log) => crate::ui::open_log(log),
        None => std::fs::OpenOptions::new().write(true).open("/dev/null"),
    };
    match target {
        Ok(file) => {
            let _ = nix::unistd::dup2_stdout(&file);
            let _ = nix::unistd::dup2_stderr(&file);
        }
        Err(e) => tracing::warn!(error = %e, "the background process cannot write its output"),
    }
}

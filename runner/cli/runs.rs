//! `run`, `resume`, `approve`, `reject`, `abort`.

use std::sync::Arc;

use runbook_journals::{RunId, RunState};
use runbook_steps::{CancelReason, CancelSource, Registry};
use serde_json::json;

use crate::cli::remote::{Remote, params_json};
use crate::cli::{CliError, Env};
use crate::engine::log::Observer;
use crate::engine::{Engine, GateMode, Outcome, Resume, Start};
use crate::library::Library;
use crate::resupply::Given;
use crate::ui::{self, OutputMode};

/// Builds an engine for this process, with Ctrl-C / SIGTERM wired to its interrupt.
fn engine(env: &Env, gates: GateMode) -> Result<Engine, CliError> {
    let journal = env.open_journal()?;
    let observers: Vec<Arc<dyn Observer>> = vec![
        ui::observer(env.cli.output),
        Arc::new(ui::FollowFile::new(&env.journal_dir())),
    ];
    Ok(Engine {
        journal,
        registry: Arc::new(Registry::builtin()),
        observers,
        interrupt: signals(),
        who: env.who.clone(),
        gates,
        library: Library::from_env(),
    })
}

/// The first SIGINT or SIGTERM asks the run to stop at a safe point (the step in flight is
/// stopped and journaled as interrupted); a second one ends the process at once.
fn signals() -> runbook_steps::Cancel {
    use tokio::signal::unix::{SignalKind, signal};
    let source = CancelSource::new();
    let token = source.token();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let mut first = true;
        loop {
            let (name, code) = tokio::select! {
                _ = int.recv() => ("SIGINT", 130),
                _ = term.recv() => ("SIGTERM", 143),
            };
            if first {
                eprintln!("\n{name}: stopping at a safe point (again to quit at once)");
                source.cancel(CancelReason::Interrupted(name.into()));
                first = false;
            } else {
                std::process::exit(code);
            }
        }
    });
    token
}

fn resolve(engine: &Engine, run: &str) -> Result<RunId, CliError> {
    Ok(engine.journal.resolve(run)?)
}

/// Follows a run executing in `serve` until it ends or parks, printing its records as a local
/// run would, then how it settled; returns the exit code. `accepted` is `serve`'s answer to
/// the action this command line took on the run (its `since` says where the action began).
async fn follow_remote(
    env: &Env,
    remote: &Remote,
    id: &str,
    accepted: &serde_json::Value,
) -> Result<i32, CliError> {
    let observer = ui::observer(env.cli.output);
    let since = accepted["since"].as_u64();
    let state = remote
        .follow(id, false, since, |run, record| observer.record(run, record))
        .await?;
    let detail = remote.get(&format!("/runs/{id}")).await?;
    let run: RunId = detail["run"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CliError::Other(anyhow::anyhow!("serve sent no run id")))?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let outcome = match state {
        Some(RunState::Succeeded) => Outcome::Succeeded,
        Some(RunState::Waiting) => Outcome::Parked {
            path: text(&detail["open_gate"]["path"]),
            prompt: text(&detail["open_gate"]["prompt"]),
        },
        Some(RunState::NeedsAttention) => Outcome::NeedsAttention {
            path: text(&detail["attention"]["path"]),
            detail: text(&detail["attention"]["detail"]),
        },
        Some(RunState::Interrupted) => Outcome::Interrupted {
            signal: detail["reason"].as_str().unwrap_or("a signal").to_owned(),
        },
        Some(RunState::Aborted) => Outcome::Aborted,
        _ => Outcome::Failed {
            path: None,
            error: detail["reason"]
                .as_str()
                .unwrap_or("the run failed")
                .to_owned(),
        },
    };
    Ok(finish(env, run, &outcome))
}

/// `runbook run`.
pub async fn run(
    env: &Env,
    name: &str,
    params: &[(String, String)],
    gates: GateMode,
) -> Result<i32, CliError> {
    let engine = match engine(env, gates) {
        Ok(e) => e,
        Err(e) => {
            let remote = Remote::instead_of(env, e)?;
            by_name_only(name)?;
            let started = remote
                .post(
                    "/runs",
                    json!({ "runbook": name, "params": params_json(params), "yes": gates == GateMode::Yes }),
                )
                .await?;
            let id = started["run"].as_str().unwrap_or_default().to_owned();
            return follow_remote(env, &remote, &id, &started).await;
        }
    };
    let (id, outcome) = engine.start(Start::new(name, params)).await?;
    Ok(finish(env, id, &outcome))
}

/// Refuses to hand `serve` a runbook file: `serve` runs runbooks by name only (its API would
/// refuse a path, and a name is looked up in `serve`'s library, not beside this command line),
/// so a file this command line would have run itself — a path, or a name that is a file here —
/// is refused with what to do instead.
fn by_name_only(name: &str) -> Result<(), CliError> {
    let what = if std::path::Path::new(name).is_file() {
        "a file here".to_owned()
    } else if let Err(why) = crate::library::check_name(name) {
        format!("not a name ({why})")
    } else {
        return Ok(());
    };
    Err(CliError::Usage(format!(
        "the journal is held by `runbook serve`, which runs runbooks by name only, and `{name}` is {what}: \
         put the runbook in ./runbooks or a $RUNBOOK_PATH directory of serve and run it by its name, \
         or stop serve to run the file directly"
    )))
}

/// `runbook resume`.
pub async fn resume(env: &Env, run: &str, req: Resume, gates: GateMode) -> Result<i32, CliError> {
    let engine = match engine(env, gates) {
        Ok(e) => e,
        Err(e) => {
            let remote = Remote::instead_of(env, e)?;
            let accepted = remote
                .post(
                    &format!("/runs/{run}/resume"),
                    json!({
                        "retry_step": req.retry_step,
                        "skip_step": req.skip_step,
                        "reload": req.reload,
                        "accept_loss": req.accept_loss,
                        "params": params_json(&req.params.now),
                    }),
                )
                .await?;
            return follow_remote(env, &remote, run, &accepted).await;
        }
    };
    let id = resolve(&engine, run)?;
    let outcome = engine.resume(id, req).await?;
    Ok(finish(env, id, &outcome))
}

/// A verdict on a gate, as the command line gives it.
pub struct Decision<'a> {
    /// Approve (or reject).
    pub approved: bool,
    /// The gate's path, if the run has several open.
    pub step: Option<&'a str>,
    /// Why.
    pub comment: Option<String>,
    /// `-p name=value` pairs (secret parameters the run needs again).
    pub params: &'a [(String, String)],
}

/// `runbook approve` / `runbook reject`.
pub async fn decide(
    env: &Env,
    run: &str,
    decision: Decision<'_>,
    gates: GateMode,
) -> Result<i32, CliError> {
    let Decision {
        approved,
        step,
        comment,
        params,
    } = decision;
    let engine = match engine(env, gates) {
        Ok(e) => e,
        Err(e) => {
            let remote = Remote::instead_of(env, e)?;
            let verb = if approved { "approve" } else { "reject" };
            let accepted = remote
                .post(
                    &format!("/runs/{run}/{verb}"),
                    json!({ "step": step, "comment": comment, "params": params_json(params) }),
                )
                .await?;
            return follow_remote(env, &remote, run, &accepted).await;
        }
    };
    let id = resolve(&engine, run)?;
    let given = Given::now(params.to_vec());
    let outcome = engine.decide(id, approved, step, comment, &given).await?;
    Ok(finish(env, id, &outcome))
}

/// `runbook abort`.
pub async fn abort(env: &Env, run: &str, reason: Option<String>) -> Result<i32, CliError> {
    let journal = match env.open_journal() {
        Ok(j) => j,
        Err(e) => {
            let remote = Remote::instead_of(env, e)?;
            let out = remote
                .post(&format!("/runs/{run}/abort"), json!({ "reason": reason }))
                .await?;
            let id: RunId = out["run"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| CliError::Other(anyhow::anyhow!("serve sent no run id")))?;
            return Ok(finish(env, id, &Outcome::Aborted));
        }
    };
    let engine = Engine {
        journal,
        registry: Arc::new(Registry::builtin()),
        observers: vec![
            ui::observer(env.cli.output),
            Arc::new(ui::FollowFile::new(&env.journal_dir())),
        ],
        interrupt: CancelSource::new().token(),
        who: env.who.clone(),
        gates: GateMode::Detach,
        library: Library::from_env(),
    };
    let id = resolve(&engine, run)?;
    let outcome = engine.abort(id, reason)?;
    Ok(finish(env, id, &outcome))
}

/// Prints how the run ended and returns its exit code.
fn finish(env: &Env, id: RunId, outcome: &Outcome) -> i32 {
    let code = outcome.exit_code();
    if env.cli.output == OutputMode::Json {
        let (state, detail) = match outcome {
            Outcome::Succeeded => ("succeeded", json!(null)),
            Outcome::Failed { path, error } => ("failed", json!({ "step": path, "error": error })),
            Outcome::Parked { path, prompt } => {
                ("waiting", json!({ "step": path, "prompt": prompt }))
            }
            Outcome::NeedsAttention { path, detail } => {
                ("needs-attention", json!({ "step": path, "detail": detail }))
            }
            Outcome::Interrupted { signal } => ("interrupted", json!({ "signal": signal })),
            Outcome::Aborted => ("aborted", json!(null)),
        };
        println!(
            "{}",
            json!({ "event": "exit", "run": id.to_string(), "state": state, "code": code, "detail": detail })
        );
        return code;
    }
    match outcome {
        Outcome::Succeeded => println!("run {id} succeeded"),
        Outcome::Failed { error, path } => match path {
            Some(p) => println!("run {id} failed: step `{p}` failed: {error}"),
            None => println!("run {id} failed: {error}"),
        },
        Outcome::Parked { path, prompt } => {
            println!("run {id} is waiting at gate `{path}`: {prompt}");
            println!("  approve: runbook approve {id} --comment \"…\"");
            println!("  reject:  runbook reject {id} --comment \"…\"");
        }
        Outcome::NeedsAttention { path, detail } => {
            println!("{}", crate::engine::attention_message(id, path, detail));
        }
        Outcome::Interrupted { signal } => {
            println!("run {id} was interrupted by {signal}; continue with: runbook resume {id}");
        }
        Outcome::Aborted => println!("run {id} aborted"),
    }
    code
}

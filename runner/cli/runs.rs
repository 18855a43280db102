//! `run`, `resume`, `approve`, `reject`, `abort`.
//!
//! A command that executes a run holds the journal while it does, and answers the other
//! commands of this machine meanwhile ([`crate::serve::holder`]): its own run executes in the
//! foreground, what others ask of it beside. When another process holds the journal, the
//! command asks that process to execute the run instead and follows it to where it parks or
//! ends, exiting as it would have here. With `--detach` the run goes on in a background
//! process of its own ([`crate::cli::detach`]) and the command returns at once.

use std::sync::Arc;
use std::time::Instant;

use runbook_journals::{Journal, RunId, RunState};
use runbook_steps::{CancelSource, Registry};
use serde_json::json;

use crate::cli::access::{self, Access, Want};
use crate::cli::remote::{Remote, params_json};
use crate::cli::{CliError, Env, detach, exit};
use crate::engine::{Abort, Aborting, Engine, GateMode, Outcome, Resume};
use crate::failure::Kind;
use crate::library::Library;
use crate::resupply::Given;
use crate::serve::forward::{Forwarded, forward};
use crate::serve::holder::Holder;
use crate::serve::runs::{Here, Runs, Verdict};
use crate::ui::stdout::outln;
use crate::ui::{self, OutputMode};
use crate::wire::{
    AbortRun, Accepted, Decide, Operation, OwnerAction, OwnerAnswer, OwnerRequest, PauseRun,
    ResumeRun, RunDetail, StartRun,
};

/// Where a run goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Here, in the foreground, its gates answered as given.
    Foreground(GateMode),
    /// In a background process: start one and return (`--detach`); it parks at gates, or
    /// approves them with `yes`.
    Detach {
        /// Approve every gate.
        yes: bool,
    },
    /// This is that background process.
    Background {
        /// Approve every gate.
        yes: bool,
    },
}

impl Mode {
    fn gates(self) -> GateMode {
        match self {
            Self::Foreground(gates) => gates,
            Self::Detach { yes: true } | Self::Background { yes: true } => GateMode::Yes,
            Self::Detach { yes: false } | Self::Background { yes: false } => GateMode::Detach,
        }
    }

    fn background(self) -> bool {
        matches!(self, Self::Background { .. })
    }
}

/// `run`, `resume`, `approve`, `reject`: carries out `op`, where `mode` says.
pub async fn operate(env: &Env, op: &Operation, mode: Mode) -> Result<i32, CliError> {
    if let Mode::Detach { yes } = mode {
        return detach::spawn(env, op, yes).await;
    }
    let started = Instant::now();
    loop {
        let result = match access::find(env, Want::Write).await? {
            Access::Local(journal) => return hold(env, journal, op, mode).await,
            Access::Remote(remote) => through(env, &remote, op, mode).await,
        };
        match result {
            Err(e) if access::again(&e, started) => access::pause().await,
            other => return other,
        }
    }
}

/// The command's name, as the holder tells others what it is.
fn command(op: &Operation) -> &'static str {
    match op {
        Operation::Start { .. } => "run",
        Operation::Resume { unpause: true, .. } => "unpause",
        Operation::Resume { .. } => "resume",
        Operation::Decide { approved: true, .. } => "approve",
        Operation::Decide { .. } => "reject",
    }
}

/// Carries out `op` holding the journal, answering other commands until nothing executes here
/// any more; the socket goes before the journal does. On a journal shared by several
/// executors (etcd) this process joins them while it does, and leaves on its way out.
async fn hold(
    env: &Env,
    journal: Arc<dyn Journal>,
    op: &Operation,
    mode: Mode,
) -> Result<i32, CliError> {
    let dir = env.journal_dir();
    let joined = env.join()?;
    let member = joined.as_ref().map(|j| Arc::clone(j.member()));
    let holder = Holder::for_command(command(op), journal, &dir, env.cli.output, member.clone())?;
    let stop = CancelSource::new();
    let standing = member
        .as_ref()
        .map(|m| m.spawn(holder.runs(), None, env.cli.output, stop.token()));
    let result = execute(env, &holder, op, mode).await;
    holder.close().await;
    // Nothing acts on the lease any more before it is revoked (a revoked lease is lost, and a
    // lost one would be joined again).
    stop.cancel(runbook_steps::CancelReason::Interrupted("exit".into()));
    if let Some(task) = standing {
        let _ = task.await;
    }
    drop(joined);
    result
}

/// The request `op` on run `id` stands for when another executor owns the run.
fn owner_request(env: &Env, op: &Operation, id: RunId) -> Option<OwnerRequest> {
    let action = match op {
        Operation::Start { .. } => return None,
        Operation::Resume {
            retry_step,
            skip_step,
            reload,
            accept_loss,
            unpause,
            comment,
            params,
            ..
        } => OwnerAction::Resume(ResumeRun {
            retry_step: retry_step.clone(),
            skip_step: skip_step.clone(),
            reload: *reload,
            accept_loss: *accept_loss,
            unpause: *unpause,
            comment: comment.clone(),
            params: params_json(params),
        }),
        Operation::Decide {
            approved,
            step,
            comment,
            params,
            ..
        } => {
            let body = Decide {
                comment: comment.clone(),
                step: step.clone(),
                params: params_json(params),
            };
            if *approved {
                OwnerAction::Approve(body)
            } else {
                OwnerAction::Reject(body)
            }
        }
    };
    Some(OwnerRequest {
        run: id,
        who: env.who.clone(),
        action,
    })
}

/// The owner's answer to this command's request, as this command's result: an error of its
/// kind, or — the run going on in its owner — the run followed through the journal to where
/// it parks or ends.
async fn owner_answered(
    env: &Env,
    journal: &Arc<dyn Journal>,
    answer: OwnerAnswer,
    mode: Mode,
) -> Result<i32, CliError> {
    let accepted = match answer {
        OwnerAnswer::Accepted(accepted) => accepted,
        OwnerAnswer::Error(body) => {
            return Err(CliError::Holder {
                kind: body.kind.unwrap_or(Kind::Failed),
                message: body.error,
            });
        }
        other => return Err(unexpected(&other)),
    };
    if mode.background() {
        detach::ready(accepted.run, std::process::id(), None);
        return Ok(exit::OK);
    }
    follow_store(env, journal, accepted.run, accepted.since).await
}

/// How often a run executing in another executor is read from the store.
const STORE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Follows run `id`, executing in another executor, through the journal: prints its records
/// after `since` until it parks or ends, then how it settled; returns the exit code.
async fn follow_store(
    env: &Env,
    journal: &Arc<dyn Journal>,
    id: RunId,
    since: u64,
) -> Result<i32, CliError> {
    let observer = ui::observer(env.cli.output, env.cli.verbose);
    let mut last = since;
    loop {
        let records = tokio::task::block_in_place(|| journal.read_after(id, last))?;
        let mut settled = None;
        for record in &records {
            observer.record(id, record);
            last = record.seq;
            if let runbook_journals::Event::StateChanged { state, .. } = &record.event {
                settled = state.is_settled().then_some(*state);
            }
        }
        if let Some(state) = settled {
            let records = tokio::task::block_in_place(|| journal.read(id))?;
            let view = crate::engine::view::RunView::from_records(id, &records)
                .map_err(crate::engine::EngineError::from)?;
            let detail = ui::report::run_detail(&view);
            let outcome = outcome_of(&detail, state);
            return Ok(finish(env, id, &outcome, detail.reason.as_deref()));
        }
        tokio::time::sleep(STORE_POLL).await;
    }
}

async fn execute(env: &Env, holder: &Holder, op: &Operation, mode: Mode) -> Result<i32, CliError> {
    let runs = holder.runs().clone();
    signals(runs.clone());
    let journal = runs.journal().clone();
    let id = match op {
        Operation::Start { id, .. } => id.unwrap_or_default(),
        Operation::Resume { run, .. } | Operation::Decide { run, .. } => journal.resolve(run)?,
    };
    // On a shared journal, a run another executor owns is continued there.
    if let (Some(member), Some(request)) = (runs.member(), owner_request(env, op, id)) {
        match forward(member, &journal, &request).await {
            Forwarded::Here => {}
            Forwarded::Answer(answer) => {
                let result = owner_answered(env, &journal, answer, mode).await;
                drain(&runs).await;
                return result;
            }
        }
    }
    let log = runs.log_path(id);
    let observers: Vec<Arc<dyn crate::engine::log::Observer>> = match (mode, &log) {
        (Mode::Background { .. }, Some(log)) => {
            vec![Arc::new(ui::LogFile::new(log, env.cli.output))]
        }
        _ => vec![ui::observer(env.cli.output, env.cli.verbose)],
    };
    let here = Here {
        gates: mode.gates(),
        observers,
    };
    let done = tokio::task::block_in_place(|| match op {
        Operation::Start { target, params, .. } => runs
            .start_here(target, params, &env.who, Some(id), here)
            .map(|(_, done)| done),
        Operation::Resume {
            retry_step,
            skip_step,
            reload,
            accept_loss,
            unpause,
            comment,
            params,
            ..
        } => runs.resume_here(
            id,
            &Resume {
                retry_step: retry_step.clone(),
                skip_step: skip_step.clone(),
                reload: *reload,
                params: Given::now(params.clone()),
                accept_loss: *accept_loss,
                unpause: *unpause,
                comment: comment.clone(),
            },
            &env.who,
            here,
        ),
        Operation::Decide {
            approved,
            step,
            comment,
            params,
            ..
        } => runs.decide_here(
            id,
            Verdict {
                approved: *approved,
                step: step.clone(),
                comment: comment.clone(),
            },
            params,
            &env.who,
            here,
        ),
    })?;
    if mode.background() {
        detach::ready(id, std::process::id(), log.as_deref());
    }
    let outcome = done
        .await
        .map_err(|_| CliError::Other(anyhow::anyhow!("the execution of run {id} vanished")))
        .and_then(|outcome| outcome.map_err(CliError::from));
    let result = outcome.map(|outcome| {
        let reason = journal.summary(id).ok().and_then(|s| s.reason);
        finish(env, id, &outcome, reason.as_deref())
    });
    // Whatever became of this command's run, what others asked of this process goes on.
    drain(&runs).await;
    result
}

/// Waits until the runs this process executes for other commands park or end, saying so.
async fn drain(runs: &Arc<Runs>) {
    let others = runs.active();
    if !others.is_empty() {
        eprintln!(
            "this process holds the journal until the runs it executes for other commands park or end (Ctrl-C stops them at a safe point):"
        );
        for id in others {
            match runs.log_path(id) {
                Some(log) => eprintln!("  run {id} (output: {})", log.display()),
                None => eprintln!("  run {id}"),
            }
        }
    }
    runs.idle(true).await;
}

/// The first SIGINT or SIGTERM asks every run executing here to stop at a safe point (the step
/// in flight is stopped and journaled as interrupted) and admits nothing more; a second one
/// ends the process at once.
fn signals(runs: Arc<Runs>) {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed here, before any run starts, not in the task: a signal sent as soon as the
    // first line is out is caught, never the default action's.
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if first {
                eprintln!("\n{name}: stopping at a safe point (again to quit at once)");
                let runs = runs.clone();
                tokio::spawn(async move { runs.shutdown(name).await });
                first = false;
            } else {
                std::process::exit(exit::of_outcome(&Outcome::Interrupted {
                    signal: name.to_owned(),
                }));
            }
        }
    });
}

/// Carries out `op` through the holder of the journal.
async fn through(env: &Env, remote: &Remote, op: &Operation, mode: Mode) -> Result<i32, CliError> {
    let accepted = match op {
        Operation::Start { target, params, .. } => {
            by_name_only(remote, target)?;
            remote
                .start(&StartRun {
                    runbook: target.clone(),
                    params: params_json(params),
                    yes: mode.gates() == GateMode::Yes,
                })
                .await?
        }
        Operation::Resume {
            run,
            retry_step,
            skip_step,
            reload,
            accept_loss,
            unpause,
            comment,
            params,
        } => {
            remote
                .resume(
                    run,
                    &ResumeRun {
                        retry_step: retry_step.clone(),
                        skip_step: skip_step.clone(),
                        reload: *reload,
                        accept_loss: *accept_loss,
                        unpause: *unpause,
                        comment: comment.clone(),
                        params: params_json(params),
                    },
                )
                .await?
        }
        Operation::Decide {
            run,
            approved,
            step,
            comment,
            params,
        } => {
            remote
                .decide(
                    run,
                    *approved,
                    &Decide {
                        comment: comment.clone(),
                        step: step.clone(),
                        params: params_json(params),
                    },
                )
                .await?
        }
    };
    // The holder took the run on: from here on nothing is asked of it again.
    let settled = if mode.background() {
        let pid = remote.holder().pid;
        detach::ready(accepted.run, pid, accepted.log.as_deref());
        Ok(exit::OK)
    } else {
        follow_remote(env, remote, &accepted).await
    };
    settled.map_err(|e| match e {
        CliError::Holder {
            kind: Kind::Unavailable,
            message,
        } => CliError::Holder {
            kind: Kind::Failed,
            message: format!(
                "lost the process holding the journal while following run {}: {message}; see `runbook status {}`",
                accepted.run, accepted.run
            ),
        },
        other => other,
    })
}

/// Follows a run executing in the holder until it ends or parks, printing its records from
/// this command's action on (as a local run would), then how it settled; returns the exit
/// code.
async fn follow_remote(env: &Env, remote: &Remote, accepted: &Accepted) -> Result<i32, CliError> {
    let observer = ui::observer(env.cli.output, env.cli.verbose);
    let id = accepted.run.to_string();
    let (state, _) = remote
        .follow(
            &id,
            false,
            Some(accepted.since),
            accepted.since,
            |run, record| {
                observer.record(run, record);
            },
        )
        .await?;
    let detail = remote.detail(&id).await?;
    let outcome = outcome_of(&detail, state.unwrap_or(detail.state));
    Ok(finish(
        env,
        accepted.run,
        &outcome,
        detail.reason.as_deref(),
    ))
}

/// How a run settled, as its detail tells it.
fn outcome_of(detail: &RunDetail, state: RunState) -> Outcome {
    let reason = || detail.reason.clone().unwrap_or_default();
    match state {
        RunState::Succeeded => Outcome::Succeeded,
        RunState::Waiting => {
            let (path, prompt) = detail
                .open_gate
                .as_ref()
                .map(|g| (g.path.clone(), g.prompt.clone()))
                .unwrap_or_default();
            Outcome::Parked { path, prompt }
        }
        RunState::NeedsAttention => {
            let (path, detail) = detail
                .attention
                .as_ref()
                .map(|a| (a.path.clone(), a.detail.clone()))
                .unwrap_or_default();
            Outcome::NeedsAttention { path, detail }
        }
        RunState::Interrupted => Outcome::Interrupted {
            signal: reason()
                .strip_prefix("interrupted by ")
                .map_or_else(|| "a signal".to_owned(), str::to_owned),
        },
        RunState::Aborted => Outcome::Aborted,
        RunState::Paused => {
            let (by, comment) = detail
                .reason
                .as_deref()
                .and_then(|r| r.strip_prefix("paused by "))
                .map_or(("an operator".to_owned(), None), |rest| {
                    match rest.split_once(": ") {
                        Some((by, c)) => (by.to_owned(), Some(c.to_owned())),
                        None => (rest.to_owned(), None),
                    }
                });
            Outcome::Paused { by, comment }
        }
        _ => Outcome::Failed {
            path: detail
                .reason
                .as_deref()
                .and_then(crate::engine::failed_step)
                .map(str::to_owned),
            error: detail
                .reason
                .clone()
                .unwrap_or_else(|| format!("the run is {state}")),
        },
    }
}

/// Refuses to hand the holder a runbook file: the API runs runbooks by name only (a path
/// would let any token holder of `serve` run any YAML file it can read, and a name is looked
/// up in the holder's library, not beside this command line), so a file this command line
/// would have run itself — a path, or a name that is a file here — is refused with what to do
/// instead.
fn by_name_only(remote: &Remote, name: &str) -> Result<(), CliError> {
    let what = if std::path::Path::new(name).is_file() {
        "a file here".to_owned()
    } else if let Err(why) = crate::library::check_name(name) {
        format!("not a name ({why})")
    } else {
        return Ok(());
    };
    let holder = remote.holder();
    let (who, instead) = if holder.command == "serve" {
        (
            "`runbook serve`".to_owned(),
            "or stop serve to run the file directly",
        )
    } else {
        (
            format!("`runbook {}` (pid {})", holder.command, holder.pid),
            "or run the file once that process has let the journal go",
        )
    };
    Err(CliError::Usage(format!(
        "the journal is held by {who}, which runs runbooks by name only, and `{name}` is {what}: \
         put the runbook in ./runbooks or a $RUNBOOK_PATH directory of that process and run it by its name, \
         {instead}"
    )))
}

/// `runbook abort`: stops the step in flight, runs the cleanup steps (unless `no_cleanup`),
/// and ends the run aborted.
pub async fn abort(
    env: &Env,
    run: &str,
    reason: Option<String>,
    no_cleanup: bool,
) -> Result<i32, CliError> {
    let started = Instant::now();
    loop {
        let result = match access::find(env, Want::Write).await? {
            Access::Local(journal) => {
                let joined = env.join()?;
                let id = journal.resolve(run)?;
                if let Some(joined) = &joined {
                    let action = OwnerAction::Abort(AbortRun {
                        reason: reason.clone(),
                        no_cleanup,
                    });
                    match ask_owner(env, joined, &journal, id, action).await? {
                        Some(OwnerAnswer::Aborted(a)) => {
                            return Ok(finished_abort(env, a.run, a.reason.as_deref()));
                        }
                        Some(other) => return Err(unexpected(&other)),
                        None => {}
                    }
                }
                let engine = Engine {
                    journal: journal.clone(),
                    registry: Arc::new(Registry::builtin()),
                    observers: vec![
                        ui::observer(env.cli.output, env.cli.verbose),
                        Arc::new(ui::FollowFile::new(&env.journal_dir())),
                    ],
                    interrupt: CancelSource::new().token(),
                    pause: crate::engine::pause::Pause::new(),
                    who: env.who.clone(),
                    gates: GateMode::Detach,
                    library: Library::from_env(),
                };
                let req = Abort {
                    reason,
                    no_cleanup,
                    params: Given::default(),
                };
                // The reads and the checks block; the cleanup steps run as steps do.
                match tokio::task::block_in_place(|| engine.prepare_abort(id, &req))? {
                    Aborting::Done(_) => {}
                    Aborting::Cleanup(cleanup) => {
                        engine.clean_up(*cleanup).await?;
                    }
                }
                let why = journal.summary(id).ok().and_then(|s| s.reason);
                return Ok(finished_abort(env, id, why.as_deref()));
            }
            Access::Remote(remote) => {
                remote
                    .abort(
                        run,
                        &AbortRun {
                            reason: reason.clone(),
                            no_cleanup,
                        },
                    )
                    .await
            }
        };
        match result {
            Ok(aborted) => return Ok(finished_abort(env, aborted.run, aborted.reason.as_deref())),
            Err(e) if access::again(&e, started) => access::pause().await,
            Err(e) => return Err(e),
        }
    }
}

/// On a shared journal: sends `action` on run `id` to its owner when another executor owns
/// it; its answer (an error of its kind), or `None` when it is done here.
async fn ask_owner(
    env: &Env,
    joined: &crate::cli::executor::Joined,
    journal: &Arc<dyn Journal>,
    id: RunId,
    action: OwnerAction,
) -> Result<Option<OwnerAnswer>, CliError> {
    let request = OwnerRequest {
        run: id,
        who: env.who.clone(),
        action,
    };
    match forward(joined.member(), journal, &request).await {
        Forwarded::Here => Ok(None),
        Forwarded::Answer(OwnerAnswer::Error(body)) => Err(CliError::Holder {
            kind: body.kind.unwrap_or(Kind::Failed),
            message: body.error,
        }),
        Forwarded::Answer(answer) => Ok(Some(answer)),
    }
}

fn unexpected(answer: &OwnerAnswer) -> CliError {
    CliError::Other(anyhow::anyhow!(
        "the owner of the run answered something else than asked: {answer:?}"
    ))
}

/// `abort` did what it was asked: exit 0.
fn finished_abort(env: &Env, id: RunId, reason: Option<&str>) -> i32 {
    finish(env, id, &Outcome::Aborted, reason);
    exit::OK
}

/// Prints how the run settled and returns its exit code. `reason` is the run's own account
/// of its state (who aborted it, and why).
pub(super) fn finish(env: &Env, id: RunId, outcome: &Outcome, reason: Option<&str>) -> i32 {
    let code = exit::of_outcome(outcome);
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
            Outcome::Aborted => (
                "aborted",
                reason.map_or(json!(null), |r| json!({ "reason": r })),
            ),
            Outcome::Paused { by, comment } => ("paused", json!({ "by": by, "comment": comment })),
        };
        ui::json::print(
            &json!({ "event": "exit", "run": id.to_string(), "state": state, "code": code, "detail": detail }),
        );
        return code;
    }
    match outcome {
        Outcome::Succeeded => outln!("run {id} succeeded"),
        // The step's failure was printed with its step (once); here only what to do next.
        Outcome::Failed { path: Some(p), .. } => {
            let [retry, skip] = crate::engine::attention_commands(id, p);
            outln!("run {id} failed at step `{p}`; once the cause is fixed:");
            outln!("  {retry} --comment \"…\"   # run it again");
            outln!("  {skip} --comment \"…\"    # treat it as done");
        }
        Outcome::Failed { error, path: None } => outln!("run {id} failed: {error}"),
        Outcome::Parked { path, prompt } => {
            outln!("run {id} is waiting at gate `{path}`: {prompt}");
            let runbook = crate::ui::hint::runbook();
            outln!("  approve: {runbook} approve {id} --comment \"…\"");
            outln!("  reject:  {runbook} reject {id} --comment \"…\"");
        }
        Outcome::NeedsAttention { path, detail } => {
            outln!("{}", crate::engine::attention_message(id, path, detail));
        }
        Outcome::Interrupted { signal } => {
            outln!(
                "run {id} was interrupted by {signal}; continue with: {} resume {id}",
                crate::ui::hint::runbook()
            );
        }
        Outcome::Aborted => match reason {
            Some(reason) => outln!("run {id} {reason}"),
            None => outln!("run {id} aborted"),
        },
        Outcome::Paused { by, comment } => {
            outln!(
                "run {id} is {}; it keeps its lock",
                crate::engine::paused_reason(by, comment.as_deref())
            );
            let rb = crate::ui::hint::runbook();
            outln!("  continue: {rb} unpause {id} --comment \"…\"");
            outln!("  abort:    {rb} abort {id}");
        }
    }
    code
}

/// `runbook pause`: the run stops at its next step boundary, keeping its lock, until
/// `runbook unpause`.
pub async fn pause(env: &Env, run: &str, comment: Option<String>) -> Result<i32, CliError> {
    let started = Instant::now();
    loop {
        let result = match access::find(env, Want::Write).await? {
            Access::Local(journal) => {
                let joined = env.join()?;
                let id = journal.resolve(run)?;
                if let Some(joined) = &joined {
                    let action = OwnerAction::Pause(PauseRun {
                        comment: comment.clone(),
                    });
                    match ask_owner(env, joined, &journal, id, action).await? {
                        Some(OwnerAnswer::Paused(p)) => {
                            return Ok(paused(env, p.run, p.state, p.reason.as_deref()));
                        }
                        Some(other) => return Err(unexpected(&other)),
                        None => {}
                    }
                }
                // Nobody holds the journal, so nobody executes the run: it is paused where it
                // stopped (on a shared journal: nobody else owns it).
                let engine = Engine {
                    journal: journal.clone(),
                    registry: Arc::new(Registry::builtin()),
                    observers: vec![Arc::new(ui::FollowFile::new(&env.journal_dir()))],
                    interrupt: CancelSource::new().token(),
                    pause: crate::engine::pause::Pause::new(),
                    who: env.who.clone(),
                    gates: GateMode::Detach,
                    library: Library::from_env(),
                };
                tokio::task::block_in_place(|| engine.pause_stopped(id, comment.as_deref()))?;
                let summary = journal.summary(id)?;
                Ok((id, summary.state, summary.reason))
            }
            Access::Remote(remote) => remote
                .pause(
                    run,
                    &PauseRun {
                        comment: comment.clone(),
                    },
                )
                .await
                .map(|p| (p.run, p.state, p.reason)),
        };
        match result {
            Ok((id, state, reason)) => return Ok(paused(env, id, state, reason.as_deref())),
            Err(e) if access::again(&e, started) => access::pause().await,
            Err(e) => return Err(e),
        }
    }
}

/// Prints where a pause left the run: paused, or pausing once its step in flight ends.
fn paused(env: &Env, id: RunId, state: RunState, reason: Option<&str>) -> i32 {
    // A run that ended while its last step was in flight reached no boundary to pause at.
    let code = if state.is_terminal() {
        exit::BAD_INPUT
    } else {
        exit::OK
    };
    if env.cli.output == OutputMode::Json {
        ui::json::print(
            &json!({ "event": "pause", "run": id.to_string(), "state": state.as_str(), "reason": reason, "code": code }),
        );
    } else if state.is_terminal() {
        outln!("run {id} ended ({state}) before it reached a step boundary: it was not paused");
    } else if state == RunState::Paused {
        outln!(
            "run {id} is {}; it keeps its lock",
            reason.unwrap_or("paused")
        );
        outln!(
            "  continue: {} unpause {id} --comment \"…\"",
            crate::ui::hint::runbook()
        );
    } else {
        outln!(
            "run {id} pauses once its step in flight ends (it is {state}); `{} status {id}` shows when",
            crate::ui::hint::runbook()
        );
    }
    code
}

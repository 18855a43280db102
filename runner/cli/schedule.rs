//! `runbook schedule list|pause|resume|trigger` — on the journal, or through the `serve`
//! that holds it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use runbook_journals::Trigger;
use runbook_steps::{CancelSource, Registry};

use crate::cli::access::{self, Access, Want};
use crate::cli::remote::Remote;
use crate::cli::{CliError, Env, ScheduleCommand, exit};
use crate::engine::{Engine, GateMode, Start};
use crate::library::Library;
use crate::schedule::Schedule;
use crate::schedule::state::{FireOutcome, ScheduleState};
use crate::ui::stdout::outln;
use crate::ui::{self, OutputMode};
use crate::wire::ScheduleStatus;

/// Runs a schedule command.
pub async fn run(env: &Env, command: &ScheduleCommand, files: &[PathBuf]) -> Result<i32, CliError> {
    let want = if matches!(command, ScheduleCommand::List) {
        Want::Read
    } else {
        Want::Write
    };
    let started = Instant::now();
    let journal = loop {
        match access::find(env, want).await? {
            Access::Local(journal) => break journal,
            Access::Remote(remote) => match remote_command(env, &remote, command).await {
                Err(e) if access::again(&e, started) => access::pause().await,
                other => return other,
            },
        }
    };
    let library = Library::from_env();
    let schedules = crate::schedule::load::load_all(&library, files).map_err(|e| {
        eprintln!("{e}");
        CliError::Usage("the schedules have problems".into())
    })?;
    let find = |name: &str| -> Result<&Schedule, CliError> {
        schedules
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| CliError::Usage(format!("no schedule `{name}`")))
    };
    match command {
        ScheduleCommand::List => {
            let list: Vec<ScheduleStatus> = schedules
                .iter()
                .map(|s| {
                    ScheduleState::load(journal.as_ref(), &s.name)
                        .map(|st| crate::schedule::status(s, &st, journal.as_ref()))
                })
                .collect::<Result<_, _>>()?;
            print_list(env, &list);
        }
        ScheduleCommand::Pause { name } | ScheduleCommand::Resume { name } => {
            find(name)?;
            let paused = matches!(command, ScheduleCommand::Pause { .. });
            ScheduleState::update(journal.as_ref(), name, |st| st.set_paused(paused))?;
            changed(env, name, if paused { "paused" } else { "resumed" }, None);
        }
        ScheduleCommand::Trigger { name } => {
            // No serve: the fire runs here, in the foreground.
            let s = find(name)?.clone();
            let engine = Engine {
                journal: journal.clone(),
                registry: Arc::new(Registry::builtin()),
                observers: vec![
                    ui::observer(env.cli.output, env.cli.verbose),
                    Arc::new(ui::FollowFile::new(&env.journal_dir())),
                ],
                interrupt: CancelSource::new().token(),
                pause: crate::engine::pause::Pause::new(),
                who: format!("schedule:{}", s.name),
                gates: GateMode::Detach,
                library,
            };
            let now = Utc::now();
            let params = s.param_pairs();
            let (id, outcome) = engine
                .start(Start {
                    target: &s.runbook,
                    params: &params,
                    id: None,
                    trigger: Some(Trigger {
                        schedule: s.name.clone(),
                        fire_time: now,
                    }),
                })
                .await?;
            ScheduleState::update(journal.as_ref(), &s.name, |st| {
                st.last_run = Some(id);
                st.record(now, FireOutcome::Started, Some(id));
            })?;
            if env.cli.output == OutputMode::Json {
                changed(env, &s.name, FireOutcome::Started.word(), Some(id));
                return Ok(crate::cli::runs::finish(env, id, &outcome, None));
            }
            outln!("run {id}: {outcome:?}");
            return Ok(exit::of_outcome(&outcome));
        }
    }
    Ok(exit::OK)
}

async fn remote_command(
    env: &Env,
    remote: &Remote,
    command: &ScheduleCommand,
) -> Result<i32, CliError> {
    match command {
        ScheduleCommand::List => print_list(env, &remote.schedules().await?),
        ScheduleCommand::Pause { name } => {
            remote.schedule(name, "pause").await?;
            changed(env, name, "paused", None);
        }
        ScheduleCommand::Resume { name } => {
            remote.schedule(name, "resume").await?;
            changed(env, name, "resumed", None);
        }
        ScheduleCommand::Trigger { name } => {
            let fired = remote.trigger(name).await?;
            if env.cli.output == OutputMode::Json {
                changed(env, name, fired.outcome.word(), fired.run);
                return Ok(exit::OK);
            }
            match fired.run {
                Some(run) => outln!(
                    "schedule `{name}` fired: run {run} ({})",
                    fired.outcome.word()
                ),
                None => outln!("schedule `{name}` fired: {}", fired.outcome.word()),
            }
        }
    }
    Ok(exit::OK)
}

/// Says what became of a schedule: `paused`, `resumed`, or how a fire went.
fn changed(env: &Env, name: &str, action: &str, run: Option<runbook_journals::RunId>) {
    if env.cli.output == OutputMode::Json {
        ui::json::print(&ui::json::ScheduleChanged {
            event: "schedule",
            schedule: name,
            action: action.to_owned(),
            run,
        });
    } else {
        outln!("schedule `{name}` {action}");
    }
}

fn print_list(env: &Env, list: &[ScheduleStatus]) {
    if env.cli.output == OutputMode::Json {
        for s in list {
            ui::json::print(s);
        }
        return;
    }
    if list.is_empty() {
        outln!(
            "no schedules (declare `schedule:` in a runbook of ./runbooks or $RUNBOOK_PATH, or give --schedules FILE)"
        );
        return;
    }
    for s in list {
        let state = if s.paused { "paused" } else { "active" };
        outln!(
            "{:<28} {:<10} {} ({}) → {}",
            s.name,
            state,
            s.cron,
            s.timezone,
            s.runbook,
        );
        if !s.next.is_empty() {
            let next: Vec<String> = s.next.iter().map(|t| json_time(*t)).collect();
            outln!("    next: {}", next.join(", "));
        }
        if let Some(last) = s.history.first().map(|recent| &recent.fired) {
            outln!(
                "    last: {} {}{}",
                json_time(last.fire),
                last.outcome.word(),
                last.run.map(|r| format!(" (run {r})")).unwrap_or_default()
            );
        }
    }
}

/// A time as it reads in JSON (what `schedule list` always showed).
fn json_time(t: chrono::DateTime<Utc>) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| t.to_rfc3339())
}

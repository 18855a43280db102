//! `runbook schedule list|pause|resume|trigger` — on the journal, or through the `serve`
//! that holds it.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use runbook_journals::Trigger;
use runbook_steps::{CancelSource, Registry};
use serde_json::{Value, json};

use crate::cli::remote::Remote;
use crate::cli::{CliError, Env, ScheduleCommand, exit};
use crate::engine::{Engine, GateMode, Start};
use crate::library::Library;
use crate::schedule::Schedule;
use crate::schedule::state::{FireOutcome, ScheduleState};
use crate::ui::{self, OutputMode};

/// Runs a schedule command.
pub async fn run(env: &Env, command: &ScheduleCommand, files: &[PathBuf]) -> Result<i32, CliError> {
    let opened = if matches!(command, ScheduleCommand::List) {
        env.open_journal_read_only()
    } else {
        env.open_journal()
    };
    let journal = match opened {
        Ok(j) => j,
        Err(e) => {
            let remote = Remote::instead_of(env, e)?;
            return remote_command(env, &remote, command).await;
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
            let list: Vec<Value> = schedules
                .iter()
                .map(|s| {
                    ScheduleState::load(journal.as_ref(), &s.name)
                        .map(|st| crate::schedule::status_json(s, &st))
                })
                .collect::<Result<_, _>>()?;
            print_list(env, &list);
        }
        ScheduleCommand::Pause { name } | ScheduleCommand::Resume { name } => {
            find(name)?;
            let paused = matches!(command, ScheduleCommand::Pause { .. });
            let mut st = ScheduleState::load(journal.as_ref(), name)?;
            st.set_paused(paused);
            st.save(journal.as_ref(), name)?;
            println!(
                "schedule `{name}` {}",
                if paused { "paused" } else { "resumed" }
            );
        }
        ScheduleCommand::Trigger { name } => {
            // No serve: the fire runs here, in the foreground.
            let s = find(name)?.clone();
            let engine = Engine {
                journal: journal.clone(),
                registry: Arc::new(Registry::builtin()),
                observers: vec![
                    ui::observer(env.cli.output),
                    Arc::new(ui::FollowFile::new(&env.journal_dir())),
                ],
                interrupt: CancelSource::new().token(),
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
            let mut st = ScheduleState::load(journal.as_ref(), &s.name)?;
            st.last_run = Some(id);
            st.record(now, FireOutcome::Started, Some(id));
            st.save(journal.as_ref(), &s.name)?;
            println!("run {id}: {outcome:?}");
            return Ok(outcome.exit_code());
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
        ScheduleCommand::List => {
            let list = remote.get("/schedules").await?;
            print_list(env, list.as_array().map_or(&[][..], Vec::as_slice));
        }
        ScheduleCommand::Pause { name } => {
            remote
                .post(&format!("/schedules/{name}/pause"), json!({}))
                .await?;
            println!("schedule `{name}` paused");
        }
        ScheduleCommand::Resume { name } => {
            remote
                .post(&format!("/schedules/{name}/resume"), json!({}))
                .await?;
            println!("schedule `{name}` resumed");
        }
        ScheduleCommand::Trigger { name } => {
            let fired = remote
                .post(&format!("/schedules/{name}/trigger"), json!({}))
                .await?;
            match fired["run"].as_str() {
                Some(run) => println!(
                    "schedule `{name}` fired: run {run} ({})",
                    fired["outcome"].as_str().unwrap_or("started")
                ),
                None => println!(
                    "schedule `{name}` fired: {}",
                    fired["outcome"].as_str().unwrap_or("?")
                ),
            }
        }
    }
    Ok(exit::OK)
}

fn print_list(env: &Env, list: &[Value]) {
    if env.cli.output == OutputMode::Json {
        for s in list {
            println!("{s}");
        }
        return;
    }
    if list.is_empty() {
        println!(
            "no schedules (declare `schedule:` in a runbook of ./runbooks or $RUNBOOK_PATH, or give --schedules FILE)"
        );
        return;
    }
    for s in list {
        let state = if s["paused"] == true {
            "paused"
        } else {
            "active"
        };
        println!(
            "{:<28} {:<10} {} ({}) → {}",
            s["name"].as_str().unwrap_or("?"),
            state,
            s["cron"].as_str().unwrap_or("?"),
            s["timezone"].as_str().unwrap_or("UTC"),
            s["runbook"].as_str().unwrap_or("?"),
        );
        if let Some(next) = s["next"].as_array().filter(|n| !n.is_empty()) {
            let next: Vec<&str> = next.iter().filter_map(Value::as_str).collect();
            println!("    next: {}", next.join(", "));
        }
        if let Some(last) = s["history"].as_array().and_then(|h| h.first()) {
            println!(
                "    last: {} {}{}",
                last["fire"].as_str().unwrap_or("?"),
                last["outcome"].as_str().unwrap_or("?"),
                last["run"]
                    .as_str()
                    .map(|r| format!(" (run {r})"))
                    .unwrap_or_default()
            );
        }
    }
}

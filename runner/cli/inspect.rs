//! `status`, `log`, `history`: from a read-only view of the journal, or — while another process
//! holds it — from that process, over the journal's socket.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::time::{Duration, Instant};

use runbook_journals::{JournalError, Record, RunId, RunState, RunSummary};

use crate::cli::access::{self, Access, Want};
use crate::cli::{CliError, Env};
use crate::engine::view::RunView;
use crate::ui::stdout::{out, outln};
use crate::ui::{OutputMode, report};
use crate::wire::ListedRun;

/// How long `log` waits for a holder that does not answer before it reads the run's follow
/// mirror instead.
const LOG_PATIENCE: Duration = Duration::from_secs(2);

/// The runs of a journal nobody else holds: none executes — except, on a journal shared by
/// several executors, in the executor that owns it.
fn local_runs(env: &Env, runs: Vec<RunSummary>) -> Result<Vec<ListedRun>, CliError> {
    let owners = owners(env)?;
    Ok(runs
        .into_iter()
        .map(|summary| {
            let owner = owners.get(&summary.id).cloned();
            ListedRun {
                active: owner.is_some()
                    && matches!(summary.state, RunState::Running | RunState::Sleeping),
                owner,
                summary,
            }
        })
        .collect())
}

/// The owner of every owned run of a journal shared by several executors (none for a journal
/// of this machine). Reading them takes a brief membership.
fn owners(env: &Env) -> Result<HashMap<RunId, String>, CliError> {
    let Some(joined) = env.join()? else {
        return Ok(HashMap::new());
    };
    let owners = tokio::task::block_in_place(|| joined.member().fleet().owners())?;
    Ok(owners.into_iter().collect())
}

fn print_runs(env: &Env, runs: &[ListedRun], unfinished_only: bool) {
    let runs: Vec<&ListedRun> = runs
        .iter()
        .filter(|r| !unfinished_only || !r.summary.state.is_terminal())
        .collect();
    if env.cli.output == OutputMode::Json {
        for r in &runs {
            crate::ui::json::print(r);
        }
    } else if runs.is_empty() && unfinished_only {
        outln!("no unfinished runs");
    } else {
        out!("{}", report::table(runs));
    }
}

/// Prints a run; `active` is the holder's word on whether it executes it (`None`: nobody holds
/// the journal), `owner` the executor that owns it on a shared journal.
fn print_detail(
    env: &Env,
    id: RunId,
    records: &[Record],
    active: Option<bool>,
    owner: Option<String>,
) -> Result<(), CliError> {
    let view = RunView::from_records(id, records).map_err(crate::engine::EngineError::from)?;
    if env.cli.output == OutputMode::Json {
        let mut detail = report::run_detail(&view);
        detail.active = active;
        detail.owner = owner;
        crate::ui::json::print(&detail);
    } else {
        out!(
            "{}",
            report::detail(&view, active == Some(true), env.cli.verbose)
        );
        if let Some(owner) = owner {
            outln!("  owned by executor {owner}");
        }
    }
    Ok(())
}

/// Reports integrity problems (each names its run and first bad record) after a listing; the
/// exit code says whether there were any.
fn report_problems(problems: &[JournalError]) -> i32 {
    for p in problems {
        eprintln!("error: {p}");
    }
    if problems.is_empty() {
        0
    } else {
        eprintln!(
            "{} run(s) of this journal cannot be trusted: their history is not shown as it was \
             made durable. `runbook resume RUN --accept-loss` continues one from what is intact; \
             `runbook abort RUN` ends it.",
            problems.len()
        );
        crate::cli::exit::FAILED
    }
}

/// `runbook status [RUN]`.
pub async fn status(env: &Env, run: Option<&str>) -> Result<i32, CliError> {
    let started = Instant::now();
    loop {
        let result = match access::find(env, Want::Read).await? {
            Access::Local(journal) => {
                return match run {
                    None => {
                        // The unfinished runs and what is known of the journal's integrity
                        // without reading its archive of finished runs (`history` reads it).
                        print_runs(env, &local_runs(env, journal.unfinished_runs())?, true);
                        Ok(report_problems(&journal.live_problems()))
                    }
                    Some(run) => {
                        let id = journal.resolve(run)?;
                        let owner = owners(env)?.remove(&id);
                        let active = owner.is_some().then(|| {
                            journal.summary(id).is_ok_and(|s| {
                                matches!(s.state, RunState::Running | RunState::Sleeping)
                            })
                        });
                        print_detail(env, id, &journal.read(id)?, active, owner)?;
                        Ok(0)
                    }
                };
            }
            Access::Remote(remote) => match run {
                None => remote.unfinished().await.map(|mut runs| {
                    runs.reverse();
                    print_runs(env, &runs, true);
                }),
                Some(run) => match remote.records(run).await {
                    Ok((id, records)) => match remote.detail(&id.to_string()).await {
                        Ok(detail) => print_detail(env, id, &records, detail.active, detail.owner),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
            },
        };
        match result {
            Err(e) if access::again(&e, started) => access::pause().await,
            other => return other.map(|()| 0),
        }
    }
}

/// `runbook history`.
pub async fn history(env: &Env, limit: usize) -> Result<i32, CliError> {
    let started = Instant::now();
    loop {
        // Newest first.
        let (runs, code) = match access::find(env, Want::Read).await? {
            Access::Local(journal) => (
                local_runs(env, journal.newest_runs(&|_| true, &mut |_| true, limit))?,
                Some(journal),
            ),
            Access::Remote(remote) => match remote.newest(limit).await {
                Ok(runs) => (runs, None),
                Err(e) if access::again(&e, started) => {
                    access::pause().await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        print_runs(env, &runs, false);
        return Ok(code.map_or(0, |journal| report_problems(&journal.problems())));
    }
}

fn print_record(env: &Env, id: RunId, r: &Record) {
    if env.cli.output == OutputMode::Json {
        outln!("{}", crate::ui::json::record_line(id, r));
    } else if let Some(line) = report::log_line(id, r) {
        outln!("{line}");
    }
}

/// `runbook log RUN [--follow]`. While another process holds the journal, it tells the run's
/// records; with `--follow` they are printed as they commit until the run ends — should the
/// holder let the journal go first (the run parked, or was interrupted), what remains is read
/// from the journal. A holder that does not answer leaves the run's follow mirror to read.
pub async fn log(env: &Env, run: &str, follow: bool) -> Result<i32, CliError> {
    let started = Instant::now();
    let mut seen = 0;
    loop {
        let access = match access::find_within(env, Want::Read, LOG_PATIENCE).await {
            Ok(access) => access,
            // Held by a process that does not answer (one from before the socket).
            Err(CliError::Journal(JournalError::Busy { .. })) => {
                return follow_file(env, run, follow).await;
            }
            Err(e) => return Err(e),
        };
        let result = match access {
            Access::Local(journal) => {
                let id = journal.resolve(run)?;
                for r in journal.read(id)?.iter().filter(|r| r.seq > seen) {
                    print_record(env, id, r);
                }
                return Ok(0);
            }
            Access::Remote(remote) if follow => {
                match remote
                    .follow(run, true, None, seen, |id, r| print_record(env, id, r))
                    .await
                {
                    Ok((Some(state), _)) if state.is_terminal() => return Ok(0),
                    // The stream ended before the run did: the holder went away.
                    Ok((_, last)) => {
                        seen = last;
                        access::pause().await;
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
            Access::Remote(remote) => match remote.records(run).await {
                Ok((id, records)) => {
                    for r in &records {
                        print_record(env, id, r);
                    }
                    return Ok(0);
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Err(e) if access::again(&e, started) => access::pause().await,
            other => return other,
        }
    }
}

/// Whether a record ends what a follower should wait for.
fn settles(r: &Record) -> bool {
    matches!(&r.event, runbook_journals::Event::StateChanged { state, .. } if state.is_settled())
}

async fn follow_file(env: &Env, run: &str, follow: bool) -> Result<i32, CliError> {
    let dir = env.journal_dir().join(runbook_journals::follow_mirror::DIR);
    let prefix = run.to_ascii_uppercase();
    let mut matches: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter_map(|n| n.strip_suffix(".jsonl").map(str::to_owned))
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    matches.sort();
    let name = match matches.as_slice() {
        [one] => one.clone(),
        [] => return Err(CliError::Journal(JournalError::NoSuchRun(run.to_owned()))),
        _ => {
            return Err(CliError::Usage(format!(
                "run id prefix `{run}` is ambiguous: it matches {}",
                matches.join(", ")
            )));
        }
    };
    let id: RunId = name
        .parse()
        .map_err(|_| CliError::Usage(format!("`{name}` is not a run id")))?;
    let path = crate::ui::follow_path(&env.journal_dir(), id);
    let file = std::fs::File::open(&path).map_err(|e| CliError::Other(e.into()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| CliError::Other(e.into()))?;
        if n == 0 || !line.ends_with('\n') {
            if !follow {
                return Ok(0);
            }
            // The writer appends whole lines; wait for the rest of a partial one.
            if n > 0 {
                let pos = reader.stream_position_back(n);
                reader = pos;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(obj) = value.as_object_mut() {
            obj.remove("run");
        }
        let Ok(record) = serde_json::from_value::<Record>(value) else {
            continue;
        };
        print_record(env, id, &record);
        if follow && settles(&record) {
            return Ok(0);
        }
    }
}

/// Rewinding a reader by the bytes of a partial line.
trait Rewind {
    fn stream_position_back(self, n: usize) -> Self;
}

impl Rewind for std::io::BufReader<std::fs::File> {
    fn stream_position_back(mut self, n: usize) -> Self {
        let _ = self.seek_relative(-(i64::try_from(n).unwrap_or(0)));
        self
    }
}

/// `runbook log RUN --step PATH`: every attempt of one step with its whole output.
pub async fn step_output(env: &Env, run: &str, step: &str) -> Result<i32, CliError> {
    let started = Instant::now();
    loop {
        let result = match access::find(env, Want::Read).await? {
            Access::Local(journal) => {
                let id = journal.resolve(run)?;
                journal
                    .read(id)
                    .map(|records| (id, records))
                    .map_err(CliError::from)
            }
            Access::Remote(remote) => remote.records(run).await,
        };
        let (id, records) = match result {
            Err(e) if access::again(&e, started) => {
                access::pause().await;
                continue;
            }
            other => other?,
        };
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| r.event.path() == Some(step))
            .collect();
        if env.cli.output == OutputMode::Json && !mine.is_empty() {
            for r in mine {
                print_record(env, id, r);
            }
            return Ok(0);
        }
        return match crate::ui::output::attempts(&records, step) {
            Ok(lines) => {
                outln!("run {id} step {step}:");
                for line in lines {
                    outln!("  {line}");
                }
                Ok(0)
            }
            Err(near) if near.is_empty() => Err(CliError::Usage(format!(
                "run {id} has no step `{step}`: no step of it has started yet"
            ))),
            Err(near) => Err(CliError::Usage(format!(
                "run {id} has no step `{step}`; its steps nearest that path: {} (`{} status {id}` lists them all)",
                near.iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::ui::hint::runbook()
            ))),
        };
    }
}

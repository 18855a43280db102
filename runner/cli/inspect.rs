//! `status`, `log`, `history`.

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use runbook_journals::{JournalError, Record, RunId, RunSummary};

use crate::cli::remote::Remote;

use crate::cli::{CliError, Env};
use crate::engine::view::RunView;
use crate::ui::{OutputMode, report};

/// The runs and records of a `serve` holding the journal, as the local journal would give them.
struct Served {
    remote: Remote,
}

impl Served {
    fn find(env: &Env, err: CliError) -> Result<Self, CliError> {
        Remote::instead_of(env, err).map(|remote| Self { remote })
    }

    async fn runs(&self) -> Result<Vec<RunSummary>, CliError> {
        let list = self.remote.get("/runs?limit=100000").await?;
        let mut runs: Vec<RunSummary> = serde_json::from_value(list)
            .map_err(|e| CliError::Other(anyhow::anyhow!("serve sent runs I cannot read: {e}")))?;
        runs.reverse();
        Ok(runs)
    }

    async fn records(&self, run: &str) -> Result<(RunId, Vec<Record>), CliError> {
        let list = self.remote.get(&format!("/runs/{run}/records")).await?;
        let mut id = None;
        let mut records = Vec::new();
        for mut v in list.as_array().cloned().unwrap_or_default() {
            id = id.or_else(|| v["run"].as_str().and_then(|s| s.parse().ok()));
            if let Some(obj) = v.as_object_mut() {
                obj.remove("run");
            }
            records.push(serde_json::from_value(v).map_err(|e| {
                CliError::Other(anyhow::anyhow!("serve sent a record I cannot read: {e}"))
            })?);
        }
        let id = id.ok_or_else(|| CliError::Journal(JournalError::NoSuchRun(run.to_owned())))?;
        Ok((id, records))
    }
}

fn print_runs(env: &Env, runs: &[RunSummary], unfinished_only: bool) {
    let runs: Vec<&RunSummary> = runs
        .iter()
        .filter(|r| !unfinished_only || !r.state.is_terminal())
        .collect();
    if env.cli.output == OutputMode::Json {
        for r in &runs {
            println!("{}", serde_json::to_string(r).expect("summaries serialize"));
        }
    } else if runs.is_empty() && unfinished_only {
        println!("no unfinished runs");
    } else {
        print!("{}", report::table(runs));
    }
}

fn print_detail(env: &Env, id: RunId, records: &[Record]) -> Result<(), CliError> {
    let view = RunView::from_records(id, records).map_err(crate::engine::EngineError::from)?;
    if env.cli.output == OutputMode::Json {
        println!("{}", report::run_json(&view));
    } else {
        print!("{}", report::detail(&view));
    }
    Ok(())
}

/// Reports the journal's integrity problems (each names its run and first bad record) after a
/// listing; the exit code says whether there were any.
fn report_problems(journal: &dyn runbook_journals::Journal) -> i32 {
    let problems = journal.problems();
    for p in &problems {
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
    match (env.open_journal_read_only(), run) {
        (Ok(journal), None) => {
            print_runs(env, &journal.readable_runs(), true);
            return Ok(report_problems(journal.as_ref()));
        }
        (Ok(journal), Some(run)) => {
            let id = journal.resolve(run)?;
            print_detail(env, id, &journal.read(id)?)?;
        }
        (Err(e), None) => print_runs(env, &Served::find(env, e)?.runs().await?, true),
        (Err(e), Some(run)) => {
            let (id, records) = Served::find(env, e)?.records(run).await?;
            print_detail(env, id, &records)?;
        }
    }
    Ok(0)
}

/// `runbook history`.
pub async fn history(env: &Env, limit: usize) -> Result<i32, CliError> {
    let (mut runs, code) = match env.open_journal_read_only() {
        Ok(journal) => (journal.readable_runs(), Some(journal)),
        Err(e) => (Served::find(env, e)?.runs().await?, None),
    };
    runs.reverse();
    runs.truncate(limit);
    print_runs(env, &runs, false);
    Ok(code.map_or(0, |journal| report_problems(journal.as_ref())))
}

fn print_record(env: &Env, id: RunId, r: &Record) {
    let mut out = std::io::stdout().lock();
    if env.cli.output == OutputMode::Json {
        let _ = writeln!(out, "{}", crate::ui::json::record_json(id, r));
    } else if let Some(line) = report::log_line(id, r) {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// `runbook log RUN [--follow]`. While another process holds the journal (it is running the
/// run), the run's follow file is read instead, and `--follow` keeps reading it.
pub async fn log(env: &Env, run: &str, follow: bool) -> Result<i32, CliError> {
    match env.open_journal_read_only() {
        Ok(journal) => {
            let id = journal.resolve(run)?;
            for r in journal.read(id)? {
                print_record(env, id, &r);
            }
            Ok(0)
        }
        Err(e @ CliError::Journal(JournalError::Busy { .. })) => match Served::find(env, e) {
            Ok(served) => {
                if follow {
                    served
                        .remote
                        .follow(run, true, None, |id, r| print_record(env, id, r))
                        .await?;
                } else {
                    let (id, records) = served.records(run).await?;
                    for r in &records {
                        print_record(env, id, r);
                    }
                }
                Ok(0)
            }
            // A plain `runbook run` holds the journal: read its follow file.
            Err(_) => follow_file(env, run, follow).await,
        },
        Err(e) => Err(e),
    }
}

/// Whether a record ends what a follower should wait for.
fn settles(r: &Record) -> bool {
    matches!(&r.event, runbook_journals::Event::StateChanged { state, .. } if state.is_settled())
}

async fn follow_file(env: &Env, run: &str, follow: bool) -> Result<i32, CliError> {
    let dir = env.journal_dir().join("follow");
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

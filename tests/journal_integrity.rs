//! The corruption harness (issue 8): journals written by real runs — finished, parked at a gate,
//! and killed with SIGKILL at a random commit — are copied and damaged the way a disk fault
//! would: one flipped bit, a truncated file, or a deleted file. On every damaged copy:
//!
//! - every read-only command (`history`, `status`, `status RUN`, `log RUN`) either shows the
//!   true history (byte for byte what it showed before the damage) or fails naming a run and a
//!   record ("journal of run X is corrupt at record N"); a listing may show the runs it can read,
//!   each as it truly was, next to the runs it reports damaged;
//! - none of them changes a byte of the journal;
//! - `resume` never runs again a step whose start was durable before the damage.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Rng, Sandbox};

const BOOK: &str = r#"
runbook: harness
params:
  tag: { type: string, default: x }
  bulk: { type: int, default: 10 }
steps:
  - id: one
    shell: { args: [sh, -c, 'echo "$0:one" >> effects.txt', "{{params.tag}}"] }
  - id: two
    shell: { args: [sh, -c, 'echo "$0:two" >> effects.txt; head -c "$1" /dev/zero | tr "\0" y', "{{params.tag}}", "{{params.bulk}}"] }
  - id: confirm
    gate: "go on?"
  - id: three
    shell: { args: [sh, -c, 'echo "$0:three" >> effects.txt', "{{params.tag}}"] }
"#;

/// How many bases (journals written by real runs), and damaged copies of each.
const BASES: u64 = 6;
const FAULTS_PER_BASE: u64 = 8;

/// What the read-only commands showed on the intact journal.
struct Truth {
    /// Run ids, in creation order.
    runs: Vec<String>,
    /// `history --output json` lines by run id.
    history: BTreeMap<String, String>,
    /// `status RUN --output json` and `log RUN --output json` by run id.
    status: BTreeMap<String, String>,
    log: BTreeMap<String, String>,
    /// Steps (tag:step) whose `step_started` was durable.
    started: BTreeSet<String>,
    /// Runs not finished.
    unfinished: Vec<String>,
}

/// A journal written by real runs: one finished, one parked at its gate, one killed with
/// SIGKILL after a random commit (it may be in flight, parked or finished by then).
fn base(seed: u64) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("harness.yaml", BOOK);
    let mut rng = Rng::new(seed * 7919 + 13);
    // A big output in some bases, so that sled writes blob files too.
    let bulk = if seed % 2 == 0 { "200000" } else { "10" };
    sb.cmd(&[
        "run",
        "harness.yaml",
        "-p",
        "tag=a",
        "-p",
        &format!("bulk={bulk}"),
        "--yes",
    ])
    .ok();
    sb.cmd(&["run", "harness.yaml", "-p", "tag=b"]).code(3);
    let kill_after = 2 + rng.below(9);
    let out = sb
        .cmd(&["run", "harness.yaml", "-p", "tag=c", "--yes"])
        .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill_after.to_string())
        .run();
    assert!(
        out.signal() == Some(9) || out.code() == Some(0),
        "{}",
        out.explain("the third run is killed or finishes")
    );
    sb
}

fn truth(sb: &Sandbox) -> Truth {
    let lines = |args: &[&str]| sb.cmd(args).ok().stdout;
    let history_out = lines(&["history", "--output", "json", "--limit", "100"]);
    let mut runs = Vec::new();
    let mut history = BTreeMap::new();
    let mut unfinished = Vec::new();
    for line in history_out.lines() {
        let v: Value = serde_json::from_str(line).expect("history JSON");
        let id = v["id"].as_str().expect("id").to_owned();
        if !matches!(
            v["state"].as_str(),
            Some("succeeded" | "failed" | "aborted")
        ) {
            unfinished.push(id.clone());
        }
        history.insert(id.clone(), line.to_owned());
        runs.push(id);
    }
    runs.reverse();
    let mut status = BTreeMap::new();
    let mut log = BTreeMap::new();
    let mut started = BTreeSet::new();
    for id in &runs {
        status.insert(id.clone(), lines(&["status", id, "--output", "json"]));
        let records = lines(&["log", id, "--output", "json"]);
        let mut tag = String::new();
        for line in records.lines() {
            let r: Value = serde_json::from_str(line).expect("log JSON");
            if r["event"] == "run_started" {
                r["params"]["tag"]
                    .as_str()
                    .unwrap_or_default()
                    .clone_into(&mut tag);
            }
            if r["event"] == "step_started" {
                started.insert(format!("{tag}:{}", r["path"].as_str().unwrap_or_default()));
            }
        }
        log.insert(id.clone(), records);
    }
    Truth {
        runs,
        history,
        status,
        log,
        started,
        unfinished,
    }
}

/// Every file below `dir`, relative, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                // Not the socket a killed holder left behind: no data, and unreadable.
                let rel = path.strip_prefix(dir).expect("below").to_path_buf();
                out.insert(rel, fs::read(&path).expect("read"));
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("list").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.path().is_file() {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The journal's own files (not the redacted follow mirror, which no reader trusts).
fn journal_files(journal: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = snapshot(journal)
        .into_keys()
        .filter(|p| !p.starts_with("follow") && p != Path::new("holder"))
        .collect();
    files.sort();
    files
}

/// Damages one file of `journal`; returns what was done.
fn damage(journal: &Path, rng: &mut Rng) -> String {
    let files = journal_files(journal);
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| fs::metadata(journal.join(f)).map_or(0, |m| m.len()))
        .collect();
    let kind = rng.below(4);
    if kind == 3 {
        let file = &files[rng.below(files.len() as u64) as usize];
        fs::remove_file(journal.join(file)).expect("delete");
        return format!("deleted {}", file.display());
    }
    // Pick a file in proportion to its size, so most faults land where the data is.
    let total: u64 = sizes.iter().sum::<u64>().max(1);
    let mut at = rng.below(total);
    let mut index = 0;
    while index + 1 < files.len() && at >= sizes[index] {
        at -= sizes[index];
        index += 1;
    }
    let path = journal.join(&files[index]);
    let mut bytes = fs::read(&path).expect("read");
    if bytes.is_empty() {
        fs::remove_file(&path).expect("delete");
        return format!("deleted the empty {}", files[index].display());
    }
    let offset = (at as usize).min(bytes.len() - 1);
    if kind == 2 {
        bytes.truncate(offset);
        fs::write(&path, &bytes).expect("write");
        format!("truncated {} to {offset} bytes", files[index].display())
    } else {
        let bit = rng.below(8);
        bytes[offset] ^= 1 << bit;
        fs::write(&path, &bytes).expect("write");
        format!(
            "flipped bit {bit} of byte {offset} of {}",
            files[index].display()
        )
    }
}

/// What a command did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `runbook ARGS` against `journal` in `cwd`, killed after 60 s (a hang is a failure).
fn runbook(case: &str, cwd: &Path, journal: &Path, args: &[&str]) -> Ran {
    let child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .current_dir(cwd)
        .env("RUNBOOK_JOURNAL", journal)
        .env("USER", "tester")
        .env_remove("RUNBOOK_TEST_KILL_AFTER_COMMIT")
        .env_remove("RUNBOOK_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runbook");
    // Drain the pipes while waiting: a long log would otherwise block on a full pipe.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            // Keep the damaged copy for a post-mortem.
            let kept =
                std::env::temp_dir().join(format!("runbook-harness-hang-{}", std::process::id()));
            copy_dir(cwd, &kept);
            panic!(
                "{case}: `runbook {}` hung for 60 s (the damaged copy is kept in {})",
                args.join(" "),
                kept.display()
            );
        }
    };
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The runs a command's stderr reports as damaged, naming a record.
fn reported(stderr: &str, truth: &Truth) -> BTreeSet<String> {
    truth
        .runs
        .iter()
        .filter(|id| {
            stderr
                .lines()
                .any(|l| l.contains(&format!("journal of run {id} is corrupt at record ")))
        })
        .cloned()
        .collect()
}

/// Checks one read-only command's result against the truth.
fn judge(case: &str, args: &[&str], ran: &Ran, expected: &str, truth: &Truth) {
    let explain = || {
        format!(
            "{case}: `runbook {}` exited {:?}\n--- stdout ---\n{}\n--- expected ---\n{}\n--- stderr ---\n{}",
            args.join(" "),
            ran.code,
            ran.stdout,
            expected,
            ran.stderr
        )
    };
    assert!(ran.code.is_some(), "a signal ended it: {}", explain());
    if ran.code == Some(0) {
        assert_eq!(ran.stdout, expected, "shown history differs: {}", explain());
        return;
    }
    let damaged = reported(&ran.stderr, truth);
    assert!(
        !damaged.is_empty(),
        "failed without naming a damaged run and record: {}",
        explain()
    );
    if matches!(args.first(), Some(&"history" | &"status")) && args.get(1) == Some(&"--output") {
        // A listing shows the readable runs next to the damaged ones: each as it truly was.
        for line in ran.stdout.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{}", explain()));
            let id = v["id"].as_str().unwrap_or_default();
            assert!(
                damaged.contains(id) || truth.history.get(id).is_some_and(|t| t == line),
                "run {id} is listed differently from its truth and not reported: {}",
                explain()
            );
        }
    }
}

fn effects(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("effects.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn damaged_journals_are_reported_or_shown_truly_never_changed_by_reading_and_never_rerun() {
    let mut outcomes: BTreeMap<&'static str, u32> = BTreeMap::new();
    for b in 0..BASES {
        let base = base(b);
        let truth = truth(&base);
        assert_eq!(truth.runs.len(), 3);
        for f in 0..FAULTS_PER_BASE {
            let seed = b * 1000 + f;
            let mut rng = Rng::new(seed * 31 + 7);
            // A copy of the whole sandbox: journal, effects file and runbook.
            let case_dir = tempfile::Builder::new()
                .prefix("runbook-harness-")
                .tempdir()
                .expect("tempdir");
            copy_dir(base.path(), case_dir.path());
            let journal = case_dir.path().join("journal");
            let fault = damage(&journal, &mut rng);
            let case = format!("seed {seed} ({fault})");
            let before = snapshot(&journal);

            let mut commands: Vec<(Vec<String>, String)> = vec![
                (
                    vec![
                        "history".into(),
                        "--output".into(),
                        "json".into(),
                        "--limit".into(),
                        "100".into(),
                    ],
                    truth.runs.iter().rev().fold(String::new(), |mut out, id| {
                        out.push_str(&truth.history[id]);
                        out.push('\n');
                        out
                    }),
                ),
                (
                    vec!["status".into(), "--output".into(), "json".into()],
                    truth
                        .runs
                        .iter()
                        .filter(|id| truth.unfinished.contains(id))
                        .fold(String::new(), |mut out, id| {
                            out.push_str(&truth.history[id]);
                            out.push('\n');
                            out
                        }),
                ),
            ];
            for id in &truth.runs {
                commands.push((
                    vec![
                        "status".into(),
                        id.clone(),
                        "--output".into(),
                        "json".into(),
                    ],
                    truth.status[id].clone(),
                ));
                commands.push((
                    vec!["log".into(), id.clone(), "--output".into(), "json".into()],
                    truth.log[id].clone(),
                ));
            }
            let mut any_reported = false;
            for (args, expected) in &commands {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let ran = runbook(&case, case_dir.path(), &journal, &args);
                judge(&case, &args, &ran, expected, &truth);
                any_reported |= ran.code != Some(0);
            }
            assert!(
                snapshot(&journal) == before,
                "{case}: a read-only command changed the journal"
            );
            *outcomes
                .entry(if any_reported {
                    "reported"
                } else {
                    "shown truly"
                })
                .or_default() += 1;

            // Resume every unfinished run: nothing whose start was durable runs again.
            let effects_before = effects(case_dir.path());
            for id in &truth.unfinished {
                let ran = runbook(&case, case_dir.path(), &journal, &["resume", id, "--yes"]);
                assert!(
                    ran.code.is_some_and(|c| c != 101),
                    "{case}: resume {id} crashed: {}",
                    ran.stderr
                );
            }
            let after = effects(case_dir.path());
            for step in &truth.started {
                let count = |list: &[String]| list.iter().filter(|l| *l == step).count();
                assert_eq!(
                    count(&after),
                    count(&effects_before),
                    "{case}: `{step}` had started before the damage and ran again on resume \
                     without a decision\neffects before: {effects_before:?}\nafter: {after:?}"
                );
            }
        }
    }
    eprintln!("corruption harness: {outcomes:?}");
}

#[test]
fn a_lost_tail_stops_resume_until_the_operator_accepts_it_and_the_step_is_not_run_twice() {
    // A first run tells which commit journals the start of `three` (the records of one commit
    // share their time).
    let sb = Sandbox::new();
    sb.write("harness.yaml", BOOK);
    sb.cmd(&["run", "harness.yaml", "-p", "tag=t", "--yes"])
        .ok();
    let records = sb.records(&sb.only_run());
    let index = records
        .iter()
        .position(|r| r["event"] == "step_started" && r["path"] == "three")
        .expect("three started");
    let three = index as u64 + 1;
    let commit = records[..=index]
        .iter()
        .map(|r| r["at"].as_str().expect("at").to_owned())
        .collect::<BTreeSet<_>>()
        .len();

    // A fresh run killed right after `three` was journaled as started.
    let sb = Sandbox::new();
    sb.write("harness.yaml", BOOK);
    let out = sb
        .cmd(&["run", "harness.yaml", "-p", "tag=t", "--yes"])
        .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", commit.to_string())
        .run();
    assert_eq!(out.signal(), Some(9), "{}", out.explain("killed"));
    let run = sb.only_run();
    // The effect of `three` happened (we say so by writing it), and then the journal lost the
    // record of its start: sled rolled back by one commit, its summary with it.
    fs::write(
        sb.path().join("effects.txt"),
        format!("{}t:three\n", sb.read("effects.txt")),
    )
    .expect("write");
    roll_back_last_record(&sb.journal(), &run, three);

    let out = sb.cmd(&["log", &run]).run();
    assert_eq!(out.code(), Some(1), "{}", out.explain("log reports"));
    assert!(out.stderr.contains(&format!(
        "journal of run {run} is corrupt at record {three}: records {three}–{three} are missing: {three} were durable, and the store now ends at record {}",
        three - 1
    )), "{}", out.explain("names the lost record"));

    let out = sb.cmd(&["resume", &run]).run();
    assert_eq!(out.code(), Some(4), "{}", out.explain("resume refuses"));
    assert!(
        out.stderr
            .contains(&format!("{} resume {run} --accept-loss", sb.hint()))
    );
    assert_eq!(sb.read("effects.txt").matches("t:three").count(), 1);

    // The operator accepts the loss: `three` may have started, it is not idempotent and has no
    // check, so the run stops for a decision instead of running it again.
    let out = sb
        .cmd(&["resume", &run, "--accept-loss", "--as", "oncall"])
        .run();
    assert_eq!(
        out.code(),
        Some(4),
        "{}",
        out.explain("needs a decision on three")
    );
    assert!(
        out.stdout
            .contains(&format!("{} resume {run} --skip-step three", sb.hint())),
        "{}",
        out.explain("offers the decision")
    );
    assert_eq!(sb.read("effects.txt").matches("t:three").count(), 1);

    // The effect is there: skip it. The run finishes, `three` ran once, and the log says who
    // accepted the loss.
    sb.cmd(&["resume", &run, "--skip-step", "three"]).ok();
    assert_eq!(sb.read("effects.txt").matches("t:three").count(), 1);
    assert_eq!(sb.status(&run)["state"], "succeeded");
    let log = sb.cmd(&["log", &run]).ok().stdout;
    assert!(
        log.contains(&format!(
            "oncall accepted the loss of its journal after record {}",
            three - 1
        )),
        "{log}"
    );
}

/// Rolls run `run`'s store back to before record `seq` — record and summary together, as
/// sled's recovery does when it cuts its log — leaving the witness as it is.
fn roll_back_last_record(journal: &Path, run: &str, seq: u64) {
    use runbook_journals::RunId;
    let id: RunId = run.parse().expect("run id");
    let db = sled::Config::new()
        .path(journal)
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let mut key = vec![b'e'];
    key.extend_from_slice(&id.to_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    db.remove(&key)
        .expect("remove")
        .expect("the record existed");
    let mut skey = vec![b's'];
    skey.extend_from_slice(&id.to_bytes());
    let value = db.get(&skey).expect("get").expect("summary");
    let mut summary: Value = serde_json::from_slice(&value[4..]).expect("summary JSON");
    summary["last_seq"] = Value::from(seq - 1);
    summary.as_object_mut().expect("object").remove("chain");
    let json = serde_json::to_vec(&summary).expect("encode");
    let mut stored = crc32fast::hash(&json).to_le_bytes().to_vec();
    stored.extend_from_slice(&json);
    db.insert(&skey, stored).expect("insert");
    db.flush().expect("flush");
}

//! Finished runs leave the live store: opening the journal for writing moves them to its archive
//! and writes a new live store once enough of their records pile up (here after every finished
//! run: `RUNBOOK_JOURNAL_ARCHIVE_AFTER=1`). Archived runs read back the same through `history`,
//! `status` and `log`, a failed one is retried from its failed step, and a run killed beside
//! them resumes — the end state read from the journal's files and the steps' effects.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Sandbox, wait_for};

const ARCHIVE_AFTER: (&str, &str) = ("RUNBOOK_JOURNAL_ARCHIVE_AFTER", "1");

/// `two` fails until the file `fixed` exists.
const FLAKY: &str = r#"
runbook: flaky
steps:
  - id: one
    shell: { run: "echo x >> flaky-one" }
  - id: two
    shell: { run: "test -f fixed && echo x >> flaky-two" }
  - id: three
    shell: { run: "echo x >> flaky-three" }
"#;

const OK: &str = r#"
runbook: ok
steps:
  - id: only
    shell: { run: "echo x >> did-ok" }
"#;

/// `wait` waits for the file `go` (a minute at most), marking that it started.
const SLOW: &str = r#"
runbook: slow
steps:
  - id: one
    shell: { run: "echo x >> slow-one" }
  - id: wait
    idempotent: true
    shell: { run: "touch started; for i in $(seq 600); do test -f go && break; sleep 0.1; done" }
  - id: two
    shell: { run: "echo x >> slow-two" }
"#;

/// The sled stores in the journal directory: its own (`db`, before any compaction) and `live-N`.
fn stores(journal: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(journal)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("live-") || n == "db")
        .collect()
}

fn lines(sb: &Sandbox, name: &str) -> usize {
    sb.read(name).lines().count()
}

fn history(sb: &Sandbox) -> Vec<Value> {
    sb.cmd(&["history", "--output", "json"])
        .env(ARCHIVE_AFTER.0, ARCHIVE_AFTER.1)
        .ok()
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn archived_runs_read_back_the_same_are_retried_and_a_killed_run_beside_them_resumes() {
    let sb = Sandbox::new();
    sb.write("runbooks/flaky.yaml", FLAKY);
    sb.write("runbooks/ok.yaml", OK);
    sb.write("runbooks/slow.yaml", SLOW);
    let (key, value) = ARCHIVE_AFTER;
    // Below the default threshold nothing moves: the store is still the journal's own.
    sb.cmd(&["run", "ok"]).ok();
    let ok = sb.only_run();
    sb.cmd(&["run", "flaky"]).code(1);
    let flaky = sb.newest_run();
    let before: Vec<Vec<Value>> = [&ok, &flaky].map(|r| sb.records(r)).into();
    let journal = sb.journal();
    assert!(
        journal.join("db").is_file(),
        "the store before any compaction"
    );
    assert!(!journal.join("archive").exists());

    // The next run opens the journal for writing: both finished runs move to the archive.
    sb.cmd(&["run", "ok"]).env(key, value).ok();
    let pointer = std::fs::read_to_string(journal.join("store")).expect("the pointer file");
    let live = journal.join(pointer.trim());
    assert!(
        live.join("db").is_file(),
        "the new live store in {}",
        live.display()
    );
    assert!(!journal.join("db").exists(), "the old store is removed");
    for run in [&ok, &flaky] {
        assert!(
            journal.join("archive").join(format!("{run}.run")).is_file(),
            "{run} archived"
        );
    }
    // Read back the same, by every command that reads.
    assert_eq!([&ok, &flaky].map(|r| sb.records(r)).to_vec(), before);
    assert_eq!(sb.status(&flaky)["state"], "failed");
    let listed = history(&sb);
    assert_eq!(listed.len(), 3, "{listed:?}");

    // The archived failed run is retried from its failed step once the cause is fixed.
    sb.write("fixed", "");
    sb.cmd(&["resume", &flaky, "--retry-step", "two"])
        .env(key, value)
        .ok();
    assert_eq!(sb.status(&flaky)["state"], "succeeded");
    assert_eq!(
        [
            lines(&sb, "flaky-one"),
            lines(&sb, "flaky-two"),
            lines(&sb, "flaky-three")
        ],
        [1, 1, 1]
    );
    let records = sb.records(&flaky);
    assert_eq!(
        records[..before[1].len()],
        before[1][..],
        "its history kept"
    );
    assert!(records.iter().enumerate().all(|(i, r)| r["seq"] == i + 1));

    // A run killed in its long step beside the archived runs resumes where it stopped.
    let mut child = sb.cmd(&["run", "slow"]).env(key, value).spawn();
    wait_for("the long step to start", Duration::from_secs(60), || {
        sb.path().join("started").exists()
    });
    child.kill().expect("SIGKILL the executor");
    child.wait().expect("reap the executor");
    let slow = sb.newest_run();
    assert_eq!(sb.status(&slow)["state"], "running", "killed in flight");
    sb.write("go", "");
    sb.cmd(&["resume", &slow]).env(key, value).ok();
    assert_eq!(sb.status(&slow)["state"], "succeeded");
    assert_eq!([lines(&sb, "slow-one"), lines(&sb, "slow-two")], [1, 1]);
    // Every run is listed once (newest first), each as it ended, and no store is left beside the live one.
    let states: Vec<(String, String)> = history(&sb)
        .iter()
        .map(|r| {
            (
                r["runbook"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("slow", "succeeded"),
            ("ok", "succeeded"),
            ("flaky", "succeeded"),
            ("ok", "succeeded")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let stores = stores(&journal);
    assert_eq!(stores.len(), 1, "{stores:?}");
}

/// Waits at a gate.
const GATED: &str = r#"
runbook: gated
steps:
  - id: ask
    gate: "go on?"
  - id: after
    shell: { run: "echo x >> did-gated" }
"#;

#[test]
fn a_compaction_killed_after_any_of_its_steps_loses_nothing() {
    for step in ["archived", "written", "switched"] {
        let sb = Sandbox::new();
        sb.write("runbooks/flaky.yaml", FLAKY);
        sb.write("runbooks/ok.yaml", OK);
        sb.write("runbooks/gated.yaml", GATED);
        sb.cmd(&["run", "ok"]).ok();
        sb.cmd(&["run", "flaky"]).code(1);
        sb.cmd(&["run", "gated"]).code(3);
        let runs: Vec<String> = history(&sb)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        let before: Vec<Vec<Value>> = runs.iter().map(|r| sb.records(r)).collect();

        // The process opening the journal dies (SIGKILL) right after the step.
        let died = sb
            .cmd(&["run", "ok"])
            .env(ARCHIVE_AFTER.0, ARCHIVE_AFTER.1)
            .env("RUNBOOK_TEST_KILL_IN_COMPACTION", step)
            .run();
        assert_eq!(died.signal(), Some(9), "{}", died.explain(step));

        // Every run reads back as it was; the gated run is approved and finishes.
        let after: Vec<Vec<Value>> = runs.iter().map(|r| sb.records(r)).collect();
        assert_eq!(after, before, "after a kill once {step}");
        let gated = &runs[0];
        sb.cmd(&["approve", gated])
            .env(ARCHIVE_AFTER.0, ARCHIVE_AFTER.1)
            .ok();
        assert_eq!(
            sb.status(gated)["state"],
            "succeeded",
            "after a kill once {step}"
        );
        assert_eq!(lines(&sb, "did-gated"), 1);
        // The approving process compacted again: one live store, the old one gone.
        let journal = sb.journal();
        let stores = stores(&journal);
        assert_eq!(stores.len(), 1, "after a kill once {step}: {stores:?}");
        for (run, records) in runs.iter().zip(&before).skip(1) {
            assert_eq!(&sb.records(run), records, "after a kill once {step}");
        }
    }
}

#[test]
fn a_serve_kept_running_moves_runs_to_the_archive_as_they_end() {
    use crate::serve::{SETTLE, Serve};
    let sb = Sandbox::new();
    sb.write("runbooks/ok.yaml", OK);
    sb.write("runbooks/gated.yaml", GATED);
    let serve = Serve::start_with(&sb, &[], &[ARCHIVE_AFTER]);
    let gated = serve.start_run("gated");
    serve.wait_state(&gated, "waiting");
    let mut finished = Vec::new();
    for _ in 0..3 {
        let id = serve.start_run("ok");
        serve.wait_state(&id, "succeeded");
        finished.push(id);
    }
    // While serve runs, the finished runs leave its store for the archive.
    let journal = sb.journal();
    let archived = |id: &String| journal.join("archive").join(format!("{id}.run")).is_file();
    wait_for("serve to archive the finished runs", SETTLE, || {
        finished.iter().all(archived) && journal.join("store").is_file()
    });
    assert!(!journal.join("db").exists(), "the first store is gone");
    for id in &finished {
        let records = serve.records(id);
        assert_eq!(
            records.first().map(|r| &r["event"]),
            Some(&"run_started".into())
        );
        assert_eq!(serve.run(id)["state"], "succeeded");
    }
    // The parked run, in the new store, is approved through serve and finishes.
    let (status, body) = serve.post(&format!("/runs/{gated}/approve"), &serde_json::json!({}));
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&gated, "succeeded");
    assert_eq!(lines(&sb, "did-gated"), 1);
    serve.stop();
    // After serve: every run reads back from the command line, and one live store is left.
    let listed = history(&sb);
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(
        listed.iter().all(|r| r["state"] == "succeeded"),
        "{listed:?}"
    );
    let stores = stores(&journal);
    assert_eq!(stores.len(), 1, "{stores:?}");
}

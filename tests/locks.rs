//! Locks: a run holds its `lock` key until it ends, whether it waits at a gate or its process
//! died; a second run on the same key is refused with the holder's id, other keys run freely.

use std::os::unix::process::ExitStatusExt as _;

use serde_json::Value;

use crate::support::Sandbox;

const LOCKED: &str = r#"
runbook: locked
params:
  target: { type: string, required: true }
lock: "db/{{params.target}}"
steps:
  - id: work
    idempotent: true
    shell: { run: "echo work-{{params.target}} >> out.txt" }
  - id: confirm
    gate: "Done with {{params.target}}?"
"#;

/// Every run in the journal, oldest first.
fn runs(sb: &Sandbox) -> Vec<Value> {
    let out = sb.cmd(&["history", "--output", "json"]).ok();
    let mut runs: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("history line is JSON"))
        .collect();
    runs.reverse();
    runs
}

/// Asserts that a run on `target` is refused because `holder` holds `db/TARGET`.
fn assert_refused(sb: &Sandbox, target: &str, holder: &str) {
    let before = runs(sb).len();
    let out = sb
        .cmd(&[
            "run",
            "locked.yaml",
            "-p",
            &format!("target={target}"),
            "--yes",
        ])
        .run();
    assert!(
        out.code().is_some_and(|c| c != 0),
        "{}",
        out.explain("a run on a held lock must be refused")
    );
    assert!(
        out.stderr
            .contains(&format!("lock `db/{target}` is held by run {holder}")),
        "{}",
        out.explain("the refusal must name the lock key and the holder")
    );
    assert_eq!(runs(sb).len(), before, "a refused run is not created");
}

#[test]
fn a_run_parked_at_a_gate_holds_its_lock_until_it_is_aborted() {
    let sb = Sandbox::new();
    sb.write("locked.yaml", LOCKED);
    sb.cmd(&["run", "locked.yaml", "-p", "target=a"]).code(3);
    let first = sb.only_run();

    assert_refused(&sb, "a", &first);

    // Another key is free.
    sb.cmd(&["run", "locked.yaml", "-p", "target=b", "--yes"])
        .ok();
    assert_eq!(sb.read("out.txt"), "work-a\nwork-b\n");

    let aborted = sb
        .cmd(&["abort", &first, "--reason", "maintenance window closed"])
        .ok();
    assert!(
        aborted.stdout.contains(&format!("run {first} aborted")),
        "{}",
        aborted.explain("abort must confirm")
    );
    assert_eq!(sb.status(&first)["state"], "aborted");

    sb.cmd(&["run", "locked.yaml", "-p", "target=a", "--yes"])
        .ok();
    assert_eq!(sb.read("out.txt"), "work-a\nwork-b\nwork-a\n");
}

#[test]
fn a_run_whose_process_died_keeps_its_lock_and_resume_finishes_it() {
    // Killed right after the commit that records `work` done (with the gate's opening, which
    // it rides on).
    let mut killed = None;
    for kill in 1..=10u32 {
        let sb_try = Sandbox::new();
        sb_try.write("locked.yaml", LOCKED);
        let out = sb_try
            .cmd(&["run", "locked.yaml", "-p", "target=a", "--yes"])
            .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
            .run();
        assert_eq!(out.status.signal(), Some(9), "{}", out.explain("SIGKILL"));
        let run = sb_try.only_run();
        let records = sb_try.records(&run);
        let work_done = records
            .iter()
            .any(|r| r["event"] == "step_succeeded" && r["path"] == "work");
        if work_done && !records.iter().any(|r| r["event"] == "gate_decided") {
            killed = Some((sb_try, run));
            break;
        }
    }
    let (sb, run) = killed.expect("a kill point right after `work` succeeded");
    assert_eq!(sb.read("out.txt"), "work-a\n");

    assert_refused(&sb, "a", &run);

    sb.cmd(&["resume", &run, "--yes"]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded");
    assert_eq!(sb.read("out.txt"), "work-a\n", "`work` ran once");

    // Finished: the lock is free again.
    sb.cmd(&["run", "locked.yaml", "-p", "target=a", "--yes"])
        .ok();
}

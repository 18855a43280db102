//! Gates: a run parks at a gate and outlives its process; a later `approve` or `reject` from
//! another process decides it, and who decided (and why) is journaled. Four-eyes gates refuse
//! the person who started the run, `--yes` approves in the open, and a gate nobody decides in
//! time fails the run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::support::{Sandbox, wait_for};

const GATED: &str = r#"
runbook: gated
steps:
  - id: before
    shell: { run: "echo before >> out.txt" }
  - id: confirm
    gate: "Check the dashboards, then approve."
  - id: after
    shell: { run: "echo after >> out.txt" }
on_failure:
  - id: cleanup
    shell: { run: "echo cleanup >> out.txt" }
"#;

/// Starts `gated.yaml` detached and returns the parked run's id.
fn parked(sb: &Sandbox) -> String {
    sb.write("gated.yaml", GATED);
    let out = sb.cmd(&["run", "gated.yaml"]).code(3);
    let run = sb.only_run();
    assert!(
        out.stdout
            .contains(&format!("run {run} is waiting at gate `confirm`")),
        "{}",
        out.explain("the run must say where it waits")
    );
    run
}

fn events<'a>(records: &'a [Value], name: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == name).collect()
}

#[test]
fn a_parked_run_outlives_its_process_and_approve_from_another_process_finishes_it() {
    let sb = Sandbox::new();
    let run = parked(&sb);
    // The `run` process is gone; the journal alone knows the run is waiting.
    assert_eq!(sb.status(&run)["state"], "waiting");
    assert_eq!(sb.read("out.txt"), "before\n", "nothing past the gate ran");

    sb.cmd(&[
        "approve",
        &run,
        "--comment",
        "dashboards green",
        "--as",
        "alice",
    ])
    .ok();
    assert_eq!(sb.read("out.txt"), "before\nafter\n");
    assert_eq!(sb.status(&run)["state"], "succeeded");

    let human = sb.cmd(&["log", &run]).ok();
    assert!(
        human
            .stdout
            .contains("approved confirm by alice: dashboards green"),
        "{}",
        human.explain("the log must say who approved and why")
    );
    let records = sb.records(&run);
    let decided = events(&records, "gate_decided");
    assert_eq!(decided.len(), 1, "{records:?}");
    assert_eq!(decided[0]["path"], "confirm");
    assert_eq!(decided[0]["approved"], true);
    assert_eq!(decided[0]["by"], "alice");
    assert_eq!(decided[0]["comment"], "dashboards green");
}

#[test]
fn status_of_a_parked_run_shows_the_commands_that_decide_it() {
    let sb = Sandbox::new();
    let run = parked(&sb);
    let out = sb.cmd(&["status", &run]).ok();
    for line in [
        "gate `confirm` is open: Check the dashboards, then approve.".to_owned(),
        format!("approve: {} approve {run} --comment", sb.hint()),
        format!("reject:  {} reject {run} --comment", sb.hint()),
    ] {
        assert!(
            out.stdout.contains(&line),
            "{}",
            out.explain(&format!("status must show `{line}`"))
        );
    }
    let json = sb.status(&run);
    assert_eq!(json["open_gate"]["path"], "confirm");
}

#[test]
fn reject_fails_the_run_and_runs_its_on_failure_steps() {
    let sb = Sandbox::new();
    let run = parked(&sb);
    let out = sb
        .cmd(&["reject", &run, "--comment", "error rate too high"])
        .code(1);
    assert!(
        out.stdout
            .contains("rejected by tester: error rate too high"),
        "{}",
        out.explain("the failure must say who rejected and why")
    );
    assert_eq!(
        sb.read("out.txt"),
        "before\ncleanup\n",
        "on_failure runs, the steps after the gate do not"
    );
    let status = sb.status(&run);
    assert_eq!(status["state"], "failed");
    assert!(status["open_gate"].is_null(), "{status}");
    let human = sb.cmd(&["log", &run]).ok();
    assert!(
        human
            .stdout
            .contains("rejected confirm by tester: error rate too high"),
        "{}",
        human.explain("the log must show the rejection")
    );
    let records = sb.records(&run);
    let decided = events(&records, "gate_decided");
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["approved"], false);
    assert_eq!(decided[0]["comment"], "error rate too high");
}

#[test]
fn a_four_eyes_gate_refuses_the_starter_and_accepts_someone_else() {
    let sb = Sandbox::new();
    sb.write(
        "four.yaml",
        r#"
runbook: four
steps:
  - id: confirm
    gate: { prompt: "Rotate the root key?", four_eyes: true }
  - id: after
    shell: { run: "echo after >> out.txt" }
"#,
    );
    // `--yes` does not let the starter approve their own four-eyes gate: the run parks.
    sb.cmd(&["run", "four.yaml", "--yes"]).code(3);
    let run = sb.only_run();
    let before = sb.records(&run).len();

    let refused = sb.cmd(&["approve", &run, "--comment", "me"]).code(2);
    assert!(
        refused.stderr.contains(&format!(
            "gate `confirm` needs a second person: tester started run {run} and cannot approve it"
        )),
        "{}",
        refused.explain("the refusal must say why")
    );
    assert_eq!(
        sb.records(&run).len(),
        before,
        "a refused approval writes nothing"
    );
    assert_eq!(sb.status(&run)["state"], "waiting");

    sb.cmd(&["approve", &run, "--as", "bob"]).ok();
    assert_eq!(sb.read("out.txt"), "after\n");
    let records = sb.records(&run);
    let decided = events(&records, "gate_decided");
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["by"], "bob");
}

#[test]
fn yes_approves_gates_and_records_it_as_the_approver() {
    let sb = Sandbox::new();
    sb.write("gated.yaml", GATED);
    let out = sb.cmd(&["run", "gated.yaml", "--yes"]).ok();
    assert!(
        out.stdout.contains("approved confirm by tester (--yes)"),
        "{}",
        out.explain("the output must say the gate was approved by --yes")
    );
    let run = sb.only_run();
    let records = sb.records(&run);
    let decided = events(&records, "gate_decided");
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["by"], "tester (--yes)");
    assert_eq!(sb.read("out.txt"), "before\nafter\n");
}

const EXPIRING: &str = r#"
runbook: expiring
steps:
  - id: confirm
    # Long enough that a loaded machine parks the run before the gate expires (a commit can
    # take hundreds of milliseconds there), short enough to wait out.
    gate: { prompt: "Approve quickly", timeout: 1500ms }
  - id: after
    shell: { run: "echo after >> out.txt" }
on_failure:
  - id: cleanup
    shell: { run: "echo cleanup >> out.txt" }
"#;

/// Parks `expiring.yaml` and waits until its gate has expired; returns the run.
fn expired(sb: &Sandbox) -> String {
    sb.write("expiring.yaml", EXPIRING);
    sb.cmd(&["run", "expiring.yaml"]).code(3);
    let run = sb.only_run();
    let records = sb.records(&run);
    let opened = events(&records, "gate_opened");
    let expires_at: DateTime<Utc> = opened[0]["expires_at"]
        .as_str()
        .expect("a gate with a timeout journals when it expires")
        .parse()
        .expect("an RFC 3339 time");
    wait_for("the gate to expire", Duration::from_secs(10), || {
        Utc::now() > expires_at
    });
    run
}

#[test]
fn a_gate_nobody_decides_in_time_fails_the_run_on_resume() {
    let sb = Sandbox::new();
    let run = expired(&sb);
    let out = sb.cmd(&["resume", &run]).code(1);
    assert!(
        out.stdout
            .contains("nobody decided before the gate expired"),
        "{}",
        out.explain("the failure must say the gate expired")
    );
    assert_eq!(sb.read("out.txt"), "cleanup\n");
    let status = sb.status(&run);
    assert_eq!(status["state"], "failed");
    assert!(
        status["open_gate"].is_null(),
        "an expired gate is not open: {status}"
    );
    let human = sb.cmd(&["status", &run]).ok();
    assert!(
        !human.stdout.contains(" approve "),
        "{}",
        human.explain("a failed run must not offer approval")
    );
}

#[test]
fn approving_an_expired_gate_does_not_approve_it() {
    let sb = Sandbox::new();
    let run = expired(&sb);
    let out = sb
        .cmd(&["approve", &run, "--comment", "sorry, late"])
        .code(1);
    assert!(
        out.stdout
            .contains("nobody decided before the gate expired"),
        "{}",
        out.explain("a late approval must fail the gate")
    );
    assert_eq!(
        sb.read("out.txt"),
        "cleanup\n",
        "the step after the gate never runs"
    );
    assert!(events(&sb.records(&run), "gate_decided").is_empty());
    assert_eq!(sb.status(&run)["state"], "failed");
}

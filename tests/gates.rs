//! Gates: a run parks at a gate and outlives its process; a later `approve` or `reject` from
//! another process decides it, and who decided (and why) is journaled. Four-eyes gates refuse
//! the person who started the run, `--yes` approves in the open, a gate nobody decides in time
//! fails the run (and a late verdict is refused), `approvals: N` needs N distinct people, and
//! bad gate fields are reported where they are written. Gates on time in `serve`:
//! `tests/gate_timers.rs`.

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
fn approving_an_expired_gate_is_refused_and_changes_nothing_until_resume_applies_the_expiry() {
    let sb = Sandbox::new();
    let run = expired(&sb);
    let records = sb.records(&run);
    for verb in ["approve", "reject"] {
        let out = sb.cmd(&[verb, &run, "--comment", "sorry, late"]).code(2);
        assert!(
            out.stderr
                .contains(&format!("error: gate `confirm` of run {run} expired at "))
                && out
                    .stderr
                    .contains("with nobody deciding; it can no longer be decided"),
            "{}",
            out.explain("a late verdict must be refused, saying the gate expired")
        );
        assert_eq!(sb.records(&run), records, "a refused {verb} writes nothing");
    }
    assert!(!sb.path().join("out.txt").exists(), "nothing ran");
    assert_eq!(sb.status(&run)["state"], "waiting");
    // The expiry is applied by the next resume (or by `serve` on time: tests/gate_timers.rs).
    let out = sb.cmd(&["resume", &run]).code(1);
    assert!(
        out.stdout
            .contains("nobody decided before the gate expired"),
        "{}",
        out.explain("resume applies the expiry")
    );
    assert_eq!(
        sb.read("out.txt"),
        "cleanup\n",
        "the step after the gate never runs"
    );
    let records = sb.records(&run);
    assert!(events(&records, "gate_decided").is_empty());
    assert_eq!(events(&records, "gate_expired").len(), 1);
    assert_eq!(sb.status(&run)["state"], "failed");
    // Now ended: a verdict names what became of the gate.
    let out = sb.cmd(&["approve", &run]).code(2);
    assert!(
        out.stderr.contains("which failed it (on_timeout: fail)"),
        "{}",
        out.explain("a verdict on an expired gate says what the expiry did")
    );
}

#[test]
fn bad_gate_fields_are_reported_at_file_line_column() {
    let sb = Sandbox::new();
    sb.write(
        "bad.yaml",
        r#"runbook: bad-gates
steps:
  - id: none
    gate: { prompt: "A?", approvals: 0 }
  - id: maybe
    gate: { prompt: "B?", timeout: 1m, on_timeout: maybe }
  - id: scalar
    gate: { prompt: "C?", approvers: alice }
  - id: never
    gate: { prompt: "D?", on_timeout: approve }
  - id: too-many
    gate: { prompt: "E?", approvals: 3, approvers: [alice, bob] }
"#,
    );
    let out = sb.cmd(&["check", "bad.yaml"]).code(2);
    let want = r#"error: `approvals` must be at least 1 (how many distinct people must approve)
 --> bad.yaml:4:38
  |
4 |     gate: { prompt: "A?", approvals: 0 }
  |                                      ^

error: `on_timeout` must be one of reject, approve, fail, not `maybe`
 --> bad.yaml:6:52
  |
6 |     gate: { prompt: "B?", timeout: 1m, on_timeout: maybe }
  |                                                    ^^^^^

error: `approvers` must be a list, not a scalar
 --> bad.yaml:8:38
  |
8 |     gate: { prompt: "C?", approvers: alice }
  |                                      ^^^^^

error: `on_timeout` needs a `timeout`: without one the gate never expires
  --> bad.yaml:10:27
   |
10 |     gate: { prompt: "D?", on_timeout: approve }
   |                           ^^^^^^^^^^

error: `approvals: 3` cannot be met: only 2 people are listed in `approvers`
  --> bad.yaml:12:38
   |
12 |     gate: { prompt: "E?", approvals: 3, approvers: [alice, bob] }
   |                                      ^

error: 5 problems found
"#;
    assert_eq!(out.stderr, want, "{}", out.explain("the whole message"));
}

const TWO_APPROVERS: &str = r#"
runbook: two-approvers
steps:
  - id: confirm
    gate: { prompt: "Go?", approvals: 2, approvers: [alice, bob] }
  - id: after
    shell: { run: "echo after >> out.txt" }
"#;

#[test]
fn from_the_command_line_two_approvals_need_two_people_and_one_counts_once() {
    let sb = Sandbox::new();
    sb.write("two.yaml", TWO_APPROVERS);
    sb.cmd(&["run", "two.yaml"]).code(3);
    let run = sb.only_run();
    // The first approval parks the run again (exit 3), waiting for the second.
    let out = sb.cmd(&["approve", &run, "--as", "alice"]).code(3);
    assert!(
        !sb.path().join("out.txt").exists(),
        "{}",
        out.explain("not yet")
    );
    let status = sb.cmd(&["status", &run]).ok();
    assert!(
        status.stdout.contains("approvals: 1 of 2 (alice)")
            && status.stdout.contains("approvers: alice, bob"),
        "{}",
        status.explain("status shows the approvals so far")
    );
    let records = sb.records(&run);
    let out = sb.cmd(&["approve", &run, "--as", "alice"]).code(2);
    assert!(
        out.stderr.contains("alice has approved gate `confirm`")
            && out.stderr.contains("an approval counts once per person"),
        "{}",
        out.explain("the same person twice is refused")
    );
    let out = sb.cmd(&["approve", &run, "--as", "mallory"]).code(2);
    assert!(
        out.stderr.contains("mallory may not decide gate `confirm`"),
        "{}",
        out.explain("someone not listed is refused")
    );
    assert_eq!(sb.records(&run), records, "refusals write nothing");
    sb.cmd(&["approve", &run, "--as", "bob"]).ok();
    assert_eq!(sb.read("out.txt"), "after\n");
    assert_eq!(sb.status(&run)["state"], "succeeded");
}

//! Durable timers: a sleep's wake time is journaled when it starts, so a run killed while it
//! sleeps wakes at the original time when resumed — not a whole sleep later.

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::support::{Sandbox, wait_for};

const NAP: &str = r#"
runbook: nap
steps:
  - id: nap
    sleep: 2s
  - id: after
    shell: { run: "echo after >> out.txt" }
"#;

/// Runs `nap.yaml` killed after each commit in turn until the last record is the `timer_set`
/// of `nap`; returns the sandbox, the run and the journaled wake time.
fn killed_after_timer_set() -> (Sandbox, String, DateTime<Utc>) {
    for kill in 1..=10u32 {
        let sb = Sandbox::new();
        sb.write("nap.yaml", NAP);
        let out = sb
            .cmd(&["run", "nap.yaml"])
            .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
            .run();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{}",
            out.explain("never saw timer_set as the last record")
        );
        let run = sb.only_run();
        let records = sb.records(&run);
        let last = records.last().expect("records");
        if last["event"] == "timer_set" {
            assert_eq!(last["path"], "nap");
            let wake_at = time(&last["wake_at"]);
            return (sb, run, wake_at);
        }
    }
    panic!("no kill point left timer_set as the last record");
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .expect("an RFC 3339 time")
}

/// The one `timer_set` record, and the sleep step's output.
fn timer_and_output(sb: &Sandbox, run: &str) -> (Value, Value) {
    let records = sb.records(run);
    let timers: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "timer_set")
        .collect();
    assert_eq!(
        timers.len(),
        1,
        "the wake time is decided once: {records:?}"
    );
    let succeeded = records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "nap")
        .expect("the sleep succeeded");
    (timers[0].clone(), succeeded["output"].clone())
}

#[test]
fn a_sleep_killed_midway_and_resumed_after_its_wake_time_does_not_sleep_again() {
    let (sb, run, wake_at) = killed_after_timer_set();
    wait_for(
        "the journaled wake time to pass",
        Duration::from_secs(5),
        || Utc::now() > wake_at,
    );

    sb.cmd(&["resume", &run]).ok();
    assert_eq!(sb.read("out.txt"), "after\n");
    assert_eq!(sb.status(&run)["state"], "succeeded");

    let (timer, output) = timer_and_output(&sb, &run);
    assert_eq!(time(&timer["wake_at"]), wake_at);
    let woke_at = time(&output["woke_at"]);
    assert!(woke_at >= wake_at, "woke at {woke_at}, before {wake_at}");
    assert!(
        woke_at < wake_at + TimeDelta::seconds(2),
        "woke at {woke_at}: the resumed run slept the whole 2s again after {wake_at}"
    );
}

#[test]
fn a_sleep_resumed_before_its_wake_time_wakes_at_the_original_time() {
    let (sb, run, wake_at) = killed_after_timer_set();
    assert!(
        Utc::now() < wake_at,
        "the test needs to resume before the wake time"
    );

    let resumed_at = Utc::now();
    sb.cmd(&["resume", &run]).ok();
    assert_eq!(sb.read("out.txt"), "after\n");
    let (timer, output) = timer_and_output(&sb, &run);
    assert_eq!(time(&timer["wake_at"]), wake_at);
    let woke_at = time(&output["woke_at"]);
    assert!(woke_at >= wake_at, "woke at {woke_at}, before {wake_at}");
    // A fresh 2s sleep from the resume would end after this.
    assert!(
        woke_at < resumed_at + TimeDelta::seconds(2),
        "woke at {woke_at}: the run resumed at {resumed_at} started a new 2s sleep instead of \
         waking at {wake_at}"
    );
}

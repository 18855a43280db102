//! Schedules across executors: three `runbook serve` processes share one etcd journal on a real
//! 3-member etcd cluster (testbeds/etcd.sh, loopback) and fire the same 2-second schedule for a
//! minute while they are killed (SIGKILL) and started again one after the other. Every fire time is
//! started exactly once — one run per fire in the schedule's journaled history, every run in the
//! journal accounted for by one fire, each run's effect written once — and none is lost while
//! at least one executor is up.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::serve::wait_until;
use crate::support::Sandbox;
use crate::support::fleet::{Executor, Store};

/// The journal's key prefix in etcd.
const PREFIX: &str = "/fleet-schedules";

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// The schedule's every journaled fire, oldest first, as (fire time, outcome, run): the state
/// the executors keep under the journal's prefix in etcd.
fn fires(store: &Store) -> Vec<(DateTime<Utc>, String, Option<String>)> {
    let stored = store.etcdctl(&[
        "get",
        "--print-value-only",
        &format!("{PREFIX}/meta/schedule/ticker"),
    ]);
    let state: Value = serde_json::from_str(stored.trim()).expect("the schedule's state is JSON");
    state["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|f| {
            (
                time(&f["fire"]),
                f["outcome"].as_str().expect("an outcome").to_owned(),
                f["run"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Every run in the journal: the summaries' keys in etcd.
fn runs(store: &Store) -> BTreeSet<String> {
    store
        .etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            &format!("{PREFIX}/summaries/"),
        ])
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.rsplit('/').next().expect("an id").to_owned())
        .collect()
}

fn effect_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("fires.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn three_executors_fire_a_two_second_schedule_once_per_fire_time_while_they_are_killed_and_restarted()
 {
    let store = Store::new(PREFIX);
    let sb = Sandbox::new();
    // Not idempotent: a run stopped inside this step by a SIGKILL is not run again, so two
    // lines for one fire time can only come from two runs of it.
    sb.write(
        "runbooks/ticker.yaml",
        r#"runbook: ticker
schedule: { cron: "*/2 * * * * *", catch_up: none }
steps:
  - id: note
    shell: { run: "echo '{{run.trigger.fire_time}}' >> fires.txt" }
"#,
    );

    let names = ["a", "b", "c"];
    let mut up: Vec<Option<Executor>> = names
        .iter()
        .map(|n| Some(Executor::start(&sb, &store, n, 0)))
        .collect();
    let began = Utc::now();
    // Kill one executor at a time, start it again ten seconds later: there are always two up.
    for (round, victim) in [0usize, 1, 2].into_iter().enumerate() {
        let at = began + chrono::Duration::seconds(8 + 18 * i64::try_from(round).unwrap());
        wait_until("the next kill", at);
        up[victim].take().expect("up").kill();
        wait_until(
            "the killed executor's machine to come back",
            at + chrono::Duration::seconds(10),
        );
        up[victim] = Some(Executor::start(&sb, &store, names[victim], round + 1));
    }
    wait_until("a minute of fires", began + chrono::Duration::seconds(62));
    for executor in up.into_iter().flatten() {
        let _ = executor.stop();
    }

    let fired = fires(&store);
    let times: Vec<DateTime<Utc>> = fired.iter().map(|f| f.0).collect();
    let unique: BTreeSet<DateTime<Utc>> = times.iter().copied().collect();
    assert_eq!(
        times.len(),
        unique.len(),
        "a fire time handled twice: {fired:#?}"
    );
    // Every 2-second fire time from the first to the last handled was handled: none lost.
    let (first, last) = (
        *unique.first().expect("fires"),
        *unique.last().expect("fires"),
    );
    assert!(
        last - first >= chrono::Duration::seconds(50),
        "fires cover only {first} … {last}"
    );
    let expected = usize::try_from((last - first).num_seconds() / 2 + 1).unwrap();
    assert_eq!(
        unique.len(),
        expected,
        "fire times missing between {first} and {last}: {fired:#?}"
    );
    let not_started: Vec<_> = fired.iter().filter(|f| f.1 != "started").collect();
    assert!(
        not_started.is_empty(),
        "fires not started although two executors were up: {not_started:#?}"
    );

    // Every run in the journal is the run of exactly one fire.
    let runs = runs(&store);
    let fired_runs: BTreeSet<String> = fired.iter().filter_map(|f| f.2.clone()).collect();
    assert_eq!(fired_runs.len(), fired.len(), "one run per fire");
    assert_eq!(
        runs, fired_runs,
        "runs without a fire, or fires without a run"
    );

    // Each effect once: no fire time written by two runs.
    let lines = effect_lines(sb.path());
    let distinct: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(
        lines.len(),
        distinct.len(),
        "an effect written twice: {lines:#?}"
    );
    assert!(
        lines.len() + 3 >= fired.len(),
        "{} effects for {} fires (three SIGKILLs can each stop at most one run before its effect)",
        lines.len(),
        fired.len()
    );
}

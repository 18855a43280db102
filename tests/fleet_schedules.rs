//! Schedules across executors: three `runbook serve` processes share one etcd journal on a real
//! 3-member etcd cluster (testbeds/etcd.sh, loopback) and fire the same 2-second schedule for a
//! minute while they are killed (SIGKILL) and started again one after the other. Every fire time is
//! started exactly once — one run per fire in the schedule's journaled history, every run in the
//! journal accounted for by one fire, each run's effect written once — and none is lost while
//! at least one executor is up and holds its lease. In the middle of it the store freezes
//! (SIGSTOP of every etcd member) for longer than the lease TTL: the executors say `suspended`,
//! decide no fire (none is refused), the fires of the freeze are missed (`catch_up: none`), and
//! once the store is back they fire again. An executor without its lease decides no fire, so
//! the executors' `suspended`, `lost`, `held` and `joined` events say which fires may be missed:
//! those of the freeze, and those of any stall a loaded machine adds.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::serve::wait_until;
use crate::support::Sandbox;
use crate::support::fleet::{Executor, Store, TTL_SECONDS};

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
                match f["detail"].as_str() {
                    Some(why) => format!("{}: {why}", f["outcome"].as_str().expect("an outcome")),
                    None => f["outcome"].as_str().expect("an outcome").to_owned(),
                },
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

/// What the executors logged at WARN or above, each line after its log's name: the story of a
/// fire that was not started.
fn complaints(dir: &Path) -> String {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .expect("the sandbox")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut out = String::new();
    for log in logs {
        let name = log
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            if line.contains("WARN") || line.contains("ERROR") || line.contains("\"warn") {
                let _ = writeln!(out, "{name}: {line}");
            }
        }
    }
    out
}

/// The etcd journal's longest pause between two tries of a request the store did not answer
/// (`backoff` in `journals/src/etcd_journal.rs`): a scheduler tick that met the store without a
/// leader may sleep this long after the lease is back before it reads again.
const RETRY_PAUSE: chrono::Duration = chrono::Duration::seconds(2);

/// One executor process from its start to its kill (or the end), and the stretches in which it
/// had no lease: from a TTL before it said `suspended` or `lost` (its last renewal may have been
/// that long before) until it said `held` or `joined` again, and the journal's retry pause
/// after that.
struct Life {
    log: String,
    up: (DateTime<Utc>, DateTime<Utc>),
    leaseless: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Life {
    fn read(dir: &Path, log: &str, up: (DateTime<Utc>, DateTime<Utc>)) -> Self {
        let ttl = chrono::Duration::seconds(i64::try_from(TTL_SECONDS).unwrap());
        let mut leaseless = Vec::new();
        let mut since = None;
        for line in std::fs::read_to_string(dir.join(log))
            .unwrap_or_default()
            .lines()
        {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["event"] != "serve" {
                continue;
            }
            match v["what"].as_str() {
                Some("suspended" | "lost") => {
                    since.get_or_insert(time(&v["at"]) - ttl);
                }
                Some("held" | "joined") => {
                    if let Some(from) = since.take() {
                        leaseless.push((from, time(&v["at"]) + RETRY_PAUSE));
                    }
                }
                _ => {}
            }
        }
        if let Some(from) = since {
            leaseless.push((from, up.1));
        }
        Self {
            log: log.to_owned(),
            up,
            leaseless,
        }
    }

    /// Whether it was up and held its lease from `from` to `to`.
    fn able(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.up.0 <= from
            && to <= self.up.1
            && self.leaseless.iter().all(|(a, b)| *b < from || to < *a)
    }
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
    // lines for one fire time can only come from two runs of it. Such a run stays
    // `needs-attention`, and under the default `overlap: skip` every fire after it would be
    // skipped (as it should: the scheduler's table tests prove the overlap policies); `allow`
    // keeps this test about which executor fires when.
    sb.write(
        "runbooks/ticker.yaml",
        r#"runbook: ticker
schedule: { cron: "*/2 * * * * *", catch_up: none, overlap: allow }
steps:
  - id: note
    shell: { run: "echo '{{run.trigger.fire_time}}' >> fires.txt" }
"#,
    );

    let names = ["a", "b", "c"];
    // (log, up since) of each executor process, and its lives once it ended.
    let mut since: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut lives: Vec<Life> = Vec::new();
    let mut up: Vec<Option<Executor>> = names
        .iter()
        .map(|n| {
            let executor = Executor::start(&sb, &store, n, 0);
            since.push((format!("{n}-0.log"), Utc::now()));
            Some(executor)
        })
        .collect();
    let began = Utc::now();
    let ttl = chrono::Duration::seconds(i64::try_from(TTL_SECONDS).unwrap());
    let mut freeze = (began, began);
    // Kill one executor at a time, start it again ten seconds later: there are always two up.
    for (round, victim) in [0usize, 1, 2].into_iter().enumerate() {
        let at = began + chrono::Duration::seconds(8 + 18 * i64::try_from(round).unwrap());
        wait_until("the next kill", at);
        let (log, from) = since[victim].clone();
        lives.push(Life::read(sb.path(), &log, (from, Utc::now())));
        up[victim].take().expect("up").kill();
        wait_until(
            "the killed executor's machine to come back",
            at + chrono::Duration::seconds(10),
        );
        up[victim] = Some(Executor::start(&sb, &store, names[victim], round + 1));
        since[victim] = (format!("{}-{}.log", names[victim], round + 1), Utc::now());
        if round == 0 {
            // The store freezes for twice the TTL, all three executors up, before b's kill.
            wait_until("the store's freeze", began + chrono::Duration::seconds(19));
            store.signal_members(Signal::SIGSTOP);
            freeze = (Utc::now(), Utc::now() + ttl * 2);
            wait_until("the store's thaw", freeze.1);
            store.signal_members(Signal::SIGCONT);
        }
    }
    wait_until("a minute of fires", began + chrono::Duration::seconds(62));
    let end = Utc::now();
    for executor in up.into_iter().flatten() {
        let _ = executor.stop();
    }
    for (log, from) in &since {
        lives.push(Life::read(sb.path(), log, (*from, end)));
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
        "{}\nfire times missing between {first} and {last}: {fired:#?}",
        complaints(sb.path())
    );
    // A fire not started had nobody able to start it: no executor up and holding its lease
    // from the fire time until a second later (the scheduler's grace for `catch_up: none`).
    let not_started: Vec<_> = fired
        .iter()
        .filter(|f| f.1 != "started")
        .filter(|f| {
            lives
                .iter()
                .any(|l| l.able(f.0, f.0 + chrono::Duration::seconds(1)))
        })
        .collect();
    let leaseless: Vec<_> = lives
        .iter()
        .flat_map(|l| l.leaseless.iter().map(move |w| (&l.log, w)))
        .collect();
    // What matters most last: a long message is cut in its middle.
    assert!(
        not_started.is_empty(),
        "{}\nwithout a lease: {leaseless:#?}\nup: {:#?}\nfires not started although an executor was up with its lease: {not_started:#?}",
        complaints(sb.path()),
        lives.iter().map(|l| (&l.log, l.up)).collect::<Vec<_>>(),
    );
    // The freeze: every executor up said it had no lease, no fire of it started, and the
    // fires after it did.
    for life in lives
        .iter()
        .filter(|l| l.up.0 < freeze.0 && freeze.1 < l.up.1)
    {
        assert!(
            life.leaseless
                .iter()
                .any(|(a, b)| *a < freeze.1 && freeze.0 < *b),
            "{} did not say it was without a lease while etcd was frozen ({} … {}): {:?}",
            life.log,
            freeze.0,
            freeze.1,
            life.leaseless
        );
    }
    // A tick that began just before the freeze waits for the store and may start its fire
    // late; the fires after it fall due while every executor waits or has no lease, and a
    // second after the thaw they are stale.
    let two = chrono::Duration::seconds(2);
    let frozen: Vec<_> = fired
        .iter()
        .filter(|f| freeze.0 < f.0 && f.0 <= freeze.1)
        .collect();
    assert!(
        frozen.iter().all(|f| !f.1.starts_with("refused")),
        "no fire is refused for want of a lease: {frozen:#?}"
    );
    let deep: Vec<_> = frozen
        .iter()
        .filter(|f| freeze.0 + two < f.0 && f.0 <= freeze.1 - two)
        .collect();
    assert!(
        !deep.is_empty() && deep.iter().all(|f| f.1 == "missed"),
        "the fires deep in etcd's freeze are missed: {frozen:#?}"
    );
    let thawed = freeze.1 + ttl + chrono::Duration::seconds(3);
    assert!(
        fired.iter().any(|f| f.0 > thawed
            && f.0 < thawed + chrono::Duration::seconds(8)
            && f.1 == "started"),
        "fires start again after the thaw: {fired:#?}"
    );
    let started = fired.iter().filter(|f| f.1 == "started").count();
    assert!(
        started * 2 > fired.len(),
        "most fires started: {fired:#?}\nwithout a lease: {leaseless:#?}"
    );

    // Every run in the journal is the run of exactly one fire.
    let runs = runs(&store);
    let fired_runs: BTreeSet<String> = fired.iter().filter_map(|f| f.2.clone()).collect();
    assert_eq!(fired_runs.len(), started, "one run per started fire");
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
        lines.len() + 3 >= started,
        "{} effects for {started} started fires (three SIGKILLs can each stop at most one run before its effect)",
        lines.len(),
    );
}

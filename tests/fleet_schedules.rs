//! Schedules across executors: three `runbook serve` processes share one etcd journal on a real
//! 3-member etcd cluster (testbeds/etcd.sh, loopback) and fire the same 2-second schedule for a
//! minute while they are killed (SIGKILL) and started again one after the other. Every fire time is
//! started exactly once — one run per fire in the schedule's journaled history, every run in the
//! journal accounted for by one fire, each run's effect written once — and none is lost while
//! at least one executor is up.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::serve::wait_until;
use crate::support::clusters::Cluster;
use crate::support::{Sandbox, wait_for};

/// The journal's key prefix in etcd.
const PREFIX: &str = "/fleet-schedules";

/// How long an executor may take to come up on a loaded machine.
const UP: Duration = Duration::from_secs(60);

/// One `runbook serve` on the etcd journal, with a state directory of its own (its local files:
/// `serve.json`, follow files) as if it ran on a machine of its own.
struct Executor {
    child: Child,
    log: PathBuf,
}

impl Executor {
    fn start(sb: &Sandbox, journal: &str, name: &str, generation: usize) -> Self {
        let log = sb.path().join(format!("{name}-{generation}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = sb.cmd(&[
            "serve",
            "--journal",
            journal,
            "--listen",
            "127.0.0.1:0",
            "--tick",
            "100ms",
        ]);
        cmd = cmd.env("XDG_STATE_HOME", sb.path().join(format!("state-{name}")));
        let child = cmd.spawn_to(out);
        let executor = Self { child, log };
        wait_for(&format!("executor {name} to listen"), UP, || {
            executor.output().contains("serving on")
        });
        executor
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the machine is gone.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, waited for.
    fn stop(mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("signal serve");
        let mut ended = None;
        wait_for("an executor to stop after SIGTERM", UP, || {
            ended = self.child.try_wait().expect("wait");
            ended.is_some()
        });
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// `etcdctl` against the cluster: what the journal stored, read behind runbook's back.
fn etcdctl(endpoints: &[String], args: &[&str]) -> String {
    let ctl = std::env::var_os("ETCDCTL")
        .map_or_else(|| PathBuf::from("/usr/bin/etcdctl"), PathBuf::from);
    let out = std::process::Command::new(ctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .output()
        .expect("etcdctl runs");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The schedule's every journaled fire, oldest first, as (fire time, outcome, run): the state
/// the executors keep under the journal's prefix in etcd.
fn fires(endpoints: &[String]) -> Vec<(DateTime<Utc>, String, Option<String>)> {
    let stored = etcdctl(
        endpoints,
        &[
            "get",
            "--print-value-only",
            &format!("{PREFIX}/meta/schedule/ticker"),
        ],
    );
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
fn runs(endpoints: &[String]) -> BTreeSet<String> {
    etcdctl(
        endpoints,
        &[
            "get",
            "--prefix",
            "--keys-only",
            &format!("{PREFIX}/summaries/"),
        ],
    )
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
    let cluster = Cluster::etcd();
    let endpoints: Vec<String> = (1..=3)
        .map(|i| {
            cluster
                .var(&format!("ETCD_ENDPOINT_{i}"))
                .trim_start_matches("http://")
                .to_owned()
        })
        .collect();
    let journal = format!("etcd://{}{PREFIX}", endpoints.join(","));
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
        .map(|n| Some(Executor::start(&sb, &journal, n, 0)))
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
        up[victim] = Some(Executor::start(&sb, &journal, names[victim], round + 1));
    }
    wait_until("a minute of fires", began + chrono::Duration::seconds(62));
    for executor in up.into_iter().flatten() {
        executor.stop();
    }

    let fired = fires(&endpoints);
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
    let runs = runs(&endpoints);
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

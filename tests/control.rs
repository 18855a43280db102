//! Run control by an operator: a failed run taken up again at the step that failed (`resume
//! --retry-step` / `--skip-step`), a run paused at a step boundary and unpaused, and an abort
//! that stops the step in flight and runs the runbook's cleanup steps — from the command line
//! beside the process executing the run, and through `serve`'s API.
//!
//! Effects are counted in files the steps append to, processes observed in `/proc`, and etcd
//! members observed from the servers themselves. Every wait polls a condition with a bound.

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::captured::Captured;
use crate::support::{Sandbox, wait_for};

/// How long anything may take to come about on a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

/// A precheck that counts its runs in `prechecked`; five steps, each appending a line to its own
/// file (`did-STEP`); `three` fails until `fixed` exists. The
/// run's `on_failure` step appends to `failed`.
const FIVE: &str = r#"
runbook: five
lock: "five"
prechecks:
  - id: looked
    shell: { run: "echo x >> prechecked" }
steps:
  - id: one
    shell: { run: "echo x >> did-one" }
  - id: two
    shell: { run: "echo x >> did-two" }
  - id: three
    shell: { run: "test -f fixed && echo x >> did-three" }
  - id: four
    shell: { run: "echo x >> did-four" }
  - id: five
    shell: { run: "echo x >> did-five" }
on_failure:
  - id: note
    shell: { run: "echo x >> failed" }
"#;

/// How many lines the file `name` in the sandbox has.
fn count(sb: &Sandbox, name: &str) -> usize {
    sb.read(name).lines().count()
}

/// The counts of the five steps' files and of `failed`.
fn counts(sb: &Sandbox) -> [usize; 6] {
    [
        "did-one",
        "did-two",
        "did-three",
        "did-four",
        "did-five",
        "failed",
    ]
    .map(|f| count(sb, f))
}

/// The event names of a run's records, in order.
fn event_names(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The position of the first record matching `pred`.
fn position(records: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    records.iter().position(pred)
}

#[test]
fn a_failed_run_is_retried_from_its_failed_step_once_the_cause_is_fixed() {
    let sb = Sandbox::new();
    sb.write("runbooks/five.yaml", FIVE);
    sb.cmd(&["run", "five"]).code(1);
    let run = sb.only_run();
    assert_eq!(counts(&sb), [1, 1, 0, 0, 0, 1]);
    assert_eq!(count(&sb, "prechecked"), 1);

    // Without a decision: refused, naming both ways on.
    let refused = sb.cmd(&["resume", &run]).code(2);
    for flag in ["--retry-step three", "--skip-step three"] {
        assert!(
            refused.stderr.contains(&format!(" resume {run} {flag}")),
            "{}",
            refused.explain(&format!("the refusal names `{flag}`"))
        );
    }
    assert_eq!(sb.status(&run)["state"], "failed", "nothing changed");
    assert_eq!(count(&sb, "prechecked"), 1, "nothing ran");

    // The lock went with the failure; while another run holds it, the run is not taken up.
    sb.write(
        "runbooks/blocker.yaml",
        "runbook: blocker\nlock: \"five\"\nsteps:\n  - id: hold\n    gate: \"hold the lock\"\n",
    );
    sb.cmd(&["run", "blocker"]).code(3);
    let blocker = sb
        .cmd(&["history", "--output", "json"])
        .ok()
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["runbook"] == "blocker")
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .expect("the blocker's id");
    let held = sb.cmd(&["resume", &run, "--retry-step", "three"]).code(1);
    assert!(
        held.stderr
            .contains(&format!("lock `five` is held by run {blocker}")),
        "{}",
        held.explain("the lock's holder is named")
    );
    assert_eq!(count(&sb, "prechecked"), 1, "nothing ran");
    sb.cmd(&["abort", &blocker]).ok();

    // Retried before the cause is fixed: it fails again, and its on_failure runs again.
    sb.cmd(&["--as", "ann", "resume", &run, "--retry-step", "three"])
        .code(1);
    assert_eq!(counts(&sb), [1, 1, 0, 0, 0, 2]);
    assert_eq!(count(&sb, "prechecked"), 2, "the prechecks ran again first");

    // Fixed: steps 1–2 are not run again, 3–5 run, the run succeeds, on_failure stays at two.
    sb.write("fixed", "");
    let out = sb
        .cmd(&[
            "--as",
            "bob",
            "resume",
            &run,
            "--retry-step",
            "three",
            "--comment",
            "disk replaced",
        ])
        .ok();
    assert!(
        out.stdout.contains(&format!("run {run} succeeded")),
        "{}",
        out.explain("success")
    );
    assert_eq!(counts(&sb), [1, 1, 1, 1, 1, 2]);
    assert_eq!(count(&sb, "prechecked"), 3);
    assert_eq!(sb.status(&run)["state"], "succeeded");

    // The log says who took the run up, and why; the failures stay in the history before it.
    let log = sb.cmd(&["log", &run]).ok();
    for line in [
        format!("run {run}: reopened by bob: disk replaced"),
        "decided three: retry by bob: disk replaced".to_owned(),
        format!("run {run}: reopened by ann"),
    ] {
        assert!(log.stdout.contains(&line), "{}", log.explain(&line));
    }
    let records = sb.records(&run);
    let names = event_names(&records);
    assert_eq!(
        names.iter().filter(|n| *n == "run_reopened").count(),
        2,
        "{names:?}"
    );
    let failed_three = records
        .iter()
        .filter(|r| r["event"] == "step_failed" && r["path"] == "three")
        .count();
    assert_eq!(failed_three, 2, "both failures stay journaled");
    let reopened = position(&records, |r| {
        r["event"] == "run_reopened" && r["by"] == "bob"
    })
    .expect("reopened by bob");
    let decided = position(&records, |r| {
        r["event"] == "operator_decided" && r["by"] == "bob"
    })
    .expect("bob's decision");
    assert!(reopened < decided, "{names:?}");
    assert_eq!(records[decided]["action"], "retry");
    assert_eq!(records[decided]["comment"], "disk replaced");
    assert_eq!(
        records
            .iter()
            .filter(|r| r["event"] == "state_changed" && r["state"] == "failed")
            .count(),
        2,
        "each failure ended the run, journaled"
    );

    // The lock went with the end and came back with each retry: free now.
    sb.cmd(&["run", "five"]).ok();
}

#[test]
fn a_failed_run_resumed_with_skip_step_goes_on_after_the_skipped_step() {
    let sb = Sandbox::new();
    sb.write("runbooks/five.yaml", FIVE);
    sb.cmd(&["run", "five"]).code(1);
    let run = sb.only_run();

    let wrong = sb.cmd(&["resume", &run, "--skip-step", "two"]).code(2);
    assert!(
        wrong.stderr.contains(&format!(
            "step `two` of run {run} did not fail (failed: three)"
        )),
        "{}",
        wrong.explain("a step that did not fail is refused")
    );

    sb.cmd(&[
        "--as",
        "carol",
        "resume",
        &run,
        "--skip-step",
        "three",
        "--comment",
        "done by hand",
    ])
    .ok();
    assert_eq!(counts(&sb), [1, 1, 0, 1, 1, 1]);
    let log = sb.cmd(&["log", &run]).ok();
    assert!(
        log.stdout
            .contains("decided three: skip by carol: done by hand"),
        "{}",
        log.explain("the log shows who skipped the step and why")
    );
    let status = sb.status(&run);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let three = status["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["path"] == "three"))
        .expect("three");
    assert_eq!(three["status"], "skipped", "{status:#}");
}

/// A `runbook` process executing a run while the test acts from beside it.
struct Running {
    child: Option<Child>,
    output: Captured,
}

impl Running {
    fn start(sb: &Sandbox, args: &[&str]) -> Self {
        let mut child = sb.cmd(args).spawn();
        let output = Captured::of(&mut child);
        Self {
            child: Some(child),
            output,
        }
    }

    /// Waits until it exits; its exit code and what it printed.
    fn exit(&mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().expect("running");
        let mut status = None;
        wait_for(
            "the run's process to exit",
            Duration::from_secs(120),
            || {
                status = child.try_wait().expect("wait");
                status.is_some()
            },
        );
        (
            status.and_then(|s| s.code()),
            self.output.settle(Duration::from_secs(5)),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- run output ---\n{}", self.output.text());
            }
        }
    }
}

/// The only run of the journal, once there is one.
fn the_run(sb: &Sandbox) -> String {
    let mut id = String::new();
    wait_for("the run to be created", SETTLE, || {
        let out = sb.cmd(&["history", "--output", "json"]).run();
        match out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| v["id"].as_str().map(str::to_owned))
        {
            Some(found) => {
                id = found;
                true
            }
            None => false,
        }
    });
    id
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// The pids in the file `name` of the sandbox.
fn pids(sb: &Sandbox, name: &str) -> Vec<i32> {
    sb.read(name)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A long shell step that writes its pid and a background child's to `pids`, with cleanup
/// steps (`on_abort`) and failure steps (`on_failure`, which an abort does not run when
/// `on_abort` is there).
const LONG: &str = r#"
runbook: long
lock: "long"
steps:
  - id: first
    shell: { run: "echo x >> first" }
  - id: long
    shell:
      run: |
        echo $$ >> pids
        sleep 300 & echo $! >> pids
        wait
  - id: after
    shell: { run: "echo x >> after" }
on_abort:
  - id: undo
    shell: { run: "echo 'first was {{steps.first.status}}' >> cleanup" }
on_failure:
  - id: note
    shell: { run: "echo x >> failed" }
"#;

/// Starts `long`, waits until its long step's processes run; the run's id and their pids.
fn in_long_step(sb: &Sandbox) -> (Running, String, Vec<i32>) {
    sb.write("runbooks/long.yaml", LONG);
    let running = Running::start(sb, &["run", "long"]);
    wait_for("the long step's processes to start", SETTLE, || {
        pids(sb, "pids").len() == 2
    });
    let run = the_run(sb);
    let pids = pids(sb, "pids");
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");
    (running, run, pids)
}

#[test]
fn abort_from_another_process_kills_the_step_in_flight_and_runs_the_cleanup_steps() {
    let sb = Sandbox::new();
    let (mut running, run, pids) = in_long_step(&sb);

    let abort = sb
        .cmd(&["--as", "dave", "abort", &run, "--reason", "wrong window"])
        .ok();
    assert!(
        abort.stdout.contains(&format!(
            "run {run} aborted by dave: wrong window; cleanup ran"
        )),
        "{}",
        abort.explain("abort says who, why, and that the cleanup ran")
    );
    wait_for("the step's processes to be gone", SETTLE, || {
        pids.iter().all(|p| !alive(*p))
    });
    assert_eq!(
        sb.read("cleanup"),
        "first was succeeded\n",
        "the cleanup ran once, seeing the finished steps"
    );
    assert_eq!(count(&sb, "failed"), 0, "on_abort replaces on_failure");
    assert_eq!(
        count(&sb, "after"),
        0,
        "nothing after the step in flight ran"
    );
    let (code, output) = running.exit();
    assert_eq!(code, Some(1), "{output}");

    let status = sb.status(&run);
    assert_eq!(status["state"], "aborted", "{status:#}");
    let records = sb.records(&run);
    let names = event_names(&records);
    let interrupted = position(&records, |r| {
        r["event"] == "step_interrupted" && r["path"] == "long"
    })
    .expect("the step in flight was stopped");
    let started = position(&records, |r| r["event"] == "abort_started").expect("abort_started");
    let undo = position(&records, |r| {
        r["event"] == "step_succeeded" && r["path"] == "on_abort.undo"
    })
    .expect("the cleanup step is journaled");
    assert!(interrupted < started && started < undo, "{names:?}");
    assert_eq!(records[started]["by"], "dave");
    // The lock is free again.
    sb.cmd(&["abort", &run]).code(2);
}

#[test]
fn abort_no_cleanup_kills_the_step_in_flight_and_runs_no_cleanup() {
    let sb = Sandbox::new();
    let (mut running, run, pids) = in_long_step(&sb);

    let abort = sb.cmd(&["abort", &run, "--no-cleanup"]).ok();
    assert!(
        abort.stdout.contains("(no cleanup: --no-cleanup)"),
        "{}",
        abort.explain("abort says the cleanup was skipped")
    );
    wait_for("the step's processes to be gone", SETTLE, || {
        pids.iter().all(|p| !alive(*p))
    });
    let (code, _) = running.exit();
    assert_eq!(code, Some(1));
    assert_eq!(sb.read("cleanup"), "", "no cleanup step ran");
    assert_eq!(count(&sb, "failed"), 0);
    assert_eq!(sb.status(&run)["state"], "aborted");
    assert!(
        !event_names(&sb.records(&run)).contains(&"abort_started".to_owned()),
        "no cleanup was started"
    );
}

/// A step that waits for `go`, a `wait` that polls for `ready`, and a step after; cleanup is
/// `on_failure` only.
const PAUSABLE: &str = r#"
runbook: pausable
lock: "pausable"
prechecks:
  - id: looked
    shell: { run: "echo x >> prechecked" }
steps:
  - id: work
    shell: { run: "while [ ! -e go ]; do sleep 0.05; done; echo x >> work" }
  - id: ready
    wait:
      every: 100ms
      timeout: 5m
      probe: { shell: { run: "test -e ready && echo yes || echo no" } }
      until: 'output.stdout.contains("yes")'
  - id: after
    shell: { run: "echo x >> after" }
on_failure:
  - id: note
    shell: { run: "echo x >> failed" }
"#;

/// The run's state as `status` shows it.
fn state(sb: &Sandbox, run: &str) -> String {
    sb.status(run)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn pause_waits_for_the_step_in_flight_cuts_a_wait_short_and_unpause_goes_on() {
    let sb = Sandbox::new();
    sb.write("runbooks/pausable.yaml", PAUSABLE);
    let mut running = Running::start(&sb, &["run", "pausable"]);
    let run = the_run(&sb);
    wait_for("the first step to run", SETTLE, || {
        sb.status(&run)["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["path"] == "work"))
    });

    // Asked while `work` runs: the pause is taken at the boundary after it, so `work` finishes.
    let pauser = Running::start(
        &sb,
        &[
            "--as",
            "erin",
            "pause",
            &run,
            "--comment",
            "restore a snapshot",
        ],
    );
    sb.write("go", "");
    let mut pauser = pauser;
    let (code, said) = pauser.exit();
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "run {run} is paused by erin: restore a snapshot; it keeps its lock"
        )),
        "{said}"
    );
    let (code, output) = running.exit();
    assert_eq!(code, Some(3), "a paused run exits 3:\n{output}");
    assert_eq!(count(&sb, "work"), 1, "the step in flight finished");
    assert_eq!(count(&sb, "prechecked"), 1);
    assert_eq!(state(&sb, &run), "paused");
    let list = sb.cmd(&["status"]).ok();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(&run) && l.contains("paused")),
        "{}",
        list.explain("status lists the run as paused")
    );
    // Its lock is kept: a second run of the same runbook is refused.
    let second = sb.cmd(&["run", "pausable"]).code(1);
    assert!(
        second.stderr.contains(&format!("held by run {run}")),
        "{}",
        second.explain("lock")
    );
    // A plain resume does not continue a paused run.
    let refused = sb.cmd(&["resume", &run]).code(2);
    assert!(
        refused
            .stderr
            .contains(&format!(" unpause {run}` continues it")),
        "{}",
        refused.explain("resume of a paused run names unpause")
    );

    // Unpaused, it goes on into the wait; paused there, the wait is cut short at once.
    let mut running = Running::start(
        &sb,
        &["--as", "erin", "unpause", &run, "--comment", "restored"],
    );
    wait_for("the wait to poll", SETTLE, || {
        sb.status(&run)["steps"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["path"] == "ready" && s["status"] == "running")
        })
    });
    let asked = Instant::now();
    sb.cmd(&["pause", &run]).ok();
    let (code, output) = running.exit();
    assert_eq!(code, Some(3), "{output}");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the wait (up to 5 minutes) was cut short by the pause"
    );
    assert_eq!(state(&sb, &run), "paused");
    assert_eq!(count(&sb, "after"), 0);
    assert_eq!(
        count(&sb, "prechecked"),
        2,
        "unpause ran the prechecks again"
    );

    // Unpaused once `ready` exists: the wait polls again and the run finishes; `work` ran once.
    sb.write("ready", "");
    sb.cmd(&["unpause", &run]).ok();
    assert_eq!(state(&sb, &run), "succeeded");
    assert_eq!(
        (
            count(&sb, "work"),
            count(&sb, "after"),
            count(&sb, "failed")
        ),
        (1, 1, 0)
    );
    let log = sb.cmd(&["log", &run]).ok();
    for line in [
        format!("run {run}: paused by erin: restore a snapshot"),
        format!("run {run}: unpaused by erin: restored"),
    ] {
        assert!(log.stdout.contains(&line), "{}", log.explain(&line));
    }

    // An ended run cannot be paused.
    let ended = sb.cmd(&["pause", &run]).code(2);
    assert!(
        ended.stderr.contains(&format!(
            "run {run} has ended (succeeded); only a run that is not finished can be paused"
        )),
        "{}",
        ended.explain("pausing an ended run is refused")
    );
}

#[test]
fn aborting_a_paused_run_runs_on_failure_when_the_runbook_has_no_on_abort() {
    let sb = Sandbox::new();
    sb.write("runbooks/pausable.yaml", PAUSABLE);
    let mut running = Running::start(&sb, &["run", "pausable"]);
    let run = the_run(&sb);
    let pauser = Running::start(&sb, &["pause", &run]);
    sb.write("go", "");
    let mut pauser = pauser;
    assert_eq!(pauser.exit().0, Some(0));
    assert_eq!(running.exit().0, Some(3));
    assert_eq!(state(&sb, &run), "paused");

    let abort = sb.cmd(&["abort", &run]).ok();
    assert!(
        abort.stdout.contains("cleanup ran"),
        "{}",
        abort.explain("cleanup")
    );
    assert_eq!(
        count(&sb, "failed"),
        1,
        "on_failure is the cleanup without on_abort"
    );
    let records = sb.records(&run);
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "step_succeeded" && r["path"] == "on_failure.note"),
        "{records:#?}"
    );
    assert_eq!(state(&sb, &run), "aborted");
}

#[test]
fn serve_api_pauses_unpauses_and_retries_a_failed_run() {
    use crate::serve::Serve;
    let sb = Sandbox::new();
    sb.write("runbooks/five.yaml", FIVE);
    sb.write("runbooks/pausable.yaml", PAUSABLE);
    let serve = Serve::start(&sb, &[]);

    // A failed run, retried through the API.
    let (status, body) = serve.post("/runs", &json!({ "runbook": "five" }));
    assert_eq!(status, 201, "{body}");
    let five = body["run"].as_str().expect("id").to_owned();
    serve.wait_state(&five, "failed");
    let (status, body) = serve.post(&format!("/runs/{five}/resume"), &json!({}));
    assert_eq!(status, 409, "a failed run needs a decision: {body}");
    assert!(body.to_string().contains("--retry-step three"), "{body}");
    sb.write("fixed", "");
    let (status, body) = serve.post(
        &format!("/runs/{five}/resume"),
        &json!({ "retry_step": "three", "comment": "fixed" }),
    );
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&five, "succeeded");
    assert_eq!(counts(&sb), [1, 1, 1, 1, 1, 1]);

    // A run paused and unpaused through the API.
    let (status, body) = serve.post("/runs", &json!({ "runbook": "pausable" }));
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("id").to_owned();
    wait_for("the first step to run", SETTLE, || {
        serve.run(&run)["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["path"] == "work"))
    });
    sb.write("go", "");
    let (status, body) = serve.post(&format!("/runs/{run}/pause"), &json!({ "comment": "hold" }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paused", "{body}");
    let (status, _) = serve.post(&format!("/runs/{run}/pause"), &json!({}));
    assert_eq!(status, 409, "paused already");
    sb.write("ready", "");
    let (status, body) = serve.post(&format!("/runs/{run}/unpause"), &json!({ "comment": "go" }));
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&run, "succeeded");
    let records = serve.records(&run);
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "paused" && r["comment"] == "hold"),
        "{records:#?}"
    );
    serve.stop();
}

/// A member's process start time as the member itself reports it (`/metrics`).
fn started_at(agent: &ureq::Agent, endpoint: &str) -> Option<String> {
    let text = agent
        .get(&format!("{endpoint}/metrics"))
        .call()
        .ok()?
        .into_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_start_time_seconds "))
        .map(|v| v.trim().to_owned())
}

#[test]
fn pause_during_an_etcd_rolling_restart_touches_no_member_until_unpause_finishes_the_roll() {
    use crate::etcd::{Etcd, acknowledged};
    use crate::support::clusters::Cluster;
    let etcd = Etcd::from_cluster(Cluster::etcd());
    let sb = Sandbox::new();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    let starts = || -> Vec<Option<String>> {
        etcd.endpoints
            .iter()
            .map(|e| started_at(&agent, e))
            .collect()
    };
    let before = starts();
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let mark = etcd.log_mark();
    let monitor = etcd.monitor();
    let writer = etcd.writer();
    let args = [
        "run".to_owned(),
        "rolling-restart-etcd".to_owned(),
        "-p".to_owned(),
        format!("cluster_dir={}", etcd.cluster.path()),
        "-p".to_owned(),
        format!("snapshot_dir={}", sb.path().display()),
        "-p".to_owned(),
        format!("etcdctl={}", etcd.cluster.var("ETCDCTL_BIN")),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running = Running::start(&sb, &args);
    let run = the_run(&sb);

    // As the first member (the highest ordinal) is restarted, pause: a `call` is one step to
    // the run, so the pause is taken after the restart, never between its stop and its start.
    wait_for(
        "the first member's restart to start",
        Duration::from_secs(120),
        || running.output.text().contains("start  roll[0].restart:"),
    );
    let pause = sb
        .cmd(&[
            "--as",
            "ops",
            "pause",
            &run,
            "--comment",
            "check dashboards",
        ])
        .ok();
    assert!(
        pause.stdout.contains("is paused by ops"),
        "{}",
        pause.explain("paused")
    );
    let (code, output) = running.exit();
    assert_eq!(code, Some(3), "{output}");

    // While paused: no member is restarted (their start times stay), nothing is journaled.
    // The restarted member comes up by itself (its process was started before the pause).
    let mut paused_starts = Vec::new();
    wait_for("every member to answer while paused", SETTLE, || {
        paused_starts = starts();
        paused_starts.iter().all(Option::is_some)
    });
    assert_ne!(
        paused_starts[2], before[2],
        "the first member was restarted"
    );
    assert!(
        paused_starts
            .iter()
            .zip(&before)
            .filter(|(p, b)| p != b)
            .count()
            < 3,
        "paused before the roll ended: {before:?} -> {paused_starts:?}"
    );
    let seq = sb.records(&run).len();
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            starts(),
            paused_starts,
            "a member was touched while the run was paused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sb.records(&run).len(), seq, "nothing ran while paused");
    assert_eq!(state(&sb, &run), "paused");

    // Unpaused: the roll finishes; each member restarted exactly once over the whole run.
    let unpause = sb
        .cmd(&[
            "--as",
            "ops",
            "unpause",
            &run,
            "--comment",
            "dashboards green",
        ])
        .ok();
    assert!(
        unpause.stdout.contains(&format!("run {run} succeeded")),
        "{}",
        unpause.explain("the roll finished")
    );
    let acked = acknowledged(writer.finish());
    let samples = monitor.finish();
    etcd.assert_rolled(&samples, &mark);
    etcd.assert_writes(&acked);
    let after = starts();
    for m in 0..3 {
        assert_ne!(after[m], before[m], "member m{} was restarted", m + 1);
    }
    assert_eq!(
        after[2], paused_starts[2],
        "the first member was not restarted again"
    );
    let records = sb.records(&run);
    let restarts: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["event"] == "step_succeeded")
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.ends_with(".restart"))
        .collect();
    assert_eq!(
        restarts,
        BTreeSet::from(["roll[0].restart", "roll[1].restart", "roll[2].restart"])
    );
}

#[test]
fn an_abort_reason_naming_a_secret_given_through_the_api_is_journaled_masked() {
    use crate::serve::Serve;
    let sb = Sandbox::new();
    sb.write(
        "runbooks/secretive.yaml",
        "runbook: secretive\nparams:\n  password: { type: string, secret: true }\n  target: { type: string, default: db1 }\nsteps:\n  - id: confirm\n    gate: \"go?\"\n",
    );
    let serve = Serve::start(&sb, &[]);
    let (status, body) = serve.post(
        "/runs",
        &json!({ "runbook": "secretive", "params": { "password": "hunter2-Xq9" } }),
    );
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("id").to_owned();
    serve.wait_state(&run, "waiting");
    let (status, body) = serve.post(
        &format!("/runs/{run}/abort"),
        &json!({ "reason": "the password hunter2-Xq9 leaked on db1", "no_cleanup": true }),
    );
    assert!(status < 300, "{status} {body}");
    let detail = serve.wait_state(&run, "aborted");
    let shown = detail.to_string();
    assert!(!shown.contains("hunter2-Xq9"), "{shown}");
    assert!(
        shown.contains("the password *** leaked on db1"),
        "masked, and a non-secret value stays readable: {shown}"
    );
    serve.stop();
    assert!(!String::from_utf8_lossy(&sb.journal_bytes()).contains("hunter2-Xq9"));
}

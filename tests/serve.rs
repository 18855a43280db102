//! `runbook serve`: schedules that fire once per fire time across restarts (with `overlap` and
//! `catch_up` honoured), runs a killed `serve` was executing resumed by the next one, the HTTP
//! API with bearer tokens and four-eyes approvals, what an API caller may run (names only) and
//! change (missing secrets only), the command line talking to a `serve` that holds the journal
//! (with the exit codes of a local command), the security headers of every answer, Prometheus
//! metrics, and webhook notifications.
//!
//! Every test drives the built binary: `serve` runs as a child process in a sandbox (its
//! working directory, so `runbooks/*.yaml` there are found by name and their `schedule:` fire),
//! is reached through the URL and local token it writes to `<journal>/serve.json`, and is
//! stopped by pid. Waits poll a condition; where a test must let time pass (a pause, a
//! downtime) the condition is the wall clock against journaled fire times.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::captured::Captured;
use crate::support::{Sandbox, wait_for};

/// How long a `serve` may take to come up or go down, and a run to settle, on a loaded machine.
pub(crate) const SETTLE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The harness: a `serve` child process, and HTTP calls to it.

/// A running `runbook serve` in a sandbox.
pub(crate) struct Serve {
    child: Option<Child>,
    /// Its base URL, from `serve.json`.
    pub(crate) url: String,
    /// The local command line's token, from `serve.json`.
    pub(crate) token: String,
    /// Its stdout and stderr so far (drained by threads, so the pipes never fill).
    output: Captured,
}

impl Serve {
    /// Starts `runbook serve --listen 127.0.0.1:0 --tick 100ms ARGS…` in `sb` and waits until
    /// it has written `serve.json` (with its own pid: a killed predecessor's file is ignored).
    pub(crate) fn start(sb: &Sandbox, args: &[&str]) -> Self {
        Self::start_with(sb, args, &[])
    }

    /// [`Serve::start`] with `env` set for the process.
    pub(crate) fn start_with(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--tick", "100ms"];
        all.extend_from_slice(args);
        let mut cmd = sb.cmd(&all);
        for (key, value) in env {
            cmd = cmd.env(key, *value);
        }
        let mut child = cmd.spawn();
        let output = Captured::of(&mut child);
        let pid = child.id();
        let info_path = sb.journal().join("serve.json");
        let mut serve = Self {
            child: Some(child),
            url: String::new(),
            token: String::new(),
            output,
        };
        let mut info = Value::Null;
        wait_for("serve to write serve.json", SETTLE, || {
            if let Some(status) = serve
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "serve exited with {status} before it was up\n--- output ---\n{}",
                    serve.output()
                );
            }
            info = std::fs::read_to_string(&info_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            info["pid"].as_u64() == Some(u64::from(pid))
        });
        info["url"]
            .as_str()
            .expect("serve.json has a url")
            .clone_into(&mut serve.url);
        info["token"]
            .as_str()
            .expect("serve.json has a token")
            .clone_into(&mut serve.token);
        serve
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.as_ref().expect("running").id()).expect("pid"))
    }

    /// What the process printed so far.
    pub(crate) fn output(&self) -> String {
        self.output.text()
    }

    /// Sends `signal` and waits until the process has exited; returns its output.
    fn end(&mut self, signal: Signal) -> String {
        kill(self.pid(), signal).expect("signal serve");
        let mut child = self.child.take().expect("running");
        let mut status = None;
        wait_for(&format!("serve to exit after {signal}"), SETTLE, || {
            status = child.try_wait().expect("wait for serve");
            status.is_some()
        });
        let output = self.output();
        if signal == Signal::SIGTERM {
            assert!(
                status.expect("exited").success(),
                "serve must exit 0 on SIGTERM, got {status:?}\n--- output ---\n{output}"
            );
        }
        output
    }

    /// SIGTERM: runs stop at a safe point; waits for the exit (code 0).
    pub(crate) fn stop(mut self) -> String {
        self.end(Signal::SIGTERM)
    }

    /// SIGKILL: the process dies wherever it is.
    fn kill(mut self) {
        self.end(Signal::SIGKILL);
    }

    /// GET with the local token.
    pub(crate) fn get(&self, path: &str) -> Value {
        let (status, body) = call("GET", &self.api(path), Some(&self.token), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POST with the local token.
    pub(crate) fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        call("POST", &self.api(path), Some(&self.token), Some(body))
    }

    pub(crate) fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    /// Starts a run of `runbook` through the API; returns its id.
    pub(crate) fn start_run(&self, runbook: &str) -> String {
        let (status, body) = self.post("/runs", &json!({ "runbook": runbook }));
        assert_eq!(status, 201, "POST /runs {runbook}: {body}");
        body["run"].as_str().expect("a run id").to_owned()
    }

    /// The run as the API shows it.
    pub(crate) fn run(&self, id: &str) -> Value {
        self.get(&format!("/runs/{id}"))
    }

    /// Waits until the run is in `state`.
    pub(crate) fn wait_state(&self, id: &str, state: &str) -> Value {
        let mut run = Value::Null;
        wait_for(&format!("run {id} to be {state}"), SETTLE, || {
            run = self.run(id);
            run["state"] == state
        });
        run
    }

    /// The run's records, through the API.
    pub(crate) fn records(&self, id: &str) -> Vec<Value> {
        array(&self.get(&format!("/runs/{id}/records")))
    }

    /// Every run, through the API (newest first).
    fn runs(&self) -> Vec<Value> {
        array(&self.get("/runs"))
    }

    /// The schedule called `name`, through the API.
    fn schedule(&self, name: &str) -> Value {
        array(&self.get("/schedules"))
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no schedule `{name}` in the API"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- serve output ---\n{}", self.output());
            }
        }
    }
}

/// An HTTP call; the status and the body (JSON, or the text as a JSON string).
pub(crate) fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = ureq::request(method, url).timeout(Duration::from_secs(60));
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let result = match body {
        Some(body) => request.send_json(body.clone()),
        None => request.call(),
    };
    let response = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let text = response.into_string().expect("a response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub(crate) fn array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

pub(crate) fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not an RFC 3339 time: {v}: {e}"))
}

pub(crate) fn events<'a>(records: &'a [Value], name: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == name).collect()
}

/// Waits until the wall clock has passed `t`.
pub(crate) fn wait_until(what: &str, t: DateTime<Utc>) {
    let limit = (t - Utc::now()).to_std().unwrap_or_default() + SETTLE;
    wait_for(what, limit, || Utc::now() >= t);
}

/// Every run in the journal, newest first (the journal must be free: no `serve` running).
fn history(sb: &Sandbox) -> Vec<Value> {
    sb.cmd(&["history", "--limit", "100000", "--output", "json"])
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("history lines are JSON"))
        .collect()
}

/// `runbook schedule list --output json`, the schedule called `name`.
fn schedule_listed(sb: &Sandbox, name: &str) -> Value {
    let out = sb.cmd(&["schedule", "list", "--output", "json"]).ok();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("schedule lines are JSON"))
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{}", out.explain(&format!("no schedule `{name}` listed"))))
}

/// A schedule's history as (fire time, outcome, run), oldest first.
fn fires(schedule: &Value) -> Vec<(DateTime<Utc>, String, Option<String>)> {
    let mut out: Vec<_> = array(&schedule["history"])
        .iter()
        .map(|f| {
            (
                time(&f["fire"]),
                f["outcome"].as_str().expect("an outcome").to_owned(),
                f["run"].as_str().map(str::to_owned),
            )
        })
        .collect();
    out.sort_by_key(|f| f.0);
    out
}

/// The fire times a step appended to `file`, in order.
fn fire_lines(sb: &Sandbox, file: &str) -> Vec<DateTime<Utc>> {
    sb.read(file)
        .lines()
        .map(|l| {
            DateTime::parse_from_rfc3339(l.trim())
                .unwrap_or_else(|e| panic!("`{l}` is not a fire time: {e}"))
                .with_timezone(&Utc)
        })
        .collect()
}

/// A step that appends the run's fire time to `file` once: idempotent (a run stopped in this
/// step by a SIGTERM is retried by the next `serve`), so one run writes one line — and two runs
/// for one fire time would still show as more runs than lines.
fn note_fire(file: &str) -> String {
    format!(
        r#"  - id: note
    idempotent: true
    shell: {{ run: "grep -qx '{{{{run.trigger.fire_time}}}}' {file} 2>/dev/null || echo '{{{{run.trigger.fire_time}}}}' >> {file}" }}
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Schedules.

#[test]
fn a_schedule_fires_once_per_fire_time_across_a_restart_and_records_what_it_missed() {
    let sb = Sandbox::new();
    sb.write(
        "runbooks/ticker.yaml",
        &format!(
            "runbook: ticker\nschedule: {{ cron: \"*/2 * * * * *\", catch_up: none }}\nsteps:\n{}",
            note_fire("fires.txt")
        ),
    );

    let first = Serve::start(&sb, &[]);
    wait_for("three fires of the first serve", SETTLE, || {
        fire_lines(&sb, "fires.txt").len() >= 3
    });
    let stopped_at = Utc::now();
    first.stop();
    // The journal says which fire the first serve handled last.
    let last_handled = time(&schedule_listed(&sb, "ticker")["last_fire"]);
    // Down long enough that at least two fire times pass beyond the grace a late fire gets.
    wait_until(
        "two fire times to pass while no serve runs",
        last_handled + TimeDelta::milliseconds(5_200),
    );

    let restarted_at = Utc::now();
    let second = Serve::start(&sb, &[]);
    wait_for("three fires of the second serve", SETTLE, || {
        fire_lines(&sb, "fires.txt")
            .iter()
            .filter(|f| **f > restarted_at)
            .count()
            >= 3
    });
    let served = second.schedule("ticker");
    let missed_in_api: Vec<DateTime<Utc>> = fires(&served)
        .into_iter()
        .filter(|f| f.1 == "missed")
        .map(|f| f.0)
        .collect();
    assert!(
        missed_in_api.len() >= 2
            && missed_in_api
                .iter()
                .all(|f| *f > last_handled && *f < restarted_at),
        "the fires due while no serve ran are journaled as missed: {served:#}"
    );
    second.stop();

    // Every fire time is unique and on an even second.
    let lines = fire_lines(&sb, "fires.txt");
    let unique: BTreeSet<_> = lines.iter().collect();
    assert_eq!(
        unique.len(),
        lines.len(),
        "a fire time ran twice: {lines:?}"
    );
    for f in &lines {
        assert_eq!(
            (f.timestamp() % 2, f.timestamp_subsec_nanos()),
            (0, 0),
            "fire {f} is not on an even second"
        );
    }
    // One run per line, each for its own fire time.
    let runs = history(&sb);
    assert_eq!(runs.len(), lines.len(), "runs {runs:?}\nfires {lines:?}");
    let mut run_fires = BTreeSet::new();
    for r in &runs {
        let id = r["id"].as_str().expect("id");
        let status = sb.status(id);
        assert_eq!(status["state"], "succeeded", "{status:#}");
        assert_eq!(status["trigger"]["schedule"], "ticker");
        assert!(
            run_fires.insert(time(&status["trigger"]["fire_time"])),
            "two runs for one fire time: {status:#}"
        );
    }
    assert_eq!(run_fires, unique.into_iter().copied().collect());

    // While a serve ran, fires came every 2 s; the gap between the serves is exactly the fires
    // journaled as missed.
    let (before, after): (Vec<&DateTime<Utc>>, Vec<&DateTime<Utc>>) =
        lines.iter().partition(|f| **f <= stopped_at);
    for session in [&before, &after] {
        for pair in session.windows(2) {
            assert_eq!(
                *pair[1] - *pair[0],
                TimeDelta::seconds(2),
                "consecutive fires of one serve: {lines:?}"
            );
        }
    }
    let history = fires(&schedule_listed(&sb, "ticker"));
    let missed: Vec<DateTime<Utc>> = history
        .iter()
        .filter(|f| f.1 == "missed")
        .map(|f| f.0)
        .collect();
    let gap: Vec<DateTime<Utc>> = std::iter::successors(
        Some(**before.last().expect("fires") + TimeDelta::seconds(2)),
        |t| Some(*t + TimeDelta::seconds(2)),
    )
    .take_while(|t| t < after.first().expect("fires"))
    .collect();
    assert_eq!(missed, gap, "journaled history: {history:?}");
    assert!(
        history.iter().all(|f| f.1 == "missed" || f.1 == "started"),
        "{history:?}"
    );
}

#[test]
fn overlap_skip_never_runs_two_at_once_and_records_the_skipped_fires() {
    let sb = Sandbox::new();
    sb.write(
        "runbooks/slow-tick.yaml",
        r#"
runbook: slow-tick
schedule: { cron: "* * * * * *", overlap: skip, catch_up: none }
steps:
  - id: nap
    sleep: 2500ms
"#,
    );
    let serve = Serve::start(&sb, &[]);
    wait_for(
        "two runs to succeed and a fire to be skipped",
        SETTLE,
        || {
            let done = serve
                .runs()
                .iter()
                .filter(|r| r["state"] == "succeeded")
                .count();
            done >= 2
                && fires(&serve.schedule("slow-tick"))
                    .iter()
                    .any(|f| f.1 == "skipped")
        },
    );
    let schedule = serve.schedule("slow-tick");
    serve.stop();

    // Each run starts only after the one before it has ended.
    let mut spans: Vec<(DateTime<Utc>, Option<DateTime<Utc>>, String)> = history(&sb)
        .iter()
        .map(|r| {
            let id = r["id"].as_str().expect("id").to_owned();
            let records = sb.records(&id);
            let start = time(&records[0]["at"]);
            let end = records
                .iter()
                .find(|r| {
                    r["event"] == "state_changed"
                        && ["succeeded", "failed", "aborted"]
                            .contains(&r["state"].as_str().unwrap_or(""))
                })
                .map(|r| time(&r["at"]));
            (start, end, id)
        })
        .collect();
    spans.sort_by_key(|s| s.0);
    assert!(spans.len() >= 2, "{spans:?}");
    for pair in spans.windows(2) {
        let end = pair[0]
            .1
            .unwrap_or_else(|| panic!("run {} never ended, yet {} started", pair[0].2, pair[1].2));
        assert!(
            pair[1].0 > end,
            "run {} started at {} before run {} ended at {end}",
            pair[1].2,
            pair[1].0,
            pair[0].2
        );
    }
    // The fires in between were skipped, each recorded; every second is accounted for.
    let history = fires(&schedule);
    assert!(history.iter().any(|f| f.1 == "skipped"), "{history:?}");
    for pair in history.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, TimeDelta::seconds(1), "{history:?}");
    }
    for f in &history {
        assert_eq!(f.2.is_some(), f.1 == "started", "{f:?}");
    }
}

#[test]
fn catch_up_last_runs_once_for_the_latest_fire_missed_while_down() {
    let sb = Sandbox::new();
    // Every 3 s: a fire more than 1 s late is missed rather than due, so a serve started just
    // over 1 s after a fire time has a window of almost 2 s in which it sees only missed fires.
    sb.write(
        "runbooks/catch-up.yaml",
        &format!(
            "runbook: catch-up\nschedule: {{ cron: \"*/3 * * * * *\", catch_up: last }}\nsteps:\n{}",
            note_fire("fires.txt")
        ),
    );
    let first = Serve::start(&sb, &[]);
    wait_for("a fire of the first serve", SETTLE, || {
        !fire_lines(&sb, "fires.txt").is_empty()
    });
    first.stop();

    // A serve that takes longer than that window to come up (a loaded machine) meets a fire
    // on time, which it runs as due, not as a catch-up: then the downtime is tried again, a
    // bounded number of times.
    let mut attempts = 0;
    let (last_handled, down, caught_up) = loop {
        attempts += 1;
        let last_handled = time(&schedule_listed(&sb, "catch-up")["last_fire"]);
        // Three fire times pass while no serve runs.
        wait_until(
            "three fire times to pass while no serve runs",
            last_handled + TimeDelta::milliseconds(9_000 + 1_050),
        );
        let second = Serve::start(&sb, &[]);
        wait_for("the catch-up run to finish", SETTLE, || {
            fires(&second.schedule("catch-up"))
                .iter()
                .find(|f| f.0 > last_handled && f.1 == "started")
                .and_then(|f| f.2.as_deref())
                .is_some_and(|run| second.run(run)["state"] == "succeeded")
        });
        let schedule = second.schedule("catch-up");
        second.stop();

        // What the restarted serve decided at once: the fires since the last one handled, up
        // to the first it started.
        let mut down = Vec::new();
        for f in fires(&schedule).into_iter().filter(|f| f.0 > last_handled) {
            let started = f.1 == "started";
            down.push(f);
            if started {
                break;
            }
        }
        let (fire, _, run) = down.last().expect("a started fire").clone();
        let run = run.expect("a started fire names its run");
        let created = time(&sb.status(&run)["created_at"]);
        if created - fire > TimeDelta::seconds(1) {
            break (last_handled, down, (fire, run));
        }
        assert!(
            attempts < 3,
            "serve came up too late to see only missed fires {attempts} times: {down:?}"
        );
    };

    let (fire, run) = caught_up;
    assert!(
        down.len() >= 3,
        "three fire times passed while down: {down:?}"
    );
    assert!(
        down[..down.len() - 1].iter().all(|f| f.1 == "missed"),
        "the earlier fires are recorded missed, the latest runs: {down:?}"
    );
    for pair in down.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, TimeDelta::seconds(3), "{down:?}");
    }

    // In the journal: exactly one run for the downtime, for that fire time, and it ran.
    let caught: Vec<(DateTime<Utc>, String)> = history(&sb)
        .iter()
        .map(|r| sb.status(r["id"].as_str().expect("id")))
        .filter(|s| time(&s["trigger"]["fire_time"]) > last_handled)
        .filter(|s| time(&s["trigger"]["fire_time"]) <= fire)
        .map(|s| {
            (
                time(&s["trigger"]["fire_time"]),
                s["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(caught, [(fire, "succeeded".to_owned())], "run {run}");
    assert!(fire_lines(&sb, "fires.txt").contains(&fire));
}

#[test]
fn schedule_list_pause_resume_and_trigger_through_serve_and_from_the_journal() {
    let sb = Sandbox::new();
    sb.write(
        "runbooks/pulse.yaml",
        r#"
runbook: pulse
schedule: { cron: "* * * * * *", catch_up: none }
steps:
  - id: beat
    shell: { run: "true" }
"#,
    );
    let serve = Serve::start(&sb, &[]);

    // Through the API: the next fire times, a second apart, in the future.
    let listed_at = Utc::now();
    let listed = schedule_listed(&sb, "pulse");
    assert_eq!(listed["paused"], false);
    assert_eq!(listed["cron"], "* * * * * *");
    let next: Vec<DateTime<Utc>> = array(&listed["next"]).iter().map(time).collect();
    assert_eq!(next.len(), 3, "{listed:#}");
    assert!(next[0] > listed_at - TimeDelta::seconds(1), "{listed:#}");
    assert!(
        next.windows(2)
            .all(|p| p[1] - p[0] == TimeDelta::seconds(1))
    );
    let human = sb.cmd(&["schedule", "list"]).ok();
    assert!(
        human.stdout.contains("pulse") && human.stdout.contains("next: "),
        "{}",
        human.explain("the list shows each schedule with its next fire times")
    );

    wait_for("two scheduled runs", SETTLE, || serve.runs().len() >= 2);
    let out = sb.cmd(&["schedule", "pause", "pulse"]).ok();
    assert!(
        out.stdout.contains("schedule `pulse` paused"),
        "{}",
        out.explain("paused")
    );
    let paused_at = Utc::now();
    let count = serve.runs().len();
    assert_eq!(serve.schedule("pulse")["paused"], true);
    assert_eq!(serve.schedule("pulse")["next"], json!([]));
    // Three fire times (and the grace of a late fire) pass: none fires.
    wait_until(
        "three fire times to pass while paused",
        paused_at + TimeDelta::milliseconds(3_500),
    );
    assert_eq!(serve.runs().len(), count, "a paused schedule fired");

    // A trigger fires one run now, paused or not.
    let out = sb.cmd(&["schedule", "trigger", "pulse"]).ok();
    let triggered = serve
        .runs()
        .into_iter()
        .find(|r| out.stdout.contains(r["id"].as_str().expect("id")))
        .unwrap_or_else(|| panic!("{}", out.explain("trigger names the run it started")));
    assert!(
        out.stdout.contains("(started)"),
        "{}",
        out.explain("started")
    );
    assert_eq!(serve.runs().len(), count + 1);
    let id = triggered["id"].as_str().expect("id");
    let run = serve.wait_state(id, "succeeded");
    assert_eq!(run["trigger"]["schedule"], "pulse");
    assert!(time(&run["trigger"]["fire_time"]) > paused_at);

    let out = sb.cmd(&["schedule", "resume", "pulse"]).ok();
    assert!(
        out.stdout.contains("schedule `pulse` resumed"),
        "{}",
        out.explain("resumed")
    );
    let resumed_at = Utc::now();
    wait_for("a fire after the resume", SETTLE, || {
        serve.runs().len() > count + 1
    });
    // Nothing that fell due while paused was caught up.
    let schedule = serve.schedule("pulse");
    serve.stop();
    for f in fires(&schedule) {
        assert!(
            f.0 <= paused_at
                || f.0 >= resumed_at - TimeDelta::seconds(1)
                || f.2.as_deref() == Some(id),
            "fire {f:?} fell due while paused: {schedule:#}"
        );
    }

    // From the journal, with no serve running.
    let listed_at = Utc::now();
    let listed = schedule_listed(&sb, "pulse");
    assert_eq!(listed["paused"], false);
    let next: Vec<DateTime<Utc>> = array(&listed["next"]).iter().map(time).collect();
    assert_eq!(next.len(), 3, "{listed:#}");
    assert!(next[0] > listed_at - TimeDelta::seconds(1), "{listed:#}");
    assert!(time(&listed["last_fire"]) > resumed_at - TimeDelta::seconds(1));
    assert!(history(&sb).len() > count + 1);
}

// ---------------------------------------------------------------------------------------------
// Runs a killed serve was executing.

#[test]
fn a_run_of_a_killed_serve_is_resumed_by_the_next_and_a_ctrl_c_run_is_left_alone() {
    let sb = Sandbox::new();
    sb.write(
        "runbooks/napper.yaml",
        r#"
runbook: napper
steps:
  - id: prepare
    idempotent: true
    shell: { run: "echo prepared >> prepared.txt" }
  - id: nap
    sleep: 4s
  - id: after
    shell: { run: "echo done > after.txt" }
"#,
    );
    sb.write(
        "runbooks/hold.yaml",
        r#"
runbook: hold
steps:
  - id: work
    shell: { run: "exec sleep 30" }
"#,
    );

    // A person's run, interrupted with Ctrl-C: not serve's to resume.
    let child = sb.cmd(&["run", "hold"]).spawn();
    let mut held = String::new();
    wait_for("the CLI run to start `work`", SETTLE, || {
        let Some(entry) = std::fs::read_dir(sb.journal().join("follow"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
        else {
            return false;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        held = entry
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".jsonl")
            .to_owned();
        text.contains("\"step_started\"")
    });
    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{out:?}");

    let first = Serve::start(&sb, &[]);
    let run = first.start_run("napper");
    let mut wake_at = None;
    wait_for("the sleep's timer_set", SETTLE, || {
        wake_at = events(&first.records(&run), "timer_set")
            .first()
            .map(|t| time(&t["wake_at"]));
        wake_at.is_some()
    });
    let wake_at = wake_at.expect("timer_set");
    let held_state = first.run(&held);
    assert_eq!(
        (&held_state["state"], &held_state["active"]),
        (&json!("interrupted"), &json!(false)),
        "{held_state:#}"
    );
    first.kill();

    let second = Serve::start(&sb, &[]);
    let done = second.wait_state(&run, "succeeded");
    assert_eq!(sb.read("after.txt"), "done\n");
    assert_eq!(sb.read("prepared.txt"), "prepared\n", "{done:#}");
    let records = second.records(&run);
    let timers = events(&records, "timer_set");
    assert_eq!(
        timers.len(),
        1,
        "the wake time is decided once: {records:#?}"
    );
    assert_eq!(time(&timers[0]["wake_at"]), wake_at);
    let resumed = events(&records, "resumed");
    assert_eq!(resumed.len(), 1, "{records:#?}");
    let resumed_at = time(&resumed[0]["at"]);
    let woke = records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "nap")
        .expect("the sleep ended");
    let woke_at = time(&woke["output"]["woke_at"]);
    assert!(woke_at >= wake_at, "woke at {woke_at}, before {wake_at}");
    assert!(
        woke_at < resumed_at.max(wake_at) + TimeDelta::milliseconds(1_500),
        "woke at {woke_at}: resumed at {resumed_at}, the journaled wake time was {wake_at}"
    );
    assert!(
        second.output().contains(&format!("resuming run {run}")),
        "{}",
        second.output()
    );

    // The Ctrl-C run is still interrupted, untouched.
    let held_state = second.run(&held);
    assert_eq!(
        (&held_state["state"], &held_state["active"]),
        (&json!("interrupted"), &json!(false)),
        "{held_state:#}"
    );
    assert!(!second.output().contains(&format!("resuming run {held}")));
    second.stop();
    assert!(events(&sb.records(&held), "resumed").is_empty());
}

// ---------------------------------------------------------------------------------------------
// The API and approvals.

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789abc";

const GATED: &str = r#"
runbook: gated
steps:
  - id: before
    shell: { run: "echo before >> out-{{run.id}}.txt" }
  - id: confirm
    gate: "Check the dashboards, then approve."
  - id: after
    shell: { run: "echo after >> out-{{run.id}}.txt" }
on_failure:
  - id: cleanup
    shell: { run: "echo cleanup >> out-{{run.id}}.txt" }
"#;

const FOUR_EYES: &str = r#"
runbook: four
steps:
  - id: confirm
    gate: { prompt: "Rotate the root key?", four_eyes: true }
  - id: after
    shell: { run: "echo after >> out-{{run.id}}.txt" }
"#;

const FAILING: &str = r#"
runbook: failing
steps:
  - id: boom
    shell: { run: "exit 3" }
"#;

const OK: &str = r#"
runbook: ok
steps:
  - id: fine
    shell: { run: "true" }
"#;

/// A sandbox with the gated, four-eyes, failing and ok runbooks, and a tokens file.
fn api_sandbox() -> (Sandbox, PathBuf) {
    let sb = Sandbox::new();
    sb.write("runbooks/gated.yaml", GATED);
    sb.write("runbooks/four.yaml", FOUR_EYES);
    sb.write("runbooks/failing.yaml", FAILING);
    sb.write("runbooks/ok.yaml", OK);
    let tokens = sb.write(
        "tokens",
        &format!("# who may call\nalice: {ALICE}\nbob: {BOB}\n"),
    );
    (sb, tokens)
}

/// Calls the API as the holder of `token`.
fn call_as(
    serve: &Serve,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    call(method, &serve.api(path), token, body)
}

#[test]
fn api_approvals_need_a_known_token_and_record_who_decided() {
    let (sb, tokens) = api_sandbox();
    let serve = Serve::start(&sb, &["--tokens", tokens.to_str().expect("utf-8")]);

    let (status, who) = call_as(&serve, Some(BOB), "GET", "/whoami", None);
    assert_eq!((status, &who["name"]), (200, &json!("bob")));
    let (status, body) = call_as(
        &serve,
        Some(BOB),
        "POST",
        "/runs",
        Some(&json!({ "runbook": "gated" })),
    );
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("run").to_owned();
    let parked = serve.wait_state(&run, "waiting");
    assert_eq!(parked["started_by"], "bob");
    assert_eq!(parked["open_gate"]["path"], "confirm");
    let before = serve.records(&run);

    // No token, or a wrong one: 401, and nothing changes.
    for token in [None, Some("not-a-token-at-all-0123")] {
        let (status, body) = call_as(
            &serve,
            token,
            "POST",
            &format!("/runs/{run}/approve"),
            Some(&json!({ "comment": "sneaky" })),
        );
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("token")),
            "{body}"
        );
        assert_eq!(serve.run(&run)["state"], "waiting");
        let after = serve.records(&run);
        assert_eq!(after, before, "a refused approval writes nothing");
        assert!(events(&after, "gate_decided").is_empty());
    }
    let (status, _) = call_as(&serve, None, "GET", &format!("/runs/{run}"), None);
    assert_eq!(status, 401, "reading needs a token too");

    // Alice approves, with a comment.
    let (status, body) = call_as(
        &serve,
        Some(ALICE),
        "POST",
        &format!("/runs/{run}/approve"),
        Some(&json!({ "comment": "dashboards green" })),
    );
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&run, "succeeded");
    let records = serve.records(&run);
    let decided = events(&records, "gate_decided");
    assert_eq!(decided.len(), 1, "{records:#?}");
    assert_eq!(decided[0]["by"], "alice");
    assert_eq!(decided[0]["approved"], true);
    assert_eq!(decided[0]["comment"], "dashboards green");
    assert_eq!(sb.read(&format!("out-{run}.txt")), "before\nafter\n");

    // A four-eyes gate refuses the person who started the run.
    let (status, body) = call_as(
        &serve,
        Some(BOB),
        "POST",
        "/runs",
        Some(&json!({ "runbook": "four" })),
    );
    assert_eq!(status, 201, "{body}");
    let four = body["run"].as_str().expect("run").to_owned();
    serve.wait_state(&four, "waiting");
    let before = serve.records(&four);
    let (status, body) = call_as(
        &serve,
        Some(BOB),
        "POST",
        &format!("/runs/{four}/approve"),
        Some(&json!({})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("needs a second person") && e.contains("bob")),
        "{body}"
    );
    assert_eq!(serve.run(&four)["state"], "waiting");
    assert_eq!(
        serve.records(&four),
        before,
        "a refused approval writes nothing"
    );
    let (status, body) = call_as(
        &serve,
        Some(ALICE),
        "POST",
        &format!("/runs/{four}/approve"),
        None,
    );
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&four, "succeeded");
    assert_eq!(
        events(&serve.records(&four), "gate_decided")[0]["by"],
        "alice"
    );
    assert_eq!(sb.read(&format!("out-{four}.txt")), "after\n");

    // A rejection fails the run, and its on_failure runs.
    let (_, body) = call_as(
        &serve,
        Some(BOB),
        "POST",
        "/runs",
        Some(&json!({ "runbook": "gated" })),
    );
    let rejected = body["run"].as_str().expect("run").to_owned();
    serve.wait_state(&rejected, "waiting");
    let (status, body) = call_as(
        &serve,
        Some(ALICE),
        "POST",
        &format!("/runs/{rejected}/reject"),
        Some(&json!({ "comment": "error rate too high" })),
    );
    assert_eq!(status, 202, "{body}");
    let failed = serve.wait_state(&rejected, "failed");
    assert!(failed["open_gate"].is_null(), "{failed:#}");
    assert_eq!(sb.read(&format!("out-{rejected}.txt")), "before\ncleanup\n");
    let decided = events(&serve.records(&rejected), "gate_decided")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(decided.len(), 1);
    assert_eq!(
        (&decided[0]["approved"], &decided[0]["by"]),
        (&json!(false), &json!("alice"))
    );
    serve.stop();
}

#[test]
fn the_command_line_talks_to_the_serve_that_holds_the_journal() {
    let (sb, _) = api_sandbox();
    let serve = Serve::start(&sb, &[]);

    // `run` parks at a gate: exit 3, as for a local run.
    let out = sb.cmd(&["run", "gated"]).code(3);
    let run = serve
        .runs()
        .first()
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .expect("a run");
    assert!(
        out.stdout
            .contains(&format!("run {run} is waiting at gate `confirm`")),
        "{}",
        out.explain("the run says where it waits")
    );
    assert_eq!(serve.run(&run)["started_by"], "tester");

    let status = sb.cmd(&["status"]).ok();
    assert!(
        status.stdout.contains(&run) && status.stdout.contains("waiting"),
        "{}",
        status.explain("status lists the parked run")
    );
    assert_eq!(sb.status(&run)["state"], "waiting");
    let log = sb.cmd(&["log", &run]).ok();
    assert!(
        log.stdout.contains("confirm"),
        "{}",
        log.explain("the log shows the gate")
    );
    assert!(sb.records(&run).iter().any(|r| r["event"] == "gate_opened"));

    let out = sb
        .cmd(&["approve", &run, "--as", "carol", "--comment", "looks good"])
        .ok();
    assert!(
        out.stdout.contains(&format!("run {run} succeeded")),
        "{}",
        out.explain("approve follows the run to its end")
    );
    let decided = events(&sb.records(&run), "gate_decided")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["by"], "carol");
    assert_eq!(decided[0]["comment"], "looks good");
    assert_eq!(sb.read(&format!("out-{run}.txt")), "before\nafter\n");

    // Exit codes as for a local run.
    let out = sb.cmd(&["run", "gated", "--yes"]).ok();
    assert!(
        out.stdout.contains("succeeded"),
        "{}",
        out.explain("--yes runs through")
    );
    sb.cmd(&["run", "ok"]).ok();
    let out = sb.cmd(&["run", "failing"]).code(1);
    assert!(
        out.stdout.contains("failed"),
        "{}",
        out.explain("the failure is shown")
    );
    sb.cmd(&["run", "no-such-runbook"]).code(2);

    // A four-eyes gate refuses its starter from the command line too (exit 2).
    sb.cmd(&["run", "four"]).code(3);
    let four = serve.runs()[0]["id"].as_str().expect("id").to_owned();
    let refused = sb.cmd(&["approve", &four]).code(2);
    assert!(
        refused.stderr.contains("needs a second person"),
        "{}",
        refused.explain("the refusal says why")
    );
    sb.cmd(&["approve", &four, "--as", "dave"]).ok();

    let history = sb.cmd(&["history", "--output", "json"]).ok();
    assert_eq!(history.stdout.lines().count(), 5, "{}", history.stdout);
    serve.stop();
}

// ---------------------------------------------------------------------------------------------
// Metrics.

#[test]
fn metrics_parse_as_prometheus_text_with_runs_steps_and_schedule_lag() {
    let (sb, tokens) = api_sandbox();
    sb.write(
        "runbooks/tick.yaml",
        r#"
runbook: tick
schedule: { cron: "* * * * * *", catch_up: none }
steps:
  - id: beat
    shell: { run: "true" }
"#,
    );
    let serve = Serve::start(&sb, &["--tokens", tokens.to_str().expect("utf-8")]);
    let ok = serve.start_run("ok");
    let ok2 = serve.start_run("ok");
    let failing = serve.start_run("failing");
    let gated = serve.start_run("gated");
    wait_for("the schedule to fire", SETTLE, || {
        fires(&serve.schedule("tick"))
            .iter()
            .any(|f| f.1 == "started")
    });
    let (status, _) = serve.post("/schedules/tick/pause", &json!({}));
    assert_eq!(status, 200);
    for run in [&ok, &ok2] {
        serve.wait_state(run, "succeeded");
    }
    serve.wait_state(&failing, "failed");
    serve.wait_state(&gated, "waiting");
    wait_for("every run to settle", SETTLE, || {
        serve.runs().iter().all(|r| r["active"] == false)
    });
    let runs = serve.runs();

    let (status, _) = call("GET", &format!("{}/metrics", serve.url), None, None);
    assert_eq!(status, 401, "metrics need a token");
    let (status, text) = call("GET", &format!("{}/metrics", serve.url), Some(ALICE), None);
    assert_eq!(status, 200);
    let text = text.as_str().expect("metrics are text").to_owned();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("metrics parse as Prometheus text");
    let sample = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {metric}{labels:?} in\n{text}"))
    };
    let number = |s: &prometheus_parse::Sample| match s.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("not a number: {other:?}"),
    };

    for state in [
        "running",
        "waiting",
        "sleeping",
        "interrupted",
        "needs-attention",
        "succeeded",
        "failed",
        "aborted",
    ] {
        let expected = runs.iter().filter(|r| r["state"] == state).count();
        // A gauge of a count: an exact small integer, so compare it as one.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let gauge = number(sample("runbook_runs", &[("state", state)])) as usize;
        assert_eq!(
            gauge, expected,
            "runbook_runs{{state=\"{state}\"}} in\n{text}"
        );
    }
    assert!(runs.iter().filter(|r| r["state"] == "succeeded").count() >= 3);

    // Step durations: a histogram per kind and outcome.
    let succeeded = sample(
        "runbook_step_duration_seconds",
        &[("kind", "shell"), ("outcome", "succeeded")],
    );
    let prometheus_parse::Value::Histogram(buckets) = &succeeded.value else {
        panic!("not a histogram: {succeeded:?}");
    };
    let total = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("a +Inf bucket")
        .count;
    // ok ×2, gated's `before`, and at least one scheduled beat.
    assert!(total >= 4.0, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "{buckets:?}"
    );
    let failed = sample(
        "runbook_step_duration_seconds",
        &[("kind", "shell"), ("outcome", "failed")],
    );
    assert!(matches!(
        failed.value,
        prometheus_parse::Value::Histogram(_)
    ));

    // The schedule's lag: how late its last fire started, a fraction of a second here.
    let lag = number(sample(
        "runbook_schedule_lag_seconds",
        &[("schedule", "tick")],
    ));
    assert!((0.0..2.0).contains(&lag), "lag {lag}");
    let fired = number(sample(
        "runbook_schedule_fires_total",
        &[("schedule", "tick"), ("outcome", "started")],
    ));
    assert!(fired >= 1.0, "{text}");
    serve.stop();
}

// ---------------------------------------------------------------------------------------------
// Webhooks.

/// A webhook receiver: one thread answering each POST with 200 — or 500 while `failing` — and
/// keeping the bodies it accepted.
pub(crate) struct Receiver {
    pub(crate) url: String,
    accepted: Arc<Mutex<Vec<Value>>>,
    attempts: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    pub(crate) fn start(failing: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(failing));
        let (acc, att, fail) = (accepted.clone(), attempts.clone(), failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(body) = read_request(&mut stream) else {
                    continue;
                };
                att.fetch_add(1, Ordering::SeqCst);
                let status = if fail.load(Ordering::SeqCst) {
                    "500 Internal Server Error"
                } else {
                    acc.lock()
                        .expect("bodies")
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self {
            url,
            accepted,
            attempts,
            failing,
        }
    }

    pub(crate) fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().expect("bodies").clone()
    }
}

/// Reads one HTTP request; its body.
fn read_request(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

#[test]
fn webhooks_hear_of_a_gate_a_success_and_a_failure() {
    let (sb, _) = api_sandbox();
    let receiver = Receiver::start(false);
    let serve = Serve::start(&sb, &["--webhook", &receiver.url]);

    let gated = serve.start_run("gated");
    serve.wait_state(&gated, "waiting");
    wait_for("the gate-opened message", SETTLE, || {
        !receiver.accepted().is_empty()
    });
    let (status, body) = serve.post(&format!("/runs/{gated}/approve"), &json!({}));
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&gated, "succeeded");
    let failing = serve.start_run("failing");
    serve.wait_state(&failing, "failed");
    wait_for("three messages", SETTLE, || receiver.accepted().len() >= 3);
    // The deliveries are counted in /metrics while serve runs.
    let delivered = || {
        let (status, text) = call(
            "GET",
            &format!("{}/metrics", serve.url),
            Some(&serve.token),
            None,
        );
        assert_eq!(status, 200, "{text}");
        let text = text.as_str().expect("metrics are text").to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("runbook_notifications_total{outcome=\"delivered\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_for("the deliveries in /metrics", SETTLE, || delivered() >= 3.0);
    serve.stop();

    let messages = receiver.accepted();
    let got: HashSet<(String, String)> = messages
        .iter()
        .map(|m| {
            let text = m["text"].as_str().expect("Slack's `text`");
            let run = m["run"].as_str().expect("the run id");
            assert!(text.contains(run), "the text names the run: {m}");
            (
                m["event"].as_str().expect("event").to_owned(),
                run.to_owned(),
            )
        })
        .collect();
    let expected: HashSet<(String, String)> = [
        ("gate-opened", &gated),
        ("run-succeeded", &gated),
        ("run-failed", &failing),
    ]
    .into_iter()
    .map(|(e, r)| (e.to_owned(), r.clone()))
    .collect();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert_eq!(got, expected, "{messages:#?}");
    let gate = messages
        .iter()
        .find(|m| m["event"] == "gate-opened")
        .expect("gate");
    assert_eq!(gate["step"], "confirm");
    assert!(
        gate["text"].as_str().expect("text").contains("confirm"),
        "{gate}"
    );
}

#[test]
fn a_failing_webhook_is_retried_and_never_holds_up_the_run() {
    let (sb, _) = api_sandbox();
    let receiver = Receiver::start(true);
    let serve = Serve::start(&sb, &["--webhook", &receiver.url]);

    let run = serve.start_run("gated");
    serve.wait_state(&run, "waiting");
    wait_for("a first, failed delivery", SETTLE, || {
        receiver.attempts.load(Ordering::SeqCst) >= 1
    });
    let (status, body) = serve.post(&format!("/runs/{run}/approve"), &json!({}));
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&run, "succeeded");
    // The run is over while the receiver has not accepted a single message.
    assert!(receiver.accepted().is_empty());

    receiver.failing.store(false, Ordering::SeqCst);
    wait_for("both messages, retried", SETTLE, || {
        receiver.accepted().len() >= 2
    });
    serve.stop();
    let messages = receiver.accepted();
    let order: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["event"].as_str().unwrap_or("?"),
                m["run"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("gate-opened", run.as_str()),
            ("run-succeeded", run.as_str())
        ],
        "in order, each once"
    );
    assert!(receiver.attempts.load(Ordering::SeqCst) > messages.len());
}

// ---------------------------------------------------------------------------------------------
// Stopping: SIGTERM, and where serve refuses to listen.

#[test]
fn sigterm_stops_runs_at_a_safe_point_and_the_next_serve_takes_them_up() {
    let sb = Sandbox::new();
    // `work` can run twice harmlessly; `once` cannot (the default for a shell step).
    for (name, idempotent) in [("redo", true), ("once", false)] {
        sb.write(
            &format!("runbooks/{name}.yaml"),
            &format!(
                r#"
runbook: {name}
steps:
  - id: work
    idempotent: {idempotent}
    shell: {{ run: "echo started >> {name}-work.txt; if [ -f quick ]; then exit 0; fi; echo $$ > {name}.pid; exec sleep 60" }}
  - id: after
    shell: {{ run: "echo after > {name}-after.txt" }}
"#
            ),
        );
    }
    sb.write("runbooks/gated.yaml", GATED);

    let mut first = Serve::start(&sb, &[]);
    let redo = first.start_run("redo");
    let once = first.start_run("once");
    let gated = first.start_run("gated");
    first.wait_state(&gated, "waiting");
    let mut pids = Vec::new();
    wait_for("both `work` steps to be under way", SETTLE, || {
        pids = ["redo.pid", "once.pid"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(sb.path().join(f)).ok())
            .filter_map(|t| t.trim().parse::<i32>().ok())
            .collect();
        pids.len() == 2
    });
    sb.write("quick", "");

    // SIGTERM: serve stops the commands (it does not wait out their 60 s) and exits 0.
    first.end(Signal::SIGTERM);
    for pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "the command of a step cut short is stopped: {stat}"
        );
    }
    for run in [&redo, &once] {
        let status = sb.status(run);
        assert_eq!(status["state"], "interrupted", "{status:#}");
        let records = sb.records(run);
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "step_interrupted" && r["path"] == "work"),
            "the step cut short is journaled as interrupted: {records:#?}"
        );
        assert!(
            !records
                .iter()
                .any(|r| r["event"] == "step_failed" && r["path"] == "work"),
            "an interrupted step is not failed: {records:#?}"
        );
    }
    assert!(!sb.path().join("redo-after.txt").exists());
    // A run parked at a gate stays parked: nothing of it was cut short.
    assert_eq!(sb.status(&gated)["state"], "waiting");

    // The next serve takes them up under the in-flight rules: the idempotent step runs again,
    // the other stops for a person and names the commands that decide.
    let second = Serve::start(&sb, &[]);
    second.wait_state(&redo, "succeeded");
    assert_eq!(sb.read("redo-work.txt"), "started\nstarted\n");
    assert_eq!(sb.read("redo-after.txt"), "after\n");
    let attention = second.wait_state(&once, "needs-attention");
    let text = attention.to_string();
    assert!(
        text.contains("--retry-step work") && text.contains("--skip-step work"),
        "needs-attention names the step and the two commands: {attention:#}"
    );
    assert_eq!(
        sb.read("once-work.txt"),
        "started\n",
        "`once` did not run twice"
    );
    assert!(!sb.path().join("once-after.txt").exists());
    let (status, body) = second.post(&format!("/runs/{gated}/approve"), &json!({}));
    assert_eq!(status, 202, "{body}");
    second.wait_state(&gated, "succeeded");
    second.stop();
}

#[test]
fn serve_refuses_a_non_loopback_address_without_tokens() {
    let sb = Sandbox::new();
    let out = sb
        .cmd(&["serve", "--listen", "0.0.0.0:0"])
        .env_remove("RUNBOOK_API_TOKEN")
        .run();
    assert_eq!(out.code(), Some(2), "{}", out.explain("serve must refuse"));
    assert!(
        out.stderr
            .contains("refusing to listen on 0.0.0.0:0 without API tokens"),
        "{}",
        out.explain("the refusal says why")
    );
    assert!(
        !sb.journal().join("serve.json").exists(),
        "a refused serve never announces itself"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets.

#[test]
fn a_secret_param_given_through_the_api_never_leaves_serve_in_clear() {
    const SECRET: &str = "hunter2-Xq9vR7pLm4";
    let sb = Sandbox::new();
    sb.write(
        "runbooks/secretive.yaml",
        r#"
runbook: secretive
params:
  password: { type: string, secret: true, required: true }
steps:
  - id: use
    shell: { run: "echo using {{sh params.password}}" }
  - id: confirm
    gate: "Rotate to {{params.password}}?"
  - id: fail
    shell: { run: "echo bad password {{sh params.password}} >&2; exit 1" }
"#,
    );
    let receiver = Receiver::start(false);
    let serve = Serve::start(&sb, &["--webhook", &receiver.url]);
    let (status, body) = serve.post(
        "/runs",
        &json!({ "runbook": "secretive", "params": { "password": SECRET } }),
    );
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("run id").to_owned();
    let waiting = serve.wait_state(&run, "waiting");
    assert!(
        waiting["open_gate"]["prompt"]
            .as_str()
            .is_some_and(|p| p.contains("***")),
        "the gate prompt shows the secret masked: {waiting:#}"
    );
    let (status, body) = serve.post(&format!("/runs/{run}/approve"), &json!({}));
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&run, "failed");
    wait_for("the gate and failure messages", SETTLE, || {
        receiver.accepted().len() >= 2
    });

    // Everything serve hands out about the run: the API's views, the event stream (it ends with
    // the run), the webhook messages, what serve printed, and the journal's bytes.
    let mut seen = vec![
        serve.run(&run).to_string(),
        serve.get(&format!("/runs/{run}/records")).to_string(),
        serve.get("/runs").to_string(),
        Value::Array(receiver.accepted()).to_string(),
    ];
    let response = ureq::get(&serve.api(&format!("/runs/{run}/events")))
        .set("Authorization", &format!("Bearer {}", serve.token))
        .call()
        .expect("GET events");
    let stream = response.into_string().expect("the event stream");
    assert!(
        stream.contains("step_failed"),
        "the stream carried the run: {stream}"
    );
    seen.push(stream);
    let records = serve.records(&run);
    assert!(
        records.iter().any(|r| r.to_string().contains("using ***")),
        "the step's output is there, masked: {records:#?}"
    );

    // A run parked at its gate when serve restarts: the new serve was never given the secret,
    // so an approval without it is refused and journals nothing; with it, the run goes on.
    let (status, body) = serve.post(
        "/runs",
        &json!({ "runbook": "secretive", "params": { "password": SECRET } }),
    );
    assert_eq!(status, 201, "{body}");
    let parked = body["run"].as_str().expect("run id").to_owned();
    serve.wait_state(&parked, "waiting");
    seen.push(serve.stop());
    let serve = Serve::start(&sb, &[]);
    let before = serve.records(&parked).len();
    let (status, body) = serve.post(&format!("/runs/{parked}/approve"), &json!({}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("needs secret parameter `password` again"),
        "{body}"
    );
    assert_eq!(serve.run(&parked)["state"], "waiting");
    assert_eq!(
        serve.records(&parked).len(),
        before,
        "a refused approval journals nothing"
    );
    let (status, body) = serve.post(
        &format!("/runs/{parked}/approve"),
        &json!({ "comment": "with the password", "params": { "password": SECRET } }),
    );
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&parked, "failed");
    let records = serve.records(&parked);
    assert!(
        records
            .iter()
            .any(|r| r.to_string().contains("bad password ***")),
        "the step after the gate ran with the secret, masked in its output: {records:#?}"
    );
    seen.push(serve.get(&format!("/runs/{parked}/records")).to_string());
    seen.push(serve.stop());
    seen.push(String::from_utf8_lossy(&sb.journal_bytes()).into_owned());
    for (i, text) in seen.iter().enumerate() {
        assert!(
            !text.contains(SECRET),
            "the secret is in clear in view {i}: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Trust: what a caller of serve may run and change, how its failures exit, what the page may load.

/// A runbook that must never run: it leaves `pwned` behind.
const EVIL: &str = r#"
runbook: evil
steps:
  - id: own
    shell: { run: "touch pwned" }
"#;

#[test]
fn the_api_runs_runbooks_by_name_only_and_never_a_file_path() {
    let sb = Sandbox::new();
    sb.write(
        "runbooks/fine.yaml",
        "runbook: fine\nsteps:\n  - id: mark\n    shell: { run: \"echo fine >> fine.txt\" }\n",
    );
    sb.write(
        "runbooks/team/nested.yaml",
        "runbook: nested\nsteps:\n  - id: mark\n    shell: { run: \"echo nested >> fine.txt\" }\n",
    );
    // Readable YAML beside the library, under every spelling the command line would run.
    let evil = sb.write("evil.yaml", EVIL);
    sb.write("evil", EVIL);
    sb.write("x/evil", EVIL);
    sb.write("x/evil.yaml", EVIL);
    let dir_name = sb
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a sandbox name")
        .to_owned();
    let serve = Serve::start(&sb, &[]);

    let absolute = evil.to_str().expect("utf-8 path").to_owned();
    let up_and_back = format!("../{dir_name}/evil.yaml");
    for path in [
        absolute.as_str(),
        up_and_back.as_str(),
        "../evil.yaml",
        "runbooks/../evil.yaml",
        "evil.yaml",
        "./evil",
        "x/evil",
        "x\\evil",
        "bundled:hello.yaml",
    ] {
        let (status, body) = serve.post("/runs", &json!({ "runbook": path }));
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["kind"], "bad-input", "{path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("`{path}`"))
                && error.contains("./runbooks, $RUNBOOK_PATH and the bundled library"),
            "the refusal names the runbook and where names are looked up: {body}"
        );
    }
    assert!(
        serve.runs().is_empty(),
        "no run was created: {:#?}",
        serve.runs()
    );

    // The command line talking to serve cannot hand it a file either.
    for path in [
        "evil.yaml",
        absolute.as_str(),
        "x/evil",
        "evil",
        "../nowhere.yaml",
    ] {
        let out = sb.cmd(&["run", path]).code(2);
        assert!(
            out.stderr.contains("runs runbooks by name only")
                && out
                    .stderr
                    .contains("./runbooks or a $RUNBOOK_PATH directory"),
            "{}",
            out.explain("the refusal says to run by name")
        );
    }
    assert!(
        serve.runs().is_empty(),
        "no run was created: {:#?}",
        serve.runs()
    );

    // Names of the library run, nested ones too.
    let run = serve.start_run("fine");
    serve.wait_state(&run, "succeeded");
    let run = serve.start_run("team/nested");
    serve.wait_state(&run, "succeeded");
    sb.cmd(&["run", "fine"]).ok();
    assert_eq!(sb.read("fine.txt"), "fine\nnested\nfine\n");
    serve.stop();

    assert_eq!(history(&sb).len(), 3, "only the runs by name are journaled");
    assert!(
        !sb.path().join("pwned").exists(),
        "a runbook given by path ran"
    );
}

/// A run with a plain parameter and a secret one, parked at a gate; the step after the gate
/// writes the plain value where the test can see it.
const PINNED: &str = r#"
runbook: pinned
params:
  v: { type: string, default: original }
  token: { type: string, secret: true, required: true }
steps:
  - id: confirm
    gate: "Go on with v={{params.v}}?"
  - id: after
    shell: { run: "echo {{sh params.v}} >> v-{{run.id}}.txt" }
"#;

#[test]
fn a_decision_or_a_resume_cannot_change_a_parameter_and_journals_nothing_when_refused() {
    const TOKEN: &str = "s3cret-Tq7vLm2x";
    let (sb, tokens) = api_sandbox();
    sb.write("runbooks/pinned.yaml", PINNED);
    let serve = Serve::start(&sb, &["--tokens", tokens.to_str().expect("utf-8")]);
    let (status, body) = call_as(
        &serve,
        Some(ALICE),
        "POST",
        "/runs",
        Some(&json!({ "runbook": "pinned", "params": { "token": TOKEN } })),
    );
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("run").to_owned();
    serve.wait_state(&run, "waiting");
    let before = serve.records(&run);

    // Through the API, as another person or as the starter: 400, nothing journaled.
    for (token, verb, params, says) in [
        (
            BOB,
            "approve",
            json!({ "v": "changed" }),
            "parameter `v` is not secret",
        ),
        (
            BOB,
            "reject",
            json!({ "v": "changed" }),
            "parameter `v` is not secret",
        ),
        (
            ALICE,
            "resume",
            json!({ "v": "changed" }),
            "parameter `v` is not secret",
        ),
        (
            BOB,
            "approve",
            json!({ "v": "original" }),
            "parameter `v` is not secret",
        ),
        (
            BOB,
            "approve",
            json!({ "token": "another" }),
            "serve holds secret parameter `token` for this run already",
        ),
        (
            BOB,
            "approve",
            json!({ "token": TOKEN }),
            "serve holds secret parameter `token` for this run already",
        ),
        (
            BOB,
            "approve",
            json!({ "nope": "1" }),
            "runbook `pinned` has no parameter `nope`",
        ),
    ] {
        let (status, body) = call_as(
            &serve,
            Some(token),
            "POST",
            &format!("/runs/{run}/{verb}"),
            Some(&json!({ "comment": "sneaky", "params": params })),
        );
        assert_eq!(status, 400, "{verb} {params}: {body}");
        assert_eq!(body["kind"], "bad-input", "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(says)),
            "{verb} {params}: {body}"
        );
        assert_eq!(
            serve.records(&run),
            before,
            "{verb} {params} journaled something"
        );
    }

    // The command line through serve: exit 2, nothing journaled.
    for args in [
        vec!["approve", &run, "-p", "v=changed"],
        vec!["reject", &run, "-p", "v=changed"],
        vec!["resume", &run, "-p", "v=changed"],
    ] {
        let out = sb.cmd(&args).code(2);
        assert!(
            out.stderr.contains("parameter `v` is not secret"),
            "{}",
            out.explain("the refusal says why")
        );
        assert_eq!(serve.records(&run), before, "{args:?} journaled something");
    }

    // Without parameters the approval goes on, with the values the run started with.
    let (status, body) = call_as(
        &serve,
        Some(BOB),
        "POST",
        &format!("/runs/{run}/approve"),
        Some(&json!({})),
    );
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&run, "succeeded");
    assert_eq!(sb.read(&format!("v-{run}.txt")), "original\n");

    // A serve restarted while a run waits no longer holds its secret: a decision supplies it,
    // and nothing else.
    let (status, body) = call_as(
        &serve,
        Some(ALICE),
        "POST",
        "/runs",
        Some(&json!({ "runbook": "pinned", "params": { "token": TOKEN, "v": "first" } })),
    );
    assert_eq!(status, 201, "{body}");
    let parked = body["run"].as_str().expect("run").to_owned();
    serve.wait_state(&parked, "waiting");
    serve.stop();
    let serve = Serve::start(&sb, &["--tokens", tokens.to_str().expect("utf-8")]);
    let before = serve.records(&parked);
    let (status, body) = call_as(
        &serve,
        Some(BOB),
        "POST",
        &format!("/runs/{parked}/approve"),
        Some(&json!({ "params": { "token": TOKEN, "v": "second" } })),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("parameter `v` is not secret") && e.contains("\"first\"")),
        "the refusal shows the value the run keeps: {body}"
    );
    assert_eq!(
        serve.records(&parked),
        before,
        "a refused approval journals nothing"
    );
    let (status, body) = call_as(
        &serve,
        Some(BOB),
        "POST",
        &format!("/runs/{parked}/approve"),
        Some(&json!({ "comment": "with the token", "params": { "token": TOKEN } })),
    );
    assert_eq!(status, 202, "{body}");
    serve.wait_state(&parked, "succeeded");
    assert_eq!(sb.read(&format!("v-{parked}.txt")), "first\n");
    serve.stop();

    // The command line on its own (no serve): the same rule, exit 2 and nothing journaled.
    sb.cmd(&["run", "pinned", "-p", &format!("token={TOKEN}")])
        .code(3);
    let local = history(&sb)[0]["id"].as_str().expect("id").to_owned();
    let before = sb.records(&local);
    for args in [
        vec![
            "approve",
            &local,
            "-p",
            "v=changed",
            "-p",
            &format!("token={TOKEN}"),
        ],
        vec!["resume", &local, "-p", "v=changed"],
        vec!["approve", &local, "-p", "tokn=x"],
    ] {
        let out = sb.cmd(&args).code(2);
        assert!(
            out.stderr.contains("parameter `v` is not secret")
                || out
                    .stderr
                    .contains("has no parameter `tokn` (did you mean `token`?)"),
            "{}",
            out.explain("the refusal says why")
        );
        assert_eq!(sb.records(&local), before, "{args:?} journaled something");
    }
    sb.cmd(&["approve", &local, "-p", &format!("token={TOKEN}")])
        .ok();
    assert_eq!(sb.read(&format!("v-{local}.txt")), "original\n");
    assert!(
        !String::from_utf8_lossy(&sb.journal_bytes()).contains(TOKEN),
        "the secret is in the journal in clear"
    );
}

#[test]
fn a_held_lock_exits_1_through_serve_as_it_does_on_its_own() {
    let sb = Sandbox::new();
    sb.write(
        "runbooks/locked.yaml",
        r#"
runbook: locked
params:
  target: { type: string, default: a }
lock: "target/{{params.target}}"
steps:
  - id: confirm
    gate: "Go on?"
"#,
    );
    let serve = Serve::start(&sb, &[]);
    sb.cmd(&["run", "locked"]).code(3);
    let holder = serve.runs()[0]["id"].as_str().expect("id").to_owned();

    let out = sb.cmd(&["run", "locked"]).code(1);
    assert!(
        out.stderr
            .contains(&format!("lock `target/a` is held by run {holder}")),
        "{}",
        out.explain("the refusal names the holder")
    );
    let out = sb.cmd(&["run", "locked", "--output", "json"]).code(1);
    assert!(
        out.stdout.contains(r#""code":1"#),
        "{}",
        out.explain("the JSON error carries the exit code")
    );
    let (status, body) = serve.post("/runs", &json!({ "runbook": "locked" }));
    assert_eq!(
        (status, &body["kind"]),
        (409, &json!("lock-held")),
        "{body}"
    );
    assert_eq!(serve.runs().len(), 1, "no second run was created");
    serve.stop();

    let out = sb.cmd(&["run", "locked"]).code(1);
    assert!(
        out.stderr
            .contains(&format!("lock `target/a` is held by run {holder}")),
        "{}",
        out.explain("on its own, the same refusal")
    );
}

/// A GET without a token: the status, the named response headers and the body.
fn get_raw(url: &str, headers: &[&str]) -> (u16, Vec<Option<String>>, String) {
    let response = match ureq::get(url).timeout(Duration::from_secs(30)).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = response.status();
    let values = headers
        .iter()
        .map(|h| response.header(h).map(str::to_owned))
        .collect();
    (status, values, response.into_string().expect("a body"))
}

#[test]
fn every_answer_of_serve_carries_a_strict_content_security_policy() {
    const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    let sb = Sandbox::new();
    let serve = Serve::start(&sb, &[]);
    let headers = [
        "content-security-policy",
        "x-content-type-options",
        "referrer-policy",
        "content-type",
    ];
    let expected = |ty: &str| {
        vec![
            Some(CSP.to_owned()),
            Some("nosniff".to_owned()),
            Some("no-referrer".to_owned()),
            Some(ty.to_owned()),
        ]
    };
    let html = "text/html; charset=utf-8";
    let js = "text/javascript; charset=utf-8";
    let css = "text/css; charset=utf-8";
    let json_type = "application/json";
    for (path, status, ty) in [
        ("/", 200, html),
        ("/runs/01JD0000000000000000000000", 200, html),
        ("/app.js", 200, js),
        ("/runs/app.js", 200, js),
        ("/app.css", 200, css),
        ("/runs/app.css", 200, css),
        ("/api/v1/runs", 401, json_type),
    ] {
        let (got, values, body) = get_raw(&format!("{}{path}", serve.url), &headers);
        assert_eq!(got, status, "GET {path}: {body}");
        assert_eq!(values, expected(ty), "GET {path}");
    }
    // With a token, the API's answers carry them too.
    let response = ureq::get(&serve.api("/runs"))
        .set("Authorization", &format!("Bearer {}", serve.token))
        .call()
        .expect("GET /api/v1/runs");
    assert_eq!(
        response.header("content-security-policy"),
        Some(CSP),
        "an API answer"
    );

    // The page loads its script and styles from serve, and has nothing inline to allow.
    let (_, _, page) = get_raw(&format!("{}/", serve.url), &[]);
    assert!(
        page.contains(r#"<script src="app.js" defer></script>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<link rel="stylesheet" href="app.css">"#),
        "{page}"
    );
    for inline in ["<script>", "<style", "style=", "onclick", "http-equiv"] {
        assert!(!page.contains(inline), "the page has `{inline}` inline");
    }
    serve.stop();
}

#[test]
fn a_follower_that_comes_after_the_run_parked_still_sees_it_park() {
    // The command line starts or approves a run through serve, then follows it. When the run
    // parks before the follower's stream opens, the stream must still end there (it once waited
    // forever), and after an approval it must end at the next park, not the one approved.
    let sb = Sandbox::new();
    sb.write(
        "runbooks/twice.yaml",
        "runbook: twice\nsteps:\n  - id: one\n    gate: \"First?\"\n  - id: two\n    gate: \"Second?\"\n",
    );
    let serve = Serve::start(&sb, &[]);
    let (status, started) = serve.post("/runs", &json!({ "runbook": "twice" }));
    assert_eq!(status, 201, "{started}");
    let run = started["run"].as_str().expect("run id").to_owned();
    serve.wait_state(&run, "waiting");
    let follow = |since: &Value| -> String {
        let url = serve.api(&format!("/runs/{run}/events?since={since}"));
        ureq::get(&url)
            .timeout(Duration::from_secs(10))
            .set("Authorization", &format!("Bearer {}", serve.token))
            .call()
            .expect("GET events")
            .into_string()
            .unwrap_or_else(|e| panic!("the stream since {since} did not end: {e}"))
    };
    let parks = |stream: &str| stream.matches(r#""state":"waiting""#).count();
    assert_eq!(parks(&follow(&started["since"])), 1);

    let (status, accepted) = serve.post(&format!("/runs/{run}/approve"), &json!({}));
    assert_eq!(status, 202, "{accepted}");
    wait_for("the run to park at the second gate", SETTLE, || {
        let r = serve.run(&run);
        r["open_gate"]["path"] == "two" && r["active"] == false
    });
    assert_eq!(parks(&follow(&accepted["since"])), 2);

    // The command line does the same end to end.
    let out = sb.cmd(&["approve", &run]).ok();
    assert!(
        out.stdout.contains(&format!("run {run} succeeded")),
        "{}",
        out.explain("approve follows the run to its end")
    );
    serve.stop();
}

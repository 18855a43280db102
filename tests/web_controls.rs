//! The run controls, the schedules view and the history view of `runbook serve`'s web page,
//! driven in headless Chromium (tests/browser/*.mjs, as in tests/web.rs). A script stops at
//! checkpoints; there the test checks what the page showed against `runbook` itself — `status`,
//! `history`, `schedule list`, run as processes against the journal `serve` holds — and against
//! the API, and only then lets the script go on. The API's side of the same features (the
//! `actions` of a run, GET /runs filters and their 400s, the fires of GET /schedules) is tested
//! without a browser at the end.
//!
//! Like tests/web.rs these need what tests/browser/install.sh installs; they never skip.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::support::{Sandbox, wait_for};
use crate::web::{ALICE, BOB, Serve, browser_dir, screenshot, script};

/// A browser script that stops at checkpoints (`@check {…}` on its stdout) until the test
/// answers `ok` on its stdin. Dropping it closes its stdin, which ends the script (it closes
/// its browser), and kills it if it has not ended 10 s later.
struct Driver {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    checkpoints: mpsc::Receiver<String>,
    transcript: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    deadline: Instant,
}

impl Driver {
    fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = browser_dir();
        let mut command = Command::new("node");
        command
            .arg(dir.join(name))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn node");
        let transcript = Arc::new(Mutex::new(String::new()));
        let (tx, checkpoints) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let out = {
            let transcript = transcript.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    append(&transcript, &line);
                    if let Some(check) = line.strip_prefix("@check ") {
                        let _ = tx.send(check.to_owned());
                    }
                }
            })
        };
        let err = {
            let transcript = transcript.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    append(&transcript, &line);
                }
            })
        };
        Self {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            checkpoints,
            transcript,
            readers: vec![out, err],
            // The scripts bound themselves to 90 s; the checks in between take seconds.
            deadline: Instant::now() + Duration::from_secs(150),
        }
    }

    fn transcript(&self) -> String {
        self.transcript.lock().expect("transcript").clone()
    }

    /// The next checkpoint, or `None` once the script has ended well. A script that fails or
    /// runs out of time fails the test with everything it printed.
    fn next(&mut self) -> Option<Value> {
        loop {
            match self.checkpoints.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    return Some(serde_json::from_str(&line).unwrap_or_else(|e| {
                        panic!("{}: a checkpoint that is not JSON ({e}): {line}", self.name)
                    }));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Its stdout is closed: the script has ended (or is ending).
                    let status = self.wait(Duration::from_secs(10));
                    for reader in self.readers.drain(..) {
                        let _ = reader.join();
                    }
                    assert!(
                        status.is_some_and(|s| s.success()),
                        "{} ended {status:?}:\n{}",
                        self.name,
                        self.transcript()
                    );
                    return None;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            assert!(
                Instant::now() < self.deadline,
                "{} took too long:\n{}",
                self.name,
                self.transcript()
            );
        }
    }

    /// Lets the script go on past its checkpoint.
    fn ok(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "ok").expect("the script reads its stdin");
    }

    /// The script's end, waiting at most `limit`.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stdin = None;
        if self.wait(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.name, self.transcript());
        }
    }
}

/// Adds a line the script printed to its transcript.
fn append(transcript: &Mutex<String>, line: &str) {
    let mut t = transcript.lock().expect("transcript");
    t.push_str(line);
    t.push('\n');
}

/// The checkpoint's `step`.
fn step(check: &Value) -> &str {
    check["step"].as_str().unwrap_or_default()
}

/// `runbook status RUN --output json`'s state, asked of the `serve` that holds the journal.
fn cli_state(sb: &Sandbox, run: &str) -> String {
    sb.status(run)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The actions of GET /runs/{id}, as the page's button names.
fn api_actions(serve: &Serve, run: &str) -> Vec<String> {
    let detail = serve.get(BOB, &format!("/api/v1/runs/{run}"));
    detail["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("a run's detail lists its actions: {detail:#}"))
        .iter()
        .filter_map(|a| a["action"].as_str().map(str::to_owned))
        .filter(|a| a != "approve" && a != "reject")
        .collect()
}

/// A run that works a moment, then waits for a file that never comes; its cleanup writes the
/// run's id to `tidy.txt`.
const LONG_BOOK: &str = r#"
runbook: web-long
on_abort:
  - id: tidy
    shell: { run: "echo {{run.id}} >> tidy.txt" }
steps:
  - id: work
    shell: { run: "echo x >> work.txt" }
  - id: ready
    wait:
      every: 100ms
      timeout: 5m
      probe: { shell: { run: "test -e never && echo yes || echo no" } }
      until: 'output.stdout.contains("yes")'
"#;

fn start_run(serve: &Serve, token: &str, runbook: &str) -> String {
    let (status, body) = serve.post(token, "/api/v1/runs", &json!({ "runbook": runbook }));
    assert_eq!(status, 201, "starting {runbook}: {body}");
    body["run"].as_str().expect("a run id").to_owned()
}

#[test]
fn pause_unpause_and_abort_from_the_page_act_on_running_runs_as_runbook_status_says() {
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-long.yaml", LONG_BOOK);
    let serve = Serve::start(&sb);
    let first = start_run(&serve, BOB, "web-long");
    let second = start_run(&serve, BOB, "web-long");
    wait_for(
        "both runs to be at their wait",
        Duration::from_secs(30),
        || sb.read("work.txt") == "x\nx\n",
    );

    let shot = screenshot("web-pause-abort.png");
    let mut page = Driver::start(
        "pause_abort.mjs",
        &[
            &serve.url,
            ALICE,
            &first,
            &second,
            shot.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    let mut seen = Vec::new();
    while let Some(check) = page.next() {
        let run = check["run"].as_str().expect("a run").to_owned();
        let buttons: Vec<String> = serde_json::from_value(check["buttons"].clone()).unwrap();
        // What the page offers is what the API lists; `runbook status` says the same state.
        let want = match step(&check) {
            "running" | "unpaused" => "running",
            "paused" => "paused",
            "aborted" | "aborted-without-cleanup" => "aborted",
            other => panic!("unexpected checkpoint {other}"),
        };
        assert_eq!(cli_state(&sb, &run), want, "after {check}");
        assert_eq!(buttons, api_actions(&serve, &run), "after {check}");
        seen.push(step(&check).to_owned());
        page.ok();
    }
    assert_eq!(
        seen,
        [
            "running",
            "paused",
            "unpaused",
            "aborted",
            "aborted-without-cleanup"
        ]
    );
    eprintln!("screenshot of the page: {}", shot.display());

    // The journal has who did each, and why.
    let records = serve.records(BOB, &first);
    for (event, key, text) in [
        ("paused", "comment", "paused from the browser"),
        ("unpaused", "comment", "unpaused from the browser"),
        (
            "abort_started",
            "reason",
            "aborted by alice: aborted from the browser",
        ),
    ] {
        assert!(
            records
                .iter()
                .any(|r| r["event"] == event && r["by"] == "alice" && r[key] == text),
            "{event} by alice: {records:#?}"
        );
    }
    assert_eq!(
        sb.read("tidy.txt"),
        format!("{first}\n"),
        "the first run's cleanup ran, the second's did not"
    );
    let second_status = sb.status(&second);
    let reason = second_status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("aborted by alice: aborted without cleanup from the browser")
            && reason.contains("no cleanup"),
        "{second_status:#}"
    );
    assert!(
        !serve
            .records(BOB, &second)
            .iter()
            .any(|r| r["event"] == "abort_started"),
        "no cleanup started for the second run"
    );
}

/// A step that cannot safely run twice, cut short by a stopping `serve`.
const ONCE_BOOK: &str = r#"
runbook: web-once
steps:
  - id: work
    shell: { run: "echo started >> work.txt; exec sleep 60" }
  - id: after
    shell: { run: "echo x >> after.txt" }
"#;

#[test]
fn an_operator_skips_a_step_that_needs_attention_from_the_page() {
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-once.yaml", ONCE_BOOK);
    let run = {
        let first = Serve::start(&sb);
        let run = start_run(&first, BOB, "web-once");
        wait_for("`work` to be under way", Duration::from_secs(30), || {
            sb.read("work.txt") == "started\n"
        });
        run
        // SIGTERM on drop: the step is cut short and the run interrupted.
    };
    let serve = Serve::start(&sb);
    wait_for("the run to need attention", Duration::from_secs(30), || {
        cli_state(&sb, &run) == "needs-attention"
    });
    assert_eq!(
        api_actions(&serve, &run),
        ["retry", "skip", "abort"],
        "a run that needs attention offers retry and skip of its step"
    );

    let shot = screenshot("web-skip.png");
    let (status, out) = script(
        "control.mjs",
        &[
            "skip",
            &serve.url,
            ALICE,
            &run,
            "work",
            shot.to_str().expect("utf-8 path"),
        ],
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "control.mjs should skip the step and see the run succeed; it ended {status:?}:\n{out}\n--- serve ---\n{}",
        serve.output.text()
    );
    assert_eq!(cli_state(&sb, &run), "succeeded");
    assert_eq!(
        (sb.read("work.txt"), sb.read("after.txt")),
        ("started\n".into(), "x\n".into()),
        "`work` did not run again; the step after it ran"
    );
    let records = serve.records(BOB, &run);
    let decided = records
        .iter()
        .find(|r| r["event"] == "operator_decided")
        .unwrap_or_else(|| panic!("a decision: {records:#?}"));
    assert_eq!(
        (
            &decided["path"],
            &decided["action"],
            &decided["by"],
            &decided["comment"]
        ),
        (
            &json!("work"),
            &json!("skip"),
            &json!("alice"),
            &json!("done by hand, skipped from the browser")
        )
    );
}

/// A run that parks at a gate: a schedule's run stays unfinished until someone decides.
const PARKS_BOOK: &str = r#"
runbook: web-parks
steps:
  - id: note
    shell: { run: "echo {{run.id}} >> fired.txt" }
  - id: confirm
    gate: "Go on?"
"#;

const SCHEDULES: &str = r#"
schedules:
  - name: nightly-backup
    runbook: web-parks
    cron: "0 3 * * *"
    timezone: Europe/Berlin
  - name: weekday-report
    runbook: web-parks
    cron: "30 4 * * MON-FRI"
    timezone: America/New_York
    overlap: queue
"#;

/// `runbook schedule list --output json`, by name.
fn schedule_list(sb: &Sandbox) -> Vec<Value> {
    sb.cmd(&["schedule", "list", "--output", "json"])
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a schedule is JSON"))
        .collect()
}

fn listed<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("schedule list has {name}: {list:#?}"))
}

/// Times as the page's `datetime` attributes give them, read as instants.
fn instants(v: &Value) -> Vec<DateTime<Utc>> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list of times: {v}"))
        .iter()
        .map(|t| {
            DateTime::parse_from_rfc3339(t.as_str().expect("a time"))
                .unwrap_or_else(|e| panic!("{t} is RFC 3339: {e}"))
                .with_timezone(&Utc)
        })
        .collect()
}

#[test]
fn a_schedule_is_paused_and_triggered_from_the_page_and_its_next_fires_match_schedule_list() {
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-parks.yaml", PARKS_BOOK);
    sb.write("schedules.yaml", SCHEDULES);
    let serve = Serve::start(&sb);
    let name = "nightly-backup";

    let (wide, narrow) = (
        screenshot("web-schedules.png"),
        screenshot("web-schedules-narrow.png"),
    );
    let mut page = Driver::start(
        "schedules.mjs",
        &[
            &serve.url,
            ALICE,
            name,
            wide.to_str().expect("utf-8 path"),
            narrow.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    let mut triggered = None;
    let mut seen = Vec::new();
    while let Some(check) = page.next() {
        let cli = schedule_list(&sb);
        match step(&check) {
            "listed" => {
                let shown = check["schedules"].as_array().expect("schedules");
                assert_eq!(shown.len(), cli.len(), "every schedule: {shown:#?}");
                for s in shown {
                    let listed = listed(&cli, s["name"].as_str().expect("a name"));
                    assert_eq!(s["cron"], listed["cron"], "{s:#}");
                    assert_eq!(s["timezone"], listed["timezone"], "{s:#}");
                    assert_eq!(s["state"], "active");
                    assert_eq!(
                        instants(&s["next"]),
                        instants(&listed["next"]),
                        "the page's next fires are schedule list's: {s:#}"
                    );
                    assert!(!listed["next"].as_array().unwrap().is_empty());
                }
            }
            "paused" => {
                let s = &check["schedule"];
                assert_eq!((&s["state"], &s["next"]), (&json!("paused"), &json!([])));
                assert_eq!(listed(&cli, name)["paused"], true);
                assert_eq!(listed(&cli, "weekday-report")["paused"], false);
            }
            "triggered" => {
                let run = check["run"].as_str().expect("the fire's run").to_owned();
                let fire = &listed(&cli, name)["history"][0];
                assert_eq!(
                    (&fire["outcome"], &fire["run"], &fire["run_state"]),
                    (&json!("started"), &json!(run), &json!("waiting")),
                    "{fire:#}"
                );
                assert_eq!(check["schedule"]["fires"][0]["fire"], fire["fire"]);
                let status = sb.status(&run);
                assert_eq!(status["state"], "waiting", "{status:#}");
                assert_eq!(status["trigger"]["schedule"], name, "{status:#}");
                triggered = Some(run);
            }
            "skipped" => {
                let history = listed(&cli, name)["history"].clone();
                let outcomes: Vec<&Value> = history
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| &f["outcome"])
                    .collect();
                assert_eq!(outcomes, [&json!("skipped"), &json!("started")]);
                let shown: Vec<&Value> = check["schedule"]["fires"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| &f["outcome"])
                    .collect();
                assert_eq!(
                    shown, outcomes,
                    "the page shows the fires schedule list has"
                );
            }
            "resumed" => {
                let listed = listed(&cli, name);
                assert_eq!(listed["paused"], false);
                assert_eq!(
                    instants(&check["schedule"]["next"]),
                    instants(&listed["next"]),
                    "{check:#}"
                );
            }
            other => panic!("unexpected checkpoint {other}"),
        }
        seen.push(step(&check).to_owned());
        page.ok();
    }
    assert_eq!(
        seen,
        ["listed", "paused", "triggered", "skipped", "resumed"]
    );
    let run = triggered.expect("a triggered run");
    assert_eq!(
        sb.read("fired.txt"),
        format!("{run}\n"),
        "one run started: the second fire was skipped"
    );
    eprintln!(
        "screenshots of the schedules view: {} and (600 px wide) {}",
        wide.display(),
        narrow.display()
    );
}

const OK_BOOK: &str = "runbook: web-ok\nsteps:\n  - id: work\n    shell: { run: \"true\" }\n";
const FAIL_BOOK: &str = "runbook: web-fail\nsteps:\n  - id: work\n    shell: { run: \"exit 3\" }\n";

/// Runs each `(token, runbook)` and waits for every one of them to end.
fn run_all(serve: &Serve, runs: &[(&str, &str)]) -> Vec<String> {
    let ids: Vec<String> = runs
        .iter()
        .map(|(token, book)| start_run(serve, token, book))
        .collect();
    for id in &ids {
        wait_for("the run to end", Duration::from_secs(30), || {
            let state = serve.get(BOB, &format!("/api/v1/runs/{id}"))["state"].clone();
            state == "succeeded" || state == "failed"
        });
    }
    ids
}

/// A run as `runbook history --output json` lists it.
#[derive(Debug)]
struct Listed {
    id: String,
    runbook: String,
    state: String,
    started_by: String,
    created_at: DateTime<Utc>,
}

/// Which runs a filter of the history view means, given the time typed into it.
type Pick = fn(&Listed, DateTime<Utc>) -> bool;

/// The runs `runbook history` lists.
fn cli_history(sb: &Sandbox) -> Vec<Listed> {
    sb.cmd(&["history", "--output", "json", "--limit", "1000"])
        .ok()
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a run is JSON");
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            Listed {
                id: text("id"),
                runbook: text("runbook"),
                state: text("state"),
                started_by: text("started_by"),
                created_at: DateTime::parse_from_rfc3339(&text("created_at"))
                    .expect("created_at")
                    .with_timezone(&Utc),
            }
        })
        .collect()
}

/// GET `path` with `token`: the status and the JSON body.
fn get_raw(serve: &Serve, token: &str, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", serve.url);
    let response = match ureq::get(&url)
        .set("Authorization", &format!("Bearer {token}"))
        .timeout(Duration::from_secs(10))
        .call()
    {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    (
        response.status(),
        response.into_json().unwrap_or(Value::Null),
    )
}

/// The ids GET /runs?`query` lists, in its order.
fn api_ids(serve: &Serve, query: &str) -> Vec<String> {
    let (status, body) = get_raw(serve, BOB, &format!("/api/v1/runs{query}"));
    assert_eq!(status, 200, "GET /runs{query}: {body}");
    body.as_array()
        .expect("a list")
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Waits until the wall clock is past the next whole second and returns that second: a time
/// a person can type (to the second) that falls between the runs before and those after.
fn next_whole_second() -> DateTime<Utc> {
    let now = Utc::now();
    let cut = DateTime::from_timestamp(now.timestamp() + 1, 0).expect("a time");
    wait_for("the next whole second", Duration::from_secs(2), || {
        Utc::now() > cut
    });
    cut
}

#[test]
fn the_history_view_filters_runs_by_runbook_state_starter_and_time_as_serve_and_runbook_do() {
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-ok.yaml", OK_BOOK);
    sb.write("runbooks/web-fail.yaml", FAIL_BOOK);
    let serve = Serve::start(&sb);
    run_all(
        &serve,
        &[(ALICE, "web-ok"), (BOB, "web-fail"), (ALICE, "web-fail")],
    );
    let cut = next_whole_second();
    run_all(
        &serve,
        &[(BOB, "web-ok"), (ALICE, "web-ok"), (BOB, "web-fail")],
    );
    let all = cli_history(&sb);
    assert_eq!(all.len(), 6, "{all:#?}");
    let cut_ms = cut.timestamp_millis();

    // What a person asks for, and which runs `runbook history` says are those.
    let filters: [(&str, Value, Pick); 5] = [
        ("runbook", json!({ "runbook": "web-fail" }), |r, _| {
            r.runbook == "web-fail"
        }),
        (
            "state-and-starter",
            json!({ "state": "succeeded", "started_by": "alice" }),
            |r, _| r.state == "succeeded" && r.started_by == "alice",
        ),
        ("since", json!({ "since_ms": cut_ms }), |r, cut| {
            r.created_at >= cut
        }),
        (
            "until-and-runbook",
            json!({ "until_ms": cut_ms, "runbook": "web-ok" }),
            |r, cut| r.created_at < cut && r.runbook == "web-ok",
        ),
        (
            "everything",
            json!({ "runbook": "web-fail", "state": "failed", "started_by": "bob", "since_ms": cut_ms }),
            |r, cut| {
                r.runbook == "web-fail"
                    && r.state == "failed"
                    && r.started_by == "bob"
                    && r.created_at >= cut
            },
        ),
    ];
    let spec = json!({
        "filters": filters.iter().map(|(name, f, _)| {
            let mut f = f.clone();
            f["name"] = json!(name);
            f
        }).collect::<Vec<_>>(),
        "bad": "state=done",
    });
    let expected = |name: &str| -> Vec<String> {
        let (_, _, pick) = filters
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("a filter");
        let mut runs: Vec<_> = all.iter().filter(|r| pick(r, cut)).collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        runs.into_iter().map(|r| r.id.clone()).collect()
    };

    let (wide, narrow) = (
        screenshot("web-history.png"),
        screenshot("web-history-narrow.png"),
    );
    let mut page = Driver::start(
        "history.mjs",
        &[
            &serve.url,
            ALICE,
            &spec.to_string(),
            wide.to_str().expect("utf-8 path"),
            narrow.to_str().expect("utf-8 path"),
        ],
        // Times are typed in a zone other than UTC: the page must send the instants meant.
        &[("TZ", "Europe/Berlin")],
    );
    let mut shown_by_query = std::collections::BTreeMap::new();
    let mut seen = Vec::new();
    let mut last = String::new();
    while let Some(check) = page.next() {
        let query = check["query"].as_str().unwrap_or_default().to_owned();
        let rows: Vec<String> = serde_json::from_value(check["rows"].clone()).unwrap_or_default();
        match step(&check) {
            "filter" => {
                let name = check["name"].as_str().expect("a name");
                let want = expected(name);
                assert!(!want.is_empty(), "{name} matches some runs");
                assert_eq!(
                    rows, want,
                    "filter {name}: the page lists what `runbook history` has ({query})"
                );
                assert_eq!(
                    rows,
                    api_ids(&serve, &query),
                    "and what GET /runs{query} lists"
                );
                if name.contains("since") || name == "everything" || name.starts_with("until") {
                    let cut_text = cut.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    assert!(
                        query.contains(&cut_text.replace(':', "%3A")),
                        "the address holds the instant typed ({cut_text}): {query}"
                    );
                }
                shown_by_query.insert(query.clone(), rows.clone());
                last = query;
            }
            "back" => {
                assert_eq!(
                    Some(&rows),
                    shown_by_query.get(&query),
                    "Back shows that filter's list again"
                );
                assert_ne!(query, last);
            }
            "shared" => {
                assert_eq!(query, last, "the shared address is the last filter's");
                assert_eq!(rows, expected("everything"));
                let inputs = &check["inputs"];
                assert_eq!(
                    (
                        &inputs["h-runbook"],
                        &inputs["h-state"],
                        &inputs["h-started-by"]
                    ),
                    (&json!("web-fail"), &json!("failed"), &json!("bob")),
                    "the form shows the shared filter: {inputs:#}"
                );
                assert_ne!(inputs["h-since"], "", "{inputs:#}");
            }
            "refused" => {
                let error = check["error"].as_str().unwrap_or_default();
                assert!(
                    error.contains("bad `state` value `done`"),
                    "the page shows serve's refusal naming the parameter: {check:#}"
                );
                assert_eq!(check["invalid"], json!(["h-state"]), "{check:#}");
                assert_eq!(check["rows"], 0);
            }
            other => panic!("unexpected checkpoint {other}"),
        }
        seen.push(step(&check).to_owned());
        page.ok();
    }
    assert_eq!(
        seen,
        [
            "filter", "filter", "filter", "filter", "filter", "back", "shared", "refused"
        ]
    );
    eprintln!(
        "screenshots of the history view: {} and (600 px wide) {}",
        wide.display(),
        narrow.display()
    );
}

#[test]
fn the_api_lists_a_runs_actions_filters_runs_strictly_and_tells_each_schedules_fires() {
    let sb = Sandbox::new();
    sb.write("runbooks/web-parks.yaml", PARKS_BOOK);
    sb.write("runbooks/web-fail.yaml", FAIL_BOOK);
    sb.write("schedules.yaml", SCHEDULES);
    let serve = Serve::start(&sb);

    // A run's actions, in the API and in `status --output json` alike.
    let parked = serve.start_parked(ALICE, "web-parks");
    let failed = run_all(&serve, &[(BOB, "web-fail")]).remove(0);
    for (run, want) in [
        (
            &parked,
            json!([{ "action": "approve", "step": "confirm" }, { "action": "reject", "step": "confirm" }, { "action": "abort" }]),
        ),
        (
            &failed,
            json!([{ "action": "retry", "step": "work" }, { "action": "skip", "step": "work" }]),
        ),
    ] {
        assert_eq!(
            serve.get(BOB, &format!("/api/v1/runs/{run}"))["actions"],
            want
        );
        assert_eq!(sb.status(run)["actions"], want, "status --output json");
    }

    // Filters: exact, combined, and refused with the parameter named.
    assert_eq!(api_ids(&serve, "?runbook=web-fail"), [failed.as_str()]);
    assert_eq!(
        api_ids(&serve, "?state=waiting,failed&started_by=alice"),
        [parked.as_str()]
    );
    assert_eq!(
        api_ids(&serve, "?state=&runbook="),
        [failed.as_str(), parked.as_str()],
        "empty values are no filter"
    );
    assert_eq!(api_ids(&serve, "?limit=1"), [failed.as_str()]);
    for (query, param) in [
        ("?state=finished", "`state`"),
        ("?since=2026-13-01T00:00:00Z", "`since`"),
        ("?until=tomorrow", "`until`"),
        ("?limit=-1", "`limit`"),
        ("?limit=0", "`limit`"),
        ("?started=alice", "`started`"),
        (
            "?since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z",
            "`since`",
        ),
    ] {
        let (status, body) = get_raw(&serve, BOB, &format!("/api/v1/runs{query}"));
        assert_eq!(status, 400, "GET /runs{query}: {body}");
        assert_eq!(body["kind"], "bad-input", "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(param),
            "GET /runs{query} names {param}: {error}"
        );
    }

    // Next fires: the cron's, in its time zone, from now on; none while paused.
    let list = serve.get(BOB, "/api/v1/schedules");
    let list = list.as_array().expect("a list");
    let nightly = listed(list, "nightly-backup");
    let next = instants(&nightly["next"]);
    assert_eq!(next.len(), 3, "{nightly:#}");
    let now = Utc::now();
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().expect("a zone");
    for (i, t) in next.iter().enumerate() {
        let local = t.with_timezone(&berlin);
        assert_eq!(
            local.format("%H:%M:%S").to_string(),
            "03:00:00",
            "03:00 in Berlin: {t}"
        );
        assert!(*t > now && (i == 0 || *t > next[i - 1]), "{next:?}");
        assert!(
            i > 0 || *t - now <= chrono::Duration::hours(25),
            "the first is the next one: {t}"
        );
    }
    let weekday = instants(&listed(list, "weekday-report")["next"]);
    let york: chrono_tz::Tz = "America/New_York".parse().expect("a zone");
    for t in &weekday {
        use chrono::Datelike as _;
        let local = t.with_timezone(&york);
        assert_eq!(local.format("%H:%M").to_string(), "04:30", "{t}");
        assert!(local.weekday().num_days_from_monday() < 5, "a weekday: {t}");
    }
    let (status, paused) = serve.post(BOB, "/api/v1/schedules/nightly-backup/pause", &json!({}));
    assert_eq!((status, &paused["next"]), (200, &json!([])), "{paused:#}");
    // A body that arrives after the headers is read, and the connection serves the next request
    // (it was closed under a client that reused it: an `Unexpected EOF` one time in ten).
    assert_eq!(
        keep_alive_answers(&serve, "/api/v1/schedules/weekday-report/pause"),
        ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
    );

    // Recent fires, newest first, each with its run's state.
    let (_, fired) = serve.post(BOB, "/api/v1/schedules/nightly-backup/trigger", &json!({}));
    assert_eq!(fired["outcome"], "started", "{fired:#}");
    let run = fired["run"].as_str().expect("a run").to_owned();
    wait_for("the fire's run to park", Duration::from_secs(30), || {
        serve.get(BOB, &format!("/api/v1/runs/{run}"))["state"] == "waiting"
    });
    let (_, skipped) = serve.post(BOB, "/api/v1/schedules/nightly-backup/trigger", &json!({}));
    assert_eq!(skipped["outcome"], "skipped", "{skipped:#}");
    let list = serve.get(BOB, "/api/v1/schedules");
    let history = &listed(list.as_array().unwrap(), "nightly-backup")["history"];
    let fires: BTreeSet<(String, Option<String>, Option<String>)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["outcome"].as_str().unwrap().to_owned(),
                f["run"].as_str().map(str::to_owned),
                f["run_state"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        fires,
        BTreeSet::from([
            ("skipped".into(), None, None),
            ("started".into(), Some(run.clone()), Some("waiting".into())),
        ]),
        "{history:#}"
    );
    assert_eq!(
        history[0]["outcome"], "skipped",
        "newest first: {history:#}"
    );
    let (status, _) = serve.post(BOB, &format!("/api/v1/runs/{run}/reject"), &json!({}));
    assert_eq!(status, 202);
    wait_for("the rejected run to fail", Duration::from_secs(30), || {
        let list = serve.get(BOB, "/api/v1/schedules");
        listed(list.as_array().unwrap(), "nightly-backup")["history"][1]["run_state"] == "failed"
    });
}

/// POSTs `path` twice on one connection, each time the body `{}` a moment after the headers;
/// returns the status line of each answer (an empty one when the connection was closed).
fn keep_alive_answers(serve: &Serve, path: &str) -> Vec<String> {
    use std::io::Read as _;
    let addr = serve
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {BOB}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        let sent = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.flush())
            .and_then(|()| {
                // The body in a packet of its own, after the handler could have answered.
                std::thread::sleep(Duration::from_millis(100));
                stream.write_all(b"{}")
            });
        if sent.is_err() {
            answers.push(String::new());
            continue;
        }
        // One answer: its head, then as many bytes as its Content-Length says.
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
            got.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&got).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        let _ = stream.read_exact(&mut body);
        answers.push(head.lines().next().unwrap_or_default().to_owned());
    }
    answers
}

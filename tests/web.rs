//! The web page of `runbook serve`, driven in headless Chromium (Debian's `chromium`, through
//! playwright-core: tests/browser). An operator enters their token, finds the run in the list,
//! reads the gate, comments, approves, and watches the run finish live on the page; the person who
//! started a run and approves its four-eyes gate sees the API's refusal on the page.
//!
//! These tests need what tests/browser/install.sh installs (Debian chromium, and playwright-core
//! in `tests/browser/node_modules`); without it they fail and say to run it. They never skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::captured::Captured;
use crate::support::{Sandbox, wait_for};

pub(crate) const ALICE: &str = "a11ce0000000000000000000000a11ce";
pub(crate) const BOB: &str = "b0b00000000000000000000000000b0b";

const APPROVE_BOOK: &str = r#"
runbook: web-approve
description: Two steps, a gate, and a step after the gate, for the browser test
steps:
  - id: prepare
    shell: { run: "echo prepared > before.txt" }
  - id: roll
    foreach: "[1, 2]"
    as: member
    steps:
      - id: ping
        shell: { args: [echo, "member {{member}} is up"] }
  - id: confirm
    gate: { prompt: "Both members are up. Check the dashboards, then approve." }
  - id: after
    # Long enough that the page can only learn the end from the live event stream.
    shell: { run: "sleep 1 && echo approved > after.txt" }
"#;

const FOUR_EYES_BOOK: &str = r#"
runbook: web-four-eyes
steps:
  - id: prepare
    shell: { run: "echo prepared > before.txt" }
  - id: confirm
    gate: { prompt: "Rotate the root key now?", four_eyes: true }
  - id: after
    shell: { run: "echo approved > after.txt" }
"#;

/// A `runbook serve` in a sandbox, with tokens for alice and bob; stopped (SIGTERM) on drop.
pub(crate) struct Serve {
    child: Child,
    pub(crate) url: String,
    pub(crate) output: Captured,
    http: ureq::Agent,
}

impl Serve {
    pub(crate) fn start(sb: &Sandbox) -> Self {
        let tokens = sb.write("tokens", &format!("alice: {ALICE}\nbob: {BOB}\n"));
        let mut child = sb
            .cmd(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tokens",
                tokens.to_str().expect("utf-8 path"),
            ])
            .env_remove("RUNBOOK_API_TOKEN")
            .spawn();
        let output = Captured::of(&mut child);
        let info = sb.journal().join("serve.json");
        let mut url = String::new();
        wait_for("serve to write serve.json", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("serve exited with {status}:\n{}", output.text());
            }
            let Ok(text) = std::fs::read_to_string(&info) else {
                return false;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                return false;
            };
            v["url"].as_str().unwrap_or_default().clone_into(&mut url);
            !url.is_empty()
        });
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        Self {
            child,
            url,
            output,
            http,
        }
    }

    pub(crate) fn get(&self, token: &str, path: &str) -> Value {
        let url = format!("{}{path}", self.url);
        match self
            .http
            .get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(r) => r.into_json().expect("JSON body"),
            Err(e) => panic!("GET {url}: {e}\n--- serve ---\n{}", self.output.text()),
        }
    }

    pub(crate) fn post(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let response = match self
            .http
            .post(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(body.clone())
        {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("POST {url}: {e}\n--- serve ---\n{}", self.output.text()),
        };
        let status = response.status();
        (status, response.into_json().unwrap_or(Value::Null))
    }

    /// Starts `runbook` as the holder of `token` and waits until it is parked at its gate (and no
    /// longer executing, so a decision is taken at once).
    pub(crate) fn start_parked(&self, token: &str, runbook: &str) -> String {
        self.start_parked_with(token, runbook, &json!({}))
    }

    /// [`Serve::start_parked`] with parameters.
    fn start_parked_with(&self, token: &str, runbook: &str, params: &Value) -> String {
        let (status, body) = self.post(
            token,
            "/api/v1/runs",
            &json!({ "runbook": runbook, "params": params }),
        );
        assert_eq!(
            status,
            201,
            "starting {runbook}: {body}\n{}",
            self.output.text()
        );
        let run = body["run"].as_str().expect("a run id").to_owned();
        let mut last = Value::Null;
        let parked = Instant::now() + Duration::from_secs(30);
        while Instant::now() < parked {
            last = self.get(token, &format!("/api/v1/runs/{run}"));
            if last["state"] == "waiting" && last["active"] == false {
                return run;
            }
            // Running, or waiting while its execution is still winding down.
            assert!(
                last["state"] == "running" || last["state"] == "waiting",
                "run {run} should park at its gate: {last:#}\n{}",
                self.output.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("run {run} did not park at its gate: {last:#}");
    }

    pub(crate) fn records(&self, token: &str, run: &str) -> Vec<Value> {
        match self.get(token, &format!("/api/v1/runs/{run}/records")) {
            Value::Array(records) => records,
            other => panic!("records are an array: {other}"),
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        assert!(
            std::thread::panicking(),
            "serve did not stop within 30 s of SIGTERM:\n{}",
            self.output.text()
        );
    }
}

/// tests/browser, once its prerequisites are checked: Debian chromium, node, and playwright-core
/// installed there. Fails (never skips) with the command that installs them.
pub(crate) fn browser_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut missing = Vec::new();
    if !Path::new(&chromium).is_file() {
        missing.push(format!("the browser {chromium} (Debian package chromium)"));
    }
    let node = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node (Node.js 20 or later)".into());
    }
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push(format!("playwright-core in {}/node_modules", dir.display()));
    }
    assert!(
        missing.is_empty(),
        "the browser tests need {}: run tests/browser/install.sh",
        missing.join(", ")
    );
    dir
}

/// Where a screenshot goes: kept in the target directory after the test, for people to look at.
pub(crate) fn screenshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Runs `node tests/browser/approve.mjs ARGS…`, at most 90 s (the script bounds itself to 60 s).
fn page_script(args: &[&str]) -> (Option<ExitStatus>, String) {
    script("approve.mjs", args)
}

/// Runs `node tests/browser/SCRIPT ARGS…`, at most 90 s (the scripts bound themselves to 60 s).
pub(crate) fn script(name: &str, args: &[&str]) -> (Option<ExitStatus>, String) {
    let dir = browser_dir();
    let mut child = Command::new("node")
        .arg(dir.join(name))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let output = Captured::of(&mut child);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, output.settle(Duration::from_secs(5)))
}

#[test]
fn an_operator_approves_a_gate_in_the_browser_and_watches_the_run_finish_live() {
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-approve.yaml", APPROVE_BOOK);
    let serve = Serve::start(&sb);
    let run = serve.start_parked(BOB, "web-approve");
    assert_eq!(sb.read("before.txt"), "prepared\n");
    assert_eq!(sb.read("after.txt"), "", "nothing past the gate ran");

    let shot = screenshot("web-approve.png");
    let comment = "LGTM from the browser";
    let (status, out) = page_script(&[
        &serve.url,
        ALICE,
        &run,
        comment,
        shot.to_str().expect("utf-8 path"),
    ]);
    assert!(
        status.is_some_and(|s| s.success()),
        "approve.mjs should approve the gate and see the run succeed; it ended {status:?}:\n{out}\n--- serve ---\n{}",
        serve.output.text()
    );
    assert!(shot.is_file(), "approve.mjs took no screenshot:\n{out}");
    eprintln!("screenshot of the page: {}", shot.display());

    let detail = serve.get(BOB, &format!("/api/v1/runs/{run}"));
    assert_eq!(detail["state"], "succeeded", "{detail:#}");
    let records = serve.records(BOB, &run);
    let decided: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "gate_decided")
        .collect();
    assert_eq!(decided.len(), 1, "one decision: {records:#?}");
    assert_eq!(decided[0]["path"], "confirm");
    assert_eq!(decided[0]["approved"], true);
    assert_eq!(decided[0]["by"], "alice", "recorded under the token's name");
    assert_eq!(decided[0]["comment"], comment);
    assert_eq!(
        sb.read("after.txt"),
        "approved\n",
        "the step after the gate ran"
    );
}

#[test]
fn the_page_shows_the_refusal_when_the_starter_approves_a_four_eyes_gate() {
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-four-eyes.yaml", FOUR_EYES_BOOK);
    let serve = Serve::start(&sb);
    let run = serve.start_parked(BOB, "web-four-eyes");

    let shot = screenshot("web-four-eyes-refused.png");
    let (status, out) = page_script(&[
        "--expect-refusal",
        "needs a second person",
        &serve.url,
        BOB,
        &run,
        "approving my own run",
        shot.to_str().expect("utf-8 path"),
    ]);
    assert!(
        status.is_some_and(|s| s.success()),
        "the page should show the four-eyes refusal; approve.mjs ended {status:?}:\n{out}\n--- serve ---\n{}",
        serve.output.text()
    );
    eprintln!("screenshot of the page: {}", shot.display());

    let detail = serve.get(BOB, &format!("/api/v1/runs/{run}"));
    assert_eq!(detail["state"], "waiting", "still at the gate: {detail:#}");
    assert_eq!(detail["open_gate"]["path"], "confirm");
    let records = serve.records(BOB, &run);
    assert!(
        !records.iter().any(|r| r["event"] == "gate_decided"),
        "a refused approval records no decision: {records:#?}"
    );
    assert_eq!(sb.read("after.txt"), "", "nothing past the gate ran");
}

const SECRET_BOOK: &str = r#"
runbook: web-secret
params:
  password: { type: string, secret: true, required: true }
steps:
  - id: confirm
    gate: "Change the password?"
  - id: after
    shell: { run: "echo {{sh params.password}} > after.txt" }
"#;

#[test]
fn after_a_serve_restart_the_page_asks_for_the_secret_the_approval_needs() {
    const SECRET: &str = "pa55-Wd-7Kq2xZ";
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-secret.yaml", SECRET_BOOK);
    let run = {
        let first = Serve::start(&sb);
        first.start_parked_with(BOB, "web-secret", &json!({ "password": SECRET }))
    };
    // The first serve is gone (stopped on drop) and with it the secret it was given.
    let serve = Serve::start(&sb);

    let shot = screenshot("web-secret.png");
    let (status, out) = page_script(&[
        "--secret",
        &format!("password={SECRET}"),
        &serve.url,
        ALICE,
        &run,
        "password change window",
        shot.to_str().expect("utf-8 path"),
    ]);
    assert!(
        status.is_some_and(|s| s.success()),
        "the page should ask for the secret and approve with it; approve.mjs ended {status:?}:\n{out}\n--- serve ---\n{}",
        serve.output.text()
    );
    assert!(
        !out.contains(SECRET),
        "the script printed the secret:\n{out}"
    );
    assert_eq!(
        sb.read("after.txt"),
        format!("{SECRET}\n"),
        "the step after the gate had it"
    );
    let records = serve.records(ALICE, &run);
    let decided: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "gate_decided")
        .collect();
    assert_eq!(
        decided.len(),
        1,
        "only the approval with the secret is journaled: {records:#?}"
    );
    assert_eq!(decided[0]["by"], "alice");
    let journal = String::from_utf8_lossy(&sb.journal_bytes()).into_owned();
    assert!(
        !journal.contains(SECRET),
        "the secret is in the journal in clear"
    );
    assert!(
        !serve.output.text().contains(SECRET),
        "serve printed the secret"
    );
}

/// A run that fails at `flaky` until `fixed` exists.
const FAILING_BOOK: &str = r#"
runbook: web-failing
steps:
  - id: first
    shell: { run: "echo x >> first.txt" }
  - id: flaky
    shell: { run: "test -f fixed && echo x >> flaky.txt" }
"#;

/// A run that works a moment, then waits for `ready`.
const PAUSABLE_BOOK: &str = r#"
runbook: web-pausable
steps:
  - id: work
    shell: { run: "sleep 1; echo x >> work.txt" }
  - id: ready
    wait:
      every: 100ms
      timeout: 5m
      probe: { shell: { run: "test -e ready && echo yes || echo no" } }
      until: 'output.stdout.contains("yes")'
  - id: after
    shell: { run: "echo x >> after.txt" }
"#;

#[test]
fn an_operator_retries_a_failed_run_from_the_page() {
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-failing.yaml", FAILING_BOOK);
    let serve = Serve::start(&sb);
    let (status, body) = serve.post(BOB, "/api/v1/runs", &json!({ "runbook": "web-failing" }));
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("a run id").to_owned();
    wait_for("the run to fail", Duration::from_secs(30), || {
        serve.get(BOB, &format!("/api/v1/runs/{run}"))["state"] == "failed"
    });
    sb.write("fixed", "");

    let shot = screenshot("web-retry.png");
    let (status, out) = script(
        "control.mjs",
        &[
            "retry",
            &serve.url,
            ALICE,
            &run,
            "flaky",
            shot.to_str().expect("utf-8 path"),
        ],
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "control.mjs should retry the failed step and see the run succeed; it ended {status:?}:\n{out}\n--- serve ---\n{}",
        serve.output.text()
    );
    assert_eq!(
        (sb.read("first.txt"), sb.read("flaky.txt")),
        ("x\n".into(), "x\n".into())
    );
    let records = serve.records(BOB, &run);
    let decided = records
        .iter()
        .find(|r| r["event"] == "operator_decided")
        .unwrap_or_else(|| panic!("a decision: {records:#?}"));
    assert_eq!(decided["by"], "alice", "recorded under the token's name");
    assert_eq!(decided["action"], "retry");
    assert_eq!(decided["comment"], "fixed, retried from the browser");
}

#[test]
fn an_operator_pauses_and_unpauses_a_run_from_the_page() {
    browser_dir();
    let sb = Sandbox::new();
    sb.write("runbooks/web-pausable.yaml", PAUSABLE_BOOK);
    let serve = Serve::start(&sb);
    let (status, body) = serve.post(BOB, "/api/v1/runs", &json!({ "runbook": "web-pausable" }));
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().expect("a run id").to_owned();

    let shot = screenshot("web-pause.png");
    let ready = sb.path().join("ready");
    let (status, out) = script(
        "control.mjs",
        &[
            "pause",
            &serve.url,
            ALICE,
            &run,
            ready.to_str().expect("utf-8 path"),
            shot.to_str().expect("utf-8 path"),
        ],
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "control.mjs should pause and unpause the run and see it succeed; it ended {status:?}:\n{out}\n--- serve ---\n{}",
        serve.output.text()
    );
    assert_eq!(
        (sb.read("work.txt"), sb.read("after.txt")),
        ("x\n".into(), "x\n".into())
    );
    let records = serve.records(BOB, &run);
    for (event, comment) in [
        ("paused", "paused from the browser"),
        ("unpaused", "unpaused from the browser"),
    ] {
        assert!(
            records
                .iter()
                .any(|r| r["event"] == event && r["by"] == "alice" && r["comment"] == comment),
            "{event} by alice: {records:#?}"
        );
    }
}

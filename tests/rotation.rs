//! `rotate-openbao-barrier` on a real 3-node OpenBao 2.6.2 Raft cluster (`testbeds/openbao.sh`
//! on loopback): fired by `runbook serve` every 3 seconds, and run by hand, killed right after
//! its rotate step was journaled as started, then resumed. What the tests conclude comes from
//! the servers — `/v1/sys/key-status` of every member, read with the root token — never from
//! the runbook's own verification: the key term advanced by exactly one per rotation the
//! journal says succeeded, and every member serves it.

use std::process::{Child, ExitStatus};
use std::time::Duration;

use serde_json::Value;

use crate::support::captured::Captured;
use crate::support::clusters::{Cluster, http};
use crate::support::{Sandbox, wait_for};

const RUNBOOK: &str = "rotate-openbao-barrier";

struct Bao {
    _cluster: Cluster,
    addrs: Vec<String>,
    token: String,
}

impl Bao {
    fn new() -> Self {
        let cluster = Cluster::openbao("2.6.2");
        let addrs = (1..=3)
            .map(|i| cluster.var(&format!("BAO_ADDR_{i}")))
            .collect();
        let init = cluster.json("init.json");
        let token = init["root_token"].as_str().expect("root token").to_owned();
        Self {
            _cluster: cluster,
            addrs,
            token,
        }
    }

    fn runbook(&self, sb: &Sandbox, args: &[&str]) -> crate::support::Cmd {
        sb.cmd(args).env("BAO_TOKEN", &self.token)
    }

    /// The key term `addr` serves (standbys answer from their own copy of the keyring).
    fn term_at(&self, addr: &str) -> Option<i64> {
        let v: Value = http()
            .get(&format!("{addr}/v1/sys/key-status"))
            .set("X-Vault-Token", &self.token)
            .call()
            .ok()?
            .into_json()
            .ok()?;
        v["data"]["term"].as_i64()
    }

    /// The key term, once every member serves the same one (a standby reloads the keyring a
    /// moment after a rotation); panics if they do not agree within 10 s.
    fn term(&self) -> i64 {
        let mut terms = Vec::new();
        wait_for(
            "every member to serve the same key term",
            Duration::from_secs(10),
            || {
                terms = self.addrs.iter().map(|a| self.term_at(a)).collect();
                terms[0].is_some() && terms.iter().all(|t| *t == terms[0])
            },
        );
        terms[0].expect("a term")
    }

    /// `PUT /v1/sys/rotate` through the first member.
    fn rotate_by_hand(&self) {
        http()
            .put(&format!("{}/v1/sys/rotate", self.addrs[0]))
            .set("X-Vault-Token", &self.token)
            .call()
            .expect("rotate by hand");
    }
}

/// A `runbook serve` child whose output is collected (so it never blocks on a full pipe) and
/// which is killed if a test fails before stopping it.
struct Serve {
    child: Child,
    output: Captured,
}

impl Serve {
    fn start(bao: &Bao, sb: &Sandbox, schedules: &str) -> Self {
        let mut child = bao
            .runbook(
                sb,
                &[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--tick",
                    "100ms",
                    "--schedules",
                    schedules,
                ],
            )
            .spawn();
        let output = Captured::of(&mut child);
        Self { child, output }
    }

    fn output(&self) -> String {
        self.output.text()
    }

    /// SIGTERM, then the exit status (within a minute) and everything serve printed.
    fn stop(mut self) -> (ExitStatus, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid")),
            nix::sys::signal::SIGTERM,
        )
        .expect("SIGTERM");
        let mut status = None;
        wait_for(
            "serve to exit after SIGTERM",
            Duration::from_secs(60),
            || {
                status = self.child.try_wait().expect("try_wait");
                status.is_some()
            },
        );
        (
            status.expect("exited"),
            self.output.settle(Duration::from_secs(10)),
        )
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET {url}/api/v1{path}` with the local token.
fn api_get(url: &str, token: &str, path: &str) -> Value {
    http()
        .get(&format!("{url}/api/v1{path}"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .into_json()
        .expect("json")
}

/// The states of the rotation runs in a run list (`/api/v1/runs` or `history --output json`).
fn rotation_states(runs: &[Value]) -> Vec<(String, String)> {
    runs.iter()
        .filter(|r| r["runbook"] == RUNBOOK)
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_owned(),
                r["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn scheduled_rotations_advance_the_key_term_exactly_once_per_succeeded_run() {
    let bao = Bao::new();
    let start = bao.term();
    let sb = Sandbox::new();
    let addrs = serde_json::to_string(&bao.addrs).expect("json");
    let schedules = sb.write(
        "schedules.yaml",
        &format!(
            "schedules:\n  - name: rotation\n    runbook: {RUNBOOK}\n    cron: \"*/3 * * * * *\"\n    overlap: skip\n    params:\n      addrs: {addrs}\n"
        ),
    );
    let serve = Serve::start(&bao, &sb, schedules.to_str().expect("utf-8"));

    // serve.json appears once serve listens: its URL and the local command line's token.
    let info_path = sb.journal().join("serve.json");
    let mut info = Value::Null;
    wait_for("serve to listen", Duration::from_secs(30), || {
        info = std::fs::read_to_string(&info_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        info["url"].is_string() && info["token"].is_string()
    });
    let url = info["url"].as_str().expect("url").to_owned();
    let token = info["token"].as_str().expect("token").to_owned();

    wait_for(
        "three scheduled rotations to succeed",
        Duration::from_secs(180),
        || {
            let runs = api_get(&url, &token, "/runs");
            let states = rotation_states(runs.as_array().expect("a list"));
            let failed: Vec<_> = states
                .iter()
                .filter(|(_, s)| matches!(s.as_str(), "failed" | "needs-attention" | "aborted"))
                .collect();
            assert!(
                failed.is_empty(),
                "rotation runs went wrong: {failed:?}\n--- serve ---\n{}",
                serve.output()
            );
            states.iter().filter(|(_, s)| s == "succeeded").count() >= 3
        },
    );
    // No more fires; let the run in progress (if any) finish, so that every rotation the
    // servers saw belongs to a run that ended.
    let paused = http()
        .post(&format!("{url}/api/v1/schedules/rotation/pause"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("pause the schedule");
    assert_eq!(paused.status(), 200);
    wait_for(
        "the last rotation run to end",
        Duration::from_secs(120),
        || {
            let runs = api_get(&url, &token, "/runs");
            runs.as_array().expect("a list").iter().all(|r| {
                r["active"] == false
                    && matches!(
                        r["state"].as_str(),
                        Some("succeeded" | "failed" | "aborted")
                    )
            })
        },
    );
    let (status, output) = serve.stop();
    assert!(status.success(), "serve exited with {status:?}\n{output}");
    assert!(
        !info_path.exists(),
        "serve removes serve.json when it stops"
    );

    // The journal, read directly now that serve is gone.
    let history = sb.cmd(&["history", "--output", "json"]).ok();
    let runs: Vec<Value> = history
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("history line is JSON"))
        .collect();
    let states = rotation_states(&runs);
    assert_eq!(states.len(), runs.len(), "only rotation runs: {runs:?}");
    let succeeded = states.iter().filter(|(_, s)| s == "succeeded").count();
    assert_eq!(
        succeeded,
        states.len(),
        "every rotation run succeeded: {states:?}\n--- serve ---\n{output}"
    );
    assert!(succeeded >= 3, "{states:?}");
    for (id, _) in &states {
        let st = sb.status(id);
        assert_eq!(st["trigger"]["schedule"], "rotation", "{st}");
        assert!(st["trigger"]["fire_time"].is_string(), "{st}");
        assert_eq!(st["started_by"], "schedule:rotation", "{st}");
    }

    // The servers: one new term per succeeded run, on every member.
    let end = bao.term();
    assert_eq!(
        end - start,
        i64::try_from(succeeded).expect("count"),
        "key term {start} → {end} after {succeeded} succeeded rotation runs"
    );
    for a in &bao.addrs {
        assert_eq!(bao.term_at(a), Some(end), "{a} serves another term");
    }
}

/// Runs the rotation (through a standby: the active node is found by the prechecks) with the
/// failpoint set to kill the process after commit `kill`, in a fresh journal. Returns the
/// sandbox, the run and whether its last record is the rotate step's start.
fn killed_run(bao: &Bao, kill: u32) -> (Sandbox, String, bool) {
    let sb = Sandbox::new();
    let addr = format!("addr={}", bao.addrs[1]);
    let out = bao
        .runbook(&sb, &["run", RUNBOOK, "-p", &addr])
        .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", kill.to_string())
        .run();
    assert_eq!(
        out.signal(),
        Some(9),
        "{}",
        out.explain(&format!("killed after commit {kill}"))
    );
    let run = sb.only_run();
    let at_rotate = sb
        .records(&run)
        .last()
        .is_some_and(|r| r["event"] == "step_started" && r["path"] == "rotate");
    (sb, run, at_rotate)
}

/// The events of `path` recorded after the run's (last) resume.
pub(crate) fn after_resume(records: &[Value], path: &str) -> Vec<String> {
    let resumed = records
        .iter()
        .rposition(|r| r["event"] == "resumed")
        .expect("a resumed record");
    records[resumed..]
        .iter()
        .filter(|r| r["path"] == path)
        .map(|r| {
            format!(
                "{}{}",
                r["event"].as_str().unwrap_or_default(),
                r["reason"]
                    .as_str()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn a_rotation_killed_after_its_start_was_journaled_resumes_without_rotating_twice() {
    let bao = Bao::new();
    let start = bao.term();

    // The commit after which the rotate step is journaled as started, its PUT not yet sent:
    // found from the journal, one kill after another.
    let (kill, sb, run) = (1..=60)
        .find_map(|n| {
            let (sb, run, at_rotate) = killed_run(&bao, n);
            at_rotate.then_some((n, sb, run))
        })
        .expect("no kill left the rotate step as the journal's last record");
    assert_eq!(bao.term(), start, "no kill came after the rotation");
    assert_eq!(sb.status(&run)["state"], "running", "killed mid-run");

    // The PUT never left: the check finds the term unchanged, and the rotation runs again.
    bao.runbook(&sb, &["resume", &run]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded");
    assert_eq!(
        bao.term(),
        start + 1,
        "the resumed run rotated exactly once"
    );
    assert_eq!(
        after_resume(&sb.records(&run), "rotate"),
        ["step_started", "step_succeeded"],
        "the rotation is retried after the resume"
    );

    // The PUT reached the server just before the crash (done here by hand): the check finds
    // the term above the one read before, and the step is skipped rather than rotated again.
    let (sb, run, at_rotate) = killed_run(&bao, kill);
    assert!(at_rotate, "commit {kill} is the rotate step's start again");
    assert_eq!(bao.term(), start + 1);
    bao.rotate_by_hand();
    bao.runbook(&sb, &["resume", &run]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded");
    assert_eq!(
        bao.term(),
        start + 2,
        "the resumed run did not rotate a second time"
    );
    assert_eq!(
        after_resume(&sb.records(&run), "rotate"),
        ["step_skipped (check)"],
        "the rotation is skipped after the resume"
    );
}

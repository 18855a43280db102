//! Several executors on one etcd journal: a real 3-member etcd cluster on loopback
//! (testbeds/etcd.sh: free ports, members stopped and started by pid) and `runbook serve`
//! processes on it, each with a state directory of its own as if it ran on a machine of its
//! own, reached through their HTTP API with a tokens file, and read through their `--output
//! json` lines. What the journal holds is read from etcd with `etcdctl`, behind runbook's back.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use base64::Engine as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::clusters::{Cluster, testbed};
use super::{Sandbox, wait_for};

/// How long an executor may take to come up or go down, and a run to settle, on a loaded
/// machine.
pub const SETTLE: Duration = Duration::from_secs(60);

/// The lease TTL the executors of these tests join with: short, so a takeover is seconds.
pub const TTL_SECONDS: u64 = 3;

/// The bearer token of `alice` in every executor's tokens file.
pub const ALICE: &str = "alice-token-0123456789";

/// A 3-member etcd cluster and a journal on it.
pub struct Store {
    cluster: Cluster,
    /// The members' client endpoints (`127.0.0.1:PORT`), m1 first.
    pub endpoints: Vec<String>,
    /// The journal's key prefix.
    pub prefix: String,
}

impl Store {
    /// A fresh cluster; the journal's keys go under `prefix`.
    pub fn new(prefix: &str) -> Self {
        let cluster = Cluster::etcd();
        let endpoints = (1..=3)
            .map(|i| {
                cluster
                    .var(&format!("ETCD_ENDPOINT_{i}"))
                    .trim_start_matches("http://")
                    .to_owned()
            })
            .collect();
        Self {
            cluster,
            endpoints,
            prefix: prefix.to_owned(),
        }
    }

    /// `--journal` for the executors.
    pub fn journal(&self) -> String {
        format!("etcd://{}{}", self.endpoints.join(","), self.prefix)
    }

    /// SIGKILLs members `n` (1-based) by their pids, at once, and waits until they are gone.
    pub fn kill_members(&self, members: &[usize]) {
        let pids: Vec<Pid> = members
            .iter()
            .map(|n| {
                let pid = self
                    .cluster
                    .pid(&format!("m{n}"))
                    .unwrap_or_else(|| panic!("member m{n} has a pid file"));
                Pid::from_raw(i32::try_from(pid).expect("pid"))
            })
            .collect();
        for pid in &pids {
            kill(*pid, Signal::SIGKILL).expect("kill a member");
        }
        wait_for(&format!("members {members:?} to be gone"), SETTLE, || {
            pids.iter().all(|pid| kill(*pid, None).is_err())
        });
    }

    /// Sends `signal` to every member (SIGSTOP freezes the store as a stalled disk or machine
    /// would; SIGCONT thaws it).
    pub fn signal_members(&self, signal: Signal) {
        for n in 1..=3 {
            let pid = self
                .cluster
                .pid(&format!("m{n}"))
                .unwrap_or_else(|| panic!("member m{n} has a pid file"));
            kill(Pid::from_raw(i32::try_from(pid).expect("pid")), signal).expect("signal a member");
        }
    }

    /// Starts member `n` again (its data directory kept) and waits until it is healthy.
    pub fn start_member(&self, n: usize) {
        testbed("etcd.sh", &["start", self.cluster.path(), &n.to_string()]);
    }

    /// `etcdctl` against every member that answers.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let ctl = std::env::var_os("ETCDCTL")
            .map_or_else(|| PathBuf::from("/usr/bin/etcdctl"), PathBuf::from);
        let out = std::process::Command::new(ctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
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

    /// etcd's revision now.
    pub fn revision(&self) -> i64 {
        let answer: Value = serde_json::from_str(&self.etcdctl(&[
            "get",
            "--prefix",
            &self.prefix,
            "--limit",
            "1",
            "-w",
            "json",
        ]))
        .expect("etcdctl prints JSON");
        answer["header"]["revision"].as_i64().expect("a revision")
    }

    /// Whether any key or value under the journal's prefix held `bytes` at a revision from
    /// `since` on (etcd keeps every revision until it compacts, which these clusters never do).
    pub fn held_since(&self, since: i64, bytes: &[u8]) -> bool {
        (since..=self.revision()).any(|rev| {
            let answer: Value = serde_json::from_str(&self.etcdctl(&[
                "get",
                "--prefix",
                &self.prefix,
                "--rev",
                &rev.to_string(),
                "-w",
                "json",
            ]))
            .expect("etcdctl prints JSON");
            answer["kvs"].as_array().is_some_and(|kvs| {
                kvs.iter().any(|kv| {
                    [&kv["key"], &kv["value"]].iter().any(|v| {
                        base64::engine::general_purpose::STANDARD
                            .decode(v.as_str().unwrap_or_default())
                            .is_ok_and(|d| d.windows(bytes.len()).any(|w| w == bytes))
                    })
                })
            })
        })
    }

    /// Run `run`'s records as etcd holds them (inline records: a tag byte and a CRC32 before
    /// the JSON), in order.
    pub fn records(&self, run: &str) -> Vec<Value> {
        let prefix = format!("{}/runs/{run}/e/", self.prefix);
        let answer: Value =
            serde_json::from_str(&self.etcdctl(&["get", "--prefix", &prefix, "-w", "json"]))
                .expect("etcdctl prints JSON");
        let b64 = |v: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 text"))
                .expect("base64")
        };
        answer["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        let value = b64(&kv["value"]);
                        assert_eq!(value[0], b'r', "an inline record");
                        serde_json::from_slice(&value[5..]).expect("a record's JSON")
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One `runbook serve` on the journal.
pub struct Executor {
    child: Option<Child>,
    log: PathBuf,
    /// Its name (`--executor-name`).
    pub name: String,
    /// Its API's base URL.
    pub url: String,
}

impl Executor {
    /// Starts `runbook serve` named `name` (its output in `NAME-GENERATION.log`) and waits
    /// until it joined and listens.
    pub fn start(sb: &Sandbox, store: &Store, name: &str, generation: usize) -> Self {
        let tokens = sb.path().join("tokens");
        if !tokens.exists() {
            std::fs::write(&tokens, format!("alice: {ALICE}\n")).expect("tokens file");
            std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600))
                .expect("chmod tokens");
        }
        let log = sb.path().join(format!("{name}-{generation}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let ttl = format!("{TTL_SECONDS}s");
        let child = sb
            .cmd(&[
                "serve",
                "--journal",
                &store.journal(),
                "--listen",
                "127.0.0.1:0",
                "--output",
                "json",
                "--executor-name",
                name,
                "--lease-ttl",
                &ttl,
                "--tokens",
                tokens.to_str().expect("utf-8"),
            ])
            .env("XDG_STATE_HOME", sb.path().join(format!("state-{name}")))
            .spawn_to(out);
        let mut executor = Self {
            child: Some(child),
            log,
            name: name.to_owned(),
            url: String::new(),
        };
        wait_for(&format!("executor {name} to listen"), SETTLE, || {
            executor.assert_alive();
            !executor.events("listening").is_empty()
        });
        executor.events("listening")[0]["url"]
            .as_str()
            .expect("a url")
            .clone_into(&mut executor.url);
        executor
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "executor {} exited with {status}\n--- output ---\n{}",
                self.name,
                self.output()
            );
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything it printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its `serve` events named `what`, oldest first.
    pub fn events(&self, what: &str) -> Vec<Value> {
        self.output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "serve" && v["what"] == what)
            .collect()
    }

    /// Its identity now (the latest it joined as).
    pub fn identity(&self) -> String {
        self.events("joined")
            .last()
            .and_then(|e| e["executor"].as_str())
            .expect("joined")
            .to_owned()
    }

    fn signal(&self, signal: Signal) {
        kill(
            Pid::from_raw(i32::try_from(self.pid()).expect("pid")),
            signal,
        )
        .expect("signal the executor");
    }

    /// SIGKILL: the machine is gone.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes (its step processes go on).
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM, waited for; it must exit 0.
    pub fn stop(mut self) -> String {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().expect("running");
        let mut status = None;
        wait_for(&format!("executor {} to stop", self.name), SETTLE, || {
            status = child.try_wait().expect("wait");
            status.is_some()
        });
        assert!(
            status.expect("exited").success(),
            "executor {} exited with {status:?}\n{}",
            self.name,
            self.output()
        );
        self.output()
    }

    /// An API call as alice: the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.url);
        let request = ureq::request(method, &url)
            .timeout(Duration::from_secs(120))
            .set("Authorization", &format!("Bearer {ALICE}"));
        let result = match body {
            Some(body) => request.send_json(body.clone()),
            None => request.call(),
        };
        let response = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}\n--- output ---\n{}", self.output()),
        };
        let status = response.status();
        let text = response.into_string().expect("a body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET, expecting 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path} on {}: {body}", self.name);
        body
    }

    /// Starts a run of the runbook `name` here; its id.
    pub fn start_run(&self, name: &str) -> String {
        let (status, body) = self.call("POST", "/runs", Some(&json!({ "runbook": name })));
        assert_eq!(status, 201, "POST /runs {name} on {}: {body}", self.name);
        body["run"].as_str().expect("a run id").to_owned()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process must go on to die.
            let _ = kill(
                Pid::from_raw(i32::try_from(child.id()).expect("pid")),
                Signal::SIGCONT,
            );
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- executor {} ---\n{}", self.name, self.output());
            }
        }
    }
}

/// A runbook of ten shell steps `s1`…`s10`, each sleeping `pause` and then appending
/// `N PID` (its number and the executor's pid) to `NAME.effects`.
pub fn ten_steps(name: &str, idempotent: bool, pause: &str) -> String {
    let mut yaml = format!("runbook: {name}\nsteps:\n");
    for i in 1..=10 {
        let _ = write!(
            yaml,
            "  - id: s{i}\n    idempotent: {idempotent}\n    shell: {{ run: \"sleep {pause}; echo {i} $PPID >> {name}.effects\" }}\n"
        );
    }
    yaml
}

/// The effects of a [`ten_steps`] runbook: (step number, executor pid), in order.
pub fn effects(dir: &Path, name: &str) -> Vec<(u32, u32)> {
    std::fs::read_to_string(dir.join(format!("{name}.effects")))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (step, pid) = l.split_once(' ').expect("`N PID`");
            (
                step.parse().expect("a step number"),
                pid.parse().expect("a pid"),
            )
        })
        .collect()
}

/// The paths of the steps with a `step_succeeded` record among `records`, in order.
pub fn succeeded(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["event"] == "step_succeeded")
        .map(|r| r["path"].as_str().expect("a path").to_owned())
        .collect()
}

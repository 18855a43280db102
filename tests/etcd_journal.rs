//! The etcd journal from the command line: a runbook with shell steps and a gate runs with
//! `--journal etcd://127.0.0.1:PORT/test-prefix` against a real single-member etcd on loopback,
//! parks at its gate, is approved by another `runbook` process, and finishes; its records are
//! in etcd (read back with `etcdctl`, behind runbook's back), and `history`, `status` and `log`
//! read them from there.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::support::{Sandbox, wait_for};

const GATED: &str = r#"
runbook: gated-on-etcd
steps:
  - id: one
    shell: { run: "echo one >> out.txt" }
  - id: two
    shell: { run: "echo two >> out.txt" }
  - id: confirm
    gate: "Check, then approve."
  - id: three
    shell: { run: "echo three >> out.txt" }
"#;

/// A binary of the testbed: `$VAR`, or Debian's (testbeds/install.sh installs etcd-server and
/// etcd-client).
fn binary(var: &str, name: &str) -> PathBuf {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .into_iter()
        .chain([format!("/usr/bin/{name}"), format!("/usr/sbin/{name}")].map(PathBuf::from))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "the etcd journal's end-to-end test needs `{name}` and found none (${var}, \
             /usr/bin/{name}, /usr/sbin/{name}): install it with testbeds/install.sh \
             (Debian: apt-get install etcd-server etcd-client), or point ${var} at one"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A single-member etcd on loopback, its data in the sandbox; ended on drop.
struct Etcd {
    child: Child,
    port: u16,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    fn start(sb: &Sandbox) -> Self {
        let (port, peer) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(binary("ETCD", "etcd"))
            .args(["--name", "e2e", "--data-dir"])
            .arg(sb.path().join("etcd-data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e2e={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(sb.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd starts");
        let etcd = Self { child, port };
        wait_for("etcd to answer", Duration::from_secs(30), || {
            etcd.ctl(&["endpoint", "health"]).status.success()
        });
        etcd
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary("ETCDCTL", "etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=127.0.0.1:{}", self.port))
            .args(args)
            .output()
            .expect("etcdctl runs")
    }

    /// Every key-value under `prefix`, read with etcdctl.
    fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let out = self.ctl(&["get", "--prefix", prefix, "-w", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).expect("etcdctl prints JSON");
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
                        (
                            String::from_utf8(b64(&kv["key"])).unwrap(),
                            b64(&kv["value"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn a_gated_run_on_an_etcd_journal_is_approved_from_another_process_and_kept_in_etcd() {
    let sb = Sandbox::new();
    let etcd = Etcd::start(&sb);
    let url = format!("etcd://127.0.0.1:{}/test-prefix", etcd.port);
    let state = sb.path().join("state");
    let cmd = |args: &[&str]| {
        let mut all = vec!["--journal", url.as_str()];
        all.extend_from_slice(args);
        sb.cmd(&all).env("XDG_STATE_HOME", &state)
    };
    sb.write("gated.yaml", GATED);

    let out = cmd(&["run", "gated.yaml"]).code(3);
    let history = cmd(&["history", "--output", "json"]).ok();
    let ids: Vec<String> = history
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "{}",
        history.explain("one run in the etcd journal")
    );
    let run = ids[0].clone();
    assert!(
        out.stdout
            .contains(&format!("run {run} is waiting at gate `confirm`")),
        "{}",
        out.explain("the run parks at its gate")
    );
    assert!(
        out.stdout
            .contains(&format!("runbook --journal {url} approve {run}")),
        "{}",
        out.explain("the hint names the etcd journal")
    );
    let status = |run: &str| -> Value {
        let out = cmd(&["status", run, "--output", "json"]).ok();
        serde_json::from_str(out.stdout.trim()).expect("status is JSON")
    };
    assert_eq!(status(&run)["state"], "waiting");
    assert_eq!(sb.read("out.txt"), "one\ntwo\n");

    cmd(&["approve", &run, "--comment", "looks fine", "--as", "alice"]).ok();
    assert_eq!(sb.read("out.txt"), "one\ntwo\nthree\n");
    assert_eq!(status(&run)["state"], "succeeded");
    let human = cmd(&["log", &run]).ok();
    assert!(
        human
            .stdout
            .contains("approved confirm by alice: looks fine"),
        "{}",
        human.explain("the log reads the decision back from etcd")
    );

    // The records, as etcd holds them: one key per record, a tag byte and a CRC32 before the
    // JSON; the same records `log` shows, in order.
    let logged: Vec<Value> = cmd(&["log", &run, "--output", "json"])
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line is JSON"))
        .collect();
    let stored = etcd.get_prefix(&format!("/test-prefix/runs/{run}/e/"));
    assert_eq!(stored.len(), logged.len(), "{stored:?}");
    for (i, ((key, value), logged)) in stored.iter().zip(&logged).enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(key, &format!("/test-prefix/runs/{run}/e/{seq:020}"));
        assert_eq!(value[0], b'r', "an inline record");
        let json = &value[5..];
        assert_eq!(
            u32::from_le_bytes(value[1..5].try_into().unwrap()),
            crc32fast::hash(json)
        );
        let record: Value = serde_json::from_slice(json).expect("a record's JSON");
        assert_eq!(record["seq"], seq);
        assert_eq!(record["event"], logged["event"], "record {seq}");
    }
    let decided: Vec<&Value> = logged
        .iter()
        .filter(|r| r["event"] == "gate_decided")
        .collect();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["by"], "alice");
    let last = etcd.get_prefix(&format!("/test-prefix/runs/{run}/last"));
    assert_eq!(last[0].1, logged.len().to_string().into_bytes());
    assert!(
        !sb.journal().exists(),
        "nothing went to a directory journal"
    );
}

#[test]
fn a_malformed_or_unreachable_etcd_journal_is_reported() {
    let sb = Sandbox::new();
    let state = sb.path().join("state");
    let out = sb
        .cmd(&["--journal", "etcd://127.0.0.1/p", "history"])
        .env("XDG_STATE_HOME", &state)
        .code(2);
    assert!(
        out.stderr.contains("endpoint `127.0.0.1` has no port"),
        "{}",
        out.explain("a URL without a port is refused")
    );
    let port = free_port();
    let url = format!("etcd://127.0.0.1:{port}/p");
    let out = sb
        .cmd(&["--journal", &url, "history"])
        .env("XDG_STATE_HOME", &state)
        .run();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        out.stderr.contains(&format!("etcd at 127.0.0.1:{port}")),
        "{}",
        out.explain("an unreachable cluster is named")
    );
}
